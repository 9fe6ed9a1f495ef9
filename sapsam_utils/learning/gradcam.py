"""Grad-CAM maps of the classifiers, their localisation scores, a sanity check, and 3-D maps.

Grad-CAM (the paper's equation 1)
    For class ``c`` with score ``y_c`` (the ``logits`` layer: the class score *before* the
    softmax) and the maps ``A_k`` (``k = 1..K``, each ``h x w``) of a convolutional layer (by
    default the model's last one, :data:`~sapsam_utils.learning.models.LAST_CONV_LAYER`, after its ReLU)::

        alpha_k = mean over (i, j) of d y_c / d A_k[i, j]
        map     = ReLU(sum_k alpha_k A_k)                       (h x w, on the layer's grid)

    The model is split at the layer into two sub-models sharing its weights, ``images -> A`` and
    ``A -> y``, and the second is differentiated with respect to its input ``A``: the same code
    path on every Keras backend (TensorFlow ``GradientTape``, JAX ``grad`` of ``stateless_call``,
    PyTorch ``autograd``). Each image's score depends only on its own maps, so the gradient of
    ``sum_n y_c[n]`` with respect to the batch's maps gives every image its own gradient: a whole
    batch is one backward pass, and each image gets the map it would get alone (public tools that
    differentiate ``y_c[0]`` give a map to the first image only). :func:`upsample` brings the
    maps to the projection image's pixels (bilinear).

Localisation scores, one value per image (``truth > 0`` is the sign's projected footprint)
    * :func:`pointing_game`: 1 when the map's maximum lies on the truth. Ties: **every** pixel
      equal to the maximum must lie on the truth. A constant map (an all-zero map included) has
      no peak and is a miss (0).
    * :func:`energy_pointing`: share of the map's mass on the truth; an all-zero map scores 0.
    * :func:`truth_share`: the truth's share of the image area: what a uniform map scores on the
      energy game, and the chance level of the pointing game.
    * :func:`iou`: intersection over union of ``normalised map >= t`` with the truth, for a few
      thresholds ``t`` in (0, 1]; an all-zero map scores 0.

    An **empty truth** (a sign with no footprint in this image) gives NaN in every score: the
    image is left out of the averages (use ``np.nanmean``), never counted as a hit. The
    best-known public implementation of the pointing game scores both an empty truth and an
    all-zero map as hits, which inflates the score of a network that says nothing; we do not.
    An all-zero map (the ReLU removed everything: no evidence *for* the class) is reported by
    :func:`empty_maps` and :func:`normalise` leaves it at zero rather than stretching round-off
    noise to [0, 1].

Sanity check (Adebayo et al. 2018)
    :func:`cascading_randomisation` re-initialises the layers from the top (``logits``) down,
    cumulatively, in a copy of the model; maps that barely change (high
    :func:`rank_correlation` with the trained model's) do not depend on what the model learnt.

3-D maps (the paper's future work)
    A sub-region image is the projection of one block of the study grid along one axis, so a
    map on its pixels is spread back evenly along that axis into the block
    (:func:`back_project`; coronal and sagittal images show ``z`` reversed, which is undone).
    The three axes' volumes are combined by a geometric mean (:func:`combine_maps`): a voxel
    keeps a high value only when all three views point at it, and is zero when any view gives
    zero. The grid is then mapped back to the scan's own voxels (:func:`grid_to_scan`):

    1. the 3-D rotation of the images (:mod:`sapsam_utils.imaging.augment`) is undone: the rotated grid's
       voxel ``p`` copies the unrotated grid's voxel ``R.T (p - c) + c`` (``c`` the grid centre),
       so the unrotated voxel ``q`` reads the rotated grid at ``R (q - c) + c``;
    2. the lung box's resampling (:func:`~sapsam_utils.imaging.projections.resample_box`) is undone: grid
       voxel ``i`` along an axis has its centre at source voxel ``start - 0.5 + (i + 0.5) s``
       (``s`` = box length / grid length), so source voxel ``j`` lies at grid coordinate
       ``(j - start + 0.5) / s - 0.5``.

    Both maps are composed and sampled once (trilinear) for every voxel of the lung box; voxels
    outside the box, or whose position falls off the rotated grid, are 0.
    :func:`distance_to_truth_mm` scores the 3-D map against a lesion mask, and :func:`save_nifti`
    writes it on the scan's geometry.

Helpers of the Grad-CAM chapter
    :func:`layer_grid` (the map's grid at a layer), :func:`localisation_scores` (every 2-D score
    of a batch as a table), :func:`randomisation_curve` (the sanity check, step by step),
    :func:`mean_activation` and :func:`activation_rank_correlation` (the layer's mean activation,
    which knows no class, and how much a map ranks its pixels like it),
    :func:`scan_map_3d` (a sub-region's 3-D map on the scan's voxels), :func:`sign_voxels` and
    :func:`chance_distance_mm` (the mean distance of a random lung voxel to the truth: the 3-D
    distance's chance level).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from scipy import ndimage, stats
from skimage.transform import resize

from ..imaging import augment
from ..core.results import Estimate
from .evaluation import mean_ci
from .models import LAST_CONV_LAYER
from ..core.regions import CAVITY_LUMEN, REGIONS, SIGN_CODES, Box, region_slices
from ..core.volume import Volume, write_volume

#: Default thresholds of :func:`iou` (on maps normalised to a maximum of 1).
IOU_THRESHOLDS = (0.2, 0.4, 0.6, 0.8)
#: Projection axis name -> array axis of ``(z, y, x)`` (as in :mod:`sapsam_utils.imaging.projections`).
AXES = {"axial": 0, "coronal": 1, "sagittal": 2}


# ---------------------------------------------------------------------------------------------
# Grad-CAM


def last_conv_layer(model: keras.Model) -> str:
    """Name of the layer Grad-CAM weighs by default.

    The study's classifiers (named ``sapsam_<architecture>``) use
    :data:`~sapsam_utils.learning.models.LAST_CONV_LAYER`; any other model its last ``Conv2D`` layer.
    """
    architecture = model.name.removeprefix("sapsam_")
    if model.name.startswith("sapsam_") and architecture in LAST_CONV_LAYER:
        return LAST_CONV_LAYER[architecture]
    convs = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    if not convs:
        raise ValueError(f"model {model.name!r} has no Conv2D layer; pass layer=...")
    return convs[-1]


def split_model(model: keras.Model, layer: str | None = None, score_layer: str = "logits"):
    """The two sub-models ``images -> A`` and ``A -> scores`` (sharing ``model``'s weights).

    Parameters
    ----------
    model : keras.Model
        A functional model.
    layer : str, optional
        The layer whose maps ``A`` are weighed (default :func:`last_conv_layer`).
    score_layer : str
        The layer giving the class scores ``y`` (before the softmax).

    Returns
    -------
    tuple of keras.Model
        ``(features, head)``.
    """
    layer = last_conv_layer(model) if layer is None else getattr(layer, "name", layer)
    maps, scores = model.get_layer(layer).output, model.get_layer(score_layer).output
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    try:
        head = keras.Model(maps, scores, name=f"{model.name}_head")
    except Exception as exc:  # a graph where the scores also depend on tensors below the layer
        raise ValueError(
            f"the scores {score_layer!r} of {model.name!r} cannot be computed from {layer!r} alone "
            f"(a skip connection around it?): {exc}"
        ) from exc
    return keras.Model(inputs, maps, name=f"{model.name}_features"), head


def _score_gradient(head: keras.Model, class_index: int):
    """A function ``A (numpy) -> d (sum_n y_c[n]) / d A (numpy)`` for the current backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        def gradient(maps):
            a = tf.convert_to_tensor(maps)
            with tf.GradientTape() as tape:
                tape.watch(a)
                total = tf.reduce_sum(head(a, training=False)[:, class_index])
            return tape.gradient(total, a).numpy()

        return gradient
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        def total_score(trainable, non_trainable, a):
            y, _ = head.stateless_call(trainable, non_trainable, a, training=False)
            return jnp.sum(y[:, class_index])

        grad = jax.jit(jax.grad(total_score, argnums=2))
        trainable = [v.value for v in head.trainable_variables]
        non_trainable = [v.value for v in head.non_trainable_variables]
        return lambda maps: np.asarray(grad(trainable, non_trainable, jnp.asarray(maps)))
    if backend == "torch":
        import torch

        def gradient(maps):
            a = keras.ops.convert_to_tensor(maps).detach().requires_grad_(True)  # on Keras' device
            with torch.enable_grad():
                total = head(a, training=False)[:, class_index].sum()
                (g,) = torch.autograd.grad(total, a)
            return g.detach().cpu().numpy()

        return gradient
    raise NotImplementedError(f"Grad-CAM has no gradient step for the Keras backend {backend!r} "
                              "(supported: tensorflow, jax, torch)")


def gradcam(
    model: keras.Model,
    images: np.ndarray,
    class_index: int = 1,
    layer: str | None = None,
    score_layer: str = "logits",
    batch_size: int = 32,
) -> np.ndarray:
    """Grad-CAM maps of a batch of images (module docstring, equation 1).

    Parameters
    ----------
    model : keras.Model
        A classifier (:func:`~sapsam_utils.learning.models.build_classifier`) or any functional model
        with a score layer after the maps' layer.
    images : numpy.ndarray
        ``(N, H, W, C)`` images as the model takes them (float32 in [0, 1]).
    class_index : int
        The class ``c`` whose score ``y_c`` is explained (1: the sign is present).
    layer : str, optional
        The convolutional layer whose maps are weighed (default :func:`last_conv_layer`).
    score_layer : str
        The layer of class scores before the softmax.
    batch_size : int
        Images per forward and backward pass.

    Returns
    -------
    numpy.ndarray of float32, shape ``(N, h, w)``
        Maps on the layer's grid, >= 0. Each image's map equals the one it gets alone.
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4:
        raise ValueError(f"expected images (N, H, W, C), got shape {images.shape}")
    features, head = split_model(model, layer, score_layer)
    n_classes = head.outputs[0].shape[-1]
    if not 0 <= class_index < n_classes:
        raise ValueError(f"class_index {class_index} out of range for {n_classes} classes")
    gradient = _score_gradient(head, class_index)
    channels_first = keras.config.image_data_format() == "channels_first"
    out = []
    for start in range(0, len(images), max(1, int(batch_size))):
        maps = keras.ops.convert_to_numpy(features(images[start : start + batch_size], training=False))
        grads = gradient(maps)
        if channels_first:
            maps, grads = np.moveaxis(maps, 1, -1), np.moveaxis(grads, 1, -1)
        alpha = grads.mean(axis=(1, 2))  # (n, K)
        out.append(np.maximum(np.einsum("nhwk,nk->nhw", maps, alpha), 0.0))
    if not out:
        return np.zeros((0, *features.outputs[0].shape[1:3]), dtype=np.float32)
    return np.concatenate(out).astype(np.float32)


def _as_batch(maps: np.ndarray) -> np.ndarray:
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim == 2:
        maps = maps[None]
    if maps.ndim != 3:
        raise ValueError(f"expected maps (N, H, W), got shape {maps.shape}")
    return maps


def upsample(maps: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of ``(N, h, w)`` maps to the image's ``(H, W)`` (pixel centres aligned).

    Returns ``(N, H, W)`` float32, >= 0 (a linear interpolation of non-negative values).
    """
    maps = _as_batch(maps)
    out = np.stack([resize(m, tuple(shape), order=1, mode="edge", anti_aliasing=False, preserve_range=True)
                    for m in maps]) if len(maps) else np.zeros((0, *shape))
    return np.maximum(out, 0.0).astype(np.float32)


def empty_maps(maps: np.ndarray, tol: float = 0.0) -> np.ndarray:
    """Boolean per map: all values within ``tol`` of zero (the ReLU removed everything)."""
    return np.abs(_as_batch(maps)).max(axis=(1, 2), initial=0.0) <= tol


def normalise(maps: np.ndarray) -> np.ndarray:
    """Each map divided by its maximum; maps whose maximum is not > 0 are returned as zeros."""
    maps = np.maximum(_as_batch(maps), 0.0)
    peak = maps.max(axis=(1, 2), keepdims=True, initial=0.0)
    return np.divide(maps, peak, out=np.zeros_like(maps), where=peak > 0).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Localisation scores


def _pair(maps: np.ndarray, truths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    maps, truths = _as_batch(maps), _as_batch(truths) > 0
    if maps.shape != truths.shape:
        raise ValueError(f"maps {maps.shape} and truths {truths.shape} differ: upsample the maps first")
    return maps, truths


def pointing_game(maps: np.ndarray, truths: np.ndarray) -> np.ndarray:
    """Per image: 1.0 when every pixel at the map's maximum lies on the truth, else 0.0.

    A constant map (an all-zero one included) is a miss; an empty truth gives NaN.
    """
    maps, truths = _pair(maps, truths)
    out = np.full(len(maps), np.nan)
    for n, (m, t) in enumerate(zip(maps, truths)):
        if t.any():
            peak = m == m.max()
            out[n] = float(not peak.all() and t[peak].all())
    return out


def energy_pointing(maps: np.ndarray, truths: np.ndarray) -> np.ndarray:
    """Per image: share of the map's positive mass on the truth (0 for an all-zero map, NaN for an empty truth)."""
    maps, truths = _pair(maps, truths)
    mass = np.maximum(maps, 0.0)
    total = mass.sum(axis=(1, 2))
    share = np.divide((mass * truths).sum(axis=(1, 2)), total, out=np.zeros(len(maps)), where=total > 0)
    return np.where(truths.any(axis=(1, 2)), share, np.nan)


def truth_share(truths: np.ndarray) -> np.ndarray:
    """Per image: the truth's share of the area (NaN for an empty truth, as in the scores)."""
    truths = _as_batch(truths) > 0
    share = truths.mean(axis=(1, 2))
    return np.where(share > 0, share, np.nan)


def iou(maps: np.ndarray, truths: np.ndarray, thresholds: Sequence[float] = IOU_THRESHOLDS) -> np.ndarray:
    """IoU of ``normalise(map) >= t`` with the truth, ``(N, T)``; NaN for an empty truth.

    Thresholds must lie in (0, 1], so an all-zero map selects nothing and scores 0.
    """
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if thresholds.ndim != 1 or np.any(thresholds <= 0) or np.any(thresholds > 1):
        raise ValueError(f"thresholds {thresholds.tolist()} must lie in (0, 1]")
    maps, truths = _pair(maps, truths)
    selected = normalise(maps)[:, None] >= thresholds[None, :, None, None].astype(np.float32)
    inter = (selected & truths[:, None]).sum(axis=(2, 3))
    union = (selected | truths[:, None]).sum(axis=(2, 3))
    out = inter / np.maximum(union, 1)
    out[~truths.any(axis=(1, 2))] = np.nan
    return out


# ---------------------------------------------------------------------------------------------
# Sanity check: cascading model-parameter randomisation


def _reinitialised(layer, rng: np.random.Generator, seed: int) -> list[np.ndarray]:
    """New values for ``layer``'s weights: its own initializers (reseeded), else Gaussian of the same std."""
    out = []
    for w in layer.weights:
        kind = w.path.split("/")[-1]  # "kernel", "bias", ...
        init = getattr(layer, f"{kind}_initializer", None)
        if init is not None:
            config = keras.initializers.serialize(init)
            if "seed" in config.get("config", {}):
                config["config"]["seed"] = seed
            value = keras.initializers.deserialize(config)(tuple(w.shape), dtype=w.dtype)
            out.append(keras.ops.convert_to_numpy(value))
        else:
            old = keras.ops.convert_to_numpy(w.value)
            out.append(rng.normal(0.0, float(old.std()), old.shape).astype(old.dtype))
    return out


def cascading_randomisation(
    model: keras.Model, seed: int = 0, layers: Sequence[str] | None = None
) -> Iterator[tuple[str, keras.Model]]:
    """Re-initialise a copy of ``model`` one more layer at a time, from the top down.

    Parameters
    ----------
    model : keras.Model
        The trained model; it is left untouched.
    seed : int
        Seeds the new weights (layer ``i`` of the cascade uses ``seed + i``).
    layers : sequence of str, optional
        The layers to randomise, in order. Default: every layer with a kernel (dense and
        convolutional), from the output down: ``logits``, ``fc2``, ``fc1``, then the backbone's
        convolutions from the last block down.

    Yields
    ------
    tuple
        ``(layer_name, randomised_model)``: the copy with this layer and every one before it
        re-initialised (weights from the layer's own initializers, reseeded). The **same** copy
        is modified at each step: compute what you need from it before asking for the next.
    """
    if layers is None:
        layers = [layer.name for layer in reversed(model.layers)
                  if any(w.path.split("/")[-1] == "kernel" for w in layer.weights)]
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    rng = np.random.default_rng(seed)
    for i, name in enumerate(layers):
        target = copy.get_layer(name)
        target.set_weights(_reinitialised(target, rng, seed + i))
        yield name, copy


def rank_correlation(maps_a: np.ndarray, maps_b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation of each pair of maps (flattened); NaN when either map is constant."""
    maps_a, maps_b = _as_batch(maps_a), _as_batch(maps_b)
    if maps_a.shape != maps_b.shape:
        raise ValueError(f"maps {maps_a.shape} and {maps_b.shape} differ in shape")
    out = np.full(len(maps_a), np.nan)
    for n, (a, b) in enumerate(zip(maps_a, maps_b)):
        if np.ptp(a) > 0 and np.ptp(b) > 0:
            out[n] = stats.spearmanr(a.ravel(), b.ravel()).statistic
    return out


# ---------------------------------------------------------------------------------------------
# 3-D maps


def _axis(axis: str | int) -> int:
    if isinstance(axis, str):
        if axis not in AXES:
            raise ValueError(f"axis {axis!r}: use one of {tuple(AXES)} or 0, 1, 2")
        return AXES[axis]
    if axis not in (0, 1, 2):
        raise ValueError(f"axis {axis!r}: use one of {tuple(AXES)} or 0, 1, 2")
    return int(axis)


def back_project(map2d: np.ndarray, axis: str | int, grid_shape: tuple[int, int, int],
                 region: str | None = None) -> np.ndarray:
    """Spread a 2-D map evenly back along its projection axis into a sub-region's block.

    Parameters
    ----------
    map2d : numpy.ndarray
        ``(H, W)`` map on the pixels of the sub-region image (display orientation of
        :mod:`sapsam_utils.imaging.projections`: coronal and sagittal rows run from high ``z`` to low).
    axis : {"axial", "coronal", "sagittal"} or int
        The image's projection axis (0, 1, 2 = ``z``, ``y``, ``x``).
    grid_shape : tuple of int
        The study grid ``(nz, ny, nx)``.
    region : str, optional
        One of :data:`~sapsam_utils.core.regions.REGIONS`; None for a whole-scan image (the whole grid).

    Returns
    -------
    numpy.ndarray of float32, shape ``grid_shape``
        The map repeated along the axis inside the block, 0 elsewhere.
    """
    a = _axis(axis)
    if region is None:
        block = tuple(slice(0, n) for n in grid_shape)
    elif region in REGIONS:
        block = region_slices(tuple(grid_shape))[region]
    else:
        raise ValueError(f"region {region!r}: use one of {REGIONS} or None")
    block_shape = [s.stop - s.start for s in block]
    image_shape = tuple(n for k, n in enumerate(block_shape) if k != a)
    map2d = np.asarray(map2d, dtype=np.float32)
    if map2d.shape != image_shape:
        raise ValueError(f"map {map2d.shape} is not on the {region or 'whole-scan'} image's pixels "
                         f"{image_shape} (upsample it first)")
    if a != 0:
        map2d = map2d[::-1]  # display rows run from high z to low
    out = np.zeros(tuple(grid_shape), dtype=np.float32)
    out[block] = np.broadcast_to(np.expand_dims(map2d, a), block_shape)
    return out


def combine_maps(volumes: Sequence[np.ndarray], mask: np.ndarray | None = None) -> np.ndarray:
    """Geometric mean ``(prod_i v_i) ** (1 / n)`` of back-projected maps, 0 where any is 0.

    Parameters
    ----------
    volumes : sequence of numpy.ndarray
        Volumes of one shape, values >= 0 (negative values count as 0).
    mask : numpy.ndarray, optional
        Keep only voxels where ``mask > 0`` (e.g. the refined lung mask on the same grid).
    """
    stack = np.maximum(np.stack([np.asarray(v, dtype=np.float64) for v in volumes]), 0.0)
    positive = (stack > 0).all(axis=0)
    if mask is not None:
        if np.shape(mask) != positive.shape:
            raise ValueError(f"mask {np.shape(mask)} differs from the maps {positive.shape}")
        positive &= np.asarray(mask) > 0
    logs = np.log(stack, out=np.zeros_like(stack), where=stack > 0).mean(axis=0)
    return np.where(positive, np.exp(logs), 0.0).astype(np.float32)


def region_map_3d(maps2d: dict[str, np.ndarray], grid_shape: tuple[int, int, int],
                  region: str | None = None, mask: np.ndarray | None = None) -> np.ndarray:
    """:func:`back_project` each axis's map (``{"axial": ..., ...}``) and :func:`combine_maps` them."""
    return combine_maps([back_project(m, axis, grid_shape, region) for axis, m in maps2d.items()], mask)


def grid_to_scan(volume_on_grid: np.ndarray, box: Box, scan_shape: tuple[int, int, int],
                 angles_deg: tuple[float, float, float] = (0.0, 0.0, 0.0), order: int = 1,
                 slab_voxels: int = 1 << 21) -> np.ndarray:
    """Bring a volume on the (rotated) study grid back onto the scan's own voxels.

    Parameters
    ----------
    volume_on_grid : numpy.ndarray
        A volume on the grid of the images it was made from: the lung box resampled by
        :func:`~sapsam_utils.imaging.projections.to_grid`, then rotated by ``angles_deg``.
    box : tuple of slice
        The lung box in the scan's voxels (``GridScan.box``).
    scan_shape : tuple of int
        Shape of the scan.
    angles_deg : tuple of float
        The rotation ``(a_z, a_y, a_x)`` of the images (:mod:`sapsam_utils.imaging.augment` convention).
    order : int
        Interpolation order (1: trilinear; 0: nearest).
    slab_voxels : int
        Output voxels sampled at once (bounds the memory of the coordinate arrays).

    Returns
    -------
    numpy.ndarray of float32, shape ``scan_shape``
        0 outside the box and where the position falls off the rotated grid.
    """
    grid = np.asarray(volume_on_grid, dtype=np.float32)
    box = tuple(slice(*s.indices(n)[:2]) for s, n in zip(box, scan_shape))
    lengths = np.array([s.stop - s.start for s in box])
    scale = lengths / np.array(grid.shape)  # box voxels per grid voxel
    centre = (np.array(grid.shape) - 1) / 2.0
    matrix = augment.rotation_matrix(angles_deg) @ np.diag(1.0 / scale)
    # box voxel jj -> unrotated grid q = jj / s + (0.5 / s - 0.5) -> rotated grid R (q - c) + c
    offset = augment.rotation_matrix(angles_deg) @ (0.5 / scale - 0.5 - centre) + centre
    out = np.zeros(tuple(scan_shape), dtype=np.float32)
    ny, nx = lengths[1], lengths[2]
    jy, jx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    depth = max(1, int(slab_voxels) // max(1, ny * nx))
    for z0 in range(0, lengths[0], depth):
        jz = np.arange(z0, min(z0 + depth, lengths[0]), dtype=np.float64)[:, None, None]
        index = (jz, jy[None].astype(np.float64), jx[None].astype(np.float64))
        coords = [sum(matrix[k, m] * index[m] for m in range(3)) + offset[k] for k in range(3)]
        coords = [np.broadcast_to(c, (len(jz), ny, nx)) for c in coords]
        inside = np.ones(coords[0].shape, dtype=bool)
        for c, n in zip(coords, grid.shape):
            inside &= (c >= -0.5) & (c <= n - 0.5)  # within the grid's voxels (as the gather rounds)
        values = ndimage.map_coordinates(grid, np.stack(coords), order=order, mode="nearest")
        out[box[0].start + z0 : box[0].start + z0 + len(jz), box[1], box[2]] = np.where(inside, values, 0.0)
    return out


def save_nifti(volume: np.ndarray, path: str | os.PathLike, spacing: tuple[float, float, float],
               origin: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> Path:
    """Write a 3-D map (float32) on a scan's geometry, via :func:`~sapsam_utils.core.volume.write_volume`.

    ``spacing`` is ``(z, y, x)`` in mm and ``origin`` in ITK ``(x, y, z)`` order, as a
    :class:`~sapsam_utils.core.volume.Volume` holds them: pass the CT's, and the map overlays the CT.
    """
    return write_volume(Volume(np.asarray(volume, dtype=np.float32), tuple(spacing), tuple(origin)), path)


def distance_to_truth_mm(map3d: np.ndarray, truth_mask: np.ndarray, spacing: tuple[float, float, float]) -> float:
    """Distance (mm) from the map's maximum to the nearest truth voxel.

    When several voxels share the maximum, the farthest of them counts (0 only when every
    maximum lies on the truth, as in :func:`pointing_game`). NaN for an empty truth or an
    all-zero map.
    """
    map3d, truth = np.asarray(map3d), np.asarray(truth_mask) > 0
    if map3d.shape != truth.shape:
        raise ValueError(f"map {map3d.shape} and truth {truth.shape} differ in shape")
    if not truth.any() or not (map3d > 0).any():
        return float("nan")
    peaks = np.argwhere(map3d == map3d.max())
    points = np.vstack([peaks, np.argwhere(truth)])
    lo, hi = points.min(axis=0), points.max(axis=0) + 1  # every truth voxel and peak lie inside
    crop = tuple(slice(a, b) for a, b in zip(lo, hi))
    distance = ndimage.distance_transform_edt(~truth[crop], sampling=tuple(float(s) for s in spacing))
    return float(distance[tuple((peaks - lo).T)].max())


# ---------------------------------------------------------------------------------------------
# Helpers of the Grad-CAM chapter


def layer_grid(model: keras.Model, layer: str | None = None) -> tuple[int, int]:
    """``(h, w)`` of the maps of ``layer`` (default :func:`last_conv_layer`): the Grad-CAM grid."""
    layer = last_conv_layer(model) if layer is None else layer
    shape = model.get_layer(layer).output.shape
    return tuple(int(n) for n in (shape[2:4] if keras.config.image_data_format() == "channels_first" else shape[1:3]))


def localisation_scores(maps: np.ndarray, truths: np.ndarray,
                        thresholds: Sequence[float] = IOU_THRESHOLDS) -> pd.DataFrame:
    """Every localisation score of each (map, truth) pair, one row per image.

    Columns ``pointing_game``, ``energy``, ``truth_share`` (the uniform map's energy and the
    pointing game's chance level), ``iou_<t>`` per threshold (e.g. ``iou_0.4``), and
    ``empty_map`` (bool). Scores follow the conventions of :func:`pointing_game` & co.: NaN
    for an empty truth, a miss (0) for an all-zero map.
    """
    maps, truths = _pair(maps, truths)
    table = pd.DataFrame({"pointing_game": pointing_game(maps, truths), "energy": energy_pointing(maps, truths),
                          "truth_share": truth_share(truths)})
    overlap = iou(maps, truths, thresholds)
    for k, t in enumerate(thresholds):
        table[f"iou_{float(t):g}"] = overlap[:, k]
    table["empty_map"] = empty_maps(maps)
    return table


def randomisation_curve(model: keras.Model, images: np.ndarray, layer: str | None = None, seed: int = 0,
                        layers: Sequence[str] | None = None, class_index: int = 1,
                        batch_size: int = 32) -> pd.DataFrame:
    """The cascading-randomisation check: how much the maps keep after each step.

    Each step of :func:`cascading_randomisation` recomputes the maps of ``images`` (on the
    layer's grid) and compares them with the trained model's by :func:`rank_correlation`. A
    constant map (e.g. all zero) has no ranking to share with the trained one: its correlation
    counts as 0 (and as such in ``constant_maps``); a trained map that is constant leaves its
    image out.

    Both the correlation and its absolute value are summarised (Adebayo et al. report both): the
    weights ``alpha_k`` of a randomised model can flip sign as a whole, which turns the map into
    the ReLU of its negative, strongly *anti*-correlated with the trained map but made of the same
    image structure; ``|rho|`` counts that as kept.

    Returns
    -------
    pandas.DataFrame
        One row per step: ``step`` (1 = the top layer re-initialised), ``layer`` (the layer
        re-initialised at this step, with all above it), ``rank_correlation`` (median of rho over
        the images), ``abs_rank_correlation`` (median of ``|rho|``) with its quartiles ``abs_q25``
        and ``abs_q75``, and ``constant_maps`` (share of randomised maps that are constant).
    """
    trained = gradcam(model, images, class_index, layer, batch_size=batch_size)
    usable = np.ptp(trained.reshape(len(trained), -1), axis=1) > 0 if len(trained) else np.zeros(0, bool)
    rows = []
    for step, (name, randomised) in enumerate(cascading_randomisation(model, seed, layers), start=1):
        maps = gradcam(randomised, images, class_index, layer, batch_size=batch_size)
        constant = np.ptp(maps.reshape(len(maps), -1), axis=1) == 0 if len(maps) else np.zeros(0, bool)
        rho = np.nan_to_num(rank_correlation(trained, maps), nan=0.0)[usable]
        median = float(np.median(rho)) if len(rho) else np.nan
        q25, abs_median, q75 = np.percentile(np.abs(rho), [25, 50, 75]) if len(rho) else (np.nan,) * 3
        rows.append({"step": step, "layer": name, "rank_correlation": median, "abs_rank_correlation": float(abs_median),
                     "abs_q25": float(q25), "abs_q75": float(q75),
                     "constant_maps": float(constant[usable].mean()) if usable.any() else np.nan})
    return pd.DataFrame(rows)


def mean_activation(model: keras.Model, images: np.ndarray, layer: str | None = None, batch_size: int = 32) -> np.ndarray:
    """The mean of a layer's feature maps over its channels, ``(N, h, w)``: a map of what the layer
    responds to in each image that needs no class and no gradient (a baseline for Grad-CAM)."""
    features, _ = split_model(model, layer)
    channel_axis = 1 if keras.config.image_data_format() == "channels_first" else -1
    images = np.asarray(images, dtype=np.float32)
    out = [keras.ops.convert_to_numpy(features(images[i : i + batch_size], training=False)).mean(axis=channel_axis)
           for i in range(0, len(images), max(1, int(batch_size)))]
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, *layer_grid(model, layer)), np.float32)


def activation_rank_correlation(model: keras.Model, images: np.ndarray, layer: str | None = None,
                                class_index: int = 1, batch_size: int = 32) -> np.ndarray:
    """Per image: rank correlation of the Grad-CAM map with the layer's :func:`mean_activation`.

    A Grad-CAM map that ranks its pixels like the mean activation shows what the layer responds
    to in the image, whatever the class score. NaN where either map is constant.
    """
    cams = gradcam(model, images, class_index, layer, batch_size=batch_size)
    return rank_correlation(cams, mean_activation(model, images, layer, batch_size))


def scan_map_3d(maps2d: dict[str, np.ndarray], scan, region: str, scan_shape: tuple[int, int, int],
                angles_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """A 3-D map of one sub-region on the scan's voxels, from its images' maps on each axis.

    :func:`region_map_3d` on the grid of ``scan`` (a
    :class:`~sapsam_utils.imaging.projections.GridScan`), restricted to its refined lung mask, then
    :func:`grid_to_scan` into the scan's voxels (``scan.box``).
    """
    grid_shape = scan.refined.shape
    volume = region_map_3d(maps2d, grid_shape, region, mask=scan.refined > 0)
    return grid_to_scan(volume, scan.box, scan_shape, angles_deg)


def chance_distance_mm(mask: np.ndarray, truth_mask: np.ndarray, spacing: tuple[float, float, float]) -> float:
    """Mean distance (mm) from a voxel of ``mask`` to the nearest truth voxel.

    What :func:`distance_to_truth_mm` gives on average for a peak placed at random in ``mask``
    (e.g. the lung voxels of the sub-region): the chance level of the 3-D distance. NaN when
    either mask is empty.
    """
    mask, truth = np.asarray(mask) > 0, np.asarray(truth_mask) > 0
    if mask.shape != truth.shape:
        raise ValueError(f"mask {mask.shape} and truth {truth.shape} differ in shape")
    if not mask.any() or not truth.any():
        return float("nan")
    points = np.argwhere(mask | truth)
    crop = tuple(slice(a, b) for a, b in zip(points.min(axis=0), points.max(axis=0) + 1))
    distance = ndimage.distance_transform_edt(~truth[crop], sampling=tuple(float(s) for s in spacing))
    return float(distance[mask[crop]].mean())


def sign_voxels(signs: np.ndarray | None, sign: str) -> np.ndarray:
    """Boolean mask of one sign in a sign truth volume (the cavity's lumen counts as cavity, as
    in the projected truth)."""
    if signs is None:
        raise ValueError("no sign truth volume (a control scan?)")
    if sign not in SIGN_CODES:
        raise ValueError(f"sign {sign!r}: use one of {tuple(SIGN_CODES)}")
    codes = [SIGN_CODES[sign]] + ([CAVITY_LUMEN] if sign == "cavity" else [])
    return np.isin(np.asarray(signs), codes)


def sub_region_psam(maps2d: dict[str, np.ndarray], ct: Volume, refined: Volume, signs: Volume, scan, region: str,
                    sign: str) -> tuple[np.ndarray, np.ndarray, float, float]:
    """The 3-D map of one sub-region on its scan and its scores against the sign's truth there.

    Parameters
    ----------
    maps2d : dict
        Axis name -> the sub-region image's map on its pixels (unrotated images).
    ct, refined, signs : Volume
        The scan, its refined lung mask and its sign truth.
    scan : GridScan
        The scan on the study grid (:func:`~sapsam_utils.imaging.projections.to_grid` of the volumes).
    region, sign : str

    Returns
    -------
    tuple
        ``(map3d, truth, distance_mm, chance_mm)``: the map on the scan's voxels
        (:func:`scan_map_3d`), the sign's voxels inside the sub-region's block of the lung box,
        :func:`distance_to_truth_mm` of the map and :func:`chance_distance_mm` of the
        sub-region's lung voxels.
    """
    shape = ct.array.shape
    block = np.zeros(shape, dtype=bool)
    block[region_slices(shape, scan.box)[region]] = True
    map3d = scan_map_3d(maps2d, scan, region, shape)
    truth = sign_voxels(signs.array, sign) & block
    return (map3d, truth, distance_to_truth_mm(map3d, truth, ct.spacing),
            chance_distance_mm((refined.array > 0) & block, truth, ct.spacing))


# ---------------------------------------------------------------------------------------------
# The chapter's scores, on arrays and tables


def class_maps(model: keras.Model, images: np.ndarray, layer: str | None = None, class_index: int = 1,
               batch_size: int = 32) -> np.ndarray:
    """Grad-CAM maps of ``class_index`` (:func:`gradcam`) upsampled to the images' pixels (:func:`upsample`)."""
    return upsample(gradcam(model, images, class_index, layer, batch_size=batch_size), images.shape[1:3])


def layer_maps(model: keras.Model, images: np.ndarray, layers: Sequence[str], batch_size: int = 32) -> dict[str, np.ndarray]:
    """The maps of class 1 of each of ``layers`` (Grad-CAM), then ``mean_activation``: the mean
    activation of the first layer (no class, no gradient), all upsampled to the images' pixels.

    Parameters
    ----------
    images : numpy.ndarray
        ``(N, H, W, C)`` in [0, 1].
    """
    shape = images.shape[1:3]
    maps = {layer: class_maps(model, images, layer, batch_size=batch_size) for layer in layers}
    maps["mean_activation"] = upsample(mean_activation(model, images, layers[0]), shape)
    return maps


def localisation_by_layer(model: keras.Model, images: np.ndarray, truths: np.ndarray, layers: Sequence[str],
                          thresholds: Sequence[float] = IOU_THRESHOLDS,
                          batch_size: int = 32) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    """Localisation of a sign's maps from each layer (:func:`layer_maps`) against its truth.

    Returns
    -------
    (pandas.DataFrame, numpy.ndarray, pandas.DataFrame)
        The :func:`localisation_scores` of the first layer's maps and those maps, then one row per
        map: ``name`` (a layer, or ``mean_activation``), ``layer`` (the name with the map's grid),
        the mean ``pointing game`` and ``energy``, and ``chance`` (the mean truth share).
    """
    rows, first = [], None
    for name, maps in layer_maps(model, images, layers, batch_size).items():
        table = localisation_scores(maps, truths, thresholds)
        if first is None:
            first = (table, maps)
        grid = "x".join(map(str, layer_grid(model, layers[0] if name == "mean_activation" else name)))
        rows.append({"name": name, "layer": f"{name} ({grid})", "pointing game": table["pointing_game"].mean(),
                     "energy": table["energy"].mean(), "chance": table["truth_share"].mean()})
    return first[0], first[1], pd.DataFrame(rows)


def localisation_estimates(table: pd.DataFrame, thresholds: Sequence[float] = IOU_THRESHOLDS, n_boot: int = 1000,
                           seed: int = 0) -> dict[str, Estimate]:
    """The mean of each localisation score of ``table`` (:func:`localisation_scores` with a
    ``patient_id`` column) with its patient-level 95 % CI: ``pointing_game``, ``energy``, ``iou_<t>``."""
    scores = ["pointing_game", "energy"] + [f"iou_{x:g}" for x in thresholds]
    return {score: Estimate.of(mean_ci(table[score], table["patient_id"], n_boot, seed)) for score in scores}


def localisation_summary(table: pd.DataFrame, thresholds: Sequence[float] = IOU_THRESHOLDS, n_boot: int = 1000,
                         seed: int = 0) -> tuple[dict, dict]:
    """A sign's localisation numbers and its row of the chapter's table.

    Returns
    -------
    (dict, dict)
        The numbers: :func:`localisation_estimates`, then ``pointing_chance`` and
        ``energy_uniform`` (both the mean truth share), ``scored_images``, ``empty_maps`` and
        ``pointing_above_chance`` (the pointing game's interval lies above chance); and the row,
        the estimates as text beside the counts.
    """
    chance, scored = float(table["truth_share"].mean()), table["pointing_game"].notna()
    scores = localisation_estimates(table, thresholds, n_boot, seed)
    numbers = {**scores, "pointing_chance": chance, "energy_uniform": chance, "scored_images": int(scored.sum()),
               "empty_maps": int(table["empty_map"].sum()), "pointing_above_chance": bool(scores["pointing_game"].low > chance)}
    row = {"positive images": len(table), "scored (patients)": f"{scored.sum()} ({table.loc[scored, 'patient_id'].nunique()})",
           "chance / uniform": f"{chance:.3f}", **{score.replace("_", " "): e.text() for score, e in scores.items()},
           "all-zero maps": f"{numbers['empty_maps']} of {len(table)}", "above chance": numbers["pointing_above_chance"]}
    return numbers, row


def randomisation_check(curve: pd.DataFrame, target: float) -> tuple[pd.Series, dict]:
    """The step of :func:`randomisation_curve` with the whole top block re-initialised (the last
    ``block5`` step) and the check's numbers: its median ``|rho|`` and signed median, and whether
    the median ``|rho|`` is below ``target``."""
    top = curve[curve["layer"].str.startswith("block5")].iloc[-1]
    return top, {"randomisation_rank_corr_top_block": top["abs_rank_correlation"],
                 "randomisation_signed_rank_corr_top_block": top["rank_correlation"],
                 "randomisation_target_met": bool(top["abs_rank_correlation"] < target)}


def psam3d_table(maps: dict[str, np.ndarray], volumes: Callable[[str], tuple], scan_ids: Sequence[str],
                 regions: Sequence[str], sign: str) -> pd.DataFrame:
    """The 3-D maps' scores of scored sub-region images (:func:`sub_region_psam`), one row per image.

    Parameters
    ----------
    maps : dict
        Axis name -> ``(N, H, W)`` maps of the N images on that axis (same rows on every axis).
    volumes : callable
        Scan id -> ``(ct, refined, signs, grid scan)``, the arguments of :func:`sub_region_psam`.
    scan_ids, regions : sequence of str
        Each image's scan and sub-region.

    Returns
    -------
    pandas.DataFrame
        ``distance_mm``, ``chance_mm`` and ``on_sign`` (1 when the map's maximum is on the sign; an
        all-zero map misses; NaN where the sub-region holds no lung or no sign).
    """
    rows = [sub_region_psam({a: m[j] for a, m in maps.items()}, *volumes(scan_id), region, sign)[2:]
            for j, (scan_id, region) in enumerate(zip(scan_ids, regions))]
    table = pd.DataFrame(rows, columns=["distance_mm", "chance_mm"])
    table["on_sign"] = (table["distance_mm"] == 0).astype(float).where(table["chance_mm"].notna())
    return table


def psam3d_results(table: pd.DataFrame, patient_ids, sign: str, n_boot: int = 1000, seed: int = 0) -> dict:
    """The chapter's numbers of :func:`psam3d_table`: each column's mean with its patient-level
    CI (``psam3d_<column>``), the images scored and the all-zero maps among them, the median
    distance, and whether the distance's interval lies below the chance distance."""
    out = {f"psam3d_{c}": Estimate.of(mean_ci(table[c], patient_ids, n_boot, seed))
           for c in ("distance_mm", "chance_mm", "on_sign")}
    out.update(psam3d_sign=sign, psam3d_images=int(table["on_sign"].notna().sum()),
               psam3d_empty_maps=int((table["distance_mm"].isna() & table["on_sign"].notna()).sum()),
               psam3d_distance_mm_median=float(table["distance_mm"].median()),
               psam3d_below_chance=bool(out["psam3d_distance_mm"].high < out["psam3d_chance_mm"].value))
    return out


def median_case(distances: pd.Series) -> int:
    """The row whose distance is nearest the median (the first such), 0 when none is known."""
    return int((distances - distances.median()).abs().idxmin()) if distances.notna().any() else 0

