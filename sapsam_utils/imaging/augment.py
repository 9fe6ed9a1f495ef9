"""Augmentation: the paper's 27 rigid 3-D rotations, and random 2-D rotation and zoom at training time.

3-D (paper §2.2)
    Every scan, once resampled to the study grid (:mod:`sapsam_utils.imaging.projections`), is rotated by
    -5, 0 and +5 degrees about each of the three array axes, in all 27 combinations. A rotation
    is applied as a **nearest-neighbour gather**: for each rotation a flat ``int32`` index map says,
    for every voxel of the output grid, which voxel of the input grid it copies (or a sentinel
    "outside" voxel). The same map gathers the CT, the lung masks and the sign truth, so they stay
    consistent voxel for voxel; CT values are copied, never interpolated a second time, so a voxel's
    HU window (soft tissue, parenchyma, air) is the one it had before the rotation. The maps depend
    only on the grid shape and the angles, so they are computed once per process and reused for
    every scan.

    Convention: angles ``(a_z, a_y, a_x)`` in degrees rotate about the ``z``, ``y`` and ``x`` array
    axes (``a_z`` turns the axial ``(y, x)`` plane), in **index space** about the grid centre
    ``(n - 1) / 2``; the matrix is ``R = R_z(a_z) @ R_y(a_y) @ R_x(a_x)`` and an output voxel ``p``
    copies input voxel ``round(R.T @ (p - c) + c)``. Rotation index 0 is always the identity.

2-D (paper §2.3)
    :func:`augment_2d` applies one random rotation (uniform in +/- ``max_rotation_deg``) and one
    random zoom (uniform in ``zoom_range``) about the image centre, identically to an image's
    channels (linear interpolation) and to its truth maps (nearest neighbour, so a sign's footprint
    keeps its exact values); pixels that come from outside the image are 0, the value of a ray
    with no lung. Seeded through a :class:`numpy.random.Generator`.
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import ndimage

#: The paper's rotation angles (degrees) about each axis.
PAPER_ANGLES = (-5.0, 0.0, 5.0)


def rotation_set(angles: tuple[float, ...] = PAPER_ANGLES) -> list[tuple[float, float, float]]:
    """All combinations of ``angles`` about the three axes, the identity first.

    Parameters
    ----------
    angles : sequence of float
        Angles in degrees used about each axis; must contain 0.

    Returns
    -------
    list of tuple
        ``len(angles) ** 3`` triples ``(a_z, a_y, a_x)``; element 0 is ``(0, 0, 0)``, the others
        follow in :func:`itertools.product` order.
    """
    angles = tuple(float(a) for a in angles)
    if 0.0 not in angles:
        raise ValueError(f"rotation angles {angles} must include 0 (the unrotated scan)")
    if len(set(angles)) != len(angles):
        raise ValueError(f"rotation angles {angles} contain duplicates")
    triples = [t for t in itertools.product(angles, repeat=3) if t != (0.0, 0.0, 0.0)]
    return [(0.0, 0.0, 0.0), *triples]


def rotation_matrix(angles_deg: tuple[float, float, float]) -> np.ndarray:
    """The 3x3 rotation ``R_z(a_z) @ R_y(a_y) @ R_x(a_x)`` acting on ``(z, y, x)`` index vectors."""
    az, ay, ax = np.deg2rad(np.asarray(angles_deg, dtype=float))
    cz, sz, cy, sy, cx, sx = np.cos(az), np.sin(az), np.cos(ay), np.sin(ay), np.cos(ax), np.sin(ax)
    rz = np.array([[1, 0, 0], [0, cz, -sz], [0, sz, cz]])  # turns the (y, x) plane
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])  # turns the (z, x) plane
    rx = np.array([[cx, -sx, 0], [sx, cx, 0], [0, 0, 1]])  # turns the (z, y) plane
    return rz @ ry @ rx


def rotation_index_map(shape: tuple[int, int, int], angles_deg: tuple[float, float, float]) -> np.ndarray:
    """Nearest-neighbour gather indices of one rotation about the grid centre.

    Parameters
    ----------
    shape : tuple of int
        Grid shape ``(nz, ny, nx)``.
    angles_deg : tuple of float
        ``(a_z, a_y, a_x)`` in degrees.

    Returns
    -------
    numpy.ndarray of int32, shape ``(nz * ny * nx,)``
        For each output voxel (C order), the flat index of the input voxel it copies, or
        ``nz * ny * nx`` (one past the end: the caller's "outside" sentinel) when the rotated
        position falls outside the grid. The identity rotation gives ``arange`` exactly.
    """
    shape = tuple(int(n) for n in shape)
    size = int(np.prod(shape))
    if size >= np.iinfo(np.int32).max:
        raise ValueError(f"grid {shape} is too large for int32 index maps")
    inverse = rotation_matrix(angles_deg).T
    centre = [(n - 1) / 2.0 for n in shape]
    grids = [np.arange(n, dtype=np.float64) - c for n, c in zip(shape, centre)]
    # Source coordinates are rounded half-up by truncating positive numbers: a large shift keeps
    # them positive (rotations of a few degrees move a voxel far less than `shift`).
    shift = float(max(shape))
    nz, ny, nx = shape
    flat = np.empty(shape, dtype=np.int32)
    # Slabs of z slices keep the temporaries in the CPU cache.
    slab = max(1, (1 << 16) // (ny * nx))
    coord = np.empty((slab, ny, nx), dtype=np.float32)
    index = np.empty((slab, ny, nx), dtype=np.int32)
    outside = np.empty((slab, ny, nx), dtype=bool)
    for z0 in range(0, nz, slab):
        depth = min(slab, nz - z0)
        c, i, o, f = coord[:depth], index[:depth], outside[:depth], flat[z0 : z0 + depth]
        o[:] = False
        f[:] = 0
        for k, n in enumerate(shape):
            zy = inverse[k, 0] * grids[0][z0 : z0 + depth, None] + inverse[k, 1] * grids[1][None, :]
            x = inverse[k, 2] * grids[2] + centre[k] + 0.5 + shift
            np.add(zy.astype(np.float32)[:, :, None], x.astype(np.float32)[None, None, :], out=c)
            np.copyto(i, c, casting="unsafe")  # truncation == floor(v + 0.5) here
            i -= np.int32(shift)
            o |= i.view(np.uint32) >= n  # negative indices wrap to large unsigned values
            f *= n
            f += i
        np.copyto(f, size, where=o)
    return flat.ravel()


_MAP_CACHE: dict = {}


def rotation_index_maps(
    shape: tuple[int, int, int], angles: tuple[float, ...] = PAPER_ANGLES, n_threads: int = 1
) -> tuple[np.ndarray, ...]:
    """The index maps of every rotation of :func:`rotation_set`, cached per process.

    Only the last ``(shape, angles)`` is kept: at the paper's grid (216, 256, 256) the 27 maps
    take 1.5 GB. They are computed once per process (``n_threads`` at a time; numpy releases the
    GIL) and shared by all the scans it handles.
    """
    key = (tuple(int(n) for n in shape), tuple(float(a) for a in angles))
    if key not in _MAP_CACHE:
        _MAP_CACHE.clear()  # free the previous grid's maps before building new ones
        rotations = rotation_set(key[1])
        if n_threads > 1:
            with ThreadPoolExecutor(n_threads) as pool:
                maps = tuple(pool.map(lambda r: rotation_index_map(key[0], r), rotations))
        else:
            maps = tuple(rotation_index_map(key[0], r) for r in rotations)
        for m in maps:
            m.setflags(write=False)
        _MAP_CACHE[key] = maps
    return _MAP_CACHE[key]


def gather(volume_flat: np.ndarray, index_map: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Apply a rotation index map to a volume stored flat with one trailing sentinel element.

    Parameters
    ----------
    volume_flat : numpy.ndarray
        ``nz * ny * nx + 1`` values: the volume in C order, then the value for "outside the grid".
    index_map : numpy.ndarray
        From :func:`rotation_index_map`.
    shape : tuple of int
        The grid shape.
    """
    if volume_flat.size != int(np.prod(shape)) + 1:
        raise ValueError(f"expected {int(np.prod(shape)) + 1} values (grid + sentinel), got {volume_flat.size}")
    return np.take(volume_flat, index_map, mode="clip").reshape(shape)  # indices are in range


def with_sentinel(volume: np.ndarray, outside) -> np.ndarray:
    """``volume`` flattened with one trailing element ``outside``, ready for :func:`gather`."""
    flat = np.empty(volume.size + 1, dtype=volume.dtype)
    flat[:-1] = volume.ravel()
    flat[-1] = outside
    return flat


def rotate_volume(volume: np.ndarray, angles_deg: tuple[float, float, float], outside=0) -> np.ndarray:
    """One volume rotated by nearest neighbour about its centre (convenience for figures and tests)."""
    index_map = rotation_index_map(volume.shape, angles_deg)
    return gather(with_sentinel(volume, outside), index_map, volume.shape)


def random_affine_2d(
    rng: np.random.Generator, max_rotation_deg: float = 20.0, zoom_range: tuple[float, float] = (0.8, 1.2)
) -> tuple[float, float]:
    """Draw one 2-D augmentation: ``(rotation in degrees, zoom factor)``, both uniform."""
    if max_rotation_deg < 0 or not 0 < zoom_range[0] <= zoom_range[1]:
        raise ValueError(f"bad 2-D augmentation ranges: rotation {max_rotation_deg}, zoom {zoom_range}")
    angle = float(rng.uniform(-max_rotation_deg, max_rotation_deg))
    zoom = float(rng.uniform(zoom_range[0], zoom_range[1]))
    return angle, zoom


def affine_2d(image: np.ndarray, angle_deg: float, zoom: float, order: int = 1) -> np.ndarray:
    """Rotate by ``angle_deg`` and zoom by ``zoom`` about the image centre; 0 outside.

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W)`` or ``(H, W, C)``; every channel gets the same transform.
    angle_deg : float
        Counter-clockwise rotation as displayed with row 0 at the top.
    zoom : float
        > 1 magnifies (the content grows), < 1 shrinks it.
    order : int
        Spline order: 1 (linear) for images, 0 (nearest) for truth maps.
    """
    if image.ndim not in (2, 3):
        raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {image.shape}")
    theta = np.deg2rad(angle_deg)
    c, s = np.cos(theta), np.sin(theta)
    # Output pixel (r, col) samples input  centre + M @ ((r, col) - centre), M = rotation / zoom.
    matrix = np.array([[c, s], [-s, c]]) / zoom
    centre = (np.array(image.shape[:2], dtype=float) - 1) / 2
    offset = centre - matrix @ centre
    source = image.astype(np.float32, copy=False)
    channels = source[..., None] if image.ndim == 2 else source
    out = np.empty(channels.shape, dtype=np.float32)
    for k in range(channels.shape[-1]):
        ndimage.affine_transform(
            channels[..., k], matrix, offset=offset, output=out[..., k], order=order, mode="constant", cval=0.0
        )
    return out[..., 0] if image.ndim == 2 else out


def augment_2d(
    image: np.ndarray,
    truth: np.ndarray | None = None,
    *,
    rng: np.random.Generator,
    max_rotation_deg: float = 20.0,
    zoom_range: tuple[float, float] = (0.8, 1.2),
) -> tuple[np.ndarray, np.ndarray | None]:
    """One random training-time augmentation of an image and (the same one) of its truth maps.

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W)`` or ``(H, W, C)`` image with values in [0, 1].
    truth : numpy.ndarray, optional
        ``(H, W)`` or ``(H, W, K)`` truth maps on the image's grid (e.g. projected signs).
    rng : numpy.random.Generator
        Source of the random draw (seeded by the caller).
    max_rotation_deg, zoom_range : float, tuple of float
        The paper's +/- 20 degrees and 80-120 % by default.

    Returns
    -------
    tuple
        ``(image, truth)`` as float32 (``truth`` is None when not given); image values stay in
        [0, 1] (linear interpolation of values in [0, 1]).
    """
    if truth is not None and truth.shape[:2] != image.shape[:2]:
        raise ValueError(f"truth maps {truth.shape} are not on the image's grid {image.shape}")
    angle, zoom = random_affine_2d(rng, max_rotation_deg, zoom_range)
    out_image = np.clip(affine_2d(image, angle, zoom, order=1), 0.0, 1.0)
    out_truth = None if truth is None else affine_2d(truth, angle, zoom, order=0)
    return out_image, out_truth


def augment_batch(
    images: np.ndarray,
    truths: np.ndarray | None = None,
    *,
    seed: int | np.random.Generator,
    max_rotation_deg: float = 20.0,
    zoom_range: tuple[float, float] = (0.8, 1.2),
) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`augment_2d` applied to each image of a batch ``(N, H, W[, C])``, one draw per image."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    out_images = np.empty(images.shape, dtype=np.float32)
    out_truths = None if truths is None else np.empty(truths.shape, dtype=np.float32)
    for i in range(len(images)):
        img, tru = augment_2d(
            images[i], None if truths is None else truths[i],
            rng=rng, max_rotation_deg=max_rotation_deg, zoom_range=zoom_range,
        )
        out_images[i] = img
        if out_truths is not None:
            out_truths[i] = tru
    return out_images, out_truths
