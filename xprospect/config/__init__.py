"""Configuration: the public config engine and the experiment schema.

:mod:`xprospect.config.engine` turns YAML into typed dataclass trees with one-line errors naming
the file, the key and the expected type, and applies dotted ``--set`` overrides; experiment
(:mod:`xprospect.config.experiment`), style (:mod:`xprospect.style.config`) and tune
(:mod:`xprospect.tuning.config`) files are schemas on top of it. This package re-exports the
experiment API (``from xprospect.config import load_config, ExperimentConfig``) and the engine's
generic helpers under their historical names. See ``docs/configuration.md``.
"""

from __future__ import annotations

from xprospect.config import engine
from xprospect.config.engine import dump as dump_config
from xprospect.config.engine import parse_override
from xprospect.config.engine import read_mapping as read_config_mapping
from xprospect.config.engine import to_dict as config_to_dict
from xprospect.config.experiment import (
    CONFIG_DIR,
    DataConfig,
    ExperimentConfig,
    GanConfig,
    ModelConfig,
    OptimizerConfig,
    ScheduleConfig,
    TrainingConfig,
    XctDiffConfig,
    apply_overrides,
    config_from_dict,
    load_config,
    resolve_config_path,
    shipped_configs,
    validate_config,
)

__all__ = [
    "CONFIG_DIR",
    "DataConfig",
    "ExperimentConfig",
    "GanConfig",
    "ModelConfig",
    "OptimizerConfig",
    "ScheduleConfig",
    "TrainingConfig",
    "XctDiffConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "dump_config",
    "engine",
    "load_config",
    "parse_override",
    "read_config_mapping",
    "resolve_config_path",
    "shipped_configs",
    "validate_config",
]
