"""The whole book: every notebook with the smoke profile, then the strict build; twice.

1. With the public CT cases (``../shared/ct`` or ``$SAPSAM_SHARED_CT``; skipped without them).
2. As a fresh clone builds it, with ``public_ct_root`` pointing at an empty folder: the build must
   succeed, the chapters must say that the public cases were not found, and the summary must mark
   their numbers "not measured". When build 1 ran, build 2 starts from a copy of its workdir, so
   the cached scans, masks and projections are reused and only the notebooks run again.
3. Each book as its readers see it: every page opened in headless Chromium (Debian's ``chromium``
   and ``chromium-driver``; skipped, saying why, without them): it loads, its images decode, its
   internal links and anchors exist, the browser console shows no error but two known ones of the
   theme, and the summary shows its headline table. A screenshot of each page is saved under the
   build's workdir (``screenshots/``; the path is printed).

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
import time
from pathlib import Path
from urllib.parse import unquote, urldefrag, urljoin, urlparse

import pandas as pd
import pytest

import headless_chromium
from conftest import copy_project, run_runner
from sapsam_utils.report import runner
from sapsam_utils.core.paths import shared_ct_dir


def build_book(root: Path, tmp: Path, public_ct_root: Path, workdir_from: Path | None = None) -> dict:
    """Copy the project into ``tmp``, run the smoke profile with this ``public_ct_root``, build the book."""
    copy = copy_project(root, tmp / "project")
    workdir, output = tmp / "work", tmp / "out"
    if workdir_from is not None:
        shutil.copytree(workdir_from, workdir, symlinks=True)
    run_runner(copy, "smoke", workdir, "--public-ct-root", str(public_ct_root))
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
    assert "not measured in this run" in summary and "Headline numbers" in summary  # e.g. the sagittal signs
    intro = (html / "book" / "intro.html").read_text()
    assert "pipeline.png" in intro and "Fig. 1" in intro


def test_a_book_without_the_public_cases_says_what_it_skipped(book_without_public_ct):
    html, empty = book_without_public_ct["html"], book_without_public_ct["project"].parent / "empty"
    for stem in ("01_cohort", "02_segmentation", "03_projections"):
        page = (html / "book" / "executed" / f"{stem}.html").read_text()
        assert "<strong>Not measured: public CT not available.</strong>" in page, stem
        text = re.sub(r"<[^>]+>", "", page)  # code is split into spans
        assert f"looked for them in {empty}" in text, stem
        assert "python -m sapsam_utils.data.public_ct fetch DEST" in text, stem
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
        if value is not None:  # null when undefined on the smoke profile's two test patients
            assert low <= value <= high, metric
    assert results["headline_model"] == "disease_vgg19_bn_axial"
    assert 0 <= results["linear_axial_scan_auc"] <= 1 and results["all_cpa_scan_recall"] == 1.0
    margin = [results[f"test_auc_scan_margin_over_linear{s}"] for s in ("", "_ci_low", "_ci_high")]
    assert margin[0] is None or margin[1] <= margin[0] <= margin[2]
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


# --- the book as readers see it: every page in headless Chromium ------------------------------

#: Collected in each page once its images are decoded (lazy ones are made eager first).
PAGE_SCRIPT = """
const done = arguments[arguments.length - 1];
const images = Array.from(document.images);
images.forEach(img => { img.loading = "eager"; });
Promise.all(images.map(img => img.decode().catch(() => null))).then(() => done({
    url: location.href,
    readyState: document.readyState,
    title: document.title,
    text: document.body ? document.body.innerText.length : 0,
    images: images.map(img => ({src: img.getAttribute("src"), width: img.naturalWidth, height: img.naturalHeight})),
    links: Array.from(document.querySelectorAll("a[href]"), a => a.getAttribute("href")),
    ids: Array.from(document.querySelectorAll("[id]"), e => e.id)
        .concat(Array.from(document.querySelectorAll("a[name]"), a => a.name)),
}));
"""
#: The headline table of the summary page: its header cells and number of rows, if it is shown.
HEADLINE_SCRIPT = """
const section = document.getElementById("headline-numbers");
const table = section && section.querySelector("table");
if (!table || table.offsetHeight === 0) return null;
return {head: Array.from(table.querySelectorAll("thead th"), th => th.innerText.trim()),
        rows: table.querySelectorAll("tbody tr").length};
"""


#: Console errors of the theme itself, harmless to a reader (each page still works):
KNOWN_CONSOLE_ERRORS = (
    # jupyter-book 1.0.4 adds sphinx-thebe's inline configuration script twice to every page
    "Identifier 'THEBE_JS_URL' has already been declared",
    # pydata-sphinx-theme reads an empty colour mode from a file: page's storage, then uses "auto"
    "Got invalid theme mode",
)


def _page_url(path: Path) -> str:
    return path.resolve().as_uri()


def _wait_until_loaded(browser, url: str, redirects: bool, timeout: float = 60.0) -> str:
    """Wait for the page's load event (and, for a page that redirects, for the next page's); its URL."""
    deadline = time.monotonic() + timeout
    while True:
        state, href = browser.run("return [document.readyState, location.href];")
        if state == "complete" and (not redirects or href != url):
            return href
        assert time.monotonic() < deadline, f"{url} did not finish loading ({state}, at {href})"
        time.sleep(0.1)


def read_book_in_chromium(html: Path, shots: Path) -> dict:
    """Open every page of the built book in headless Chromium; screenshot each into ``shots``.

    Returns ``{"pages": {relative path: what PAGE_SCRIPT saw}, "console": [...], "headline": ...}``.
    """
    pages = sorted(p for p in html.rglob("*.html") if "_static" not in p.relative_to(html).parts)
    seen, console, headline = {}, [], None
    with headless_chromium.Chromium(shots.parent / "chromium-profile") as browser:
        for page in pages:
            name = str(page.relative_to(html))
            url = _page_url(page)
            browser.open(url)
            redirects = 'http-equiv="refresh"' in page.read_text(encoding="utf-8").lower()
            _wait_until_loaded(browser, url, redirects)
            seen[name] = {**browser.run_async(PAGE_SCRIPT), "redirects": redirects}
            browser.screenshot(shots / (name.replace("/", "__")[: -len(".html")] + ".png"))
            console += [{**entry, "page": name} for entry in browser.console()
                        if entry.get("level") == "SEVERE"]
            if name == "book/summary.html":
                headline = browser.run(HEADLINE_SCRIPT)
    return {"pages": seen, "console": console, "headline": headline}


def broken_links(html: Path, pages: dict) -> list[str]:
    """Internal links (relative or file:) whose target file, or its anchor, does not exist."""
    ids = {urldefrag(page["url"])[0]: set(page["ids"]) for page in pages.values()}
    broken = []
    for name, page in pages.items():
        for href in page["links"]:
            target = urljoin(page["url"], href)  # the page's own URL, or where it redirected
            if urlparse(target).scheme != "file":
                continue  # http(s), mailto: not this book's pages
            url, anchor = urldefrag(target)
            path = Path(unquote(urlparse(url).path))
            if path.is_dir():
                path = path / "index.html"
            if not path.is_file():
                broken.append(f"{name}: {href} (no file {path})")
            elif anchor and url in ids and unquote(anchor) not in ids[url]:
                broken.append(f"{name}: {href} (no anchor #{anchor} in {path.name})")
    return broken


@pytest.mark.parametrize("book", ["smoke_book", "book_without_public_ct"])
def test_every_page_loads_in_chromium_with_its_images_links_and_headline_table(book, request, root):
    reason = headless_chromium.unavailable()
    if reason:
        pytest.skip(reason)
    built = request.getfixturevalue(book)
    html, shots = built["html"], built["workdir"] / "screenshots"
    read = read_book_in_chromium(html, shots)
    pages = read["pages"]
    missing = {f"{page}.html" for page in runner.toc_files(root / "_toc.yml")} - set(pages)
    assert not missing, f"pages of _toc.yml not built: {sorted(missing)}"
    for name, page in pages.items():
        assert page["readyState"] == "complete" and page["url"].startswith("file://"), f"{name}: {page['url']}"
        assert page["title"] and page["text"] > 200, f"{name}: an empty page"
        undecoded = [image["src"] for image in page["images"] if not image["width"]]
        assert not undecoded, f"{name}: images that do not decode: {undecoded}"
        assert (shots / (name.replace("/", "__")[: -len(".html")] + ".png")).stat().st_size > 1000, name
    assert pages["index.html"]["redirects"] and pages["index.html"]["url"].endswith("/book/intro.html")
    assert sum(len(page["images"]) for page in pages.values()) >= 5  # the chapters' figures are there
    broken = broken_links(html, pages)
    assert not broken, "broken internal links:\n" + "\n".join(broken)
    errors = [f"{e['page']}: {e['message']}" for e in read["console"]
              if not any(known in e["message"] for known in KNOWN_CONSOLE_ERRORS)]
    assert not errors, "errors in the browser console:\n" + "\n".join(errors)
    assert read["headline"] is not None, "summary: no visible table under 'Headline numbers'"
    assert read["headline"]["head"] == ["section", "quantity", "paper", "this reproduction"]
    assert read["headline"]["rows"] >= 20
    print(f"screenshots of the {len(pages)} pages: {shots}")
