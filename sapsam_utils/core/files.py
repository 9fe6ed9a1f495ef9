"""Files written whole or not at all, and JSON that stays JSON.

Every artifact of the study is written through :func:`atomic_dir` or :func:`atomic_file`: into a
temporary sibling first, renamed into place on success, so a file or folder that exists is
complete and an interrupted run leaves nothing half-written. :func:`write_json` writes a missing
number (NaN, infinity) as ``null``: bare ``NaN`` is not JSON, and other readers refuse it.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types: dict keys sorted and made strings, numpy scalars unwrapped,
    paths as strings, and NaN or infinite floats as ``None``."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


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
    """Write ``obj`` as JSON atomically (keys sorted; NaN and infinity as ``null``)."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(jsonable(obj), indent=2, sort_keys=True, allow_nan=False) + "\n")
    return Path(path)


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; a missing one raises :class:`FileNotFoundError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    return json.loads(path.read_text(encoding="utf-8"))
