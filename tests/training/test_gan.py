"""The GAN family's trainer: loss terms, schedules, lung masks, one GAN step, accumulation,
MirroredStrategy for every family, exact resume with a discriminator.

Every model runs at 32^3 with tiny widths (the ``TINY`` overrides below) on a dataset of eight
32^3 phantoms, so a run takes seconds; runs that need their own TensorFlow set-up (logical
devices, deterministic ops) happen in subprocesses that import this module.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from faults import run_script

from xprospect.config import ExperimentConfig, config_from_dict
from xprospect.data.prepare import PrepareConfig, prepare_dataset
from xprospect.errors import ConfigError
from xprospect.losses import (
    discriminator_loss_per_example,
    generator_adversarial_per_example,
    masked_mae_per_example,
    masked_mse_per_example,
)
from xprospect.training import Trainer, build_optimizer
from xprospect.training.logs import read_metrics
from xprospect.training.schedules import DelayedLinearDecay

TESTS = Path(__file__).parent
SIZE = 32

TINY: dict[str, dict[str, Any]] = {
    "X2CT-GAN": {
        "stem_filters": 4,
        "growth_rate": 2,
        "block_layers": [1, 1, 1],
        "bottleneck": 2,
        "grid_filters": 4,
        "decoder_filters": 2,
    },
    "CVAA-GAN": {"base_filters": 2, "max_filters": 4, "growth_rate": 2, "dense_layers": 2},
    "DuoLift-GAN": {
        "encoder_filters": 4,
        "encoder_blocks": [1, 1],
        "base_filters": 2,
        "lift_filters": [4, 4, 2],
        "type1_filters": 2,
        "xray_filters": 2,
        "unetpp_filters": 2,
        "unet_filters": 2,
        "max_filters": 8,
        "unet_depth": 2,
        "unetpp_depth": 2,
    },
    "S-XR2CT": {
        "base_filters": 2,
        "base_filters_2d": 4,
        "max_filters": 8,
        "depths": [1, 1, 1],
        "num_heads": 2,
        "attention_blocks": 1,
    },
}
TINY["X2CT-CNN+B"] = TINY["X2CT-GAN"]
TINY["DuoLift-CNN"] = TINY["DuoLift-GAN"]
TINY_D = {"filters": [2, 3, 4, 4]}
VIEWS = {"S-XR2CT": ["frontal"]}


def gan_config(data_dir: Path | str, output_dir: Path | str, preset: str, **over: Any):
    """A tiny run of ``preset``: batch 2, a few steps, frequent checkpoints."""
    cfg: dict[str, Any] = {
        "data": {
            "dir": str(data_dir),
            "batch_size": 2,
            "shuffle_buffer": 4,
            "views": VIEWS.get(preset, ["frontal", "lateral"]),
        },
        "model": {"preset": preset, "overrides": dict(TINY[preset])},
        "gan": {"discriminator": dict(TINY_D)},
        "perceptual": {"weights": None, "num_slices": 2},
        "training": {
            "steps": 2,
            "validation_every": 2,
            "checkpoint_every": 1,
            "log_every": 1,
            "output_dir": str(output_dir),
            "grad_accum_steps": 1,
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
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gan") / "ds32"
    cfg = PrepareConfig(
        size=SIZE, geometry="parallel", shard_size=2, val_fraction=0.2, test_fraction=0.1
    )
    prepare_dataset([], out, cfg, phantoms=10, progress=False)
    return out


# === Loss terms against NumPy ===


def _rng_volumes(shape=(3, 6, 5, 4, 1)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    t = rng.random(shape, dtype=np.float32)
    p = rng.random(shape, dtype=np.float32)
    m = (rng.random(shape) > 0.6).astype(np.float32)
    return t, p, m


def test_masked_terms_follow_duolift_equations_3_and_4() -> None:
    # DuoLift-GAN, Eqs. (3), (4): "L_inside^MSE = 1/|Omega| sum_Omega (MI - M^I)^2" and the same
    # with |.|_1, Omega the whole volume: the masked volumes' mean over every voxel.
    t, p, m = _rng_volumes()
    n_voxels = np.prod(t.shape[1:])
    for fn, err in ((masked_mae_per_example, np.abs), (masked_mse_per_example, np.square)):
        want = [err(m[i] * t[i] - m[i] * p[i]).sum() / n_voxels for i in range(len(t))]
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(fn(t, p, m)), want, rtol=1e-5, atol=1e-8
        )
        # A full mask is the unmasked term (Eqs. (1), (2)).
        full = np.ones_like(m)
        unmasked = [err(t[i] - p[i]).mean() for i in range(len(t))]
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(fn(t, p, full)), unmasked, rtol=1e-5, atol=1e-8
        )
    with pytest.raises(ConfigError, match="normalization"):
        masked_mae_per_example(t, p, m, normalization="lungs")


def test_masked_terms_match_numpy_and_ignore_voxels_outside_the_mask() -> None:
    # normalization="mask": the mean inside the mask (xprospect < 0.2).
    t, p, m = _rng_volumes()
    m[2] = 0.0  # an example with an empty mask gives 0, not NaN
    for fn, err in ((masked_mae_per_example, np.abs), (masked_mse_per_example, np.square)):
        got = keras.ops.convert_to_numpy(fn(t, p, m, normalization="mask"))
        want = [(err(p[i] - t[i]) * m[i]).sum() / max(m[i].sum(), 1.0) for i in range(len(t))]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
        assert got[2] == 0.0
        outside = np.where(m > 0, p, p + 100.0 * np.random.default_rng(1).random(p.shape))
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(fn(t, outside, m, normalization="mask")),
            got,
            rtol=1e-6,
            atol=0,
        )


def test_deep_supervision_heads_add_their_mean_voxel_loss() -> None:
    # DuoLift's UNet++ "with Deep Supervision": each head's prediction is scored by the voxel
    # terms, and the heads' losses are averaged (UNet++'s mean over its supervised outputs).
    from types import SimpleNamespace

    from xprospect.losses import build_loss, per_example_loss
    from xprospect.training.steps import StepLogic

    t, p, _ = _rng_volumes()
    rng = np.random.default_rng(7)
    heads = [rng.random(t.shape, dtype=np.float32) for _ in range(3)]
    logic = StepLogic.__new__(StepLogic)
    logic.plain_loss = per_example_loss(build_loss({"mse": 1.0, "mae": 1.0}))
    logic.weights, logic.perceptual = {}, None
    logic.run = SimpleNamespace()
    got, adv = logic._generator_terms({}, t, p, None, None, heads)

    def voxel(a: np.ndarray) -> np.ndarray:
        d = (a - t).reshape(len(t), -1)
        return (d**2).mean(1) + np.abs(d).mean(1)

    want = voxel(p) + np.mean([voxel(h) for h in heads], axis=0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got), want, rtol=1e-5, atol=1e-6)
    assert adv is None


def test_adversarial_losses_match_their_definitions() -> None:
    rng = np.random.default_rng(2)
    real = rng.normal(size=(2, 3, 3, 3, 1)).astype(np.float32) * 4
    fake = rng.normal(size=(2, 3, 3, 3, 1)).astype(np.float32) * 4

    def mean(x: np.ndarray) -> np.ndarray:
        return x.reshape(len(x), -1).mean(1)

    def bce(z: np.ndarray, target: float) -> np.ndarray:
        s = 1.0 / (1.0 + np.exp(-z.astype(np.float64)))
        return -(target * np.log(s) + (1 - target) * np.log(1 - s))

    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(discriminator_loss_per_example(real, fake, "lsgan")),
        0.5 * (mean((real - 1) ** 2) + mean(fake**2)),
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(generator_adversarial_per_example(fake, "lsgan")),
        mean((fake - 1) ** 2),
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(discriminator_loss_per_example(real, fake, "bce")),
        0.5 * (mean(bce(real, 1.0)) + mean(bce(fake, 0.0))),
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(generator_adversarial_per_example(fake, "bce")),
        mean(bce(fake, 1.0)),
        rtol=1e-5,
    )
    # The papers' weights on real + fake: X2CT-GAN's official 0.1, DuoLift's beta 0.01.
    for weight in (0.1, 0.01):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(discriminator_loss_per_example(real, fake, "lsgan", weight)),
            weight * (mean((real - 1) ** 2) + mean(fake**2)),
            rtol=1e-5,
        )
    # Large logits stay finite (the stable form of BCE).
    big = np.full((1, 2, 2, 2, 1), 200.0, np.float32)
    assert np.isfinite(keras.ops.convert_to_numpy(generator_adversarial_per_example(-big, "bce")))
    with pytest.raises(ConfigError, match="lsgan or bce"):
        generator_adversarial_per_example(fake, "wgan")


def test_schedules_follow_their_formulas() -> None:
    sched = DelayedLinearDecay(2e-4, total_steps=100, start_step=50)
    steps = np.array([0, 25, 50, 75, 99, 100, 120])
    got = [float(keras.ops.convert_to_numpy(sched(s))) for s in steps]
    want = 2e-4 * np.clip((100 - steps) / 50, 0, 1)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-12)
    assert DelayedLinearDecay.from_config(sched.get_config()).get_config() == sched.get_config()

    cfg = ExperimentConfig()
    cfg.optimizer.name = "adam"
    cfg.optimizer.learning_rate = 5e-4
    cfg.optimizer.beta_1 = 0.5
    from xprospect.config import ScheduleConfig

    cfg.optimizer.schedule = ScheduleConfig(name="multistep", milestones=[0.7], decay_factor=0.1)
    opt = build_optimizer(cfg, total_steps=100)
    lr = opt.learning_rate if not callable(opt._learning_rate) else opt._learning_rate
    assert float(opt.beta_1) == 0.5
    np.testing.assert_allclose(
        [float(keras.ops.convert_to_numpy(lr(s))) for s in (0, 69, 70, 71, 99)],
        [5e-4, 5e-4, 5e-4, 5e-5, 5e-5],
        rtol=1e-6,
    )


# === Data ===


def test_lung_masks_in_the_pipeline_match_the_segmentation(dataset: Path) -> None:
    from xprospect.data import load_dataset
    from xprospect.preprocessing import resolve_hu_window
    from xprospect.segmentation import lung_mask

    lo, hi = resolve_hu_window("xprospect")
    ds = load_dataset(dataset, "train", batch_size=2, shuffle=False, with_lung_mask=True)
    x, y = next(iter(ds))
    masks = x["lung_mask"].numpy()
    assert masks.shape == (2, SIZE, SIZE, SIZE, 1)
    spacing = 320.0 / SIZE
    for i in range(2):
        # Recover HU from the window (exact where the volume is inside the window; the
        # segmentation only thresholds at -400 HU, well inside it).
        hu = y.numpy()[i, ..., 0] * (hi - lo) + lo
        want = lung_mask(hu, spacing_mm=spacing)
        assert want.sum() > 100
        np.testing.assert_array_equal(masks[i, ..., 0] > 0.5, want)


# === Trainer runs (default strategy) ===


def _weights(model: Any) -> list[np.ndarray]:
    return [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]


def test_one_gan_step_changes_both_networks_and_keeps_losses_finite(
    dataset: Path, tmp_path: Path
) -> None:
    from xprospect.models import build_discriminator, build_model
    from xprospect.utils import seed_everything

    cfg = gan_config(dataset, tmp_path / "run", "X2CT-GAN", **{"training.steps": 1})
    trainer = Trainer(cfg, progress=False)
    result = trainer.fit()
    assert result.ok, result.message
    # The initial weights: the same seed and build order as the trainer.
    seed_everything(cfg.training.seed)
    g0 = build_model("X2CT-GAN", size=SIZE, **TINY["X2CT-GAN"])
    d0 = build_discriminator("X2CT-GAN", size=SIZE, **TINY_D)
    for before, after, name in (
        (_weights(g0), _weights(trainer.model), "generator"),
        (_weights(d0), _weights(trainer.discriminator), "discriminator"),
    ):
        assert len(before) == len(after)
        changed = [not np.array_equal(a, b) for a, b in zip(before, after, strict=True)]
        assert np.mean(changed) > 0.9, f"{name}: {sum(changed)} of {len(changed)} changed"
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    assert rows and {"loss", "d_loss", "g_adversarial"} <= set(rows[0])
    for key in ("loss", "d_loss", "g_adversarial"):
        assert np.isfinite(float(rows[0][key])) and float(rows[0][key]) > 0, key
    assert (tmp_path / "run" / "model.keras").exists()
    assert (tmp_path / "run" / "curves.png").exists()


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_gan_steps_under_mixed_precision(precision: str, dataset: Path, tmp_path: Path) -> None:
    cfg = gan_config(
        dataset,
        tmp_path / "run",
        "X2CT-GAN",
        **{"training.steps": 2, "training.mixed_precision": precision},
    )
    trainer = Trainer(cfg, progress=False)
    assert trainer.fit().ok
    assert trainer.model.compute_dtype == precision.removeprefix("mixed_")
    assert trainer.discriminator.compute_dtype == precision.removeprefix("mixed_")
    if precision == "mixed_float16":  # each network scales its own loss
        assert isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer)
        assert isinstance(trainer.d_optimizer, keras.optimizers.LossScaleOptimizer)
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    assert all(np.isfinite(float(r[k])) for r in rows for k in ("loss", "d_loss"))


def test_adversarial_term_needs_a_discriminator(dataset: Path, tmp_path: Path) -> None:
    cfg = gan_config(dataset, tmp_path / "run", "X2CT-CNN+B", loss={"mse": 1, "adversarial": 0.1})
    with pytest.raises(ConfigError, match="no discriminator"):
        Trainer(cfg, progress=False).fit()


def test_gradient_accumulation_equals_the_larger_batch(dataset: Path, tmp_path: Path) -> None:
    sys.path.insert(0, str(TESTS))
    from test_train import tiny_model

    def run(name: str, batch: int, accum: int) -> list[np.ndarray]:
        cfg = config_from_dict(
            {
                "data": {"dir": str(dataset), "batch_size": batch, "shuffle_buffer": 4},
                "model": {"preset": "tiny"},
                "loss": {"mae": 1.0},
                "optimizer": {"name": "adam", "learning_rate": 1e-2},
                "training": {
                    "steps": 2,
                    "validation_every": 10,
                    "checkpoint_every": 10,
                    "grad_accum_steps": accum,
                    "output_dir": str(tmp_path / name),
                },
            }
        )
        trainer = Trainer(cfg, model_fn=tiny_model, progress=False)
        assert trainer.fit().ok
        return [keras.ops.convert_to_numpy(w) for w in trainer.model.weights]

    big = run("big", batch=4, accum=1)
    accumulated = run("accum", batch=2, accum=2)
    single = run("single", batch=2, accum=1)
    for a, b in zip(big, accumulated, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert any(not np.allclose(a, b, atol=1e-6) for a, b in zip(big, single, strict=True))


def test_sxr2ct_template_is_the_mean_training_volume(dataset: Path, tmp_path: Path) -> None:
    from xprospect.evaluation import MeanVolumeBaseline

    cfg = gan_config(
        dataset,
        tmp_path / "run",
        "S-XR2CT",
        **{"training.steps": 1, "perceptual": {"weights": None, "num_slices": 1, "axes": [0]}},
    )
    trainer = Trainer(cfg, progress=False)
    assert trainer.fit().ok
    mean = MeanVolumeBaseline.fit(dataset).mean
    np.testing.assert_allclose(trainer.model.template[..., 0], mean, rtol=1e-6, atol=1e-6)
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    assert np.isfinite(float(rows[-1]["d_loss"]))


# === Subprocess runs: MirroredStrategy for every family, exact resume ===


_RESUME_SCRIPT = r"""
import sys
sys.path.insert(0, sys.argv[1])
import keras
import numpy as np
from test_gan import gan_config
from faults import Crash, crash_at
from xprospect.training import Trainer
data, root = sys.argv[2], sys.argv[3]
over = {"training.steps": 4, "training.deterministic": True, "training.grad_accum_steps": 2,
        "data.batch_size": 1}

def run(name, hook=None):
    cfg = gan_config(data, f"{root}/{name}", "DuoLift-GAN", **over)
    trainer = Trainer(cfg, step_hook=hook, progress=False)
    try:
        result = trainer.fit()
    except Crash:
        return None
    assert result.ok, result.message
    return trainer

def weights(t):
    return [keras.ops.convert_to_numpy(w) for w in [*t.model.weights, *t.discriminator.weights,
            *t.d_optimizer.variables]]

full = run("full")
assert run("resumed", crash_at(3)) is None
resumed = run("resumed")
for a, b in zip(weights(full), weights(resumed), strict=True):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
print("OK")
"""


@pytest.mark.slow
def test_interrupted_gan_run_resumes_to_the_same_weights(dataset: Path, tmp_path: Path) -> None:
    proc = run_script(_RESUME_SCRIPT, TESTS, str(dataset), str(tmp_path))
    assert proc.stdout.strip().endswith("OK"), proc.stdout


@pytest.mark.slow
def test_gan_training_run_prints_no_tensorflow_errors(dataset: Path, tmp_path: Path) -> None:
    """``xprospect train`` of a padded-discriminator GAN as users run it (a process of its own):
    no Grappler "remapper failed" line (Pad fused into the convolution breaks the gradient's
    graph) nor any other TensorFlow log line on stderr."""
    import os
    import subprocess

    from xprospect.config import dump_config

    config = dump_config(
        gan_config(dataset, tmp_path / "run", "X2CT-GAN", **{"training.steps": 1}),
        tmp_path / "x2ct-gan.yaml",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP")}
    argv = [sys.executable, "-m", "xprospect", "train", "--config", str(config)]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "remapper" not in proc.stderr, proc.stderr
    absl = [line for line in proc.stderr.splitlines() if line[:1] in "IWEF" and "] " in line]
    assert not absl, absl
