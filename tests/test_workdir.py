"""The workdir: keys change with parameters, writes are all-or-nothing, results stay JSON, and
its files are read through named readers."""

import json
import math

import pandas as pd
import pytest

from sapsam_utils.core.files import atomic_dir, write_json
from sapsam_utils.core.paper import PAPER_NUMBERS, load_paper_numbers, paper_value, paper_values
from sapsam_utils.core.paths import project_root
from sapsam_utils.core.results import Estimate
from sapsam_utils.stages.workdir import (current_stage, model_record, read_cohort, read_results, stage_dir,
                                         stage_key, stage_params, upstream_dir, write_results)


def test_stage_key_depends_on_params_and_upstream_not_on_key_order():
    assert stage_key({"a": 1, "b": [1, 2]}) == stage_key({"b": [1, 2], "a": 1})
    assert stage_key({"a": 1}) != stage_key({"a": 2})
    assert stage_key({"a": 1}, upstream="x") != stage_key({"a": 1}, upstream="y")


def test_stage_dir_records_current_and_reuses_same_params(tmp_path):
    first = stage_dir(tmp_path, "masks", {"threshold": -570}, upstream="abc")
    (first / "done").write_text("1")
    other = stage_dir(tmp_path, "masks", {"threshold": -500}, upstream="abc")
    assert other != first
    assert current_stage(tmp_path, "masks")[1] == other
    again = stage_dir(tmp_path, "masks", {"threshold": -570}, upstream="abc")
    assert again == first and (again / "done").read_text() == "1"
    record = json.loads((again / "stage.json").read_text())
    assert record["params"] == {"threshold": -570} and record["upstream"] == "abc"


def test_current_stage_names_the_missing_stage(tmp_path):
    with pytest.raises(FileNotFoundError, match="'scans' has not been run"):
        current_stage(tmp_path, "scans")


def test_atomic_dir_leaves_nothing_on_error(tmp_path):
    final = tmp_path / "S0001"
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as tmp:
            (tmp / "ct.nii.gz").write_bytes(b"partial")
            raise RuntimeError("interrupted")
    assert not final.exists() and list(tmp_path.iterdir()) == []
    with atomic_dir(final) as tmp:
        (tmp / "ct.nii.gz").write_bytes(b"whole")
    assert (final / "ct.nii.gz").read_bytes() == b"whole"


def test_results_are_flat_and_replaced(tmp_path):
    write_results(tmp_path, "01_cohort", {"n_scans": 352, "old": 1})
    write_results(tmp_path, "01_cohort", {"n_scans": 10})
    assert read_results(tmp_path, "01_cohort") == {"n_scans": 10}
    with pytest.raises(TypeError, match="scalar"):
        write_results(tmp_path, "01_cohort", {"table": [1, 2]})


def test_written_files_get_the_usual_permissions(tmp_path):
    import os

    path = write_results(tmp_path, "01_cohort", {"n": 1})
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_json_writes_missing_numbers_as_null_never_bare_nan(tmp_path):
    path = write_json(tmp_path / "r.json", {"auc": float("nan"), "hr": math.inf, "n": 3, "nested": [float("nan")]})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"auc": None, "hr": None, "n": 3, "nested": [None]}


def test_results_flatten_an_estimate_to_the_keys_the_summary_reads(tmp_path):
    write_results(tmp_path, "04_disease_classifier", {
        "auc": Estimate(0.9, 0.8, 0.95), "margin": Estimate(0.1, float("nan"), float("nan")),
        "n": 34, "point": Estimate(0.5)})
    assert read_results(tmp_path, "04_disease_classifier") == {
        "auc": 0.9, "auc_ci_low": 0.8, "auc_ci_high": 0.95, "margin": 0.1, "margin_ci_low": None,
        "margin_ci_high": None, "n": 34, "point": 0.5}
    back = Estimate.read(read_results(tmp_path, "04_disease_classifier"), "auc")
    assert back == Estimate(0.9, 0.8, 0.95) and back.text() == "0.900 [0.800, 0.950]" and back.excludes(0.5)
    assert Estimate.read(read_results(tmp_path, "04_disease_classifier"), "margin").text() == "0.100"
    assert Estimate.of({"difference": -0.2, "ci_low": -0.4, "ci_high": -0.01}).excludes(0.0)
    assert not Estimate.of({"value": 0.1, "ci_low": -0.1, "ci_high": 0.3}).excludes(0.0)
    assert Estimate(float("nan"), 0.1, 0.2).text() == "n/a"


def test_stage_records_are_read_through_named_readers(tmp_path):
    scans = stage_dir(tmp_path, "scans", {"n": 1})
    masks = stage_dir(tmp_path, "masks", {"threshold_hu": -570.0}, upstream=scans.name)
    assert stage_params(tmp_path, "masks") == {"threshold_hu": -570.0}
    assert upstream_dir(masks, "scans") == scans
    with pytest.raises(FileNotFoundError, match="cohort.csv: no cohort table"):
        read_cohort(scans)
    pd.DataFrame({"scan_id": ["007"], "RU_cavity": ["1"], "death_date": [""]}).to_csv(scans / "cohort.csv", index=False)
    cohort = read_cohort(scans)
    assert cohort.loc[0, "scan_id"] == "007" and cohort.loc[0, "death_date"] == ""  # text, no NaN, leading zeros kept
    with pytest.raises(FileNotFoundError, match="not finished"):
        model_record(tmp_path / "models" / "k" / "disease-vgg19-axial")


def test_paper_numbers_come_from_one_file():
    rows = load_paper_numbers()
    assert paper_value("04_disease_classifier", "test_precision_image") == 0.974  # VGG19, axial, per image
    assert paper_values("01_cohort", "manifest_")["manifest_scans"] == 352
    assert len({(r["notebook"], r["key"]) for r in rows}) == len(rows), "a metric with two paper numbers"
    with pytest.raises(KeyError, match="no row"):
        paper_value("04_disease_classifier", "no_such_metric")


def test_the_paper_numbers_read_under_the_c_locale():
    """GDCM's DICOM writer sets the C locale, where Python's default text encoding is ASCII; the
    paper's numbers file holds UTF-8 (dashes, apostrophes), so it is read as UTF-8 whatever the locale."""
    import locale

    saved = locale.setlocale(locale.LC_ALL)
    try:
        locale.setlocale(locale.LC_ALL, "C")
        assert max((project_root() / PAPER_NUMBERS).read_bytes()) > 127  # the file holds UTF-8 beyond ASCII
        assert len(load_paper_numbers()) > 50
    finally:
        locale.setlocale(locale.LC_ALL, saved)
