"""Synthetic volumes: an asymmetric test phantom and (``chest``) a procedural chest phantom."""

from __future__ import annotations

from xprospect.phantoms.asymmetric import AsymmetricPhantom, asymmetric_phantom
from xprospect.phantoms.chest import (
    BONE_LABELS,
    LABELS,
    LUNG_LABELS,
    PHANTOM_CALIBRATIONS,
    ChestPhantom,
    Nodule,
    PhantomCalibration,
    chest_phantom,
    chest_phantoms,
    phantom_calibration,
)

__all__ = [
    "BONE_LABELS",
    "LABELS",
    "LUNG_LABELS",
    "PHANTOM_CALIBRATIONS",
    "AsymmetricPhantom",
    "ChestPhantom",
    "Nodule",
    "PhantomCalibration",
    "asymmetric_phantom",
    "chest_phantom",
    "chest_phantoms",
    "phantom_calibration",
]
