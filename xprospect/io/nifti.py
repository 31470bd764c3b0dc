"""NIfTI-1/2 volumes (``.nii``, ``.nii.gz``) with their affine.

NIfTI's affine is RAS+ mm, the same frame as :attr:`xprospect.image.Volume.affine`, so reading and
writing keep world coordinates without conversion. Arrays keep the file's orientation on read;
:func:`xprospect.preprocessing.reorient` makes them canonical.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from xprospect.errors import GeometryError, ImageFormatError, ResourceLimitError, XprospectError
from xprospect.image import Volume
from xprospect.io._checks import require_file
from xprospect.io.limits import (
    Limits,
    check_spacing,
    check_volume_size,
    format_bytes,
    resolve_limits,
)
from xprospect.utils import atomic_path

__all__ = ["NIFTI_SUFFIXES", "is_nifti_path", "read_nifti", "write_nifti"]

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti_path(path: str | os.PathLike[str]) -> bool:
    name = Path(path).name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def read_nifti(
    path: str | os.PathLike[str],
    *,
    dtype: str | None = None,
    max_voxels: int | None = None,
    max_bytes: int | None = None,
) -> Volume:
    """Reads a 3D NIfTI volume.

    Integer data without scaling stays integer (int16 CT stays int16, halving memory and time);
    scaled data (``scl_slope``/``scl_inter`` set) becomes float32. A 4D file whose extra axes all
    have length 1 is squeezed to 3D.

    The header is read and checked first: the size it implies must be within the limits of
    :mod:`xprospect.io.limits` and its voxel spacing plausible, before any voxel is read. A
    ``.nii.gz`` is decompressed as a stream, never past the size its header implies, so a gzip
    bomb cannot fill the memory.

    Args:
        path: A ``.nii`` or ``.nii.gz`` file.
        dtype: Force the output dtype (e.g. ``"float32"``).
        max_voxels: Voxel limit (default: ``XPROSPECT_MAX_VOXELS`` or 2^31).
        max_bytes: Memory limit in bytes (default: ``XPROSPECT_MAX_BYTES`` or 8 GiB).

    Returns:
        The volume in the file's own orientation, with its affine (sform if set, else qform).

    Raises:
        MissingDataError: The file does not exist.
        EmptyFileError: The file has no bytes.
        ImageFormatError: Not a readable NIfTI, truncated, or not 3D.
        ResourceLimitError: The header implies a volume beyond the limits.
        GeometryError: The header's voxel spacing or affine is not plausible.
        InvalidValuesError: The data holds NaN or Inf.
    """
    p = require_file(path)
    limits = resolve_limits(max_voxels, max_bytes)
    try:
        img, shape = _load_image(p, limits)
    except XprospectError:
        raise
    except Exception as exc:  # nibabel raises several unrelated types for corrupt headers
        raise ImageFormatError(f"not a readable NIfTI file ({_short(exc)})", p) from exc
    try:
        raw = np.asanyarray(img.dataobj.get_unscaled()).reshape(shape)  # type: ignore[attr-defined]
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, ValueError) as exc:
        raise ImageFormatError(f"data is truncated or corrupt ({_short(exc)})", p) from exc
    slope, inter = img.dataobj.slope, img.dataobj.inter  # type: ignore[attr-defined]
    scaled = np.isfinite(slope) and np.isfinite(inter) and (slope != 1 or inter != 0)
    if scaled and _integer_shift_fits(raw, slope, inter):
        # CT is often stored as HU + 1024 with scl_inter = -1024: stay in int16, skip float math.
        array = (raw + np.int16(inter)).astype(np.int16, copy=False)
    elif scaled:
        array = raw.astype(np.float32) * np.float32(slope) + np.float32(inter)
    elif raw.dtype.kind == "f" and raw.dtype != np.float32:
        array = raw.astype(np.float32)
    else:
        array = raw
    if dtype is not None:
        array = array.astype(dtype)
    try:
        volume = Volume(
            array,
            img.affine,
            source=str(p),
            metadata={"format": "nifti", "file_dtype": str(img.get_data_dtype())},
        )
    except GeometryError as exc:
        raise GeometryError(exc.message, p) from None
    return volume.check_finite()


def write_nifti(
    volume: Volume,
    path: str | os.PathLike[str],
    *,
    dtype: str | np.dtype | None = "int16",
    overwrite: bool = True,
) -> Path:
    """Writes a volume as NIfTI with its affine in both sform and qform (code 1, scanner).

    Args:
        volume: The volume; HU for CT.
        path: Destination ending in ``.nii`` or ``.nii.gz``.
        dtype: On-disk type. ``int16`` (default) rounds and clips HU, as CT is usually stored;
            ``None`` keeps the array's dtype; ``float32`` keeps fractional values.
        overwrite: If False, refuse to replace an existing file.

    Returns:
        The path written. The write is atomic.

    Raises:
        ImageFormatError: The path does not end in .nii or .nii.gz.
        OutputExistsError: The file exists and ``overwrite`` is False.
    """
    p = Path(path)
    if not is_nifti_path(p):
        raise ImageFormatError("NIfTI file names must end in .nii or .nii.gz", p)
    array = np.asarray(volume.array)
    if dtype is not None:
        target = np.dtype(dtype)
        if target.kind in "iu" and array.dtype.kind == "f":
            info = np.iinfo(target)
            array = np.clip(np.rint(array), info.min, info.max)
        array = array.astype(target)
    img = nib.Nifti1Image(array, volume.affine)
    img.set_sform(volume.affine, code=1)
    img.set_qform(volume.affine, code=1)
    img.header.set_xyzt_units(xyz="mm")
    with atomic_path(p, overwrite=overwrite) as tmp:
        nib.save(img, str(tmp))
    return p


_GZIP_CHUNK = 1 << 20
"""Compressed bytes read at a time."""
_GZIP_STEP = 64 << 20
"""Most decompressed bytes one zlib call may return (bounds the intermediate copies)."""
_GZIP_SLACK = 1 << 16
"""Decompressed bytes past the data decompressed to reach the member's end (and its CRC)."""
_HEADER_BYTES = 544
"""Enough decompressed bytes for a NIfTI-2 header (540) and the extension flag."""


def _header_class(head: bytes) -> type[nib.Nifti1Image] | type[nib.Nifti2Image]:
    sizeof_hdr = int.from_bytes(head[:4], "little") if len(head) >= 4 else 0
    return nib.Nifti2Image if sizeof_hdr in (540, 0x1C020000) else nib.Nifti1Image


def _load_image(
    p: Path, limits: Limits
) -> tuple[nib.Nifti1Image | nib.Nifti2Image, tuple[int, int, int]]:
    """The image (data not yet read) and its 3D shape, after the header passed its checks."""
    if not p.name.lower().endswith(".gz"):
        img = nib.load(str(p))  # reads the header only; the data stay on disk
        if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
            raise ImageFormatError(f"expected NIfTI, nibabel read it as {type(img).__name__}", p)
        shape, _ = _check_header(img.header, p, limits)
        return img, shape
    head = _gunzip(p, _HEADER_BYTES)
    klass = _header_class(head)
    header = klass.header_class(head[: klass.header_class.template_dtype.itemsize])
    shape, needed = _check_header(header, p, limits)
    # zlib in large steps is ~1.7x faster than nibabel's streaming gzip reader on large CT files,
    # and stopping at the size the header implies bounds the memory a gzip bomb can take.
    raw = _gunzip(p, needed, verify_end=True)
    if len(raw) < needed:
        raise ImageFormatError(
            f"data is truncated: the header implies {needed} bytes, the file holds {len(raw)}", p
        )
    return klass.from_bytes(raw), shape


def _check_header(
    header: nib.Nifti1Header, p: Path, limits: Limits
) -> tuple[tuple[int, int, int], int]:
    """The 3D shape and the bytes up to the end of the data, after checking dimensions, size
    (against ``limits``) and spacing."""
    full = tuple(int(s) for s in header.get_data_shape())
    if not full or any(s < 1 for s in full):
        raise ImageFormatError(f"header has invalid dimensions {full}", p)
    shape = full[:3] if len(full) > 3 and all(s == 1 for s in full[3:]) else full
    if len(shape) != 3:
        raise ImageFormatError(f"expected a 3D volume, got {len(full)}D data of shape {full}", p)
    file_dtype = header.get_data_dtype()
    slope, inter = header.get_slope_inter()
    scaled = (slope is not None and slope != 1) or (inter is not None and inter != 0)
    widened = scaled or file_dtype.kind == "f"
    per_voxel = max(file_dtype.itemsize, 4) if widened else file_dtype.itemsize
    check_volume_size(shape, per_voxel, p, limits=limits, what="NIfTI header")
    offset = int(header.get_data_offset())
    if offset > limits.max_bytes:
        raise ResourceLimitError(
            f"NIfTI header puts the data at byte {offset}, beyond the memory limit of "
            f"{format_bytes(limits.max_bytes)} (a corrupt vox_offset?)",
            p,
        )
    affine = header.get_best_affine()
    if not np.all(np.isfinite(affine)):
        raise GeometryError("NIfTI header's affine holds NaN or Inf", p)
    check_spacing(np.linalg.norm(affine[:3, :3], axis=0), p, what="NIfTI voxel spacing")
    return shape, offset + math.prod(full) * file_dtype.itemsize


def _gunzip(p: Path, limit: int, *, verify_end: bool = False) -> bytes:
    """The first ``limit`` decompressed bytes of a gzip file (fewer if it holds fewer).

    Concatenated gzip members are legal and read in turn; nothing past ``limit`` is decompressed
    except, with ``verify_end``, up to :data:`_GZIP_SLACK` bytes to reach the end of the member,
    where zlib checks its CRC (more trailing data than that is ignored, as nibabel ignores it).

    Raises:
        ImageFormatError: The stream is corrupt, or truncated.
    """
    chunks: list[bytes] = []
    have = 0
    d = zlib.decompressobj(wbits=31)
    fed = False  # whether the current member has been given any bytes
    at_end = False
    with p.open("rb") as fh:
        pending = b""

        def step(budget: int) -> bytes:
            nonlocal pending, at_end, fed, d
            if not pending and not at_end:
                pending = fh.read(_GZIP_CHUNK)
                at_end = not pending
            if at_end and (not fed or d.eof):
                raise EOFError
            fed = True
            try:
                # At the end of the file (pending == b"") this drains what zlib still holds.
                out = d.decompress(pending, budget)
            except zlib.error as exc:
                raise ImageFormatError(f"gzip stream is corrupt ({_short(exc)})", p) from exc
            if d.eof:
                pending = d.unused_data  # concatenated gzip members are legal
                d = zlib.decompressobj(wbits=31)
                fed = False
            else:
                pending = d.unconsumed_tail
                if at_end and not out and not pending:
                    raise EOFError
            return out

        slack = 0
        try:
            while have < limit:
                out = step(min(limit - have, _GZIP_STEP))
                chunks.append(out)
                have += len(out)
            if verify_end:
                slack = _GZIP_SLACK
                while fed and slack > 0:
                    slack -= len(step(slack))
        except EOFError:
            pass
    if fed and (have < limit or (verify_end and slack > 0)):
        raise ImageFormatError("gzip stream is truncated", p)
    return b"".join(chunks)[:limit]


def _integer_shift_fits(raw: np.ndarray, slope: float, inter: float) -> bool:
    if raw.dtype != np.int16 or slope != 1 or inter != int(inter) or abs(inter) > 32767:
        return False
    lo, hi = int(raw.min()), int(raw.max())
    return lo + inter >= -32768 and hi + inter <= 32767


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
