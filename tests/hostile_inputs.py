"""Builders of small valid and hostile input files for the reader tests (limits, plausibility,
property-based mutation): NIfTI headers that claim any shape, hand-made DICOM CT slices and CR
files, PNGs whose header claims any size. Nothing here is large on disk."""

from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    CTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)

__all__ = [
    "cr_dicom",
    "ct_series",
    "ct_slice_dicom",
    "nifti_claiming",
    "nifti_volume",
    "png_claiming",
    "save_dicom",
]


def nifti_claiming(
    path: Path,
    shape: Sequence[int],
    *,
    dtype: str = "int16",
    zooms: Sequence[float] = (1.0, 1.0, 1.0),
    data: bytes = b"\0" * 64,
) -> Path:
    """A NIfTI-1 file whose header claims ``shape`` but that holds only ``data`` after it
    (gzip-compressed when the name ends in .gz)."""
    header = nib.Nifti1Header()
    header.set_data_dtype(np.dtype(dtype))
    header.set_data_shape(tuple(shape))
    header.set_zooms(tuple(zooms)[: len(shape)] + (1.0,) * max(0, len(shape) - len(zooms)))
    header.set_sform(np.diag([*zooms[:3], 1.0]), code=1)
    raw = header.binaryblock + b"\0" * 4 + data
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)
    return path


def nifti_volume(path: Path, array: np.ndarray, *, affine: np.ndarray | None = None) -> Path:
    """A valid NIfTI file of ``array`` (nibabel's own writer)."""
    img = nib.Nifti1Image(np.asarray(array), np.eye(4) if affine is None else affine)
    nib.save(img, str(path))
    return path


def save_dicom(
    ds: Dataset, path: Path, sop_class: str, transfer_syntax: str = ExplicitVRLittleEndian
) -> Path:
    """Writes ``ds`` as a DICOM file of ``sop_class`` (file meta included), making its folder."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def ct_slice_dicom(
    path: Path,
    *,
    z: float = 0.0,
    series_uid: str = "1.2.3.4.5",
    stored: np.ndarray | None = None,
    rows: int | None = None,
    columns: int | None = None,
    pixel_spacing: Sequence[float] = (0.7, 0.7),
    thickness: float = 2.5,
    modality: str = "CT",
) -> Path:
    """One axial CT slice (uint16 + intercept -1024). ``rows``/``columns`` override what the
    header claims without changing the stored pixels (a lying header)."""
    if stored is None:
        stored = (np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) * 7) % 2000 + 24
    ds = Dataset()
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.StudyInstanceUID = "1.2.3.4"
    ds.ImagePositionPatient = ["-100", "-100", str(z)]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.PixelSpacing = [str(v) for v in pixel_spacing]
    ds.SliceThickness = str(thickness)
    ds.RescaleSlope = "1"
    ds.RescaleIntercept = "-1024"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = stored.shape[0] if rows is None else rows
    ds.Columns = stored.shape[1] if columns is None else columns
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = stored.astype("<u2").tobytes()
    return save_dicom(ds, path, CTImageStorage)


def ct_series(folder: Path, n: int = 10, step: float = 2.5, **kwargs: object) -> Path:
    """``n`` axial slices ``step`` mm apart in ``folder``."""
    uid = generate_uid()
    for k in range(n):
        ct_slice_dicom(folder / f"IM{k:04d}.dcm", z=k * step, series_uid=uid, **kwargs)  # type: ignore[arg-type]
    return folder


def cr_dicom(
    path: Path,
    stored: np.ndarray | None = None,
    *,
    view: str | None = "PA",
    orientation: Sequence[str] | None = None,
    modality: str = "CR",
    rows: int | None = None,
    columns: int | None = None,
) -> Path:
    """A CR file (12-bit MONOCHROME2) with the given ViewPosition and PatientOrientation."""
    if stored is None:
        yy, xx = np.mgrid[:96, :80]
        stored = ((yy * 31 + xx * 17) % 4096).astype(np.uint16)
    ds = Dataset()
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = modality
    ds.SeriesInstanceUID = generate_uid()
    if view is not None:
        ds.ViewPosition = view
    if orientation is not None:
        ds.PatientOrientation = list(orientation)
    ds.PixelSpacing = ["0.2", "0.2"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = stored.shape[0] if rows is None else rows
    ds.Columns = stored.shape[1] if columns is None else columns
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = stored.astype("<u2").tobytes()
    return save_dicom(ds, path, ComputedRadiographyImageStorage)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_claiming(path: Path, width: int, height: int, *, rows: int = 1) -> Path:
    """An 8-bit grey PNG whose header claims ``width`` x ``height`` but that holds ``rows``
    rows of pixels (a decompression bomb's header, without the bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    scanlines = zlib.compress(b"".join(b"\0" + b"\x80" * min(width, 4096) for _ in range(rows)))
    data = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", scanlines)
    path.write_bytes(data + _chunk(b"IEND", b""))
    return path
