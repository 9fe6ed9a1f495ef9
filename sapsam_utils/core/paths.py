"""Where the project, its inputs and the shared public CT cases are.

The book reads the public CT cases from its ``public_ct_root`` setting
(:mod:`sapsam_utils.data.public_ct`); :func:`shared_ct_dir` is where the tests and benchmarks look.

Notebooks run with papermill from the project root, or from ``notebooks/`` in JupyterLab;
:func:`project_path` makes the same relative parameter (``data_manifest.csv``,
``work/default``) mean the same file in both cases.
"""

from __future__ import annotations

import os
from pathlib import Path

_MARKER = "_toc.yml"


def project_root() -> Path:
    """The project's root folder (the one holding ``_toc.yml``)."""
    here = Path(__file__).resolve().parent
    for folder in (here, *here.parents):
        if (folder / _MARKER).is_file():
            return folder
    raise FileNotFoundError(f"no {_MARKER} above {here}: is sapsam_utils inside the project?")


def project_path(path: str | os.PathLike) -> Path:
    """An absolute path: ``path`` itself when absolute, else relative to the project root."""
    path = Path(path)
    return path if path.is_absolute() else project_root() / path


def shared_ct_dir() -> Path:
    """The public CT cases for tests and benchmarks: ``$SAPSAM_SHARED_CT``, else ``../shared/ct`` beside the project."""
    env = os.environ.get("SAPSAM_SHARED_CT")
    return Path(env) if env else project_root().parent / "shared" / "ct"
