"""The ``scans`` stage: the selected manifest rows, materialised as CT volumes with their references.

Files it owns (names in :mod:`sapsam_utils.stages.workdir`), in ``workdir/scans/<key>/``
(parameters: :func:`scans_stage_params`, no upstream):

``cohort.csv`` (:data:`~sapsam_utils.stages.workdir.COHORT_TABLE`)
    The selected manifest rows, file paths made absolute (read it with
    :func:`~sapsam_utils.stages.workdir.read_cohort`).
``<scan_id>/`` (:data:`~sapsam_utils.stages.workdir.SCAN_FILES`)
    ``ct.nii.gz`` (int16 HU, LPS), ``truth_lungs.nii.gz`` (phantom truth, or the manifest's
    ``lung_mask``), ``truth_signs.nii.gz`` (phantoms only), ``lesions.nii.gz`` (the manifest's
    ``lesion_mask``) and ``scan.json`` (the scan's record, written last).

Each scan folder is written through :func:`sapsam_utils.core.files.atomic_dir`, so a scan folder
that exists is complete: a rerun skips it and an interrupted run resumes.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.files import atomic_dir, read_json, write_json
from ..core.parallel import map_jobs
from ..core.regions import LABEL_COLUMNS, LUNG_LEFT, LUNG_RIGHT
from ..core.volume import Volume, read_volume, write_volume
from ..data.loading import load_label, load_source
from ..data.manifest import OPTIONAL_COLUMNS, PHANTOM_PREFIX, normalise, phantom_seeds, resolve_path, source_kind, write_manifest
from ..synthetic.phantom import make_phantom
from .workdir import SCAN_FILES, cohort_path, scan_file


def scans_stage_params(selected: pd.DataFrame, phantom_shape, phantom_spacing, difficulty: float) -> dict:
    """The parameters that key the ``scans`` stage: the selected rows (hashed) and the phantom grid."""
    text = normalise(selected).to_csv(index=False, lineterminator="\n")
    return {
        "rows_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "n_scans": int(len(selected)),
        "phantom_shape": [int(n) for n in phantom_shape],
        "phantom_spacing": [float(s) for s in phantom_spacing],
        "difficulty": float(difficulty),
    }


class ScanBuildError(RuntimeError):
    """A scan that could not be built; the message names its scan_id and source."""


def build_scan(row: dict, manifest_dir: str | os.PathLike, scan_dir: str | os.PathLike,
               phantom_shape=(216, 256, 256), phantom_spacing=(1.5, 1.4, 1.4), difficulty: float = 1.0) -> dict:
    """Materialise one manifest row into ``scan_dir`` (written atomically; see :func:`build_scans`).

    Returns
    -------
    dict
        The ``scan.json`` record.
    """
    scan_dir = Path(scan_dir)
    try:
        kind = source_kind(row["source"], manifest_dir)
        volumes: dict[str, Volume] = {}
        record = {"scan_id": row["scan_id"], "patient_id": row["patient_id"], "kind": kind}
        if kind == "phantom":
            labels = {c: int(row[c]) for c in LABEL_COLUMNS}
            anatomy_seed, seed = phantom_seeds(row["source"])
            phantom = make_phantom(labels, seed, tuple(phantom_shape), tuple(phantom_spacing), difficulty,
                                   anatomy_seed=anatomy_seed)
            if phantom.labels != labels:
                wrong = [c for c in LABEL_COLUMNS if phantom.labels[c] != labels[c]]
                raise ValueError(f"the phantom's truth disagrees with the manifest labels: {', '.join(wrong)}")
            volumes = {"ct": phantom.ct, "truth_lungs": phantom.lungs, "truth_signs": phantom.signs}
            record["phantom"] = {"anatomy_seed": anatomy_seed, "seed": seed, "difficulty": float(difficulty),
                                 "details": phantom.details}
        else:
            volumes["ct"] = load_source(row["source"], manifest_dir)
        for column, name in (("lung_mask", "truth_lungs"), ("lesion_mask", "lesions")):
            if str(row.get(column, "") or "").strip():
                volumes[name] = load_label(row[column], manifest_dir, volumes["ct"])
        if "truth_lungs" in volumes and not set(np.unique(volumes["truth_lungs"].array)) <= {0, LUNG_RIGHT, LUNG_LEFT}:
            raise ValueError(f"lung_mask {row['lung_mask']}: values must be 0, {LUNG_RIGHT} (right) or {LUNG_LEFT} (left), "
                             f"found {sorted(set(np.unique(volumes['truth_lungs'].array).tolist()))}")
        ct = volumes["ct"]
        record.update(shape=list(ct.array.shape), spacing=list(ct.spacing), origin=list(ct.origin),
                      files=sorted(SCAN_FILES[name] for name in volumes))
        with atomic_dir(scan_dir) as tmp:
            for name, volume in volumes.items():
                write_volume(volume, tmp / SCAN_FILES[name])
            write_json(tmp / SCAN_FILES["record"], record)  # last: its presence marks a complete scan
        return record
    except Exception as err:
        raise ScanBuildError(f"scan {row['scan_id']} (source {row['source']}): {err}") from err


def _absolute_paths(selected: pd.DataFrame, manifest_dir: Path) -> pd.DataFrame:
    out = normalise(selected)
    for column in ("source", *OPTIONAL_COLUMNS):
        out[column] = [
            v if (not v or v.startswith(PHANTOM_PREFIX)) else str(resolve_path(v, manifest_dir).resolve())
            for v in out[column]
        ]
    return out


def _job_scan_id(job: tuple) -> str:
    return job[0]["scan_id"]


def build_scans(manifest: pd.DataFrame, manifest_dir: str | os.PathLike, out_dir: str | os.PathLike,
                phantom_shape=(216, 256, 256), phantom_spacing=(1.5, 1.4, 1.4), difficulty: float = 1.0,
                n_jobs: int = 1, progress: bool = True, scheduler: str = "processes") -> pd.DataFrame:
    """Materialise the selected manifest rows as the ``scans`` stage.

    Parameters
    ----------
    manifest : pandas.DataFrame
        The selected rows of a validated manifest.
    manifest_dir : path-like
        The manifest's folder (relative paths are relative to it).
    out_dir : path-like
        The stage folder (:func:`sapsam_utils.stages.workdir.stage_dir`).
    phantom_shape, phantom_spacing, difficulty
        Grid and difficulty of the phantoms (:func:`sapsam_utils.synthetic.phantom.make_phantom`).
    n_jobs : int
        Worker processes (1: build in this process).
    progress : bool
        Show a progress bar.
    scheduler : str
        Engine of the per-scan jobs: ``"processes"``, ``"dask"`` or a Dask scheduler's address
        (:func:`sapsam_utils.core.parallel.map_jobs`).

    Returns
    -------
    pandas.DataFrame
        One row per scan: ``scan_id``, ``kind``, ``shape``, ``spacing``, ``built`` (False when it was
        already complete and skipped).

    Raises
    ------
    ScanBuildError
        For the first scan that fails, naming its scan_id and source; finished scans are kept.
    sapsam_utils.core.parallel.WorkerDied
        When a worker process dies, naming the scans it may have been building.
    """
    out_dir = Path(out_dir)
    manifest_dir = Path(manifest_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cohort = _absolute_paths(manifest, manifest_dir)
    write_manifest(cohort, cohort_path(out_dir))
    records, todo = {}, []
    for row in cohort.to_dict("records"):
        record_path = out_dir / row["scan_id"] / SCAN_FILES["record"]
        if record_path.is_file():
            records[row["scan_id"]] = (read_json(record_path), False)
        else:
            todo.append(row)
    grid = (tuple(phantom_shape), tuple(phantom_spacing), difficulty)
    jobs = [(row, manifest_dir, out_dir / row["scan_id"], *grid) for row in todo]
    for job, record in map_jobs(build_scan, jobs, n_jobs, desc="scans", progress=progress,
                                name=_job_scan_id, scheduler=scheduler):
        records[job[0]["scan_id"]] = (record, True)
    return pd.DataFrame(
        [{"scan_id": sid, "kind": rec["kind"], "shape": tuple(rec["shape"]), "spacing": tuple(rec["spacing"]), "built": built}
         for sid, (rec, built) in ((s, records[s]) for s in cohort["scan_id"])]
    )


def read_scan(scans_dir: str | os.PathLike, scan_id: str) -> dict[str, Volume]:
    """The volumes of one scan folder of the scans stage, by kind (``ct`` and whichever of
    ``truth_lungs``, ``truth_signs``, ``lesions`` it holds).

    Raises
    ------
    FileNotFoundError
        The scan has no CT there (named).
    """
    ct_path = scan_file(scans_dir, scan_id, "ct")
    if not ct_path.is_file():
        raise FileNotFoundError(f"{ct_path}: scan {scan_id} has no CT in the scans stage; rerun 01_cohort")
    kinds = [k for k in SCAN_FILES if k != "record" and scan_file(scans_dir, scan_id, k).is_file()]
    return {kind: read_volume(scan_file(scans_dir, scan_id, kind)) for kind in kinds}
