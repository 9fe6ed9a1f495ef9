"""Estimates of the chapters: built from evaluation tables, read back from flat results, as text."""

import math

import pandas as pd

from sapsam_utils.core.results import Estimate, estimate_texts, estimates, flatten


def scores_table():
    return pd.DataFrame([
        {"level": "image", "metric": "auc", "value": 0.9, "ci_low": 0.8, "ci_high": 0.95, "n": 10},
        {"level": "scan", "metric": "f1", "value": 0.5, "ci_low": float("nan"), "ci_high": float("nan"), "n": 4},
    ])


def test_estimates_name_each_row_by_its_columns():
    found = estimates(scores_table(), "test_{metric}_{level}")
    assert list(found) == ["test_auc_image", "test_f1_scan"]
    assert found["test_auc_image"] == Estimate(0.9, 0.8, 0.95)
    assert found["test_f1_scan"].value == 0.5 and not found["test_f1_scan"].has_interval
    # a list of mappings works as well, and so do compare's dicts (``difference``)
    assert estimates([{"name": "m", "difference": -0.1, "ci_low": -0.3, "ci_high": 0.1}], "{name}") == {
        "m": Estimate(-0.1, -0.3, 0.1)}


def test_estimates_flatten_to_the_keys_the_chapters_wrote_by_hand():
    flat = flatten(estimates(scores_table(), "x_{level}_{metric}"))
    assert list(flat) == ["x_image_auc", "x_image_auc_ci_low", "x_image_auc_ci_high",
                          "x_scan_f1", "x_scan_f1_ci_low", "x_scan_f1_ci_high"]
    assert flat["x_image_auc_ci_high"] == 0.95 and flat["x_scan_f1_ci_low"] is None  # NaN bound: null


def test_estimate_texts_one_per_row():
    assert estimate_texts(scores_table()) == ["0.900 [0.800, 0.950]", "0.500"]
    assert estimate_texts(scores_table(), digits=1) == ["0.9 [0.8, 0.9]", "0.5"]


def test_read_finds_an_estimate_in_flat_and_in_unflattened_results():
    results = {"a": Estimate(1.0, 0.5, 1.5), "p": 0.0123}
    assert Estimate.read(results, "a") is results["a"]
    assert Estimate.read(flatten(results), "a") == Estimate(1.0, 0.5, 1.5)
    assert Estimate.read(results, "p").text(3, significant=True) == "0.0123"
    assert Estimate.read(results, "missing").text() == "n/a"
    assert math.isnan(Estimate.of({"value": float("nan")}).value) and Estimate.of({"value": float("nan")}).text() == "n/a"
