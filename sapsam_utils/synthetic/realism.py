"""How much a phantom looks like a real chest CT: lung volume, parenchyma HU, body size.

The same simple estimators are applied to phantoms and to real scans, so that their numbers
compare like with like (the phantoms' exact truth is used only to check the estimators):

* :func:`body_mask`: per axial slice, the largest connected region above -500 HU, holes filled
  (the couch and other separate objects drop out);
* :func:`lung_estimate`: air-like voxels (< -500 HU) inside the body of their slice, kept where
  they belong to the large 3-D air structures (lungs with trachea and main bronchi), which
  removes bowel gas and small pockets. It includes the trachea and main bronchi, and leaves out
  dense disease (consolidation, fungus balls), so it is an estimate, not a segmentation;
* :func:`parenchyma_values`: HU of the lung estimate with its in-slice holes (vessels, nodules)
  filled, one voxel in from its edge (no partial volume with the chest wall);
* :func:`body_size_mm`: the body's left-right width and front-back depth, median over the slices
  that contain lung.

The histogram distance is the Wasserstein-1 (earth mover's) distance between two HU samples,
in HU: how far, on average, one distribution's mass must move to become the other.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from scipy.stats import wasserstein_distance

from ..core.volume import Volume

#: Threshold between air-like and tissue-like voxels (HU).
AIR_THRESHOLD = -500
#: 3-D air structures smaller than this fraction of the largest one are not lung.
MIN_LUNG_FRACTION = 0.05


def body_mask(ct: Volume, threshold: float = AIR_THRESHOLD) -> np.ndarray:
    """Per axial slice, the largest connected region above ``threshold`` HU, holes filled."""
    out = np.zeros(ct.array.shape, bool)
    for k, plane in enumerate(ct.array):
        labels, n = ndi.label(plane > threshold)
        if n == 0:
            continue
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        out[k] = ndi.binary_fill_holes(labels == np.argmax(sizes))
    return out


def lung_estimate(ct: Volume, body: np.ndarray | None = None, threshold: float = AIR_THRESHOLD) -> np.ndarray:
    """A threshold estimate of the lungs (with trachea and main bronchi): see the module docstring."""
    body = body_mask(ct, threshold) if body is None else body
    air = (ct.array < threshold) & body
    labels, n = ndi.label(air)
    if n == 0:
        return air
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    keep = np.flatnonzero(sizes >= MIN_LUNG_FRACTION * sizes.max())
    return np.isin(labels, keep)


def parenchyma_values(ct: Volume, lungs: np.ndarray) -> np.ndarray:
    """HU of the lungs with their in-slice holes filled, one voxel in from the edge (int16)."""
    inner = np.zeros(lungs.shape, bool)
    for k, plane in enumerate(lungs):
        if plane.any():
            inner[k] = ndi.binary_erosion(ndi.binary_fill_holes(plane))
    return ct.array[inner]


def body_size_mm(ct: Volume, body: np.ndarray, lungs: np.ndarray) -> tuple[float, float]:
    """Median body width (left-right) and depth (front-back) in mm over the slices with lung."""
    widths, depths = [], []
    for k in np.flatnonzero(lungs.any(axis=(1, 2))):
        ys, xs = np.nonzero(body[k])
        if xs.size:
            widths.append((xs.max() - xs.min() + 1) * ct.spacing[2])
            depths.append((ys.max() - ys.min() + 1) * ct.spacing[1])
    if not widths:
        return float("nan"), float("nan")
    return float(np.median(widths)), float(np.median(depths))


def sample(values: np.ndarray, n: int, seed: int) -> np.ndarray:
    """At most ``n`` of ``values``, drawn without replacement with ``seed`` (all when fewer)."""
    if values.size <= n:
        return values
    return np.random.default_rng(seed).choice(values, size=n, replace=False)


def hu_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Wasserstein-1 distance (HU) between two samples of HU values."""
    return float(wasserstein_distance(np.asarray(a, float), np.asarray(b, float)))


def realism_measures(ct: Volume, max_values: int = 200_000, seed: int = 0) -> dict:
    """The measures of one scan, and a sample of its parenchyma HU for histogram distances.

    Parameters
    ----------
    ct : Volume
        CT in HU.
    max_values : int
        Largest parenchyma sample kept (random, with ``seed``), to keep distances fast.

    Returns
    -------
    dict
        ``lung_volume_l`` (threshold estimate, litres), ``body_width_mm``, ``body_depth_mm``,
        ``parenchyma_median_hu``, ``parenchyma_iqr_hu`` and ``values`` (the HU sample).
    """
    body = body_mask(ct)
    lungs = lung_estimate(ct, body)
    values = parenchyma_values(ct, lungs)
    width, depth = body_size_mm(ct, body, lungs)
    q1, median, q3 = np.percentile(values, [25, 50, 75]) if values.size else (np.nan,) * 3
    return {
        "lung_volume_l": float(lungs.sum() * ct.voxel_volume_ml / 1000.0),
        "body_width_mm": width,
        "body_depth_mm": depth,
        "parenchyma_median_hu": float(median),
        "parenchyma_iqr_hu": float(q3 - q1),
        "values": sample(values, max_values, seed),
    }


#: The columns of :func:`realism_table`'s table, after ``scan``.
REALISM_COLUMNS = ("kind", "lung_volume_l", "body_width_mm", "body_depth_mm", "parenchyma_median_hu",
                   "parenchyma_iqr_hu", "truth_lung_volume_l")


def realism_table(phantoms: Iterable[tuple[str, Volume, Volume | None]], reals: Iterable[tuple[str, Volume]] = (),
                  seed: int = 0) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """:func:`realism_measures` of phantoms and real scans, side by side.

    Parameters
    ----------
    phantoms : iterable of (scan_id, CT, lung truth or None)
        Measured one by one (a generator keeps one scan in memory at a time); the lung truth
        checks the lung estimate.
    reals : iterable of (scan_id, CT)
    seed : int
        Seed of each scan's parenchyma sample.

    Returns
    -------
    table : pandas.DataFrame
        Index ``scan``; :data:`REALISM_COLUMNS` (``kind`` is ``phantom`` or ``real``;
        ``truth_lung_volume_l`` NaN without truth) and, when there are real scans,
        ``w1_to_real_mean_hu``: each scan's mean Wasserstein-1 distance to the real scans other
        than itself.
    values : dict
        Scan id -> its parenchyma HU sample.
    """
    rows, values = [], {}
    for kind, scans in (("phantom", phantoms), ("real", ((s, ct, None) for s, ct in reals))):
        for scan_id, ct, truth in scans:
            m = realism_measures(ct, seed=seed)
            values[scan_id] = m.pop("values")
            truth_l = float((truth.array > 0).sum() * truth.voxel_volume_ml / 1000) if truth is not None else np.nan
            rows.append({"scan": scan_id, "kind": kind, **m, "truth_lung_volume_l": truth_l})
    table = pd.DataFrame(rows, columns=["scan", *REALISM_COLUMNS]).set_index("scan")
    real_ids = list(table.index[table["kind"] == "real"])
    if real_ids:
        table["w1_to_real_mean_hu"] = [
            np.mean([hu_distance(values[s], values[r]) for r in real_ids if r != s]) for s in table.index
        ]
    return table, values


def realism_summary(table: pd.DataFrame, values: dict[str, np.ndarray]) -> dict[str, float]:
    """The means of :func:`realism_table` over phantoms and over real scans, and the histogram
    distances: ``realism_phantoms`` (count), ``realism_<phantom|real>_<measure>_mean``,
    ``realism_phantom_truth_lung_volume_l_mean``, ``realism_w1_phantom_to_real_hu_mean`` (the
    phantoms' mean distance to the real scans) and ``realism_w1_real_to_real_hu_mean`` (the mean
    over pairs of real scans). Empty without phantoms or without real scans."""
    phantoms, reals = table[table["kind"] == "phantom"], table[table["kind"] == "real"]
    if phantoms.empty or reals.empty:
        return {}
    real_ids = list(reals.index)
    pairs = [hu_distance(values[a], values[b]) for i, a in enumerate(real_ids) for b in real_ids[i + 1:]]
    numbers: dict[str, float] = {"realism_phantoms": len(phantoms),
                                 "realism_phantom_lung_volume_l_mean": float(phantoms["lung_volume_l"].mean()),
                                 "realism_phantom_truth_lung_volume_l_mean": float(phantoms["truth_lung_volume_l"].mean()),
                                 "realism_real_lung_volume_l_mean": float(reals["lung_volume_l"].mean())}
    for measure in ("body_width_mm", "body_depth_mm", "parenchyma_median_hu", "parenchyma_iqr_hu"):
        numbers[f"realism_phantom_{measure}_mean"] = float(phantoms[measure].mean())
        numbers[f"realism_real_{measure}_mean"] = float(reals[measure].mean())
    numbers["realism_w1_phantom_to_real_hu_mean"] = float(phantoms["w1_to_real_mean_hu"].mean())
    numbers["realism_w1_real_to_real_hu_mean"] = float(np.mean(pairs))
    return numbers
