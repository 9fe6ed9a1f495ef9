"""The four public chest CT cases: where the study finds them, and how to download them.

Where
    ``manifests/public_ct.csv`` lists the cases; its relative paths resolve against **one
    setting**, ``public_ct_root`` (a profile's ``common`` block; relative to the project root;
    default ``../shared/ct``, the folder beside the project that CI and development have).
    :func:`open_public_ct` reads the manifest against that folder and says whether the cases are
    there:

    * the folder holds **none** of the cases (or does not exist): the cases are *not available*;
      the chapters that use them say so in the book (:meth:`PublicCT.not_found_message`), and the
      summary page marks their numbers "not measured: public CT not available";
    * the folder holds **some** of them: every problem (a missing case, a missing or broken file)
      is an error listing each one (:class:`~sapsam_utils.data.manifest.ManifestError`): a wrongly set
      or half-filled folder must not pass silently as "not available";
    * a case whose CT is there but whose lesion label volume is not (cases fetched from the
      archive come without them) is used without labels; :attr:`PublicCT.without_labels` names
      those cases, and the numbers that need the labels are reported as not measured.

How to get them
    ``python -m sapsam_utils.data.public_ct fetch DEST`` downloads the four series from The Cancer
    Imaging Archive's public REST API (NBIA ``v1``: ``getSeries`` by collection and patient ID,
    ``getImage`` by ``SeriesInstanceUID``, which answers a zip of the series' DICOM files),
    checks each series (one CT series, every image present, contiguous instance numbers, evenly
    spaced slices), and writes each case in the layout the manifest expects: ``ct.nii.gz``
    (int16 HU as read from the DICOM series) for three cases, the ``dicom/`` folder for
    ``lung-dx-a0002``. Each case is written atomically (a temporary folder renamed into place),
    so a failed or interrupted download leaves no half-written case. Lesion label volumes are
    not built (the archive's annotations are XML and spreadsheets): the command says so.
    ``python -m sapsam_utils.data.public_ct status [ROOT]`` tells what the study would find there.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import http.client
import json
import os
import socket
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from ..core.files import atomic_dir
from .loading import load_label, load_source
from .manifest import ManifestError, read_manifest, resolve_path, validate_manifest
from ..core.paths import project_path
from ..core.volume import subsample_inplane

#: Default of ``public_ct_root``: the public cases beside the project (relative to its root).
DEFAULT_ROOT = "../shared/ct"
#: The manifest of the public cases; its relative paths resolve against ``public_ct_root``.
DEFAULT_MANIFEST = "manifests/public_ct.csv"
#: The Cancer Imaging Archive's public REST API (NBIA, version 1; no login for public collections).
BASE_URL = "https://services.cancerimagingarchive.net/nbia-api/services/v1"
#: What the summary page shows for a number that needs the public cases when they are absent.
NOT_AVAILABLE = "not measured: public CT not available"
#: What a chapter writes for a number that needs a case's lesion labels when the case has none.
NO_LABELS = "not measured: no lesion labels"

_LIDC = ("CC BY 3.0", "Armato SG III et al., The Lung Image Database Consortium (LIDC) and Image Database "
         "Resource Initiative (IDRI), Med Phys 38(2):915-931, 2011")
_LUNG_DX = ("CC BY 4.0", "Li P et al., A large-scale CT and PET/CT dataset for lung cancer diagnosis "
            "(Lung-PET-CT-Dx), The Cancer Imaging Archive, 2020")
_TCIA = "Clark K et al., The Cancer Imaging Archive (TCIA), J Digit Imaging 26(6):1045-1057, 2013"


@dataclass(frozen=True)
class Case:
    """One public case: where it is in the archive and how the study stores it.

    ``images`` (the slices of the series the study uses) and ``series_uid`` (when known) pick the
    series among the patient's CT series; ``form`` is ``nifti`` (``<scan_id>/ct.nii.gz``) or
    ``dicom`` (``<scan_id>/dicom/``), as ``manifests/public_ct.csv`` expects.
    """

    scan_id: str
    collection: str
    patient_id: str
    form: str
    images: int | None = None
    series_uid: str | None = None
    licence: str = ""
    citation: str = ""


#: The four cases of ``manifests/public_ct.csv``, in its order.
CASES: tuple[Case, ...] = (
    Case("lidc-idri-0001", "LIDC-IDRI", "LIDC-IDRI-0001", "nifti", 133, None, *_LIDC),
    Case("lidc-idri-0003", "LIDC-IDRI", "LIDC-IDRI-0003", "nifti", 140, None, *_LIDC),
    Case("lung-dx-a0001", "Lung-PET-CT-Dx", "Lung_Dx-A0001", "nifti", 64, None, *_LUNG_DX),
    Case("lung-dx-a0002", "Lung-PET-CT-Dx", "Lung_Dx-A0002", "dicom", 30,
         "1.3.6.1.4.1.14519.5.2.1.6655.2359.207154000096236603057216610983", *_LUNG_DX),
)


def case_source(case: Case) -> str:
    """The case's ``source`` path relative to the root (as in ``manifests/public_ct.csv``)."""
    return f"{case.scan_id}/ct.nii.gz" if case.form == "nifti" else f"{case.scan_id}/dicom"


# --- where the study finds the cases -----------------------------------------------------------


@dataclass
class PublicCT:
    """What :func:`open_public_ct` found.

    Attributes
    ----------
    setting : str
        ``public_ct_root`` as given (relative to the project root unless absolute).
    root : Path
        The folder it names, absolute.
    manifest : Path
        The manifest read.
    table : DataFrame or None
        The manifest's rows (validated against ``root``; ``lesion_mask`` blank for a case
        without labels), or None when no case is there.
    without_labels : list of str
        Cases present without their lesion label volume.
    """

    setting: str
    root: Path
    manifest: Path
    table: pd.DataFrame | None
    without_labels: list[str] = field(default_factory=list)

    @property
    def available(self) -> bool:
        return self.table is not None

    def row(self, scan_id: str) -> pd.Series:
        """The manifest row of one case (KeyError naming the manifest when it has no such case)."""
        if self.table is None:
            raise RuntimeError(self.not_found_message())
        rows = self.table[self.table["scan_id"] == scan_id]
        if rows.empty:
            raise KeyError(f"{scan_id!r} is not a scan_id of {self.manifest} "
                           f"(its cases: {', '.join(self.table['scan_id'])})")
        return rows.iloc[0]

    def load_case(self, scan_id: str, stride: int = 1, labels: bool = True):
        """One case's CT and lesion labels (None for a case without them, or when not ``labels``)
        as Volumes, on every ``stride``-th pixel in-plane
        (:func:`sapsam_utils.core.volume.subsample_inplane`)."""
        row = self.row(scan_id)
        ct = load_source(row["source"], self.root)
        lesions = load_label(row["lesion_mask"], self.root, ct) if labels and row["lesion_mask"] else None
        return subsample_inplane(ct, stride), (subsample_inplane(lesions, stride) if lesions is not None else None)

    def not_found_message(self, skipped: str = "") -> str:
        """Markdown for the book: the cases were not found, where the study looked, how to get them."""
        return (
            f"**Not measured: public CT not available.** The public chest CT cases of "
            f"`{_shown(self.manifest)}` were not found: the study looked for them in `{self.root}` "
            f"(`public_ct_root = {self.setting!r}`"
            + (")" if Path(self.setting).is_absolute() else ", relative to the project root)") + ". "
            + (f"{skipped.strip()} " if skipped.strip() else "")
            + "To include them, download the four cases from The Cancer Imaging Archive with "
            "`python -m sapsam_utils.data.public_ct fetch DEST` and point `public_ct_root` at `DEST` "
            "(in the profile's `common` block, or `make book PUBLIC_CT_ROOT=DEST`); the README's "
            "section *The public CT cases* says more."
        )

    def labels_message(self) -> str:
        """Markdown naming the cases without lesion labels ('' when every case has them)."""
        if not self.without_labels:
            return ""
        return (f"**Without lesion labels:** {', '.join(f'`{c}`' for c in self.without_labels)} "
                f"(no lesion label volume in `{self.root}`; cases fetched from the archive come "
                "without them): the numbers that need the labels are not measured for these cases.")


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(project_path(".")))
    except ValueError:
        return str(path)


def _case_folder(source: str, root: Path) -> Path:
    """The folder of a case: the first component of its relative source (the source itself if absolute)."""
    path = PurePath(source.strip())
    return Path(path) if path.is_absolute() else root / path.parts[0]


def open_public_ct(manifest: str | os.PathLike = DEFAULT_MANIFEST,
                   root: str | os.PathLike = DEFAULT_ROOT) -> PublicCT:
    """Read the public cases' manifest against ``public_ct_root`` and say whether they are there.

    Parameters
    ----------
    manifest : path-like
        The manifest (relative to the project root unless absolute).
    root : path-like
        ``public_ct_root``: the folder the manifest's relative paths resolve against (relative to
        the project root unless absolute).

    Returns
    -------
    PublicCT
        ``available`` is False when the folder holds none of the cases (or does not exist).

    Raises
    ------
    ManifestError
        When the folder holds some of the cases but not all of them intact: every problem is
        listed, with what to do.
    FileNotFoundError
        When the manifest itself does not exist.
    """
    setting = str(root)
    manifest_path, root_path = project_path(manifest), project_path(root).resolve()
    table = read_manifest(manifest_path, check_paths=False)
    found = [_case_folder(s, root_path).exists() for s in table["source"]]
    if not any(found):
        return PublicCT(setting, root_path, manifest_path, None)
    table = table.copy()
    without_labels = []
    for index, row in table.iterrows():
        source = resolve_path(row["source"], root_path)
        lesions = row["lesion_mask"]
        if lesions and source.exists() and not resolve_path(lesions, root_path).exists():
            table.loc[index, "lesion_mask"] = ""
            without_labels.append(row["scan_id"])
    problems = validate_manifest(table, root_path)
    if problems:
        present = [s for s, f in zip(table["scan_id"], found) if f]
        problems.append(
            f"public_ct_root = {setting!r} ({root_path}) holds {len(present)} of the {len(table)} cases "
            f"({', '.join(present)}), not all of them intact. Point public_ct_root at a folder with all "
            "of them (python -m sapsam_utils.data.public_ct fetch DEST downloads them), or at an empty "
            "folder to build the book without them"
        )
        raise ManifestError(manifest_path, problems)
    return PublicCT(setting, root_path, manifest_path, table, without_labels)


# --- fetching them from The Cancer Imaging Archive --------------------------------------------


class FetchError(RuntimeError):
    """A case that could not be downloaded or verified; the message names the case."""


def _get(url: str, timeout: float) -> http.client.HTTPResponse:
    request = urllib.request.Request(url, headers={"User-Agent": "sapsam-public-ct"})
    return urllib.request.urlopen(request, timeout=timeout)


def _failure(case: Case, what: str, url: str, err: BaseException) -> FetchError:
    if isinstance(err, urllib.error.HTTPError):
        reason = f"HTTP {err.code} {err.reason}"
    elif isinstance(err, urllib.error.URLError):
        reason = f"cannot reach the server ({err.reason})"
    elif isinstance(err, http.client.IncompleteRead):
        reason = f"the connection closed after {len(err.partial)} more bytes, before the end (truncated download)"
    else:
        reason = f"{type(err).__name__}: {err}"
    return FetchError(f"{case.scan_id} ({case.collection} {case.patient_id}): {what} failed: {reason} [{url}]")


def list_series(case: Case, base_url: str = BASE_URL, timeout: float = 60) -> list[dict]:
    """The patient's series in the archive (``getSeries``), as the API's JSON records."""
    query = urllib.parse.urlencode({"Collection": case.collection, "PatientID": case.patient_id, "format": "json"})
    url = f"{base_url.rstrip('/')}/getSeries?{query}"
    try:
        with _get(url, timeout) as response:
            body = response.read()
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        raise _failure(case, "listing the series (getSeries)", url, err) from err
    if not body.strip():
        return []  # the API answers an empty body when nothing matches
    try:
        records = json.loads(body)
    except ValueError as err:
        raise FetchError(f"{case.scan_id}: getSeries did not answer JSON [{url}]") from err
    if not isinstance(records, list):
        raise FetchError(f"{case.scan_id}: getSeries answered {type(records).__name__}, not a list [{url}]")
    return records


def _images(record: dict) -> int | None:
    try:
        return int(record.get("ImageCount"))
    except (TypeError, ValueError):
        return None


def choose_series(case: Case, records: list[dict], series_uid: str | None = None) -> dict:
    """The one CT series of the case among the patient's series.

    ``series_uid`` (given by the user) must be one of them; else the case's known UID when the
    archive lists it; else the only CT series; else the only CT series with ``case.images``
    images. Anything else is an error that lists the CT series to choose from.
    """
    def described(rows):
        return "; ".join(f"{r.get('SeriesInstanceUID')} ({r.get('Modality')}, {_images(r)} images, "
                         f"'{r.get('SeriesDescription', '')}')" for r in rows) or "none"

    where = f"{case.scan_id} ({case.collection} {case.patient_id})"
    if series_uid:
        chosen = [r for r in records if r.get("SeriesInstanceUID") == series_uid]
        if not chosen:
            raise FetchError(f"{where}: series {series_uid} is not among the patient's series: {described(records)}")
        return chosen[0]
    if case.series_uid:
        known = [r for r in records if r.get("SeriesInstanceUID") == case.series_uid]
        if known:
            return known[0]
    cts = [r for r in records if str(r.get("Modality", "")).upper() == "CT"]
    if not cts:
        raise FetchError(f"{where}: the archive lists no CT series for this patient (series: {described(records)})")
    if len(cts) == 1:
        return cts[0]
    sized = [r for r in cts if case.images is not None and _images(r) == case.images]
    if len(sized) == 1:
        return sized[0]
    raise FetchError(
        f"{where}: {len(cts)} CT series and none is the one the study uses ({case.images} images) "
        f"without doubt: {described(sized or cts)}. Choose one with --series {case.scan_id}=<SeriesInstanceUID>"
    )


def _download(case: Case, url: str, target: Path, expected_bytes: int | None, timeout: float,
              progress: bool) -> None:
    """Stream ``url`` into ``target`` with a progress bar; a short or broken transfer is a FetchError."""
    from tqdm.auto import tqdm

    received = 0
    try:
        with _get(url, timeout) as response, open(target, "wb") as out:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else expected_bytes
            with tqdm(total=total, unit="B", unit_scale=True, desc=case.scan_id, disable=not progress,
                      leave=False) as bar:
                while True:
                    chunk = response.read(1 << 20)
                    if not chunk:
                        break
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            if length and length.isdigit() and received != int(length):
                raise FetchError(f"{case.scan_id} ({case.collection} {case.patient_id}): truncated download: "
                                 f"{received} of {int(length)} bytes [{url}]")
    except FetchError:
        raise
    except (urllib.error.URLError, http.client.HTTPException, OSError, socket.timeout) as err:
        raise _failure(case, "downloading the series (getImage)", url, err) from err


def _extract(case: Case, archive: Path, folder: Path) -> list[Path]:
    """The zip's files, flat, into ``folder`` (names kept, paths dropped); a broken zip is a FetchError."""
    where = f"{case.scan_id} ({case.collection} {case.patient_id})"
    try:
        with zipfile.ZipFile(archive) as zf:
            bad = zf.testzip()
            if bad is not None:
                raise FetchError(f"{where}: {bad} is corrupt in the downloaded archive (truncated download?)")
            folder.mkdir(parents=True)
            files = []
            for member in zf.infolist():
                name = PurePath(member.filename).name
                if member.is_dir() or not name or name.startswith("."):
                    continue
                if not name.lower().endswith(".dcm"):
                    continue  # the archive's own notes (e.g. a licence text), not images
                path = folder / name
                if path.exists():
                    raise FetchError(f"{where}: two files named {name} in the downloaded archive")
                with zf.open(member) as src, open(path, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
                files.append(path)
    except (zipfile.BadZipFile, EOFError) as err:
        raise FetchError(f"{where}: the download is not a complete zip archive (truncated download?): {err}") from err
    return files


def verify_series(case: Case, folder: Path, expected_images: int | None, series_uid: str) -> list[str]:
    """Check that ``folder`` holds exactly the CT series ``series_uid``, complete.

    Every image of the series is there (``expected_images``, the archive's count), all of one CT
    series, instance numbers contiguous and in the order of the slice positions, slices evenly
    spaced with no gap (:func:`sapsam_utils.data.loading.dicom_slice_order`).

    Returns
    -------
    list of str
        The files in slice order.
    """
    import SimpleITK as sitk

    from .loading import LoadError, dicom_slice_order

    where = f"{case.scan_id} ({case.collection} {case.patient_id})"
    files = sorted(folder.glob("*"))
    if expected_images is not None and len(files) != expected_images:
        raise FetchError(f"{where}: series incomplete: {len(files)} of the {expected_images} images the archive lists")
    try:
        ordered, _ = dicom_slice_order(folder)
    except LoadError as err:
        raise FetchError(f"{where}: the downloaded series is not one complete CT series: {err}") from err
    if len(ordered) != len(files):
        raise FetchError(f"{where}: {len(files) - len(ordered)} of the {len(files)} files are not part of the series")
    numbers = []
    for name in ordered:
        reader = sitk.ImageFileReader()
        reader.SetImageIO("GDCMImageIO")
        reader.SetFileName(name)
        reader.LoadPrivateTagsOff()
        reader.ReadImageInformation()
        uid = reader.GetMetaData("0020|000e").strip() if reader.HasMetaDataKey("0020|000e") else ""
        if uid != series_uid:
            raise FetchError(f"{where}: {Path(name).name} belongs to series {uid or '(none)'}, not {series_uid}")
        try:
            numbers.append(int(reader.GetMetaData("0020|0013").strip()))
        except (RuntimeError, ValueError) as err:
            raise FetchError(f"{where}: {Path(name).name} has no instance number") from err
    steps = np.diff(numbers)
    if not (np.all(steps == 1) or np.all(steps == -1)):
        raise FetchError(f"{where}: instance numbers are not contiguous in slice order "
                         f"({min(numbers)}..{max(numbers)} over {len(numbers)} slices)")
    return ordered


def _write_nifti(case: Case, folder: Path, target: Path) -> tuple[int, ...]:
    """The series as int16 HU NIfTI, on the grid SimpleITK reads it on (as the study's copies are)."""
    import SimpleITK as sitk

    from .loading import LoadError, read_dicom_series

    try:
        image = read_dicom_series(folder)
    except LoadError as err:
        raise FetchError(f"{case.scan_id}: the downloaded series cannot be read: {err}") from err
    array = sitk.GetArrayViewFromImage(image)
    if array.min() < np.iinfo(np.int16).min or array.max() > np.iinfo(np.int16).max:
        raise FetchError(f"{case.scan_id}: values outside int16 ({array.min()}..{array.max()}), not CT in HU")
    image = sitk.Cast(sitk.Round(image), sitk.sitkInt16)
    sitk.WriteImage(image, str(target), useCompression=True)
    return image.GetSize()


@dataclass
class FetchReport:
    """What :func:`fetch` did: cases fetched, found complete already, failed (with the message)."""

    fetched: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    without_labels: list[str] = field(default_factory=list)


def fetch(dest: str | os.PathLike, cases: Iterable[Case] = CASES, base_url: str = BASE_URL,
          series: dict[str, str] | None = None, force: bool = False, timeout: float = 120,
          progress: bool = True, log: Callable[[str], None] = print) -> FetchReport:
    """Download the public cases into ``dest`` (``dest/<scan_id>/...``), one atomic folder each.

    Parameters
    ----------
    dest : path-like
        The folder to fill (created when missing); give it as ``public_ct_root`` afterwards.
    cases : iterable of Case
        Which cases (default: the four of the study).
    base_url : str
        The NBIA API root (a test points it at a local server).
    series : dict, optional
        ``{scan_id: SeriesInstanceUID}``: the series to take, where the choice is ambiguous.
    force : bool
        Download again a case that is already there.

    Returns
    -------
    FetchReport
        A case that fails is reported (and left absent) and the others are still fetched.
    """
    dest = Path(dest).expanduser().resolve()
    dest.mkdir(parents=True, exist_ok=True)
    report = FetchReport()
    series = series or {}
    for case in cases:
        final = dest / case.scan_id
        source = dest / case_source(case)
        if source.exists() and not force:
            log(f"{case.scan_id}: already in {final}, kept (--force downloads it again)")
            report.present.append(case.scan_id)
        else:
            try:
                _fetch_case(case, final, base_url, series.get(case.scan_id), timeout, progress, log)
                report.fetched.append(case.scan_id)
            except FetchError as err:
                log(f"{case.scan_id}: FAILED: {err}")
                report.failed[case.scan_id] = str(err)
                continue
        if not (final / "lesions.nii.gz").exists():
            report.without_labels.append(case.scan_id)
    return report


def _fetch_case(case: Case, final: Path, base_url: str, series_uid: str | None, timeout: float,
                progress: bool, log: Callable[[str], None]) -> None:
    record = choose_series(case, list_series(case, base_url, timeout), series_uid)
    uid = str(record["SeriesInstanceUID"])
    images = _images(record)
    url = f"{base_url.rstrip('/')}/getImage?{urllib.parse.urlencode({'SeriesInstanceUID': uid})}"
    log(f"{case.scan_id}: {case.collection} {case.patient_id}, series {uid} ({images} images)")
    try:
        size = int(record.get("FileSize")) if record.get("FileSize") is not None else None
    except (TypeError, ValueError):
        size = None
    fd, name = tempfile.mkstemp(prefix=f".download-{case.scan_id}-", suffix=".zip", dir=final.parent)
    os.close(fd)
    archive = Path(name)
    try:
        _download(case, url, archive, size, timeout, progress)
        with atomic_dir(final) as tmp:
            dicom = tmp / "dicom"
            _extract(case, archive, dicom)
            verify_series(case, dicom, images, uid)
            if case.form == "nifti":
                shape = _write_nifti(case, dicom, tmp / "ct.nii.gz")
                for path in dicom.iterdir():
                    path.unlink()
                dicom.rmdir()
                stored = f"ct.nii.gz, {' x '.join(map(str, shape))} voxels"
            else:
                stored = f"dicom/, {len(list(dicom.iterdir()))} files"
            provenance = {
                "scan_id": case.scan_id, "collection": case.collection, "patient_id": case.patient_id,
                "series_instance_uid": uid, "images": images, "stored_as": stored,
                "licence": case.licence, "citation": [case.citation, _TCIA],
                "fetched_from": url, "fetched_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "lesion_labels": "none (not built from the archive's annotations)",
            }
            (tmp / "source.json").write_text(json.dumps(provenance, indent=2) + "\n")
    finally:
        archive.unlink(missing_ok=True)
    log(f"{case.scan_id}: verified and written to {final} ({stored})")


# --- command line ------------------------------------------------------------------------------


def _parse_series(values: Sequence[str] | None) -> dict[str, str]:
    out = {}
    for value in values or []:
        scan_id, sep, uid = value.partition("=")
        if not sep or not uid:
            raise SystemExit(f"--series {value!r}: give it as <scan_id>=<SeriesInstanceUID>")
        out[scan_id] = uid
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sapsam_utils.data.public_ct",
        description="The study's four public chest CT cases (The Cancer Imaging Archive): fetch them, or check a folder.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    get = sub.add_parser("fetch", help="download the cases into DEST (then give DEST as public_ct_root)")
    get.add_argument("dest", help="folder to write the cases into (one folder per case)")
    get.add_argument("--cases", nargs="+", metavar="SCAN_ID", help="only these cases (default: all four)")
    get.add_argument("--base-url", default=BASE_URL, help=f"NBIA REST API root (default {BASE_URL})")
    get.add_argument("--series", nargs="+", metavar="SCAN_ID=UID", help="take this series for a case")
    get.add_argument("--force", action="store_true", help="download again the cases already there")
    get.add_argument("--timeout", type=float, default=120, help="seconds to wait for the server (default 120)")
    status = sub.add_parser("status", help="what the study finds in ROOT")
    status.add_argument("root", nargs="?", default=DEFAULT_ROOT,
                        help=f"public_ct_root (default {DEFAULT_ROOT}, relative to the project root)")
    args = parser.parse_args(argv)

    if args.command == "status":
        try:
            found = open_public_ct(DEFAULT_MANIFEST, args.root)
        except ManifestError as err:
            print(err, file=sys.stderr)
            return 1
        if not found.available:
            print(f"{found.root}: none of the public cases is there: the book says 'not available' where it would use them")
            return 0
        print(f"{found.root}: all {len(found.table)} public cases are there")
        if found.without_labels:
            print(f"without lesion labels: {', '.join(found.without_labels)}")
        return 0

    chosen = list(CASES)
    if args.cases:
        unknown = sorted(set(args.cases) - {c.scan_id for c in CASES})
        if unknown:
            parser.error(f"--cases {unknown}: not cases of the study ({', '.join(c.scan_id for c in CASES)})")
        chosen = [c for c in CASES if c.scan_id in args.cases]
    report = fetch(args.dest, chosen, args.base_url, _parse_series(args.series), args.force, args.timeout)
    dest = Path(args.dest).expanduser().resolve()
    print(f"\nfetched: {', '.join(report.fetched) or 'none'}; already there: {', '.join(report.present) or 'none'}; "
          f"failed: {', '.join(report.failed) or 'none'}")
    if report.without_labels:
        print(f"Without lesion labels (no lesions.nii.gz): {', '.join(report.without_labels)}. Lesion label "
              "volumes are not built from the archive's annotations: chapter 2 reports the lesion share "
              "of these cases as 'not measured'.")
    print("Licences: LIDC-IDRI CC BY 3.0, Lung-PET-CT-Dx CC BY 4.0 (cite them as the README's 'Data and "
          "licences' says; each case's source.json names its series and citation).")
    if report.failed:
        for scan_id, message in report.failed.items():
            print(f"FAILED {scan_id}: {message}", file=sys.stderr)
        print("Nothing of the failed cases was written; run the command again to retry them.", file=sys.stderr)
        return 1
    print(f"Use them: public_ct_root: {dest}  (the common block of notebooks/params/<profile>.yaml), "
          f"or make book PUBLIC_CT_ROOT={dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
