"""3-D rotations (the paper's 27) and 2-D training-time augmentation."""

import itertools

import numpy as np
import pytest

from sapsam_utils.imaging import augment

SHAPE = (24, 32, 40)


def test_rotation_set_is_the_27_combinations_identity_first():
    rotations = augment.rotation_set()
    assert len(rotations) == 27
    assert rotations[0] == (0.0, 0.0, 0.0)
    assert set(rotations) == set(itertools.product((-5.0, 0.0, 5.0), repeat=3))
    assert augment.rotation_set((0.0, 5.0))[0] == (0.0, 0.0, 0.0) and len(augment.rotation_set((0.0, 5.0))) == 8
    with pytest.raises(ValueError, match="must include 0"):
        augment.rotation_set((-5.0, 5.0))


def test_identity_rotation_is_exact():
    index_map = augment.rotation_index_map(SHAPE, (0.0, 0.0, 0.0))
    np.testing.assert_array_equal(index_map, np.arange(np.prod(SHAPE)))
    volume = np.random.default_rng(0).normal(size=SHAPE).astype(np.float32)
    np.testing.assert_array_equal(augment.rotate_volume(volume, (0.0, 0.0, 0.0)), volume)


def test_the_27_rotations_are_distinct():
    maps = augment.rotation_index_maps(SHAPE, augment.PAPER_ANGLES)
    assert len(maps) == 27
    distinct = {m.tobytes() for m in maps}
    assert len(distinct) == 27


def test_index_map_matches_the_rotation_formula():
    """Every output voxel copies round(R.T (p - c) + c), or the sentinel when that is outside."""
    for angles in [(5.0, -5.0, 5.0), (-5.0, 0.0, 5.0), (0.0, 5.0, 0.0)]:
        index_map = augment.rotation_index_map(SHAPE, angles)
        inverse = augment.rotation_matrix(angles).T
        centre = (np.array(SHAPE) - 1) / 2
        points = np.indices(SHAPE).reshape(3, -1).T
        source = np.floor((points - centre) @ inverse.T + centre + 0.5).astype(int)
        inside = ((source >= 0) & (source < SHAPE)).all(axis=1)
        expected = np.where(inside, np.ravel_multi_index(np.clip(source, 0, np.array(SHAPE) - 1).T, SHAPE),
                            np.prod(SHAPE))
        np.testing.assert_array_equal(index_map, expected)


def test_rotation_moves_a_voxel_to_r_times_its_offset():
    """A voxel at centre + d goes to centre + R d: +90 degrees about z takes +x to -y."""
    shape = (5, 21, 21)
    volume = np.zeros(shape, dtype=np.uint8)
    volume[2, 10, 15] = 1  # offset (0, 0, +5) from the centre (2, 10, 10)
    rotated = augment.rotate_volume(volume, (90.0, 0.0, 0.0))
    assert rotated.sum() == 1
    expected = np.rint(augment.rotation_matrix((90.0, 0.0, 0.0)) @ [0, 0, 5]).astype(int) + [2, 10, 10]
    assert tuple(expected) == (2, 5, 10)
    assert tuple(np.argwhere(rotated)[0]) == (2, 5, 10)
    # about y, +90 degrees takes +x to +z; about x, +z to +y (the matrices of rotation_matrix)
    tall = np.zeros((21, 21, 21), dtype=np.uint8)
    tall[10, 10, 15] = 1
    assert tuple(np.argwhere(augment.rotate_volume(tall, (0.0, 90.0, 0.0)))[0]) == (15, 10, 10)
    tall[:] = 0
    tall[15, 10, 10] = 1
    assert tuple(np.argwhere(augment.rotate_volume(tall, (0.0, 0.0, 90.0)))[0]) == (10, 15, 10)


def test_one_map_moves_every_volume_consistently():
    """CT, mask and truth rotated with the same map keep their voxel-by-voxel correspondence."""
    rng = np.random.default_rng(1)
    ids = np.arange(np.prod(SHAPE), dtype=np.int32).reshape(SHAPE)  # each voxel's identity
    mask = (rng.random(SHAPE) > 0.5).astype(np.uint8)
    truth = rng.integers(0, 6, SHAPE).astype(np.uint8)
    index_map = augment.rotation_index_map(SHAPE, (5.0, -5.0, 5.0))
    rot_ids = augment.gather(augment.with_sentinel(ids, -1), index_map, SHAPE)
    rot_mask = augment.gather(augment.with_sentinel(mask, 0), index_map, SHAPE)
    rot_truth = augment.gather(augment.with_sentinel(truth, 0), index_map, SHAPE)
    inside = rot_ids >= 0
    assert 0.9 < inside.mean() < 1.0  # the corners leave the grid
    np.testing.assert_array_equal(rot_mask[inside], mask.ravel()[rot_ids[inside]])
    np.testing.assert_array_equal(rot_truth[inside], truth.ravel()[rot_ids[inside]])
    assert not rot_mask[~inside].any() and not rot_truth[~inside].any()


def test_2d_augmentation_is_seeded_and_moves_image_and_truth_together():
    image = np.zeros((40, 60, 3), dtype=np.float32)
    image[10:16, 40:48] = 0.8
    truth = np.zeros((40, 60, 4), dtype=np.float32)
    truth[10:16, 40:48, 2] = 0.5
    a_img, a_truth = augment.augment_2d(image, truth, rng=np.random.default_rng(7))
    b_img, b_truth = augment.augment_2d(image, truth, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_truth, b_truth)
    c_img, _ = augment.augment_2d(image, truth, rng=np.random.default_rng(8))
    assert not np.array_equal(a_img, c_img)
    assert a_img.shape == image.shape and a_truth.shape == truth.shape
    assert a_img.min() >= 0.0 and a_img.max() <= 1.0
    # the truth footprint stays on the bright patch, with its exact value (nearest neighbour)
    footprint = a_truth[..., 2] > 0
    assert footprint.sum() > 10
    assert set(np.unique(a_truth[..., 2])) <= {0.0, 0.5}
    assert a_img[footprint, 0].mean() > 0.6
    assert a_truth[..., [0, 1, 3]].max() == 0


def test_2d_affine_identity_and_known_zoom_and_rotation():
    image = np.random.default_rng(2).random((31, 31)).astype(np.float32)
    np.testing.assert_allclose(augment.affine_2d(image, 0.0, 1.0), image, atol=1e-6)
    dot = np.zeros((31, 31), dtype=np.float32)
    dot[15, 20] = 1.0  # 5 pixels right of the centre
    zoomed = augment.affine_2d(dot, 0.0, 2.0, order=0)
    assert zoomed[15, 25] == 1.0 and zoomed[15, 20] == 0.0  # twice as far from the centre
    turned = augment.affine_2d(dot, 90.0, 1.0, order=0)
    assert turned[10, 15] == 1.0  # counter-clockwise as displayed: right of centre -> above it


def test_augment_batch_draws_per_image_and_respects_ranges():
    images = np.ones((5, 20, 20), dtype=np.float32)
    out, _ = augment.augment_batch(images, seed=3, max_rotation_deg=0.0, zoom_range=(1.0, 1.0))
    np.testing.assert_allclose(out, images, atol=1e-6)
    out, _ = augment.augment_batch(images, seed=3, max_rotation_deg=20.0, zoom_range=(0.8, 0.8))
    assert (out[:, 0, 0] == 0).all() and (out[:, 10, 10] == 1).all()  # shrunk: corners empty
    rng = np.random.default_rng(0)
    draws = np.array([augment.random_affine_2d(rng, 20.0, (0.8, 1.2)) for _ in range(500)])
    assert draws[:, 0].min() >= -20 and draws[:, 0].max() <= 20 and draws[:, 0].std() > 8
    assert draws[:, 1].min() >= 0.8 and draws[:, 1].max() <= 1.2
