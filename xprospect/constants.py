"""Constants shared by several layers of the package; each is defined here and only here.

A constant that belongs to one module (a file format's fact such as X2CT's own 320 mm crop in
:mod:`xprospect.io.x2ct`, a paper's hyperparameter in its model) stays with that module; what
several modules must agree on lives here, at the bottom of the import layers
(docs/architecture.md).
"""

from __future__ import annotations

__all__ = ["DEFAULT_FOV_MM", "STORED_HU_RANGE", "VIEWS", "VIEW_SETS"]

VIEWS: tuple[str, ...] = ("frontal", "lateral")
"""The radiograph views, in input (and channel) order: frontal (PA/AP) and lateral."""

VIEW_SETS: tuple[tuple[str, ...], ...] = (VIEWS, ("frontal",))
"""The view sets a model may take: biplanar, or the frontal view alone."""

DEFAULT_FOV_MM = 320.0
"""Edge of the cubic field of view (mm) that preprocessing crops CTs to and datasets, phantoms,
back-projection and exported models assume unless told otherwise (XprospeCT and X2CT both use a
320 mm cube)."""

STORED_HU_RANGE = (-1024.0, 3071.0)
"""Stored volumes are clamped to the 12-bit CT range: scanners pad outside the reconstruction
circle with values like -2048 or -3024, which are not tissue and would skew windows and losses.
Dataset building and CT augmentation both keep volumes inside it."""
