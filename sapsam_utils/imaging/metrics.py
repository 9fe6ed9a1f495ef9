"""Overlap scores between masks and label volumes: Dice, and the share of a structure inside a mask.

Used to score the lung masks against the phantoms' truth and the real cases' lesion labels
(chapter 2), and the Grad-CAM localisation maps against the signs' truth (chapter 6). Every
function takes plain arrays or :class:`~sapsam_utils.core.volume.Volume` objects (on one grid) and
treats any non-zero value as "in" unless labels are given.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np

from ..core.volume import Volume


def _array(x) -> np.ndarray:
    return x.array if isinstance(x, Volume) else np.asarray(x)


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a_arr, b_arr = _array(a), _array(b)
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"cannot compare arrays of shapes {a_arr.shape} and {b_arr.shape}")
    if isinstance(a, Volume) and isinstance(b, Volume) and not np.allclose(a.spacing, b.spacing):
        raise ValueError(f"volumes on different grids: spacing {a.spacing} vs {b.spacing}")
    return a_arr, b_arr


def _codes(value: int | Iterable[int]) -> list[int]:
    return [int(value)] if np.isscalar(value) else [int(v) for v in value]


def dice(a, b) -> float:
    """Dice coefficient ``2 |A ∩ B| / (|A| + |B|)`` of the non-zero voxels of two masks.

    Parameters
    ----------
    a, b : numpy.ndarray or Volume
        Masks of one shape; any non-zero value counts as in.

    Returns
    -------
    float
        In [0, 1]; 1.0 when both masks are empty (they agree that there is nothing).
    """
    a_arr, b_arr = _pair(a, b)
    a_in, b_in = a_arr != 0, b_arr != 0
    total = int(a_in.sum()) + int(b_in.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(a_in, b_in).sum()) / total


def inside_share(structure, mask) -> float:
    """Share of a structure's voxels that lie inside a mask (recall of the structure).

    Parameters
    ----------
    structure : numpy.ndarray or Volume
        The structure (e.g. a sign's truth, a lesion label); any non-zero value counts.
    mask : numpy.ndarray or Volume
        The mask (e.g. a lung mask); any non-zero value counts.

    Returns
    -------
    float
        In [0, 1]; NaN when the structure is empty (there is nothing to keep).
    """
    s_arr, m_arr = _pair(structure, mask)
    s_in = s_arr != 0
    n = int(s_in.sum())
    if n == 0:
        return float("nan")
    return int(np.count_nonzero(m_arr[s_in])) / n


def per_label_dice(pred, truth, labels: Mapping[str, int | Iterable[int]]) -> dict[str, float]:
    """Dice per named label between two label volumes (e.g. right and left lung).

    Parameters
    ----------
    pred, truth : numpy.ndarray or Volume
        Label volumes of one shape.
    labels : Mapping[str, int or iterable of int]
        Name -> the label value(s) that make up that structure in both volumes.

    Returns
    -------
    dict
        Name -> Dice (1.0 when the label is absent from both).
    """
    p_arr, t_arr = _pair(pred, truth)
    return {name: dice(np.isin(p_arr, _codes(v)), np.isin(t_arr, _codes(v))) for name, v in labels.items()}


def per_label_inside_share(truth, mask, labels: Mapping[str, int | Iterable[int]]) -> dict[str, float]:
    """Share of each named structure of a label volume that lies inside a mask.

    Parameters
    ----------
    truth : numpy.ndarray or Volume
        Label volume (e.g. the phantom's sign truth with :data:`~sapsam_utils.core.regions.SIGN_CODES`).
    mask : numpy.ndarray or Volume
        Mask of the same shape; any non-zero value counts.
    labels : Mapping[str, int or iterable of int]
        Name -> the value(s) of ``truth`` that make up that structure.

    Returns
    -------
    dict
        Name -> share in [0, 1]; NaN for a structure absent from ``truth``.
    """
    t_arr, m_arr = _pair(truth, mask)
    return {name: inside_share(np.isin(t_arr, _codes(v)), m_arr) for name, v in labels.items()}


def volume_ml(mask, spacing: tuple[float, float, float] | None = None) -> float:
    """Volume of the non-zero voxels of a mask in millilitres.

    Parameters
    ----------
    mask : numpy.ndarray or Volume
        The mask.
    spacing : tuple of float, optional
        Voxel size in mm; taken from the Volume when omitted.
    """
    if spacing is None:
        if not isinstance(mask, Volume):
            raise TypeError("volume_ml needs the spacing of a plain array")
        spacing = mask.spacing
    return float(np.count_nonzero(_array(mask))) * float(np.prod(spacing)) / 1000.0
