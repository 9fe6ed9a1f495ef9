"""Write notebooks/03_projections.ipynb (without outputs): ``.venv/bin/python scripts/notebooks/03_projections.py``.

The notebook is generated so that its cells, tags and figure metadata stay reviewable as code.
Edit this script, run it, and commit both files.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

STEM = "03_projections"


def md(text: str):
    return new_markdown_cell(text.strip("\n"))


def code(text: str, tags=None, figure: tuple[str, str] | None = None):
    cell = new_code_cell(text.strip("\n"))
    if tags:
        cell.metadata["tags"] = list(tags)
    if figure:
        name, caption = figure
        cell.metadata["mystnb"] = {"figure": {"name": f"fig-{STEM}-{name}", "caption": caption}}
    return cell


CELLS = [
    md("""
# Projections and augmentation: the image data sets

## Overview

The paper's classifiers are 2-D CNNs (VGG19, InceptionV3) pre-trained on photographs, so each CT
scan is turned into 2-D images (paper §2.2–2.3). This chapter builds those images for every scan
of the run, and stores them, split by patient, for the classifiers of the next chapters.

1. **The study grid.** The bounding box of the refined lung mask (both lungs) is resampled to
   one grid for every scan, the paper's 216 × 256 × 256 voxels (z, y, x) at the paper's scale,
   smaller in the small profiles (`grid_shape`). CT values are interpolated linearly, masks and
   sign truth by nearest neighbour. The grid *is* the lung box, so the six sub-regions are the
   paper's blocks (72 × 256 × 128 at full scale): the box cut into the patient's right and left
   halves and into upper, middle and lower thirds, by the same function
   (`sapsam_utils.regions.region_slices`) that gave the cohort its labels.
2. **3-D augmentation.** Each scan is rotated by −5°, 0 and +5° about each of the three axes, in
   all 27 combinations (`angles`). A rotation is a nearest-neighbour gather through an index map
   computed once per grid: the same map moves the CT, both masks and the sign truth, so they stay
   aligned voxel for voxel, and every CT value stays one that the scan had, so the HU windows below
   sort voxels as they would have before the rotation.
3. **Whole-scan images** (disease and survival): along each axis, the mean HU of a ray's voxels
   inside the **conservative** mask, mapped from a fixed HU range (`whole_hu_range`) to [0, 1], so
   that a pixel means the same in every scan; a ray that misses the mask is 0.
4. **Sub-region images** (the four signs): each sub-region block projected along each axis inside
   the **refined** mask, one channel per HU window (`windows`: air and lung [−1400, −900),
   parenchyma [−900, −160), soft tissue [−160, 240)). A voxel counts in window [lo, hi) when
   lo ≤ HU < hi; for a ray, the channel is the mean HU of the ray's in-mask voxels *that fall in
   the window*, mapped from [lo, hi] to [0, 1] (`statistic = "mean"`, the paper's "average
   intensity within each window"); a ray with no voxel in the window is 0. The alternative
   `"weighted"` multiplies that mean by the share of the ray's voxels in the window (compared
   below).
5. **Truth maps** (phantoms only): for each sign, the fraction of each ray that lies in the sign,
   on the pixels of the image it belongs to; the Grad-CAM chapter scores localisation against
   them.
6. **Data sets.** Patients (never scans) are split into training, validation and test sets,
   stratified by group and seeded; class balancing is done afterwards, on the training rows only,
   by oversampling. Training-time 2-D augmentation (random rotation and zoom) is applied by the
   classifiers with `sapsam_utils.augment.augment_2d`; this chapter shows what it does.

Everything a later chapter needs is in the `workdir`: the `projections` stage (one compressed file
per scan with every rotation) and the `datasets` stage (per split: a records table and
memory-mappable image arrays, read with `sapsam_utils.datasets.load_split`).
"""),
    md("## Imports"),
    code("""
import json
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from sapsam_utils.augment import augment_2d
from sapsam_utils.cache import write_results
from sapsam_utils.datasets import (
    SPLITS,
    balanced_indices,
    build_datasets,
    load_split,
    preprocess_cohort,
    read_scan_npz,
    to_unit,
    upstream_stages,
)
from sapsam_utils.loading import load_source
from sapsam_utils.manifest import read_manifest
from sapsam_utils.paths import project_path
from sapsam_utils.projections import AXES, ProjectionParams, project_grid, project_volume, rgb, to_grid
from sapsam_utils.regions import LABEL_COLUMNS, LABELS, REGIONS, region_slices
from sapsam_utils.segmentation import lung_masks
from sapsam_utils.volume import read_volume
"""),
    md("""
## Parameters

The cell below is tagged `parameters`: papermill replaces its values with those of the profile
(`notebooks/params/<profile>.yaml`).
"""),
    code("""
manifest = "data_manifest.csv"  # cohort manifest (CSV); relative paths are relative to the project root
workdir = "work/default"  # folder of this run's artifacts and results; relative to the project root
seed = 0  # seed of every random choice in this notebook (patient split, balancing, 2-D augmentation examples)
grid_shape = [54, 64, 64]  # study grid (z, y, x) the lung box is resampled to; z divisible by 3, x by 2 (paper: [216, 256, 256])
angles = [-5.0, 0.0, 5.0]  # rotation angles in degrees about each axis, all combinations used (paper: 27 rotations)
windows = [[-1400, -900], [-900, -160], [-160, 240]]  # HU windows [lo, hi) of the sub-region image channels (paper)
whole_hu_range = [-1000, -500]  # mean HU mapped to 0 and 1 in the whole-scan images
statistic = "mean"  # how a window is summarised along a ray: "mean" (paper) or "weighted"
split_fractions = [0.6, 0.2, 0.2]  # train / validation / test shares of the patients
max_rotation_deg = 20.0  # training-time 2-D rotation range in +/- degrees (shown here; the classifiers apply it)
zoom_range = [0.8, 1.2]  # training-time 2-D zoom range (shown here; the classifiers apply it)
n_jobs = 2  # worker processes that project the scans
public_ct_manifest = "manifests/public_ct.csv"  # manifest of the public real CT cases
real_case = "lidc-idri-0001"  # scan_id in public_ct_manifest of the real case projected at the end
""", tags=["parameters"]),
    code("""
work = project_path(workdir)
params = ProjectionParams(grid_shape=grid_shape, angles=angles, windows=windows,
                          whole_hu_range=whole_hu_range, statistic=statistic)
masks_key, masks_dir, scans_dir = upstream_stages(work)
cohort = pd.read_csv(scans_dir / "cohort.csv", dtype=str, keep_default_na=False)
cohort[list(LABEL_COLUMNS)] = cohort[list(LABEL_COLUMNS)].astype(int)
results = {"n_scans": len(cohort), "n_patients": cohort["patient_id"].nunique(),
           "n_rotations": len(params.rotations), "grid": "x".join(map(str, params.grid_shape)),
           "statistic": statistic}
print(f"{len(cohort)} scans of {cohort['patient_id'].nunique()} patients (selected from {manifest}), "
      f"masks stage {masks_key}; grid {params.grid_shape}, {len(params.rotations)} rotations, "
      f"sub-region blocks {params.block_shape}")
"""),
    md("""
## Projecting the cohort

Each scan is loaded from the `scans` and `masks` stages, resampled, rotated and projected in a
worker process; its images are written to one compressed file, atomically. A scan whose file
exists is skipped, so an interrupted run resumes where it stopped, and a run with the same
parameters and the same upstream artifacts recomputes nothing.
"""),
    code("""
t0 = time.perf_counter()
proj_dir, status = preprocess_cohort(work, params, n_jobs=n_jobs)
data_dir = build_datasets(work, fractions=split_fractions, seed=seed)
results["seconds_this_run"] = time.perf_counter() - t0
metas = pd.DataFrame([read_scan_npz(proj_dir / "scans" / f"{s}.npz")["meta"] for s in cohort["scan_id"]])
print(f"projected now: {int(status['done_now'].sum())} scans, found finished: {int((~status['done_now']).sum())}; "
      f"{results['seconds_this_run']:.1f} s with {n_jobs} worker(s)")
timing = metas[["seconds_load", "seconds_project"]].describe().loc[["mean", "min", "max"]]
timing.columns = ["load CT, masks, truth (s)", f"grid + {len(params.rotations)} rotations + images (s)"]
results["seconds_per_scan_load_mean"] = float(metas["seconds_load"].mean())
results["seconds_per_scan_project_mean"] = float(metas["seconds_project"].mean())
timing.round(2)
"""),
    md("""
## One scan on the study grid

A CPA phantom with signs and a control phantom serve as examples below. On the grid, the six
sub-regions are fixed blocks: the dashed lines are the cuts between them.
"""),
    code("""
def load_grid(scan_id):
    ct = read_volume(scans_dir / scan_id / "ct.nii.gz")
    conservative = read_volume(masks_dir / scan_id / "conservative.nii.gz")
    refined = read_volume(masks_dir / scan_id / "refined.nii.gz")
    signs_path = scans_dir / scan_id / "truth_signs.nii.gz"
    signs = read_volume(signs_path) if signs_path.is_file() else None
    return to_grid(ct, conservative, refined, signs, params.grid_shape)


label_count = cohort[list(LABEL_COLUMNS)].sum(axis=1)
cpa_id = cohort.loc[label_count.idxmax(), "scan_id"] if (cohort["group"] == "cpa").any() else None
control_id = cohort.loc[cohort["group"] == "control", "scan_id"].iloc[0] if (cohort["group"] == "control").any() else None
examples = {name: sid for name, sid in (("CPA", cpa_id), ("control", control_id)) if sid is not None}
grids = {name: load_grid(sid) for name, sid in examples.items()}
print({name: sid for name, sid in examples.items()})
"""),
    code("""
name, grid = next(iter(grids.items()))
nz, ny, nx = params.grid_shape
blocks = region_slices(params.grid_shape)
z_upper = (blocks["RU"][0].start + blocks["RU"][0].stop) // 2
fig, axes_ = plt.subplots(1, 2, figsize=(10, 4.5))
axes_[0].imshow(grid.hu[z_upper], cmap="gray", vmin=-1200, vmax=300)
axes_[0].contour(grid.refined[z_upper] > 0, [0.5], colors="tab:green", linewidths=0.8)
axes_[0].axvline(nx / 2 - 0.5, color="y", ls="--")
axes_[0].set_title(f"axial slice z={z_upper} (upper third)")
y_mid = ny // 2
axes_[1].imshow(grid.hu[::-1, y_mid], cmap="gray", vmin=-1200, vmax=300, aspect="auto")
axes_[1].contour(grid.refined[::-1, y_mid] > 0, [0.5], colors="tab:green", linewidths=0.8)
for cut in (nz // 3, 2 * nz // 3):
    axes_[1].axhline(cut - 0.5, color="y", ls="--")
axes_[1].axvline(nx / 2 - 0.5, color="y", ls="--")
axes_[1].set_title(f"coronal slice y={y_mid}")
if grid.signs is not None:
    for ax, sl in ((axes_[0], grid.signs[z_upper]), (axes_[1], grid.signs[::-1, y_mid])):
        ax.contour(sl > 0, [0.5], colors="r", linewidths=0.8)
for ax in axes_:
    ax.set_xlabel("x: patient's right -> left")
plt.suptitle(f"{name} scan {examples[name]} on the study grid {params.grid_shape}: refined mask (green), "
             "signs (red), sub-region cuts (yellow)", fontsize=9)
plt.tight_layout()
plt.show()
""", figure=("grid", "One scan resampled to the study grid (its refined lung box). Green: refined lung mask; red: "
             "planted signs; yellow dashes: the cuts between the six sub-regions (right/left halves, "
             "upper/middle/lower thirds). The coronal slice is shown head up.")),
    md("""
## The three HU windows

A sub-region image has one channel per HU window; shown as red, green and blue they make the RGB
composite the classifiers see. Below: the same sub-region of the CPA example and of the control,
projected along z (axial view, patient's right on the left); the white outline is the projected
sign truth.
"""),
    code("""
images0 = {name: project_grid(grid, params) for name, grid in grids.items()}
if "CPA" in examples:
    row = cohort.set_index("scan_id").loc[examples["CPA"]]
    region = max(REGIONS, key=lambda r: sum(row[f"{r}_{lab}"] for lab in LABELS))
else:
    region = "RU"
r = REGIONS.index(region)
window_names = [f"[{lo:g}, {hi:g})" for lo, hi in params.windows]
fig, axes_ = plt.subplots(len(images0), len(params.windows) + 1, figsize=(2.6 * (len(params.windows) + 1), 3.2 * len(images0)),
                          squeeze=False)
for i, (name, images) in enumerate(images0.items()):
    image = images.regions["axial"][0, r]
    for k in range(len(params.windows)):
        axes_[i, k].imshow(image[..., k], cmap="gray", vmin=0, vmax=1)
        axes_[i, k].set_title(f"{name}: window {window_names[k]}", fontsize=8)
    axes_[i, -1].imshow(rgb(image))
    if images.regions_truth:
        axes_[i, -1].contour(images.regions_truth["axial"][0, r].max(axis=-1) > 0, [0.5], colors="w", linewidths=0.8)
    axes_[i, -1].set_title(f"{name}: RGB composite", fontsize=8)
for ax in axes_.ravel():
    ax.set_xticks([]), ax.set_yticks([])
plt.suptitle(f"sub-region {region}, axial projection inside the refined mask", fontsize=9)
plt.tight_layout()
plt.show()
""", figure=("windows", "The three HU windows of one sub-region (projected along z inside the refined mask), for "
             "the CPA example (top) and the control (bottom), and their RGB composite; white outline: "
             "the projected sign truth.")),
    md("""
How "average within a window" is summarised matters. With `"mean"` (the paper's wording, used for
the data sets here) a ray's channel is the mean HU of its voxels in the window, whatever their
number: one soft-tissue voxel on a ray is as bright as a fungus ball. With `"weighted"` the mean
is multiplied by the share of the ray's in-mask voxels that are in the window, so an image shows
how much of each tissue a ray crosses, at the cost of dim channels:
"""),
    code("""
name, grid = next(iter(grids.items()))
other = "weighted" if params.statistic == "mean" else "mean"
variants = {params.statistic: images0[name],
            other: project_grid(grid, ProjectionParams(**{**params.as_dict(), "statistic": other}))}
fig, axes_ = plt.subplots(1, 2, figsize=(6, 3.6))
for ax, (stat, images) in zip(axes_, variants.items()):
    ax.imshow(rgb(images.regions["axial"][0, r]))
    ax.set_title(f'statistic = "{stat}"', fontsize=9)
    ax.set_xticks([]), ax.set_yticks([])
plt.tight_layout()
plt.show()
""", figure=("statistic", "The same sub-region (RGB of the three windows) with the two ways of summarising a window "
             "along a ray.")),
    md("""
## The rotations of one scan

The whole-scan coronal image of the CPA example for each rotation (angles about z, y, x in
degrees; the first is the unrotated scan). Rotations about z and y tilt the image plane's content;
rotations about y and x change which voxels a ray crosses.
"""),
    code("""
name = next(iter(examples))
stored = read_scan_npz(proj_dir / "scans" / f"{examples[name]}.npz")
n_rot = len(stored["rotations"])
cols = min(n_rot, 9)
rows = int(np.ceil(n_rot / cols))
fig, axes_ = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.9 * rows), squeeze=False)
for k, ax in enumerate(axes_.ravel()):
    ax.set_xticks([]), ax.set_yticks([])
    if k < n_rot:
        ax.imshow(to_unit(stored["whole_coronal"][k]), cmap="gray", vmin=0, vmax=1)
        ax.set_title(",".join(f"{a:+.0f}" for a in stored["rotations"][k]), fontsize=7)
    else:
        ax.axis("off")
plt.suptitle(f"{name} scan {examples[name]}: whole-scan coronal image of each of the {n_rot} rotations", fontsize=9)
plt.tight_layout()
plt.show()
""", figure=("rotations", "The whole-scan coronal image of one scan for each 3-D rotation; titles give the angles "
             "about z, y and x in degrees.")),
    md("""
## Whole-scan projections

The disease and survival classifiers see the whole-scan images: the mean HU inside the
conservative mask along each axis. The conservative mask leaves out most soft-tissue signs (they
are above its −570 HU threshold), so what the images show is the air and parenchyma around them.
"""),
    code("""
fig, axes_ = plt.subplots(len(images0), 3, figsize=(10, 3.3 * len(images0)), squeeze=False)
for i, (name, images) in enumerate(images0.items()):
    for j, axis in enumerate(AXES):
        axes_[i, j].imshow(images.whole[axis][0], cmap="gray", vmin=0, vmax=1, aspect="auto")
        if images.whole_truth:
            axes_[i, j].contour(images.whole_truth[axis][0].max(axis=-1) > 0, [0.5], colors="r", linewidths=0.7)
        axes_[i, j].set_title(f"{name}: {axis}", fontsize=9)
        axes_[i, j].set_xticks([]), axes_[i, j].set_yticks([])
plt.tight_layout()
plt.show()
""", figure=("whole", "Whole-scan projections (mean HU inside the conservative mask, "
             "mapped from a fixed HU range to [0, 1]) along z (axial), y (coronal) and x (sagittal); "
             "red: projected sign truth.")),
    md("""
## Training-time 2-D augmentation

The classifiers draw, for every training image, a rotation in ±`max_rotation_deg` and a zoom in
`zoom_range` (`sapsam_utils.augment.augment_2d`, seeded): the truth maps get the same transform,
by nearest neighbour so that a sign's footprint keeps its values. Six draws of the sub-region
image above:
"""),
    code("""
name, images = next(iter(images0.items()))
image = images.regions["axial"][0, r]
truth = images.regions_truth["axial"][0, r] if images.regions_truth else None
rng = np.random.default_rng(seed)
fig, axes_ = plt.subplots(1, 6, figsize=(13, 3.2))
for ax in axes_:
    out, out_truth = augment_2d(image, truth, rng=rng, max_rotation_deg=max_rotation_deg, zoom_range=tuple(zoom_range))
    ax.imshow(rgb(out))
    if out_truth is not None:
        ax.contour(out_truth.max(axis=-1) > 0, [0.5], colors="w", linewidths=0.8)
    ax.set_xticks([]), ax.set_yticks([])
plt.tight_layout()
plt.show()
""", figure=("augment2d", "Six random training-time augmentations (rotation and zoom) of one sub-region image; "
             "the white outline is the sign truth, transformed with it.")),
    md("""
## The data sets: splits and classes

Patients are assigned to one split each (the code asserts that no patient is in two). The tables
count images per split and class; balancing oversamples the smaller classes of the **training**
split only (`sapsam_utils.datasets.balanced_indices`), once the split is made.

### Whole-scan images (disease, survival)
"""),
    code("""
info = json.loads((data_dir / "datasets.json").read_text())
records = {(kind, split): load_split(work, kind, split, axes=("axial",)).records
           for kind in ("whole", "regions") for split in SPLITS}
rows = []
for split in SPLITS:
    rec = records["whole", split]
    row = {"split": split, "patients": rec["patient_id"].nunique(), "scans": rec["scan_id"].nunique(),
           "images": len(rec), "control": int((rec["disease"] == 0).sum()), "CPA": int((rec["disease"] == 1).sum()),
           "death within 2 y": int((rec["death_2y"] == 1).sum()), "alive at 2 y": int((rec["death_2y"] == 0).sum()),
           "censored before 2 y": int(rec["censored_2y"].sum())}
    rows.append(row)
    for key in ("patients", "scans", "images", "control", "CPA"):
        results[f"{split}_whole_{key.lower()}"] = int(row[key])
pd.DataFrame(rows).set_index("split")
"""),
    md("### Sub-region images (signs)"),
    code("""
rows = []
for split in SPLITS:
    rec = records["regions", split]
    results[f"{split}_regions_images"] = len(rec)
    for label in LABELS:
        rows.append({"split": split, "label": label, "images": len(rec), "positive": int(rec[label].sum()),
                     "negative": int((rec[label] == 0).sum())})
        results[f"{split}_regions_{label}_positive"] = int(rec[label].sum())
pd.DataFrame(rows).pivot(index="label", columns="split", values=["positive", "negative"])
"""),
    md("""
### Balancing the training split

Per task, the training images of each class before balancing, and the number per class after
oversampling (every image kept, the smaller class drawn again at random until the counts match);
survival leaves out the scans whose two-year outcome is censored.
"""),
    code("""
train_whole, train_regions = records["whole", "train"], records["regions", "train"]
tasks = {"disease (CPA vs control)": train_whole["disease"], "2-year survival": train_whole["death_2y"]}
tasks.update({f"sign: {label}": train_regions[label] for label in LABELS})
rows = []
for task, labels in tasks.items():
    known = labels.dropna().astype(int)
    index = balanced_indices(labels, seed)
    rows.append({"task": task, "class 0": int((known == 0).sum()), "class 1": int((known == 1).sum()),
                 "per class after balancing": len(index) // max(known.nunique(), 1) if known.nunique() == 2 else "one class only"})
balance = pd.DataFrame(rows).set_index("task")
results["train_balanced_disease_per_class"] = balance.loc["disease (CPA vs control)", "per class after balancing"]
balance
"""),
    code("""
shapes = pd.Series({k: " x ".join(map(str, v)) for k, v in info["shapes"].items()}, name="image shape (H x W [x C])")
for key, value in shapes.items():
    results[f"shape_{key}"] = value
shapes.to_frame()
"""),
    md("""
## A real case

The same pipeline on a real chest CT from `../shared/ct/`, read through the manifest that points
at it (`public_ct_manifest`): loading, both lung masks (`sapsam_utils.segmentation.lung_masks`),
the grid, every rotation and every image. It has no sign truth (it is not a CPA case).
"""),
    code("""
public = read_manifest(project_path(public_ct_manifest))
row = public.set_index("scan_id").loc[real_case]
t0 = time.perf_counter()
ct = load_source(row["source"], project_path(public_ct_manifest).parent)
t1 = time.perf_counter()
conservative, refined, _ = lung_masks(ct)
t2 = time.perf_counter()
real_grid, real_images = project_volume(ct, conservative, refined, None, params)
t3 = time.perf_counter()
results.update(real_case=real_case, real_case_seconds_load=t1 - t0, real_case_seconds_masks=t2 - t1,
               real_case_seconds_project=t3 - t2)
print(f"{real_case}: {ct.array.shape} voxels of {tuple(round(s, 2) for s in ct.spacing)} mm; lung box "
      f"{[(s.start, s.stop) for s in real_grid.box]}; load {t1 - t0:.1f} s, masks {t2 - t1:.1f} s, "
      f"grid + {len(params.rotations)} rotations + images {t3 - t2:.1f} s")
"""),
    code("""
fig, axes_ = plt.subplots(2, 6, figsize=(14, 5.5))
for j, axis in enumerate(AXES):
    axes_[0, j].imshow(real_images.whole[axis][0], cmap="gray", vmin=0, vmax=1, aspect="auto")
    axes_[0, j].set_title(f"whole: {axis}", fontsize=9)
for j in range(3, 6):
    axes_[0, j].axis("off")
for k, region_name in enumerate(REGIONS):
    axes_[1, k].imshow(rgb(real_images.regions["axial"][0, k]), aspect="auto")
    axes_[1, k].set_title(f"{region_name}: RGB windows", fontsize=9)
for ax in axes_.ravel():
    ax.set_xticks([]), ax.set_yticks([])
plt.suptitle(f"real case {real_case}: whole-scan projections and the six sub-region images (axial)", fontsize=9)
plt.tight_layout()
plt.show()
""", figure=("real", "A real chest CT (public case) through the same pipeline: the whole-scan projections "
             "(top) and the axial RGB image of each sub-region (bottom).")),
    md("""
## Summary

The numbers of this chapter (image counts per split and class, image shapes, time per scan) go to
the results file of the run.
"""),
    code("""
results_file = write_results(work, "03_projections", results)
pd.Series(results, name="value").to_frame()
"""),
]


def main() -> Path:
    nb = new_notebook(cells=CELLS)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    path = Path(__file__).resolve().parents[2] / "notebooks" / f"{STEM}.ipynb"
    nbformat.validate(nb)
    nbformat.write(nb, path)
    return path


if __name__ == "__main__":
    print(main())
