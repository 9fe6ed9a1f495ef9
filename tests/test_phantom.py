"""Tests of the synthetic chest CT phantoms (sapsam_utils.synthetic.phantom).

Most phantoms here use the CI grid (54 x 64 x 64 voxels of 6 x 5.6 x 5.6 mm: the default field of
view, sampled coarsely) or the 108 x 128 x 128 grid, so the whole file runs in seconds.
"""

import math

import numpy as np
import pytest
from scipy import ndimage

from sapsam_utils.synthetic.phantom import (
    PREEXISTING_APPEARANCE,
    PREEXISTING_CONDITIONS,
    PREEXISTING_KINDS,
    REGION_MARGIN,
    TISSUES,
    draw_anatomy,
    gravity_gradient,
    grid_axes,
    make_phantom,
    preexisting_conditions,
    preexisting_kind,
)
from sapsam_utils.core.regions import (
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

TINY = dict(shape=(54, 64, 64), spacing=(6.0, 5.6, 5.6))  # the default FOV, coarsely
SMALL = dict(shape=(108, 128, 128), spacing=(3.0, 2.8, 2.8))  # the default FOV, half resolution
ALL_ON = {c: 1 for c in LABEL_COLUMNS}
CODES_OF = {lab: {SIGN_CODES[lab]} | ({CAVITY_LUMEN} if lab == "cavity" else set()) for lab in LABELS}


def random_labels(rng, p=0.3):
    """A random label row; a fungus ball always comes with the cavity of its region."""
    labels = {c: int(rng.random() < p) for c in LABEL_COLUMNS}
    for region in REGIONS:
        if labels[f"{region}_fungus_ball"]:
            labels[f"{region}_cavity"] = 1
    return labels


def assert_signs_where_labelled(phantom, wanted):
    """Every sign voxel lies in the envelope, in a region labelled for it, clear of the cuts."""
    signs, lungs = phantom.signs.array, phantom.lungs.array
    assert not np.any((signs > 0) & (lungs == 0)), "sign truth outside the lung envelope"
    box = lung_box(lungs)
    regions = region_slices(signs.shape, box)
    wanted = {c: int(wanted.get(c, 0)) for c in LABEL_COLUMNS}
    assert phantom.labels == wanted
    assert region_labels(signs, region_map(signs.shape, box)) == wanted
    for name, sl in regions.items():
        block = signs[sl]
        for lab in LABELS:
            present = np.isin(block, list(CODES_OF[lab])).any()
            assert present == bool(wanted[f"{name}_{lab}"]), f"{name}_{lab}"
        # Margin from the inner cuts (z thirds, x halves) of the lung box.
        for axis in (0, 2):
            m = math.ceil(REGION_MARGIN * (box[axis].stop - box[axis].start))
            lo, hi = sl[axis].start, sl[axis].stop
            near = []
            if lo > box[axis].start:
                near.append(slice(lo, lo + m))
            if hi < box[axis].stop:
                near.append(slice(hi - m, hi))
            for cut in near:
                idx = list(sl)
                idx[axis] = cut
                assert not signs[tuple(idx)].any(), f"{name}: a sign within {m} voxels of a cut"
    # Nothing outside the lung box at all.
    outside = np.ones(signs.shape, dtype=bool)
    outside[box] = False
    assert not signs[outside].any()


# The two phantoms most tests share; without the scanner blur, so that each tissue keeps its own
# HU up to its edges (the blur is tested on its own).
@pytest.fixture(scope="module")
def small_all():
    return make_phantom(ALL_ON, seed=11, blur_mm=0.0, **SMALL)


@pytest.fixture(scope="module")
def small_control():
    return make_phantom({}, seed=11, blur_mm=0.0, **SMALL)


def test_volumes_and_types(small_all):
    p = small_all
    for vol in (p.ct, p.lungs, p.signs, p.tissue):
        assert vol.array.shape == SMALL["shape"]
        assert vol.spacing == SMALL["spacing"]
    assert p.ct.array.dtype == np.int16
    assert p.lungs.array.dtype == np.uint8 and p.signs.array.dtype == np.uint8
    assert set(np.unique(p.lungs.array)) == {0, LUNG_RIGHT, LUNG_LEFT}
    assert set(np.unique(p.signs.array)) <= {0, *SIGN_CODES.values(), CAVITY_LUMEN}
    assert set(p.labels) == set(LABEL_COLUMNS)


@pytest.mark.parametrize("seed", range(12))
def test_random_labels_planted_exactly_tiny_grid(seed):
    labels = random_labels(np.random.default_rng(seed))
    assert_signs_where_labelled(make_phantom(labels, seed, **TINY), labels)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_all_24_labels_tiny_grid(seed):
    assert_signs_where_labelled(make_phantom(ALL_ON, seed, **TINY), ALL_ON)


def test_all_24_labels_small_grid(small_all):
    assert_signs_where_labelled(small_all, ALL_ON)


@pytest.mark.parametrize(
    "column", ["RU_cavity", "LL_preexisting", "RM_pleural_thickening", "LU_pleural_thickening"]
)
def test_single_label(column):
    p = make_phantom({column: 1}, seed=5, **SMALL)
    assert_signs_where_labelled(p, {column: 1})
    lab = column[3:]
    assert set(np.unique(p.signs.array)) - {0} <= CODES_OF[lab]


@pytest.mark.parametrize("seed, region", [(3, "RU"), (8, "LU"), (13, "RM"), (21, "LL")])
def test_fungus_ball_in_cavity_with_air_crescent_above(seed, region):
    p = make_phantom({f"{region}_cavity": 1, f"{region}_fungus_ball": 1}, seed=seed, **SMALL)
    signs = p.signs.array
    ball = np.argwhere(signs == SIGN_CODES["fungus_ball"])
    lumen = np.argwhere(signs == CAVITY_LUMEN)
    assert len(ball) and len(lumen) and (signs == SIGN_CODES["cavity"]).any()
    # The ball rests on the dependent (posterior, high y) side: the air is in front of it.
    assert lumen[:, 1].mean() < ball[:, 1].mean()
    assert lumen[:, 1].min() < ball[:, 1].min()


def test_controls_have_no_signs(small_control):
    assert not small_control.signs.array.any()
    assert not any(small_control.labels.values())


def test_envelope_does_not_depend_on_labels(small_all, small_control):
    np.testing.assert_array_equal(small_all.lungs.array, small_control.lungs.array)


def median_in(p, mask):
    assert mask.any()
    return float(np.median(p.ct.array[mask]))


def test_tissue_hu(small_all):
    p = small_all
    ct, tissue, signs = p.ct.array, p.tissue.array, p.signs.array
    assert abs(median_in(p, tissue == TISSUES["air"]) + 1000) <= 10
    assert abs(np.median(ct[:, :3, :3]) + 1000) <= 10  # the corners of the FOV are outside
    parenchyma = (p.lungs.array > 0) & (signs == 0)
    assert abs(median_in(p, parenchyma) + 850) <= 60
    assert -130 <= median_in(p, tissue == TISSUES["fat"]) <= -70
    assert 20 <= median_in(p, tissue == TISSUES["muscle"]) <= 70
    assert 400 <= median_in(p, tissue == TISSUES["cortical_bone"]) <= 1000
    assert 250 <= median_in(p, tissue == TISSUES["cancellous_bone"]) <= 600
    assert 20 <= median_in(p, tissue == TISSUES["blood"]) <= 60
    assert abs(median_in(p, signs == CAVITY_LUMEN) + 1000) <= 30
    assert 0 <= median_in(p, signs == SIGN_CODES["cavity"]) <= 60
    assert 0 <= median_in(p, signs == SIGN_CODES["fungus_ball"]) <= 80
    assert 0 <= median_in(p, signs == SIGN_CODES["pleural_thickening"]) <= 60


def test_extrapleural_fat_lies_behind_each_rind():
    # The voxels just outside the envelope behind a rind are fat (-100 HU), not chest wall; the
    # fat is no sign truth. Noise-free, so every such voxel is exactly fat.
    labels = {"RU_pleural_thickening": 1, "LL_pleural_thickening": 1}
    p = make_phantom(labels, seed=4, noise_hu=0.0, blur_mm=0.0, **SMALL)
    rind = p.signs.array == SIGN_CODES["pleural_thickening"]
    behind = ndimage.binary_dilation(rind) & (p.lungs.array == 0) & (p.ct.array > -500)
    assert behind.sum() > 50
    np.testing.assert_array_equal(p.ct.array[behind], -100)
    assert not p.signs.array[p.lungs.array == 0].any()
    for info in (i for region in p.details["signs"].values() for kind, i in region):
        assert info["fat_mm"] >= 2 * max(SMALL["spacing"])


def test_dependent_lung_denser(small_control):
    # Supine patient: the posterior third of the lung is denser than the anterior third by about
    # what the gravity gradient puts there (the four real CTs of ../shared/ct: 36-57 HU).
    p = small_control
    lung = (p.tissue.array == TISSUES["lung"]) & (p.ct.array < -500)  # parenchyma, not vessels
    y = np.nonzero(lung)[1]
    third = (y.max() - y.min()) / 3
    front, back = lung.copy(), lung.copy()
    front[:, int(y.min() + third):, :] = False
    back[:, : int(np.ceil(y.max() - third)), :] = False
    measured = median_in(p, back) - median_in(p, front)
    offsets = gravity_gradient(grid_axes(p.ct.array.shape, p.ct.spacing)[1], draw_anatomy(11))
    designed = np.median(offsets[np.nonzero(back)[1]]) - np.median(offsets[np.nonzero(front)[1]])
    assert 35.0 <= measured <= 60.0
    assert abs(measured - designed) <= 10.0

@pytest.mark.parametrize("kind", PREEXISTING_KINDS)
def test_preexisting_kinds_hu(kind):
    seed = next(s for s in range(1000) if preexisting_kind(s, "RU") == preexisting_kind(s, "LM") == kind)
    p = make_phantom({"RU_preexisting": 1, "LM_preexisting": 1}, seed, **SMALL)
    planted = [info for region in ("RU", "LM") for name, info in p.details["signs"][region] if name == "preexisting"]
    assert [info["kind"] for info in planted] == [kind, kind]
    assert [info["condition"] for info in planted] == [p.details["preexisting_conditions"][r] for r in ("RU", "LM")]
    hu = p.ct.array[p.signs.array == SIGN_CODES["preexisting"]]
    if kind == "emphysema":
        assert np.median(hu) < -920
    elif kind == "consolidation":
        assert -40 <= np.median(hu) <= 80
    elif kind == "ground_glass":
        assert -700 <= np.median(hu) <= -450
    else:  # dilated air lumens inside soft-tissue walls
        assert (hu < -900).mean() > 0.1 and (hu > -200).mean() > 0.2


def test_preexisting_conditions_follow_the_papers_proportions():
    draws = [preexisting_conditions(seed) for seed in range(10000)]
    assert all(list(d) == list(REGIONS) for d in draws[:10])
    names = list(PREEXISTING_CONDITIONS)
    paper = np.array([PREEXISTING_CONDITIONS[n] for n in names], float)
    paper /= paper.sum()  # consolidation 0.28 ... cystic fibrosis 0.07
    for region in REGIONS:  # each sub-region's condition follows the paper's proportions
        counts = np.array([sum(d[region] == n for d in draws) for n in names], float)
        np.testing.assert_allclose(counts / counts.sum(), paper, atol=0.015)
    # a patient's sub-regions share their main condition: two of them agree more often than
    # independent draws would (sum of squared proportions: 0.18)
    same = np.mean([d["RU"] == d["LU"] for d in draws])
    assert 0.3 < same < 0.5 and same > (paper**2).sum() + 0.1
    # every condition is drawn by one of the phantom's kinds, and the kind follows the condition
    assert set(PREEXISTING_APPEARANCE) == set(PREEXISTING_CONDITIONS)
    assert set(PREEXISTING_APPEARANCE.values()) == set(PREEXISTING_KINDS)
    assert all(preexisting_kind(s, r) == PREEXISTING_APPEARANCE[draws[s][r]] for s in range(50) for r in REGIONS)
    assert preexisting_conditions(123) == preexisting_conditions(123)  # deterministic by seed


def test_scanner_blur_mixes_edges_and_keeps_means():
    sharp = make_phantom({"RU_cavity": 1}, 6, blur_mm=0.0, **SMALL)
    blurred = make_phantom({"RU_cavity": 1}, 6, blur_mm=2.0, **SMALL)
    lungs = sharp.lungs.array > 0
    edge = lungs & ~ndimage.binary_erosion(lungs)
    # Lung voxels at the envelope's edge take up signal from the chest wall and mediastinum.
    assert blurred.ct.array[edge].mean() > sharp.ct.array[edge].mean() + 50
    interior = ndimage.binary_erosion(lungs, iterations=3)
    assert abs(blurred.ct.array[interior].mean() - sharp.ct.array[interior].mean()) < 15
    # The lumen's core still reads air.
    core = ndimage.binary_erosion(blurred.signs.array == CAVITY_LUMEN)
    assert abs(np.median(blurred.ct.array[core]) + 1000) <= 40


def test_lungs_on_their_sides(small_control):
    lungs = small_control.lungs.array
    nx = lungs.shape[2]
    x_right = np.argwhere(lungs == LUNG_RIGHT)[:, 2]
    x_left = np.argwhere(lungs == LUNG_LEFT)[:, 2]
    assert x_right.max() < x_left.min()  # right lung at low x (patient's right, LPS)
    assert x_right.mean() < nx / 2 < x_left.mean()
    # Apex narrower than the base: the top 10 % of the lungs holds far fewer voxels.
    z = np.argwhere(lungs > 0)[:, 0]
    top = z >= z.max() - 0.1 * (z.max() - z.min())
    mid = np.abs(z - np.median(z)) <= 0.05 * (z.max() - z.min())
    assert top.sum() < 0.5 * mid.sum()


@pytest.mark.parametrize("seed", range(8))
def test_lung_volume_plausible_at_default_fov(seed):
    p = make_phantom({}, seed, **TINY)  # same FOV as the default grid
    litres = (p.lungs.array > 0).sum() * p.lungs.voxel_volume_ml / 1000
    assert 4.0 <= litres <= 8.0
    right = (p.lungs.array == LUNG_RIGHT).sum() / (p.lungs.array > 0).sum()
    assert 0.45 <= right <= 0.6  # the right lung is a little larger


def test_same_anatomy_on_every_grid():
    coarse = make_phantom({}, 4, **TINY)
    fine = make_phantom({}, 4, **SMALL)
    vol = [(p.lungs.array > 0).sum() * p.lungs.voxel_volume_ml for p in (coarse, fine)]
    assert abs(vol[0] - vol[1]) / vol[1] < 0.05


def test_deterministic_by_seed():
    labels = random_labels(np.random.default_rng(7))
    a, b = make_phantom(labels, 21, **TINY), make_phantom(labels, 21, **TINY)
    for name in ("ct", "lungs", "signs"):
        np.testing.assert_array_equal(getattr(a, name).array, getattr(b, name).array)
    c = make_phantom(labels, 22, **TINY)
    assert not np.array_equal(a.lungs.array, c.lungs.array)
    assert not np.array_equal(a.ct.array, c.ct.array)


def test_anatomy_seed_fixes_the_patient_and_seed_the_scan():
    labels = {"RU_cavity": 1, "LU_pleural_thickening": 1, "RM_preexisting": 1}
    first = make_phantom(labels, 31, anatomy_seed=7, **TINY)
    later = make_phantom(labels, 32, anatomy_seed=7, **TINY)
    np.testing.assert_array_equal(first.lungs.array, later.lungs.array)
    np.testing.assert_array_equal(first.tissue.array, later.tissue.array)
    assert first.details["preexisting_conditions"] == later.details["preexisting_conditions"] == preexisting_conditions(7)
    assert not np.array_equal(first.signs.array, later.signs.array)  # the scan seed places the signs
    assert_signs_where_labelled(later, labels)
    # Without signs and noise, two scans of one patient are the same image (texture, vessels,
    # airways are the patient's); with noise they differ by the noise alone.
    quiet = [make_phantom({}, s, anatomy_seed=7, noise_hu=0.0, **TINY).ct.array for s in (31, 32)]
    np.testing.assert_array_equal(quiet[0], quiet[1])
    noisy = [make_phantom({}, s, anatomy_seed=7, **TINY).ct.array.astype(float) for s in (31, 32)]
    muscle = first.tissue.array == TISSUES["muscle"]
    diff = noisy[0][muscle] - noisy[1][muscle]
    assert 10.0 < diff.std() < 60.0 and abs(diff.mean()) < 3.0  # noise: ~22 HU each, lightly smoothed
    other = make_phantom(labels, 31, anatomy_seed=8, **TINY)
    assert not np.array_equal(first.lungs.array, other.lungs.array)
    # anatomy_seed defaults to seed
    np.testing.assert_array_equal(make_phantom(labels, 31, **TINY).ct.array,
                                  make_phantom(labels, 31, anatomy_seed=31, **TINY).ct.array)


def test_difficulty_shrinks_signs_and_adds_noise():
    labels = {"RU_cavity": 1, "LU_pleural_thickening": 1, "RM_preexisting": 1}
    easy = make_phantom(labels, 2, difficulty=0.5, **SMALL)
    hard = make_phantom(labels, 2, difficulty=2.0, **SMALL)
    assert (hard.signs.array > 0).sum() < (easy.signs.array > 0).sum()
    muscle = easy.tissue.array == TISSUES["muscle"]

    def robust_std(values):
        return 1.4826 * np.median(np.abs(values - np.median(values)))

    ratio = robust_std(hard.ct.array[muscle]) / robust_std(easy.ct.array[muscle])
    assert 3.0 < ratio < 5.0  # noise scales with difficulty: 2 / 0.5 = 4
    assert_signs_where_labelled(hard, labels)


def test_unknown_label_rejected():
    with pytest.raises(ValueError, match="RX_cavity"):
        make_phantom({"RX_cavity": 1}, 0, **TINY)


def test_bad_label_value_rejected():
    with pytest.raises(ValueError, match="RU_cavity"):
        make_phantom({"RU_cavity": 2}, 0, **TINY)


def test_fungus_ball_needs_cavity_label():
    with pytest.raises(ValueError, match="LU_cavity"):
        make_phantom({"LU_fungus_ball": 1}, 0, **TINY)


@pytest.mark.parametrize(
    "bad",
    [dict(seed=-1), dict(seed=1.5), dict(anatomy_seed=-1), dict(anatomy_seed="3"), dict(difficulty=0.0),
     dict(spacing=(0, 1, 1)), dict(shape=(4, 64, 64))],
)
def test_bad_arguments_rejected(bad):
    args = dict(labels={}, seed=0, **TINY)
    args.update(bad)
    with pytest.raises(ValueError):
        make_phantom(**args)
