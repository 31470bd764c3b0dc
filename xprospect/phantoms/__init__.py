"""Synthetic volumes: an asymmetric test phantom and (``chest``) a procedural chest phantom."""

from __future__ import annotations

from xprospect.phantoms.asymmetric import AsymmetricPhantom, asymmetric_phantom

__all__ = ["AsymmetricPhantom", "asymmetric_phantom"]
