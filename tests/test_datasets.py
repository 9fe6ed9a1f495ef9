"""Records, patient splits, balancing, storage and resumption of the image data sets."""

import numpy as np
import pandas as pd
import pytest

from sapsam_utils.stages import workdir as wd
from sapsam_utils.stages import datasets
from sapsam_utils.imaging import projections
from sapsam_utils.learning import splits
from sapsam_utils.data.manifest import ALL_COLUMNS
from sapsam_utils.imaging.projections import ProjectionParams, project_volume
from sapsam_utils.core.regions import LABEL_COLUMNS, LABELS, REGIONS, SIGN_CODES
from sapsam_utils.core.volume import Volume, read_volume, write_volume

SHAPE = (20, 24, 30)
PARAMS = ProjectionParams(grid_shape=(9, 16, 16), angles=(0.0, 5.0))  # 8 rotations


def manifest_rows(n_control=4, n_cpa=4):
    rows = []
    for i in range(n_control + n_cpa):
        group = "control" if i < n_control else "cpa"
        for k in range(2 if i == n_control else 1):  # one CPA patient has two scans
            row = {c: "" for c in ALL_COLUMNS}
            row.update({c: 0 for c in LABEL_COLUMNS})
            row.update(patient_id=f"P{i}", scan_id=f"S{i}_{k}", scan_date=f"201{k}-01-01", source=f"phantom:{i}",
                       group=group, last_followup_date="2016-01-01")
            if group == "cpa":
                row["RU_cavity"] = 1
                row["death_date"] = "2011-06-01" if i % 2 else ""
                row["last_followup_date"] = "2011-06-01" if i % 2 else "2016-01-01"
            rows.append(row)
    return pd.DataFrame(rows)


@pytest.fixture()
def workdir(tmp_path):
    """A workdir with hand-made ``scans`` and ``masks`` stages (the control scans have no truth)."""
    cohort = manifest_rows()
    scans = wd.stage_dir(tmp_path, "scans", {"test": 1})
    masks = wd.stage_dir(tmp_path, "masks", {"test": 1}, upstream=scans.name)
    cohort.to_csv(scans / "cohort.csv", index=False)
    rng = np.random.default_rng(0)
    for _, row in cohort.iterrows():
        lungs = np.zeros(SHAPE, dtype=np.uint8)
        lungs[3:18, 4:20, 3:14] = 1
        lungs[3:18, 4:20, 16:27] = 2
        hu = np.where(lungs > 0, rng.normal(-850, 60, SHAPE), 40).astype(np.int16)
        ct = Volume(hu, (2.5, 1.5, 1.5))
        write_volume(ct, scans / row["scan_id"] / "ct.nii.gz")
        if row["group"] == "cpa":
            signs = np.zeros(SHAPE, dtype=np.uint8)
            signs[14:17, 8:11, 5:8] = SIGN_CODES["cavity"]  # upper right = RU
            write_volume(ct.like(signs), scans / row["scan_id"] / "truth_signs.nii.gz")
        write_volume(ct.like(lungs), masks / row["scan_id"] / "conservative.nii.gz")
        write_volume(ct.like(lungs), masks / row["scan_id"] / "refined.nii.gz")
    return tmp_path


def test_survival_columns():
    table = pd.DataFrame({
        "scan_date": ["2010-01-01", "2010-01-01", "2010-01-01", "2010-01-01"],
        "death_date": ["2011-06-01", "2013-01-01", "", ""],
        "last_followup_date": ["2011-06-01", "2013-01-01", "2015-01-01", "2011-01-01"],
    })
    out = splits.survival_columns(table)
    assert out["death_2y"].iloc[:3].tolist() == [1.0, 0.0, 0.0] and np.isnan(out["death_2y"].iloc[3])
    assert out["censored_2y"].tolist() == [False, False, False, True]


def test_patient_splits_are_disjoint_stratified_and_seeded():
    cohort = pd.DataFrame({
        "patient_id": [f"P{i // 2}" for i in range(60)],  # 30 patients, 2 scans each
        "group": ["cpa" if i < 40 else "control" for i in range(60)],
    })
    a = splits.split_patients(cohort, (0.6, 0.2, 0.2), seed=1)
    b = splits.split_patients(cohort, (0.6, 0.2, 0.2), seed=1)
    c = splits.split_patients(cohort, (0.6, 0.2, 0.2), seed=2)
    pd.testing.assert_frame_equal(a, b)
    assert not a.set_index("patient_id")["split"].equals(c.set_index("patient_id")["split"])
    assert a["patient_id"].is_unique and len(a) == 30
    counts = a.groupby(["group", "split"]).size()
    assert counts["cpa"].to_dict() == {"test": 4, "train": 12, "val": 4}
    assert counts["control"].to_dict() == {"test": 2, "train": 6, "val": 2}
    scans = cohort.assign(split=cohort["patient_id"].map(a.set_index("patient_id")["split"]))
    splits.check_patient_splits(scans)
    assert scans.groupby("patient_id")["split"].nunique().max() == 1
    scans.loc[0, "split"] = "test" if scans.loc[1, "split"] != "test" else "val"  # P0's two scans now differ
    with pytest.raises(AssertionError, match="P0"):
        splits.check_patient_splits(scans)
    small = splits.split_patients(cohort.iloc[:6], (0.6, 0.2, 0.2), seed=0)  # 3 CPA patients
    assert sorted(small["split"]) == ["test", "train", "val"]
    pair = splits.split_patients(cohort.iloc[:4], (0.6, 0.2, 0.2), seed=0)  # 2 CPA patients
    assert sorted(pair["split"]) == ["test", "train"]


def test_balanced_indices_oversample_the_minority():
    labels = np.array([0] * 10 + [1] * 3 + [np.nan] * 2)
    idx = splits.balanced_indices(labels, seed=0)
    assert len(idx) == 20 and np.bincount(labels[idx].astype(int)).tolist() == [10, 10]
    assert set(range(13)) <= set(idx.tolist()) and not {13, 14} & set(idx.tolist())
    np.testing.assert_array_equal(idx, splits.balanced_indices(labels, seed=0))
    assert not np.array_equal(idx, splits.balanced_indices(labels, seed=1))


def test_quantisation_keeps_truth_footprints():
    assert projections.to_uint8(np.array([0.0, 0.5, 1.0, 1.2])).tolist() == [0, 128, 255, 255]
    assert projections.truth_to_uint8(np.array([0.0, 0.001, 0.5])).tolist() == [0, 1, 128]
    assert projections.to_unit(np.array([255], dtype=np.uint8))[0] == 1.0


def test_preprocess_store_and_resume(workdir, monkeypatch):
    stage, table = datasets.preprocess_cohort(workdir, PARAMS, n_jobs=1, progress=False)
    assert table["done_now"].all() and len(table) == 9
    files = sorted((stage / "scans").glob("*.npz"))
    assert len(files) == 9
    # storage round trip: the stored images are the quantised projections of the stage's volumes
    data = datasets.read_scan_npz(stage / "scans" / "S4_0.npz")
    scans_dir = workdir / "scans" / wd.current_stage(workdir, "scans")[0]
    masks_dir = wd.current_stage(workdir, "masks")[1]
    ct = read_volume(scans_dir / "S4_0" / "ct.nii.gz")
    mask = read_volume(masks_dir / "S4_0" / "refined.nii.gz")
    signs = read_volume(scans_dir / "S4_0" / "truth_signs.nii.gz")
    _, images = project_volume(ct, mask, mask, signs, PARAMS)
    np.testing.assert_array_equal(data["regions_axial"], projections.to_uint8(images.regions["axial"]))
    np.testing.assert_array_equal(data["whole_truth_coronal"], projections.truth_to_uint8(images.whole_truth["coronal"]))
    assert data["regions_axial"].shape == (8, 6, 16, 8, 3) and data["whole_sagittal"].shape == (8, 9, 16)
    assert data["meta"]["has_truth"] and "whole_truth_axial" not in datasets.read_scan_npz(files[0])

    # an interrupted run: a leftover temporary file and a missing scan
    mtimes = {f.name: f.stat().st_mtime_ns for f in files}
    (stage / "scans" / "S2_0.npz").unlink()
    (stage / "scans" / ".tmp-S3_0-999.npz").write_bytes(b"half written")
    stage2, table = datasets.preprocess_cohort(workdir, PARAMS, n_jobs=1, progress=False)
    assert stage2 == stage
    assert table.loc[table["done_now"], "scan_id"].tolist() == ["S2_0"]
    assert not list((stage / "scans").glob(".tmp-*"))
    for f in sorted((stage / "scans").glob("*.npz")):
        if f.name != "S2_0.npz":
            assert f.stat().st_mtime_ns == mtimes[f.name]  # not recomputed

    # a failure half-way: finished scans stay, the failing one leaves nothing behind
    (stage / "scans" / "S5_0.npz").unlink()
    (stage / "scans" / "S6_0.npz").unlink()

    def broken(ct, *args, **kwargs):
        raise MemoryError("simulated crash")

    monkeypatch.setattr(datasets, "project_volume", broken)
    with pytest.raises(RuntimeError, match="S5_0"):
        datasets.preprocess_cohort(workdir, PARAMS, n_jobs=1, progress=False)
    assert not (stage / "scans" / "S5_0.npz").exists() and not list((stage / "scans").glob(".tmp-*"))
    monkeypatch.undo()
    _, table = datasets.preprocess_cohort(workdir, PARAMS, n_jobs=2, progress=False)  # in worker processes
    assert sorted(table.loc[table["done_now"], "scan_id"]) == ["S5_0", "S6_0"]


def test_save_npz_atomic_leaves_nothing_on_error(tmp_path):
    class Exploding:
        def __array__(self, *args, **kwargs):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        datasets.save_npz_atomic(tmp_path / "x.npz", {"a": np.zeros(3), "b": Exploding()})
    assert list(tmp_path.iterdir()) == []


def test_datasets_split_by_patient_and_load(workdir):
    datasets.preprocess_cohort(workdir, PARAMS, n_jobs=1, progress=False)
    stage = datasets.build_datasets(workdir, fractions=(0.5, 0.25, 0.25), seed=0, progress=False)
    splits = pd.read_csv(stage / "splits.csv")
    assert splits["patient_id"].is_unique and len(splits) == 8
    seen = {}
    for split in datasets.SPLITS:
        whole = datasets.load_split(workdir, "whole", split, truth=True)
        regions = datasets.load_split(workdir, "regions", split, truth=True, as_float=True)
        seen[split] = set(whole.records["patient_id"])
        n_scans = whole.records["scan_id"].nunique()
        assert len(whole.records) == n_scans * 8 and len(regions.records) == n_scans * 8 * 6
        assert whole.images["axial"].shape == (n_scans * 8, 16, 16) and whole.images["axial"].dtype == np.uint8
        assert regions.images["coronal"].shape == (n_scans * 8 * 6, 3, 8, 3)
        assert regions.images["sagittal"].dtype == np.float32 and regions.images["sagittal"].max() <= 1
        assert whole.truth["axial"].shape == (n_scans * 8, 16, 16, 4)
        # rows match the per-scan arrays; labels come from the manifest
        scan_id = whole.records["scan_id"].iloc[-1]
        data = datasets.read_scan_npz(stage.parent.parent / "projections" / wd.current_stage(workdir, "projections")[0]
                                      / "scans" / f"{scan_id}.npz")
        np.testing.assert_array_equal(whole.images["sagittal"][-8:], data["whole_sagittal"])
        np.testing.assert_array_equal(
            np.asarray(regions.images["axial"][-48:]), projections.to_unit(data["regions_axial"].reshape(48, 16, 8, 3))
        )
        ru = regions.records[(regions.records["region"] == "RU")]
        assert (ru["cavity"] == ru["disease"]).all()  # every CPA scan here has an RU cavity
        assert (regions.records.loc[regions.records["region"] != "RU", list(LABELS)] == 0).all().all()
        assert list(regions.records["region"].iloc[:6]) == list(REGIONS)
        assert (whole.records["rotation"].iloc[:8] == np.arange(8)).all()
        # control scans have no sign truth: zeros
        no_truth = ~whole.records["has_truth"].to_numpy()
        assert (whole.records.loc[no_truth, "group"] == "control").all()
        assert not np.asarray(whole.truth["axial"])[no_truth].any()
        cpa_rows = np.flatnonzero(whole.records["disease"].to_numpy() == 1)
        if len(cpa_rows):
            assert np.asarray(whole.truth["axial"])[cpa_rows[0], ..., LABELS.index("cavity")].any()
    assert not (seen["train"] & seen["val"]) and not (seen["train"] & seen["test"]) and not (seen["val"] & seen["test"])
    assert set.union(*seen.values()) == {f"P{i}" for i in range(8)}
    # the same parameters find the finished stage; the split is reproducible
    assert datasets.build_datasets(workdir, fractions=(0.5, 0.25, 0.25), seed=0, progress=False) == stage


def test_stage_readers_find_the_projections_and_the_record(workdir):
    stage, _ = datasets.preprocess_cohort(workdir, PARAMS, n_jobs=1, progress=False)
    assert datasets.projection_path(stage, "S4_0") == stage / "scans" / "S4_0.npz"
    stored = datasets.read_projection(stage, "S4_0")
    np.testing.assert_array_equal(stored["whole_axial"], datasets.read_scan_npz(stage / "scans" / "S4_0.npz")["whole_axial"])
    assert stored["meta"]["scan_id"] == "S4_0"
    data_dir = datasets.build_datasets(workdir, fractions=(0.5, 0.25, 0.25), seed=0, progress=False)
    info = datasets.datasets_info(data_dir)
    assert info["params"] == {"fractions": [0.5, 0.25, 0.25], "seed": 0}
    assert sum(part["scans"] for part in info["splits"].values()) == 9
    # the variant reads the main run's parameters from the stages' records
    with datasets.projection_variant(workdir, progress=False, statistic="weighted") as variant:
        assert variant.statistic == "weighted" and variant.grid_shape == PARAMS.grid_shape
        assert wd.stage_params(workdir, "datasets") == info["params"]
    assert wd.stage_params(workdir, "projections")["statistic"] == PARAMS.statistic


def test_split_counts_and_balance_table():
    records = {"train": pd.DataFrame({"patient_id": ["a", "a", "b", "c"], "scan_id": ["1", "1", "2", "3"],
                                      "disease": [1, 1, 0, 1], "death_2y": [1.0, 1.0, np.nan, 0.0],
                                      "censored_2y": [False, False, True, False]})}
    counts = splits.split_counts(records)
    assert counts.loc["train"].to_dict() == {"patients": 3, "scans": 3, "images": 4, "control": 1, "CPA": 3,
                                             "death within 2 y": 2, "alive at 2 y": 1, "censored before 2 y": 1}
    table = splits.balance_table({"disease": records["train"]["disease"], "death": records["train"]["death_2y"],
                                  "one": pd.Series([1, 1, 1])}, seed=0)
    assert table.loc["disease"].tolist() == [1, 3, 3]
    assert table.loc["death"].tolist() == [1, 2, 2]  # the censored row left out
    assert table.loc["one", "per class after balancing"] == "one class only"
