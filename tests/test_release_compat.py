"""Files written by the previous release still load and resume.

``tests/fixtures/release-0.1.0/`` was written by xprospect 0.1.0 (commit 907c87f, before the package
was reorganised): one tiny ``.keras`` file per registered model class with an input and the output
that release computed, a two-step run folder of the ``512-Dense`` preset, and two-step run folders
of four GAN-family presets whose networks 0.2 changed to follow their papers (``gan-runs/``, made
by its ``make_runs.py``: checkpoints, config and state only). The registered Keras
names (``xprospect>...``) are what a ``.keras`` file refers to, so moving a class to another module
must not change them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
import yaml

FIXTURE = Path(__file__).parent / "fixtures" / "release-0.1.0"
INDEX = json.loads((FIXTURE / "index.json").read_text())


def _inputs(arrays: np.lib.npyio.NpzFile) -> object:
    names = sorted(k for k in arrays.files if k.startswith("in"))
    if names == ["in"]:
        return arrays["in"]
    keys = [k[3:] for k in names]
    if all(k.isdigit() for k in keys):
        return [arrays[f"in_{i}"] for i in range(len(keys))]
    return {k: arrays[f"in_{k}"] for k in keys}


def _outputs(y: object) -> dict[str, np.ndarray]:
    if isinstance(y, dict):
        return {f"out_{k}": keras.ops.convert_to_numpy(v) for k, v in y.items()}
    if isinstance(y, (list, tuple)):
        return {f"out_{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(y)}
    return {"out": keras.ops.convert_to_numpy(y)}


@pytest.mark.parametrize("name", sorted(INDEX["models"]))
def test_keras_file_of_the_previous_release_loads_and_predicts_the_same(name: str) -> None:
    from xprospect.inference import load_predictor

    entry = INDEX["models"][name]
    if name.startswith(("D-", "CycleGAN")):
        # Not reconstruction models: loaded as Keras loads any file, once their classes exist.
        import xprospect.models.discriminators  # noqa: F401

        model = keras.saving.load_model(FIXTURE / entry["file"], safe_mode=True)
    else:
        model = load_predictor(FIXTURE / entry["file"]).model
    assert type(model).__name__ == entry["class"]
    assert model.count_params() == entry["params"]
    arrays = np.load(FIXTURE / entry["file"].replace(".keras", ".npz"))
    got = _outputs(model(_inputs(arrays), training=False))
    expected = {k: arrays[k] for k in arrays.files if k.startswith("out")}
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_run_folder_of_the_previous_release_resumes(tmp_path: Path) -> None:
    from xprospect.config import apply_overrides, load_config
    from xprospect.data.prepare import PrepareConfig, prepare_dataset
    from xprospect.training import Trainer

    data = tmp_path / "ds16"
    # The dataset the run was trained on (phantoms are seeded, so this rebuilds it exactly).
    prepare_dataset(
        [],
        data,
        PrepareConfig(
            size=16, geometry="parallel", shard_size=2, val_fraction=0.25, test_fraction=0.0
        ),
        phantoms=4,
        progress=False,
    )
    run = tmp_path / "run"
    shutil.copytree(FIXTURE / "run", run)
    stored = yaml.safe_load((run / "config.yaml").read_text())
    assert stored["model"]["preset"] == "512-Dense"
    cfg = apply_overrides(
        load_config(run / "config.yaml"),
        [f"data.dir={data}", f"training.output_dir={run}", "training.steps=3"],
    )
    result = Trainer(cfg, progress=False).fit()
    assert result.ok, result.message
    assert result.start_step == 2
    assert result.steps == 3
    state = json.loads((run / "state.json").read_text())
    assert state["step"] == 3
    # The architecture is kept: the resumed run's final model has the old one's parameters.
    old = keras.saving.load_model(FIXTURE / "run" / "model.keras", safe_mode=True)
    new = keras.saving.load_model(run / "model.keras", safe_mode=True)
    assert new.count_params() == old.count_params()


def test_a_previous_release_checkpoint_of_another_architecture_says_what_to_do(
    tmp_path: Path,
) -> None:
    """Resuming a 0.1 run whose network the current presets build differently (the GAN family
    since issue 13) is a one-line ConfigError naming the run's version and the fix."""
    import tensorflow as tf

    from xprospect.errors import ConfigError
    from xprospect.training.checkpoints import CheckpointStore

    run = tmp_path / "run"
    shutil.copytree(FIXTURE / "run", run)
    store = CheckpointStore(run, chief=True, keep=3)
    latest = store.latest()
    assert latest is not None
    other = tf.train.Checkpoint(model=tf.Module())
    other.model.w = tf.Variable(np.zeros((3, 3), np.float32))  # not the stored network
    with pytest.raises(ConfigError) as info:
        store.restore(other, latest)
    msg = str(info.value)
    assert "xprospect 0.1.0" in msg and "docs/presets.md" in msg and "\n" not in msg


GAN_RUNS = FIXTURE / "gan-runs"


@pytest.fixture(scope="module")
def dataset32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from xprospect.data.prepare import PrepareConfig, prepare_dataset

    data = tmp_path_factory.mktemp("release") / "ds32"
    # The dataset the GAN runs were trained on (phantoms are seeded, so this rebuilds it).
    layout = PrepareConfig(
        size=32, geometry="parallel", shard_size=2, val_fraction=0.25, test_fraction=0.0
    )
    prepare_dataset([], data, layout, phantoms=4, progress=False)
    return data


@pytest.mark.slow
@pytest.mark.parametrize("name", ["x2ct-gan", "cvaa-gan", "duolift-gan", "s-xr2ct"])
def test_gan_run_folder_of_the_previous_release_resumes(
    name: str, dataset32: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A 0.1 run whose preset 0.2 builds differently resumes with 0.1's settings (issue 13)."""
    from xprospect.config import apply_overrides, load_config
    from xprospect.config.presets import previous_release_settings
    from xprospect.training import Trainer

    run = tmp_path / "run"
    shutil.copytree(GAN_RUNS / name, run)
    stored = yaml.safe_load((run / "config.yaml").read_text())
    preset = stored["model"]["preset"]
    old = previous_release_settings(preset, "0.1.0")
    assert old is not None and old.model, preset
    # Restoring checks every variable of G, D and both optimizers; one run also trains a step.
    steps = 3 if name == "x2ct-gan" else 2
    overrides = [f"data.dir={dataset32}", f"training.output_dir={run}", f"training.steps={steps}"]
    if name == "s-xr2ct":
        overrides.append("perceptual.weights=null")  # random VGG16: nothing to download
    cfg = apply_overrides(load_config(run / "config.yaml"), overrides)
    with caplog.at_level("WARNING", logger="xprospect.training.trainer"):
        trainer = Trainer(cfg, progress=False)
        result = trainer.fit()
    assert result.ok, result.message
    assert (result.start_step, result.steps) == (2, steps)
    assert json.loads((run / "state.json").read_text())["step"] == steps
    assert any("xprospect 0.1.0" in r.getMessage() for r in caplog.records)
    resolved = trainer.resolved
    assert resolved is not None
    # The kept settings are 0.1's where the run did not set the key itself, and are written into
    # the run's config, so the next resume (now stamped 0.2) builds the same network.
    kept = {k: v for k, v in old.model.items() if k not in stored["model"]["overrides"]}
    assert kept
    for key, value in kept.items():
        assert resolved.model.overrides[key] == value
    assert resolved.gan.d_loss_weight == pytest.approx(0.5)
    rewritten = yaml.safe_load((run / "config.yaml").read_text())
    for key in kept:
        assert key in rewritten["model"]["overrides"]


def test_a_checkpoint_whose_variables_have_other_shapes_is_a_config_error(tmp_path: Path) -> None:
    """A variable of another shape fails inside ``restore`` itself (a ValueError from TensorFlow,
    not the missing-variable assertion): still one line naming the checkpoint."""
    import tensorflow as tf

    from xprospect.errors import ConfigError
    from xprospect.training.checkpoints import CheckpointStore

    store = CheckpointStore(tmp_path, chief=True, keep=1)
    written = tf.train.Checkpoint(model=tf.Module())
    written.model.w = tf.Variable(np.zeros((3, 3), np.float32))
    store.attach(written)
    path = store.save(1, {"step": 1})
    assert path is not None
    other = tf.train.Checkpoint(model=tf.Module())
    other.model.w = tf.Variable(np.zeros((3, 4), np.float32))
    with pytest.raises(ConfigError) as info:
        store.restore(other, path)
    msg = str(info.value)
    assert "does not match" in msg and "\n" not in msg and path in msg
