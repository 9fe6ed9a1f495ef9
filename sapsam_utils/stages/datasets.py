"""The image data sets of the classifiers: the ``projections`` and ``datasets`` stages, and their readers.

Files it owns, in two ``workdir`` stages (see :mod:`sapsam_utils.stages.workdir`); it reads the
``scans`` and ``masks`` stages through :mod:`sapsam_utils.stages.workdir`'s readers:

``projections/<key>/`` (upstream: the ``masks`` key; parameters: :class:`ProjectionParams`)
    ``scans/<scan_id>.npz``: every image of one scan for every rotation (written atomically;
    :func:`preprocess_cohort` skips finished scans, so an interrupted run resumes where it
    stopped, and removes any half-written ``.tmp-*`` file). Arrays: ``rotations`` ``(R, 3)``
    degrees; ``whole_<axis>`` ``(R, H, W)`` and ``regions_<axis>`` ``(R, 6, H, W, C)`` as uint8
    (value * 255, rounded); for scans with sign truth ``whole_truth_<axis>`` ``(R, H, W, 4)`` and
    ``regions_truth_<axis>`` ``(R, 6, H, W, 4)`` as uint8 (fraction * 255, rounded, but at least
    1 where the fraction is > 0 so that a sign's footprint survives); ``meta`` (JSON text: box,
    grid spacing, timings).

``datasets/<key>/`` (upstream: the ``projections`` key; parameters: split fractions and seed)
    ``splits.csv`` (``patient_id, group, split``), ``datasets.json`` (parameters, counts,
    shapes) and, per split ``train`` / ``val`` / ``test``, a folder with

    * ``whole.csv``: one row per (scan, rotation): ``scan_id, patient_id, group, disease``
      (1 = CPA), ``death_2y`` (1 / 0, empty when unknown), ``censored_2y``, ``rotation``
      (0 = unrotated), ``angle_z, angle_y, angle_x``, ``has_truth``;
    * ``whole_<axis>.npy`` ``(N, H, W)`` uint8, ``whole_truth_<axis>.npy`` ``(N, H, W, 4)``;
    * ``regions.csv``: one row per (scan, rotation, sub-region): the columns above plus
      ``region`` and the region's four labels ``preexisting, cavity, fungus_ball,
      pleural_thickening`` (from the manifest's sparse labels);
    * ``regions_<axis>.npy`` ``(N, H, W, C)`` uint8, ``regions_truth_<axis>.npy`` ``(N, H, W, 4)``.

    Rows of a ``.csv`` and of its arrays correspond one to one. Truth arrays exist when some
    scan of the cohort has sign truth (rows with ``has_truth`` False hold zeros). ``.npy`` files
    load memory-mapped (:func:`load_split`), so training reads only what it uses.

Splits are made of **patients**, stratified by group, seeded
(:func:`sapsam_utils.learning.splits.split_patients`, which asserts it); the projections
themselves, on volumes, are :mod:`sapsam_utils.imaging.projections`.
"""

from __future__ import annotations

import json
import os
import time
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..core import files
from ..core.parallel import map_jobs
from ..core.regions import LABEL_COLUMNS, LABELS, REGIONS
from ..core.volume import Volume, read_volume
from ..imaging.projections import AXES, ProjectionParams, ScanImages, project_volume, to_uint8, to_unit, truth_to_uint8
from ..learning.splits import DEFAULT_FRACTIONS, SPLITS, check_patient_splits, split_patients, survival_columns
from . import workdir as wd


# ---------------------------------------------------------------------------------------------
# One scan


def scan_arrays(images: ScanImages, meta: dict) -> dict[str, np.ndarray]:
    """The arrays stored for one scan (see the module docstring)."""
    out = {"rotations": images.rotations, "meta": np.array(json.dumps(meta))}
    for axis in AXES:
        out[f"whole_{axis}"] = to_uint8(images.whole[axis])
        out[f"regions_{axis}"] = to_uint8(images.regions[axis])
        if images.whole_truth:
            out[f"whole_truth_{axis}"] = truth_to_uint8(images.whole_truth[axis])
            out[f"regions_truth_{axis}"] = truth_to_uint8(images.regions_truth[axis])
    return out


def save_npz_atomic(path: str | os.PathLike, arrays: dict[str, np.ndarray], compresslevel: int = 1) -> Path:
    """Write a compressed ``.npz`` (readable by ``np.load``) into a temporary sibling, then rename.

    zlib level 1 instead of ``np.savez_compressed``'s 6: three times faster on these images for
    about 10 % more bytes (the truth maps, mostly zeros, compress either way).
    """
    with files.atomic_file(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=compresslevel) as archive:
            for name, value in arrays.items():
                with archive.open(f"{name}.npy", "w", force_zip64=True) as fh:
                    np.lib.format.write_array(fh, np.asanyarray(value), allow_pickle=False)
    return Path(path)


def load_stage_volumes(
    scan_id: str, scans_dir: str | os.PathLike, masks_dir: str | os.PathLike
) -> tuple[Volume, Volume, Volume, Volume | None]:
    """One scan's CT, conservative and refined masks, and sign truth (None without) from the stages."""
    signs_path = wd.scan_file(scans_dir, scan_id, "truth_signs")
    return (
        read_volume(wd.scan_file(scans_dir, scan_id, "ct")),
        read_volume(wd.mask_file(masks_dir, scan_id, "conservative")),
        read_volume(wd.mask_file(masks_dir, scan_id, "refined")),
        read_volume(signs_path) if signs_path.is_file() else None,
    )


def project_scan_files(
    scan_id: str, scans_dir: str | os.PathLike, masks_dir: str | os.PathLike, out_path: str | os.PathLike,
    params: dict, n_threads: int = 1,
) -> dict:
    """Load one scan's CT, masks and truth from the stages, project it, save its ``.npz``.

    Parameters
    ----------
    scan_id : str
        Folder name in both stages.
    scans_dir, masks_dir : path-like
        The ``scans`` and ``masks`` stage folders.
    out_path : path-like
        Where the scan's ``.npz`` goes (written atomically).
    params : dict
        :class:`~sapsam_utils.imaging.projections.ProjectionParams` fields.
    n_threads : int
        Threads for the rotations of this scan.

    Returns
    -------
    dict
        ``scan_id`` and the seconds spent loading, projecting and writing.
    """
    t0 = time.perf_counter()
    scan_folder, mask_folder = Path(scans_dir) / scan_id, Path(masks_dir) / scan_id
    try:
        ct, conservative, refined, signs = load_stage_volumes(scan_id, scans_dir, masks_dir)
        t1 = time.perf_counter()
        grid, images = project_volume(ct, conservative, refined, signs, ProjectionParams(**params), n_threads)
        t2 = time.perf_counter()
    except Exception as err:
        raise RuntimeError(f"scan {scan_id} ({scan_folder}, {mask_folder}): {err}") from err
    meta = {
        "scan_id": scan_id,
        "box": [[s.start, s.stop] for s in grid.box],
        "grid_spacing_mm": list(grid.spacing),
        "has_truth": signs is not None,
        "seconds_load": t1 - t0,
        "seconds_project": t2 - t1,
    }
    save_npz_atomic(out_path, scan_arrays(images, meta))
    return {"scan_id": scan_id, "seconds_load": t1 - t0, "seconds_project": t2 - t1,
            "seconds_write": time.perf_counter() - t2}


#: The projections stage's folder of per-scan files, and the datasets stage's record.
PROJECTED_SCANS, DATASETS_RECORD = "scans", "datasets.json"


def projection_path(proj_dir: str | os.PathLike, scan_id: str) -> Path:
    """Where the projections stage ``proj_dir`` keeps one scan's ``.npz``."""
    return Path(proj_dir) / PROJECTED_SCANS / f"{scan_id}.npz"


def read_projection(proj_dir: str | os.PathLike, scan_id: str) -> dict:
    """The arrays of one scan's ``.npz`` in the projections stage ``proj_dir`` (:func:`read_scan_npz`)."""
    return read_scan_npz(projection_path(proj_dir, scan_id))


def datasets_info(data_dir: str | os.PathLike) -> dict:
    """The record of a complete datasets stage: parameters, counts per split, image shapes, rotations."""
    return files.read_json(Path(data_dir) / DATASETS_RECORD)


def read_scan_npz(path: str | os.PathLike) -> dict:
    """The arrays of one scan's ``.npz`` (``meta`` decoded to a dict)."""
    with np.load(path) as data:
        out = {k: data[k] for k in data.files}
    out["meta"] = json.loads(str(out["meta"]))
    return out


# ---------------------------------------------------------------------------------------------
# The cohort


def upstream_stages(workdir: str | os.PathLike) -> tuple[str, Path, Path]:
    """``(masks key, masks folder, scans folder)`` of the last segmentation run in ``workdir``.

    The scans folder is the one the masks were computed from (the masks stage's upstream), not
    merely the last cohort run.
    """
    masks_key, masks_dir = wd.current_stage(workdir, "masks")
    scans_dir = wd.upstream_dir(masks_dir, "scans")
    if not wd.cohort_path(scans_dir).is_file():
        raise FileNotFoundError(f"{wd.cohort_path(scans_dir)}: the scans the masks came from are missing; rerun 01_cohort")
    return masks_key, masks_dir, scans_dir


def preprocess_cohort(
    workdir: str | os.PathLike, params: ProjectionParams, n_jobs: int = 1, n_threads: int = 1, progress: bool = True,
    scheduler: str = "processes",
) -> tuple[Path, pd.DataFrame]:
    """Project every scan of the last segmentation run into the ``projections`` stage.

    Scans already done are skipped (their ``.npz`` exists); leftovers of an interrupted run
    (``.tmp-*`` files) are removed first. Scans run in ``n_jobs`` worker processes.

    Parameters
    ----------
    workdir : path-like
    params : ProjectionParams
    n_jobs : int
        Worker processes (1: in this process).
    scheduler : str
        Where the projection jobs run (as in :func:`sapsam_utils.stages.scans.build_scans`).
    n_threads : int
        Threads per scan (rotations in parallel); keep ``n_jobs * n_threads`` <= cores.
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    tuple
        The stage folder and a table with one row per scan: ``scan_id``, ``done_now`` (False
        when found finished) and the seconds of each step (NaN for skipped scans).
    """

    masks_key, masks_dir, scans_dir = upstream_stages(workdir)
    stage = wd.stage_dir(workdir, "projections", params.as_dict(), upstream=masks_key)
    out_dir = stage / PROJECTED_SCANS
    out_dir.mkdir(exist_ok=True)
    for leftover in out_dir.glob(".tmp-*"):
        leftover.unlink()
    cohort = wd.read_cohort(scans_dir)
    todo = [s for s in cohort["scan_id"] if not projection_path(stage, s).is_file()]
    rows = {s: {"scan_id": s, "done_now": False} for s in cohort["scan_id"]}
    args = [(s, scans_dir, masks_dir, projection_path(stage, s), params.as_dict(), n_threads) for s in todo]
    for _, result in map_jobs(project_scan_files, args, n_jobs, desc="projections", progress=progress,
                              scheduler=scheduler):
        rows[result["scan_id"]].update(result, done_now=True)
    return stage, pd.DataFrame(list(rows.values()))


# ---------------------------------------------------------------------------------------------
# The per-split data sets


def _records(cohort: pd.DataFrame, rotations: np.ndarray, has_truth: dict[str, bool]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The whole-scan and sub-region record tables of ``cohort`` (rows in storage order)."""
    survival = survival_columns(cohort)
    whole, regions = [], []
    for i, row in cohort.iterrows():
        base = {
            "scan_id": row["scan_id"], "patient_id": row["patient_id"], "group": row["group"],
            "disease": int(row["group"] == "cpa"), "death_2y": survival.at[i, "death_2y"],
            "censored_2y": bool(survival.at[i, "censored_2y"]), "has_truth": has_truth[row["scan_id"]],
        }
        for r, (az, ay, ax) in enumerate(rotations):
            rot = {"rotation": r, "angle_z": float(az), "angle_y": float(ay), "angle_x": float(ax)}
            whole.append({**base, **rot})
            for region in REGIONS:
                labels = {lab: int(row[f"{region}_{lab}"]) for lab in LABELS}
                regions.append({**base, **rot, "region": region, **labels})
    whole_columns = ["scan_id", "patient_id", "group", "disease", "death_2y", "censored_2y", "has_truth",
                     "rotation", "angle_z", "angle_y", "angle_x"]
    return (pd.DataFrame(whole, columns=whole_columns),
            pd.DataFrame(regions, columns=[*whole_columns, "region", *LABELS]))


def build_datasets(
    workdir: str | os.PathLike, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS, seed: int = 0,
    progress: bool = True,
) -> Path:
    """Split the last ``projections`` run by patient and write the per-split arrays (``datasets``).

    A split folder is written whole or not at all (:func:`sapsam_utils.core.files.atomic_dir`);
    a complete stage (``datasets.json`` present) is reused as it is.

    Returns
    -------
    pathlib.Path
        The ``datasets`` stage folder.
    """
    from tqdm.auto import tqdm

    proj_key, proj_dir = wd.current_stage(workdir, "projections")
    _, _, scans_dir = upstream_stages(workdir)
    params = {"fractions": [float(f) for f in fractions], "seed": int(seed)}
    stage = wd.stage_dir(workdir, "datasets", params, upstream=proj_key)
    if (stage / DATASETS_RECORD).is_file():
        return stage
    cohort = wd.read_cohort(scans_dir)
    cohort[list(LABEL_COLUMNS)] = cohort[list(LABEL_COLUMNS)].astype(int)
    missing = [s for s in cohort["scan_id"] if not projection_path(proj_dir, s).is_file()]
    if missing:
        raise FileNotFoundError(f"{proj_dir}/scans: no projections for {missing[:5]}; run preprocess_cohort first")
    splits = split_patients(cohort, fractions, seed)
    split_of = cohort["patient_id"].map(splits.set_index("patient_id")["split"])
    check_patient_splits(cohort.assign(split=split_of))
    splits.to_csv(stage / "splits.csv", index=False)

    first = read_projection(proj_dir, cohort["scan_id"].iloc[0])
    rotations = first["rotations"]
    has_truth = {}
    for s in cohort["scan_id"]:
        with np.load(projection_path(proj_dir, s)) as data:
            has_truth[s] = "whole_truth_axial" in data.files
    any_truth = any(has_truth.values())
    shapes = {k: first[k].shape for k in first if k.startswith(("whole_", "regions_"))}
    if any_truth and "whole_truth_axial" not in shapes:
        n_lab = len(LABELS)
        for axis in AXES:
            shapes[f"whole_truth_{axis}"] = (*shapes[f"whole_{axis}"], n_lab)
            shapes[f"regions_truth_{axis}"] = (*shapes[f"regions_{axis}"][:-1], n_lab)

    summary = {"params": params, "projections_key": proj_key, "splits": {}}
    bar = tqdm(total=len(cohort), desc="datasets", unit="scan", disable=not progress)
    for split in SPLITS:
        part = cohort[split_of == split].reset_index(drop=True)
        whole, regions = _records(part, rotations, has_truth)
        with files.atomic_dir(stage / split) as tmp:
            whole.to_csv(tmp / "whole.csv", index=False)
            regions.to_csv(tmp / "regions.csv", index=False)
            arrays = {}
            for name, shape in shapes.items():
                kind = "whole" if name.startswith("whole_") else "regions"
                per_scan = shape[0] * (1 if kind == "whole" else shape[1])
                rows = len(part) * per_scan
                arrays[name] = np.lib.format.open_memmap(
                    tmp / f"{name}.npy", mode="w+", dtype=np.uint8, shape=(rows, *shape[1 if kind == "whole" else 2:])
                )
            for i, scan_id in enumerate(part["scan_id"]):
                data = read_projection(proj_dir, scan_id)
                for name, out in arrays.items():
                    n = len(out) // max(len(part), 1)
                    if name in data:
                        out[i * n : (i + 1) * n] = data[name].reshape(n, *out.shape[1:])
                    else:
                        out[i * n : (i + 1) * n] = 0  # a scan without sign truth
                bar.update()
            for out in arrays.values():
                out.flush()
            del arrays
        summary["splits"][split] = {
            "patients": int(part["patient_id"].nunique()), "scans": int(len(part)),
            "whole_images": int(len(whole)), "region_images": int(len(regions)),
            "scans_per_group": part["group"].value_counts().to_dict(),
        }
    bar.close()
    summary["shapes"] = {k: list(v[1:] if k.startswith("whole_") else v[2:]) for k, v in shapes.items()}
    summary["rotations"] = rotations.tolist()
    files.write_json(stage / DATASETS_RECORD, summary)  # last: marks the stage complete
    return stage


@contextmanager
def projection_variant(workdir: str | os.PathLike, n_jobs: int = 1, progress: bool = True, **changes):
    """Within the block, the cohort's projections and data sets with some projection parameters
    changed (e.g. ``statistic="weighted"``) are the current ones; afterwards the main run is again.

    The variant is projected (or found finished) and split with the main run's split fractions and
    seed, so its splits hold the same patients; models trained inside the block go to their own
    ``models`` folder. See :func:`sapsam_utils.stages.workdir.side_run`.

    Yields
    ------
    ProjectionParams
        The variant's parameters.
    """
    params = wd.stage_params(workdir, "projections")
    unknown = sorted(set(changes) - set(params))
    if unknown:
        raise ValueError(f"projection_variant: {unknown} are not projection parameters ({sorted(params)})")
    variant = ProjectionParams(**{**params, **changes})
    split = wd.stage_params(workdir, "datasets")
    with wd.side_run(workdir, ("projections", "datasets", "models")):
        preprocess_cohort(workdir, variant, n_jobs=n_jobs, progress=progress)
        build_datasets(workdir, tuple(split["fractions"]), split["seed"], progress=progress)
        yield variant


@dataclass
class SplitData:
    """One split of one data set, as :func:`load_split` returns it.

    Attributes
    ----------
    records : pandas.DataFrame
        One row per image (``whole.csv`` or ``regions.csv``).
    images : dict
        Axis name -> ``(N, H, W)`` (whole) or ``(N, H, W, C)`` (regions) array: uint8
        memory-mapped, or float32 in [0, 1] when loaded with ``as_float=True``.
    truth : dict
        Axis name -> ``(N, H, W, 4)`` truth maps (same dtype rule); empty when the data set has
        no truth or it was not asked for.
    """

    records: pd.DataFrame
    images: dict[str, np.ndarray]
    truth: dict[str, np.ndarray]


def load_split(
    workdir: str | os.PathLike, kind: str, split: str, axes=tuple(AXES), truth: bool = False, as_float: bool = False
) -> SplitData:
    """Load one split of the whole-scan (``kind="whole"``) or sub-region (``"regions"``) data set
    of the last ``datasets`` run in ``workdir``.

    Parameters
    ----------
    workdir : path-like
    kind : {"whole", "regions"}
    split : {"train", "val", "test"}
    axes : sequence of str
        Which projection axes to load (``axial``, ``coronal``, ``sagittal``).
    truth : bool
        Also load the truth maps (when the data set has them).
    as_float : bool
        Return float32 in [0, 1] (read into memory) instead of uint8 memory maps.

    Returns
    -------
    SplitData
    """
    if kind not in ("whole", "regions") or split not in SPLITS:
        raise ValueError(f"kind must be 'whole' or 'regions' and split one of {SPLITS}, got {kind!r}, {split!r}")
    _, stage = wd.current_stage(workdir, "datasets")
    folder = stage / split
    if not (stage / DATASETS_RECORD).is_file() or not folder.is_dir():
        raise FileNotFoundError(f"{folder}: the datasets stage is incomplete; rerun 03_projections")
    records = pd.read_csv(folder / f"{kind}.csv", dtype={"scan_id": str, "patient_id": str})

    def read(name):
        array = np.load(folder / f"{name}.npy", mmap_mode="r")
        if len(array) != len(records):
            raise ValueError(f"{folder}/{name}.npy has {len(array)} rows, {kind}.csv {len(records)}")
        return to_unit(array) if as_float else array

    images = {a: read(f"{kind}_{a}") for a in axes}
    truths = {}
    if truth and (folder / f"{kind}_truth_{axes[0]}.npy").is_file():
        truths = {a: read(f"{kind}_truth_{a}") for a in axes}
    return SplitData(records, images, truths)
