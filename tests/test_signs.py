"""Sign labelling: per-sign balancing, labels of sub-region images, the position-only baseline,
per-level scores, the Table 2 layout and the projection variant of the statistic study."""

import json

import numpy as np
import pandas as pd
import pytest

from sapsam_utils.stages import workdir as wd
from sapsam_utils.stages import datasets
from sapsam_utils.learning import signs
from sapsam_utils.core.regions import LABELS, REGIONS
from sapsam_utils.learning.training import epoch_rows, prediction_table

from test_datasets import PARAMS, manifest_rows, workdir  # noqa: F401  (the fixture)


def region_table(rates: dict[str, float], n_per_region: int = 100, label: str = "cavity", patients: int = 10):
    """Rows of sub-region images whose ``label`` has exactly the given rate in each sub-region."""
    rows = []
    for region, rate in rates.items():
        n_pos = int(round(rate * n_per_region))
        for k in range(n_per_region):
            rows.append({"region": region, label: int(k < n_pos), "patient_id": f"P{k % patients}",
                         "scan_id": f"S{k}", "rotation": 0})
    return pd.DataFrame(rows)


def test_position_baseline_on_a_hand_made_table():
    rates = {"RU": 0.6, "LU": 0.4, "RM": 0.1, "LM": 0.1, "RL": 0.0, "LL": 0.0}
    table = region_table(rates)
    fitted = signs.position_rates(table, "cavity")
    assert fitted["RU"] == pytest.approx(0.6) and fitted["RL"] == 0.0
    assert fitted["all"] == pytest.approx(1.2 / 6)
    prob = signs.position_probability(REGIONS, fitted)
    # by hand: pi = 0.2; odds = (r / pi) / ((1 - r) / (1 - pi))
    pi = 0.2
    expected = {r: (v / pi) / ((v / pi) + (1 - v) / (1 - pi)) for r, v in rates.items()}
    np.testing.assert_allclose(prob, [expected[r] for r in REGIONS])
    assert expected["RU"] == pytest.approx(6 / 7)  # (3) / (3 + 0.5)
    # it calls the sign exactly where a sub-region's rate is above the overall rate
    assert list(np.asarray(REGIONS)[prob >= 0.5]) == ["RU", "LU"]
    # a sub-region absent from training gets the overall rate: 0.5, the balanced prior
    partial = signs.position_rates(table[table["region"] != "LM"], "cavity")
    assert signs.position_probability(["LM"], partial)[0] == pytest.approx(0.5)


def test_position_baseline_refuses_unknown_labels_and_regions():
    table = region_table({"RU": 0.5})
    with pytest.raises(ValueError, match="label 'nodule'"):
        signs.position_rates(table, "nodule")
    with pytest.raises(ValueError, match="XX"):
        signs.region_level(["RU", "XX"])


def test_per_sign_balancing_uses_that_sign_and_training_rows_only():
    table = region_table({"RU": 0.5, "LU": 0.3, "RM": 0.1, "LM": 0.0, "RL": 0.0, "LL": 0.0})
    table["fungus_ball"] = (np.arange(len(table)) % 20 == 0).astype(int)
    for label in ("cavity", "fungus_ball"):
        labels = table[label].to_numpy()
        rows = epoch_rows(labels, epoch=0, seed=3)
        n_pos = int(labels.sum())
        assert (labels[rows] == 1).sum() == (labels[rows] == 0).sum() == len(labels) - n_pos
        assert set(np.flatnonzero(labels)) <= set(rows)  # every positive image is drawn
    # another sign, another balance
    assert len(epoch_rows(table["cavity"].to_numpy(), 0, 3)) != len(epoch_rows(table["fungus_ball"].to_numpy(), 0, 3))


def test_region_image_labels_match_the_manifest_through_every_rotation(workdir):  # noqa: F811
    datasets.preprocess_cohort(workdir, PARAMS, n_jobs=1, progress=False)
    datasets.build_datasets(workdir, fractions=(0.5, 0.25, 0.25), seed=0, progress=False)
    manifest = manifest_rows().set_index("scan_id")
    n_rotations = len(PARAMS.rotations)
    for split in datasets.SPLITS:
        data = datasets.load_split(workdir, "regions", split, axes=("axial",), truth=True)
        records = data.records
        assert sorted(records["rotation"].unique()) == list(range(n_rotations))
        for label in LABELS:
            expected = [int(manifest.at[s, f"{r}_{label}"]) for s, r in zip(records["scan_id"], records["region"])]
            assert records[label].tolist() == expected
        # the images of a positive cavity label carry cavity truth in that sub-region, rotated or not
        cavity = records["cavity"].to_numpy() == 1
        truth = np.asarray(data.truth["axial"])[..., LABELS.index("cavity")].reshape(len(records), -1).max(axis=1)
        assert (truth[cavity] > 0).all() and not (truth[~cavity] > 0).any()


def test_scores_by_level_and_table2():
    table = region_table({"RU": 0.5, "LU": 0.5, "RM": 0.5, "LM": 0.5, "RL": 0.5, "LL": 0.5})
    # perfect in the upper third, always wrong in the middle, all negative calls in the lower
    level = signs.region_level(table["region"]).to_numpy()
    prob = np.where(level == "upper", table["cavity"], np.where(level == "middle", 1 - table["cavity"], 0.0))
    predictions = prediction_table(table, table["cavity"], prob.astype(float))
    assert list(predictions.columns)[-1] == "region"
    scores = signs.scores_by_level(predictions, n_boot=50).set_index(["level", "metric"])["value"]
    assert scores["upper", "recall"] == 1.0 and scores["upper", "precision"] == 1.0
    assert scores["middle", "recall"] == 0.0 and scores["lower", "recall"] == 0.0
    long = pd.DataFrame([{"sign": "cavity", "axis": "axial", "metric": m, "value": 0.9, "ci_low": 0.8, "ci_high": 0.95}
                         for m in ("precision", "recall")])
    t2 = signs.table2(long, {"cavity_axial_image_precision": 0.892, "cavity_coronal_image_recall": 0.885},
                      axes=("axial", "coronal"))
    assert t2.loc["cavities", ("precision", "axial", "ours")] == "90.0 [80.0, 95.0]"
    assert t2.loc["cavities", ("precision", "axial", "paper")] == "89.2"
    assert t2.loc["cavities", ("recall", "coronal", "ours")] == "—"
    assert t2.loc["cavities", ("recall", "coronal", "paper")] == "88.5"


def test_projection_variant_leaves_the_main_run_current(workdir):  # noqa: F811
    datasets.preprocess_cohort(workdir, PARAMS, n_jobs=1, progress=False)
    main = datasets.build_datasets(workdir, fractions=(0.5, 0.25, 0.25), seed=0, progress=False)
    before = {s: wd.current_stage(workdir, s)[0] for s in ("projections", "datasets")}
    with datasets.projection_variant(workdir, statistic="weighted", progress=False) as variant:
        assert variant.statistic == "weighted"
        _, inside = wd.current_stage(workdir, "datasets")
        assert inside != main
        # the same patients in each split
        assert pd.read_csv(inside / "splits.csv").equals(pd.read_csv(main / "splits.csv"))
        stored = json.loads((wd.current_stage(workdir, "projections")[1] / "stage.json").read_text())
        assert stored["params"]["statistic"] == "weighted"
    assert {s: wd.current_stage(workdir, s)[0] for s in ("projections", "datasets")} == before
    assert not (workdir / "models" / "current.json").exists()  # no models stage before: none after
    with pytest.raises(ValueError, match="not projection parameters"):
        with datasets.projection_variant(workdir, statistc="weighted"):
            pass
