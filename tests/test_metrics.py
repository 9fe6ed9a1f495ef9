"""Overlap scores: known values on small hand-made masks."""

import math

import numpy as np
import pytest

from sapsam_utils.imaging.metrics import dice, inside_share, per_label_dice, per_label_inside_share, volume_ml
from sapsam_utils.core.volume import Volume


def boxes():
    a = np.zeros((4, 5, 6), dtype=np.uint8)
    b = np.zeros_like(a)
    a[0:2, 0:5, 0:6] = 1  # 60 voxels
    b[1:4, 0:5, 0:6] = 2  # 90 voxels, 30 shared with a
    return a, b


def test_dice_known_value_and_symmetry():
    a, b = boxes()
    assert dice(a, b) == pytest.approx(2 * 30 / (60 + 90))
    assert dice(b, a) == dice(a, b)
    assert dice(a, a) == 1.0
    assert dice(a, np.zeros_like(a)) == 0.0
    assert dice(np.zeros_like(a), np.zeros_like(a)) == 1.0  # both empty: they agree


def test_inside_share_is_recall_of_the_structure():
    a, b = boxes()
    assert inside_share(a, b) == pytest.approx(30 / 60)
    assert inside_share(b, a) == pytest.approx(30 / 90)
    assert math.isnan(inside_share(np.zeros_like(a), b))


def test_per_label_scores():
    truth = np.zeros((3, 4, 4), dtype=np.uint8)
    truth[:, :, :2] = 1
    truth[:, :, 2:] = 2
    pred = truth.copy()
    pred[:, :, 1] = 2  # one column of the right lung called left
    scores = per_label_dice(pred, truth, {"right": 1, "left": 2, "both": (1, 2)})
    assert scores["right"] == pytest.approx(2 * 12 / (12 + 24))
    assert scores["left"] == pytest.approx(2 * 24 / (36 + 24))
    assert scores["both"] == 1.0
    signs = np.zeros_like(truth)
    signs[0, 0, :] = 3  # 4 voxels, all inside pred
    mask = pred.copy()
    mask[0, 0, 3] = 0
    shares = per_label_inside_share(signs, mask, {"fungus_ball": 3, "absent": (4, 5)})
    assert shares["fungus_ball"] == pytest.approx(3 / 4)
    assert math.isnan(shares["absent"])


def test_volumes_and_grids():
    a, _ = boxes()
    vol = Volume(a, (2.0, 1.0, 0.5))
    assert volume_ml(vol) == pytest.approx(60 * 1.0 / 1000)
    assert volume_ml(a, (2.0, 1.0, 0.5)) == pytest.approx(0.06)
    with pytest.raises(TypeError, match="spacing"):
        volume_ml(a)
    with pytest.raises(ValueError, match="shapes"):
        dice(a, a[:-1])
    with pytest.raises(ValueError, match="different grids"):
        dice(vol, Volume(a, (1.0, 1.0, 1.0)))
