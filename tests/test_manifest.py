"""The manifest schema and its validator (sapsam_utils.data.manifest)."""

from __future__ import annotations

import pandas as pd
import pytest

from sapsam_utils.data.manifest import (
    ALL_COLUMNS,
    REQUIRED_COLUMNS,
    ManifestError,
    phantom_seeds,
    read_manifest,
    row_paths,
    source_kind,
    validate_manifest,
    write_manifest,
)
from sapsam_utils.core.paths import project_path, shared_ct_dir
from sapsam_utils.core.regions import LABEL_COLUMNS


def _row(**values) -> dict:
    row = {"patient_id": "P1", "scan_id": "S1", "scan_date": "2010-03-04", "source": "phantom:7",
           "group": "cpa", **{c: 0 for c in LABEL_COLUMNS}, "death_date": "", "last_followup_date": "2012-01-01",
           "lung_mask": "", "lesion_mask": ""}
    row.update(values)
    return row


def _write_csv(tmp_path, rows, columns=None, name="manifest.csv"):
    table = pd.DataFrame(rows)
    if columns is not None:
        table = table[columns]
    path = tmp_path / name
    table.to_csv(path, index=False)
    return path


def test_schema_columns():
    assert len(REQUIRED_COLUMNS) == 5 + 24 + 2
    assert ALL_COLUMNS[:5] == ("patient_id", "scan_id", "scan_date", "source", "group")
    assert ALL_COLUMNS[-4:] == ("death_date", "last_followup_date", "lung_mask", "lesion_mask")
    assert ALL_COLUMNS[5:29] == LABEL_COLUMNS


def test_a_good_manifest_reads_back(tmp_path):
    (tmp_path / "scan.nii.gz").write_bytes(b"")
    rows = [_row(RU_cavity=1, RU_fungus_ball=1),
            _row(scan_id="S2", scan_date="2011-01-01"),
            _row(patient_id="P2", scan_id="S3", group="control", source="scan.nii.gz",
                 death_date="2013-05-06", last_followup_date="2013-05-06")]
    path = _write_csv(tmp_path, rows, columns=list(ALL_COLUMNS[:-2]))  # optional columns left out
    table = read_manifest(path)
    assert list(table.columns) == list(ALL_COLUMNS)
    assert table["RU_cavity"].tolist() == [1, 0, 0] and table["RU_cavity"].dtype.kind == "i"
    assert table["death_date"].tolist() == ["", "", "2013-05-06"]
    assert table["lesion_mask"].tolist() == ["", "", ""]
    paths = row_paths(table.iloc[2], tmp_path)
    assert paths == {"source": tmp_path / "scan.nii.gz", "lung_mask": None, "lesion_mask": None}
    assert row_paths(table.iloc[0], tmp_path)["source"] is None


def test_every_bad_row_is_listed_with_its_number_and_scan_id(tmp_path):
    rows = [
        _row(),                                                    # 1: fine
        _row(scan_id="S2", RU_cavity=2, LL_pleural_thickening="x"),  # 2: labels not 0/1
        _row(scan_id="S3", group="control", LU_cavity=1),          # 3: control with a sign
        _row(scan_id="S4", group="patient"),                       # 4: unknown group
        _row(scan_id="S1"),                                        # 5: duplicate scan_id
        _row(scan_id="S6", scan_date="04/03/2010"),                # 6: not ISO
        _row(scan_id="S7", scan_date="2013-01-01"),                # 7: scan after follow-up
        _row(patient_id="P9", scan_id="S8", death_date="2009-01-01", last_followup_date="2012-01-01"),  # 8
        _row(scan_id="S9", source="missing/scan.nii.gz"),         # 9: missing file
        _row(scan_id="S10", source="phantom:abc"),                 # 10: bad phantom spec
        _row(scan_id="S11", RL_fungus_ball=1),                     # 11: fungus ball without cavity
        _row(scan_id="S12", lesion_mask="nope.nii.gz"),            # 12: missing label file
        _row(scan_id="S13", last_followup_date="2013-01-01"),      # 13: patient outcome disagrees
        _row(scan_id="bad/id"),                                    # 14: not a folder name
        _row(patient_id="P10", scan_id="S15", scan_date="2012-02-30"),  # 15: no such day
    ]
    with pytest.raises(ManifestError) as err:
        read_manifest(_write_csv(tmp_path, rows))
    problems = err.value.problems
    text = str(err.value)
    assert str(tmp_path / "manifest.csv") in text
    expected = {
        2: "labels must be 0 or 1: RU_cavity='2', LL_pleural_thickening='x'",
        3: "a control has signs: LU_cavity",
        4: "group is 'patient'",
        5: "duplicate scan_id, first used on row 1",
        6: "scan_date '04/03/2010' is not an ISO date",
        7: "scan_date 2013-01-01 is after last_followup_date 2012-01-01",
        8: "last_followup_date 2012-01-01 is after death_date 2009-01-01",
        9: "does not exist",
        10: "not of the form phantom:<seed> or phantom:<anatomy_seed>:<seed>",
        11: "RL_fungus_ball without RL_cavity",
        12: "lesion_mask",
        13: "patient P1 has death_date/last_followup_date blank/2013-01-01, but blank/2012-01-01 on row 1",
        14: "has characters other than",
        15: "scan_date '2012-02-30' is not an ISO date",
    }
    for number, fragment in expected.items():
        scan_id = rows[number - 1]["scan_id"]
        assert any(p.startswith(f"row {number} (scan_id '{scan_id}'):") and fragment in p for p in problems), (number, problems)
    assert not any(p.startswith("row 1 ") for p in problems)
    assert any(p.startswith("row 8 ") and "scan_date 2010-03-04 is after death_date 2009-01-01" in p for p in problems)


def test_missing_and_unknown_columns(tmp_path):
    columns = [c for c in ALL_COLUMNS if c not in ("RU_cavity", "scan_date")]
    table = pd.DataFrame([_row()])[columns]
    table["comment"] = "x"
    path = tmp_path / "m.csv"
    table.to_csv(path, index=False)
    with pytest.raises(ManifestError) as err:
        read_manifest(path)
    assert err.value.problems == ["missing column(s): scan_date, RU_cavity", "unknown column(s): comment"]


def test_empty_and_unreadable_manifests(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text(",".join(ALL_COLUMNS) + "\n")
    with pytest.raises(ManifestError, match="no rows"):
        read_manifest(empty)
    blank = tmp_path / "blank.csv"
    blank.write_text("")
    with pytest.raises(ManifestError, match="not a readable CSV"):
        read_manifest(blank)
    with pytest.raises(FileNotFoundError, match="no such manifest"):
        read_manifest(tmp_path / "absent.csv")


def test_paths_are_relative_to_the_manifest_folder(tmp_path):
    folder = tmp_path / "cohort"
    (folder / "scans" / "a").mkdir(parents=True)
    (folder / "scans" / "a.nii").write_bytes(b"")
    rows = [_row(source="scans/a"), _row(scan_id="S2", source="scans/a.nii", lung_mask="scans/a.nii")]
    path = _write_csv(folder, rows)
    assert len(read_manifest(path)) == 2
    assert source_kind("scans/a", folder) == "dicom" and source_kind("scans/a.nii", folder) == "nifti"
    assert source_kind("phantom:3") == "phantom" and source_kind("phantom:3:4") == "phantom"
    # the same manifest elsewhere does not find its files
    moved = tmp_path / "moved.csv"
    moved.write_text(path.read_text())
    with pytest.raises(ManifestError, match="does not exist"):
        read_manifest(moved)
    assert len(read_manifest(moved, check_paths=False)) == 2


def test_a_file_that_is_not_nifti_is_refused(tmp_path):
    (tmp_path / "scan.png").write_bytes(b"")
    problems = validate_manifest(pd.DataFrame([_row(source="scan.png")]).astype(str), tmp_path)
    assert problems == ["row 1 (scan_id 'S1'): source " + str(tmp_path / "scan.png") + " is a file but not NIfTI (.nii or .nii.gz)"]


def test_write_manifest_validates_and_keeps_schema_order(tmp_path):
    table = pd.DataFrame([_row()])[list(reversed(ALL_COLUMNS))]
    path = write_manifest(table, tmp_path / "out.csv")
    assert path.read_text().splitlines()[0] == ",".join(ALL_COLUMNS)
    with pytest.raises(ManifestError, match="a control has signs"):
        write_manifest(pd.DataFrame([_row(group="control", RU_cavity=1)]), tmp_path / "bad.csv")
    assert not (tmp_path / "bad.csv").exists()


def test_the_committed_default_manifest_validates():
    table = read_manifest(project_path("data_manifest.csv"))
    assert len(table) == 352 and table["patient_id"].nunique() == 172


@pytest.mark.skipif(not shared_ct_dir().is_dir(), reason=f"public CT cases not found at {shared_ct_dir()}")
def test_the_public_ct_manifest_validates():
    # its paths resolve against public_ct_root (here the shared cases), not the manifest's folder
    table = read_manifest(project_path("manifests/public_ct.csv"), base_dir=shared_ct_dir())
    assert table["scan_id"].tolist() == ["lidc-idri-0001", "lidc-idri-0003", "lung-dx-a0001", "lung-dx-a0002"]
    assert (table["group"] == "control").all() and table[list(LABEL_COLUMNS)].to_numpy().sum() == 0
    kinds = [source_kind(s, shared_ct_dir()) for s in table["source"]]
    assert kinds == ["nifti", "nifti", "nifti", "dicom"]


def test_phantom_sources_of_both_forms(tmp_path):
    assert phantom_seeds("phantom:3") == (3, 3)  # short for phantom:3:3
    assert phantom_seeds("phantom:12:345") == (12, 345)  # the patient's anatomy, then the scan
    assert phantom_seeds("scans/a.nii") is None
    good = [_row(source="phantom:3"), _row(scan_id="S2", source="phantom:3:4")]
    assert read_manifest(_write_csv(tmp_path, good))["source"].tolist() == ["phantom:3", "phantom:3:4"]
    bad = ["phantom:", "phantom:a:1", "phantom:1:2:3", "phantom:-1", "phantom:1:"]
    rows = [_row(scan_id=f"B{i}", source=source) for i, source in enumerate(bad, start=1)]
    with pytest.raises(ManifestError) as err:
        read_manifest(_write_csv(tmp_path, rows, name="bad.csv"))
    assert len(err.value.problems) == len(bad)
    for number, source in enumerate(bad, start=1):
        expected = (f"row {number} (scan_id 'B{number}'): source '{source}' is not of the form "
                    "phantom:<seed> or phantom:<anatomy_seed>:<seed>")
        assert any(p.startswith(expected) for p in err.value.problems), (source, err.value.problems)
        assert phantom_seeds(source) is None
        with pytest.raises(ValueError, match="not of the form phantom:<seed> or"):
            source_kind(source)


def test_schema_table_lists_every_column_once():
    from sapsam_utils.data.manifest import LABEL_DESCRIPTION, schema_table

    table = schema_table()
    assert len(table) == len(ALL_COLUMNS) - len(LABEL_COLUMNS) + 1
    assert table["column"].iloc[0] == "patient_id" and table["column"].iloc[-1] == "lesion_mask"
    labels = table[table["content"] == LABEL_DESCRIPTION]
    assert labels["column"].tolist() == [f"{LABEL_COLUMNS[0]} ... {LABEL_COLUMNS[-1]} (24)"]
    assert table["content"].str.len().gt(0).all()
