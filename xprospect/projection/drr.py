"""High-level DRR rendering: a :class:`Volume` in, a :class:`Radiograph` out; and a batched tensor
version for data pipelines.

Outputs (``output=``):

- ``"line_integral"``: ``∫ mu dl`` with ``mu = hu_to_mu(HU)`` (dimensionless, >= 0).
- ``"intensity"``: ``exp(-∫ mu dl)``, the transmitted fraction (dark = dense, like raw detector
  counts).
- ``"display"``: bright = dense in [0, 1]: the line integral divided by its own maximum (X2CT-GAN's
  normalisation before its 8-bit quantisation; see
  :func:`~xprospect.projection.physics.display_x2ct_uint8` for the 8-bit version). For the
  ``"xprospect_mean"`` geometry it is instead the XprospeCT mean CT: the HU volume windowed to
  [0, 1] (``MeanProjection.hu_window``, [-1000, 1000] HU) and averaged along the view's axis.

For the mean geometry ``"line_integral"`` is the mean attenuation times the volume's length along
the axis, i.e. the parallel-beam line integral on the volume's own grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, TypeAlias

import numpy as np
import numpy.typing as npt
import tensorflow as tf

from xprospect.constants import VIEWS
from xprospect.errors import ConfigError, GeometryError
from xprospect.image import CANONICAL_AXCODES, Radiograph, View, Volume
from xprospect.preprocessing import reorient
from xprospect.projection.geometry import (
    PROJECTION_AXIS,
    ConeBeam,
    Geometry,
    MeanProjection,
    ParallelBeam,
    detector_pixel_spacing_mm,
    geometry_preset,
    parse_view,
)
from xprospect.projection.physics import display_unit, hu_to_mu, intensity
from xprospect.projection.plastimatch import plastimatch_drr
from xprospect.projection.renderers import Method, get_projector

__all__ = ["Output", "canonical_array", "render_drr", "render_drr_batch", "resolve_geometry"]

Output: TypeAlias = Literal["line_integral", "intensity", "display"]
_OUTPUTS = ("line_integral", "intensity", "display")


def canonical_array(volume: Volume) -> tuple[np.ndarray, tuple[float, float, float]]:
    """The volume's array in canonical orientation and its spacing along the canonical axes.

    A canonical volume is returned as is. Any other axis-aligned volume is transposed and flipped
    (no resampling) by :func:`xprospect.preprocessing.reorient`, using its affine's axis codes.

    Args:
        volume: The volume.

    Returns:
        (array, spacing_mm) with array axes (I, P, L) as in ``docs/conventions.md``.

    Raises:
        GeometryError: If the volume is oblique: the renderers assume axis-aligned voxels, and
            reorienting cannot remove a rotation (resample it onto a canonical grid first).
    """
    if volume.is_oblique:
        raise GeometryError(
            f"volume is oblique (orientation {''.join(volume.orientation)}, not axis-aligned); "
            "resample it to the canonical grid first",
            volume.source,
        )
    canonical = volume if volume.is_canonical else reorient(volume, CANONICAL_AXCODES)
    return np.ascontiguousarray(canonical.array), canonical.spacing_mm


def resolve_geometry(
    geometry: str | Geometry, view: str | View | None = None, size: int | None = None
) -> Geometry:
    """A geometry object from a preset name or an object, checking the view agrees.

    Args:
        geometry: A preset name (see :func:`geometry_preset`) or a geometry.
        view: The view for a preset (default frontal); for an object, None or its own view.
        size: Detector size for a preset (default 128); must be None for an object.

    Raises:
        ConfigError: On an unknown preset, or a view / size that contradicts the object.
    """
    if isinstance(geometry, str):
        return geometry_preset(
            geometry, "frontal" if view is None else view, 128 if size is None else size
        )
    if not isinstance(geometry, ParallelBeam | ConeBeam | MeanProjection):
        raise ConfigError(f"geometry must be a preset name or a geometry, got {geometry!r}")
    if view is not None and parse_view(view) != geometry.view:
        raise ConfigError(f"view {view!r} contradicts the geometry's view {geometry.view!r}")
    if size is not None:
        raise ConfigError("size applies to preset names; set the geometry's detector_shape_px")
    return geometry


def _window(hu: Any, hu_window: tuple[float, float]) -> Any:
    lo, hi = hu_window
    return tf.clip_by_value((tf.cast(hu, tf.float32) - lo) / (hi - lo), 0.0, 1.0)


def _render(
    hu: tf.Tensor,
    geometry: Geometry,
    spacing_mm: tuple[float, float, float],
    output: str,
    method: Method,
    step_mm: float | None,
) -> tf.Tensor:
    """(B, D, H, W) HU -> (B, R, C) for one geometry."""
    if output not in _OUTPUTS:
        raise ConfigError(f"unknown output {output!r}; expected one of {_OUTPUTS}")
    shape = tuple(int(s) for s in hu.shape[1:])
    dtype = "float64" if hu.dtype == tf.float64 else "float32"
    proj = get_projector(geometry, shape, spacing_mm, dtype=dtype, method=method, step_mm=step_mm)
    if isinstance(geometry, MeanProjection):
        if output == "display":
            return proj(_window(hu, geometry.hu_window))
        p = PROJECTION_AXIS[geometry.view]
        line = proj(hu_to_mu(hu)) * (shape[p] * spacing_mm[p])
    else:
        line = proj(hu_to_mu(hu))
    if output == "intensity":
        return intensity(line)
    if output == "display":
        return display_unit(line)
    return line


def render_drr(
    volume: Volume,
    view: str | View | None = None,
    geometry: str | Geometry = "x2ct",
    size: int | None = None,
    output: Output = "line_integral",
    *,
    backend: Literal["tensorflow", "plastimatch"] = "tensorflow",
    method: Method = "joseph",
    step_mm: float | None = None,
) -> Radiograph:
    """Renders one DRR (or XprospeCT mean image) of a CT volume.

    Args:
        volume: HU volume. Canonical volumes are used as they are; other axis-aligned ones are
            reoriented (transposed and flipped per ``volume.orientation``, no resampling); oblique
            ones raise :class:`GeometryError`.
        view: ``"frontal"`` or ``"lateral"`` (default frontal for presets; for a geometry object
            leave None or give its own view).
        geometry: ``"x2ct"``, ``"xprospect_mean"`` (alias ``"mean"``), ``"parallel"``, or a
            :class:`ParallelBeam` / :class:`ConeBeam` / :class:`MeanProjection`.
        size: Detector rows and columns for a preset (default 128).
        output: ``"line_integral"``, ``"intensity"`` or ``"display"`` (see the module docstring).
        backend: ``"tensorflow"`` (this package's renderers) or ``"plastimatch"`` (cone beam only;
            Plastimatch's exact ray tracer on the same geometry and the same HU conversion).
        method: ``"joseph"``, ``"cubic"`` or ``"trilinear"`` (TensorFlow backend).
        step_mm: Step of the trilinear ray marcher.

    Returns:
        A float32 :class:`Radiograph` in the display layout of ``docs/conventions.md``, with its
        view (PA / AP / LATERAL) and pixel spacing at the detector; ``metadata`` records the
        geometry, output and backend.

    Raises:
        ConfigError: On unknown names or an unavailable backend.
        GeometryError: On an oblique volume or a geometry that does not fit it.
    """
    geom = resolve_geometry(geometry, view, size)
    array, spacing = canonical_array(volume)
    if backend == "plastimatch":
        if not isinstance(geom, ConeBeam):
            raise ConfigError("backend='plastimatch' renders cone-beam geometries only")
        line = plastimatch_drr(array, spacing, geom)
        if output == "intensity":
            image = np.exp(-line.astype(np.float64))
        elif output == "display":
            image = display_unit(line.astype(np.float64))
        elif output == "line_integral":
            image = line
        else:
            raise ConfigError(f"unknown output {output!r}; expected one of {_OUTPUTS}")
        pixel_spacing = geom.pixel_spacing_mm
    elif backend == "tensorflow":
        hu = tf.convert_to_tensor(np.asarray(array, dtype=np.float32)[None])
        image = _render(hu, geom, spacing, output, method, step_mm).numpy()[0]
        pixel_spacing = detector_pixel_spacing_mm(geom, array.shape, spacing)[1]
    else:
        raise ConfigError(f"unknown backend {backend!r}; expected 'tensorflow' or 'plastimatch'")
    if geom.view == "lateral":
        rview = View.LATERAL
    elif isinstance(geom, ConeBeam) and geom.source_side == "anterior":
        rview = View.AP
    else:
        rview = View.PA
    return Radiograph(
        np.asarray(image, dtype=np.float32),
        view=rview,
        pixel_spacing_mm=pixel_spacing,
        source=volume.source,
        metadata={
            "drr_geometry": repr(geom),
            "drr_output": output,
            "drr_backend": backend if backend == "plastimatch" else f"tensorflow/{method}",
        },
    )


def render_drr_batch(
    volumes_hu: Any,
    spacing_mm: Sequence[float] | float,
    geometry: str | Sequence[Geometry] = "x2ct",
    views: Sequence[str | View] = VIEWS,
    size: int = 128,
    output: Output = "line_integral",
    *,
    method: Method = "joseph",
    step_mm: float | None = None,
) -> tf.Tensor:
    """Renders several views of a batch of canonical HU volumes, in TensorFlow (differentiable).

    Args:
        volumes_hu: ``(B, D, H, W)`` or ``(B, D, H, W, 1)`` canonical HU (array or tensor).
        spacing_mm: Voxel size along axes 0, 1, 2 (or one number), shared by the batch.
        geometry: A preset name (combined with ``views`` and ``size``) or a sequence of geometry
            objects, one per view (then ``views`` and ``size`` are ignored).
        views: Views for a preset.
        size: Detector size for a preset.
        output: ``"line_integral"``, ``"intensity"`` or ``"display"`` (per-image maximum).
        method: ``"joseph"``, ``"cubic"`` or ``"trilinear"``.
        step_mm: Step of the trilinear ray marcher.

    Returns:
        ``(B, V, R, C)`` float32 tensor (``(B, V, R, C, 1)`` for channels-last input).
    """
    x = tf.convert_to_tensor(volumes_hu)
    channel = x.shape.rank == 5 and x.shape[-1] == 1
    if channel:
        x = x[..., 0]
    if x.shape.rank != 4:
        raise GeometryError(f"volumes must be (B, D, H, W) or (B, D, H, W, 1), got {x.shape}")
    if x.dtype not in (tf.float32, tf.float64):
        x = tf.cast(x, tf.float32)
    geoms = (
        [geometry_preset(geometry, v, size) for v in views]
        if isinstance(geometry, str)
        else list(geometry)
    )
    spacing = _spacing_tuple(spacing_mm)
    images = [_render(x, g, spacing, output, method, step_mm) for g in geoms]
    if len({tuple(im.shape[1:]) for im in images}) > 1:
        raise GeometryError("views have different detector shapes; render them separately")
    out = tf.stack(images, axis=1)
    return out[..., None] if channel else out


def _spacing_tuple(spacing_mm: Sequence[float] | float) -> tuple[float, float, float]:
    s: npt.NDArray[np.float64] = np.broadcast_to(np.asarray(spacing_mm, dtype=np.float64), (3,))
    return (float(s[0]), float(s[1]), float(s[2]))
