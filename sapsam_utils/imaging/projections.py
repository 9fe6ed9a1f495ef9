"""From a CT and its lung masks to the 2-D images the classifiers learn from (paper §2.2).

Pipeline for one scan
---------------------
1. **Grid.** The bounding box of the refined lung mask (:func:`sapsam_utils.core.regions.lung_box`,
   both lungs, no margin) is resampled to ``grid_shape`` (the paper's 216 x 256 x 256 in
   ``(z, y, x)``; each axis is scaled on its own, as the paper stretches every scan to one grid).
   The CT is interpolated linearly, masks and sign truth by nearest neighbour; samples outside
   the scan are -1000 HU and "no mask". With no margin, the grid *is* the lung box, so the six
   sub-regions are exactly ``regions.region_slices(grid_shape)``: the paper's 72 x 256 x 128 blocks
   and the same cut as the cohort's labels. Only the box's voxels are kept: the refined mask (the
   one the sub-region images use) lies inside it by construction.
2. **Rotations.** The 27 rotations of :mod:`sapsam_utils.imaging.augment` (nearest-neighbour gathers
   through precomputed index maps, identical for the CT, the masks and the truth).
3. **Whole-scan images** (disease, survival), one per axis: for every ray, the mean HU of the
   ray's voxels inside the **conservative** mask (the paper's choice; ``whole_mask="refined"``
   takes the refined mask instead, which keeps the soft-tissue signs), mapped linearly from
   ``whole_hu_range`` (fixed bounds, so that images of different scans are comparable; default -1000..-500 HU,
   where the means of parenchyma and air lie) to [0, 1] and clipped; a ray with no mask voxel
   is 0.
4. **Sub-region images** (signs): every sub-region block projected along each axis inside the
   **refined** mask, one channel per HU window (``windows``, the paper's [-1400, -900],
   [-900, -160], [-160, 240]). A voxel belongs to window ``[lo, hi)`` when ``lo <= HU < hi``
   (HU after the linear resampling, rounded to whole HU as the scan's own values are; voxels
   outside every window, e.g. bone, are left out). For
   a ray, let ``n_w`` be its in-mask voxels in window ``w`` and ``s_w`` the sum of their HU; then

   * ``statistic="mean"`` (default; the paper's "average intensity within each window"):
     ``(s_w / n_w - lo) / (hi - lo)``, the mean HU of the ray's voxels *in the window*, mapped
     from [lo, hi] to [0, 1]; it says how dense the window's tissue on that ray is, whatever its
     amount;
   * ``statistic="weighted"``: ``(s_w - lo * n_w) / ((hi - lo) * n)`` with ``n`` the ray's
     in-mask voxels in any window: the same mean multiplied by the fraction of the ray in the
     window, so a fungus ball (many soft-tissue voxels) outshines one crossing vessel.

   Either way a ray with no voxel in the window gives 0 and values lie in [0, 1].
5. **Truth maps** (phantoms): for each of the four labels, the fraction of the ray's voxels
   (block extent for sub-region images, grid extent for whole-scan images) whose sign truth is
   that label (cavity = wall + lumen), on the same pixels as the image.

Image orientation (row 0 at the top, as ``imshow`` draws it; radiological convention)
    ``axial`` (projection along ``z``): rows ``y`` anterior -> posterior, columns ``x`` patient's
    right -> left. ``coronal`` (along ``y``): rows superior -> inferior (``z`` reversed), columns
    ``x``. ``sagittal`` (along ``x``): rows superior -> inferior, columns ``y`` anterior ->
    posterior. Whole-scan images of the paper's grid are 256 x 256, 216 x 256, 216 x 256;
    sub-region images 256 x 128, 72 x 128, 72 x 256 (x 3 windows).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from . import augment
from ..core.regions import CAVITY_LUMEN, LABELS, REGIONS, SIGN_CODES, Box, lung_box, region_slices
from ..core.volume import Volume

#: The paper's HU windows (lung/air, parenchyma, soft tissue), in HU, ``[lo, hi)``.
PAPER_WINDOWS = ((-1400.0, -900.0), (-900.0, -160.0), (-160.0, 240.0))
#: Projection axes: name -> array axis projected away.
AXES = {"axial": 0, "coronal": 1, "sagittal": 2}
#: HU given to grid voxels that fall outside the scan.
OUTSIDE_HU = -1000.0

# Bits of the packed per-voxel code that the rotations gather in one pass.
_CONSERVATIVE_BIT = 1
_REFINED_BIT = 2
_WINDOW_SHIFT = 2  # 2 bits: 0 = in no window, 1..3 = window index + 1
_SIGN_SHIFT = 4  # 3 bits: the sign truth value 0..5
#: Sign truth value -> label index in LABELS (the cavity lumen counts as cavity); -1 = none.
_SIGN_TO_LABEL = np.full(8, -1, dtype=np.int64)
for _label, _code in SIGN_CODES.items():
    _SIGN_TO_LABEL[_code] = LABELS.index(_label)
_SIGN_TO_LABEL[CAVITY_LUMEN] = LABELS.index("cavity")


@dataclass(frozen=True)
class ProjectionParams:
    """Everything that determines a scan's images (its fields are every parameter of them).

    Attributes
    ----------
    grid_shape : tuple of int
        ``(nz, ny, nx)``; ``nz`` divisible by 3 and ``nx`` by 2 so that the six blocks are equal.
    angles : tuple of float
        Rotation angles (degrees) used about each axis; ``len(angles) ** 3`` rotations.
    windows : tuple of (lo, hi)
        HU windows of the sub-region images, one channel each.
    whole_hu_range : (lo, hi)
        HU mapped to 0 and 1 in the whole-scan images.
    statistic : {"mean", "weighted"}
        How a window's rays are summarised (module docstring).
    whole_mask : {"conservative", "refined"}
        The lung mask the whole-scan images average inside (paper: conservative).
    """

    grid_shape: tuple[int, int, int] = (216, 256, 256)
    angles: tuple[float, ...] = augment.PAPER_ANGLES
    windows: tuple[tuple[float, float], ...] = PAPER_WINDOWS
    whole_hu_range: tuple[float, float] = (-1000.0, -500.0)
    statistic: str = "mean"
    whole_mask: str = "conservative"

    def __post_init__(self):
        # Normalise lists (from YAML / JSON) to tuples so the dataclass stays hashable.
        object.__setattr__(self, "grid_shape", tuple(int(n) for n in self.grid_shape))
        object.__setattr__(self, "angles", tuple(float(a) for a in self.angles))
        object.__setattr__(self, "windows", tuple((float(lo), float(hi)) for lo, hi in self.windows))
        object.__setattr__(self, "whole_hu_range", tuple(float(v) for v in self.whole_hu_range))
        shape = self.grid_shape
        if len(shape) != 3 or shape[0] % 3 or shape[2] % 2 or shape[0] < 3 or shape[1] < 1 or shape[2] < 4:
            raise ValueError(
                f"grid_shape {shape}: need 3 sizes (z, y, x) with z divisible by 3 and x by 2 "
                "(six equal sub-region blocks)"
            )
        if not 1 <= len(self.windows) <= 3 or any(lo >= hi for lo, hi in self.windows):
            raise ValueError(f"windows {self.windows}: need 1 to 3 (lo, hi) pairs with lo < hi")
        if any(a[1] > b[0] for a, b in zip(self.windows, self.windows[1:])):
            raise ValueError(f"windows {self.windows} overlap or are not in increasing order")
        if self.whole_hu_range[0] >= self.whole_hu_range[1]:
            raise ValueError(f"whole_hu_range {self.whole_hu_range}: need lo < hi")
        if self.statistic not in ("mean", "weighted"):
            raise ValueError(f"statistic '{self.statistic}': use 'mean' or 'weighted'")
        if self.whole_mask not in ("conservative", "refined"):
            raise ValueError(f"whole_mask '{self.whole_mask}': use 'conservative' or 'refined'")
        augment.rotation_set(self.angles)  # validates the angles

    def as_dict(self) -> dict:
        """Plain JSON-able form (to key and record a run)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @property
    def rotations(self) -> list[tuple[float, float, float]]:
        return augment.rotation_set(self.angles)

    @property
    def block_shape(self) -> tuple[int, int, int]:
        nz, ny, nx = self.grid_shape
        return nz // 3, ny, nx // 2


@dataclass(frozen=True)
class GridScan:
    """A scan resampled to the study grid.

    Attributes
    ----------
    hu : numpy.ndarray of float32
        CT in HU on the grid.
    conservative, refined : numpy.ndarray of uint8
        Lung masks (0, LUNG_RIGHT, LUNG_LEFT) on the grid.
    signs : numpy.ndarray of uint8 or None
        Sign truth (phantoms) on the grid.
    box : tuple of slice
        The lung box in the source scan's voxels.
    spacing : tuple of float
        Size in mm of one grid voxel ``(z, y, x)``.
    """

    hu: np.ndarray
    conservative: np.ndarray
    refined: np.ndarray
    signs: np.ndarray | None
    box: Box
    spacing: tuple[float, float, float]


@dataclass
class ScanImages:
    """All the images of one scan, for every rotation (index 0 = unrotated).

    ``whole[axis]``: ``(R, H, W)`` float32 in [0, 1]. ``regions[axis]``: ``(R, 6, H, W, C)``
    float32 in [0, 1], regions in :data:`~sapsam_utils.core.regions.REGIONS` order, one channel per
    window. ``whole_truth[axis]`` ``(R, H, W, 4)`` and ``regions_truth[axis]``
    ``(R, 6, H, W, 4)``: per label (:data:`~sapsam_utils.core.regions.LABELS`) the fraction of the ray
    in that sign; empty dicts when the scan has no sign truth.
    """

    rotations: np.ndarray
    whole: dict[str, np.ndarray]
    regions: dict[str, np.ndarray]
    whole_truth: dict[str, np.ndarray] = field(default_factory=dict)
    regions_truth: dict[str, np.ndarray] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# 1. Resampling the lung box to the grid


def _sample_positions(box_axis: slice, n_out: int) -> np.ndarray:
    """Source coordinates of the centres of ``n_out`` grid voxels spanning ``box_axis``.

    Voxel edges are aligned: grid voxel ``i`` covers ``[start + i*s, start + (i+1)*s)`` in
    source voxel units (``s = box length / n_out``), sampled at its centre.
    """
    scale = (box_axis.stop - box_axis.start) / n_out
    return box_axis.start - 0.5 + (np.arange(n_out) + 0.5) * scale


def resample_box(array: np.ndarray, box: Box, grid_shape: tuple[int, int, int], order: int, fill=0) -> np.ndarray:
    """Resample the ``box`` of ``array`` onto ``grid_shape``, one axis at a time.

    Parameters
    ----------
    array : numpy.ndarray
        3-D source volume.
    box : tuple of slice
        Part of ``array`` to resample (e.g. :func:`~sapsam_utils.core.regions.lung_box`).
    grid_shape : tuple of int
        Output shape.
    order : {0, 1}
        0: nearest neighbour (labels; keeps the dtype). 1: linear (float32 output); separable
        linear along each axis is exactly trilinear interpolation.
    fill : scalar
        Value of the samples that fall outside ``array`` (only linear interpolation reaches
        one voxel beyond the box).

    Returns
    -------
    numpy.ndarray
    """
    if order not in (0, 1):
        raise ValueError(f"order must be 0 (nearest) or 1 (linear), got {order}")
    box = tuple(slice(*s.indices(n)[:2]) for s, n in zip(box, array.shape))
    positions = [_sample_positions(s, n) for s, n in zip(box, grid_shape)]
    if order == 0:
        # floor(u + 0.5) never leaves the box (see _sample_positions).
        index = [np.floor(p + 0.5).astype(np.intp) for p in positions]
        return array[np.ix_(*index)]
    # Crop the box plus one voxel of support per side, padding with `fill` beyond the array.
    lo = [s.start - 1 for s in box]
    hi = [s.stop + 1 for s in box]
    inner = tuple(slice(max(a, 0), min(b, n)) for a, b, n in zip(lo, hi, array.shape))
    pads = [(s.start - a, b - s.stop) for s, a, b in zip(inner, lo, hi)]
    work = np.pad(array[inner].astype(np.float32), pads, constant_values=fill)
    # Shrinking axes first keeps the intermediate arrays small.
    for axis in sorted(range(3), key=lambda a: grid_shape[a] / work.shape[a]):
        u = positions[axis] - lo[axis]
        i0 = np.floor(u).astype(np.intp)
        w = (u - i0).astype(np.float32)
        shape = [1, 1, 1]
        shape[axis] = -1
        w = w.reshape(shape)
        a0 = np.take(work, i0, axis=axis)
        a1 = np.take(work, i0 + 1, axis=axis)
        a1 -= a0
        a1 *= w
        a0 += a1
        work = a0
    return work


def to_grid(
    ct: Volume,
    conservative: Volume,
    refined: Volume,
    signs: Volume | None,
    grid_shape: tuple[int, int, int],
) -> GridScan:
    """Crop the refined mask's lung box and resample the scan, its masks and truth to the grid.

    Parameters
    ----------
    ct : Volume
        CT in HU.
    conservative, refined : Volume
        Lung masks on the CT's grid (0 / LUNG_RIGHT / LUNG_LEFT).
    signs : Volume or None
        Sign truth on the CT's grid (phantoms), or None.
    grid_shape : tuple of int
        The study grid ``(nz, ny, nx)``.

    Returns
    -------
    GridScan
    """
    for name, vol in (("conservative", conservative), ("refined", refined), ("signs", signs)):
        if vol is not None and vol.array.shape != ct.array.shape:
            raise ValueError(f"{name} mask {vol.array.shape} is not on the CT's grid {ct.array.shape}")
    if not refined.array.any():
        raise ValueError("the refined lung mask is empty: no lung box to project")
    box = lung_box(refined.array)
    spacing = tuple(
        (s.stop - s.start) * sp / n for s, sp, n in zip(box, ct.spacing, grid_shape)
    )
    return GridScan(
        hu=resample_box(ct.array, box, grid_shape, order=1, fill=OUTSIDE_HU),
        conservative=resample_box(conservative.array, box, grid_shape, order=0),
        refined=resample_box(refined.array, box, grid_shape, order=0),
        signs=None if signs is None else resample_box(signs.array, box, grid_shape, order=0),
        box=box,
        spacing=spacing,
    )


def rotate_grid_scan(scan: GridScan, angles_deg: tuple[float, float, float]) -> GridScan:
    """The whole :class:`GridScan` rotated (for figures and checks; :func:`project_scan` does not
    build rotated scans, it gathers straight into its sums)."""
    index_map = augment.rotation_index_map(scan.hu.shape, angles_deg)

    def rot(a, outside):
        return None if a is None else augment.gather(augment.with_sentinel(a, outside), index_map, a.shape)

    return GridScan(
        hu=rot(scan.hu, OUTSIDE_HU),
        conservative=rot(scan.conservative, 0),
        refined=rot(scan.refined, 0),
        signs=rot(scan.signs, 0),
        box=scan.box,
        spacing=scan.spacing,
    )


# ---------------------------------------------------------------------------------------------
# 2. Projections of one (rotated) grid


def window_index(hu: np.ndarray, windows) -> np.ndarray:
    """Per voxel, 1 + the index of the HU window holding it (``lo <= HU < hi``), or 0 for none."""
    out = np.zeros(hu.shape, dtype=np.uint8)
    for k, (lo, hi) in enumerate(windows):
        out[(hu >= lo) & (hu < hi)] = k + 1
    return out


def pack_codes(scan: GridScan, windows) -> np.ndarray:
    """One uint8 per voxel holding the conservative and refined bits, the voxel's window among
    refined voxels, and its sign truth, so that one gather rotates all of them at once."""
    code = (scan.conservative > 0).astype(np.uint8) * np.uint8(_CONSERVATIVE_BIT)
    refined = scan.refined > 0
    code |= refined.astype(np.uint8) * np.uint8(_REFINED_BIT)
    code |= (window_index(scan.hu, windows) * refined).astype(np.uint8) << _WINDOW_SHIFT
    if scan.signs is not None:
        if scan.signs.max(initial=0) > 7:
            raise ValueError(f"sign truth values must be 0..7, found {scan.signs.max()}")
        code |= scan.signs.astype(np.uint8) << _SIGN_SHIFT
    return code


def _pack(hu: np.ndarray, code: np.ndarray) -> np.ndarray:
    """HU (rounded to whole HU) and code in one int32 per voxel (``HU * 128 + code``) plus the
    "outside" sentinel, so that a rotation is a single gather."""
    packed = np.empty(hu.size + 1, dtype=np.int32)
    packed[:-1] = np.rint(hu).astype(np.int32).ravel() * 128 + code.ravel()
    packed[-1] = int(OUTSIDE_HU) * 128
    return packed


def _slab_depth(shape: tuple[int, int, int], target_voxels: int = 1 << 17) -> int:
    """Slices per slab: the largest divisor of a z third whose slab holds <= ``target_voxels``
    (so that a slab's arrays stay in the CPU cache while every channel is summed)."""
    nz, ny, nx = shape
    third = nz // 3
    fitting = [d for d in range(1, third + 1) if third % d == 0 and d * ny * nx <= target_voxels]
    return max(fitting, default=1)


class _Workspace:
    """Per-thread buffers of one slab, and the ray sums of one rotation.

    Per channel ``c`` (conservative, then each window): HU sums ``sum_*[c]`` (float32) and voxel
    counts ``count_*[c]`` (integers, summed as such: cheaper than float masks) along each axis,
    per sub-region block: ``*_z`` ``(3, ny, nx)`` one per z third, ``*_y`` ``(nz, nx)`` (y is
    never cut), ``*_x`` ``(nz, ny, 2)`` one per x half. Whole-scan sums are these summed over the
    thirds / halves; block images are slices of them (:func:`_whole_images`,
    :func:`_region_images`).
    """

    def __init__(self, shape: tuple[int, int, int], n_channels: int):
        nz, ny, nx = shape
        self.shape = shape
        self.slab = _slab_depth(shape)
        size = self.slab * ny * nx
        self.packed = np.empty(size, dtype=np.int32)
        self.work = np.empty(size, dtype=np.int32)
        self.hu = np.empty(size, dtype=np.float32)
        self.code = np.empty(size, dtype=np.uint8)
        self.bits = np.empty(size, dtype=np.uint8)
        self.flag = np.empty(size, dtype=bool)
        self.weighted = np.empty(size, dtype=np.float32)
        self.part = np.empty((ny, nx), dtype=np.float32)
        self.part_count = np.empty((ny, nx), dtype=np.uint16)
        self.sum_z = np.zeros((n_channels, 3, ny, nx), dtype=np.float32)
        self.sum_y = np.zeros((n_channels, nz, nx), dtype=np.float32)
        self.sum_x = np.zeros((n_channels, nz, ny, 2), dtype=np.float32)
        self.count_z = np.zeros((n_channels, 3, ny, nx), dtype=np.uint16)
        self.count_y = np.zeros((n_channels, nz, nx), dtype=np.uint16)
        self.count_x = np.zeros((n_channels, nz, ny, 2), dtype=np.uint16)

    def sums(self, c: int):
        """``(sum_z, sum_y, sum_x)`` of channel ``c``."""
        return self.sum_z[c], self.sum_y[c], self.sum_x[c]

    def counts(self, c: int):
        """``(count_z, count_y, count_x)`` of channel ``c`` as float32."""
        return tuple(a[c].astype(np.float32) for a in (self.count_z, self.count_y, self.count_x))


def _rotation_sums(ws: _Workspace, packed: np.ndarray, index_map: np.ndarray, channel_codes, with_truth: bool):
    """Gather one rotation slab by slab and accumulate every channel's ray sums into ``ws``.

    Returns the flat grid indices and sign values of the rotated grid's sign-truth voxels
    (empty when ``with_truth`` is False).
    """
    nz, ny, nx = ws.shape
    plane, third, slab = ny * nx, nz // 3, ws.slab
    ws.sum_z[:] = 0
    ws.count_z[:] = 0
    weighted = ws.weighted.reshape(slab, ny, nx)
    flag = ws.flag.view(np.uint8).reshape(slab, ny, nx)
    hits, signs = [], []
    for z0 in range(0, nz, slab):
        start, rows = z0 * plane, slice(z0, z0 + slab)
        np.take(packed, index_map[start : start + slab * plane], out=ws.packed, mode="clip")
        np.right_shift(ws.packed, 7, out=ws.work)  # HU = packed // 128
        np.copyto(ws.hu, ws.work, casting="unsafe")
        np.bitwise_and(ws.packed, 127, out=ws.work)
        np.copyto(ws.code, ws.work, casting="unsafe")
        t = z0 // third
        for c, (bits, value) in enumerate(channel_codes):
            np.bitwise_and(ws.code, bits, out=ws.bits)
            np.equal(ws.bits, value, out=ws.flag)
            np.multiply(ws.hu, ws.flag, out=ws.weighted)
            np.sum(weighted, axis=0, out=ws.part)
            ws.sum_z[c, t] += ws.part
            np.sum(weighted, axis=1, out=ws.sum_y[c, rows])
            np.sum(weighted.reshape(slab, ny, 2, nx // 2), axis=-1, out=ws.sum_x[c, rows])
            np.sum(flag, axis=0, dtype=np.uint16, out=ws.part_count)
            ws.count_z[c, t] += ws.part_count
            np.sum(flag, axis=1, dtype=np.uint16, out=ws.count_y[c, rows])
            np.sum(flag.reshape(slab, ny, 2, nx // 2), axis=-1, dtype=np.uint16, out=ws.count_x[c, rows])
        if with_truth:
            hit = np.flatnonzero(ws.code >= (1 << _SIGN_SHIFT))
            hits.append(hit + start)
            signs.append(ws.code[hit] >> _SIGN_SHIFT)
    if not with_truth:
        return np.empty(0, dtype=np.intp), np.empty(0, dtype=np.uint8)
    return np.concatenate(hits), np.concatenate(signs)


def _whole_images(z: np.ndarray, y: np.ndarray, x: np.ndarray) -> dict[str, np.ndarray]:
    """Whole-grid ray sums from block sums, as images ``(..., H, W)`` in display orientation."""
    return {
        "axial": z.sum(axis=-3),
        "coronal": y[..., ::-1, :],
        "sagittal": x.sum(axis=-1)[..., ::-1, :],
    }


def _region_images(z: np.ndarray, y: np.ndarray, x: np.ndarray) -> dict[str, np.ndarray]:
    """Per-block ray sums as images ``(..., 6, H, W)`` in :data:`REGIONS` order."""
    nz, nx = y.shape[-2], y.shape[-1]
    third, half = nz // 3, nx // 2
    blocks = region_slices((nz, 1, nx))  # the shared geometry: z thirds x x halves
    out = {"axial": [], "coronal": [], "sagittal": []}
    for name in REGIONS:
        zs, _, xs = blocks[name]
        t, h = zs.start // third, xs.start // half
        out["axial"].append(z[..., t, :, xs])
        out["coronal"].append(y[..., zs, xs][..., ::-1, :])
        out["sagittal"].append(x[..., zs, :, h][..., ::-1, :])
    return {axis: np.stack(images, axis=-3) for axis, images in out.items()}


def _mean_image(sums: np.ndarray, counts: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``(sums / counts - lo) / (hi - lo)`` clipped to [0, 1]; 0 where ``counts == 0``."""
    out = np.zeros(sums.shape, dtype=np.float32)
    hit = counts > 0
    out[hit] = (sums[hit] / counts[hit] - lo) / (hi - lo)
    return np.clip(out, 0.0, 1.0, out=out)


def _channel_codes(n_windows: int, whole_mask: str = "conservative") -> list[tuple[int, int]]:
    """``(bits, value)`` selecting each channel's voxels: the whole-scan mask, then refined-in-window k."""
    window_bits = _REFINED_BIT | (3 << _WINDOW_SHIFT)
    whole_bit = _CONSERVATIVE_BIT if whole_mask == "conservative" else _REFINED_BIT
    return [(whole_bit, whole_bit)] + [
        (window_bits, _REFINED_BIT | ((k + 1) << _WINDOW_SHIFT)) for k in range(n_windows)
    ]


def _rotation_images(ws: _Workspace, params: ProjectionParams):
    """Whole-scan and sub-region images from the ray sums held in ``ws``."""
    lo, hi = params.whole_hu_range
    s_whole, n_whole = _whole_images(*ws.sums(0)), _whole_images(*ws.counts(0))
    whole = {a: _mean_image(s_whole[a], n_whole[a], lo, hi) for a in AXES}

    windows = range(1, len(params.windows) + 1)
    s_win = [_region_images(*ws.sums(c)) for c in windows]  # per window: axis -> (6, H, W)
    n_win = [_region_images(*ws.counts(c)) for c in windows]
    regions = {}
    for axis in AXES:
        channels = []
        n_any = sum(n[axis] for n in n_win)
        for (lo_w, hi_w), s, n in zip(params.windows, s_win, n_win):
            mean = _mean_image(s[axis], n[axis], lo_w, hi_w)
            if params.statistic == "weighted":
                mean *= np.divide(n[axis], n_any, out=np.zeros_like(mean), where=n_any > 0)
            channels.append(mean)
        regions[axis] = np.stack(channels, axis=-1)
    return whole, regions


def _truth_images(hits: np.ndarray, signs: np.ndarray, shape: tuple[int, int, int]):
    """Per-label truth fractions (whole-scan and per block) from the sign voxels of a grid."""
    nz, ny, nx = shape
    label = _SIGN_TO_LABEL[signs]
    keep = label >= 0
    label = label[keep]
    zi, yi, xi = np.unravel_index(hits[keep], shape)
    n_lab = len(LABELS)
    count_z = np.bincount(((label * 3 + zi // (nz // 3)) * ny + yi) * nx + xi, minlength=n_lab * 3 * ny * nx)
    count_y = np.bincount((label * nz + zi) * nx + xi, minlength=n_lab * nz * nx)
    count_x = np.bincount(((label * nz + zi) * ny + yi) * 2 + xi // (nx // 2), minlength=n_lab * nz * ny * 2)
    z = count_z.reshape(n_lab, 3, ny, nx).astype(np.float32)
    y = count_y.reshape(n_lab, nz, nx).astype(np.float32)
    x = count_x.reshape(n_lab, nz, ny, 2).astype(np.float32)
    whole, regions = _whole_images(z, y, x), _region_images(z, y, x)
    extent = {"axial": nz, "coronal": ny, "sagittal": nx}  # ray length through the grid
    block_extent = {"axial": nz // 3, "coronal": ny, "sagittal": nx // 2}  # ... through a block
    whole = {a: np.moveaxis(whole[a], 0, -1) / np.float32(extent[a]) for a in AXES}
    regions = {a: np.moveaxis(regions[a], 0, -1) / np.float32(block_extent[a]) for a in AXES}
    return whole, regions


def project_scan(scan: GridScan, params: ProjectionParams, n_threads: int = 1) -> ScanImages:
    """All whole-scan and sub-region images (and truth maps) of a scan for every rotation.

    HU are rounded to whole HU once on the grid (the CT's own values are whole HU), so that the
    HU and the mask/window/sign code of a voxel travel together in one int32 through each
    rotation's gather.

    Parameters
    ----------
    scan : GridScan
        From :func:`to_grid`, on ``params.grid_shape``.
    params : ProjectionParams
    n_threads : int
        Rotations handled at once (numpy releases the GIL in the heavy loops). Use 1 inside
        worker processes that already fill the cores.

    Returns
    -------
    ScanImages
    """
    shape = params.grid_shape
    if scan.hu.shape != shape:
        raise ValueError(f"scan grid {scan.hu.shape} differs from params.grid_shape {shape}")
    n_threads = max(1, int(n_threads))
    rotations = params.rotations
    maps = augment.rotation_index_maps(shape, params.angles, n_threads=n_threads)
    scan = replace(scan, hu=np.rint(scan.hu))  # whole HU: windows are decided on what is stored
    packed = _pack(scan.hu, pack_codes(scan, params.windows))
    has_truth = scan.signs is not None

    channel_codes = _channel_codes(len(params.windows), params.whole_mask)

    def run(indices):
        ws = _Workspace(shape, len(channel_codes))
        out = {}
        for i in indices:
            hits, signs = _rotation_sums(ws, packed, maps[i], channel_codes, has_truth)
            truth = _truth_images(hits, signs, shape) if has_truth else ({}, {})
            out[i] = (*_rotation_images(ws, params), *truth)
        return out

    chunks = [list(range(len(rotations)))[k::n_threads] for k in range(n_threads)]
    results = {}
    if n_threads > 1:
        with ThreadPoolExecutor(n_threads) as pool:
            for part in pool.map(run, chunks):
                results.update(part)
    else:
        results = run(chunks[0])

    def stack(part):
        return {a: np.stack([results[i][part][a] for i in range(len(rotations))]) for a in AXES}

    return ScanImages(
        rotations=np.array(rotations, dtype=np.float32),
        whole=stack(0),
        regions=stack(1),
        whole_truth=stack(2) if has_truth else {},
        regions_truth=stack(3) if has_truth else {},
    )


def project_grid(scan: GridScan, params: ProjectionParams) -> ScanImages:
    """The images of ``scan`` as it is (no rotation): :func:`project_scan` with angles ``(0,)``."""
    single = ProjectionParams(**{**params.as_dict(), "angles": (0.0,)})
    return project_scan(scan, single)


def project_volume(
    ct: Volume,
    conservative: Volume,
    refined: Volume,
    signs: Volume | None,
    params: ProjectionParams,
    n_threads: int = 1,
) -> tuple[GridScan, ScanImages]:
    """:func:`to_grid` then :func:`project_scan`: a scan's images from its volumes."""
    scan = to_grid(ct, conservative, refined, signs, params.grid_shape)
    return scan, project_scan(scan, params, n_threads=n_threads)


def reference_images(scan: GridScan, params: ProjectionParams) -> ScanImages:
    """The images of the unrotated ``scan`` computed the plain way, with numpy masked arrays.

    A slow, obviously-correct reference for the tests and the benchmark: each image is a masked
    mean along an axis of a region's block (no packing, no slabs, no block-sum assembly). HU are
    rounded as in :func:`project_scan`.
    """
    hu = np.rint(scan.hu).astype(np.float64)
    windows = window_index(hu, params.windows)
    blocks = region_slices(hu.shape)

    def image(volume, mask, axis):
        sums = np.ma.masked_array(volume, ~mask).sum(axis=axis).filled(0.0)
        counts = mask.sum(axis=axis)
        return sums, counts

    def orient(img, axis):  # display orientation: z reversed on coronal and sagittal images
        return img if axis == 0 else img[::-1]

    lo, hi = params.whole_hu_range
    whole = {}
    for name, axis in AXES.items():
        s, n = image(hu, getattr(scan, params.whole_mask) > 0, axis)
        whole[name] = orient(_mean_image(s, n, lo, hi), axis)[None]
    regions = {name: np.zeros((1, 6, *_block_image_shape(params.block_shape, axis), len(params.windows)),
                              dtype=np.float32) for name, axis in AXES.items()}
    for r, region in enumerate(REGIONS):
        sl = blocks[region]
        for name, axis in AXES.items():
            counts = []
            for k, (lo_w, hi_w) in enumerate(params.windows):
                s, n = image(hu[sl], (scan.refined[sl] > 0) & (windows[sl] == k + 1), axis)
                regions[name][0, r, ..., k] = orient(_mean_image(s, n, lo_w, hi_w), axis)
                counts.append(orient(n, axis))
            if params.statistic == "weighted":
                total = np.sum(counts, axis=0)
                for k, n in enumerate(counts):
                    regions[name][0, r, ..., k] *= np.divide(n, total, out=np.zeros(n.shape), where=total > 0)
    return ScanImages(rotations=np.zeros((1, 3), dtype=np.float32), whole=whole, regions=regions)


def _block_image_shape(block_shape: tuple[int, int, int], axis: int) -> tuple[int, int]:
    return tuple(n for a, n in enumerate(block_shape) if a != axis)


def rgb(image: np.ndarray) -> np.ndarray:
    """A sub-region image ``(H, W, C)`` as RGB for display (windows -> R, G, B; missing -> 0)."""
    out = np.zeros((*image.shape[:2], 3), dtype=np.float32)
    out[..., : image.shape[-1]] = image[..., :3]
    return out


# ---------------------------------------------------------------------------------------------
# 3. Pixel encodings of the stored images


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Images in [0, 1] -> uint8 (``round(255 * v)``)."""
    return np.rint(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)


def truth_to_uint8(fraction: np.ndarray) -> np.ndarray:
    """Truth fractions in [0, 1] -> uint8, rounded but never 0 where the fraction is > 0."""
    out = to_uint8(fraction)
    out[(fraction > 0) & (out == 0)] = 1
    return out


def to_unit(values: np.ndarray) -> np.ndarray:
    """uint8 images or truth maps -> float32 in [0, 1]."""
    return np.asarray(values, dtype=np.float32) / np.float32(255.0)
