"""Size limits the readers check before they allocate, and sanity checks of voxel spacing.

Every reader computes the size its file's header implies (shape times the bytes per value it
will hold in memory; for a DICOM series rows x columns x slices) and refuses beyond a limit
*before* it reads pixels, so a corrupt or hostile header cannot make it try an 82 GiB
allocation. The defaults are far above any real CT or radiograph:

=======================  ===============  ==========================================
limit                    default          environment variable (keyword argument)
=======================  ===============  ==========================================
voxels of a volume       2^31             ``XPROSPECT_MAX_VOXELS`` (``max_voxels``)
bytes in memory          8 GiB            ``XPROSPECT_MAX_BYTES`` (``max_bytes``)
pixels of a radiograph   2^28             ``XPROSPECT_MAX_PIXELS`` (``max_pixels``)
=======================  ===============  ==========================================

A keyword argument wins over the environment variable, which wins over the default. Values are
whole numbers, optionally with a binary suffix (``16G``, ``512M``, ``4K``). Pillow's own
decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``, about 179 M pixels before it refuses)
applies to raster files as well.

Voxel and pixel spacing must be finite and within (0.001, 50] mm: a kilometre voxel is a
corrupt header, not a CT.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from xprospect.errors import ConfigError, GeometryError, ResourceLimitError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_VOXELS",
    "ENV_MAX_BYTES",
    "ENV_MAX_PIXELS",
    "ENV_MAX_VOXELS",
    "MAX_SPACING_MM",
    "MIN_SPACING_MM",
    "Limits",
    "check_file_size",
    "check_image_size",
    "check_spacing",
    "check_volume_size",
    "format_bytes",
    "resolve_limits",
]

DEFAULT_MAX_VOXELS = 2**31
"""Voxels a volume may have (a 1024 x 1024 x 2048 CT; real CTs are about 512 x 512 x 600)."""
DEFAULT_MAX_BYTES = 8 * 2**30
"""Bytes the largest array a reader makes may take in memory (8 GiB)."""
DEFAULT_MAX_PIXELS = 2**28
"""Pixels a radiograph may have (16384 x 16384; detectors are about 4300 x 4300)."""
ENV_MAX_VOXELS = "XPROSPECT_MAX_VOXELS"
ENV_MAX_BYTES = "XPROSPECT_MAX_BYTES"
ENV_MAX_PIXELS = "XPROSPECT_MAX_PIXELS"
MIN_SPACING_MM = 1e-3
"""Smallest plausible voxel or pixel spacing (1 micrometre, exclusive)."""
MAX_SPACING_MM = 50.0
"""Largest plausible voxel or pixel spacing (inclusive)."""

_SUFFIXES = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_NUMBER = re.compile(r"^\s*(\d[\d_]*)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Limits:
    """The limits in force for one read (see :func:`resolve_limits`)."""

    max_voxels: int
    max_bytes: int
    max_pixels: int


def _parse(text: str, variable: str) -> int:
    match = _NUMBER.match(text)
    if match is None:
        raise ConfigError(
            f"environment variable {variable}={text!r} must be a whole number, optionally with "
            "K, M, G or T (e.g. 16G)"
        )
    value = int(match.group(1).replace("_", "")) * _SUFFIXES[match.group(2).upper()]
    if value < 1:
        raise ConfigError(f"environment variable {variable}={text!r} must be at least 1")
    return value


def _one(value: int | None, variable: str, default: int, name: str) -> int:
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        return int(value)
    text = os.environ.get(variable, "").strip()
    return _parse(text, variable) if text else default


def resolve_limits(
    max_voxels: int | None = None, max_bytes: int | None = None, max_pixels: int | None = None
) -> Limits:
    """The limits in force: each argument if given, else its environment variable, else its
    default (see the module docstring).

    Raises:
        ConfigError: An argument or environment variable is not a positive whole number.
    """
    return Limits(
        max_voxels=_one(max_voxels, ENV_MAX_VOXELS, DEFAULT_MAX_VOXELS, "max_voxels"),
        max_bytes=_one(max_bytes, ENV_MAX_BYTES, DEFAULT_MAX_BYTES, "max_bytes"),
        max_pixels=_one(max_pixels, ENV_MAX_PIXELS, DEFAULT_MAX_PIXELS, "max_pixels"),
    )


def format_bytes(n: int | float) -> str:
    """``1536`` -> ``"1.5 KiB"``; for messages."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.3g} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def _product(shape: Iterable[int]) -> int:
    return math.prod(int(s) for s in shape)  # Python ints: no overflow


def _dims(shape: Sequence[int]) -> str:
    return " x ".join(str(int(s)) for s in shape)


def check_volume_size(
    shape: Sequence[int],
    bytes_per_voxel: int,
    path: str | os.PathLike[str] | None,
    *,
    limits: Limits | None = None,
    what: str = "the header",
) -> None:
    """Refuses a volume whose voxel count or memory size exceeds the limits, before it is read.

    Args:
        shape: The shape the header claims.
        bytes_per_voxel: What each voxel will take in memory (the largest array the reader makes).
        path: The file, for the message.
        limits: The limits (default: :func:`resolve_limits`).
        what: What claimed the shape, for the message.

    Raises:
        ResourceLimitError: Over a limit; the message names it and how to raise it.
    """
    lim = limits or resolve_limits()
    n = _product(shape)
    size = n * int(bytes_per_voxel)
    if n > lim.max_voxels:
        raise ResourceLimitError(
            f"{what} claims {_dims(shape)} = {n:,} voxels, over the limit of "
            f"{lim.max_voxels:,}; if the file is genuine, raise {ENV_MAX_VOXELS} (or pass "
            "max_voxels=)",
            path,
        )
    if size > lim.max_bytes:
        raise ResourceLimitError(
            f"{what} claims {_dims(shape)} voxels, {format_bytes(size)} in memory, over the limit "
            f"of {format_bytes(lim.max_bytes)}; if the file is genuine, raise {ENV_MAX_BYTES} "
            "(or pass max_bytes=)",
            path,
        )


def check_image_size(
    shape: Sequence[int],
    bytes_per_pixel: int,
    path: str | os.PathLike[str] | None,
    *,
    limits: Limits | None = None,
    what: str = "the header",
) -> None:
    """Refuses a 2D image whose pixel count or memory size exceeds the limits, before it is read.

    Raises:
        ResourceLimitError: Over a limit; the message names it and how to raise it.
    """
    lim = limits or resolve_limits()
    n = _product(shape)
    if n > lim.max_pixels:
        raise ResourceLimitError(
            f"{what} claims {_dims(shape)} = {n:,} pixels, over the limit of "
            f"{lim.max_pixels:,}; if the image is genuine, raise {ENV_MAX_PIXELS} (or pass "
            "max_pixels=)",
            path,
        )
    size = n * int(bytes_per_pixel)
    if size > lim.max_bytes:
        raise ResourceLimitError(
            f"{what} claims {_dims(shape)} pixels, {format_bytes(size)} in memory, over the limit "
            f"of {format_bytes(lim.max_bytes)}; if the image is genuine, raise {ENV_MAX_BYTES} "
            "(or pass max_bytes=)",
            path,
        )


def check_file_size(path: str | os.PathLike[str], *, limits: Limits | None = None) -> None:
    """Refuses a file larger than the byte limit (for readers that hold the whole file).

    Raises:
        ResourceLimitError: The file is larger than ``max_bytes``.
    """
    lim = limits or resolve_limits()
    try:
        size = os.stat(path).st_size
    except OSError:
        return  # the reader reports a missing or unreadable file itself
    if size > lim.max_bytes:
        raise ResourceLimitError(
            f"file is {format_bytes(size)}, over the limit of {format_bytes(lim.max_bytes)}; if it "
            f"is genuine, raise {ENV_MAX_BYTES} (or pass max_bytes=)",
            path,
        )


def check_spacing(
    spacing_mm: npt.ArrayLike,
    path: str | os.PathLike[str] | None,
    *,
    what: str = "voxel spacing",
) -> None:
    """Refuses spacing that is not finite or not within (0.001, 50] mm.

    Raises:
        GeometryError: Names the spacing and the plausible range.
    """
    values = np.asarray(spacing_mm, dtype=np.float64).reshape(-1)
    ok = np.isfinite(values) & (values > MIN_SPACING_MM) & (values <= MAX_SPACING_MM)
    if values.size == 0 or not np.all(ok):
        shown = ", ".join(f"{v:.6g}" for v in values)
        raise GeometryError(
            f"{what} ({shown}) mm is not plausible: each value must be finite and in "
            f"({MIN_SPACING_MM:g}, {MAX_SPACING_MM:g}] mm (a corrupt header?)",
            path,
        )
