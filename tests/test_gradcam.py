"""Grad-CAM against hand-computed values, batch consistency, localisation scores, 3-D maps."""

import keras
import numpy as np
import pandas as pd
import pytest
from keras import layers

from sapsam_utils.imaging import augment
from sapsam_utils.learning import gradcam as gc
from sapsam_utils.learning.models import build_classifier
from sapsam_utils.imaging.projections import ProjectionParams, project_scan, resample_box, to_grid
from sapsam_utils.core.regions import LABELS, REGIONS, SIGN_CODES
from sapsam_utils.core.results import Estimate
from sapsam_utils.core.volume import Volume, read_volume

# A 2x2 convolution with two filters on 4x4 one-channel images: maps A of 3x3x2.
KERNEL = np.array([[[[1.0, -1.0]], [[0.5, 0.0]]], [[[0.0, 2.0]], [[-1.0, 1.0]]]], dtype=np.float32)  # (2, 2, 1, 2)
CONV_BIAS = np.array([0.1, -0.2], dtype=np.float32)


def tiny_model(head: str = "linear", seed: int = 0) -> keras.Model:
    """image (4, 4, 1) -> conv (ReLU) -> flatten [-> fc (ReLU)] -> logits -> probabilities."""
    inputs = keras.Input((4, 4, 1), name="image")
    x = layers.Conv2D(2, 2, activation="relu", name="conv")(inputs)
    x = layers.Flatten(name="flatten")(x)
    if head == "relu":
        x = layers.Dense(6, activation="relu", name="fc",
                         kernel_initializer=keras.initializers.RandomNormal(0.0, 0.5, seed=seed))(x)
    x = layers.Dense(2, name="logits", kernel_initializer=keras.initializers.RandomNormal(0.0, 0.5, seed=seed + 1))(x)
    outputs = layers.Activation("softmax", name="probabilities")(x)
    model = keras.Model(inputs, outputs, name="tiny")
    model.get_layer("conv").set_weights([KERNEL, CONV_BIAS])
    return model


def conv_maps(image: np.ndarray) -> np.ndarray:
    """ReLU(2x2 valid convolution + bias) of a (4, 4, 1) image, by hand: (3, 3, 2)."""
    out = np.zeros((3, 3, 2))
    for i in range(3):
        for j in range(3):
            patch = image[i : i + 2, j : j + 2, 0]
            out[i, j] = np.einsum("ab,abk->k", patch, KERNEL[:, :, 0, :]) + CONV_BIAS
    return np.maximum(out, 0.0)


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 1.0, (n, 4, 4, 1)).astype(np.float32)


# --- Grad-CAM ---------------------------------------------------------------------------------


def test_gradcam_matches_hand_computation():
    model = tiny_model()
    # Per class: a mean gradient alpha_c per map, plus a spatial pattern of zero mean per map.
    pattern = np.random.default_rng(1).normal(0.0, 1.0, (3, 3, 2, 2))
    pattern -= pattern.mean(axis=(0, 1))
    weights = (pattern + np.array([[1.0, -0.5], [-1.5, 1.0]])).reshape(18, 2).astype(np.float32)  # [k, c]
    model.get_layer("logits").set_weights([weights, np.array([0.3, -0.3], dtype=np.float32)])
    x = images(3)
    for c in (0, 1):
        # y_c = sum_{i,j,k} W[(i, j, k), c] A[i, j, k] + b_c, so dy_c/dA = W[:, c] as (3, 3, 2).
        alpha = weights[:, c].reshape(3, 3, 2).mean(axis=(0, 1))
        np.testing.assert_allclose(alpha, [[1.0, -1.5], [-0.5, 1.0]][c], atol=1e-6)
        expected = np.stack([np.maximum(conv_maps(img) @ alpha, 0.0) for img in x])
        got = gc.gradcam(model, x, class_index=c)  # default layer: the last Conv2D, "conv"
        assert got.shape == (3, 3, 3)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
        assert (expected > 0).any() and (expected == 0).any()  # the ReLU matters here
        np.testing.assert_allclose(gc.gradcam(model, x, class_index=c, layer="conv"), got)


def test_gradcam_differentiates_the_logits_not_the_softmax():
    model = tiny_model()
    weights = np.zeros((18, 2), dtype=np.float32)
    weights[:, 1] = 1.0  # y_1 = sum(A): alpha = (1, 1) whatever the softmax does
    model.get_layer("logits").set_weights([weights, np.zeros(2, dtype=np.float32)])
    x = images(2, seed=5)
    expected = np.stack([conv_maps(img).sum(axis=-1) for img in x])
    np.testing.assert_allclose(gc.gradcam(model, x, class_index=1), expected, rtol=1e-5, atol=1e-6)
    # The softmax's output saturates here; the logits' gradient does not.
    with pytest.raises(ValueError, match="class_index"):
        gc.gradcam(model, x, class_index=2)


def test_batch_gives_each_image_its_own_map():
    model = tiny_model(head="relu")  # the gradient depends on the image through the fc ReLU
    x = images(7, seed=2)
    for c in (0, 1):
        batch = gc.gradcam(model, x, class_index=c, batch_size=4)  # two batches, uneven
        alone = np.concatenate([gc.gradcam(model, x[i : i + 1], class_index=c) for i in range(len(x))])
        np.testing.assert_allclose(batch, alone, rtol=1e-5, atol=1e-6)
        assert np.count_nonzero(~gc.empty_maps(alone)) >= 2
        assert not np.allclose(batch[1:], 0.0)  # not only the first image gets a map


def test_gradcam_on_the_study_classifier_graph():
    model = build_classifier("vgg19", (32, 32, 3), 32, weights=None, seed=0)
    x = np.random.default_rng(3).uniform(0.0, 1.0, (3, 32, 32, 3)).astype(np.float32)
    batch = gc.gradcam(model, x, class_index=1)  # default layer: block5_conv4 (2 x 2 at 32 px)
    assert batch.shape == (3, 2, 2) and (batch >= 0).all()
    alone = np.concatenate([gc.gradcam(model, x[i : i + 1]) for i in range(3)])
    np.testing.assert_allclose(batch, alone, rtol=1e-4, atol=1e-6 * max(1.0, float(np.abs(alone).max())))
    _, head = gc.split_model(model)
    assert head.get_layer("fc1") is model.get_layer("fc1")  # shares the trained weights


def test_unknown_backend_is_refused(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "numpy")
    with pytest.raises(NotImplementedError, match="numpy"):
        gc.gradcam(tiny_model(), images(1))


def test_all_zero_map_is_empty_and_stays_zero():
    model = tiny_model()
    weights = np.full((18, 2), -1.0, dtype=np.float32)  # every alpha < 0, A >= 0: ReLU removes all
    model.get_layer("logits").set_weights([weights, np.zeros(2, dtype=np.float32)])
    maps = gc.gradcam(model, images(2), class_index=0)
    assert gc.empty_maps(maps).tolist() == [True, True]
    np.testing.assert_array_equal(gc.normalise(maps), 0.0)
    mixed = np.stack([np.zeros((3, 3)), np.array([[0, 1e-9, 0], [0, 4e-9, 0], [0, 0, 2e-9]])])
    assert gc.empty_maps(mixed).tolist() == [True, False]
    assert gc.empty_maps(mixed, tol=1e-8).tolist() == [True, True]
    norm = gc.normalise(mixed)
    np.testing.assert_array_equal(norm[0], 0.0)
    np.testing.assert_allclose(norm[1].max(), 1.0)
    np.testing.assert_allclose(norm[1, 2, 2], 0.5)


def test_upsample_is_bilinear_on_pixel_centres():
    out = gc.upsample(np.array([[[0.0, 1.0], [0.0, 1.0]]]), (2, 4))
    np.testing.assert_allclose(out[0], [[0.0, 0.25, 0.75, 1.0]] * 2, atol=1e-6)
    assert gc.upsample(np.full((2, 3, 3), 2.0), (7, 5)).shape == (2, 7, 5)
    np.testing.assert_allclose(gc.upsample(np.full((1, 3, 3), 2.0), (7, 5)), 2.0)


# --- localisation scores ----------------------------------------------------------------------


def square(*pixels, shape=(4, 4)):
    out = np.zeros(shape)
    for p in pixels:
        out[p] = 1.0
    return out


def test_pointing_game_conventions():
    peak = np.zeros((4, 4))
    peak[1, 1], peak[2, 3] = 5.0, 2.0
    tie = np.zeros((4, 4))
    tie[1, 1] = tie[3, 3] = 5.0
    maps = np.stack([peak, peak, tie, tie, np.ones((4, 4)), np.zeros((4, 4)), peak])
    truths = np.stack([
        square((1, 1), (1, 2)),  # peak on the truth: hit
        square((2, 3)),  # only the second-highest value on it: miss
        square((1, 1)),  # one of two maxima off the truth: miss
        square((1, 1), (3, 3)),  # both maxima on it: hit
        square((0, 0)),  # constant map: no peak, miss
        square((0, 0)),  # all-zero map: miss
        np.zeros((4, 4)),  # empty truth: excluded
    ])
    got = gc.pointing_game(maps, truths)
    np.testing.assert_array_equal(got[:6], [1.0, 0.0, 0.0, 1.0, 0.0, 0.0])
    assert np.isnan(got[6])
    assert gc.pointing_game(np.ones((4, 4)), np.ones((4, 4))).tolist() == [0.0]  # constant: miss
    with pytest.raises(ValueError, match="upsample"):
        gc.pointing_game(np.zeros((1, 2, 2)), np.zeros((1, 4, 4)))


def test_energy_game_and_truth_share():
    truth = square((0, 0), (0, 1), (3, 3))
    m = np.zeros((4, 4))
    m[0, 0], m[0, 1], m[2, 2] = 3.0, 1.0, 4.0  # half the mass on the truth
    maps = np.stack([m, np.ones((4, 4)), np.zeros((4, 4)), m])
    truths = np.stack([truth, truth, truth, np.zeros((4, 4))])
    got = gc.energy_pointing(maps, truths)
    np.testing.assert_allclose(got[:3], [0.5, 3 / 16, 0.0])
    assert np.isnan(got[3])
    share = gc.truth_share(truths)
    np.testing.assert_allclose(share[:3], 3 / 16)
    assert np.isnan(share[3])
    np.testing.assert_allclose(gc.energy_pointing(np.ones((4, 4)), truth), gc.truth_share(truth))  # uniform = share


def test_iou_known_values():
    m = np.array([[1.0, 0.7, 0.5, 0.3], [0.1, 0.0, 0.0, 0.0], [0.0] * 4, [0.0] * 4]) * 10  # normalised: /10
    truth = square((0, 0), (0, 1), (1, 0))
    got = gc.iou(np.stack([m, np.zeros((4, 4)), m]), np.stack([truth, truth, np.zeros((4, 4))]))
    assert got.shape == (3, 4)
    # t=0.2: map {00,01,02,03} vs truth {00,01,10}: 2 / 5; t=0.4: {00,01,02}: 2/4; t=0.6: {00,01}: 2/3; t=0.8: {00}: 1/3
    np.testing.assert_allclose(got[0], [2 / 5, 2 / 4, 2 / 3, 1 / 3])
    np.testing.assert_array_equal(got[1], 0.0)
    assert np.isnan(got[2]).all()
    with pytest.raises(ValueError, match="thresholds"):
        gc.iou(m, truth, thresholds=(0.0, 0.5))


# --- sanity check -----------------------------------------------------------------------------


def test_cascading_randomisation_keeps_the_original():
    model = tiny_model(head="relu")
    before = [w.copy() for w in model.get_weights()]
    x = images(3, seed=4)
    maps_before = gc.gradcam(model, x)
    steps = []
    for name, randomised in gc.cascading_randomisation(model, seed=7):
        steps.append(name)
        assert randomised is not model
        for layer_name in ("logits", "fc", "conv"):
            changed = not all(np.array_equal(a, b) for a, b in zip(
                randomised.get_layer(layer_name).get_weights(), model.get_layer(layer_name).get_weights()))
            assert changed == (layer_name in steps), (name, layer_name)  # cumulative, one more each step
        if name == "conv":
            assert gc.gradcam(randomised, x).shape == maps_before.shape
    assert steps == ["logits", "fc", "conv"]
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(gc.gradcam(model, x), maps_before)


def test_rank_correlation():
    a = np.arange(16.0).reshape(1, 4, 4)
    np.testing.assert_allclose(gc.rank_correlation(a, a), [1.0])
    np.testing.assert_allclose(gc.rank_correlation(a, a ** 3), [1.0])  # ranks only
    np.testing.assert_allclose(gc.rank_correlation(a, -a), [-1.0])
    assert np.isnan(gc.rank_correlation(a, np.zeros_like(a))).all()


# --- 3-D maps ---------------------------------------------------------------------------------

SCAN_SHAPE = (14, 12, 18)
BOX = (slice(2, 11), slice(1, 9), slice(3, 15))  # 9 x 8 x 12 voxels, not the whole scan
GRID = (12, 10, 16)  # z thirds of 4, x halves of 8
SPACING = (2.0, 0.8, 0.7)


def test_back_project_and_combine_known_values():
    grid = (6, 3, 4)  # blocks of 2 x 3 x 2; RU = z 4..5, x 0..1
    coronal = np.array([[1.0, 2.0], [3.0, 4.0]])  # rows: z high -> low
    vol = gc.back_project(coronal, "coronal", grid, "RU")
    assert vol[5, :, 0].tolist() == [1.0] * 3 and vol[4, :, 1].tolist() == [4.0] * 3
    assert vol.sum() == 3 * 10.0  # nothing outside the block
    sag = gc.back_project(np.arange(6.0).reshape(2, 3), 2, grid, "LL")  # LL = z 0..1, x 2..3
    np.testing.assert_array_equal(sag[1, :, 2], [0, 1, 2])  # row 0 = highest z of the block
    np.testing.assert_array_equal(sag[0, :, 3], [3, 4, 5])
    with pytest.raises(ValueError, match="upsample"):
        gc.back_project(np.zeros((3, 3)), "axial", grid, "RU")
    np.testing.assert_allclose(gc.combine_maps([np.array([4.0, 2.0, 0.0]), np.array([1.0, 8.0, 5.0])]), [2.0, 4.0, 0.0])
    np.testing.assert_allclose(gc.combine_maps([np.array([4.0, 2.0]), np.array([1.0, 8.0])], mask=np.array([0, 1])),
                               [0.0, 4.0])


@pytest.mark.parametrize("angles", [(0.0, 0.0, 0.0), (5.0, 0.0, 0.0), (0.0, 0.0, -5.0), (5.0, -5.0, 5.0)])
def test_grid_to_scan_inverts_resampling_and_rotation(angles):
    point = (9, 2, 13)  # far from the grid centre, so that a rotation moves it by voxels
    scan = np.zeros(SCAN_SHAPE, dtype=np.uint8)
    scan[point] = 1
    on_grid = augment.rotate_volume(resample_box(scan, BOX, GRID, order=0), angles).astype(np.float32)
    back = gc.grid_to_scan(on_grid, BOX, SCAN_SHAPE, angles)
    assert back.shape == SCAN_SHAPE
    assert np.unravel_index(np.argmax(back), SCAN_SHAPE) == point
    assert gc.distance_to_truth_mm(back, scan, SPACING) == 0.0
    outside = np.ones(SCAN_SHAPE, dtype=bool)
    outside[BOX] = False
    assert not back[outside].any()


def test_grid_to_scan_is_exact_on_a_linear_ramp():
    z, y, x = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in SCAN_SHAPE), indexing="ij")
    ramp = 1.0 + z + 2.0 * y + 3.0 * x
    back = gc.grid_to_scan(resample_box(ramp, BOX, GRID, order=1), BOX, SCAN_SHAPE)
    inner = tuple(slice(s.start + 1, s.stop - 1) for s in BOX)  # trilinear is exact on a ramp
    np.testing.assert_allclose(back[inner], ramp[inner], rtol=1e-5)


def phantom():
    """A lung box that is not the whole scan, and a small fungus ball at the bottom edge of RU."""
    refined = np.zeros(SCAN_SHAPE, dtype=np.uint8)
    refined[BOX] = 1
    signs = np.zeros(SCAN_SHAPE, dtype=np.uint8)
    signs[8, 3:5, 5:7] = SIGN_CODES["fungus_ball"]  # grid z 8 = lowest slice of the upper third
    ct = Volume(np.where(refined > 0, -800, -1000).astype(np.int16), SPACING)
    return ct, Volume(refined, SPACING), Volume(refined, SPACING), Volume(signs, SPACING)


@pytest.mark.parametrize("angles", [(0.0, 0.0, 0.0), (5.0, 0.0, 0.0), (0.0, 0.0, 5.0)])
def test_three_projections_back_project_onto_the_lesion(angles):
    ct, conservative, refined, signs = phantom()
    scan = to_grid(ct, conservative, refined, signs, GRID)
    assert scan.box == BOX
    params = ProjectionParams(grid_shape=GRID, angles=(-5.0, 0.0, 5.0))
    images = project_scan(scan, params)
    r = [tuple(a) for a in images.rotations.tolist()].index(angles)
    label = LABELS.index("fungus_ball")
    truth = {axis: images.regions_truth[axis][r, ..., label] for axis in gc.AXES}  # (6, H, W) each
    region = int(np.argmax(truth["axial"].sum(axis=(1, 2))))
    if angles == (0.0, 0.0, 0.0):
        assert REGIONS[region] == "RU"
    volume = gc.region_map_3d({axis: t[region] for axis, t in truth.items()}, GRID, REGIONS[region])
    back = gc.grid_to_scan(volume, scan.box, SCAN_SHAPE, angles)
    lesion = signs.array > 0
    distance = gc.distance_to_truth_mm(back, lesion, SPACING)
    if angles == (0.0, 0.0, 0.0):
        assert distance == 0.0
    assert distance <= max(SPACING)  # within one voxel


def test_distance_to_truth_and_nifti(tmp_path):
    truth = np.zeros((4, 4, 8), dtype=bool)
    truth[0, 0, 3] = True
    m = np.zeros(truth.shape)
    m[0, 0, 0] = 1.0
    assert gc.distance_to_truth_mm(m, truth, (2.0, 1.0, 0.5)) == pytest.approx(1.5)
    m[2, 0, 3] = 1.0  # a tie: the farther maximum counts
    assert gc.distance_to_truth_mm(m, truth, (2.0, 1.0, 0.5)) == pytest.approx(4.0)
    assert np.isnan(gc.distance_to_truth_mm(np.zeros(truth.shape), truth, (1, 1, 1)))
    assert np.isnan(gc.distance_to_truth_mm(m, np.zeros(truth.shape), (1, 1, 1)))
    path = gc.save_nifti(m, tmp_path / "map.nii.gz", (2.0, 1.0, 0.5), origin=(1.0, 2.0, 3.0))
    back = read_volume(path)
    np.testing.assert_array_equal(back.array, m.astype(np.float32))
    assert back.spacing == (2.0, 1.0, 0.5) and back.origin == (1.0, 2.0, 3.0)


# --- helpers of the Grad-CAM chapter ----------------------------------------------------------


def test_layer_grid_of_the_study_classifier():
    model = build_classifier("vgg19_bn", (64, 32, 3), 32, None, 0)
    assert gc.layer_grid(model) == (2, 2)  # the last block at 32 px: no localisation
    assert gc.layer_grid(model, "block3_relu4") == (8, 8)
    assert gc.layer_grid(tiny_model()) == (3, 3)


def test_localisation_scores_table():
    truths = np.zeros((3, 4, 4))
    truths[0, :2, :2] = 1  # peak on it
    truths[1, 2:, 2:] = 1  # peak off it
    maps = np.zeros((3, 4, 4))
    maps[0, 0, 0], maps[1, 0, 0], maps[2, 1, 1] = 1.0, 1.0, 1.0  # image 2: empty truth
    table = gc.localisation_scores(maps, truths, thresholds=(0.5,))
    assert list(table.columns) == ["pointing_game", "energy", "truth_share", "iou_0.5", "empty_map"]
    np.testing.assert_array_equal(table["pointing_game"], [1.0, 0.0, np.nan])
    np.testing.assert_array_equal(table["energy"], [1.0, 0.0, np.nan])
    np.testing.assert_array_equal(table["truth_share"], [0.25, 0.25, np.nan])
    np.testing.assert_array_equal(table["iou_0.5"], [0.25, 0.0, np.nan])
    assert not table["empty_map"].any()
    assert gc.localisation_scores(np.zeros((1, 4, 4)), truths[:1])["empty_map"].tolist() == [True]


def test_randomisation_curve_steps_and_values():
    model = tiny_model(head="relu")
    x = images(6, seed=2)
    curve = gc.randomisation_curve(model, x, seed=5)
    assert curve["layer"].tolist() == ["logits", "fc", "conv"] and curve["step"].tolist() == [1, 2, 3]
    assert curve["rank_correlation"].between(-1, 1).all() and curve["constant_maps"].between(0, 1).all()
    assert curve["abs_rank_correlation"].between(0, 1).all()
    assert (curve["abs_q25"] <= curve["abs_rank_correlation"]).all() and (curve["abs_rank_correlation"] <= curve["abs_q75"]).all()
    assert gc.randomisation_curve(model, x, layers=[]).empty  # an empty cascade: no step
    assert gc.randomisation_curve(model, x, layers=["fc"], seed=0)["layer"].tolist() == ["fc"]


def test_scan_map_3d_and_chance_distance():
    ct, conservative, refined, signs = phantom()
    scan = to_grid(ct, conservative, refined, signs, GRID)
    images = project_scan(scan, ProjectionParams(grid_shape=GRID, angles=(0.0,)))
    label, region = LABELS.index("fungus_ball"), REGIONS.index("RU")
    maps = {axis: images.regions_truth[axis][0, region, ..., label] for axis in gc.AXES}
    back = gc.scan_map_3d(maps, scan, "RU", SCAN_SHAPE)
    assert back.shape == SCAN_SHAPE and not back[refined.array == 0].any()
    lesion = signs.array > 0
    assert gc.distance_to_truth_mm(back, lesion, SPACING) == 0.0
    chance = gc.chance_distance_mm(refined.array, lesion, SPACING)
    assert chance > 0
    one = np.zeros(SCAN_SHAPE, bool)
    one[8, 3, 9] = True  # 3 voxels along x (0.7 mm each) from the lesion's x 5..6
    assert gc.chance_distance_mm(one, lesion, SPACING) == pytest.approx(3 * 0.7)
    assert np.isnan(gc.chance_distance_mm(one, np.zeros(SCAN_SHAPE), SPACING))


def test_sign_voxels_counts_the_lumen_as_cavity():
    from sapsam_utils.core.regions import CAVITY_LUMEN

    signs = np.array([0, SIGN_CODES["cavity"], CAVITY_LUMEN, SIGN_CODES["fungus_ball"]])
    assert gc.sign_voxels(signs, "cavity").tolist() == [False, True, True, False]
    assert gc.sign_voxels(signs, "fungus_ball").tolist() == [False, False, False, True]
    with pytest.raises(ValueError):
        gc.sign_voxels(signs, "nodule")


def test_sub_region_psam_scores_the_lesion_of_its_sub_region():
    ct, conservative, refined, signs = phantom()
    scan = to_grid(ct, conservative, refined, signs, GRID)
    images = project_scan(scan, ProjectionParams(grid_shape=GRID, angles=(0.0,)))
    label, region = LABELS.index("fungus_ball"), REGIONS.index("RU")
    maps = {axis: images.regions_truth[axis][0, region, ..., label] for axis in gc.AXES}
    map3d, truth, distance, chance = gc.sub_region_psam(maps, ct, refined, signs, scan, "RU", "fungus_ball")
    assert map3d.shape == SCAN_SHAPE and truth.sum() == (signs.array > 0).sum()
    assert distance == 0.0 and chance == pytest.approx(gc.chance_distance_mm(
        (refined.array > 0) & np.isin(np.arange(SCAN_SHAPE[0]), range(8, 11))[:, None, None]
        & (np.arange(SCAN_SHAPE[2]) < 9)[None, None, :], truth, SPACING))
    _, truth_ll, distance_ll, _ = gc.sub_region_psam(maps, ct, refined, signs, scan, "LL", "fungus_ball")
    assert not truth_ll.any() and np.isnan(distance_ll)  # no lesion in that sub-region


def test_activation_rank_correlation():
    # One filter: the map is ReLU(alpha * A) with alpha of one sign, so it ranks pixels like A itself.
    inputs = keras.Input((4, 4, 1), name="image")
    x = layers.Conv2D(1, 2, activation="relu", name="conv", kernel_initializer="ones", bias_initializer="zeros")(inputs)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(2, name="logits", kernel_initializer=keras.initializers.Constant([[1.0, 2.0]] * 9))(x)
    model = keras.Model(inputs, layers.Activation("softmax", name="probabilities")(x), name="one_filter")
    rho = gc.activation_rank_correlation(model, images(3, seed=1))
    np.testing.assert_allclose(rho, 1.0)
    x = images(4, seed=2)
    np.testing.assert_allclose(gc.mean_activation(tiny_model(), x), np.stack([conv_maps(i).mean(axis=-1) for i in x]),
                               rtol=1e-5, atol=1e-6)
    assert gc.mean_activation(tiny_model(), x[:0]).shape == (0, 3, 3)
    mixed = gc.activation_rank_correlation(tiny_model(), x)
    assert mixed.shape == (4,) and np.all((np.abs(mixed) <= 1) | np.isnan(mixed))


# --- the chapter's scores -----------------------------------------------------------------------


def test_layer_maps_are_gradcam_and_the_mean_activation_on_the_pixels():
    model, x = tiny_model(), images(3, seed=4)
    maps = gc.layer_maps(model, x, ["conv"], batch_size=2)
    assert list(maps) == ["conv", "mean_activation"]
    np.testing.assert_allclose(maps["conv"], gc.upsample(gc.gradcam(model, x, 1, "conv"), (4, 4)), rtol=1e-6)
    by_hand = np.stack([conv_maps(i).mean(axis=-1) for i in x])
    np.testing.assert_allclose(maps["mean_activation"], gc.upsample(by_hand, (4, 4)), rtol=1e-5, atol=1e-6)


def test_class_maps_are_the_class_s_gradcam_on_the_images_pixels():
    model, x = tiny_model(), images(3, seed=4)
    for c in (0, 1):
        maps = gc.class_maps(model, x, "conv", class_index=c, batch_size=2)
        assert maps.shape == (3, 4, 4)
        np.testing.assert_allclose(maps, gc.upsample(gc.gradcam(model, x, c, "conv"), (4, 4)), rtol=1e-6)


def test_localisation_by_layer_scores_each_layer_against_the_truth():
    model, x = tiny_model(), images(4, seed=6)
    truths = np.zeros((4, 4, 4))
    truths[:, :2, :2] = 1
    table, maps, summary = gc.localisation_by_layer(model, x, truths, ["conv"], thresholds=(0.5,))
    expected = gc.layer_maps(model, x, ["conv"])
    np.testing.assert_allclose(maps, expected["conv"], rtol=1e-6)
    scores = {name: gc.localisation_scores(m, truths, (0.5,)) for name, m in expected.items()}
    assert table.equals(scores["conv"])
    assert summary["name"].tolist() == ["conv", "mean_activation"]
    assert summary["layer"].tolist() == ["conv (3x3)", "mean_activation (3x3)"]
    np.testing.assert_allclose(summary["pointing game"], [scores[n]["pointing_game"].mean() for n in scores])
    np.testing.assert_allclose(summary["energy"], [scores[n]["energy"].mean() for n in scores])
    np.testing.assert_allclose(summary["chance"], 0.25)


def test_localisation_summary_numbers_and_row():
    from sapsam_utils.learning.evaluation import mean_ci

    table = pd.DataFrame({"pointing_game": [1.0, 1.0, 0.0, 1.0, np.nan], "energy": [0.9, 0.8, 0.1, 0.7, np.nan],
                          "truth_share": [0.1, 0.1, 0.1, 0.1, np.nan], "iou_0.5": [0.5, 0.4, 0.0, 0.3, np.nan],
                          "empty_map": [False, False, True, False, False],
                          "patient_id": ["A", "A", "B", "C", "C"]})
    numbers, row = gc.localisation_summary(table, (0.5,), n_boot=200, seed=3)
    assert list(numbers) == ["pointing_game", "energy", "iou_0.5", "pointing_chance", "energy_uniform",
                             "scored_images", "empty_maps", "pointing_above_chance"]
    m = mean_ci(table["energy"], table["patient_id"], 200, 3)
    assert numbers["energy"] == Estimate(m["value"], m["ci_low"], m["ci_high"])
    assert numbers["pointing_game"].value == 0.75 and numbers["pointing_chance"] == pytest.approx(0.1)
    assert numbers["scored_images"] == 4 and numbers["empty_maps"] == 1
    assert numbers["pointing_above_chance"] == (numbers["pointing_game"].low > 0.1)
    assert row["scored (patients)"] == "4 (3)" and row["all-zero maps"] == "1 of 5"
    assert row["energy"] == numbers["energy"].text() and row["chance / uniform"] == "0.100"


def test_randomisation_check_reads_the_whole_top_block():
    curve = pd.DataFrame({"step": [1, 2, 3, 4], "layer": ["logits", "block5_conv4", "block5_conv1", "block4_conv4"],
                          "rank_correlation": [0.9, 0.5, -0.3, 0.1], "abs_rank_correlation": [0.9, 0.6, 0.4, 0.2]})
    top, check = gc.randomisation_check(curve, 0.5)
    assert top["step"] == 3
    assert check == {"randomisation_rank_corr_top_block": 0.4, "randomisation_signed_rank_corr_top_block": -0.3,
                     "randomisation_target_met": True}
    assert gc.randomisation_check(curve, 0.4)[1]["randomisation_target_met"] is False


def test_psam3d_table_and_results():
    ct, conservative, refined, signs = phantom()
    scan = to_grid(ct, conservative, refined, signs, GRID)
    images_ = project_scan(scan, ProjectionParams(grid_shape=GRID, angles=(0.0,)))
    label = LABELS.index("fungus_ball")
    maps = {axis: np.stack([images_.regions_truth[axis][0, REGIONS.index(r), ..., label] for r in ("RU", "LL")])
            for axis in gc.AXES}
    table = gc.psam3d_table(maps, lambda scan_id: (ct, refined, signs, scan), ["s", "s"], ["RU", "LL"], "fungus_ball")
    _, _, distance, chance = gc.sub_region_psam({a: m[0] for a, m in maps.items()}, ct, refined, signs, scan, "RU",
                                                "fungus_ball")
    assert table.loc[0, "distance_mm"] == distance == 0.0 and table.loc[0, "chance_mm"] == pytest.approx(chance)
    assert table.loc[0, "on_sign"] == 1.0
    assert table.loc[1].isna().all()  # no lesion in LL: no distance, no chance, not scored

    hand = pd.DataFrame({"distance_mm": [0.0, 4.0, np.nan, 10.0], "chance_mm": [20.0, 20.0, 20.0, 30.0],
                         "on_sign": [1.0, 0.0, 0.0, 0.0]})
    out = gc.psam3d_results(hand, ["A", "B", "B", "C"], "fungus_ball", n_boot=100, seed=0)
    assert list(out)[:4] == ["psam3d_distance_mm", "psam3d_chance_mm", "psam3d_on_sign", "psam3d_sign"]
    assert out["psam3d_distance_mm"].value == pytest.approx(14 / 3) and out["psam3d_chance_mm"].value == 22.5
    assert out["psam3d_images"] == 4 and out["psam3d_empty_maps"] == 1 and out["psam3d_distance_mm_median"] == 4.0
    assert out["psam3d_below_chance"] == (out["psam3d_distance_mm"].high < 22.5) is True
    assert gc.median_case(hand["distance_mm"]) == 1 and gc.median_case(pd.Series([np.nan, np.nan])) == 0
