"""Running a search: the KerasTuner tuner classes (each trial trained by the xprospect
trainer), :func:`make_tuner`, :func:`tune`, resuming and KerasTuner's distributed mode.

See :mod:`xprospect.tuning` for how a search resumes and how chief and workers share it.

A standalone search (or the chief) locks its project folder (:func:`xprospect.utils.folder_lock`);
each trial's run locks its own folder. ``SIGINT``/``SIGTERM`` during a standalone search or on a
worker stop it cleanly: a trial in progress saves a checkpoint at its current step and the search
ends (its trial stays unfinished in the oracle, so the next run retries it and the trial resumes
from that checkpoint); between trials the search ends once the current trial is recorded. The
chief, which only serves the oracle, keeps the signals' default action.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from xprospect.config.engine import read_yaml_file
from xprospect.errors import ConfigError, MissingDataError
from xprospect.tuning.config import TUNER_KINDS, TuneConfig
from xprospect.tuning.hypermodel import OBJECTIVE, copy_weights, make_hypermodel
from xprospect.tuning.results import (
    Role,
    TrialRow,
    TuneResult,
    public_values,
    trial_row,
    write_best_config,
)
from xprospect.tuning.space import SearchSpace

__all__ = ["distributed_role", "make_tuner", "tune", "tuner_class"]

log = logging.getLogger(__name__)


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
            copy_weights(out / "best.weights.h5", Path(self._get_checkpoint_fname(trial.trial_id)))
            score = sum(r[OBJECTIVE] for r in results) / n
            self.ran.append(TrialRow(trial.trial_id, "COMPLETED", public_values(hp.values), score))
            return results

        def on_trial_end(self, trial: Any) -> None:
            super().on_trial_end(trial)  # the oracle records the trial (and saves its state)
            from xprospect.training.loop import stop_requested

            name = stop_requested()
            if name:
                raise KeyboardInterrupt(
                    f"{name}: the search stopped after trial {trial.trial_id}; "
                    "run the same command again to resume it"
                )

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
        old = read_yaml_file(path) or {}
        if not isinstance(old, dict):
            raise ConfigError("not a tuning project's settings file; delete the folder", path)
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
    from xprospect.training.loop import stop_on_signals
    from xprospect.utils import folder_lock

    role = distributed_role()
    space = SearchSpace.for_experiment(config.experiment, config.tuner.family, config.tuner.space)
    if role != "chief":  # the chief only serves the oracle: it may not see the data
        _check_dataset(config)
    with contextlib.ExitStack() as held:
        if role != "worker":  # workers write only their trials' folders, which their runs lock
            held.enter_context(folder_lock(config.project_dir))
        else:
            config.project_dir.mkdir(parents=True, exist_ok=True)
        _check_project(config, write=role != "worker")
        tuner = make_tuner(config, progress=progress)
        if role == "chief":
            ip, port = os.environ["KERASTUNER_ORACLE_IP"], os.environ["KERASTUNER_ORACLE_PORT"]
            print(f"chief: serving the KerasTuner oracle on {ip}:{port}", flush=True)
        else:
            held.enter_context(stop_on_signals())
        tuner.search(verbose=1 if progress else 0)
        return _result(config, role, tuner, space)


def _result(config: TuneConfig, role: Role, tuner: Any, space: SearchSpace) -> TuneResult:
    ran = [row.trial_id for row in tuner.ran]
    columns = tuple(p.name for p in space.params)
    if role == "worker":
        return TuneResult(role, config.project_dir, list(tuner.ran), ran, columns=columns)
    oracle = tuner.oracle
    trials = [trial_row(oracle.trials[k]) for k in sorted(oracle.trials)]
    result = TuneResult(role, config.project_dir, trials, ran, columns=columns)
    best = oracle.get_best_trials(1)
    if best and best[0].score is not None:
        result.best = trial_row(best[0])
        result.best_config, result.best_config_path = write_best_config(config, space, best[0])
    return result
