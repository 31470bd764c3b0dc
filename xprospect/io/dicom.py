"""DICOM: CT series to and from :class:`~xprospect.image.Volume`, CR/DX files to
:class:`~xprospect.image.Radiograph`.

Geometry follows ``docs/conventions.md``. DICOM positions and directions are LPS+; this module is
the only place that sees them and converts with ``diag(-1, -1, 1)`` to RAS+.

A CT series read here keeps its native layout: array axis 0 runs along the slice normal
``cross(row cosines, column cosines)`` in ascending order, axis 1 is the DICOM row index and axis 2
the column index. For a head-first axial series that is (superior, posterior, left); preprocessing
reorients to the canonical (I, P, L) later.
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

from xprospect.errors import (
    ConfigError,
    DicomError,
    DicomSeriesError,
    GeometryError,
    MissingDataError,
    ModalityError,
    UnsupportedFormatError,
)
from xprospect.image import Radiograph, View, Volume
from xprospect.io._checks import open_clamped, require_file
from xprospect.io.limits import (
    MAX_SPACING_MM,
    MIN_SPACING_MM,
    Limits,
    check_file_size,
    check_image_size,
    check_spacing,
    check_volume_size,
    resolve_limits,
)
from xprospect.utils import atomic_dir

__all__ = [
    "PATIENT_KEYWORDS",
    "RADIOGRAPH_MODALITIES",
    "DicomWarning",
    "SeriesInfo",
    "dicom_modality",
    "is_dicom",
    "list_dicom_series",
    "read_dicom_header",
    "read_dicom_radiograph",
    "read_dicom_series",
    "voi_window",
    "write_dicom_series",
]

logger = logging.getLogger(__name__)

PATIENT_KEYWORDS: tuple[str, ...] = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
)
"""Identifying tags the readers keep only under ``metadata["patient"]``."""

RADIOGRAPH_MODALITIES: frozenset[str] = frozenset({"CR", "DX", "DR", "RG", "OT", "PX"})
"""Modalities :func:`read_dicom_radiograph` accepts (``""``, a missing tag, is accepted too)."""

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_IOP_TOLERANCE = 1e-4
_DUPLICATE_TOLERANCE_MM = 1e-3
_INSTALL_HINT = "install the decoders with `pip install xprospect[dicom]` (pylibjpeg extras)"
_ENHANCED_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image Storage
        "1.2.840.10008.5.1.4.1.1.2.2",  # Legacy Converted Enhanced CT Image Storage
    }
)


class DicomWarning(UserWarning):
    """Something in a DICOM file was unusual but could be worked around (see the message)."""


@dataclass(frozen=True)
class SeriesInfo:
    """One series found in a folder by :func:`list_dicom_series`.

    Attributes:
        uid: SeriesInstanceUID (``""`` for files that lack it).
        modality: Modality of the series' first file (``""`` if absent).
        description: SeriesDescription (``""`` if absent).
        n_files: How many image files belong to the series.
        files: Those files, sorted by path (not by slice position).
        skipped_files: Files in the whole folder that were not DICOM images (same for every series
            of one folder).
        patient_id: PatientID of the first file (``""`` if absent). Identifying: meant for
            grouping (patient-level data splits), not for logs or outputs.
        study_uid: StudyInstanceUID of the first file (``""`` if absent).
    """

    uid: str
    modality: str
    description: str
    n_files: int
    files: tuple[Path, ...]
    skipped_files: int = 0
    patient_id: str = ""
    study_uid: str = ""


# --------------------------------------------------------------------------------------------
# Headers
# --------------------------------------------------------------------------------------------


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _has_preamble(head: bytes) -> bool:
    return len(head) >= 132 and head[128:132] == b"DICM"


def _looks_like_raw_dicom(head: bytes) -> bool:
    # Old files without the 128-byte preamble start straight with a group 0002 or 0008 tag;
    # anything else is not worth a forced parse, which can "succeed" on arbitrary bytes.
    return len(head) >= 8 and head[:2] in (b"\x02\x00", b"\x08\x00") and head[3] == 0


_SERIES_HEADER_KEYWORDS: tuple[str, ...] = (
    "SOPClassUID",
    "SOPInstanceUID",
    "SeriesInstanceUID",
    "StudyInstanceUID",
    "SeriesDescription",
    "SeriesNumber",
    "Modality",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "SamplesPerPixel",
    "ImageOrientationPatient",
    "ImagePositionPatient",
    "PixelSpacing",
    "SliceThickness",
    "SpacingBetweenSlices",
    "Manufacturer",
    "ManufacturerModelName",
    "KVP",
    "ConvolutionKernel",
    "BodyPartExamined",
    *PATIENT_KEYWORDS,
)
"""What the series reader reads from each slice's header (converted when the file is read)."""
_SERIES_SLICE_KEYWORDS: tuple[str, ...] = ("RescaleSlope", "RescaleIntercept")
"""What the series reader reads besides the pixels when it reads a slice in full."""


def _dcmread(path: Path, touch: Sequence[str] | None = None, **kwargs: Any) -> Dataset:
    """``pydicom.dcmread`` through :func:`~xprospect.io._checks.open_clamped`.

    pydicom converts an element's raw bytes when it is first accessed, so a corrupt value would
    fail at some later attribute access; the elements named in ``touch`` (all of them when None)
    are converted here instead, inside the caller's ``try``.
    """
    with open_clamped(path) as fh:
        ds = pydicom.dcmread(fh, **kwargs)
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        for _ in meta.iterall():
            pass
    if touch is None:
        for _ in ds.iterall():
            pass
    else:
        for keyword in touch:
            ds.get(keyword)
    return ds


def _read_head(path: Path) -> bytes:
    with path.open("rb") as fh:
        return fh.read(132)


def _try_header(path: Path) -> Dataset | None:
    """Header of a DICOM image file, or None for anything that is not one."""
    try:
        if path.stat().st_size == 0:
            return None
        head = _read_head(path)
    except OSError:
        return None
    if _has_preamble(head):
        force = False
    elif _looks_like_raw_dicom(head):
        force = True
    else:
        return None
    try:
        ds = _dcmread(path, _SERIES_HEADER_KEYWORDS, stop_before_pixels=True, force=force)
    except Exception as exc:  # pydicom raises many unrelated types on corrupt headers
        if not force:
            warnings.warn(
                f"{path}: has a DICOM preamble but its header is unreadable ({_short(exc)}); "
                "skipped",
                DicomWarning,
                stacklevel=4,
            )
        return None
    if "SOPClassUID" not in ds or "Rows" not in ds or "Columns" not in ds:
        return None
    return ds


def is_dicom(path: str | os.PathLike[str]) -> bool:
    """Cheap test whether a file is DICOM.

    Args:
        path: Any path.

    Returns:
        True for a file with the ``DICM`` preamble, or a preamble-less file that pydicom parses
        into a dataset with a SOPClassUID; False otherwise (missing, empty, folder, other format).
    """
    p = Path(path)
    try:
        if not p.is_file() or p.stat().st_size == 0:
            return False
        head = _read_head(p)
    except OSError:
        return False
    if _has_preamble(head):
        return True
    if not _looks_like_raw_dicom(head):
        return False
    try:
        ds = _dcmread(p, ("SOPClassUID",), stop_before_pixels=True, force=True)
    except Exception:  # any parse failure just means "not DICOM"
        return False
    return "SOPClassUID" in ds


def _open_checks(p: Path) -> None:
    require_file(p)
    if p.is_dir():
        raise UnsupportedFormatError("expected a DICOM file, got a folder", p)
    if not is_dicom(p):
        raise UnsupportedFormatError("not a DICOM file (no DICM preamble, no DICOM header)", p)


def read_dicom_header(path: str | os.PathLike[str]) -> Dataset:
    """Reads a DICOM file's header (everything before the pixel data).

    Args:
        path: A DICOM file.

    Returns:
        The pydicom dataset without pixel data.

    Raises:
        MissingDataError: The file does not exist.
        EmptyFileError: The file has no bytes.
        UnsupportedFormatError: The file is not DICOM.
        DicomError: The header is corrupt.
    """
    p = Path(path)
    _open_checks(p)
    try:
        return _dcmread(p, stop_before_pixels=True, force=not _has_preamble(_read_head(p)))
    except Exception as exc:  # pydicom raises many unrelated types on corrupt headers
        raise DicomError(f"unreadable DICOM header ({_short(exc)})", p) from exc


def dicom_modality(path: str | os.PathLike[str]) -> str:
    """The Modality tag of a DICOM file (``"CT"``, ``"CR"``, ...; ``""`` if absent).

    Raises:
        MissingDataError, EmptyFileError, UnsupportedFormatError, DicomError: As
            :func:`read_dicom_header`.
    """
    return str(read_dicom_header(path).get("Modality", "") or "").strip().upper()


# --------------------------------------------------------------------------------------------
# Series discovery
# --------------------------------------------------------------------------------------------


def _scan_folder(folder: Path) -> tuple[dict[str, list[tuple[Path, Dataset]]], int]:
    if not folder.exists():
        raise MissingDataError("no such folder", folder)
    if not folder.is_dir():
        raise MissingDataError("expected a folder holding a DICOM series, got a file", folder)
    groups: dict[str, list[tuple[Path, Dataset]]] = {}
    skipped = 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        ds = _try_header(path)
        if ds is None:
            skipped += 1
            continue
        uid = str(ds.get("SeriesInstanceUID", "") or "")
        groups.setdefault(uid, []).append((path, ds))
    if skipped:
        logger.info("%s: skipped %d file(s) that are not DICOM images", folder, skipped)
    return groups, skipped


def _info(uid: str, members: list[tuple[Path, Dataset]], skipped: int) -> SeriesInfo:
    first = members[0][1]
    return SeriesInfo(
        uid=uid,
        modality=str(first.get("Modality", "") or "").strip().upper(),
        description=str(first.get("SeriesDescription", "") or ""),
        n_files=len(members),
        files=tuple(sorted(p for p, _ in members)),
        skipped_files=skipped,
        patient_id=_text(first, "PatientID"),
        study_uid=_text(first, "StudyInstanceUID"),
    )


def list_dicom_series(folder: str | os.PathLike[str]) -> list[SeriesInfo]:
    """Lists the DICOM image series in a folder (searched recursively).

    Args:
        folder: The folder.

    Returns:
        One :class:`SeriesInfo` per SeriesInstanceUID, largest series first (then by uid). Empty
        if the folder holds no DICOM image; files that are not DICOM images (other formats, empty
        files, DICOMDIR, reports without pixels) are counted in each entry's ``skipped_files``.

    Raises:
        MissingDataError: The folder does not exist or is a file.
    """
    groups, skipped = _scan_folder(Path(folder))
    infos = [_info(uid, members, skipped) for uid, members in groups.items()]
    return sorted(infos, key=lambda s: (-s.n_files, s.uid))


# --------------------------------------------------------------------------------------------
# Series reading
# --------------------------------------------------------------------------------------------


def _floats(ds: Dataset, keyword: str, n: int, path: Path) -> npt.NDArray[np.float64]:
    value = ds.get(keyword)
    if value is None or value == "":
        raise DicomError(f"lacks {keyword}, which a CT series needs", path)
    items = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    try:
        arr = np.asarray([float(v) for v in items], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DicomError(f"{keyword} is not numeric: {value!r}", path) from exc
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise DicomError(f"{keyword} must hold {n} finite numbers, got {value!r}", path)
    return arr


def _float_or(ds: Dataset, keyword: str, default: float) -> float:
    value = ds.get(keyword)
    if value is None or value == "":
        return default
    if isinstance(value, MultiValue | list | tuple):
        value = value[0]
    try:
        out = float(value)
    except (TypeError, ValueError):
        return default
    return out if math.isfinite(out) else default


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def _modality_set(modality: str | Sequence[str] | None) -> frozenset[str] | None:
    if modality is None:
        return None
    if isinstance(modality, str):
        return frozenset({modality.strip().upper()})
    return frozenset(m.strip().upper() for m in modality)


def _select_series(
    folder: Path,
    groups: dict[str, list[tuple[Path, Dataset]]],
    series_uid: str | None,
    skipped: int,
) -> str:
    if not groups:
        raise MissingDataError(
            f"no DICOM images found ({skipped} file(s) skipped as not DICOM images)", folder
        )
    if series_uid is not None:
        if series_uid not in groups:
            available = ", ".join(f"{u or '<no uid>'} ({len(m)} files)" for u, m in groups.items())
            raise MissingDataError(
                f"no series with SeriesInstanceUID {series_uid}; available: {available}", folder
            )
        return series_uid
    infos = sorted(
        (_info(u, m, skipped) for u, m in groups.items()), key=lambda s: (-s.n_files, s.uid)
    )
    chosen = infos[0]
    if len(infos) > 1:
        others = "; ".join(
            f"{s.uid or '<no uid>'} '{s.description}' ({s.n_files} slices)" for s in infos[1:]
        )
        warnings.warn(
            f"{folder}: {len(infos)} series found; reading the largest, {chosen.uid} "
            f"'{chosen.description}' ({chosen.n_files} slices), and ignoring: {others}. "
            "Pass series_uid to choose another.",
            DicomWarning,
            stacklevel=3,
        )
    return chosen.uid


def _check_single_frame(ds: Dataset, path: Path) -> None:
    frames = ds.get("NumberOfFrames")
    try:
        n_frames = int(frames) if frames not in (None, "") else 1
    except (TypeError, ValueError):
        n_frames = 1
    if n_frames > 1 or str(ds.get("SOPClassUID", "")) in _ENHANCED_SOP_CLASSES:
        raise UnsupportedFormatError(
            f"enhanced/multi-frame CT ({n_frames} frames in one file) is not supported yet; "
            "convert it to NIfTI (e.g. with dcm2niix) and read that instead",
            path,
        )
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    if spp != 1:
        raise UnsupportedFormatError(f"expected greyscale CT, got {spp} samples per pixel", path)


@dataclass(frozen=True)
class _Geometry:
    order: list[int]
    positions: npt.NDArray[np.float64]  # along the normal, in sorted order
    row_cos: npt.NDArray[np.float64]
    col_cos: npt.NDArray[np.float64]
    normal: npt.NDArray[np.float64]
    pixel_spacing: npt.NDArray[np.float64]  # [row spacing, column spacing]
    step: float
    origin_lps: npt.NDArray[np.float64]
    shape: tuple[int, int]


def _mm(value: float) -> str:
    text = f"{value:.3f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def _rows_columns(ds: Dataset, path: Path) -> tuple[int, int]:
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError) as exc:
        raise DicomError(f"Rows/Columns are not integers ({_short(exc)})", path) from exc
    if rows < 1 or cols < 1:
        raise DicomError(f"image size {rows}x{cols} is empty", path)
    return rows, cols


def _series_geometry(members: list[tuple[Path, Dataset]], root: Path) -> _Geometry:
    def name(path: Path) -> str:
        return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)

    for path, ds in members:
        _check_single_frame(ds, path)
    path0, ds0 = members[0]
    iop0 = _floats(ds0, "ImageOrientationPatient", 6, path0)
    ps0 = _floats(ds0, "PixelSpacing", 2, path0)
    if np.any(ps0 <= 0):
        raise DicomError(f"PixelSpacing must be positive, got {ps0.tolist()}", path0)
    check_spacing(ps0, path0, what="PixelSpacing")
    shape0 = _rows_columns(ds0, path0)
    ipps = []
    for path, ds in members:
        iop = _floats(ds, "ImageOrientationPatient", 6, path)
        if np.max(np.abs(iop - iop0)) > _IOP_TOLERANCE:
            raise DicomSeriesError(
                f"ImageOrientationPatient {iop.tolist()} differs from {iop0.tolist()} in "
                f"{name(path0)}; a series must not mix orientations (a localizer in the series?)",
                path,
            )
        shape = _rows_columns(ds, path)
        if shape != shape0:
            raise DicomSeriesError(
                f"image size {shape[0]}x{shape[1]} differs from {shape0[0]}x{shape0[1]} in "
                f"{name(path0)}",
                path,
            )
        ps = _floats(ds, "PixelSpacing", 2, path)
        if np.max(np.abs(ps - ps0)) > _IOP_TOLERANCE:
            raise DicomSeriesError(
                f"PixelSpacing {ps.tolist()} differs from {ps0.tolist()} in {name(path0)}", path
            )
        ipps.append(_floats(ds, "ImagePositionPatient", 3, path))

    norms = np.linalg.norm(iop0.reshape(2, 3), axis=1)
    if np.any(norms < 1e-3):
        raise DicomError(
            f"ImageOrientationPatient {iop0.tolist()} holds a zero direction vector", path0
        )
    row_cos = iop0[:3] / norms[0]
    col_cos = iop0[3:] / norms[1]
    if abs(float(row_cos @ col_cos)) > 1e-3:
        raise DicomSeriesError(
            f"row and column cosines are not perpendicular: {iop0.tolist()}", path0
        )
    normal = np.cross(row_cos, col_cos)
    normal /= np.linalg.norm(normal)
    pos_lps = np.asarray(ipps)
    along = pos_lps @ normal
    order = [int(i) for i in np.argsort(along, kind="stable")]
    along = along[order]
    names = [name(members[i][0]) for i in order]

    steps = np.diff(along)
    for i, s in enumerate(steps):
        if s < _DUPLICATE_TOLERANCE_MM:
            same = ""
            uid_a = members[order[i]][1].get("SOPInstanceUID")
            if uid_a is not None and uid_a == members[order[i + 1]][1].get("SOPInstanceUID"):
                same = f" (the same image twice: SOPInstanceUID {uid_a})"
            raise DicomSeriesError(
                f"duplicate slice position z={along[i]:.3f} mm in {names[i]} and "
                f"{names[i + 1]}{same}",
                root,
            )

    if len(members) == 1:
        thickness = _float_or(ds0, "SliceThickness", 0.0) or _float_or(
            ds0, "SpacingBetweenSlices", 0.0
        )
        if thickness <= 0:
            raise DicomSeriesError(
                "single-slice series without a positive SliceThickness: slice spacing unknown",
                path0,
            )
        step = thickness
        check_spacing(step, path0, what="SliceThickness")
    else:
        _check_spacing(along, names, root)
        step = float((along[-1] - along[0]) / (len(along) - 1))
        check_spacing(step, root, what="slice spacing")
        _check_tilt(pos_lps[order], normal, float(min(ps0)), names, root)
    return _Geometry(
        order=order,
        positions=along,
        row_cos=row_cos,
        col_cos=col_cos,
        normal=normal,
        pixel_spacing=ps0,
        step=step,
        origin_lps=pos_lps[order[0]],
        shape=shape0,
    )


def _check_spacing(along: npt.NDArray[np.float64], names: list[str], root: Path) -> None:
    steps = np.diff(along)
    median = float(np.median(steps))
    tol = max(0.01, 0.01 * median)
    bad = np.flatnonzero(np.abs(steps - median) > tol)
    if bad.size == 0:
        return
    i = int(bad[0])
    s = float(steps[i])
    more = f" (and {bad.size - 1} more irregular step(s))" if bad.size > 1 else ""
    where = (
        f"between z={along[i]:.3f} mm ({names[i]}) and z={along[i + 1]:.3f} mm "
        f"({names[i + 1]}), spacing elsewhere {_mm(median)} mm{more}"
    )
    k = round(s / median)
    if k >= 2 and abs(s - k * median) <= tol * k:
        raise DicomSeriesError(
            f"missing slice(s): gap of {_mm(s)} mm (about {k - 1} slice(s) missing) {where}",
            root,
        )
    raise DicomSeriesError(f"irregular slice spacing: step of {_mm(s)} mm {where}", root)


def _check_tilt(
    pos_lps: npt.NDArray[np.float64],
    normal: npt.NDArray[np.float64],
    pixel: float,
    names: list[str],
    root: Path,
) -> None:
    rel = pos_lps - pos_lps[0]
    lateral = rel - np.outer(rel @ normal, normal)
    dev = np.linalg.norm(lateral, axis=1)
    # A gantry tilt shifts each slice a little more within its plane; a fifth of a pixel over the
    # whole series is what rounded positions can explain, anything more would skew the volume.
    tol = max(0.05, 0.2 * pixel)
    worst = int(np.argmax(dev))
    if dev[worst] > tol:
        raise DicomSeriesError(
            f"slices are offset within their plane by up to {dev[worst]:.3g} mm "
            f"({names[worst]} against {names[0]}): a gantry-tilted or sheared series "
            "is not supported; resample it to an orthogonal grid first",
            root,
        )


def _read_full(
    path: Path, limits: Limits | None = None, touch: Sequence[str] | None = None
) -> Dataset:
    check_file_size(path, limits=limits)
    try:
        ds = _dcmread(path, touch, force=not _has_preamble(_read_head(path)))
    except Exception as exc:  # pydicom raises many unrelated types on truncated files
        raise DicomError(
            f"unreadable DICOM file, truncated or corrupt? ({_short(exc)})", path
        ) from exc
    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        # Preamble-less files often lack file meta; pydicom needs the syntax to decode pixels,
        # and the encoding it detected while parsing is the right one.
        implicit, little = ds.original_encoding
        if meta is None:
            ds.file_meta = meta = FileMetaDataset()
        meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian
            if implicit
            else ExplicitVRLittleEndian
            if little is not False
            else ExplicitVRBigEndian
        )
    return ds


def _pixels(ds: Dataset, path: Path) -> np.ndarray:
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise DicomError("has no pixel data", path)
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        return np.asarray(ds.pixel_array)
    except Exception as exc:  # decoders raise many unrelated types on bad data
        if isinstance(ts, UID) and ts.is_transfer_syntax and ts.is_compressed:
            raise DicomError(
                f"cannot decode pixel data compressed as {ts.name} ({_short(exc)}); if a "
                f"decoder is missing, {_INSTALL_HINT}",
                path,
            ) from exc
        raise DicomError(
            f"pixel data cannot be decoded, truncated or corrupt? ({_short(exc)})", path
        ) from exc


def _patient(ds: Dataset) -> dict[str, str]:
    out = {}
    for kw in PATIENT_KEYWORDS:
        value = ds.get(kw)
        if value is not None and str(value).strip():
            out[kw] = str(value).strip()
    return out


def _kvp(ds: Dataset) -> float | None:
    value = _float_or(ds, "KVP", float("nan"))
    return None if math.isnan(value) else value


def read_dicom_series(
    folder: str | os.PathLike[str],
    series_uid: str | None = None,
    *,
    modality: str | Sequence[str] | None = "CT",
    max_voxels: int | None = None,
    max_bytes: int | None = None,
) -> Volume:
    """Reads a classic (one slice per file) DICOM series into a :class:`Volume` in HU.

    Headers are read and checked first: rows x columns x slices must be within the limits of
    :mod:`xprospect.io.limits` and the spacing plausible before any pixel is read.

    Args:
        folder: Folder holding the series (searched recursively; other files are skipped).
        series_uid: SeriesInstanceUID to read. If None and the folder holds several series, the
            one with most slices is read and a :class:`DicomWarning` names the others.
        modality: Accepted Modality value(s); None accepts any.
        max_voxels: Voxel limit (default: ``XPROSPECT_MAX_VOXELS`` or 2^31).
        max_bytes: Memory limit in bytes (default: ``XPROSPECT_MAX_BYTES`` or 8 GiB).

    Returns:
        The volume in its native layout (axis 0 along the slice normal ascending, axis 1 DICOM
        rows, axis 2 columns) with its RAS+ affine. HU as int16 when every slice has slope 1 and
        an integer intercept and the values fit, else float32. ``metadata`` holds ``format``,
        ``modality``, ``series_uid``, ``series_description``, ``n_files``, ``skipped_files``,
        ``manufacturer``, ``kvp`` and geometry facts; identifying tags only under
        ``metadata["patient"]``.

    Raises:
        MissingDataError: The folder is missing, holds no DICOM image, or not ``series_uid``.
        ModalityError: The series' modality is not accepted.
        UnsupportedFormatError: Multi-frame/enhanced CT or colour images.
        DicomSeriesError: Mixed orientations or sizes, duplicate positions, missing slices,
            irregular spacing, gantry tilt.
        DicomError: A file lacks a needed tag, or is truncated, or its pixels cannot be decoded.
        ResourceLimitError: Rows x columns x slices (as float32) exceed the limits.
        GeometryError: Pixel or slice spacing is not plausible (e.g. kilometres).
    """
    root = Path(folder)
    limits = resolve_limits(max_voxels, max_bytes)
    groups, skipped = _scan_folder(root)
    uid = _select_series(root, groups, series_uid, skipped)
    members = groups[uid]
    path0, ds0 = members[0]
    found = _text(ds0, "Modality").upper()
    allowed = _modality_set(modality)
    if allowed is not None and found not in allowed:
        raise ModalityError(
            f"series {uid} has modality {found or '<none>'!r}, expected "
            f"{' or '.join(sorted(allowed))}; pass modality=None to read it anyway",
            path0.parent,
        )

    geo = _series_geometry(members, root)
    n = len(members)
    check_volume_size((n, *geo.shape), 4, root, limits=limits, what="the series' headers")
    hu = np.empty((n, *geo.shape), dtype=np.float32)
    integral = True
    slopes, intercepts = [], []
    for k, idx in enumerate(geo.order):
        path = members[idx][0]
        ds = _read_full(path, limits, _SERIES_SLICE_KEYWORDS)
        raw = _pixels(ds, path)
        if raw.shape != geo.shape:
            raise DicomError(
                f"pixel array shape {raw.shape} does not match Rows x Columns {geo.shape}", path
            )
        if "ModalityLUTSequence" in ds:
            try:
                hu[k] = pydicom.pixels.apply_modality_lut(raw, ds)
            except Exception as exc:  # a malformed Modality LUT Sequence fails in many ways
                raise DicomError(f"cannot apply the Modality LUT ({_short(exc)})", path) from exc
            integral = False
            continue
        slope = _float_or(ds, "RescaleSlope", 1.0)
        intercept = _float_or(ds, "RescaleIntercept", 0.0)
        slopes.append(slope)
        intercepts.append(intercept)
        integral = integral and slope == 1.0 and intercept == round(intercept)
        hu[k] = raw.astype(np.float64) * slope + intercept

    array: np.ndarray = hu
    # float32 holds every integer below 2**24 exactly, so this conversion loses nothing.
    if integral and hu.size and hu.min() >= -32768 and hu.max() <= 32767:
        array = hu.astype(np.int16)

    lps = np.eye(4)
    lps[:3, 0] = geo.normal * geo.step
    lps[:3, 1] = geo.col_cos * geo.pixel_spacing[0]
    lps[:3, 2] = geo.row_cos * geo.pixel_spacing[1]
    lps[:3, 3] = geo.origin_lps
    affine = _LPS_TO_RAS @ lps

    first = members[geo.order[0]][1]
    metadata: dict[str, Any] = {
        "format": "dicom",
        "modality": found,
        "series_uid": uid,
        "series_description": _text(first, "SeriesDescription"),
        "series_number": _text(first, "SeriesNumber"),
        "n_files": n,
        "skipped_files": skipped,
        "manufacturer": _text(first, "Manufacturer"),
        "manufacturer_model": _text(first, "ManufacturerModelName"),
        "kvp": _kvp(first),
        "convolution_kernel": _text(first, "ConvolutionKernel"),
        "body_part_examined": _text(first, "BodyPartExamined"),
        "slice_thickness_mm": _float_or(first, "SliceThickness", 0.0) or None,
        "slice_step_mm": geo.step,
        "pixel_spacing_mm": [float(v) for v in geo.pixel_spacing],
        "image_orientation_patient": [float(v) for v in (*geo.row_cos, *geo.col_cos)],
        "rescale_slope": sorted(set(slopes)),
        "rescale_intercept": sorted(set(intercepts)),
        "transfer_syntax": str(getattr(getattr(first, "file_meta", None), "TransferSyntaxUID", "")),
        "patient": _patient(first),
    }
    return Volume(array, affine, source=str(root), metadata=metadata)


# --------------------------------------------------------------------------------------------
# Series writing
# --------------------------------------------------------------------------------------------


def _ds(value: float) -> str:
    """Formats a decimal string (DS) of at most 16 characters, as precise as fits."""
    # pydicom's format_number_as_ds can round -9.999999999999993 up to 17 characters.
    v = float(value) + 0.0  # + 0.0 turns -0.0 into 0.0
    for digits in range(16, 0, -1):
        text = f"{v:.{digits}g}"
        if len(text) <= 16:
            return text
    raise ValueError(f"cannot format {value!r} as a DICOM decimal string")  # pragma: no cover


def _dicom_layout(volume: Volume) -> tuple[np.ndarray, npt.NDArray[np.float64]]:
    """Permutes and flips the array into (slice, row, column) with an LPS affine to match."""
    lps = _LPS_TO_RAS @ volume.affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    d = lps[:3, :3] / spacing
    gram = d.T @ d
    if np.max(np.abs(gram - np.eye(3))) > 1e-4:
        raise GeometryError(
            "the affine's axes are not perpendicular (a sheared volume); a DICOM series cannot "
            "store it",
            volume.source,
        )
    s = int(np.argmax(np.abs(d[2])))
    rest = [a for a in range(3) if a != s]
    # Columns along LPS x and rows along y is the usual axial layout viewers expect.
    c = max(rest, key=lambda a: abs(d[0, a]))
    r = rest[0] if rest[1] == c else rest[1]
    array = np.transpose(volume.array, (s, r, c))
    m = lps[:, [s, r, c, 3]].copy()

    def flip(axis: int) -> None:
        nonlocal array
        array = np.flip(array, axis=axis)
        m[:3, 3] += m[:3, axis] * (array.shape[axis] - 1)
        m[:3, axis] *= -1

    if m[0, 2] < 0:
        flip(2)
    if m[1, 1] < 0:
        flip(1)
    # The reader sorts slices along cross(row cosines, column cosines); make axis 0 ascend along it.
    normal = np.cross(m[:3, 2], m[:3, 1])
    if normal @ m[:3, 0] < 0:
        flip(0)
    return array, m


def _patient_tags(
    volume: Volume, patient: Mapping[str, str] | None, copy_patient: bool
) -> tuple[dict[str, str], bool]:
    tags = {"PatientName": "Anonymous", "PatientID": "xprospect"}
    identified = False
    if copy_patient:
        src = volume.metadata.get("patient")
        if isinstance(src, Mapping) and src:
            tags.update({k: str(v) for k, v in src.items() if k in PATIENT_KEYWORDS})
            identified = True
        else:
            warnings.warn(
                f"copy_patient=True but {volume.source or 'the volume'} has no "
                'metadata["patient"]; writing anonymous patient tags',
                DicomWarning,
                stacklevel=3,
            )
    if patient is not None:
        unknown = sorted(set(patient) - set(PATIENT_KEYWORDS))
        if unknown:
            raise ConfigError(
                f"unknown patient tag(s) {unknown}; allowed: {', '.join(PATIENT_KEYWORDS)}"
            )
        tags.update({k: str(v) for k, v in patient.items()})
        identified = True
    return tags, identified


def write_dicom_series(
    volume: Volume,
    folder: str | os.PathLike[str],
    *,
    series_description: str = "xprospect",
    patient: Mapping[str, str] | None = None,
    copy_patient: bool = False,
    overwrite: bool = False,
) -> Path:
    """Writes a volume as a CT Image Storage series, one file per slice.

    The slice axis is the array axis most aligned with world z; the other two become rows and
    columns (columns the one nearest patient left-right), flipped where needed so the series
    opens the usual way up in a viewer. Pixels are int16 ``round(HU)`` clipped to the int16 range
    (a :class:`DicomWarning` says when clipping happened), with RescaleSlope 1 and
    RescaleIntercept 0. Every call makes new Study, Series, Frame of Reference and SOP Instance
    UIDs. Files are written to a temporary folder and moved into place at the end.

    Args:
        volume: The volume, values in HU.
        folder: The series folder to create (files ``IM00001.dcm``, ... inside).
        series_description: SeriesDescription.
        patient: Patient tags to write (keys from :data:`PATIENT_KEYWORDS`); applied after
            ``copy_patient``.
        copy_patient: Copy ``volume.metadata["patient"]`` (what the DICOM reader kept).
        overwrite: Replace an existing folder.

    Returns:
        The folder.

    Raises:
        OutputExistsError: The folder exists and ``overwrite`` is False.
        InvalidValuesError: The volume holds NaN or Inf.
        GeometryError: The affine is sheared (axes not perpendicular).
        ConfigError: ``patient`` holds unknown keys.
    """
    from xprospect import __version__

    volume.check_finite()
    array, m = _dicom_layout(volume)
    tags, identified = _patient_tags(volume, patient, copy_patient)
    spacing = np.linalg.norm(m[:3, :3], axis=0)
    row_cos = m[:3, 2] / spacing[2]
    col_cos = m[:3, 1] / spacing[1]
    normal = np.cross(row_cos, col_cos)
    n_slices, rows, cols = array.shape
    study_uid, series_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    now = datetime.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    kvp = volume.metadata.get("kvp")
    clipped = 0

    dest = Path(folder)
    with atomic_dir(dest, overwrite=overwrite) as tmp:
        for k in range(n_slices):
            values = np.rint(np.asarray(array[k], dtype=np.float64))
            clipped += int(np.count_nonzero((values < -32768) | (values > 32767)))
            pixels = np.clip(values, -32768, 32767).astype("<i2")
            ipp = m[:3, 3] + m[:3, 0] * k
            sop_uid = generate_uid()

            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = CTImageStorage
            meta.MediaStorageSOPInstanceUID = sop_uid
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
            meta.ImplementationVersionName = f"XPROSPECT_{__version__}"[:16]

            ds = Dataset()
            ds.file_meta = meta
            ds.SpecificCharacterSet = "ISO_IR 192"
            ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
            ds.InstanceCreationDate = date
            ds.InstanceCreationTime = time
            ds.SOPClassUID = CTImageStorage
            ds.SOPInstanceUID = sop_uid
            ds.StudyDate = tags.get("StudyDate", "")
            ds.SeriesDate = date
            ds.ContentDate = date
            ds.StudyTime = ""
            ds.SeriesTime = time
            ds.ContentTime = time
            ds.AccessionNumber = ""
            ds.Modality = "CT"
            ds.Manufacturer = "xprospect"
            ds.ReferringPhysicianName = ""
            ds.SeriesDescription = series_description
            ds.PatientName = tags.get("PatientName", "")
            ds.PatientID = tags.get("PatientID", "")
            ds.PatientBirthDate = tags.get("PatientBirthDate", "")
            ds.PatientSex = tags.get("PatientSex", "")
            if not identified:
                ds.PatientIdentityRemoved = "YES"
            ds.KVP = _ds(kvp) if isinstance(kvp, int | float) and math.isfinite(kvp) else ""
            ds.SliceThickness = _ds(spacing[0])
            ds.SpacingBetweenSlices = _ds(spacing[0])
            ds.SoftwareVersions = f"xprospect {__version__}"
            ds.PatientPosition = ""
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series_uid
            ds.StudyID = ""
            ds.SeriesNumber = 1
            ds.AcquisitionNumber = 1
            ds.InstanceNumber = k + 1
            ds.ImagePositionPatient = [_ds(v) for v in ipp]
            ds.ImageOrientationPatient = [_ds(v) for v in (*row_cos, *col_cos)]
            ds.FrameOfReferenceUID = frame_uid
            ds.PositionReferenceIndicator = ""
            ds.SliceLocation = _ds(float(ipp @ normal))
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.Rows = rows
            ds.Columns = cols
            ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[2])]
            ds.BitsAllocated = 16
            ds.BitsStored = 16
            ds.HighBit = 15
            ds.PixelRepresentation = 1
            ds.WindowCenter = "40"
            ds.WindowWidth = "400"
            ds.RescaleIntercept = "0"
            ds.RescaleSlope = "1"
            ds.RescaleType = "HU"
            ds.BurnedInAnnotation = "NO"
            ds.add_new(0x7FE00010, "OW", pixels.tobytes())
            ds.save_as(tmp / f"IM{k + 1:05d}.dcm", enforce_file_format=True)
    if clipped:
        warnings.warn(
            f"{dest}: {clipped} voxel(s) outside the int16 range were clipped",
            DicomWarning,
            stacklevel=2,
        )
    return dest


# --------------------------------------------------------------------------------------------
# Radiographs
# --------------------------------------------------------------------------------------------


def voi_window(
    values: npt.ArrayLike, center: float, width: float, function: str = "LINEAR"
) -> npt.NDArray[np.float64]:
    """Applies a DICOM VOI window (PS3.3 C.11.2.1.2) with output range [0, 1].

    Args:
        values: Modality-LUT output (e.g. rescaled pixel values).
        center: Window Center.
        width: Window Width (>= 1 for LINEAR, > 0 otherwise).
        function: VOI LUT Function: ``LINEAR``, ``LINEAR_EXACT`` or ``SIGMOID``.

    Returns:
        float64 values in [0, 1].

    Raises:
        ValueError: The width is out of range for the function, or the function is unknown.
    """
    x = np.asarray(values, dtype=np.float64)
    fn = function.strip().upper()
    c, w = float(center), float(width)
    if not math.isfinite(c):
        raise ValueError(f"window center must be finite, got {center}")
    if fn == "LINEAR":
        if not w >= 1:
            raise ValueError(f"LINEAR window width must be >= 1, got {width}")
        # The standard's -0.5 and (w - 1) centre the ramp on integer-valued pixel data.
        return (
            np.clip((x - (c - 0.5)) / (w - 1) + 0.5, 0.0, 1.0)
            if w > 1
            else ((x > c - 0.5).astype(np.float64))
        )
    if fn == "LINEAR_EXACT":
        if not w > 0:
            raise ValueError(f"LINEAR_EXACT window width must be > 0, got {width}")
        return np.clip((x - c) / w + 0.5, 0.0, 1.0)
    if fn == "SIGMOID":
        if not w > 0:
            raise ValueError(f"SIGMOID window width must be > 0, got {width}")
        return 1.0 / (1.0 + np.exp(np.clip(-4.0 * (x - c) / w, -700.0, 700.0)))
    raise ValueError(
        f"unknown VOI LUT function {function!r}; expected LINEAR, LINEAR_EXACT, SIGMOID"
    )


def _voi_lut(values: np.ndarray, item: Dataset, signed: bool, path: Path) -> np.ndarray:
    try:
        desc = [int(v) for v in item.LUTDescriptor]
        n_entries = desc[0] or 65536
        first = desc[1]
        bits = desc[2]
        if signed and first >= 32768:
            first -= 65536
        data = item.LUTData
        if isinstance(data, bytes):
            dtype = np.uint8 if bits <= 8 and len(data) == n_entries else np.dtype("<u2")
            lut = np.frombuffer(data, dtype=dtype).astype(np.float64)
        else:
            lut = np.asarray(data if isinstance(data, Iterable) else [data], dtype=np.float64)
    except Exception as exc:  # a malformed sequence item can fail in many ways
        raise DicomError(f"unreadable VOI LUT Sequence ({_short(exc)})", path) from exc
    if lut.size == 0 or not 1 <= bits <= 16:
        raise DicomError(f"invalid VOI LUT: {lut.size} entries, {bits} bits per entry", path)
    idx = np.clip(np.rint(values) - first, 0, min(n_entries, lut.size) - 1).astype(np.intp)
    # Some writers declare 16 bits but fill 12; normalising by the declared depth is the standard,
    # but never let a value above it escape [0, 1].
    top = max(float(2**bits - 1), float(lut.max()))
    return lut[idx] / top


def _spacing(ds: Dataset, keyword: str) -> tuple[float, float] | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        pair = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    # Kilometre (or sub-micrometre) pixels are a corrupt tag: treated as no spacing.
    if len(pair) != 2 or not all(
        math.isfinite(v) and MIN_SPACING_MM < v <= MAX_SPACING_MM for v in pair
    ):
        return None
    return (pair[0], pair[1])


def _orient(
    image: np.ndarray, ds: Dataset, path: Path
) -> tuple[np.ndarray, list[str], bool, list[str] | None]:
    """Flips/transposes to rows towards F and columns towards L (frontal) or P (lateral)."""
    raw = ds.get("PatientOrientation")
    if raw is None or raw == "":
        return image, [], False, None
    values = [
        str(v).strip().upper() for v in (raw if isinstance(raw, MultiValue | list) else [raw])
    ]
    if len(values) != 2 or not all(values):
        warnings.warn(
            f"{path}: PatientOrientation {values} is not two directions; kept as stored",
            DicomWarning,
            stacklevel=3,
        )
        return image, [], False, values
    # A compound value such as "LF" is oblique; its first letter is the dominant direction.
    horiz, vert = values[0][0], values[1][0]
    transposed = False
    if horiz in "HF" and vert in "LRAP":
        image = image.T
        horiz, vert = vert, horiz
        transposed = True
    if horiz not in "LRAP" or vert not in "HF":
        warnings.warn(
            f"{path}: PatientOrientation {values} is not understood; kept as stored",
            DicomWarning,
            stacklevel=3,
        )
        return image, [], False, values
    flipped = []
    if vert == "H":
        image = image[::-1, :]
        flipped.append("vertical")
    if horiz in ("R", "A"):
        image = image[:, ::-1]
        flipped.append("horizontal")
    return image, flipped, transposed, values


def read_dicom_radiograph(
    path: str | os.PathLike[str],
    *,
    view: str | View | None = None,
    max_pixels: int | None = None,
    max_bytes: int | None = None,
) -> Radiograph:
    """Reads a CR/DX (or DR, RG, OT, PX) DICOM file as a display-ready :class:`Radiograph`.

    The Modality LUT (RescaleSlope/Intercept or Modality LUT Sequence) is applied, then the VOI:
    the first VOI LUT Sequence item, else the first Window Center/Width with its VOI LUT Function
    (LINEAR, LINEAR_EXACT, SIGMOID), else min-max. MONOCHROME1, or a Presentation LUT Shape of
    INVERSE, inverts the result (once) so bright means dense. PatientOrientation, when present,
    decides flips (and a transpose) so rows run head to feet and columns run to the patient's
    left (frontal) or posterior (lateral).

    Rows x Columns are checked against the limits of :mod:`xprospect.io.limits` before the
    pixels are decoded.

    Args:
        path: The DICOM file.
        view: Overrides the file's ViewPosition.
        max_pixels: Pixel limit (default: ``XPROSPECT_MAX_PIXELS`` or 2^28).
        max_bytes: Memory limit in bytes (default: ``XPROSPECT_MAX_BYTES`` or 8 GiB).

    Returns:
        float32 image in [0, 1]. ``metadata`` records ``photometric_interpretation``,
        ``bits_stored``, ``voi`` (``"lut"``, ``"window"`` or ``"minmax"``) with its parameters,
        ``inverted``, ``flipped`` (list of ``"vertical"``/``"horizontal"``), ``transposed``,
        ``pixel_spacing_source``; identifying tags only under ``metadata["patient"]``.

    Raises:
        MissingDataError: No such file.
        EmptyFileError: The file has no bytes.
        UnsupportedFormatError: Not DICOM, multi-frame, or colour.
        ModalityError: A CT, MR or other non-projection modality.
        DicomError: Truncated or corrupt, or pixel data that cannot be decoded.
        ResourceLimitError: The file or its Rows x Columns exceed the limits.
        ValueError: ``view`` is not a known view name.
    """
    p = Path(path)
    limits = resolve_limits(max_bytes=max_bytes, max_pixels=max_pixels)
    _open_checks(p)
    ds = _read_full(p, limits)
    modality = _text(ds, "Modality").upper()
    if modality and modality not in RADIOGRAPH_MODALITIES:
        raise ModalityError(
            f"modality {modality!r} is not a projection radiograph; expected one of "
            f"{', '.join(sorted(RADIOGRAPH_MODALITIES))}",
            p,
        )
    frames = ds.get("NumberOfFrames")
    try:
        n_frames = int(frames) if frames not in (None, "") else 1
    except (TypeError, ValueError):
        n_frames = 1
    if n_frames > 1:
        raise UnsupportedFormatError(
            f"multi-frame radiograph ({n_frames} frames) is not supported; expected one image", p
        )
    if "PixelData" not in ds:
        raise DicomError("no pixel data: the file is truncated or holds no image", p)
    # The largest array made below is float64 (the Modality LUT's output).
    check_image_size(_rows_columns(ds, p), 8, p, limits=limits, what="the DICOM header")
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    photometric = _text(ds, "PhotometricInterpretation").upper()
    if spp != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise UnsupportedFormatError(
            f"expected a greyscale radiograph, got {photometric or 'no photometric interpretation'}"
            f" with {spp} sample(s) per pixel",
            p,
        )
    raw = _pixels(ds, p)
    if raw.ndim != 2:
        raise DicomError(f"expected a 2D image, got pixel array of shape {raw.shape}", p)
    try:
        values = np.asarray(pydicom.pixels.apply_modality_lut(raw, ds), dtype=np.float64)
    except Exception as exc:  # malformed Modality LUT Sequence
        raise DicomError(f"cannot apply the Modality LUT ({_short(exc)})", p) from exc

    meta: dict[str, Any] = {
        "format": "dicom",
        "modality": modality,
        "photometric_interpretation": photometric,
        "bits_stored": int(ds.get("BitsStored", 0) or 0) or None,
    }
    image = _apply_voi(values, ds, p, meta)
    shape_lut = _text(ds, "PresentationLUTShape").upper()
    inverted = photometric == "MONOCHROME1" or shape_lut == "INVERSE"
    if inverted:
        image = 1.0 - image
    meta["presentation_lut_shape"] = shape_lut or None
    meta["inverted"] = inverted

    spacing = _spacing(ds, "PixelSpacing")
    source = "PixelSpacing"
    if spacing is None:
        spacing, source = _spacing(ds, "ImagerPixelSpacing"), "ImagerPixelSpacing"
    if spacing is None:
        source = "none"
        warnings.warn(
            f"{p}: no valid PixelSpacing or ImagerPixelSpacing "
            f"(PixelSpacing={ds.get('PixelSpacing')!r}); pixel spacing unknown",
            DicomWarning,
            stacklevel=2,
        )
    meta["pixel_spacing_source"] = source

    image, flipped, transposed, orientation = _orient(image, ds, p)
    if transposed and spacing is not None:
        spacing = (spacing[1], spacing[0])
    meta["patient_orientation"] = orientation
    meta["flipped"] = flipped
    meta["transposed"] = transposed

    if view is not None:
        chosen = View.parse(view)
    else:
        try:
            chosen = View.parse(_text(ds, "ViewPosition") or None)
        except ValueError:
            chosen = View.UNKNOWN
    meta["view_position"] = _text(ds, "ViewPosition")
    meta["manufacturer"] = _text(ds, "Manufacturer")
    meta["kvp"] = _kvp(ds)
    meta["series_uid"] = _text(ds, "SeriesInstanceUID")
    meta["patient"] = _patient(ds)

    out = np.clip(np.ascontiguousarray(image, dtype=np.float32), 0.0, 1.0)
    return Radiograph(out, view=chosen, pixel_spacing_mm=spacing, source=str(p), metadata=meta)


def _apply_voi(values: np.ndarray, ds: Dataset, path: Path, meta: dict[str, Any]) -> np.ndarray:
    seq = ds.get("VOILUTSequence")
    if seq:
        signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
        meta["voi"] = "lut"
        meta["voi_explanation"] = _text(seq[0], "LUTExplanation")
        return _voi_lut(values, seq[0], signed, path)
    if ds.get("WindowCenter") not in (None, "") and ds.get("WindowWidth") not in (None, ""):
        center = _float_or(ds, "WindowCenter", float("nan"))
        width = _float_or(ds, "WindowWidth", float("nan"))
        function = _text(ds, "VOILUTFunction").upper() or "LINEAR"
        try:
            out = voi_window(values, center, width, function)
        except ValueError as exc:
            warnings.warn(f"{path}: {exc}; using min-max instead", DicomWarning, stacklevel=3)
        else:
            meta["voi"] = "window"
            meta["window_center"] = center
            meta["window_width"] = width
            meta["voi_lut_function"] = function
            return out
    meta["voi"] = "minmax"
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros_like(values)
    return (values - lo) / (hi - lo)
