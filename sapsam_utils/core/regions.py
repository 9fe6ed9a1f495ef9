"""The six lung sub-regions and the four sign labels: one geometry for the whole study.

The paper rescales each scan to 256 x 256 x 216 voxels and cuts it into six blocks of
256 x 128 x 72: patient's right / left halves, and upper / middle / lower thirds. This study
makes that cut on the **bounding box of the lungs** (both lungs together), so that it follows
the anatomy rather than the scanner's field of view:

* right / left: the box is halved along ``x``. Arrays are LPS (see :mod:`sapsam_utils.core.volume`),
  so the half with the *lower* ``x`` indices is the patient's **right**;
* upper / middle / lower: the box is cut into thirds along ``z``; ``z`` grows towards the head,
  so the third with the *highest* ``z`` indices is **upper**;
* ``y`` (front to back) is not cut.

On a grid that *is* the lung box (the projections crop the box and resample it to the paper's
grid) the six regions are exactly the paper's blocks. The phantom generator, the cohort labels,
the projections and the Grad-CAM scores all call the functions below, so they agree voxel for
voxel.
"""

from __future__ import annotations

import numpy as np

#: Sub-region names: patient's Right / Left x Upper / Middle / Lower.
REGIONS = ("RU", "RM", "RL", "LU", "LM", "LL")
#: Sign labels scored per sub-region.
LABELS = ("preexisting", "cavity", "fungus_ball", "pleural_thickening")
#: Manifest label columns, ``<region>_<label>``, region-major.
LABEL_COLUMNS = tuple(f"{r}_{lab}" for r in REGIONS for lab in LABELS)

#: Lung label values in lung masks (conservative, refined, truth).
LUNG_RIGHT, LUNG_LEFT = 1, 2
#: Sign truth values in the phantoms' ``signs`` volume. The cavity's wall carries ``cavity``;
#: its air lumen (including a fungus ball's air crescent) is ``CAVITY_LUMEN``.
SIGN_CODES = {"preexisting": 1, "cavity": 2, "fungus_ball": 3, "pleural_thickening": 4}
CAVITY_LUMEN = 5

Box = tuple[slice, slice, slice]


def lung_box(mask: np.ndarray) -> Box:
    """Bounding box of the non-zero voxels of a lung mask.

    Parameters
    ----------
    mask : numpy.ndarray
        3-D lung mask (any non-zero value is lung).

    Returns
    -------
    tuple of slice
        ``(z, y, x)`` slices, end-exclusive.
    """
    if mask.ndim != 3:
        raise ValueError(f"expected a 3-D mask, got shape {mask.shape}")
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        if hit.size == 0:
            raise ValueError("the lung mask is empty: no lung box")
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def region_slices(shape: tuple[int, int, int], box: Box | None = None) -> dict[str, Box]:
    """The six sub-regions as ``(z, y, x)`` slices.

    Parameters
    ----------
    shape : tuple of int
        Shape of the volume.
    box : tuple of slice, optional
        The lung box (:func:`lung_box`); the whole volume when omitted, as on the rescaled grid.

    Returns
    -------
    dict
        Region name -> ``(z, y, x)`` slices. The six blocks tile the box without overlap.
    """
    if box is None:
        box = tuple(slice(0, n) for n in shape)
    zb, yb, xb = (slice(*s.indices(n)[:2]) for s, n in zip(box, shape))
    if min(zb.stop - zb.start, xb.stop - xb.start) < 3:
        raise ValueError(f"lung box {box} is too small to cut into sub-regions")
    z_cuts = [int(c) for c in np.linspace(zb.start, zb.stop, 4).round()]  # lower | middle | upper
    x_mid = int(round((xb.start + xb.stop) / 2))
    x_half = {"R": slice(xb.start, x_mid), "L": slice(x_mid, xb.stop)}
    z_third = {
        "L": slice(z_cuts[0], z_cuts[1]),
        "M": slice(z_cuts[1], z_cuts[2]),
        "U": slice(z_cuts[2], z_cuts[3]),
    }
    return {name: (z_third[name[1]], yb, x_half[name[0]]) for name in REGIONS}


def region_map(shape: tuple[int, int, int], box: Box | None = None) -> np.ndarray:
    """A label volume of the sub-regions: 0 outside the box, ``i + 1`` for ``REGIONS[i]``.

    Parameters
    ----------
    shape : tuple of int
        Shape of the volume.
    box : tuple of slice, optional
        The lung box; the whole volume when omitted.

    Returns
    -------
    numpy.ndarray of uint8
    """
    out = np.zeros(shape, dtype=np.uint8)
    for i, (_, sl) in enumerate(region_slices(shape, box).items()):
        out[sl] = i + 1
    return out


def region_labels(signs: np.ndarray, regions: np.ndarray) -> dict[str, int]:
    """The 24 sparse labels that a sign truth volume implies.

    A label ``<region>_<sign>`` is 1 when any voxel of that sign lies in that region. The cavity
    lumen counts towards ``cavity``.

    Parameters
    ----------
    signs : numpy.ndarray
        Sign truth volume with the values of :data:`SIGN_CODES` (and :data:`CAVITY_LUMEN`).
    regions : numpy.ndarray
        Output of :func:`region_map` on the same grid.

    Returns
    -------
    dict
        Column name (:data:`LABEL_COLUMNS`) -> 0 or 1.
    """
    if signs.shape != regions.shape:
        raise ValueError(f"signs {signs.shape} and regions {regions.shape} differ in shape")
    present = set(zip(regions[signs > 0].tolist(), signs[signs > 0].tolist()))
    labels = {}
    for i, region in enumerate(REGIONS):
        for label in LABELS:
            codes = {SIGN_CODES[label]} | ({CAVITY_LUMEN} if label == "cavity" else set())
            labels[f"{region}_{label}"] = int(any((i + 1, c) in present for c in codes))
    return labels
