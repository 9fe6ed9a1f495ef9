"""Privacy: identifying DICOM header values never leave the input folder.

A DICOM series is written into a temporary folder from the public case ``lung-dx-a0002`` (its 30
slices, binned 2 x 2 in-plane to keep the run short) with made-up identifying values in its
headers: patient name, id and birth date, institution, accession number, referring physician and
study date. A manifest names it beside one phantom; the cohort and segmentation chapters run on it
with papermill (through the runner, on a tiny grid), and the book fragment they render (the two
chapters, the summary and the reproducibility page) is built. None of the values, in any of the
forms checked, may appear in

- the workdir (NIfTI volumes decompressed, ``.npz`` members unpacked),
- the executed notebooks (their text and their decoded images), the provenance and summary,
- the runner's and the book build's output (the logs),
- the built book (HTML, images, search index, doctrees).

About a minute on 2 cores. Skipped without the public CT cases (``../shared/ct`` or
``$SAPSAM_SHARED_CT``).
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import SimpleITK as sitk
import yaml

from conftest import copy_project, run_runner
from sapsam_utils.data.manifest import write_manifest
from sapsam_utils.core.paths import shared_ct_dir
from sapsam_utils.core.regions import LABEL_COLUMNS
from sapsam_utils.core.volume import read_volume

DICOM_CASE = shared_ct_dir() / "lung-dx-a0002" / "dicom"
#: Made-up identifying values, by DICOM tag.
IDENTIFYING = {
    "0010|0010": "Quillfeather^Ottoline",  # PatientName
    "0010|0020": "PRIV-7731-QX",  # PatientID
    "0010|0030": "19450317",  # PatientBirthDate
    "0008|0080": "Saint Wendeline Infirmary",  # InstitutionName
    "0008|0050": "ACC-99817273",  # AccessionNumber
    "0008|0090": "Marrowby^Isidore",  # ReferringPhysicianName
    "0008|0020": "20190824",  # StudyDate
}
#: Each value as written, each part of a name, and the dates written as ISO dates.
NEEDLES = sorted({*IDENTIFYING.values(), "Quillfeather", "Ottoline", "Marrowby", "Isidore", "Wendeline",
                  "1945-03-17", "2019-08-24", "99817273"})
#: Tags that the binned image's geometry and pixel format define (written by the writer itself).
GEOMETRY_TAGS = {"0028|0002", "0028|0004", "0028|0010", "0028|0011", "0028|0030", "0028|0100", "0028|0101",
                 "0028|0102", "0028|0103", "0028|0106", "0028|0107", "0020|0032", "0028|1052", "0028|1053"}


def write_identified_series(source: Path, folder: Path) -> Path:
    """Each slice of ``source``, binned 2 x 2 in-plane, with its public tags and :data:`IDENTIFYING`."""
    folder.mkdir(parents=True)
    for path in sorted(source.glob("*.dcm")):
        reader = sitk.ImageFileReader()
        reader.SetImageIO("GDCMImageIO")
        reader.SetFileName(str(path))
        reader.LoadPrivateTagsOff()
        image = reader.Execute()  # int16 HU
        small = sitk.BinShrink(image, [2, 2, 1])
        for key in reader.GetMetaDataKeys():
            if key not in GEOMETRY_TAGS:
                small.SetMetaData(key, reader.GetMetaData(key))
        for key, value in IDENTIFYING.items():
            small.SetMetaData(key, value)
        small.SetMetaData("0028|1052", "-1024")  # rescale intercept and slope: stored values + -1024 = HU
        small.SetMetaData("0028|1053", "1")
        writer = sitk.ImageFileWriter()
        writer.SetImageIO("GDCMImageIO")
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(folder / path.name))
        writer.Execute(small)
    return folder


def write_cohort(folder: Path, series: Path) -> Path:
    """A manifest of the DICOM series (a control) and one phantom (CPA); nothing in it identifies anyone."""
    rows = []
    for patient, scan, source, group, signs in (("anon-1", "scan-dicom", series, "control", ()),
                                                 ("anon-2", "scan-phantom", "phantom:5:5", "cpa",
                                                  ("RU_cavity", "LU_pleural_thickening"))):
        row = {"patient_id": patient, "scan_id": scan, "scan_date": "2011-06-01", "source": str(source),
               "group": group, **{c: int(c in signs) for c in LABEL_COLUMNS}, "death_date": "",
               "last_followup_date": "2013-06-01", "lung_mask": "", "lesion_mask": ""}
        rows.append(row)
    folder.mkdir(parents=True)
    return write_manifest(pd.DataFrame(rows), folder / "manifest.csv")


def _contents(path: Path):
    """``(where, bytes)``: the file, and what it holds once decompressed, unpacked or decoded."""
    data = path.read_bytes()
    yield str(path), data
    if data[:2] == b"\x1f\x8b":
        yield f"{path} (gunzipped)", gzip.decompress(data)
    if zipfile.is_zipfile(io.BytesIO(data)):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for name in archive.namelist():
                yield f"{path}:{name}", archive.read(name)
    if path.suffix == ".ipynb":
        for cell in json.loads(data).get("cells", []):
            for output in cell.get("outputs", []):
                for mime, value in output.get("data", {}).items():
                    if mime.startswith("image/") and mime != "image/svg+xml":
                        text = "".join(value) if isinstance(value, list) else value
                        yield f"{path} ({mime} output)", base64.b64decode(text)


def find_needles(roots: list[Path], logs: dict[str, str]) -> list[str]:
    """Every ``needle in place`` found (case-insensitive) in the files under ``roots`` and in ``logs``."""
    needles = [n.lower().encode() for n in NEEDLES]
    found = []

    def search(where: str, data: bytes) -> None:
        low = data.lower()
        found.extend(f"{n.decode()!r} in {where}" for n in needles if n in low)

    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
            for where, data in _contents(path):
                search(where, data)
    for name, text in logs.items():
        search(name, text.encode())
    return found


@pytest.fixture(scope="module")
def private_run(root, tmp_path_factory):
    if not DICOM_CASE.is_dir():
        pytest.skip(f"{DICOM_CASE} is absent (the public CT cases: ../shared/ct or $SAPSAM_SHARED_CT)")
    tmp = tmp_path_factory.mktemp("privacy")
    series = write_identified_series(DICOM_CASE, tmp / "series")
    manifest = write_cohort(tmp / "cohort", series)
    project = copy_project(root, tmp / "project")
    chapters = ["01_cohort", "02_segmentation"]
    toc = {"format": "jb-book", "root": "book/intro",
           "chapters": [*({"file": f"book/executed/{s}"} for s in chapters),
                        {"file": "book/summary"}, {"file": "book/reproducibility"}]}
    (project / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False))
    grid = {"phantom_shape": [54, 64, 64], "phantom_spacing": [6.0, 5.6, 5.6]}
    workdir, output = tmp / "work", tmp / "out"
    profile = {
        "common": {"manifest": str(manifest), "workdir": str(workdir), "seed": 0,
                   "public_ct_root": str(tmp / "no-public-ct")},
        "01_cohort": {"n_patients": None, **grid, "n_jobs": 1, "public_ct_manifest": ""},
        "02_segmentation": {"n_jobs": 1, "figure_shape": grid["phantom_shape"],
                            "figure_spacing": grid["phantom_spacing"], "real_cases": [], "figure_case": ""},
    }
    (project / "notebooks" / "params" / "privacy.yaml").write_text(yaml.safe_dump(profile))
    ran = run_runner(project, "privacy", workdir)
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    built = subprocess.run([str(jupyter_book), "build", str(project), "--keep-going", "--path-output", str(output)],
                           capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-4000:]
    return {"series": series, "manifest": manifest, "project": project, "workdir": workdir,
            "html": output / "_build" / "html", "build": output / "_build",
            "logs": {"runner stdout": ran.stdout, "runner stderr": ran.stderr,
                     "book build stdout": built.stdout, "book build stderr": built.stderr}}


def test_the_search_sees_into_compressed_files_notebook_images_and_logs(tmp_path):
    (tmp_path / "ct.nii.gz").write_bytes(gzip.compress(b"descrip MARROWBY^ISIDORE"))
    with zipfile.ZipFile(tmp_path / "scan.npz", "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("meta.npy", b"study 2019-08-24")
    png = base64.b64encode(b"\x89PNG tEXt Saint Wendeline Infirmary").decode()
    (tmp_path / "page.ipynb").write_text(json.dumps({"cells": [{"outputs": [{"data": {"image/png": png}}]}]}))
    found = find_needles([tmp_path], {"runner stderr": "id PRIV-7731-QX"})
    assert {hit.split(" in ", 1)[1] for hit in found} == {
        f"{tmp_path / 'ct.nii.gz'} (gunzipped)", f"{tmp_path / 'scan.npz'}:meta.npy",
        f"{tmp_path / 'page.ipynb'} (image/png output)", "runner stderr"}


def test_the_series_carries_the_identifying_values(private_run):
    """The check can see them: every value is in the input headers, none in the manifest."""
    found = find_needles([private_run["series"]], {})
    for value in IDENTIFYING.values():
        assert any(f"{value.lower()!r} in " in hit for hit in found), value
    assert not find_needles([private_run["manifest"].parent], {})
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(next(private_run["series"].glob("*.dcm"))))
    reader.ReadImageInformation()
    assert {key: reader.GetMetaData(key).strip() for key in IDENTIFYING} == IDENTIFYING


def test_the_series_went_through_the_cohort_and_segmentation_chapters(private_run):
    workdir, html = private_run["workdir"], private_run["html"]
    (ct,) = workdir.glob("scans/*/scan-dicom/ct.nii.gz")
    assert read_volume(ct).array.shape == (30, 256, 256)
    (refined,) = workdir.glob("masks/*/scan-dicom/refined.nii.gz")
    assert (read_volume(refined).array > 0).sum() > 1000  # the lungs were found
    assert json.loads((workdir / "results" / "01_cohort.json").read_text())["n_scans_run"] == 2
    cohort_page = (html / "book" / "executed" / "01_cohort.html").read_text(encoding="utf-8")
    assert "control scan-dicom" in cohort_page  # the series is the control shown in the figure
    assert (html / "book" / "executed" / "02_segmentation.html").is_file()
    assert (html / "book" / "summary.html").is_file() and (html / "book" / "reproducibility.html").is_file()


def test_no_identifying_value_in_workdir_notebooks_logs_or_book(private_run):
    executed = private_run["project"] / "book" / "executed"
    assert sorted(p.name for p in executed.glob("*.ipynb")) == ["01_cohort.ipynb", "02_segmentation.ipynb"]
    assert all(private_run["logs"][name] for name in ("runner stdout", "book build stdout"))
    found = find_needles([private_run["workdir"], executed, private_run["build"]], private_run["logs"])
    assert not found, "identifying values leaked:\n" + "\n".join(found)
