"""The search spaces: tables of KerasTuner hyperparameters mapped onto an experiment config.

:data:`XPROSPECT_SPACE` is the DualUNet presets' table and :func:`gan_space` the other presets'
(one loss weight per term); :class:`SearchSpace` binds a table to a base experiment, declares it
in KerasTuner's ``hp`` and returns the :class:`~xprospect.config.ExperimentConfig` of ``hp``'s
values. The tables are described in :mod:`xprospect.tuning` and ``docs/tuning.md``. Nothing here
imports KerasTuner: ``hp`` is passed in.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from xprospect.config import ExperimentConfig, validate_config
from xprospect.config.engine import check, convert, unknown_key
from xprospect.errors import ConfigError

__all__ = [
    "XPROSPECT_SPACE",
    "Family",
    "HyperParam",
    "SearchSpace",
    "SpaceOverride",
    "canonical_preset",
    "family_of",
    "format_value",
    "gan_space",
    "search_space",
]

Family = Literal["xprospect", "gan"]
"""The two tables: ``xprospect`` (DualUNet presets) and ``gan`` (the others)."""


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
        return ", ".join(format_value(v) for v in self.values)


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


def format_value(value: Any) -> str:
    """A hyperparameter value as the tables print it (``true``, ``0.01``, ``selu``)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def canonical_preset(preset: str) -> str:
    """:func:`xprospect.models.canonical_preset`, its error naming the tune file's key.

    Raises:
        ConfigError: Unknown preset (``experiment.model.preset: unknown preset ...``).
    """
    from xprospect.models.presets import canonical_preset as preset_key

    try:
        return preset_key(preset)
    except ConfigError as exc:
        raise ConfigError(f"experiment.model.preset: {exc.message}") from None


def family_of(preset: str) -> Family:
    """``xprospect`` for the DualUNet presets, ``gan`` for the others.

    Raises:
        ConfigError: Unknown preset.
    """
    from xprospect.models.presets import PRESETS

    return "xprospect" if PRESETS[canonical_preset(preset)]["family"] == "dualunet" else "gan"


def _preset_training(base: ExperimentConfig) -> dict[str, Any]:
    from xprospect.config.presets import preset_training_defaults

    return preset_training_defaults(canonical_preset(base.model.preset))


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

    preset = PRESETS[canonical_preset(base.model.preset)]
    model = {**preset["model"], **base.model.overrides}
    training = _preset_training(base)
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
        check(
            all(b is None for b in bounds),
            where,
            "give either values or min_value/max_value/sampling",
            source,
        )
        tp = _value_type(param)
        values = tuple(
            convert(v, tp, f"{where}.values[{i}]", source) for i, v in enumerate(over.values)
        )
        check(len(values) > 0, f"{where}.values", "needs at least one value", source)
        check(len(set(values)) == len(values), f"{where}.values", "lists a value twice", source)
        if len(values) == 1:
            return dataclasses.replace(param, kind="fixed", values=values)
        if param.kind == "boolean":
            return param
        return dataclasses.replace(param, kind="choice", values=values)
    if all(b is None for b in bounds):
        return param
    check(
        param.kind == "float",
        where,
        f"min_value/max_value/sampling only apply to float hyperparameters; {param.name} is a "
        f"{param.kind}: give values",
        source,
    )
    lo = float(over.min_value if over.min_value is not None else param.min_value or 0.0)
    hi = float(over.max_value if over.max_value is not None else param.max_value or 0.0)
    sampling = over.sampling or param.sampling
    check(lo < hi, where, f"min_value {lo:g} must be below max_value {hi:g}", source)
    check(sampling != "log" or lo > 0, where, "log sampling needs min_value > 0", source)
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
        check(
            family == preset_family,
            "tuner.family",
            f"{family} does not fit preset {base.model.preset!r} (its family is {preset_family})",
            src,
        )
        table = XPROSPECT_SPACE if family == "xprospect" else gan_space(base)
        by_name = {p.name: p for p in table}
        for name, over in (overrides or {}).items():
            if name not in by_name:
                raise unknown_key("tuner.space", name, list(by_name), src)
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
            rows.append(f"| {p.name} | {p.describe()} | {format_value(default)} | {p.help} |")
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
