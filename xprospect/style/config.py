"""Style-transfer experiments: typed config of one CycleGAN (one view) and its YAML loading.

A style file (``xprospect style train --config FILE.yaml``)::

    name: style-frontal
    data:
      dir: data/ds128            # domain A: a dataset written by 'xprospect prepare'
      source: drr                # drr (its DRRs) | mean_ct (mean of the CT along the beam)
      real_dir: null             # domain B: folder + manifest.csv; null: $XPROSPECT_REAL_XRAYS
                                 #   or ../shared/data/real_xrays
      real_manifest: null        # null: real_dir/manifest.csv
      view: frontal              # frontal | lateral: one model per view
      size: 128                  # image edge both domains are brought to
      crop: thorax               # real X-rays: thorax | pad | center square
      suppress_markers: true
      percentiles: [0.5, 99.5]   # real X-rays' intensity window
      val_fraction: 0.2          # real patients held out for validation / evaluation
      batch_size: 1
      shuffle_buffer: 512
      val_images: 16             # validation images per domain
      max_images: null           # at most N training images per domain (null: all)
      film_augmentation: null    # domain A training images made film-like (issue 17): null
                                 #   (off) or {} / overrides of FilmAugmentationConfig
    model:
      generator: {}              # ResnetGenerator overrides (n_blocks null: 6 at 128^2, 9 above;
                                 # upsampling: transpose | resize_conv | subpixel, issue 17)
      discriminator: {}          # PatchDiscriminator2D overrides (70x70 by default)
    loss:
      adversarial: lsgan         # lsgan | bce
      cycle: 20.0                # lambda (XprospeCT: 20; CycleGAN: 10; film runs: see
                                 #   StyleLossConfig)
      identity: 0.5              # identity weight as a fraction of lambda (0: none)
    history_size: 50             # image history buffer per discriminator (0: none)
    optimizer:                   # xprospect.config.OptimizerConfig
      name: adam                 # XprospeCT: nadam, a lower rate, use_ema + ema_reset: epoch
      learning_rate: 2.0e-4
      beta_1: 0.5
      schedule: {name: linear, start_fraction: 0.5}
    training: {steps: 2000, ...} # xprospect.config.TrainingConfig (one step: a batch per domain)

Shipped files live in ``xprospect/configs/style/`` (:func:`shipped_style_configs`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from xprospect.config import CONFIG_DIR, OptimizerConfig, ScheduleConfig, TrainingConfig, engine
from xprospect.config.engine import check
from xprospect.preprocessing import XRAY_WINDOW_PERCENTILES
from xprospect.style.film import FilmAugmentationConfig, validate_film_config

__all__ = [
    "STYLE_CONFIG_DIR",
    "StyleConfig",
    "StyleDataConfig",
    "StyleLossConfig",
    "StyleModelConfig",
    "load_style_config",
    "resolve_style_config",
    "shipped_style_configs",
    "style_config_from_dict",
    "style_config_to_dict",
    "validate_style_config",
]

STYLE_CONFIG_DIR = CONFIG_DIR / "style"


@dataclass
class StyleDataConfig:
    """The two domains (see the module docstring for each key)."""

    dir: str = ""
    source: Literal["drr", "mean_ct"] = "drr"
    real_dir: str | None = None
    real_manifest: str | None = None
    view: Literal["frontal", "lateral"] = "frontal"
    size: int = 128
    crop: Literal["thorax", "pad", "center"] = "thorax"
    suppress_markers: bool = True
    percentiles: list[float] = field(default_factory=lambda: list(XRAY_WINDOW_PERCENTILES))
    val_fraction: float = 0.2
    batch_size: int = 1
    shuffle_buffer: int = 512
    val_images: int = 16
    max_images: int | None = None
    film_augmentation: FilmAugmentationConfig | None = None
    """Film-like augmentation of domain A's training images (:mod:`xprospect.style.film`);
    None: off, as before issue 17. A run trained with it also applies it (seeded) to the DRRs it
    translates afterwards (``evaluate_style``, ``stylize_dataset``: ``StyleModel.film``), since
    its generators never saw a clean DRR; validation during training sees clean DRRs."""


@dataclass
class StyleModelConfig:
    """Overrides of :func:`~xprospect.models.cyclegan.build_style_generator` and
    :func:`~xprospect.models.cyclegan.build_style_discriminator` arguments.

    ``generator: {upsampling: resize_conv}`` (or ``subpixel``) replaces CycleGAN's transposed
    convolutions, the default, by checkerboard-free upsampling (issue 17; see
    :class:`xprospect.models.blocks.Upsample`)."""

    generator: dict[str, Any] = field(default_factory=dict)
    discriminator: dict[str, Any] = field(default_factory=dict)


@dataclass
class StyleLossConfig:
    """CycleGAN's objective: adversarial + ``cycle`` * (L1 cycle A + L1 cycle B) +
    ``identity * cycle`` * (L1 identity A + L1 identity B).

    ``cycle`` defaults to XprospeCT's 20 ("originally set to 10 ... if the value was too high
    (greater than 25), the style transfer ended up becoming very weak": XprospeCT, the CycleGAN
    section). With film augmentation (domain A drawn wider) a heavier cycle term is a deliberate
    deviation, against that remark: ``benchmarks/bench_style.py`` measured the DRR->real->DRR
    cycle error at 0.0297 / 0.0276 / 0.0257 for 20 / 30 / 40 at its 1500 s budget while the
    two-sample classifier's AUC stayed at 0.69 / 0.63 / 0.66 (the translation did not get weaker
    by that measure), so its runs use ``--cycle-weight 40``."""

    adversarial: Literal["lsgan", "bce"] = "lsgan"
    cycle: float = 20.0
    identity: float = 0.5


def _default_optimizer() -> OptimizerConfig:
    return OptimizerConfig(
        name="adam",
        learning_rate=2e-4,
        beta_1=0.5,
        beta_2=0.999,
        schedule=ScheduleConfig(name="linear", start_fraction=0.5),
    )


@dataclass
class StyleConfig:
    """One CycleGAN between DRRs (domain A) and real radiographs (domain B) of one view."""

    name: str = ""
    data: StyleDataConfig = field(default_factory=StyleDataConfig)
    model: StyleModelConfig = field(default_factory=StyleModelConfig)
    loss: StyleLossConfig = field(default_factory=StyleLossConfig)
    history_size: int = 50
    optimizer: OptimizerConfig = field(default_factory=_default_optimizer)
    training: TrainingConfig = field(
        default_factory=lambda: TrainingConfig(output_dir="runs/style")
    )


def validate_style_config(config: StyleConfig, source: str | None = None) -> None:
    """Ranges and consistency; a :class:`ConfigError` naming the key."""
    d, o, t = config.data, config.optimizer, config.training
    check(bool(d.dir), "data.dir", "is required (a folder made by 'xprospect prepare')", source)
    check(
        d.size >= 16 and d.size % 4 == 0,
        "data.size",
        f"must be a multiple of 4 and >= 16, got {d.size}",
        source,
    )
    check(
        len(d.percentiles) == 2 and 0 <= d.percentiles[0] < d.percentiles[1] <= 100,
        "data.percentiles",
        f"must be [low, high] with 0 <= low < high <= 100, got {d.percentiles}",
        source,
    )
    check(0 < d.val_fraction < 1, "data.val_fraction", "must be in (0, 1)", source)
    check(d.batch_size >= 1, "data.batch_size", f"must be >= 1, got {d.batch_size}", source)
    check(d.shuffle_buffer >= 1, "data.shuffle_buffer", "must be >= 1", source)
    check(d.val_images >= 1, "data.val_images", "must be >= 1", source)
    check(d.max_images is None or d.max_images >= 1, "data.max_images", "must be >= 1", source)
    if d.film_augmentation is not None:
        validate_film_config(d.film_augmentation, "data.film_augmentation", source)
    check(config.loss.cycle >= 0, "loss.cycle", "must be >= 0", source)
    check(config.loss.identity >= 0, "loss.identity", "must be >= 0", source)
    check(config.history_size >= 0, "history_size", "must be >= 0", source)
    check(o.name in ("adam", "nadam"), "optimizer.name", "must be adam or nadam", source)
    check((o.learning_rate or 0) > 0, "optimizer.learning_rate", "must be > 0", source)
    check(0 < o.ema_momentum < 1, "optimizer.ema_momentum", "must be in (0, 1)", source)
    check(
        o.ema_reset == "never" or o.use_ema,
        "optimizer.ema_reset",
        "epoch needs optimizer.use_ema: true",
        source,
    )
    check(
        (t.steps is None) != (t.epochs is None),
        "training",
        "set exactly one of steps and epochs",
        source,
    )
    for key in ("steps", "epochs", "validation_every", "checkpoint_every", "log_every"):
        value = getattr(t, key)
        check(value is None or value >= 1, f"training.{key}", "must be >= 1", source)
    check(
        t.grad_accum_steps in (None, 1),
        "training.grad_accum_steps",
        "the CycleGAN trainer does not accumulate gradients",
        source,
    )


def style_config_from_dict(
    data: Mapping[str, Any] | None, source: str | os.PathLike[str] | None = None
) -> StyleConfig:
    """Builds and validates a :class:`StyleConfig` from plain data."""
    src = None if source is None else str(source)
    config = engine.build(StyleConfig, data, "", src)
    if config.optimizer.schedule is None:
        config.optimizer.schedule = ScheduleConfig()
    if config.optimizer.name is None:
        config.optimizer.name = "adam"
    if config.optimizer.learning_rate is None:
        config.optimizer.learning_rate = 2e-4
    validate_style_config(config, src)
    return config


def shipped_style_configs() -> dict[str, Path]:
    """Name → path of the style files shipped in ``xprospect/configs/style/``."""
    return engine.shipped(STYLE_CONFIG_DIR)


def resolve_style_config(path: str | os.PathLike[str]) -> Path:
    """An existing file as given, else a shipped style config by name."""
    return engine.resolve_path(path, STYLE_CONFIG_DIR, "style config")


def load_style_config(
    path: str | os.PathLike[str],
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
) -> StyleConfig:
    """Reads a style YAML file (or a shipped one by name) with optional dotted overrides."""
    return engine.load_file(resolve_style_config(path), style_config_from_dict, overrides)


def style_config_to_dict(config: StyleConfig) -> dict[str, Any]:
    """Plain nested dicts and lists (YAML/JSON-ready) of a style config."""
    return engine.to_dict(config)
