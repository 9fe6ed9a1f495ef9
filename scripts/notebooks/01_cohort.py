"""Write notebooks/01_cohort.ipynb (without outputs): ``.venv/bin/python scripts/notebooks/01_cohort.py``.

The notebook is generated so that its cells, tags and figure metadata stay reviewable as code.
Edit this script, run it, and commit both files.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

STEM = "01_cohort"


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
# The cohort

## Overview

The paper trains and tests on 352 chest CT studies of 172 patients: 76 control studies without
lung disease and 276 studies of 96 patients with chronic pulmonary aspergillosis (CPA), with 1 to 8
longitudinal scans each over up to 12 years. Each study carries sparse labels: for each of six lung
sub-regions (patient's right / left x upper / middle / lower), whether a radiologist saw a
pre-existing condition, a cavity, a fungus ball or pleural thickening. Those scans are private.

This chapter sets up the data every later chapter uses:

- the **manifest**, one CSV row per CT study: the contract with anyone who runs the study on a
  cohort of their own (DICOM series folders or NIfTI files), checked by a validator;
- the **embedded default cohort**: a simulated cohort with the paper's counts, whose scans are
  synthetic chest CT *phantoms* generated from each row's labels, with voxel-exact truth for
  what the paper could only label sparsely; the disease evolves between a patient's scans, and
  deaths depend on the disease burden plus noise;
- the **scans** of this run (a subset of patients in the small profiles), written to the workdir
  with their truth;
- a measured comparison of the phantoms with four real public chest CTs.

Everything here that is synthetic is said to be so: the cohort's signs, dates and deaths are
simulated, not the paper's data.
"""),
    md("## Imports"),
    code("""
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import ndimage
from IPython.display import Markdown, display
from matplotlib.colors import ListedColormap
from tqdm.auto import tqdm

from sapsam_utils.cache import stage_dir, write_results
from sapsam_utils.cohort import (
    BURDEN_WEIGHTS,
    DEATH_MODEL,
    FIRST_SCAN_RATES,
    build_scans,
    burden,
    cohort_summary,
    scans_stage_params,
    select_patients,
    sign_table,
    two_year_death,
)
from sapsam_utils.loading import load_source
from sapsam_utils.manifest import ALL_COLUMNS, ManifestError, read_manifest
from sapsam_utils.paths import project_path
from sapsam_utils.realism import hu_distance, realism_measures, subsample_inplane
from sapsam_utils.regions import CAVITY_LUMEN, LABEL_COLUMNS, LABELS, SIGN_CODES
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
seed = 0  # seed of every random choice in this notebook (the patient subset, the realism samples)
n_patients = 24  # patients of the manifest used in this run, controls and CPA in proportion (None: all)
phantom_shape = [108, 128, 128]  # phantom grid (z, y, x) in voxels
phantom_spacing = [3.0, 2.8, 2.8]  # phantom voxel size (z, y, x) in mm
difficulty = 1.0  # phantom difficulty: lesion size and contrast, and noise (0.5 easy, 1 default, 2 hard)
n_jobs = 2  # worker processes that build the scans
public_ct_manifest = "manifests/public_ct.csv"  # manifest of real CTs for the realism comparison; "" skips it
""", tags=["parameters"]),
    code("""
manifest_path = project_path(manifest)
work = project_path(workdir)
results = {}
"""),
    md("""
## The manifest

One row per CT study. The columns, in this order (relative paths are relative to the manifest
file's folder; `source` is a DICOM series folder, a NIfTI file or `phantom:<seed>`):
"""),
    code("""
describe = {
    "patient_id": "patient identifier (several studies may share it)",
    "scan_id": "unique study identifier; letters, digits, '.', '_', '-' (names the study's folder)",
    "scan_date": "ISO date YYYY-MM-DD",
    "source": "DICOM series folder, NIfTI file (.nii, .nii.gz) or phantom:<seed>",
    "group": "control or cpa",
    "death_date": "ISO date; blank if alive at the last follow-up",
    "last_followup_date": "ISO date (for a patient who died: the death or an earlier contact)",
    "lung_mask": "optional: label volume on the scan's grid, 0 background, 1 right lung, 2 left lung",
    "lesion_mask": "optional: label volume on the scan's grid, > 0 = lesion",
}
label_text = "0 or 1: a sign in that sub-region (R/L = patient's right/left, U/M/L = upper/middle/lower)"
schema = pd.DataFrame(
    [(c, describe.get(c, label_text)) for c in ALL_COLUMNS if c not in LABEL_COLUMNS[1:]],
    columns=["column", "content"],
)
schema.loc[schema["column"] == LABEL_COLUMNS[0], "column"] = f"{LABEL_COLUMNS[0]} ... {LABEL_COLUMNS[-1]} (24)"
schema.style.hide(axis="index")
"""),
    md("""
The validator (`sapsam_utils.manifest.read_manifest`) checks that the columns are exactly these,
that ids are present and `scan_id` unique, that labels are 0/1 and a control has none, that a
phantom's fungus ball has the cavity it lies in, that dates are ISO and in order (scan <= last
follow-up <= death, and a patient's rows agree on the outcome), and that every file exists. It
lists **every** broken rule, row by row, in one error.

### Validation

The manifest of this run:
"""),
    code("""
table = read_manifest(manifest_path)
print(f"{manifest_path.name}: {len(table)} rows, {table['patient_id'].nunique()} patients - valid")
"""),
    md("A copy with three mistakes shows what a user sees when their manifest is wrong:"),
    code("""
broken = table.head(5).copy()
broken.loc[1, "scan_date"] = "12/03/2009"
broken.loc[2, LABEL_COLUMNS[0]] = 2
broken.loc[3, "scan_id"] = broken.loc[0, "scan_id"]
with tempfile.TemporaryDirectory() as folder:
    broken.to_csv(Path(folder) / "broken.csv", index=False)
    try:
        read_manifest(Path(folder) / "broken.csv", check_paths=False)  # a copy elsewhere: paths not checked
    except ManifestError as err:
        print(str(err).replace(folder, "<folder>"))
"""),
    md("""
## The simulated cohort

`data_manifest.csv` is written by `python -m sapsam_utils.cohort` (seed 0) with the paper's
counts. How it is simulated (details in `sapsam_utils.cohort`):

- **signs at diagnosis**: per sub-region, with rates that fall from the upper to the lower zones
  (the table of rates below), raised by a per-patient severity; every CPA patient has a cavity;
- **disease between scans**: signs appear (new cavities mostly next to existing ones, fungus balls
  inside existing cavities, pleural thickening next to cavities) and regress, at yearly rates scaled
  by a per-patient activity; a third of the patients respond to treatment;
- **deaths**: after the last scan the yearly hazard is
  `h0 * exp(beta * (burden - 3) + sigma * u)` with the scan's burden (a weighted count of its
  labels) and a patient frailty `u ~ N(0, 1)` that no image shows; controls die at 1 % a year.
  Follow-up ends on 2018-12-31, earlier for the 10 % lost to follow-up.
"""),
    code("""
rates = pd.DataFrame(FIRST_SCAN_RATES, index=["upper", "middle", "lower"]).T
rates.index.name = "P(sign in a sub-region) at diagnosis"
display(rates)
print("burden weights:", BURDEN_WEIGHTS, "| death model:", DEATH_MODEL)
"""),
    md("### The cohort table"),
    code("""
selected = select_patients(table, n_patients, seed)
full, run = cohort_summary(table), cohort_summary(selected)
names = {
    "patients": "patients", "scans": "scans (studies)",
    "control_patients": "control patients", "control_scans": "control scans",
    "cpa_patients": "CPA patients", "cpa_scans": "CPA scans",
    "cpa_scans_per_patient_min": "scans per CPA patient, min",
    "cpa_scans_per_patient_median": "scans per CPA patient, median",
    "cpa_scans_per_patient_max": "scans per CPA patient, max",
    "cpa_scan_span_years_max": "longest span of a patient's scans (years)",
    "followup_years_median": "median follow-up from first scan (years)",
    "deaths": "deaths", "cpa_deaths": "deaths of CPA patients",
    "cpa_scans_2y_known": "CPA scans with known 2-year outcome",
    "cpa_scans_2y_death_rate": "CPA scans followed by death within 2 years",
    "cpa_burden_auc_2y_death": "AUC of burden alone for 2-year death",
}
paper = {"patients": 172, "scans": 352, "control_patients": 76, "control_scans": 76,
         "cpa_patients": 96, "cpa_scans": 276, "cpa_scans_per_patient_min": 1,
         "cpa_scans_per_patient_max": 8}
cohort_table = pd.DataFrame({
    "paper": [paper.get(k, "") for k in names],
    "manifest": [full[k] for k in names],
    "this run": [run[k] for k in names],
}, index=list(names.values()))
display(cohort_table.style.format(lambda v: f"{v:.3g}" if isinstance(v, float) else v))
results.update({f"manifest_{k}": v for k, v in full.items()})
results.update({f"run_{k}": v for k, v in run.items()})
"""),
    code("""
cpa = table[table["group"] == "cpa"]
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
if len(cpa):
    outcome = two_year_death(cpa)
    per_patient = cpa.groupby("patient_id").size()
    axes[0].hist(per_patient, bins=np.arange(0.5, per_patient.max() + 1.5), rwidth=0.85, color="tab:blue")
    scores = burden(cpa)
    for value, name, colour in ((0.0, "alive at 2 years", "tab:green"), (1.0, "died within 2 years", "tab:red")):
        axes[1].hist(scores[outcome == value], bins=np.arange(-0.25, scores.max() + 0.75, 0.5), alpha=0.6,
                     label=f"{name} ({int((outcome == value).sum())})", color=colour)
    axes[1].legend()
else:
    for ax in axes:
        ax.text(0.5, 0.5, "no CPA scans in this manifest", ha="center", va="center", transform=ax.transAxes)
axes[0].set(xlabel="scans per CPA patient", ylabel="patients", title="Longitudinal scans")
axes[1].set(xlabel="disease burden of the scan", ylabel="CPA scans", title="Burden and 2-year death")
fig.tight_layout()
plt.show()
""", figure=("followup", "The simulated cohort: scans per CPA patient (left) and the disease burden of CPA "
                        "scans by outcome two years later (right). Burden shifts the risk of death but does "
                        "not decide it.")),
    md("""
### Table 1: signs per sub-region

The paper's Table 1 counts, over the CPA studies, how often each sign was labelled in each
sub-region. The same count from the manifest (left | right per level):
"""),
    code("""
table1 = sign_table(table)
display(table1)
for label in LABELS:
    for level in ("upper", "middle", "lower"):
        for side in ("left", "right"):
            results[f"table1_{label}_{level}_{side}"] = int(table1.loc[label, (level, side)])
    results[f"table1_{label}_total"] = int(table1.loc[label, ("total", "")])
by_level = {level: int(table1[level].to_numpy().sum()) for level in ("upper", "middle", "lower")}
print("labels per level:", by_level)
"""),
    md("""
The paper's own numbers could not be consulted when this cohort was written, so the rates are
plausible choices, not the paper's: they keep the pattern the paper reports (upper zones far more
often than middle, middle more than lower), as expected of chronic cavitary aspergillosis.
"""),
    md("""
## The scans of this run

The run uses the patients chosen above (all their scans). Each row becomes a folder of the
`scans` stage in the workdir: the CT (int16 HU, canonical LPS axes), the lung truth, the sign
truth (phantoms), the lesion labels (when the manifest gives them) and `scan.json`. A scan that
is already complete is not built again, so an interrupted run resumes.
"""),
    code("""
params = scans_stage_params(selected, phantom_shape, phantom_spacing, difficulty)
scans_dir = stage_dir(work, "scans", params)
built = build_scans(selected, manifest_path.parent, scans_dir, phantom_shape, phantom_spacing,
                    difficulty, n_jobs=n_jobs)
print(f"scans stage: {scans_dir.relative_to(work)} - {len(built)} scans, {int(built['built'].sum())} built now")
display(built.groupby("kind").agg(scans=("scan_id", "size"), shape=("shape", "first"), spacing=("spacing", "first")))
"""),
    md("""
### Phantoms with their truth

A control phantom (cut through its right lung) and the CPA phantom of this run with the most
signs (cut through its largest sign). Contours: the true lung envelope (right lung blue, left lung orange). Colours: the sign
truth (for a real scan: its lesion labels, in red).
"""),
    code("""
sign_colours = {SIGN_CODES["preexisting"]: ("pre-existing", "tab:purple"),
                SIGN_CODES["cavity"]: ("cavity wall", "tab:red"),
                CAVITY_LUMEN: ("cavity lumen", "gold"),
                SIGN_CODES["fungus_ball"]: ("fungus ball", "lime"),
                SIGN_CODES["pleural_thickening"]: ("pleural thickening", "cyan")}
sign_cmap = ListedColormap(["none"] + [sign_colours[c][1] for c in sorted(sign_colours)])


def show_scan(row_axes, scan_id, title):
    folder = scans_dir / scan_id
    ct = read_volume(folder / "ct.nii.gz")
    lungs = read_volume(folder / "truth_lungs.nii.gz").array if (folder / "truth_lungs.nii.gz").is_file() else None
    if (folder / "truth_signs.nii.gz").is_file():
        signs = read_volume(folder / "truth_signs.nii.gz").array
    elif (folder / "lesions.nii.gz").is_file():  # a real scan's lesions, drawn like cavity walls
        signs = np.where(read_volume(folder / "lesions.nii.gz").array > 0, SIGN_CODES["cavity"], 0)
    else:
        signs = np.zeros(ct.array.shape, np.uint8)
    # cut through the largest sign (or, without signs, through the right lung)
    target = signs > 0 if signs.any() else (lungs == 1 if lungs is not None else np.ones(signs.shape, bool))
    parts, n = ndimage.label(target)
    biggest = np.argmax(np.bincount(parts.ravel())[1:]) + 1 if n else 0
    centre = np.argwhere(parts == biggest).mean(axis=0).round().astype(int) if n else np.array(signs.shape) // 2
    sz, sy, sx = ct.spacing
    views = [("axial", np.s_[centre[0], :, :], sy / sx), ("coronal", np.s_[:, centre[1], :], sz / sx),
             ("sagittal", np.s_[:, :, centre[2]], sz / sy)]
    for ax, (view, where, aspect) in zip(row_axes, views):
        origin = "upper" if view == "axial" else "lower"  # z (superior) up in coronal / sagittal views
        ax.imshow(ct.array[where], cmap="gray", vmin=-1000, vmax=400, aspect=aspect, origin=origin)
        if lungs is not None:
            for value, colour in ((1, "tab:blue"), (2, "tab:orange")):
                if (lungs[where] == value).any():
                    ax.contour(lungs[where] == value, levels=[0.5], colors=colour, linewidths=0.8, origin=origin)
        overlay = np.ma.masked_equal(signs[where], 0)
        ax.imshow(overlay, cmap=sign_cmap, vmin=0, vmax=5, aspect=aspect, origin=origin, interpolation="nearest", alpha=0.8)
        ax.set_title(f"{title}: {view}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])


examples = []
controls = selected[selected["group"] == "control"]
if len(controls):
    examples.append((controls["scan_id"].iloc[0], "control"))
cpa_rows = selected[selected["group"] == "cpa"]
if len(cpa_rows):
    examples.append((cpa_rows.loc[cpa_rows[list(LABEL_COLUMNS)].sum(axis=1).idxmax(), "scan_id"], "CPA"))
fig, axes = plt.subplots(len(examples), 3, figsize=(11, 3.5 * len(examples)), squeeze=False)
for row_axes, (scan_id, group) in zip(axes, examples):
    show_scan(row_axes, scan_id, f"{group} {scan_id}")
handles = [plt.Rectangle((0, 0), 1, 1, color=c) for _, c in sign_colours.values()]
fig.legend(handles, [n for n, _ in sign_colours.values()], loc="lower center", ncol=5, fontsize=8)
fig.tight_layout(rect=(0, 0.05, 1, 1))
plt.show()
for scan_id, group in examples:
    row = selected.set_index("scan_id").loc[scan_id]
    print(f"{group} {scan_id} labels:", ", ".join(c for c in LABEL_COLUMNS if row[c]) or "none")
""", figure=("phantoms", "A control phantom (top) and a CPA phantom (bottom) of this run in axial, coronal "
                         "and sagittal slices (radiological convention: patient's right on the image's "
                         "left), with the true lungs (contours) and the sign truth (colours).")),
    md("""
## Realism

Are the phantoms like real chest CTs? The same estimators measure both (`sapsam_utils.realism`):
the lung volume (air below -500 HU inside the body, in large connected structures: lungs with
trachea and main bronchi), the body's width and depth over the lung slices, and the parenchyma HU
distribution (lung voxels with vessels, away from the lung edge), compared by the Wasserstein-1
distance in HU. The real cases are four public chest CTs (`manifests/public_ct.csv`: two
LIDC-IDRI cases with lung nodules, two Lung-PET-CT-Dx cases with a lung tumour; **not** CPA, and
labelled `control` only because the manifest has no other group). They are measured on every
second pixel in-plane (0.65-0.84 mm pixels), which keeps their HU distribution and halves the work.
The phantoms are this run's control phantoms, on this run's grid.
"""),
    code("""
REAL_STRIDE = 2  # measure the real scans on every second pixel in-plane (same HU distribution, faster)
rows, values = [], {}
phantoms_built = built.loc[built["kind"] == "phantom", "scan_id"]
phantom_ids = [s for s in phantoms_built if s in set(selected.loc[selected["group"] == "control", "scan_id"])]
for scan_id in tqdm(phantom_ids, desc="phantoms"):
    m = realism_measures(read_volume(scans_dir / scan_id / "ct.nii.gz"), seed=seed)
    values[scan_id] = m.pop("values")
    truth = read_volume(scans_dir / scan_id / "truth_lungs.nii.gz")
    rows.append({"scan": scan_id, "kind": "phantom", **m,
                 "truth_lung_volume_l": float((truth.array > 0).sum() * truth.voxel_volume_ml / 1000)})
real_ids = []
if public_ct_manifest:
    public_path = project_path(public_ct_manifest)
    try:
        public = read_manifest(public_path)
    except ManifestError as err:
        hint = 'the real CTs are not there: give public_ct_manifest = "" to skip the comparison'
        raise RuntimeError(f"{err} ({hint})") from err
    for record in tqdm(public.to_dict("records"), desc="real CTs"):
        ct = load_source(record["source"], public_path.parent)
        m = realism_measures(subsample_inplane(ct, REAL_STRIDE), seed=seed)
        values[record["scan_id"]] = m.pop("values")
        real_ids.append(record["scan_id"])
        rows.append({"scan": record["scan_id"], "kind": "real", **m, "truth_lung_volume_l": np.nan})
else:
    print("public_ct_manifest is empty: the real-CT comparison is skipped")
columns = ["scan", "kind", "lung_volume_l", "body_width_mm", "body_depth_mm", "parenchyma_median_hu",
           "parenchyma_iqr_hu", "truth_lung_volume_l"]
realism = pd.DataFrame(rows, columns=columns).set_index("scan")
if real_ids:
    realism["w1_to_real_mean_hu"] = [
        np.mean([hu_distance(values[s], values[r]) for r in real_ids if r != s]) for s in realism.index
    ]
display(realism.round(2))
"""),
    code("""
fig, ax = plt.subplots(figsize=(8, 3.8))
if real_ids or phantom_ids:
    bins = np.arange(-1024, 1, 8)
    for scan_id in real_ids:
        ax.hist(values[scan_id], bins=bins, density=True, histtype="step", lw=1.4, label=f"real {scan_id}")
    for scan_id in phantom_ids:
        ax.hist(values[scan_id], bins=bins, density=True, histtype="step", lw=1, ls="--", color="k", alpha=0.6,
                label="phantoms (controls of this run)" if scan_id == phantom_ids[0] else None)
    ax.legend(fontsize=8)
else:
    ax.text(0.5, 0.5, "no phantom and no real CT to measure", ha="center", va="center", transform=ax.transAxes)
ax.set(xlabel="HU", ylabel="density", title="Lung parenchyma HU")
fig.tight_layout()
plt.show()
""", figure=("parenchyma", "Distribution of lung parenchyma HU in the four public real CTs and in the control "
                           "phantoms of this run (same estimator for both).")),
    code("""
if real_ids and phantom_ids:
    phantoms, reals = realism[realism["kind"] == "phantom"], realism[realism["kind"] == "real"]
    real_pairs = [hu_distance(values[a], values[b]) for i, a in enumerate(real_ids) for b in real_ids[i + 1:]]
    numbers = {
        "realism_phantoms": len(phantoms),
        "realism_phantom_lung_volume_l_mean": phantoms["lung_volume_l"].mean(),
        "realism_phantom_truth_lung_volume_l_mean": phantoms["truth_lung_volume_l"].mean(),
        "realism_real_lung_volume_l_mean": reals["lung_volume_l"].mean(),
        "realism_phantom_body_width_mm_mean": phantoms["body_width_mm"].mean(),
        "realism_real_body_width_mm_mean": reals["body_width_mm"].mean(),
        "realism_phantom_body_depth_mm_mean": phantoms["body_depth_mm"].mean(),
        "realism_real_body_depth_mm_mean": reals["body_depth_mm"].mean(),
        "realism_phantom_parenchyma_median_hu_mean": phantoms["parenchyma_median_hu"].mean(),
        "realism_real_parenchyma_median_hu_mean": reals["parenchyma_median_hu"].mean(),
        "realism_phantom_parenchyma_iqr_hu_mean": phantoms["parenchyma_iqr_hu"].mean(),
        "realism_real_parenchyma_iqr_hu_mean": reals["parenchyma_iqr_hu"].mean(),
        "realism_w1_phantom_to_real_hu_mean": phantoms["w1_to_real_mean_hu"].mean(),
        "realism_w1_real_to_real_hu_mean": float(np.mean(real_pairs)),
    }
    results.update({k: (v if isinstance(v, int) else float(v)) for k, v in numbers.items()})
    display(Markdown(
        f"Measured: lung volume {numbers['realism_phantom_lung_volume_l_mean']:.1f} l in the phantoms "
        f"(truth {numbers['realism_phantom_truth_lung_volume_l_mean']:.1f} l) against "
        f"{numbers['realism_real_lung_volume_l_mean']:.1f} l in the real scans; body "
        f"{numbers['realism_phantom_body_width_mm_mean']:.0f} x {numbers['realism_phantom_body_depth_mm_mean']:.0f} mm "
        f"against {numbers['realism_real_body_width_mm_mean']:.0f} x {numbers['realism_real_body_depth_mm_mean']:.0f} mm; "
        f"parenchyma median {numbers['realism_phantom_parenchyma_median_hu_mean']:.0f} HU against "
        f"{numbers['realism_real_parenchyma_median_hu_mean']:.0f} HU, interquartile range "
        f"{numbers['realism_phantom_parenchyma_iqr_hu_mean']:.0f} HU against "
        f"{numbers['realism_real_parenchyma_iqr_hu_mean']:.0f} HU. The parenchyma histograms of phantoms are "
        f"{numbers['realism_w1_phantom_to_real_hu_mean']:.0f} HU (Wasserstein-1) from the real ones, where the "
        f"real scans are {numbers['realism_w1_real_to_real_hu_mean']:.0f} HU from each other."
    ))
"""),
    md("""
Where the phantom is still unlike real CT:

- **Parenchyma texture**: the phantom's lung HU spread (interquartile range) is narrower than in
  real scans, whose lungs hold more small vessels, airways, interstitium and partial-volume
  voxels, and whose noise depends on the kernel (the sharp lung kernel of Lung-PET-CT-Dx A0001
  widens its histogram). The gravity gradient and texture are smooth random fields.
- **Anatomy**: smooth analytic shapes: no lobes or fissures, no secondary lobules, a few airway
  generations, one vessel tree per lung; no arms, scapulae, clavicles or breasts; no contrast
  agent (LIDC-IDRI 0001 is contrast-enhanced), beam hardening, streaks or motion.
- **Field of view**: a phantom always covers the whole lungs with margin; real scans may cut the
  lung bases (Lung-PET-CT-Dx A0002, so its measured lung volume is low) or reach the abdomen.
- **Disease**: each sign is one solid shape per sub-region; real CPA shows several lesions,
  fibrosis, volume loss and signs that cross the sub-region cuts.
- **Estimators**: the threshold lung estimate includes trachea and main bronchi and excludes dense
  disease; it is applied alike to both, and the phantoms' truth shows its error.
"""),
    md("## Summary"),
    code("""
results.update({
    "n_patients_run": int(selected["patient_id"].nunique()),
    "n_scans_run": int(len(selected)),
    "phantom_grid": "x".join(map(str, phantom_shape)),
    "phantom_spacing_mm": "x".join(map(str, phantom_spacing)),
    "difficulty": float(difficulty),
    "scans_stage_key": scans_dir.name,
})
results = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in results.items()}
results_file = write_results(work, "01_cohort", results)
display(Markdown(
    f"The manifest ({full['patients']} patients, {full['scans']} scans: {full['control_scans']} control and "
    f"{full['cpa_scans']} CPA scans) is valid. {full['cpa_scans_2y_death_rate']:.0%} of the CPA scans are followed "
    f"by a death within two years; burden alone predicts it with an AUC of {full['cpa_burden_auc_2y_death']:.2f}. "
    f"This run uses {run['patients']} patients ({run['scans']} scans) on a {results['phantom_grid']} grid. "
    f"Numbers: `{results_file.relative_to(work)}` in the workdir."
))
"""),
]


def build() -> nbformat.NotebookNode:
    nb = new_notebook(cells=CELLS)
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


if __name__ == "__main__":
    out = Path(__file__).resolve().parents[2] / "notebooks" / f"{STEM}.ipynb"
    nb = build()
    nbformat.validate(nb)
    nbformat.write(nb, out)
    print(f"wrote {out}")
