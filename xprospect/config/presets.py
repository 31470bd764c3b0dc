"""Training defaults of the model presets, kept as data in ``xprospect/configs/presets/``.

:data:`xprospect.models.PRESETS` describes architectures only; what a preset trains with by
default (loss weights, optimizer, learning rate, betas, schedule, adversarial loss, gradient
accumulation) is in ``xprospect/configs/presets/training.yaml``, one mapping per preset.
:func:`preset_training_defaults` is the one reader: the trainer's config resolution and the tuner's
defaults both go through it, with the preset name matched by
:func:`xprospect.models.presets.canonical_preset`.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import yaml

from xprospect.errors import ConfigError

__all__ = ["PRESET_TRAINING_FILE", "PRESET_TRAINING_KEYS", "preset_training_defaults"]

PRESET_TRAINING_FILE = (
    Path(__file__).resolve().parent.parent / "configs" / "presets" / "training.yaml"
)
"""The shipped file of every preset's training defaults."""
PRESET_TRAINING_KEYS = (
    "loss_weights",
    "optimizer",
    "learning_rate",
    "beta_1",
    "beta_2",
    "schedule",
    "adversarial",
    "d_loss_weight",
    "grad_accum_steps",
)
"""Keys a preset's training defaults may hold (each optional)."""


@functools.lru_cache(maxsize=1)
def _read_defaults() -> dict[str, dict[str, Any]]:
    # Imported here, not at the top: xprospect.models imports Keras, which the config engine
    # does not need until a preset is resolved.
    from xprospect.models.presets import PRESETS

    path = PRESET_TRAINING_FILE
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read the presets' training defaults: {exc}", path) from None
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping of preset name to training defaults", path)
    for name, entry in data.items():
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; expected some of {list(PRESETS)}", path)
        if not isinstance(entry, dict):
            raise ConfigError(f"{name}: expected a mapping, got {entry!r}", path)
        unknown = sorted(set(entry) - set(PRESET_TRAINING_KEYS))
        if unknown:
            raise ConfigError(
                f"{name}: unknown key(s) {unknown}; valid keys: {list(PRESET_TRAINING_KEYS)}", path
            )
    return data


def preset_training_defaults(preset: str) -> dict[str, Any]:
    """A preset's training defaults (a fresh copy: the caller may change it).

    Args:
        preset: A preset name, matched case-insensitively (``512-dense``).

    Returns:
        Some of :data:`PRESET_TRAINING_KEYS` (``{}`` for a preset the file does not list), e.g.
        ``{"loss_weights": {"mse": 1.0}, "optimizer": "adam", "learning_rate": 1e-4}``.

    Raises:
        ConfigError: Unknown preset, or an unreadable or invalid defaults file.
    """
    from xprospect.models.presets import canonical_preset

    return copy.deepcopy(_read_defaults().get(canonical_preset(preset), {}))
