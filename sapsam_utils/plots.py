"""Figures the learning chapters share: learning curves, ROC curves, confusion matrices."""

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
