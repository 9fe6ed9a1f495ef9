"""Scores of binary classifiers at the image, scan and patient level, with patient-level 95 % CIs.

A prediction table has one row per image: ``scan_id, patient_id, rotation, label, probability``
(:func:`sapsam_utils.learning.training.prediction_table`). The levels:

``image``
    each row, the paper's unit ("N = 822 axial projections");
``scan``
    the mean probability over a scan's rotations, against the scan's label;
``patient``
    the mean of the patient's scan probabilities, against the patient's label (positive when any
    of their scans is).

Confidence intervals come from a **patient-level bootstrap**: patients are drawn with replacement,
all their rows come along, and the scores are recomputed at the chosen level; the interval is the
2.5th and 97.5th percentiles over the draws. Images and scans of one patient are not independent,
so resampling them one by one would give intervals that are too narrow.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import rankdata

LEVELS = ("image", "scan", "patient")
#: ``balanced_precision`` is the precision the same calls would have on a test set with as many
#: positives as negatives (as the paper balances its test sets): TPR / (TPR + FPR).
METRICS = ("precision", "recall", "f1", "accuracy", "auc", "balanced_precision")


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve (Mann-Whitney statistic, ties counted half); NaN with one class."""
    labels, scores = np.asarray(labels).astype(bool), np.asarray(scores, dtype=float)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)  # average ranks of ties
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def binary_scores(labels, probability, threshold: float = 0.5) -> dict[str, float]:
    """Precision, recall, F1, accuracy (at ``threshold``), ROC AUC and the precision at balanced
    prevalence (:data:`METRICS`).

    A score whose denominator is 0 (e.g. precision with no positive prediction) is NaN.
    """
    labels = np.asarray(labels).astype(bool)
    predicted = np.asarray(probability, dtype=float) >= threshold
    tp = float(np.sum(predicted & labels))
    fp = float(np.sum(predicted & ~labels))
    fn = float(np.sum(~predicted & labels))
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
    accuracy = float(np.mean(predicted == labels)) if len(labels) else float("nan")
    n_neg = float(np.sum(~labels))
    fpr = fp / n_neg if n_neg else float("nan")
    balanced = recall / (recall + fpr) if recall + fpr > 0 else float("nan")
    return {"precision": precision, "recall": recall, "f1": f1, "accuracy": accuracy,
            "auc": roc_auc(labels, probability), "balanced_precision": balanced}


def confusion_matrix(labels, probability, threshold: float = 0.5) -> np.ndarray:
    """``[[TN, FP], [FN, TP]]`` (rows: truth 0 / 1, columns: predicted 0 / 1)."""
    labels = np.asarray(labels).astype(bool)
    predicted = np.asarray(probability, dtype=float) >= threshold
    return np.array([[np.sum(~labels & ~predicted), np.sum(~labels & predicted)],
                     [np.sum(labels & ~predicted), np.sum(labels & predicted)]])


def aggregate(predictions: pd.DataFrame, level: str) -> pd.DataFrame:
    """The prediction table at ``level``: columns ``patient_id, label, probability`` (+ ``scan_id``)."""
    if level == "image":
        return predictions
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    scans = (predictions.groupby("scan_id", sort=True)
             .agg(patient_id=("patient_id", "first"), label=("label", "max"), probability=("probability", "mean"))
             .reset_index())
    if level == "scan":
        return scans
    return (scans.groupby("patient_id", sort=True)
            .agg(label=("label", "max"), probability=("probability", "mean")).reset_index())


def _patient_rows(table: pd.DataFrame) -> tuple[np.ndarray, list[np.ndarray]]:
    codes, patients = pd.factorize(table["patient_id"], sort=True)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(patients) + 1))
    return patients.to_numpy(), [order[bounds[k]:bounds[k + 1]] for k in range(len(patients))]


def bootstrap_scores(
    predictions: pd.DataFrame, level: str = "scan", n_boot: int = 1000, seed: int = 0, threshold: float = 0.5
) -> pd.DataFrame:
    """The scores of one draw per row: ``n_boot`` patient-level bootstrap draws at ``level``."""
    table = aggregate(predictions, level)
    _, rows = _patient_rows(table)
    labels, prob = table["label"].to_numpy(), table["probability"].to_numpy()
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        picked = np.concatenate([rows[p] for p in rng.integers(0, len(rows), len(rows))])
        draws.append(binary_scores(labels[picked], prob[picked], threshold))
    return pd.DataFrame(draws, columns=list(METRICS))


def evaluate(
    predictions: pd.DataFrame, levels=LEVELS, n_boot: int = 1000, seed: int = 0, threshold: float = 0.5
) -> pd.DataFrame:
    """Scores with patient-level bootstrap 95 % CIs at each level.

    Parameters
    ----------
    predictions : pandas.DataFrame
        One row per image (``patient_id, scan_id, label, probability``).
    levels : sequence of str
        Among ``image``, ``scan``, ``patient``.
    n_boot : int
        Bootstrap draws (>= 1,000 for a reported interval).
    seed : int
    threshold : float
        Probability at and above which the prediction is positive.

    Returns
    -------
    pandas.DataFrame
        One row per (level, metric): ``value``, ``ci_low``, ``ci_high``, ``n`` (units scored) and
        ``n_patients``.
    """
    rows = []
    for level in levels:
        table = aggregate(predictions, level)
        point = binary_scores(table["label"], table["probability"], threshold)
        draws = bootstrap_scores(predictions, level, n_boot, seed, threshold)
        for metric in METRICS:
            low, high = np.nanpercentile(draws[metric], [2.5, 97.5]) if draws[metric].notna().any() else (np.nan,) * 2
            rows.append({"level": level, "metric": metric, "value": point[metric], "ci_low": float(low),
                         "ci_high": float(high), "n": len(table), "n_patients": table["patient_id"].nunique()})
    return pd.DataFrame(rows)


def compare(
    a: pd.DataFrame, b: pd.DataFrame, metric: str = "auc", level: str = "scan", n_boot: int = 1000, seed: int = 0,
    threshold: float = 0.5,
) -> dict[str, float]:
    """The difference ``metric(a) - metric(b)`` of two models on the same test patients, with a
    paired patient-level bootstrap 95 % CI (each draw scores both models on the same patients).

    Returns
    -------
    dict
        ``difference``, ``ci_low``, ``ci_high``; the margin is established when the interval
        excludes 0.
    """
    tables = [aggregate(t, level) for t in (a, b)]
    if set(tables[0]["patient_id"]) != set(tables[1]["patient_id"]):
        raise ValueError("the two prediction tables cover different patients")
    rows = [_patient_rows(t) for t in tables]  # patients sorted the same way in both
    arrays = [(t["label"].to_numpy(), t["probability"].to_numpy()) for t in tables]
    point = [binary_scores(*arr, threshold)[metric] for arr in arrays]
    rng = np.random.default_rng(seed)
    n = len(rows[0][1])
    draws = []
    for _ in range(n_boot):
        picked = rng.integers(0, n, n)
        scores = [binary_scores(*(x[np.concatenate([r[1][p] for p in picked])] for x in arr), threshold)[metric]
                  for r, arr in zip(rows, arrays)]
        draws.append(scores[0] - scores[1])
    low, high = np.nanpercentile(draws, [2.5, 97.5])
    return {"difference": point[0] - point[1], "ci_low": float(low), "ci_high": float(high)}


def mean_ci(values, patient_ids, n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """The mean of per-image values (e.g. localisation scores) with a patient-level bootstrap 95 % CI.

    NaN values (e.g. an image whose truth is empty) are left out first; each draw takes the
    patients with replacement, all their remaining values along, and averages them (pooled).

    Parameters
    ----------
    values : array-like
        One number per image.
    patient_ids : array-like
        The image's patient, one per value.
    n_boot : int
        Bootstrap draws.
    seed : int

    Returns
    -------
    dict
        ``value`` (the mean of the non-NaN values), ``ci_low``, ``ci_high``, ``n`` (values kept)
        and ``n_patients``; NaN everywhere (``n`` = 0) when no value is left.
    """
    values = np.asarray(values, dtype=float)
    patients = np.asarray(patient_ids)
    if values.shape != patients.shape:
        raise ValueError(f"{values.shape} values but {patients.shape} patient ids")
    keep = ~np.isnan(values)
    values, patients = values[keep], patients[keep]
    if not len(values):
        return {"value": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": 0, "n_patients": 0}
    codes, unique = pd.factorize(patients, sort=True)
    sums = np.bincount(codes, weights=values, minlength=len(unique))
    counts = np.bincount(codes, minlength=len(unique)).astype(float)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(unique), (int(n_boot), len(unique)))
    means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    low, high = np.percentile(means, [2.5, 97.5]) if len(means) else (np.nan, np.nan)
    return {"value": float(values.mean()), "ci_low": float(low), "ci_high": float(high), "n": int(len(values)),
            "n_patients": int(len(unique))}


def extreme_calls(predictions: pd.DataFrame, threshold: float = 0.5) -> dict[str, pd.Series]:
    """A classifier's surest positive image, its most confident negative and its least confident positive.

    Parameters
    ----------
    predictions : pandas.DataFrame
        One row per image with ``label`` and ``probability`` (both classes present).
    threshold : float
        Names the last two: a false positive when the negative's probability is >= ``threshold``
        (else ``top negative``), a false negative when the positive's is < ``threshold`` (else
        ``lowest positive``).

    Returns
    -------
    dict
        Name -> the prediction row, in the order: ``surest positive``, then the negative, then
        the positive.
    """
    pos = predictions[predictions["label"] == 1].sort_values("probability", kind="stable")
    neg = predictions[predictions["label"] == 0].sort_values("probability", kind="stable")
    if pos.empty or neg.empty:
        raise ValueError("extreme_calls needs positive and negative images")
    negative, positive = neg.iloc[-1], pos.iloc[0]
    return {"surest positive": pos.iloc[-1],
            ("false positive" if negative["probability"] >= threshold else "top negative"): negative,
            ("false negative" if positive["probability"] < threshold else "lowest positive"): positive}
