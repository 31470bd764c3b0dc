"""Digitally reconstructed radiographs (DRRs): geometries, physics, TensorFlow projectors.

Quick start::

    from xprospect.projection import render_drr
    frontal = render_drr(volume, "frontal", geometry="x2ct", size=128, output="display")

Modules:

- :mod:`~xprospect.projection.geometry`: :class:`ParallelBeam`, :class:`ConeBeam`,
  :class:`MeanProjection` and :func:`geometry_preset` (``x2ct``, ``xprospect_mean``, ``parallel``).
- :mod:`~xprospect.projection.physics`: :data:`MU_WATER_PER_MM` (water at 70 keV),
  :func:`hu_to_mu`, :func:`intensity`, display mappings.
- :mod:`~xprospect.projection.renderers`: batched, differentiable projectors and their adjoints
  (:func:`project`, :func:`back_project`, :func:`project_views`, :class:`Projector`).
- :mod:`~xprospect.projection.drr`: :func:`render_drr` (Volume to Radiograph) and
  :func:`render_drr_batch` (tensors, several views).
- :mod:`~xprospect.projection.plastimatch`: the optional Plastimatch backend.

Axis and display conventions are those of ``docs/conventions.md``. The renderers import TensorFlow
on first use; geometry and physics are NumPy only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from xprospect.projection.geometry import (
    X2CT_DETECTOR_SIZE_MM,
    X2CT_SAD_MM,
    X2CT_SID_MM,
    ConeBeam,
    Geometry,
    MeanProjection,
    ParallelBeam,
    biplanar_preset,
    geometry_preset,
)
from xprospect.projection.physics import (
    EFFECTIVE_ENERGY_KEV,
    MU_WATER_PER_MM,
    display_unit,
    display_x2ct_uint8,
    hu_to_mu,
    intensity,
)
from xprospect.projection.plastimatch import plastimatch_available, plastimatch_drr

if TYPE_CHECKING:
    from xprospect.projection.drr import canonical_array, render_drr, render_drr_batch
    from xprospect.projection.renderers import (
        Projector,
        back_project,
        back_project_views,
        get_projector,
        project,
        project_views,
    )

# The renderers need TensorFlow; geometry and physics do not. Importing them on first use keeps
# ``xprospect.projection.geometry`` usable from backend-agnostic Keras code (e.g. on JAX).
_LAZY = {
    "canonical_array": "drr",
    "render_drr": "drr",
    "render_drr_batch": "drr",
    "Projector": "renderers",
    "back_project": "renderers",
    "back_project_views": "renderers",
    "get_projector": "renderers",
    "project": "renderers",
    "project_views": "renderers",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f"xprospect.projection.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'xprospect.projection' has no attribute {name!r}")


__all__ = [
    "EFFECTIVE_ENERGY_KEV",
    "MU_WATER_PER_MM",
    "X2CT_DETECTOR_SIZE_MM",
    "X2CT_SAD_MM",
    "X2CT_SID_MM",
    "ConeBeam",
    "Geometry",
    "MeanProjection",
    "ParallelBeam",
    "Projector",
    "back_project",
    "back_project_views",
    "biplanar_preset",
    "canonical_array",
    "display_unit",
    "display_x2ct_uint8",
    "geometry_preset",
    "get_projector",
    "hu_to_mu",
    "intensity",
    "plastimatch_available",
    "plastimatch_drr",
    "project",
    "project_views",
    "render_drr",
    "render_drr_batch",
]
