"""Training: one custom loop for one device, several GPUs and several machines.

``xprospect train --config FILE.yaml [--set section.key=value ...]`` runs :func:`train`. The run
folder (``training.output_dir``) then holds::

    config.yaml              the resolved config (preset defaults filled in)
    checkpoints/, state.json resumable state (see xprospect.training.checkpoints)
    best.weights.h5, best.json   the weights with the best validation PSNR-3D (EMA weights if on)
    model.keras              the final model (EMA weights if on), written atomically
    metrics.csv              one row per logged step: loss, learning rate, validation metrics
    tensorboard/             scalars and truth | prediction | error slice images
    curves.png, val_panel.png    training curves and a validation case, three planes

Re-running the same command resumes from the latest checkpoint: same step, model and optimizer
state (moments, EMA, loss scale) and the same input position. The input position comes from the
``tf.data`` iterator state saved in the checkpoint under the default strategy and
``MirroredStrategy`` (per-replica pipelines), or, where TensorFlow cannot save a distributed
iterator (``MultiWorkerMirroredStrategy``, ``OneDeviceStrategy``, ``data.cache``), from skipping
the batches already used in the deterministic pipeline (:mod:`xprospect.training.distribute`).

The step: each replica computes per-example losses, averages them over the *global* batch
(``tf.nn.compute_average_loss``), and a Keras 3 optimizer applies the gradients inside
``strategy.run`` (it sums them over replicas). A NaN or Inf loss stops the run without saving the
diverged state; `xprospect train` then exits with :data:`EXIT_DIVERGED`.

For notebooks, :func:`compile_model` compiles a model for plain ``model.fit`` on
:func:`xprospect.data.load_dataset` output (one machine only: Keras 3 ``fit`` does not run under
``MultiWorkerMirroredStrategy``, keras-team/keras#20585).

Layering inside :mod:`xprospect.training`: this module (the :class:`Trainer`, its defaults and
entry points) uses :mod:`~xprospect.training.loop` (:class:`TrainingRun`, one ``fit`` call), which
uses :mod:`~xprospect.training.steps` (what one step does), which uses the leaf modules
:mod:`~xprospect.training.optimizers`, :mod:`~xprospect.training.schedules`,
:mod:`~xprospect.training.checkpoints`, :mod:`~xprospect.training.logs` and
:mod:`~xprospect.training.distribute`; no module imports one above it.
"""

from __future__ import annotations

import copy
import logging
import os
import typing
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

from xprospect.config import (
    ExperimentConfig,
    ScheduleConfig,
    apply_overrides,
    load_config,
    validate_config,
)
from xprospect.config.engine import build
from xprospect.data.manifest import read_manifest
from xprospect.errors import ConfigError
from xprospect.training.loop import StepHook, TrainingRun
from xprospect.training.optimizers import build_optimizer
from xprospect.training.results import TrainResult
from xprospect.training.steps import LossFn, ModelFn
from xprospect.training.xctdiff import XctDiffRun, stage_of

__all__ = [
    "EXIT_DIVERGED",
    "TrainResult",
    "Trainer",
    "build_optimizer",
    "compile_model",
    "default_discriminator",
    "default_loss",
    "default_model",
    "keep_previous_release",
    "resolve_config",
    "train",
]

log = logging.getLogger(__name__)

EXIT_DIVERGED = 3
"""Exit code of ``xprospect train`` when the loss became NaN or Inf."""


# === Config resolution ===


def _manifest(config: ExperimentConfig) -> dict[str, Any]:
    return read_manifest(config.data.dir)


def _preset_training(preset: str) -> tuple[str, dict[str, Any]]:
    """The canonical preset name and its training defaults
    (:func:`xprospect.config.presets.preset_training_defaults`)."""
    from xprospect.config.presets import preset_training_defaults
    from xprospect.models.presets import canonical_preset

    try:
        key = canonical_preset(preset)
    except ConfigError as exc:
        raise ConfigError(f"model.preset: {exc.message}") from None
    return key, preset_training_defaults(key)


def keep_previous_release(config: ExperimentConfig) -> ExperimentConfig:
    """The config with the settings an older release built its run folder with.

    A run folder whose ``state.json`` names a release whose preset differs from today's
    (:func:`xprospect.config.presets.previous_release_settings`, e.g. a 0.1 X2CT-GAN run) resumes
    with that release's architecture and discriminator loss factor, so its checkpoint matches;
    a key the config sets itself wins. Configs of new runs are returned unchanged.
    """
    from pathlib import Path

    from xprospect.config.presets import previous_release_settings
    from xprospect.training.checkpoints import read_json

    state = read_json(Path(config.training.output_dir) / "state.json") or {}
    made_by = str(state.get("xprospect_version") or "")
    old = previous_release_settings(config.model.preset, made_by) if made_by else None
    if old is None:
        return config
    cfg = copy.deepcopy(config)
    kept = {k: v for k, v in old.model.items() if k not in cfg.model.overrides}
    cfg.model.overrides = {**kept, **cfg.model.overrides}
    kept_d = {k: v for k, v in old.discriminator.items() if k not in cfg.gan.discriminator}
    cfg.gan.discriminator = {**kept_d, **cfg.gan.discriminator}
    if old.d_loss_weight is not None and cfg.gan.d_loss_weight is None:
        cfg.gan.d_loss_weight = old.d_loss_weight
        kept_d["d_loss_weight"] = old.d_loss_weight
    if kept or kept_d:
        settings = ", ".join(f"{k}={v}" for k, v in {**kept, **kept_d}.items())
        log.warning(
            "resuming a run made by xprospect %s with that release's %s settings (%s); "
            "docs/presets.md lists what changed",
            made_by,
            cfg.model.preset,
            settings,
        )
    return cfg


def resolve_config(config: ExperimentConfig, *, presets: bool = True) -> ExperimentConfig:
    """Fills what the config leaves to the dataset and the preset.

    ``model.size``, ``model.geometry`` and ``model.spacing_mm`` come from the dataset manifest;
    ``loss``, ``optimizer.name`` and ``optimizer.learning_rate`` from the preset's ``training``
    defaults. The preset name is made canonical (``512-dense`` → ``512-Dense``).

    Args:
        config: A validated config.
        presets: Consult the preset's defaults even when loss and optimizer are set
            (False for injected models, whose preset name may be a free label).

    Raises:
        ConfigError: A size different from the dataset's, an unknown preset, or missing
            optimizer settings that no preset supplies.
    """
    cfg = copy.deepcopy(config)
    manifest = _manifest(cfg)
    mcfg = manifest["config"]
    size = int(mcfg["size"])
    if cfg.model.size is not None and cfg.model.size != size:
        raise ConfigError(
            f"model.size is {cfg.model.size} but the dataset in {cfg.data.dir} is {size}^3; "
            "prepare a dataset of that size or drop model.size"
        )
    cfg.model.size = size
    if cfg.model.geometry is None:
        cfg.model.geometry = str(mcfg.get("geometry", "x2ct"))
    if cfg.model.spacing_mm is None:
        spacing = mcfg.get("spacing_mm") or [float(mcfg.get("fov_mm", 320.0)) / size]
        cfg.model.spacing_mm = float(spacing[0])
    needs = cfg.loss is None or cfg.optimizer.name is None or cfg.optimizer.learning_rate is None
    if presets or needs:
        key, training = _preset_training(cfg.model.preset)
        cfg.model.preset = key
        if cfg.loss is None:
            loss = training.get("loss_weights", training.get("loss"))
            cfg.loss = {k: float(v) for k, v in dict(loss or {"mae": 1.0}).items()}
        if cfg.optimizer.name is None:
            name = str(training.get("optimizer", "adam")).lower()
            if name not in ("adam", "nadam"):
                raise ConfigError(f"preset {key!r}: optimizer {name!r} is not adam or nadam")
            cfg.optimizer.name = typing.cast(Literal["adam", "nadam"], name)
        if cfg.optimizer.learning_rate is None:
            cfg.optimizer.learning_rate = float(training.get("learning_rate", 1e-4))
        for beta in ("beta_1", "beta_2"):
            if getattr(cfg.optimizer, beta) is None and beta in training:
                setattr(cfg.optimizer, beta, float(training[beta]))
        if cfg.optimizer.schedule is None and training.get("schedule"):
            cfg.optimizer.schedule = build(
                ScheduleConfig, training["schedule"], f"preset {key}: schedule", None
            )
        if cfg.gan.adversarial is None and training.get("adversarial"):
            cfg.gan.adversarial = training["adversarial"]
        if cfg.gan.d_loss_weight is None and training.get("d_loss_weight") is not None:
            cfg.gan.d_loss_weight = float(training["d_loss_weight"])
        if cfg.training.grad_accum_steps is None and training.get("grad_accum_steps"):
            cfg.training.grad_accum_steps = int(training["grad_accum_steps"])
    if cfg.optimizer.schedule is None:
        cfg.optimizer.schedule = ScheduleConfig()
    if cfg.training.grad_accum_steps is None:
        cfg.training.grad_accum_steps = 1
    validate_config(cfg, "resolved config")
    return cfg


# === The Trainer's defaults and model.fit support ===


def default_loss(config: ExperimentConfig) -> Any:
    """The :class:`Trainer`'s default ``loss_fn``: the voxel terms (``mae``, ``mse``,
    ``projection``) of the config's loss as :func:`xprospect.losses.build_loss`; None if it has
    none (the step logic adds masked, perceptual and adversarial terms itself).

    Raises:
        ConfigError: A loss term that no trainer knows.
    """
    from xprospect.losses import GENERATOR_TERMS, LOSS_TERMS, build_loss

    weights = dict(config.loss or {"mae": 1.0})
    unknown = sorted(k for k in weights if k not in GENERATOR_TERMS)
    if unknown:
        raise ConfigError(
            f"loss: unknown term(s) {', '.join(unknown)}; valid terms: {', '.join(GENERATOR_TERMS)}"
        )
    plain = {k: v for k, v in weights.items() if k in LOSS_TERMS and v > 0}
    return build_loss(plain) if plain else None


def default_discriminator(config: ExperimentConfig) -> Any:
    """The :class:`Trainer`'s default ``discriminator_fn``: the preset's discriminator
    (:func:`xprospect.models.build_discriminator`; None for a generator-only preset or a preset
    name that ``xprospect.models.PRESETS`` does not know)."""
    from xprospect.models import PRESETS, build_discriminator

    m = config.model
    if m.preset not in PRESETS:
        return None
    return build_discriminator(
        m.preset, size=int(m.size or 64), views=tuple(config.data.views), **config.gan.discriminator
    )


def default_model(config: ExperimentConfig) -> Any:
    """The :class:`Trainer`'s default ``model_fn``: :func:`xprospect.models.build_model` with the
    config's preset, size, views, geometry, spacing and overrides (``xprospect train``'s model)."""
    from xprospect.models import build_model

    m = config.model
    return build_model(
        m.preset,
        size=int(m.size or 64),
        views=tuple(config.data.views),
        geometry=str(m.geometry or "x2ct"),
        spacing_mm=m.spacing_mm,
        **m.overrides,
    )


def compile_model(
    model: Any,
    config: ExperimentConfig,
    *,
    loss: Any = None,
    metrics: Sequence[Any] | None = None,
    total_steps: int = 1,
) -> Any:
    """Compiles ``model`` for ``model.fit`` on :func:`xprospect.data.load_dataset` output.

    Args:
        model: E.g. ``xprospect.models.build_model(...)``.
        config: A resolved config (optimizer, loss weights).
        loss: Loss object; default ``xprospect.losses.build_loss(config.loss)``.
        metrics: Default ``[xprospect.metrics.PSNR3D()]`` where available.
        total_steps: For the cosine schedule.

    Returns:
        The model, compiled.
    """
    if metrics is None:
        from xprospect.metrics import PSNR3D

        metrics = [PSNR3D()]
    model.compile(
        optimizer=build_optimizer(config, total_steps),
        loss=default_loss(config) if loss is None else loss,
        metrics=list(metrics),
    )
    return model


# === Trainer ===


class Trainer:
    """Runs one experiment (see the module docstring).

    A subclass trains another kind of model in the same loop by setting :attr:`run_class` to a
    :class:`~xprospect.training.loop.TrainingRun` subclass (as
    :class:`xprospect.style.training.StyleTrainer` does) and overriding :meth:`_validate` and
    :meth:`_resolve`.

    Args:
        config: The experiment (validated; preset defaults are filled in by :meth:`fit`).
        model_fn: ``model_fn(config) -> keras.Model``; default: ``xprospect.models.build_model``
            with the config's preset, size, views, geometry and overrides.
        loss_fn: ``loss_fn(config) -> keras.losses.Loss`` of the voxel terms; default:
            ``xprospect.losses.build_loss`` of the config's ``mae``/``mse``/``projection``
            weights.
        discriminator_fn: ``discriminator_fn(config) -> keras.Model | None`` for configs with an
            ``adversarial`` term; default: ``xprospect.models.build_discriminator`` of the preset.
        step_hook: ``step_hook(step, logs)`` after each step (tests, notebooks); an exception
            raised there ends the run like a crash would.
        progress: Show a Keras progress bar (chief only).

    Attributes:
        model, optimizer, discriminator, d_optimizer: Those of the last :meth:`fit` (the
            discriminator and its optimizer None without an adversarial term).
        logic: The step logic of the last :meth:`fit`
            (:class:`~xprospect.training.steps.StepLogic` or the run class's own).
        strategy: The ``tf.distribute`` strategy of the last :meth:`fit`.
        resolved: The config the last :meth:`fit` ran (preset and dataset defaults filled in).
    """

    run_class: ClassVar[type[TrainingRun]] = TrainingRun
    """The loop that :meth:`fit` runs; a subclass sets its own."""

    def __init__(
        self,
        config: ExperimentConfig,
        *,
        model_fn: ModelFn | None = None,
        loss_fn: LossFn | None = None,
        discriminator_fn: ModelFn | None = None,
        step_hook: StepHook | None = None,
        progress: bool = True,
    ) -> None:
        self._validate(config)
        self.config = config
        self._custom_model = model_fn is not None
        self.model_fn: ModelFn = model_fn or default_model
        self.loss_fn: LossFn = loss_fn or default_loss
        self.discriminator_fn: ModelFn = discriminator_fn or default_discriminator
        self.discriminator: Any = None
        self.d_optimizer: Any = None
        self.step_hook: StepHook | None = step_hook
        self.progress = progress
        self.model: Any = None
        self.optimizer: Any = None
        self.logic: Any = None
        self.strategy: Any = None
        self.resolved: ExperimentConfig | None = None

    def fit(self) -> TrainResult:
        """Trains to ``training.steps`` (or ``epochs``), resuming from the run folder.

        Returns:
            The result; ``status == "diverged"`` when the loss became NaN/Inf.

        Raises:
            ConfigError: Inconsistent settings, or a run folder from another experiment.
            MissingDataError: The dataset folder or its ``train`` split is missing.
        """
        import keras
        import tensorflow as tf

        from xprospect.training.distribute import make_strategy, return_freed_memory
        from xprospect.utils import seed_everything

        if self.config.training.return_freed_memory:
            return_freed_memory()  # before the first op allocates a tensor
        # The strategy first: multi-worker collectives must be set up before any other op runs.
        self.strategy = make_strategy(self.config.training.strategy)
        cfg = self._resolve()
        self.resolved = cfg
        seed_everything(cfg.training.seed)
        if cfg.training.deterministic:
            tf.config.experimental.enable_op_determinism()
        previous = keras.config.dtype_policy()
        precision = cfg.training.mixed_precision
        # The policy must be set before the model is built; restored so callers are unaffected.
        keras.config.set_dtype_policy("float32" if precision == "none" else precision)
        try:
            return self._run_class(cfg)(self, cfg).execute()
        finally:
            keras.config.set_dtype_policy(previous)

    def _run_class(self, cfg: Any) -> type[TrainingRun]:
        """The loop for ``cfg``: :attr:`run_class`, or an XctDiff stage's own."""
        if stage_of(cfg) is not None:
            return XctDiffRun
        return self.run_class

    def _validate(self, config: Any) -> None:
        validate_config(config)

    def _resolve(self) -> Any:
        """The config with what the dataset and preset fill in (and, resuming a run folder of
        an older release, that release's preset settings: :func:`keep_previous_release`)."""
        config = self.config if self._custom_model else keep_previous_release(self.config)
        return resolve_config(config, presets=not self._custom_model)


# === Entry points ===


def train(
    config: ExperimentConfig | str | os.PathLike[str],
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
    **trainer_kwargs: Any,
) -> TrainResult:
    """Loads (a config file or a shipped name), applies overrides and trains.

    Args:
        config: An :class:`ExperimentConfig`, a YAML path, or a shipped name like ``"demo"``.
        overrides: ``{"training.steps": 100}`` or ``["training.steps=100"]``.
        **trainer_kwargs: Passed to :class:`Trainer` (``model_fn``, ``loss_fn``, ...).
    """
    cfg = config if isinstance(config, ExperimentConfig) else load_config(config)
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    return Trainer(cfg, **trainer_kwargs).fit()
