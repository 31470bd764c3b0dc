"""Named configurations of :class:`~xprospect.models.dualunet.DualUNet`: the XprospeCT paper's rows.

============== ============ ========================= ===========================================
preset         bottleneck   training                  what changes
============== ============ ========================= ===========================================
64-Dense       64 (4^3)     MSE, Adam                 the smallest dense bottleneck
512-Dense      512 (8^3)    MSE, Adam                 a wider bottleneck and finer 3D grid
512-Dense-MAE  512 (8^3)    MAE, Nadam                the loss and the optimiser
512-ProjInj    512 (8^3)    MAE, Nadam                X-rays back-projected into the fusion
============== ============ ========================= ===========================================

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

__all__ = ["MODEL_KEYS", "PRESETS", "PresetInfo", "build_model", "list_presets", "preset_config"]

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
        "description": "DualUNet, 64-unit dense bottleneck (4^3 grid), MSE + Adam",
        "model": {**_COMMON, "dense_units": 64, "back_projection": False},
        "training": {"loss_weights": {"mse": 1.0}, "optimizer": "adam", "learning_rate": 1e-4},
    },
    "512-Dense": {
        "description": "DualUNet, 512-unit dense bottleneck (8^3 grid), MSE + Adam",
        "model": {**_COMMON, "dense_units": 512, "back_projection": False},
        "training": {"loss_weights": {"mse": 1.0}, "optimizer": "adam", "learning_rate": 1e-4},
    },
    "512-Dense-MAE": {
        "description": "512-Dense trained with MAE + Nadam",
        "model": {**_COMMON, "dense_units": 512, "back_projection": False},
        "training": {"loss_weights": {"mae": 1.0}, "optimizer": "nadam", "learning_rate": 1e-4},
    },
    "512-ProjInj": {
        "description": "512-Dense-MAE + back-projected X-rays injected at every fusion scale",
        "model": {**_COMMON, "dense_units": 512, "back_projection": True},
        "training": {"loss_weights": {"mae": 1.0}, "optimizer": "nadam", "learning_rate": 1e-4},
    },
}
"""Preset name → ``{"description", "model": DualUNet arguments, "training": {"loss_weights",
"optimizer", "learning_rate"}}``."""

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
    "dtype",
    "name",
)
"""Keys :func:`build_model` accepts as overrides."""

PRESET_SIZES = (64, 128)


@dataclass(frozen=True)
class PresetInfo:
    """One row of :func:`list_presets`.

    Attributes:
        name: Preset name.
        size: Cube edge (X-rays ``size^2``, volume ``size^3``).
        params: Number of parameters of the built model.
        description: One line.
    """

    name: str
    size: int
    params: int
    description: str


def _preset(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[name]


def preset_config(preset: str, **overrides: Any) -> dict[str, Any]:
    """A deep copy of a preset with model overrides applied (validated like :func:`build_model`).

    Returns:
        ``{"description", "model", "training"}``.

    Raises:
        ConfigError: Unknown preset or override key.
    """
    config = copy.deepcopy(_preset(preset))
    unknown = sorted(set(overrides) - set(MODEL_KEYS))
    if unknown:
        raise ConfigError(
            f"unknown override(s) {unknown} for preset {preset!r}; valid keys: {list(MODEL_KEYS)}"
        )
    config["model"].update(overrides)
    return config


def build_model(
    preset: str,
    *,
    size: int = 64,
    views: Sequence[str] = ("frontal", "lateral"),
    geometry: str = "x2ct",
    spacing_mm: float | None = None,
    **overrides: Any,
) -> Any:
    """Builds a preset's :class:`~xprospect.models.dualunet.DualUNet`.

    Args:
        preset: A key of :data:`PRESETS`.
        size: Edge of the X-rays and of the output cube (64 or 128 for the paper's rows).
        views: ``("frontal", "lateral")`` or ``("frontal",)`` for single-view mode.
        geometry: Geometry of the back-projection injection (``"x2ct"``, ``"xprospect_mean"``,
            ``"parallel"``); it should match the one the training DRRs were rendered with.
        spacing_mm: Voxel size of the output cube; None: ``320 / size``.
        **overrides: Any of :data:`MODEL_KEYS` (e.g. ``base_filters=8``, ``dense_units=64``,
            ``activation="relu"``, ``dropout=0.1``, ``back_projection=False``,
            ``dtype="mixed_bfloat16"``).

    Returns:
        The uncompiled ``keras.Model`` (a registered :class:`DualUNet`), inputs
        ``{"frontal": (B, size, size, 1)[, "lateral": ...]}``, output ``(B, size, size, size, 1)``.

    Raises:
        ConfigError: Unknown preset, unknown override key (the message lists the valid ones) or an
            invalid value.
    """
    from xprospect.models.dualunet import DualUNet

    config = preset_config(preset, **overrides)
    model_args = config["model"]
    model_args.setdefault("name", preset.lower().replace("-", "_"))
    return DualUNet(
        size=size, views=tuple(views), geometry=geometry, spacing_mm=spacing_mm, **model_args
    )


@functools.lru_cache(maxsize=32)
def _count_params(model_items: tuple[tuple[str, Any], ...], size: int) -> int:
    import gc

    import keras

    from xprospect.models.dualunet import DualUNet

    with keras.device("cpu"):
        model = DualUNet(size=size, **dict(model_items))
    count = int(model.count_params())
    del model
    gc.collect()
    return count


def list_presets(sizes: Sequence[int] = PRESET_SIZES) -> list[PresetInfo]:
    """Every preset at every size with its parameter count (models are built once, then cached).

    Args:
        sizes: Cube edges.

    Returns:
        Rows in preset order, then size order.
    """
    return [
        PresetInfo(
            name,
            int(s),
            # Presets that differ only in training (512-Dense, 512-Dense-MAE) share one count.
            _count_params(tuple(sorted(cfg["model"].items())), int(s)),
            cfg["description"],
        )
        for name, cfg in PRESETS.items()
        for s in sizes
    ]
