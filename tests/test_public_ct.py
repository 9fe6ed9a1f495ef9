"""The public CT cases: where the study finds them (open_public_ct) and the fetch command.

The fetch tests run against a local stand-in of The Cancer Imaging Archive's REST API (an
http.server on 127.0.0.1 in a thread) serving tiny DICOM series written here with SimpleITK,
and failures: an HTTP error, a transfer shorter than announced, a cut zip, an incomplete series.
"""

from __future__ import annotations

import io
import json
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
import SimpleITK as sitk

from sapsam_utils.data import public_ct
from sapsam_utils.data.loading import load_source
from sapsam_utils.data.manifest import ManifestError, read_manifest
from sapsam_utils.core.paths import project_path, shared_ct_dir
from sapsam_utils.data.public_ct import CASES, Case, FetchError, choose_series, fetch, open_public_ct


# --- a tiny archive ------------------------------------------------------------------------------


def series_zip(uid: str, n: int = 6, instances: list[int] | None = None) -> bytes:
    """A zip of an n-slice CT series (8 x 8 pixels, 2.5 mm slices), as getImage answers it."""
    array = np.full((n, 8, 8), -1000, np.int16)
    array[:, 2:6, 2:6] = 40
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.7, 0.7, 2.5))
    image.SetOrigin((-10.0, -20.0, -100.0))
    instances = instances or list(range(1, n + 1))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf, _tmpdir() as folder:
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        for i in range(n):
            item = image[:, :, i]
            position = "\\".join(map(str, image.TransformIndexToPhysicalPoint((0, 0, i))))
            for tag, value in (("0008|0060", "CT"), ("0020|000e", uid), ("0020|000d", f"{uid}.0"),
                               ("0020|0013", str(instances[i])), ("0020|0032", position),
                               ("0020|0037", "1\\0\\0\\0\\1\\0"), ("0008|0016", "1.2.840.10008.5.1.4.1.1.2"),
                               ("0008|0018", f"{uid}.{i + 1}"), ("0028|1052", "0"), ("0028|1053", "1")):
                item.SetMetaData(tag, value)
            path = Path(folder) / f"1-{i + 1:03d}.dcm"
            writer.SetFileName(str(path))
            writer.Execute(item)
            zf.write(path, path.name)
        zf.writestr("LICENSE", "CC BY")  # the archive may add notes beside the images
    return buffer.getvalue()


def _tmpdir():
    import tempfile

    return tempfile.TemporaryDirectory()


class Archive:
    """What the stand-in server answers: series listings and series zips (or failures)."""

    def __init__(self):
        self.listings: dict[tuple[str, str], list[dict]] = {}
        self.images: dict[str, tuple[str, bytes]] = {}

    def add(self, case: Case, uid: str, data: bytes, mode: str = "ok", images: int | None = None,
            modality: str = "CT") -> None:
        count = images if images is not None else len(zipfile.ZipFile(io.BytesIO(data)).namelist()) - 1
        self.listings.setdefault((case.collection, case.patient_id), []).append(
            {"SeriesInstanceUID": uid, "Modality": modality, "ImageCount": count,
             "SeriesDescription": "test series", "FileSize": len(data)})
        self.images[uid] = (mode, data)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        archive: Archive = self.server.archive
        if url.path.endswith("/getSeries"):
            body = json.dumps(archive.listings.get((query.get("Collection"), query.get("PatientID")), [])).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif url.path.endswith("/getImage") and query.get("SeriesInstanceUID") in archive.images:
            mode, data = archive.images[query["SeriesInstanceUID"]]
            if mode == "error":
                self.send_error(500, "Internal Server Error")
                return
            if mode == "cut":  # a zip cut short, announced with its cut length
                data = data[: len(data) // 2]
            self.send_response(200)
            self.send_header("Content-Type", "application/zip")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2] if mode == "short" else data)  # short: fewer bytes than announced
        else:
            self.send_error(404, "Not Found")

    def log_message(self, *args):
        pass


@pytest.fixture
def archive(monkeypatch):
    """(base URL, Archive) of a local stand-in of the NBIA API, stopped after the test."""
    monkeypatch.setenv("no_proxy", "*")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.archive = Archive()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/nbia-api/services/v1", server.archive
    finally:
        server.shutdown()
        server.server_close()


def leftovers(dest: Path, cases: list[str]) -> list[str]:
    """Anything in ``dest`` besides the given case folders (temporary files or folders)."""
    return sorted(p.name for p in dest.iterdir() if p.name not in cases)


# --- fetch ---------------------------------------------------------------------------------------


def test_the_cases_match_the_manifest_the_study_reads():
    table = read_manifest(project_path(public_ct.DEFAULT_MANIFEST), check_paths=False)
    assert [c.scan_id for c in CASES] == table["scan_id"].tolist()
    assert [public_ct.case_source(c) for c in CASES] == table["source"].tolist()
    assert [c.patient_id for c in CASES] == ["LIDC-IDRI-0001", "LIDC-IDRI-0003", "Lung_Dx-A0001", "Lung_Dx-A0002"]
    assert {c.licence for c in CASES} == {"CC BY 3.0", "CC BY 4.0"}


def test_fetch_writes_the_four_cases_as_the_study_reads_them(archive, tmp_path):
    base_url, server = archive
    for number, case in enumerate(CASES):
        server.add(case, f"1.2.826.0.1.{number}", series_zip(f"1.2.826.0.1.{number}"))
        server.add(case, f"1.2.826.0.9.{number}", b"not used", modality="SEG", images=1)  # not a CT series
    logged = []
    report = fetch(tmp_path / "ct", CASES, base_url, progress=False, log=logged.append)
    dest = tmp_path / "ct"
    assert report.fetched == [c.scan_id for c in CASES] and not report.failed
    assert report.without_labels == [c.scan_id for c in CASES]
    assert leftovers(dest, report.fetched) == []
    assert sorted(p.name for p in (dest / "lidc-idri-0001").iterdir()) == ["ct.nii.gz", "source.json"]
    assert len(list((dest / "lung-dx-a0002" / "dicom").iterdir())) == 6  # the DICOM case stays DICOM
    source = json.loads((dest / "lung-dx-a0001" / "source.json").read_text())
    assert source["patient_id"] == "Lung_Dx-A0001" and source["licence"] == "CC BY 4.0"

    # the study finds them where fetch put them, without lesion labels, and reads them
    found = open_public_ct(public_ct.DEFAULT_MANIFEST, dest)
    assert found.available and found.without_labels == [c.scan_id for c in CASES]
    assert "lidc-idri-0001" in found.labels_message()
    for row in found.table.to_dict("records"):
        assert row["lesion_mask"] == ""
        ct = load_source(row["source"], found.root)
        assert ct.array.shape == (6, 8, 8) and ct.spacing == pytest.approx((2.5, 0.7, 0.7))
        assert ct.array.min() == -1000 and ct.array.max() == 40

    # a second run keeps what is there
    again = fetch(dest, CASES, base_url, progress=False, log=logged.append)
    assert again.present == [c.scan_id for c in CASES] and not again.fetched


def test_fetch_failures_name_the_case_and_leave_no_half_written_case(archive, tmp_path):
    base_url, server = archive
    cases = {mode: Case(f"case-{mode}", "COLL", f"P-{mode}", "nifti") for mode in ("ok", "error", "short", "cut")}
    for number, (mode, case) in enumerate(cases.items()):
        uid = f"1.2.826.0.2.{number}"
        server.add(case, uid, series_zip(uid), mode=mode, images=6)
    gappy = Case("case-gappy", "COLL", "P-gappy", "dicom")  # instance numbers 1-3, 5-7
    server.add(gappy, "1.2.826.0.3", series_zip("1.2.826.0.3", instances=[1, 2, 3, 5, 6, 7]))
    incomplete = Case("case-incomplete", "COLL", "P-incomplete", "dicom")  # the archive lists 7 images
    server.add(incomplete, "1.2.826.0.4", series_zip("1.2.826.0.4"), images=7)
    missing = Case("case-missing", "COLL", "P-missing", "dicom")  # no series in the archive

    dest = tmp_path / "ct"
    everything = [*cases.values(), gappy, incomplete, missing]
    report = fetch(dest, everything, base_url, progress=False, log=lambda _: None)
    assert report.fetched == ["case-ok"]
    failed = report.failed
    assert set(failed) == {c.scan_id for c in everything} - {"case-ok"}
    for scan_id, message in failed.items():
        assert message.startswith(scan_id)
    assert "HTTP 500" in failed["case-error"]
    assert "truncated download" in failed["case-short"] and "of" in failed["case-short"]
    assert "not a complete zip archive" in failed["case-cut"]
    assert "instance numbers are not contiguous" in failed["case-gappy"]
    assert "series incomplete: 6 of the 7 images" in failed["case-incomplete"]
    assert "no CT series" in failed["case-missing"]
    assert leftovers(dest, ["case-ok"]) == []  # no failed case, no temporary file or folder

    # a server that cannot be reached
    with pytest.raises(FetchError, match=r"case-ok .*cannot reach the server"):
        public_ct._fetch_case(cases["ok"], dest / "x", "http://127.0.0.1:9/nbia", None, 5, False, lambda _: None)


def test_fetch_command_exits_non_zero_naming_the_failed_case(archive, tmp_path, capsys):
    base_url, server = archive
    case = CASES[0]
    server.add(case, "1.2.826.0.5", series_zip("1.2.826.0.5"), mode="error")
    code = public_ct.main(["fetch", str(tmp_path / "ct"), "--base-url", base_url, "--cases", case.scan_id])
    out, err = capsys.readouterr()
    assert code == 1
    assert f"FAILED {case.scan_id}: {case.scan_id} (LIDC-IDRI LIDC-IDRI-0001)" in err and "HTTP 500" in err
    assert "Nothing of the failed cases was written" in err
    assert list((tmp_path / "ct").iterdir()) == []


def test_choose_series_takes_the_one_ct_series_the_study_uses():
    case = Case("c", "COLL", "P", "nifti", images=64, series_uid="1.9")
    ct = lambda uid, n: {"SeriesInstanceUID": uid, "Modality": "CT", "ImageCount": n}  # noqa: E731
    pet = {"SeriesInstanceUID": "1.0", "Modality": "PT", "ImageCount": 64}
    assert choose_series(case, [pet, ct("1.1", 30)])["SeriesInstanceUID"] == "1.1"  # the only CT series
    assert choose_series(case, [ct("1.1", 30), ct("1.2", 64)])["SeriesInstanceUID"] == "1.2"  # its size
    assert choose_series(case, [ct("1.1", 64), ct("1.9", 64)])["SeriesInstanceUID"] == "1.9"  # its known UID
    assert choose_series(case, [ct("1.1", 30), ct("1.2", 64)], "1.1")["SeriesInstanceUID"] == "1.1"  # --series
    with pytest.raises(FetchError, match=r"2 CT series .* --series c=<SeriesInstanceUID>"):
        choose_series(case, [ct("1.1", 64), ct("1.2", 64)])
    with pytest.raises(FetchError, match="series 1.5 is not among"):
        choose_series(case, [ct("1.1", 64)], "1.5")
    with pytest.raises(FetchError, match="no CT series"):
        choose_series(case, [pet])


# --- where the study finds them --------------------------------------------------------------------


def test_a_folder_without_the_cases_means_not_available_and_says_how_to_get_them(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for root in (tmp_path / "empty", tmp_path / "absent"):
        found = open_public_ct(public_ct.DEFAULT_MANIFEST, root)
        assert not found.available and found.table is None
        message = found.not_found_message("The figure is skipped.")
        assert message.startswith("**Not measured: public CT not available.**")
        assert f"`{root}`" in message and "The figure is skipped." in message
        assert "python -m sapsam_utils.data.public_ct fetch DEST" in message and "public_ct_root" in message
    assert public_ct.NOT_AVAILABLE == "not measured: public CT not available"
    assert public_ct.main(["status", str(tmp_path / "empty")]) == 0
    assert "none of the public cases is there" in capsys.readouterr().out


def test_a_folder_with_some_cases_but_not_all_intact_is_an_error_listing_each_problem(tmp_path, capsys):
    root = tmp_path / "ct"
    (root / "lung-dx-a0002" / "dicom").mkdir(parents=True)
    (root / "lidc-idri-0001").mkdir()  # a case folder without its CT
    with pytest.raises(ManifestError) as caught:
        open_public_ct(public_ct.DEFAULT_MANIFEST, root)
    text = str(caught.value)
    assert f"source {root}/lidc-idri-0001/ct.nii.gz does not exist" in text
    assert f"source {root}/lung-dx-a0001/ct.nii.gz does not exist" in text
    assert "holds 2 of the 4 cases (lidc-idri-0001, lung-dx-a0002), not all of them intact" in text
    assert public_ct.main(["status", str(root)]) == 1
    assert "not all of them intact" in capsys.readouterr().err


@pytest.mark.skipif(not shared_ct_dir().is_dir(), reason=f"public CT cases not found at {shared_ct_dir()}")
def test_the_shared_cases_are_found_with_their_labels():
    found = open_public_ct(public_ct.DEFAULT_MANIFEST, shared_ct_dir())
    assert found.available and found.without_labels == [] and found.labels_message() == ""
    assert found.row("lung-dx-a0002")["lesion_mask"] == "lung-dx-a0002/lesions.nii.gz"
    with pytest.raises(KeyError, match="'nope' is not a scan_id"):
        found.row("nope")


@pytest.mark.skipif(not shared_ct_dir().is_dir(), reason=f"public CT cases not found at {shared_ct_dir()}")
def test_load_case_reads_the_ct_and_its_labels_subsampled():
    found = open_public_ct(public_ct.DEFAULT_MANIFEST, shared_ct_dir())
    row = found.row("lidc-idri-0001")
    full = load_source(row["source"], found.root)
    ct, lesions = found.load_case("lidc-idri-0001", stride=2)
    np.testing.assert_array_equal(ct.array, full.array[:, ::2, ::2])
    assert ct.spacing == pytest.approx((full.spacing[0], 2 * full.spacing[1], 2 * full.spacing[2]))
    assert lesions.array.shape == ct.array.shape and lesions.array.any()
    assert found.load_case("lidc-idri-0001", labels=False)[1] is None
