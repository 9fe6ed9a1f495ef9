"""The ``workdir``: every file name the stages hand each other, behind typed readers and writers.

Notebooks exchange data only through the workdir, and only through this module and the stage
drivers beside it: no chapter opens a workdir file by name. Layout (``work/<profile>`` by
default)::

    workdir/
      <stage>/<key>/stage.json        the parameters and upstream key that produced this folder
      <stage>/<key>/...               the stage's artifacts (see each stage module)
      <stage>/current.json            which <key> the last run of <stage> produced
      results/<notebook stem>.json    the flat numbers behind each chapter's tables

A stage (``scans``, ``masks``, ``projections``, ``datasets``, ``models``) names its folder by
:func:`stage_key`, a hash of its own parameters *and* of the key of the stage it reads from. New
parameters anywhere upstream therefore give new folders (stale artifacts are never reused), while
re-running with the same ones finds every finished artifact in place. Keys hash parameters only,
never module paths, so workdirs written before a code move keep loading.
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from ..core.files import atomic_file, jsonable, read_json, write_json
from ..core.results import flatten

#: A stage folder's record: its stage, key, upstream key and parameters.
STAGE_RECORD = "stage.json"
#: Per stage: the record of the run that is current.
CURRENT_RECORD = "current.json"
#: The scans stage's cohort table (the selected manifest rows, paths made absolute).
COHORT_TABLE = "cohort.csv"
#: A scan folder of the scans stage: its CT, and its references where the source has them.
SCAN_FILES = {"ct": "ct.nii.gz", "truth_lungs": "truth_lungs.nii.gz", "truth_signs": "truth_signs.nii.gz",
              "lesions": "lesions.nii.gz", "record": "scan.json"}
#: A scan folder of the masks stage.
MASK_FILES = {"conservative": "conservative.nii.gz", "refined": "refined.nii.gz", "record": "segmentation.json"}
#: A model folder of the models stage: written last, it marks the model finished.
MODEL_DONE = "done.json"
#: The chapters' numbers.
RESULTS_DIR = "results"


def stage_key(params: dict, upstream: str | None = None) -> str:
    """A short stable hash of a stage's parameters and of its upstream stage's key.

    Parameters
    ----------
    params : dict
        JSON-serialisable parameters (order of keys does not matter).
    upstream : str, optional
        Key of the stage whose artifacts this stage reads.

    Returns
    -------
    str
        12 hexadecimal characters.
    """
    text = json.dumps({"params": jsonable(params), "upstream": upstream}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def stage_dir(workdir: str | os.PathLike, stage: str, params: dict, upstream: str | None = None) -> Path:
    """Create (or find) the folder of a stage for these parameters and record it as current.

    Returns
    -------
    pathlib.Path
        ``workdir/<stage>/<key>``; its ``stage.json`` holds the parameters and upstream key.
    """
    key = stage_key(params, upstream)
    path = Path(workdir) / stage / key
    path.mkdir(parents=True, exist_ok=True)
    record = {"stage": stage, "key": key, "upstream": upstream, "params": jsonable(params)}
    write_json(path / STAGE_RECORD, record)
    write_json(Path(workdir) / stage / CURRENT_RECORD, record)
    return path


def current_stage(workdir: str | os.PathLike, stage: str) -> tuple[str, Path]:
    """The key and folder that the last run of ``stage`` produced.

    Raises
    ------
    FileNotFoundError
        When the stage has not been run in this workdir, naming the notebook order to follow.
    """
    record_path = Path(workdir) / stage / CURRENT_RECORD
    if not record_path.is_file():
        raise FileNotFoundError(
            f"{record_path}: stage '{stage}' has not been run in {workdir}; run the notebooks "
            "that produce it first (in _toc.yml order), with the same workdir"
        )
    key = json.loads(record_path.read_text(encoding="utf-8"))["key"]
    return key, Path(workdir) / stage / key


def stage_record(folder: str | os.PathLike) -> dict[str, Any]:
    """The record of a stage folder: ``stage``, ``key``, ``upstream`` and ``params``."""
    return read_json(Path(folder) / STAGE_RECORD)


def stage_params(workdir: str | os.PathLike, stage: str) -> dict[str, Any]:
    """The parameters of the current run of ``stage`` (as its ``stage.json`` holds them)."""
    return stage_record(current_stage(workdir, stage)[1])["params"]


def upstream_dir(folder: str | os.PathLike, stage: str) -> Path:
    """The folder of ``stage`` that the stage folder ``folder`` was computed from (its upstream)."""
    folder = Path(folder)
    return folder.parent.parent / stage / stage_record(folder)["upstream"]


@contextmanager
def side_run(workdir: str | os.PathLike, stages) -> Iterator[None]:
    """Run a variant of some stages without changing which of their runs is current.

    Inside the block, stages are written and found as usual (a variant's folders get their own
    keys and stay cached); on leaving it, even by an error, each stage's ``current.json`` is
    restored (or removed, if the stage had none), so later chapters read the main run.
    """
    records = {stage: Path(workdir) / stage / CURRENT_RECORD for stage in stages}
    saved = {stage: path.read_text(encoding="utf-8") if path.is_file() else None for stage, path in records.items()}
    try:
        yield
    finally:
        for stage, path in records.items():
            if saved[stage] is None:
                path.unlink(missing_ok=True)
            else:
                with atomic_file(path) as tmp:
                    tmp.write_text(saved[stage], encoding="utf-8")


# --- the scans stage's cohort table -------------------------------------------------------------


def cohort_path(scans_dir: str | os.PathLike) -> Path:
    """Where the scans stage ``scans_dir`` keeps its cohort table."""
    return Path(scans_dir) / COHORT_TABLE


def read_cohort(scans_dir: str | os.PathLike) -> pd.DataFrame:
    """The cohort table of a scans-stage folder: one row per scan, every column text.

    Raises
    ------
    FileNotFoundError
        The folder holds no cohort table (named), e.g. the scans stage was never run there.
    """
    path = cohort_path(scans_dir)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no cohort table in the scans stage; rerun 01_cohort")
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def scan_file(scans_dir: str | os.PathLike, scan_id: str, kind: str) -> Path:
    """The path of one file of a scan's folder in the scans stage (``kind`` of :data:`SCAN_FILES`)."""
    return Path(scans_dir) / scan_id / SCAN_FILES[kind]


def mask_file(masks_dir: str | os.PathLike, scan_id: str, kind: str) -> Path:
    """The path of one file of a scan's folder in the masks stage (``kind`` of :data:`MASK_FILES`)."""
    return Path(masks_dir) / scan_id / MASK_FILES[kind]


# --- the models stage ---------------------------------------------------------------------------


def model_record(folder: str | os.PathLike) -> dict[str, Any]:
    """The record a finished model folder wrote last (task, axis, kind, label, ...).

    Raises
    ------
    FileNotFoundError
        The model is not finished (or never started) there, naming the folder.
    """
    path = Path(folder) / MODEL_DONE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the model in {Path(folder)} is not finished; rerun its chapter")
    return read_json(path)


def model_done(folder: str | os.PathLike) -> bool:
    """Whether the model folder holds a finished model."""
    return (Path(folder) / MODEL_DONE).is_file()


# --- the chapters' numbers ----------------------------------------------------------------------


def results_path(workdir: str | os.PathLike, notebook_stem: str) -> Path:
    """Where a chapter's numbers go: ``workdir/results/<notebook_stem>.json``."""
    return Path(workdir) / RESULTS_DIR / f"{notebook_stem}.json"


def write_results(workdir: str | os.PathLike, notebook_stem: str, metrics: dict[str, Any]) -> Path:
    """Write a chapter's numbers (a flat mapping name -> scalar) to :func:`results_path`.

    It replaces what the file held, so no number from an earlier run with other parameters
    survives; a missing number (None, NaN) is written as ``null``. An interval
    (:class:`sapsam_utils.core.results.Estimate`) is written flat, as the summary reads it:
    ``name``, ``name_ci_low``, ``name_ci_high``.
    """
    flat = flatten(metrics)
    for name, value in flat.items():
        if isinstance(value, (dict, list, tuple)):
            raise TypeError(f"results metric '{name}' must be a scalar, got {type(value).__name__}")
    return write_json(results_path(workdir, notebook_stem), flat)


def read_results(workdir: str | os.PathLike, notebook_stem: str) -> dict[str, Any]:
    """A chapter's numbers, as :func:`write_results` wrote them (missing values as None)."""
    return read_json(results_path(workdir, notebook_stem))
