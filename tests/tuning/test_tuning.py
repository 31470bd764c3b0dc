"""KerasTuner searches: the search-space tables, the tune file, a resumed two-trial search at
32^3 and a chief with two workers on 127.0.0.1.

The searches train the real DualUNet through the normal trainer, single view, on three train
phantoms and one validation phantom at 32^3, with 2-4 base filters and an 8-64 unit bottleneck.
The distributed search runs ``python -m xprospect tune`` in subprocesses whose KerasTuner
variables are in their environment before Python starts (nothing imports TensorFlow earlier).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import keras_tuner as kt
import pytest
import yaml

from xprospect.cli import main
from xprospect.config import config_from_dict, load_config
from xprospect.data.prepare import PrepareConfig, prepare_dataset
from xprospect.errors import ConfigError
from xprospect.tuning import (
    SearchSpace,
    load_tune_config,
    shipped_tune_configs,
    tune,
    tune_config_from_dict,
)

KT_VARS = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")


# === Golden search spaces ===

XPROSPECT_512_DENSE = [
    (
        "Choice",
        {"name": "dense_units", "default": 512, "conditions": [], "values": [64, 512]},
    ),
    ("Boolean", {"name": "back_projection", "default": False, "conditions": []}),
    (
        "Choice",
        {"name": "base_filters", "default": 16, "conditions": [], "values": [8, 16, 32]},
    ),
    ("Choice", {"name": "depth", "default": 3, "conditions": [], "values": [2, 3, 4]}),
    (
        "Choice",
        {"name": "activation", "default": "selu", "conditions": [], "values": ["selu", "relu"]},
    ),
    ("Choice", {"name": "loss", "default": "mse", "conditions": [], "values": ["mae", "mse"]}),
    (
        "Choice",
        {"name": "loss_projection", "default": 0.0, "conditions": [], "values": [0.0, 0.1]},
    ),
    (
        "Choice",
        {"name": "optimizer", "default": "adam", "conditions": [], "values": ["adam", "nadam"]},
    ),
    (
        "Float",
        {
            "name": "learning_rate",
            "default": 1e-4,
            "conditions": [],
            "min_value": 1e-5,
            "max_value": 1e-3,
            "step": None,
            "sampling": "log",
        },
    ),
]

X2CT_GAN = [
    (
        "Float",
        {
            "name": name,
            "default": weight,
            "conditions": [],
            "min_value": low,
            "max_value": high,
            "step": None,
            "sampling": "log",
        },
    )
    for name, weight, low, high in (
        ("loss_mse", 10.0, 1.0, 100.0),
        ("loss_projection", 10.0, 1.0, 100.0),
        ("loss_adversarial", 0.1, 0.01, 1.0),
    )
]


def _experiment(preset: str, **extra):
    doc = {"data": {"dir": "unused"}, "model": {"preset": preset}, "training": {"steps": 10}}
    return config_from_dict({**doc, **extra})


def _space_of(preset: str, **extra):
    hp = kt.HyperParameters()
    SearchSpace.for_experiment(_experiment(preset, **extra)).declare(hp)
    out = []
    for p in hp.space:
        config = p.get_config()
        config.pop("ordered", None)  # KerasTuner's own bookkeeping (numbers sort, strings do not)
        out.append((type(p).__name__, config))
    return out


def test_xprospect_search_space_is_the_documented_table():
    assert _space_of("512-Dense") == XPROSPECT_512_DENSE


def test_defaults_follow_the_base_preset():
    hp = kt.HyperParameters()
    space = SearchSpace.for_experiment(_experiment("512-ProjInj"))
    assert space.family == "xprospect"
    space.declare(hp)
    defaults = {p.name: p.default for p in hp.space}
    # 512-ProjInj: back-projection injection, MAE, Nadam; the rest as 512-Dense.
    assert defaults == {
        "dense_units": 512,
        "back_projection": True,
        "base_filters": 16,
        "depth": 3,
        "activation": "selu",
        "loss": "mae",
        "loss_projection": 0.0,
        "optimizer": "nadam",
        "learning_rate": 1e-4,
    }


def test_gan_search_space_is_the_presets_loss_weights():
    assert _space_of("X2CT-GAN") == X2CT_GAN
    duolift = [c["name"] for _, c in _space_of("DuoLift-GAN")]
    assert duolift == [
        "loss_mse",
        "loss_mae",
        "loss_masked_mse",
        "loss_masked_mae",
        "loss_adversarial",
    ]
    # An experiment's own weights replace the preset's (zero weights are not searched).
    own = _space_of("S-XR2CT", loss={"mae": 2.0, "perceptual": 0.0, "adversarial": 0.5})
    assert [(c["name"], c["min_value"], c["max_value"]) for _, c in own] == [
        ("loss_mae", 0.2, 20.0),
        ("loss_adversarial", 0.05, 5.0),
    ]


def test_hyperparameters_map_to_an_ordinary_experiment():
    space = SearchSpace.for_experiment(_experiment("512-Dense", model={"preset": "512-dense"}))
    hp = kt.HyperParameters()
    hp.values.update(
        dense_units=64,
        back_projection=True,
        base_filters=8,
        depth=2,
        activation="relu",
        loss="mae",
        loss_projection=0.1,
        optimizer="nadam",
        learning_rate=3e-4,
    )
    cfg = space.experiment(hp)
    assert cfg.model.overrides == {
        "dense_units": 64,
        "back_projection": True,
        "base_filters": 8,
        "depth": 2,
        "activation": "relu",
    }
    assert cfg.loss == {"mae": 1.0, "projection": 0.1}
    assert (cfg.optimizer.name, cfg.optimizer.learning_rate) == ("nadam", 3e-4)
    assert space.base.loss is None  # the base experiment is left as it was

    gan = SearchSpace.for_experiment(_experiment("X2CT-GAN"))
    hp = kt.HyperParameters()
    hp.values.update(loss_mse=20.0, loss_projection=5.0, loss_adversarial=0.05)
    assert gan.experiment(hp).loss == {"mse": 20.0, "projection": 5.0, "adversarial": 0.05}


def test_space_overrides_narrow_the_table():
    space = SearchSpace.for_experiment(
        _experiment("512-Dense"),
        overrides={
            "dense_units": _override(values=[8, 64]),
            "depth": _override(values=[2]),
            "learning_rate": _override(min_value=1e-4, max_value=1e-2),
        },
    )
    rows = {p.name: p for p in space.params}
    assert rows["dense_units"].kind == "choice" and rows["dense_units"].values == (8, 64)
    assert rows["depth"].kind == "fixed" and rows["depth"].values == (2,)
    assert (rows["learning_rate"].min_value, rows["learning_rate"].max_value) == (1e-4, 1e-2)
    hp = kt.HyperParameters()
    values = space.declare(hp)
    # 512 (the base's) is no longer a choice: the first remaining value is the default.
    assert values["dense_units"] == 8 and values["depth"] == 2


def _override(**kw):
    from xprospect.tuning import SpaceOverride

    return SpaceOverride(**kw)


# === The tune file ===


def _tune_doc(data_dir, tmp_path, **tuner):
    return {
        "experiment": {
            "name": "tiny",
            "data": {
                "dir": str(data_dir),
                "views": ["frontal"],
                "batch_size": 1,
                "shuffle_buffer": 2,
            },
            "model": {"preset": "512-Dense"},
            "training": {
                "steps": 50,
                "validation_every": 50,
                "checkpoint_every": 1,
                "log_every": 1,
                "output_dir": str(tmp_path / "runs" / "tiny"),
            },
        },
        "tuner": {
            "kind": "random",
            "max_trials": 2,
            "steps_per_trial": 3,
            "directory": str(tmp_path / "tuning"),
            "seed": 3,
            "space": {"base_filters": [2, 4], "dense_units": [8, 64], "depth": 2},
            **tuner,
        },
    }


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("experiment", None, "experiment: is required"),
        ("tuner.kind", "grid", "tuner.kind: expected one of random, hyperband, bayesian"),
        ("tuner.max_trails", 3, "unknown key 'tuner.max_trails' (did you mean 'max_trials'?)"),
        ("tuner.space.lr", [1e-3], "unknown key 'tuner.space.lr'"),
        ("tuner.family", "gan", "tuner.family: gan does not fit preset '512-Dense'"),
        ("tuner.seed", 0, "tuner.seed: must be >= 1"),
        (
            "tuner.space.depth",
            {"min_value": 1},
            "tuner.space.depth: min_value/max_value/sampling only apply to float",
        ),
        ("tuner.space.dense_units", ["wide"], "tuner.space.dense_units.values[0]: expected an"),
        ("experiment.data.dir", "", "experiment.data.dir: is required"),
    ],
)
def test_tune_file_errors_are_one_line(tmp_path, key, value, expected):
    doc = _tune_doc("data", tmp_path)
    *parents, last = key.split(".")
    node = doc
    for part in parents:
        node = node[part]
    node[last] = value
    with pytest.raises(ConfigError) as err:
        tune_config_from_dict(doc, "tune.yaml")
    message = str(err.value)
    assert message.startswith("tune.yaml: ") and expected in message and "\n" not in message


def test_shipped_tune_file_loads_with_overrides():
    assert "512-dense-random" in shipped_tune_configs()
    cfg = load_tune_config(
        "512-dense-random", ["experiment.data.dir=elsewhere", "tuner.kind=Hyperband"]
    )
    assert cfg.experiment.model.preset == "512-Dense" and cfg.experiment.data.dir == "elsewhere"
    assert cfg.tuner.kind == "hyperband" and cfg.steps_per_epoch == 2000 // 9
    assert cfg.project_dir == Path("tuning/512-dense")


@pytest.mark.parametrize(
    ("kind", "cls", "oracle"),
    [
        ("random", "RandomSearch", {"max_trials": 2}),
        ("hyperband", "Hyperband", {"max_epochs": 4, "factor": 2}),
        ("bayesian", "BayesianOptimization", {"max_trials": 2, "num_initial_points": 1}),
    ],
)
def test_tuners_by_name_maximise_val_psnr_3d(tmp_path, monkeypatch, kind, cls, oracle):
    for var in KT_VARS:
        monkeypatch.delenv(var, raising=False)
    from xprospect.tuning import make_tuner

    doc = _tune_doc("data", tmp_path, kind=kind, max_epochs=4, factor=2, num_initial_points=1)
    tuner = make_tuner(tune_config_from_dict(doc))
    assert isinstance(tuner, getattr(kt, cls))
    assert (tuner.oracle.objective.name, tuner.oracle.objective.direction) == ("val_psnr_3d", "max")
    assert {k: getattr(tuner.oracle, k) for k in oracle} == oracle
    assert tuner.oracle.seed == 3
    # The space is declared without building a model (the chief may not see the data).
    assert [p.name for p in tuner.oracle.get_space().space][:3] == [
        "dense_units",
        "back_projection",
        "base_filters",
    ]
    # Hyperband budgets are epochs of steps_per_trial // max_epochs steps (here 3 // 4 -> 1).
    assert tuner.hypermodel.steps_for(None) == 3
    assert tuner.hypermodel.steps_for(4, 2) == 2


# === Searches ===


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("tune") / "ds"
    cfg = PrepareConfig(
        size=32, geometry="parallel", shard_size=4, val_fraction=0.25, test_fraction=0
    )
    prepare_dataset([], out, cfg, phantoms=4, progress=False)
    shards = json.loads((out / "manifest.json").read_text())["shards"]
    assert {k: v["cases"] for k, v in shards.items()} == {"train-00000": 3, "val-00000": 1}
    return out


class Interrupt(BaseException):
    """Stands for Ctrl-C / a killed process: KerasTuner only catches ``Exception``."""


def test_random_search_resumes_and_writes_a_trainable_best_config(
    dataset, tmp_path, monkeypatch, capsys
):
    for var in KT_VARS:
        monkeypatch.delenv(var, raising=False)
    file = tmp_path / "tune.yaml"
    file.write_text(yaml.safe_dump(_tune_doc(dataset, tmp_path)))
    cfg = load_tune_config(file)

    # Interrupt the search as its first trial starts (KerasTuner has recorded the trial; the
    # trainer's own resume from a checkpoint is tested in test_train.py).
    import xprospect.training

    def interrupted(*args, **kwargs):
        raise Interrupt

    monkeypatch.setattr(xprospect.training, "Trainer", interrupted)
    with pytest.raises(Interrupt):
        tune(cfg)
    monkeypatch.undo()
    for var in KT_VARS:
        monkeypatch.delenv(var, raising=False)
    project = tmp_path / "tuning" / "tiny"
    first = json.loads((project / "trial_0" / "trial.json").read_text())
    assert first["status"] == "RUNNING"

    # Resume: the interrupted trial is retried (same id, folder and hyperparameters), then 1.
    capsys.readouterr()
    result = tune(cfg)
    # Reloaded, not started over (a fresh oracle with the same seed would draw the same trial 0).
    assert "Reloading Tuner from" in capsys.readouterr().out
    assert result.ran == ["0", "1"]
    assert [t.status for t in result.trials] == ["COMPLETED", "COMPLETED"]
    assert result.trials[0].hyperparameters == first["hyperparameters"]["values"]
    for row in result.trials:
        assert row.hyperparameters["base_filters"] in (2, 4)
        assert row.hyperparameters["dense_units"] in (8, 64)
        assert 0 < row.val_psnr_3d < 60
    assert result.trials[0].hyperparameters != result.trials[1].hyperparameters
    best = max(result.trials, key=lambda t: t.val_psnr_3d)
    assert result.best is not None and result.best.trial_id == best.trial_id

    # The best config is an experiment 'xprospect train' accepts: the base run's length, the
    # best trial's hyperparameters.
    written = load_config(result.best_config_path)
    assert written == result.best_config
    assert written.training.steps == 50 and written.name == "tiny-tuned"
    assert written.model.overrides["base_filters"] == best.hyperparameters["base_filters"]
    assert written.optimizer.learning_rate == pytest.approx(best.hyperparameters["learning_rate"])
    assert (project / f"trial_{best.trial_id}" / "checkpoint.weights.h5").is_file()

    # Re-running with max_trials unchanged trains nothing and prints the same table.
    capsys.readouterr()
    assert main(["tune", "--config", str(file), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "ran 0 trial(s) in this invocation" in out
    assert "val_psnr_3d" in out and f"{best.val_psnr_3d:.2f}" in out
    assert sorted(p.name for p in project.glob("trial_*")) == ["trial_0", "trial_1"]

    # Resuming with another search is refused.
    assert main(["tune", "--config", str(file), "--set", "tuner.steps_per_trial=9"]) == 5
    assert "started with other settings (tuner.steps_per_trial)" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_chief_and_two_workers_finish_a_search(dataset, tmp_path, monkeypatch, capsys):
    doc = _tune_doc(dataset, tmp_path, steps_per_trial=2)
    file = tmp_path / "tune.yaml"
    file.write_text(yaml.safe_dump(doc))
    port = str(_free_port())
    base = {k: v for k, v in os.environ.items() if k not in KT_VARS}
    base.update(TF_CPP_MIN_LOG_LEVEL="2", KERASTUNER_ORACLE_IP="127.0.0.1")
    base["KERASTUNER_ORACLE_PORT"] = port
    # Two workers share the machine: one thread each trains them about twice as fast.
    base.update(TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1")
    cmd = [sys.executable, "-m", "xprospect", "tune", "--config", str(file), "--no-progress"]

    def start(tuner_id: str) -> subprocess.Popen:
        with (tmp_path / f"{tuner_id}.log").open("w") as log:
            env = {**base, "KERASTUNER_TUNER_ID": tuner_id}
            return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)

    chief = start("chief")
    workers = [start("tuner0"), start("tuner1")]
    project = tmp_path / "tuning" / "tiny"
    try:
        for i, w in enumerate(workers):
            assert w.wait(timeout=400) == 0, (tmp_path / f"tuner{i}.log").read_text()[-3000:]
        # The chief's oracle records each trial as it ends, before it answers the worker.
        trials = [json.loads(p.read_text()) for p in sorted(project.glob("trial_*/trial.json"))]
        assert [t["status"] for t in trials] == ["COMPLETED", "COMPLETED"]
        assert all(t["score"] > 0 for t in trials)
        logs = [(tmp_path / f"tuner{i}.log").read_text() for i in range(2)]
        assert sum(int(log.split("ran ")[1].split(" ")[0]) for log in logs) == 2
        assert chief.poll() in (None, 0)
        chief_log = (tmp_path / "chief.log").read_text()
        assert f"chief: serving the KerasTuner oracle on 127.0.0.1:{port}" in chief_log
    finally:
        # KerasTuner's chief looks every 20 s whether the last worker has left; not waited for.
        for p in [chief, *workers]:
            if p.poll() is None:
                p.kill()
                p.wait()

    # The finished search, collected on one machine: no new trial, the table, the best config.
    for var in KT_VARS:
        monkeypatch.delenv(var, raising=False)
    assert main(["tune", "--config", str(file), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "ran 0 trial(s) in this invocation; best: trial" in out
    assert len([line for line in out.splitlines() if "COMPLETED" in line]) == 2
    load_config(project / "best.yaml")
