"""XctDiff's three training stages in the package's trainer (xprospect.training.xctdiff).

A dataset of eight 32^3 phantoms; networks with 2-8 channels, a 64-entry codebook of dimension
4 and an 8^3 latent grid; two or three steps per stage, so each run takes seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from partial_scans import partly_scanned_copy

from xprospect.config import config_from_dict
from xprospect.data.prepare import PrepareConfig, prepare_dataset
from xprospect.errors import ConfigError
from xprospect.models.xctdiff import XctDiff, XctDiffAutoencoder, XctDiffPriorEncoder
from xprospect.training import Trainer
from xprospect.training.logs import read_metrics

SIZE = 32
TINY: dict[str, Any] = {
    "code_dim": 4,
    "num_codes": 64,
    "timesteps": 50,
    "sampling_steps": 2,
    "autoencoder_args": {
        "base_filters": 4,
        "channel_mult": [1, 2, 4],
        "num_res_blocks": 1,
        "groups": 2,
    },
    "prior_encoder_args": {
        "base_filters_2d": 4,
        "base_filters": 4,
        "mlp_hidden": 8,
        "num_res_blocks": 1,
        "groups": 2,
    },
    "unet_args": {
        "base_filters": 8,
        "channel_mult": [1, 2],
        "num_res_blocks": 1,
        "attention_levels": [1],
        "num_heads": 2,
        "context_dim": 8,
        "groups": 2,
    },
}
LOSS = {
    "vqgan": {"mae": 1.0, "vq": 1.0, "adversarial": 0.1},
    "encoder": {"latent": 1.0, "vq": 1.0},
    "ldm": {"diffusion": 1.0},
}


def stage_config(data: Path, out: Path, stage: str, previous: Path | None = None, **over: Any):
    cfg: dict[str, Any] = {
        "data": {"dir": str(data), "batch_size": 2, "shuffle_buffer": 4, "views": ["frontal"]},
        "model": {"preset": "XctDiff", "overrides": dict(TINY)},
        "loss": dict(LOSS[stage]),
        "optimizer": {"name": "adam", "learning_rate": 1e-3},
        "gan": {"adversarial": "bce", "discriminator": {"base_filters": 2, "num_layers": 2}},
        "xctdiff": {
            "stage": stage,
            "previous_run": str(previous) if previous else None,
            "gan_start_step": 1,
            "gan_slices": 2,
            "val_sampling_steps": 2,
        },
        "training": {
            "steps": 2,
            "validation_every": 2,
            "checkpoint_every": 1,
            "log_every": 1,
            "output_dir": str(out),
        },
    }
    for key, value in over.items():
        node = cfg
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return config_from_dict(cfg)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: Any) -> Path:
    out = tmp_path_factory.mktemp("xctdiff") / "ds32"
    cfg = PrepareConfig(
        size=SIZE, geometry="parallel", shard_size=2, val_fraction=0.2, test_fraction=0.1
    )
    prepare_dataset([], out, cfg, phantoms=10, progress=False)
    return out


@pytest.fixture(scope="module")
def runs(dataset: Path, tmp_path_factory: Any) -> dict[str, Path]:
    """The three stages, trained one after the other."""
    root = tmp_path_factory.mktemp("xctdiff_runs")
    out: dict[str, Path] = {}
    previous = None
    for stage in ("vqgan", "encoder", "ldm"):
        over = {"optimizer.use_ema": True} if stage == "ldm" else {}
        cfg = stage_config(dataset, root / stage, stage, previous, **over)
        result = Trainer(cfg, progress=False).fit()
        assert result.status == "completed", result.message
        out[stage] = previous = root / stage
    return out


def test_three_stages_train_and_export_their_models(runs: dict[str, Path]) -> None:
    kinds = {"vqgan": XctDiffAutoencoder, "encoder": XctDiffPriorEncoder, "ldm": XctDiff}
    for stage, run in runs.items():
        import xprospect.models  # noqa: F401

        model = keras.saving.load_model(run / "model.keras", compile=False)
        assert isinstance(model, kinds[stage]), stage
        rows = read_metrics(run / "metrics.csv")
        assert len(rows) >= 2 and all(np.isfinite(float(r["loss"])) for r in rows)
        assert (run / "val_panel.png").exists()
    vq_rows = read_metrics(runs["vqgan"] / "metrics.csv")
    usage = float(vq_rows[-1]["val_codebook_usage"])
    assert 0 < usage <= 1 and float(vq_rows[-1]["val_perplexity"]) >= 1
    # gan_start_step 1: the first step (optimizer iteration 0) has no GAN term, the second has.
    assert float(vq_rows[0]["d_loss"]) == 0 and float(vq_rows[0]["g_adversarial"]) == 0
    assert float(vq_rows[1]["d_loss"]) > 0 and float(vq_rows[1]["g_adversarial"]) > 0


def test_stage_models_carry_the_earlier_stages_weights(runs: dict[str, Path]) -> None:
    import xprospect.models  # noqa: F401

    ae = keras.saving.load_model(runs["vqgan"] / "model.keras", compile=False)
    pe = keras.saving.load_model(runs["encoder"] / "model.keras", compile=False)
    pipe = keras.saving.load_model(runs["ldm"] / "model.keras", compile=False)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(pe.quantizer.codebook),
        keras.ops.convert_to_numpy(ae.quantizer.codebook),
    )
    for a, b in zip(ae.get_weights(), pipe.autoencoder.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(pe.get_weights(), pipe.prior_encoder.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    # The pipeline predicts a volume from one radiograph, the same for the same seed.
    x = {"frontal": np.random.default_rng(0).random((1, SIZE, SIZE, 1), dtype=np.float32)}
    v1 = keras.ops.convert_to_numpy(pipe.generate(x, steps=2, seed=1))
    v2 = keras.ops.convert_to_numpy(pipe.generate(x, steps=2, seed=1))
    np.testing.assert_array_equal(v1, v2)
    assert v1.shape == (1, SIZE, SIZE, SIZE, 1)


def test_ldm_stage_resumes_exactly(dataset: Path, runs: dict[str, Path], tmp_path: Path) -> None:
    """The fixture's 2-step ldm run, resumed to 3 steps, logs the losses of a 3-step run (the
    time steps and noise are drawn from the step, restored with the optimizer)."""
    over = {"optimizer.use_ema": True, "training.steps": 3}
    whole = stage_config(dataset, tmp_path / "whole", "ldm", runs["encoder"], **over)
    Trainer(whole, progress=False).fit()
    resumed = stage_config(dataset, runs["ldm"], "ldm", runs["encoder"], **over)
    result = Trainer(resumed, progress=False).fit()
    assert result.start_step == 2 and result.steps == 3
    a = [float(r["loss"]) for r in read_metrics(tmp_path / "whole" / "metrics.csv")]
    b = [float(r["loss"]) for r in read_metrics(runs["ldm"] / "metrics.csv")]
    np.testing.assert_allclose(b, a, rtol=1e-5)


def test_missing_or_mismatched_previous_stage_is_a_one_line_config_error(
    dataset: Path, runs: dict[str, Path], tmp_path: Path
) -> None:
    cases = [
        ("encoder", None, {}, "needs the run folder of the 'vqgan' stage"),
        ("encoder", tmp_path / "nowhere", {}, "is not a training run"),
        ("encoder", runs["encoder"], {}, "is a 'encoder' run, stage 'encoder' needs a 'vqgan'"),
        ("ldm", runs["vqgan"], {}, "is a 'vqgan' run"),
        (
            "encoder",
            runs["vqgan"],
            {"model.overrides": {**TINY, "code_dim": 8}},
            "differs from this config's in code_dim",
        ),
        ("vqgan", None, {"loss": {"diffusion": 1.0}}, "not terms of the XctDiff 'vqgan' stage"),
    ]
    for i, (stage, previous, over, message) in enumerate(cases):
        cfg = stage_config(dataset, tmp_path / f"run{i}", stage, previous, **over)
        with pytest.raises(ConfigError, match=message) as info:
            Trainer(cfg, progress=False).fit()
        assert "\n" not in str(info.value)


def test_predict_runs_the_pipeline_with_sampling_steps_and_seed(
    runs: dict[str, Path], tmp_path: Path, capsys: Any
) -> None:
    from xprospect.cli import main
    from xprospect.inference import load_predictor
    from xprospect.io import read_nifti, write_png

    predictor = load_predictor(runs["ldm"])
    assert predictor.views == ("frontal",) and predictor.size == SIZE
    xray = np.random.default_rng(0).random((SIZE, SIZE), dtype=np.float32)
    predictor.set_sampling(steps=2, seed=3)
    a = predictor.reconstruct({"frontal": xray}).array
    b = predictor.reconstruct({"frontal": xray}).array
    np.testing.assert_array_equal(a, b)
    predictor.set_sampling(seed=4)
    assert np.abs(predictor.reconstruct({"frontal": xray}).array - a).max() > 0
    with pytest.raises(ConfigError, match="sampling-steps must be at least 1"):
        predictor.set_sampling(steps=0)
    # The command line: a plausible 80 px radiograph, two runs with one seed give one volume.
    png = tmp_path / "frontal.png"
    write_png(np.random.default_rng(1).random((80, 80), dtype=np.float32), png)
    outs = []
    for i in range(2):
        out = tmp_path / f"ct{i}.nii.gz"
        argv = ["predict", "--model", runs["ldm"], "--frontal", png, "--out", out]
        code = main([str(a) for a in [*argv, "--sampling-steps", "2", "--seed", "7"]])
        assert code == 0, capsys.readouterr().err
        outs.append(read_nifti(out).array)
    np.testing.assert_array_equal(outs[0], outs[1])
    # A model that does not sample refuses the options with one line.
    code = main(
        [
            str(a)
            for a in [
                "predict",
                "--model",
                runs["vqgan"] / "model.keras",
                "--frontal",
                png,
                "--out",
                tmp_path / "x.nii.gz",
                "--seed",
                "1",
            ]
        ]
    )
    assert code != 0


def test_export_serves_the_pipeline_as_keras_samples_it(
    runs: dict[str, Path], tmp_path: Path, capsys: Any
) -> None:
    """``xprospect export`` of an ldm run: a SavedModel the trust check accepts, whose
    serving_default samples the model's own steps and seed, as the Keras pipeline does."""
    from xprospect.cli import main
    from xprospect.inference import load_predictor

    argv = ["export", str(runs["ldm"]), "--name", "xctdiff", "--output-dir", str(tmp_path)]
    assert main(argv) == 0, capsys.readouterr().err
    folder = tmp_path / "xctdiff" / "1"
    served = load_predictor(folder)  # verified: refused if it held anything off the allow-list
    keras_pipeline = load_predictor(runs["ldm"])
    assert served.views == keras_pipeline.views == ("frontal",) and served.size == SIZE
    xray = np.random.default_rng(2).random((1, SIZE, SIZE, 1), dtype=np.float32)
    a = served.predict({"frontal": xray})
    np.testing.assert_array_equal(a, served.predict({"frontal": xray}))
    np.testing.assert_allclose(a, keras_pipeline.predict({"frontal": xray}), rtol=0, atol=1e-5)


def _three_stages(data: Path, root: Path, **over: Any) -> tuple[list[list[np.ndarray]], list]:
    """Trains the three stages on ``data``: each stage's weights and logged rows."""
    weights, rows, previous = [], [], None
    for stage in ("vqgan", "encoder", "ldm"):
        trainer = Trainer(stage_config(data, root / stage, stage, previous, **over), progress=False)
        assert trainer.fit().ok
        weights.append([np.asarray(w) for w in trainer.logic.model.get_weights()])
        rows.append(read_metrics(root / stage / "metrics.csv"))
        previous = root / stage
    return weights, rows


def test_every_stage_ignores_what_lies_outside_the_scan(dataset: Path, tmp_path: Path) -> None:
    # Each case scanned in its lower half only; "noisy" holds random HU above it, "clean" the
    # phantom's own values. Inside the scan the two are the same CT.
    clean = partly_scanned_copy(dataset, tmp_path / "clean", masked=True)
    noisy = partly_scanned_copy(dataset, tmp_path / "noisy", masked=True, garbage=True)
    w_clean, rows_clean = _three_stages(clean, tmp_path / "run-clean")
    w_noisy, rows_noisy = _three_stages(noisy, tmp_path / "run-noisy")
    for stage, a, b in zip(("vqgan", "encoder", "ldm"), w_clean, w_noisy, strict=True):
        for wa, wb in zip(a, b, strict=True):
            np.testing.assert_allclose(wa, wb, rtol=1e-5, atol=1e-6, err_msg=stage)
    for ra, rb in zip(rows_clean, rows_noisy, strict=True):
        for key in ("loss", "val_psnr_3d", "val_mae"):
            got = [float(r[key]) for r in rb if r.get(key)]
            want = [float(r[key]) for r in ra if r.get(key)]
            assert got, key
            np.testing.assert_allclose(got, want, rtol=1e-5)
    # With the option off the random HU are targets: the VQ-GAN learns something else.
    w_off, _ = _three_stages(noisy, tmp_path / "run-off", **{"data.validity_mask": False})
    assert any(not np.allclose(a, b, rtol=1e-3) for a, b in zip(w_noisy[0], w_off[0], strict=True))


def test_masked_diffusion_loss_is_the_mean_over_the_masked_cells() -> None:
    from xprospect.models.xctdiff import NoiseSchedule, diffusion_loss_per_example

    rng = np.random.default_rng(0)
    x0 = rng.standard_normal((2, 4, 4, 4, 3)).astype(np.float32)
    noise = rng.standard_normal(x0.shape).astype(np.float32)
    t = np.array([3, 7], np.int32)
    sched = NoiseSchedule(timesteps=10)
    guess = rng.standard_normal(x0.shape).astype(np.float32)

    def eps_fn(x_t: Any, tt: Any) -> Any:
        return keras.ops.convert_to_tensor(guess)

    mask = np.zeros((2, 4, 4, 4, 1), np.float32)
    mask[0, :2] = 1.0
    mask[1, :, 1:3] = 1.0
    got = keras.ops.convert_to_numpy(
        diffusion_loss_per_example(eps_fn, sched, x0, t, noise, mask=mask)
    )
    sq = (noise - guess) ** 2
    want = [sq[0, :2].mean(), sq[1, :, 1:3].mean()]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    full = diffusion_loss_per_example(eps_fn, sched, x0, t, noise, mask=np.ones_like(mask))
    plain = diffusion_loss_per_example(eps_fn, sched, x0, t, noise)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(full), plain, rtol=1e-6)


@pytest.mark.parametrize("every", [0, 1])
def test_dead_code_restarts_reset_unused_entries_to_encoder_vectors(
    dataset: Path, tmp_path: Path, every: int
) -> None:
    over = {
        "training.steps": 1,
        "xctdiff.dead_code_restart_every": every,
        "loss": {"mae": 1.0, "vq": 1.0},
    }
    trainer = Trainer(stage_config(dataset, tmp_path / "vq", "vqgan", **over), progress=False)
    assert trainer.fit().status == "completed"
    book = keras.ops.convert_to_numpy(trainer.logic.model.quantizer.codebook)
    # Entries start in [-1/64, 1/64] and one Adam step moves the used ones by ~1e-3; restarted
    # ones are normalised encoder vectors (mean 0, standard deviation 1 over their 4 values).
    restarted = book.std(axis=1) > 0.5
    if every == 0:
        assert not restarted.any()
    else:
        assert 0 < restarted.sum() < len(book)
        np.testing.assert_allclose(book[restarted].mean(axis=1), 0.0, atol=1e-5)
        np.testing.assert_allclose(book[restarted].std(axis=1), 1.0, atol=1e-3)


_MIRRORED_SCRIPT = r"""
import sys
sys.path.insert(0, sys.argv[1])
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import numpy as np
from test_xctdiff_training import stage_config
from xprospect.training import Trainer
data, root = sys.argv[2], sys.argv[3]
previous = None
for stage in ("vqgan", "encoder", "ldm"):
    cfg = stage_config(data, f"{root}/{stage}", stage, previous,
                       **{"training.strategy": "mirrored", "xctdiff.dead_code_restart_every": 1})
    trainer = Trainer(cfg, progress=False)
    result = trainer.fit()
    assert result.ok and result.steps == 2, (stage, result.message)
    assert trainer.strategy.num_replicas_in_sync == 2
    for v in trainer.model.weights:
        a, b = trainer.strategy.experimental_local_results(v.value)
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=f"{stage} {v.path}")
    previous = f"{root}/{stage}"
    print("trained", stage, flush=True)
print("OK")
"""


@pytest.mark.slow
def test_the_three_stages_train_under_mirrored_strategy(dataset: Path, tmp_path: Path) -> None:
    from faults import run_script

    proc = run_script(_MIRRORED_SCRIPT, Path(__file__).parent, str(dataset), str(tmp_path))
    assert proc.stdout.strip().endswith("OK"), proc.stdout
