"""Reconstruction networks: the XprospeCT DualUNet and its presets.

Quick start::

    from xprospect.models import build_model, list_presets
    model = build_model("512-ProjInj", size=64, base_filters=8)
    volume = model({"frontal": frontal, "lateral": lateral})  # (B, 64, 64, 64, 1) in [0, 1]

- :class:`DualUNet` (:mod:`xprospect.models.dualunet`): the network, a functional ``keras.Model``
  subclass configured by its constructor arguments (keras-hub ``Backbone`` style).
- The GAN family, each from its paper: :class:`~xprospect.models.x2ct.X2CTGenerator` (X2CT-CNN+B,
  X2CT-GAN), :class:`~xprospect.models.cvaa.CVAAGenerator` (CVAA-GAN),
  :class:`~xprospect.models.duolift.DuoLiftGenerator` (DuoLift-CNN/GAN),
  :class:`~xprospect.models.sxr2ct.SXR2CTGenerator` (S-XR2CT, single view) and the conditional
  :class:`~xprospect.models.discriminators.PatchDiscriminator3D`.
- :data:`PRESETS`, :func:`build_model`, :func:`build_discriminator`, :func:`list_presets`
  (:mod:`xprospect.models.presets`): the papers' rows (64-Dense, 512-Dense, 512-Dense-MAE,
  512-ProjInj; X2CT-CNN+B, X2CT-GAN, CVAA-GAN, DuoLift-CNN, DuoLift-GAN, S-XR2CT) and their
  training settings.

The building blocks (connections A-D, back-projection) live in :mod:`xprospect.models.blocks`. Everything
is ``keras.ops`` / ``keras.layers`` only, so the models also run on the JAX backend.
"""

from __future__ import annotations

from xprospect.models.dualunet import VIEWS, DualUNet
from xprospect.models.presets import (
    FAMILIES,
    MODEL_KEYS,
    PRESETS,
    PresetInfo,
    build_discriminator,
    build_model,
    list_presets,
    model_keys,
    preset_config,
)

__all__ = [
    "FAMILIES",
    "MODEL_KEYS",
    "PRESETS",
    "VIEWS",
    "DualUNet",
    "PresetInfo",
    "build_discriminator",
    "build_model",
    "list_presets",
    "model_keys",
    "preset_config",
]
