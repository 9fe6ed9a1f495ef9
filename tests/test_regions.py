"""The sub-region geometry that the phantoms, labels, projections and Grad-CAM scores share."""

import numpy as np
import pytest

from sapsam_utils.core.regions import (
    CAVITY_LUMEN,
    LABEL_COLUMNS,
    REGIONS,
    SIGN_CODES,
    lung_box,
    region_labels,
    region_map,
    region_slices,
)


def test_label_columns_are_the_24_manifest_columns():
    assert len(LABEL_COLUMNS) == 24
    assert LABEL_COLUMNS[:4] == ("RU_preexisting", "RU_cavity", "RU_fungus_ball", "RU_pleural_thickening")
    assert "LL_fungus_ball" in LABEL_COLUMNS


def test_lung_box_is_tight():
    mask = np.zeros((10, 12, 14), bool)
    mask[2:7, 3:9, 4:13] = True
    assert lung_box(mask) == (slice(2, 7), slice(3, 9), slice(4, 13))
    with pytest.raises(ValueError, match="empty"):
        lung_box(np.zeros((4, 4, 4), bool))


def test_paper_grid_gives_the_papers_blocks():
    # On the rescaled 216 x 256 x 256 grid the six regions are the paper's 72 x 256 x 128 blocks.
    blocks = region_slices((216, 256, 256))
    for name, (z, y, x) in blocks.items():
        assert (z.stop - z.start, y.stop - y.start, x.stop - x.start) == (72, 256, 128), name
    # Right is low x (LPS: x grows towards the patient's left); upper is high z.
    assert blocks["RU"][2] == slice(0, 128) and blocks["LU"][2] == slice(128, 256)
    assert blocks["RU"][0] == slice(144, 216) and blocks["RL"][0] == slice(0, 72)


def test_region_map_tiles_the_box_without_overlap():
    shape = (30, 20, 41)
    box = (slice(3, 28), slice(2, 18), slice(5, 38))
    regions = region_map(shape, box)
    inside = np.zeros(shape, bool)
    inside[box] = True
    assert np.all((regions > 0) == inside)
    counts = np.bincount(regions.ravel(), minlength=7)[1:]
    assert counts.sum() == inside.sum()
    assert counts.min() > 0.8 * counts.max()  # near-equal blocks


def test_region_labels_follow_the_sign_voxels():
    shape = (30, 20, 40)
    regions = region_map(shape)
    signs = np.zeros(shape, np.uint8)
    signs[25, 10, 5] = SIGN_CODES["fungus_ball"]  # upper, right
    signs[2, 10, 35] = CAVITY_LUMEN  # lower, left: counts as a cavity
    labels = region_labels(signs, regions)
    assert {k for k, v in labels.items() if v} == {"RU_fungus_ball", "LL_cavity"}
    assert set(labels) == set(LABEL_COLUMNS)
    assert REGIONS[0] == "RU"
