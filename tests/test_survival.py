"""Two-year survival (sapsam_utils.learning.survival): the paper's labels, lifelines analyses, head reset."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from sapsam_utils.data.manifest import two_year_death
from sapsam_utils.data.manifest import validate_manifest
from sapsam_utils.core.regions import LABEL_COLUMNS
from sapsam_utils.learning.survival import (
    concordance,
    cox_model,
    cox_results,
    km_logrank,
    label_counts,
    label_results,
    labels_by_split,
    paper_labels,
    ph_check,
    reset_head,
    risk_groups,
    survival_table,
    time_to_event,
)
from sapsam_utils.core.results import Estimate

DIED_IN = "died within 2 years after the scan"
ALIVE = "alive 2 years after the scan"
DIED_LATER = "died, scan more than 2 years before death"
SHORT = "alive, follow-up shorter than 2 years after the scan"


def _row(patient, scan, scan_date, death="", last="2020-01-01", group="cpa"):
    row = {"patient_id": patient, "scan_id": scan, "scan_date": scan_date, "source": "phantom:1", "group": group,
           **{c: 0 for c in LABEL_COLUMNS}, "death_date": death, "last_followup_date": last,
           "lung_mask": "", "lesion_mask": ""}
    return row


@pytest.fixture
def timelines() -> pd.DataFrame:
    rows = [
        # P1 died 2012-01-01; three scans, each labelled on its own
        _row("P1", "S1", "2010-01-01", "2012-01-01", "2012-01-01"),  # 730 days: exactly 2 years -> 1
        _row("P1", "S2", "2009-12-31", "2012-01-01", "2012-01-01"),  # 731 days: 2 years + 1 day -> out
        _row("P1", "S3", "2011-06-01", "2012-01-01", "2012-01-01"),  # 7 months -> 1
        # P2 alive, followed up to 2012-01-01
        _row("P2", "S4", "2011-06-01", "", "2012-01-01"),            # follow-up 7 months -> out
        _row("P2", "S5", "2009-06-01", "", "2012-01-01"),            # follow-up > 2 years -> 0
        _row("P2", "S6", "2010-01-01", "", "2012-01-01"),            # follow-up 730 days < 730.5 -> out
        _row("P2", "S7", "2009-12-31", "", "2012-01-01"),            # follow-up 731 days -> 0
        # P3 a control, died within 2 years: still left out
        _row("P3", "S8", "2011-01-01", "2011-06-01", "2011-06-01", group="control"),
        # P4: a calendar anniversary across 29 February 2012 is 731 days -> out
        _row("P4", "S9", "2011-01-01", "2013-01-01", "2013-01-01"),
    ]
    table = pd.DataFrame(rows)
    assert validate_manifest(table) == []
    return table


def test_paper_labels_on_hand_made_timelines(timelines):
    labels = paper_labels(timelines)
    assert labels.index.equals(timelines.index)
    got = dict(zip(timelines["scan_id"], zip(labels["survival_label"], labels["reason"])))
    expected = {
        "S1": (1.0, DIED_IN), "S2": (None, DIED_LATER), "S3": (1.0, DIED_IN),
        "S4": (None, SHORT), "S5": (0.0, ALIVE), "S6": (None, SHORT), "S7": (0.0, ALIVE),
        "S8": (None, "control"), "S9": (None, DIED_LATER),
    }
    for scan_id, (label, reason) in expected.items():
        value, why = got[scan_id]
        assert why == reason, scan_id
        assert (np.isnan(value) if label is None else value == label), (scan_id, value)


def test_paper_labels_agree_with_two_year_death_and_follow_years(timelines):
    labels = paper_labels(timelines)
    outcome = two_year_death(timelines)
    used = labels["survival_label"].notna()
    # every label the paper uses is the scan's two-year outcome (same day arithmetic)
    assert (labels.loc[used, "survival_label"] == outcome[used]).all()
    # a death between 2 and 3 years after the scan is positive with a 3-year horizon
    three = paper_labels(timelines, years=3.0).set_index(timelines["scan_id"])
    assert three.loc["S2", "survival_label"] == 1.0
    assert three.loc["S5", "reason"] == "alive, follow-up shorter than 3 years after the scan"


def test_label_counts(timelines):
    labels = paper_labels(timelines)
    counts = label_counts(labels, timelines["patient_id"])
    assert counts["label"].tolist() == ["positive", "negative", "left out", "left out", "left out", "total"]
    by_reason = counts.set_index("reason")
    assert by_reason.loc[DIED_IN, "scans"] == 2 and by_reason.loc[DIED_IN, "patients"] == 1
    assert by_reason.loc[ALIVE, "scans"] == 2
    assert by_reason.loc[DIED_LATER, "scans"] == 2 and by_reason.loc[DIED_LATER, "patients"] == 2
    assert by_reason.loc[SHORT, "scans"] == 2
    assert by_reason.loc["control", "scans"] == 1
    assert counts.iloc[-1]["scans"] == len(timelines) and counts.iloc[-1]["patients"] == 4


def test_time_to_event(timelines):
    tte = time_to_event(timelines).set_index("scan_id")
    assert tte.loc["S1", "event"] == 1 and tte.loc["S1", "time_years"] == pytest.approx(730 / 365.25)
    assert tte.loc["S5", "event"] == 0 and tte.loc["S5", "time_years"] == pytest.approx(944 / 365.25)
    assert (tte["time_years"] >= 0).all()


def test_a_scan_after_death_is_rejected():
    row = _row("P1", "S1", "2012-03-04", "2011-01-01", "2011-01-01")
    problems = validate_manifest(pd.DataFrame([row]))
    assert "row 1 (scan_id 'S1'): scan_date 2012-03-04 is after death_date 2011-01-01" in problems, problems
    row["last_followup_date"] = row["death_date"] = "2012-03-04"  # scanned on the day of death: fine
    assert validate_manifest(pd.DataFrame([row])) == []


# --- lifelines --------------------------------------------------------------------------------


def _simulated(n=400, log_hr=0.8, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    null = rng.standard_normal(n)
    death = rng.exponential(1.0 / (0.3 * np.exp(log_hr * x)))
    censor = rng.exponential(1.0 / 0.15, n)
    return pd.DataFrame({"time": np.minimum(death, censor), "event": (death <= censor).astype(int),
                         "x": x, "null": null, "patient_id": [f"P{i}" for i in range(n)]})


def test_cox_recovers_a_known_hazard_ratio_and_logrank_separates_groups():
    table = _simulated()
    assert 0.3 < 1 - table["event"].mean() < 0.5  # some censoring, not most
    fitted, summary = cox_model(table, "time", "event", ["x", "null"])
    rows = summary.set_index("covariate")
    assert rows.loc["x", "ci_lower"] <= np.exp(0.8) <= rows.loc["x", "ci_upper"]
    assert rows.loc["x", "ci_lower"] > 1.5 and rows.loc["x", "p_value"] < 1e-6
    assert rows.loc["null", "ci_lower"] <= 1 <= rows.loc["null", "ci_upper"]
    assert rows.loc["x", "hazard_ratio"] == pytest.approx(np.exp(rows.loc["x", "coef"]))

    high = risk_groups(table["x"])
    assert high.sum() == len(table) // 2
    km = km_logrank(table["time"], table["event"], high)
    assert km["p_value"] < 0.01 and km["test_statistic"] > 6.6
    assert list(km["fitters"]) == ["low risk", "high risk"]
    assert km["n"] == {"low risk": 200, "high risk": 200}
    assert km["median_survival"]["high risk"] < km["median_survival"]["low risk"]
    null = km_logrank(table["time"], table["event"], risk_groups(table["null"]))
    assert null["p_value"] > 0.01


def test_cox_cluster_col_gives_robust_standard_errors():
    table = _simulated(n=200, seed=1)
    single = cox_model(table, "time", "event", ["x"])[1].set_index("covariate")
    twice = pd.concat([table, table], ignore_index=True)  # two identical "scans" per patient
    naive = cox_model(twice, "time", "event", ["x"])[1].set_index("covariate")
    robust = cox_model(twice, "time", "event", ["x"], cluster_col="patient_id")[1].set_index("covariate")
    assert naive.loc["x", "se"] == pytest.approx(single.loc["x", "se"] / np.sqrt(2), rel=0.05)
    assert robust.loc["x", "se"] == pytest.approx(single.loc["x", "se"], rel=0.25)
    assert robust.loc["x", "coef"] == pytest.approx(single.loc["x", "coef"], rel=0.02)  # ties: Efron


def test_ph_check_flags_crossing_hazards_only():
    table = _simulated(seed=2)
    fitted, _ = cox_model(table, "time", "event", ["x", "null"])
    check = ph_check(fitted, table).set_index("covariate")
    assert set(check.index) == {"x", "null"}
    assert (check["p_value"] > 0.01).all(), check
    rng = np.random.default_rng(3)
    group = np.repeat([0, 1], 200)
    shape = np.where(group == 1, 3.0, 0.5)  # Weibull hazards that cross
    crossing = pd.DataFrame({"time": rng.weibull(shape), "event": 1, "group": group.astype(float)})
    fitted, _ = cox_model(crossing, "time", "event", ["group"])
    assert ph_check(fitted, crossing).set_index("covariate").loc["group", "p_value"] < 0.01


def test_concordance():
    time = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    event = np.ones(5, dtype=int)
    risk = -time  # dies first = highest risk
    assert concordance(time, event, risk) == 1.0
    assert concordance(time, event, -risk) == 0.0
    assert concordance(time, event, np.zeros(5)) == 0.5
    table = _simulated()
    assert 0.6 < concordance(table["time"], table["event"], table["x"]) < 0.8


def test_risk_groups():
    assert risk_groups([1, 2, 3, 4]).tolist() == [False, False, True, True]
    assert risk_groups([1, 2, 2, 3]).tolist() == [False, False, False, True]  # ties at the median: low
    assert risk_groups([0.1, 0.6, 0.4], split=0.5).tolist() == [False, True, False]
    with pytest.raises(ValueError):
        risk_groups([1, 2], split="mean")


def test_kaplan_meier_figure():
    import matplotlib.pyplot as plt

    from sapsam_utils.report.plots import kaplan_meier

    table = _simulated(n=100)
    km = km_logrank(table["time"], table["event"], risk_groups(table["x"]))
    ax = kaplan_meier(km["fitters"], title="by x")
    assert "years" in ax.get_xlabel() and ax.get_title() == "by x"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["low risk", "high risk"]
    for line, fitter in zip(ax.lines, km["fitters"].values()):  # each curve is its group's estimate, as steps
        assert line.get_drawstyle() == "steps-post"
        np.testing.assert_allclose(line.get_xdata(), fitter.survival_function_.index)
        np.testing.assert_allclose(line.get_ydata(), fitter.survival_function_.iloc[:, 0])
    plt.close(ax.figure)
    # a hand-computed curve: deaths at 1, 3 and 4 years, one censored at 2 (4 at risk, then 2, then 1)
    time, event = np.array([1.0, 2.0, 3.0, 4.0, 1.5, 2.5]), np.array([1, 0, 1, 1, 0, 0])
    km = km_logrank(time, event, np.array([False] * 4 + [True] * 2))
    ax = kaplan_meier(km["fitters"], at_risk=False)
    np.testing.assert_allclose(ax.lines[0].get_xdata(), [0, 1, 2, 3, 4])
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [1, 0.75, 0.75, 0.375, 0])
    np.testing.assert_allclose(ax.lines[1].get_ydata(), [1, 1, 1])  # no death among the high-risk two
    plt.close(ax.figure)


def _labelled_cohort():
    rows = [("P1", "s1", "cpa", 1.0, "train"), ("P1", "s2", "cpa", np.nan, "train"), ("P2", "s3", "cpa", 0.0, "test"),
            ("P3", "s4", "cpa", 0.0, "test"), ("P3", "s5", "cpa", 1.0, "test"), ("C1", "s6", "control", np.nan, "val")]
    return pd.DataFrame(rows, columns=["patient_id", "scan_id", "group", "label", "split"])


def test_label_results_and_labels_by_split():
    cohort = _labelled_cohort()
    assert label_results(cohort) == {"n_positive_scans": 2, "n_negative_scans": 2, "n_left_out_scans": 1,
                                     "n_control_scans_left_out": 1, "n_positive_patients": 2,
                                     "n_negative_patients": 2}
    table = labels_by_split(cohort[cohort["group"] == "cpa"], ("train", "val", "test"))
    assert list(table.index) == ["train", "val", "test", "total"]
    assert table.loc["train"].tolist() == [1, 1, 0, 1]  # patients, positive, negative, left out
    assert table.loc["val"].tolist() == [0, 0, 0, 0]  # no CPA scan there
    assert table.loc["test"].tolist() == [2, 1, 2, 0]
    assert table.loc["total"].tolist() == [3, 2, 2, 1]


def test_survival_table_scores_each_scan_and_keeps_the_first_per_patient():
    scans = pd.DataFrame({"scan_id": ["a", "b", "c", "d"], "patient_id": ["P1", "P1", "P2", "P3"],
                          "scan_date": ["2015-03-01", "2014-01-01", "2016-01-01", "2016-01-01"]})
    images = pd.DataFrame({"scan_id": ["a", "a", "b", "c", "c"], "probability": [0.2, 0.4, 0.9, 0.5, 0.7]})
    table, first = survival_table(scans, images)
    assert table["scan_id"].tolist() == ["a", "b", "c"]  # d has no image
    np.testing.assert_allclose(table["score"], [0.3, 0.9, 0.6])
    np.testing.assert_allclose(table["score_z"], [-1.0, 1.0, 0.0], atol=1e-12)  # mean 0.6, sample SD 0.3
    assert first.set_index("patient_id")["scan_id"].to_dict() == {"P1": "b", "P2": "c"}


def test_cox_results_names_hazard_ratios_and_p_values():
    summary = pd.DataFrame({"covariate": ["score_z", "burden"], "coef": [0.1, 0.2], "se": [0.1, 0.1],
                            "hazard_ratio": [1.23456, 0.5], "ci_lower": [1.1, 0.25], "ci_upper": [1.4, 1.0],
                            "p_value": [0.01, 0.2]})
    numbers, shown = cox_results(summary, "cox_hr")
    assert numbers == {"cox_hr_score": Estimate(1.23456, 1.1, 1.4), "cox_p_score": 0.01,
                       "cox_hr_burden": Estimate(0.5, 0.25, 1.0), "cox_p_burden": 0.2}
    assert shown.loc["score_z", "hazard_ratio"] == 1.235 and list(shown.columns) == [
        "hazard_ratio", "ci_lower", "ci_upper", "p_value"]


# --- reset_head ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def classifier():
    from sapsam_utils.learning.models import build_classifier

    model = build_classifier("vgg19_bn", (32, 32, 3), 32, None, 0, seed=0)
    # stand in for training: move every weight away from its initial value
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights([w + rng.normal(0, 0.01, w.shape).astype(w.dtype) for w in layer.get_weights()])
    return model


def test_reset_head(classifier):
    import keras

    model = classifier
    before = {layer.name: [w.copy() for w in layer.get_weights()] for layer in model.layers}
    trainable_before = {layer.name: layer.trainable for layer in model.layers}
    reset = reset_head(model, seed=0)
    assert reset is not model
    head = ("fc2", "logits")
    for layer in reset.layers:
        old = before[layer.name]
        new = layer.get_weights()
        assert len(new) == len(old)
        if layer.name in head:
            assert layer.trainable
            for o, n in zip(old, new):
                assert o.shape == n.shape and not np.allclose(o, n)
        else:
            assert not layer.trainable, layer.name
            for o, n in zip(old, new):
                np.testing.assert_array_equal(o, n, err_msg=layer.name)
    # the fresh weights come from the layers' own initializers: Gaussian kernels (sd 0.01), zero biases
    kernel, bias = reset.get_layer("fc2").get_weights()
    assert kernel.std() == pytest.approx(0.01, rel=0.05) and abs(kernel.mean()) < 1e-3
    np.testing.assert_array_equal(bias, 0)
    # ... drawn anew, not the build's initial weights (seeded 1 and 2 by build_classifier)
    init = keras.initializers.RandomNormal(stddev=0.01, seed=1)((1024, 1024))
    assert not np.allclose(kernel, keras.ops.convert_to_numpy(init))
    assert len(reset.trainable_weights) == 4
    # the input model is unchanged
    for layer in model.layers:
        assert layer.trainable == trainable_before[layer.name]
        for o, n in zip(before[layer.name], layer.get_weights()):
            np.testing.assert_array_equal(o, n)
    # seeded: same seed, same weights; another seed, other weights
    again = reset_head(model, seed=0).get_layer("logits").get_weights()[0]
    other = reset_head(model, seed=1).get_layer("logits").get_weights()[0]
    np.testing.assert_array_equal(again, reset.get_layer("logits").get_weights()[0])
    assert not np.allclose(other, again)
    # the clone runs
    x = np.random.default_rng(1).random((2, 32, 32, 3)).astype("float32")
    assert reset.predict(x, verbose=0).shape == (2, 2)


def test_reset_head_options(classifier):
    with pytest.raises(ValueError, match="fc3"):
        reset_head(classifier, layers=("fc3",))
    unfrozen = reset_head(classifier, layers=("logits",), freeze_base=False)
    assert all(layer.trainable == classifier.get_layer(layer.name).trainable for layer in unfrozen.layers
               if layer.name != "logits")
    np.testing.assert_array_equal(unfrozen.get_layer("fc2").get_weights()[0],
                                  classifier.get_layer("fc2").get_weights()[0])
