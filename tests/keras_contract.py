"""One shared check of the Keras object contract for every custom layer, model, loss and metric.

The contract (the developers' brief): registered under the ``xprospect`` package, every init
argument kept as an attribute, ``get_config`` complete (``from_config`` rebuilds an equal
object), and a save/load round trip through ``.keras`` and through a TensorFlow SavedModel that
computes the same numbers. Test modules call :func:`check_layer`, :func:`check_model`,
:func:`check_loss` or :func:`check_metric` with a small instance and sample inputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

__all__ = ["check_layer", "check_loss", "check_metric", "check_model", "check_registration"]

ATOL = 1e-5


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def check_registration(obj: Any, init_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Registered name, init arguments kept as attributes and in ``get_config``; returns config."""
    name = keras.saving.get_registered_name(type(obj))
    assert name.startswith("xprospect>"), f"{type(obj).__name__} is registered as {name!r}"
    config = obj.get_config()
    for key, value in init_kwargs.items():
        assert hasattr(obj, key), f"{type(obj).__name__} does not keep init argument {key!r}"
        assert _same(getattr(obj, key), value), f"{key}: {getattr(obj, key)!r} != {value!r}"
        assert key in config, f"get_config() of {type(obj).__name__} lacks {key!r}"
        assert _same(config[key], value) or isinstance(value, keras.layers.Layer), (
            f"get_config()[{key!r}] = {config[key]!r}, expected {value!r}"
        )
    clone = type(obj).from_config(config)
    assert _same(clone.get_config(), config), "from_config(get_config()) changes the config"
    return config


def _as_numpy(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {k: _as_numpy(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_as_numpy(v) for v in x]
    return keras.ops.convert_to_numpy(x)


def _assert_outputs_close(a: Any, b: Any, atol: float) -> None:
    a, b = _as_numpy(a), _as_numpy(b)
    if isinstance(a, Mapping):
        for k in a:
            np.testing.assert_allclose(a[k], b[k], atol=atol, rtol=1e-5)
    elif isinstance(a, list):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_allclose(x, y, atol=atol, rtol=1e-5)
    else:
        np.testing.assert_allclose(a, b, atol=atol, rtol=1e-5)


def check_model(
    model: keras.Model, inputs: Any, tmp_path: Path, *, atol: float = ATOL, savedmodel: bool = True
) -> None:
    """``.keras`` and SavedModel round trips give the same outputs as the live model."""
    expected = model(inputs, training=False)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    _assert_outputs_close(expected, loaded(inputs, training=False), atol)
    if savedmodel:
        export_dir = tmp_path / "savedmodel"
        model.export(str(export_dir), format="tf_saved_model")
        served = tf.saved_model.load(str(export_dir))
        _assert_outputs_close(expected, served.serve(inputs), atol)


def check_layer(
    layer: keras.layers.Layer,
    init_kwargs: Mapping[str, Any],
    inputs: Any,
    tmp_path: Path,
    *,
    atol: float = ATOL,
) -> None:
    """Registration and config, then the layer inside a functional model through both formats."""
    check_registration(layer, init_kwargs)
    if isinstance(inputs, Mapping):
        sym: Any = {k: keras.Input(np.shape(v)[1:], name=k) for k, v in inputs.items()}
    elif isinstance(inputs, list | tuple):
        sym = [keras.Input(np.shape(v)[1:]) for v in inputs]
    else:
        sym = keras.Input(np.shape(inputs)[1:])
    model = keras.Model(sym, layer(sym))
    check_model(model, inputs, tmp_path, atol=atol)


def check_loss(
    loss: keras.losses.Loss,
    init_kwargs: Mapping[str, Any],
    y_true: np.ndarray,
    y_pred: np.ndarray,
    tmp_path: Path,
) -> None:
    """Registration and config, serialisation round trip, and survival in a saved compiled model."""
    check_registration(loss, init_kwargs)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(restored(y_true, y_pred)),
        keras.ops.convert_to_numpy(loss(y_true, y_pred)),
        rtol=1e-6,
    )
    inp = keras.Input(y_pred.shape[1:])
    model = keras.Model(inp, keras.layers.Identity()(inp))
    model.compile(optimizer="sgd", loss=loss)
    model.save(tmp_path / "with_loss.keras")
    loaded = keras.saving.load_model(tmp_path / "with_loss.keras")
    assert type(loaded.loss).__name__ == type(loss).__name__


def check_metric(
    metric: keras.metrics.Metric,
    init_kwargs: Mapping[str, Any],
    y_true: np.ndarray,
    y_pred: np.ndarray,
    tmp_path: Path,
) -> None:
    """Registration and config, serialisation round trip with equal results, and reset."""
    check_registration(metric, init_kwargs)
    metric.update_state(y_true, y_pred)
    value = keras.ops.convert_to_numpy(metric.result())
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(metric))
    restored.update_state(y_true, y_pred)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(restored.result()), value, rtol=1e-6)
    metric.reset_state()
    metric.update_state(y_true, y_pred)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(metric.result()), value, rtol=1e-6)
    inp = keras.Input(y_pred.shape[1:])
    model = keras.Model(inp, keras.layers.Identity()(inp))
    model.compile(optimizer="sgd", loss="mae", metrics=[metric])
    model.save(tmp_path / "with_metric.keras")
    keras.saving.load_model(tmp_path / "with_metric.keras")
