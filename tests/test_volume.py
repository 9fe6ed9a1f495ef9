"""Canonical orientation and NIfTI round trips."""

import numpy as np
import pytest
import SimpleITK as sitk

from sapsam_utils.core.volume import Volume, from_sitk, read_volume, to_sitk, write_volume


def test_round_trip_keeps_values_and_geometry(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
    vol = Volume(array, (2.5, 0.7, 0.8), (-10.0, 20.0, 30.0))
    path = write_volume(vol, tmp_path / "ct.nii.gz")
    back = read_volume(path)
    np.testing.assert_array_equal(back.array, array)
    assert back.spacing == pytest.approx(vol.spacing)
    assert back.origin == pytest.approx(vol.origin)
    assert [p.name for p in tmp_path.iterdir()] == ["ct.nii.gz"]  # no temporary file left


def test_from_sitk_reorients_to_lps():
    # Index axes running towards the patient's right (-x) and anterior (-y): an "RAS" grid.
    array = np.zeros((2, 3, 4), np.int16)
    array[0, 0, 0] = 7
    image = sitk.GetImageFromArray(array)
    image.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    vol = from_sitk(image)
    assert vol.array.shape == (2, 3, 4)
    # Its voxel (0, 0, 0) is the most left and most posterior one: in LPS, the last column and row.
    assert vol.array[0, 2, 3] == 7
    np.testing.assert_allclose(np.array(to_sitk(vol).GetDirection()), np.eye(3).ravel())


def test_read_volume_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.nii.gz"):
        read_volume(tmp_path / "missing.nii.gz")
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.nii.gz"):
        read_volume(bad)
    with pytest.raises(ValueError, match="3-D"):
        Volume(np.zeros((3, 3)), (1, 1, 1))
