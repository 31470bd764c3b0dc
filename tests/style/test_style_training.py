"""The CycleGAN trainer, the history buffer, the EMA reset, apply, evaluate and the CLI.

Tiny settings: 32^2 images, generators with 4 filters and 1 residual block, a 32^3 phantom
dataset for domain A and a synthetic "real" folder (PNG + manifest.csv) for domain B, so that
these tests never need the shared real X-rays.
"""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import keras
import numpy as np
import pytest
from faults import Crash, crash_at, run_script
from PIL import Image

from xprospect.data.prepare import PrepareConfig, prepare_dataset
from xprospect.errors import ConfigError, OutputExistsError
from xprospect.style.config import StyleConfig, style_config_from_dict
from xprospect.style.training import ImageHistoryBuffer, StyleTrainer

TESTS = Path(__file__).parent
SIZE = 32


def make_real_folder(root: Path, n: int = 24, size: int = 64, seed: int = 0) -> Path:
    """Synthetic radiographs: a bright blurred body with a dark border, noise and a marker."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    rows = []
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        body = np.exp(
            -(((yy - size / 2) / (0.3 * size)) ** 2 + ((xx - size / 2) / 0.22 / size) ** 2)
        )
        img = 40 + 150 * body + rng.normal(0, 12, (size, size))
        img[2:6, 2:6] = 255  # a burnt-in marker
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / "images" / f"r{i}.png")
        rows.append({"file": f"r{i}.png", "view": "L" if i % 6 == 5 else "PA", "patient": i // 2})
    with open(root / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "view", "patient"])
        writer.writeheader()
        writer.writerows(rows)
    return root


def style_config(data: Path | str, real: Path | str, out: Path | str, **over: Any) -> StyleConfig:
    raw: dict[str, Any] = {
        "data": {
            "dir": str(data),
            "real_dir": str(real),
            "size": SIZE,
            "batch_size": 2,
            "val_images": 4,
        },
        "model": {
            "generator": {"filters": 4, "n_blocks": 1},
            "discriminator": {"filters": 4, "n_layers": 2},
        },
        "history_size": 3,
        "training": {
            "steps": 4,
            "validation_every": 2,
            "checkpoint_every": 2,
            "log_every": 1,
            "output_dir": str(out),
        },
    }
    for key, value in over.items():
        node = raw
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return style_config_from_dict(raw)


@pytest.fixture(scope="module")
def domains(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("style")
    ds = root / "ds"
    cfg = PrepareConfig(
        size=SIZE, geometry="parallel", shard_size=4, val_fraction=0.2, test_fraction=0.2
    )
    prepare_dataset([], ds, cfg, phantoms=8, progress=False)
    return ds, make_real_folder(root / "real")


@pytest.fixture(scope="module")
def trained(domains, tmp_path_factory) -> StyleTrainer:
    ds, real = domains
    out = tmp_path_factory.mktemp("style_run") / "run"
    trainer = StyleTrainer(style_config(ds, real, out), progress=False)
    result = trainer.fit()
    assert result.ok, result.message
    return trainer


def _weights(*nets: Any) -> list[np.ndarray]:
    return [keras.ops.convert_to_numpy(w) for n in nets for w in n.weights]


# === History buffer ===


def _query(buffer: ImageHistoryBuffer, value: float) -> float:
    import tensorflow as tf

    out = buffer(tf.fill([1, 2, 2, 1], value))
    return float(out.numpy()[0, 0, 0, 0])


def test_history_buffer_fills_then_swaps_half_the_time() -> None:
    buffer = ImageHistoryBuffer(5, (2, 2, 1), seed=3)
    # Filling: each image is stored and returned as it is.
    for i in range(5):
        assert _query(buffer, float(i)) == float(i)
    assert int(buffer.count.numpy()) == 5
    pool = {float(v) for v in buffer.images.numpy()[:, 0, 0, 0]}
    assert pool == {0.0, 1.0, 2.0, 3.0, 4.0}
    old = 0
    n = 400
    for i in range(5, 5 + n):
        before = sorted(float(v) for v in buffer.images.numpy()[:, 0, 0, 0])
        got = _query(buffer, float(i))
        after = sorted(float(v) for v in buffer.images.numpy()[:, 0, 0, 0])
        if got == float(i):
            assert after == before  # the new image went straight through
        else:
            # A stored image came out and the new one took its place.
            old += 1
            assert got in before
            expected = sorted([*(v for v in before if v != got), float(i)])
            assert after == expected
    # Binomial(400, 0.5): 4.5 standard deviations is 155..245.
    assert 155 <= old <= 245, old


def test_history_buffer_is_seeded_and_zero_capacity_passes_through() -> None:
    def run(seed: int) -> list[float]:
        b = ImageHistoryBuffer(2, (2, 2, 1), seed=seed)
        return [_query(b, float(i)) for i in range(40)]

    assert run(1) == run(1) and run(1) != run(2)
    empty = ImageHistoryBuffer(0, (2, 2, 1))
    assert [_query(empty, float(i)) for i in range(3)] == [0.0, 1.0, 2.0]
    with pytest.raises(ConfigError):
        ImageHistoryBuffer(-1, (2, 2, 1))


# === EMA reset ===


def test_ema_reset_sets_the_live_weights_to_their_average(domains, tmp_path) -> None:
    from xprospect.training import build_optimizer

    ds, real = domains
    k, momentum = 4, 0.8
    over = {"optimizer.use_ema": True, "optimizer.ema_momentum": momentum}
    reset_cfg = style_config(ds, real, tmp_path, **over, **{"optimizer.ema_reset": "epoch"})
    plain_cfg = style_config(ds, real, tmp_path, **over)
    rng = np.random.default_rng(0)
    start = rng.normal(size=(3,)).astype("float32")
    grads = [rng.normal(size=(3,)).astype("float32") for _ in range(k)]

    def trajectory(cfg: StyleConfig) -> tuple[keras.Variable, list[np.ndarray]]:
        var = keras.Variable(start)
        opt = build_optimizer(cfg, 100, steps_per_epoch=k)  # type: ignore[arg-type]
        seen = []
        for g in grads:
            opt.apply([g], [var])
            seen.append(keras.ops.convert_to_numpy(var))
        return var, seen

    reset_var, _ = trajectory(reset_cfg)
    _, raw = trajectory(plain_cfg)  # the same updates without the reset
    # The paper's definition: a_1 = w_1, a_t = m a_(t-1) + (1 - m) w_t (Keras starts the
    # average at the first update's weights).
    average = raw[0]
    for w in raw[1:]:
        average = momentum * average + (1 - momentum) * w
    np.testing.assert_allclose(keras.ops.convert_to_numpy(reset_var), average, rtol=1e-6, atol=1e-7)
    assert not np.allclose(raw[-1], average)
    with pytest.raises(ConfigError, match="use_ema"):
        style_config(ds, real, tmp_path, **{"optimizer.ema_reset": "epoch"})


# === Steps and runs ===


def test_two_steps_change_every_network_with_finite_losses(domains, tmp_path) -> None:
    import tensorflow as tf

    from xprospect.style.training import CycleGANStepLogic

    ds, real = domains
    cfg = style_config(ds, real, tmp_path)
    run = SimpleNamespace(
        cfg=cfg, total=10, steps_per_epoch=5, strategy=tf.distribute.get_strategy()
    )
    logic = CycleGANStepLogic(run)  # type: ignore[arg-type]
    logic.build()
    nets = (logic.g_ab, logic.g_ba, logic.d_a, logic.d_b)
    before = [_weights(n) for n in nets]
    rng = np.random.default_rng(1)
    batches = [
        (rng.random((2, SIZE, SIZE, 1), "float32"), rng.random((2, SIZE, SIZE, 1), "float32"))
        for _ in range(2)
    ]
    step = logic.make_train_step()
    it = iter(
        tf.data.Dataset.from_tensor_slices(tuple(np.stack(b) for b in zip(*batches, strict=True)))
    )
    for _ in range(2):
        values = {k: float(v) for k, v in step(it).items()}
        assert set(values) == set(logic.log_names)
        assert all(np.isfinite(v) for v in values.values()), values
    for net, old in zip(nets, before, strict=True):
        changed = [not np.array_equal(a, b) for a, b in zip(old, _weights(net), strict=True)]
        assert np.mean(changed) > 0.9, net.name
    assert int(logic.pool_a.count.numpy()) == 3  # 2 steps x 2 images, capacity 3


def test_run_writes_generators_logs_and_figures(trained: StyleTrainer) -> None:
    import tensorflow as tf

    from xprospect.training.logs import read_metrics

    out = Path(trained.config.training.output_dir)  # type: ignore[attr-defined]
    for name in ("style.json", "drr2real.keras", "real2drr.keras", "style_panel.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "curves.png").exists() and (out / "config.yaml").exists()
    rows = read_metrics(out / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    for key in ("loss", "cycle", "identity", "d_loss", "g_adversarial"):
        assert all(np.isfinite(float(r[key])) for r in rows), key
    assert np.isfinite(float(rows[-1]["val_cycle_mae_drr"]))
    tags = set()
    for event in (out / "tensorboard" / "validation").glob("events.*"):
        for e in tf.compat.v1.train.summary_iterator(str(event)):
            tags |= {v.tag for v in e.summary.value}
    assert any(t.startswith("style/") for t in tags), tags
    loaded = keras.saving.load_model(out / "drr2real.keras")
    x = np.random.default_rng(0).random((1, SIZE, SIZE, 1), "float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x)),
        keras.ops.convert_to_numpy(trained.model(x, training=False)),
        rtol=0,
        atol=1e-6,
    )


def test_interrupted_run_resumes_to_the_same_networks(domains, trained, tmp_path) -> None:

    ds, real = domains
    cfg = style_config(ds, real, tmp_path / "resumed")
    with pytest.raises(Crash):
        StyleTrainer(cfg, step_hook=crash_at(3), progress=False).fit()
    resumed = StyleTrainer(cfg, progress=False)
    result = resumed.fit()
    assert result.ok and result.start_step == 2
    a, b = trained.logic, resumed.logic
    for x, y in zip(
        _weights(a.g_ab, a.g_ba, a.d_a, a.d_b), _weights(b.g_ab, b.g_ba, b.d_a, b.d_b), strict=True
    ):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(a.pool_b.images.numpy(), b.pool_b.images.numpy())


_MIRRORED_SCRIPT = r"""
import sys
sys.path.insert(0, sys.argv[1])
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import numpy as np
from test_style_training import style_config
from xprospect.style.training import StyleTrainer
cfg = style_config(sys.argv[2], sys.argv[3], sys.argv[4],
                   **{"training.strategy": "mirrored", "training.steps": 2})
trainer = StyleTrainer(cfg, progress=False)
result = trainer.fit()
assert result.ok and result.steps == 2, result.message
assert trainer.strategy.num_replicas_in_sync == 2
logic = trainer.logic
for net in (logic.g_ab, logic.g_ba, logic.d_a, logic.d_b):
    for v in net.weights:
        a, b = trainer.strategy.experimental_local_results(v.value)
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=v.path)
print("OK")
"""


@pytest.mark.slow
def test_cyclegan_trains_under_mirrored_strategy(domains, tmp_path) -> None:
    ds, real = domains
    proc = run_script(_MIRRORED_SCRIPT, TESTS, str(ds), str(real), str(tmp_path), timeout=600)
    assert proc.stdout.strip().endswith("OK"), proc.stderr[-3000:]


# === Apply, evaluate, CLI ===


def test_apply_is_deterministic_and_the_stylized_dataset_trains(domains, trained, tmp_path) -> None:
    from xprospect.data import load_dataset
    from xprospect.projection.physics import display_unit
    from xprospect.style.apply import StyleModel, stylize_dataset
    from xprospect.training import Trainer

    ds, _ = domains
    run = Path(trained.config.training.output_dir)  # type: ignore[attr-defined]
    model = StyleModel(run)
    x = np.random.default_rng(2).random((3, SIZE, SIZE)).astype("float32")
    np.testing.assert_array_equal(model.translate(x, "drr2real"), model.translate(x, "drr2real"))
    out = stylize_dataset(ds, [run], tmp_path / "stylized", progress=False)
    pairs = zip(
        load_dataset(ds, "train", shuffle=False, views=("frontal",), xray_mapping="line_integral"),
        load_dataset(out, "train", shuffle=False),
        strict=True,
    )
    for (x_src, y_src), (x_new, y_new) in pairs:
        drr = display_unit(x_src["frontal"].numpy()[..., 0])
        np.testing.assert_allclose(
            x_new["frontal"].numpy()[..., 0], model.translate(drr, "drr2real"), atol=1e-3
        )
        np.testing.assert_array_equal(y_src.numpy(), y_new.numpy())
    with pytest.raises(OutputExistsError):
        stylize_dataset(ds, [run], out, progress=False)
    from xprospect.data import Augmentation

    with pytest.raises(ConfigError, match="stylized"):
        load_dataset(out, "train", augment=Augmentation(rotate_deg=5.0))
    from xprospect.config import config_from_dict

    cfg = config_from_dict(
        {
            "data": {"dir": str(out), "batch_size": 1},
            "model": {"preset": "64-Dense", "overrides": {"base_filters": 2, "dense_units": 8}},
            "training": {"steps": 1, "output_dir": str(tmp_path / "recon")},
        }
    )
    assert Trainer(cfg, progress=False).fit().ok


def test_a_run_trained_on_film_like_drrs_translates_film_like_drrs(domains, trained, tmp_path):
    import dataclasses
    import json
    import shutil
    import zlib

    from xprospect.data import load_dataset
    from xprospect.projection.physics import display_unit
    from xprospect.style.apply import StyleModel, stylize_dataset
    from xprospect.style.evaluate import evaluate_style
    from xprospect.style.film import FilmAugmentation, FilmAugmentationConfig, film_seed
    from xprospect.style.training import STYLE_FILE, domain_a_images

    ds, _ = domains
    run = Path(trained.config.training.output_dir)  # type: ignore[attr-defined]
    x = np.random.default_rng(3).random((3, SIZE, SIZE)).astype("float32")
    np.testing.assert_array_equal(StyleModel(run).film(x, seed=4), x)  # trained without film
    filmed = tmp_path / "film_run"
    shutil.copytree(run, filmed)
    meta = json.loads((filmed / STYLE_FILE).read_text())
    meta["film_augmentation"] = dataclasses.asdict(FilmAugmentationConfig())
    (filmed / STYLE_FILE).write_text(json.dumps(meta))
    model = StyleModel(filmed)
    pct = tuple(meta["percentiles"])
    want = [
        FilmAugmentation(FilmAugmentationConfig(), film_seed(4, i), pct)(x[i]) for i in range(3)
    ]
    got = model.film(x, seed=4)
    np.testing.assert_array_equal(got, np.stack(want))
    assert np.abs(got - x).mean() > 0.01
    # The noiseless twin: the same draws with zero noise (gain 0, read noise 0) instead of none.
    silent = FilmAugmentationConfig(noise_gain_range=[0.0, 0.0], read_noise_std_range=[0.0, 0.0])
    twin = [FilmAugmentation(silent, film_seed(4, i), pct)(x[i]) for i in range(3)]
    quiet = model.film(x, seed=4, noise=False)
    np.testing.assert_allclose(quiet, np.stack(twin), atol=1e-6)
    assert 1e-4 < np.abs(got - quiet).mean() < 0.05  # only the noise differs
    # A film_augmentation block this version cannot read is a ConfigError naming style.json.
    broken = tmp_path / "broken_film_run"
    shutil.copytree(filmed, broken)
    (broken / STYLE_FILE).write_text(json.dumps({**meta, "film_augmentation": {"bogus": 1}}))
    with pytest.raises(ConfigError, match=rf"{STYLE_FILE}: film_augmentation: .*bogus"):
        StyleModel(broken).film(x)
    # stylize_dataset films each case with a seed of its id before translating it.
    out = stylize_dataset(ds, [filmed], tmp_path / "stylized", progress=False)
    src = load_dataset(
        ds,
        "train",
        shuffle=False,
        views=("frontal",),
        xray_mapping="line_integral",
        with_case_id=True,
    )
    for (x_src, _), (x_new, _) in zip(src, load_dataset(out, "train", shuffle=False), strict=True):
        for i, case_id in enumerate(x_src["case_id"].numpy()):
            drr = display_unit(x_src["frontal"].numpy()[i, ..., 0])
            expected = model.translate(model.film(drr[None], zlib.crc32(case_id))[0], "drr2real")
            np.testing.assert_allclose(x_new["frontal"].numpy()[i, ..., 0], expected, atol=1e-3)
    ev = evaluate_style(filmed, tmp_path / "eval", dataset_dir=ds, split="train")
    assert np.isfinite(ev.cycle["drr_to_real_to_drr"])
    drr_eval = domain_a_images(ds, "train", model.view, model.size)
    noise = np.abs(model.film(drr_eval, 0) - model.film(drr_eval, 0, noise=False)).mean()
    np.testing.assert_allclose(ev.cycle["film_noise"], noise, rtol=1e-5)
    assert np.isfinite(ev.cycle["drr_to_real_to_drr_noiseless"])
    assert ev.film is not None and ev.film != ev.before  # the film DRRs scored on their own
    assert "| film DRR |" in ev.table()
    assert evaluate_style(run, tmp_path / "eval_plain", dataset_dir=ds, split="train").film is None


def test_evaluate_and_cli(domains, trained, tmp_path, capsys) -> None:
    import json

    from xprospect.cli import main
    from xprospect.style.evaluate import evaluate_style

    run = Path(trained.config.training.output_dir)  # type: ignore[attr-defined]
    result = evaluate_style(
        run,
        tmp_path / "ev",
        split="train",
        c2st_kwargs={"epochs": 2, "image_size": 16},
        c2st_repeats=3,
    )
    # The repeats' first seed is the table's own test; the others differ in split and weights.
    reps = result.c2st_repeats
    assert reps is not None and len(reps["auc"]) == len(reps["accuracy"]) == 3
    np.testing.assert_allclose(reps["auc"][0], result.after["c2st_auc"])
    np.testing.assert_allclose(reps["accuracy"][0], result.after["c2st_accuracy"])
    assert all(0.0 <= v <= 1.0 for v in reps["auc"] + reps["accuracy"])
    assert "C2ST over 3 seeded splits: AUC median" in result.table()
    for part in (result.before, result.after):
        assert 0.0 <= part["c2st_accuracy"] <= 1.0 and 0.0 <= part["c2st_auc"] <= 1.0
        assert part["hist_wasserstein"] >= 0 and np.isfinite(part["spectrum_log10_l1"])
    assert all(np.isfinite(v) for v in result.cycle.values())
    for name in ("style_eval.json", "style_eval.md", "grid.png", "spectra.png", "histograms.png"):
        assert (tmp_path / "ev" / name).stat().st_size > 0, name
    assert json.loads((tmp_path / "ev" / "style_eval.json").read_text())["view"] == "frontal"
    # CLI: real2drr on a PNG, then a clear one-line error for a bad call.
    png = next((Path(trained.config.data.real_dir) / "images").glob("*.png"))  # type: ignore[attr-defined]
    code = main(
        ["style", "apply", "--model", str(run), "--direction", "real2drr", "--input", str(png),
         "--output", str(tmp_path / "pngs")]
    )  # fmt: skip
    assert code == 0 and len(list((tmp_path / "pngs").glob("*_drr_style.png"))) == 1
    code = main(["style", "apply", "--model", str(run), "--output", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 5 and len(err) == 1 and "--data" in err[0]  # a config error
    code = main(
        ["style", "evaluate", "--model", str(run), "--c2st-repeats", "0",
         "--output", str(tmp_path / "ev0")]
    )  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 5 and len(err) == 1 and "--c2st-repeats" in err[0]


def _predict_args(trained, tmp_path: Path) -> list[str]:
    """``predict`` of a tiny untrained reconstruction model on two of the real X-rays."""
    import yaml

    from xprospect.models import build_model

    recon = tmp_path / "recon"
    recon.mkdir()
    model = build_model("512-Dense", size=SIZE, base_filters=2, dense_units=8, geometry="parallel")
    model.save(recon / "model.keras")
    (recon / "config.yaml").write_text(yaml.safe_dump({"data": {"hu_window": "xprospect"}}))
    real = Path(trained.config.data.real_dir) / "images"  # type: ignore[attr-defined]
    args = ["predict", "--model", str(recon), "--frontal", str(real / "r0.png")]
    return [*args, "--lateral", str(real / "r5.png")]


def test_predict_with_a_style_model(domains, trained, tmp_path) -> None:
    import nibabel as nib

    from xprospect.cli import main

    run = Path(trained.config.training.output_dir)  # type: ignore[attr-defined]
    args = _predict_args(trained, tmp_path)
    assert main([*args, "--out", str(tmp_path / "plain.nii.gz")]) == 0
    assert main([*args, "--out", str(tmp_path / "styled.nii.gz"), "--style-model", str(run)]) == 0
    plain = nib.load(tmp_path / "plain.nii.gz").get_fdata()
    styled = nib.load(tmp_path / "styled.nii.gz").get_fdata()
    assert plain.shape == styled.shape == (SIZE,) * 3 and not np.allclose(plain, styled)


def test_predict_refuses_a_style_generator_holding_code(trained, tmp_path, capsys) -> None:
    """A style run is a model too: its generators load in safe mode unless --trust-model."""
    import shutil

    import keras

    from xprospect.cli import main
    from xprospect.style.training import GENERATOR_FILES

    run = tmp_path / "style_run"
    shutil.copytree(Path(trained.config.training.output_dir), run)  # type: ignore[attr-defined]
    inp = keras.Input((None, None, 1))
    hostile = run / GENERATOR_FILES["real2drr"]
    hostile.unlink()
    keras.Model(inp, keras.layers.Lambda(lambda x: 1.0 - x)(inp)).save(hostile)
    args = [*_predict_args(trained, tmp_path), "--style-model", str(run)]
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "refused.nii.gz")]) == 6  # a model error
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "safe mode" in err[0] and str(hostile) in err[0]
    assert not (tmp_path / "refused.nii.gz").exists()
    code = main([*args, "--out", str(tmp_path / "trusted.nii.gz"), "--trust-model"])
    warned = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert code == 0 and (tmp_path / "trusted.nii.gz").exists()
    assert any(str(hostile) in line and "safe mode off" in line for line in warned), warned


# === Bad input ===


def test_bad_style_inputs_raise_typed_errors_naming_the_file(domains, tmp_path) -> None:
    from xprospect.errors import MissingDataError
    from xprospect.style.apply import StyleModel
    from xprospect.style.config import load_style_config

    ds, _ = domains
    missing = tmp_path / "no_real_xrays"
    cfg = style_config(ds, missing, tmp_path / "run")
    with pytest.raises(MissingDataError, match="no_real_xrays"):
        StyleTrainer(cfg, progress=False).fit()
    with pytest.raises(MissingDataError, match=r"style\.json"):
        StyleModel(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  dir: x\n  sizee: 64\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*sizee"):
        load_style_config(bad)
