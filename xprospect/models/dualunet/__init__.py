"""The XprospeCT DualUNet (:mod:`.model`) and the layers only it uses (:mod:`.layers`).

Connection C, which X2CT-GAN fuses its views with too, lives in :mod:`xprospect.models.blocks`
and is re-exported here so the four connections can be imported from one place.
"""

from __future__ import annotations

from xprospect.models.blocks import ConnectionC
from xprospect.models.dualunet.layers import (
    ACTIVATIONS,
    BackProjection,
    ConnectionA,
    ConnectionB,
    ConnectionD,
    ConvBlock,
    initializer_for,
)
from xprospect.models.dualunet.model import DualUNet

__all__ = [
    "ACTIVATIONS",
    "BackProjection",
    "ConnectionA",
    "ConnectionB",
    "ConnectionC",
    "ConnectionD",
    "ConvBlock",
    "DualUNet",
    "initializer_for",
]
