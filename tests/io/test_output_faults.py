"""The writers on a full disk and at existing paths: a typed error naming the user's path, the
previous file (or series) intact and readable, no temporary file left behind.

The disk is filled by :func:`faults.full_disk`: files opened for writing under a folder raise
``OSError(ENOSPC)`` once a byte budget is spent, after writing what fit, as a full file system
does.
"""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from faults import full_disk, leftovers

from xprospect.errors import OutputError, OutputExistsError
from xprospect.image import Volume
from xprospect.io import read_nifti, read_radiograph, read_volume, write_nifti, write_png
from xprospect.io.dicom import write_dicom_series


def _noise(seed: int = 0, n: int = 32) -> Volume:
    """A volume that compresses badly, so a small budget cannot hold it."""
    rng = np.random.default_rng(seed)
    return Volume(rng.normal(0, 400, (n, n, n)).astype(np.float32), np.diag([2.0, 2.0, 2.0, 1.0]))


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("budget", [0, 300, 20_000])
def test_nifti_on_a_full_disk_keeps_the_previous_file(tmp_path, monkeypatch, suffix, budget):
    path = write_nifti(_noise(0), tmp_path / f"ct{suffix}")
    before = path.read_bytes()
    with full_disk(monkeypatch, tmp_path, budget), pytest.raises(OutputError) as exc:
        write_nifti(_noise(1), path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}: ") and "disk full" in msg and ".tmp" not in msg
    assert "\n" not in msg
    assert path.read_bytes() == before
    np.testing.assert_array_equal(read_nifti(path).array, read_nifti(path).array)  # loadable
    assert leftovers(tmp_path) == [] and sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_new_nifti_on_a_full_disk_leaves_nothing(tmp_path, monkeypatch):
    with full_disk(monkeypatch, tmp_path, 1000), pytest.raises(OutputError, match="nothing was"):
        write_nifti(_noise(), tmp_path / "new.nii.gz")
    assert list(tmp_path.iterdir()) == []


def test_png_on_a_full_disk_keeps_the_previous_file(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    path = write_png(rng.random((64, 64)), tmp_path / "x.png", bits=16)
    before = path.read_bytes()
    with full_disk(monkeypatch, tmp_path, 100), pytest.raises(OutputError, match="disk full"):
        write_png(rng.random((64, 64)), path, bits=16)
    assert path.read_bytes() == before and read_radiograph(path).shape == (64, 64)
    assert leftovers(tmp_path) == []


def test_dicom_series_on_a_full_disk_keeps_the_previous_series(tmp_path, monkeypatch, phantom):
    folder = write_dicom_series(phantom.volume, tmp_path / "series")
    names = sorted(p.name for p in folder.iterdir())
    uid = pydicom.dcmread(folder / names[0]).SeriesInstanceUID
    # Room for a few slices, not all: the failure comes part-way through the series.
    with full_disk(monkeypatch, tmp_path, 5 * 3000), pytest.raises(OutputError) as exc:
        write_dicom_series(phantom.volume, folder, overwrite=True)
    assert str(exc.value).startswith(f"{folder}: ") and "disk full" in str(exc.value)
    assert "existing folder is unchanged" in str(exc.value)
    assert sorted(p.name for p in folder.iterdir()) == names
    assert pydicom.dcmread(folder / names[0]).SeriesInstanceUID == uid
    assert read_volume(folder).shape == phantom.volume.shape
    assert leftovers(tmp_path) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["series"]


def test_writers_asked_not_to_overwrite_leave_files_and_link_targets_alone(tmp_path, phantom):
    nii = write_nifti(phantom.volume, tmp_path / "a.nii.gz")
    before = nii.read_bytes()
    with pytest.raises(OutputExistsError, match="pass --overwrite"):
        write_nifti(_noise(), nii, overwrite=False)
    link = tmp_path / "b.nii.gz"
    link.symlink_to(nii)
    with pytest.raises(OutputExistsError, match="symbolic link"):
        write_nifti(_noise(), link, overwrite=False)
    write_nifti(_noise(), link, overwrite=True)  # replaces the link, not what it points to
    assert not link.is_symlink() and nii.read_bytes() == before
    png = tmp_path / "c.png"
    png.symlink_to(nii)
    with pytest.raises(OutputExistsError):
        write_png(np.zeros((4, 4)), png, overwrite=False)
    assert nii.read_bytes() == before and leftovers(tmp_path) == []
