"""Every figure of the book, each a function of arrays and tables that returns its figure (or draws
on the axes it is given), so that a figure drawn by several chapters is drawn once.

Chapters 1-3: the cohort's scans with their truth, the segmentation's steps (the paper's Fig. 2)
and scores, the study grid, the HU windows and the projections. Chapters 4-7: learning curves, ROC
curves, confusion matrices, scores with CIs by group, a map over a projection, the paper's Fig. 3
pairs, the randomisation check and Kaplan-Meier curves.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ..core.regions import CAVITY_LUMEN, LUNG_LEFT, LUNG_RIGHT, REGIONS, SIGN_CODES, region_slices
from ..data.manifest import two_year_death
from ..imaging.augment import augment_2d
from ..imaging.projections import AXES, rgb
from ..learning.evaluation import aggregate, confusion_matrix, roc_auc
from ..synthetic.cohort import burden


def learning_curves(histories: dict[str, pd.DataFrame], axes=None, x: str = "epoch"):
    """Training and validation loss (left) and validation accuracy (right) of several models.

    Parameters
    ----------
    histories : dict
        Name -> a model's training history (:func:`sapsam_utils.stages.models.read_history`).
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
    for ax, (name, index, aspect) in zip(axes, orthogonal_views(point, spacing)):
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
    from ..learning.gradcam import sign_voxels  # Keras: loaded only by the chapters that draw maps

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


# --- chapters 1-3: cohort, segmentation, projections ---------------------------------------------

def _sign_colours() -> dict[int, tuple[str, str]]:
    """Name and colour of each sign truth value (:data:`sapsam_utils.core.regions.SIGN_CODES`, the cavity lumen)."""

    return {SIGN_CODES["preexisting"]: ("pre-existing", "tab:purple"), SIGN_CODES["cavity"]: ("cavity wall", "tab:red"),
            CAVITY_LUMEN: ("cavity lumen", "gold"), SIGN_CODES["fungus_ball"]: ("fungus ball", "lime"),
            SIGN_CODES["pleural_thickening"]: ("pleural thickening", "cyan")}


def _no_data(ax, text: str):
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)


def _bare(axes):
    for ax in np.ravel(axes):
        ax.set_xticks([]), ax.set_yticks([])


def orthogonal_views(point, spacing=(1.0, 1.0, 1.0)):
    """``(name, index, aspect)`` of the axial, coronal and sagittal slices of a ``(z, y, x)``
    volume through ``point``: coronal and sagittal with the head at the top, ``aspect`` the
    pixel's height / width in millimetres."""
    sz, sy, sx = spacing
    return (("axial", np.s_[point[0], :, :], sy / sx), ("coronal", np.s_[::-1, point[1], :], sz / sx),
            ("sagittal", np.s_[::-1, :, point[2]], sz / sy))


def largest_part_centre(mask: np.ndarray) -> np.ndarray:
    """The voxel (rounded mean position) of the largest connected part of ``mask``; the volume's
    middle when ``mask`` is empty."""
    from scipy import ndimage

    parts, n = ndimage.label(mask)
    if not n:
        return np.array(mask.shape) // 2
    biggest = np.argmax(np.bincount(parts.ravel())[1:]) + 1
    return np.argwhere(parts == biggest).mean(axis=0).round().astype(int)


def scan_with_signs(ct, truth_lungs=None, truth_signs=None, lesions=None, axes=None, title: str = "", **_):
    """A scan in axial, coronal and sagittal slices through its largest sign (without signs: through
    its right lung), with the true lungs as contours (right blue, left orange) and the sign truth
    in colours (a real scan's ``lesions`` drawn as cavity walls). Arguments are Volumes (e.g.
    :func:`sapsam_utils.stages.scans.read_scan`'s)."""
    from matplotlib.colors import ListedColormap


    hu = ct.array
    lungs = truth_lungs.array if truth_lungs is not None else None
    if truth_signs is not None:
        signs = truth_signs.array
    elif lesions is not None:
        signs = np.where(lesions.array > 0, SIGN_CODES["cavity"], 0)
    else:
        signs = np.zeros(hu.shape, np.uint8)
    target = signs > 0 if signs.any() else (lungs == LUNG_RIGHT if lungs is not None else np.ones(hu.shape, bool))
    colours = _sign_colours()
    cmap = ListedColormap(["none"] + [colours[c][1] for c in sorted(colours)])
    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(11, 3.5))
    for ax, (view, index, aspect) in zip(axes, orthogonal_views(largest_part_centre(target), ct.spacing)):
        ax.imshow(hu[index], cmap="gray", vmin=-1000, vmax=400, aspect=aspect)
        if lungs is not None:
            for value, colour in ((LUNG_RIGHT, "tab:blue"), (LUNG_LEFT, "tab:orange")):
                if (lungs[index] == value).any():
                    ax.contour(lungs[index] == value, levels=[0.5], colors=colour, linewidths=0.8)
        ax.imshow(np.ma.masked_equal(signs[index], 0), cmap=cmap, vmin=0, vmax=len(colours), aspect=aspect,
                  interpolation="nearest", alpha=0.8)
        ax.set_title(f"{title}: {view}", fontsize=9)
    _bare(axes)
    return axes


def scans_with_signs(scans: dict):
    """:func:`scan_with_signs` of several scans, one row each, with the colours' legend.

    Parameters
    ----------
    scans : dict
        Row title -> the scan's Volumes by kind (``ct``, ``truth_lungs``, ``truth_signs``, ``lesions``).
    """
    fig, axes = plt.subplots(max(len(scans), 1), 3, figsize=(11, 3.5 * max(len(scans), 1)), squeeze=False)
    for row_axes, (title, volumes) in zip(axes, scans.items()):
        scan_with_signs(**volumes, axes=row_axes, title=title)
    colours = _sign_colours().values()
    fig.legend([plt.Rectangle((0, 0), 1, 1, color=c) for _, c in colours], [n for n, _ in colours],
               loc="lower center", ncol=5, fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def cohort_followup(manifest: pd.DataFrame):
    """Scans per CPA patient (left) and the disease burden of CPA scans by their outcome two years
    later (right; :func:`sapsam_utils.data.manifest.two_year_death`, ``burden``)."""

    cpa = manifest[manifest["group"] == "cpa"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    if len(cpa):
        outcome, scores = two_year_death(cpa), burden(cpa)
        per_patient = cpa.groupby("patient_id").size()
        axes[0].hist(per_patient, bins=np.arange(0.5, per_patient.max() + 1.5), rwidth=0.85, color="tab:blue")
        for value, name, colour in ((0.0, "alive at 2 years", "tab:green"), (1.0, "died within 2 years", "tab:red")):
            axes[1].hist(scores[outcome == value], bins=np.arange(-0.25, scores.max() + 0.75, 0.5), alpha=0.6,
                         label=f"{name} ({int((outcome == value).sum())})", color=colour)
        axes[1].legend()
    else:
        for ax in axes:
            _no_data(ax, "no CPA scans in this manifest")
    axes[0].set(xlabel="scans per CPA patient", ylabel="patients", title="Longitudinal scans")
    axes[1].set(xlabel="disease burden of the scan", ylabel="CPA scans", title="Burden and 2-year death")
    fig.tight_layout()
    return fig


def parenchyma_histograms(values: dict, kinds: dict):
    """Density histograms of parenchyma HU samples (``values``: scan id -> sample): each real scan
    its own line, the phantoms dashed black (``kinds``: scan id -> ``real`` or ``phantom``, in the
    order drawn: real scans first)."""
    fig, ax = plt.subplots(figsize=(8, 3.8))
    reals = [s for s, k in kinds.items() if k == "real"]
    phantoms = [s for s, k in kinds.items() if k == "phantom"]
    if reals or phantoms:
        bins = np.arange(-1024, 1, 8)
        for scan_id in reals:
            ax.hist(values[scan_id], bins=bins, density=True, histtype="step", lw=1.4, label=f"real {scan_id}")
        for scan_id in phantoms:
            ax.hist(values[scan_id], bins=bins, density=True, histtype="step", lw=1, ls="--", color="k", alpha=0.6,
                    label="phantoms (controls of this run)" if scan_id == phantoms[0] else None)
        ax.legend(fontsize=8)
    else:
        _no_data(ax, "no phantom and no real CT to measure")
    ax.set(xlabel="HU", ylabel="density", title="Lung parenchyma HU")
    fig.tight_layout()
    return fig


def segmentation_steps(steps, conservative, truth: np.ndarray | None = None, z: int | None = None, title: str = ""):
    """The paper's Fig. 2 on one axial slice ``z`` of the lung box (default: the slice with the most
    mask): the slice; the Sobel edges with the internal (green) and external (red) markers; the
    watershed (right blue, left orange); its outline (white), the pleural layer (cyan) and what
    the top-hat and the hole filling added (magenta); the refined (red) and ``conservative`` (blue)
    masks with the ``truth`` lungs (dashed yellow) where given.

    Parameters
    ----------
    steps : sapsam_utils.imaging.segmentation.RefinedSteps
    conservative : Volume
        The conservative mask on the scan's grid.
    truth : numpy.ndarray, optional
        True lungs on the scan's grid.
    """
    from matplotlib.colors import ListedColormap
    from scipy import ndimage


    ct = steps.ct.array[steps.box]
    if z is None:
        z = int(np.argmax((steps.mask > 0).sum(axis=(1, 2))))
    lungs, edges = steps.watershed[z], steps.edges[z]
    fig, axes = plt.subplots(1, 5, figsize=(17, 3.9))
    axes[0].imshow(ct[z], cmap="gray", vmin=-1000, vmax=400)
    axes[0].set_title("axial slice")
    axes[1].imshow(edges, cmap="gray", vmax=np.percentile(edges[edges > 0], 99) if (edges > 0).any() else 1)
    overlay = np.zeros(edges.shape + (4,))
    overlay[steps.internal[z] > 0] = (0.1, 0.8, 0.1, 0.55)
    overlay[steps.external()[z]] = (0.9, 0.1, 0.1, 0.35)
    axes[1].imshow(overlay)
    axes[1].set_title("edges and markers")
    axes[2].imshow(ct[z], cmap="gray", vmin=-1000, vmax=400)
    axes[2].imshow(np.ma.masked_equal(lungs, 0), cmap=ListedColormap(["tab:blue", "tab:orange"]),
                   vmin=LUNG_RIGHT, vmax=LUNG_LEFT, alpha=0.55, interpolation="nearest")
    axes[2].set_title("watershed")
    outline = ndimage.morphological_gradient((lungs > 0).astype(np.uint8), size=(3, 3)) > 0
    pleura = steps.pleura[z] > 0
    picture = np.zeros(outline.shape + (3,))
    picture[(steps.mask[z] > 0) & (lungs == 0) & ~pleura] = (0.85, 0.1, 0.85)
    picture[pleura] = (0.1, 0.85, 0.85)
    picture[outline] = (1.0, 1.0, 1.0)
    axes[3].imshow(picture)
    axes[3].set_title("outline, pleural layer, top-hat")
    axes[4].imshow(ct[z], cmap="gray", vmin=-1000, vmax=400)
    axes[4].contour(steps.mask[z] > 0, [0.5], colors="red", linewidths=0.9)
    axes[4].contour(conservative.array[steps.box][z] > 0, [0.5], colors="tab:blue", linewidths=0.9)
    if truth is not None and truth[steps.box][z].any():
        axes[4].contour(truth[steps.box][z] > 0, [0.5], colors="yellow", linewidths=0.9, linestyles="dashed")
    axes[4].set_title("refined (red), conservative (blue)")
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def signs_kept(scores: pd.DataFrame, structures):
    """Bars: the mean share of each sign's voxels inside the conservative (blue) and refined (red)
    masks over the scans that have it, whiskers to the min and max; dotted: the 95 % target.

    Parameters
    ----------
    scores : pandas.DataFrame
        Rows of :func:`sapsam_utils.stages.masks.score_cohort` (``mask``, ``share_<sign>``).
    structures : iterable of str
        The signs, in order (:data:`sapsam_utils.imaging.segmentation.SIGN_STRUCTURES`); those no
        scan has are left out.
    """
    columns = [f"share_{s}" for s in structures if f"share_{s}" in scores and scores[f"share_{s}"].notna().any()]
    fig, ax = plt.subplots(figsize=(8, 3.4))
    if columns:
        width = 0.38
        for i, (mask_name, colour) in enumerate((("conservative", "tab:blue"), ("refined", "tab:red"))):
            group = scores[scores["mask"] == mask_name]
            means = [group[c].mean() for c in columns]
            lows = [m - group[c].min() for m, c in zip(means, columns)]
            highs = [group[c].max() - m for m, c in zip(means, columns)]
            ax.bar(np.arange(len(columns)) + (i - 0.5) * width, means, width, yerr=[lows, highs],
                   capsize=3, color=colour, label=mask_name)
        ax.set_xticks(np.arange(len(columns)), [c[len("share_"):].replace("_", " ") for c in columns])
        ax.axhline(0.95, color="grey", linestyle=":", linewidth=1)
        ax.set(ylim=(0, 1.05), ylabel="share of the sign's voxels kept")
        ax.legend(loc="lower right")
    else:
        _no_data(ax, "no phantom with signs in this run")
    ax.set_title("Signs kept by each mask, over the phantoms of this run (bars: mean; whiskers: min and max)")
    fig.tight_layout()
    return fig


def real_lesion_slices(cases: dict):
    """Each real scan on its axial slice with the most lesion voxels, zoomed to them with 40 mm of
    margin: lesion labels (yellow), refined (red) and conservative (blue) masks; the title gives
    the share of lesion voxels in the refined mask.

    Parameters
    ----------
    cases : dict
        Case name -> :func:`sapsam_utils.imaging.segmentation.segment_case`'s dict.
    """
    fig, axes = plt.subplots(1, len(cases), figsize=(4.2 * len(cases), 4.2), squeeze=False)
    for ax, (case, r) in zip(axes[0], cases.items()):
        lesions = r["lesions"].array > 0 if r["lesions"] is not None else np.zeros(r["ct"].array.shape, bool)
        z = int(np.argmax(lesions.sum(axis=(1, 2)))) if lesions.any() else r["ct"].array.shape[0] // 2
        ys, xs = np.nonzero(lesions[z]) if lesions[z].any() else np.nonzero(r["refined"].array[z])
        pad = int(40 / r["ct"].spacing[1])
        window = (slice(max(0, ys.min() - pad), ys.max() + pad), slice(max(0, xs.min() - pad), xs.max() + pad))
        ax.imshow(r["ct"].array[z][window], cmap="gray", vmin=-1000, vmax=400)
        ax.contour(r["refined"].array[z][window] > 0, [0.5], colors="red", linewidths=1)
        ax.contour(r["conservative"].array[z][window] > 0, [0.5], colors="tab:blue", linewidths=1)
        if lesions[z].any():
            ax.contour(lesions[z][window], [0.5], colors="yellow", linewidths=1)
        kept = (lesions & (r["refined"].array > 0)).sum() / max(1, lesions.sum())
        what = f"{kept:.0%} of lesion voxels kept" if r["lesions"] is not None else "no lesion labels"
        ax.set_title(f"{case}, slice {z}: {what}", fontsize=9)
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def study_grid(grid, title: str = ""):
    """One scan on the study grid (a :class:`~sapsam_utils.imaging.projections.GridScan`): the axial
    slice in the middle of the upper third and the coronal slice in the middle (head up), with the
    refined mask (green), the sign truth (red) and the cuts between the six sub-regions (yellow)."""

    nz, ny, nx = grid.hu.shape
    blocks = region_slices(grid.hu.shape)
    z_upper = (blocks["RU"][0].start + blocks["RU"][0].stop) // 2
    y_mid = ny // 2
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    views = ((axes[0], np.s_[z_upper], "equal", f"axial slice z={z_upper} (upper third)"),
             (axes[1], np.s_[::-1, y_mid], "auto", f"coronal slice y={y_mid}"))
    for ax, index, aspect, name in views:
        ax.imshow(grid.hu[index], cmap="gray", vmin=-1200, vmax=300, aspect=aspect)
        ax.contour(grid.refined[index] > 0, [0.5], colors="tab:green", linewidths=0.8)
        ax.axvline(nx / 2 - 0.5, color="y", ls="--")
        ax.set_title(name)
        ax.set_xlabel("x: patient's right -> left")
    for cut in (nz // 3, 2 * nz // 3):
        axes[1].axhline(cut - 0.5, color="y", ls="--")
    if grid.signs is not None:
        for ax, index, _, _ in views:
            ax.contour(grid.signs[index] > 0, [0.5], colors="r", linewidths=0.8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def hu_windows(images: dict, region: int, windows, title: str = ""):
    """Each HU window of one sub-region's axial image (grey), and their RGB composite with the
    projected sign truth (white), one row per scan.

    Parameters
    ----------
    images : dict
        Row name -> :class:`~sapsam_utils.imaging.projections.ScanImages` (its first rotation is shown).
    region : int
        Index of the sub-region (in :data:`~sapsam_utils.core.regions.REGIONS`).
    windows : sequence of (lo, hi)
    """

    names = [f"[{lo:g}, {hi:g})" for lo, hi in windows]
    fig, axes = plt.subplots(len(images), len(windows) + 1, figsize=(2.6 * (len(windows) + 1), 3.2 * len(images)),
                             squeeze=False)
    for i, (name, scan_images) in enumerate(images.items()):
        image = scan_images.regions["axial"][0, region]
        for k in range(len(windows)):
            axes[i, k].imshow(image[..., k], cmap="gray", vmin=0, vmax=1)
            axes[i, k].set_title(f"{name}: window {names[k]}", fontsize=8)
        axes[i, -1].imshow(rgb(image))
        if scan_images.regions_truth:
            truth = scan_images.regions_truth["axial"][0, region].max(axis=-1) > 0
            axes[i, -1].contour(truth, [0.5], colors="w", linewidths=0.8)
        axes[i, -1].set_title(f"{name}: RGB composite", fontsize=8)
    _bare(axes)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def region_images(images: dict, region: int, axis: str = "axial"):
    """The RGB windows of one sub-region's image (first rotation), side by side, titled by the
    keys of ``images`` (name -> :class:`~sapsam_utils.imaging.projections.ScanImages`)."""

    fig, axes = plt.subplots(1, len(images), figsize=(3 * len(images), 3.6), squeeze=False)
    for ax, (name, scan_images) in zip(axes[0], images.items()):
        ax.imshow(rgb(scan_images.regions[axis][0, region]))
        ax.set_title(name, fontsize=9)
    _bare(axes)
    fig.tight_layout()
    return fig


def rotation_images(images: np.ndarray, rotations: np.ndarray, title: str = "", columns: int = 9):
    """Whole-scan images ``(R, H, W)`` in [0, 1], one per rotation, titled by their angles about
    z, y and x in degrees (``rotations`` ``(R, 3)``)."""
    n = len(rotations)
    cols = min(n, columns)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.9 * rows), squeeze=False)
    _bare(axes)
    for k, ax in enumerate(axes.ravel()):
        if k < n:
            ax.imshow(images[k], cmap="gray", vmin=0, vmax=1)
            ax.set_title(",".join(f"{a:+.0f}" for a in rotations[k]), fontsize=7)
        else:
            ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def whole_projections(images: dict):
    """The whole-scan images (first rotation) along each axis, one row per scan, with the
    projected sign truth (red); ``images``: row name -> ScanImages."""

    fig, axes = plt.subplots(len(images), 3, figsize=(10, 3.3 * len(images)), squeeze=False)
    for i, (name, scan_images) in enumerate(images.items()):
        for j, axis in enumerate(AXES):
            axes[i, j].imshow(scan_images.whole[axis][0], cmap="gray", vmin=0, vmax=1, aspect="auto")
            if scan_images.whole_truth:
                axes[i, j].contour(scan_images.whole_truth[axis][0].max(axis=-1) > 0, [0.5], colors="r", linewidths=0.7)
            axes[i, j].set_title(f"{name}: {axis}", fontsize=9)
    _bare(axes)
    fig.tight_layout()
    return fig


def augmented(image: np.ndarray, truth: np.ndarray | None, rng, n: int = 6, **augment):
    """``n`` draws of :func:`sapsam_utils.imaging.augment.augment_2d` (``rng`` and ``augment``'s
    ranges) of one sub-region image (RGB), each with its transformed truth (white)."""

    fig, axes = plt.subplots(1, n, figsize=(13, 3.2), squeeze=False)
    for ax in axes[0]:
        out, out_truth = augment_2d(image, truth, rng=rng, **augment)
        ax.imshow(rgb(out))
        if out_truth is not None:
            ax.contour(out_truth.max(axis=-1) > 0, [0.5], colors="w", linewidths=0.8)
    _bare(axes)
    fig.tight_layout()
    return fig


def scan_projections(images, title: str = ""):
    """One scan's whole-scan images along each axis (top) and the axial RGB image of each
    sub-region (bottom), first rotation (a :class:`~sapsam_utils.imaging.projections.ScanImages`)."""

    fig, axes = plt.subplots(2, 6, figsize=(14, 5.5))
    for j, axis in enumerate(AXES):
        axes[0, j].imshow(images.whole[axis][0], cmap="gray", vmin=0, vmax=1, aspect="auto")
        axes[0, j].set_title(f"whole: {axis}", fontsize=9)
    for j in range(len(AXES), 6):
        axes[0, j].axis("off")
    for k, region in enumerate(REGIONS):
        axes[1, k].imshow(rgb(images.regions["axial"][0, k]), aspect="auto")
        axes[1, k].set_title(f"{region}: RGB windows", fontsize=9)
    _bare(axes)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
