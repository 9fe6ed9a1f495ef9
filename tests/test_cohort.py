"""The synthetic cohort, the subset choice, the scans stage and the realism measures."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from sapsam_utils.synthetic.cohort import (
    PAPER_TABLE1,
    auc,
    burden,
    cohort_summary,
    select_patients,
    preexisting_table,
    sign_table,
    simulate_cohort,
    table1,
)
from sapsam_utils.stages.scans import ScanBuildError, build_scans, scans_stage_params
from sapsam_utils.data.manifest import ALL_COLUMNS, normalise, phantom_seeds, read_manifest, two_year_death, write_manifest
from sapsam_utils.core.paths import project_path, shared_ct_dir
from sapsam_utils.synthetic.phantom import PREEXISTING_CONDITIONS
from sapsam_utils.core.paper import PAPER_NUMBERS, load_paper_numbers
from sapsam_utils.synthetic.realism import body_mask, body_size_mm, hu_distance, lung_estimate, realism_measures
from sapsam_utils.core.regions import LABEL_COLUMNS, LABELS, REGIONS, lung_box, region_labels, region_map
from sapsam_utils.core.volume import Volume, read_volume

TINY = dict(phantom_shape=(54, 64, 64), phantom_spacing=(6.0, 5.6, 5.6))


@pytest.fixture(scope="module")
def cohort():
    return simulate_cohort(0)


# --- the simulated cohort --------------------------------------------------------------------


def test_cohort_has_the_papers_counts(cohort):
    s = cohort_summary(cohort)
    assert (s["patients"], s["scans"]) == (172, 352)
    assert (s["control_patients"], s["control_scans"]) == (76, 76)
    assert (s["cpa_patients"], s["cpa_scans"]) == (96, 276)
    assert (s["cpa_scans_per_patient_min"], s["cpa_scans_per_patient_max"]) == (1, 8)
    assert 8 <= s["cpa_scan_span_years_max"] <= 12.0
    assert cohort["scan_id"].is_unique and cohort["source"].str.fullmatch(r"phantom:\d+:\d+").all()
    assert cohort["source"].is_unique  # every scan its own phantom


def test_cohort_is_a_valid_manifest_and_the_committed_one(cohort, tmp_path):
    path = write_manifest(cohort, tmp_path / "m.csv")
    pd.testing.assert_frame_equal(read_manifest(path), cohort)
    committed = read_manifest(project_path("data_manifest.csv"))
    pd.testing.assert_frame_equal(committed, cohort)  # data_manifest.csv is simulate_cohort(0)


def test_a_patients_scans_share_one_anatomy(cohort):
    seeds = pd.DataFrame([phantom_seeds(s) for s in cohort["source"]], columns=["anatomy", "scan"], index=cohort.index)
    anatomy = seeds["anatomy"].groupby(cohort["patient_id"])
    assert (anatomy.nunique() == 1).all()  # one body per patient
    assert anatomy.first().is_unique  # a body of their own
    assert seeds["scan"].is_unique  # each scan its own signs and noise
    first_scan = seeds["scan"].groupby(cohort["patient_id"]).first()
    pd.testing.assert_series_equal(anatomy.first(), first_scan, check_names=False)  # the first scan's seed
    assert (cohort.groupby("patient_id").size() > 1).sum() >= 50  # so the sharing is exercised


def test_built_scans_of_one_patient_share_the_lungs(cohort, tmp_path):
    per_patient = cohort.groupby("patient_id")["scan_id"].transform("size")
    patient = cohort.loc[per_patient > 1, "patient_id"].iloc[0]
    rows = pd.concat([cohort[cohort["patient_id"] == patient].iloc[:2],
                      cohort[cohort["patient_id"] != patient].iloc[:1]])
    build_scans(rows, tmp_path, tmp_path / "scans", **TINY, n_jobs=1, progress=False)
    lungs = [read_volume(tmp_path / "scans" / sid / "truth_lungs.nii.gz").array for sid in rows["scan_id"]]
    ct = [read_volume(tmp_path / "scans" / sid / "ct.nii.gz").array for sid in rows["scan_id"]]
    assert np.array_equal(lungs[0], lungs[1]) and not np.array_equal(ct[0], ct[1])
    assert not np.array_equal(lungs[0], lungs[2])
    records = [json.loads((tmp_path / "scans" / sid / "scan.json").read_text()) for sid in rows["scan_id"]]
    assert [r["phantom"]["anatomy_seed"] for r in records[:2]] == [phantom_seeds(rows["source"].iloc[0])[0]] * 2


def test_cohort_is_deterministic_by_seed(cohort):
    pd.testing.assert_frame_equal(simulate_cohort(0), cohort)
    other = simulate_cohort(1)
    assert not other[list(LABEL_COLUMNS)].equals(cohort[list(LABEL_COLUMNS)])


def test_controls_have_no_signs_and_fungus_balls_lie_in_cavities(cohort):
    controls = cohort[cohort["group"] == "control"]
    assert controls[list(LABEL_COLUMNS)].to_numpy().sum() == 0
    cpa = cohort[cohort["group"] == "cpa"]
    for region in REGIONS:
        assert (cpa[f"{region}_fungus_ball"] <= cpa[f"{region}_cavity"]).all()
    first = cpa.groupby("patient_id").head(1)
    assert (first[[f"{r}_cavity" for r in REGIONS]].sum(axis=1) > 0).all()  # diagnosed on a cavity


def test_sign_occurrence_follows_table_1s_pattern(cohort):
    table = sign_table(cohort)
    for label in LABELS:
        upper, middle, lower = (table.loc[label, level].sum() for level in ("upper", "middle", "lower"))
        assert upper > 1.4 * middle and middle > lower, (label, upper, middle, lower)
    assert table["total"].sum() == cohort[list(LABEL_COLUMNS)].to_numpy().sum()


def _next_to(region):
    """The adjacent level on the same side and the same level on the other side."""
    levels = "UML"
    i = levels.index(region[1])
    same_side = [region[0] + levels[j] for j in (i - 1, i + 1) if 0 <= j < 3]
    return same_side + [{"R": "L", "L": "R"}[region[0]] + region[1]]


def test_disease_evolves_between_scans(cohort):
    cpa = cohort[cohort["group"] == "cpa"]
    appear = regress = 0
    at_risk = {True: 0, False: 0}  # regions without a cavity, by whether a neighbour has one
    new = {True: 0, False: 0}
    for _, scans in cpa.groupby("patient_id"):
        labels = scans[list(LABEL_COLUMNS)].to_numpy()
        appear += int(((labels[1:] == 1) & (labels[:-1] == 0)).sum())
        regress += int(((labels[1:] == 0) & (labels[:-1] == 1)).sum())
        for before, after in zip(scans.iloc[:-1].to_dict("records"), scans.iloc[1:].to_dict("records")):
            for region in REGIONS:
                if not before[f"{region}_cavity"]:
                    near = any(before[f"{r}_cavity"] for r in _next_to(region))
                    at_risk[near] += 1
                    new[near] += after[f"{region}_cavity"]
    assert appear > 50 and regress > 20
    assert new[True] > 0.6 * (new[True] + new[False])  # new cavities mostly appear beside existing ones
    assert new[True] / at_risk[True] > 3 * new[False] / at_risk[False]
    balls = cpa[[f"{r}_fungus_ball" for r in REGIONS]].to_numpy().sum(axis=1)
    assert (balls[cpa.groupby("patient_id").cumcount().to_numpy() > 0] > 0).any()


def test_the_committed_cohort_matches_table_1():
    committed = read_manifest(project_path("data_manifest.csv"))
    table = table1(committed)
    assert len(table) == 18 and table["paper"].sum() == sum(sum(sum(lr) for lr in t) for t in PAPER_TABLE1.values())
    assert table.set_index(["sign", "level", "side"]).loc[("cavity", "upper", "left"), "paper"] == 172
    assert table.set_index(["sign", "level", "side"]).loc[("fungus_ball", "upper", "right"), "paper"] == 143
    # every cell within 15 % or 5 studies of the paper's, whichever is wider
    assert table["within"].all(), table[~table["within"]]
    tolerance = np.maximum(0.15 * table["paper"], 5)
    assert ((table["cohort"] - table["paper"]).abs() <= tolerance).all()
    # the cohort count is that of the manifest's own sub-region (table left | right = patient's L | R)
    for row in table.itertuples():
        assert row.region == row.side[0].upper() + row.level[0].upper()
        assert row.cohort == committed.loc[committed["group"] == "cpa", f"{row.region}_{row.sign}"].sum()


def test_the_books_paper_numbers_hold_table_1():
    rows = [r for r in load_paper_numbers(project_path(PAPER_NUMBERS)) if r["key"].startswith("table1_")]
    expected = {f"table1_{sign}_{level}_{side}": n
                for sign, levels in PAPER_TABLE1.items()
                for level, pair in zip(("upper", "middle", "lower"), levels)
                for side, n in zip(("left", "right"), pair)}
    assert {r["key"]: r["paper"] for r in rows} == expected
    assert {r["notebook"] for r in rows} == {"01_cohort"}


def test_table1_flags_counts_outside_the_tolerance():
    rows = pd.DataFrame([{c: 0 for c in LABEL_COLUMNS} | {"group": "cpa"} for _ in range(3)])
    rows.loc[:, "LL_cavity"] = 1  # 3 left lower cavities (paper 5): within 5 studies
    table = table1(rows).set_index(["sign", "level", "side"])
    assert table.loc[("cavity", "lower", "left"), "cohort"] == 3 and table.loc[("cavity", "lower", "left"), "within"]
    assert not table.loc[("cavity", "upper", "left"), "within"]  # 0 against 172
    assert table.loc[("pleural_thickening", "lower", "right"), "within"]  # 0 against 3
    assert table.loc[("cavity", "upper", "left"), "tolerance"] == pytest.approx(0.15 * 172)
    controls = rows.assign(group="control")  # only CPA studies count
    assert table1(controls)["cohort"].sum() == 0


def test_the_cohorts_preexisting_conditions_follow_the_paper():
    table = preexisting_table(read_manifest(project_path("data_manifest.csv")))
    assert table["condition"].tolist() == list(PREEXISTING_CONDITIONS)
    assert table["paper"].tolist() == [112, 86, 66, 39, 38, 26, 31]
    # about as many (study, condition) pairs as the paper's 398, in the paper's proportions
    assert abs(table["cohort"].sum() - 398) <= 40
    np.testing.assert_allclose(table["cohort_share"], table["paper_share"], atol=0.05)
    assert table["within"].sum() >= 5  # a cohort of 96 patients scatters around the paper's counts


def test_two_year_survival_is_learnable_but_not_trivial(cohort):
    s = cohort_summary(cohort)
    assert 0.10 < s["cpa_scans_2y_death_rate"] < 0.35
    assert 0.65 < s["cpa_burden_auc_2y_death"] < 0.90
    assert s["cpa_scans_2y_known"] > 250
    dead = cohort.groupby("patient_id")["death_date"].first() != ""
    assert dead.sum() == s["deaths"]


def test_two_year_death_and_auc_on_hand_made_rows():
    rows = pd.DataFrame({
        "scan_date": ["2010-01-01", "2010-01-01", "2010-01-01", "2010-01-01"],
        "death_date": ["2011-06-01", "2013-01-01", "", ""],
        "last_followup_date": ["2011-06-01", "2013-01-01", "2015-01-01", "2011-01-01"],
    })
    assert two_year_death(rows).tolist()[:3] == [1.0, 0.0, 0.0] and np.isnan(two_year_death(rows)[3])
    assert auc([3, 2, 1, 0], [1, 1, 0, 0]) == 1.0
    assert auc([0, 1, 2, 3], [1, 1, 0, 0]) == 0.0
    assert auc([1, 1, 1, 1], [1, 0, 1, 0]) == 0.5


def test_burden_weights_the_labels():
    row = {c: 0 for c in LABEL_COLUMNS}
    row.update(RU_cavity=1, RU_fungus_ball=1, LL_preexisting=1)
    assert burden(row) == pytest.approx(1.0 + 1.5 + 0.4)
    assert burden(pd.DataFrame([row])).tolist() == [pytest.approx(2.9)]


def test_sign_table_counts_per_sub_region():
    rows = pd.DataFrame([{c: 0 for c in LABEL_COLUMNS} for _ in range(3)])
    rows.loc[0, "RU_cavity"] = 1
    rows.loc[1, "RU_cavity"] = 1
    rows.loc[2, "LL_pleural_thickening"] = 1
    table = sign_table(rows)
    assert table.loc["cavity", ("upper", "right")] == 2 and table.loc["cavity", ("upper", "left")] == 0
    assert table.loc["pleural_thickening", ("lower", "left")] == 1
    assert table[("total", "")].tolist() == [0, 2, 0, 1]


def test_select_patients_keeps_groups_in_proportion(cohort):
    small = select_patients(cohort, 4, seed=0)
    groups = small.groupby("patient_id")["group"].first()
    assert len(groups) == 4 and (groups == "control").sum() == 2  # 76/172 of 4 = 1.8
    for pid, scans in small.groupby("patient_id"):
        assert len(scans) == (cohort["patient_id"] == pid).sum()  # every scan of a chosen patient
    pd.testing.assert_frame_equal(select_patients(cohort, 4, seed=0), small)
    assert set(select_patients(cohort, 4, seed=1)["patient_id"]) != set(small["patient_id"])
    groups24 = select_patients(cohort, 24, seed=0).groupby("patient_id")["group"].first()
    assert (groups24 == "control").sum() == 11 and (groups24 == "cpa").sum() == 13
    two = select_patients(cohort, 2, seed=0).groupby("patient_id")["group"].first()
    assert sorted(two) == ["control", "cpa"]
    assert len(select_patients(cohort, None)) == 352 and len(select_patients(cohort, 500)) == 352
    with pytest.raises(ValueError):
        select_patients(cohort, 0)


# --- the scans stage ---------------------------------------------------------------------------


def _toy_nifti(folder):
    ct = np.full((10, 40, 40), -1000, np.int16)
    ct[1:9, 5:35, 5:35] = 40
    ct[3:7, 10:25, 8:18] = -850
    ct[3:7, 10:25, 22:32] = -850
    ct[0, 0, 0] = -2048
    lesions = np.zeros_like(ct, dtype=np.uint8)
    lesions[4:6, 12:15, 10:13] = 1
    lungs = np.zeros_like(lesions)
    lungs[3:7, 10:25, 8:18] = 1
    lungs[3:7, 10:25, 22:32] = 2
    for name, array in (("ct", ct), ("lesions", lesions), ("lungs", lungs)):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((1.0, 1.0, 3.0))
        sitk.WriteImage(image, str(folder / f"{name}.nii.gz"))
    return ct, lesions, lungs


def _small_manifest(tmp_path):
    cohort = simulate_cohort(0)
    control = cohort[cohort["group"] == "control"].iloc[:1]
    cpa = cohort[(cohort["group"] == "cpa") & (cohort["RU_fungus_ball"] == 1)].iloc[:1]
    real = control.copy()
    real["patient_id"], real["scan_id"], real["source"] = "R1", "R1-ct", "data/ct.nii.gz"
    real["lesion_mask"], real["lung_mask"] = "data/lesions.nii.gz", "data/lungs.nii.gz"
    (tmp_path / "data").mkdir()
    toy = _toy_nifti(tmp_path / "data")
    table = pd.concat([control, cpa, real], ignore_index=True)
    write_manifest(table, tmp_path / "manifest.csv")
    return read_manifest(tmp_path / "manifest.csv"), toy


def test_build_scans_materialises_each_row(tmp_path):
    manifest, (ct, lesions, lungs) = _small_manifest(tmp_path)
    out = tmp_path / "work" / "scans" / "key"
    summary = build_scans(manifest, tmp_path, out, **TINY, n_jobs=1, progress=False)
    assert summary["built"].all() and summary["kind"].tolist() == ["phantom", "phantom", "nifti"]
    control_id, cpa_id = manifest["scan_id"][:2]
    for scan_id in (control_id, cpa_id):
        files = sorted(p.name for p in (out / scan_id).iterdir())
        assert files == ["ct.nii.gz", "scan.json", "truth_lungs.nii.gz", "truth_signs.nii.gz"]
        record = json.loads((out / scan_id / "scan.json").read_text())
        assert record["shape"] == [54, 64, 64] and record["kind"] == "phantom"
        signs = read_volume(out / scan_id / "truth_signs.nii.gz").array
        truth_lungs = read_volume(out / scan_id / "truth_lungs.nii.gz").array
        row = manifest[manifest["scan_id"] == scan_id].iloc[0]
        implied = region_labels(signs, region_map(signs.shape, lung_box(truth_lungs)))
        assert implied == {c: int(row[c]) for c in LABEL_COLUMNS}
        assert read_volume(out / scan_id / "ct.nii.gz").array.dtype == np.int16
    assert read_volume(out / control_id / "truth_signs.nii.gz").array.max() == 0  # a control has no sign
    real = out / "R1-ct"
    assert sorted(p.name for p in real.iterdir()) == ["ct.nii.gz", "lesions.nii.gz", "scan.json", "truth_lungs.nii.gz"]
    loaded = read_volume(real / "ct.nii.gz")
    assert loaded.array[0, 0, 0] == -1024 and np.array_equal(loaded.array[1:], ct[1:])
    assert np.array_equal(read_volume(real / "lesions.nii.gz").array, lesions)
    assert np.array_equal(read_volume(real / "truth_lungs.nii.gz").array, lungs)
    cohort_csv = read_manifest(out / "cohort.csv")  # paths made absolute: valid where it lies
    assert cohort_csv["scan_id"].tolist() == manifest["scan_id"].tolist()
    assert cohort_csv.loc[2, "source"] == str((tmp_path / "data" / "ct.nii.gz").resolve())

    # a rerun skips every finished scan; a removed one is rebuilt
    before = (out / cpa_id / "ct.nii.gz").stat().st_mtime_ns
    import shutil

    shutil.rmtree(out / control_id)
    again = build_scans(manifest, tmp_path, out, **TINY, n_jobs=1, progress=False)
    assert again["built"].tolist() == [True, False, False]
    assert (out / cpa_id / "ct.nii.gz").stat().st_mtime_ns == before


def test_build_scans_in_parallel_gives_the_same_scans(tmp_path):
    manifest, _ = _small_manifest(tmp_path)
    one, two = tmp_path / "one", tmp_path / "two"
    build_scans(manifest, tmp_path, one, **TINY, n_jobs=1, progress=False)
    summary = build_scans(manifest, tmp_path, two, **TINY, n_jobs=2, progress=False)
    assert summary["scan_id"].tolist() == manifest["scan_id"].tolist()
    for scan_id in manifest["scan_id"]:
        a = read_volume(one / scan_id / "ct.nii.gz").array
        b = read_volume(two / scan_id / "ct.nii.gz").array
        assert np.array_equal(a, b)


def test_a_bad_row_names_its_scan_and_leaves_no_partial_folder(tmp_path):
    manifest, _ = _small_manifest(tmp_path)
    (tmp_path / "data" / "ct.nii.gz").write_bytes(b"broken")
    out = tmp_path / "scans"
    with pytest.raises(ScanBuildError, match=r"scan R1-ct \(source \S*data/ct.nii.gz\): .*not a readable image"):
        build_scans(manifest, tmp_path, out, **TINY, n_jobs=1, progress=False)
    assert not (out / "R1-ct").exists()
    assert not any(p.name.startswith(".tmp-") for p in out.iterdir())
    assert (out / manifest["scan_id"][0] / "scan.json").is_file()  # finished scans are kept


def test_stage_params_change_with_rows_and_grid(cohort):
    a = scans_stage_params(cohort.iloc[:3], (54, 64, 64), (6.0, 5.6, 5.6), 1.0)
    assert a == scans_stage_params(cohort.iloc[:3].copy(), [54, 64, 64], [6, 5.6, 5.6], 1)
    assert a != scans_stage_params(cohort.iloc[:4], (54, 64, 64), (6.0, 5.6, 5.6), 1.0)
    assert a != scans_stage_params(cohort.iloc[:3], (54, 64, 64), (6.0, 5.6, 5.6), 2.0)


@pytest.mark.skipif(not shared_ct_dir().is_dir(), reason=f"public CT cases not found at {shared_ct_dir()}")
def test_build_scans_reads_the_dicom_case_of_the_public_manifest(tmp_path):
    manifest = read_manifest(project_path("manifests/public_ct.csv"), base_dir=shared_ct_dir())
    dicom = manifest[manifest["scan_id"] == "lung-dx-a0002"]
    summary = build_scans(dicom, shared_ct_dir(), tmp_path, n_jobs=1, progress=False)
    assert summary["kind"].tolist() == ["dicom"] and summary["shape"][0] == (30, 512, 512)
    ct = read_volume(tmp_path / "lung-dx-a0002" / "ct.nii.gz")
    lesions = read_volume(tmp_path / "lung-dx-a0002" / "lesions.nii.gz")
    assert ct.array.dtype == np.int16 and ct.spacing == pytest.approx((8.0, 0.646484375, 0.646484375))
    assert ct.array[lesions.array > 0].mean() > -400
    record = (tmp_path / "lung-dx-a0002" / "scan.json").read_text()
    assert "Lung_Dx" not in record and "0010|" not in record  # nothing from the DICOM header


# --- realism -----------------------------------------------------------------------------------


def test_realism_estimators_on_a_phantom():
    from sapsam_utils.synthetic.phantom import make_phantom

    phantom = make_phantom({}, 3, (54, 64, 64), (6.0, 5.6, 5.6))
    measures = realism_measures(phantom.ct)
    truth_l = (phantom.lungs.array > 0).sum() * phantom.ct.voxel_volume_ml / 1000
    assert measures["lung_volume_l"] == pytest.approx(truth_l, rel=0.1)
    assert 3.0 < measures["lung_volume_l"] < 8.0
    assert -900 < measures["parenchyma_median_hu"] < -780
    assert 250 < measures["body_width_mm"] < 420 and 180 < measures["body_depth_mm"] < 300


def test_body_size_and_lung_estimate_on_a_drawn_volume():
    array = np.full((5, 60, 80), -1000, np.int16)
    array[:, 10:50, 10:70] = 40  # body 60 x 40 voxels
    array[:, 20:40, 15:35] = -850  # right lung
    array[:, 20:40, 45:65] = -850  # left lung
    array[:, 55:58, 5:75] = 300  # the couch: separate from the body
    ct = Volume(array, (2.0, 1.5, 2.0))
    body = body_mask(ct)
    lungs = lung_estimate(ct, body)
    assert lungs.sum() == 2 * 5 * 20 * 20
    assert body_size_mm(ct, body, lungs) == (60 * 2.0, 40 * 1.5)
    values = np.arange(100.0)
    assert hu_distance(values, values) == 0.0 and hu_distance(values, values + 10) == pytest.approx(10.0)


def test_normalise_keeps_schema(cohort):
    assert list(normalise(cohort).columns) == list(ALL_COLUMNS)


def test_realism_table_and_summary_compare_phantoms_with_real_scans():
    from sapsam_utils.synthetic.phantom import make_phantom
    from sapsam_utils.synthetic.realism import realism_summary, realism_table

    grid = ((54, 64, 64), (6.0, 5.6, 5.6))
    phantoms = {s: make_phantom({}, s, *grid) for s in (1, 2)}
    reals = {"r1": make_phantom({}, 3, *grid, difficulty=2.0).ct, "r2": make_phantom({}, 4, *grid).ct}
    table, values = realism_table(((f"p{s}", p.ct, p.lungs) for s, p in phantoms.items()), reals.items(), seed=5)
    assert list(table.index) == ["p1", "p2", "r1", "r2"] and list(table["kind"]) == ["phantom"] * 2 + ["real"] * 2
    measured = realism_measures(reals["r1"], seed=5)
    np.testing.assert_array_equal(values["r1"], measured["values"])
    assert table.loc["r1", "lung_volume_l"] == measured["lung_volume_l"] and np.isnan(table.loc["r1", "truth_lung_volume_l"])
    truth = phantoms[2].lungs
    assert table.loc["p2", "truth_lung_volume_l"] == pytest.approx((truth.array > 0).sum() * truth.voxel_volume_ml / 1000)
    assert table.loc["r1", "w1_to_real_mean_hu"] == pytest.approx(hu_distance(values["r1"], values["r2"]))
    assert table.loc["p1", "w1_to_real_mean_hu"] == pytest.approx(
        (hu_distance(values["p1"], values["r1"]) + hu_distance(values["p1"], values["r2"])) / 2)
    numbers = realism_summary(table, values)
    assert numbers["realism_phantoms"] == 2
    assert numbers["realism_real_body_width_mm_mean"] == pytest.approx(table.loc[["r1", "r2"], "body_width_mm"].mean())
    assert numbers["realism_phantom_parenchyma_iqr_hu_mean"] == pytest.approx(table.loc[["p1", "p2"], "parenchyma_iqr_hu"].mean())
    assert numbers["realism_w1_real_to_real_hu_mean"] == pytest.approx(hu_distance(values["r1"], values["r2"]))
    assert numbers["realism_w1_phantom_to_real_hu_mean"] == pytest.approx(table.loc[["p1", "p2"], "w1_to_real_mean_hu"].mean())
    # without real scans: the table has no distances and there is nothing to sum up
    alone, values = realism_table([("p1", phantoms[1].ct, None)])
    assert "w1_to_real_mean_hu" not in alone and np.isnan(alone.loc["p1", "truth_lung_volume_l"])
    assert realism_summary(alone, values) == {}


def test_the_papers_cohort_numbers_come_from_the_paper_numbers_file():
    from sapsam_utils.core.paper import paper_values
    from sapsam_utils.synthetic.cohort import PAPER_COUNTS, SUMMARY_NAMES, cohort_table

    paper = paper_values("01_cohort")
    assert PAPER_COUNTS == {"control_patients": paper["manifest_patients"] - paper["manifest_cpa_patients"],
                            "cpa_patients": paper["manifest_cpa_patients"], "cpa_scans": paper["manifest_cpa_scans"],
                            "max_scans": paper["manifest_cpa_scans_per_patient_max"],
                            "max_years": paper["manifest_cpa_scan_span_years_max"]}
    for sign, levels in PAPER_TABLE1.items():
        for level, (left, right) in zip(("upper", "middle", "lower"), levels):
            assert (left, right) == (paper[f"table1_{sign}_{level}_left"], paper[f"table1_{sign}_{level}_right"])
    assert list(PREEXISTING_CONDITIONS.items()) == [(k[len("preexisting_"):], v) for k, v in
                                                    paper_values("01_cohort", "preexisting_").items()]
    # the cohort table: the paper's column from the file, blank where it has no number
    manifest = read_manifest(project_path("data_manifest.csv"))
    full, run = cohort_summary(manifest), cohort_summary(select_patients(manifest, 6, 0))
    table = cohort_table(full, run)
    assert list(table.index) == list(SUMMARY_NAMES.values())
    assert table.loc["patients", "paper"] == paper["manifest_patients"] and table.loc["deaths", "paper"] == ""
    assert table.loc["CPA scans", "manifest"] == full["cpa_scans"] and table.loc["scans (studies)", "this run"] == run["scans"]
