"""Images that carry their geometry: CT :class:`Volume` and X-ray :class:`Radiograph`.

The axis, orientation and unit conventions are written down once, in ``docs/conventions.md``. In
short: world coordinates are RAS+ millimetres; ``Volume.affine`` maps array indices to them; the
canonical volume orientation is ``CANONICAL_AXCODES = ("I", "P", "L")`` (axis 0 head to feet, axis 1
front to back, axis 2 patient's right to left), so the frontal projection is ``a.sum(axis=1)`` shown
head up with the patient's left on the image right, and the lateral is ``a.sum(axis=2)`` shown head
up with the patient facing the viewer's left. Radiograph arrays are display-ready (bright = dense)
and follow the same display convention.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt

from xprospect.errors import GeometryError, ImageFormatError, InvalidValuesError

__all__ = [
    "CANONICAL_AXCODES",
    "Radiograph",
    "View",
    "Volume",
    "affine_from_spacing",
]

CANONICAL_AXCODES: tuple[str, str, str] = ("I", "P", "L")
"""Canonical volume orientation: axis 0 towards Inferior, 1 Posterior, 2 patient's Left."""


def affine_from_spacing(
    spacing_mm: Sequence[float],
    origin_mm: Sequence[float] | None = None,
    axcodes: Sequence[str] = CANONICAL_AXCODES,
) -> npt.NDArray[np.float64]:
    """Builds an axis-aligned RAS+ affine.

    Args:
        spacing_mm: Voxel size along array axes 0, 1, 2, in mm (positive).
        origin_mm: World (RAS+) position of the centre of voxel (0, 0, 0). Defaults to the value
            that puts the world origin at the centre of a volume of shape 1 (i.e. zeros).
        axcodes: The anatomical direction each array axis increases towards, as nibabel codes
            (one of L/R, A/P, S/I per axis).

    Returns:
        A 4x4 float64 affine from (i, j, k, 1) to RAS+ mm.

    Raises:
        GeometryError: If the spacing is not positive or the axis codes are not a valid triple.
    """
    spacing = np.asarray(spacing_mm, dtype=np.float64).reshape(-1)
    if spacing.shape != (3,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise GeometryError(f"spacing_mm must be three positive numbers, got {spacing_mm!r}")
    codes = tuple(str(c).upper() for c in axcodes)
    try:
        ornt = nib.orientations.axcodes2ornt(codes)
    except Exception as exc:
        raise GeometryError(f"invalid axis codes {axcodes!r}: {exc}") from exc
    if np.any(np.isnan(ornt)) or len({int(r[0]) for r in ornt}) != 3:
        raise GeometryError(f"axis codes {axcodes!r} must name each of L/R, A/P, S/I once")
    affine = np.eye(4)
    affine[:3, :3] = 0.0
    for axis, (world_axis, sign) in enumerate(ornt):
        affine[int(world_axis), axis] = sign * spacing[axis]
    if origin_mm is not None:
        affine[:3, 3] = np.asarray(origin_mm, dtype=np.float64).reshape(3)
    return affine


def _check_affine(affine: npt.ArrayLike) -> npt.NDArray[np.float64]:
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4):
        raise GeometryError(f"affine must be 4x4, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise GeometryError("affine holds NaN or Inf")
    if not np.allclose(a[3], [0, 0, 0, 1]):
        raise GeometryError(f"affine's last row must be [0, 0, 0, 1], got {a[3].tolist()}")
    if abs(np.linalg.det(a[:3, :3])) < 1e-12:
        raise GeometryError("affine is singular (a zero spacing or collinear axes)")
    return a


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D image (CT in Hounsfield units, or a label mask) that knows where it is.

    Args:
        array: 3D array; HU as float32/int16, or integer labels.
        affine: 4x4 map from array index (i, j, k, 1) to RAS+ world mm (``docs/conventions.md``).
        source: Where it came from (a path), for messages.
        metadata: Free-form facts from the file (series UID, modality, ...). Patient-identifying
            tags, where a reader keeps them, live under ``metadata["patient"]``.

    Spacing, origin, direction and orientation are derived from the affine, never stored apart.
    """

    array: np.ndarray
    affine: np.ndarray
    source: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        arr = np.asarray(self.array)
        if arr.ndim != 3:
            raise ImageFormatError(
                f"a volume must be 3D, got {arr.ndim}D array of shape {arr.shape}", self.source
            )
        if min(arr.shape) < 1:
            raise ImageFormatError(f"volume has an empty axis: shape {arr.shape}", self.source)
        if arr.dtype.kind not in "fiub":
            raise ImageFormatError(f"unsupported voxel type {arr.dtype}", self.source)
        object.__setattr__(self, "array", arr)
        object.__setattr__(self, "affine", _check_affine(self.affine))

    # --- construction -----------------------------------------------------------------------
    @classmethod
    def from_spacing(
        cls,
        array: npt.ArrayLike,
        spacing_mm: Sequence[float] | float = 1.0,
        origin_mm: Sequence[float] | None = None,
        axcodes: Sequence[str] = CANONICAL_AXCODES,
        **kwargs: Any,
    ) -> Volume:
        """Makes an axis-aligned volume; by default canonical and centred on the world origin."""
        arr = np.asarray(array)
        if np.isscalar(spacing_mm):
            spacing_mm = (float(spacing_mm),) * 3  # type: ignore[arg-type]
        affine = affine_from_spacing(spacing_mm, None, axcodes)  # type: ignore[arg-type]
        if origin_mm is None:
            centre_index = (np.asarray(arr.shape[:3], dtype=np.float64) - 1.0) / 2.0
            affine[:3, 3] = -affine[:3, :3] @ centre_index
        else:
            affine[:3, 3] = np.asarray(origin_mm, dtype=np.float64)
        return cls(arr, affine, **kwargs)

    def replace(self, **changes: Any) -> Volume:
        """A copy with some fields replaced (``array``, ``affine``, ``source``, ``metadata``)."""
        return dataclasses.replace(self, **changes)

    # --- geometry -----------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Voxel size along array axes 0, 1, 2 in mm."""
        s = np.linalg.norm(self.affine[:3, :3], axis=0)
        return (float(s[0]), float(s[1]), float(s[2]))

    @property
    def origin_mm(self) -> tuple[float, float, float]:
        """RAS+ position of the centre of voxel (0, 0, 0), in mm."""
        o = self.affine[:3, 3]
        return (float(o[0]), float(o[1]), float(o[2]))

    @property
    def direction(self) -> npt.NDArray[np.float64]:
        """3x3 matrix whose columns are the unit RAS+ directions of array axes 0, 1, 2."""
        return self.affine[:3, :3] / np.asarray(self.spacing_mm)

    @property
    def orientation(self) -> tuple[str, str, str]:
        """Nibabel axis codes: the anatomical direction each array axis increases towards."""
        return tuple(nib.aff2axcodes(self.affine))

    @property
    def is_canonical(self) -> bool:
        return self.orientation == CANONICAL_AXCODES

    @property
    def is_oblique(self) -> bool:
        """True if any array axis is not parallel to a world axis (to 1e-4)."""
        d = np.abs(self.direction)
        return bool(np.any((d > 1e-4) & (d < 1 - 1e-4)))

    @property
    def extent_mm(self) -> tuple[float, float, float]:
        """Physical size along each array axis (shape times spacing), in mm."""
        return tuple(float(n * s) for n, s in zip(self.shape, self.spacing_mm, strict=True))  # type: ignore[return-value]

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres (cm^3)."""
        return float(abs(np.linalg.det(self.affine[:3, :3])) / 1000.0)

    def index_to_world(self, ijk: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Maps array indices (..., 3) to RAS+ mm (..., 3)."""
        p = np.asarray(ijk, dtype=np.float64)
        return p @ self.affine[:3, :3].T + self.affine[:3, 3]

    def world_to_index(self, xyz: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Maps RAS+ mm (..., 3) to fractional array indices (..., 3)."""
        p = np.asarray(xyz, dtype=np.float64)
        return (p - self.affine[:3, 3]) @ np.linalg.inv(self.affine[:3, :3]).T

    @property
    def center_mm(self) -> tuple[float, float, float]:
        """RAS+ position of the volume's geometric centre."""
        c = self.index_to_world((np.asarray(self.shape, dtype=np.float64) - 1) / 2)
        return (float(c[0]), float(c[1]), float(c[2]))

    # --- values ------------------------------------------------------------------------------
    def value_range(self) -> tuple[float, float]:
        """(min, max) of the voxel values."""
        return float(self.array.min()), float(self.array.max())

    def check_finite(self) -> Volume:
        """Returns self, or raises :class:`InvalidValuesError` if any voxel is NaN or Inf."""
        if self.array.dtype.kind == "f":
            bad = int(np.size(self.array) - np.count_nonzero(np.isfinite(self.array)))
            if bad:
                raise InvalidValuesError(
                    f"{bad} of {self.array.size} voxels are NaN or Inf", self.source
                )
        return self

    def describe(self) -> dict[str, Any]:
        """A plain summary for ``xprospect info`` and logs."""
        lo, hi = self.value_range()
        return {
            "kind": "volume",
            "source": self.source,
            "shape": list(self.shape),
            "dtype": str(self.array.dtype),
            "spacing_mm": [round(s, 4) for s in self.spacing_mm],
            "extent_mm": [round(e, 1) for e in self.extent_mm],
            "origin_mm": [round(o, 2) for o in self.origin_mm],
            "orientation": "".join(self.orientation),
            "canonical": self.is_canonical,
            "oblique": self.is_oblique,
            "value_range": [lo, hi],
            **{k: v for k, v in self.metadata.items() if k != "patient"},
        }

    def __repr__(self) -> str:
        sp = ", ".join(f"{s:.3g}" for s in self.spacing_mm)
        return (
            f"Volume(shape={self.shape}, spacing_mm=({sp}), "
            f"orientation={''.join(self.orientation)}, dtype={self.array.dtype}, "
            f"source={self.source!r})"
        )


class View(enum.StrEnum):
    """Which way the X-ray beam went through the patient."""

    PA = "PA"
    """Frontal, posterior to anterior (the standard erect chest film)."""
    AP = "AP"
    """Frontal, anterior to posterior (supine and portable films)."""
    LATERAL = "LATERAL"
    """Lateral, displayed with the patient facing the viewer's left (see docs/conventions.md)."""
    UNKNOWN = "UNKNOWN"

    @property
    def is_frontal(self) -> bool:
        return self in (View.PA, View.AP)

    @property
    def is_lateral(self) -> bool:
        return self is View.LATERAL

    @classmethod
    def parse(cls, value: str | View | None) -> View:
        """Reads a view name: DICOM ViewPosition (PA, AP, LL, RL, LATERAL), a manifest's
        ``AP Supine`` or ``L``, or ``frontal`` (taken as PA, which displays the same way)."""
        if value is None:
            return cls.UNKNOWN
        if isinstance(value, View):
            return value
        v = str(value).strip().upper().replace("_", " ")
        if v in {"PA", "FRONTAL", "F"}:
            return cls.PA
        if v.startswith("AP"):
            return cls.AP
        if v in {"L", "LL", "RL", "LAT", "LATERAL", "LLAT", "RLAT"}:
            return cls.LATERAL
        if v in {"", "UNKNOWN"}:
            return cls.UNKNOWN
        raise ValueError(f"unknown view {value!r}; expected PA, AP or LATERAL")


@dataclass(frozen=True, eq=False)
class Radiograph:
    """A 2D projection radiograph (real X-ray or DRR) in display convention.

    Args:
        array: 2D float32 array, larger = brighter = more attenuation (MONOCHROME2). Readers scale
            it to [0, 1]; rows run head to feet; frontal columns run patient's right to left,
            lateral columns anterior to posterior (see ``docs/conventions.md``).
        view: The projection.
        pixel_spacing_mm: (row, column) spacing at the detector in mm, or None if unknown.
        source: Where it came from, for messages.
        metadata: Facts from the file (original photometric interpretation, bits stored, ...).
    """

    array: np.ndarray
    view: View = View.UNKNOWN
    pixel_spacing_mm: tuple[float, float] | None = None
    source: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        arr = np.asarray(self.array)
        if arr.ndim != 2:
            raise ImageFormatError(f"a radiograph must be 2D, got shape {arr.shape}", self.source)
        if min(arr.shape) < 1:
            raise ImageFormatError(f"radiograph has an empty axis: shape {arr.shape}", self.source)
        if arr.dtype.kind not in "fiub":
            raise ImageFormatError(f"unsupported pixel type {arr.dtype}", self.source)
        object.__setattr__(self, "array", arr)
        object.__setattr__(self, "view", View.parse(self.view))
        if self.pixel_spacing_mm is not None:
            ps = tuple(float(s) for s in self.pixel_spacing_mm)
            if len(ps) != 2 or not all(np.isfinite(ps)) or min(ps) <= 0:
                raise GeometryError(
                    f"pixel_spacing_mm must be two positive numbers, got {self.pixel_spacing_mm!r}",
                    self.source,
                )
            object.__setattr__(self, "pixel_spacing_mm", ps)

    def replace(self, **changes: Any) -> Radiograph:
        return dataclasses.replace(self, **changes)

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.array.shape[0]), int(self.array.shape[1]))

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "radiograph",
            "source": self.source,
            "shape": list(self.shape),
            "dtype": str(self.array.dtype),
            "view": self.view.value,
            "pixel_spacing_mm": None
            if self.pixel_spacing_mm is None
            else [round(s, 4) for s in self.pixel_spacing_mm],
            "value_range": [float(self.array.min()), float(self.array.max())],
            **dict(self.metadata),
        }

    def __repr__(self) -> str:
        return (
            f"Radiograph(shape={self.shape}, view={self.view.value}, "
            f"pixel_spacing_mm={self.pixel_spacing_mm}, source={self.source!r})"
        )
