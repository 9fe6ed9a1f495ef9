"""A CT volume with its geometry, in the study's one canonical orientation.

Every volume in the study (CT in HU, lung masks, sign truth, lesion labels) is held as a
:class:`Volume` whose array axes are ``(z, y, x)`` in the LPS patient frame:

* ``z`` (axis 0): inferior -> superior (index 0 is the lowest slice, towards the feet);
* ``y`` (axis 1): anterior -> posterior (row 0 is at the front of the chest);
* ``x`` (axis 2): patient's right -> patient's left (column 0 is on the patient's right).

So ``array[k]`` is an axial slice shown in the radiological convention (patient's right on the
image's left, anterior at the top), and the "left" sub-regions are the patient's left lung.
This is what SimpleITK gives for an image reoriented with ``DICOMOrient(image, "LPS")``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .files import atomic_file

CANONICAL_ORIENTATION = "LPS"


@dataclass(frozen=True)
class Volume:
    """A 3-D array on a grid of the patient frame.

    Attributes
    ----------
    array : numpy.ndarray
        Voxel values, axes ``(z, y, x)`` as described in the module docstring.
    spacing : tuple of float
        Voxel size in millimetres, in array order ``(z, y, x)``.
    origin : tuple of float
        Position (mm, LPS, ITK order ``(x, y, z)``) of the centre of voxel ``[0, 0, 0]``.
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self):
        if self.array.ndim != 3:
            raise ValueError(f"a Volume is 3-D, got an array of shape {self.array.shape}")
        if len(self.spacing) != 3 or min(self.spacing) <= 0:
            raise ValueError(f"spacing must be three positive millimetre sizes, got {self.spacing}")

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres."""
        return float(np.prod(self.spacing)) / 1000.0

    def like(self, array: np.ndarray) -> "Volume":
        """A volume on the same grid holding ``array`` (e.g. a mask of this CT)."""
        if array.shape != self.array.shape:
            raise ValueError(f"array shape {array.shape} differs from the grid {self.array.shape}")
        return Volume(array, self.spacing, self.origin)


def from_sitk(image: sitk.Image) -> Volume:
    """Reorient a SimpleITK image to LPS and return it as a :class:`Volume`.

    Parameters
    ----------
    image : SimpleITK.Image
        A 3-D scalar image with any axis-aligned direction.

    Returns
    -------
    Volume
        The same voxels, axes ``(z, y, x)`` in LPS.
    """
    if image.GetDimension() != 3:
        raise ValueError(f"expected a 3-D image, got {image.GetDimension()}-D")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError("expected a scalar image, got a multi-component one")
    oriented = sitk.DICOMOrient(image, CANONICAL_ORIENTATION)
    direction = np.array(oriented.GetDirection()).reshape(3, 3)
    if not np.allclose(direction, np.eye(3), atol=1e-3):
        raise ValueError(
            "the image axes are oblique to the patient frame (direction "
            f"{np.round(direction, 3).tolist()}); resample it to an axis-aligned grid first"
        )
    array = sitk.GetArrayFromImage(oriented)
    spacing = tuple(float(s) for s in reversed(oriented.GetSpacing()))
    return Volume(array, spacing, tuple(float(o) for o in oriented.GetOrigin()))


def to_sitk(volume: Volume) -> sitk.Image:
    """The :class:`Volume` as a SimpleITK image with identity (LPS) direction."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.array))
    image.SetSpacing(tuple(reversed(volume.spacing)))
    image.SetOrigin(volume.origin)
    return image


def read_volume(path: str | os.PathLike) -> Volume:
    """Read a 3-D NIfTI (or any SimpleITK single-file format) as a canonical :class:`Volume`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as err:
        raise ValueError(f"{path}: not a readable image ({str(err).strip().splitlines()[-1]})") from err
    if image.GetDimension() != 3:
        raise ValueError(f"{path}: expected a 3-D volume, got a {image.GetDimension()}-D image of size {image.GetSize()}")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"{path}: expected one value per voxel, got {image.GetNumberOfComponentsPerPixel()}")
    return from_sitk(image)


def write_volume(volume: Volume, path: str | os.PathLike) -> Path:
    """Write a :class:`Volume` atomically (a temporary file renamed into place).

    A reader never sees a half-written file, and an interrupted write leaves nothing behind.
    Only the voxels and the geometry are written: no patient metadata travels with them.
    """
    with atomic_file(path) as tmp:
        sitk.WriteImage(to_sitk(volume), str(tmp), useCompression=True)
    return Path(path)


def subsample_inplane(ct: Volume, stride: int) -> Volume:
    """Every ``stride``-th voxel along y and x (no averaging, so the noise and the HU distribution
    are those of the original scan): a fine real scan measured in a fraction of the time."""
    if stride == 1:
        return ct
    return Volume(ct.array[:, ::stride, ::stride], (ct.spacing[0], ct.spacing[1] * stride, ct.spacing[2] * stride), ct.origin)
