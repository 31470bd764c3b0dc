"""Training: the Trainer, its loop and step logic, optimizers, checkpoints and logs.

Modules, from the top down (a module imports only the ones below it):

- :mod:`xprospect.training.trainer`: :class:`Trainer`, :func:`train`, :func:`compile_model`,
  :func:`resolve_config`.
- :mod:`xprospect.training.loop`: one ``fit`` call (data, steps, validation, resume, logs).
- :mod:`xprospect.training.steps`: what one optimizer step does (generator alone or a 3D GAN).
- :mod:`xprospect.training.results`: :class:`TrainResult`.
- :mod:`xprospect.training.optimizers`: :func:`build_optimizer` and its learning-rate schedule.
- :mod:`xprospect.training.schedules`: learning-rate schedules beyond Keras'.
- :mod:`xprospect.training.distribute`: strategy choice, chief/worker roles, per-replica input.
- :mod:`xprospect.training.checkpoints`: resumable checkpoints, ``state.json``, the best model.
- :mod:`xprospect.training.logs`: ``metrics.csv``, TensorBoard scalars and slice images, figures.
"""

from __future__ import annotations

from xprospect.training.trainer import (
    EXIT_DIVERGED,
    Trainer,
    TrainResult,
    build_optimizer,
    compile_model,
    resolve_config,
    train,
)

__all__ = [
    "EXIT_DIVERGED",
    "TrainResult",
    "Trainer",
    "build_optimizer",
    "compile_model",
    "resolve_config",
    "train",
]
