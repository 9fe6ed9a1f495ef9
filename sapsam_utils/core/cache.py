"""The ``workdir``: how notebooks hand artifacts to each other, cached by what produced them.

Layout (``workdir`` is ``work/<profile>`` by default)::

    workdir/
      <stage>/<key>/stage.json        parameters and upstream key that produced this folder
      <stage>/<key>/<scan_id>/...     per-scan artifacts (NIfTI volumes, arrays)
      <stage>/current.json            which <key> the last run of <stage> produced
      results/<notebook stem>.json    flat metrics behind each notebook's tables

A stage (``scans``, ``masks``, ``projections``, ``datasets``, ``models`` ...) names its folder
by :func:`stage_key`, a hash of its own parameters *and* of the key of the stage it reads from.
New parameters anywhere upstream therefore give new folders (stale artifacts are never reused),
while re-running with the same ones finds every finished artifact in place. Per-scan artifacts
are written through :func:`atomic_dir`, so an interrupted run leaves no half-written scan (and
the temporary folder of a killed one is removed when that scan is next written).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


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
    text = json.dumps({"params": _jsonable(params), "upstream": upstream}, sort_keys=True)
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
    record = {"stage": stage, "key": key, "upstream": upstream, "params": _jsonable(params)}
    write_json(path / "stage.json", record)
    write_json(Path(workdir) / stage / "current.json", record)
    return path


def current_stage(workdir: str | os.PathLike, stage: str) -> tuple[str, Path]:
    """The key and folder that the last run of ``stage`` produced.

    Raises
    ------
    FileNotFoundError
        When the stage has not been run in this workdir, naming the notebook order to follow.
    """
    record_path = Path(workdir) / stage / "current.json"
    if not record_path.is_file():
        raise FileNotFoundError(
            f"{record_path}: stage '{stage}' has not been run in {workdir}; run the notebooks "
            "that produce it first (in _toc.yml order), with the same workdir"
        )
    record = json.loads(record_path.read_text())
    return record["key"], Path(workdir) / stage / record["key"]


@contextmanager
def side_run(workdir: str | os.PathLike, stages) -> Iterator[None]:
    """Run a variant of some stages without changing which of their runs is current.

    Inside the block, stages are written and found as usual (a variant's folders get their own
    keys and stay cached); on leaving it, even by an error, each stage's ``current.json`` is
    restored (or removed, if the stage had none), so later chapters read the main run.
    """
    records = {stage: Path(workdir) / stage / "current.json" for stage in stages}
    saved = {stage: path.read_text() if path.is_file() else None for stage, path in records.items()}
    try:
        yield
    finally:
        for stage, path in records.items():
            if saved[stage] is None:
                path.unlink(missing_ok=True)
            else:
                with atomic_file(path) as tmp:
                    tmp.write_text(saved[stage])


def _remove_stale(final: Path, suffix: str = "") -> None:
    """Remove the temporary siblings that an earlier, killed write of ``final`` left behind.

    They are named ``.tmp-<final name>-<random>`` (plus ``suffix``), the random part of
    :mod:`tempfile` holding no ``-`` or ``.``, so the temporaries of another name (``S1-b`` beside
    ``S1``) never match.
    """
    stale = re.compile(rf"^\.tmp-{re.escape(final.name)}-[a-z0-9_]+{re.escape(suffix)}$")
    for entry in final.parent.iterdir():
        if stale.match(entry.name):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


@contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Write a folder's contents into a temporary sibling and rename it into place on success.

    On an error (or an interrupt) the temporary folder is removed and ``final`` is untouched,
    so a folder that exists is always complete. A process killed outright (``SIGKILL``, a power
    cut) cannot clean up: the temporary folders it left for ``final`` are removed here, when the
    folder is next written.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def atomic_file(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path to write to; rename it onto ``final`` on success.

    The temporary name keeps ``final``'s suffixes (writers pick the format from them). On an error
    it is removed and ``final`` is untouched; the file gets the usual permissions (umask), not the
    owner-only ones of :func:`tempfile.mkstemp`. Temporary files that a killed process left for
    ``final`` are removed first (as in :func:`atomic_dir`).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(final.suffixes)
    _remove_stale(final, suffix)
    fd, name = tempfile.mkstemp(prefix=f".tmp-{final.name}-", suffix=suffix, dir=final.parent)
    os.close(fd)
    tmp = Path(name)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write JSON atomically (temporary file, then rename)."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(_jsonable(obj), indent=2, sort_keys=True) + "\n")
    return Path(path)


def write_results(workdir: str | os.PathLike, notebook_stem: str, metrics: dict[str, Any]) -> Path:
    """Write a notebook's numbers to ``workdir/results/<notebook_stem>.json``.

    Parameters
    ----------
    metrics : dict
        A flat mapping of metric name -> number, string or bool (no nesting). It replaces what
        the file held, so no number from an earlier run with other parameters survives.
    """
    for name, value in metrics.items():
        if isinstance(value, (dict, list, tuple)):
            raise TypeError(f"results metric '{name}' must be a scalar, got {type(value).__name__}")
    return write_json(Path(workdir) / "results" / f"{notebook_stem}.json", metrics)


def read_results(workdir: str | os.PathLike, notebook_stem: str) -> dict[str, Any]:
    """Read ``workdir/results/<notebook_stem>.json``."""
    return json.loads((Path(workdir) / "results" / f"{notebook_stem}.json").read_text())
