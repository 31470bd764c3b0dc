"""The tune file: the base experiment and the ``tuner:`` section, read with the config engine.

See :mod:`xprospect.tuning` (and ``docs/tuning.md``) for the layout and each key; the types,
unknown keys and ``--set`` overrides are :mod:`xprospect.config.engine`'s.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from xprospect.config import CONFIG_DIR, ExperimentConfig, engine, load_config, validate_config
from xprospect.config.engine import check
from xprospect.errors import ConfigError
from xprospect.tuning.space import SearchSpace, SpaceOverride, canonical_preset

__all__ = [
    "TUNER_KINDS",
    "TUNE_CONFIG_DIR",
    "TuneConfig",
    "TunerConfig",
    "load_tune_config",
    "shipped_tune_configs",
    "tune_config_from_dict",
    "validate_tune_config",
]

TUNE_CONFIG_DIR = CONFIG_DIR / "tune"
"""Tune files shipped with the package."""

TUNER_KINDS: dict[str, str] = {
    "random": "RandomSearch",
    "hyperband": "Hyperband",
    "bayesian": "BayesianOptimization",
}
"""``tuner.kind`` → KerasTuner class (the class names are accepted as kinds too)."""


@dataclass
class TunerConfig:
    """The ``tuner:`` section (see the module docstring for each key)."""

    kind: Literal["random", "hyperband", "bayesian"] = "random"
    family: Literal["auto", "xprospect", "gan"] = "auto"
    max_trials: int = 10
    steps_per_trial: int = 1000
    executions_per_trial: int = 1
    directory: str = "tuning"
    project_name: str | None = None
    seed: int = 1
    max_consecutive_failed_trials: int = 3
    max_epochs: int = 9
    factor: int = 3
    hyperband_iterations: int = 1
    steps_per_epoch: int | None = None
    num_initial_points: int | None = None
    alpha: float = 1e-4
    beta: float = 2.6
    space: dict[str, SpaceOverride] = field(default_factory=dict)
    best_config: str | None = None


@dataclass
class TuneConfig:
    """A tune file: the base experiment and the search.

    Attributes:
        experiment: What ``xprospect train`` would run; every trial changes its hyperparameters
            and shortens its training.
        tuner: The search.
    """

    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    tuner: TunerConfig = field(default_factory=TunerConfig)

    @property
    def project_name(self) -> str:
        """``tuner.project_name``, else the experiment's name, else ``search``."""
        return self.tuner.project_name or self.experiment.name or "search"

    @property
    def project_dir(self) -> Path:
        """``DIRECTORY/PROJECT``: KerasTuner's state, the trial folders, the best config."""
        return Path(self.tuner.directory) / self.project_name

    @property
    def best_config_path(self) -> Path:
        """Where the best experiment is written."""
        return Path(self.tuner.best_config or self.project_dir / "best.yaml")

    @property
    def steps_per_epoch(self) -> int:
        """Hyperband's epoch, in training steps."""
        t = self.tuner
        return t.steps_per_epoch or max(1, t.steps_per_trial // t.max_epochs)


def _normalise(data: Mapping[str, Any], src: str | None) -> dict[str, Any]:
    """Shorthands → the typed layout: a named or inline experiment, ``space`` lists/scalars."""
    out = dict(data)
    experiment = out.get("experiment")
    if experiment is None:
        raise ConfigError(
            "experiment: is required (an experiment YAML, a shipped name like 512-dense, or a "
            "mapping)",
            src,
        )
    if isinstance(experiment, str | os.PathLike):
        out["experiment"] = engine.to_dict(load_config(experiment))
    elif dataclasses.is_dataclass(experiment) and not isinstance(experiment, type):
        out["experiment"] = engine.to_dict(experiment)
    tuner = out.get("tuner")
    if isinstance(tuner, Mapping):
        tuner = dict(tuner)
        kind = tuner.get("kind")
        if isinstance(kind, str):
            aliases = {v.lower(): k for k, v in TUNER_KINDS.items()}
            tuner["kind"] = aliases.get(kind.strip().lower(), kind)
        space = tuner.get("space")
        if isinstance(space, Mapping):
            tuner["space"] = {
                k: v
                if isinstance(v, Mapping)
                else {"values": list(v) if isinstance(v, list | tuple) else [v]}
                for k, v in space.items()
            }
        out["tuner"] = tuner
    return out


def validate_tune_config(config: TuneConfig, source: str | None = None) -> None:
    """Ranges of the ``tuner`` section and the search space; a one-line ConfigError."""
    t = config.tuner
    for key in (
        "max_trials",
        "steps_per_trial",
        "executions_per_trial",
        "max_consecutive_failed_trials",
        "max_epochs",
        "hyperband_iterations",
    ):
        value = getattr(t, key)
        check(value >= 1, f"tuner.{key}", f"must be >= 1, got {value}", source)
    for key in ("steps_per_epoch", "num_initial_points"):
        value = getattr(t, key)
        check(value is None or value >= 1, f"tuner.{key}", f"must be >= 1, got {value}", source)
    check(t.factor >= 2, "tuner.factor", f"must be >= 2, got {t.factor}", source)
    # KerasTuner's oracles take a seed of 0 as "none" and draw a random one.
    check(t.seed >= 1, "tuner.seed", f"must be >= 1, got {t.seed}", source)
    check(t.alpha > 0, "tuner.alpha", f"must be > 0, got {t.alpha}", source)
    check(t.beta >= 0, "tuner.beta", f"must be >= 0, got {t.beta}", source)
    check(bool(t.directory), "tuner.directory", "is required", source)
    name = config.project_name
    check(
        "/" not in name and "\\" not in name and name not in (".", ".."),
        "tuner.project_name",
        f"must be a folder name, got {name!r}",
        source,
    )
    SearchSpace.for_experiment(config.experiment, t.family, t.space, source)


def tune_config_from_dict(
    data: Mapping[str, Any] | None, source: str | os.PathLike[str] | None = None
) -> TuneConfig:
    """Builds and validates a :class:`TuneConfig` from plain data (e.g. parsed YAML).

    Raises:
        ConfigError: Missing experiment, unknown key, wrong type or invalid value (one line
            naming the key; keys of the experiment start with ``experiment.``).
    """
    src = None if source is None else str(source)
    if data is None or not isinstance(data, Mapping):
        raise ConfigError(f"expected a mapping with experiment and tuner, got {data!r}", src)
    config = engine.build(TuneConfig, _normalise(data, src), "", src)
    try:
        validate_config(config.experiment, src)
    except ConfigError as exc:
        # The experiment's checks name keys of its own layout; here they sit under experiment.
        raise ConfigError(f"experiment.{exc.message}", src) from None
    config.experiment.model.preset = canonical_preset(config.experiment.model.preset)
    validate_tune_config(config, src)
    return config


def shipped_tune_configs() -> dict[str, Path]:
    """Name → path of the tune files shipped in ``xprospect/configs/tune/``."""
    return engine.shipped(TUNE_CONFIG_DIR)


def load_tune_config(
    path: str | os.PathLike[str],
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
) -> TuneConfig:
    """Reads a tune YAML file (or a shipped one by name) with optional dotted overrides
    (``tuner.max_trials=5``, ``experiment.data.dir=data/ds64``)."""
    file = engine.resolve_path(path, TUNE_CONFIG_DIR, "tune config")
    return engine.load_file(file, tune_config_from_dict, overrides)
