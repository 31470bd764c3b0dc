"""Learning-rate schedules the Keras core lacks (``keras.ops`` only, serialisable)."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

__all__ = ["DelayedLinearDecay"]


@keras.saving.register_keras_serializable(package="xprospect")
class DelayedLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Constant until ``start_step``, then linear to 0 at ``total_steps`` (X2CT-GAN, pix2pix).

    ``lr(step) = initial_learning_rate * min(1, (total_steps - step) / (total_steps -
    start_step))``, clipped at 0.

    Args:
        initial_learning_rate: The rate before the decay.
        total_steps: The step where the rate reaches 0.
        start_step: The step where the decay starts (``< total_steps``).
    """

    def __init__(self, initial_learning_rate: float, total_steps: int, start_step: int) -> None:
        if not 0 <= start_step < total_steps:
            raise ValueError(f"need 0 <= start_step < total_steps, got {start_step}, {total_steps}")
        self.initial_learning_rate = float(initial_learning_rate)
        self.total_steps = int(total_steps)
        self.start_step = int(start_step)

    def __call__(self, step: Any) -> Any:
        step = ops.cast(step, "float32")
        span = float(self.total_steps - self.start_step)
        frac = ops.clip((self.total_steps - step) / span, 0.0, 1.0)
        return self.initial_learning_rate * frac

    def get_config(self) -> dict[str, Any]:
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "total_steps": self.total_steps,
            "start_step": self.start_step,
        }
