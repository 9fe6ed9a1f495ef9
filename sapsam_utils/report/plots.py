"""Figures the learning chapters share: learning curves, ROC curves, confusion matrices, scores with
CIs by group, Kaplan-Meier curves."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ..learning.evaluation import aggregate, confusion_matrix, roc_auc


def learning_curves(histories: dict[str, pd.DataFrame], axes=None, x: str = "epoch"):
    """Training and validation loss (left) and validation accuracy (right) of several models.

    Parameters
    ----------
    histories : dict
        Name -> ``history.csv`` table (:func:`sapsam_utils.learning.training.fit`).
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
        :mod:`sapsam_utils.learning.survival`), times in years.
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


def map_over_projection(image: np.ndarray, cam: np.ndarray | None = None, truth: np.ndarray | None = None, ax=None,
                        title: str = "", alpha: float = 0.45, truth_colour: str = "white", aspect: float = 1.0):
    """A Grad-CAM map over the projection it explains, with an optional truth contour.

    Parameters
    ----------
    image : numpy.ndarray
        A sub-region image ``(H, W, C)`` in [0, 1] (shown as RGB windows,
        :func:`~sapsam_utils.imaging.projections.rgb`) or a grey ``(H, W)`` image.
    cam : numpy.ndarray, optional
        The map on the image's pixels ``(H, W)`` (upsampled); shown normalised to its maximum
        (jet, ``alpha``). An all-zero map is drawn as nothing and says so.
    truth : numpy.ndarray, optional
        ``(H, W)``: the sign's projected footprint (``> 0``), drawn as a contour.
    aspect : float
        A pixel's height / width (e.g. the grid spacing of the image's rows over its columns).
    """
    from ..imaging.projections import rgb

    if ax is None:
        _, ax = plt.subplots(figsize=(2.2, 3.6))
    image = np.asarray(image, dtype=np.float32)
    ax.imshow(rgb(image) if image.ndim == 3 else image, cmap="gray", vmin=0, vmax=1, interpolation="nearest",
              aspect=aspect)
    if cam is not None:
        cam = np.maximum(np.asarray(cam, dtype=np.float32), 0)
        if cam.max() > 0:
            ax.imshow(cam / cam.max(), cmap="jet", vmin=0, vmax=1, alpha=alpha, interpolation="bilinear", aspect=aspect)
        else:
            ax.text(0.5, 0.5, "all-zero map", transform=ax.transAxes, ha="center", color="white", fontsize=8)
    if truth is not None and np.any(np.asarray(truth) > 0):
        ax.contour(np.asarray(truth) > 0, levels=[0.5], colors=truth_colour, linewidths=1.0)
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_title(title, fontsize=8)
    return ax


def ct_slice(hu: np.ndarray, truth: np.ndarray | None = None, box=None, ax=None, title: str = "",
             window: tuple[float, float] = (-1000.0, 400.0), aspect: float = 1.0, overlay: np.ndarray | None = None,
             alpha: float = 0.45):
    """A CT slice (HU, grey ``window``) with an optional truth contour (red), a rectangle ``box``
    ``((row0, row1), (col0, col1))`` (yellow) and an optional map ``overlay`` (jet, where > 0).

    ``aspect`` is the pixel's height / width (e.g. spacing ratio of the two axes shown).
    """
    from matplotlib.patches import Rectangle

    if ax is None:
        _, ax = plt.subplots(figsize=(3.2, 3.2))
    ax.imshow(hu, cmap="gray", vmin=window[0], vmax=window[1], aspect=aspect, interpolation="nearest")
    if overlay is not None and np.max(overlay) > 0:
        shown = np.ma.masked_less_equal(np.asarray(overlay, dtype=np.float32) / np.max(overlay), 0)
        ax.imshow(shown, cmap="jet", vmin=0, vmax=1, alpha=alpha, aspect=aspect, interpolation="nearest")
    if truth is not None and np.any(np.asarray(truth) > 0):
        ax.contour(np.asarray(truth) > 0, levels=[0.5], colors="red", linewidths=1.0)
    if box is not None:
        (r0, r1), (c0, c1) = box
        ax.add_patch(Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0, r1 - r0, fill=False, edgecolor="yellow", lw=1, ls="--"))
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_title(title, fontsize=8)
    return ax


def orthogonal_slices(ct: np.ndarray, overlay: np.ndarray | None = None, truth: np.ndarray | None = None,
                      point=None, spacing=(1.0, 1.0, 1.0), axes=None, title: str = "", **kwargs):
    """Axial, coronal and sagittal slices of a ``(z, y, x)`` CT through ``point`` (default: the
    overlay's maximum), with :func:`ct_slice`'s overlay and truth contour; coronal and sagittal
    views have the head at the top, and pixels keep their millimetre aspect."""
    ct = np.asarray(ct)
    if point is None:
        point = np.unravel_index(np.argmax(overlay), ct.shape) if overlay is not None else np.array(ct.shape) // 2
    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(10, 3.4))
    sz, sy, sx = spacing
    views = (("axial", np.s_[point[0], :, :], sy / sx), ("coronal", np.s_[::-1, point[1], :], sz / sx),
             ("sagittal", np.s_[::-1, :, point[2]], sz / sy))
    for ax, (name, index, aspect) in zip(axes, views):
        part = [None if v is None else np.asarray(v)[index] for v in (overlay, truth)]
        ct_slice(ct[index], part[1], ax=ax, aspect=aspect, overlay=part[0], title=f"{title}{name}", **kwargs)
    return axes


def psam_pair(axes, scan, region: str, sign: str, image: np.ndarray, cam: np.ndarray, truth: np.ndarray | None = None,
              title: str = ""):
    """The paper's Fig. 3 for one sub-region image: a CT slice beside the map over the projection.

    Left: the axial slice of ``scan`` (a :class:`~sapsam_utils.imaging.projections.GridScan`) through the
    most voxels of ``sign`` in the sub-region's block (its middle when there are none), the sign's
    truth in red, the sub-region's columns in yellow. Right: :func:`map_over_projection` of the
    sub-region's axial image ``image`` with its map ``cam`` and projected ``truth``. Both keep the
    grid's aspect.
    """
    from ..learning.gradcam import sign_voxels
    from ..core.regions import region_slices

    zs, _, xs = region_slices(scan.hu.shape)[region]
    voxels = sign_voxels(scan.signs, sign) if scan.signs is not None else np.zeros(scan.hu.shape, dtype=bool)
    counts = voxels[zs, :, xs].sum(axis=(1, 2))
    z = zs.start + int(np.argmax(counts) if counts.any() else len(counts) // 2)
    aspect = scan.spacing[1] / scan.spacing[2]
    ct_slice(scan.hu[z], voxels[z], box=((0, scan.hu.shape[1]), (xs.start, xs.stop)), ax=axes[0], aspect=aspect,
             title=f"grid slice {z}")
    map_over_projection(image, cam, truth, ax=axes[1], aspect=aspect, title=title)
    return axes


def randomisation(curve: pd.DataFrame, target: float | None = None, marked_step: int | None = None, ax=None):
    """The cascading randomisation check (:func:`sapsam_utils.learning.gradcam.randomisation_curve`): the
    median ``|rho|`` with its interquartile band and the median signed rho (dashed) after each
    step, from "none" (the trained model, 1) on; ``target`` as a dotted line, ``marked_step`` as
    a dashed one."""
    if ax is None:
        _, ax = plt.subplots(figsize=(10, 3.6))
    steps = np.r_[0, curve["step"]]
    ax.plot(steps, np.r_[1.0, curve["abs_rank_correlation"]], marker="o", label="median |rank correlation|")
    ax.fill_between(steps, np.r_[1.0, curve["abs_q25"]], np.r_[1.0, curve["abs_q75"]], alpha=0.25,
                    label="interquartile range of |rank correlation|")
    ax.plot(steps, np.r_[1.0, curve["rank_correlation"]], color="grey", lw=1, ls="--", marker=".",
            label="median rank correlation (signed)")
    if target is not None:
        ax.axhline(target, color="grey", ls=":", label="target")
    if marked_step is not None:
        ax.axvline(marked_step, color="red", lw=0.8, ls="--", label="top block random")
    ax.set_xticks(steps, ["none"] + curve["layer"].tolist(), rotation=60, fontsize=7)
    ax.set(ylabel="rank correlation with the trained maps", ylim=(-1.05, 1.05),
           xlabel="layers re-initialised, from the top down (cumulative)")
    ax.legend(fontsize=7, loc="lower left")
    return ax
