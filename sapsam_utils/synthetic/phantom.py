"""Synthetic chest CT phantoms with voxel-exact truth: the study's embedded default data.

:func:`make_phantom` turns a row of sparse labels (the 24 :data:`~sapsam_utils.core.regions.LABEL_COLUMNS`)
and a seed into a chest CT in Hounsfield units together with its truth: the lung envelope (right /
left), one label volume of the signs, and the labels that the signs imply.

Two seeds
---------
What belongs to the patient comes from ``anatomy_seed``: the body plan (:func:`draw_anatomy`),
hence the body, the lung envelope, the mediastinum, the spine and the airways; the parenchymal
texture; the vessel trees; the pre-existing condition of each sub-region
(:func:`preexisting_conditions`). What
belongs to one scan comes from ``seed``: where and how each sign is drawn, and the scanner
noise. The longitudinal scans of one patient therefore share one ``anatomy_seed`` and differ in
``seed`` (``phantom:<anatomy_seed>:<seed>`` in the manifest, :mod:`sapsam_utils.data.manifest`):
same body and lungs, signs that come and go. ``anatomy_seed`` defaults to ``seed``.

How a phantom is built
----------------------
Everything is defined in millimetres in a patient frame centred on the field of view (FOV), so a
phantom looks the same on any grid; the grid only samples it (the FOV is ``shape * spacing``).
Arrays are ``(z, y, x)`` in LPS (see :mod:`sapsam_utils.core.volume`): ``z`` upwards, ``y`` front to
back, ``x`` from the patient's right to left, so the right lung lies at low ``x``. In order:

1. **Patient** (:func:`draw_anatomy`): thoracic cavity size, fat and muscle thickness, lung
   height, dome heights, heart, mediastinum widths, spine, aorta, trachea, carina, ribs and
   stomach are drawn from the anatomy seed (lengths in mm; the lungs hold about 4-7 litres).
2. **Body**: a superellipse outline (a rounded rectangle, narrowing to the neck above the
   lungs) with subcutaneous fat and a muscle layer; ribs (bands of cortical bone around marrow
   in the chest wall, descending towards the front, with costal cartilage in front); sternum;
   mediastinal fat filling the thoracic cavity; liver / abdomen below the diaphragm and a
   stomach with a gas cap under the left dome (in most patients); the patient table (two thin
   curved shells) behind the body.
3. **Lung envelope** (:func:`_lung_envelope`): per lung and axial slice, an ellipse that shrinks
   into a rounded apex over the top 110 mm, clipped by the thoracic cavity (a cone, narrower at
   the top), above a diaphragm of two domes (right higher, posterior recess deepest), minus the
   mediastinum (narrow in front, widest around the trachea and great vessels above the heart),
   heart, aorta and spine. The envelope never depends on the labels: it is built first, then the
   lung box and the six sub-regions (:func:`sapsam_utils.core.regions.region_slices`) are computed
   from it, then the signs are planted inside it.
4. **Mediastinum and spine**: heart (anterior, left, resting on the left dome), ascending aorta,
   aortic arch and descending aorta; vertebral bodies (cortex, marrow, discs), spinal canal and
   posterior elements; the trachea from the top of the FOV to the carina and the two main
   bronchi to the hila (air lumen, soft-tissue wall).
5. **Parenchyma** (:func:`parenchyma_texture`, :func:`gravity_gradient`): ``PARENCHYMA_HU``
   (-865) plus uneven ventilation (a smooth field with 14 mm features, std 18 HU), a lobular /
   small-vessel micro-texture (6 mm features, std 50 HU, skewed to dense values: small vessels
   are bright spots; averaged down on grids coarser than 3 mm), both generated on one coarse
   grid and linearly upsampled once, and a front-to-back gravity gradient of
   ``GRAVITY_HU`` (38 HU) per cavity semi-axis: the dependent lung is denser, its posterior
   third ~45 HU above its anterior third, as in the four real CTs of ``../shared/ct`` (36-57 HU).
6. **Vessels**: one tree per lung (:func:`vessel_segments`), grown on a fixed 5 mm lattice (so
   it is the same on every grid) from the hilum by recursive halving of random points spread
   through the lung: each branch aims at the centre of the points it supplies and its radius
   follows Murray's law (``r ~ n ** (1 / 3)`` of the points supplied), so vessels thin towards
   the periphery. The root segment comes from the mediastinum. Tubes are drawn with
   partial-volume edges (thinner than a voxel: fainter), only inside the envelope; the larger
   branches carry a bronchus (air lumen, soft-tissue wall) beside them.
7. **Signs**, each only inside its sub-region of the envelope and at least ``REGION_MARGIN``
   (8 %) of the lung box's extent away from every inner cut of the box, so that it stays in its
   region when the box is re-estimated from a segmentation. Each sign is placed where it fits
   (distance to the envelope's outside from a distance transform on a ~5 mm sub-grid) and drawn
   inside a small box around it:

   * ``cavity``: a lobulated air space (``CAVITY_LUMEN``, -1000 HU), 1-4 cm across, inside a
     soft-tissue wall (code 2, ~+30 HU) whose thickness varies from 0.4 to 1.6 times its mean
     (2-7 mm);
   * ``fungus_ball``: a mottled soft-tissue ball (code 3, ~+45 HU with a few small air pockets)
     lying in a cavity's lumen on its dependent (posterior, the patient lies supine) side, with
     an air crescent (``CAVITY_LUMEN``) in front of it. A fungus ball **requires** the cavity
     label of the same region (otherwise ``ValueError``): its cavity's wall is cavity truth;
   * ``pleural_thickening``: a soft-tissue rind (code 4, ~+25 HU) of 3-8 mm of varying thickness
     along the costal pleura (the envelope's outer surface) over a patch 2-3.5 cm in radius. In
     an upper region it is usually (80 %) an apical cap. Behind it, outside the envelope, lies
     3-8 mm of extrapleural fat (-100 HU; at least two voxels): chronic pleural thickening comes
     with extrapleural fat, and that fat line is what shows a rind against the chest wall, which
     is as dense as the rind. The fat is not sign truth (it lies outside the lung);
   * ``preexisting`` (code 1): the patient's condition in that sub-region
     (:func:`preexisting_conditions`, see "Pre-existing conditions" below), drawn as one of
     :data:`PREEXISTING_KINDS`: emphysema (~-945 HU with clustered holes of ~-990 HU),
     consolidation (~+20 HU with air bronchograms), ground glass (~-600 HU, vessels still
     visible) or bronchiectasis (dilated air tubes with thick walls); an irregular blob 2-5 cm
     across. Its truth is the whole blob (for bronchiectasis: the tubes, walls and lumens).

   Within a region the cavity is placed first and drawn last and the blob keeps clear of it, so
   no sign erases another. Sign truth is always inside the envelope; the labels returned are
   checked to equal ``region_labels(signs, region_map(shape, lung_box(lungs)))``.
8. **Scanner**: a separable blur of ``blur_mm`` (the point spread: partial volume at every edge),
   then Gaussian noise of ``noise_hu``, lightly correlated in-plane as a reconstruction kernel
   makes it; values are rounded, clipped to [-1024, 3071] and stored as int16.

Pre-existing conditions
-----------------------
The paper lists the pre-existing (non-exclusive) lung diseases of its 276 CPA studies:
consolidation, bronchiectasis, emphysema, sarcoidosis, ground-glass opacities, cystic fibrosis and
other, with their counts (:data:`PREEXISTING_CONDITIONS`, read from ``book/paper_numbers.yaml``). A patient's condition in each of
the six sub-regions is drawn from these proportions by the anatomy seed, so it is the same in all
their scans: with probability :data:`PREEXISTING_SAME_CONDITION` it is the patient's main
condition (itself drawn from the proportions), otherwise a condition of its own; either way each
sub-region's condition follows the paper's proportions, and two sub-regions of a patient share
their condition about twice as often as independent draws would. A condition is drawn with the appearance of :data:`PREEXISTING_APPEARANCE`:
consolidation, bronchiectasis, emphysema and ground-glass opacities as themselves; cystic
fibrosis as bronchiectasis (its hallmark on CT); sarcoidosis as ground glass (its nodular and
ground-glass infiltrates); other conditions (post-tuberculous and other scarring, the commonest
setting of CPA) as consolidation.

Difficulty
----------
``difficulty`` (> 0; 0.5 easy, 1 default, 2 hard) scales lesion size by ``difficulty ** -0.5``,
lesion contrast against the parenchyma by ``min(1, difficulty ** -0.5)`` (air stays air) and the
noise by ``difficulty``.

Coarse grids
------------
So that every planted sign stays visible on a coarse grid (e.g. 6 mm voxels for CI smoke runs),
sign dimensions have minima in voxels of the grid's largest spacing ``h``: cavity wall >= 1 h,
lumen radius >= 1.2 h (2 h with a fungus ball), fungus-ball radius >= 0.8 h, rind thickness
>= 1.5 h, pre-existing blob radius >= 1.5 h. On such grids signs are larger in millimetres than on
the default grid. Where a sign does not fit whole into its region even at its minimum size, it
is cut by the region's margin box and the envelope (it is drawn only inside both).

Where the phantom is still unlike real CT
-----------------------------------------
Shapes are smooth analytic solids: no lobes or fissures, no secondary lobules, airways only to a
few generations, one vessel tree per lung (arteries and veins are not told apart), no arms,
scapulae, clavicles, breasts or axillary vessels, no contrast agent, beam hardening, streaks or
motion; the heart is a plain ellipsoid without chambers. Noise is stationary (real noise grows
towards the body's centre and along the shoulders). Signs are single shapes; real CPA shows
several lesions, fibrosis, volume loss and pleural changes that go together.

Parenchyma HU (:mod:`sapsam_utils.synthetic.realism`, eight control phantoms of ``data_manifest.csv`` on
the 108 x 128 x 128 grid of 3.0 x 2.8 x 2.8 mm against the four real CTs of ``../shared/ct``
measured on every second pixel in-plane, as in notebook 01): median -860 HU (real -879, -861,
-869, -815), interquartile range 72 HU (real 65, 67, 113, 130; before the micro-texture and the
stronger gradient: 49 HU), 19 % of the voxels below -900 HU (real 14-33 %; before: 10 %);
Wasserstein-1 distance phantom -> real 25 HU on average (before: 32 HU), where the real scans
are 39 HU from each other. Part of the real scans' width is fine-grained noise and texture that a
2.8 mm voxel averages out: averaged to about 2.8 mm in-plane, their interquartile ranges are 57,
63, 74 and 127 HU and the phantoms are 20 HU from them (before: 24 HU). What remains unlike:
the micro-texture is a random field, not a tree of small vessels and lobules; the real scans differ
from each other in inspiration depth and kernel (one is denser and wider, -815 HU and 130 HU),
which the phantoms do not vary; noise is white-ish and stationary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
from scipy import ndimage

from ..core.regions import (
    CAVITY_LUMEN,
    LABEL_COLUMNS,
    LABELS,
    LUNG_LEFT,
    LUNG_RIGHT,
    REGIONS,
    SIGN_CODES,
    lung_box,
    region_labels,
    region_map,
    region_slices,
)
from ..core.paper import paper_value
from ..core.volume import Volume

#: Fraction of the lung box's extent that a sign keeps away from each inner cut of the box.
REGION_MARGIN = 0.08
#: How the phantom can draw a pre-existing condition (see "Pre-existing conditions").
PREEXISTING_KINDS = ("emphysema", "consolidation", "ground_glass", "bronchiectasis")
#: The paper's pre-existing conditions: CPA studies with each (non-exclusive, of 276), in the
#: paper's order; the counts are the rows ``preexisting_*`` of :mod:`sapsam_utils.core.paper`.
PREEXISTING_CONDITIONS = {
    name: paper_value("01_cohort", f"preexisting_{name}")
    for name in ("consolidation", "bronchiectasis", "emphysema", "sarcoidosis", "ground_glass", "cystic_fibrosis",
                 "other")
}
#: The kind (:data:`PREEXISTING_KINDS`) that draws each condition.
PREEXISTING_APPEARANCE = {
    "consolidation": "consolidation", "bronchiectasis": "bronchiectasis", "emphysema": "emphysema",
    "sarcoidosis": "ground_glass", "ground_glass": "ground_glass", "cystic_fibrosis": "bronchiectasis",
    "other": "consolidation",
}
#: Probability that a sub-region's condition is the patient's main one.
PREEXISTING_SAME_CONDITION = 0.5

# Tissue classes of the anatomy, mapped to HU by _TISSUE_HU.
AIR, FAT, MUSCLE, SOFT, BLOOD, LIVER, BONE, MARROW, DISC, CSF, LUNG, TABLE = range(12)
#: Names of the values of ``Phantom.tissue``.
TISSUES = {
    "air": AIR, "fat": FAT, "muscle": MUSCLE, "soft_tissue": SOFT, "blood": BLOOD, "liver": LIVER,
    "cortical_bone": BONE, "cancellous_bone": MARROW, "disc": DISC, "csf": CSF, "lung": LUNG,
    "table": TABLE,
}
_TISSUE_HU = np.array(
    [-1000.0, -100.0, 45.0, 30.0, 40.0, 60.0, 900.0, 450.0, 80.0, 15.0, -865.0, 250.0], dtype=np.float32
)
PARENCHYMA_HU = -865.0
# Superellipse exponents of the body's and the thoracic cavity's cross-sections.
BODY_POWER, CAVITY_POWER = 2.5, 2.3
_SOFT_SIGN_HU = {"wall": 30.0, "ball": 45.0, "rind": 25.0}


@dataclass(frozen=True)
class Phantom:
    """A synthetic chest CT with its voxel-exact truth.

    Attributes
    ----------
    ct : Volume
        CT in HU, int16.
    lungs : Volume
        uint8 lung envelope: 0 outside, ``LUNG_RIGHT`` / ``LUNG_LEFT``; it includes every sign.
    signs : Volume
        uint8 sign truth: 0, :data:`~sapsam_utils.core.regions.SIGN_CODES` values, ``CAVITY_LUMEN``.
    labels : dict
        The 24 label columns implied by ``signs`` (equal to the requested labels).
    tissue : Volume
        uint8 anatomy classes (:data:`TISSUES`) before airways, vessels and signs were drawn:
        for realism measurements (e.g. body size) and tests.
    details : dict
        What was drawn: the pre-existing condition of each sub-region and, per planted sign, its centre (voxel index) and
        size in mm. For figures and diagnostics; not part of the truth contract.
    """

    ct: Volume
    lungs: Volume
    signs: Volume
    labels: dict
    tissue: Volume | None = None
    details: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Anatomy:
    """One patient's body plan, all lengths in mm in the FOV-centred frame (z up, y back, x left)."""

    body_ax: float  # body semi-axis, left-right
    body_ay: float  # body semi-axis, front-back
    body_cy: float  # body centre, y
    fat: float  # subcutaneous fat thickness
    muscle: float  # chest-wall muscle thickness
    cav_ax: float  # thoracic cavity (inside the ribs) semi-axis, x
    cav_ay: float  # thoracic cavity semi-axis, y
    cav_cy: float  # thoracic cavity centre, y
    midline: float  # x of the mediastinum's midline
    z_top: float  # lung apex
    z_bot: float  # deepest (posterior) costophrenic recess
    dome_right: float  # height of the right diaphragm dome above z_bot
    dome_left: float
    med_front: float  # mediastinum half-width at the front
    med_back: float  # mediastinum half-width at the back
    med_middle: float  # extra half-width around the trachea and great vessels, above the heart
    heart: tuple  # centre (z, y, x) and semi-axes (z, y, x)
    stomach: tuple | None  # centre and semi-axes, or None (no gas-filled stomach in the FOV)
    spine_r: float  # vertebral body radius
    spine_y: float  # vertebral body centre, y
    disc_pitch: float  # vertebral level height
    aorta_r: float
    aorta_x: float  # descending aorta centre, x
    aorta_y: float
    trachea_r: float
    trachea_y: float
    carina_z: float
    rib_pitch: float
    rib_slope: float  # how much the ribs descend (mm of z) per mm towards the front


def draw_anatomy(seed: int) -> Anatomy:
    """Draw one patient's body plan from the seed.

    Parameters
    ----------
    seed : int
        Patient seed.

    Returns
    -------
    Anatomy
    """
    rng = np.random.default_rng([seed, 1])
    u = rng.uniform
    # The thoracic cavity first (it sets the lung size), then the chest wall around it.
    cav_ax = u(122.0, 142.0)
    cav_ay = cav_ax * u(0.64, 0.74)
    fat, muscle = u(5.0, 16.0), u(8.0, 14.0)
    wall_side = fat + muscle + 9.0
    wall_front = fat + 0.6 * muscle + 8.0
    wall_back = fat + muscle + 18.0
    body_cy = u(-6.0, 6.0)
    body_ax = cav_ax + wall_side
    body_ay = cav_ay + (wall_front + wall_back) / 2
    cav_cy = body_cy + (wall_front - wall_back) / 2
    height = u(260.0, 295.0)
    mid_z = u(-8.0, 8.0)
    z_top, z_bot = mid_z + height / 2, mid_z - height / 2
    dome_right = u(50.0, 68.0)
    dome_left = dome_right - u(10.0, 20.0)
    midline = u(-5.0, 5.0)
    heart_axes = (u(55.0, 66.0), u(45.0, 55.0), u(55.0, 65.0))
    heart_centre = (z_bot + dome_left + 0.6 * heart_axes[0], cav_cy - 0.3 * cav_ay, midline + u(20.0, 32.0))
    stomach = None
    if rng.random() < 0.7:
        st_axes = (u(22.0, 35.0), u(30.0, 45.0), u(30.0, 45.0))
        st_centre = (z_bot + dome_left - st_axes[0] - 3.0, cav_cy - 0.25 * cav_ay, midline + 0.45 * cav_ax)
        stomach = (st_centre, st_axes)
    spine_r = u(16.0, 20.0)
    spine_y = cav_cy + cav_ay - 1.7 * spine_r  # the vertebral body bulges into the cavity
    aorta_r = u(11.0, 14.0)
    trachea_r = u(7.5, 9.5)
    return Anatomy(
        body_ax=body_ax, body_ay=body_ay, body_cy=body_cy, fat=fat, muscle=muscle,
        cav_ax=cav_ax, cav_ay=cav_ay, cav_cy=cav_cy, midline=midline, z_top=z_top, z_bot=z_bot,
        dome_right=dome_right, dome_left=dome_left, med_front=u(4.0, 9.0), med_back=u(13.0, 18.0),
        med_middle=u(10.0, 20.0),
        heart=(heart_centre, heart_axes), stomach=stomach, spine_r=spine_r, spine_y=spine_y,
        disc_pitch=u(24.0, 28.0), aorta_r=aorta_r, aorta_x=midline + spine_r + 0.4 * aorta_r,
        aorta_y=spine_y - 0.9 * spine_r, trachea_r=trachea_r,
        trachea_y=spine_y - spine_r - 14.0 - trachea_r, carina_z=z_top - u(75.0, 95.0),
        rib_pitch=u(24.0, 29.0), rib_slope=u(0.3, 0.5),
    )


# ----------------------------------------------------------------------------------------------
# Grid helpers
# ----------------------------------------------------------------------------------------------


def grid_axes(shape, spacing) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel-centre coordinates (mm, float32) along z, y, x, with 0 at the centre of the FOV."""
    return tuple(((np.arange(n) - (n - 1) / 2) * s).astype(np.float32) for n, s in zip(shape, spacing))


def _index_range(axis_mm: np.ndarray, lo: float, hi: float) -> slice:
    """Indices of the voxels whose centre lies in ``[lo, hi]`` (an empty slice if none)."""
    start = int(np.searchsorted(axis_mm, lo, side="left"))
    stop = int(np.searchsorted(axis_mm, hi, side="right"))
    return slice(start, max(start, stop))


def _ellipse_r2(y, x, cy, cx, ay, ax, power=2.0) -> np.ndarray:
    """``|(y - cy) / ay| ** power + |(x - cx) / ax| ** power`` broadcast to ``(len(ay), len(y), len(x))``.

    ``ay``, ``ax``, ``cy``, ``cx`` are scalars or per-slice arrays (one value per z). ``power``
    above 2 gives a superellipse, a rounded rectangle like a body's cross-section. The two terms
    are computed on ``(nz, ny)`` and ``(nz, nx)`` planes, so only their sum costs a full volume.
    """
    per_z = lambda v: np.asarray(v, dtype=np.float32).reshape(-1, 1, 1)  # noqa: E731
    ty = np.abs((y[None, :, None] - per_z(cy)) / per_z(ay)) ** power
    tx = np.abs((x[None, None, :] - per_z(cx)) / per_z(ax)) ** power
    return ty + tx


def upsample_linear(small: np.ndarray, shape) -> np.ndarray:
    """Separable linear interpolation of a coarse grid (spanning the same FOV) to ``shape``.

    Much faster than :func:`scipy.ndimage.zoom` for large outputs: the two in-plane axes are
    interpolated on the small array, the last step along ``z`` gathers whole slices.
    """
    out = small.astype(np.float32)
    for axis in (2, 1, 0):
        n_small, n = out.shape[axis], shape[axis]
        pos = np.linspace(0.0, n_small - 1.0, n, dtype=np.float32)
        i0 = np.minimum(pos.astype(np.int64), n_small - 2) if n_small > 1 else np.zeros(n, np.int64)
        w = (pos - i0).astype(np.float32) if n_small > 1 else np.zeros(n, np.float32)
        i1 = np.minimum(i0 + 1, n_small - 1)
        wshape = [1, 1, 1]
        wshape[axis] = n
        w = w.reshape(wshape)
        a = np.take(out, i0, axis=axis)
        b = np.take(out, i1, axis=axis)
        b -= a
        b *= w
        a += b
        out = a
    return out


def smooth_field(rng, shape, spacing, scale_mm: float) -> np.ndarray:
    """A smooth random field of unit standard deviation with features of about ``scale_mm``.

    White noise on a coarse grid (``scale_mm / 2`` spacing) is Gaussian-filtered and linearly
    upsampled to ``shape``.
    """
    coarse = [max(4, int(round(n * s / (scale_mm / 2))) + 1) for n, s in zip(shape, spacing)]
    noise = ndimage.gaussian_filter(rng.standard_normal(coarse).astype(np.float32), 1.0, mode="wrap")
    noise /= noise.std() + 1e-6
    return upsample_linear(noise, shape)


#: Parenchymal texture (HU offsets, standard deviations): regional ventilation (features of
#: ``VENTILATION_MM``) and lobular / small-vessel micro-texture (features of ``MICRO_MM``).
VENTILATION_MM, VENTILATION_HU = 14.0, 18.0
MICRO_MM, MICRO_HU, MICRO_SKEW = 6.0, 50.0, 0.8
#: Gravity gradient (supine patient): HU added at the back of the thoracic cavity, subtracted at
#: its front, linearly in between.
GRAVITY_HU = 38.0


def parenchyma_texture(rng, shape, spacing) -> np.ndarray:
    """HU offsets of the lung parenchyma on a grid of ``shape``: regional and lobular texture.

    Two random fields are summed on one coarse grid and upsampled once (:func:`upsample_linear`):
    a smooth Gaussian field with features of ``VENTILATION_MM`` (uneven ventilation, std
    ``VENTILATION_HU``) and a micro-texture with features of ``MICRO_MM`` (secondary lobules, small
    vessels below the voxel size), skewed towards dense values (``exp(MICRO_SKEW * g)``, g Gaussian:
    small vessels are bright spots, the air between them slightly darker than average). Its
    standard deviation is ``MICRO_HU`` where the voxels resolve it and falls as
    ``sqrt(cell volume / voxel volume)`` on coarser grids, since a large voxel averages it out.

    Parameters
    ----------
    rng : numpy.random.Generator
        The patient's texture generator (from the anatomy seed).
    shape : tuple of int
        Grid ``(z, y, x)`` to fill (the lung box).
    spacing : tuple of float
        Voxel size in mm ``(z, y, x)``.

    Returns
    -------
    numpy.ndarray
        float32 HU offsets of ``shape``, mean about 0.
    """
    cell = MICRO_MM / 2  # coarse spacing: two cells per feature, as in smooth_field
    coarse_step = [max(cell, s) for s in spacing]
    coarse = tuple(max(4, int(round(n * s / c)) + 1) for n, s, c in zip(shape, spacing, coarse_step))
    g = ndimage.gaussian_filter(rng.standard_normal(coarse).astype(np.float32), 1.0, mode="wrap")
    g /= g.std() + 1e-6
    micro = np.exp(MICRO_SKEW * g)
    micro -= micro.mean()  # it moves density around but adds none
    micro *= MICRO_HU * np.sqrt(np.prod([cell / c for c in coarse_step])) / (micro.std() + 1e-6)
    micro += VENTILATION_HU * smooth_field(rng, coarse, coarse_step, VENTILATION_MM)
    return upsample_linear(micro, shape)


def gravity_gradient(y_mm: np.ndarray, anat: Anatomy) -> np.ndarray:
    """HU offsets along ``y`` (front to back): the dependent (posterior) lung is denser.

    Parameters
    ----------
    y_mm : numpy.ndarray
        ``y`` coordinates (mm, FOV-centred, :func:`grid_axes`).
    anat : Anatomy
        The patient: the offset is ``GRAVITY_HU * (y - cav_cy) / cav_ay``, 0 at the cavity's centre.

    Returns
    -------
    numpy.ndarray
        HU offsets, one per ``y``.
    """
    return GRAVITY_HU * (y_mm - anat.cav_cy) / anat.cav_ay


# ----------------------------------------------------------------------------------------------
# Anatomy
# ----------------------------------------------------------------------------------------------


def _smoothstep(t):
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _body_profile(anat: Anatomy, z: np.ndarray):
    """Per-slice body semi-axes and centre: the chest, narrowing to the neck above the apex."""
    neck = _smoothstep((z - (anat.z_top - 5.0)) / 40.0)  # 0 in the chest, 1 in the neck
    ax = anat.body_ax * (1 - neck) + 62.0 * neck
    ay = anat.body_ay * (1 - neck) + 58.0 * neck
    cy = anat.body_cy * (1 - neck) + (anat.trachea_y + 10.0) * neck
    # The abdomen below the lungs is a little narrower than the chest.
    belly = _smoothstep((anat.z_bot + 20.0 - z) / 60.0)
    ax = ax * (1 - 0.06 * belly)
    return ax.astype(np.float32), ay.astype(np.float32), cy.astype(np.float32)


def _cavity_profile(anat: Anatomy, z: np.ndarray):
    """Per-slice semi-axes of the thoracic cavity (inside the ribs); it closes above the apex."""
    top = _smoothstep((z - (anat.z_top - 40.0)) / 50.0)
    # The rib cage is a cone: about 15 % narrower at the apex than at the base.
    cone = 1.0 - 0.15 * np.clip((z - anat.z_bot) / (anat.z_top - anat.z_bot), 0.0, 1.0)
    ax = anat.cav_ax * cone * (1 - 0.45 * top)
    ay = anat.cav_ay * (1 - 0.3 * top)
    return ax.astype(np.float32), ay.astype(np.float32)


def _diaphragm_z(anat: Anatomy, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Height (mm) of the diaphragm's top surface at each ``(y, x)``: two domes, right higher.

    Each dome peaks over the middle of its hemithorax; it falls to the deepest recess laterally
    and posteriorly, and the anterior recess stays higher than the posterior one.
    """
    yy, xx = y[:, None], x[None, :]
    out = np.full((len(y), len(x)), anat.z_bot, dtype=np.float32)
    front = np.clip((anat.cav_cy - yy) / anat.cav_ay, 0.0, 1.0)  # 1 at the front, 0 behind centre
    for side, height in ((-1, anat.dome_right), (1, anat.dome_left)):
        cx = anat.midline + side * 0.45 * anat.cav_ax
        cy = anat.cav_cy - 0.1 * anat.cav_ay
        r2 = ((xx - cx) / (0.62 * anat.cav_ax)) ** 2 + ((yy - cy) / (0.95 * anat.cav_ay)) ** 2
        dome = height * np.clip(1.0 - r2, 0.0, 1.0) ** 0.7 + 20.0 * front
        on_side = (xx - anat.midline) * side >= 0
        out = np.where(on_side, np.maximum(out, anat.z_bot + dome), out)
    return out


def _lung_envelope(anat: Anatomy, axes) -> np.ndarray:
    """The true lung envelope, uint8 0 / LUNG_RIGHT / LUNG_LEFT, before any vessel or sign."""
    z, y, x = axes
    shape = (len(z), len(y), len(x))
    env = np.zeros(shape, dtype=np.uint8)
    zs = _index_range(z, anat.z_bot, anat.z_top)
    ys = _index_range(y, anat.cav_cy - anat.cav_ay, anat.cav_cy + anat.cav_ay)
    xs = _index_range(x, anat.midline - anat.cav_ax, anat.midline + anat.cav_ax)
    if zs.stop <= zs.start or ys.stop <= ys.start or xs.stop <= xs.start:
        return env
    zz, yy, xx = z[zs], y[ys], x[xs]
    cav_ax, cav_ay = _cavity_profile(anat, zz)
    inside = _ellipse_r2(yy, xx, anat.cav_cy, anat.midline, cav_ay, cav_ax, CAVITY_POWER) < 1.0
    # Rounded apex: over its top 110 mm each lung's cross-section shrinks towards its apex.
    dome = np.clip((zz - (anat.z_top - 110.0)) / 110.0, 0.0, 1.0)
    shrink = np.sqrt(np.clip(1.0 - dome**2, 0.0, 1.0)).astype(np.float32)
    above = zz[:, None, None] > _diaphragm_z(anat, yy, xx)[None]
    inside &= above
    # Mediastinum: a band around the midline, narrow in front (the anterior junction), wider
    # behind, and widest around the trachea and great vessels above the heart.
    front = np.clip((yy - (anat.cav_cy - anat.cav_ay)) / (2 * anat.cav_ay), 0.0, 1.0)
    half_w = anat.med_front + (anat.med_back - anat.med_front) * front[None, :]
    superior = _smoothstep((zz - anat.heart[0][0]) / 40.0)[:, None]
    middle = np.exp(-(((yy - anat.trachea_y + 10.0) / 35.0) ** 2))[None, :]
    half_w = half_w + anat.med_middle * superior * middle
    # Around the ascending aorta (heart to arch) the front of the mediastinum is wider.
    hz = anat.heart[0][0]
    vessels = (_smoothstep((zz - hz) / 20.0) * (1 - _smoothstep((zz - anat.carina_z - 20.0) / 20.0)))[:, None]
    half_w = half_w + (anat.aorta_r + 6.0) * vessels * (1 - front[None, :])
    inside &= np.abs(xx[None, None, :] - anat.midline) > half_w[:, :, None]
    organs = ((_heart_mask, _heart_box(anat, (zz, yy, xx))), (_aorta_mask, _aorta_box(anat, (zz, yy, xx), 2.0)))
    for mask_fn, box in organs:  # each computed only in its own box
        inside[box] &= ~mask_fn(anat, zz[box[0]], yy[box[1]], xx[box[2]], 2.0)
    # The spine and its posterior elements: the lungs fill the gutters on either side.
    r = anat.spine_r
    inside &= _ellipse_r2(yy, xx, anat.spine_y + r, anat.midline, 2 * r + 6, 1.1 * r + 6) >= 1.0
    out = np.zeros(inside.shape, dtype=np.uint8)
    for side, value in ((-1, LUNG_RIGHT), (1, LUNG_LEFT)):
        cx = anat.midline + side * anat.cav_ax * (0.5 - 0.1 * dome)
        cy = anat.cav_cy + 0.05 * anat.cav_ay + 0.2 * anat.cav_ay * dome
        ay = 1.1 * anat.cav_ay * shrink + 1e-3
        ax = 0.6 * anat.cav_ax * shrink + 1e-3
        lobe = _ellipse_r2(yy, xx, cy, cx, ay, ax) < 1.0
        lobe &= ((xx - anat.midline) * side > 0)[None, None, :]
        out[lobe & inside] = value
    env[zs, ys, xs] = out
    return env


def _heart_box(anat: Anatomy, axes) -> tuple:
    """Index box (on ``axes``) that holds the heart."""
    (cz, cy, cx), (az, ay, ax) = anat.heart
    return tuple(_index_range(a, c - r, c + r) for a, c, r in zip(axes, (cz, cy, cx), (az, ay, ax)))


def _heart_mask(anat: Anatomy, z, y, x, margin: float = 0.0) -> np.ndarray:
    """The heart: an ellipsoid resting on the left dome (``margin`` mm is ignored)."""
    (cz, cy, cx), (az, ay, ax) = anat.heart
    return ((z[:, None, None] - cz) / az) ** 2 + _ellipse_r2(y, x, cy, cx, ay, ax) < 1.0


def _aorta_axes(anat: Anatomy):
    """Height of the arch and the ``(y, x)`` of the ascending and descending aorta (mm)."""
    hy = anat.heart[0][1]
    ascending = np.array([hy - 5.0, anat.midline + 4.0])
    return anat.carina_z + 12.0, ascending, np.array([anat.aorta_y, anat.aorta_x])


def _aorta_box(anat: Anatomy, axes, margin: float = 0.0) -> tuple:
    """Index box (on ``axes``) that holds the aorta grown by ``margin`` mm."""
    arch_z, asc, desc = _aorta_axes(anat)
    r = anat.aorta_r + margin
    top = arch_z + np.linalg.norm(desc - asc) / 2 + r
    lo, hi = np.minimum(asc, desc) - r, np.maximum(asc, desc) + r
    return (
        _index_range(axes[0], -np.inf, top),
        _index_range(axes[1], lo[0], hi[0]),
        _index_range(axes[2], lo[1], hi[1]),
    )


def _aorta_mask(anat: Anatomy, z, y, x, margin: float = 0.0) -> np.ndarray:
    """Ascending aorta, arch and descending aorta, as one boolean mask on the given axes."""
    r = anat.aorta_r + margin
    hz = anat.heart[0][0]
    arch_z, asc, desc = _aorta_axes(anat)
    zz = z[:, None, None]
    tube_asc = (_ellipse_r2(y, x, asc[0], asc[1], r, r) < 1.0) & (zz > hz) & (zz <= arch_z)
    tube_desc = (_ellipse_r2(y, x, desc[0], desc[1], r, r) < 1.0) & (zz <= arch_z)
    # The arch: half a torus in the vertical plane through both tubes' axes.
    centre = (asc + desc) / 2
    half_span = np.linalg.norm(desc - asc) / 2
    u = (desc - asc) / (2 * half_span)
    a = (y[None, :, None] - centre[0]) * u[0] + (x[None, None, :] - centre[1]) * u[1]
    c = -(y[None, :, None] - centre[0]) * u[1] + (x[None, None, :] - centre[1]) * u[0]
    b = np.maximum(zz - arch_z, 0.0)
    ring = (np.sqrt(a**2 + b**2) - half_span) ** 2 + c**2 < r**2
    arch = ring & (zz > arch_z)
    return tube_asc | tube_desc | arch


def _paint_body(anat: Anatomy, axes) -> np.ndarray:
    """Tissue classes of everything but the lungs and airways (uint8, see the tissue constants)."""
    z, y, x = axes
    shape = (len(z), len(y), len(x))
    tissue = np.zeros(shape, dtype=np.uint8)
    bax, bay, bcy = _body_profile(anat, z)
    r2 = _ellipse_r2(y, x, bcy, anat.midline * 0.5, bay, bax, BODY_POWER)
    tissue[r2 < 1.0] = FAT
    r2 = _ellipse_r2(y, x, bcy, anat.midline * 0.5, bay - anat.fat, bax - anat.fat, BODY_POWER)
    tissue[r2 < 1.0] = MUSCLE
    _paint_table(anat, axes, tissue)
    # Thoracic cavity (with its rib cage) in the chest's z range only.
    zs = _index_range(z, anat.z_bot - 80.0, anat.z_top + 30.0)
    zz = z[zs]
    cax, cay = _cavity_profile(anat, zz)
    rc2 = _ellipse_r2(y, x, anat.cav_cy, anat.midline, cay, cax, CAVITY_POWER)
    sub = tissue[zs]
    # Ribs: a shell just outside the cavity, cut into bands that descend towards the front;
    # cortical bone around a marrow core.
    phase = (zz[:, None] + anat.rib_slope * (y[None, :] - (anat.cav_cy + anat.cav_ay))) / anat.rib_pitch
    phase -= np.floor(phase)
    behind_cartilage = y[None, :] > anat.cav_cy - 0.75 * anat.cav_ay  # costal cartilage in front
    ribs_z = ((zz > anat.z_bot - 20.0) & (zz < anat.z_top + 10.0))[:, None]
    rib = ((phase < 0.36) & behind_cartilage & ribs_z)[:, :, None] & (rc2 >= 1.02) & (rc2 < 1.14)
    sub[rib] = BONE
    core_band = (phase > 0.07) & (phase < 0.29) & behind_cartilage & ribs_z
    core = core_band[:, :, None] & (rc2 >= 1.04) & (rc2 < 1.12)
    sub[core] = MARROW
    cavity = rc2 < 1.0
    sub[cavity] = FAT  # mediastinal fat; organs are painted into it below
    # Sternum: a bony plate at the front of the chest.
    ys = _index_range(y, anat.cav_cy - anat.cav_ay - 14.0, anat.cav_cy - anat.cav_ay + 2.0)
    xs = _index_range(x, anat.midline - 14.0, anat.midline + 14.0)
    zst = (zz > anat.carina_z - 150.0) & (zz < anat.carina_z + 40.0)
    st = sub[:, ys, xs]
    st[zst] = np.where(st[zst] == FAT, FAT, MARROW)
    # Liver and abdomen below the diaphragm (inside the cavity's outline).
    below = zz[:, None, None] <= _diaphragm_z(anat, y, x)[None]
    sub[cavity & below] = LIVER
    _paint_stomach(anat, (zz, y, x), sub)
    _paint_mediastinum(anat, (zz, y, x), sub)
    _paint_spine(anat, axes, tissue)
    return tissue


def _paint_table(anat: Anatomy, axes, tissue: np.ndarray) -> None:
    """The patient table behind the body: two thin curved shells (outside the body only)."""
    z, y, x = axes
    back = anat.body_cy + anat.body_ay + 4.0
    ys = _index_range(y, back - 40.0, back + 60.0)
    if ys.stop <= ys.start:
        return
    curve = back - 0.0009 * (x - anat.midline) ** 2  # the table curves up at its sides
    depth = y[ys][:, None] - curve[None, :]
    thick = max(3.0, 1.01 * float(y[1] - y[0]))  # at least one voxel, so coarse grids show it whole
    shells = ((depth >= 0) & (depth < thick)) | ((depth >= 45.0) & (depth < 45.0 + thick))
    sub = tissue[:, ys]
    np.copyto(sub, np.uint8(TABLE), where=shells[None] & (sub == AIR))


def _paint_stomach(anat: Anatomy, axes, tissue: np.ndarray) -> None:
    """The stomach under the left dome, with a gas cap at its front (the patient lies supine)."""
    if anat.stomach is None:
        return
    z, y, x = axes
    (cz, cy, cx), (az, ay, ax) = anat.stomach
    zs, ys, xs = (_index_range(a, c - r, c + r) for a, c, r in zip(axes, (cz, cy, cx), (az, ay, ax)))
    sub = tissue[zs, ys, xs]
    inside = ((z[zs][:, None, None] - cz) / az) ** 2 + _ellipse_r2(y[ys], x[xs], cy, cx, ay, ax) < 1.0
    inside &= sub == LIVER
    sub[inside] = SOFT
    gas = inside & (y[ys] < cy - 0.3 * ay)[None, :, None]
    sub[gas] = AIR


def _paint_mediastinum(anat: Anatomy, axes, tissue: np.ndarray) -> None:
    """Heart and aorta into ``tissue`` (in place)."""
    z, y, x = axes
    (cz, cy, cx), (az, ay, ax) = anat.heart
    zs = _index_range(z, cz - az, cz + az)
    ys = _index_range(y, cy - ay, cy + ay)
    xs = _index_range(x, cx - ax, cx + ax)
    sub = tissue[zs, ys, xs]
    sub[_heart_mask(anat, z[zs], y[ys], x[xs])] = BLOOD
    zs, ys, xs = _aorta_box(anat, axes)
    sub = tissue[zs, ys, xs]
    sub[_aorta_mask(anat, z[zs], y[ys], x[xs])] = BLOOD


def _paint_spine(anat: Anatomy, axes, tissue: np.ndarray) -> None:
    """Vertebral bodies (cortex, marrow, discs), spinal canal and posterior elements (in place)."""
    z, y, x = axes
    r = anat.spine_r
    ys = _index_range(y, anat.spine_y - r - 1, anat.spine_y + r + 60.0)
    xs = _index_range(x, anat.midline - 40.0, anat.midline + 40.0)
    yy, xx = y[ys], x[xs]
    sub = tissue[:, ys, xs]
    body = _ellipse_r2(yy, xx, anat.spine_y, anat.midline, r, r * 1.1)[0]
    marrow = _ellipse_r2(yy, xx, anat.spine_y, anat.midline, r - 2.5, r * 1.1 - 2.5)[0]
    canal_y = anat.spine_y + r + 9.0
    canal = _ellipse_r2(yy, xx, canal_y, anat.midline, 8.0, 9.0)[0]
    arch = _ellipse_r2(yy, xx, canal_y + 4.0, anat.midline, 17.0, 22.0)[0]
    spinous = _ellipse_r2(yy, xx, canal_y + 30.0, anat.midline, 14.0, 4.0)[0]
    plane = np.zeros(body.shape, dtype=np.uint8)
    plane[(arch < 1.0) | (spinous < 1.0)] = BONE
    plane[body < 1.0] = BONE
    plane[marrow < 1.0] = MARROW
    plane[canal < 1.0] = CSF
    level = (z - anat.z_bot) / anat.disc_pitch
    disc = (level - np.floor(level)) < 0.22
    disc_plane = plane.copy()
    disc_plane[body < 1.0] = DISC
    disc_plane[(arch < 1.0) & (canal >= 1.0) & (body >= 1.0)] = MUSCLE
    keep = sub != AIR  # the spine stays inside the body
    spine = np.where(disc[:, None, None], disc_plane[None], plane[None])
    np.copyto(sub, spine, where=keep & (spine != AIR))


def _airway_tubes(anat: Anatomy, hila) -> list[tuple]:
    """Trachea and main bronchi as capsules ``(start, end, lumen radius, wall)`` in mm (z, y, x)."""
    top = np.array([anat.z_top + 200.0, anat.trachea_y, anat.midline])
    carina = np.array([anat.carina_z, anat.trachea_y, anat.midline])
    tubes = [(top, carina, anat.trachea_r, 2.0)]
    for hilum, radius in zip(hila, (0.8 * anat.trachea_r, 0.7 * anat.trachea_r)):
        tubes.append((carina, np.asarray(hilum), radius, 1.8))
    return tubes


# ----------------------------------------------------------------------------------------------
# Tubes (vessels, airways) with partial-volume edges
# ----------------------------------------------------------------------------------------------


def _capsule_box(axes, a, b, reach):
    """Index box around the capsule from ``a`` to ``b`` (mm) padded by ``reach`` mm."""
    lo, hi = np.minimum(a, b) - reach, np.maximum(a, b) + reach
    box = []
    for ax, l, h in zip(axes, lo, hi):
        step = float(ax[1] - ax[0]) if len(ax) > 1 else 1.0
        start = max(0, int(np.ceil((l - ax[0]) / step)))
        stop = min(len(ax), int(np.floor((h - ax[0]) / step)) + 1)
        box.append(slice(start, max(start, stop)))
    return tuple(box)


def _capsule_distance(axes, box, a, b) -> np.ndarray:
    """Distance (mm) from each voxel centre of ``box`` to the segment ``a``-``b``."""
    z, y, x = (ax[s] for ax, s in zip(axes, box))
    d = np.asarray(b, dtype=np.float32) - np.asarray(a, dtype=np.float32)
    pz, py, px = z[:, None, None] - a[0], y[None, :, None] - a[1], x[None, None, :] - a[2]
    length2 = float(d @ d) + 1e-9
    t = np.clip((pz * d[0] + py * d[1] + px * d[2]) / length2, 0.0, 1.0)
    return np.sqrt((pz - t * d[0]) ** 2 + (py - t * d[1]) ** 2 + (px - t * d[2]) ** 2)


def _coverage(distance, radius, blur) -> np.ndarray:
    """Fraction of a voxel covered by a tube of ``radius``: a linear ramp of width ``blur``,
    damped for tubes thinner than a voxel (their partial volume never reaches the full value)."""
    cover = np.clip((radius - distance) / blur + 0.5, 0.0, 1.0)
    if 2 * radius < blur:
        cover *= 2 * radius / blur
    return cover


def _paint_tube(hu, where, axes, a, b, radius, value, blur) -> None:
    """Blend a tube of HU ``value`` into ``hu`` (in place) where the boolean ``where`` holds
    (everywhere when ``where`` is None)."""
    box = _capsule_box(axes, a, b, radius + blur)
    if any(s.stop <= s.start for s in box):
        return
    cover = _coverage(_capsule_distance(axes, box, a, b), radius, blur)
    if where is not None:
        cover *= where[box]
    sub = hu[box]
    sub += (value - sub) * cover


# ----------------------------------------------------------------------------------------------
# Vessel tree
# ----------------------------------------------------------------------------------------------


def _grow_tree(rng, start, points, radius, min_points, out, depth=0):
    """Recursive halving tree; appends ``(start, end, radius)`` segments (mm) to ``out``."""
    centroid = points.mean(axis=0)
    n = len(points)
    if n <= min_points or depth > 14:
        out.append((start, points[rng.integers(n)] if n > 1 else centroid, radius))
        return
    end = start + rng.uniform(0.35, 0.55) * (centroid - start)
    out.append((start, end, radius))
    centred = points - centroid
    # Split across the points' longest direction (power iteration on the covariance).
    axis = centred[rng.integers(n)] + 1e-3
    cov = centred.T @ centred
    for _ in range(4):
        axis = cov @ axis
        axis /= np.linalg.norm(axis) + 1e-12
    proj = centred @ axis
    cut = np.median(proj)
    for half in (points[proj <= cut], points[proj > cut]):
        if len(half):
            child_r = radius * (len(half) / n) ** (1 / 3)
            _grow_tree(rng, end, half, child_r, min_points, out, depth + 1)


def vessel_segments(
    rng, env_points_mm: np.ndarray, hilum, root_radius: float, n_points: int = 400, trunk=None
) -> list[tuple]:
    """Segments ``(start, end, radius)`` of one lung's vessel tree, grown from ``hilum``.

    Parameters
    ----------
    rng : numpy.random.Generator
    env_points_mm : numpy.ndarray
        ``(n, 3)`` positions (mm, z y x) inside this lung, from which targets are drawn.
    hilum : array-like
        Root position (mm).
    root_radius : float
        Radius (mm) of the root segment.
    n_points : int
        Number of target points: the tree has about ``2 * n_points`` segments.
    trunk : array-like, optional
        A point in the mediastinum; the root segment then runs from it to the hilum.
    """
    pick = rng.choice(len(env_points_mm), size=min(n_points, len(env_points_mm)), replace=False)
    points = env_points_mm[pick] + rng.uniform(-1.0, 1.0, (len(pick), 3))
    hilum = np.asarray(hilum, dtype=np.float64)
    out = [] if trunk is None else [(np.asarray(trunk, dtype=np.float64), hilum, root_radius)]
    _grow_tree(rng, hilum, points, root_radius, 1, out)
    return out


# ----------------------------------------------------------------------------------------------
# Signs
# ----------------------------------------------------------------------------------------------


@dataclass
class _Context:
    """What sign planting needs to know about the grid and the envelope."""

    axes: tuple
    spacing: tuple
    env: np.ndarray  # bool envelope
    coarse_step: tuple  # stride of the coarse grid
    coarse_dist: np.ndarray  # distance (mm) to the outside of the envelope, coarse grid
    h: float  # the grid's largest spacing
    size: float  # lesion size factor from difficulty
    contrast: float  # lesion contrast factor from difficulty
    midline: float


def _allowed_box(region: tuple, box: tuple) -> tuple:
    """The region's slices shrunk by ``REGION_MARGIN`` of the box extent at each inner cut."""
    out = []
    for axis, (rs, bs) in enumerate(zip(region, box)):
        if axis == 1:
            out.append(rs)
            continue
        m = int(np.ceil(REGION_MARGIN * (bs.stop - bs.start)))
        lo = rs.start + (m if rs.start > bs.start else 0)
        hi = rs.stop - (m if rs.stop < bs.stop else 0)
        out.append(slice(lo, max(lo, hi)))
    return tuple(out)


def _candidates(ctx: _Context, allowed: tuple, radius: float, avoid=(), fit=1.0) -> np.ndarray:
    """Full-grid indices of coarse voxels whose centre is at least ``fit * radius`` mm inside the
    envelope and inside ``allowed``, and a ball of ``radius`` away from the balls in ``avoid``
    (``(centre index, radius mm)``)."""
    # The coarse grid can miss outside voxels that lie up to half a coarse step closer.
    safety = 0.5 * float(np.linalg.norm([(c - 1) * s for c, s in zip(ctx.coarse_step, ctx.spacing)]))
    step = np.array(ctx.coarse_step)
    # Only the coarse voxels of the allowed box.
    lo = [-(-sl.start // k) for sl, k in zip(allowed, step)]
    hi = [max(a, -(-sl.stop // k)) for a, sl, k in zip(lo, allowed, step)]
    block = ctx.coarse_dist[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    idx = (np.argwhere(block > fit * radius + safety) + np.array(lo)) * step
    if len(idx) == 0:
        return idx
    keep = np.ones(len(idx), dtype=bool)
    for axis, sl in enumerate(allowed):
        pad = int(np.ceil(fit * radius / ctx.spacing[axis]))
        keep &= (idx[:, axis] >= sl.start + pad) & (idx[:, axis] < sl.stop - pad)
    for centre, r in avoid:
        d = np.sqrt((((idx - centre) * np.array(ctx.spacing)) ** 2).sum(axis=1))
        keep &= d >= radius + r
    return idx[keep]


def _place(rng, ctx, allowed, radius, min_radius, avoid=(), what="sign"):
    """Pick a centre for a ball of ``radius`` mm inside the envelope and the allowed box.

    If it does not fit, the ball shrinks (not below ``min_radius``); if even that fails (coarse
    grids, small regions), it may be cut by the allowed box and by the envelope (its painting is
    clipped to both), and at last it may overlap the balls of ``avoid``.
    """
    start = radius
    for fit, keep_clear in ((1.0, True), (0.5, True), (0.5, False), (0.25, False)):
        radius = start
        while True:
            cands = _candidates(ctx, allowed, radius, avoid if keep_clear else (), fit)
            if len(cands):
                return cands[rng.integers(len(cands))], radius
            if radius <= min_radius:
                break
            radius = max(min_radius, radius * 0.85)
    raise RuntimeError(
        f"cannot plant a {what} of radius {radius:.1f} mm in the region {allowed}: the lungs are "
        "too small on this grid (enlarge the field of view or use a finer grid)"
    )


def _local_axes(ctx, centre, reach_mm, allowed):
    """Box (slices, clipped to ``allowed``) around ``centre`` and the mm offsets along each axis."""
    box, offs = [], []
    for axis, (c, sl) in enumerate(zip(centre, allowed)):
        pad = int(np.ceil(reach_mm / ctx.spacing[axis])) + 1
        s = slice(max(sl.start, int(c) - pad), min(sl.stop, int(c) + pad + 1))
        box.append(s)
        offs.append((ctx.axes[axis][s] - ctx.axes[axis][int(c)]).astype(np.float32))
    return tuple(box), offs


def _unit(rng):
    v = rng.standard_normal(3)
    return v / np.linalg.norm(v)


def _plan_cavity(rng, ctx, allowed, with_ball) -> dict:
    """Draw a cavity's size, shape and place (mm sizes, voxel centre); nothing is painted."""
    h, size = ctx.h, ctx.size
    wall = max(rng.uniform(2.0, 7.0) * size, h)
    lumen = max(rng.uniform(5.0, 13.0) * size, (2.0 if with_ball else 1.2) * h)
    wobble = 0.2 if with_ball else 0.35  # a fungus ball needs a roomy, rounder lumen
    reach = lumen * (1 + wobble) + 1.6 * wall
    min_reach = (2.0 if with_ball else 1.2) * h * (1 + wobble) + 1.6 * h
    centre, got = _place(rng, ctx, allowed, reach, min(reach, max(min_reach, 0.6 * reach)), what="cavity")
    scale = got / reach
    plan = {
        "centre": centre, "reach": got, "lumen": lumen * scale, "wall": wall * scale, "wobble": wobble,
        "field_seed": int(rng.integers(2**31)), "ball": None,
    }
    if with_ball:
        plan["ball"] = max(rng.uniform(0.5, 0.75) * plan["lumen"], 0.8 * h)
    return plan


def _paint_cavity(plan, rng, ctx, hu, signs, allowed, details) -> None:
    """Paint a planned cavity (lumen, wall of varying thickness, optional fungus ball)."""
    lumen, wall, wobble = plan["lumen"], plan["wall"], plan["wobble"]
    box, (oz, oy, ox) = _local_axes(ctx, plan["centre"], plan["reach"], allowed)
    r = np.sqrt(oz[:, None, None] ** 2 + oy[None, :, None] ** 2 + ox[None, None, :] ** 2)
    # Irregular (lobulated) lumen and a wall whose thickness varies from 0.4 to 1.6 times its
    # mean: two smooth random fields of about half the lumen's radius, each within [-1, 1].
    field_rng = np.random.default_rng(plan["field_seed"])
    sigma = [max(0.7, 0.4 * lumen / s) for s in ctx.spacing]
    shape_field, wall_field = (_unit_field(field_rng, r.shape, sigma) for _ in range(2))
    lumen_r = lumen * (1 + wobble * shape_field)
    wall_r = lumen_r + wall * (1 + 0.6 * wall_field)
    inside = ctx.env[box]
    in_lumen = (r < lumen_r) & inside
    in_wall = (r < wall_r) & inside & ~in_lumen
    sub_hu, sub_signs = hu[box], signs[box]
    sub_hu[in_wall] = _lesion_hu(ctx, _SOFT_SIGN_HU["wall"] + 10.0 * rng.standard_normal(int(in_wall.sum())))
    sub_signs[in_wall] = SIGN_CODES["cavity"]
    sub_hu[in_lumen] = -1000.0
    sub_signs[in_lumen] = CAVITY_LUMEN
    info = {"centre": [int(c) for c in plan["centre"]], "lumen_mm": round(float(lumen), 1),
            "wall_mm": round(float(wall), 1)}
    if plan["ball"] is not None:
        ball = plan["ball"]
        # Resting on the dependent (posterior, +y) side of the lumen: its centre sits on the
        # lumen's axis behind the cavity's centre, close enough to the wall that the ball is
        # flattened against it.
        # The ball spans at most 80 % of the lumen's depth there, leaving the air crescent in front.
        # Its centre lies above the lumen's most posterior voxel (the one nearest the cavity's
        # axis among equals), 0.85 ball radii in front of it, so the ball always holds it.
        lumen_idx = np.argwhere(in_lumen)
        deepest_y = lumen_idx[:, 1].max()
        candidates = lumen_idx[lumen_idx[:, 1] == deepest_y]
        iz, iy, ix = candidates[np.argmin(oz[candidates[:, 0]] ** 2 + ox[candidates[:, 2]] ** 2)]
        column = in_lumen[iz, :, ix]
        depth = float(oy[column].max() - oy[column].min()) + ctx.spacing[1]
        ball = max(min(ball, 0.4 * depth), 0.8 * ctx.h)
        bz, by, bx = oz[iz], oy[iy] - 0.85 * ball, ox[ix]
        d2 = (oz[:, None, None] - bz) ** 2 + (oy[None, :, None] - by) ** 2 + (ox[None, None, :] - bx) ** 2
        in_ball = (d2 < ball**2) & in_lumen
        # A mottled ball with a few small air pockets (the "sponge" look of an aspergilloma).
        mottle = 15.0 * rng.standard_normal(int(in_ball.sum()))
        pockets = rng.random(int(in_ball.sum())) < 0.06
        sub_hu[in_ball] = np.where(pockets, -700.0, _lesion_hu(ctx, _SOFT_SIGN_HU["ball"] + mottle))
        sub_signs[in_ball] = SIGN_CODES["fungus_ball"]
        info["ball_mm"] = round(float(ball), 1)
    details.append(("cavity", info))


def _unit_field(rng, shape, sigma) -> np.ndarray:
    """A smooth random field on a small box, scaled to about [-1, 1] (clipped there)."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="nearest")
    field /= 2.0 * field.std() + 1e-6
    return np.clip(field, -1.0, 1.0)


def _lesion_hu(ctx, value):
    """Scale a lesion's HU towards the parenchyma by the difficulty's contrast factor."""
    return PARENCHYMA_HU + ctx.contrast * (np.asarray(value, dtype=np.float32) - PARENCHYMA_HU)


def _blob(rng, offs, radius, h):
    """An irregular blob of about ``radius`` mm on the local offsets ``offs`` (boolean)."""
    oz, oy, ox = offs
    r2 = (oz[:, None, None] ** 2 + (oy[None, :, None] / 0.9) ** 2 + (ox[None, None, :] / 1.1) ** 2) / radius**2
    shape = r2.shape
    sigma = max(1.0, 0.3 * radius / h)
    rough = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    rough /= rough.std() + 1e-6
    return r2 + 0.25 * rough < 1.0


def _plant_preexisting(rng, ctx, hu, signs, allowed, condition, avoid, details):
    kind = PREEXISTING_APPEARANCE[condition]
    h = ctx.h
    radius = max(rng.uniform(10.0, 24.0) * ctx.size, 1.5 * h)
    centre, radius = _place(rng, ctx, allowed, radius, 1.5 * h, avoid, what="pre-existing condition")
    box, offs = _local_axes(ctx, centre, radius * 1.3, allowed)
    blob = _blob(rng, offs, radius, h) & ctx.env[box]
    sub_hu, sub_signs = hu[box], signs[box]
    n = int(blob.sum())
    if kind == "emphysema":
        # Emphysema: low attenuation with clustered holes a few mm across (no walls).
        holes = _unit_field(rng, blob.shape, [max(0.7, 1.5 / s) for s in ctx.spacing])[blob] > 0.25
        sub_hu[blob] = _lesion_hu(ctx, np.where(holes, -990.0, -945.0 + 10 * rng.standard_normal(n)))
        truth = blob
    elif kind == "consolidation":
        values = _lesion_hu(ctx, 20.0 + 12.0 * rng.standard_normal(n))
        sub_hu[blob] = values
        truth = blob
        # Air bronchograms: a couple of thin air tubes through the consolidation.
        for _ in range(2):
            d = _unit(rng)
            a, b = -radius * d, radius * d
            dist = _tube_distance_local(offs, a, b)
            bron = (dist < max(1.5, 0.6 * h)) & blob
            sub_hu[bron] = -900.0
    elif kind == "ground_glass":
        level = _lesion_hu(ctx, -600.0 + 30.0 * rng.standard_normal(n))
        sub_hu[blob] = np.maximum(sub_hu[blob], level)  # vessels stay visible through ground glass
        truth = blob
    else:  # bronchiectasis: a few dilated airways with thick walls through the blob
        truth = np.zeros(blob.shape, dtype=bool)
        d0 = _unit(rng)
        for _ in range(3):
            d = d0 + 0.3 * _unit(rng)
            d /= np.linalg.norm(d)
            shift = rng.uniform(-0.5, 0.5, 3) * radius
            a, b = shift - 1.2 * radius * d, shift + 1.2 * radius * d
            dist = _tube_distance_local(offs, a, b)
            lumen = max(rng.uniform(2.5, 4.5) * ctx.size, h)
            wall = max(rng.uniform(1.5, 2.5) * ctx.size, 0.75 * h)
            in_wall = (dist < lumen + wall) & blob
            in_lumen = (dist < lumen) & blob
            sub_hu[in_wall & ~in_lumen] = _lesion_hu(ctx, 25.0)
            sub_hu[in_lumen] = -1000.0
            truth |= in_wall
        if not truth.any():  # the tubes missed the (tiny) blob: make its core a dilated airway
            truth = blob
            sub_hu[blob] = -1000.0
    sub_signs[truth] = SIGN_CODES["preexisting"]
    info = {"condition": condition, "kind": kind, "centre": [int(c) for c in centre],
            "radius_mm": round(float(radius), 1)}
    details.append(("preexisting", info))
    return centre, radius


def _tube_distance_local(offs, a, b):
    """Distance (mm) from local offsets to the segment ``a``-``b`` (local mm coordinates)."""
    oz, oy, ox = offs
    d = np.asarray(b, np.float32) - np.asarray(a, np.float32)
    pz, py, px = oz[:, None, None] - a[0], oy[None, :, None] - a[1], ox[None, None, :] - a[2]
    t = np.clip((pz * d[0] + py * d[1] + px * d[2]) / (float(d @ d) + 1e-9), 0.0, 1.0)
    return np.sqrt((pz - t * d[0]) ** 2 + (py - t * d[1]) ** 2 + (px - t * d[2]) ** 2)


def _plant_rind(rng, ctx, hu, signs, allowed, upper, details):
    h = ctx.h
    thick = max(rng.uniform(3.0, 8.0) * ctx.size, 1.5 * h)
    patch = max(rng.uniform(20.0, 35.0) * ctx.size, 3.0 * h)
    step = np.array(ctx.coarse_step)
    coarse_h = max(c * s for c, s in zip(ctx.coarse_step, ctx.spacing))
    surface = np.argwhere((ctx.coarse_dist > 0) & (ctx.coarse_dist <= coarse_h * 1.01)) * step
    keep = np.ones(len(surface), dtype=bool)
    for axis, sl in enumerate(allowed):
        keep &= (surface[:, axis] >= sl.start) & (surface[:, axis] < sl.stop)
    surface = surface[keep]
    if len(surface) == 0:
        raise RuntimeError(f"no pleural surface to thicken in the region {allowed}")
    x_mm = ctx.axes[2][surface[:, 2]]
    lateral = np.abs(x_mm - ctx.midline)
    if upper and rng.random() < 0.8:  # apical cap: the top of the lung
        top = surface[:, 0] >= surface[:, 0].max() - 1
        anchor = surface[top][rng.integers(top.sum())]
    else:  # the costal pleura: lateral surface points
        costal = lateral >= np.quantile(lateral, 0.6)
        anchor = surface[costal][rng.integers(costal.sum())]
    # Extrapleural fat behind the rind, at least two voxels thick so that the grid resolves it.
    fat = max(rng.uniform(3.0, 8.0) * ctx.size, 2.0 * h)
    reach = patch + thick + fat + h
    box, (oz, oy, ox) = _local_axes(ctx, anchor, reach, tuple(slice(0, n) for n in ctx.env.shape))
    env = ctx.env[box]
    depth = ndimage.distance_transform_edt(env, sampling=ctx.spacing)
    sigma = max(1.0, 6.0 / h)
    vary = ndimage.gaussian_filter(rng.standard_normal(env.shape).astype(np.float32), sigma)
    vary /= vary.std() + 1e-6
    local_thick = thick * np.clip(1 + 0.35 * vary, 0.6, 1.6)
    near = oz[:, None, None] ** 2 + oy[None, :, None] ** 2 + ox[None, None, :] ** 2 < patch**2
    rind = env & (depth <= np.maximum(local_thick, 1.5 * h)) & near
    # Clip to the allowed part of the region.
    clip = np.zeros(env.shape, dtype=bool)
    inner = []
    for keep_sl, box_sl in zip(allowed, box):
        lo = max(keep_sl.start, box_sl.start)
        hi = max(lo, min(keep_sl.stop, box_sl.stop))
        inner.append(slice(lo - box_sl.start, hi - box_sl.start))
    clip[tuple(inner)] = True
    rind &= clip
    sub_hu, sub_signs = hu[box], signs[box]
    n = int(rind.sum())
    sub_hu[rind] = _lesion_hu(ctx, _SOFT_SIGN_HU["rind"] + 10.0 * rng.standard_normal(n))
    sub_signs[rind] = SIGN_CODES["pleural_thickening"]
    # The fat: body tissue outside the envelope within `fat` mm of the rind, so it also reaches
    # a little beyond the rind's edge along the chest wall.
    behind = ndimage.distance_transform_edt(~rind, sampling=ctx.spacing) <= fat
    behind &= ~env & (sub_hu > _TISSUE_HU[AIR] / 2)
    sub_hu[behind] = _TISSUE_HU[FAT]
    info = {"centre": [int(c) for c in anchor], "thickness_mm": round(float(thick), 1),
            "fat_mm": round(float(fat), 1)}
    details.append(("pleural_thickening", info))


def _plant_signs(labels, seed, conditions, ctx, hu, signs, box) -> dict:
    """Plant every requested sign (pre-existing ones as ``conditions[region]``); returns what was planted."""
    regions = region_slices(signs.shape, box)
    details = {"preexisting_conditions": conditions, "signs": {}}
    for i, name in enumerate(REGIONS):
        wanted = {lab for lab in LABELS if labels[f"{name}_{lab}"]}
        if not wanted:
            continue
        rng = np.random.default_rng([seed, 100 + i])
        allowed = _allowed_box(regions[name], box)
        planted = []
        # The cavity is placed first (it needs the most room) and painted last; the rind hugs
        # the surface and the blob keeps clear of the cavity, so no sign erases another.
        cavity = _plan_cavity(rng, ctx, allowed, "fungus_ball" in wanted) if "cavity" in wanted else None
        avoid = [(cavity["centre"], cavity["reach"])] if cavity else []
        if "pleural_thickening" in wanted:
            _plant_rind(rng, ctx, hu, signs, allowed, name[1] == "U", planted)
        if "preexisting" in wanted:
            _plant_preexisting(rng, ctx, hu, signs, allowed, conditions[name], avoid, planted)
        if cavity:
            _paint_cavity(cavity, rng, ctx, hu, signs, allowed, planted)
        details["signs"][name] = planted
    return details


# ----------------------------------------------------------------------------------------------
# Public entry point
# ----------------------------------------------------------------------------------------------


def preexisting_conditions(anatomy_seed: int) -> dict[str, str]:
    """The pre-existing condition of each sub-region of the patient with this anatomy seed.

    Parameters
    ----------
    anatomy_seed : int
        The patient's seed (``make_phantom``'s ``anatomy_seed``).

    Returns
    -------
    dict
        Region (:data:`~sapsam_utils.core.regions.REGIONS`) -> condition (a key of
        :data:`PREEXISTING_CONDITIONS`), whether or not the region has a pre-existing label: each
        sub-region's condition follows the paper's proportions; with probability
        :data:`PREEXISTING_SAME_CONDITION` it is the patient's main condition.
    """
    names = list(PREEXISTING_CONDITIONS)
    weights = np.array([PREEXISTING_CONDITIONS[n] for n in names], dtype=float)
    rng = np.random.default_rng([anatomy_seed, 2])
    main = rng.choice(len(names), p=weights / weights.sum())
    own = rng.choice(len(names), size=len(REGIONS), p=weights / weights.sum())
    same = rng.random(len(REGIONS)) < PREEXISTING_SAME_CONDITION
    return {region: names[main if s else o] for region, s, o in zip(REGIONS, same, own)}


def preexisting_kind(anatomy_seed: int, region: str) -> str:
    """How the phantom draws the pre-existing condition of ``region`` (:data:`PREEXISTING_KINDS`)."""
    return PREEXISTING_APPEARANCE[preexisting_conditions(anatomy_seed)[region]]


def _check_labels(labels: Mapping[str, int]) -> dict:
    labels = dict(labels.items())  # also takes a pandas Series (iterating one gives its values)
    unknown = sorted(set(labels) - set(LABEL_COLUMNS))
    if unknown:
        raise ValueError(f"unknown label column(s) {unknown}; expected some of {list(LABEL_COLUMNS)}")
    out = {}
    for col in LABEL_COLUMNS:
        value = labels.get(col, 0)
        if value not in (0, 1):
            raise ValueError(f"label {col} must be 0 or 1, got {value!r}")
        out[col] = int(value)
    for region in REGIONS:
        if out[f"{region}_fungus_ball"] and not out[f"{region}_cavity"]:
            raise ValueError(
                f"{region}_fungus_ball = 1 needs {region}_cavity = 1: a fungus ball lies in a cavity "
                "whose wall is cavity truth"
            )
    return out


def make_phantom(
    labels: Mapping[str, int],
    seed: int,
    shape=(216, 256, 256),
    spacing=(1.5, 1.4, 1.4),
    difficulty: float = 1.0,
    noise_hu: float = 22.0,
    blur_mm: float = 0.7,
    n_vessel_points: int = 800,
    anatomy_seed: int | None = None,
) -> Phantom:
    """Generate a synthetic chest CT with its voxel-exact truth.

    Parameters
    ----------
    labels : Mapping[str, int]
        Some of the 24 :data:`~sapsam_utils.core.regions.LABEL_COLUMNS` -> 0/1; missing ones count as
        0. ``<region>_fungus_ball = 1`` requires ``<region>_cavity = 1``.
    seed : int
        Scan seed (>= 0): where and how the signs are drawn, and the scanner noise.
    shape : tuple of int
        Grid ``(z, y, x)``.
    spacing : tuple of float
        Voxel size in mm ``(z, y, x)``; the FOV is ``shape * spacing``, centred on the patient.
    difficulty : float
        > 0; scales lesion size by ``difficulty ** -0.5``, lesion contrast by
        ``min(1, difficulty ** -0.5)`` and the noise by ``difficulty``.
    noise_hu : float
        Standard deviation of the scanner noise (HU) at difficulty 1.
    blur_mm : float
        Standard deviation (mm) of the scanner's point spread, applied before the noise (partial
        volume at every edge); 0 turns it off. On grids coarser than about twice ``blur_mm`` it
        has almost no effect.
    n_vessel_points : int
        Target points per lung of the vessel tree (about twice as many tube segments).
    anatomy_seed : int or None
        Patient seed (>= 0): the body plan, lung envelope, airways, vessels, parenchymal texture
        and pre-existing condition of each sub-region (see "Two seeds" in the module docstring).
        None: ``seed``.
        Two calls with the same ``anatomy_seed`` and grid give the same ``lungs`` and ``tissue``.

    Returns
    -------
    Phantom

    Raises
    ------
    ValueError
        Unknown label columns, labels not 0/1, a fungus ball without its cavity, a bad seed,
        shape, spacing or difficulty.
    """
    labels = _check_labels(labels)
    if anatomy_seed is None:
        anatomy_seed = seed
    for name, value in (("seed", seed), ("anatomy_seed", anatomy_seed)):
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    shape = tuple(int(n) for n in shape)
    spacing = tuple(float(s) for s in spacing)
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"shape must be three sizes >= 8, got {shape}")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be three positive sizes in mm, got {spacing}")
    if not difficulty > 0:
        raise ValueError(f"difficulty must be > 0, got {difficulty}")
    seed, anatomy_seed = int(seed), int(anatomy_seed)
    anat = draw_anatomy(anatomy_seed)
    axes = grid_axes(shape, spacing)
    h = max(spacing)

    env = _lung_envelope(anat, axes)
    if not env.any():
        raise ValueError(f"the field of view {shape} x {spacing} mm does not contain the lungs")
    tissue = _paint_body(anat, axes)
    lung = env > 0
    tissue[lung] = LUNG
    hu = _TISSUE_HU[tissue]

    # Parenchyma: texture and the gravity gradient (denser towards the back), lung only.
    tex_rng = np.random.default_rng([anatomy_seed, 3])
    box = lung_box(env)
    tex = parenchyma_texture(tex_rng, tuple(s.stop - s.start for s in box), spacing)
    tex += gravity_gradient(axes[1][box[1]], anat)[None, :, None]
    sub = hu[box]
    sub += np.where(lung[box], tex, 0.0)
    del tex

    # Airways and vessels.
    # The trees are grown on a fixed 5 mm lattice, so they are the same on every grid.
    lattice = _lattice_axes(anat, 5.0)
    lattice_env = _lung_envelope(anat, lattice)
    hila = _hila(anat, lattice_env, lattice)
    for a, b, r, wall in _airway_tubes(anat, hila):
        _paint_tube(hu, None, axes, a, b, r + wall, 30.0, h)
        _paint_tube(hu, None, axes, a, b, r, -1000.0, h)
    vessel_rng = np.random.default_rng([anatomy_seed, 4])
    for value, hilum in zip((LUNG_RIGHT, LUNG_LEFT), hila):
        pts = _lung_points(lattice_env, lattice, value)
        side = -1 if value == LUNG_RIGHT else 1
        trunk = (anat.carina_z - 15.0, anat.trachea_y - 10.0, anat.midline + side * 8.0)
        segments = vessel_segments(vessel_rng, pts, hilum, 0.55 * anat.aorta_r, n_vessel_points, trunk)
        for a, b, r in segments:
            if r < 0.2 * h:  # far below the voxel size: would not change any voxel visibly
                continue
            if r >= 2.2:  # a bronchus beside the larger vessels
                offset = _perpendicular(b - a) * (r + 0.8 * r + 1.0)
                _paint_tube(hu, lung, axes, a + offset, b + offset, 0.8 * r + 1.0, 30.0, h)
                _paint_tube(hu, lung, axes, a + offset, b + offset, 0.8 * r, -1000.0, h)
            _paint_tube(hu, lung, axes, a, b, r, 40.0, h)

    signs = np.zeros(shape, dtype=np.uint8)
    size = difficulty**-0.5
    conditions = preexisting_conditions(anatomy_seed)
    details = {"preexisting_conditions": conditions, "signs": {}}
    if any(labels.values()):
        step = tuple(max(1, int(round(5.0 / s))) for s in spacing)
        coarse = lung[:: step[0], :: step[1], :: step[2]]
        # Distance to the nearest non-lung voxel; where the FOV cuts a lung, its border is not a
        # pleural surface (the distance transform does not count the array's edge as outside).
        coarse_dist = ndimage.distance_transform_edt(coarse, sampling=[c * s for c, s in zip(step, spacing)])
        ctx = _Context(axes, spacing, lung, step, coarse_dist, h, size, min(1.0, size), anat.midline)
        details = _plant_signs(labels, seed, conditions, ctx, hu, signs, box)

    hu = _blur(hu, spacing, blur_mm)
    noise_rng = np.random.default_rng([seed, 5])
    _add_noise(hu, noise_rng, noise_hu * difficulty)
    np.rint(hu, out=hu)
    np.clip(hu, -1024, 3071, out=hu)
    ct = hu.astype(np.int16)

    origin = tuple(float(axes[i][0]) for i in (2, 1, 0))
    got = region_labels(signs, region_map(shape, box))
    if got != labels:
        diff = {k: (labels[k], got[k]) for k in labels if labels[k] != got[k]}
        raise RuntimeError(f"phantom seeds {anatomy_seed}:{seed}: planted signs disagree with the labels {diff}")
    return Phantom(
        ct=Volume(ct, spacing, origin),
        lungs=Volume(env, spacing, origin),
        signs=Volume(signs, spacing, origin),
        labels=got,
        tissue=Volume(tissue, spacing, origin),
        details=details,
    )


def _blur(hu, spacing, sigma_mm):
    """Separable 3-tap blur with a standard deviation of ``sigma_mm`` (where it is resolvable).

    A kernel ``[w, 1 - 2w, w]`` has variance ``2w`` voxels squared, so ``w = (sigma / step) ** 2 / 2``
    (at most 0.25); axes where ``w`` is below 0.01 are left alone.
    """
    if sigma_mm <= 0:
        return hu
    out = np.empty_like(hu)
    for axis, step in enumerate(spacing):
        w = min(0.25, 0.5 * (sigma_mm / step) ** 2)
        if w < 0.01:
            continue
        ndimage.correlate1d(hu, [w, 1 - 2 * w, w], axis=axis, output=out, mode="nearest")
        hu, out = out, hu
    return hu


def _add_noise(hu, rng, sigma):
    """Add Gaussian noise of standard deviation ``sigma`` (HU), lightly correlated in-plane."""
    if sigma <= 0:
        return
    noise = rng.standard_normal(hu.shape, dtype=np.float32)
    # A 2-tap average along x and y mimics the in-plane correlation of a CT kernel; the factor
    # restores the standard deviation (four equally weighted independent values: std / 2).
    shifted = np.empty_like(noise)
    shifted[:, :, 1:] = noise[:, :, :-1]
    shifted[:, :, 0] = noise[:, :, -1]
    noise += shifted
    shifted[:, 1:, :] = noise[:, :-1, :]
    shifted[:, 0, :] = noise[:, -1, :]
    noise += shifted
    noise *= sigma / 2.0
    hu += noise


def _perpendicular(d):
    d = d / (np.linalg.norm(d) + 1e-9)
    ref = np.array([1.0, 0.0, 0.0]) if abs(d[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    p = np.cross(d, ref)
    return p / np.linalg.norm(p)


def _lattice_axes(anat: Anatomy, step: float):
    """Axes (mm) of a lattice of ``step`` mm covering the whole chest, whatever the FOV."""
    lo = (anat.z_bot - step, anat.cav_cy - anat.cav_ay - step, anat.midline - anat.cav_ax - step)
    hi = (anat.z_top + step, anat.cav_cy + anat.cav_ay + step, anat.midline + anat.cav_ax + step)
    return tuple(np.arange(a, b, step, dtype=np.float32) for a, b in zip(lo, hi))


def _lung_points(env, axes, value) -> np.ndarray:
    """Positions (mm, ``(n, 3)``) of the voxels of one lung."""
    idx = np.argwhere(env == value)
    return np.stack([axes[i][idx[:, i]] for i in range(3)], axis=1).astype(np.float64)


def _hila(anat, env, axes):
    """Root points (mm) of the two vessel trees: in each lung, medially, just below the carina."""
    hila = []
    for value, side, dz in ((LUNG_RIGHT, -1, 25.0), (LUNG_LEFT, 1, 40.0)):
        pts = _lung_points(env, axes, value)
        target = np.array([anat.carina_z - dz, anat.trachea_y + 10.0, anat.midline + side * 25.0])
        d = np.sqrt(((pts - target) ** 2).sum(axis=1))
        hila.append(pts[np.argmin(d)])
    return hila
