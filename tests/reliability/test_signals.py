"""Clean exits: ``SIGTERM``/``SIGINT`` during training save a checkpoint at the step reached and
raise ``TrainingInterrupted`` (the CLI: one line, exit 130); a tune search stops after the current
trial; a second signal stops at once; the handlers are put back afterwards."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import yaml
from kill_points import tiny_model

from xprospect.cli import main
from xprospect.config import config_from_dict
from xprospect.data.prepare import PrepareConfig, prepare_dataset
from xprospect.training import Trainer
from xprospect.training.loop import TrainingInterrupted, stop_on_signals, stop_requested


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("signals") / "ds"
    cfg = PrepareConfig(size=16, geometry="parallel", shard_size=4, val_fraction=0.25)
    prepare_dataset([], out, cfg, phantoms=4, progress=False)
    return out


def _config(data: Path, out: Path, steps: int = 6):
    return config_from_dict(
        {
            "data": {"dir": str(data), "batch_size": 1, "shuffle_buffer": 2},
            "model": {"preset": "tiny"},
            "loss": {"mae": 1.0},
            "optimizer": {"name": "adam", "learning_rate": 1e-3},
            "training": {
                "steps": steps,
                "checkpoint_every": 4,
                "validation_every": 100,
                "output_dir": str(out),
            },
        }
    )


def _signal_at(step: int, sig: int, times: int = 1):
    def hook(s: int, logs) -> None:
        if s == step:
            for _ in range(times):
                os.kill(os.getpid(), sig)

    return hook


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_the_step_reached_and_the_rerun_resumes(data, tmp_path, sig):
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    cfg = _config(data, tmp_path / "run")
    trainer = Trainer(cfg, model_fn=tiny_model, step_hook=_signal_at(3, sig), progress=False)
    with pytest.raises(TrainingInterrupted) as err:
        trainer.fit()
    stop = err.value
    name = signal.Signals(sig).name
    assert isinstance(stop, KeyboardInterrupt) and stop.signal_name == name
    assert stop.step == 3 and stop.checkpoint and stop.checkpoint.endswith("ckpt-3")
    assert str(stop) == (
        f"{name}: stopped at step 3 of 6 (checkpoint ckpt-3 in {tmp_path / 'run' / 'checkpoints'})"
        "; run the same command again to resume"
    )
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    assert not (tmp_path / "run" / ".xprospect.lock.json").exists()  # the lock is released
    result = Trainer(cfg, model_fn=tiny_model, progress=False).fit()
    assert result.ok and (result.start_step, result.steps) == (3, 6)


def test_a_second_signal_stops_at_once_without_saving(data, tmp_path):
    cfg = _config(data, tmp_path / "run")
    hook = _signal_at(2, signal.SIGTERM, times=2)
    with pytest.raises(KeyboardInterrupt, match="received twice") as err:
        Trainer(cfg, model_fn=tiny_model, step_hook=hook, progress=False).fit()
    assert not isinstance(err.value, TrainingInterrupted)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_nested_handlers_share_one_flag():
    assert stop_requested() is None
    with stop_on_signals():
        with stop_on_signals():
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop_requested() == "SIGTERM"
        assert stop_requested() == "SIGTERM"  # the outer context still sees it
    assert stop_requested() is None  # cleared when the outermost is left


def test_cli_prints_one_line_and_exits_130(data, tmp_path, monkeypatch, capsys):
    import xprospect.training.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "default_model", tiny_model)
    original = Trainer.__init__

    def with_hook(self, config, **kwargs):
        original(self, config, **{**kwargs, "step_hook": _signal_at(2, signal.SIGTERM)})

    monkeypatch.setattr(Trainer, "__init__", with_hook)
    doc = {
        "data": {"dir": str(data), "batch_size": 1},
        "model": {"preset": "512-Dense"},
        "training": {"steps": 4, "output_dir": str(tmp_path / "run")},
    }
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(doc))
    code = main(["train", "--config", str(tmp_path / "exp.yaml"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 130
    assert err[-1].startswith("xprospect: interrupted: SIGTERM: stopped at step 2 of 4")


def test_tune_stops_after_the_current_trial_and_resumes(data, tmp_path, monkeypatch):
    import xprospect.training.trainer as trainer_module
    import xprospect.tuning.hypermodel as hypermodel_module
    import xprospect.tuning.search as search_module
    from xprospect.tuning import load_tune_config, tune

    for var in ("KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(trainer_module, "default_model", tiny_model)
    monkeypatch.setattr(hypermodel_module, "default_model", tiny_model)
    real_copy = search_module.copy_weights

    def copy_then_terminate(src, dest):
        real_copy(src, dest)
        os.kill(os.getpid(), signal.SIGTERM)  # preempted as trial 0 ends: finish it, then stop

    doc = {
        "experiment": {
            "name": "tiny",
            "data": {"dir": str(data), "batch_size": 1, "shuffle_buffer": 2},
            "model": {"preset": "512-Dense"},
            "training": {"steps": 50, "validation_every": 50, "output_dir": str(tmp_path / "x")},
        },
        "tuner": {
            "kind": "random",
            "max_trials": 2,
            "steps_per_trial": 2,
            "directory": str(tmp_path / "tuning"),
            "seed": 3,
        },
    }
    (tmp_path / "tune.yaml").write_text(yaml.safe_dump(doc))
    config = load_tune_config(tmp_path / "tune.yaml")
    monkeypatch.setattr(search_module, "copy_weights", copy_then_terminate)
    with pytest.raises(KeyboardInterrupt, match="the search stopped after trial 0"):
        tune(config)
    monkeypatch.setattr(search_module, "copy_weights", real_copy)
    result = tune(config)
    assert result.ran == ["1"] and [t.status for t in result.trials] == ["COMPLETED"] * 2
