"""Plausibility checks of what a reader returned, against the role the user gives it.

A reader accepts anything the format allows; a command then asks whether the data makes sense
for what it is about to do. A single-slice or constant "CT", a 1x1 PNG, or a lateral DICOM given
as the frontal view are valid files but almost certainly a mistake, so the commands that take
such inputs (``predict``, ``prepare``, ``drr``) refuse them with :class:`ImplausibleInputError`
and accept them with ``--force`` (``force=True``), which turns the error into a
:class:`PlausibilityWarning`.

=================  ========================================================================
input              rule
=================  ========================================================================
CT volume          at least :data:`MIN_CT_SLICES` voxels along every axis; a spread of at
                   least :data:`MIN_HU_SPREAD` HU between the lowest and highest value
radiograph         at least :data:`MIN_RADIOGRAPH_SIDE` pixels a side; aspect ratio at most
                   :data:`MAX_ASPECT_RATIO` (1:3 to 3:1)
frontal role       a DICOM's ViewPosition is not lateral (LL, RL, LATERAL) and its
                   PatientOrientation does not run anterior-posterior across the image
lateral role       a DICOM's ViewPosition is not frontal (PA, AP) and its PatientOrientation
                   does not run left-right across the image
=================  ========================================================================

Modality is the readers' own check: :func:`~xprospect.io.dicom.read_dicom_radiograph` refuses
CT/MR and :func:`~xprospect.io.dicom.read_dicom_series` refuses CR/DX
(:class:`~xprospect.errors.ModalityError`), with or without ``--force``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np

from xprospect.errors import ImplausibleInputError
from xprospect.image import Radiograph, View, Volume

__all__ = [
    "MAX_ASPECT_RATIO",
    "MIN_CT_SLICES",
    "MIN_HU_SPREAD",
    "MIN_RADIOGRAPH_SIDE",
    "PlausibilityWarning",
    "Role",
    "check_ct",
    "check_radiograph",
]

MIN_CT_SLICES = 8
"""Fewest voxels a CT may have along any axis."""
MIN_HU_SPREAD = 100.0
"""Smallest range (max - min, in HU) of a CT; a real chest CT spans about 1000 HU or more."""
MIN_RADIOGRAPH_SIDE = 64
"""Fewest pixels a radiograph may have along either side."""
MAX_ASPECT_RATIO = 3.0
"""Largest ratio of a radiograph's long side to its short side."""

Role = Literal["frontal", "lateral"]
"""The view a radiograph is given as."""

_FORCE_HINT = "if it is what you meant, pass --force (force=True) to accept it"


class PlausibilityWarning(UserWarning):
    """An implausible input was accepted because ``force=True`` (``--force``) was given."""


def _refuse(problem: str, source: str | None, force: bool) -> None:
    if force:
        where = f"{source}: " if source else ""
        warnings.warn(f"{where}{problem}; accepted (--force)", PlausibilityWarning, stacklevel=3)
        return
    raise ImplausibleInputError(f"{problem}; {_FORCE_HINT}", source)


def check_ct(volume: Volume, *, force: bool = False) -> Volume:
    """Refuses a volume that cannot be a CT: too few slices, or (nearly) constant values.

    Args:
        volume: A volume read as CT (values in HU).
        force: Warn (:class:`PlausibilityWarning`) instead of raising.

    Returns:
        ``volume``, unchanged.

    Raises:
        ImplausibleInputError: Fewer than :data:`MIN_CT_SLICES` voxels along an axis, or a value
            spread below :data:`MIN_HU_SPREAD` HU; the message names the file.
    """
    shape = volume.shape
    if min(shape) < MIN_CT_SLICES:
        axis = int(np.argmin(shape))
        _refuse(
            f"only {shape[axis]} slice(s) along axis {axis} (shape "
            f"{'x'.join(str(s) for s in shape)}); a CT needs at least {MIN_CT_SLICES}",
            volume.source,
            force,
        )
        return volume
    lo, hi = volume.value_range()
    if hi - lo < MIN_HU_SPREAD:
        _refuse(
            f"values span only {lo:g} to {hi:g} HU; a CT has at least {MIN_HU_SPREAD:g} HU "
            "between air and tissue (a blank or constant volume?)",
            volume.source,
            force,
        )
    return volume


def _orientation_axis(values: Sequence[str] | None) -> str | None:
    """``"LR"`` when a PatientOrientation pair runs left-right across the image (frontal),
    ``"AP"`` when anterior-posterior (lateral), None when unknown."""
    if not values or len(values) != 2:
        return None
    letters = [str(v).strip().upper()[:1] for v in values]
    across = [c for c in letters if c and c not in "HF"]
    if len(across) != 1:
        return None
    return "LR" if across[0] in "LR" else "AP" if across[0] in "AP" else None


def check_radiograph(
    image: Radiograph, role: Role | None = None, *, force: bool = False
) -> Radiograph:
    """Refuses a radiograph too small or too elongated to be a chest X-ray, or whose DICOM view
    tags contradict ``role``.

    Args:
        image: A radiograph as read (its ``metadata`` keeps the file's ViewPosition and
            PatientOrientation even when the view was overridden).
        role: The view the user gives it as (``"frontal"``, ``"lateral"``), None for no role.
        force: Warn (:class:`PlausibilityWarning`) instead of raising.

    Returns:
        ``image``, unchanged.

    Raises:
        ImplausibleInputError: The rule broken and what the file says; names the file.
        ValueError: ``role`` is not frontal, lateral or None.
    """
    if role not in (None, "frontal", "lateral"):
        raise ValueError(f"role must be 'frontal' or 'lateral', got {role!r}")
    rows, cols = image.shape
    if min(rows, cols) < MIN_RADIOGRAPH_SIDE:
        _refuse(
            f"image is {rows}x{cols} pixels; a radiograph needs at least {MIN_RADIOGRAPH_SIDE} "
            "a side",
            image.source,
            force,
        )
    elif max(rows, cols) / min(rows, cols) > MAX_ASPECT_RATIO:
        _refuse(
            f"image is {rows}x{cols} pixels, an aspect ratio beyond "
            f"1:{MAX_ASPECT_RATIO:g}; a chest radiograph is roughly square",
            image.source,
            force,
        )
    if role is None:
        return image
    meta = image.metadata
    tag = str(meta.get("view_position") or "").strip()
    try:
        tagged = View.parse(tag) if tag else View.UNKNOWN
    except ValueError:
        tagged = View.UNKNOWN  # a ViewPosition xprospect does not know says nothing
    if role == "frontal" and tagged.is_lateral:
        _refuse(
            f"given as the frontal view, but its ViewPosition is {tag!r} (lateral)",
            image.source,
            force,
        )
    elif role == "lateral" and tagged.is_frontal:
        _refuse(
            f"given as the lateral view, but its ViewPosition is {tag!r} (frontal)",
            image.source,
            force,
        )
    else:
        orientation = meta.get("patient_orientation")
        axis = _orientation_axis(orientation if isinstance(orientation, list | tuple) else None)
        if role == "frontal" and axis == "AP":
            _refuse(
                f"given as the frontal view, but its PatientOrientation {orientation} runs "
                "anterior-posterior across the image (a lateral view)",
                image.source,
                force,
            )
        elif role == "lateral" and axis == "LR":
            _refuse(
                f"given as the lateral view, but its PatientOrientation {orientation} runs "
                "left-right across the image (a frontal view)",
                image.source,
                force,
            )
    return image
