"""Reconstruction networks: the XprospeCT DualUNet, the GAN family and their presets.

Quick start::

    from xprospect.models import build_model, list_presets
    model = build_model("512-ProjInj", size=64, base_filters=8)
    volume = model({"frontal": frontal, "lateral": lateral})  # (B, 64, 64, 64, 1) in [0, 1]

- :class:`DualUNet` (:mod:`xprospect.models.dualunet`): the network, a functional ``keras.Model``
  subclass configured by its constructor arguments (keras-hub ``Backbone`` style).
- The GAN family, each from its paper: :class:`~xprospect.models.x2ct.X2CTGenerator` (X2CT-CNN+B,
  X2CT-GAN), :class:`~xprospect.models.cvaa.CVAAGenerator` (CVAA-GAN),
  :class:`~xprospect.models.duolift.DuoLiftGenerator` (DuoLift-CNN/GAN),
  :class:`~xprospect.models.sxr2ct.SXR2CTGenerator` (S-XR2CT, single view),
  :class:`~xprospect.models.xctdiff.XctDiff` (XctDiff: VQ-GAN, progressive encoder, latent
  diffusion; single view) and the conditional
  :class:`~xprospect.models.discriminators.PatchDiscriminator3D`; the style-transfer CycleGAN in
  :mod:`xprospect.models.cyclegan`.
- :data:`PRESETS`, :func:`build_model`, :func:`build_discriminator`, :func:`list_presets`,
  :func:`canonical_preset` (:mod:`xprospect.models.presets`): the papers' rows (64-Dense,
  512-Dense, 512-Dense-MAE, 512-ProjInj; X2CT-CNN+B, X2CT-GAN, CVAA-GAN, DuoLift-CNN, DuoLift-GAN,
  S-XR2CT) as architecture metadata. Their training defaults (losses, optimizer, schedule) are
  data, in ``xprospect/configs/presets/training.yaml``, read by
  :func:`xprospect.config.presets.preset_training_defaults`.

**Layout** (keras-hub style: a model owns its layers):

- :mod:`xprospect.models.args`: argument checks (:func:`~xprospect.models.args.positive_int`,
  :func:`~xprospect.models.args.check_norm`, ...), the dtype-policy helpers and :data:`VIEWS`.
  They are a module of their own, not part of :mod:`~xprospect.models.blocks`, because they hold
  no layers: the families and the layer modules both need them, and a check does not have to pull
  in the layers to be reused.
- :mod:`xprospect.models.blocks`: the layers several families share (``ConvNormAct``,
  ``ExpandXrays``, Connection C, the view-frame moves).
- One module (or package) per family with the layers only it uses: ``dualunet/`` (``model.py``
  and ``layers.py``: connections A, B, D and the back-projection), ``x2ct.py``, ``cvaa.py``,
  ``duolift.py``, ``sxr2ct.py``, ``xctdiff/`` (``layers.py``, ``diffusion.py``, ``model.py``),
  ``discriminators.py``, ``cyclegan.py``.

Everything is ``keras.ops`` / ``keras.layers`` only, so the models also run on the JAX backend.
Importing this package imports every family, which registers every ``xprospect>...`` Keras class:
after ``import xprospect.models`` any ``.keras`` file xprospect wrote loads with
``keras.saving.load_model``.
"""

from __future__ import annotations

from xprospect.constants import VIEWS

# Every family is imported so that its classes are registered for deserialisation.
from xprospect.models import (  # noqa: F401
    cvaa,
    cyclegan,
    discriminators,
    duolift,
    sxr2ct,
    x2ct,
    xctdiff,
)
from xprospect.models.dualunet import DualUNet
from xprospect.models.presets import (
    FAMILIES,
    MODEL_KEYS,
    PRESETS,
    PresetInfo,
    build_discriminator,
    build_model,
    canonical_preset,
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
    "canonical_preset",
    "list_presets",
    "model_keys",
    "preset_config",
]
