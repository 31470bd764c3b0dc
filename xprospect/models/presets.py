"""Named architectures: the XprospeCT paper's DualUNet rows and the GAN family's papers.

A preset here is architecture metadata only: family, views, discriminator and generator
arguments. Its training defaults (the "training" columns below) are data in
``xprospect/configs/presets/training.yaml``, read by
:func:`xprospect.config.presets.preset_training_defaults`; an experiment config's value wins.

============== ============ ========================= ===========================================
preset         bottleneck   training                  what changes
============== ============ ========================= ===========================================
64-Dense       64 (4^3)     MSE, Adam                 the smallest dense bottleneck
512-Dense      512 (8^3)    MSE, Adam                 a wider bottleneck and finer 3D grid
512-Dense-MAE  512 (8^3)    MAE, Nadam                the loss and the optimiser
512-ProjInj    512 (8^3)    MAE, Nadam                X-rays back-projected into the fusion
============== ============ ========================= ===========================================

The GAN family (issue: "one package, one trainer, one data pipeline, one set of metrics"):

============== ========== ============================ =====================================
preset         views      generator / discriminator    training (loss weights; optimizer)
============== ========== ============================ =====================================
X2CT-CNN+B     1 or 2     X2CTGenerator / none         mse 10; Adam 2e-4 (0.5, 0.99), linear
                                                       decay from 50 %
X2CT-CNN+S     1          X2CTGenerator / none         as X2CT-CNN+B, single view
X2CT-GAN       1 or 2     X2CTGenerator / X2CT Patch   + projection 10, adversarial 0.1
                                                       (LSGAN; D loss x 0.1)
CVAA-GAN       2          CVAAGenerator / X2CT Patch   as X2CT-GAN, constant learning rate,
                                                       D loss x 1
DuoLift-CNN    2 or 1     DuoLiftGenerator / none      mse 1, mae 1; Adam 5e-4, / 10 at 70 %,
                                                       4 batches accumulated
DuoLift-GAN    2 or 1     DuoLiftGenerator / DuoLift   + masked mse 1, masked mae 1,
                                                       adversarial 0.01 (BCE; D loss x 0.01);
                                                       Adam 1e-4
S-XR2CT        1          SXR2CTGenerator / X2CT Patch adversarial 0.1, mse 10, projection 10,
                                                       perceptual 1 (LSGAN); Adam 2e-4
XctDiff        1          XctDiff (VQ-GAN, progressive three stages (xctdiff-vqgan, -encoder,
                          encoder, latent UNet) / its  -ldm configs); see docs/xctdiff.md
                          own 3D + 2D discriminators
============== ========== ============================ =====================================

Each GAN-family preset follows its paper where the text is specific (X2CT: its official code);
``docs/presets.md`` lists the paper values, the choices where a paper is silent and the deliberate
deviations (each an argument whose default is the paper's).

Each preset is size-free: :func:`build_model` builds it for ``size`` 64 or 128 (X-rays 64^2 /
128^2, volumes 64^3 / 128^3), or any power of two for tests. Filter counts (``base_filters`` 16,
doubling per level up to 256) follow a standard UNet; ``base_filters`` 8 is the CPU-friendly
choice for the demo.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from xprospect.errors import ConfigError

__all__ = [
    "FAMILIES",
    "MODEL_KEYS",
    "PRESETS",
    "RELEASE_0_1_ARCHITECTURE",
    "PresetInfo",
    "build_discriminator",
    "build_model",
    "canonical_preset",
    "list_presets",
    "model_keys",
    "preset_config",
]

FAMILIES: dict[str, tuple[str, str]] = {
    "dualunet": ("xprospect.models.dualunet", "DualUNet"),
    "x2ct": ("xprospect.models.x2ct", "X2CTGenerator"),
    "cvaa": ("xprospect.models.cvaa", "CVAAGenerator"),
    "duolift": ("xprospect.models.duolift", "DuoLiftGenerator"),
    "sxr2ct": ("xprospect.models.sxr2ct", "SXR2CTGenerator"),
    "xctdiff": ("xprospect.models.xctdiff", "XctDiff"),
}
"""Generator family → (module, class)."""
DISCRIMINATORS: dict[str, str] = {
    "x2ct": "x2ct_discriminator",
    "duolift": "duolift_discriminator",
}
"""Discriminator kind → factory in :mod:`xprospect.models.discriminators`."""

_COMMON: dict[str, Any] = {
    "base_filters": 16,
    "max_filters": 256,
    "grid_size": None,
    "depth": None,
    "num_convs": 2,
    "activation": "selu",
    "dropout": 0.0,
}

PRESETS: dict[str, dict[str, Any]] = {
    "64-Dense": {
        "family": "dualunet",
        "views": (("frontal", "lateral"), ("frontal",)),
        "discriminator": None,
        "description": "DualUNet, 64-unit dense bottleneck (4^3 grid), MSE + Adam",
        "model": {**_COMMON, "dense_units": 64, "back_projection": False},
    },
    "512-Dense": {
        "family": "dualunet",
        "views": (("frontal", "lateral"), ("frontal",)),
        "discriminator": None,
        "description": "DualUNet, 512-unit dense bottleneck (8^3 grid), MSE + Adam",
        "model": {**_COMMON, "dense_units": 512, "back_projection": False},
    },
    "512-Dense-MAE": {
        "family": "dualunet",
        "views": (("frontal", "lateral"), ("frontal",)),
        "discriminator": None,
        "description": "512-Dense trained with MAE + Nadam",
        "model": {**_COMMON, "dense_units": 512, "back_projection": False},
    },
    "512-ProjInj": {
        "family": "dualunet",
        "views": (("frontal", "lateral"), ("frontal",)),
        "discriminator": None,
        "description": "512-Dense-MAE + back-projected X-rays injected at every fusion scale",
        "model": {**_COMMON, "dense_units": 512, "back_projection": True},
    },
    "X2CT-CNN+B": {
        "family": "x2ct",
        "views": (("frontal", "lateral"), ("frontal",)),
        "discriminator": None,
        # The paper's CNN baselines are the generator trained with the reconstruction loss only.
        "description": "X2CT-CNN+B (Ying et al. 2019): the X2CT-GAN generator alone, MSE",
        "model": {},
    },
    "X2CT-CNN+S": {
        "family": "x2ct",
        "views": (("frontal",),),
        "discriminator": None,
        # The official single-view model (singleview_network_denseUNet_transposed): one
        # DenseNet encoder and its 3D decoder to full resolution, no fusion, and its head;
        # trained with the reconstruction loss only: the single-view CNN baseline (+S).
        "description": "X2CT-CNN+S (Ying et al. 2019): the single-view X2CT generator alone, MSE",
        "model": {},
    },
    "X2CT-GAN": {
        "family": "x2ct",
        "views": (("frontal", "lateral"), ("frontal",)),
        "discriminator": {"kind": "x2ct", "args": {}},
        "description": "X2CT-GAN (Ying et al. 2019): DenseNet encoders, 3D decoders, PatchGAN",
        "model": {},
    },
    "CVAA-GAN": {
        "family": "cvaa",
        "views": (("frontal", "lateral"),),
        # "X_1 and X_2 are first extended from 2D to 3D and then followed by a basic 3D
        # convolution layer"; its width is not given: 8 channels (a choice).
        "discriminator": {"kind": "x2ct", "args": {"condition_filters": 8}},
        "description": "CVAA-GAN (Qiao et al. 2024): coarse-fine view attention alignment",
        "model": {},
    },
    "DuoLift-CNN": {
        "family": "duolift",
        # "Reconstructing CT from Single-view and Biplanar X-Rays": Table 1 has both settings.
        "views": (("frontal", "lateral"), ("frontal",)),
        "discriminator": None,
        "description": "DuoLift-CNN (Zhang and Ying 2024): two lifts, 3D UNet++ then 3D UNet",
        "model": {},
    },
    "DuoLift-GAN": {
        "family": "duolift",
        # "Reconstructing CT from Single-view and Biplanar X-Rays": Table 1 has both settings.
        "views": (("frontal", "lateral"), ("frontal",)),
        "discriminator": {"kind": "duolift", "args": {}},
        "description": "DuoLift-GAN: DuoLift-CNN + lung-masked terms + BCE discriminator",
        "model": {},
    },
    "S-XR2CT": {
        "family": "sxr2ct",
        "views": (("frontal",),),
        "discriminator": {"kind": "x2ct", "args": {}},
        "description": "S-XR2CT (Hor, Yang and Kim 2025): single view, likelihood, CT template",
        "model": {},
    },
    "XctDiff": {
        "family": "xctdiff",
        "views": (("frontal",),),
        # The VQ-GAN's discriminators belong to stage 1 (xprospect.training.xctdiff).
        "discriminator": None,
        "description": "XctDiff (Bai et al. 2024): VQ-GAN, progressive encoder, latent diffusion",
        "model": {},
    },
}
"""Preset name → ``{"family", "views" (the view sets it supports), "discriminator" (None or
``{"kind", "args"}``), "description", "model": generator arguments}``. Training defaults are not
here: see :func:`xprospect.config.presets.preset_training_defaults`."""


def _release_0_1() -> dict[str, dict[str, dict[str, Any]]]:
    # The generators' own LEGACY_DEFAULTS are what their from_config fills in for 0.1 files;
    # 0.1's DuoLift also had two encoder stages. The discriminators' 0.1 values are here only.
    from xprospect.models import cvaa, duolift, sxr2ct, x2ct

    x2ct_d = {"padding": 1}
    lift = {**duolift.LEGACY_DEFAULTS, "encoder_blocks": (3, 4)}
    return {
        "X2CT-CNN+B": {"model": dict(x2ct.LEGACY_DEFAULTS), "discriminator": {}},
        "X2CT-GAN": {"model": dict(x2ct.LEGACY_DEFAULTS), "discriminator": x2ct_d},
        "CVAA-GAN": {
            "model": dict(cvaa.LEGACY_DEFAULTS),
            "discriminator": {**x2ct_d, "condition_filters": 0},
        },
        "DuoLift-CNN": {"model": lift, "discriminator": {}},
        "DuoLift-GAN": {"model": lift, "discriminator": {"pool_padding": 0}},
        "S-XR2CT": {"model": dict(sxr2ct.LEGACY_DEFAULTS), "discriminator": x2ct_d},
    }


RELEASE_0_1_ARCHITECTURE: dict[str, dict[str, dict[str, Any]]] = _release_0_1()
"""What xprospect 0.1 built for each preset whose architecture 0.2 changed to follow its paper
(issue 13): generator overrides (``model``) and discriminator overrides (``discriminator``).
Resuming a run folder that 0.1 made applies them where the run's config does not set the key
itself (:func:`xprospect.config.presets.previous_release_settings`), so its checkpoint matches
the network again. The DualUNet presets did not change."""

MODEL_KEYS: tuple[str, ...] = (
    "base_filters",
    "max_filters",
    "dense_units",
    "grid_size",
    "depth",
    "num_convs",
    "activation",
    "dropout",
    "back_projection",
    "upsampling",
    "dtype",
    "name",
)
"""Keys :func:`build_model` accepts as overrides (the DualUNet's; the other families' are their
generators' arguments, :func:`model_keys`)."""

PRESET_SIZES = (64, 128)


@dataclass(frozen=True)
class PresetInfo:
    """One row of :func:`list_presets`.

    Attributes:
        name: Preset name.
        size: Cube edge (X-rays ``size^2``, volume ``size^3``).
        params: Number of parameters of the built generator.
        description: One line.
        discriminator_params: Parameters of its discriminator (0: none).
    """

    name: str
    size: int
    params: int
    description: str
    discriminator_params: int = 0


def canonical_preset(name: str) -> str:
    """The key of :data:`PRESETS` that ``name`` names, matched case-insensitively (``512-dense``
    → ``512-Dense``; surrounding spaces ignored).

    Raises:
        ConfigError: No preset has that name (the message lists them).
    """
    by_lower = {k.lower(): k for k in PRESETS}
    key = by_lower.get(str(name).strip().lower())
    if key is None:
        raise ConfigError(f"unknown preset {name!r}; expected one of {list(PRESETS)}")
    return key


def _preset(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[name]


def _family_class(family: str) -> type:
    import importlib

    module, name = FAMILIES[family]
    cls: type = getattr(importlib.import_module(module), name)
    return cls


_BUILD_ARGS = ("size", "views", "geometry", "spacing_mm")


def _init_params(cls: type) -> list[str]:
    import inspect

    return list(inspect.signature(cls.__init__).parameters)  # type: ignore[misc]


def model_keys(preset: str) -> tuple[str, ...]:
    """The overrides :func:`build_model` accepts for ``preset`` (its generator's arguments)."""
    family = _preset(preset)["family"]
    if family == "dualunet":
        return MODEL_KEYS
    params = _init_params(_family_class(family))
    keys = [k for k in params if k not in ("self", "kwargs", *_BUILD_ARGS)]
    # "name" goes through **kwargs to keras.Model; "dtype" is listed where the class takes it.
    return (*keys, "name")


def preset_config(preset: str, **overrides: Any) -> dict[str, Any]:
    """A deep copy of a preset with model overrides applied (validated like :func:`build_model`).

    Returns:
        The preset's entry of :data:`PRESETS` with ``model`` updated.

    Raises:
        ConfigError: Unknown preset or override key.
    """
    config = copy.deepcopy(_preset(preset))
    valid = model_keys(preset)
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ConfigError(
            f"unknown override(s) {unknown} for preset {preset!r}; valid keys: {list(valid)}"
        )
    config["model"].update(overrides)
    return config


def _check_views(preset: str, views: Sequence[str]) -> tuple[str, ...]:
    views = tuple(views)
    allowed = [tuple(v) for v in _preset(preset)["views"]]
    if views not in allowed:
        raise ConfigError(
            f"preset {preset!r} takes views {' or '.join(str(list(a)) for a in allowed)}, got "
            f"{list(views)}"
        )
    return views


def build_model(
    preset: str,
    *,
    size: int = 64,
    views: Sequence[str] | None = None,
    geometry: str = "x2ct",
    spacing_mm: float | None = None,
    **overrides: Any,
) -> Any:
    """Builds a preset's generator (:class:`~xprospect.models.dualunet.DualUNet` or one of the GAN
    family's).

    Args:
        preset: A key of :data:`PRESETS`.
        size: Edge of the X-rays and of the output cube (64 or 128 for the papers' rows).
        views: ``("frontal", "lateral")`` or ``("frontal",)`` (single view) where the preset has
            it; None: the preset's first view set.
        geometry: Geometry of the back-projection injection (DualUNet only: ``"x2ct"``,
            ``"xprospect_mean"``, ``"parallel"``); it should match the training DRRs'.
        spacing_mm: Voxel size of the output cube (DualUNet only); None: ``320 / size``.
        **overrides: Generator arguments (:func:`model_keys`), e.g. ``base_filters=8`` or
            ``dtype="mixed_bfloat16"``.

    Returns:
        The uncompiled ``keras.Model``: inputs ``{"frontal": (B, size, size, 1)[, "lateral":
        ...]}``, output ``(B, size, size, size, 1)`` in [0, 1].

    Raises:
        ConfigError: Unknown preset, unknown override key (the message lists the valid ones),
            views the preset does not take, or an invalid value.
    """
    config = preset_config(preset, **overrides)
    views = tuple(config["views"][0]) if views is None else _check_views(preset, views)
    model_args = config["model"]
    model_args.setdefault("name", preset.lower().replace("-", "_").replace("+", "_"))
    cls = _family_class(config["family"])
    if config["family"] == "dualunet":
        model_args.update(geometry=geometry, spacing_mm=spacing_mm)
    if "views" in _init_params(cls):
        model_args["views"] = views
    return cls(size=size, **model_args)


def build_discriminator(
    preset: str, *, size: int = 64, views: Sequence[str] | None = None, **overrides: Any
) -> Any:
    """Builds a preset's conditional 3D discriminator, or returns None if it has none.

    Args:
        preset: A key of :data:`PRESETS`.
        size: Cube edge.
        views: The X-rays it is conditioned on; None: the preset's first view set.
        **overrides: Arguments of :class:`~xprospect.models.discriminators.PatchDiscriminator3D`.

    Raises:
        ConfigError: Unknown preset or invalid arguments.
    """
    config = _preset(preset)
    spec = config.get("discriminator")
    if not spec:
        return None
    import xprospect.models.discriminators as discriminators

    views = tuple(config["views"][0]) if views is None else _check_views(preset, views)
    factory = getattr(discriminators, DISCRIMINATORS[spec["kind"]])
    try:
        return factory(size, views, **{**spec.get("args", {}), **overrides})
    except TypeError as exc:
        raise ConfigError(f"discriminator of preset {preset!r}: {exc}") from None


@functools.lru_cache(maxsize=64)
def _count_params(preset: str, size: int, which: str) -> int:
    import gc

    import keras

    with keras.device("cpu"):
        model = (build_model if which == "G" else build_discriminator)(preset, size=size)
    count = 0 if model is None else int(model.count_params())
    del model
    gc.collect()
    return count


def list_presets(
    sizes: Sequence[int] = PRESET_SIZES, names: Sequence[str] | None = None
) -> list[PresetInfo]:
    """Every preset at every size with its parameter counts (models are built once, cached).

    Args:
        sizes: Cube edges.
        names: Only these presets (default: all).

    Returns:
        Rows in preset order, then size order.
    """
    return [
        PresetInfo(
            name,
            int(s),
            _count_params(name, int(s), "G"),
            cfg["description"],
            _count_params(name, int(s), "D"),
        )
        for name, cfg in PRESETS.items()
        if names is None or name in names
        for s in sizes
    ]
