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
    np.testing.assert_array_equal(ax.images[0].get_array(), image)  # the windows as R, G, B
    np.testing.assert_array_equal(ax.images[1].get_array(), cam / 2.0)  # the map, normalised to its maximum
    assert ax.images[1].get_cmap().name == "jet"
    contour = np.concatenate([path.vertices for path in ax.collections[0].get_paths()])
    np.testing.assert_array_equal(contour.min(axis=0), [1.5, 4.5])  # x, y: halfway round the truth's pixels
    np.testing.assert_array_equal(contour.max(axis=0), [3.5, 6.5])
    ax = plots.map_over_projection(image, np.zeros((16, 8)))
    assert [im.get_cmap().name for im in ax.images] == ["gray"] and "all-zero map" in [t.get_text() for t in ax.texts]
    plt.close("all")


def test_ct_slice_and_orthogonal_slices():
    ct = np.arange(6 * 10 * 12, dtype=float).reshape(6, 10, 12) - 800.0
    overlay = np.zeros(ct.shape)
    overlay[2, 3, 4] = 1.0
    truth = np.zeros(ct.shape, bool)
    truth[2, 3:5, 4:6] = True
    ax = plots.ct_slice(ct[2], truth[2], box=((0, 10), (0, 6)), overlay=overlay[2])
    np.testing.assert_array_equal(ax.images[0].get_array(), ct[2])
    shown = ax.images[1].get_array()  # the overlay where > 0, normalised
    assert shown[3, 4] == 1.0 and shown.mask.sum() == shown.size - 1
    box = ax.patches[0]
    assert (box.get_xy(), box.get_width(), box.get_height()) == ((-0.5, -0.5), 6, 10)
    axes = plots.orthogonal_slices(ct, overlay, truth, spacing=(3.0, 1.0, 1.0))
    assert [a.get_title() for a in axes] == ["axial", "coronal", "sagittal"]
    # through the overlay's maximum (2, 3, 4); coronal and sagittal head up
    for a, expected in zip(axes, (ct[2], ct[::-1, 3, :], ct[::-1, :, 4])):
        np.testing.assert_array_equal(a.images[0].get_array(), expected)
        assert a.images[1].get_array().max() == 1.0
    assert axes[1].get_images()[0].get_extent() == [-0.5, 11.5, 5.5, -0.5]
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
    image = np.random.default_rng(1).uniform(0, 1, (8, 4, 3)).astype(np.float32)
    cam = np.arange(32.0).reshape(8, 4)
    plots.psam_pair(axes, scan, "RU", "fungus_ball", image, cam, title="t")
    assert axes[0].get_title() == "grid slice 4"  # the slice with the most voxels of the sign in RU
    np.testing.assert_array_equal(axes[0].images[0].get_array(), hu[4])
    box = axes[0].patches[0]  # RU: the patient's right half, x 0..3 of 8
    assert (box.get_xy(), box.get_width(), box.get_height()) == ((-0.5, -0.5), 4, 8)
    np.testing.assert_array_equal(axes[1].images[0].get_array(), image)
    np.testing.assert_allclose(axes[1].images[1].get_array(), cam / 31.0)
    curve = pd.DataFrame({"step": [1, 2], "layer": ["logits", "fc"], "rank_correlation": [0.9, -0.2],
                          "abs_rank_correlation": [0.9, 0.2], "abs_q25": [0.8, 0.1], "abs_q75": [1.0, 0.3]})
    ax = plots.randomisation(curve, 0.5, 2)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["none", "logits", "fc"]
    median, signed = ax.lines[0], ax.lines[1]  # the trained model (step 0) correlates 1 with itself
    np.testing.assert_array_equal(median.get_xdata(), [0, 1, 2])
    np.testing.assert_array_equal(median.get_ydata(), [1.0, 0.9, 0.2])
    np.testing.assert_array_equal(signed.get_ydata(), [1.0, 0.9, -0.2])
    band = ax.collections[0].get_paths()[0].vertices
    assert {tuple(v) for v in band} >= {(1.0, 0.8), (2.0, 0.1), (1.0, 1.0), (2.0, 0.3)}  # the quartiles
    plt.close("all")


# --- chapters 4-7: classifiers, signs, maps, survival ---------------------------------------------


def test_learning_curves_draw_each_history():
    import pandas as pd

    histories = {"a": pd.DataFrame({"epoch": [1, 2, 3], "loss": [0.9, 0.7, 0.6], "val_loss": [1.0, 0.8, 0.85],
                                    "val_accuracy": [0.5, 0.6, 0.7]}),
                 "b": pd.DataFrame({"epoch": [1, 2], "loss": [0.5, 0.4], "val_loss": [0.6, 0.5],
                                    "val_accuracy": [0.8, 0.9]})}
    axes = plots.learning_curves(histories)
    lines = [line for line in axes[0].lines]
    for k, history in enumerate(histories.values()):
        train, val = lines[2 * k], lines[2 * k + 1]
        np.testing.assert_array_equal(train.get_xdata(), history["epoch"])
        np.testing.assert_array_equal(train.get_ydata(), history["loss"])
        assert train.get_linestyle() == "--"
        np.testing.assert_array_equal(val.get_ydata(), history["val_loss"])
        np.testing.assert_array_equal(axes[1].lines[k].get_ydata(), history["val_accuracy"])
    assert [t.get_text() for t in axes[1].get_legend().get_texts()] == ["a", "b"]
    plt.close("all")


def prediction_rows(labels, probability, per_scan=1):
    import pandas as pd

    n = len(labels)
    return pd.DataFrame({"scan_id": [f"s{i // per_scan}" for i in range(n)],
                         "patient_id": [f"p{i // per_scan}" for i in range(n)], "rotation": [i % per_scan for i in range(n)],
                         "label": labels, "probability": probability})


def test_roc_curves_draw_the_computed_curve():
    # scores 0.9 (pos), 0.8 (neg), 0.7 (pos), 0.2 (neg): thresholds inf, 0.9, 0.8, 0.7, 0.2
    table = prediction_rows([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.2])
    ax = plots.roc_curves({"m": table}, "image")
    curve = ax.lines[0]
    np.testing.assert_allclose(curve.get_xdata(), [0, 0, 0.5, 0.5, 1])  # false positive rate
    np.testing.assert_allclose(curve.get_ydata(), [0, 0.5, 0.5, 1, 1])  # true positive rate
    assert curve.get_drawstyle() == "steps-post"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["m (AUC 0.75)"]
    # per scan: the mean over a scan's rows is scored
    per_scan = prediction_rows([1, 1, 0, 0], [0.9, 0.1, 0.4, 0.4], per_scan=2)  # scan means 0.5 and 0.4
    ax = plots.roc_curves({"m": per_scan}, "scan")
    np.testing.assert_allclose(ax.lines[0].get_xdata(), [0, 0, 1])
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [0, 1, 1])
    plt.close("all")


def test_confusion_draws_the_counts():
    table = prediction_rows([1, 1, 1, 0, 0], [0.9, 0.6, 0.3, 0.7, 0.1])
    ax = plots.confusion(table, "image", title="t")
    np.testing.assert_array_equal(np.asarray(ax.collections[0].get_array()).reshape(2, 2), [[1, 1], [1, 2]])
    assert sorted(t.get_text() for t in ax.texts) == ["1", "1", "1", "2"]
    assert ax.get_title() == "t" and [t.get_text() for t in ax.get_xticklabels()] == ["control", "CPA"]
    plt.close("all")


def test_scores_by_group_draws_values_and_intervals():
    import pandas as pd

    scores = pd.DataFrame({"level": ["upper", "lower", "upper", "lower"], "model": ["CNN", "CNN", "linear", "linear"],
                           "metric": "recall", "sign": "cavity", "value": [0.8, 0.6, 0.5, np.nan],
                           "ci_low": [0.7, 0.4, 0.3, np.nan], "ci_high": [0.9, 0.7, 0.6, np.nan],
                           "positives": [10, 4, 10, 4]})
    fig = plots.scores_by_group(scores, group="level", hue="model", row="metric", col="sign", names={"cavity": "cavities"})
    ax = fig.axes[0]
    heights = [bar.get_height() for bar in ax.patches]
    np.testing.assert_allclose(heights, [0.8, 0.6, 0.5, 0.0])  # a missing score: no bar
    centres = [bar.get_x() + bar.get_width() / 2 for bar in ax.patches]
    np.testing.assert_allclose(centres, [-0.2, 0.8, 0.2, 1.2])
    errors = [seg for coll in ax.collections for seg in coll.get_segments()]
    np.testing.assert_allclose(sorted((s[0][1], s[1][1]) for s in errors)[:3], [(0.0, 0.0), (0.3, 0.6), (0.4, 0.7)])
    assert ax.get_title() == "cavities: recall" and [t.get_text() for t in ax.texts] == ["n+=10", "n+=4"]
    plt.close("all")


# --- chapters 1-3: cohort, segmentation, projections ---------------------------------------------

import pandas as pd  # noqa: E402

from sapsam_utils.core.volume import Volume  # noqa: E402
from sapsam_utils.imaging.projections import GridScan, ScanImages, rgb  # noqa: E402


def contour_vertices(ax, index=0):
    return np.concatenate([path.vertices for path in ax.collections[index].get_paths()])


def assert_on_boundary(vertices, mask):
    """Each vertex of a 0.5-level contour lies halfway between a pixel of ``mask`` and one outside."""
    mask = np.pad(np.asarray(mask, bool), 1)
    for x, y in vertices:
        x, y = x + 1, y + 1  # the padding
        if float(x).is_integer():
            a, b = (int(y - 0.5), int(x)), (int(y + 0.5), int(x))
        else:
            assert float(y).is_integer(), (x, y)
            a, b = (int(y), int(x - 0.5)), (int(y), int(x + 0.5))
        assert mask[a] != mask[b], (x - 1, y - 1)


def blobs_scan():
    """A CT with two lungs and two signs, the larger centred on voxel (6, 9, 4)."""
    rng = np.random.default_rng(0)
    hu = rng.integers(-1000, 400, (12, 16, 14)).astype(np.int16)
    lungs = np.zeros(hu.shape, np.uint8)
    lungs[2:10, 3:13, 1:6], lungs[2:10, 3:13, 8:13] = 1, 2
    signs = np.zeros(hu.shape, np.uint8)
    signs[5:8, 8:11, 3:6] = 2  # 27 voxels, centre (6, 9, 4)
    signs[3, 4, 10] = 4
    spacing = (2.0, 1.0, 1.0)
    return {k: Volume(v, spacing) for k, v in (("ct", hu), ("truth_lungs", lungs), ("truth_signs", signs))}


def test_scans_with_signs_cuts_through_the_largest_sign():
    scan = blobs_scan()
    fig = plots.scans_with_signs({"CPA S1": scan})
    axial, coronal, sagittal = fig.axes[:3]
    hu, lungs, signs = (scan[k].array for k in ("ct", "truth_lungs", "truth_signs"))
    np.testing.assert_array_equal(axial.images[0].get_array(), hu[6])
    np.testing.assert_array_equal(coronal.images[0].get_array(), hu[::-1, 9])  # head up
    np.testing.assert_array_equal(sagittal.images[0].get_array(), hu[::-1, :, 4])
    overlay = axial.images[1].get_array()
    np.testing.assert_array_equal(overlay.filled(0), signs[6])
    assert overlay.mask[signs[6] == 0].all()
    assert_on_boundary(contour_vertices(axial, 0), lungs[6] == 1)  # right lung
    assert_on_boundary(contour_vertices(axial, 1), lungs[6] == 2)
    assert coronal.get_aspect() == 2.0  # z spacing / x spacing
    # without signs: through the right lung's centre; a real scan's lesions drawn as cavity walls
    lesions = Volume((scan["truth_signs"].array == 4).astype(np.uint8), (2.0, 1.0, 1.0))
    axes = plots.scan_with_signs(scan["ct"], scan["truth_lungs"], lesions=lesions)
    np.testing.assert_array_equal(axes[0].images[0].get_array(), hu[3])
    assert axes[0].images[1].get_array().filled(0)[4, 10] == 2
    axes = plots.scan_with_signs(scan["ct"], scan["truth_lungs"])
    np.testing.assert_array_equal(axes[0].images[0].get_array(), hu[6])  # right lung: z 2..9 -> 5.5 -> 6
    np.testing.assert_array_equal(axes[1].images[0].get_array(), hu[::-1, 8])
    plt.close("all")


def test_cohort_followup_counts_scans_per_patient_and_outcomes():
    from sapsam_utils.data.manifest import two_year_death
    from sapsam_utils.synthetic.cohort import simulate_cohort

    table = simulate_cohort(3, control_patients=4, cpa_patients=12, cpa_scans=30)
    fig = plots.cohort_followup(table)
    cpa = table[table["group"] == "cpa"]
    per_patient = cpa.groupby("patient_id").size()
    heights = [p.get_height() for p in fig.axes[0].patches]
    np.testing.assert_array_equal(heights, np.bincount(per_patient, minlength=per_patient.max() + 1)[1:])
    outcome = two_year_death(cpa)
    labels = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert labels == [f"alive at 2 years ({int((outcome == 0).sum())})",
                      f"died within 2 years ({int((outcome == 1).sum())})"]
    assert sum(p.get_height() for p in fig.axes[1].patches) == outcome.notna().sum()
    plt.close("all")


def test_parenchyma_histograms_draw_each_sample():
    rng = np.random.default_rng(1)
    values = {"P1": rng.normal(-850, 40, 500), "R1": rng.normal(-800, 60, 500)}
    fig = plots.parenchyma_histograms(values, {"P1": "phantom", "R1": "real"})
    ax = fig.axes[0]
    bins = np.arange(-1024, 1, 8)
    for patch, scan_id in zip(ax.patches, ("R1", "P1")):  # real scans first
        density, _ = np.histogram(values[scan_id], bins=bins, density=True)
        drawn = patch.get_xy()[:, 1]
        np.testing.assert_allclose(np.unique(drawn[drawn > 0]), np.unique(density[density > 0]))
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["real R1", "phantoms (controls of this run)"]
    plt.close("all")


def test_segmentation_steps_shows_the_steps_of_the_slice():
    from sapsam_utils.core.regions import LABEL_COLUMNS
    from sapsam_utils.imaging.segmentation import lung_masks, refined_steps
    from sapsam_utils.synthetic.phantom import make_phantom

    phantom = make_phantom({c: int(c == "RU_cavity") for c in LABEL_COLUMNS}, seed=3, shape=(54, 64, 64),
                           spacing=(6.0, 5.6, 5.6))
    conservative, _, _ = lung_masks(phantom.ct)
    steps = refined_steps(phantom.ct)
    z = 10
    fig = plots.segmentation_steps(steps, conservative, phantom.lungs.array, z, title="t")
    axes = fig.axes
    np.testing.assert_array_equal(axes[0].images[0].get_array(), phantom.ct.array[steps.box][z])
    np.testing.assert_array_equal(axes[1].images[0].get_array(), steps.edges[z])
    markers = axes[1].images[1].get_array()
    assert (markers[steps.internal[z] > 0][:, 1] == 0.8).all()  # internal marker: green
    np.testing.assert_array_equal(axes[2].images[1].get_array().filled(0), steps.watershed[z])
    picture = axes[3].images[0].get_array()
    assert (picture[steps.pleura[z] > 0] != 0).any(axis=-1).all() if (steps.pleura[z] > 0).any() else True
    assert_on_boundary(contour_vertices(axes[4], 0), steps.mask[z] > 0)  # refined
    assert_on_boundary(contour_vertices(axes[4], 1), conservative.array[steps.box][z] > 0)
    assert_on_boundary(contour_vertices(axes[4], 2), phantom.lungs.array[steps.box][z] > 0)  # truth
    # default slice: the one with the most mask
    fig = plots.segmentation_steps(steps, conservative)
    best = int(np.argmax((steps.mask > 0).sum(axis=(1, 2))))
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), phantom.ct.array[steps.box][best])
    plt.close("all")


def test_signs_kept_bars_are_the_means_whiskers_the_extremes():
    scores = pd.DataFrame({"mask": ["conservative", "refined"] * 3,
                           "share_cavity_wall": [0.2, 0.9, 0.4, 1.0, np.nan, np.nan],
                           "share_fungus_ball": [0.1, 0.95, 0.3, 0.85, 0.2, 0.9],
                           "share_preexisting": [np.nan] * 6})
    fig = plots.signs_kept(scores, ("cavity_wall", "fungus_ball", "preexisting"))
    ax = fig.axes[0]
    heights = [p.get_height() for p in ax.patches]
    np.testing.assert_allclose(heights, [0.3, 0.2, 0.95, 0.9])  # conservative then refined; no pre-existing
    assert [t.get_text() for t in ax.get_xticklabels()] == ["cavity wall", "fungus ball"]
    from matplotlib.container import ErrorbarContainer

    conservative = [c for c in ax.containers if isinstance(c, ErrorbarContainer)][0]
    whiskers = conservative.lines[2][0].get_segments()
    np.testing.assert_allclose([s[:, 1] for s in whiskers], [[0.2, 0.4], [0.1, 0.3]])  # min, max
    plt.close("all")


def test_real_lesion_slices_zoom_on_the_lesion():
    hu = np.random.default_rng(2).integers(-1000, 400, (5, 120, 120)).astype(np.int16)
    lesions, refined = np.zeros(hu.shape, np.uint8), np.zeros(hu.shape, np.uint8)
    lesions[3, 50:60, 60:70] = 1
    refined[:, 20:100, 20:100] = 1
    refined[3, 50:55, 60:70] = 0  # half the lesion outside the refined mask
    case = {"ct": Volume(hu, (2.0, 1.0, 1.0)), "lesions": Volume(lesions, (2.0, 1.0, 1.0)),
            "refined": Volume(refined, (2.0, 1.0, 1.0)), "conservative": Volume(refined, (2.0, 1.0, 1.0))}
    ax = plots.real_lesion_slices({"case-1": case}).axes[0]
    np.testing.assert_array_equal(ax.images[0].get_array(), hu[3][10:99, 20:109])  # 40 mm around the lesion
    assert_on_boundary(contour_vertices(ax, 2), lesions[3][10:99, 20:109] > 0)
    assert ax.get_title() == "case-1, slice 3: 50% of lesion voxels kept"
    plt.close("all")


def grid_scan():
    rng = np.random.default_rng(4)
    hu = rng.uniform(-1000, 0, (9, 8, 6)).astype(np.float32)
    refined = np.zeros(hu.shape, np.uint8)
    refined[1:8, 2:6, 1:5] = 1
    signs = np.zeros(hu.shape, np.uint8)
    signs[1, 3:5, 2:4] = 2
    return GridScan(hu, refined, refined, signs, box=(slice(0, 9),) * 3, spacing=(1.0, 1.0, 1.0))


def scan_images(n_rotations=1, truth=True):
    rng = np.random.default_rng(5)
    whole = {a: rng.uniform(0, 1, (n_rotations, 6, 4)) for a in ("axial", "coronal", "sagittal")}
    regions = {a: rng.uniform(0, 1, (n_rotations, 6, 4, 3, 3)) for a in ("axial", "coronal", "sagittal")}
    truths = {}
    if truth:
        truths = {a: np.zeros((n_rotations, 6, 4, 3, 4)) for a in ("axial",)}
        truths["axial"][0, 2, 1:3, 1, 1] = 0.5
    whole_truth = {a: np.zeros((n_rotations, 6, 4, 4)) for a in whole} if truth else {}
    if truth:
        whole_truth["coronal"][0, 2:4, 1:3, 0] = 1.0
    return ScanImages(np.zeros((n_rotations, 3)), whole, regions, whole_truth, truths)


def test_study_grid_shows_the_grid_and_the_cuts():
    from sapsam_utils.core.regions import region_slices

    grid = grid_scan()
    upper = region_slices(grid.hu.shape)["RU"][0]
    z = (upper.start + upper.stop) // 2  # the middle of the upper third
    fig = plots.study_grid(grid, "g")
    axial, coronal = fig.axes[:2]
    np.testing.assert_array_equal(axial.images[0].get_array(), grid.hu[z])
    np.testing.assert_array_equal(coronal.images[0].get_array(), grid.hu[::-1, 4])
    assert_on_boundary(contour_vertices(axial, 0), grid.refined[z] > 0)
    assert_on_boundary(contour_vertices(coronal, 1), grid.signs[::-1, 4] > 0)
    assert sorted(line.get_ydata()[0] for line in coronal.lines if line.get_ydata()[0] == line.get_ydata()[1]) == [2.5, 5.5]
    assert [line.get_xdata()[0] for line in axial.lines] == [2.5]  # the right / left cut
    plt.close("all")


def test_projection_figures_show_the_images():
    images = scan_images()
    fig = plots.hu_windows({"CPA": images, "control": scan_images(truth=False)}, 2, [(-1400, -900), (-900, -160), (-160, 240)])
    for k in range(3):
        np.testing.assert_array_equal(fig.axes[k].images[0].get_array(), images.regions["axial"][0, 2][..., k])
    np.testing.assert_array_equal(fig.axes[3].images[0].get_array(), rgb(images.regions["axial"][0, 2]))
    assert_on_boundary(contour_vertices(fig.axes[3]), images.regions_truth["axial"][0, 2].max(axis=-1) > 0)
    assert fig.axes[0].get_title() == "CPA: window [-1400, -900)"
    fig = plots.region_images({"a": images, "b": scan_images(truth=False)}, 4)
    np.testing.assert_array_equal(fig.axes[1].images[0].get_array(), rgb(scan_images(truth=False).regions["axial"][0, 4]))
    fig = plots.whole_projections({"CPA": images})
    np.testing.assert_array_equal(fig.axes[1].images[0].get_array(), images.whole["coronal"][0])
    assert_on_boundary(contour_vertices(fig.axes[1]), images.whole_truth["coronal"][0].max(axis=-1) > 0)
    fig = plots.scan_projections(images, "real")
    np.testing.assert_array_equal(fig.axes[2].images[0].get_array(), images.whole["sagittal"][0])
    np.testing.assert_array_equal(fig.axes[6 + 5].images[0].get_array(), rgb(images.regions["axial"][0, 5]))
    stack = np.random.default_rng(6).uniform(0, 1, (11, 6, 4))
    rotations = np.array([[a, 0, -a] for a in range(11)], float)
    fig = plots.rotation_images(stack, rotations, columns=9)
    np.testing.assert_array_equal(fig.axes[10].images[0].get_array(), stack[10])
    assert fig.axes[10].get_title() == "+10,+0,-10" and not fig.axes[11].axison
    plt.close("all")


def test_augmented_shows_the_draws_of_the_seed():
    from sapsam_utils.imaging.augment import augment_2d

    images = scan_images()
    image, truth = images.regions["axial"][0, 2], images.regions_truth["axial"][0, 2]
    fig = plots.augmented(image, truth, np.random.default_rng(7), n=3, max_rotation_deg=20.0, zoom_range=(0.8, 1.2))
    rng = np.random.default_rng(7)
    for ax in fig.axes:
        out, _ = augment_2d(image, truth, rng=rng, max_rotation_deg=20.0, zoom_range=(0.8, 1.2))
        np.testing.assert_array_equal(ax.images[0].get_array(), rgb(out))
    plt.close("all")
