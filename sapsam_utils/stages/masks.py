"""The ``masks`` stage: both lung masks of every scan of the ``scans`` stage, and their scores.

Files it owns (names in :mod:`sapsam_utils.stages.workdir`), in ``workdir/masks/<key>/``
(upstream: the ``scans`` key; parameters: :func:`sapsam_utils.imaging.segmentation.segmentation_params`):

``<scan_id>/`` (:data:`~sapsam_utils.stages.workdir.MASK_FILES`)
    ``conservative.nii.gz`` and ``refined.nii.gz`` (label volumes on the scan's grid: 0
    background, 1 right lung, 2 left lung) and ``segmentation.json`` (what was found: trachea,
    airway volume, split depth, warnings, the time of each step), written atomically.

It reads the scans stage's cohort table and CTs, and, to score the masks, the references a scan
folder holds (``truth_lungs``, ``truth_signs``, ``lesions`` of
:data:`~sapsam_utils.stages.workdir.SCAN_FILES`). The segmentation itself, on volumes, is
:mod:`sapsam_utils.imaging.segmentation`.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import pandas as pd
import SimpleITK as sitk
from tqdm.auto import tqdm

from ..core.files import atomic_dir, read_json, write_json
from ..core.parallel import map_jobs
from ..core.volume import Volume, read_volume, write_volume
from ..imaging.metrics import volume_ml
from ..imaging.segmentation import lung_masks, refined_mask, score_mask, segmentation_params
from .workdir import MASK_FILES, cohort_path, mask_file, read_cohort, scan_file

#: The two masks of a scan, in the order they are scored.
MASKS = ("conservative", "refined")


def _segment_scan(scan_id: str, ct_path: Path, final: Path, params: dict, threads: int | None = None) -> dict:
    """Segment one scan of the scans stage into ``final`` (written atomically); its record.

    ``threads``: SimpleITK threads of a worker process (the cores shared between the workers).
    """
    if threads is not None:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    t0 = time.perf_counter()
    try:
        ct = read_volume(ct_path)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            conservative, refined, info = lung_masks(ct, **params)
    except Exception as err:
        raise RuntimeError(f"scan {scan_id} ({ct_path}): segmentation failed: {err}") from err
    record = {
        "scan_id": scan_id,
        "seconds": time.perf_counter() - t0,
        "warnings": sorted({str(w.message) for w in caught}),
        **{k: v for k, v in info.items() if k != "seconds"},
        "step_seconds": info["seconds"],
        **{f"{name}_ml": volume_ml(vol) for name, vol in (("conservative", conservative), ("refined", refined))},
    }
    try:
        with atomic_dir(final) as tmp:
            write_volume(conservative, tmp / MASK_FILES["conservative"])
            write_volume(refined, tmp / MASK_FILES["refined"])
            write_json(tmp / MASK_FILES["record"], record)
    except OSError as err:  # e.g. a full disk: nothing of the scan is left, a rerun resumes
        raise RuntimeError(f"scan {scan_id} ({ct_path}): writing its masks to {final} failed: {err}") from err
    return record


def _scan_ids(scans_dir: Path) -> list[str]:
    return [str(s) for s in read_cohort(scans_dir)["scan_id"]]


def segment_cohort(
    scans_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    params: dict | None = None,
    n_jobs: int = 1,
    progress: bool = True,
    scheduler: str = "processes",
) -> pd.DataFrame:
    """Build the ``masks`` stage: both lung masks of every scan of the ``scans`` stage.

    Each scan's folder ``out_dir/<scan_id>/`` is written atomically, so a folder that exists is
    complete; those are skipped, and an interrupted run resumes where it stopped.

    Parameters
    ----------
    scans_dir : path-like
        The scans stage folder (its cohort table and each scan's CT).
    out_dir : path-like
        The masks stage folder.
    params : dict, optional
        Segmentation parameters (:func:`~sapsam_utils.imaging.segmentation.segmentation_params`).
    n_jobs : int
        Parallel processes.
    scheduler : str
        Where the segmentation jobs run (as in :func:`sapsam_utils.stages.scans.build_scans`).
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    pandas.DataFrame
        One row per scan (the records of ``segmentation.json``) with ``skipped`` (already there).

    Raises
    ------
    FileNotFoundError
        No cohort table, or a scan's CT is missing (named).
    RuntimeError
        A scan failed, or writing its masks failed (named, with the reason); finished scans stay.
        A worker process that dies raises :class:`sapsam_utils.core.parallel.WorkerDied` (a
        RuntimeError) naming the scans it may have been segmenting.
    """
    scans_dir, out_dir = Path(scans_dir), Path(out_dir)
    params = segmentation_params(**(params or {}))
    if n_jobs < 1:
        raise ValueError(f"n_jobs must be >= 1, got {n_jobs}")
    scan_ids = _scan_ids(scans_dir)
    todo, records = [], {}
    for scan_id in scan_ids:
        ct_path = scan_file(scans_dir, scan_id, "ct")
        if not ct_path.is_file():
            raise FileNotFoundError(f"{ct_path}: scan {scan_id} of {cohort_path(scans_dir)} has no CT")
        record_path = mask_file(out_dir, scan_id, "record")
        if record_path.is_file():
            records[scan_id] = {**read_json(record_path), "skipped": True}
        else:
            todo.append((scan_id, ct_path, out_dir / scan_id))
    # Each local worker gets its share of the cores for SimpleITK's threads (Dask workers get
    # their machine's share from the engine).
    threads = max(1, (os.cpu_count() or 1) // n_jobs) if scheduler == "processes" else None
    jobs = [(*job, params, threads) for job in todo]
    for job, record in map_jobs(_segment_scan, jobs, n_jobs, desc="lung masks", progress=progress,
                                scheduler=scheduler):
        records[job[0]] = {**record, "skipped": False}
    return pd.DataFrame([records[s] for s in scan_ids])


def _scan_with_references(scans_dir: Path, scan_id: str) -> tuple[Volume, dict]:
    """A scan's CT and the references its folder holds, as keyword arguments of ``score_mask``."""
    refs = {}
    for key, kind in (("truth_lungs", "truth_lungs"), ("signs", "truth_signs"), ("lesions", "lesions")):
        path = scan_file(scans_dir, scan_id, kind)
        if path.is_file():
            refs[key] = read_volume(path)
    return read_volume(scan_file(scans_dir, scan_id, "ct")), refs


def score_cohort(scans_dir: str | os.PathLike, masks_dir: str | os.PathLike) -> pd.DataFrame:
    """Score both masks of every scan against the references its scans-stage folder holds.

    The lung truth (phantom truth, or the manifest's ``lung_mask``), the sign truth (phantoms)
    and the lesion labels (the manifest's ``lesion_mask``) are used when present.

    Returns
    -------
    pandas.DataFrame
        One row per scan and mask (``scan_id``, ``mask``, then
        :func:`~sapsam_utils.imaging.segmentation.score_mask`'s scores).
    """
    scans_dir, masks_dir = Path(scans_dir), Path(masks_dir)
    rows = []
    for scan_id in _scan_ids(scans_dir):
        ct, refs = _scan_with_references(scans_dir, scan_id)
        for mask_name in MASKS:
            mask = read_volume(mask_file(masks_dir, scan_id, mask_name))
            rows.append({"scan_id": scan_id, "mask": mask_name, **score_mask(mask, ct, **refs)})
    return pd.DataFrame(rows)


def score_refined_variant(scans_dir: str | os.PathLike, scan_ids, name: str, progress: bool = True,
                          **params) -> pd.DataFrame:
    """Segment scans of the ``scans`` stage again with other refined-mask parameters and score them.

    For ablations: the rows have the columns of :func:`score_cohort`, with ``mask`` = ``name``.

    Parameters
    ----------
    scans_dir : path-like
        The ``scans`` stage folder.
    scan_ids : iterable of str
        The scans to segment.
    name : str
        The ``mask`` column of the rows (e.g. ``"refined, paper's steps only"``).
    progress : bool
        Show a progress bar.
    **params
        Segmentation parameters (:func:`~sapsam_utils.imaging.segmentation.segmentation_params`).
    """
    rows = []
    for scan_id in tqdm(list(scan_ids), desc=name, unit="scan", disable=not progress):
        ct, refs = _scan_with_references(Path(scans_dir), scan_id)
        rows.append({"scan_id": scan_id, "mask": name, **score_mask(refined_mask(ct, **params), ct, **refs)})
    return pd.DataFrame(rows)


def runs_summary(runs: pd.DataFrame) -> tuple[pd.Series, dict]:
    """What :func:`segment_cohort` found, for the book, and its numbers.

    Returns
    -------
    summary : pandas.Series
        Scans, trachea found, airway removed, touching lungs split, scans with a warning, both
        masks' volumes in litres (mean, min-max) and the seconds per scan, as text.
    numbers : dict
        ``scans``, ``scans_segmented_now``, ``seconds_per_scan_mean``, ``trachea_found_share``,
        ``scans_with_warnings``.
    """
    def litres(column):
        return f"{runs[column].mean() / 1000:.2f} ({runs[column].min() / 1000:.2f}-{runs[column].max() / 1000:.2f})"

    warned = runs["warnings"].map(len) > 0
    summary = pd.Series({
        "scans": len(runs),
        "trachea found and removed": int(runs["trachea_found"].sum()),
        "airway removed, ml: mean (min-max)":
            f"{runs['airway_ml'].mean():.0f} ({runs['airway_ml'].min():.0f}-{runs['airway_ml'].max():.0f})",
        "touching lungs split": int(runs["split_depth_mm"].notna().sum()),
        "scans with a warning": int(warned.sum()),
        "conservative lungs, L: mean (min-max)": litres("conservative_ml"),
        "refined lungs, L: mean (min-max)": litres("refined_ml"),
        "seconds per scan (both masks): mean, max": f"{runs['seconds'].mean():.2f}, {runs['seconds'].max():.2f}",
    }, name="masks stage")
    numbers = {"scans": len(runs), "scans_segmented_now": int((~runs["skipped"]).sum()),
               "seconds_per_scan_mean": float(runs["seconds"].mean()),
               "trachea_found_share": float(runs["trachea_found"].mean()), "scans_with_warnings": int(warned.sum())}
    return summary, numbers
