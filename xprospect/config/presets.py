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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from xprospect.errors import ConfigError

__all__ = [
    "PRESET_TRAINING_FILE",
    "PRESET_TRAINING_KEYS",
    "ReleaseSettings",
    "preset_training_defaults",
    "previous_release_settings",
]

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


@dataclass(frozen=True)
class ReleaseSettings:
    """What an older release built and trained a preset with, where this release differs.

    Attributes:
        model: Generator overrides (``model.overrides`` keys).
        discriminator: Discriminator overrides (``gan.discriminator`` keys).
        d_loss_weight: The discriminator loss factor of that release (None: unchanged).
    """

    model: dict[str, Any] = field(default_factory=dict)
    discriminator: dict[str, Any] = field(default_factory=dict)
    d_loss_weight: float | None = None


_D_LOSS_WEIGHT_0_1 = 0.5
"""0.1 halved the discriminator's real + fake loss for every GAN preset (pix2pix' choice); 0.2
takes each paper's factor from ``training.yaml``."""


def previous_release_settings(preset: str, version: str) -> ReleaseSettings | None:
    """The settings a run folder made by ``version`` needs to resume as it was built.

    0.2 rebuilt the GAN-family presets as their papers have them (issue 13); a run folder made
    by 0.1 stores its resolved config without the new keys, so rebuilding it through today's
    preset gives another network than its checkpoint holds. The trainer applies these settings
    where the run's config does not set the key itself.

    Args:
        preset: A preset name (matched case-insensitively); an unknown name gives None.
        version: ``xprospect_version`` from the run's ``state.json``.

    Returns:
        None when ``version`` is this release's line or the preset did not change.
    """
    from xprospect.models.presets import RELEASE_0_1_ARCHITECTURE, canonical_preset

    if not str(version).startswith("0.1."):
        return None
    try:
        key = canonical_preset(preset)
    except ConfigError:
        return None
    arch = RELEASE_0_1_ARCHITECTURE.get(key)
    if arch is None:
        return None
    has_d = "d_loss_weight" in preset_training_defaults(key)
    return ReleaseSettings(
        model=copy.deepcopy(arch["model"]),
        discriminator=copy.deepcopy(arch["discriminator"]),
        d_loss_weight=_D_LOSS_WEIGHT_0_1 if has_d else None,
    )
