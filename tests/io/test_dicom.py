"""DICOM CT series and CR/DX radiographs: geometry, values, bad input, and a real CR."""

from __future__ import annotations

import math
import re
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from hostile_inputs import save_dicom
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEGLSLossless,
    MRImageStorage,
    generate_uid,
)

from xprospect.errors import (
    ConfigError,
    DicomError,
    DicomSeriesError,
    EmptyFileError,
    MissingDataError,
    ModalityError,
    OutputExistsError,
    UnsupportedFormatError,
)
from xprospect.image import View, Volume
from xprospect.io.dicom import (
    DicomWarning,
    dicom_modality,
    is_dicom,
    list_dicom_series,
    read_dicom_header,
    read_dicom_radiograph,
    read_dicom_series,
    voi_window,
    write_dicom_series,
)
from xprospect.phantoms import asymmetric_phantom
from xprospect.phantoms.asymmetric import BONE_HU, HEART_HU, LIVER_HU

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)

# --------------------------------------------------------------------------------------------
# Hand-made datasets
# --------------------------------------------------------------------------------------------


def _ct_slice(
    path: Path,
    *,
    position: Sequence[float],
    series_uid: str,
    stored: np.ndarray | None = None,
    instance: int = 1,
    modality: str = "CT",
    iop: Sequence[float] = AXIAL,
    pixel_spacing: Sequence[float] = (0.5, 0.8),
    slope: float = 1.0,
    intercept: float = -1024.0,
    thickness: float | None = 2.5,
    sop_uid: str | None = None,
    frames: int | None = None,
    sop_class: str | None = None,
) -> Path:
    """One classic CT (or MR) slice: uint16 pixels, 6 rows x 4 columns unless ``stored`` says."""
    if stored is None:
        stored = np.arange(24, dtype=np.uint16).reshape(6, 4) + 1000
    ds = Dataset()
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.StudyInstanceUID = "1.2.3.4"
    ds.SeriesDescription = f"hand-made {modality}"
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "ID123"
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [str(v) for v in position]
    ds.ImageOrientationPatient = [str(v) for v in iop]
    ds.PixelSpacing = [str(v) for v in pixel_spacing]
    if thickness is not None:
        ds.SliceThickness = str(thickness)
    ds.RescaleSlope = str(slope)
    ds.RescaleIntercept = str(intercept)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape[-2:]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    if frames is not None:
        ds.NumberOfFrames = frames
    ds.PixelData = stored.astype("<u2").tobytes()
    if sop_class is None:
        sop_class = MRImageStorage if modality == "MR" else CTImageStorage
    return save_dicom(ds, path, sop_class)


def _axial_series(
    folder: Path, zs: Sequence[float], *, series_uid: str | None = None, **kwargs: Any
) -> list[Path]:
    uid = series_uid or generate_uid()
    return [
        _ct_slice(
            folder / f"slice{n:03d}.dcm",
            position=(-100.0, -120.0, z),
            series_uid=uid,
            instance=n + 1,
            **kwargs,
        )
        for n, z in enumerate(zs)
    ]


def _cr(
    path: Path,
    stored: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    modality: str = "CR",
    window: tuple[float, float] | None = None,
    voi_function: str | None = None,
    orientation: Sequence[str] | None = None,
    view: str | None = "PA",
    pixel_spacing: Sequence[float] | None = (0.2, 0.2),
    imager_spacing: Sequence[float] | None = None,
    presentation_shape: str | None = None,
    voi_lut: tuple[Sequence[int], Sequence[int]] | None = None,
    lut_vr: str = "US",
    frames: int | None = None,
) -> Path:
    ds = Dataset()
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = modality
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "Doe^John"
    if view is not None:
        ds.ViewPosition = view
    if orientation is not None:
        ds.PatientOrientation = list(orientation)
    if pixel_spacing is not None:
        ds.PixelSpacing = [str(v) for v in pixel_spacing]
    if imager_spacing is not None:
        ds.ImagerPixelSpacing = [str(v) for v in imager_spacing]
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = str(window[0]), str(window[1])
    if voi_function is not None:
        ds.VOILUTFunction = voi_function
    if presentation_shape is not None:
        ds.PresentationLUTShape = presentation_shape
    if voi_lut is not None:
        item = Dataset()
        item.add_new(0x00283002, "US", list(voi_lut[0]))  # LUTDescriptor
        if lut_vr == "OW":
            item.add_new(0x00283006, "OW", np.asarray(voi_lut[1], dtype="<u2").tobytes())
        else:
            item.add_new(0x00283006, "US", list(voi_lut[1]))  # LUTData
        item.LUTExplanation = "test LUT"
        ds.VOILUTSequence = [item]
    if frames is not None:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = stored.shape[-2:]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = stored.astype("<u2").tobytes()
    return save_dicom(ds, path, ComputedRadiographyImageStorage)


def _read_quietly(folder: Path, **kwargs: Any) -> Volume:
    with warnings.catch_warnings():
        warnings.simplefilter("error", DicomWarning)
        return read_dicom_series(folder, **kwargs)


# --------------------------------------------------------------------------------------------
# Round trips with the phantom
# --------------------------------------------------------------------------------------------


def _voxel_map(src: Volume, dst: Volume) -> tuple[np.ndarray, ...]:
    """For every voxel of ``src``, the index of the voxel of ``dst`` at the same world point."""
    idx = np.indices(src.shape).reshape(3, -1).T
    found = dst.world_to_index(src.index_to_world(idx))
    nearest = np.rint(found)
    np.testing.assert_allclose(found, nearest, atol=1e-3)
    as_int = nearest.astype(np.intp)
    assert np.all(as_int >= 0) and np.all(as_int < np.asarray(dst.shape))
    assert len(np.unique(as_int, axis=0)) == src.array.size  # one-to-one
    return tuple(as_int.T)


def _check_files_against(volume: Volume, folder: Path) -> None:
    """Checks every written pixel with the standard's own equation (PS3.3 C.7.6.2.1.1), not the
    reader: P = IPP + row cosine * column spacing * c + column cosine * row spacing * r (LPS)."""
    lps_to_ras = np.array([-1.0, -1.0, 1.0])
    for f in sorted(folder.iterdir()):
        ds = pydicom.dcmread(f)
        ipp = np.array([float(v) for v in ds.ImagePositionPatient])
        iop = np.array([float(v) for v in ds.ImageOrientationPatient])
        row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
        r, c = np.indices((ds.Rows, ds.Columns)).reshape(2, -1)
        lps = ipp + np.outer(c * col_spacing, iop[:3]) + np.outer(r * row_spacing, iop[3:])
        found = volume.world_to_index(lps * lps_to_ras)
        nearest = np.rint(found)
        np.testing.assert_allclose(found, nearest, atol=1e-3)
        expected = volume.array[tuple(nearest.astype(np.intp).T)]
        np.testing.assert_array_equal(ds.pixel_array.reshape(-1), np.round(expected))


def _flip_transpose(volume: Volume, flips: Sequence[int], perm: Sequence[int]) -> Volume:
    """Same world content, array flipped then transposed, with the affine worked out by hand."""
    a = volume.array
    affine = volume.affine.copy()
    for axis in flips:
        # b[.., j, ..] = a[.., n - 1 - j, ..]: index j of b is index n - 1 - j of a.
        f = np.eye(4)
        f[axis, axis] = -1.0
        f[axis, 3] = a.shape[axis] - 1
        affine = affine @ f
        a = np.flip(a, axis=axis)
    # c = b.transpose(perm): index q of c is index p of b with p[perm[m]] = q[m].
    p = np.zeros((4, 4))
    p[3, 3] = 1.0
    for m, src_axis in enumerate(perm):
        p[src_axis, m] = 1.0
    return Volume(np.ascontiguousarray(a.transpose(perm)), affine @ p, source="transformed")


def _rotation(deg_x: float, deg_z: float) -> np.ndarray:
    cx, sx = math.cos(math.radians(deg_x)), math.sin(math.radians(deg_x))
    cz, sz = math.cos(math.radians(deg_z)), math.sin(math.radians(deg_z))
    rx = np.array([[1, 0, 0, 0], [0, cx, -sx, 0], [0, sx, cx, 0], [0, 0, 0, 1]])
    rz = np.array([[cz, -sz, 0, 0], [sz, cz, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    return rz @ rx


def test_phantom_round_trip_keeps_hu_and_landmark_world_positions(tmp_path):
    ph = asymmetric_phantom()
    folder = write_dicom_series(ph.volume, tmp_path / "ct")
    assert folder == tmp_path / "ct"
    _check_files_against(ph.volume, folder)
    back = _read_quietly(folder)

    assert back.array.dtype == np.int16
    assert sorted(back.shape) == sorted(ph.volume.shape)
    np.testing.assert_allclose(sorted(back.spacing_mm), sorted(ph.volume.spacing_mm), atol=1e-6)
    where = _voxel_map(ph.volume, back)
    np.testing.assert_array_equal(back.array[where], np.round(ph.volume.array).reshape(-1))

    expected_hu = {"heart": HEART_HU, "spine": BONE_HU, "liver": LIVER_HU, "apex_marker": BONE_HU}
    for name, ijk in ph.landmarks.items():
        world = ph.landmark_world_mm(name)
        found = back.world_to_index(world)
        idx = np.rint(found).astype(int)
        np.testing.assert_allclose(found, idx, atol=1e-3)
        np.testing.assert_allclose(back.index_to_world(idx), world, atol=1e-3)
        assert back.array[tuple(idx)] == ph.volume.array[ijk] == expected_hu[name], name


@pytest.mark.parametrize(
    ("flips", "perm", "rotate"),
    [
        ((1,), (2, 0, 1), False),
        ((0, 2), (1, 2, 0), False),
        ((), (0, 1, 2), True),
        ((2,), (0, 2, 1), True),
    ],
)
def test_non_canonical_and_oblique_volumes_round_trip_world_coordinates(
    tmp_path, flips, perm, rotate
):
    ph = asymmetric_phantom()
    vol = _flip_transpose(ph.volume, flips, perm)
    rot = _rotation(20.0, 30.0) if rotate else np.eye(4)
    vol = vol.replace(affine=rot @ vol.affine)

    # The transformed volume must put each landmark where the (rotated) phantom has it.
    for name, ijk in ph.landmarks.items():
        idx = list(ijk)
        for axis in flips:
            idx[axis] = ph.volume.shape[axis] - 1 - idx[axis]
        new_idx = tuple(idx[a] for a in perm)
        np.testing.assert_allclose(
            vol.index_to_world(new_idx),
            (rot @ np.append(ph.landmark_world_mm(name), 1.0))[:3],
            atol=1e-9,
        )
        assert vol.array[new_idx] == ph.volume.array[ijk]

    folder = write_dicom_series(vol, tmp_path / "ct")
    _check_files_against(vol, folder)
    back = _read_quietly(folder)
    where = _voxel_map(vol, back)
    np.testing.assert_array_equal(back.array[where], np.round(vol.array).reshape(-1))
    assert back.is_oblique == rotate


def test_written_series_has_standard_tags_fresh_uids_and_no_patient_data(tmp_path):
    ph = asymmetric_phantom()
    folder = write_dicom_series(ph.volume, tmp_path / "a", series_description="phantom")
    files = sorted(folder.iterdir())
    assert len(files) == ph.volume.shape[0]  # axis 0 (I/S) is the one along world z
    headers = [pydicom.dcmread(f) for f in files]
    assert all(is_dicom(f) for f in files)
    assert len({h.SOPInstanceUID for h in headers}) == len(files)
    assert len({h.SeriesInstanceUID for h in headers}) == 1
    assert len({h.StudyInstanceUID for h in headers}) == 1
    assert len({h.FrameOfReferenceUID for h in headers}) == 1
    assert sorted(int(h.InstanceNumber) for h in headers) == list(range(1, len(files) + 1))
    for h in headers:
        assert h.SOPClassUID == CTImageStorage
        assert h.file_meta.MediaStorageSOPInstanceUID == h.SOPInstanceUID
        assert h.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert (h.BitsAllocated, h.BitsStored, h.HighBit, h.PixelRepresentation) == (16, 16, 15, 1)
        assert (float(h.RescaleSlope), float(h.RescaleIntercept), h.RescaleType) == (1, 0, "HU")
        assert list(h.ImageType) == ["DERIVED", "SECONDARY", "AXIAL"]
        assert (float(h.WindowCenter), float(h.WindowWidth)) == (40, 400)
        assert float(h.SliceThickness) == float(h.SpacingBetweenSlices) == 4.0
        assert [float(v) for v in h.PixelSpacing] == [3.0, 2.5]
        assert h.SeriesDescription == "phantom"
        assert (str(h.PatientName), h.PatientID) == ("Anonymous", "xprospect")
        assert not h.PatientBirthDate and not h.PatientSex and not h.StudyDate
        assert h.PatientIdentityRemoved == "YES"
    again = pydicom.dcmread(next(write_dicom_series(ph.volume, tmp_path / "b").iterdir()))
    assert again.SeriesInstanceUID != headers[0].SeriesInstanceUID
    assert again.StudyInstanceUID != headers[0].StudyInstanceUID


def test_writer_rounds_and_clips_to_int16(tmp_path):
    hu = np.array([0.4, 0.6, -1.6, 40000.0, -40000.0, 2.2], dtype=np.float32).reshape(1, 2, 3)
    vol = Volume.from_spacing(hu, (2.0, 1.0, 1.0))
    with pytest.warns(DicomWarning, match="2 voxel"):
        folder = write_dicom_series(vol, tmp_path / "s")
    stored = pydicom.dcmread(next(folder.iterdir())).pixel_array
    assert stored.dtype == np.int16
    back = _read_quietly(folder)
    where = _voxel_map(vol, back)
    np.testing.assert_array_equal(back.array[where], [0, 1, -2, 32767, -32768, 2])


def test_patient_tags_only_when_asked(tmp_path):
    ph = asymmetric_phantom()
    anon = _read_quietly(write_dicom_series(ph.volume, tmp_path / "anon"))
    assert anon.metadata["patient"] == {"PatientName": "Anonymous", "PatientID": "xprospect"}
    assert "PatientName" not in anon.metadata and "PatientID" not in anon.metadata

    person = {
        "PatientName": "Doe^Jane",
        "PatientID": "ID42",
        "PatientBirthDate": "19700101",
        "PatientSex": "F",
        "StudyDate": "20240102",
    }
    copied = write_dicom_series(
        ph.volume.replace(metadata={"patient": person}), tmp_path / "copy", copy_patient=True
    )
    assert _read_quietly(copied).metadata["patient"] == person
    assert "PatientIdentityRemoved" not in pydicom.dcmread(next(copied.iterdir()))

    given = write_dicom_series(ph.volume, tmp_path / "given", patient={"PatientID": "P7"})
    assert _read_quietly(given).metadata["patient"] == {
        "PatientName": "Anonymous",
        "PatientID": "P7",
    }
    with pytest.raises(ConfigError, match="PatientAddress"):
        write_dicom_series(ph.volume, tmp_path / "bad", patient={"PatientAddress": "x"})
    with pytest.warns(DicomWarning, match="no metadata"):
        write_dicom_series(ph.volume, tmp_path / "none", copy_patient=True)


def test_existing_folder_needs_overwrite(tmp_path):
    ph = asymmetric_phantom()
    folder = write_dicom_series(ph.volume, tmp_path / "s")
    first_uid = pydicom.dcmread(next(folder.iterdir())).SeriesInstanceUID
    with pytest.raises(OutputExistsError):
        write_dicom_series(ph.volume, folder)
    assert pydicom.dcmread(next(folder.iterdir())).SeriesInstanceUID == first_uid
    write_dicom_series(ph.volume, folder, overwrite=True)
    assert pydicom.dcmread(next(folder.iterdir())).SeriesInstanceUID != first_uid
    assert len(list(folder.iterdir())) == ph.volume.shape[0]


# --------------------------------------------------------------------------------------------
# Reading hand-made series
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("iop", "positions", "expected"),
    [
        (
            AXIAL,
            [(-100.0, -120.0, 10.0 + 2.5 * k) for k in range(4)],
            # k along +z (superior); rows along LPS +y (posterior, RAS -y) at 0.5 mm;
            # columns along LPS +x (patient left, RAS -x) at 0.8 mm.
            [[0, 0, -0.8, 100], [0, -0.5, 0, 120], [2.5, 0, 0, 10], [0, 0, 0, 1]],
        ),
        (
            (1.0, 0.0, 0.0, 0.0, 0.0, -1.0),  # coronal: columns to the left, rows to the feet
            [(-100.0, 30.0 + 3.0 * k, 50.0) for k in range(4)],
            # normal = (1,0,0) x (0,0,-1) = (0,1,0): posterior, 3 mm apart.
            [[0, 0, -0.8, 100], [-3.0, 0, 0, -30], [0, -0.5, 0, 50], [0, 0, 0, 1]],
        ),
    ],
)
def test_affine_from_hand_made_series(tmp_path, iop, positions, expected):
    uid = generate_uid()
    for n, pos in enumerate(positions):
        _ct_slice(tmp_path / f"{n}.dcm", position=pos, series_uid=uid, iop=iop)
    vol = _read_quietly(tmp_path)
    np.testing.assert_allclose(vol.affine, expected, atol=1e-9)
    assert vol.shape == (4, 6, 4)


def test_non_dicom_files_are_skipped_and_counted(tmp_path):
    ph = asymmetric_phantom()
    folder = write_dicom_series(ph.volume, tmp_path / "s")
    (folder / "notes.txt").write_text("not an image\n")
    (folder / "README").write_text("readme")
    (folder / "empty.dcm").write_bytes(b"")
    (folder / "sub").mkdir()
    (folder / "sub" / "junk.bin").write_bytes(bytes(300))
    no_pixels = Dataset()
    no_pixels.SOPInstanceUID = generate_uid()
    no_pixels.Modality = "SR"
    no_pixels.SeriesInstanceUID = generate_uid()
    save_dicom(no_pixels, folder / "sub" / "report.dcm", "1.2.840.10008.5.1.4.1.1.88.11")

    vol = _read_quietly(folder)
    assert vol.metadata["skipped_files"] == 5
    assert vol.metadata["n_files"] == ph.volume.shape[0]
    np.testing.assert_array_equal(np.sort(vol.array, axis=None), np.sort(ph.volume.array, None))
    (info,) = list_dicom_series(folder)
    assert (info.n_files, info.skipped_files, info.modality) == (32, 5, "CT")
    assert info.patient_id == "xprospect" and info.description == "xprospect"
    assert info.files == tuple(sorted(folder.glob("IM*.dcm")))

    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.txt").write_text("a")
    (junk / "b.dcm").write_bytes(b"")
    with pytest.raises(MissingDataError, match="2 file"):
        read_dicom_series(junk)
    assert list_dicom_series(junk) == []
    with pytest.raises(MissingDataError, match="no such folder"):
        read_dicom_series(tmp_path / "nowhere")


def test_two_series_picks_largest_and_warns(tmp_path):
    ph = asymmetric_phantom()
    big = write_dicom_series(ph.volume, tmp_path / "big", series_description="big")
    small_vol = ph.volume.replace(array=ph.volume.array[:16])
    small = write_dicom_series(small_vol, tmp_path / "small", series_description="small")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for tag, src in (("b", big), ("s", small)):
        for f in src.iterdir():
            shutil.copy(f, mixed / f"{tag}_{f.name}")
    uid_big = pydicom.dcmread(next(big.iterdir())).SeriesInstanceUID
    uid_small = pydicom.dcmread(next(small.iterdir())).SeriesInstanceUID

    with pytest.warns(DicomWarning, match=rf"{re.escape(uid_small)}.*'small' \(16 slices\)"):
        vol = read_dicom_series(mixed)
    assert vol.shape[0] == 32 and vol.metadata["series_uid"] == uid_big
    picked = _read_quietly(mixed, series_uid=uid_small)
    assert picked.shape[0] == 16 and picked.metadata["series_description"] == "small"
    with pytest.raises(MissingDataError) as err:
        read_dicom_series(mixed, series_uid="1.2.3")
    assert uid_big in str(err.value) and uid_small in str(err.value)
    assert [(s.uid, s.n_files) for s in list_dicom_series(mixed)] == [
        (uid_big, 32),
        (uid_small, 16),
    ]


def test_missing_middle_slice_is_reported_as_gap(tmp_path):
    ph = asymmetric_phantom()
    folder = write_dicom_series(ph.volume, tmp_path / "s")
    files = sorted(folder.iterdir())
    positions = {f.name: float(pydicom.dcmread(f).SliceLocation) for f in files}
    gone = files[15]
    gone.unlink()
    with pytest.raises(DicomSeriesError, match="missing slice") as err:
        read_dicom_series(folder)
    message = str(err.value)
    assert "gap of 8.0 mm" in message and "spacing elsewhere 4.0 mm" in message
    for neighbour in (files[14], files[16]):
        assert neighbour.name in message
        assert f"z={positions[neighbour.name]:.3f}" in message


def test_irregular_spacing_and_duplicates_are_errors(tmp_path):
    _axial_series(tmp_path / "irregular", [0.0, 2.5, 5.0, 8.2, 10.7, 13.2])
    with pytest.raises(DicomSeriesError, match=r"irregular slice spacing: step of 3\.2 mm"):
        read_dicom_series(tmp_path / "irregular")

    files = _axial_series(tmp_path / "dup", [0.0, 2.5, 5.0, 5.0, 7.5])
    with pytest.raises(DicomSeriesError, match=r"duplicate slice position z=5\.000") as err:
        read_dicom_series(tmp_path / "dup")
    assert files[2].name in str(err.value) and files[3].name in str(err.value)


def test_mixed_orientation_or_size_or_tilt_is_an_error(tmp_path):
    files = _axial_series(tmp_path / "iop", [0.0, 2.5, 5.0])
    _ct_slice(
        files[1],
        position=(-100.0, -120.0, 2.5),
        series_uid=str(pydicom.dcmread(files[0]).SeriesInstanceUID),
        iop=(1.0, 0.0, 0.0, 0.0, 0.0, -1.0),
    )
    with pytest.raises(DicomSeriesError, match="ImageOrientationPatient") as err:
        read_dicom_series(tmp_path / "iop")
    assert files[1].name in str(err.value)

    files = _axial_series(tmp_path / "size", [0.0, 2.5, 5.0])
    uid = str(pydicom.dcmread(files[0]).SeriesInstanceUID)
    _ct_slice(files[2], position=(-100, -120, 5.0), series_uid=uid, stored=np.zeros((5, 4)))
    with pytest.raises(DicomSeriesError, match="image size 5x4"):
        read_dicom_series(tmp_path / "size")

    uid = generate_uid()
    for k in range(4):  # each slice shifted 1 mm forward: a tilted gantry
        _ct_slice(
            tmp_path / "tilt" / f"{k}.dcm", position=(-100, -120 + k, 2.5 * k), series_uid=uid
        )
    with pytest.raises(DicomSeriesError, match="gantry-tilted"):
        read_dicom_series(tmp_path / "tilt")


def test_modality_check(tmp_path):
    _axial_series(tmp_path, [0.0, 2.5, 5.0], modality="MR")
    with pytest.raises(ModalityError, match="'MR'"):
        read_dicom_series(tmp_path)
    assert _read_quietly(tmp_path, modality=None).metadata["modality"] == "MR"
    assert _read_quietly(tmp_path, modality=("CT", "MR")).shape == (3, 6, 4)


def test_truncated_slice_names_the_file(tmp_path):
    ph = asymmetric_phantom()
    folder = write_dicom_series(ph.volume, tmp_path / "s")
    victim = sorted(folder.iterdir())[10]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    with pytest.raises(DicomError, match=re.escape(victim.name)) as err:
        read_dicom_series(folder)
    assert err.value.path == str(victim)


def test_compressed_without_decoder_suggests_extras(tmp_path):
    ds = Dataset()
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "CR"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = 4
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = encapsulate([b"\xff\xd8 not really JPEG-LS \xff\xd9"])
    ds["PixelData"].VR = "OB"
    path = save_dicom(ds, tmp_path / "c.dcm", ComputedRadiographyImageStorage, JPEGLSLossless)
    with pytest.raises(DicomError, match=r"xprospect\[dicom\]"):
        read_dicom_radiograph(path)


def test_shuffled_names_and_per_slice_rescale(tmp_path):
    uid = generate_uid()
    pattern = np.arange(24, dtype=np.int64).reshape(6, 4)
    intercepts = [-1024.0, -1000.0, -900.0, 0.0, 7.0]
    names = ["q.dcm", "b.dcm", "z.dcm", "a.dcm", "m.dcm"]  # not in slice order
    for k, (intercept, name) in enumerate(zip(intercepts, names, strict=True)):
        hu = 100 * k + pattern  # what slice k must read as
        _ct_slice(
            tmp_path / name,
            position=(-100.0, -120.0, 40.0 - 2.5 * (4 - k)),
            series_uid=uid,
            instance=5 - k,  # reversed, so instance numbers cannot be what sorts
            stored=(hu - intercept).astype(np.uint16),
            intercept=intercept,
        )
    vol = _read_quietly(tmp_path)
    assert vol.array.dtype == np.int16
    np.testing.assert_array_equal(vol.array, 100 * np.arange(5)[:, None, None] + pattern)
    np.testing.assert_allclose(
        vol.index_to_world([[k, 0, 0] for k in range(5)])[:, 2],
        [30.0, 32.5, 35.0, 37.5, 40.0],
        atol=1e-9,
    )


def test_fractional_rescale_gives_float32(tmp_path):
    stored = np.arange(24, dtype=np.uint16).reshape(6, 4)
    _axial_series(tmp_path / "a", [0.0, 2.5], stored=stored, slope=2.0, intercept=-10.0)
    vol = _read_quietly(tmp_path / "a")
    assert vol.array.dtype == np.float32
    np.testing.assert_allclose(vol.array, np.stack([2.0 * stored - 10.0] * 2), rtol=0, atol=0)
    _axial_series(tmp_path / "b", [0.0, 2.5], stored=stored, intercept=-0.5)
    vol = _read_quietly(tmp_path / "b")
    assert vol.array.dtype == np.float32
    np.testing.assert_allclose(vol.array, np.stack([stored - 0.5] * 2), rtol=0, atol=0)


def test_single_slice_needs_thickness(tmp_path):
    _axial_series(tmp_path / "a", [7.0], thickness=3.0)
    vol = _read_quietly(tmp_path / "a")
    assert vol.shape == (1, 6, 4)
    np.testing.assert_allclose(vol.spacing_mm, (3.0, 0.5, 0.8), atol=1e-9)
    _axial_series(tmp_path / "b", [7.0], thickness=None)
    with pytest.raises(DicomSeriesError, match="SliceThickness"):
        read_dicom_series(tmp_path / "b")


def test_multi_frame_is_unsupported(tmp_path):
    _ct_slice(
        tmp_path / "mf.dcm",
        position=(0.0, 0.0, 0.0),
        series_uid=generate_uid(),
        stored=np.zeros((3, 6, 4), dtype=np.uint16),
        frames=3,
    )
    with pytest.raises(UnsupportedFormatError, match="multi-frame"):
        read_dicom_series(tmp_path)
    enhanced = tmp_path / "enhanced"
    _ct_slice(
        enhanced / "e.dcm",
        position=(0.0, 0.0, 0.0),
        series_uid=generate_uid(),
        frames=1,
        sop_class="1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image Storage
    )
    with pytest.raises(UnsupportedFormatError, match="enhanced"):
        read_dicom_series(enhanced)


def test_series_in_nested_folders_is_found(tmp_path):
    _axial_series(tmp_path / "patient" / "study" / "series1", [0.0, 2.5, 5.0])
    vol = _read_quietly(tmp_path)
    assert vol.shape == (3, 6, 4) and vol.metadata["n_files"] == 3
    _axial_series(tmp_path / "patient" / "study" / "series2", [2.5, 7.5])
    with pytest.warns(DicomWarning, match="2 series"):
        assert read_dicom_series(tmp_path).shape[0] == 3


# --------------------------------------------------------------------------------------------
# Radiographs
# --------------------------------------------------------------------------------------------


def _linear_reference(x: np.ndarray, c: float, w: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 with y_min = 0 and y_max = 1, written as its three cases."""
    return np.select(
        [x <= c - 0.5 - (w - 1) / 2, x > c - 0.5 + (w - 1) / 2],
        [0.0, 1.0],
        ((x - (c - 0.5)) / (w - 1) + 0.5),
    )


def test_voi_window_formulas_match_the_standard():
    c, w = 2048.0, 1001.0
    x = np.array([0, 1547, 1547.5, 1548, 1800, 2047.5, 2048, 2300, 2547, 2547.5, 2548, 4095.0])
    np.testing.assert_allclose(voi_window(x, c, w), _linear_reference(x, c, w), atol=1e-12)
    # Hand-picked: the ramp starts just above c - 0.5 - (w - 1)/2 = 1547.5 and reaches 1 at 2547.5.
    np.testing.assert_allclose(
        voi_window([1547.5, 2047.5, 2547.5], c, w), [0.0, 0.5, 1.0], atol=1e-12
    )
    exact = [c - w / 2, c - w / 4, c, c + w / 4, c + w / 2, c + w]
    np.testing.assert_allclose(
        voi_window(exact, c, w, "LINEAR_EXACT"), [0.0, 0.25, 0.5, 0.75, 1.0, 1.0], atol=1e-12
    )
    sig = [1.0 / (1.0 + math.exp(-4.0 * (v - c) / w)) for v in x]
    np.testing.assert_allclose(voi_window(x, c, w, "SIGMOID"), sig, rtol=1e-12)
    np.testing.assert_allclose(
        voi_window([c, c + w / 4], c, w, "SIGMOID"), [0.5, 1 / (1 + 1 / math.e)]
    )
    with pytest.raises(ValueError, match=">= 1"):
        voi_window(x, c, 0.5)


def _pattern(rows: int = 6, cols: int = 8) -> np.ndarray:
    return (np.arange(rows * cols, dtype=np.uint16).reshape(rows, cols) * 37 + 200) % 4000


@pytest.mark.parametrize("function", [None, "LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_cr_window_and_monochrome1_inversion(tmp_path, function):
    stored = _pattern()
    c, w = 1500.0, 2001.0
    mono2 = read_dicom_radiograph(
        _cr(
            tmp_path / "m2.dcm",
            stored,
            window=(c, w),
            voi_function=function,
            pixel_spacing=(0.2, 0.3),
        )
    )
    mono1 = read_dicom_radiograph(
        _cr(
            tmp_path / "m1.dcm",
            stored,
            photometric="MONOCHROME1",
            window=(c, w),
            voi_function=function,
            pixel_spacing=(0.2, 0.3),
        )
    )
    x = stored.astype(np.float64)
    if function in (None, "LINEAR"):
        expected = _linear_reference(x, c, w)
    elif function == "LINEAR_EXACT":
        expected = np.clip((x - c) / w + 0.5, 0, 1)
    else:
        expected = 1.0 / (1.0 + np.exp(-4.0 * (x - c) / w))
    assert mono2.array.dtype == np.float32
    np.testing.assert_allclose(mono2.array, expected, atol=1e-6)
    np.testing.assert_allclose(mono1.array, 1.0 - expected, atol=1e-6)
    assert mono1.metadata["photometric_interpretation"] == "MONOCHROME1"
    assert mono1.metadata["bits_stored"] == 12
    assert mono1.metadata["voi"] == "window" and mono1.metadata["inverted"] is True
    assert mono1.metadata["voi_lut_function"] == (function or "LINEAR")
    assert mono2.pixel_spacing_mm == (0.2, 0.3)
    assert mono2.view is View.PA


def test_presentation_lut_inverse_inverts_once(tmp_path):
    stored = _pattern()
    plain = read_dicom_radiograph(_cr(tmp_path / "a.dcm", stored)).array
    inverse = read_dicom_radiograph(_cr(tmp_path / "b.dcm", stored, presentation_shape="INVERSE"))
    np.testing.assert_allclose(inverse.array, 1.0 - plain, atol=1e-7)
    both = read_dicom_radiograph(
        _cr(tmp_path / "c.dcm", stored, photometric="MONOCHROME1", presentation_shape="INVERSE")
    )
    np.testing.assert_allclose(both.array, 1.0 - plain, atol=1e-7)


@pytest.mark.parametrize("lut_vr", ["US", "OW"])
def test_cr_voi_lut_sequence_and_minmax(tmp_path, lut_vr):
    stored = _pattern()
    lut = [16 * i for i in range(256)]
    r = read_dicom_radiograph(
        _cr(tmp_path / "lut.dcm", stored, voi_lut=([256, 1000, 12], lut), lut_vr=lut_vr)
    )
    expected = 16 * np.clip(stored.astype(np.int64) - 1000, 0, 255) / 4095.0
    np.testing.assert_allclose(r.array, expected, atol=1e-6)
    assert r.metadata["voi"] == "lut"

    mm = read_dicom_radiograph(_cr(tmp_path / "mm.dcm", stored))
    x = stored.astype(np.float64)
    np.testing.assert_allclose(mm.array, (x - x.min()) / (x.max() - x.min()), atol=1e-6)
    assert mm.metadata["voi"] == "minmax"


@pytest.mark.parametrize(
    ("orientation", "view", "expected", "flipped"),
    [
        (["L", "F"], "PA", lambda a: a, []),
        (["R", "F"], "PA", lambda a: a[:, ::-1], ["horizontal"]),
        (["L", "H"], "AP", lambda a: a[::-1, :], ["vertical"]),
        (["R", "H"], "PA", lambda a: a[::-1, ::-1], ["vertical", "horizontal"]),
        (["P", "F"], "LL", lambda a: a, []),
        (["A", "F"], "LL", lambda a: a[:, ::-1], ["horizontal"]),
        (["F", "L"], "PA", lambda a: a.T, []),
    ],
)
def test_cr_orientation_flips(tmp_path, orientation, view, expected, flipped):
    stored = _pattern()
    as_stored = read_dicom_radiograph(_cr(tmp_path / "plain.dcm", stored, view=view)).array
    r = read_dicom_radiograph(
        _cr(
            tmp_path / "o.dcm", stored, orientation=orientation, view=view, pixel_spacing=(0.2, 0.3)
        )
    )
    np.testing.assert_array_equal(r.array, expected(as_stored))
    assert r.metadata["flipped"] == flipped
    assert r.metadata["patient_orientation"] == orientation
    assert r.pixel_spacing_mm == ((0.3, 0.2) if orientation[0] == "F" else (0.2, 0.3))


def test_cr_pixel_spacing_fallbacks_and_view(tmp_path):
    stored = _pattern()
    r = read_dicom_radiograph(
        _cr(tmp_path / "a.dcm", stored, pixel_spacing=(0, 0), imager_spacing=(0.15, 0.16))
    )
    assert r.pixel_spacing_mm == (0.15, 0.16)
    assert r.metadata["pixel_spacing_source"] == "ImagerPixelSpacing"
    with pytest.warns(DicomWarning, match="b.dcm.*pixel spacing unknown"):
        r = read_dicom_radiograph(_cr(tmp_path / "b.dcm", stored, view="LL", pixel_spacing=None))
    assert r.pixel_spacing_mm is None and r.view is View.LATERAL
    r = read_dicom_radiograph(_cr(tmp_path / "c.dcm", stored, view="XYZ", pixel_spacing=(1, 1)))
    assert r.view is View.UNKNOWN
    r = read_dicom_radiograph(tmp_path / "c.dcm", view="AP")
    assert r.view is View.AP


def test_cr_bad_inputs(tmp_path):
    ct = _ct_slice(tmp_path / "ct.dcm", position=(0, 0, 0), series_uid=generate_uid())
    with pytest.raises(ModalityError, match="'CT'"):
        read_dicom_radiograph(ct)
    rgb = _cr(tmp_path / "rgb.dcm", _pattern(), photometric="PALETTE COLOR")
    with pytest.raises(UnsupportedFormatError, match="greyscale"):
        read_dicom_radiograph(rgb)
    mf = _cr(tmp_path / "mf.dcm", np.zeros((2, 6, 8), dtype=np.uint16), frames=2)
    with pytest.raises(UnsupportedFormatError, match="multi-frame"):
        read_dicom_radiograph(mf)
    (tmp_path / "empty.dcm").write_bytes(b"")
    with pytest.raises(EmptyFileError):
        read_dicom_radiograph(tmp_path / "empty.dcm")
    good = _cr(tmp_path / "cut.dcm", np.zeros((64, 64), dtype=np.uint16))
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2])
    with pytest.raises(DicomError, match=r"cut\.dcm"):
        read_dicom_radiograph(good)
    (tmp_path / "a.txt").write_text("hello")
    with pytest.raises(UnsupportedFormatError, match="not a DICOM file"):
        read_dicom_radiograph(tmp_path / "a.txt")
    with pytest.raises(MissingDataError):
        read_dicom_radiograph(tmp_path / "nope.dcm")


def test_is_dicom_and_header_helpers(tmp_path):
    cr = _cr(tmp_path / "x.dcm", _pattern())
    (tmp_path / "t.txt").write_text("just text, " * 40)
    (tmp_path / "e").write_bytes(b"")
    assert is_dicom(cr)
    assert not is_dicom(tmp_path / "t.txt")
    assert not is_dicom(tmp_path / "e")
    assert not is_dicom(tmp_path / "missing")
    assert not is_dicom(tmp_path)
    assert dicom_modality(cr) == "CR"
    assert "PixelData" not in read_dicom_header(cr)
    with pytest.raises(UnsupportedFormatError):
        dicom_modality(tmp_path / "t.txt")


def test_preamble_less_files_are_read(tmp_path):
    stored = _pattern()
    ds = pydicom.dcmread(_cr(tmp_path / "with.dcm", stored))
    del ds.file_meta
    ds.preamble = None
    raw = tmp_path / "raw"
    pydicom.dcmwrite(raw, ds, implicit_vr=True, little_endian=True, enforce_file_format=False)
    assert raw.read_bytes()[:2] == b"\x08\x00" and is_dicom(raw)
    x = stored.astype(np.float64)
    np.testing.assert_allclose(
        read_dicom_radiograph(raw).array, (x - x.min()) / (x.max() - x.min()), atol=1e-6
    )


def _rg1_path() -> Path:
    from xprospect.data.samples import sample_cr
    from xprospect.errors import MissingDataError

    try:
        return sample_cr()
    except MissingDataError as exc:
        pytest.skip(str(exc))


@pytest.mark.realdata
def test_real_cr_rg1_unci_has_dark_lungs():
    path = _rg1_path()
    with pytest.warns(DicomWarning, match="RG1_UNCI.dcm.*pixel spacing unknown"):
        r = read_dicom_radiograph(path)
    assert r.metadata["photometric_interpretation"] == "MONOCHROME1"
    assert r.view is View.PA and r.pixel_spacing_mm is None
    assert r.array.dtype == np.float32 and r.shape == (1955, 1841)
    assert float(r.array.min()) >= 0.0 and float(r.array.max()) <= 1.0
    assert "PatientName" not in r.metadata and r.metadata["patient"]["PatientID"] == "9RG1"

    a = r.array
    h, w = a.shape
    rows = slice(int(0.3 * h), int(0.6 * h))
    right_lung = a[rows, int(0.2 * w) : int(0.4 * w)].mean()
    left_lung = a[rows, int(0.6 * w) : int(0.8 * w)].mean()
    mediastinum = a[rows, int(0.45 * w) : int(0.55 * w)].mean()
    abdomen = a[int(0.85 * h) :].mean()
    lungs = (right_lung + left_lung) / 2
    assert lungs < mediastinum - 0.1
    assert lungs < abdomen - 0.1
