"""The KerasTuner hypermodel: a :class:`~xprospect.tuning.space.SearchSpace` whose ``build``
makes the model of ``hp``'s experiment and whose ``fit`` trains it through
:class:`xprospect.training.Trainer`.

KerasTuner imports Keras, so the class is made on first use (:func:`hypermodel_class`;
``xprospect.tuning.ExperimentHyperModel`` is that class).
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xprospect.config import ExperimentConfig, validate_config
from xprospect.errors import ConfigError
from xprospect.training.trainer import default_model
from xprospect.tuning.config import TuneConfig
from xprospect.tuning.space import SearchSpace

__all__ = ["OBJECTIVE", "copy_weights", "hypermodel_class", "make_hypermodel"]

OBJECTIVE = "val_psnr_3d"
"""What every trial reports and the tuners maximise: the run's best validation PSNR-3D, dB."""


@functools.cache
def hypermodel_class() -> type:
    """``ExperimentHyperModel``: a ``keras_tuner.HyperModel`` over a :class:`SearchSpace` whose
    ``fit`` trains through :class:`xprospect.training.Trainer`.

    ``ExperimentHyperModel(space, *, steps_per_trial, steps_per_epoch=None, progress=False)``;
    ``build(hp)`` returns the model of ``hp``'s experiment; ``fit(hp, model=None, *,
    output_dir=None, steps=None, warm_start=None, execution=0, callbacks=None)`` trains it into
    ``output_dir`` (default: the folder of KerasTuner's checkpoint callback, for the stock
    ``Tuner.run_trial``) and returns the best validation metrics (``val_psnr_3d``, ...).
    """
    import keras_tuner as kt

    class ExperimentHyperModel(kt.HyperModel):
        def __init__(
            self,
            space: SearchSpace,
            *,
            steps_per_trial: int,
            steps_per_epoch: int | None = None,
            progress: bool = False,
        ) -> None:
            super().__init__(name=space.family, tunable=True)
            self.space = space
            self.steps_per_trial = int(steps_per_trial)
            self.steps_per_epoch = int(steps_per_epoch or steps_per_trial)
            self.progress = progress

        def declare_hyperparameters(self, hp: Any) -> None:
            self.space.declare(hp)

        def trial_config(
            self, hp: Any, output_dir: str | os.PathLike[str], steps: int, execution: int = 0
        ) -> ExperimentConfig:
            """``hp``'s experiment trained ``steps`` steps into ``output_dir``."""
            cfg = self.space.experiment(hp)
            cfg.training.steps = int(steps)
            cfg.training.epochs = None
            cfg.training.output_dir = str(output_dir)
            cfg.training.seed = self.space.base.training.seed + execution
            validate_config(cfg, "trial")
            return cfg

        def steps_for(self, epochs: int | None, initial_epoch: int = 0) -> int:
            """Training steps of a trial (Hyperband gives its budget in epochs)."""
            if epochs is None:
                return self.steps_per_trial
            return max(1, (int(epochs) - int(initial_epoch)) * self.steps_per_epoch)

        def build(self, hp: Any) -> Any:
            from xprospect.training import resolve_config

            cfg = resolve_config(self.trial_config(hp, "unused", self.steps_per_trial))
            return default_model(cfg)

        def fit(
            self,
            hp: Any,
            model: Any = None,
            *args: Any,
            output_dir: str | os.PathLike[str] | None = None,
            steps: int | None = None,
            warm_start: str | os.PathLike[str] | None = None,
            execution: int = 0,
            callbacks: Sequence[Any] | None = None,
            epochs: int | None = None,
            initial_epoch: int = 0,
            **kwargs: Any,
        ) -> dict[str, float]:
            from xprospect.training import Trainer, resolve_config

            # The stock Tuner.run_trial passes a checkpoint callback whose folder is the trial's.
            checkpoint = next(
                (Path(c.filepath) for c in callbacks or () if hasattr(c, "filepath")), None
            )
            if output_dir is None:
                if checkpoint is None:
                    raise ConfigError("fit needs output_dir (or KerasTuner's trial callbacks)")
                output_dir = checkpoint.parent / "run"
            n_steps = steps or self.steps_for(epochs, initial_epoch)
            try:
                cfg = resolve_config(self.trial_config(hp, output_dir, n_steps, execution))
            except ConfigError as exc:
                raise kt.errors.FailedTrialError(str(exc)) from exc
            model_fn = None
            if model is not None or warm_start is not None:

                def model_fn(config: ExperimentConfig) -> Any:
                    built = model if model is not None else default_model(config)
                    if warm_start is not None:
                        built.load_weights(str(warm_start))
                    return built

            # The config is resolved, so the trainer finds nothing left for the preset to fill.
            try:
                result = Trainer(cfg, model_fn=model_fn, progress=self.progress).fit()
            except ConfigError as exc:
                raise kt.errors.FailedTrialError(str(exc)) from exc
            if not result.ok:
                raise kt.errors.FailedTrialError(result.message)
            if not result.best or OBJECTIVE not in result.best:
                raise kt.errors.FatalValueError(
                    f"{cfg.data.dir}: no validation ran (no 'val' split?); tuning needs one"
                )
            metrics = {
                k: float(v)
                for k, v in result.best.items()
                if k.startswith("val_") and isinstance(v, int | float)
            }
            if checkpoint is not None:
                copy_weights(result.output_dir / "best.weights.h5", checkpoint)
            return metrics

    return ExperimentHyperModel


def copy_weights(src: Path, dest: Path) -> None:
    """Copies a run's weights file to a KerasTuner checkpoint path, atomically (a reader never
    sees half a file)."""
    from xprospect.training.checkpoints import atomic_keras_file

    with atomic_keras_file(dest) as tmp:
        shutil.copyfile(src, tmp)


def make_hypermodel(config: TuneConfig, *, progress: bool = False) -> Any:
    """The ``ExperimentHyperModel`` of a tune config."""
    space = SearchSpace.for_experiment(config.experiment, config.tuner.family, config.tuner.space)
    return hypermodel_class()(
        space,
        steps_per_trial=config.tuner.steps_per_trial,
        steps_per_epoch=config.steps_per_epoch,
        progress=progress,
    )
