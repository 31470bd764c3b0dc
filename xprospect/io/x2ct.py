"""X2CT-GAN's preprocessed HDF5 layout, so users holding X2CT's LIDC-IDRI data can use it directly.

Each case is a folder ``<case>/ct_xray_data.h5`` with datasets:

- ``ct``: the CT, shape (D, H, W), stored as HU + 1024 and clipped to [0, 2500] by X2CT's
  preprocessing (1 mm resampling, 320 mm crop, resize); read back as HU.
- ``xray1``: the frontal (PA) DRR, ``xray2``: the lateral DRR, 2D (or with a leading axis of 1).
- optionally ``spacing`` (mm, in the same axis order as ``ct``) and ``ori_size``.

X2CT read its CTs with SimpleITK from LIDC ``.mhd`` files, so array axis 0 is the scanner z axis
increasing towards the head, axis 1 runs anterior to posterior and axis 2 right to left: axis codes
``("S", "P", "L")``. Without a ``spacing`` key the voxel size is X2CT's 320 mm field of view divided
by the array size (2.5 mm at 128^3). Both can be overridden. The DRRs are returned as stored: X2CT
rendered them with Plastimatch, and their display orientation is not recorded in the file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from xprospect.errors import ImageFormatError, MissingDataError
from xprospect.image import Radiograph, View, Volume
from xprospect.io._checks import require_file
from xprospect.io.limits import check_image_size, check_spacing, check_volume_size, resolve_limits
from xprospect.utils import atomic_path

__all__ = [
    "X2CT_AXCODES",
    "X2CT_FILENAME",
    "X2CT_FOV_MM",
    "X2CT_HU_OFFSET",
    "X2CTCase",
    "find_x2ct_file",
    "read_x2ct_case",
    "write_x2ct_case",
]

X2CT_FILENAME = "ct_xray_data.h5"
X2CT_HU_OFFSET = 1024.0
X2CT_FOV_MM = 320.0
X2CT_AXCODES: tuple[str, str, str] = ("S", "P", "L")
_REQUIRED = ("ct", "xray1", "xray2")


@dataclass(frozen=True)
class X2CTCase:
    """One X2CT case: the CT and its two DRRs."""

    volume: Volume
    frontal: Radiograph
    lateral: Radiograph


def find_x2ct_file(path: str | os.PathLike[str]) -> Path:
    """Resolves a case folder or an ``.h5`` path to the HDF5 file.

    Raises:
        MissingDataError: Neither the file nor ``<folder>/ct_xray_data.h5`` exists.
    """
    p = Path(path)
    if p.is_dir():
        candidate = p / X2CT_FILENAME
        if not candidate.exists():
            raise MissingDataError(f"no {X2CT_FILENAME} in this case folder", p)
        return candidate
    if not p.exists():
        raise MissingDataError("no such file", p)
    return p


def read_x2ct_case(
    path: str | os.PathLike[str],
    *,
    spacing_mm: Sequence[float] | float | None = None,
    axcodes: Sequence[str] = X2CT_AXCODES,
    max_voxels: int | None = None,
    max_bytes: int | None = None,
    max_pixels: int | None = None,
) -> X2CTCase:
    """Reads an X2CT case.

    Args:
        path: The case folder or its ``ct_xray_data.h5``.
        spacing_mm: Voxel size; defaults to the file's ``spacing`` key, else 320 mm / size.
        axcodes: Orientation of the stored array (see the module docstring).
        max_voxels, max_bytes, max_pixels: Limits checked against the datasets' shapes before
            they are read (see :mod:`xprospect.io.limits`).

    Returns:
        The CT as a float32 HU :class:`Volume` centred on the world origin, and the frontal and
        lateral DRRs as :class:`Radiograph` scaled to [0, 1] (bright = dense, as X2CT stored them).

    Raises:
        MissingDataError: The file or one of the keys ``ct``, ``xray1``, ``xray2`` is missing.
        ImageFormatError: Not HDF5, or the arrays have the wrong number of dimensions.
        ResourceLimitError: A dataset's shape exceeds the limits.
        GeometryError: The stored or given spacing is not plausible.
    """
    p = require_file(find_x2ct_file(path))
    limits = resolve_limits(max_voxels, max_bytes, max_pixels)
    try:
        handle = h5py.File(p, "r")
    except OSError as exc:
        raise ImageFormatError(f"not a readable HDF5 file ({exc})", p) from exc
    with handle as f:
        missing = [k for k in _REQUIRED if k not in f]
        if missing:
            raise MissingDataError(
                f"X2CT file lacks key(s) {', '.join(missing)}; it has {sorted(f.keys())}", p
            )
        try:
            ct_shape = _squeezed_shape(f["ct"], "ct", 3, p)
            check_volume_size(ct_shape, 4, p, limits=limits, what="dataset 'ct'")
            for key in ("xray1", "xray2"):
                shape = _squeezed_shape(f[key], key, 2, p)
                check_image_size(shape, 4, p, limits=limits, what=f"dataset '{key}'")
            if "spacing" in f and not 0 < f["spacing"].size <= 16:
                raise ImageFormatError(f"'spacing' holds {f['spacing'].size} values", p)
            ct = np.asarray(f["ct"], dtype=np.float32)
            xray1 = np.asarray(f["xray1"])
            xray2 = np.asarray(f["xray2"])
            stored_spacing = np.asarray(f["spacing"], dtype=np.float64) if "spacing" in f else None
        except (OSError, TypeError, ValueError, AttributeError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            raise ImageFormatError(f"unreadable X2CT data ({reason})", p) from exc
    ct = np.squeeze(ct)
    if ct.ndim != 3:
        raise ImageFormatError(f"'ct' must be 3D, got shape {ct.shape}", p)
    if spacing_mm is None:
        if stored_spacing is not None and stored_spacing.size == 3:
            spacing_mm = tuple(float(s) for s in stored_spacing)
        else:
            spacing_mm = tuple(X2CT_FOV_MM / n for n in ct.shape)
    check_spacing(spacing_mm, p, what="X2CT voxel spacing")
    volume = Volume.from_spacing(
        ct - np.float32(X2CT_HU_OFFSET),
        spacing_mm,
        axcodes=axcodes,
        source=str(p),
        metadata={"format": "x2ct-h5"},
    ).check_finite()
    return X2CTCase(
        volume=volume,
        frontal=_xray(xray1, View.PA, p, "xray1"),
        lateral=_xray(xray2, View.LATERAL, p, "xray2"),
    )


def _squeezed_shape(dataset: object, key: str, ndim: int, path: Path) -> tuple[int, ...]:
    shape = getattr(dataset, "shape", None)
    if shape is None:
        raise ImageFormatError(f"'{key}' is a group, not an array", path)
    squeezed = tuple(int(s) for s in shape if s != 1)
    if len(squeezed) != ndim:
        raise ImageFormatError(f"'{key}' must be {ndim}D, got shape {tuple(shape)}", path)
    return squeezed


def _xray(array: np.ndarray, view: View, path: Path, key: str) -> Radiograph:
    a = np.squeeze(array)
    if a.ndim != 2:
        raise ImageFormatError(f"'{key}' must be 2D, got shape {array.shape}", path)
    a = a.astype(np.float32)
    if not np.all(np.isfinite(a)):
        raise ImageFormatError(f"'{key}' holds NaN or Inf", path)
    # X2CT stores uint8 DRRs; floats are taken as already normalised unless they exceed 1.
    scale = 255.0 if array.dtype == np.uint8 or a.max() > 1.0 else 1.0
    if array.dtype == np.uint16:
        scale = 65535.0
    return Radiograph(
        a / np.float32(scale),
        view=view,
        source=f"{path}:{key}",
        metadata={"format": "x2ct-h5", "stored_dtype": str(array.dtype)},
    )


def write_x2ct_case(
    case_dir: str | os.PathLike[str],
    volume: Volume,
    frontal: np.ndarray | Radiograph,
    lateral: np.ndarray | Radiograph,
    *,
    overwrite: bool = False,
) -> Path:
    """Writes a case in X2CT's layout (CT as HU + 1024 clipped to [0, 2500], DRRs as uint8).

    The volume is written in its own array order; give it in X2CT's orientation
    (``preprocessing.reorient(volume, X2CT_AXCODES)``) for X2CT's code to read it as intended.

    Returns:
        The path of the written ``ct_xray_data.h5`` (atomic write).
    """
    dest = Path(case_dir) / X2CT_FILENAME
    ct = np.clip(np.asarray(volume.array, dtype=np.float32) + X2CT_HU_OFFSET, 0, 2500)

    def as_uint8(x: np.ndarray | Radiograph) -> np.ndarray:
        a = np.asarray(x.array if isinstance(x, Radiograph) else x, dtype=np.float32)
        return np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)

    with atomic_path(dest, overwrite=overwrite) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("ct", data=ct.astype(np.float32), compression="gzip")
        f.create_dataset("xray1", data=as_uint8(frontal))
        f.create_dataset("xray2", data=as_uint8(lateral))
        f.create_dataset("spacing", data=np.asarray(volume.spacing_mm))
        f.create_dataset("ori_size", data=np.asarray(volume.shape))
    return dest
