"""The workdir cache: keys change with parameters, writes are all-or-nothing."""

import json

import pytest

from sapsam_utils.core.files import atomic_dir
from sapsam_utils.stages.workdir import current_stage, read_results, stage_dir, stage_key, write_results


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
