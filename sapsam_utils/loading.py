"""Read a manifest ``source`` (DICOM series folder or NIfTI file) as a canonical HU volume.

Every CT comes out as a :class:`~sapsam_utils.volume.Volume` of int16 Hounsfield units in the
study's one orientation (axes ``(z, y, x)`` in LPS: inferior -> superior, anterior -> posterior,
patient's right -> left; see :mod:`sapsam_utils.volume`). Label volumes (``lung_mask``,
``lesion_mask``) go through the same reading and reorientation, so they stay voxel-aligned with
their CT; :func:`load_label` checks that their grid is the CT's.

DICOM series
    All files of the folder must form **one** series of CT slices. Slices are ordered by their
    position along the slice normal (``ImagePositionPatient`` projected on the cross product of
    the ``ImageOrientationPatient`` row and column directions), never by file name. The folder is
    rejected, with an error naming it, when it holds no DICOM file, several series, a non-CT
    modality, one slice only, slices of different orientations, two slices at one position,
    missing slices (a gap larger than 1.5 times the usual spacing) or uneven spacing (gaps that
    differ by more than 2 %). SimpleITK's GDCM reader applies each file's rescale slope and
    intercept (tested against the raw stored pixels), so the values are HU.

Out-of-field padding
    Scanners mark voxels outside the reconstruction circle with values such as -2048 or -3024,
    and some store air below -1024. Every value below :data:`AIR_HU` (-1024 HU) is set to -1024,
    the lowest value of the CT scale (air). Padding then reads as air, the same for DICOM and NIfTI.
    Float images are rounded to whole HU. An image with no voxel below -900 (no air at all) is
    rejected: it is not a chest CT in HU (e.g. a normalised or a label image).

Privacy
    Only the voxels and the geometry (spacing, origin) leave this module. The DICOM tags read to
    check the series (modality, series, position, orientation) are never logged or returned;
    patient names, ids and dates are never read.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .manifest import resolve_path, source_kind
from .volume import Volume, from_sitk, read_volume

#: The lowest HU value kept: air. Padding and anything darker is set to it.
AIR_HU = -1024
#: A gap between slices larger than this many times the usual spacing means missing slices.
MISSING_SLICE_FACTOR = 1.5
#: Gaps between slices may differ from the usual spacing by this fraction at most.
SPACING_TOLERANCE = 0.02

_MODALITY, _SERIES, _POSITION, _ORIENTATION = "0008|0060", "0020|000e", "0020|0032", "0020|0037"


class LoadError(ValueError):
    """A source that cannot be read as a CT volume; the message names the file or folder."""


def load_source(source: str | os.PathLike, base_dir: str | os.PathLike = ".") -> Volume:
    """Read a DICOM series folder or a NIfTI file as an int16 HU volume in LPS.

    Parameters
    ----------
    source : path-like
        A DICOM series folder or a ``.nii`` / ``.nii.gz`` file (``phantom:`` sources are made by
        :func:`sapsam_utils.phantom.make_phantom`, not read).
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
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise LoadError(f"{path}: the image holds NaN or infinite values")
        array = np.rint(array)
    if array.size and array.min() > -900:
        raise LoadError(f"{path}: no voxel below -900 (no air): is this a CT in Hounsfield units?")
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
    if array.size and (array.min() < 0 or array.max() > 255 or not np.array_equal(array, np.rint(array))):
        raise LoadError(f"{path}: a label volume holds integers 0..255, found values in [{array.min()}, {array.max()}]")
    if array.shape != like.array.shape:
        raise LoadError(f"{path}: label grid {array.shape} differs from the CT's {like.array.shape}")
    if not np.allclose(volume.spacing, like.spacing, rtol=1e-4, atol=1e-4):
        raise LoadError(f"{path}: label spacing {volume.spacing} differs from the CT's {like.spacing}")
    if not np.allclose(volume.origin, like.origin, atol=1e-2 * min(like.spacing)):
        raise LoadError(f"{path}: label origin {volume.origin} differs from the CT's {like.origin}")
    return like.like(array.astype(np.uint8))


def _file_kind(path: Path) -> str:
    try:
        return source_kind(str(path))
    except ValueError as err:
        raise LoadError(str(err)) from err


def _read(path: Path, kind: str) -> Volume:
    """A DICOM series or a NIfTI file as a canonical :class:`Volume`; errors as :class:`LoadError`."""
    if kind == "dicom":
        return from_sitk(read_dicom_series(path))
    try:
        return read_volume(path)
    except (FileNotFoundError, ValueError) as err:
        raise LoadError(str(err)) from err


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
        Naming the folder: no DICOM files, several series, non-CT modality, one slice only,
        mixed orientations, duplicate positions, missing slices, uneven spacing.
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
    if len(files) < 2:
        raise LoadError(f"{folder}: only {len(files)} DICOM slice; a CT series has several (multi-frame files are not supported)")

    orientations, positions = [], []
    for name in files:
        try:
            header = _header(name)
        except RuntimeError as err:
            raise LoadError(f"{folder}: {Path(name).name} is not a readable DICOM file ({_last_line(err)})") from err
        if header.HasMetaDataKey(_MODALITY):
            modality = header.GetMetaData(_MODALITY).strip()
            if modality and modality != "CT":
                raise LoadError(f"{folder}: modality is '{modality}' in {Path(name).name}, not CT")
        orientation, position = _numbers(header, _ORIENTATION), _numbers(header, _POSITION)
        if orientation is None or orientation.size != 6 or position is None or position.size != 3:
            raise LoadError(f"{folder}: {Path(name).name} has no valid ImagePositionPatient/ImageOrientationPatient")
        orientations.append(orientation)
        positions.append(position)
    orientations = np.array(orientations)
    if np.abs(orientations - orientations[0]).max() > 1e-3:
        raise LoadError(f"{folder}: the slices have different orientations (ImageOrientationPatient)")
    normal = np.cross(orientations[0][:3], orientations[0][3:])
    along = np.array(positions) @ normal
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
