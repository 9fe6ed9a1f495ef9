"""Resampling to the grid, whole-scan and sub-region projections, truth maps."""

import numpy as np
import pytest
from scipy import ndimage

from sapsam_utils.imaging import augment
from sapsam_utils.core.paths import shared_ct_dir
from sapsam_utils.imaging.projections import (
    AXES,
    GridScan,
    ProjectionParams,
    project_grid,
    project_scan,
    project_volume,
    reference_images,
    resample_box,
    rotate_grid_scan,
    to_grid,
)
from sapsam_utils.core.regions import LABELS, REGIONS, SIGN_CODES, CAVITY_LUMEN, region_map, region_slices
from sapsam_utils.core.volume import Volume

GRID = (12, 10, 16)  # z thirds of 4, x halves of 8
RU, LL = REGIONS.index("RU"), REGIONS.index("LL")


def grid_scan(hu, conservative=None, refined=None, signs=None):
    zeros = np.zeros(hu.shape, dtype=np.uint8)
    return GridScan(
        hu=hu.astype(np.float32),
        conservative=zeros if conservative is None else conservative.astype(np.uint8),
        refined=zeros if refined is None else refined.astype(np.uint8),
        signs=signs,
        box=tuple(slice(0, n) for n in hu.shape),
        spacing=(1.0, 1.0, 1.0),
    )


def params(**kw):
    return ProjectionParams(**{"grid_shape": GRID, "angles": (0.0,), **kw})


def hand_scan():
    """Known voxels: RU is z 8..11, x 0..7 (upper = high z, right = low x); LL is z 0..3, x 8..15."""
    hu = np.full(GRID, -1000.0)
    refined = np.zeros(GRID, dtype=np.uint8)
    for z, value in zip((8, 9, 10, 11), (-500, -300, -1000, 100)):  # one ray along z in RU
        hu[z, 2, 3] = value
    hu[8, 5, 4] = -500  # a ray with parenchyma only
    hu[1, 7, 12] = -200  # LL
    refined[hu > -1000] = 1
    refined[10, 2, 3] = 1  # the -1000 voxel of the RU ray is lung too
    signs = np.zeros(GRID, dtype=np.uint8)
    signs[9, 2, 3] = SIGN_CODES["fungus_ball"]
    signs[10, 2, 3] = CAVITY_LUMEN
    signs[1, 7, 12] = SIGN_CODES["pleural_thickening"]
    return grid_scan(hu, refined=refined, signs=signs)


def test_params_validate_the_grid_and_windows():
    with pytest.raises(ValueError, match="divisible"):
        ProjectionParams(grid_shape=(10, 16, 16))
    with pytest.raises(ValueError, match="overlap"):
        ProjectionParams(windows=((-900, -100), (-500, 0)))
    with pytest.raises(ValueError, match="statistic"):
        ProjectionParams(statistic="median")
    with pytest.raises(ValueError, match="whole_mask"):
        ProjectionParams(whole_mask="body")
    p = ProjectionParams(grid_shape=[216, 256, 256], windows=[[-1400, -900], [-900, -160], [-160, 240]])
    assert p.block_shape == (72, 256, 128) and len(p.rotations) == 27
    assert p == ProjectionParams()  # lists from YAML equal the tuple defaults


def test_window_means_by_hand():
    images = project_grid(hand_scan(), params())
    axial = images.regions["axial"][0]  # (6, ny, nx/2, 3)
    assert axial.shape == (6, 10, 8, 3)
    np.testing.assert_allclose(axial[RU, 2, 3], [(-1000 + 1400) / 500, (-400 + 900) / 740, (100 + 160) / 400], rtol=1e-6)
    np.testing.assert_allclose(axial[RU, 5, 4], [0.0, (-500 + 900) / 740, 0.0], rtol=1e-6)  # no air, no soft tissue: 0
    np.testing.assert_allclose(axial[LL, 7, 4], [0.0, (-200 + 900) / 740, 0.0], rtol=1e-6)
    lit = np.zeros(axial.shape[:3], dtype=bool)
    lit[RU, 2, 3] = lit[RU, 5, 4] = lit[LL, 7, 4] = True
    assert not axial[~lit].any()  # rays with no lung voxel are 0
    # coronal: rows are z from the top of the block down, columns x; sagittal: rows z, columns y
    coronal, sagittal = images.regions["coronal"][0], images.regions["sagittal"][0]
    assert coronal.shape == (6, 4, 8, 3) and sagittal.shape == (6, 4, 10, 3)
    np.testing.assert_allclose(coronal[RU, 0, 3], [0, 0, (100 + 160) / 400], rtol=1e-6)  # z = 11
    np.testing.assert_allclose(coronal[RU, 3, 3], [0, (-500 + 900) / 740, 0], rtol=1e-6)  # z = 8
    np.testing.assert_allclose(coronal[RU, 3, 4], [0, (-500 + 900) / 740, 0], rtol=1e-6)
    np.testing.assert_allclose(sagittal[RU, 2, 2], [0, (-300 + 900) / 740, 0], rtol=1e-6)  # z = 9, y = 2
    np.testing.assert_allclose(sagittal[RU, 1, 2], [0.8, 0, 0], rtol=1e-6)  # z = 10
    np.testing.assert_allclose(sagittal[LL, 2, 7], [0, (-200 + 900) / 740, 0], rtol=1e-6)  # z = 1, y = 7


def test_weighted_statistic_scales_by_the_share_of_the_ray():
    images = project_grid(hand_scan(), params(statistic="weighted"))
    np.testing.assert_allclose(
        images.regions["axial"][0, RU, 2, 3],
        [0.8 * 1 / 4, (500 / 740) * 2 / 4, 0.65 * 1 / 4], rtol=1e-6,
    )


def test_whole_projection_mean_inside_the_conservative_mask():
    hu = np.full(GRID, -1000.0)
    conservative = np.zeros(GRID, dtype=np.uint8)
    conservative[2:6, 1:4, 2:5] = 1
    hu[2:6, 1:4, 2:5] = -750
    hu[2:6, 1, 2] = -400  # above the range: clipped to 1
    hu[:, 8, 8] = -600  # outside the mask: ignored
    images = project_grid(grid_scan(hu, conservative=conservative), params())
    axial = images.whole["axial"][0]
    assert axial.shape == (10, 16)
    assert axial[2, 3] == pytest.approx(0.5) and axial[1, 2] == pytest.approx(1.0)
    expected_lit = np.zeros((10, 16), dtype=bool)
    expected_lit[1:4, 2:5] = True
    np.testing.assert_array_equal(axial > 0, expected_lit)
    assert images.whole["coronal"][0].shape == (12, 16) and images.whole["sagittal"][0].shape == (12, 10)
    # coronal rows: z reversed (row 0 = top slice); along y the ray mixes 1 voxel of -400 and 2 of -750
    assert images.whole["coronal"][0][12 - 1 - 3, 2] == pytest.approx(((-400 - 1500) / 3 + 1000) / 500)
    assert images.whole["coronal"][0][0].max() == 0
    for axis in AXES:
        assert 0.0 <= images.whole[axis].min() and images.whole[axis].max() <= 1.0


def test_region_images_are_the_region_slices_blocks():
    """Each block filled with its own HU: each region image shows exactly its block's value."""
    values = {name: -850.0 + 60.0 * i for i, name in enumerate(REGIONS)}
    hu = np.full(GRID, -1000.0)
    for name, sl in region_slices(GRID).items():
        hu[sl] = values[name]
    scan = grid_scan(hu, refined=np.ones(GRID, dtype=np.uint8))
    images = project_grid(scan, params())
    for axis in AXES:
        for r, name in enumerate(REGIONS):
            np.testing.assert_allclose(images.regions[axis][0, r, ..., 1], (values[name] + 900) / 740, rtol=1e-6)
            assert not images.regions[axis][0, r, ..., [0, 2]].any()


def test_truth_maps_land_on_the_sign():
    images = project_grid(hand_scan(), params())
    fb, cav, pl = (LABELS.index(k) for k in ("fungus_ball", "cavity", "pleural_thickening"))
    axial = images.regions_truth["axial"][0]  # (6, ny, nx/2, 4)
    assert axial[RU, 2, 3, fb] == pytest.approx(1 / 4) and axial[RU, 2, 3, cav] == pytest.approx(1 / 4)
    assert axial[LL, 7, 4, pl] == pytest.approx(1 / 4)
    assert np.count_nonzero(axial) == 3
    whole = images.whole_truth["axial"][0]  # fraction of the 12-voxel ray
    assert whole[2, 3, fb] == pytest.approx(1 / 12) and whole[7, 12, pl] == pytest.approx(1 / 12)
    assert images.regions_truth["coronal"][0][RU, 11 - 9, 3, fb] == pytest.approx(1 / 10)
    assert images.regions_truth["sagittal"][0][LL, 2, 7, pl] == pytest.approx(1 / 8)


def test_fast_path_equals_the_masked_array_reference_under_rotation():
    rng = np.random.default_rng(4)
    hu = rng.normal(-700, 400, GRID)
    scan = grid_scan(hu, conservative=hu < -500, refined=rng.random(GRID) > 0.3,
                     signs=(rng.random(GRID) > 0.9).astype(np.uint8) * rng.integers(1, 6, GRID).astype(np.uint8))
    for statistic, whole_mask in (("mean", "conservative"), ("weighted", "refined")):
        p = params(angles=augment.PAPER_ANGLES, statistic=statistic, whole_mask=whole_mask)
        images = project_scan(scan, p, n_threads=2)
        assert images.whole["axial"].shape == (27, 10, 16)
        assert images.regions["sagittal"].shape == (27, 6, 4, 10, 3)
        for k in (0, 5, 26):
            rotated = rotate_grid_scan(scan, p.rotations[k])
            ref = reference_images(rotated, p)
            single = project_grid(rotated, p)
            for axis in AXES:
                np.testing.assert_allclose(images.whole[axis][k], ref.whole[axis][0], atol=1e-5)
                np.testing.assert_allclose(images.regions[axis][k], ref.regions[axis][0], atol=1e-5)
                np.testing.assert_array_equal(images.regions_truth[axis][k], single.regions_truth[axis][0])
                assert 0 <= images.regions[axis].min() and images.regions[axis].max() <= 1
    assert not np.array_equal(images.regions["axial"][0], images.regions["axial"][1])


def test_resample_box_identity_and_linear_interpolation():
    rng = np.random.default_rng(5)
    volume = rng.normal(size=(20, 24, 28)).astype(np.float32)
    box = (slice(3, 17), slice(2, 22), slice(5, 25))
    same = resample_box(volume, box, (14, 20, 20), order=1)
    np.testing.assert_allclose(same, volume[box], atol=1e-6)
    np.testing.assert_array_equal(resample_box(volume, box, (14, 20, 20), order=0), volume[box])
    out = resample_box(volume, box, (9, 30, 12), order=1, fill=0.0)
    # the same samples with scipy: voxel-edge-aligned centres of the box
    coords = [b.start - 0.5 + (np.arange(n) + 0.5) * (b.stop - b.start) / n for b, n in zip(box, (9, 30, 12))]
    grid = np.meshgrid(*coords, indexing="ij")
    expected = ndimage.map_coordinates(volume, grid, order=1, mode="constant", cval=0.0)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    nearest = resample_box(volume, box, (9, 30, 12), order=0)
    assert set(np.unique(nearest)) <= set(np.unique(volume[box]))


def test_to_grid_crops_the_refined_lung_box():
    shape = (30, 40, 50)
    hu = np.full(shape, 40, dtype=np.int16)
    lungs = np.zeros(shape, dtype=np.uint8)
    lungs[5:25, 8:32, 6:24] = 1
    lungs[5:25, 8:32, 26:44] = 2
    hu[lungs > 0] = -850
    signs = np.zeros(shape, dtype=np.uint8)
    signs[20:24, 10:14, 8:12] = SIGN_CODES["cavity"]  # upper right
    ct = Volume(hu, (2.0, 0.8, 0.8))
    scan = to_grid(ct, ct.like(lungs), ct.like(lungs), ct.like(signs), (12, 16, 20))
    assert scan.box == (slice(5, 25), slice(8, 32), slice(6, 44))
    assert scan.spacing == pytest.approx((20 * 2.0 / 12, 24 * 0.8 / 16, 38 * 0.8 / 20))
    assert scan.hu.dtype == np.float32 and scan.hu.shape == (12, 16, 20)
    assert set(np.unique(scan.refined)) == {0, 1, 2}
    assert (scan.refined[:, :, :9] == 1).all() and (scan.refined[:, :, 11:] == 2).all()
    # the planted cavity is in RU only
    labels = {}
    regions = region_map(scan.signs.shape)
    for r, name in enumerate(REGIONS):
        labels[name] = bool((scan.signs[regions == r + 1] > 0).any())
    assert labels == {"RU": True, "RM": False, "RL": False, "LU": False, "LM": False, "LL": False}
    with pytest.raises(ValueError, match="empty"):
        to_grid(ct, ct.like(lungs), ct.like(np.zeros(shape, np.uint8)), None, (12, 16, 20))


def test_phantom_truth_projects_into_the_labelled_regions():
    phantom_module = pytest.importorskip("sapsam_utils.synthetic.phantom")
    labels = {"RU_cavity": 1, "RU_fungus_ball": 1, "LU_pleural_thickening": 1, "RL_preexisting": 1}
    phantom = phantom_module.make_phantom(labels, seed=3, shape=(54, 64, 64), spacing=(6.0, 5.6, 5.6))
    p = ProjectionParams(grid_shape=(27, 32, 32), angles=(0.0,))
    # the true lungs as both masks: the truth must then land in the labelled regions exactly
    scan, images = project_volume(phantom.ct, phantom.lungs, phantom.lungs, phantom.signs, p)
    for r, region in enumerate(REGIONS):
        for k, label in enumerate(LABELS):
            present = images.regions_truth["axial"][0, r, ..., k].max() > 0
            assert present == bool(phantom.labels[f"{region}_{label}"]), f"{region}_{label}"
    for axis in AXES:
        assert images.regions[axis].max() <= 1 and images.regions[axis].min() >= 0
        assert images.whole[axis][0].mean() > 0.1  # the lungs are visible


def test_real_ct_on_a_small_grid():
    case = shared_ct_dir() / "lidc-idri-0001" / "ct.nii.gz"
    if not case.is_file():
        pytest.skip(f"real CT not found at {case} (set SAPSAM_SHARED_CT or place ../shared/ct)")
    from sapsam_utils.data.loading import load_source

    ct = load_source(case)  # the cohort's reading path: padding -2048 -> -1024
    body = ndimage.binary_opening(ct.array > -500, iterations=2)
    body = ndimage.binary_fill_holes(body, structure=np.ones((1, 3, 3)))
    lungs = (ct.array < -500) & body  # a crude threshold mask: enough for the geometry
    mask = (lungs * np.where(np.arange(ct.array.shape[2]) < ct.array.shape[2] // 2, 1, 2)).astype(np.uint8)
    p = ProjectionParams(grid_shape=(27, 32, 32), angles=(0.0, 5.0))
    scan, images = project_volume(ct, ct.like(mask), ct.like(mask), None, p)
    assert scan.hu.min() >= -1024 and scan.hu.max() < 4000
    assert images.whole["axial"].shape == (8, 32, 32) and not images.whole_truth
    inside = images.whole["axial"][0][images.whole["axial"][0] > 0]
    assert inside.size > 300 and 0.05 < np.median(inside) < 0.95  # parenchyma means inside the range
    assert images.regions["axial"][..., 1].max() > 0  # parenchyma channel
