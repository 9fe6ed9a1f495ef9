"""Figures the learning chapters share: learning curves, ROC curves, confusion matrices, scores with
CIs by group, Kaplan-Meier curves."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .evaluation import aggregate, confusion_matrix, roc_auc


def learning_curves(histories: dict[str, pd.DataFrame], axes=None, x: str = "epoch"):
    """Training and validation loss (left) and validation accuracy (right) of several models.

    Parameters
    ----------
    histories : dict
        Name -> ``history.csv`` table (:func:`sapsam_utils.training.fit`).
    axes : pair of matplotlib axes, optional
    x : str
        The history column on the x axis (``epoch``, or e.g. ``images`` seen).
    """
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for (name, history), colour in zip(histories.items(), sns.color_palette("tab10", len(histories))):
        axes[0].plot(history[x], history["loss"], color=colour, ls="--", lw=1)
        axes[0].plot(history[x], history["val_loss"], color=colour, marker="o", ms=3, label=name)
        axes[1].plot(history[x], history["val_accuracy"], color=colour, marker="o", ms=3, label=name)
    axes[0].set(xlabel=x, ylabel="loss (dashed: training)", title="cross-entropy")
    axes[1].set(xlabel=x, ylabel="balanced validation accuracy", title="validation accuracy", ylim=(0, 1))
    axes[1].axhline(0.5, color="grey", lw=0.8, ls=":")
    axes[1].legend(fontsize=7)
    return axes


def roc_curves(predictions: dict[str, pd.DataFrame], level: str = "scan", ax=None):
    """ROC curves of several prediction tables at one level, AUC in the legend."""
    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 4.2))
    for name, table in predictions.items():
        table = aggregate(table, level)
        labels, scores = table["label"].to_numpy().astype(bool), table["probability"].to_numpy()
        thresholds = np.r_[np.inf, np.unique(scores)[::-1]]
        tpr = [(scores[labels] >= t).mean() for t in thresholds]
        fpr = [(scores[~labels] >= t).mean() for t in thresholds]
        ax.step(fpr, tpr, where="post", label=f"{name} (AUC {roc_auc(labels, scores):.2f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC, per {level}", aspect="equal")
    ax.legend(fontsize=7, loc="lower right")
    return ax


def confusion(table: pd.DataFrame, level: str = "scan", names=("control", "CPA"), ax=None, title: str = ""):
    """The confusion matrix of a prediction table at one level (threshold 0.5) as an annotated heat map."""
    if ax is None:
        _, ax = plt.subplots(figsize=(3, 2.8))
    table = aggregate(table, level)
    matrix = confusion_matrix(table["label"], table["probability"])
    sns.heatmap(matrix, annot=True, fmt="d", cbar=False, cmap="Blues", ax=ax,
                xticklabels=list(names), yticklabels=list(names))
    ax.set(xlabel="predicted", ylabel="truth", title=title or f"per {level}")
    return ax


def scores_by_group(scores: pd.DataFrame, group: str, hue: str, row: str, col: str, names: dict | None = None):
    """Bars of scores with their 95 % CIs: ``group`` on the x axis, one colour per ``hue``, a grid of
    panels by ``row`` x ``col`` (e.g. metric x sign). ``scores`` has ``value, ci_low, ci_high``
    and, when present, ``positives`` (written above each group of the first hue).

    Returns
    -------
    matplotlib.figure.Figure
    """
    names = names or {}
    rows, cols = list(dict.fromkeys(scores[row])), list(dict.fromkeys(scores[col]))
    groups, hues = list(dict.fromkeys(scores[group])), list(dict.fromkeys(scores[hue]))
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(3.3 * len(cols), 2.6 * len(rows)), squeeze=False,
                             sharey=True)
    width = 0.8 / len(hues)
    colours = sns.color_palette(n_colors=len(hues))
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            ax = axes[i, j]
            panel = scores[(scores[row] == r) & (scores[col] == c)]
            for k, h in enumerate(hues):
                part = panel[panel[hue] == h].set_index(group).reindex(groups)
                x = np.arange(len(groups)) + (k - (len(hues) - 1) / 2) * width
                err = np.vstack([part["value"] - part["ci_low"], part["ci_high"] - part["value"]])
                ax.bar(x, part["value"].fillna(0), width, yerr=np.nan_to_num(err), capsize=2, color=colours[k],
                       label=str(h) if i == j == 0 else None)
                if k == 0 and "positives" in part and i == 0:
                    for xi, n in zip(np.arange(len(groups)), part["positives"]):
                        ax.text(xi, 1.04, f"n+={n:.0f}" if pd.notna(n) else "", ha="center", fontsize=7)
            ax.set_xticks(np.arange(len(groups)), groups)
            ax.set_ylim(0, 1.12)
            ax.set_title(f"{names.get(c, c)}: {names.get(r, r)}", fontsize=9)
    fig.legend(loc="lower center", ncol=len(hues), fontsize=8, bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def kaplan_meier(groups: dict, ax=None, at_risk: bool = True, title: str = ""):
    """Kaplan-Meier curves with their 95 % confidence bands and, below, the numbers at risk.

    Parameters
    ----------
    groups : dict
        Name -> fitted ``lifelines.KaplanMeierFitter`` (e.g. ``km_logrank(...)["fitters"]`` of
        :mod:`sapsam_utils.survival`), times in years.
    ax : matplotlib axes, optional
    at_risk : bool
        Add the table of subjects at risk, censored and dead under the x axis
        (``lifelines.plotting.add_at_risk_counts``).
    title : str
    """
    from lifelines.plotting import add_at_risk_counts

    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4.2 if at_risk else 3.4))
    for (name, fitter), colour in zip(groups.items(), sns.color_palette("tab10", len(groups))):
        fitter.plot_survival_function(ax=ax, ci_show=True, color=colour, label=name)
    ax.set(xlabel="years since the scan", ylabel="survival probability", ylim=(0, 1.02), title=title)
    ax.set_xlim(left=0)
    ax.legend(fontsize=7, loc="lower left")
    if at_risk:
        add_at_risk_counts(*groups.values(), labels=list(groups), ax=ax)
    return ax
