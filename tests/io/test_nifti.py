"""NIfTI reading and writing: values, world coordinates, and every bad input the issue names."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from xprospect.errors import (
    EmptyFileError,
    ImageFormatError,
    InvalidValuesError,
    MissingDataError,
    OutputExistsError,
)
from xprospect.image import Volume
from xprospect.io import read_nifti, read_volume, write_nifti


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_round_trip_keeps_hu_and_world_coordinates(tmp_path, phantom, suffix):
    path = write_nifti(phantom.volume, tmp_path / f"ct{suffix}")
    back = read_nifti(path)
    np.testing.assert_array_equal(back.array, np.rint(phantom.volume.array))
    np.testing.assert_allclose(back.affine, phantom.volume.affine, atol=1e-5)
    for name in phantom.landmarks:
        world = phantom.landmark_world_mm(name)
        ijk = np.rint(back.world_to_index(world)).astype(int)
        np.testing.assert_array_equal(ijk, phantom.landmarks[name])
        assert back.array[tuple(ijk)] == phantom.volume.array[phantom.landmarks[name]]


def test_written_file_is_what_nibabel_reads_independently(tmp_path, phantom):
    path = write_nifti(phantom.volume, tmp_path / "ct.nii.gz")
    img = nib.load(str(path))
    assert img.header.get_sform(coded=True)[1] == 1
    assert img.header.get_qform(coded=True)[1] == 1
    np.testing.assert_allclose(img.affine, phantom.volume.affine, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(img.dataobj), phantom.volume.array.astype(np.int16))
    assert nib.aff2axcodes(img.affine) == ("I", "P", "L")


def test_scaled_int16_stays_integer_and_float_scaling_is_applied(tmp_path):
    hu = np.arange(-1024, -1024 + 4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    img = nib.Nifti1Image((hu + 1024).astype(np.int16), np.eye(4))
    img.header.set_slope_inter(1.0, -1024.0)
    nib.save(img, str(tmp_path / "shift.nii.gz"))
    v = read_nifti(tmp_path / "shift.nii.gz")
    assert v.array.dtype == np.int16
    np.testing.assert_array_equal(v.array, hu)

    img = nib.Nifti1Image(np.arange(24, dtype=np.int16).reshape(2, 3, 4), np.eye(4))
    img.header.set_slope_inter(0.5, 10.0)
    nib.save(img, str(tmp_path / "scaled.nii"))
    v = read_nifti(tmp_path / "scaled.nii")
    assert v.array.dtype == np.float32
    np.testing.assert_allclose(v.array, np.arange(24).reshape(2, 3, 4) * 0.5 + 10.0)


def test_multimember_gzip_is_read_whole(tmp_path, phantom):
    path = write_nifti(phantom.volume, tmp_path / "ct.nii")
    raw = path.read_bytes()
    half = len(raw) // 2
    (tmp_path / "multi.nii.gz").write_bytes(gzip.compress(raw[:half]) + gzip.compress(raw[half:]))
    np.testing.assert_array_equal(
        read_nifti(tmp_path / "multi.nii.gz").array, read_nifti(path).array
    )


def test_singleton_4d_is_squeezed(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6, 1), np.int16), np.eye(4)), str(tmp_path / "a.nii"))
    assert read_nifti(tmp_path / "a.nii").shape == (4, 5, 6)


@pytest.mark.parametrize("shape", [(8, 9), (4, 5, 6, 3)])
def test_2d_and_4d_are_refused(tmp_path, shape):
    path = tmp_path / "bad.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), np.eye(4)), str(path))
    with pytest.raises(ImageFormatError, match=rf"expected a 3D volume.*{len(shape)}D"):
        read_nifti(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_and_inf_are_refused(tmp_path, bad):
    a = np.zeros((4, 5, 6), np.float32)
    a[1, 2, 3] = bad
    path = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(a, np.eye(4)), str(path))
    with pytest.raises(InvalidValuesError, match=r"1 of 120 voxels are NaN or Inf") as err:
        read_nifti(path)
    assert str(path) in str(err.value)


def test_empty_missing_truncated_and_garbage_files(tmp_path, phantom):
    empty = tmp_path / "empty.nii.gz"
    empty.write_bytes(b"")
    with pytest.raises(EmptyFileError, match="empty"):
        read_nifti(empty)
    with pytest.raises(MissingDataError, match="no such file"):
        read_nifti(tmp_path / "absent.nii")
    good = write_nifti(phantom.volume, tmp_path / "good.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(good[: len(good) // 2])
    with pytest.raises(ImageFormatError, match="truncated"):
        read_nifti(tmp_path / "cut.nii.gz")
    (tmp_path / "junk.nii").write_bytes(b"this is not a nifti header" * 20)
    with pytest.raises(ImageFormatError, match=r"junk\.nii"):
        read_volume(tmp_path / "junk.nii")


def test_write_refuses_to_overwrite_when_asked_and_is_atomic(tmp_path, phantom):
    path = write_nifti(phantom.volume, tmp_path / "ct.nii.gz")
    before = path.read_bytes()
    with pytest.raises(OutputExistsError):
        write_nifti(phantom.volume, path, overwrite=False)
    assert path.read_bytes() == before
    bad = Volume.from_spacing(np.zeros((2, 2, 2)), 1.0)
    with pytest.raises(ImageFormatError, match=r"\.nii"):
        write_nifti(bad, tmp_path / "ct.nrrd")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.nii.gz"]


def test_float_output_keeps_fractions(tmp_path):
    v = Volume.from_spacing(np.full((3, 3, 3), 0.25, np.float32), 2.0)
    back = read_nifti(write_nifti(v, tmp_path / "f.nii", dtype="float32"))
    np.testing.assert_allclose(back.array, 0.25)
    np.testing.assert_allclose(back.spacing_mm, (2.0, 2.0, 2.0))


def test_itk_places_written_nifti_landmarks_at_our_world_coordinates(tmp_path, phantom):
    """ITK (what ITK-SNAP and 3D Slicer read with) sees the same physical landmark positions."""
    itk = pytest.importorskip("itk")
    path = write_nifti(phantom.volume, tmp_path / "ct.nii.gz")
    image = itk.imread(str(path))
    arr = itk.array_view_from_image(image)  # ITK arrays are (k, j, i) of NIfTI's (i, j, k)
    for name, ijk in phantom.landmarks.items():
        lps = np.asarray(image.TransformIndexToPhysicalPoint([int(v) for v in ijk]))
        ras = lps * np.array([-1.0, -1.0, 1.0])
        np.testing.assert_allclose(ras, phantom.landmark_world_mm(name), atol=1e-4)
        assert arr[ijk[2], ijk[1], ijk[0]] == phantom.volume.array[ijk]
