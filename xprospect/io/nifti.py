"""NIfTI-1/2 volumes (``.nii``, ``.nii.gz``) with their affine.

NIfTI's affine is RAS+ mm, the same frame as :attr:`xprospect.image.Volume.affine`, so reading and
writing keep world coordinates without conversion. Arrays keep the file's orientation on read;
:func:`xprospect.preprocessing.reorient` makes them canonical.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from xprospect.errors import ImageFormatError
from xprospect.image import Volume
from xprospect.io._checks import require_file
from xprospect.utils import atomic_path

__all__ = ["NIFTI_SUFFIXES", "is_nifti_path", "read_nifti", "write_nifti"]

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti_path(path: str | os.PathLike[str]) -> bool:
    name = Path(path).name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def read_nifti(path: str | os.PathLike[str], *, dtype: str | None = None) -> Volume:
    """Reads a 3D NIfTI volume.

    Integer data without scaling stays integer (int16 CT stays int16, halving memory and time);
    scaled data (``scl_slope``/``scl_inter`` set) becomes float32. A 4D file whose extra axes all
    have length 1 is squeezed to 3D.

    Args:
        path: A ``.nii`` or ``.nii.gz`` file.
        dtype: Force the output dtype (e.g. ``"float32"``).

    Returns:
        The volume in the file's own orientation, with its affine (sform if set, else qform).

    Raises:
        MissingDataError: The file does not exist.
        EmptyFileError: The file has no bytes.
        ImageFormatError: Not a readable NIfTI, truncated, or not 3D.
        InvalidValuesError: The data holds NaN or Inf.
    """
    p = require_file(path)
    try:
        img = _load_image(p)
    except ImageFormatError:
        raise
    except Exception as exc:  # nibabel raises several unrelated types for corrupt headers
        raise ImageFormatError(f"not a readable NIfTI file ({_short(exc)})", p) from exc
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise ImageFormatError(f"expected NIfTI, nibabel read it as {type(img).__name__}", p)
    shape = img.shape
    if len(shape) > 3 and all(s == 1 for s in shape[3:]):
        shape = shape[:3]
    if len(shape) != 3:
        raise ImageFormatError(
            f"expected a 3D volume, got {len(img.shape)}D data of shape {tuple(img.shape)}", p
        )
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
    volume = Volume(
        array,
        img.affine,
        source=str(p),
        metadata={"format": "nifti", "file_dtype": str(img.get_data_dtype())},
    )
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


def _load_image(p: Path) -> nib.Nifti1Image | nib.Nifti2Image:
    if not p.name.lower().endswith(".gz"):
        return nib.load(str(p))  # type: ignore[return-value]
    # zlib in one call is ~1.7x faster than nibabel's streaming gzip reader on large CT files.
    data = p.read_bytes()
    chunks = []
    while data:
        d = zlib.decompressobj(wbits=31)
        try:
            chunks.append(d.decompress(data))
        except zlib.error as exc:
            raise ImageFormatError(f"gzip stream is corrupt ({_short(exc)})", p) from exc
        if not d.eof:
            raise ImageFormatError("gzip stream is truncated", p)
        data = d.unused_data  # concatenated gzip members are legal
    raw = b"".join(chunks)
    sizeof_hdr = int.from_bytes(raw[:4], "little") if len(raw) >= 4 else 0
    klass = nib.Nifti2Image if sizeof_hdr in (540, 0x1C020000) else nib.Nifti1Image
    return klass.from_bytes(raw)


def _integer_shift_fits(raw: np.ndarray, slope: float, inter: float) -> bool:
    if raw.dtype != np.int16 or slope != 1 or inter != int(inter) or abs(inter) > 32767:
        return False
    lo, hi = int(raw.min()), int(raw.max())
    return lo + inter >= -32768 and hi + inter <= 32767


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
