"""Read a manifest ``source`` (DICOM series folder or NIfTI file) as a canonical HU volume.

Every CT comes out as a :class:`~sapsam_utils.core.volume.Volume` of int16 Hounsfield units in the
study's one orientation (axes ``(z, y, x)`` in LPS: inferior -> superior, anterior -> posterior,
patient's right -> left; see :mod:`sapsam_utils.core.volume`). Label volumes (``lung_mask``,
``lesion_mask``) go through the same reading and reorientation, so they stay voxel-aligned with
their CT; :func:`load_label` checks that their grid is the CT's.

DICOM series
    All files of the folder must form **one** series of CT slices. Slices are ordered by their
    position along the slice normal (``ImagePositionPatient`` projected on the cross product of
    the ``ImageOrientationPatient`` row and column directions), never by file name. The folder is
    rejected, with an error naming it, when it holds no DICOM file, a file that is not part of
    the series (a stray file, or a damaged slice that the DICOM reader cannot parse: ignoring it
    would drop a slice silently; hidden files, named ``.*``, are ignored), several series, a
    non-CT modality, a slice without its rescale slope and intercept, one slice only, slices of
    different sizes or orientations, slices not stacked along their normal (a gantry tilt), two
    slices at one position, missing slices (a gap larger than 1.5 times the usual spacing) or uneven
    spacing (gaps that differ by more than 2 %); an oblique series (image axes not along the
    patient's) is rejected when it is reoriented. SimpleITK's GDCM reader applies each file's
    rescale slope and intercept (tested against the raw stored pixels), so the values are HU, and
    decodes compressed transfer syntaxes (JPEG lossless, JPEG 2000, RLE).

NIfTI files
    Before SimpleITK reads a NIfTI file, its raw bytes are checked against its header
    (:func:`check_nifti_file`): SimpleITK reads a file shorter than its header says (a truncated
    or half-downloaded ``.nii.gz``) as a full volume of blank slices, and turns NaN and infinite
    voxels into 0, so both would otherwise enter the study silently.

Out-of-field padding
    Scanners mark voxels outside the reconstruction circle with values such as -2048 or -3024,
    and some store air below -1024. Every value below :data:`AIR_HU` (-1024 HU) is set to -1024,
    the lowest value of the CT scale (air). Padding then reads as air, the same for DICOM and NIfTI.
    Float images are rounded to whole HU. An image with no voxel below -900 (no air at all) is
    rejected: it is not a chest CT in HU (e.g. a normalised or a label image); so is one with
    values above 32767 (the int16 range of CT), an empty one, and one whose voxel size is outside
    :data:`SPACING_RANGE_MM` (a wrong unit or a corrupt header).

Privacy
    Only the voxels and the geometry (spacing, origin) leave this module. The DICOM tags read to
    check the series (modality, series, position, orientation) are never logged or returned;
    patient names, ids and dates are never read.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .manifest import resolve_path, source_kind
from ..core.volume import Volume, from_sitk, read_volume

#: The lowest HU value kept: air. Padding and anything darker is set to it.
AIR_HU = -1024
#: A gap between slices larger than this many times the usual spacing means missing slices.
MISSING_SLICE_FACTOR = 1.5
#: Gaps between slices may differ from the usual spacing by this fraction at most.
SPACING_TOLERANCE = 0.02
#: Slices may sit off the line along their normal through the first slice by this many mm at most.
STACK_TOLERANCE_MM = 0.05
#: Voxel sizes (mm) a CT can have; outside this range the header's unit or values are wrong.
SPACING_RANGE_MM = (0.1, 20.0)

_MODALITY, _SERIES, _POSITION, _ORIENTATION = "0008|0060", "0020|000e", "0020|0032", "0020|0037"
_INTERCEPT, _SLOPE = "0028|1052", "0028|1053"


class LoadError(ValueError):
    """A source that cannot be read as a CT volume; the message names the file or folder."""


def load_source(source: str | os.PathLike, base_dir: str | os.PathLike = ".") -> Volume:
    """Read a DICOM series folder or a NIfTI file as an int16 HU volume in LPS.

    Parameters
    ----------
    source : path-like
        A DICOM series folder or a ``.nii`` / ``.nii.gz`` file (``phantom:`` sources are made by
        :func:`sapsam_utils.synthetic.phantom.make_phantom`, not read).
    base_dir : path-like
        Folder that a relative ``source`` is relative to (the manifest's folder).

    Returns
    -------
    Volume
        int16 HU, values below -1024 set to -1024.

    Raises
    ------
    LoadError
        Naming the folder or file and what is wrong with it.
    """
    path = resolve_path(source, base_dir)
    kind = _file_kind(path)
    volume = _read(path, kind)
    array = volume.array
    if array.size == 0:
        raise LoadError(f"{path}: the image holds no voxels (size {array.shape})")
    low, high = SPACING_RANGE_MM
    if min(volume.spacing) < low or max(volume.spacing) > high:
        raise LoadError(
            f"{path}: voxel size {_mm(volume.spacing)} mm is outside {low}..{high} mm: "
            "not a CT's (a wrong unit or a corrupt header)"
        )
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise LoadError(f"{path}: the image holds NaN or infinite values")
        array = np.rint(array)
    if array.min() > -900:
        raise LoadError(f"{path}: no voxel below -900 (no air): is this a CT in Hounsfield units?")
    if array.max() > np.iinfo(np.int16).max:
        raise LoadError(
            f"{path}: values up to {array.max()}, above the int16 range of CT (32767): not Hounsfield units"
        )
    hu = np.clip(array, AIR_HU, np.iinfo(np.int16).max).astype(np.int16)
    return Volume(hu, volume.spacing, volume.origin)


def load_label(path: str | os.PathLike, base_dir: str | os.PathLike, like: Volume) -> Volume:
    """Read a label volume (lung or lesion mask) through the CT's reading path, on its grid.

    Parameters
    ----------
    path : path-like
        A NIfTI file (or DICOM folder) of non-negative integer labels.
    base_dir : path-like
        Folder that a relative ``path`` is relative to.
    like : Volume
        The CT the labels belong to.

    Returns
    -------
    Volume
        uint8 labels on the CT's grid.

    Raises
    ------
    LoadError
        When the file is unreadable, holds values that are not integers in 0..255, or its grid
        (shape, spacing, origin) differs from the CT's.
    """
    path = resolve_path(path, base_dir)
    kind = _file_kind(path)
    volume = _read(path, kind)
    array = volume.array
    if array.size and (array.min() < 0 or array.max() > 255):
        raise LoadError(f"{path}: a label volume holds integers 0..255, found values in [{array.min()}, {array.max()}]")
    if array.size and not np.array_equal(array, np.rint(array)):
        example = array[array != np.rint(array)].flat[0]
        raise LoadError(f"{path}: a label volume holds integers 0..255, found non-integer values (e.g. {example})")
    if array.shape != like.array.shape:
        raise LoadError(f"{path}: label grid {array.shape} differs from the CT's {like.array.shape}")
    if not np.allclose(volume.spacing, like.spacing, rtol=1e-4, atol=1e-4):
        raise LoadError(f"{path}: label spacing {_mm(volume.spacing)} differs from the CT's {_mm(like.spacing)}")
    if not np.allclose(volume.origin, like.origin, atol=1e-2 * min(like.spacing)):
        raise LoadError(f"{path}: label origin {_mm(volume.origin)} differs from the CT's {_mm(like.origin)}")
    return like.like(array.astype(np.uint8))


def _mm(values) -> tuple[float, ...]:
    """Millimetres as written in messages (float32 noise rounded away)."""
    return tuple(round(float(v), 4) for v in values)


def _file_kind(path: Path) -> str:
    try:
        return source_kind(str(path))
    except ValueError as err:
        raise LoadError(str(err)) from err


def _read(path: Path, kind: str) -> Volume:
    """A DICOM series or a NIfTI file as a canonical :class:`Volume`; errors as :class:`LoadError`."""
    if kind == "dicom":
        try:
            return from_sitk(read_dicom_series(path))
        except LoadError:
            raise
        except ValueError as err:  # e.g. an oblique series
            raise LoadError(f"{path}: {err}") from err
    check_nifti_file(path)
    try:
        return read_volume(path)
    except (FileNotFoundError, ValueError) as err:
        raise LoadError(str(err)) from err


#: NIfTI datatype codes of floating-point voxels, and their numpy types (little-endian).
_NIFTI_FLOATS = {16: "f4", 64: "f8"}
_CHUNK = 1 << 23


def check_nifti_file(path: str | os.PathLike) -> None:
    """Check a NIfTI file's raw bytes against its header.

    Reads the (decompressed) file once, in chunks: the header must be a NIfTI-1 or NIfTI-2
    single-file header, the file must hold every voxel that the header's dimensions and data
    type announce, and floating-point voxels must be finite. SimpleITK checks neither: it reads a
    truncated file as a full volume (the missing slices blank) and reads NaN as 0.

    Raises
    ------
    LoadError
        Naming the file: not NIfTI, truncated (or a damaged gzip stream), no voxels, NaN or
        infinite values.
    """
    path = Path(path)
    compressed = path.name.lower().endswith(".gz")
    try:
        with (gzip.open if compressed else open)(path, "rb") as stream:
            head = stream.read(540)
            dims, itemsize, offset, float_type = _nifti_header(path, head)
            if 0 in dims:
                raise LoadError(f"{path}: the image holds no voxels (dimensions {tuple(dims)} in its header)")
            expected = int(np.prod(dims, dtype=np.int64)) * itemsize
            skip = offset - len(head)  # header extensions past what was read
            while skip > 0 and (chunk := stream.read(min(_CHUNK, skip))):
                skip -= len(chunk)
            pending = head[offset : offset + expected] if skip <= 0 else b""
            got = len(pending)
            while True:
                if float_type:
                    usable = len(pending) - len(pending) % itemsize
                    if usable and not np.isfinite(np.frombuffer(pending[:usable], float_type)).all():
                        raise LoadError(f"{path}: the image holds NaN or infinite values")
                    pending = pending[usable:]
                if got >= expected:
                    break
                chunk = stream.read(min(_CHUNK, expected - got))
                if not chunk:
                    break
                got += len(chunk)
                if float_type:
                    pending += chunk
    except gzip.BadGzipFile as err:
        raise LoadError(f"{path}: not a readable image: not gzip-compressed, as a .nii.gz file is ({err})") from err
    except (EOFError, zlib.error) as err:
        raise LoadError(f"{path}: the file is truncated or damaged: its gzip stream breaks off ({err}); "
                        "a partial download? fetch the file again") from err
    except OSError as err:
        raise LoadError(f"{path}: not a readable image ({err})") from err
    if got < expected:
        raise LoadError(
            f"{path}: the file is truncated: its header announces {expected} bytes of voxels "
            f"({' x '.join(map(str, dims))}), it holds {got}; a partial download? fetch the file again"
        )


def _nifti_header(path: Path, head: bytes) -> tuple[list[int], int, int, str | None]:
    """Dimensions, bytes per voxel, offset of the voxels and float type of a NIfTI header."""
    for order in "<>":
        if len(head) >= 4 and struct.unpack(order + "i", head[:4])[0] in (348, 540):
            break
    else:
        raise LoadError(f"{path}: not a readable image: not a NIfTI file (no NIfTI header)")
    nifti2 = struct.unpack(order + "i", head[:4])[0] == 540
    if nifti2:
        if len(head) < 540 or head[4:7] != b"n+2":
            raise LoadError(f"{path}: not a readable image: not a single-file NIfTI-2 file")
        datatype, bitpix = struct.unpack(order + "hh", head[12:16])
        dim = struct.unpack(order + "8q", head[16:80])
        offset = struct.unpack(order + "q", head[168:176])[0]
    else:
        if len(head) < 348 or head[344:347] != b"n+1":
            raise LoadError(f"{path}: not a readable image: not a single-file NIfTI-1 file (magic 'n+1' missing)")
        dim = struct.unpack(order + "8h", head[40:56])
        datatype, bitpix = struct.unpack(order + "hh", head[70:74])
        offset = int(struct.unpack(order + "f", head[108:112])[0])
    if not 1 <= dim[0] <= 7 or min(dim[1 : dim[0] + 1]) < 0 or bitpix <= 0 or bitpix % 8:
        raise LoadError(f"{path}: not a readable image: invalid NIfTI header (dim {dim}, bitpix {bitpix})")
    float_type = _NIFTI_FLOATS.get(datatype)
    return list(dim[1 : dim[0] + 1]), bitpix // 8, offset, (order + float_type if float_type else None)


def _last_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


def _header(path: str) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileName(path)
    reader.LoadPrivateTagsOff()
    reader.ReadImageInformation()
    return reader


def _numbers(reader: sitk.ImageFileReader, tag: str) -> np.ndarray | None:
    if not reader.HasMetaDataKey(tag):
        return None
    try:
        return np.array([float(v) for v in reader.GetMetaData(tag).split("\\")])
    except ValueError:
        return None


def dicom_slice_order(folder: str | os.PathLike) -> tuple[list[str], float]:
    """The files of a one-series CT folder in slice order, and the slice spacing.

    Parameters
    ----------
    folder : path-like
        A folder holding the DICOM files of one CT series.

    Returns
    -------
    files : list of str
        The files sorted by position along the slice normal (increasing).
    spacing : float
        The distance between consecutive slices in mm.

    Raises
    ------
    LoadError
        Naming the folder: no DICOM files, a file outside the series, several series, non-CT
        modality, no rescale slope / intercept, one slice only, slices of different sizes, mixed
        orientations, slices not
        stacked along their normal, duplicate positions, missing slices, uneven spacing.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise LoadError(f"{folder}: not a folder of DICOM files")
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise LoadError(f"{folder}: no DICOM files in the folder")
    if len(series) > 1:
        sizes = [len(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), s)) for s in series]
        raise LoadError(
            f"{folder}: {len(series)} DICOM series in one folder (with {', '.join(map(str, sizes))} files); "
            "put each series in its own folder"
        )
    files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0]))
    members = {Path(f).name for f in files}
    strays = sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.name not in members)
    if strays:
        shown = ", ".join(strays[:3]) + (f" and {len(strays) - 3} more" if len(strays) > 3 else "")
        raise LoadError(
            f"{folder}: {shown} not part of the DICOM series (not a DICOM file, or a damaged slice); "
            "a series folder holds the series' files only"
        )
    if len(files) < 2:
        raise LoadError(f"{folder}: only {len(files)} DICOM slice; a CT series has several (multi-frame files are not supported)")

    orientations, positions, sizes = [], [], {}
    for name in files:
        try:
            header = _header(name)
        except RuntimeError as err:
            raise LoadError(f"{folder}: {Path(name).name} is not a readable DICOM file ({_last_line(err)})") from err
        sizes.setdefault(tuple(header.GetSize()[:2]), Path(name).name)
        if header.HasMetaDataKey(_MODALITY):
            modality = header.GetMetaData(_MODALITY).strip()
            if modality and modality != "CT":
                raise LoadError(f"{folder}: modality is '{modality}' in {Path(name).name}, not CT")
        if _numbers(header, _INTERCEPT) is None or _numbers(header, _SLOPE) is None:
            raise LoadError(
                f"{folder}: {Path(name).name} has no RescaleIntercept / RescaleSlope (0028,1052 / 0028,1053): "
                "its stored values cannot be turned into Hounsfield units"
            )
        orientation, position = _numbers(header, _ORIENTATION), _numbers(header, _POSITION)
        if orientation is None or orientation.size != 6 or position is None or position.size != 3:
            raise LoadError(f"{folder}: {Path(name).name} has no valid ImagePositionPatient/ImageOrientationPatient")
        orientations.append(orientation)
        positions.append(position)
    if len(sizes) > 1:  # one volume needs one slice size; reading would fail later, or stretch slices
        shown = ", ".join(f"{c} x {r} in {name}" for (c, r), name in sorted(sizes.items()))
        raise LoadError(f"{folder}: the slices differ in size (columns x rows: {shown})")
    orientations = np.array(orientations)
    if np.abs(orientations - orientations[0]).max() > 1e-3:
        raise LoadError(f"{folder}: the slices have different orientations (ImageOrientationPatient)")
    normal = np.cross(orientations[0][:3], orientations[0][3:])
    positions = np.array(positions)
    offsets = positions - positions[0]
    off_axis = np.linalg.norm(offsets - np.outer(offsets @ normal, normal), axis=1).max()
    if off_axis > STACK_TOLERANCE_MM:
        raise LoadError(
            f"{folder}: the slices are not stacked along their normal (shifted up to {off_axis:.2f} mm "
            "sideways: a gantry tilt or a sheared series); resample it to an axis-aligned grid first"
        )
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    along = along[order]
    gaps = np.diff(along)
    if gaps.min() < 1e-3:
        raise LoadError(f"{folder}: two slices at the same position ({along[np.argmin(gaps)]:.2f} mm along the normal)")
    spacing = float(np.median(gaps))
    wide = np.flatnonzero(gaps > MISSING_SLICE_FACTOR * spacing)
    if wide.size:
        i = wide[0]
        raise LoadError(
            f"{folder}: missing slice(s): a gap of {gaps[i]:.2f} mm between slices at {along[i]:.2f} and "
            f"{along[i + 1]:.2f} mm, where the spacing is {spacing:.2f} mm"
        )
    if np.abs(gaps - spacing).max() > SPACING_TOLERANCE * spacing:
        raise LoadError(
            f"{folder}: uneven slice spacing: gaps from {gaps.min():.3f} to {gaps.max():.3f} mm "
            f"(more than {SPACING_TOLERANCE:.0%} apart)"
        )
    return [files[i] for i in order], spacing


def read_dicom_series(folder: str | os.PathLike) -> sitk.Image:
    """Read a checked CT series (see :func:`dicom_slice_order`) as a SimpleITK image in HU.

    The image carries no DICOM tags; its pixel values have each file's rescale slope and
    intercept applied (as float32 so that no slope is truncated).
    """
    files, _ = dicom_slice_order(folder)
    reader = sitk.ImageSeriesReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileNames(files)
    reader.SetOutputPixelType(sitk.sitkFloat32)
    reader.MetaDataDictionaryArrayUpdateOff()
    reader.LoadPrivateTagsOff()
    try:
        return reader.Execute()
    except RuntimeError as err:
        raise LoadError(f"{folder}: the DICOM series could not be read ({_last_line(err)})") from err
