"""Classifier scores at image / scan / patient level and the patient-level bootstrap, on known answers."""

import numpy as np
import pandas as pd
import pytest

from sapsam_utils.learning.evaluation import aggregate, binary_scores, bootstrap_scores, confusion_matrix, evaluate, roc_auc


def test_binary_scores_known_values():
    labels = [1, 1, 1, 0, 0]
    prob = [0.9, 0.8, 0.2, 0.6, 0.1]  # TP 2, FN 1, FP 1, TN 1
    s = binary_scores(labels, prob)
    assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(2 / 3) and s["accuracy"] == pytest.approx(3 / 5)
    # AUC: of the 6 (positive, negative) pairs, 5 are ordered right (0.2 < 0.6 is the miss)
    assert s["auc"] == pytest.approx(5 / 6)
    # balanced prevalence: TPR 2/3, FPR 1/2 -> (2/3) / (2/3 + 1/2) = 4/7, whatever the class counts
    assert s["balanced_precision"] == pytest.approx(4 / 7)
    doubled = binary_scores(labels + [0, 0], prob + [0.6, 0.1])  # twice the negatives, same rates
    assert doubled["precision"] == pytest.approx(1 / 2) and doubled["balanced_precision"] == pytest.approx(4 / 7)
    np.testing.assert_array_equal(confusion_matrix(labels, prob), [[1, 1], [1, 2]])


def test_auc_ties_and_one_class():
    assert roc_auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert np.isnan(roc_auc([1, 1], [0.2, 0.3]))
    assert np.isnan(binary_scores([0, 0], [0.1, 0.2])["precision"])  # no positive prediction


def predictions(n_patients=4, scans=2, rotations=3):
    rows = []
    for p in range(n_patients):
        for s in range(scans):
            for r in range(rotations):
                rows.append({"patient_id": f"P{p}", "scan_id": f"P{p}S{s}", "rotation": r, "label": p % 2,
                             "probability": 0.1 * r + 0.5 * (p % 2) + 0.05 * s})
    return pd.DataFrame(rows)


def test_levels_average_rotations_then_scans():
    table = predictions()
    scans = aggregate(table, "scan")
    assert len(scans) == 8
    assert scans.set_index("scan_id").loc["P1S1", "probability"] == pytest.approx(0.1 + 0.5 + 0.05)
    patients = aggregate(table, "patient").set_index("patient_id")
    assert patients.loc["P1", "probability"] == pytest.approx(0.1 + 0.5 + 0.025)
    assert patients["label"].tolist() == [0, 1, 0, 1]


def test_bootstrap_ci_of_a_proportion_matches_the_binomial_interval():
    # 400 patients, one image each, half of them classified right: accuracy 0.5, the 95 % interval
    # of a proportion is 0.5 +/- 1.96 * sqrt(0.25 / 400) = 0.5 +/- 0.049.
    n = 400
    labels = np.ones(n, dtype=int)
    table = pd.DataFrame({"patient_id": [f"P{i}" for i in range(n)], "scan_id": [f"S{i}" for i in range(n)],
                          "rotation": 0, "label": labels, "probability": np.tile([0.9, 0.1], n // 2)})
    ev = evaluate(table, levels=["image"], n_boot=2000, seed=1).set_index("metric")
    assert ev.loc["accuracy", "value"] == 0.5
    assert ev.loc["accuracy", "ci_low"] == pytest.approx(0.451, abs=0.012)
    assert ev.loc["accuracy", "ci_high"] == pytest.approx(0.549, abs=0.012)


def test_bootstrap_resamples_patients_not_images():
    # Two patients, 50 identical images each: one right, one wrong. Resampling images would give a
    # narrow interval around 0.5; resampling patients gives draws of 0, 0.5 or 1 only.
    table = pd.DataFrame({"patient_id": ["A"] * 50 + ["B"] * 50, "scan_id": ["a"] * 50 + ["b"] * 50,
                          "rotation": list(range(50)) * 2, "label": 1, "probability": [0.9] * 50 + [0.1] * 50})
    draws = bootstrap_scores(table, "image", n_boot=500, seed=0)
    assert set(np.round(draws["accuracy"], 6)) <= {0.0, 0.5, 1.0}
    ev = evaluate(table, levels=["image"], n_boot=500).set_index("metric")
    assert ev.loc["accuracy", "ci_low"] == 0.0 and ev.loc["accuracy", "ci_high"] == 1.0


def test_bootstrap_is_seeded():
    a = bootstrap_scores(predictions(), "scan", n_boot=50, seed=3)
    b = bootstrap_scores(predictions(), "scan", n_boot=50, seed=3)
    pd.testing.assert_frame_equal(a, b)


def test_paired_comparison_of_two_models():
    from sapsam_utils.learning.evaluation import compare

    table = predictions(n_patients=20)
    same = compare(table, table, "auc", n_boot=200)
    assert same == {"difference": 0.0, "ci_low": 0.0, "ci_high": 0.0}
    noise = table.assign(probability=np.random.default_rng(0).random(len(table)))
    better = compare(table, noise, "auc", n_boot=500)
    assert better["difference"] > 0.3 and better["ci_low"] > 0  # a clear margin excludes 0
    with pytest.raises(ValueError, match="different patients"):
        compare(table, table[table["patient_id"] != "P1"])


def test_mean_ci_resamples_patients_and_skips_nan():
    from sapsam_utils.learning.evaluation import mean_ci

    # Two patients: A has 3 hits, B 1 miss and one NaN (an image without truth: left out).
    values = [1.0, 1.0, 1.0, 0.0, np.nan]
    patients = ["A", "A", "A", "B", "B"]
    out = mean_ci(values, patients, n_boot=500, seed=0)
    assert out["value"] == pytest.approx(0.75) and out["n"] == 4 and out["n_patients"] == 2
    # a draw holds A twice (1.0), B twice (0.0), or one of each (pooled: 3 / 4)
    assert out["ci_low"] == 0.0 and out["ci_high"] == 1.0
    assert mean_ci(values, patients, n_boot=200, seed=3) == mean_ci(values, patients, n_boot=200, seed=3)
    # many patients with one value each: the interval of a proportion, 0.5 +/- 0.049
    n = 400
    many = mean_ci(np.tile([1.0, 0.0], n // 2), [f"P{i}" for i in range(n)], n_boot=2000, seed=1)
    assert many["ci_low"] == pytest.approx(0.451, abs=0.012) and many["ci_high"] == pytest.approx(0.549, abs=0.012)
    empty = mean_ci([np.nan, np.nan], ["A", "B"])
    assert empty["n"] == 0 and np.isnan(empty["value"]) and np.isnan(empty["ci_low"])
    with pytest.raises(ValueError, match="patient ids"):
        mean_ci([1.0, 2.0], ["A"])


def test_extreme_calls_names_the_calls():
    from sapsam_utils.learning.evaluation import extreme_calls

    table = pd.DataFrame({"label": [1, 1, 1, 0, 0], "probability": [0.9, 0.3, 0.7, 0.6, 0.1], "id": list("abcde")})
    calls = extreme_calls(table)
    assert list(calls) == ["surest positive", "false positive", "false negative"]
    assert [r["id"] for r in calls.values()] == ["a", "d", "b"]
    calls = extreme_calls(table.assign(probability=[0.9, 0.6, 0.7, 0.4, 0.1]))
    assert list(calls) == ["surest positive", "top negative", "lowest positive"]
    with pytest.raises(ValueError, match="positive and negative"):
        extreme_calls(table[table["label"] == 1])
