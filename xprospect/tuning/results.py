"""What a search did: the trials (:class:`TrialRow`), their table (:class:`TuneResult`) and
the best trial's experiment written as ``best.yaml`` for ``xprospect train``."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from xprospect.config import ExperimentConfig, engine, load_config, validate_config
from xprospect.tuning.config import TuneConfig
from xprospect.tuning.hypermodel import OBJECTIVE
from xprospect.tuning.space import SearchSpace, format_value
from xprospect.utils import atomic_path

__all__ = [
    "Role",
    "TrialRow",
    "TuneResult",
    "public_values",
    "trial_row",
    "write_best_config",
]

Role = Literal["standalone", "chief", "worker"]
"""How this process takes part in a search (:func:`xprospect.tuning.distributed_role`)."""


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
                *(format_value(row.hyperparameters.get(n, "-")) for n in names),
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


def public_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """The searched values, and a Hyperband trial's budget as ``epochs`` (KerasTuner's other
    ``tuner/...`` entries are bookkeeping)."""
    out = {k: v for k, v in values.items() if not k.startswith("tuner/")}
    if "tuner/epochs" in values:
        out["epochs"] = values["tuner/epochs"]
    return out


def trial_row(trial: Any) -> TrialRow:
    """The row of a KerasTuner ``Trial`` (a failed trial's message: its error's last line)."""
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
        public_values(trial.hyperparameters.values),
        None if trial.score is None else float(trial.score),
        message,
    )


def write_best_config(
    config: TuneConfig, space: SearchSpace, best: Any
) -> tuple[ExperimentConfig, Path]:
    """Writes the experiment of the trial ``best`` to ``config.best_config_path``.

    The file is an experiment YAML for ``xprospect train`` (checked by reading it back) with the
    base experiment's training section, ``-tuned`` appended to its name and output folder, and a
    comment header naming the trial, its score and its values.

    Returns:
        The experiment and the path written.
    """
    cfg = space.experiment(best.hyperparameters)
    base = config.experiment
    cfg.name = f"{base.name or config.project_name}-tuned"
    cfg.training.output_dir = f"{base.training.output_dir.rstrip('/')}-tuned"
    validate_config(cfg, "best config")
    path = config.best_config_path
    values = ", ".join(
        f"{k}={format_value(v)}" for k, v in public_values(best.hyperparameters.values).items()
    )
    header = (
        f"# Best trial {best.trial_id} of the {config.tuner.kind} search {config.project_dir}:\n"
        f"# {OBJECTIVE} {float(best.score):.3f} dB after {_trial_steps(config, best)} steps with "
        f"{values}.\n# Train it: xprospect train --config {path}\n"
    )
    text = yaml.safe_dump(engine.to_dict(cfg), sort_keys=False, default_flow_style=False)
    with atomic_path(path) as tmp:
        tmp.write_text(header + text, encoding="utf-8")
    load_config(path)  # the file must be one that 'xprospect train' accepts
    return cfg, path


def _trial_steps(config: TuneConfig, trial: Any) -> int:
    values = trial.hyperparameters.values
    if "tuner/epochs" in values:
        return int(values["tuner/epochs"]) * config.steps_per_epoch
    return config.tuner.steps_per_trial
