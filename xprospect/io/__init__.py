"""Readers and writers for CT volumes and radiographs.

``read_volume`` and ``read_radiograph`` pick the reader from the path: a folder is a DICOM series
(or an X2CT case folder), ``.nii``/``.nii.gz`` is NIfTI, ``.h5`` is X2CT's layout, ``.dcm`` or any
file with a DICOM preamble is DICOM, and PNG/JPEG/TIFF are raster radiographs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from xprospect.errors import UnsupportedFormatError
from xprospect.image import Radiograph, View, Volume
from xprospect.io._checks import require_file
from xprospect.io.limits import resolve_limits
from xprospect.io.nifti import is_nifti_path, read_nifti, write_nifti
from xprospect.io.plausibility import check_ct, check_radiograph
from xprospect.io.raster import RASTER_SUFFIXES, read_raster_radiograph, write_png
from xprospect.io.x2ct import X2CT_FILENAME, X2CTCase, read_x2ct_case, write_x2ct_case

__all__ = [
    "X2CTCase",
    "check_ct",
    "check_radiograph",
    "read_any",
    "read_nifti",
    "read_radiograph",
    "read_raster_radiograph",
    "read_volume",
    "read_x2ct_case",
    "resolve_limits",
    "write_nifti",
    "write_png",
    "write_volume",
    "write_x2ct_case",
]


def _is_dicom_file(p: Path) -> bool:
    from xprospect.io.dicom import is_dicom

    return p.suffix.lower() in (".dcm", ".dicom", ".ima") or (p.suffix == "" and is_dicom(p))


def read_volume(path: str | os.PathLike[str], **kwargs: Any) -> Volume:
    """Reads a CT volume from a DICOM folder, a NIfTI file, or an X2CT case (folder or ``.h5``).

    Args:
        path: Where the volume is.
        **kwargs: Passed to the reader (e.g. ``series_uid`` for DICOM folders; ``max_voxels``
            and ``max_bytes`` for every reader, see :mod:`xprospect.io.limits`).

    Returns:
        The volume in the file's own orientation (HU for CT).

    Raises:
        UnsupportedFormatError: The path is none of the above.
        XprospectError: Subclasses from the reader for bad content.
    """
    p = require_file(path)
    if p.is_dir():
        if (p / X2CT_FILENAME).exists():
            return read_x2ct_case(p, **kwargs).volume
        from xprospect.io.dicom import read_dicom_series

        return read_dicom_series(p, **kwargs)
    if is_nifti_path(p):
        return read_nifti(p, **kwargs)
    if p.suffix.lower() in (".h5", ".hdf5"):
        return read_x2ct_case(p, **kwargs).volume
    if _is_dicom_file(p):
        # One slice names its series: read the whole series from the slice's folder.
        from xprospect.io.dicom import read_dicom_header, read_dicom_series

        uid = str(read_dicom_header(p).get("SeriesInstanceUID", ""))
        return read_dicom_series(p.parent, series_uid=uid or None, **kwargs)
    raise UnsupportedFormatError(
        "not a CT volume format xprospect reads (DICOM folder, .nii, .nii.gz, X2CT .h5)", p
    )


def read_radiograph(
    path: str | os.PathLike[str],
    *,
    view: str | View | None = None,
    invert: bool = False,
    pixel_spacing_mm: tuple[float, float] | None = None,
    max_pixels: int | None = None,
    max_bytes: int | None = None,
) -> Radiograph:
    """Reads an X-ray from DICOM (CR/DX) or PNG/JPEG/TIFF/BMP.

    Args:
        path: The image file.
        view: Overrides the view stored in the file (raster files store none).
        invert: Raster files only: pixels are stored bright = air (DICOM says so itself).
        pixel_spacing_mm: Raster files only: the detector pixel spacing, if known.
        max_pixels, max_bytes: Size limits checked before decoding (see
            :mod:`xprospect.io.limits`).
    """
    p = require_file(path)
    if p.is_dir():
        raise UnsupportedFormatError("expected an image file, got a folder", p)
    if p.suffix.lower() in RASTER_SUFFIXES:
        return read_raster_radiograph(
            p,
            view=view,
            invert=invert,
            pixel_spacing_mm=pixel_spacing_mm,
            max_pixels=max_pixels,
            max_bytes=max_bytes,
        )
    if _is_dicom_file(p):
        from xprospect.io.dicom import read_dicom_radiograph

        return read_dicom_radiograph(p, view=view, max_pixels=max_pixels, max_bytes=max_bytes)
    raise UnsupportedFormatError(
        "not an X-ray format xprospect reads (DICOM CR/DX, PNG, JPEG, TIFF, BMP)", p
    )


def read_any(path: str | os.PathLike[str]) -> Volume | Radiograph | X2CTCase:
    """Reads whatever the path holds: a volume, a radiograph, or a whole X2CT case."""
    p = require_file(path)
    if (p.is_dir() and (p / X2CT_FILENAME).exists()) or p.suffix.lower() in (".h5", ".hdf5"):
        return read_x2ct_case(p)
    if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES:
        return read_raster_radiograph(p)
    if p.is_file() and _is_dicom_file(p):
        from xprospect.io.dicom import dicom_modality

        if dicom_modality(p) not in ("CT", "PT", "MR", "NM"):
            return read_radiograph(p)
    return read_volume(p)


def write_volume(volume: Volume, path: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Writes a volume: ``.nii``/``.nii.gz`` as NIfTI, anything else as a DICOM series folder."""
    p = Path(path)
    if is_nifti_path(p):
        return write_nifti(volume, p, **kwargs)
    from xprospect.io.dicom import write_dicom_series

    return write_dicom_series(volume, p, **kwargs)
