"""KerasTuner searches over experiment configs: ``xprospect tune --config FILE.yaml``.

The search space is a table of hyperparameters (:class:`HyperParam`) kept apart from the model
code: :class:`SearchSpace` declares them in KerasTuner's ``hp`` and maps the values onto an
ordinary :class:`~xprospect.config.ExperimentConfig`, which the normal builders
(:func:`xprospect.models.build_model`) and the normal trainer (:class:`xprospect.training.Trainer`)
turn into a trained model. Every trial is an ordinary training run in its own folder
(``DIRECTORY/PROJECT/trial_ID/run``) and reports the best validation PSNR-3D of the run
(``val_psnr_3d``, maximised).

Families (``tuner.family``; ``auto`` picks one from ``model.preset``):

``xprospect``: the DualUNet presets (64-Dense, 512-Dense, 512-Dense-MAE, 512-ProjInj). Defaults
are the base experiment's values where they lie in the space, else the table's.

================= ======================= ======== ============================================
name              values                  default  goes to
================= ======================= ======== ============================================
dense_units       64, 512                 512      model.overrides.dense_units
back_projection   false, true             false    model.overrides.back_projection (ProjInj)
base_filters      8, 16, 32               16       model.overrides.base_filters
depth             2, 3, 4                 3        model.overrides.depth (2D encoder max-pools)
activation        selu, relu              selu     model.overrides.activation
loss              mae, mse                mae      loss: {LOSS: 1.0, ...}
loss_projection   0.0, 0.1                0.0      loss.projection (0: no projection term)
optimizer         adam, nadam             adam     optimizer.name
learning_rate     1e-5 .. 1e-3 (log)      1e-4     optimizer.learning_rate
================= ======================= ======== ============================================

``gan``: every other preset (X2CT-GAN, CVAA-GAN, DuoLift-GAN, S-XR2CT, and the CNN baselines):
one ``loss_TERM`` per positive weight of the experiment's ``loss`` (else the preset's), e.g.
``loss_mse``, ``loss_projection``, ``loss_masked_mae``, ``loss_perceptual``,
``loss_adversarial``: log-uniform in ``[w / 10, 10 w]``, default ``w``.

A tune file has two sections; ``experiment`` is what ``xprospect train`` takes::

    experiment: 512-dense          # a shipped name, an experiment YAML path, or a mapping
    tuner:
      kind: random                 # random | hyperband | bayesian
      family: auto                 # auto | xprospect | gan
      max_trials: 20               # random, bayesian (hyperband: set by max_epochs and factor)
      steps_per_trial: 2000        # training steps of each trial
      executions_per_trial: 1      # runs per trial (seeds training.seed + k), scores averaged
      directory: tuning            # relative to the cwd; re-running resumes the search
      project_name: null           # null: the experiment's name
      seed: 1                      # the oracle's seed, >= 1 (trials train with training.seed)
      max_consecutive_failed_trials: 3
      max_epochs: 9                # hyperband: the largest budget, in epochs
      factor: 3                    # hyperband: reduction factor between brackets
      hyperband_iterations: 1
      steps_per_epoch: null        # hyperband: steps per epoch; null: steps_per_trial // max_epochs
      num_initial_points: null     # bayesian: random trials first; null: 3 x the hyperparameters
      alpha: 1.0e-4                # bayesian: noise of the Gaussian process
      beta: 2.6                    # bayesian: exploration of the upper confidence bound
      space:                       # narrow the table: NAME: [values] (one value: fixed), or
        dense_units: [64, 512]     #   NAME: {min_value: ..., max_value: ..., sampling: log}
      best_config: null            # null: DIRECTORY/PROJECT/best.yaml

Re-running the same command resumes: KerasTuner reloads its oracle (``overwrite=False``), an
interrupted trial is retried in the same folder (the trainer resumes from its checkpoint), and a
search that reached ``max_trials`` runs no new trial. The settings of a project are recorded in
``PROJECT/xprospect_tune.yaml``; resuming with a different search is refused.

Distributed search uses KerasTuner's chief/worker mode: every process runs the same command with
``KERASTUNER_ORACLE_IP``, ``KERASTUNER_ORACLE_PORT`` and ``KERASTUNER_TUNER_ID`` set; the process
whose id contains ``chief`` only serves the oracle (gRPC), the others (``tuner0``, ``tuner1``,
...) each run trials. The project folder must be shared by all of them.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from xprospect.config import (
    CONFIG_DIR,
    ExperimentConfig,
    _build,
    _check,
    _convert,
    _unknown_key,
    apply_overrides,
    config_to_dict,
    load_config,
    read_config_mapping,
    resolve_config_path,
    shipped_configs,
    validate_config,
)
from xprospect.errors import ConfigError, MissingDataError

__all__ = [
    "OBJECTIVE",
    "TUNER_KINDS",
    "TUNE_CONFIG_DIR",
    "XPROSPECT_SPACE",
    "HyperParam",
    "SearchSpace",
    "SpaceOverride",
    "TrialRow",
    "TuneConfig",
    "TuneResult",
    "TunerConfig",
    "distributed_role",
    "family_of",
    "gan_space",
    "hypermodel_class",
    "load_tune_config",
    "make_hypermodel",
    "make_tuner",
    "search_space",
    "shipped_tune_configs",
    "tune",
    "tune_config_from_dict",
    "tuner_class",
]

log = logging.getLogger(__name__)

TUNE_CONFIG_DIR = CONFIG_DIR / "tune"
"""Tune files shipped with the package."""

OBJECTIVE = "val_psnr_3d"
"""What every trial reports and the tuners maximise: the run's best validation PSNR-3D, dB."""

TUNER_KINDS: dict[str, str] = {
    "random": "RandomSearch",
    "hyperband": "Hyperband",
    "bayesian": "BayesianOptimization",
}
"""``tuner.kind`` → KerasTuner class (the class names are accepted as kinds too)."""

Family = Literal["xprospect", "gan"]
Role = Literal["standalone", "chief", "worker"]


# === The search space ===


@dataclass(frozen=True)
class HyperParam:
    """One row of a search space: a KerasTuner hyperparameter.

    Attributes:
        name: The hyperparameter's name in ``hp`` (and in the results table).
        kind: ``choice`` (one of ``values``), ``boolean``, ``float`` (``min_value`` ..
            ``max_value``) or ``fixed`` (``values[0]``).
        values: The choices (``choice``) or the one value (``fixed``).
        min_value: Lower bound (``float``).
        max_value: Upper bound (``float``).
        sampling: ``linear`` or ``log`` (``float``).
        default: The value used when the base experiment's is not in the space.
        help: What it changes, for the docs.
    """

    name: str
    kind: Literal["choice", "boolean", "float", "fixed"]
    values: tuple[Any, ...] = ()
    min_value: float | None = None
    max_value: float | None = None
    sampling: Literal["linear", "log"] = "linear"
    default: Any = None
    help: str = ""

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` lies in this hyperparameter's space."""
        if value is None:
            return False
        if self.kind == "boolean":
            return isinstance(value, bool)
        if self.kind == "float":
            if isinstance(value, bool) or not isinstance(value, int | float):
                return False
            return float(self.min_value or 0.0) <= float(value) <= float(self.max_value or 0.0)
        # bool is an int: keep True from matching 1 in an integer choice.
        return any(type(v) is type(value) and v == value for v in self.values)

    def declare(self, hp: Any, preferred: Any = None) -> Any:
        """Registers the hyperparameter in ``hp`` and returns its value there.

        Args:
            hp: A ``keras_tuner.HyperParameters``.
            preferred: The default when it lies in the space (the base experiment's value).
        """
        default = preferred if self.accepts(preferred) else self.default
        if not self.accepts(default):
            default = self.min_value if self.kind == "float" else (self.values or (False,))[0]
        if self.kind == "fixed":
            return hp.Fixed(self.name, self.values[0])
        if self.kind == "boolean":
            return hp.Boolean(self.name, default=bool(default))
        if self.kind == "float":
            return hp.Float(
                self.name,
                float(self.min_value or 0.0),
                float(self.max_value or 0.0),
                sampling=self.sampling,
                default=float(default),
            )
        return hp.Choice(self.name, list(self.values), default=default)

    def describe(self) -> str:
        """The values or range, as in the module docstring's table."""
        if self.kind == "float":
            log = " (log)" if self.sampling == "log" else ""
            return f"{self.min_value:g} .. {self.max_value:g}{log}"
        if self.kind == "boolean":
            return "false, true"
        return ", ".join(_fmt_value(v) for v in self.values)


XPROSPECT_SPACE: tuple[HyperParam, ...] = (
    HyperParam(
        "dense_units",
        "choice",
        (64, 512),
        default=512,
        help="width of Connection A's dense bottleneck (64-Dense / 512-Dense)",
    ),
    HyperParam(
        "back_projection",
        "boolean",
        default=False,
        help="X-rays back-projected into every fusion scale (512-ProjInj)",
    ),
    HyperParam("base_filters", "choice", (8, 16, 32), default=16, help="filters at full size"),
    HyperParam("depth", "choice", (2, 3, 4), default=3, help="max-pools in each 2D encoder"),
    HyperParam("activation", "choice", ("selu", "relu"), default="selu", help="block activation"),
    HyperParam("loss", "choice", ("mae", "mse"), default="mae", help="voxel reconstruction term"),
    HyperParam(
        "loss_projection",
        "choice",
        (0.0, 0.1),
        default=0.0,
        help="weight of the projection term (0: none)",
    ),
    HyperParam("optimizer", "choice", ("adam", "nadam"), default="adam", help="optimizer"),
    HyperParam(
        "learning_rate",
        "float",
        min_value=1e-5,
        max_value=1e-3,
        sampling="log",
        default=1e-4,
        help="initial learning rate",
    ),
)
"""The XprospeCT family's table (DualUNet presets)."""


def _fmt_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _canonical_preset(preset: str) -> str:
    from xprospect.models.presets import PRESETS

    by_lower = {k.lower(): k for k in PRESETS}
    key = by_lower.get(preset.strip().lower())
    if key is None:
        raise ConfigError(
            f"experiment.model.preset: unknown preset {preset!r}; expected one of {list(PRESETS)}"
        )
    return key


def family_of(preset: str) -> Family:
    """``xprospect`` for the DualUNet presets, ``gan`` for the others.

    Raises:
        ConfigError: Unknown preset.
    """
    from xprospect.models.presets import PRESETS

    return "xprospect" if PRESETS[_canonical_preset(preset)]["family"] == "dualunet" else "gan"


def _preset_training(base: ExperimentConfig) -> dict[str, Any]:
    from xprospect.models.presets import PRESETS

    return dict(PRESETS[_canonical_preset(base.model.preset)].get("training", {}))


def _loss_weights(base: ExperimentConfig) -> dict[str, float]:
    """The experiment's loss weights, else its preset's."""
    weights = base.loss if base.loss is not None else _preset_training(base).get("loss_weights")
    return {str(k): float(v) for k, v in dict(weights or {"mae": 1.0}).items()}


def _round(x: float) -> float:
    # 0.1 / 10 is 0.010000000000000002; a table should read 0.01.
    return float(f"{x:.6g}")


def gan_space(base: ExperimentConfig) -> tuple[HyperParam, ...]:
    """The loss-weight table of a (GAN-family) experiment: one ``loss_TERM`` per positive weight.

    Args:
        base: The experiment; its ``loss`` if set, else its preset's weights.

    Returns:
        ``loss_TERM``: log-uniform in ``[w / 10, 10 w]``, default ``w``.
    """
    return tuple(
        HyperParam(
            f"loss_{term}",
            "float",
            min_value=_round(w / 10),
            max_value=_round(w * 10),
            sampling="log",
            default=w,
            help=f"weight of the {term} term",
        )
        for term, w in _loss_weights(base).items()
        if w > 0
    )


def _xprospect_defaults(base: ExperimentConfig) -> dict[str, Any]:
    """The base experiment's value of each XprospeCT hyperparameter (None: not set)."""
    from xprospect.models.presets import PRESETS

    preset = PRESETS[_canonical_preset(base.model.preset)]
    model = {**preset["model"], **base.model.overrides}
    training = preset.get("training", {})
    loss = _loss_weights(base)
    recon = [t for t in ("mae", "mse") if loss.get(t, 0.0) > 0]
    return {
        "dense_units": model.get("dense_units"),
        "back_projection": model.get("back_projection"),
        "base_filters": model.get("base_filters"),
        "depth": model.get("depth"),
        "activation": model.get("activation"),
        "loss": max(recon, key=lambda t: loss[t]) if recon else None,
        "loss_projection": loss.get("projection", 0.0),
        "optimizer": base.optimizer.name or training.get("optimizer"),
        "learning_rate": base.optimizer.learning_rate or training.get("learning_rate"),
    }


@dataclass
class SpaceOverride:
    """A ``tuner.space`` entry that narrows one hyperparameter of the table.

    Attributes:
        values: New choices (one value fixes the hyperparameter); for ``boolean`` rows,
            ``[true]``, ``[false]`` or both.
        min_value: New lower bound (``float`` rows).
        max_value: New upper bound (``float`` rows).
        sampling: ``linear`` or ``log`` (``float`` rows).
    """

    values: list[Any] | None = None
    min_value: float | None = None
    max_value: float | None = None
    sampling: Literal["linear", "log"] | None = None


def _value_type(param: HyperParam) -> type:
    if param.kind == "boolean":
        return bool
    if param.kind == "float":
        return float
    return type(param.values[0])


def _apply_override(
    param: HyperParam, over: SpaceOverride, where: str, source: str | None
) -> HyperParam:
    bounds = (over.min_value, over.max_value, over.sampling)
    if over.values is not None:
        _check(
            all(b is None for b in bounds),
            where,
            "give either values or min_value/max_value/sampling",
            source,
        )
        tp = _value_type(param)
        values = tuple(
            _convert(v, tp, f"{where}.values[{i}]", source) for i, v in enumerate(over.values)
        )
        _check(len(values) > 0, f"{where}.values", "needs at least one value", source)
        _check(len(set(values)) == len(values), f"{where}.values", "lists a value twice", source)
        if len(values) == 1:
            return dataclasses.replace(param, kind="fixed", values=values)
        if param.kind == "boolean":
            return param
        return dataclasses.replace(param, kind="choice", values=values)
    if all(b is None for b in bounds):
        return param
    _check(
        param.kind == "float",
        where,
        f"min_value/max_value/sampling only apply to float hyperparameters; {param.name} is a "
        f"{param.kind}: give values",
        source,
    )
    lo = float(over.min_value if over.min_value is not None else param.min_value or 0.0)
    hi = float(over.max_value if over.max_value is not None else param.max_value or 0.0)
    sampling = over.sampling or param.sampling
    _check(lo < hi, where, f"min_value {lo:g} must be below max_value {hi:g}", source)
    _check(sampling != "log" or lo > 0, where, "log sampling needs min_value > 0", source)
    return dataclasses.replace(param, min_value=lo, max_value=hi, sampling=sampling)


@dataclass(frozen=True)
class SearchSpace:
    """A family's hyperparameter table bound to a base experiment.

    Attributes:
        base: The experiment every trial starts from.
        family: ``xprospect`` or ``gan``.
        params: The table (after ``tuner.space`` overrides).
    """

    base: ExperimentConfig
    family: Family
    params: tuple[HyperParam, ...]

    @classmethod
    def for_experiment(
        cls,
        base: ExperimentConfig,
        family: Literal["auto", "xprospect", "gan"] = "auto",
        overrides: Mapping[str, SpaceOverride] | None = None,
        source: str | os.PathLike[str] | None = None,
    ) -> SearchSpace:
        """The family's table for ``base``, narrowed by ``overrides``.

        Args:
            base: A validated experiment.
            family: ``auto`` picks it from ``base.model.preset``.
            overrides: ``tuner.space`` entries by hyperparameter name.
            source: The tune file, for error messages.

        Raises:
            ConfigError: A family that does not fit the preset, an unknown hyperparameter name, or
                an override that does not fit its row (one line naming the key).
        """
        src = None if source is None else str(source)
        preset_family = family_of(base.model.preset)
        if family == "auto":
            family = preset_family
        _check(
            family == preset_family,
            "tuner.family",
            f"{family} does not fit preset {base.model.preset!r} (its family is {preset_family})",
            src,
        )
        table = XPROSPECT_SPACE if family == "xprospect" else gan_space(base)
        by_name = {p.name: p for p in table}
        for name, over in (overrides or {}).items():
            if name not in by_name:
                raise _unknown_key("tuner.space", name, list(by_name), src)
            by_name[name] = _apply_override(by_name[name], over, f"tuner.space.{name}", src)
        return cls(base, family, tuple(by_name.values()))

    def defaults(self) -> dict[str, Any]:
        """The base experiment's value of each hyperparameter (None where it has none)."""
        if self.family == "xprospect":
            return _xprospect_defaults(self.base)
        return {f"loss_{k}": v for k, v in _loss_weights(self.base).items()}

    def declare(self, hp: Any) -> dict[str, Any]:
        """Registers every hyperparameter in ``hp``; returns their values there."""
        preferred = self.defaults()
        return {p.name: p.declare(hp, preferred.get(p.name)) for p in self.params}

    def experiment(self, hp: Any) -> ExperimentConfig:
        """The base experiment with the values of ``hp`` applied (its training section is the
        base's: trials shorten it, the best config keeps it).

        Args:
            hp: A ``keras_tuner.HyperParameters`` (new hyperparameters are declared in it).

        Raises:
            ConfigError: The values make an invalid experiment.
        """
        values = self.declare(hp)
        cfg = copy.deepcopy(self.base)
        if self.family == "xprospect":
            keys = ("dense_units", "back_projection", "base_filters", "depth", "activation")
            cfg.model.overrides = {**cfg.model.overrides, **{k: values[k] for k in keys}}
            loss = {str(values["loss"]): 1.0}
            if float(values["loss_projection"]) > 0:
                loss["projection"] = float(values["loss_projection"])
            cfg.loss = loss
            cfg.optimizer.name = values["optimizer"]
            cfg.optimizer.learning_rate = float(values["learning_rate"])
        else:
            weights = _loss_weights(self.base)
            cfg.loss = {term: float(values.get(f"loss_{term}", w)) for term, w in weights.items()}
        validate_config(cfg, "search space")
        return cfg

    def table(self) -> str:
        """The space as a Markdown table (name, values, default, what it changes)."""
        preferred = self.defaults()
        rows = ["| name | values | default | what |", "|---|---|---|---|"]
        for p in self.params:
            default = preferred.get(p.name)
            if not p.accepts(default):
                default = p.values[0] if p.kind == "fixed" else p.default
            rows.append(f"| {p.name} | {p.describe()} | {_fmt_value(default)} | {p.help} |")
        return "\n".join(rows)


def search_space(
    hp: Any,
    base_config: ExperimentConfig,
    family: Literal["auto", "xprospect", "gan"] = "auto",
    space: Mapping[str, SpaceOverride] | None = None,
) -> ExperimentConfig:
    """Declares a family's hyperparameters in ``hp`` and returns the experiment they make.

    Args:
        hp: A ``keras_tuner.HyperParameters``.
        base_config: The experiment every trial starts from.
        family: ``auto`` (from the preset), ``xprospect`` or ``gan``.
        space: ``tuner.space`` overrides by hyperparameter name.

    Returns:
        ``base_config`` with the hyperparameters' values applied.
    """
    return SearchSpace.for_experiment(base_config, family, space).experiment(hp)


# === The tune file ===


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
        out["experiment"] = config_to_dict(load_config(experiment))
    elif dataclasses.is_dataclass(experiment) and not isinstance(experiment, type):
        out["experiment"] = config_to_dict(experiment)
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
        _check(value >= 1, f"tuner.{key}", f"must be >= 1, got {value}", source)
    for key in ("steps_per_epoch", "num_initial_points"):
        value = getattr(t, key)
        _check(value is None or value >= 1, f"tuner.{key}", f"must be >= 1, got {value}", source)
    _check(t.factor >= 2, "tuner.factor", f"must be >= 2, got {t.factor}", source)
    # KerasTuner's oracles take a seed of 0 as "none" and draw a random one.
    _check(t.seed >= 1, "tuner.seed", f"must be >= 1, got {t.seed}", source)
    _check(t.alpha > 0, "tuner.alpha", f"must be > 0, got {t.alpha}", source)
    _check(t.beta >= 0, "tuner.beta", f"must be >= 0, got {t.beta}", source)
    _check(bool(t.directory), "tuner.directory", "is required", source)
    name = config.project_name
    _check(
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
    config: TuneConfig = _build(TuneConfig, _normalise(data, src), "", src)
    try:
        validate_config(config.experiment, src)
    except ConfigError as exc:
        # The experiment's checks name keys of its own layout; here they sit under experiment.
        raise ConfigError(f"experiment.{exc.message}", src) from None
    config.experiment.model.preset = _canonical_preset(config.experiment.model.preset)
    validate_tune_config(config, src)
    return config


def shipped_tune_configs() -> dict[str, Path]:
    """Name → path of the tune files shipped in ``xprospect/configs/tune/``."""
    return shipped_configs(TUNE_CONFIG_DIR)


def load_tune_config(
    path: str | os.PathLike[str],
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
) -> TuneConfig:
    """Reads a tune YAML file (or a shipped one by name) with optional dotted overrides
    (``tuner.max_trials=5``, ``experiment.data.dir=data/ds64``)."""
    data, file = read_config_mapping(resolve_config_path(path, TUNE_CONFIG_DIR, "tune config"))
    config = tune_config_from_dict(data, file)
    if overrides:
        config = apply_overrides(config, overrides, from_dict=tune_config_from_dict)
    return config


# === KerasTuner classes (KerasTuner imports Keras: built on first use) ===


def distributed_role() -> Role:
    """``chief`` or ``worker`` under KerasTuner's distributed mode (``KERASTUNER_*``), else
    ``standalone``.

    Raises:
        ConfigError: ``KERASTUNER_ORACLE_IP`` set without the port or the tuner id.
    """
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return "standalone"
    missing = [k for k in ("KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID") if k not in os.environ]
    if missing:
        raise ConfigError(f"KERASTUNER_ORACLE_IP is set but {' and '.join(missing)} is not")
    return "chief" if "chief" in os.environ["KERASTUNER_TUNER_ID"] else "worker"


def _model_from_config(config: ExperimentConfig) -> Any:
    """The generator of a resolved experiment, as ``xprospect train`` builds it."""
    from xprospect.training.trainer import default_model

    return default_model(config)


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
            return _model_from_config(cfg)

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
                    built = model if model is not None else _model_from_config(config)
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
                _copy_weights(result.output_dir / "best.weights.h5", checkpoint)
            return metrics

    return ExperimentHyperModel


def _copy_weights(src: Path, dest: Path) -> None:
    from xprospect.training.checkpoints import atomic_keras_file

    with atomic_keras_file(dest) as tmp:
        shutil.copyfile(src, tmp)


@functools.cache
def _trainer_tuner() -> type:
    import gc

    import keras
    import keras_tuner as kt

    class TrainerTuner(kt.Tuner):
        """Runs each trial with the hypermodel's ``fit`` (the xprospect trainer) in the trial's
        folder, copies the best run's weights to KerasTuner's checkpoint (``get_best_models``,
        Hyperband's warm starts) and records the trials this process ran."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.ran: list[TrialRow] = []
            super().__init__(*args, **kwargs)

        def run_trial(self, trial: Any, *args: Any, **kwargs: Any) -> list[dict[str, float]]:
            hp = trial.hyperparameters
            hm = self.hypermodel
            steps = hm.steps_for(kwargs.get("epochs"), kwargs.get("initial_epoch") or 0)
            warm = None
            if "tuner/trial_id" in hp.values:  # Hyperband: continue a trial of a lower rung
                path = Path(self._get_checkpoint_fname(hp.values["tuner/trial_id"]))
                warm = path if path.exists() else None
                if warm is None:
                    log.warning("%s is missing: trial %s starts from scratch", path, trial.trial_id)
            trial_dir = Path(self.get_trial_dir(trial.trial_id))
            n = int(self.executions_per_trial)
            results: list[dict[str, float]] = []
            for k in range(n):
                # As KerasTuner does before each build: free the previous models' graphs.
                keras.backend.clear_session()
                gc.collect()
                out = trial_dir / ("run" if n == 1 else f"run{k}")
                results.append(
                    hm.fit(hp, None, output_dir=out, steps=steps, warm_start=warm, execution=k)
                )
            best = max(range(n), key=lambda k: results[k][OBJECTIVE])
            out = trial_dir / ("run" if n == 1 else f"run{best}")
            _copy_weights(out / "best.weights.h5", Path(self._get_checkpoint_fname(trial.trial_id)))
            score = sum(r[OBJECTIVE] for r in results) / n
            self.ran.append(TrialRow(trial.trial_id, "COMPLETED", _public_values(hp.values), score))
            return results

        def load_model(self, trial: Any) -> Any:
            keras.backend.clear_session()
            model = self.hypermodel.build(trial.hyperparameters)
            model.load_weights(self._get_checkpoint_fname(trial.trial_id))
            return model

        def _activate_all_conditions(self) -> None:
            # KerasTuner builds a model here to find conditional hyperparameters; the tables have
            # none, and building needs the dataset (which the chief may not see).
            return None

    return TrainerTuner


@functools.cache
def tuner_class(kind: str) -> type:
    """The KerasTuner class of ``kind`` (``random``, ``hyperband``, ``bayesian``) running its
    trials through the xprospect trainer.

    Raises:
        ConfigError: Unknown kind, or ``bayesian`` without scikit-learn.
    """
    if kind not in TUNER_KINDS:
        raise ConfigError(f"tuner.kind: expected one of {', '.join(TUNER_KINDS)}, got {kind!r}")
    import importlib.util

    if kind == "bayesian" and importlib.util.find_spec("sklearn") is None:
        raise ConfigError("tuner.kind: bayesian needs scikit-learn (pip install scikit-learn)")
    import keras_tuner as kt

    base = getattr(kt, TUNER_KINDS[kind])
    # Hyperband's run_trial sets the epochs, then its super() call reaches TrainerTuner's.
    return type(f"Xprospect{TUNER_KINDS[kind]}", (base, _trainer_tuner()), {})


def make_hypermodel(config: TuneConfig, *, progress: bool = False) -> Any:
    """The ``ExperimentHyperModel`` of a tune config."""
    space = SearchSpace.for_experiment(config.experiment, config.tuner.family, config.tuner.space)
    return hypermodel_class()(
        space,
        steps_per_trial=config.tuner.steps_per_trial,
        steps_per_epoch=config.steps_per_epoch,
        progress=progress,
    )


def make_tuner(config: TuneConfig, *, progress: bool = False) -> Any:
    """The KerasTuner tuner of a tune config (reloading its project when it exists).

    Args:
        config: The tune config.
        progress: Show each trial's progress bar.

    Returns:
        A ``keras_tuner`` RandomSearch, Hyperband or BayesianOptimization subclass instance.
    """
    import keras_tuner as kt

    t = config.tuner
    kwargs: dict[str, Any] = {
        "hypermodel": make_hypermodel(config, progress=progress),
        "objective": kt.Objective(OBJECTIVE, direction="max"),
        "seed": t.seed,
        "max_consecutive_failed_trials": t.max_consecutive_failed_trials,
        "executions_per_trial": t.executions_per_trial,
        "directory": t.directory,
        "project_name": config.project_name,
        "overwrite": False,
    }
    if t.kind == "hyperband":
        kwargs.update(
            max_epochs=t.max_epochs, factor=t.factor, hyperband_iterations=t.hyperband_iterations
        )
    elif t.kind == "bayesian":
        kwargs.update(
            max_trials=t.max_trials,
            num_initial_points=t.num_initial_points,
            alpha=t.alpha,
            beta=t.beta,
        )
    else:
        kwargs.update(max_trials=t.max_trials)
    _ensure_reload(config)
    tuner = tuner_class(t.kind)(**kwargs)
    if distributed_role() != "worker":
        _drop_finished_retries(tuner.oracle)
    return tuner


def _drop_finished_retries(oracle: Any) -> None:
    """Keeps a reloaded oracle from re-running trials that ended.

    On reload KerasTuner retries every trial its state lists as ongoing. A chief saves that state
    before it removes the trial that just ended (and never after the last one), so a finished
    distributed search would re-run its last trials when resumed.
    """
    queue = getattr(oracle, "_retry_queue", None)
    if isinstance(queue, list):
        ended = set(getattr(oracle, "end_order", ()))
        queue[:] = [trial_id for trial_id in queue if trial_id not in ended]


def _ensure_reload(config: TuneConfig) -> None:
    """Makes KerasTuner reload an existing oracle.

    KerasTuner reloads a project only when this process's tuner file (``TUNER_ID.json``, an empty
    state written at the end of each trial) exists. A search killed in its first trial, or run by
    a chief and workers of other ids, has the oracle's state but not that file, and would start
    over, reusing trial ids (and trial folders) for other hyperparameters.
    """
    from xprospect.utils import atomic_path

    if distributed_role() == "worker":
        return
    project = config.project_dir
    tuner_file = project / f"{os.environ.get('KERASTUNER_TUNER_ID', 'tuner0')}.json"
    if (project / "oracle.json").exists() and not tuner_file.exists():
        with atomic_path(tuner_file) as tmp:
            tmp.write_text("{}", encoding="utf-8")


# === Running a search ===


@dataclass
class TrialRow:
    """One trial of a search.

    Attributes:
        trial_id: KerasTuner's id (the folder ``trial_ID``).
        status: ``COMPLETED``, ``RUNNING``, ``FAILED``, ``INVALID``, ...
        hyperparameters: The searched values (and Hyperband's budget as ``epochs``).
        val_psnr_3d: The objective, dB (None until completed).
        message: The last line of a failed trial's error.
    """

    trial_id: str
    status: str
    hyperparameters: dict[str, Any]
    val_psnr_3d: float | None
    message: str = ""


@dataclass
class TuneResult:
    """What :func:`tune` did.

    Attributes:
        role: ``standalone``, ``chief`` or ``worker``.
        project_dir: KerasTuner's project folder.
        trials: Every trial of the search (a worker: the trials it ran).
        ran: Ids of the trials this invocation trained.
        best: The best completed trial (None for a worker, or when none completed).
        best_config: Its experiment, with the base experiment's training section.
        best_config_path: Where that was written (an experiment YAML for ``xprospect train``).
        columns: Hyperparameter names in the table's order (the search space's).
    """

    role: Role
    project_dir: Path
    trials: list[TrialRow]
    ran: list[str]
    best: TrialRow | None = None
    best_config: ExperimentConfig | None = None
    best_config_path: Path | None = None
    columns: tuple[str, ...] = ()

    def table(self) -> str:
        """The results as a text table: trial, status, hyperparameters, val_psnr_3d."""
        names: list[str] = list(self.columns)
        for row in self.trials:
            names += [n for n in row.hyperparameters if n not in names]
        header = ["trial", "status", *names, OBJECTIVE]
        lines = [
            [
                row.trial_id,
                row.status,
                *(_fmt_value(row.hyperparameters.get(n, "-")) for n in names),
                "-" if row.val_psnr_3d is None else f"{row.val_psnr_3d:.2f}",
            ]
            for row in self.trials
        ]
        widths = [max(len(str(c)) for c in col) for col in zip(header, *lines, strict=True)]

        def fmt(cells: Sequence[str]) -> str:
            return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

        out = [fmt(header), fmt(["-" * w for w in widths])] + [fmt(line) for line in lines]
        out += [f"trial {row.trial_id}: {row.message}" for row in self.trials if row.message]
        return "\n".join(out)

    @property
    def message(self) -> str:
        """A one-line summary."""
        ran = f"ran {len(self.ran)} trial(s) in this invocation"
        if self.role == "worker":
            return f"{ran}; the chief's project: {self.project_dir}"
        if self.best is None:
            return f"{ran}; no trial completed yet; project: {self.project_dir}"
        return (
            f"{ran}; best: trial {self.best.trial_id}, {OBJECTIVE} {self.best.val_psnr_3d:.2f} dB; "
            f"best config: {self.best_config_path} "
            f"(xprospect train --config {self.best_config_path})"
        )


def _public_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """The searched values, and a Hyperband trial's budget as ``epochs`` (KerasTuner's other
    ``tuner/...`` entries are bookkeeping)."""
    out = {k: v for k, v in values.items() if not k.startswith("tuner/")}
    if "tuner/epochs" in values:
        out["epochs"] = values["tuner/epochs"]
    return out


def _row(trial: Any) -> TrialRow:
    status = str(getattr(trial.status, "value", trial.status))
    message = ""
    if trial.message:
        lines = [ln for ln in str(trial.message).strip().splitlines() if ln.strip()]
        message = lines[-1].strip() if lines else ""
        # The traceback's last line names the exception class; its text is the message.
        message = re.sub(r"^[\w.]+(Error|Exception): ", "", message)
    return TrialRow(
        str(trial.trial_id),
        status,
        _public_values(trial.hyperparameters.values),
        None if trial.score is None else float(trial.score),
        message,
    )


_RESUMABLE = {
    "tuner.max_trials",
    "tuner.max_consecutive_failed_trials",
    "tuner.best_config",
    "tuner.directory",
    "tuner.project_name",
    "experiment.name",
    "experiment.data.dir",
    "experiment.training.output_dir",
}
"""Settings a resumed search may change (the others would make its trials incomparable)."""


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, Mapping):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out or {prefix.rstrip("."): {}}
    return {prefix.rstrip("."): data}


def _check_project(config: TuneConfig, write: bool) -> None:
    """Refuses to resume a project with a different search; records a new project's settings."""
    from xprospect.utils import atomic_path

    path = config.project_dir / "xprospect_tune.yaml"
    current = yaml.safe_load(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))
    if path.exists():
        old = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        a, b = _flatten(old), _flatten(current)
        changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and k not in _RESUMABLE)
        if changed:
            raise ConfigError(
                f"the search in this project was started with other settings ({', '.join(changed)}"
                "); use another tuner.project_name or delete the folder",
                config.project_dir,
            )
        return
    if write:
        with atomic_path(path) as tmp:
            tmp.write_text(yaml.safe_dump(current, sort_keys=False), encoding="utf-8")


def _check_dataset(config: TuneConfig) -> None:
    """The experiment resolves against its dataset, which has a ``val`` split to score on."""
    from xprospect.data import read_manifest
    from xprospect.training import resolve_config

    resolve_config(config.experiment)
    shards = read_manifest(config.experiment.data.dir).get("shards", {})
    val = sum(int(s.get("cases", 0)) for n, s in shards.items() if n.startswith("val-"))
    if val < 1:
        raise MissingDataError(
            "has no 'val' split: trials are scored on it (prepare with --val-fraction > 0)",
            config.experiment.data.dir,
        )


def _write_best(config: TuneConfig, space: SearchSpace, best: Any) -> tuple[ExperimentConfig, Path]:
    from xprospect.utils import atomic_path

    cfg = space.experiment(best.hyperparameters)
    base = config.experiment
    cfg.name = f"{base.name or config.project_name}-tuned"
    cfg.training.output_dir = f"{base.training.output_dir.rstrip('/')}-tuned"
    validate_config(cfg, "best config")
    path = config.best_config_path
    values = ", ".join(
        f"{k}={_fmt_value(v)}" for k, v in _public_values(best.hyperparameters.values).items()
    )
    header = (
        f"# Best trial {best.trial_id} of the {config.tuner.kind} search {config.project_dir}:\n"
        f"# {OBJECTIVE} {float(best.score):.3f} dB after {_trial_steps(config, best)} steps with "
        f"{values}.\n# Train it: xprospect train --config {path}\n"
    )
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=False)
    with atomic_path(path) as tmp:
        tmp.write_text(header + text, encoding="utf-8")
    load_config(path)  # the file must be one that 'xprospect train' accepts
    return cfg, path


def _trial_steps(config: TuneConfig, trial: Any) -> int:
    values = trial.hyperparameters.values
    if "tuner/epochs" in values:
        return int(values["tuner/epochs"]) * config.steps_per_epoch
    return config.tuner.steps_per_trial


def tune(config: TuneConfig, *, progress: bool = False) -> TuneResult:
    """Runs (or resumes, or serves as chief / joins as worker) a search.

    Args:
        config: The tune config.
        progress: Show KerasTuner's trial tables and each trial's progress bar.

    Returns:
        The trials, and (standalone or chief) the best config, written to
        ``config.best_config_path``.

    Raises:
        ConfigError: A project started with other settings, or an experiment that does not
            resolve against its dataset.
        MissingDataError: The dataset or its ``val`` split is missing.
    """
    role = distributed_role()
    space = SearchSpace.for_experiment(config.experiment, config.tuner.family, config.tuner.space)
    if role != "chief":  # the chief only serves the oracle: it may not see the data
        _check_dataset(config)
    config.project_dir.mkdir(parents=True, exist_ok=True)
    _check_project(config, write=role != "worker")
    tuner = make_tuner(config, progress=progress)
    if role == "chief":
        ip, port = os.environ["KERASTUNER_ORACLE_IP"], os.environ["KERASTUNER_ORACLE_PORT"]
        print(f"chief: serving the KerasTuner oracle on {ip}:{port}", flush=True)
    tuner.search(verbose=1 if progress else 0)
    ran = [row.trial_id for row in tuner.ran]
    columns = tuple(p.name for p in space.params)
    if role == "worker":
        return TuneResult(role, config.project_dir, list(tuner.ran), ran, columns=columns)
    oracle = tuner.oracle
    trials = [_row(oracle.trials[k]) for k in sorted(oracle.trials)]
    result = TuneResult(role, config.project_dir, trials, ran, columns=columns)
    best = oracle.get_best_trials(1)
    if best and best[0].score is not None:
        result.best = _row(best[0])
        result.best_config, result.best_config_path = _write_best(config, space, best[0])
    return result


# === Command line ===


def __getattr__(name: str) -> Any:
    # ``from xprospect.tuning import ExperimentHyperModel`` without importing KerasTuner up front.
    if name == "ExperimentHyperModel":
        return hypermodel_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
