"""Limits before allocation: every reader refuses a header that implies more than the limits
before it reads a pixel, bounds decompression, and refuses implausible spacing."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
from hostile_inputs import (
    cr_dicom,
    ct_series,
    ct_slice_dicom,
    nifti_claiming,
    nifti_volume,
    png_claiming,
)
from PIL import Image

from xprospect.errors import (
    ConfigError,
    GeometryError,
    ImageFormatError,
    ResourceLimitError,
    XprospectError,
)
from xprospect.io import read_nifti, read_radiograph, read_volume, read_x2ct_case, resolve_limits
from xprospect.io.dicom import read_dicom_radiograph, read_dicom_series
from xprospect.io.limits import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_VOXELS,
    check_spacing,
    check_volume_size,
    format_bytes,
)

REPO = Path(__file__).resolve().parents[2]

# === The limits themselves ===


def test_defaults_env_and_keywords(monkeypatch):
    for var in ("XPROSPECT_MAX_VOXELS", "XPROSPECT_MAX_BYTES", "XPROSPECT_MAX_PIXELS"):
        monkeypatch.delenv(var, raising=False)
    lim = resolve_limits()
    assert (lim.max_voxels, lim.max_bytes, lim.max_pixels) == (
        DEFAULT_MAX_VOXELS,
        DEFAULT_MAX_BYTES,
        DEFAULT_MAX_PIXELS,
    )
    assert DEFAULT_MAX_VOXELS == 2**31 and DEFAULT_MAX_BYTES == 8 * 2**30
    monkeypatch.setenv("XPROSPECT_MAX_VOXELS", "1_000")
    monkeypatch.setenv("XPROSPECT_MAX_BYTES", "16G")
    monkeypatch.setenv("XPROSPECT_MAX_PIXELS", "4 MiB")
    lim = resolve_limits()
    assert (lim.max_voxels, lim.max_bytes, lim.max_pixels) == (1000, 16 * 2**30, 4 * 2**20)
    assert resolve_limits(max_voxels=5).max_voxels == 5  # the keyword wins


@pytest.mark.parametrize("value", ["lots", "-5", "0", "1.5G", "12 parsecs"])
def test_a_bad_environment_value_is_a_config_error_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv("XPROSPECT_MAX_VOXELS", value)
    with pytest.raises(ConfigError, match="XPROSPECT_MAX_VOXELS"):
        resolve_limits()


@pytest.mark.parametrize("value", [0, -1, 2.5, True, "10"])
def test_a_bad_keyword_is_a_config_error(value):
    with pytest.raises(ConfigError, match="max_bytes"):
        resolve_limits(max_bytes=value)  # type: ignore[arg-type]


def test_size_check_names_the_shape_the_limit_and_the_way_out():
    with pytest.raises(ResourceLimitError) as info:
        check_volume_size((10000, 10000, 10000), 2, "ct.nii", what="NIfTI header")
    text = str(info.value)
    assert text.startswith("ct.nii: NIfTI header claims 10000 x 10000 x 10000")
    assert "XPROSPECT_MAX_VOXELS" in text and "\n" not in text
    lim = resolve_limits(max_voxels=2**40, max_bytes=2**30)
    with pytest.raises(ResourceLimitError, match="XPROSPECT_MAX_BYTES"):
        check_volume_size((1024, 1024, 512), 4, "ct.nii", limits=lim)
    check_volume_size((512, 512, 600), 4, "ct.nii")  # a real CT passes the defaults
    assert format_bytes(1536) == "1.5 KiB" and format_bytes(8 * 2**30) == "8 GiB"


@pytest.mark.parametrize(
    "spacing", [(1e6, 1, 1), (0, 1, 1), (-1, 1, 1), (np.nan, 1, 1), (np.inf, 1, 1), (1e-9, 1, 1)]
)
def test_implausible_spacing_is_refused(spacing):
    with pytest.raises(GeometryError, match=r"not plausible.*\(0\.001, 50\] mm"):
        check_spacing(spacing, "x.nii")


def test_plausible_spacing_passes():
    check_spacing((0.3, 0.7, 5.0), "x.nii")
    check_spacing(50.0, "x.nii")


# === NIfTI ===

_PROBE = textwrap.dedent(
    """
    import json, resource, sys, time
    from xprospect.errors import ResourceLimitError
    from xprospect.io import read_nifti
    t0 = time.perf_counter()
    try:
        read_nifti(sys.argv[1])
        outcome = "read"
    except ResourceLimitError as exc:
        outcome = str(exc)
    seconds = time.perf_counter() - t0
    # Peak RSS of this process image. ru_maxrss also counts the parent's pages at fork (a large
    # pytest process), so prefer VmHWM, which starts afresh at exec.
    try:
        status = open("/proc/self/status").read()
        rss_mb = int(status.split("VmHWM:")[1].split()[0]) / 1024
    except (OSError, IndexError):
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"outcome": outcome, "seconds": seconds, "rss_mb": rss_mb}))
    """
)


@pytest.mark.parametrize("name", ["huge.nii", "huge.nii.gz"])
def test_a_10000_cubed_header_is_refused_fast_with_little_memory(tmp_path, name):
    path = nifti_claiming(tmp_path / name, (10000, 10000, 10000))
    env = {k: v for k, v in os.environ.items() if not k.startswith("XPROSPECT_MAX")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "10000 x 10000 x 10000" in result["outcome"], result
    assert result["seconds"] < 1.0, result
    assert result["rss_mb"] < 500, result  # the whole process: Python, NumPy, nibabel


def test_a_header_over_the_byte_limit_is_refused(tmp_path):
    path = nifti_claiming(tmp_path / "f64.nii", (1100, 1024, 1024), dtype="float64")
    with pytest.raises(ResourceLimitError, match="8 GiB"):
        read_nifti(path)


def test_limits_come_from_keywords_and_environment(tmp_path, monkeypatch):
    path = nifti_volume(tmp_path / "v.nii.gz", np.zeros((10, 10, 10), np.int16))
    with pytest.raises(ResourceLimitError, match="1,000 voxels, over the limit of 999"):
        read_nifti(path, max_voxels=999)
    with pytest.raises(ResourceLimitError, match="over the limit of 999"):
        read_volume(path, max_voxels=999)  # read_volume passes the keyword on
    monkeypatch.setenv("XPROSPECT_MAX_VOXELS", "500")
    with pytest.raises(ResourceLimitError, match="over the limit of 500"):
        read_nifti(path)
    assert read_nifti(path, max_voxels=1000).shape == (10, 10, 10)


def _gzip_of(parts, total_zeros: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    blob = b"".join(c.compress(p) for p in parts)
    chunk = b"\0" * (1 << 22)
    for _ in range(total_zeros // len(chunk)):
        blob += c.compress(chunk)
    return blob + c.flush()


def test_a_gzip_bomb_is_decompressed_only_as_far_as_the_header_says(tmp_path):
    # 8^3 int16 voxels, then 1 GiB of zeros the header does not claim: the reader stops early.
    raw = nib.Nifti1Image(np.full((8, 8, 8), 5, np.int16), np.eye(4)).to_bytes()
    path = tmp_path / "bomb.nii.gz"
    path.write_bytes(_gzip_of([raw], 1 << 30))
    assert path.stat().st_size < 2 << 20
    import tracemalloc

    tracemalloc.start()
    try:
        volume = read_nifti(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert volume.shape == (8, 8, 8) and int(volume.array.max()) == 5
    assert peak < 100 << 20, peak


def test_a_gzip_bomb_claiming_a_large_volume_is_refused_before_decompression(tmp_path):
    header = nib.Nifti1Header()
    header.set_data_shape((1024, 1024, 1024))
    header.set_data_dtype(np.int16)
    path = tmp_path / "bomb2.nii.gz"
    path.write_bytes(_gzip_of([header.binaryblock, b"\0" * 4], 1 << 24))
    with pytest.raises(ResourceLimitError, match="2 GiB in memory, over the limit of 256 MiB"):
        read_nifti(path, max_bytes=256 << 20)


def test_truncated_and_corrupt_gzip_are_typed(tmp_path):
    path = nifti_volume(tmp_path / "v.nii.gz", np.arange(4096, dtype=np.int16).reshape(16, 16, 16))
    data = path.read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageFormatError, match="truncated"):
        read_nifti(tmp_path / "cut.nii.gz")
    # A complete gzip stream that holds less than the header promises.
    raw = gzip.decompress(data)
    (tmp_path / "short.nii.gz").write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(ImageFormatError, match="truncated"):
        read_nifti(tmp_path / "short.nii.gz")
    bad = bytearray(data)
    bad[len(bad) // 2 : len(bad) // 2 + 8] = b"\xff" * 8
    (tmp_path / "bad.nii.gz").write_bytes(bytes(bad))
    with pytest.raises(ImageFormatError):
        read_nifti(tmp_path / "bad.nii.gz")


def test_concatenated_gzip_members_still_read(tmp_path):
    array = np.arange(4096, dtype=np.int16).reshape(16, 16, 16)
    path = nifti_volume(tmp_path / "v.nii", array)
    raw = path.read_bytes()
    cut = len(raw) // 3
    (tmp_path / "multi.nii.gz").write_bytes(gzip.compress(raw[:cut]) + gzip.compress(raw[cut:]))
    np.testing.assert_array_equal(read_nifti(tmp_path / "multi.nii.gz").array, array)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize(
    "zooms", [(1e6, 1.0, 1.0), (1.0, 1.0, 0.0), (1e-7, 1e-7, 1e-7)], ids=["km", "zero", "nm"]
)
def test_implausible_nifti_spacing_is_refused_before_reading(tmp_path, suffix, zooms):
    path = nifti_claiming(tmp_path / f"s{suffix}", (4, 4, 4), zooms=zooms, data=b"\0" * 128)
    with pytest.raises(GeometryError, match="NIfTI voxel spacing"):
        read_nifti(path)


def test_nan_affine_is_refused(tmp_path):
    path = nifti_claiming(tmp_path / "nan.nii", (4, 4, 4), data=b"\0" * 128)
    raw = bytearray(path.read_bytes())
    header = nib.Nifti1Header(bytes(raw[:348]))
    affine = np.eye(4)
    affine[0, 3] = np.nan
    header.set_sform(affine, code=1)
    raw[:348] = header.binaryblock
    path.write_bytes(bytes(raw))
    with pytest.raises(GeometryError, match="NaN"):
        read_nifti(path)


# === DICOM ===


def test_dicom_series_size_is_checked_from_headers(tmp_path, monkeypatch):
    folder = ct_series(tmp_path / "series", n=10)
    assert read_dicom_series(folder).shape == (10, 16, 16)
    import xprospect.io.dicom as dicom_module

    def no_pixels(*args, **kwargs):
        raise AssertionError("pixels read before the limit was checked")

    monkeypatch.setattr(dicom_module, "_pixels", no_pixels)
    with pytest.raises(ResourceLimitError, match="10 x 16 x 16"):
        read_dicom_series(folder, max_voxels=2000)
    with pytest.raises(ResourceLimitError, match="10 KiB in memory"):
        read_volume(folder, max_bytes=8000)


def test_a_dicom_slice_claiming_huge_rows_is_refused_not_allocated(tmp_path):
    folder = tmp_path / "liar"
    for k in range(2):
        ct_slice_dicom(folder / f"{k}.dcm", z=2.5 * k, rows=60000, columns=60000)
    with pytest.raises(ResourceLimitError, match="2 x 60000 x 60000"):
        read_dicom_series(folder)


def test_a_cr_claiming_huge_rows_is_refused_not_allocated(tmp_path):
    path = cr_dicom(tmp_path / "liar.dcm", rows=65535, columns=65535)
    with pytest.raises(ResourceLimitError, match="65535 x 65535 = 4,294,836,225 pixels"):
        read_dicom_radiograph(path)
    ok = cr_dicom(tmp_path / "ok.dcm")
    with pytest.raises(ResourceLimitError, match="XPROSPECT_MAX_PIXELS"):
        read_radiograph(ok, max_pixels=1000)
    assert read_radiograph(ok).shape == (96, 80)


def test_a_dicom_file_over_the_byte_limit_is_not_read(tmp_path):
    path = cr_dicom(tmp_path / "cr.dcm")
    with pytest.raises(ResourceLimitError, match="file is"):
        read_dicom_radiograph(path, max_bytes=1000)


@pytest.mark.parametrize(
    ("kwargs", "what"),
    [
        ({"pixel_spacing": (1e6, 1e6)}, "PixelSpacing"),
        ({"pixel_spacing": (0.7, 1e-6)}, "PixelSpacing"),
    ],
)
def test_implausible_dicom_pixel_spacing_is_refused(tmp_path, kwargs, what):
    folder = ct_series(tmp_path / "s", n=3, **kwargs)
    with pytest.raises(GeometryError, match=what):
        read_dicom_series(folder)


def test_kilometre_slice_spacing_is_refused(tmp_path):
    folder = ct_series(tmp_path / "s", n=3, step=1e6)
    with pytest.raises(GeometryError, match="slice spacing"):
        read_dicom_series(folder)


def test_zero_orientation_vector_is_a_dicom_error(tmp_path):
    import pydicom

    folder = ct_series(tmp_path / "s", n=3)
    for f in folder.iterdir():
        ds = pydicom.dcmread(f)
        ds.ImageOrientationPatient = ["0", "0", "0", "0", "1", "0"]
        ds.save_as(f)
    with pytest.raises(XprospectError, match="zero direction"):
        read_dicom_series(folder)


def test_kilometre_cr_pixel_spacing_is_dropped_with_a_warning(tmp_path):
    import pydicom

    path = cr_dicom(tmp_path / "cr.dcm")
    ds = pydicom.dcmread(path)
    ds.PixelSpacing = ["1e6", "1e6"]
    ds.save_as(path)
    with pytest.warns(UserWarning, match="pixel spacing unknown"):
        assert read_dicom_radiograph(path).pixel_spacing_mm is None


# === Raster ===


def test_a_png_decompression_bomb_header_is_refused_before_decoding(tmp_path):
    path = png_claiming(tmp_path / "bomb.png", 100_000, 100_000)
    with pytest.raises(ResourceLimitError) as info:
        read_radiograph(path)
    assert "bomb.png" in str(info.value)
    assert "decompression-bomb" in str(info.value) or "pixels" in str(info.value)


def test_pillows_own_bomb_limit_is_a_typed_error(tmp_path, monkeypatch):
    path = png_claiming(tmp_path / "wide.png", 4000, 3000)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow refuses above 2x this
    with pytest.raises(ResourceLimitError, match="MAX_IMAGE_PIXELS"):
        read_radiograph(path, max_pixels=10**9)


def test_our_pixel_limit_applies_below_pillows(tmp_path, monkeypatch):
    path = png_claiming(tmp_path / "big.png", 3000, 2000)
    with pytest.raises(ResourceLimitError, match="3000 = 6,000,000 pixels"):
        read_radiograph(path, max_pixels=5_000_000)
    monkeypatch.setenv("XPROSPECT_MAX_PIXELS", "1M")
    with pytest.raises(ResourceLimitError, match="over the limit of 1,048,576"):
        read_radiograph(path)


# === X2CT HDF5 ===


def test_x2ct_dataset_shapes_are_checked_before_reading(tmp_path):
    path = tmp_path / "case" / "ct_xray_data.h5"
    path.parent.mkdir()
    with h5py.File(path, "w") as f:
        # Chunked and never written: a tiny file that claims 2048^3 floats.
        f.create_dataset("ct", shape=(2048, 2048, 2048), dtype="f4", chunks=(64, 64, 64))
        f.create_dataset("xray1", data=np.zeros((8, 8), np.uint8))
        f.create_dataset("xray2", data=np.zeros((8, 8), np.uint8))
    assert path.stat().st_size < 1 << 20
    with pytest.raises(ResourceLimitError, match="dataset 'ct' claims 2048 x 2048 x 2048"):
        read_x2ct_case(path.parent)


def test_x2ct_implausible_spacing_and_odd_datasets_are_typed(tmp_path):
    path = tmp_path / "ct_xray_data.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("ct", data=np.zeros((8, 8, 8), np.float32))
        f.create_dataset("xray1", data=np.zeros((8, 8), np.uint8))
        f.create_dataset("xray2", data=np.zeros((8, 8), np.uint8))
        f.create_dataset("spacing", data=np.array([1e6, 1.0, 1.0]))
    with pytest.raises(GeometryError, match="X2CT voxel spacing"):
        read_x2ct_case(path)
    with h5py.File(path, "w") as f:
        f.create_group("ct")
        f.create_dataset("xray1", data=np.zeros((8, 8), np.uint8))
        f.create_dataset("xray2", data=np.zeros((8, 8), np.uint8))
    with pytest.raises(ImageFormatError, match="group"):
        read_x2ct_case(path)
    with h5py.File(path, "w") as f:
        f.create_dataset("ct", data=np.array([b"a", b"b"] * 256).reshape(8, 8, 8))
        f.create_dataset("xray1", data=np.zeros((8, 8), np.uint8))
        f.create_dataset("xray2", data=np.zeros((8, 8), np.uint8))
    with pytest.raises(ImageFormatError, match="unreadable X2CT data"):
        read_x2ct_case(path)


# === Corrupt length fields ===


def _traced_peak(read) -> int:
    import tracemalloc

    tracemalloc.start()
    try:
        with contextlib.suppress(XprospectError):
            read()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_dicom_element_claiming_4_gib_allocates_nothing_like_it(tmp_path):
    path = cr_dicom(tmp_path / "cr.dcm")
    data = bytearray(path.read_bytes())
    at = data.index(b"\xe0\x7f\x10\x00OW\x00\x00")  # (7FE0,0010) OW, then a 4-byte length
    data[at + 8 : at + 12] = (0xFFFFFFF0).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    # pydicom gets a short read (and may accept it): either way no 4 GiB buffer.
    assert _traced_peak(lambda: read_dicom_radiograph(path)) < 64 << 20


def test_a_png_chunk_claiming_256_mib_allocates_nothing_like_it(tmp_path):
    import struct

    path = png_claiming(tmp_path / "chunk.png", 64, 64, rows=64)
    data = bytearray(path.read_bytes())
    at = data.index(b"IDAT") - 4
    data[at : at + 4] = struct.pack(">I", 256 << 20)
    path.write_bytes(bytes(data))
    assert _traced_peak(lambda: read_radiograph(path)) < 64 << 20
