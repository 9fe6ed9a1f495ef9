"""Sign labelling per lung sub-region (paper §3.2): the tasks, the position-only baseline, per-level
scores and the layout of the paper's Table 2.

A sign model is one binary classifier per sign and projection axis, trained on the sub-region
images of chapter 3 (:func:`sapsam_utils.stages.models.train_model` with ``kind="regions"``). Signs
sit mostly in the upper sub-regions (the paper's Table 1), so a model could score by knowing
*where* a sub-region is rather than *what* it shows. Two controls measure that:

* scores per level (upper, middle, lower thirds of the lungs), :func:`scores_by_level`;
* the **position-only baseline** (:func:`position_rates`, :func:`position_probability`): the
  best a reader can do who sees only which of the six sub-regions an image is. From the training
  rows it takes the rate ``r`` of the sign in that sub-region and the overall rate ``pi``; its
  probability is the posterior under **balanced** classes, as the CNN is trained on balanced
  batches, ``(r / pi) / (r / pi + (1 - r) / (1 - pi))``, so that its threshold of 0.5 means the
  same as the CNN's: it calls a sign wherever the sub-region's rate is above the overall rate.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..core.results import Estimate
from .evaluation import evaluate
from ..core.regions import LABELS, REGIONS

#: The paper's three signs (its Table 2); :data:`sapsam_utils.core.regions.LABELS` adds the
#: pre-existing condition, which the study trains beyond the paper.
SIGNS = ("cavity", "fungus_ball", "pleural_thickening")
#: The lung thirds, by the last letter of a sub-region's name (``RU`` = right upper).
LEVELS = {"U": "upper", "M": "middle", "L": "lower"}
#: Display names of the labels.
SIGN_NAMES = {"preexisting": "pre-existing condition", "cavity": "cavities", "fungus_ball": "fungus ball",
              "pleural_thickening": "pleural thickening"}


def region_level(regions) -> pd.Series:
    """``upper`` / ``middle`` / ``lower`` for each sub-region name (``RU`` -> ``upper``)."""
    regions = pd.Series(np.asarray(regions, dtype=str))
    bad = sorted(set(regions) - set(REGIONS))
    if bad:
        raise ValueError(f"unknown sub-region name(s) {bad}; the six are {REGIONS}")
    return regions.str[-1].map(LEVELS)


def position_rates(records: pd.DataFrame, label: str) -> pd.Series:
    """The rate of ``label`` in each sub-region among ``records`` (the training rows), and overall.

    Returns
    -------
    pandas.Series
        Indexed by the six sub-region names plus ``"all"``; a sub-region without rows gets the
        overall rate.
    """
    if label not in LABELS:
        raise ValueError(f"label {label!r}: one of {LABELS}")
    known = records[records[label].notna()]
    if known.empty:
        raise ValueError(f"no rows with a known {label!r} label to take rates from")
    overall = float(known[label].mean())
    per_region = known.groupby("region")[label].mean().reindex(list(REGIONS)).fillna(overall)
    return pd.concat([per_region, pd.Series({"all": overall})])


def position_probability(regions, rates: pd.Series) -> np.ndarray:
    """The position-only baseline's probability of the sign for images of these sub-regions.

    Parameters
    ----------
    regions : array-like of str
        Each image's sub-region name.
    rates : pandas.Series
        :func:`position_rates` of the training rows.

    Returns
    -------
    numpy.ndarray
        The posterior under balanced classes (module docstring); 0.5 exactly where the
        sub-region's rate equals the overall rate, above it where the rate is higher.
    """
    pi = float(rates["all"])
    if not 0 < pi < 1:
        return np.full(len(regions), pi)  # one class only: nothing to weigh
    r = rates.reindex(np.asarray(regions, dtype=str)).to_numpy(dtype=float)
    odds = (r / pi) / np.maximum((1 - r) / (1 - pi), 1e-12)
    return odds / (1 + odds)


def scores_by_level(predictions: pd.DataFrame, metrics=("precision", "recall", "auc"), n_boot: int = 1000,
                    seed: int = 0) -> pd.DataFrame:
    """Image-level scores with patient-level 95 % CIs within each level (upper, middle, lower).

    Parameters
    ----------
    predictions : pandas.DataFrame
        A sign model's prediction table (with ``region``).

    Returns
    -------
    pandas.DataFrame
        One row per (level, metric): ``value, ci_low, ci_high, n, n_patients, positives``.
    """
    level = region_level(predictions["region"]).to_numpy()
    parts = []
    for name in LEVELS.values():
        part = predictions[level == name]
        if part.empty:
            continue
        scores = evaluate(part, levels=("image",), n_boot=n_boot, seed=seed)
        scores = scores[scores["metric"].isin(metrics)].assign(level=name, positives=int(part["label"].sum()))
        parts.append(scores)
    return pd.concat(parts, ignore_index=True)


def table2(scores: pd.DataFrame, paper: dict[str, float], axes) -> pd.DataFrame:
    """The paper's Table 2 layout: one row per sign, precision and recall per axis, ours (with the
    95 % CI) beside the paper's (in %).

    Parameters
    ----------
    scores : pandas.DataFrame
        Rows with ``sign, axis, metric, value, ci_low, ci_high`` (image level).
    paper : dict
        The paper's values in [0, 1] by our metric key, ``<sign>_<axis>_image_<metric>``
        (:func:`sapsam_utils.core.paper.paper_values` of the chapter).
    axes : sequence of str
        The axes to show, in order.

    Returns
    -------
    pandas.DataFrame
        Index: sign names; columns: ``(metric, axis, "ours" | "paper")``; ``—`` where a value
        is missing (an axis a profile does not train, a label the paper does not report).
    """
    cells = {}
    signs = list(dict.fromkeys(scores["sign"]))
    for sign in signs:
        row = {}
        for metric in ("precision", "recall"):
            for axis in axes:
                hit = scores[(scores["sign"] == sign) & (scores["axis"] == axis) & (scores["metric"] == metric)]
                ours = Estimate.of({k: 100 * hit[k].iloc[0] for k in ("value", "ci_low", "ci_high")}).text(1) if len(hit) else "—"
                theirs = paper.get(f"{sign}_{axis}_image_{metric}")
                row[(metric, axis, "ours")] = ours
                row[(metric, axis, "paper")] = "—" if theirs is None else f"{100 * theirs:.1f}"
        cells[SIGN_NAMES.get(sign, sign)] = row
    table = pd.DataFrame(cells).T
    table.columns = pd.MultiIndex.from_tuples(table.columns, names=["metric", "axis", ""])
    return table
