"""SavedModel export for TF Serving, and the serving client against a loopback test double.

One tiny biplanar model (512-Dense at 32^3, base_filters 4) is exported once per test session
and shared between pytest-xdist workers through a file lock; tests only read it. The client tests
run against ``tests/serving_double.py``, a test double of TF Serving (not TF Serving itself).
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from xprospect.cli import main
from xprospect.errors import OutputExistsError
from xprospect.export import SIGNATURES, WARMUP_FILE, export_model, next_version, prepare_images
from xprospect.inference import (
    load_predictor,
    prepare_xray,
    volume_from_output,
    without_graph_rewrites,
)
from xprospect.serving import Client, ServingError, make_ndarray, make_tensor_proto

SIZE = 32
HU_WINDOW = (-1000.0, 1000.0)
FOV_MM = 256.0  # what the fake dataset manifest says; the model card and Volume must carry it
SAVED_MODEL_CLI = Path(sys.executable).parent / "saved_model_cli"  # .venv/bin/saved_model_cli


def _tiny_model(views=("frontal", "lateral")):
    from xprospect.models import build_model

    return build_model(
        "512-Dense", size=SIZE, views=views, base_filters=4, dense_units=64, geometry="parallel"
    )


def _make_run(root: Path) -> Path:
    """A run folder as 'xprospect train' leaves it, with a fake 3-case dataset manifest."""
    data = root / "data"
    data.mkdir(parents=True)
    cases = {"a": {"split": "train"}, "b": {"split": "train"}, "c": {"split": "val"}}
    manifest = {"config": {"size": SIZE, "fov_mm": FOV_MM}, "cases": cases}
    (data / "manifest.json").write_text(json.dumps(manifest))
    run = root / "run"
    run.mkdir()
    _tiny_model().save(run / "model.keras")
    config = {
        "name": "tiny-run",
        "data": {"dir": str(data), "hu_window": "xprospect"},
        "model": {"preset": "512-Dense", "size": SIZE, "overrides": {"base_filters": 4}},
        "training": {"steps": 7, "seed": 0},
    }
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "best.json").write_text(json.dumps({"step": 5, "val_psnr_3d": 12.5}))
    (run / "metrics.csv").write_text(
        "step,epoch,elapsed_s,loss,learning_rate,val_loss,val_psnr_3d,val_mae\n"
        "5,1,1.0,0.5,0.001,0.4,12.5,0.3\n7,1,1.5,0.45,0.001,,,\n"
    )
    return run


@pytest.fixture(scope="session")
def shared(tmp_path_factory, worker_id):
    """``{"run", "out", "version"}``: the tiny run and its export, made once for all workers."""
    base = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        base = base.parent  # shared by the xdist workers of this session
    root = base / "export_shared"
    root.mkdir(exist_ok=True)
    with (root / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not (root / "done").exists():
                run = _make_run(root)
                export_model(run, "tiny", output_dir=root / "out")
                (root / "done").write_text("ok")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return {"run": root / "run", "out": root / "out", "version": root / "out" / "tiny" / "1"}


@pytest.fixture(scope="session")
def keras_model(shared):
    import keras

    from xprospect.inference import register_custom_objects

    register_custom_objects()
    return keras.saving.load_model(shared["run"] / "model.keras", compile=False)


@pytest.fixture(scope="session")
def loaded(shared):
    import tensorflow as tf

    return tf.saved_model.load(str(shared["version"]))


def _xrays(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {v: rng.random((n, SIZE, SIZE, 1), dtype=np.float32) for v in ("frontal", "lateral")}


def _reference_hu(keras_model, inputs) -> np.ndarray:
    """HU from in-process Keras through the library's own un-windowing, rounded."""
    out = np.asarray(keras_model(inputs, training=False))
    return np.stack([np.round(volume_from_output(o, HU_WINDOW, FOV_MM).array) for o in out])


# --- layout --------------------------------------------------------------------------------


def test_layout_model_card_models_config_and_warmup(shared):
    import tensorflow as tf
    from google.protobuf import text_format
    from tensorflow_serving.apis import prediction_log_pb2
    from tensorflow_serving.config import model_server_config_pb2

    version = shared["version"]
    for name in ("saved_model.pb", "variables", "model_card.json", str(WARMUP_FILE)):
        assert (version / name).exists(), name
    assert not [p for p in (shared["out"] / "tiny").iterdir() if p.name.startswith(".")]

    card = json.loads((version / "model_card.json").read_text())
    assert card["name"] == "tiny" and card["version"] == 1
    assert card["model"]["preset"] == "512-Dense" and card["views"] == ["frontal", "lateral"]
    assert card["size"] == SIZE and card["hu_window"] == list(HU_WINDOW)
    assert card["fov_mm"] == FOV_MM and card["spacing_mm"] == FOV_MM / SIZE
    assert card["training"]["cases"] == {"train": 2, "val": 1}
    assert card["metrics"]["best_validation"]["val_psnr_3d"] == 12.5
    assert card["metrics"]["last_validation"]["step"] == 5
    assert set(card["signatures"]) == set(SIGNATURES)
    assert card["signatures"]["predict_hu"]["outputs"]["hu"] == {
        "dtype": "int16",
        "shape": [None, SIZE, SIZE, SIZE],
    }
    from xprospect import __version__

    assert card["xprospect_version"] == __version__ and card["exported_utc"]

    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse((shared["out"] / "models.config").read_text(), config)
    entries = {c.name: c for c in config.model_config_list.config}
    assert entries["tiny"].base_path == str((shared["out"] / "tiny").resolve())
    assert entries["tiny"].model_platform == "tensorflow"

    records = list(tf.data.TFRecordDataset(str(version / WARMUP_FILE)).as_numpy_iterator())
    logs = [prediction_log_pb2.PredictionLog.FromString(r) for r in records]
    assert [x.predict_log.request.model_spec.signature_name for x in logs] == list(SIGNATURES)
    request = logs[0].predict_log.request
    assert request.model_spec.name == "tiny"
    assert tf.make_ndarray(request.inputs["lateral"]).shape == (1, SIZE, SIZE, 1)
    assert tf.make_ndarray(logs[2].predict_log.request.inputs["frontal"]).dtype == np.uint16


def test_variables_stored_once(shared, keras_model):
    weight_bytes = sum(np.asarray(w).nbytes for w in keras_model.weights)
    variables = sum(f.stat().st_size for f in (shared["version"] / "variables").rglob("*"))
    assert weight_bytes <= variables <= 1.1 * weight_bytes
    card = json.loads((shared["version"] / "model_card.json").read_text())
    assert card["sizes"]["weight_bytes"] == weight_bytes
    assert card["sizes"]["variables_bytes"] == variables


# --- fresh process and saved_model_cli -----------------------------------------------------

_FRESH = """
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np, tensorflow as tf
sig = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
x = np.load(sys.argv[2])
out = sig(frontal=tf.constant(x["frontal"]), lateral=tf.constant(x["lateral"]))["volume"]
np.save(sys.argv[3], out.numpy())
"""


def test_fresh_process_matches_keras_and_cli_lists_signatures(shared, keras_model, tmp_path):
    inputs = _xrays(2, seed=1)
    np.savez(tmp_path / "in.npz", **inputs)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    # Both start at once: each pays TensorFlow's import.
    fresh = subprocess.Popen(
        [sys.executable, "-c", _FRESH, str(shared["version"]), str(tmp_path / "in.npz"),
         str(tmp_path / "out.npy")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    cli = subprocess.run(
        [str(SAVED_MODEL_CLI), "show", "--dir", str(shared["version"]), "--all"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    _, err = fresh.communicate(timeout=120)
    assert fresh.returncode == 0, err[-2000:]
    assert cli.returncode == 0, cli.stderr[-2000:]
    for sig in SIGNATURES:
        assert f"signature_def['{sig}']" in cli.stdout
    assert "dtype: DT_UINT16" in cli.stdout and "dtype: DT_INT16" in cli.stdout

    expected = np.asarray(keras_model(inputs, training=False))
    got = np.load(tmp_path / "out.npy")
    assert got.shape == (2, SIZE, SIZE, SIZE, 1)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


# --- signatures in process -----------------------------------------------------------------


def test_saved_model_predictor_matches_keras_and_leaves_grappler_as_it_was(shared, keras_model):
    import tensorflow as tf

    before = tf.config.optimizer.get_experimental_options()
    predictor = load_predictor(shared["version"])
    inputs = _xrays(3, seed=5)
    first = predictor.predict(inputs, batch_size=2)  # instantiates the function, Grappler off
    again = predictor.predict(inputs, batch_size=2)
    expected = np.asarray(keras_model(inputs, training=False))[..., 0]
    np.testing.assert_allclose(first, expected, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(again, first)  # the same instantiation, bit for bit
    np.testing.assert_allclose(predictor.predict(inputs, batch_size=3), expected, rtol=0, atol=1e-5)
    assert tf.config.optimizer.get_experimental_options() == before


def test_without_graph_rewrites_restores_the_setting_even_on_error():
    import tensorflow as tf

    before = tf.config.optimizer.get_experimental_options()
    with without_graph_rewrites():
        assert tf.config.optimizer.get_experimental_options()["disable_meta_optimizer"] is True
    assert tf.config.optimizer.get_experimental_options() == before
    with pytest.raises(RuntimeError, match="inside"), without_graph_rewrites():
        raise RuntimeError("inside")
    assert tf.config.optimizer.get_experimental_options() == before


def test_predict_hu_is_int16_unwindowed_output(loaded, keras_model):
    import tensorflow as tf

    inputs = _xrays(2, seed=2)
    hu = loaded.signatures["predict_hu"](**{k: tf.constant(v) for k, v in inputs.items()})["hu"]
    hu = hu.numpy()
    assert hu.dtype == np.int16 and hu.shape == (2, SIZE, SIZE, SIZE)
    # Independent of the library: the analytic window inverse, rounded.
    v = np.clip(np.asarray(keras_model(inputs, training=False))[..., 0], 0, 1)
    np.testing.assert_allclose(hu, np.round(v * 2000.0 - 1000.0), rtol=0, atol=1)
    assert hu.nbytes == 2 * 2 * SIZE**3


@pytest.mark.parametrize("shape", [(70, 45), (20, 27), (301, 257)])
def test_in_graph_image_preparation_matches_prepare_xray(shape):
    rng = np.random.default_rng(sum(shape))
    image = rng.integers(0, 4096, shape).astype(np.uint16)
    image[: shape[0] // 3] //= 5  # a darker band: the percentile window matters
    expected = prepare_xray(image, SIZE)
    got = prepare_images(image[None], SIZE).numpy()
    assert got.shape == (1, SIZE, SIZE, 1)
    np.testing.assert_allclose(got[0, ..., 0], expected, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(prepare_images(image[None, ..., None], SIZE).numpy(), got)


def test_predict_images_takes_raw_images_of_any_size(loaded, keras_model):
    import tensorflow as tf

    rng = np.random.default_rng(3)
    frontal = rng.integers(0, 256, (1, 50, 41), dtype=np.uint8)
    lateral = rng.integers(0, 60000, (1, 40, 64, 1), dtype=np.uint16)
    out = loaded.signatures["predict_images"](
        frontal=tf.constant(frontal.astype(np.uint16)), lateral=tf.constant(lateral)
    )["hu"].numpy()
    assert out.dtype == np.int16 and out.shape == (1, SIZE, SIZE, SIZE)
    prepared = {
        "frontal": prepare_xray(frontal[0], SIZE)[None, ..., None],
        "lateral": prepare_xray(lateral[0, ..., 0], SIZE)[None, ..., None],
    }
    np.testing.assert_allclose(out, _reference_hu(keras_model, prepared), rtol=0, atol=1)


# --- versions, single view -----------------------------------------------------------------


def test_versions_are_never_overwritten_and_count_up(shared, tmp_path):
    version = shared["version"]
    before = (version / "saved_model.pb").stat().st_mtime_ns
    with pytest.raises(OutputExistsError, match="never overwritten"):
        export_model(shared["run"], "tiny", version=1, output_dir=shared["out"])
    assert (version / "saved_model.pb").stat().st_mtime_ns == before

    out = tmp_path / "models"
    (out / "single" / "4").mkdir(parents=True)  # an older version folder (empty here)
    (out / "single" / "notes").mkdir()
    (out / "models.config").write_text(
        'model_config_list { config { name: "other" base_path: "/elsewhere/other" '
        'model_platform: "tensorflow" } }\n'
    )
    assert next_version(out / "single") == 5
    dest = export_model(
        _tiny_model(views=("frontal",)),
        "single",
        output_dir=out,
        warmup=False,
        serving_root="/models",
    )
    assert dest == out / "single" / "5"
    text = (out / "models.config").read_text()
    assert 'base_path: "/elsewhere/other"' in text  # the hand-written entry is kept
    assert 'base_path: "/models/single"' in text
    with pytest.raises(OutputExistsError):
        export_model(_tiny_model(views=("frontal",)), "single", version=5, output_dir=out)

    import tensorflow as tf

    sigs = tf.saved_model.load(str(dest)).signatures
    for sig in SIGNATURES:
        assert list(sigs[sig].structured_input_signature[1]) == ["frontal"]
    hu = sigs["predict_hu"](frontal=tf.zeros((1, SIZE, SIZE, 1)))["hu"]
    assert hu.shape == (1, SIZE, SIZE, SIZE)
    assert json.loads((dest / "model_card.json").read_text())["views"] == ["frontal"]


# --- client against the test double --------------------------------------------------------


@pytest.fixture(scope="module")
def double(shared):
    from serving_double import ServingDouble

    with ServingDouble({"tiny": shared["out"] / "tiny"}) as server:
        yield server


def test_client_rest_and_grpc_match_keras(double, shared, keras_model):
    inputs = _xrays(1, seed=4)
    expected = _reference_hu(keras_model, inputs)[0]
    volumes = {}
    for protocol in ("rest", "grpc"):
        with Client(
            "tiny",
            protocol=protocol,
            grpc_port=double.grpc_port,
            rest_port=double.rest_port,
            model_card=shared["version"],
        ) as client:
            volumes[protocol] = client.predict(inputs["frontal"][0], inputs["lateral"][0])
    for vol in volumes.values():
        assert vol.array.dtype == np.int16 and vol.is_canonical
        assert vol.spacing_mm == pytest.approx((FOV_MM / SIZE,) * 3)
        np.testing.assert_allclose(vol.array, expected, rtol=0, atol=1)
        np.testing.assert_allclose(
            vol.affine, volume_from_output(expected, HU_WINDOW, FOV_MM).affine
        )
    np.testing.assert_array_equal(volumes["rest"].array, volumes["grpc"].array)
    assert [r[0] for r in double.requests[-2:]] == ["rest", "grpc"]


def test_client_serving_default_and_predict_images(double, shared, keras_model):
    inputs = _xrays(1, seed=5)
    client = Client("tiny", grpc_port=double.grpc_port, signature="serving_default",
                    hu_window="xprospect", fov_mm=FOV_MM)  # fmt: skip
    vol = client.predict(inputs["frontal"][0], inputs["lateral"][0])
    expected = volume_from_output(
        np.asarray(keras_model(inputs, training=False))[0], HU_WINDOW, FOV_MM
    )
    assert vol.array.dtype == np.float32
    np.testing.assert_allclose(vol.array, expected.array, rtol=0, atol=2e-2)  # 1e-5 of 2000 HU

    rng = np.random.default_rng(6)
    raw = {v: rng.integers(0, 256, (48, 40), dtype=np.uint8) for v in ("frontal", "lateral")}
    images = Client("tiny", protocol="rest", rest_port=double.rest_port,
                    signature="predict_images", model_card=shared["version"])  # fmt: skip
    got = images.predict(raw["frontal"], raw["lateral"])
    prepared = {v: prepare_xray(a, SIZE)[None, ..., None] for v, a in raw.items()}
    np.testing.assert_allclose(got.array, _reference_hu(keras_model, prepared)[0], atol=1)


def test_client_errors_are_one_line(double):
    client = Client("missing", protocol="rest", rest_port=double.rest_port)
    with pytest.raises(ServingError, match=r"HTTP 404.*Servable not found"):
        client.predict(np.zeros((SIZE, SIZE), np.float32))
    grpc_client = Client("tiny", grpc_port=double.grpc_port)
    with pytest.raises(ServingError, match=r"INVALID_ARGUMENT.*input size does not match"):
        grpc_client.predict(np.zeros((SIZE, SIZE), np.float32))  # lateral missing
    from xprospect.errors import ConfigError

    with pytest.raises(ConfigError, match="predict_images"):
        grpc_client.predict(np.zeros((SIZE, SIZE), np.uint8), np.zeros((SIZE, SIZE), np.uint8))


@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.uint16, np.uint8, np.float64])
def test_tensor_proto_round_trips_like_tensorflow(dtype):
    import tensorflow as tf

    rng = np.random.default_rng(7)
    a = (rng.random((2, 3, 4)) * 200 - (0 if np.dtype(dtype).kind == "u" else 100)).astype(dtype)
    proto = make_tensor_proto(a)
    np.testing.assert_array_equal(tf.make_ndarray(proto), a)  # TensorFlow reads ours
    np.testing.assert_array_equal(make_ndarray(tf.make_tensor_proto(a)), a)  # we read TF's
    from serving_double import as_proto_field

    field = as_proto_field(a)  # TF Serving's default encoding: typed value fields
    assert not field.tensor_content
    np.testing.assert_array_equal(make_ndarray(field), a)
    np.testing.assert_array_equal(tf.make_ndarray(field), a)


# --- CLI -----------------------------------------------------------------------------------


def test_cli_missing_run_is_one_line_error(tmp_path, capsys):
    code = main(["export", str(tmp_path / "nope"), "--name", "x", "--output-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 6  # a model error: the run to export is missing
    assert len(err) == 1 and "nope" in err[0] and err[0].startswith("xprospect: error:")
    assert not (tmp_path / "x").exists()
