"""The optimizers of a run: Adam (Keras' Adam with a fused update,
:class:`~xprospect.training.fused_adam.FusedAdam`) or Keras Nadam, with the config's learning-rate
schedule.

:func:`build_optimizer` makes the optimizer of an experiment (the generator's, or with
``learning_rate`` the discriminator's); :func:`learning_rate_schedule` the rate or schedule it
uses (``optimizer.schedule``: constant, cosine with optional warm-up, delayed linear decay,
multistep or exponential decay). Keras is imported on first use, so that importing
:mod:`xprospect.training` stays light.
"""

from __future__ import annotations

from typing import Any

from xprospect.config import ExperimentConfig, ScheduleConfig
from xprospect.errors import ConfigError

__all__ = ["build_optimizer", "learning_rate_schedule"]


def learning_rate_schedule(
    config: ExperimentConfig, total_steps: int, learning_rate: float | None = None
) -> Any:
    """The learning rate (a float) or Keras schedule of ``config.optimizer.schedule``.

    Args:
        config: Needs ``optimizer.learning_rate`` (default 1e-4) and ``optimizer.schedule``
            (default: constant).
        total_steps: Run length: cosine, linear and multistep schedules are fractions of it.
        learning_rate: Instead of ``optimizer.learning_rate`` (the discriminator's rate).

    Returns:
        A float for the constant schedule, else a
        ``keras.optimizers.schedules.LearningRateSchedule``.
    """
    import keras

    lr = float(
        learning_rate if learning_rate is not None else config.optimizer.learning_rate or 1e-4
    )
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
    gradient before the cross-replica sum; the step logic (:mod:`xprospect.training.steps`) clips
    the summed gradient instead. ``mixed_float16`` wraps the optimizer in
    ``keras.optimizers.LossScaleOptimizer``.

    Args:
        config: Needs ``optimizer.name`` and ``optimizer.learning_rate`` (see
            :func:`xprospect.training.resolve_config`).
        total_steps: Run length, for the schedules.
        learning_rate: Instead of ``optimizer.learning_rate`` (the discriminator's rate).
        steps_per_epoch: Needed with ``optimizer.ema_reset: epoch``: the live weights are set to
            their moving average after every ``steps_per_epoch`` updates (Keras'
            ``ema_overwrite_frequency``).

    Raises:
        ConfigError: An optimizer other than adam or nadam, or ``ema_reset: epoch`` without
            ``steps_per_epoch``.
    """
    import keras

    from xprospect.training.fused_adam import FusedAdam

    o = config.optimizer
    classes = {"adam": FusedAdam, "nadam": keras.optimizers.Nadam}
    if o.name not in classes:
        raise ConfigError(f"optimizer.name: expected adam or nadam, got {o.name!r}")
    betas = {k: v for k, v in (("beta_1", o.beta_1), ("beta_2", o.beta_2)) if v is not None}
    overwrite = None
    if o.use_ema and o.ema_reset == "epoch":
        if not steps_per_epoch:
            raise ConfigError("optimizer.ema_reset: epoch needs the run's steps per epoch")
        overwrite = int(steps_per_epoch)
    optimizer = classes[o.name](
        learning_rate=learning_rate_schedule(config, total_steps, learning_rate),
        use_ema=o.use_ema,
        ema_momentum=o.ema_momentum,
        ema_overwrite_frequency=overwrite,
        **betas,
    )
    if config.training.mixed_precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
