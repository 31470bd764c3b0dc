"""Radiographs as PNG/JPEG (8- and 16-bit grayscale), read with Pillow.

Raster files carry no photometric tag or pixel spacing: pixels are taken as display values
(bright = dense, MONOCHROME2) unless ``invert=True``, and the view must be given by the caller.
Colour images (RGB, RGBA, palette, grey+alpha) are converted to luminance with a warning, since
chest X-ray collections often hold grey images saved as colour.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from xprospect.errors import ImageFormatError, ResourceLimitError
from xprospect.image import Radiograph, View
from xprospect.io._checks import open_clamped, require_file
from xprospect.io.limits import check_image_size, resolve_limits
from xprospect.utils import atomic_path

__all__ = ["RASTER_SUFFIXES", "read_raster_radiograph", "write_png"]

RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

# Pillow's grey modes with their full-scale value; 16-bit PNGs decode as "I;16*" or "I".
_GREY_SCALE = {"L": 255.0, "I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "1": 1.0}


def read_raster_radiograph(
    path: str | os.PathLike[str],
    *,
    view: str | View | None = None,
    invert: bool = False,
    pixel_spacing_mm: tuple[float, float] | None = None,
    max_pixels: int | None = None,
    max_bytes: int | None = None,
) -> Radiograph:
    """Reads a grayscale radiograph from PNG, JPEG, TIFF or BMP.

    The size in the file's header is checked against the limits of :mod:`xprospect.io.limits`
    before the pixels are decoded; Pillow's decompression-bomb check
    (``PIL.Image.MAX_IMAGE_PIXELS``) applies too.

    Args:
        path: The image file.
        view: PA, AP or LATERAL (see :meth:`View.parse`); unknown if not given.
        invert: Set for images stored with bright = air (MONOCHROME1-like exports).
        pixel_spacing_mm: Detector pixel spacing, if known from elsewhere.
        max_pixels: Pixel limit (default: ``XPROSPECT_MAX_PIXELS`` or 2^28).
        max_bytes: Memory limit in bytes (default: ``XPROSPECT_MAX_BYTES`` or 8 GiB).

    Returns:
        A float32 radiograph in [0, 1] (8-bit divided by 255, 16-bit by 65535).

    Raises:
        MissingDataError, EmptyFileError: No file, or an empty one.
        ImageFormatError: Not a decodable image, or truncated.
        ResourceLimitError: The image is larger than the limits (or Pillow's bomb limit).
    """
    p = require_file(path)
    limits = resolve_limits(max_bytes=max_bytes, max_pixels=max_pixels)
    try:
        # Clamped reads: Pillow reads a PNG chunk's declared length in one call.
        with open_clamped(p) as fh, Image.open(fh) as img:
            # Image.open reads the header only: refuse a decompression bomb before decoding.
            width, height = img.size
            # Colour converts through an 8-bit grey copy; the float32 result is the largest.
            check_image_size((height, width), 4, p, limits=limits, what="the image header")
            img.load()
            mode = img.mode
            array, scale = _to_grey(img, p)
    except Image.DecompressionBombError as exc:
        raise ResourceLimitError(
            f"image is larger than Pillow's decompression-bomb limit ({exc}); if it is genuine, "
            "raise PIL.Image.MAX_IMAGE_PIXELS",
            p,
        ) from None
    except UnidentifiedImageError as exc:
        raise ImageFormatError("not a readable image (unknown or corrupt format)", p) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        # Pillow reports truncated and corrupt streams as OSError/SyntaxError.
        raise ImageFormatError(f"image data is truncated or corrupt ({exc})", p) from exc
    out = array.astype(np.float32) / np.float32(scale)
    if invert:
        out = 1.0 - out
    return Radiograph(
        out,
        view=View.parse(view),
        pixel_spacing_mm=pixel_spacing_mm,
        source=str(p),
        metadata={"format": p.suffix.lower().lstrip("."), "mode": mode, "inverted": invert},
    )


def _to_grey(img: Image.Image, path: Path) -> tuple[np.ndarray, float]:
    mode = img.mode
    if mode in _GREY_SCALE:
        return np.asarray(img), _GREY_SCALE[mode]
    if mode in ("I", "F"):
        a = np.asarray(img)
        # Pillow widens 16-bit PNGs to mode "I" (int32); the values still fit 16 bits.
        if mode == "I" and a.min() >= 0 and a.max() <= 65535:
            return a, 65535.0
        lo, hi = float(a.min()), float(a.max())
        return (a - lo), max(hi - lo, 1e-12)
    if mode in ("RGB", "RGBA", "P", "PA", "LA", "CMYK", "YCbCr", "LAB", "HSV"):
        warnings.warn(
            f"{path}: {mode} image converted to grayscale (luminance); alpha is ignored",
            stacklevel=3,
        )
        return np.asarray(img.convert("L")), 255.0
    raise ImageFormatError(f"unsupported image mode {mode!r}", path)


def write_png(
    image: Radiograph | np.ndarray,
    path: str | os.PathLike[str],
    *,
    bits: int = 8,
    value_range: tuple[float, float] = (0.0, 1.0),
    overwrite: bool = True,
) -> Path:
    """Writes a 2D image as an 8- or 16-bit grayscale PNG (atomic).

    Args:
        image: A radiograph or 2D array.
        path: Destination ``.png``.
        bits: 8 or 16.
        value_range: Values mapped to black and white; outside values are clipped.
        overwrite: If False, refuse to replace an existing file.
    """
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits}")
    a = np.asarray(image.array if isinstance(image, Radiograph) else image, dtype=np.float64)
    if a.ndim != 2:
        raise ImageFormatError(f"PNG export needs a 2D image, got shape {a.shape}", path)
    lo, hi = value_range
    full = 2**bits - 1
    scaled = np.clip((a - lo) / max(hi - lo, 1e-12), 0.0, 1.0) * full
    q = np.rint(np.nan_to_num(scaled)).astype(np.uint8 if bits == 8 else np.uint16)
    with atomic_path(path, overwrite=overwrite) as tmp:
        Image.fromarray(q).save(tmp, format="PNG")
    return Path(path)
