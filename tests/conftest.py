"""Shared fixtures: the project root, and a factory of tiny stand-alone book projects.

A tiny project (its own ``_toc.yml``, ``notebooks/`` and ``notebooks/params/``) lets the runner's
tests execute real notebooks through papermill in ``tmp_path``, without touching the study's
``book/executed`` or ``work/``.
"""

from __future__ import annotations

import locale
from pathlib import Path

import nbformat
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from sapsam_utils.core.paths import project_root

PARAMETERS_CELL = (
    'manifest = "data_manifest.csv"  # cohort manifest\n'
    'workdir = "work/default"  # artifacts and results\n'
    "seed = 0  # random seed"
)


@pytest.fixture(autouse=True)
def restore_locale():
    """Give every test the process's locale back: SimpleITK's DICOM writer (GDCM) sets the C locale
    to "C", after which Python would read text files as ASCII in every later test."""
    saved = locale.setlocale(locale.LC_ALL)
    yield
    locale.setlocale(locale.LC_ALL, saved)


@pytest.fixture(scope="session")
def root() -> Path:
    """The study's project root."""
    return project_root()


def write_notebook(path: Path, title: str, body: list[str]) -> Path:
    """A notebook with a title, the common ``parameters`` cell, then one code cell per ``body`` item."""
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = new_code_cell(PARAMETERS_CELL)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [new_markdown_cell(f"# {title}"), params, *(new_code_cell(src) for src in body)]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


@pytest.fixture
def make_project(tmp_path):
    """Build a tiny book project: ``make_project({stem: [cell source, ...]}, profile_blocks)``.

    Every notebook gets the common parameters; its cells may use ``workdir`` and ``seed``. The
    ``smoke`` profile sends ``workdir = <tmp>/work`` to all of them, plus ``profile_blocks``.
    Returns the project root.
    """
    def make(notebooks: dict[str, list[str]], blocks: dict[str, dict] | None = None) -> Path:
        project = tmp_path / "project"
        toc = {"format": "jb-book", "root": "book/intro",
               "chapters": [{"file": f"book/executed/{stem}"} for stem in notebooks]}
        project.mkdir()
        (project / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False))
        for stem, body in notebooks.items():
            write_notebook(project / "notebooks" / f"{stem}.ipynb", stem, body)
        profile = {"common": {"manifest": "data_manifest.csv", "workdir": str(tmp_path / "work"), "seed": 3}}
        profile.update({stem: {} for stem in notebooks})
        profile.update(blocks or {})
        (project / "notebooks" / "params").mkdir(parents=True, exist_ok=True)
        (project / "notebooks" / "params" / "smoke.yaml").write_text(yaml.safe_dump(profile))
        return project

    return make


def results_cell(stem: str, metrics: dict) -> str:
    """Source of a cell that writes ``metrics`` as the notebook's results."""
    return ("from sapsam_utils.stages.workdir import write_results\n"
            f"write_results(workdir, {stem!r}, {metrics!r})")


# --- running the study's own notebooks in a copy of the project -------------------------------

#: What a copy of the project leaves out: version control, the environment, generated outputs.
NOT_COPIED = {".git", ".venv", "work", "_build"}


def copy_project(root: Path, dest: Path) -> Path:
    """Copy the project tree into ``dest`` (less :data:`NOT_COPIED` and ``book/executed``).

    The runner and ``jupyter-book`` then write their outputs (``book/executed``, ``_build``) into
    the copy, never into the developer's tree.
    """
    import shutil

    dest.mkdir(parents=True)
    for source in root.iterdir():
        if source.name in NOT_COPIED:
            continue
        if source.is_dir():
            shutil.copytree(source, dest / source.name, symlinks=True,
                            ignore=lambda folder, names: ["executed"] if Path(folder) == root / "book" else [])
        else:
            shutil.copy2(source, dest / source.name)
    return dest


def run_runner(project: Path, profile: str, workdir: Path, *options: str, timeout: int = 1200):
    """``python -m sapsam_utils.report.runner --root project --profile profile --workdir workdir [options]``.

    Returns the finished process (stdout and stderr captured as text); fails the test when the
    runner fails.
    """
    import subprocess
    import sys

    ran = subprocess.run([sys.executable, "-m", "sapsam_utils.report.runner", "--root", str(project), "--profile", profile,
                          "--workdir", str(workdir), *options], capture_output=True, text=True, timeout=timeout)
    assert ran.returncode == 0, f"runner failed:\n{ran.stdout}\n{ran.stderr}"
    return ran
