"""Loading DICOM series and NIfTI files as canonical HU volumes (sapsam_utils.data.loading)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from sapsam_utils.data.loading import AIR_HU, LoadError, dicom_slice_order, load_label, load_source
from sapsam_utils.core.paths import shared_ct_dir
from sapsam_utils.core.volume import to_sitk

SHARED = shared_ct_dir()
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"public CT cases not found at {SHARED}")
DICOM_CASE = SHARED / "lung-dx-a0002" / "dicom"
CASES = {
    # case: (source, shape (z, y, x), spacing (z, y, x))
    "lidc-idri-0001": ("ct.nii.gz", (133, 512, 512), (2.5, 0.703125, 0.703125)),
    "lidc-idri-0003": ("ct.nii.gz", (140, 512, 512), (2.5, 0.820312, 0.820312)),
    "lung-dx-a0001": ("ct.nii.gz", (64, 512, 512), (5.0, 0.841797, 0.841797)),
    "lung-dx-a0002": ("dicom", (30, 512, 512), (8.0, 0.646484, 0.646484)),
}


@pytest.fixture(scope="module")
def real_cases():
    if not SHARED.is_dir():
        pytest.skip(f"public CT cases not found at {SHARED}")
    out = {}
    for case, (source, _, _) in CASES.items():
        ct = load_source(f"{case}/{source}", SHARED)
        out[case] = (ct, load_label(f"{case}/lesions.nii.gz", SHARED, ct))
    return out


def _patch(path: Path, old: bytes, new: bytes) -> None:
    """Replace one byte string in a (copied) DICOM file by another of the same length."""
    assert len(old) == len(new)
    data = path.read_bytes()
    assert data.count(old) == 1, f"{old!r} occurs {data.count(old)} times in {path.name}"
    path.write_bytes(data.replace(old, new))


@pytest.fixture
def dicom_copy(tmp_path):
    """A writable copy of the real 30-slice DICOM series (the inputs are never modified)."""
    if not DICOM_CASE.is_dir():
        pytest.skip(f"public CT cases not found at {SHARED}")
    folder = tmp_path / "series"
    shutil.copytree(DICOM_CASE, folder)
    for f in folder.iterdir():
        f.chmod(0o644)
    return folder


def _raw_slice(path: Path) -> np.ndarray:
    """Stored pixels of an uncompressed 512 x 512 16-bit slice: the last bytes of the file."""
    data = path.read_bytes()
    return np.frombuffer(data[-512 * 512 * 2 :], dtype="<u2").reshape(512, 512).astype(np.int32)


# --- the four real cases ---------------------------------------------------------------------


@needs_shared
@pytest.mark.parametrize("case", sorted(CASES))
def test_real_case_grid_and_hu(real_cases, case):
    ct, lesions = real_cases[case]
    _, shape, spacing = CASES[case]
    assert ct.array.dtype == np.int16 and ct.array.shape == shape
    assert np.allclose(ct.spacing, spacing, atol=1e-4)
    assert ct.array.min() == AIR_HU  # padding (-2048 in LIDC) reads as air
    assert 1000 < ct.array.max() < 6000  # bone / metal
    lung = (ct.array > -950) & (ct.array < -700)
    assert lung.mean() > 0.05  # lungs fill a good part of a chest CT
    assert lesions.array.dtype == np.uint8 and lesions.array.shape == shape


@needs_shared
@pytest.mark.parametrize("case", sorted(CASES))
def test_real_case_spine_is_posterior(real_cases, case):
    """Axis 1 runs anterior -> posterior: the dense column present in every slice in the midline
    (the spine, and the couch under a supine patient) lies behind the middle of the body."""
    a = real_cases[case][0].array
    nx = a.shape[2]
    midline = a[:, :, int(0.45 * nx) : int(0.55 * nx)]
    slices_with_bone = (midline > 300).any(axis=2).sum(axis=0)  # per row y
    spine_y = int(np.argmax(slices_with_bone))
    assert slices_with_bone[spine_y] >= 0.9 * a.shape[0]
    body_y = np.nonzero(a[a.shape[0] // 2] > -400)[0].mean()
    assert spine_y > body_y + 15


@needs_shared
@pytest.mark.parametrize("case", sorted(CASES))
def test_real_case_lesions_lie_on_dense_tissue(real_cases, case):
    """Aligned lesion labels sit on tissue much denser than the lung around them."""
    from scipy import ndimage as ndi

    ct, lesions = real_cases[case]
    a = ct.array.astype(float)
    inside = lesions.array > 0
    ring = ndi.binary_dilation(inside, np.ones((1, 3, 3), bool), iterations=6) & ~inside
    assert a[inside].mean() > a[ring].mean() + 100
    assert a[inside].mean() > -550


@needs_shared
@pytest.mark.parametrize("case", ["lidc-idri-0001", "lidc-idri-0003"])
def test_lidc_nodule_centroids_fall_in_the_labels(real_cases, case):
    """lesions.csv gives each reader's nodule centroid in LPS mm: it lands on a labelled voxel."""
    ct, lesions = real_cases[case]
    table = pd.read_csv(SHARED / case / "lesions.csv")
    for _, row in table.iterrows():
        xyz = np.array([row.x_mm, row.y_mm, row.z_mm])
        index = np.rint((xyz - np.array(ct.origin)) / np.array(ct.spacing[::-1])).astype(int)[::-1]
        near = lesions.array[tuple(slice(max(i - 1, 0), i + 2) for i in index)]
        assert near.max() > 0, f"{case} {row.nodule}"


@needs_shared
@pytest.mark.parametrize("case", ["lung-dx-a0001", "lung-dx-a0002"])
def test_lung_dx_boxes_match_the_labels(real_cases, case):
    """lesions.csv gives the tumour box per slice (index in the sorted series, pixel corners)."""
    _, lesions = real_cases[case]
    table = pd.read_csv(SHARED / case / "lesions.csv")
    labelled = np.flatnonzero(lesions.array.any(axis=(1, 2)))
    assert sorted(labelled.tolist()) == sorted(table["slice"].tolist())
    for _, row in table.iterrows():
        ys, xs = np.nonzero(lesions.array[row["slice"]])
        assert (xs.min(), ys.min(), xs.max(), ys.max()) == (row.xmin, row.ymin, row.xmax, row.ymax)


@needs_shared
def test_dicom_orientation_and_rescale_match_the_raw_pixels(real_cases):
    """Slice 0 is the lowest (most inferior) file; rows/columns are the stored ones; HU = raw - 1024."""
    ct, _ = real_cases["lung-dx-a0002"]
    files = sorted(DICOM_CASE.iterdir())
    # the files' ImagePositionPatient z runs 80 ... 312 mm and their rows / columns run along
    # +y (posterior) / +x (patient's left), the canonical LPS axes: no flip is expected.
    assert ct.origin == pytest.approx((-173.1767578125, -294.1767578125, 80.0))
    for k in (0, 13, 29):
        raw = _raw_slice(files[k])  # RescaleSlope 1, RescaleIntercept -1024
        assert np.array_equal(ct.array[k].astype(np.int32), np.maximum(raw - 1024, AIR_HU))


# --- DICOM folder rules, on broken copies of the real series ------------------------------------


def test_file_names_do_not_decide_the_order(dicom_copy):
    if not DICOM_CASE.is_dir():
        pytest.skip("no DICOM case")
    reference = load_source(DICOM_CASE)
    files = sorted(dicom_copy.iterdir())
    for f in files:
        f.rename(f.with_name("tmp_" + f.name))
    for i, f in enumerate(sorted(dicom_copy.iterdir())):
        f.rename(dicom_copy / f"{(i * 7919) % 1000:04d}_{i}.dcm")  # scrambled names
    assert [Path(f).name for f in dicom_slice_order(dicom_copy)[0]] != sorted(p.name for p in dicom_copy.iterdir())
    loaded = load_source(dicom_copy)
    assert np.array_equal(loaded.array, reference.array)
    assert loaded.origin == reference.origin and loaded.spacing == reference.spacing


def test_each_files_rescale_intercept_is_applied(dicom_copy):
    files = sorted(dicom_copy.iterdir())
    _patch(files[10], b"-1024 ", b"-1000 ")  # (0028,1052) RescaleIntercept of one slice
    loaded = load_source(dicom_copy)
    raw = _raw_slice(files[10])
    assert np.array_equal(loaded.array[10].astype(np.int32), raw - 1000)
    assert np.array_equal(loaded.array[11].astype(np.int32), np.maximum(_raw_slice(files[11]) - 1024, AIR_HU))


def test_missing_slice_is_rejected(dicom_copy):
    (sorted(dicom_copy.iterdir())[14]).unlink()
    with pytest.raises(LoadError, match="missing slice") as err:
        load_source(dicom_copy)
    assert str(dicom_copy) in str(err.value)


def test_uneven_spacing_is_rejected(dicom_copy):
    target = sorted(dicom_copy.iterdir())[3]  # z = 104 mm -> 105 mm: gaps 9 and 7 mm
    _patch(target, b"\\104 ", b"\\105 ")
    with pytest.raises(LoadError, match="uneven slice spacing") as err:
        load_source(dicom_copy)
    assert str(dicom_copy) in str(err.value)


def test_two_series_in_one_folder_are_rejected(dicom_copy):
    uid = b"1.3.6.1.4.1.14519.5.2.1.6655.2359.207154000096236603057216610983"
    for f in sorted(dicom_copy.iterdir())[:5]:
        _patch(f, uid, uid[:-1] + b"4")  # (0020,000E) SeriesInstanceUID of a second series
    with pytest.raises(LoadError, match="2 DICOM series") as err:
        load_source(dicom_copy)
    assert str(dicom_copy) in str(err.value)


def test_non_ct_modality_is_rejected(dicom_copy):
    for f in dicom_copy.iterdir():
        _patch(f, b"\x08\x00\x60\x00CS\x02\x00CT", b"\x08\x00\x60\x00CS\x02\x00MR")
    with pytest.raises(LoadError, match="modality is 'MR'"):
        load_source(dicom_copy)


def test_duplicate_position_is_rejected(dicom_copy):
    files = sorted(dicom_copy.iterdir())
    _patch(files[3], b"\\104 ", b"\\112 ")  # now at the position of files[4]
    with pytest.raises(LoadError, match="same position"):
        load_source(dicom_copy)


def test_folder_without_dicom_files_is_rejected(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(LoadError, match="no DICOM files") as err:
        load_source(tmp_path)
    assert str(tmp_path) in str(err.value)


def test_missing_source_is_rejected(tmp_path):
    with pytest.raises(LoadError, match="does not exist"):
        load_source("nowhere.nii.gz", tmp_path)


def test_padding_in_raw_dicom_reads_as_air(dicom_copy):
    """A stored value of 0 with intercept -3024 is -3024 HU: out-of-field padding, set to -1024."""
    files = sorted(dicom_copy.iterdir())
    for f in files:
        _patch(f, b"-1024 ", b"-3024 ")  # every stored pixel reads 2000 HU lower
    loaded = load_source(dicom_copy)
    raw = _raw_slice(files[0])
    assert loaded.array.min() == AIR_HU
    assert np.array_equal(loaded.array[0].astype(np.int32), np.maximum(raw - 3024, AIR_HU))


# --- NIfTI rules ---------------------------------------------------------------------------------


def _write(array: np.ndarray, path: Path, spacing=(2.0, 1.0, 1.0), flip_xy=False) -> Path:
    """Write a (z, y, x) LPS array; ``flip_xy`` stores the same patient with x and y reversed."""
    image = sitk.GetImageFromArray(array[:, ::-1, ::-1].copy() if flip_xy else array)
    image.SetSpacing(tuple(reversed(spacing)))
    if flip_xy:  # RAS-like axes: index 0 is the patient's left / back, at the far corner in LPS mm
        image.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
        image.SetOrigin(((array.shape[2] - 1) * spacing[2], (array.shape[1] - 1) * spacing[1], 0.0))
    sitk.WriteImage(image, str(path))
    return path


def _toy_ct() -> np.ndarray:
    ct = np.full((6, 8, 10), -1000, np.int16)
    ct[1:5, 2:7, 1:9] = 40  # body
    ct[2:4, 3:5, 2:4] = -850  # right lung (low x)
    ct[0, 0, 0] = -2048  # padding
    return ct


def test_nifti_is_reoriented_to_lps(tmp_path):
    ct = _toy_ct()
    _write(ct, tmp_path / "lps.nii.gz")
    _write(ct, tmp_path / "ras.nii.gz", flip_xy=True)  # the same patient, other axes
    a = load_source("lps.nii.gz", tmp_path)
    b = load_source("ras.nii.gz", tmp_path)
    assert np.array_equal(a.array, b.array)
    assert np.allclose(a.origin, b.origin)
    assert a.array.dtype == np.int16 and a.spacing == (2.0, 1.0, 1.0)
    assert a.array[0, 0, 0] == AIR_HU and a.array[2, 3, 2] == -850


def test_nifti_float_values_are_rounded_to_int16(tmp_path):
    ct = _toy_ct().astype(np.float32) + 0.4
    loaded = load_source(_write(ct, tmp_path / "float.nii.gz"))
    assert loaded.array.dtype == np.int16 and loaded.array[1, 2, 1] == 40


def test_nifti_must_be_3d(tmp_path):
    path = _write(np.zeros((8, 9), np.int16), tmp_path / "flat.nii.gz")
    with pytest.raises(LoadError, match="3-D") as err:
        load_source(path)
    assert "flat.nii.gz" in str(err.value)
    four = sitk.JoinSeries([sitk.GetImageFromArray(_toy_ct())] * 2)
    sitk.WriteImage(four, str(tmp_path / "four.nii.gz"))
    with pytest.raises(LoadError, match="four.nii.gz: expected a 3-D volume"):
        load_source(tmp_path / "four.nii.gz")


def test_non_hu_image_is_rejected(tmp_path):
    path = _write(np.ones((4, 5, 6), np.float32), tmp_path / "normalised.nii.gz")
    with pytest.raises(LoadError, match="Hounsfield"):
        load_source(path)


def test_non_nifti_file_is_rejected(tmp_path):
    (tmp_path / "scan.png").write_bytes(b"\x89PNG")
    with pytest.raises(LoadError, match="not NIfTI"):
        load_source("scan.png", tmp_path)


def test_labels_must_share_the_ct_grid(tmp_path):
    ct_path = _write(_toy_ct(), tmp_path / "ct.nii.gz")
    ct = load_source(ct_path)
    labels = np.zeros((6, 8, 10), np.uint8)
    labels[2:4, 3:5, 2:4] = 1
    good = load_label(_write(labels, tmp_path / "good.nii.gz"), tmp_path, ct)
    assert good.array.dtype == np.uint8 and good.array.sum() == 8
    # a label volume stored with other axes is reoriented like its CT and lands on its voxels
    flipped = load_label(_write(labels, tmp_path / "ras.nii.gz", flip_xy=True), tmp_path, ct)
    assert np.array_equal(flipped.array, labels)
    with pytest.raises(LoadError, match="label spacing"):
        load_label(_write(labels, tmp_path / "coarse.nii.gz", spacing=(3.0, 1.0, 1.0)), tmp_path, ct)
    with pytest.raises(LoadError, match="label grid"):
        load_label(_write(labels[:5], tmp_path / "short.nii.gz"), tmp_path, ct)
    with pytest.raises(LoadError, match="integers 0..255"):
        load_label(_write(labels.astype(np.float32) * 0.5, tmp_path / "soft.nii.gz"), tmp_path, ct)


def test_loaded_volume_carries_nothing_but_voxels_and_geometry(dicom_copy, tmp_path):
    """Privacy: neither the Volume nor a NIfTI written from it holds the DICOM patient tags."""
    from sapsam_utils.core.volume import write_volume

    loaded = load_source(dicom_copy)
    assert set(vars(loaded)) == {"array", "spacing", "origin"}
    out = write_volume(loaded, tmp_path / "ct.nii.gz")
    written = sitk.ReadImage(str(out))
    assert not any(k.startswith("0010|") for k in written.GetMetaDataKeys())
    import gzip

    assert b"Lung_Dx" not in gzip.decompress(out.read_bytes())
    assert to_sitk(loaded).GetMetaDataKeys() == ()


def test_slices_of_different_sizes_are_rejected(dicom_copy):
    target = sorted(dicom_copy.iterdir())[7]
    _patch(target, b"(\x00\x10\x00US\x02\x00\x00\x02", b"(\x00\x10\x00US\x02\x00\x00\x01")  # (0028,0010) Rows 512 -> 256
    with pytest.raises(LoadError, match=rf"slices differ in size \(columns x rows: 512 x 256 in {target.name}, "
                                        r"512 x 512 in .*\)") as err:
        load_source(dicom_copy)
    assert str(dicom_copy) in str(err.value)
