"""The whole book, once per test run: every notebook with the smoke profile, then the strict build.

The project tree (less ``.git``, ``.venv``, ``work/``, ``_build/`` and ``book/executed/``) is copied
into a temporary folder and the book is built there, so the test neither overwrites a developer's
own ``book/executed`` or ``_build`` nor touches a tracked file, while the build still sees every
stray file of the tree (caches, hidden folders) that could break a strict build. The notebooks
write into a temporary workdir.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sapsam_utils import runner
from sapsam_utils.paths import shared_ct_dir

NOT_COPIED = {".git", ".venv", "work", "_build"}


@pytest.fixture(scope="module")
def smoke_book(root, tmp_path_factory):
    if not shared_ct_dir().is_dir():
        pytest.skip(f"{shared_ct_dir()} is absent: the book's chapters show the public CT cases "
                    "(put ../shared beside the project or set SAPSAM_SHARED_CT)")
    tmp = tmp_path_factory.mktemp("smoke-book")
    copy = tmp / "project"
    copy.mkdir()
    for source in root.iterdir():
        if source.name in NOT_COPIED:
            continue
        if source.is_dir():
            shutil.copytree(source, copy / source.name, symlinks=True,
                            ignore=lambda folder, names: ["executed"] if Path(folder) == root / "book" else [])
        else:
            shutil.copy2(source, copy / source.name)
    # The kernel runs in the copy (papermill's cwd), so it imports the copy's sapsam_utils, whose
    # project root is the copy: give the copy the same neighbour as the project, ../shared.
    if (root.parent / "shared").is_dir():
        (tmp / "shared").symlink_to(root.parent / "shared")
    workdir, output = tmp / "work", tmp / "out"

    ran = subprocess.run([sys.executable, "-m", "sapsam_utils.runner", "--root", str(copy), "--profile", "smoke",
                          "--workdir", str(workdir)], capture_output=True, text=True, timeout=1200)
    assert ran.returncode == 0, f"runner failed:\n{ran.stdout}\n{ran.stderr}"
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    built = subprocess.run([str(jupyter_book), "build", str(copy), "-n", "-W", "--keep-going",
                            "--path-output", str(output)], capture_output=True, text=True, timeout=900)
    problems = [line for line in (built.stdout + built.stderr).splitlines() if "WARNING" in line or "ERROR" in line]
    assert built.returncode == 0, "book build failed (warnings are errors):\n" + "\n".join(problems or [built.stderr[-6000:]])
    return {"project": copy, "workdir": workdir, "html": output / "_build" / "html"}


def test_smoke_book_has_a_page_per_chapter_and_the_results(smoke_book, root):
    html = smoke_book["html"]
    assert (html / "index.html").is_file()
    for page in runner.toc_files(root / "_toc.yml"):
        assert (html / f"{page}.html").is_file(), f"no page for {page}"
    for stem in runner.toc_notebooks(root):
        results = json.loads((smoke_book["workdir"] / "results" / f"{stem}.json").read_text())
        assert results, f"{stem} wrote an empty results file"
        page = (html / "book" / "executed" / f"{stem}.html").read_text()
        assert "tag_injected-parameters" not in page, f"{stem}: the injected-parameters cell is shown"
        assert "profile <code class=\"docutils literal notranslate\"><span class=\"pre\">smoke</span></code>" in page


def test_smoke_book_pages_show_provenance_summary_and_figure(smoke_book):
    html = smoke_book["html"]
    reproducibility = (html / "book" / "reproducibility.html").read_text()
    assert "manifest sha256" in reproducibility and "papermill" in reproducibility
    summary = (html / "book" / "summary.html").read_text()
    assert "not yet reproduced" in summary and "Headline numbers" in summary
    intro = (html / "book" / "intro.html").read_text()
    assert "pipeline.png" in intro and "Fig. 1" in intro
