"""Lung segmentation (paper §2.1): a conservative and a refined lung mask, right and left apart.

Both masks are uint8 volumes on the scan's grid: 0 background, :data:`~sapsam_utils.core.regions.LUNG_RIGHT`
(1, the patient's right lung, at low ``x``) and :data:`~sapsam_utils.core.regions.LUNG_LEFT` (2).

Decisions
---------
* **3-D, not per slice.** Every step works on the volume, so a structure is judged by its 3-D
  shape (a cavity closed in 3-D is a hole; a bronchus seen end-on in one slice is not), and the
  result does not depend on the slice thickness.
* **Millimetres, not voxels.** Every radius is in mm and every morphological step is an *exact
  Euclidean* dilation / erosion: a distance map (SimpleITK's Maurer transform, with the voxel
  spacing) thresholded at the radius, never a voxel-ball footprint. A parameter therefore means
  the same on a 0.7 mm scan, on the 1.4 mm grid of the study and on a 6 mm smoke grid (where a
  radius below the voxel size does nothing). The paper's radii of 10 and 35 voxels were on
  ~0.7 mm slices: 7 mm and 24.5 mm here.
* **Only the lungs' box is processed.** After the threshold, the work is cropped to the box of
  the lung candidates plus the largest radius. The watershed floods only the parts of the band
  between the markers that touch the external marker or both lungs: every other voxel is decided
  by the markers alone (beyond the band, or a vessel enclosed by one lung), so the result is the
  same as flooding the whole box, much faster.

Common first steps (:func:`lung_air`)
-------------------------------------
1. Threshold at ``threshold_hu`` (-570 HU).
2. Drop the air outside the body: air connected, within its axial slice, to the slice's edge
   (the room air and the scanner's out-of-field padding). Per slice rather than in 3-D because
   the trachea leaves the top of the volume: in 3-D the lungs would be "outside" through it.
3. Keep the air spaces of at least ``min_lung_ml`` (the lungs, possibly joined by the airways).
4. Remove the trachea and main bronchi: the trachea is found as an air section of 30-900 mm²
   within 30 mm of the middle of the lungs, in the highest slice that shows one; the airway
   lumen is grown from it in 3-D below a lumen threshold that starts at ``airway_hu`` (-800 HU)
   and is lowered in 25 HU steps while the lumen is larger than ``max_airway_ml`` (it leaked into
   the lung; real lumens read from -1000 to -850 HU depending on the kernel and the slice
   thickness). The lumen's thick part (its opening by ``airway_core_mm``, which drops the thin
   distal bronchi and thin leaks) is removed with ``airway_wall_mm`` of partial-volume wall.
   When no trachea is found (a scan starting below the carina) or every threshold leaks,
   nothing is removed, with a warning.
5. Right and left: the midline is the middle of the air spaces' left-right extent. When the
   largest air space lies on both sides of it (the lungs touch at the anterior junction, or are
   joined by airways that were not removed) it is split by eroding it until it falls apart into
   two cores on either side of the midline (depth up to ``max_split_mm``); each of its voxels
   goes to the nearer core. Otherwise the second lung is the largest other air space on the
   other side. The lung at lower ``x`` is the patient's right lung.

Conservative mask (:func:`conservative_mask`)
---------------------------------------------
The lung air of each lung, closed by ``closing_mm`` (takes in the small vessels) then opened by
``opening_mm`` (removes thin spurs): a smooth mask of parenchyma and air that leaves out dense
lesions (nodules, fungus balls, thick cavity walls, pleural thickening).

Refined mask (:func:`refined_mask`, :func:`refined_steps`)
----------------------------------------------------------
1. Internal markers: the lung air above (the threshold's components without the small ones),
   right and left labelled apart.
2. Intermediate and external markers: the internal markers dilated by ``inner_mm`` (7 mm) and
   ``outer_mm`` (24.5 mm). The band up to ``inner_mm`` is left unlabelled for the flood; the shell
   from ``inner_mm`` to ``outer_mm`` is the external (background) marker.
3. Edge map: the Sobel gradient magnitude, per mm of each axis (HU / mm).
4. Marker-based watershed of the edge map: the band goes to the lung or to the background,
   split along the strongest edge.
5. Pleural layer (:func:`pleural_layer`; not in the paper, ``pleura_mm`` = 0 turns it off): the
   soft tissue (>= ``pleura_hu``) within ``pleura_mm`` of the lungs' air that lies on the lung
   and ends there, enclosed by lung, extrapleural fat and air, is added to the nearer lung.
6. Top-hat: each lung is closed with a ball of ``tophat_mm`` and the difference (the black
   top-hat of the mask) is added back: juxta-pleural nodules and the soft tissue of cavities at
   the lung surface that the watershed left out.
7. Each lung's remaining holes are filled in 3-D (cavity walls and fungus balls inside the lung).

Why step 5: the paper's steps cannot keep a smooth pleural rind, which is as dense as the chest
wall behind it. It makes no edge the watershed could follow, and the top-hat cannot fill it
either: a closing with a ball of radius ``R`` leaves out every dent the ball fits into, and a
ball fits into a dent of depth ``d`` and width ``w`` when ``w / 2 >= sqrt(2 R d - d**2)``. For a
rind 3-8 mm thick that holds whenever it is wider than about 2.3-3.6 cm (``R`` = 24.5 mm), so
only a rind's edges would be taken in. What marks a rind on CT is what lies beyond it: the
extrapleural fat line that comes with chronic pleural thickening, where the chest wall, the
mediastinum and the diaphragm go on as soft tissue. A rind with nothing but muscle behind it
stays invisible to every step.

Nothing of either mask is outside the body (it is clipped to the voxels that are not outside air).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import SimpleITK as sitk
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from .metrics import (
    dice,
    inside_share,
    per_label_dice,
    per_label_inside_share,
    volume_ml,
)
from ..core.regions import CAVITY_LUMEN, LUNG_LEFT, LUNG_RIGHT, SIGN_CODES
from ..core.volume import Volume

Box = tuple[slice, slice, slice]

#: Parameters shared by both masks (the lung air of :func:`lung_air`) and their defaults.
AIR_DEFAULTS = {
    "threshold_hu": -570.0,
    "airway_hu": -800.0,
    "max_airway_ml": 300.0,
    "airway_core_mm": 3.0,
    "airway_wall_mm": 2.0,
    "min_lung_ml": 100.0,
    "max_split_mm": 20.0,
}
#: Parameters of the conservative mask only.
CONSERVATIVE_DEFAULTS = {"closing_mm": 3.0, "opening_mm": 2.0}
#: Parameters of the refined mask only.
REFINED_DEFAULTS = {"inner_mm": 7.0, "outer_mm": 24.5, "tophat_mm": 24.5, "pleura_mm": 15.0, "pleura_hu": -20.0}
#: The pleural layer (:func:`pleural_layer`): how far beyond ``pleura_mm`` its components are
#: followed (mm), how much of a component may lie that far before it counts as chest wall,
#: mediastinum or diaphragm (ml), and its smallest component (ml; smaller ones are noise).
PLEURA_RING_MM, PLEURA_WALL_ML, PLEURA_MIN_ML = 5.0, 1.0, 0.1

# The trachea, as seen in an axial slice near the top of the lungs.
_TRACHEA_AREA_MM2 = (30.0, 900.0)
_TRACHEA_MAX_OFFSET_MM = 30.0  # from the middle of the lungs, left-right
_TRACHEA_SEARCH_MM = 80.0  # how far below the top of the air spaces to look
_AIRWAY_STEP_HU = 25.0
_AIRWAY_LOWEST_HU = -1000.0
_SIX = ndi.generate_binary_structure(3, 1)
_SLICE_FOUR = np.zeros((3, 3, 3), dtype=bool)
_SLICE_FOUR[1] = ndi.generate_binary_structure(2, 1)


# ----------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------


def check_ct(ct) -> None:
    """Reject what is not a CT volume in Hounsfield units, saying what is wrong.

    Raises
    ------
    TypeError
        ``ct`` is not a :class:`~sapsam_utils.core.volume.Volume`, or its dtype is not numeric.
    ValueError
        Unsigned or non-finite values, values that cannot be HU (no air below -500 HU, as in raw
        stored DICOM values before the rescale slope / intercept), or a grid too small.
    """
    if not isinstance(ct, Volume):
        raise TypeError(f"expected a CT as a sapsam_utils.core.volume.Volume, got {type(ct).__name__}")
    array = ct.array
    if array.dtype == bool or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise TypeError(f"CT dtype {array.dtype} is not a Hounsfield-unit type: expected signed integers or floats")
    if np.issubdtype(array.dtype, np.unsignedinteger):
        raise ValueError(
            f"CT dtype {array.dtype} is unsigned, so it cannot hold Hounsfield units (air is about -1000 HU): "
            "are these raw stored values? apply the DICOM rescale slope and intercept first"
        )
    if min(array.shape) < 3:
        raise ValueError(f"CT grid {array.shape} is too small to segment (at least 3 voxels per axis)")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise ValueError("CT holds NaN or infinite values")
    low, high = array.min(), array.max()
    if low > -500:
        raise ValueError(
            f"CT values range {low}..{high}: no air below -500 HU, so these are not Hounsfield units "
            "(air is about -1000 HU); raw stored values need the rescale slope and intercept"
        )


def _check_radius(name: str, value: float) -> float:
    value = float(value)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a radius >= 0 in mm, got {value}")
    return value


# ----------------------------------------------------------------------------------------------
# Exact Euclidean morphology in millimetres
# ----------------------------------------------------------------------------------------------


def squared_distance_mm(mask: np.ndarray, spacing) -> np.ndarray:
    """Squared Euclidean distance (mm²) from every voxel to the nearest voxel of ``mask``.

    Parameters
    ----------
    mask : numpy.ndarray of bool
        3-D mask.
    spacing : tuple of float
        Voxel size in mm, ``(z, y, x)``.

    Returns
    -------
    numpy.ndarray of float32
        0 on the mask; ``inf`` everywhere when the mask is empty. Exact (Maurer's transform,
        distances between voxel centres).
    """
    if not mask.any():
        return np.full(mask.shape, np.inf, dtype=np.float32)
    image = sitk.GetImageFromArray(np.ascontiguousarray(mask, dtype=np.uint8))
    image.SetSpacing(tuple(float(s) for s in reversed(spacing)))
    sq = sitk.GetArrayFromImage(
        sitk.SignedMaurerDistanceMap(image, insideIsPositive=False, squaredDistance=True, useImageSpacing=True)
    )
    np.maximum(sq, 0.0, out=sq)  # inside values are negative: distance 0 on the mask
    return sq


def _within(sq: np.ndarray, radius_mm: float) -> np.ndarray:
    # Inclusive, with a relative tolerance (1e-4 of r²) that absorbs the float32 rounding of the
    # distance map, far below the gap between two voxel distances.
    return sq <= radius_mm * radius_mm * (1 + 1e-4)


def ball(radius_mm: float, spacing) -> np.ndarray:
    """The exact Euclidean ball as a voxel footprint: offsets ``o`` with ``|o * spacing| <= radius_mm``."""
    half = [int(np.floor(radius_mm * (1 + 1e-4) / s)) for s in spacing]
    axes = np.meshgrid(*[np.arange(-h, h + 1) * s for h, s in zip(half, spacing)], indexing="ij", sparse=True)
    return _within(sum(a * a for a in axes), radius_mm)


# A ball of at most this many voxels is applied as a footprint (faster for small radii); a larger
# one through the distance map (whose cost does not grow with the radius). Same result either way.
_FOOTPRINT_MAX = 64


def _small_ball(radius_mm: float, spacing) -> np.ndarray | None:
    """The ball's footprint when it has at most ``_FOOTPRINT_MAX`` voxels, else None."""
    if 4.19 * radius_mm**3 / float(np.prod(spacing)) > 2 * _FOOTPRINT_MAX:
        return None
    footprint = ball(radius_mm, spacing)
    return footprint if footprint.sum() <= _FOOTPRINT_MAX else None


def dilate_mm(mask: np.ndarray, spacing, radius_mm: float) -> np.ndarray:
    """Exact Euclidean dilation: the voxels within ``radius_mm`` (inclusive) of the mask."""
    if radius_mm <= 0:
        return mask.astype(bool, copy=True)
    footprint = _small_ball(radius_mm, spacing)
    if footprint is not None:
        return ndi.binary_dilation(mask, footprint)
    return _within(squared_distance_mm(mask, spacing), radius_mm)


def erode_mm(mask: np.ndarray, spacing, radius_mm: float) -> np.ndarray:
    """Exact Euclidean erosion: the voxels farther than ``radius_mm`` from every non-mask voxel.

    Beyond the array counts as mask (a lung cut by the field of view is not eroded there).
    """
    if radius_mm <= 0:
        return mask.astype(bool, copy=True)
    footprint = _small_ball(radius_mm, spacing)
    if footprint is not None:
        return ndi.binary_erosion(mask, footprint, border_value=1)
    return ~_within(squared_distance_mm(~mask, spacing), radius_mm)


def close_mm(mask: np.ndarray, spacing, radius_mm: float) -> np.ndarray:
    """Exact Euclidean closing (dilation then erosion) with a ball of ``radius_mm``.

    Only the mask's bounding box plus the radius is processed.
    """
    if radius_mm <= 0 or not mask.any():
        return mask.astype(bool, copy=True)
    box = _bbox(mask, _margin_vox(radius_mm, spacing), mask.shape)
    out = np.zeros(mask.shape, dtype=bool)
    out[box] = erode_mm(dilate_mm(mask[box], spacing, radius_mm), spacing, radius_mm)
    return out


def open_mm(mask: np.ndarray, spacing, radius_mm: float) -> np.ndarray:
    """Exact Euclidean opening (erosion then dilation) with a ball of ``radius_mm``."""
    if radius_mm <= 0 or not mask.any():
        return mask.astype(bool, copy=True)
    box = _bbox(mask, _margin_vox(radius_mm, spacing), mask.shape)
    out = np.zeros(mask.shape, dtype=bool)
    out[box] = dilate_mm(erode_mm(mask[box], spacing, radius_mm), spacing, radius_mm)
    return out


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """The mask with its holes filled in 3-D: background not 6-connected to the array's border.

    Same result as :func:`scipy.ndimage.binary_fill_holes`, by one labelling instead of an
    iterated dilation (several times faster on a lung).
    """
    labels, n = ndi.label(~mask, structure=_SIX)
    faces = np.concatenate([labels[[0, -1]].ravel(), labels[:, [0, -1]].ravel(), labels[:, :, [0, -1]].ravel()])
    open_to_border = np.zeros(n + 1, dtype=bool)
    open_to_border[faces] = True
    open_to_border[0] = False
    return ~open_to_border[labels]


def _margin_vox(radius_mm: float, spacing) -> tuple[int, int, int]:
    return tuple(int(np.ceil(radius_mm / s)) + 1 for s in spacing)


def _bbox(mask: np.ndarray, margin, shape) -> Box:
    """Bounding box of a non-empty mask, grown by ``margin`` voxels per axis, within ``shape``."""
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        box.append(slice(max(0, int(hit[0]) - margin[axis]), min(shape[axis], int(hit[-1]) + 1 + margin[axis])))
    return tuple(box)


def _grow(box: Box, shape, by: int = 1) -> Box:
    """A box grown by ``by`` voxels per side, within ``shape`` (so a mask's border has background)."""
    return tuple(slice(max(0, s.start - by), min(n, s.stop + by)) for s, n in zip(box, shape))


# ----------------------------------------------------------------------------------------------
# Body, airways, lungs
# ----------------------------------------------------------------------------------------------


def outside_air(hu: np.ndarray, threshold_hu: float = AIR_DEFAULTS["threshold_hu"]) -> np.ndarray:
    """Air around the body: voxels below ``threshold_hu`` connected, in their axial slice, to its edge.

    Parameters
    ----------
    hu : numpy.ndarray
        CT in HU, axes ``(z, y, x)``.
    threshold_hu : float
        Air threshold.

    Returns
    -------
    numpy.ndarray of bool
        The room air and the scanner's padding; the body (with the lungs and airways) is its
        complement.
    """
    labels, n = ndi.label(hu < threshold_hu, structure=_SLICE_FOUR)
    edge = np.concatenate(
        [labels[:, 0, :].ravel(), labels[:, -1, :].ravel(), labels[:, :, 0].ravel(), labels[:, :, -1].ravel()]
    )
    is_edge = np.zeros(n + 1, dtype=bool)
    is_edge[edge] = True
    is_edge[0] = False
    return is_edge[labels]


@dataclass
class LungAir:
    """The lungs' air (the internal markers), on a box of the scan with the context to refine it.

    Attributes
    ----------
    box : tuple of slice
        Where the arrays below lie in the scan's grid.
    hu : numpy.ndarray
        The CT inside the box (a view, never modified).
    labels : numpy.ndarray of uint8
        Lung air below the threshold, without the airways: ``LUNG_RIGHT`` / ``LUNG_LEFT``.
    outside : numpy.ndarray of bool
        Air outside the body (:func:`outside_air`) inside the box.
    airway : numpy.ndarray of bool
        What was removed as trachea and main bronchi.
    spacing : tuple of float
        Voxel size in mm.
    info : dict
        Diagnostics: ``trachea_found``, ``airway_ml``, ``airway_hu``, ``split_depth_mm``,
        ``n_lungs``, and the time of each step in ``seconds``.
    """

    box: Box
    hu: np.ndarray
    labels: np.ndarray
    outside: np.ndarray
    airway: np.ndarray
    spacing: tuple
    info: dict = field(default_factory=dict)


def lung_air(
    ct: Volume,
    threshold_hu: float = AIR_DEFAULTS["threshold_hu"],
    airway_hu: float = AIR_DEFAULTS["airway_hu"],
    max_airway_ml: float = AIR_DEFAULTS["max_airway_ml"],
    airway_core_mm: float = AIR_DEFAULTS["airway_core_mm"],
    airway_wall_mm: float = AIR_DEFAULTS["airway_wall_mm"],
    min_lung_ml: float = AIR_DEFAULTS["min_lung_ml"],
    max_split_mm: float = AIR_DEFAULTS["max_split_mm"],
    margin_mm: float = 0.0,
) -> LungAir:
    """The air of the right and left lungs, without the body's outside and the airways.

    Steps 1-5 of the module description; both masks start from it.

    Parameters
    ----------
    ct : Volume
        CT in HU (any spacing).
    threshold_hu : float
        Air / tissue threshold (the paper's -570 HU).
    airway_hu : float
        First (most permissive) lumen threshold for growing the trachea and bronchi; lowered
        in 25 HU steps while the lumen leaks.
    max_airway_ml : float
        Largest airway lumen accepted; a larger one has leaked into the lung.
    airway_core_mm : float
        Radius of the opening that keeps the thick airways (trachea, main and lobar bronchi).
    airway_wall_mm : float
        Partial-volume wall removed with the lumen.
    min_lung_ml : float
        Smallest air space that can be (part of) a lung.
    max_split_mm : float
        Deepest erosion tried to split lungs that touch.
    margin_mm : float
        Margin around the lungs' box (the caller's largest radius).

    Returns
    -------
    LungAir

    Raises
    ------
    TypeError, ValueError
        Bad input (:func:`check_ct`), or no air space of ``min_lung_ml`` inside the body.
    """
    check_ct(ct)
    for name, value in (("airway_core_mm", airway_core_mm), ("airway_wall_mm", airway_wall_mm),
                        ("max_split_mm", max_split_mm), ("margin_mm", margin_mm)):
        _check_radius(name, value)
    spacing = tuple(float(s) for s in ct.spacing)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()

    hu_full = ct.array
    outside_full = outside_air(hu_full, threshold_hu)
    inside = hu_full < threshold_hu
    inside &= ~outside_full
    labels, n = ndi.label(inside, structure=_SIX)
    sizes = np.bincount(labels[inside], minlength=n + 1) * voxel_ml  # only the air: fast
    big = np.flatnonzero(sizes >= min_lung_ml)
    if big.size == 0:
        raise ValueError(
            f"no air space of at least {min_lung_ml} ml inside the body below {threshold_hu} HU "
            f"(largest {sizes.max(initial=0):.1f} ml): no lungs found; is this a chest CT in HU?"
        )
    is_big = np.zeros(sizes.size, dtype=bool)
    is_big[big] = True
    candidates_full = is_big[labels]
    box = _bbox(candidates_full, _margin_vox(margin_mm, spacing), hu_full.shape)
    hu, outside, inside, candidates = hu_full[box], outside_full[box], inside[box], candidates_full[box]
    del labels, outside_full, candidates_full
    seconds["threshold"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    airway, airway_info = _airways(hu, inside, candidates, spacing, airway_hu, max_airway_ml,
                                   airway_core_mm, airway_wall_mm)
    seconds["airways"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    air = candidates & ~airway
    lungs, split_depth = _right_and_left(air, spacing, min_lung_ml, max_split_mm)
    seconds["right_left"] = time.perf_counter() - t0
    info = {**airway_info, "split_depth_mm": split_depth,
            "n_lungs": int((lungs == LUNG_RIGHT).any()) + int((lungs == LUNG_LEFT).any()), "seconds": seconds}
    return LungAir(box, hu, lungs, outside, airway, spacing, info)


def _trachea_seed(inside: np.ndarray, candidates: np.ndarray, spacing) -> tuple[int, np.ndarray] | None:
    """The trachea's section in the highest slice that shows one: ``(z, 2-D mask)``, or None.

    A trachea section is an air component of the body in an axial slice, 30-900 mm² in area,
    whose centre lies within 30 mm (left-right) of the middle of the lung candidates.
    """
    xs = np.flatnonzero(candidates.any(axis=(0, 1)))
    zs = np.flatnonzero(candidates.any(axis=(1, 2)))
    x_mid = (xs[0] + xs[-1]) / 2
    pixel_mm2 = spacing[1] * spacing[2]
    lowest = max(0, int(zs[-1] - _TRACHEA_SEARCH_MM / spacing[0]))
    top = int(np.flatnonzero(inside.any(axis=(1, 2)))[-1])
    for z in range(top, lowest - 1, -1):
        labels, n = ndi.label(inside[z])
        if n == 0:
            continue
        area = np.bincount(labels.ravel())[1:] * pixel_mm2
        cx = np.bincount(labels.ravel(), weights=np.broadcast_to(np.arange(labels.shape[1]), labels.shape).ravel())[1:]
        cx = cx / np.maximum(area / pixel_mm2, 1)
        offset = np.abs(cx - x_mid) * spacing[2]
        fits = (area >= _TRACHEA_AREA_MM2[0]) & (area <= _TRACHEA_AREA_MM2[1]) & (offset <= _TRACHEA_MAX_OFFSET_MM)
        if fits.any():
            best = np.flatnonzero(fits)[np.argmin(offset[fits])]
            return z, labels == best + 1
    return None


def _airways(hu, inside, candidates, spacing, airway_hu, max_airway_ml, core_mm, wall_mm):
    """The trachea and main bronchi to remove (step 4), and what was found."""
    voxel_ml = float(np.prod(spacing)) / 1000.0
    none = np.zeros(hu.shape, dtype=bool)
    seed = _trachea_seed(inside, candidates, spacing)
    if seed is None:
        warnings.warn("no trachea found near the top of the lungs: the airways are not removed", stacklevel=3)
        return none, {"trachea_found": False, "airway_ml": 0.0, "airway_hu": None}
    z, section = seed
    lumen = None
    limit = float(airway_hu)
    while limit >= _AIRWAY_LOWEST_HU:
        below = hu < limit
        start = section & below[z]
        if not start.any():
            break
        labels, _ = ndi.label(below, structure=_SIX)
        ids = np.unique(labels[z][start])
        grown = np.isin(labels, ids)
        if grown.sum() * voxel_ml <= max_airway_ml:
            lumen = grown
            break
        limit -= _AIRWAY_STEP_HU
    if lumen is None:
        warnings.warn(
            f"no airway lumen of at most {max_airway_ml} ml grows from the trachea below any threshold from "
            f"{airway_hu} to {_AIRWAY_LOWEST_HU} HU (it leaks into the lungs): the airways are not removed",
            stacklevel=3)
        return none, {"trachea_found": True, "airway_ml": 0.0, "airway_hu": None}
    # The opening keeps the thick airways (and drops the thin distal bronchi and any thin leak);
    # the wall's partial-volume voxels go with them.
    box = _bbox(lumen, _margin_vox(core_mm + wall_mm, spacing), hu.shape)
    core = erode_mm(lumen[box], spacing, core_mm)
    airway = none
    airway[box] = dilate_mm(core, spacing, core_mm + wall_mm) & inside[box]
    return airway, {"trachea_found": True, "airway_ml": float(airway.sum() * voxel_ml), "airway_hu": limit}


def _x_centre(mask: np.ndarray, box: Box) -> float:
    return float(box[2].start + np.nonzero(mask)[2].mean())


def _split(component: np.ndarray, box: Box, spacing, max_split_mm: float, midline: float):
    """Split an air space holding both lungs: erode until cores on both sides of the midline appear.

    Returns the two parts (every voxel of ``component`` goes to the part of its nearer core) and
    the erosion depth, or None when no depth up to ``max_split_mm`` separates them.
    """
    depth_sq = squared_distance_mm(~component, spacing)
    step = max(1.0, min(spacing))
    for depth in np.arange(step, max_split_mm + 1e-6, step):
        core = depth_sq > depth * depth
        labels, n = ndi.label(core, structure=_SIX)
        if n == 0:
            return None
        if n < 2:
            continue
        sizes = np.bincount(labels[core], minlength=n + 1)
        first, second = np.argsort(sizes)[::-1][:2]
        if sizes[second] < 0.1 * sizes[first]:
            continue
        a, b = labels == first, labels == second
        if (_x_centre(a, box) - midline) * (_x_centre(b, box) - midline) >= 0:
            continue  # both cores on one side: not the two lungs yet
        nearer_a = squared_distance_mm(a, spacing) <= squared_distance_mm(b, spacing)
        return component & nearer_a, component & ~nearer_a, float(depth)
    return None


def _right_and_left(air: np.ndarray, spacing, min_lung_ml: float, max_split_mm: float):
    """Label the two lungs (step 5): ``LUNG_RIGHT`` at low x, ``LUNG_LEFT`` at high x.

    The midline is the middle of the air spaces' left-right extent (both lungs together).
    """
    voxel_ml = float(np.prod(spacing)) / 1000.0
    labels, n = ndi.label(air, structure=_SIX)
    sizes = np.bincount(labels[air], minlength=n + 1) * voxel_ml
    order = np.argsort(sizes)[::-1]
    if n == 0 or sizes[order[0]] < min_lung_ml:
        raise ValueError(f"no air space of at least {min_lung_ml} ml is left once the airways are removed")
    big = np.isin(labels, order[sizes[order] >= min_lung_ml])
    xs = np.flatnonzero(big.any(axis=(0, 1)))
    midline = (xs[0] + xs[-1]) / 2
    objects = [_grow(box, air.shape) for box in ndi.find_objects(labels)]
    first = order[0]
    box = objects[first - 1]
    mask = labels[box] == first
    right_share = np.count_nonzero(np.nonzero(mask)[2] + box[2].start < midline) / np.count_nonzero(mask)
    parts: list[tuple[Box, np.ndarray]] = [(box, mask)]
    depth = None
    if 0.2 <= right_share <= 0.8:  # the largest air space holds both lungs: split it
        split = _split(mask, box, spacing, max_split_mm, midline)
        if split is None:
            raise ValueError(
                f"the lungs touch and could not be split by eroding up to {max_split_mm} mm")
        a, b, depth = split
        parts = [(box, a), (box, b)]
    else:
        first_side = _x_centre(mask, box) < midline
        for other in order[1:]:
            if sizes[other] < min_lung_ml:
                break
            other_box = objects[other - 1]
            other_mask = labels[other_box] == other
            if (_x_centre(other_mask, other_box) < midline) != first_side:
                parts.append((other_box, other_mask))
                break
        if len(parts) == 1:
            warnings.warn("only one lung found", stacklevel=3)
    out = np.zeros(air.shape, dtype=np.uint8)
    for box, mask in parts:
        out[box][mask] = LUNG_RIGHT if _x_centre(mask, box) < midline else LUNG_LEFT
    return out, depth


# ----------------------------------------------------------------------------------------------
# The two masks
# ----------------------------------------------------------------------------------------------


def _per_lung(labels: np.ndarray, spacing, margin_mm, step) -> np.ndarray:
    """Apply ``step(mask) -> mask`` to each lung on its own box (plus ``margin_mm``); a voxel that
    both lungs claim stays with the lung it belonged to, or with neither."""
    out = np.zeros(labels.shape, dtype=np.uint8)
    claimed = {}
    for value in (LUNG_RIGHT, LUNG_LEFT):
        mask = labels == value
        if not mask.any():
            continue
        box = _bbox(mask, _margin_vox(margin_mm, spacing), mask.shape)
        grown = np.zeros(labels.shape, dtype=bool)
        grown[box] = step(mask[box])
        claimed[value] = grown
    if len(claimed) == 2:
        both = claimed[LUNG_RIGHT] & claimed[LUNG_LEFT]
        for value in claimed:
            claimed[value] &= ~both | (labels == value)
    for value, grown in claimed.items():
        out[grown] = value
    return out


def _conservative(air: LungAir, closing_mm: float, opening_mm: float) -> np.ndarray:
    sp = air.spacing

    def smooth(mask):
        return open_mm(close_mm(mask, sp, closing_mm), sp, opening_mm)

    out = _per_lung(air.labels, sp, closing_mm, smooth)
    out[air.outside] = 0
    return out


def _full(ct: Volume, box: Box, crop: np.ndarray) -> Volume:
    out = np.zeros(ct.array.shape, dtype=np.uint8)
    out[box] = crop
    return ct.like(out)


def _split_params(params: dict) -> tuple[dict, dict, dict]:
    unknown = set(params) - set(AIR_DEFAULTS) - set(CONSERVATIVE_DEFAULTS) - set(REFINED_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown segmentation parameter(s) {sorted(unknown)}")
    pick = lambda keys: {k: v for k, v in params.items() if k in keys}  # noqa: E731
    return pick(AIR_DEFAULTS), pick(CONSERVATIVE_DEFAULTS), pick(REFINED_DEFAULTS)


def conservative_mask(
    ct: Volume,
    closing_mm: float = CONSERVATIVE_DEFAULTS["closing_mm"],
    opening_mm: float = CONSERVATIVE_DEFAULTS["opening_mm"],
    **params,
) -> Volume:
    """The conservative lung mask: the lungs' air, closed then opened (paper §2.1).

    Parameters
    ----------
    ct : Volume
        CT in HU.
    closing_mm, opening_mm : float
        Radii of the closing (takes in small vessels) and of the opening (smooths the border).
    **params
        Parameters of :func:`lung_air` (``threshold_hu``, airway and split parameters). Those of
        the refined mask are accepted and unused, so that one :func:`segmentation_params`
        dictionary serves every function; an unknown name is a ``TypeError``.

    Returns
    -------
    Volume
        uint8 on the CT's grid: 0, ``LUNG_RIGHT``, ``LUNG_LEFT``.
    """
    check_ct(ct)
    air_params, _, _ = _split_params(params)
    _check_radius("closing_mm", closing_mm)
    _check_radius("opening_mm", opening_mm)
    air = lung_air(ct, margin_mm=closing_mm, **air_params)
    return _full(ct, air.box, _conservative(air, closing_mm, opening_mm))


@dataclass
class RefinedSteps:
    """The refined mask and its intermediate steps, on the box ``box`` of the scan (paper Fig. 2).

    Attributes
    ----------
    box : tuple of slice
        Where the arrays lie in the scan's grid.
    internal : numpy.ndarray of uint8
        Internal markers: the lungs' air, ``LUNG_RIGHT`` / ``LUNG_LEFT``.
    edges : numpy.ndarray of float32
        Sobel gradient magnitude (HU / mm) where the flood needed it (0 elsewhere).
    watershed : numpy.ndarray of uint8
        The lungs after the watershed (internal markers plus the band they won).
    pleura : numpy.ndarray of uint8
        The pleural layer added to each lung (:func:`pleural_layer`).
    mask : numpy.ndarray of uint8
        The refined mask: the watershed lungs with their pleural layer, black top-hat and
        filled holes.
    ct : Volume
        The CT (for :meth:`volume`).
    params : dict
        ``inner_mm``, ``outer_mm``, ``tophat_mm``, ``pleura_mm``, ``pleura_hu``.
    info : dict
        Diagnostics of :func:`lung_air` plus the time of each step in ``info["seconds"]``.
    """

    box: Box
    internal: np.ndarray
    edges: np.ndarray
    watershed: np.ndarray
    pleura: np.ndarray
    mask: np.ndarray
    ct: Volume
    params: dict
    info: dict

    def volume(self) -> Volume:
        """The refined mask on the scan's whole grid."""
        return _full(self.ct, self.box, self.mask)

    def external(self) -> np.ndarray:
        """The external marker: the shell from ``inner_mm`` to ``outer_mm`` around the internal markers.

        Computed on demand (for figures): the flood only needs its inner face.
        """
        sq = squared_distance_mm(self.internal > 0, self.ct.spacing)
        return _within(sq, self.params["outer_mm"]) & ~_within(sq, self.params["inner_mm"])


def _edges(hu: np.ndarray, spacing) -> np.ndarray:
    """Sobel gradient magnitude in HU per mm (each axis' derivative divided by its spacing)."""
    values = hu.astype(np.float32)
    total = np.zeros(values.shape, dtype=np.float32)
    for axis, s in enumerate(spacing):
        d = ndi.sobel(values, axis=axis)
        d /= np.float32(s)
        d *= d
        total += d
    np.sqrt(total, out=total)
    return total


def pleural_layer(
    hu: np.ndarray,
    lungs: np.ndarray,
    spacing,
    pleura_mm: float = REFINED_DEFAULTS["pleura_mm"],
    pleura_hu: float = REFINED_DEFAULTS["pleura_hu"],
    air_sq: np.ndarray | None = None,
) -> np.ndarray:
    """The soft tissue enclosed between the lungs and the extrapleural fat: a pleural rind.

    A pleural rind is as dense as the chest wall behind it, so neither the watershed nor the
    top-hat takes it in (module description). What shows it on CT is what lies beyond it: the
    extrapleural fat line (or air), whereas the chest wall, the mediastinum and the diaphragm run
    on as soft tissue far from the lung. A voxel is in the layer when it

    * lies outside ``lungs`` and within ``pleura_mm`` of them, and is at least ``pleura_hu``;
    * belongs to a 6-connected component of such voxels that touches the lung (comes within two
      voxels of it), holds at least ``PLEURA_MIN_ML`` (not a speck of noise in fat) and,
      followed ``PLEURA_RING_MM`` further, holds less than ``PLEURA_WALL_ML`` farther than
      ``pleura_mm`` from the lung: it ends there, enclosed by lung, fat and air.

    Parameters
    ----------
    hu : numpy.ndarray
        CT in HU, axes ``(z, y, x)``.
    lungs : numpy.ndarray of uint8
        The lungs so far (``LUNG_RIGHT`` / ``LUNG_LEFT``), e.g. after the watershed.
    spacing : tuple of float
        Voxel size in mm.
    pleura_mm : float
        Thickest layer taken (mm); 0 returns an empty layer.
    pleura_hu : float
        Soft-tissue threshold (HU), between fat (about -100 HU) and soft tissue (+20 to +60 HU).
    air_sq : numpy.ndarray of float, optional
        Squared distance (mm²) from which the layer's thickness is measured; by default the
        distance to ``lungs``. The refined mask passes the distance to the lungs' air (its
        internal markers), which it has computed already.

    Returns
    -------
    numpy.ndarray of uint8
        The layer, each voxel labelled with its nearer lung (``LUNG_RIGHT`` / ``LUNG_LEFT``).
    """
    pleura_mm = _check_radius("pleura_mm", pleura_mm)
    out = np.zeros(lungs.shape, dtype=np.uint8)
    if pleura_mm == 0 or not lungs.any():
        return out
    any_lung = lungs > 0
    sq = squared_distance_mm(any_lung, spacing) if air_sq is None else air_sq
    followed = _within(sq, pleura_mm + PLEURA_RING_MM)
    followed &= ~any_lung
    dense = followed & (hu >= pleura_hu)
    components, n = ndi.label(dense, structure=_SIX)
    near = _within(sq, pleura_mm)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    far_ml = np.bincount(components[dense & ~near], minlength=n + 1) * voxel_ml
    size_ml = np.bincount(components[dense], minlength=n + 1) * voxel_ml
    # A rind lies on the lung: it comes within two voxels of it (the voxel between may be
    # partial volume, below pleura_hu). A node or vessel in the fat near the lung does not.
    touches = np.zeros(n + 1, dtype=bool)
    touches[components[dense & ndi.binary_dilation(any_lung, _SIX, iterations=2)]] = True
    enclosed = (far_ml < PLEURA_WALL_ML) & (size_ml >= PLEURA_MIN_ML) & touches
    enclosed[0] = False
    layer = enclosed[components] & near
    # Each part goes to the nearer lung, voxel by voxel, decided on the part's box grown by
    # pleura_mm (which holds the nearer lung's nearest voxel: every part lies that close to it).
    parts, _ = ndi.label(layer, structure=_SIX)
    for i, part_box in enumerate(ndi.find_objects(parts), start=1):
        box = _grow(part_box, lungs.shape, max(_margin_vox(pleura_mm, spacing)))
        sub = lungs[box]
        here = parts[box] == i
        has_right, has_left = (sub == LUNG_RIGHT).any(), (sub == LUNG_LEFT).any()
        if has_right and has_left:
            right = squared_distance_mm(sub == LUNG_RIGHT, spacing) <= squared_distance_mm(sub == LUNG_LEFT, spacing)
            out[box][here] = np.where(right[here], LUNG_RIGHT, LUNG_LEFT)
        else:  # only one lung within reach
            out[box][here] = LUNG_RIGHT if has_right else LUNG_LEFT
    return out


def _refined(air: LungAir, inner_mm: float, outer_mm: float, tophat_mm: float, pleura_mm: float,
             pleura_hu: float, ct: Volume) -> RefinedSteps:
    sp = air.spacing
    seconds = dict(air.info["seconds"])
    internal = air.labels
    lungs = internal.copy()
    edges = np.zeros(internal.shape, dtype=np.float32)

    t0 = time.perf_counter()
    # Markers. The flood needs the band (up to inner_mm) and the voxels of the external shell that
    # touch it (one voxel further): `near` is the lungs' box plus that much. The pleural layer
    # needs the distance to the lungs' air further out, so the map covers the whole box.
    reach = min(outer_mm, inner_mm + max(sp))
    near = _bbox(internal > 0, _margin_vox(reach, sp), internal.shape)
    own = internal[near]
    is_own = own > 0
    air_sq = squared_distance_mm(internal > 0, sp)
    sq = air_sq[near]
    band = _within(sq, inner_mm) & ~is_own
    external = _within(sq, reach) & ~_within(sq, inner_mm)
    del sq
    seconds["markers"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    # The flood only has to decide the parts of the band that touch the external marker or both
    # lungs: a part enclosed by one lung's markers (a vessel, a nodule inside the lung) is that
    # lung's whatever the edges. The flood then needs those parts and the marker voxels beside them.
    parts, n_parts = ndi.label(band, structure=_SIX)
    touching = {}
    for name, marker in (("external", external), (LUNG_RIGHT, own == LUNG_RIGHT), (LUNG_LEFT, own == LUNG_LEFT)):
        touching[name] = np.zeros(n_parts + 1, dtype=bool)
        touching[name][parts[ndi.binary_dilation(marker, structure=_SIX) & band]] = True
    contested = touching["external"] | (touching[LUNG_RIGHT] & touching[LUNG_LEFT])
    contested[0] = False
    won = lungs[near]
    for value in (LUNG_RIGHT, LUNG_LEFT):
        alone = touching[value] & ~contested
        alone[0] = False
        won[alone[parts]] = value
    to_flood = contested[parts]
    del parts
    flood = ndi.binary_dilation(to_flood, structure=_SIX) & (to_flood | is_own | external)
    work = _bbox(flood, (1, 1, 1), flood.shape) if flood.any() else None
    if work is not None:
        edges[_shift(near, work)] = _edges(air.hu[near][work], sp)
    seconds["edges"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if work is not None:
        markers = np.where(external[work], np.int32(3), own[work].astype(np.int32))
        markers[~flood[work]] = 0
        flooded = watershed(edges[_shift(near, work)], markers, mask=flood[work])
        gained = to_flood[work] & ((flooded == LUNG_RIGHT) | (flooded == LUNG_LEFT))
        won[work][gained] = flooded[gained]
    seconds["watershed"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    pleura = pleural_layer(air.hu, lungs, sp, pleura_mm, pleura_hu, air_sq)
    del air_sq
    with_pleura = np.where(pleura > 0, pleura, lungs)
    seconds["pleura"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    mask = _per_lung(with_pleura, sp, tophat_mm, lambda m: fill_holes(close_mm(m, sp, tophat_mm)))
    mask[air.outside] = 0
    seconds["tophat_fill"] = time.perf_counter() - t0
    info = {**air.info, "seconds": seconds}
    params = {"inner_mm": inner_mm, "outer_mm": outer_mm, "tophat_mm": tophat_mm, "pleura_mm": pleura_mm,
              "pleura_hu": pleura_hu}
    return RefinedSteps(air.box, internal, edges, lungs, pleura, mask, ct, params, info)


def _shift(box: Box, inner: Box) -> Box:
    """``inner`` (relative to ``box``) as slices of the array that ``box`` cuts."""
    return tuple(slice(b.start + i.start, b.start + i.stop) for b, i in zip(box, inner))


def _check_refined(inner_mm, outer_mm, tophat_mm, pleura_mm, pleura_hu) -> None:
    for name, value in (("inner_mm", inner_mm), ("outer_mm", outer_mm), ("tophat_mm", tophat_mm),
                        ("pleura_mm", pleura_mm)):
        _check_radius(name, value)
    if outer_mm <= inner_mm:
        raise ValueError(f"outer_mm ({outer_mm}) must exceed inner_mm ({inner_mm})")
    if not np.isfinite(float(pleura_hu)):
        raise ValueError(f"pleura_hu must be a finite HU value, got {pleura_hu}")


def _refined_margin(spacing, inner_mm, tophat_mm, pleura_mm, **_) -> float:
    """How far around the lung candidates the refined mask's steps look (mm)."""
    return max(inner_mm + max(spacing), tophat_mm, pleura_mm + PLEURA_RING_MM + max(spacing))


def refined_steps(
    ct: Volume,
    inner_mm: float = REFINED_DEFAULTS["inner_mm"],
    outer_mm: float = REFINED_DEFAULTS["outer_mm"],
    tophat_mm: float = REFINED_DEFAULTS["tophat_mm"],
    pleura_mm: float = REFINED_DEFAULTS["pleura_mm"],
    pleura_hu: float = REFINED_DEFAULTS["pleura_hu"],
    **params,
) -> RefinedSteps:
    """The refined lung mask with its intermediate steps (for the paper's Fig. 2 and timing).

    Parameters
    ----------
    ct : Volume
        CT in HU.
    inner_mm : float
        Dilation of the internal markers that bounds the band left to the flood (paper: 10
        voxels of ~0.7 mm).
    outer_mm : float
        Dilation that bounds the external marker (paper: 35 voxels).
    tophat_mm : float
        Radius of the closing whose difference (black top-hat) is added back.
    pleura_mm : float
        Thickest pleural layer added before the top-hat (:func:`pleural_layer`; not in the
        paper; 0 = off, the paper's steps alone).
    pleura_hu : float
        Soft-tissue threshold of the pleural layer: between fat (about -100 HU) and soft tissue.
    **params
        Parameters of :func:`lung_air`; those of the conservative mask are accepted and unused
        (one :func:`segmentation_params` dictionary serves every function).

    Returns
    -------
    RefinedSteps
    """
    check_ct(ct)
    air_params, _, _ = _split_params(params)
    _check_refined(inner_mm, outer_mm, tophat_mm, pleura_mm, pleura_hu)
    margin = _refined_margin(ct.spacing, inner_mm, tophat_mm, pleura_mm)
    air = lung_air(ct, margin_mm=margin, **air_params)
    return _refined(air, inner_mm, outer_mm, tophat_mm, pleura_mm, pleura_hu, ct)


def refined_mask(ct: Volume, **params) -> Volume:
    """The refined lung mask (paper §2.1): markers, watershed, pleural layer, black top-hat, filled holes.

    Parameters
    ----------
    ct : Volume
        CT in HU.
    **params
        ``inner_mm``, ``outer_mm``, ``tophat_mm``, ``pleura_mm``, ``pleura_hu`` (:func:`refined_steps`) and the
        parameters of :func:`lung_air`.

    Returns
    -------
    Volume
        uint8 on the CT's grid: 0, ``LUNG_RIGHT``, ``LUNG_LEFT``.
    """
    return refined_steps(ct, **params).volume()


def lung_masks(ct: Volume, **params) -> tuple[Volume, Volume, dict]:
    """Both masks from one pass of the common steps.

    Parameters
    ----------
    ct : Volume
        CT in HU.
    **params
        Any parameter of :func:`lung_air`, :func:`conservative_mask` and :func:`refined_steps`.

    Returns
    -------
    conservative, refined : Volume
    info : dict
        Diagnostics (:class:`LungAir` ``info``) with the time of each step.
    """
    check_ct(ct)
    air_params, cons_params, ref_params = _split_params(params)
    cons_params = {**CONSERVATIVE_DEFAULTS, **cons_params}
    ref_params = {**REFINED_DEFAULTS, **ref_params}
    for name, value in cons_params.items():
        _check_radius(name, value)
    _check_refined(**ref_params)
    margin = max(cons_params["closing_mm"], _refined_margin(ct.spacing, **ref_params))
    air = lung_air(ct, margin_mm=margin, **air_params)
    t0 = time.perf_counter()
    conservative = _full(ct, air.box, _conservative(air, **cons_params))
    cons_seconds = time.perf_counter() - t0
    steps = _refined(air, ct=ct, **ref_params)
    info = {**steps.info}
    info["seconds"] = {**steps.info["seconds"], "conservative": cons_seconds}
    return conservative, steps.volume(), info


def segmentation_params(**overrides) -> dict:
    """Every segmentation parameter with its value: the defaults updated by ``overrides``.

    A run keyed by this full dictionary changes key when a default changes.

    Raises
    ------
    TypeError
        An unknown parameter name.
    """
    _split_params(overrides)
    return {**AIR_DEFAULTS, **CONSERVATIVE_DEFAULTS, **REFINED_DEFAULTS, **overrides}


# ----------------------------------------------------------------------------------------------
# Scores
# ----------------------------------------------------------------------------------------------

#: Structures of the phantoms' sign truth scored by :func:`score_mask` (name -> truth values).
SIGN_STRUCTURES = {
    "cavity_wall": (SIGN_CODES["cavity"],),
    "cavity_lumen": (CAVITY_LUMEN,),
    "fungus_ball": (SIGN_CODES["fungus_ball"],),
    "pleural_thickening": (SIGN_CODES["pleural_thickening"],),
    "preexisting": (SIGN_CODES["preexisting"],),
}


def score_mask(
    mask: Volume,
    ct: Volume | None = None,
    truth_lungs: Volume | None = None,
    signs: Volume | None = None,
    lesions: Volume | None = None,
    threshold_hu: float = AIR_DEFAULTS["threshold_hu"],
) -> dict:
    """Score one lung mask with whatever reference there is.

    Parameters
    ----------
    mask : Volume
        A lung mask (0 / ``LUNG_RIGHT`` / ``LUNG_LEFT``).
    ct : Volume, optional
        Its CT: counts mask voxels in the air outside the body (:func:`outside_air`).
    truth_lungs : Volume, optional
        Reference lung mask with the same labels: Dice, all and per side.
    signs : Volume, optional
        Sign truth (:data:`SIGN_STRUCTURES`): share of each sign's voxels inside the mask.
    lesions : Volume, optional
        Lesion labels (> 0 is lesion; for LIDC the number of readers, so > 0 means at least one
        reader): share of lesion voxels inside the mask.
    threshold_hu : float
        Air threshold of the outside-the-body check.

    Returns
    -------
    dict
        Flat: ``lung_ml``, ``right_ml``, ``left_ml``, ``sides_ok`` (both lungs present, the right
        one at lower x), and where a reference is given ``outside_voxels``, ``dice``,
        ``dice_right``, ``dice_left``, ``share_<sign>`` (NaN for a sign absent from the scan),
        ``lesion_share``.
    """
    a = mask.array
    right, left = a == LUNG_RIGHT, a == LUNG_LEFT
    out = {
        "lung_ml": volume_ml(a != 0, mask.spacing),
        "right_ml": volume_ml(right, mask.spacing),
        "left_ml": volume_ml(left, mask.spacing),
    }
    out["sides_ok"] = bool(right.any() and left.any()
                           and np.nonzero(right)[2].mean() < np.nonzero(left)[2].mean())
    if ct is not None:
        out["outside_voxels"] = int(np.count_nonzero(a[outside_air(ct.array, threshold_hu)]))
    if truth_lungs is not None:
        out["dice"] = dice(a, truth_lungs.array)
        sides = per_label_dice(a, truth_lungs.array, {"right": LUNG_RIGHT, "left": LUNG_LEFT})
        out.update({f"dice_{k}": v for k, v in sides.items()})
    if signs is not None:
        shares = per_label_inside_share(signs.array, a, SIGN_STRUCTURES)
        out.update({f"share_{k}": v for k, v in shares.items()})
    if lesions is not None:
        out["lesion_share"] = inside_share(lesions.array, a)
    return out


# ----------------------------------------------------------------------------------------------
# Scores of many scans
# ----------------------------------------------------------------------------------------------


def slice_with_most(mask: np.ndarray, box: Box | None = None) -> int:
    """The axial slice (an index into ``mask[box]``) that holds the most voxels of ``mask``."""
    mask = np.asarray(mask)
    return int(np.argmax((mask[box] if box is not None else mask).sum(axis=(1, 2))))


def segment_case(ct: Volume, lesions: Volume | None = None, **params) -> dict:
    """Both masks of one scan, timed: ``ct``, ``lesions``, ``conservative``, ``refined``, ``info``
    (:func:`lung_masks`) and ``seconds`` (both masks)."""
    t0 = time.perf_counter()
    conservative, refined, info = lung_masks(ct, **params)
    return dict(ct=ct, lesions=lesions, conservative=conservative, refined=refined, info=info,
                seconds=time.perf_counter() - t0)


def real_case_scores(cases: dict[str, dict], threshold_hu: float = AIR_DEFAULTS["threshold_hu"],
                     no_labels="not measured") -> tuple[pd.DataFrame | None, dict]:
    """Score both masks of segmented real scans (:func:`segment_case`) with their lesion labels.

    Parameters
    ----------
    cases : dict
        Case name -> :func:`segment_case`'s dict.
    threshold_hu : float
        Air threshold of the outside-the-body check.
    no_labels
        What the lesion share of a case without lesion labels is.

    Returns
    -------
    table : pandas.DataFrame or None
        One row per (case, mask): lung volumes in litres, ``right and left``, voxels outside the
        body, lesion voxels kept, seconds; None without cases.
    numbers : dict
        Flat: ``real_<case>_<mask>_lung_l``, ``_sides_ok``, ``_outside_voxels``,
        ``_lesion_share`` and ``real_<case>_seconds`` (``-`` of the case name read as ``_``).
    """
    rows, numbers = [], {}
    for case, r in cases.items():
        for mask_name in ("conservative", "refined"):
            s = score_mask(r[mask_name], r["ct"], lesions=r["lesions"], threshold_hu=threshold_hu)
            rows.append({"case": case, "mask": mask_name, "lungs (L)": s["lung_ml"] / 1000,
                         "right (L)": s["right_ml"] / 1000, "left (L)": s["left_ml"] / 1000,
                         "right and left": s["sides_ok"], "voxels outside the body": s["outside_voxels"],
                         "lesion voxels kept": s.get("lesion_share", np.nan),
                         "seconds (both masks)": r["seconds"]})
            key = f"real_{case.replace('-', '_')}_{mask_name}"
            numbers.update({f"{key}_lung_l": s["lung_ml"] / 1000, f"{key}_sides_ok": s["sides_ok"],
                            f"{key}_outside_voxels": s["outside_voxels"],
                            f"{key}_lesion_share": float(s.get("lesion_share", np.nan)) if r["lesions"] is not None
                            else no_labels})
        numbers[f"real_{case.replace('-', '_')}_seconds"] = r["seconds"]
    return (pd.DataFrame(rows).set_index(["case", "mask"]) if rows else None), numbers


def cohort_score_summary(scores: pd.DataFrame) -> tuple[pd.DataFrame | None, dict]:
    """Aggregate the per-scan scores of both masks (rows of ``score_mask`` with ``scan_id`` and ``mask``).

    Returns
    -------
    table : pandas.DataFrame or None
        Per score (Dice, sign shares, lesion share) and mask: mean, min and count over the scans
        that have it; None when no scan has a reference to be scored against.
    numbers : dict
        ``cohort_<score>_<mask>_mean`` and ``_min`` of each score that some scan has,
        ``cohort_outside_voxels_max`` (mask voxels in the air outside the body, most in any scan)
        and ``cohort_sides_ok_share`` (share of masks with both lungs on their sides).
    """
    numbers, table = {}, None
    columns = [c for c in scores.columns if c.startswith(("dice", "share_", "lesion_share"))]
    if columns and scores[columns].notna().any().any():
        table = scores.groupby("mask")[columns].agg(["mean", "min", "count"]).T.unstack(level=1).dropna(how="all")
        for mask_name, group in scores.groupby("mask"):
            for column in columns:
                values = group[column].dropna()
                if len(values):
                    numbers[f"cohort_{column}_{mask_name}_mean"] = float(values.mean())
                    numbers[f"cohort_{column}_{mask_name}_min"] = float(values.min())
    numbers["cohort_outside_voxels_max"] = int(scores["outside_voxels"].max())
    numbers["cohort_sides_ok_share"] = float(scores["sides_ok"].mean())
    return table, numbers


def variant_comparison(scores: pd.DataFrame, variant: pd.DataFrame, key: str) -> tuple[pd.DataFrame, dict]:
    """Both masks' scores beside a variant's on the scans the variant was run on (an ablation).

    Parameters
    ----------
    scores : pandas.DataFrame
        Per-scan scores of both masks (``scan_id``, ``mask``, ``dice``, ``share_<sign>``).
    variant : pandas.DataFrame
        The same scores of a variant of the refined mask, one ``mask`` name.
    key : str
        The variant's name in the numbers.

    Returns
    -------
    table : pandas.DataFrame
        Per mask (in the order of ``scores``, then the variant): mean and min of the Dice and of
        the shares of pleural thickening, cavity wall and fungus ball.
    numbers : dict
        ``cohort_dice_<key>_mean``, ``_min``, ``cohort_share_pleural_thickening_<key>_mean``, ``_min``.
    """
    name = variant["mask"].iloc[0]
    compared = pd.concat([scores[scores["scan_id"].isin(variant["scan_id"])], variant])
    columns = ["dice", "share_pleural_thickening", "share_cavity_wall", "share_fungus_ball"]
    table = compared.groupby("mask", sort=False)[columns].agg(["mean", "min"])
    numbers = {f"cohort_{column}_{key}_{stat}": float(table.loc[name, (column, stat)])
               for column in ("dice", "share_pleural_thickening") for stat in ("mean", "min")}
    return table, numbers
