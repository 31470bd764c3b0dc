"""Style transfer between DRRs and real radiographs (CycleGAN)."""

from __future__ import annotations
