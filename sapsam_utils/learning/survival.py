"""Two-year survival of CPA patients: the paper's labels, time-to-event data and lifelines analyses.

The paper's label rule (only CPA patients; each scan labelled on its own):

* the patient died and the scan was acquired within ``years`` (2) before the death: **positive** (1);
* the patient is alive and the scan was acquired at least ``years`` before the end of follow-up
  (the patient was seen alive ``years`` after the scan): **negative** (0);
* every other scan is left out (NaN): controls, scans of patients who died more than ``years``
  after the scan (their two-year outcome is "alive", but the paper does not use them), and scans
  of living patients whose follow-up ended less than ``years`` after the scan (outcome unknown).

Day arithmetic is that of :func:`sapsam_utils.data.manifest.two_year_death`: the horizon is
``scan_date + years * 365.25`` days (730.5 days for 2 years). Boundaries:

* positive when ``death_date <= horizon``: a death 730 days after the scan is positive (a scan
  exactly two calendar years before the death, when no 29 February lies between them), 731 days is
  left out. A calendar anniversary across a 29 February is 731 days and therefore left out;
* negative when ``last_followup_date >= horizon``: follow-up 731 days after the scan is enough,
  730 days is not.

The scans of one patient share the patient's outcome and are correlated: analyses over scans
should cluster by ``patient_id`` (``cluster_col`` of :func:`cox_model`, robust sandwich standard
errors), and bootstraps should draw patients (:mod:`sapsam_utils.learning.evaluation`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from ..core.results import Estimate

#: Days per year of the label arithmetic (as :func:`sapsam_utils.data.manifest.two_year_death`).
DAYS_PER_YEAR = 365.25


def _years_text(years: float) -> str:
    return f"{years:g} year" + ("" if years == 1 else "s")


def _dates(manifest: pd.DataFrame):
    """``scan``, ``death`` (NaT when blank) and ``last`` follow-up as timestamps."""
    scan = pd.to_datetime(manifest["scan_date"])
    death_text = manifest["death_date"].astype(object).where(manifest["death_date"].notna(), "")
    death = pd.to_datetime(death_text.astype(str).str.strip().replace("", None))
    last = pd.to_datetime(manifest["last_followup_date"])
    return scan, death, last


def paper_labels(manifest: pd.DataFrame, years: float = 2.0) -> pd.DataFrame:
    """The paper's survival label of each scan, with the reason it was given or left out.

    Parameters
    ----------
    manifest : pandas.DataFrame
        Manifest rows (:mod:`sapsam_utils.data.manifest`): ``group``, ``scan_date``, ``death_date``
        (blank or NaN when alive), ``last_followup_date``; dates ISO text or timestamps.
    years : float
        The horizon (paper: 2), in years of 365.25 days.

    Returns
    -------
    pandas.DataFrame
        Indexed like ``manifest``: ``survival_label`` (1.0 positive, 0.0 negative, NaN left out)
        and ``reason``, one of ``"died within 2 years after the scan"`` (1), ``"alive 2 years
        after the scan"`` (0), ``"control"``, ``"died, scan more than 2 years before death"``,
        ``"alive, follow-up shorter than 2 years after the scan"`` (NaN); the number follows
        ``years``. See the module docstring for the boundaries.
    """
    scan, death, last = _dates(manifest)
    horizon = scan + pd.to_timedelta(years * DAYS_PER_YEAR, unit="D")
    cpa = (manifest["group"].astype(str).str.strip() == "cpa").to_numpy()
    died = death.notna().to_numpy()
    within = (died & (death <= horizon)).to_numpy()
    followed = (last >= horizon).to_numpy()
    span = _years_text(years)
    conditions = [~cpa, cpa & within, cpa & died & ~within, cpa & ~died & followed, cpa & ~died & ~followed]
    reasons = ["control", f"died within {span} after the scan", f"died, scan more than {span} before death",
               f"alive {span} after the scan", f"alive, follow-up shorter than {span} after the scan"]
    values = [np.nan, 1.0, np.nan, 0.0, np.nan]
    return pd.DataFrame({"survival_label": np.select(conditions, values, np.nan),
                         "reason": np.select(conditions, reasons, "")}, index=manifest.index)


def label_counts(labels: pd.DataFrame, patient_id: Iterable | None = None) -> pd.DataFrame:
    """How many scans (and patients) each label and reason has: the chapter's "left out, and why".

    Parameters
    ----------
    labels : pandas.DataFrame
        :func:`paper_labels`.
    patient_id : array-like, optional
        The patient of each row of ``labels`` (e.g. ``manifest["patient_id"]``): adds a
        ``patients`` column (distinct patients with at least one scan of that reason).

    Returns
    -------
    pandas.DataFrame
        One row per (label, reason), positive first, then negative, then left out: ``label``
        (``"positive"``, ``"negative"``, ``"left out"``), ``reason``, ``scans`` and optionally
        ``patients``; a last row ``total``.
    """
    names = {1.0: "positive", 0.0: "negative"}
    table = pd.DataFrame({"label": labels["survival_label"].map(names).fillna("left out").to_numpy(),
                          "reason": labels["reason"].to_numpy()})
    if patient_id is not None:
        table["patient_id"] = np.asarray(list(patient_id))
    grouped = table.groupby(["label", "reason"], sort=False)
    out = grouped.size().rename("scans").reset_index()
    if patient_id is not None:
        out["patients"] = grouped["patient_id"].nunique().to_numpy()
    order = {"positive": 0, "negative": 1, "left out": 2}
    out = out.sort_values(["label", "reason"], key=lambda c: c.map(order) if c.name == "label" else c)
    total = {"label": "total", "reason": "", "scans": int(out["scans"].sum())}
    if patient_id is not None:
        total["patients"] = int(table["patient_id"].nunique())
    return pd.concat([out, pd.DataFrame([total])], ignore_index=True)


def time_to_event(manifest: pd.DataFrame) -> pd.DataFrame:
    """Per scan, the time from the scan to death (event) or to the last follow-up (censored).

    Parameters
    ----------
    manifest : pandas.DataFrame
        Manifest rows (``scan_date``, ``death_date``, ``last_followup_date``; ``patient_id`` and
        ``scan_id`` are carried over when present).

    Returns
    -------
    pandas.DataFrame
        Indexed like ``manifest``: ``patient_id``, ``scan_id`` (when present), ``time_years``
        (days / 365.25; 0 for a scan on the day of death) and ``event`` (1 died, 0 censored at
        the last follow-up).
    """
    scan, death, last = _dates(manifest)
    end = death.where(death.notna(), last)
    out = pd.DataFrame(index=manifest.index)
    for column in ("patient_id", "scan_id"):
        if column in manifest.columns:
            out[column] = manifest[column]
    out["time_years"] = (end - scan).dt.days.astype(float) / DAYS_PER_YEAR
    out["event"] = death.notna().astype(int).to_numpy()
    return out


def labels_by_split(cpa: pd.DataFrame, splits: Sequence[str]) -> pd.DataFrame:
    """The labelled CPA scans of each split: patients, positive and negative scans, scans left out.

    Parameters
    ----------
    cpa : pandas.DataFrame
        One row per CPA scan: ``patient_id``, ``split`` and ``label`` (1, 0, or NaN left out).
    splits : sequence of str
        The rows, in order (a split without scans counts 0); a last row ``total`` sums them.
    """
    table = (cpa.assign(positive=cpa["label"] == 1, negative=cpa["label"] == 0, out=cpa["label"].isna()).groupby("split")
             .agg(**{"CPA patients": ("patient_id", "nunique"), "positive scans": ("positive", "sum"),
                     "negative scans": ("negative", "sum"), "CPA scans left out": ("out", "sum")})
             .reindex(list(splits), fill_value=0))
    table.loc["total"] = table.sum()
    return table


def label_results(cohort: pd.DataFrame) -> dict[str, int]:
    """The chapter's label counts: positive, negative and left-out CPA scans, control scans (all
    left out), and the patients with a positive and with a negative scan.

    ``cohort`` has one row per scan: ``group``, ``patient_id`` and ``label`` (:func:`paper_labels`).
    """
    cpa = cohort[cohort["group"] == "cpa"]
    return {"n_positive_scans": int((cpa["label"] == 1).sum()), "n_negative_scans": int((cpa["label"] == 0).sum()),
            "n_left_out_scans": int(cpa["label"].isna().sum()), "n_control_scans_left_out": int(len(cohort) - len(cpa)),
            "n_positive_patients": int(cpa.loc[cpa["label"] == 1, "patient_id"].nunique()),
            "n_negative_patients": int(cpa.loc[cpa["label"] == 0, "patient_id"].nunique())}


def survival_table(scans: pd.DataFrame, predictions: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The scans with the network's score, and each patient's first scan.

    Parameters
    ----------
    scans : pandas.DataFrame
        One row per scan (``scan_id``, ``patient_id``, ``scan_date``, the time-to-event columns ...).
    predictions : pandas.DataFrame
        One row per image: ``scan_id``, ``probability``.

    Returns
    -------
    (pandas.DataFrame, pandas.DataFrame)
        The scans that have images, with ``score`` (the mean probability over the scan's images)
        and ``score_z`` (standardised over these scans, sample standard deviation); then the first
        scan (by ``scan_date``) of each patient.
    """
    score = predictions.groupby("scan_id")["probability"].mean().rename("score").reset_index()
    table = scans.merge(score, on="scan_id")
    table["score_z"] = (table["score"] - table["score"].mean()) / table["score"].std()
    first = table.sort_values(["patient_id", "scan_date"]).drop_duplicates("patient_id")
    return table, first


def cox_results(summary: pd.DataFrame, prefix: str) -> tuple[dict, pd.DataFrame]:
    """The chapter's numbers of a :func:`cox_model` summary and its table.

    Returns
    -------
    (dict, pandas.DataFrame)
        Per covariate (``_z`` dropped from its name), ``<prefix>_<covariate>``: the hazard ratio
        with its 95 % CI (an :class:`~sapsam_utils.core.results.Estimate`), and its p-value under
        the same name with ``_hr_`` read ``_p_``; and the summary by covariate (hazard ratio, CI,
        p-value; hazard ratios to 3 decimals).
    """
    numbers = {}
    for row in summary.to_dict("records"):
        key = f"{prefix}_{row['covariate'].replace('_z', '')}"
        numbers[key] = Estimate(row["hazard_ratio"], row["ci_lower"], row["ci_upper"])
        numbers[key.replace("_hr_", "_p_")] = row["p_value"]
    columns = ["hazard_ratio", "ci_lower", "ci_upper", "p_value"]
    return numbers, summary.set_index("covariate")[columns].round({"hazard_ratio": 3, "ci_lower": 3, "ci_upper": 3})


# --- transfer: reset the head ------------------------------------------------------------------


def _fresh_initializer(initializer, seed: int):
    """A new initializer of the same kind and parameters, its seed (if it takes one) replaced."""
    import keras

    initializer = keras.initializers.get(initializer)
    config = initializer.get_config()
    if "seed" in config:
        config["seed"] = int(seed)
    return type(initializer).from_config(config)


def reset_head(model, layers: Sequence[str] = ("fc2", "logits"), freeze_base: bool = True, seed: int = 0):
    """A copy of a classifier whose named layers are re-initialised, for retraining on a new task.

    The paper's survival models: "the last two fully connected layers are reset to a random state
    and retrained, the rest frozen". The classifier head (:func:`sapsam_utils.learning.models.build_classifier`)
    has three fully connected layers, ``fc1`` -> dropout -> ``fc2`` -> ``logits`` (then the softmax
    ``probabilities``, which has no weights); the last two are ``fc2`` and ``logits``, the default.

    Parameters
    ----------
    model : keras.Model
        The trained classifier; it is not changed.
    layers : sequence of str
        Names of the layers to reset.
    freeze_base : bool
        Make every other layer non-trainable (its batch normalisations then also run in inference
        mode, using their moving statistics). When False, the other layers keep ``model``'s
        trainable flags.
    seed : int
        Seeds the new weights: each weight is drawn by its layer's own initializer (same kind and
        parameters as when the model was built) with a seed derived from ``seed`` and the layer's
        position in ``layers``, never the build seed, so the new weights differ from the model's
        initial ones. Same seed, same weights.

    Returns
    -------
    keras.Model
        A clone with ``model``'s weights except for the reset layers; the reset layers trainable.
        Compile it before training (trainable flags take effect at compile time).

    Raises
    ------
    ValueError
        For a layer name the model does not have, or a weight with no initializer to draw it.
    """
    import keras

    names = [layer.name for layer in model.layers]
    unknown = [name for name in layers if name not in names]
    if unknown:
        raise ValueError(f"the model has no layer(s) {unknown}; its layers end with {names[-6:]}")
    clone = keras.models.clone_model(model)
    for layer in model.layers:
        target = clone.get_layer(layer.name)
        target.set_weights(layer.get_weights())
        target.trainable = layer.trainable
    for position, name in enumerate(layers):
        layer = clone.get_layer(name)
        layer_seed = int(np.random.SeedSequence([int(seed), position]).generate_state(1)[0] % (2**31 - 1))
        for index, variable in enumerate(layer.weights):
            short = variable.path.split("/")[-1] if hasattr(variable, "path") else variable.name.split(":")[0]
            initializer = getattr(layer, f"{short}_initializer", None)
            if initializer is None:
                raise ValueError(f"layer {name}: no {short}_initializer to reset its weight {short}")
            fresh = _fresh_initializer(initializer, layer_seed + index)
            variable.assign(fresh(tuple(variable.shape), dtype=variable.dtype))
    for layer in clone.layers:
        if layer.name in layers:
            layer.trainable = True
        elif freeze_base:
            layer.trainable = False
    return clone


# --- lifelines analyses ------------------------------------------------------------------------


def risk_groups(score, split: str | float = "median") -> np.ndarray:
    """High-risk membership: ``score > threshold``.

    Parameters
    ----------
    score : array-like
        Higher = higher risk (e.g. a model's probability of death).
    split : "median" or float
        The threshold: the scores' median (ties at the median go to the low-risk group), or a
        given value.

    Returns
    -------
    numpy.ndarray of bool
    """
    score = np.asarray(score, dtype=float)
    if isinstance(split, str):
        if split != "median":
            raise ValueError(f"split must be 'median' or a number, got {split!r}")
        threshold = float(np.median(score))
    else:
        threshold = float(split)
    return score > threshold


def km_logrank(time, event, high, labels: tuple[str, str] = ("low risk", "high risk")) -> dict:
    """Kaplan-Meier curves of the low- and high-risk groups and their log-rank test.

    Parameters
    ----------
    time, event : array-like
        Time to event (years) and event indicator (1 died, 0 censored).
    high : array-like of bool
        High-risk membership (:func:`risk_groups`).
    labels : (str, str)
        Names of the low- and high-risk groups.

    Returns
    -------
    dict
        ``fitters`` (name -> fitted ``lifelines.KaplanMeierFitter``, low first),
        ``test_statistic`` and ``p_value`` (``lifelines.statistics.logrank_test``), ``n`` and
        ``events`` (name -> count), ``median_survival`` (name -> years; inf when not reached).
    """
    from lifelines import KaplanMeierFitter
    from lifelines.statistics import logrank_test

    time, event = np.asarray(time, dtype=float), np.asarray(event, dtype=int)
    high = np.asarray(high, dtype=bool)
    if high.all() or not high.any():
        raise ValueError("both risk groups need at least one subject")
    fitters, n, events, median = {}, {}, {}, {}
    for name, members in zip(labels, (~high, high)):
        fitters[name] = KaplanMeierFitter(label=name).fit(time[members], event[members])
        n[name] = int(members.sum())
        events[name] = int(event[members].sum())
        median[name] = float(fitters[name].median_survival_time_)
    test = logrank_test(time[~high], time[high], event_observed_A=event[~high], event_observed_B=event[high])
    return {"fitters": fitters, "test_statistic": float(test.test_statistic), "p_value": float(test.p_value),
            "n": n, "events": events, "median_survival": median}


def cox_model(table: pd.DataFrame, duration_col: str, event_col: str, covariates: Sequence[str],
              cluster_col: str | None = None, penalizer: float = 0.0):
    """A Cox proportional-hazards fit and its tidy table of hazard ratios.

    Parameters
    ----------
    table : pandas.DataFrame
    duration_col, event_col : str
        Time to event and event indicator columns.
    covariates : sequence of str
        Numeric covariate columns.
    cluster_col : str, optional
        Column of the cluster (``patient_id`` when rows are scans): robust (sandwich) standard
        errors that allow correlated rows within a cluster. Without it, rows count as independent.
    penalizer : float
        lifelines' ridge penalty (0: plain partial likelihood).

    Returns
    -------
    fitted : lifelines.CoxPHFitter
    summary : pandas.DataFrame
        One row per covariate: ``covariate``, ``coef`` (log hazard ratio), ``se``,
        ``hazard_ratio``, ``ci_lower``, ``ci_upper`` (95 % CI of the hazard ratio), ``p_value``.
    """
    from lifelines import CoxPHFitter

    columns = [duration_col, event_col, *covariates] + ([cluster_col] if cluster_col else [])
    data = table[columns].copy()
    fitted = CoxPHFitter(penalizer=penalizer)
    fitted.fit(data, duration_col=duration_col, event_col=event_col, cluster_col=cluster_col)
    s = fitted.summary
    summary = pd.DataFrame({
        "covariate": list(s.index),
        "coef": s["coef"].to_numpy(),
        "se": s["se(coef)"].to_numpy(),
        "hazard_ratio": s["exp(coef)"].to_numpy(),
        "ci_lower": s["exp(coef) lower 95%"].to_numpy(),
        "ci_upper": s["exp(coef) upper 95%"].to_numpy(),
        "p_value": s["p"].to_numpy(),
    })
    return fitted, summary


def ph_check(fitted, table: pd.DataFrame) -> pd.DataFrame:
    """The proportional-hazards assumption of a Cox fit, covariate by covariate.

    The scaled Schoenfeld residuals' trend over rank-transformed time
    (``lifelines.statistics.proportional_hazard_test``, ``time_transform="rank"``); a small
    p-value says the covariate's hazard ratio changes with time.

    Parameters
    ----------
    fitted : lifelines.CoxPHFitter
        From :func:`cox_model`.
    table : pandas.DataFrame
        The table it was fitted on (extra columns are ignored).

    Returns
    -------
    pandas.DataFrame
        ``covariate``, ``test_statistic``, ``p_value``.
    """
    from lifelines.statistics import proportional_hazard_test

    columns = [fitted.duration_col, fitted.event_col, *fitted.params_.index]
    if getattr(fitted, "cluster_col", None):
        columns.append(fitted.cluster_col)
    result = proportional_hazard_test(fitted, table[columns], time_transform="rank").summary
    return pd.DataFrame({"covariate": [i[0] if isinstance(i, tuple) else i for i in result.index],
                         "test_statistic": result["test_statistic"].to_numpy(),
                         "p_value": result["p"].to_numpy()})


def concordance(time, event, score) -> float:
    """Harrell's C of a risk score: the share of comparable pairs in which the subject who died
    first has the higher score (ties in score count one half).

    ``lifelines.utils.concordance_index`` takes predicted survival times (higher = longer life),
    so the score is negated. 1 = perfectly risk-ordered, 0.5 = chance, 0 = perfectly reversed.
    """
    from lifelines.utils import concordance_index

    return float(concordance_index(np.asarray(time, float), -np.asarray(score, float), np.asarray(event, int)))
