"""Bad inputs, tried as a new user would: each gets a clear error, leaves nothing of its scan and
touches no input.

Every case of :data:`CASES` writes its inputs into ``tmp_path/inputs`` and a manifest of two
rows: a good scan (``G1``) and the bad one (``B1``). The ``scans`` stage then runs as chapter 01
runs it (:func:`read_manifest`, :func:`stage_dir`, :func:`build_scans`), and, for the pipeline
cases, the ``masks`` stage as chapter 02 does. Each case asserts

* the error's type (and for a scan, the type of its cause: :class:`LoadError` for what cannot be
  read as a CT);
* that its message names the file or the row, and the problem;
* that nothing of the bad scan is left in the workdir (no folder, no ``.tmp-*`` temporary), while
  the good scan before it is complete;
* that the input files are byte for byte and to the nanosecond as they were.

A few inputs look odd but are CTs (a JPEG 2000 DICOM series, int64 or float64 NIfTI voxels):
their case says ``None`` for the error and asserts that the scan is read exactly.

The DICOM series are synthesised with SimpleITK (no public case needed). The profile cases run
the runner's command line on a tiny project. A failing notebook failing the build is tested in
``tests/test_frame.py`` (``test_failing_notebook_stops_the_runner_naming_notebook_and_cell``).
"""

from __future__ import annotations

import gzip
import hashlib
import locale
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import nbformat
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import yaml

from sapsam_utils.report import runner
from sapsam_utils.stages.workdir import current_stage, stage_dir
from sapsam_utils.stages.scans import ScanBuildError, build_scans, scans_stage_params
from sapsam_utils.data.loading import LoadError
from sapsam_utils.data.manifest import ALL_COLUMNS, ManifestError, read_manifest
from sapsam_utils.core.regions import LABEL_COLUMNS
from sapsam_utils.stages.masks import segment_cohort
from sapsam_utils.core.volume import read_volume

GOOD, BAD = "G1", "B1"
TINY = dict(phantom_shape=(54, 64, 64), phantom_spacing=(6.0, 5.6, 5.6), difficulty=1.0)


# --- inputs --------------------------------------------------------------------------------------


def toy_ct(shape=(6, 24, 24)) -> np.ndarray:
    """A small chest: air around a 40 HU body holding two lungs at -850 HU."""
    z, y, x = shape
    ct = np.full(shape, -1000, np.int16)
    ct[:, y // 6 : -y // 6, x // 8 : -x // 8] = 40
    ct[1:-1, y // 3 : -y // 3, x // 4 : x // 2 - 1] = -850
    ct[1:-1, y // 3 : -y // 3, x // 2 + 1 : -x // 4] = -850
    return ct


def write_nifti(path: Path, array: np.ndarray, spacing=(2.0, 0.8, 0.8)) -> Path:
    image = sitk.GetImageFromArray(array)
    if image.GetDimension() == 3:
        image.SetSpacing(tuple(float(s) for s in reversed(spacing)))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


SERIES_UID = "1.2.826.0.1.3680043.2.1125.7.1"


def write_series(folder: Path, hu: np.ndarray, spacing=(2.0, 0.8, 0.8), positions=None,
                 orientation=(1, 0, 0, 0, 1, 0), modality="CT", series_uid=SERIES_UID,
                 compressor: str | None = None, first: int = 0) -> Path:
    """A DICOM CT series, one file per slice of ``hu`` (z, y, x), stored with intercept -1024.

    SimpleITK's GDCM writer stores ``(value - intercept) / slope``, so the files hold HU + 1024 and
    read back as ``hu``. ``positions`` (x, y, z in mm, one per slice) default to a stack along +z.
    """
    # GDCM's writer sets the process's C locale to "C" (Python's default text encoding then turns
    # ASCII for every later test): restore it.
    saved = locale.setlocale(locale.LC_ALL)
    try:
        _write_series(folder, hu, spacing, positions, orientation, modality, series_uid, compressor, first)
    finally:
        locale.setlocale(locale.LC_ALL, saved)
    return folder


def _write_series(folder, hu, spacing, positions, orientation, modality, series_uid, compressor, first):
    folder.mkdir(parents=True, exist_ok=True)
    if positions is None:
        positions = [(-10.0, -10.0, 100.0 + k * spacing[0]) for k in range(len(hu))]
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    if compressor:
        writer.SetUseCompression(True)
        writer.SetCompressor(compressor)
    for k, plane in enumerate(hu):
        image = sitk.GetImageFromArray(plane[None].astype(np.int16))
        image.SetSpacing((spacing[2], spacing[1], spacing[0]))
        tags = {
            "0008|0060": modality, "0020|000d": "1.2.826.0.1.3680043.2.1125.7.2", "0020|000e": series_uid,
            "0008|0018": f"{series_uid}.{first + k + 1}", "0020|0013": str(first + k + 1),
            "0020|0032": "\\".join(f"{v:.4f}" for v in positions[k]),
            "0020|0037": "\\".join(f"{v:.6f}" for v in orientation), "0018|0050": str(spacing[0]),
            "0028|1052": "-1024", "0028|1053": "1", "0028|1054": "HU",
        }
        for tag, value in tags.items():
            image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{first + k:03d}.dcm"))
        writer.Execute(image)


def _strip_elements(path: Path, *tags: bytes) -> None:
    """Remove data elements (implicit VR little endian: tag, 4-byte length, value) from a file."""
    data = path.read_bytes()
    for tag in tags:
        at = data.index(tag)
        length = struct.unpack("<I", data[at + 4 : at + 8])[0]
        data = data[:at] + data[at + 8 + length :]
    path.write_bytes(data)


def noisy_ct(shape=(20, 48, 48), seed=0) -> np.ndarray:
    """A toy CT with noise, so that its .nii.gz does not compress to almost nothing."""
    rng = np.random.default_rng(seed)
    return (toy_ct(shape) + rng.integers(-30, 30, shape)).astype(np.int16)


def _tilted(degrees: float) -> tuple[tuple, np.ndarray]:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    orientation = (1.0, 0.0, 0.0, 0.0, c, s)
    return orientation, np.cross(orientation[:3], orientation[3:])


# Each maker writes the bad input under ``folder`` and returns the manifest fields of row B1 (paths
# relative to the manifest's folder), or, for a manifest-level case, the manifest file itself.


def dicom_missing_slice(folder):
    series = write_series(folder / "series", toy_ct((8, 24, 24)))
    (series / "slice004.dcm").unlink()
    return {"source": "inputs/series"}


def dicom_two_series(folder):
    write_series(folder / "series", toy_ct())
    write_series(folder / "series", toy_ct((4, 24, 24)), series_uid=SERIES_UID + "9", first=10)
    return {"source": "inputs/series"}


def dicom_no_rescale(folder):
    series = write_series(folder / "series", toy_ct())
    for f in series.iterdir():
        _strip_elements(f, b"\x28\x00\x52\x10", b"\x28\x00\x53\x10", b"\x28\x00\x54\x10")
    return {"source": "inputs/series"}


def dicom_oblique(folder):
    orientation, normal = _tilted(20)
    positions = [tuple(np.array([-10.0, -10.0, 100.0]) + 2.0 * k * normal) for k in range(6)]
    write_series(folder / "series", toy_ct(), orientation=orientation, positions=positions)
    return {"source": "inputs/series"}


def dicom_gantry_tilt(folder):
    orientation, _ = _tilted(15)  # tilted planes, the table moving along z: a sheared volume
    write_series(folder / "series", toy_ct(), orientation=orientation)
    return {"source": "inputs/series"}


def dicom_uneven(folder):
    positions = [(-10.0, -10.0, z) for z in (100.0, 102.0, 104.0, 106.5, 108.0, 110.0)]
    write_series(folder / "series", toy_ct(), positions=positions)
    return {"source": "inputs/series"}


def dicom_duplicate_position(folder):
    positions = [(-10.0, -10.0, z) for z in (100.0, 102.0, 104.0, 104.0, 106.0, 108.0)]
    write_series(folder / "series", toy_ct(), positions=positions)
    return {"source": "inputs/series"}


def dicom_stray_file(folder):
    series = write_series(folder / "series", toy_ct())
    (series / "notes.txt").write_text("scanned on the old scanner\n")
    return {"source": "inputs/series"}


def dicom_damaged_slice(folder):
    series = write_series(folder / "series", toy_ct())
    last = series / "slice005.dcm"  # the top slice, half written: no gap would show it
    last.write_bytes(last.read_bytes()[:200])
    return {"source": "inputs/series"}


def nifti_truncated_gz(folder):
    path = write_nifti(folder / "ct.nii.gz", noisy_ct())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])  # a third of the download
    return {"source": "inputs/ct.nii.gz"}


def nifti_truncated_plain(folder):
    path = write_nifti(folder / "ct.nii", noisy_ct())
    path.write_bytes(path.read_bytes()[: 352 + 4000])
    return {"source": "inputs/ct.nii"}


def nifti_four_d(folder):
    image = sitk.JoinSeries([sitk.GetImageFromArray(toy_ct())] * 2)
    sitk.WriteImage(image, str(folder / "ct.nii.gz"))
    return {"source": "inputs/ct.nii.gz"}


def nifti_empty(folder):
    header = bytearray(gzip.decompress(write_nifti(folder / "ct.nii.gz", toy_ct()).read_bytes())[:352])
    header[40:56] = struct.pack("<8h", 3, 0, 24, 24, 1, 1, 1, 1)  # dim: 0 x 24 x 24
    (folder / "ct.nii.gz").write_bytes(gzip.compress(bytes(header)))
    return {"source": "inputs/ct.nii.gz"}


def nifti(array_fn: Callable[[], np.ndarray], spacing=(2.0, 0.8, 0.8), name="ct.nii.gz"):
    def make(folder):
        write_nifti(folder / name, array_fn(), spacing)
        return {"source": f"inputs/{name}"}
    return make


def raw_file(name: str, data: bytes):
    def make(folder):
        (folder / name).write_bytes(data)
        return {"source": f"inputs/{name}"}
    return make


def with_label(column: str, array_fn: Callable[[], np.ndarray], spacing=(2.0, 0.8, 0.8)):
    def make(folder):
        write_nifti(folder / "ct.nii.gz", toy_ct())
        write_nifti(folder / "label.nii.gz", array_fn(), spacing)
        return {"source": "inputs/ct.nii.gz", column: "inputs/label.nii.gz"}
    return make


def _nan_ct():
    ct = toy_ct().astype(np.float32)
    ct[3, 12, 12] = np.nan
    return ct


def _lungs(dtype=np.uint8):
    ct = toy_ct()
    lungs = (ct == -850).astype(dtype)
    lungs[:, :, 12:] *= 2
    return lungs


def _above_int16():
    ct = toy_ct().astype(np.int64)
    ct[3, 12, 12] = 70000
    return ct


# --- manifest-level makers: a whole CSV ----------------------------------------------------------


def manifest_row(scan_id: str, source: str, **values) -> dict:
    row = {"patient_id": f"P{scan_id}", "scan_id": scan_id, "scan_date": "2012-01-01", "source": source,
           "group": "control", **{c: 0 for c in LABEL_COLUMNS}, "death_date": "",
           "last_followup_date": "2015-01-01", "lung_mask": "", "lesion_mask": ""}
    row.update(values)
    return row


def csv_with(bad: dict, drop: tuple = (), extra: str = "") -> Callable:
    """A manifest with the good row and row B1 set to ``bad`` (columns in ``drop`` left out)."""
    def make(folder):
        table = pd.DataFrame([manifest_row(GOOD, "inputs/good.nii.gz"), {**manifest_row(BAD, ""), **bad}])
        path = folder.parent / "manifest.csv"
        table[[c for c in ALL_COLUMNS if c not in drop]].to_csv(path, index=False)
        return path
    return make


def csv_not_utf8(folder):
    path = csv_with({"source": "phantom:1"})(folder)
    path.write_bytes(path.read_bytes().replace(b"PB1", "PB\u00e91".encode("latin-1")))
    return path


def csv_no_rows(folder):
    path = folder.parent / "manifest.csv"
    path.write_text(",".join(ALL_COLUMNS) + "\n")
    return path


# --- the table -----------------------------------------------------------------------------------


@dataclass
class Case:
    id: str
    make: Callable[[Path], dict | Path]
    error: type | None  # None: the input is read, exactly
    fragments: tuple[str, ...] = ()  # the problem, in the message
    cause: type | None = LoadError  # the ScanBuildError's cause
    stage: str = "scans"  # the stage that must fail ("masks": the scans stage succeeds)
    expect: Callable[[], np.ndarray] | None = None  # the CT a readable odd input reads as
    names: str = "source"  # the row field whose path the message names; "file": the manifest (its
    #                        row is in the fragments); "scan": the scan and its CT in the workdir


ROW2 = f"row 2 (scan_id '{BAD}'): "

CASES = [
    # manifest: refused as a whole, each problem naming its row (the scans stage never starts)
    Case("manifest-not-utf8", csv_not_utf8, ManifestError, ("not UTF-8 text: byte 0xe9 on line 3 (row 2)",), names="file"),
    Case("manifest-scan-after-death", csv_with({"source": "phantom:1", "death_date": "2011-06-30",
                                                "last_followup_date": "2011-06-30"}),
         ManifestError, (ROW2 + "scan_date 2012-01-01 is after death_date 2011-06-30",), names="file"),
    Case("manifest-missing-column", csv_with({"source": "phantom:1"}, drop=("scan_date",)), ManifestError,
         ("missing column(s): scan_date",), names="file"),
    Case("manifest-label-not-0-1", csv_with({"source": "phantom:1", "group": "cpa", "RU_cavity": 2}), ManifestError,
         (ROW2 + "labels must be 0 or 1: RU_cavity='2'",), names="file"),
    Case("manifest-control-with-sign", csv_with({"source": "phantom:1", "LU_cavity": 1}), ManifestError,
         (ROW2 + "a control has signs: LU_cavity",), names="file"),
    Case("manifest-duplicate-scan-id", csv_with({"source": "phantom:1", "scan_id": GOOD}), ManifestError,
         ("row 2 (scan_id 'G1'): duplicate scan_id, first used on row 1",), names="file"),
    Case("manifest-date-not-iso", csv_with({"source": "phantom:1", "scan_date": "04/03/2012"}), ManifestError,
         (ROW2 + "scan_date '04/03/2012' is not an ISO date",), names="file"),
    Case("manifest-source-missing", csv_with({"source": "inputs/absent.nii.gz"}), ManifestError,
         (ROW2, "absent.nii.gz does not exist"), names="file"),
    Case("manifest-source-not-nifti", csv_with({"source": "inputs/good.png"}), ManifestError,
         (ROW2, "good.png is a file but not NIfTI"), names="file"),
    Case("manifest-bad-phantom", csv_with({"source": "phantom:x"}), ManifestError,
         (ROW2 + "source 'phantom:x' is not of the form",), names="file"),
    Case("manifest-fungus-ball-without-cavity", csv_with({"source": "phantom:1", "group": "cpa", "RL_fungus_ball": 1}),
         ManifestError, (ROW2 + "RL_fungus_ball without RL_cavity",), names="file"),
    Case("manifest-scan-id-not-a-folder-name", csv_with({"source": "phantom:1", "scan_id": "../B1"}), ManifestError,
         ("row 2 (scan_id '../B1'): scan_id '../B1' has characters other than",), names="file"),
    Case("manifest-no-rows", csv_no_rows, ManifestError, ("the manifest has no rows",), names="file"),
    # DICOM series
    Case("dicom-missing-slice", dicom_missing_slice, ScanBuildError, ("missing slice(s): a gap of 4.00 mm",)),
    Case("dicom-two-series", dicom_two_series, ScanBuildError, ("2 DICOM series in one folder",)),
    Case("dicom-no-rescale-tags", dicom_no_rescale, ScanBuildError,
         ("slice000.dcm has no RescaleIntercept / RescaleSlope",)),
    Case("dicom-not-ct", lambda f: {"source": str(write_series(f / "series", toy_ct(), modality="MR").relative_to(f.parent))},
         ScanBuildError, ("modality is 'MR'", "not CT")),
    Case("dicom-single-slice", lambda f: {"source": str(write_series(f / "series", toy_ct()[:1]).relative_to(f.parent))},
         ScanBuildError, ("only 1 DICOM slice",)),
    Case("dicom-oblique", dicom_oblique, ScanBuildError, ("oblique to the patient frame",)),
    Case("dicom-gantry-tilt", dicom_gantry_tilt, ScanBuildError, ("not stacked along their normal",)),
    Case("dicom-uneven-spacing", dicom_uneven, ScanBuildError, ("uneven slice spacing",)),
    Case("dicom-duplicate-position", dicom_duplicate_position, ScanBuildError, ("two slices at the same position",)),
    Case("dicom-not-dicom-file-in-folder", dicom_stray_file, ScanBuildError,
         ("notes.txt not part of the DICOM series",)),
    Case("dicom-damaged-slice", dicom_damaged_slice, ScanBuildError, ("slice005.dcm not part of the DICOM series",)),
    Case("dicom-empty-folder", lambda f: (f / "series").mkdir() or {"source": "inputs/series"}, ScanBuildError,
         ("no DICOM files in the folder",)),
    Case("dicom-jpeg2000-is-read", lambda f: {"source": str(write_series(f / "series", toy_ct(), compressor="JPEG2000")
                                                        .relative_to(f.parent))},
         None, expect=toy_ct),
    # NIfTI files
    Case("nifti-2d", nifti(lambda: toy_ct()[3]), ScanBuildError, ("expected a 3-D volume, got a 2-D image",)),
    Case("nifti-4d", nifti_four_d, ScanBuildError, ("expected a 3-D volume, got a 4-D image",)),
    Case("nifti-nan", nifti(_nan_ct), ScanBuildError, ("the image holds NaN or infinite values",)),
    Case("nifti-truncated-gz", nifti_truncated_gz, ScanBuildError, ("truncated", "gzip stream breaks off")),
    Case("nifti-truncated-nii", nifti_truncated_plain, ScanBuildError,
         ("the file is truncated: its header announces 92160 bytes of voxels", "it holds 4000")),
    Case("nifti-not-gzip", raw_file("ct.nii.gz", b"<html>404 Not Found</html>"), ScanBuildError,
         ("not gzip-compressed",)),
    Case("nifti-not-nifti", raw_file("ct.nii.gz", gzip.compress(b"P5 24 24 255\n" + bytes(600))), ScanBuildError,
         ("not a NIfTI file",)),
    Case("nifti-no-air", nifti(lambda: np.full((6, 24, 24), 0.5, np.float32)), ScanBuildError,
         ("no voxel below -900 (no air)",)),
    Case("nifti-raw-stored-values", nifti(lambda: (toy_ct() + 1024).astype(np.uint16)), ScanBuildError,
         ("no voxel below -900 (no air)",)),
    Case("nifti-spacing-0.01mm", nifti(toy_ct, spacing=(0.01, 0.01, 0.01)), ScanBuildError,
         ("voxel size (0.01, 0.01, 0.01) mm is outside 0.1..20.0 mm",)),
    Case("nifti-spacing-50mm", nifti(toy_ct, spacing=(50.0, 0.8, 0.8)), ScanBuildError,
         ("voxel size (50.0, 0.8, 0.8) mm is outside",)),
    Case("nifti-int64-above-int16", nifti(_above_int16), ScanBuildError, ("values up to 70000, above the int16 range",)),
    Case("nifti-empty", nifti_empty, ScanBuildError, ("holds no voxels",)),
    Case("nifti-int64-is-read", nifti(lambda: toy_ct().astype(np.int64)), None, expect=toy_ct),
    Case("nifti-float64-is-read", nifti(lambda: toy_ct().astype(np.float64) + 0.3), None, expect=toy_ct),
    # label volumes
    Case("label-other-spacing", with_label("lung_mask", _lungs, spacing=(3.0, 0.8, 0.8)), ScanBuildError,
         ("label spacing (3.0, 0.8, 0.8) differs from the CT's (2.0, 0.8, 0.8)",), names="lung_mask"),
    Case("label-other-shape", with_label("lesion_mask", lambda: _lungs()[:5]), ScanBuildError,
         ("label grid (5, 24, 24) differs from the CT's (6, 24, 24)",), names="lesion_mask"),
    Case("label-not-integers", with_label("lesion_mask", lambda: _lungs(np.float32) * 0.5), ScanBuildError,
         ("a label volume holds integers 0..255, found non-integer values (e.g. 0.5)",), names="lesion_mask"),
    Case("label-nan", with_label("lung_mask", lambda: np.where(_lungs() > 0, np.nan, 0).astype(np.float32)),
         ScanBuildError, ("NaN or infinite",), names="lung_mask"),
    Case("label-lung-mask-value-3", with_label("lung_mask", lambda: _lungs() + (_lungs() > 0)), ScanBuildError,
         ("values must be 0, 1 (right) or 2 (left), found [0, 2, 3]",), cause=ValueError, names="lung_mask"),
    # the pipeline
    Case("pipeline-scan-with-no-lungs",
         nifti(lambda: np.where(toy_ct((16, 48, 48)) == -850, 40, toy_ct((16, 48, 48))).astype(np.int16),
               spacing=(5.0, 5.0, 5.0)),
         RuntimeError, ("segmentation failed: no air space", "no lungs found"), stage="masks", names="scan"),
]


def _snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _run_stages(manifest_path: Path, workdir: Path, masks: bool) -> None:
    """The scans stage as chapter 01 runs it, then (``masks``) the masks stage as chapter 02 does."""
    table = read_manifest(manifest_path)
    out = stage_dir(workdir, "scans", scans_stage_params(table, TINY["phantom_shape"], TINY["phantom_spacing"], 1.0))
    build_scans(table, manifest_path.parent, out, **TINY, n_jobs=1, progress=False)
    if masks:
        key, scans_dir = current_stage(workdir, "scans")
        masks_dir = stage_dir(workdir, "masks", {"defaults": True}, upstream=key)
        segment_cohort(scans_dir, masks_dir, n_jobs=1, progress=False)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    write_nifti(inputs / "good.nii.gz", toy_ct((16, 48, 48)), spacing=(5.0, 5.0, 5.0))
    (inputs / "good.png").write_bytes(b"\x89PNG\r\n")
    made = case.make(inputs)
    if isinstance(made, Path):
        manifest_path, bad_row = made, None
    else:
        bad_row = manifest_row(BAD, **made)
        manifest_path = tmp_path / "manifest.csv"
        good = manifest_row(GOOD, "inputs/good.nii.gz")
        pd.DataFrame([good, bad_row])[list(ALL_COLUMNS)].to_csv(manifest_path, index=False)
    before = _snapshot(inputs)
    manifest_before = manifest_path.read_bytes()
    work = tmp_path / "work"

    if case.error is None:
        _run_stages(manifest_path, work, masks=False)
        _, scans = current_stage(work, "scans")
        assert np.array_equal(read_volume(scans / BAD / "ct.nii.gz").array, case.expect())
    else:
        with pytest.raises(case.error) as raised:
            _run_stages(manifest_path, work, masks=case.stage == "masks")
        message = str(raised.value)
        for fragment in case.fragments:
            assert fragment in message, (fragment, message)
        if case.names == "file":  # a manifest-level problem names the file
            assert str(manifest_path) in message
        elif case.names == "scan":  # the masks stage names the scan and its CT in the scans stage
            assert f"scan {BAD} (" in message and f"{BAD}/ct.nii.gz" in message
        else:  # a scan names itself and the file it came from
            assert f"scan {BAD}" in message
            assert str((tmp_path / bad_row[case.names]).resolve()) in message, message
        if case.error is ScanBuildError:
            assert isinstance(raised.value.__cause__, case.cause), repr(raised.value.__cause__)
        failed_stage = work / case.stage
        leftovers = [p for p in work.rglob("*") if p.name.startswith(".tmp-")] if work.exists() else []
        leftovers += [p for p in failed_stage.rglob("*") if p.name == BAD] if failed_stage.exists() else []
        assert leftovers == []
        if case.error is ManifestError:
            assert not (work / "scans").exists()
        else:  # the scan before the bad one is complete
            _, scans = current_stage(work, "scans")
            assert (scans / GOOD / "scan.json").is_file()
            if case.stage == "masks":
                assert (scans / BAD / "scan.json").is_file()  # it is a CT; it has no lungs
                _, masks = current_stage(work, "masks")
                assert (masks / GOOD / "segmentation.json").is_file()
    assert _snapshot(inputs) == before, "an input file was modified"
    assert manifest_path.read_bytes() == manifest_before


def test_writing_dicom_keeps_the_text_encoding(tmp_path):
    before = locale.getpreferredencoding(False)
    write_series(tmp_path / "series", toy_ct())
    assert locale.getpreferredencoding(False) == before


def test_there_are_at_least_30_bad_inputs():
    assert sum(case.error is not None for case in CASES) + len(PROFILE_CASES) >= 30


# --- profiles: the runner names the key ---------------------------------------------------------

PROFILE_CASES = {
    "unknown-key": ({"02_b": {"raduis": 3}}, "02_b.ipynb: the profile passes ['raduis']"),
    "unknown-common-key": ({"common": {"sed": 3}}, "the common block passes ['sed']"),
    "string-for-an-integer": ({"02_b": {"seed": "three"}},
                              "parameter 'seed' is 'three', a string where the notebook expects an integer"),
    "yaml-1e-3-is-a-string": ({"02_b": {"rate": "1e-3"}},
                              "parameter 'rate' is '1e-3', a string where the notebook expects a number"),
    "float-for-an-integer": ({"02_b": {"seed": 0.5}},
                             "parameter 'seed' is 0.5, a number where the notebook expects an integer"),
    "string-in-a-list-of-numbers": ({"02_b": {"shape": [54, "64", 64]}},
                                    "parameter 'shape' is [54, '64', 64], item 1 is '64': a string where the notebook "
                                    "expects an integer"),
    "number-for-a-list": ({"02_b": {"shape": 64}}, "parameter 'shape' is 64, an integer where the notebook expects a list"),
}


@pytest.mark.parametrize("name", sorted(PROFILE_CASES))
def test_bad_profile_is_refused_naming_the_key(name, make_project, tmp_path, capsys):
    blocks, expected = PROFILE_CASES[name]
    project = make_project({"01_a": ["pass"], "02_b": ["pass"]})
    path = project / "notebooks" / "02_b.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.cells[1].source += "\nrate = 0.001  # learning rate\nshape = [54, 64, 64]  # grid"
    nbformat.write(nb, path)
    profile = project / "notebooks" / "params" / "smoke.yaml"
    content = yaml.safe_load(profile.read_text())
    for block, values in blocks.items():
        content[block].update(values)
    text = yaml.safe_dump(content)
    if name == "yaml-1e-3-is-a-string":
        text = text.replace("rate: '1e-3'", "rate: 1e-3")  # as a user writes it; YAML 1.1 reads a string
        assert yaml.safe_load(text)["02_b"]["rate"] == "1e-3"
    profile.write_text(text)
    before = profile.read_bytes()
    assert runner.main(["--root", str(project), "--profile", "smoke"]) == 1
    err = capsys.readouterr().err
    assert "[runner] FAILED:" in err and expected in err, err
    assert not (tmp_path / "work").exists() and not (project / "book" / "executed").exists()
    assert profile.read_bytes() == before
