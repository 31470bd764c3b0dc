"""Constants shared by several layers of the package; each is defined here and only here.

A constant that belongs to one module (a file format's fact such as X2CT's own 320 mm crop in
:mod:`xprospect.io.x2ct`, a paper's hyperparameter in its model) stays with that module; what
several modules must agree on lives here, at the bottom of the import layers
(docs/architecture.md).
"""

from __future__ import annotations

__all__ = ["DEFAULT_FOV_MM", "NUMPY_ENVIRONMENT", "STORED_HU_RANGE", "VIEWS", "VIEW_SETS"]

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

NUMPY_ENVIRONMENT: dict[str, str] = {"NUMPY_MADVISE_HUGEPAGE": "0"}
"""Environment the command line sets for its process (and so for the workers it starts) before
NumPy is imported, where the user's environment does not set it already.

NumPy asks Linux for transparent huge pages on every array of 4 MiB or more
(``madvise(MADV_HUGEPAGE)``). Where the kernel's THP ``defrag`` setting is ``madvise`` (a common
default), each such first touch compacts memory synchronously to find 2 MiB pages, and on a
machine whose free memory is fragmented (a VM that hands freed pages back to its host) that
stalls: on the 2-core benchmark VM (2026-12-04) allocating 1 GiB with ``np.ones`` took 15-19 s
with huge pages asked for and 0.6-0.7 s without, and ``remove_couch`` on the LIDC CT 10-12 s
against 3.3 s. ``NUMPY_MADVISE_HUGEPAGE=0`` is NumPy's own switch for this; set it to 1 to keep
NumPy's default. TensorFlow's allocations are not affected either way."""
