"""The figure helpers of the Grad-CAM chapter draw what they are given."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sapsam_utils.report import plots  # noqa: E402


def test_map_over_projection_layers_image_map_and_contour():
    image = np.random.default_rng(0).uniform(0, 1, (16, 8, 3)).astype(np.float32)
    cam = np.zeros((16, 8))
    cam[4:8, 2:4] = 2.0
    truth = np.zeros((16, 8))
    truth[5:7, 2:4] = 1
    ax = plots.map_over_projection(image, cam, truth, title="x")
    assert len(ax.images) == 2 and ax.images[1].get_array().max() == 1.0  # the map, normalised
    assert len(ax.collections) >= 1  # the truth contour
    ax = plots.map_over_projection(image, np.zeros((16, 8)))
    assert len(ax.images) == 1 and "all-zero map" in [t.get_text() for t in ax.texts]
    plt.close("all")


def test_ct_slice_and_orthogonal_slices():
    ct = np.full((6, 10, 12), -800.0)
    overlay = np.zeros(ct.shape)
    overlay[2, 3, 4] = 1.0
    truth = np.zeros(ct.shape, bool)
    truth[2, 3:5, 4:6] = True
    ax = plots.ct_slice(ct[2], truth[2], box=((0, 10), (0, 6)), overlay=overlay[2])
    assert len(ax.images) == 2 and len(ax.patches) == 1
    axes = plots.orthogonal_slices(ct, overlay, truth, spacing=(3.0, 1.0, 1.0))
    assert [a.get_title() for a in axes] == ["axial", "coronal", "sagittal"]
    assert axes[0].images[0].get_array().shape == (10, 12) and axes[1].images[0].get_array().shape == (6, 12)
    assert all(len(a.images) == 2 for a in axes)  # each view passes through the overlay's maximum
    plt.close("all")


def test_psam_pair_and_randomisation():
    import pandas as pd

    from sapsam_utils.imaging.projections import GridScan
    from sapsam_utils.core.regions import SIGN_CODES

    hu = np.full((6, 8, 8), -800.0, dtype=np.float32)
    signs = np.zeros(hu.shape, dtype=np.uint8)
    signs[4, 2:4, 1:3] = SIGN_CODES["fungus_ball"]  # in RU: z 4..5, x 0..3
    scan = GridScan(hu, signs > 255, signs > 255, signs, (slice(0, 6),) * 3, (2.0, 1.0, 1.0))
    axes = plt.subplots(1, 2)[1]
    plots.psam_pair(axes, scan, "RU", "fungus_ball", np.zeros((8, 4, 3)), np.ones((8, 4)), title="t")
    assert axes[0].get_title() == "grid slice 4" and len(axes[0].patches) == 1
    curve = pd.DataFrame({"step": [1, 2], "layer": ["logits", "fc"], "rank_correlation": [0.9, -0.2],
                          "abs_rank_correlation": [0.9, 0.2], "abs_q25": [0.8, 0.1], "abs_q75": [1.0, 0.3]})
    ax = plots.randomisation(curve, 0.5, 2)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["none", "logits", "fc"]
    plt.close("all")
