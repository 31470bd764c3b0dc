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
"""

from __future__ import annotations

import copy
import logging
import os
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from xprospect.config import (
    ExperimentConfig,
    ScheduleConfig,
    apply_overrides,
    load_config,
    validate_config,
)
from xprospect.config.engine import build
from xprospect.errors import ConfigError

__all__ = [
    "EXIT_DIVERGED",
    "TrainResult",
    "Trainer",
    "build_optimizer",
    "compile_model",
    "resolve_config",
    "train",
]

log = logging.getLogger(__name__)

EXIT_DIVERGED = 3
"""Exit code of ``xprospect train`` when the loss became NaN or Inf."""

ModelFn = Callable[[ExperimentConfig], Any]
LossFn = Callable[[ExperimentConfig], Any]
StepHook = Callable[[int, Mapping[str, float]], None]


@dataclass
class TrainResult:
    """What a run did.

    Attributes:
        status: ``completed`` or ``diverged`` (NaN/Inf loss; the last good checkpoint is kept).
        steps: The step reached.
        start_step: The step the run resumed from (0 for a fresh run).
        output_dir: The run folder.
        model_path: ``model.keras`` (None when diverged, or on non-chief workers).
        best: ``best.json`` content (step and validation metrics), if any.
        metrics: The last validation metrics (``val_loss``, ``val_psnr_3d``, ``val_mae``).
        seconds: Wall time of this invocation.
        message: A one-line summary.
    """

    status: Literal["completed", "diverged"]
    steps: int
    start_step: int
    output_dir: Path
    model_path: Path | None = None
    best: dict[str, Any] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "completed"


# === Config resolution ===


def _manifest(config: ExperimentConfig) -> dict[str, Any]:
    from xprospect.data import read_manifest

    return read_manifest(config.data.dir)


def _split_cases(manifest: Mapping[str, Any], split: str) -> int:
    shards = manifest.get("shards", {})
    return sum(int(s.get("cases", 0)) for name, s in shards.items() if name.startswith(f"{split}-"))


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
        if cfg.training.grad_accum_steps is None and training.get("grad_accum_steps"):
            cfg.training.grad_accum_steps = int(training["grad_accum_steps"])
    if cfg.optimizer.schedule is None:
        cfg.optimizer.schedule = ScheduleConfig()
    if cfg.training.grad_accum_steps is None:
        cfg.training.grad_accum_steps = 1
    validate_config(cfg, "resolved config")
    return cfg


def _window(config: ExperimentConfig) -> str | tuple[float, ...]:
    w = config.data.hu_window
    return w if isinstance(w, str) else tuple(w)


def _total_steps(config: ExperimentConfig, steps_per_epoch: int) -> int:
    t = config.training
    if t.steps is not None:
        return t.steps
    return int(t.epochs or 1) * steps_per_epoch


# === Optimizer and model.fit support ===


def _learning_rate(config: ExperimentConfig, total_steps: int, lr: float | None = None) -> Any:
    import keras

    lr = float(lr if lr is not None else config.optimizer.learning_rate or 1e-4)
    s = config.optimizer.schedule or ScheduleConfig()
    if s.name == "constant":
        return lr
    if s.name == "cosine":
        decay = max(1, total_steps - s.warmup_steps)
        if s.warmup_steps > 0:
            return keras.optimizers.schedules.CosineDecay(
                0.0, decay, alpha=s.min_fraction, warmup_target=lr, warmup_steps=s.warmup_steps
            )
        return keras.optimizers.schedules.CosineDecay(lr, decay, alpha=s.min_fraction)
    if s.name == "linear":
        from xprospect.training.schedules import DelayedLinearDecay

        return DelayedLinearDecay(lr, total_steps, round(s.start_fraction * total_steps))
    if s.name == "multistep":
        bounds = sorted({max(1, round(m * total_steps)) for m in s.milestones})
        values = [lr * s.decay_factor**i for i in range(len(bounds) + 1)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(bounds, values)
    return keras.optimizers.schedules.ExponentialDecay(
        lr, decay_steps=s.decay_every, decay_rate=s.decay_factor, staircase=True
    )


def build_optimizer(
    config: ExperimentConfig,
    total_steps: int = 1,
    *,
    learning_rate: float | None = None,
    steps_per_epoch: int | None = None,
) -> Any:
    """The Keras optimizer of a (resolved) config.

    Gradient clipping is not set on the optimizer: Keras would clip each replica's partial
    gradient before the cross-replica sum; :class:`Trainer` clips the summed gradient instead.
    ``mixed_float16`` wraps the optimizer in ``keras.optimizers.LossScaleOptimizer``.

    Args:
        config: Needs ``optimizer.name`` and ``optimizer.learning_rate`` (see
            :func:`resolve_config`).
        total_steps: Run length, for the schedules.
        learning_rate: Instead of ``optimizer.learning_rate`` (the discriminator's rate).
        steps_per_epoch: Needed with ``optimizer.ema_reset: epoch``: the live weights are set to
            their moving average after every ``steps_per_epoch`` updates (Keras'
            ``ema_overwrite_frequency``).
    """
    import keras

    o = config.optimizer
    classes = {"adam": keras.optimizers.Adam, "nadam": keras.optimizers.Nadam}
    if o.name not in classes:
        raise ConfigError(f"optimizer.name: expected adam or nadam, got {o.name!r}")
    betas = {k: v for k, v in (("beta_1", o.beta_1), ("beta_2", o.beta_2)) if v is not None}
    overwrite = None
    if o.use_ema and o.ema_reset == "epoch":
        if not steps_per_epoch:
            raise ConfigError("optimizer.ema_reset: epoch needs the run's steps per epoch")
        overwrite = int(steps_per_epoch)
    optimizer = classes[o.name](
        learning_rate=_learning_rate(config, total_steps, learning_rate),
        use_ema=o.use_ema,
        ema_momentum=o.ema_momentum,
        ema_overwrite_frequency=overwrite,
        **betas,
    )
    if config.training.mixed_precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def _default_loss(config: ExperimentConfig) -> Any:
    """The voxel terms (``mae``, ``mse``, ``projection``) of the config's loss; None if it has
    none (the generator trainer adds masked, perceptual and adversarial terms itself)."""
    from xprospect.losses import GENERATOR_TERMS, LOSS_TERMS, build_loss

    weights = dict(config.loss or {"mae": 1.0})
    unknown = sorted(k for k in weights if k not in GENERATOR_TERMS)
    if unknown:
        raise ConfigError(
            f"loss: unknown term(s) {', '.join(unknown)}; valid terms: {', '.join(GENERATOR_TERMS)}"
        )
    plain = {k: v for k, v in weights.items() if k in LOSS_TERMS and v > 0}
    return build_loss(plain) if plain else None


def _mae_loss() -> Any:
    from xprospect.losses import build_loss

    return build_loss({"mae": 1.0})


def _default_discriminator(config: ExperimentConfig) -> Any:
    """The preset's discriminator (None for a generator-only preset or an injected model)."""
    from xprospect.models import PRESETS, build_discriminator

    m = config.model
    if m.preset not in PRESETS:
        return None
    return build_discriminator(
        m.preset, size=int(m.size or 64), views=tuple(config.data.views), **config.gan.discriminator
    )


def _default_model(config: ExperimentConfig) -> Any:
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
        loss=_default_loss(config) if loss is None else loss,
        metrics=list(metrics),
    )
    return model


# === Per-example losses and metrics ===


def _per_example_loss(loss: Any) -> Callable[[Any, Any], Any]:
    """Wraps a loss so that it returns one value per example, shape (B,).

    For a ``keras.losses.Loss`` this calls its ``call`` method, which returns the values before
    Keras' batch reduction: the caller's object keeps its ``reduction``, and no copy is made
    (copying a Keras loss goes through serialization, which custom losses may not support).
    Element-wise values (B, D, H, W) are averaged over all but the batch axis.
    """
    import keras
    import tensorflow as tf

    if isinstance(loss, keras.losses.Loss):
        dtype = loss.dtype or "float32"

        def values_of(y_true: Any, y_pred: Any) -> Any:
            return loss.call(tf.cast(y_true, dtype), tf.cast(y_pred, dtype))
    else:
        values_of = loss  # a plain function such as keras.losses.mean_absolute_error

    def per_example(y_true: Any, y_pred: Any) -> Any:
        values = tf.cast(values_of(y_true, tf.cast(y_pred, tf.float32)), tf.float32)
        if values.shape.rank == 0:
            raise ConfigError("the loss must return one value per example (or per voxel)")
        return tf.reduce_mean(tf.reshape(values, [tf.shape(values)[0], -1]), axis=1)

    return per_example


def _psnr_fn() -> Callable[[np.ndarray, np.ndarray], float]:
    from xprospect.metrics import psnr_3d

    return lambda truth, pred: float(psnr_3d(truth, pred))


# === Trainer ===


class Trainer:
    """Runs one experiment (see the module docstring).

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
    """

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
        self.model_fn: ModelFn = model_fn or _default_model
        self.loss_fn: LossFn = loss_fn or _default_loss
        self.discriminator_fn: ModelFn = discriminator_fn or _default_discriminator
        self.discriminator: Any = None
        self.d_optimizer: Any = None
        self.step_hook = step_hook
        self.progress = progress
        self.model: Any = None
        self.optimizer: Any = None
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

        from xprospect.training.distribute import make_strategy
        from xprospect.utils import seed_everything

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
            return self._run_class()(self, cfg).execute()
        finally:
            keras.config.set_dtype_policy(previous)

    def _validate(self, config: Any) -> None:
        validate_config(config)

    def _resolve(self) -> Any:
        """The config with what the dataset and preset fill in."""
        return resolve_config(self.config, presets=not self._custom_model)

    def _run_class(self) -> type:
        from xprospect.training.loop import TrainingRun

        return TrainingRun


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
