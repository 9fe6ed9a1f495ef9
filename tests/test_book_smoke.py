"""The whole book: every notebook with the smoke profile, then the strict build; twice.

1. With the public CT cases (``../shared/ct`` or ``$SAPSAM_SHARED_CT``; skipped without them).
2. As a fresh clone builds it, with ``public_ct_root`` pointing at an empty folder: the build must
   succeed, the chapters must say that the public cases were not found, and the summary must mark
   their numbers "not measured". When build 1 ran, build 2 starts from a copy of its workdir, so
   the cached scans, masks and projections are reused and only the notebooks run again.

The project tree (less ``.git``, ``.venv``, ``work/``, ``_build/`` and ``book/executed/``) is copied
into a temporary folder and the book is built there, so the test neither overwrites a developer's
own ``book/executed`` or ``_build`` nor touches a tracked file, while the build still sees every
stray file of the tree (caches, hidden folders) that could break a strict build. The notebooks
write into a temporary workdir.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from sapsam_utils import runner
from sapsam_utils.paths import shared_ct_dir

NOT_COPIED = {".git", ".venv", "work", "_build"}


def build_book(root: Path, tmp: Path, public_ct_root: Path, workdir_from: Path | None = None) -> dict:
    """Copy the project into ``tmp``, run the smoke profile with this ``public_ct_root``, build the book."""
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
    workdir, output = tmp / "work", tmp / "out"
    if workdir_from is not None:
        shutil.copytree(workdir_from, workdir, symlinks=True)

    ran = subprocess.run([sys.executable, "-m", "sapsam_utils.runner", "--root", str(copy), "--profile", "smoke",
                          "--workdir", str(workdir), "--public-ct-root", str(public_ct_root)],
                         capture_output=True, text=True, timeout=1200)
    assert ran.returncode == 0, f"runner failed:\n{ran.stdout}\n{ran.stderr}"
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    built = subprocess.run([str(jupyter_book), "build", str(copy), "-n", "-W", "--keep-going",
                            "--path-output", str(output)], capture_output=True, text=True, timeout=900)
    problems = [line for line in (built.stdout + built.stderr).splitlines() if "WARNING" in line or "ERROR" in line]
    assert built.returncode == 0, "book build failed (warnings are errors):\n" + "\n".join(problems or [built.stderr[-6000:]])
    return {"project": copy, "workdir": workdir, "html": output / "_build" / "html"}


@pytest.fixture(scope="module")
def smoke_book(root, tmp_path_factory):
    if not shared_ct_dir().is_dir():
        pytest.skip(f"{shared_ct_dir()} is absent: this build shows the public CT cases "
                    "(put ../shared beside the project or set SAPSAM_SHARED_CT)")
    return build_book(root, tmp_path_factory.mktemp("smoke-book"), shared_ct_dir())


@pytest.fixture(scope="module")
def book_without_public_ct(root, tmp_path_factory, request):
    tmp = tmp_path_factory.mktemp("smoke-book-no-public-ct")
    (tmp / "empty").mkdir()
    workdir_from = request.getfixturevalue("smoke_book")["workdir"] if shared_ct_dir().is_dir() else None
    return build_book(root, tmp, tmp / "empty", workdir_from)


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


def test_a_book_without_the_public_cases_says_what_it_skipped(book_without_public_ct):
    html, empty = book_without_public_ct["html"], book_without_public_ct["project"].parent / "empty"
    for stem in ("01_cohort", "02_segmentation", "03_projections"):
        page = (html / "book" / "executed" / f"{stem}.html").read_text()
        assert "<strong>Not measured: public CT not available.</strong>" in page, stem
        text = re.sub(r"<[^>]+>", "", page)  # code is split into spans
        assert f"looked for them in {empty}" in text, stem
        assert "python -m sapsam_utils.public_ct fetch DEST" in text, stem
        assert json.loads((book_without_public_ct["workdir"] / "results" / f"{stem}.json").read_text())[
            "public_ct_available"] is False
    segmentation = (html / "book" / "executed" / "02_segmentation.html").read_text()
    assert "on a real chest CT (public" not in segmentation  # no real-CT figure, not even its caption
    summary = (html / "book" / "summary.html").read_text()
    rows = [line for line in summary.splitlines() if "not measured: public CT not available" in line]
    assert len(rows) >= 3  # the realism row and the two LIDC-IDRI rows, never a number
    assert "LIDC-IDRI 0001: nodule voxels in the refined mask" in summary
    results = json.loads((book_without_public_ct["workdir"] / "results" / "02_segmentation.json").read_text())
    assert not any(key.startswith("real_lidc") for key in results)


def test_smoke_disease_chapter_scores_every_model_with_confidence_intervals(smoke_book):
    workdir = smoke_book["workdir"]
    results = json.loads((workdir / "results" / "04_disease_classifier.json").read_text())
    for metric in ("f1", "auc", "precision", "recall"):
        value, low, high = (results[f"test_{metric}_scan{s}"] for s in ("", "_ci_low", "_ci_high"))
        if value == value:  # NaN when undefined on the smoke profile's two test patients
            assert low <= value <= high, metric
    assert results["headline_model"] == "disease_vgg19_bn_axial"
    assert 0 <= results["linear_axial_scan_auc"] <= 1 and results["all_cpa_scan_recall"] == 1.0
    folders = sorted((workdir / "models").glob("*/disease-*"))
    assert {f.name for f in folders} == {"disease-vgg19_bn-axial", "disease-inception_v3-axial", "disease-vgg19-axial"}
    for folder in folders:
        patients = [set(pd.read_csv(folder / f"predictions_{split}.csv", dtype=str)["patient_id"]) for split in
                    ("train", "val", "test")]
        assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])
        assert len(pd.read_csv(folder / "history.csv")) >= 1
    summary = (smoke_book["html"] / "book" / "summary.html").read_text()
    start = summary.index("test F1 per scan")
    assert "not yet reproduced" not in summary[start:summary.index("test ROC AUC per scan")]
