"""SavedModel export for TF Serving: ``xprospect export RUN --name NAME [--version N]``.

:func:`export_model` writes ``OUTPUT/NAME/VERSION/``, the layout TF Serving watches::

    OUTPUT/models.config                      TF Serving model config (one entry per model)
    OUTPUT/NAME/VERSION/saved_model.pb        graph and the three signatures below
    OUTPUT/NAME/VERSION/variables/            the weights, stored once
    OUTPUT/NAME/VERSION/assets.extra/tf_serving_warmup_requests
                                              a few PredictionLog records TF Serving replays
                                              at load time (``--enable_model_warmup``)
    OUTPUT/NAME/VERSION/model_card.json       preset, views, HU window, training data, metrics

The SavedModel is saved with ``tf.saved_model.save`` from a ``tf.Module`` that tracks the Keras
model, so its variables are written once (``keras.Model.export`` tracks them twice and writes
twice the bytes). The network is traced once, as a function every signature calls (Keras adds
one more copy of the graph for the model's own default signature; ``saved_model.pb`` is about
1.1-1.4 MiB for a DualUNet whatever its width). Signatures (``S`` is the model's size;
single-view models take ``frontal`` only):

- ``serving_default``: ``frontal`` [, ``lateral``] float32 ``[None, S, S, 1]`` normalised to
  [0, 1] (:func:`xprospect.inference.prepare_xray`) -> ``volume`` float32 ``[None, S, S, S, 1]``
  in [0, 1] (the Keras model's output).
- ``predict_hu``: the same inputs -> ``hu`` int16 ``[None, S, S, S]``.
- ``predict_images``: ``frontal`` [, ``lateral``] uint16 of any size, ``[None, H, W]`` or
  ``[None, H, W, 1]`` (declared with unknown rank) -> ``hu`` int16 ``[None, S, S, S]``.

``predict_hu`` un-windows the output with the run's ``hu_window``: ``round(clip(v, 0, 1) *
(high - low) + low)`` as int16 (what :func:`xprospect.inference.volume_from_output` computes,
rounded), 2 bytes a voxel: 4 MiB at 128^3 instead of 8 MiB of float32.

``predict_images`` takes raw detector or PNG values. A signature has one dtype per input, and
uint16 holds every uint8 value exactly: send 8-bit images cast to uint16 (REST JSON carries plain
numbers, so nothing changes there; :class:`xprospect.serving.Client` casts for gRPC). Inside
the graph each image is prepared as :func:`xprospect.inference.prepare_xray` does it: padded to a
square with its minimum, resized to ``S`` with the same separable linear interpolation and
Gaussian anti-aliasing (sigma ``(f - 1) / 2`` when shrinking by ``f``, edge replication), and
windowed between its 0.5th and 99.5th percentiles (linear interpolation between order
statistics, as ``np.percentile``) onto [0, 1]. Differences: the graph computes in float32 where
NumPy uses float64 for the resize weights' accumulation order and the percentile window, so
inputs differ by about 1e-6 (see :func:`prepare_images`). All images of one view in a batch share
one ``H x W`` (they are one tensor).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xprospect.constants import DEFAULT_FOV_MM, VIEW_SETS, VIEWS
from xprospect.errors import ConfigError, MissingDataError, OutputExistsError, XprospectError
from xprospect.preprocessing import XRAY_WINDOW_PERCENTILES
from xprospect.utils import read_json_file

__all__ = [
    "HU_OUTPUT_KEY",
    "SIGNATURES",
    "VOLUME_OUTPUT_KEY",
    "WARMUP_FILE",
    "build_serving_module",
    "export_model",
    "next_version",
    "prepare_images",
    "read_model_card",
    "update_models_config",
]

log = logging.getLogger(__name__)

SIGNATURES: tuple[str, str, str] = ("serving_default", "predict_hu", "predict_images")
"""The signature names every exported model has."""
VOLUME_OUTPUT_KEY = "volume"
"""Output key of ``serving_default`` (float32, normalised)."""
HU_OUTPUT_KEY = "hu"
"""Output key of ``predict_hu`` and ``predict_images`` (int16 HU)."""
WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
"""Where TF Serving looks for warmup requests inside a version folder."""
MODEL_CARD = "model_card.json"
MODELS_CONFIG = "models.config"
LOW_PERCENTILE, HIGH_PERCENTILE = XRAY_WINDOW_PERCENTILES
# scipy.ndimage.gaussian_filter1d's default truncation, as xprospect.preprocessing uses it.
_GAUSS_TRUNCATE = 4.0


# ---------------------------------------------------------------------------------------------
# In-graph preprocessing
# ---------------------------------------------------------------------------------------------
def _resize_matrix(n_old: Any, n_new: int) -> Any:
    """The ``(n_new, n_old)`` float32 matrix of :func:`xprospect.preprocessing.resize_array`.

    Gaussian pre-filter (sigma ``(f - 1) / 2`` for a shrink by ``f``, edge replication) fused
    with linear interpolation at ``(m + 0.5) * n_old / n_new - 0.5``, built for a size known only
    when the graph runs.
    """
    import tensorflow as tf

    n_i = tf.cast(n_old, tf.int32)
    n = tf.cast(n_i, tf.float64)
    step = n / float(n_new)
    offset = (n - 1.0) / 2.0 - step * (n_new - 1) / 2.0
    x = step * tf.range(n_new, dtype=tf.float64) + offset
    x = tf.clip_by_value(x, 0.0, n - 1.0)
    i0 = tf.floor(x)
    frac = x - i0
    sigma = tf.maximum((step - 1.0) / 2.0, 0.0)
    radius = tf.cast(tf.floor(_GAUSS_TRUNCATE * sigma + 0.5), tf.int32)
    taps = tf.range(-radius, radius + 1)
    safe_sigma = tf.maximum(sigma, 1e-12)  # radius is 0 then: one tap of weight exp(0) = 1
    kern = tf.exp(-0.5 / (safe_sigma * safe_sigma) * tf.cast(taps, tf.float64) ** 2)
    kern = kern / tf.reduce_sum(kern)
    base = tf.cast(i0, tf.int32)[:, None] + taps[None, :]
    cols = tf.clip_by_value(tf.concat([base, base + 1], axis=1), 0, n_i - 1)
    vals = tf.concat([(1.0 - frac)[:, None] * kern, frac[:, None] * kern], axis=1)
    rows = tf.broadcast_to(tf.range(n_new)[:, None], tf.shape(cols))
    index = tf.stack([tf.reshape(rows, [-1]), tf.reshape(cols, [-1])], axis=1)
    # scatter_nd adds duplicate indices, as the clipped taps at the edges need.
    matrix = tf.scatter_nd(index, tf.reshape(vals, [-1]), tf.stack([n_new, n_i]))
    return tf.cast(matrix, tf.float32)


def _percentiles(flat: Any, percents: Sequence[float]) -> list[Any]:
    """``np.percentile(..., method="linear")`` of each row of ``flat`` (B, N)."""
    import tensorflow as tf

    ordered = tf.sort(flat, axis=1)
    n = tf.shape(flat)[1]
    last = tf.cast(n - 1, tf.float32)
    out = []
    for p in percents:
        pos = p / 100.0 * last
        lo = tf.cast(tf.floor(pos), tf.int32)
        hi = tf.minimum(lo + 1, n - 1)
        w = pos - tf.cast(lo, tf.float32)
        a = tf.gather(ordered, lo, axis=1)
        b = tf.gather(ordered, hi, axis=1)
        out.append(a + (b - a) * w)
    return out


def prepare_images(images: Any, size: int) -> Any:
    """Raw radiographs as model inputs, in TensorFlow ops (the ``predict_images`` front end).

    Mirrors :func:`xprospect.inference.prepare_xray` on every image of the batch: pad to a
    square with the image minimum (the odd extra pixel at the end), resize to ``size`` (linear,
    Gaussian anti-aliasing), window between the 0.5th and 99.5th percentiles to [0, 1] (all zeros
    for a constant image). float32 throughout, so results match NumPy's to about 1e-6.

    Args:
        images: Integer or float tensor ``(B, H, W)`` or ``(B, H, W, 1)``; any ``H``, ``W``.
        size: Output side ``S``.

    Returns:
        float32 tensor ``(B, S, S, 1)`` in [0, 1].
    """
    import tensorflow as tf

    x = tf.convert_to_tensor(images)
    rank = tf.rank(x)
    shape = tf.shape(x)
    ok = tf.logical_or(
        tf.equal(rank, 3),
        tf.logical_and(tf.equal(rank, 4), tf.equal(shape[-1], 1)),
    )
    with tf.control_dependencies(
        [tf.debugging.Assert(ok, ["images must be [batch, H, W] or [batch, H, W, 1]; got", shape])]
    ):
        x = tf.reshape(x, shape[:3])
    x = tf.cast(x, tf.float32)
    h, w = shape[1], shape[2]
    n = tf.maximum(h, w)
    low = tf.reduce_min(x, axis=[1, 2], keepdims=True)
    pads = [[0, 0], [(n - h) // 2, n - h - (n - h) // 2], [(n - w) // 2, n - w - (n - w) // 2]]
    # Padding x - min with zeros pads x with its own minimum (exact for integer inputs).
    x = tf.pad(x - low, pads) + low
    m = _resize_matrix(n, size)
    x = tf.einsum("ij,bjk,lk->bil", m, x, m)
    flat = tf.reshape(x, [-1, size * size])
    lo, hi = _percentiles(flat, (LOW_PERCENTILE, HIGH_PERCENTILE))
    lo = lo[:, None, None]
    hi = hi[:, None, None]
    span = hi - lo
    scaled = tf.clip_by_value((x - lo) / tf.where(span > 0, span, 1.0), 0.0, 1.0)
    out = tf.where(span > 0, scaled, tf.zeros_like(x))
    return out[..., None]


def _to_hu(volume01: Any, hu_window: tuple[float, float]) -> Any:
    """Normalised ``(B, S, S, S, 1)`` to int16 HU ``(B, S, S, S)``: un-window, round, clip."""
    import tensorflow as tf

    low, high = hu_window
    v = tf.clip_by_value(tf.cast(volume01[..., 0], tf.float32), 0.0, 1.0)
    hu = tf.round(v * np.float32(high - low) + np.float32(low))
    return tf.cast(tf.clip_by_value(hu, -32768.0, 32767.0), tf.int16)


# ---------------------------------------------------------------------------------------------
# The exported module
# ---------------------------------------------------------------------------------------------
def _view_function(views: tuple[str, ...], body: Callable[[dict[str, Any]], Any]) -> Any:
    # Signature input names come from the Python argument names, so each view set gets a
    # function with named arguments.
    if views == VIEWS:

        def two(frontal: Any, lateral: Any) -> Any:
            return body({"frontal": frontal, "lateral": lateral})

        return two

    def one(frontal: Any) -> Any:
        return body({"frontal": frontal})

    return one


def build_serving_module(
    model: Any, views: Sequence[str], size: int, hu_window: tuple[float, float]
) -> tuple[Any, dict[str, Any]]:
    """A ``tf.Module`` tracking ``model``, and the three serving signatures.

    The signatures are concrete functions passed to ``tf.saved_model.save`` only, not module
    attributes, which would store each graph again for Python's ``tf.saved_model.load``.

    Args:
        model: The Keras model (inputs ``{"frontal": (B, S, S, 1)[, "lateral": ...]}``).
        views: ``("frontal", "lateral")`` or ``("frontal",)``.
        size: ``S``.
        hu_window: ``(low, high)`` HU that the output's [0, 1] maps to.

    Returns:
        ``(module, signatures)``: save with ``tf.saved_model.save(module, path, signatures)``.

    Raises:
        ConfigError: Views other than frontal[/lateral].
    """
    import tensorflow as tf

    views = tuple(views)
    if views not in VIEW_SETS:
        raise ConfigError(f"cannot export a model with views {list(views)}")
    window = (float(hu_window[0]), float(hu_window[1]))
    float_specs = [tf.TensorSpec([None, size, size, 1], tf.float32, name=v) for v in views]
    image_specs = [tf.TensorSpec(None, tf.uint16, name=v) for v in views]

    module = tf.Module(name="xprospect_serving")
    module.model = model  # tracked: its variables are saved once, under this module

    def run_model(inputs: dict[str, Any]) -> Any:
        return tf.cast(model(inputs, training=False), tf.float32)

    # One traced copy of the network, which every signature calls.
    volume01 = tf.function(
        _view_function(views, run_model), input_signature=float_specs, autograph=False
    ).get_concrete_function()

    def default(inputs: dict[str, Any]) -> dict[str, Any]:
        return {VOLUME_OUTPUT_KEY: volume01(*(inputs[v] for v in views))}

    def hu(inputs: dict[str, Any]) -> dict[str, Any]:
        return {HU_OUTPUT_KEY: _to_hu(volume01(*(inputs[v] for v in views)), window)}

    def images(inputs: dict[str, Any]) -> dict[str, Any]:
        prepared = [prepare_images(inputs[v], size) for v in views]
        return {HU_OUTPUT_KEY: _to_hu(volume01(*prepared), window)}

    bodies = {"serving_default": default, "predict_hu": hu, "predict_images": images}
    specs = {"serving_default": float_specs, "predict_hu": float_specs}
    signatures = {
        sig: tf.function(
            _view_function(views, bodies[sig]),
            input_signature=specs.get(sig, image_specs),
            autograph=False,
        ).get_concrete_function()
        for sig in SIGNATURES
    }
    return module, signatures


# ---------------------------------------------------------------------------------------------
# Sources, versions, models.config, model card
# ---------------------------------------------------------------------------------------------
def _load_source(source: Any) -> tuple[Any, dict[str, Any], Path | None]:
    """The Keras model, the run's config (may be empty) and the run folder (or None)."""
    # A missing path fails before TensorFlow is imported: a quick one-line CLI error.
    if isinstance(source, str | os.PathLike) and not Path(source).exists():
        raise MissingDataError("no run folder or .keras file here", source)
    import keras

    if isinstance(source, keras.Model):
        return source, {}, None
    from xprospect.inference import register_custom_objects

    p = Path(source)
    run_dir: Path | None = None
    meta: dict[str, Any] = {}
    if p.is_dir():
        if not (p / "model.keras").exists():
            raise MissingDataError(
                "expected a run folder with model.keras (written when 'xprospect train' ends)", p
            )
        run_dir, model_path = p, p / "model.keras"
        config_path = p / "config.yaml"
        if config_path.exists():
            from xprospect.config.engine import read_yaml_file

            meta = read_yaml_file(config_path) or {}
            if not isinstance(meta, dict):
                raise ConfigError("a run's config must be a mapping of sections", config_path)
    elif p.suffix == ".keras":
        model_path = p
    else:
        raise MissingDataError("expected a run folder or a .keras file", p)
    register_custom_objects()
    # compile=False: an optimizer attached to the model would be tracked and saved with it.
    model = keras.saving.load_model(model_path, compile=False)
    return model, meta, run_dir


def _model_views_size(model: Any) -> tuple[tuple[str, ...], int]:
    from xprospect.inference import xray_inputs

    inputs = xray_inputs(model)
    names = tuple(getattr(t, "name", "").split(":")[0] for t in inputs)
    views = tuple(v for v in VIEWS if v in names)
    if not views or len(views) != len(names):
        raise ConfigError(f"model inputs must be named frontal[/lateral], got {list(names)}")
    shape = tuple(inputs[0].shape)
    if len(shape) != 4 or shape[1] != shape[2] or shape[1] is None:
        raise ConfigError(f"model input must be (batch, S, S, 1), got {shape}")
    return views, int(shape[1])


def next_version(model_dir: str | os.PathLike[str]) -> int:
    """1 + the highest numeric version folder under ``OUTPUT/NAME`` (1 when there is none)."""
    p = Path(model_dir)
    versions = (
        [int(c.name) for c in p.iterdir() if c.is_dir() and c.name.isdigit()] if p.is_dir() else []
    )
    return max(versions, default=0) + 1


def _check_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name or ""):
        raise ConfigError(
            f"model name {name!r} must be letters, digits, '_', '.' or '-' (a folder and a "
            "TF Serving model name)"
        )
    return name


def _served_models(output_dir: Path) -> list[str]:
    """Names of the folders under ``output_dir`` that hold at least one SavedModel version."""
    if not output_dir.is_dir():
        return []
    return sorted(
        d.name
        for d in output_dir.iterdir()
        if d.is_dir()
        and not d.name.startswith(".")
        and any(v.name.isdigit() and (v / "saved_model.pb").exists() for v in d.iterdir())
    )


def _read_models_config(path: Path) -> Any:
    """The ``ModelServerConfig`` in ``path`` (empty when there is no file)."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    if path.exists():
        try:
            text_format.Parse(path.read_text(), config)
        except text_format.ParseError as exc:
            raise ConfigError(f"not a TF Serving model config: {exc}", path) from exc
    return config


def update_models_config(
    output_dir: str | os.PathLike[str], *, serving_root: str | None = None
) -> Path:
    """Writes ``OUTPUT/models.config`` (TF Serving ``--model_config_file``) atomically.

    Entries already in the file are kept as they are (hand-edited version policies, models
    elsewhere); every model folder under ``OUTPUT`` without an entry gets one with
    ``base_path = SERVING_ROOT/NAME`` and ``model_platform: "tensorflow"``.

    Args:
        output_dir: The folder holding ``NAME/VERSION/`` trees.
        serving_root: Where TF Serving sees ``output_dir``: ``"/models"`` when it is mounted
            there in the ``tensorflow/serving`` container; default its absolute path here.

    Returns:
        The config file's path.

    Raises:
        ConfigError: The existing file is not a ``ModelServerConfig`` text proto.
    """
    from google.protobuf import text_format

    from xprospect.utils import atomic_path

    out = Path(output_dir)
    path = out / MODELS_CONFIG
    config = _read_models_config(path)
    root = (serving_root or str(out.resolve())).rstrip("/")
    known = {c.name for c in config.model_config_list.config}
    for name in _served_models(out):
        if name not in known:
            entry = config.model_config_list.config.add()
            entry.name = name
            entry.base_path = f"{root}/{name}"
            entry.model_platform = "tensorflow"
    with atomic_path(path) as tmp:
        tmp.write_text(text_format.MessageToString(config))
    return path


def read_model_card(version_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``model_card.json`` of an exported version folder.

    Raises:
        MissingDataError: There is none or it is not a JSON object.
    """
    path = Path(version_dir) / MODEL_CARD
    data = read_json_file(path, error=MissingDataError, what="model card")
    if not isinstance(data, dict):
        raise MissingDataError("model card is not a JSON object", path)
    return data


def _folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _dataset_facts(meta: Mapping[str, Any], run_dir: Path | None) -> dict[str, Any]:
    data_dir = str(meta.get("data", {}).get("dir") or "")
    facts: dict[str, Any] = {"data_dir": data_dir or None}
    if not data_dir:
        return facts
    candidates = [Path(data_dir)]
    if run_dir is not None and not Path(data_dir).is_absolute():
        candidates += [run_dir.parent / data_dir, run_dir / data_dir]
    for folder in candidates:
        manifest = folder / "manifest.json"
        if not manifest.exists():
            continue
        try:
            data = read_json_file(manifest, what="dataset manifest")
        except XprospectError:
            break
        if not isinstance(data, dict):
            break
        counts: dict[str, int] = {}
        for case in data.get("cases", {}).values():
            split = str(case.get("split", "?"))
            counts[split] = counts.get(split, 0) + 1
        kinds = sorted({str(c.get("kind", "?")) for c in data.get("cases", {}).values()})
        facts.update(
            cases=dict(sorted(counts.items())),
            case_kinds=kinds,
            dataset=data.get("config", {}),
        )
        break
    return facts


def _run_metrics(run_dir: Path | None) -> dict[str, Any]:
    if run_dir is None:
        return {}
    from xprospect.training.checkpoints import read_json
    from xprospect.training.logs import read_metrics

    out: dict[str, Any] = {}
    best = read_json(run_dir / "best.json")
    if best:
        out["best_validation"] = best
    state = read_json(run_dir / "state.json")
    rows = read_metrics(run_dir / "metrics.csv")
    val_rows = [r for r in rows if r.get("val_psnr_3d")]
    if val_rows:
        last = val_rows[-1]
        out["last_validation"] = {
            k: float(v) if k != "step" else int(v)
            for k, v in last.items()
            if v not in ("", None) and (k == "step" or k.startswith("val_"))
        }
    if rows:
        out["last_train"] = {
            "step": int(rows[-1]["step"]),
            "loss": float(rows[-1]["loss"]) if rows[-1].get("loss") else None,
        }
    if state:
        out["trained_steps"] = state.get("step")
        out["elapsed_s"] = state.get("elapsed_s")
    out["weights"] = "final (model.keras), not best.weights.h5"
    return out


def _spec_json(spec: Any) -> dict[str, Any]:
    shape = None if spec.shape.rank is None else spec.shape.as_list()
    return {"dtype": spec.dtype.name, "shape": shape}


def _model_card(
    *,
    name: str,
    version: int,
    source: Any,
    model: Any,
    meta: Mapping[str, Any],
    run_dir: Path | None,
    views: tuple[str, ...],
    size: int,
    hu_window: tuple[float, float],
    fov_mm: float,
    signatures: Mapping[str, Any],
    weight_bytes: int,
) -> dict[str, Any]:
    import keras
    import tensorflow as tf

    from xprospect import __version__

    model_cfg = dict(meta.get("model", {}) or {})
    policy = getattr(model, "dtype_policy", None)
    layer_policies: dict[str, int] = {}
    for layer in getattr(model, "layers", []):
        key = getattr(getattr(layer, "dtype_policy", None), "name", "?")
        layer_policies[key] = layer_policies.get(key, 0) + 1
    described = {}
    for sig, fn in signatures.items():
        outputs = fn.structured_outputs
        described[sig] = {
            "inputs": {s.name: _spec_json(s) for s in fn.structured_input_signature[0]},
            "outputs": {k: _spec_json(tf.TensorSpec.from_tensor(v)) for k, v in outputs.items()},
        }
    return {
        "name": name,
        "version": version,
        "format": "TensorFlow SavedModel (tf.saved_model.save of a tf.Module), tag 'serve'",
        "exported_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "xprospect_version": __version__,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "source": None if isinstance(source, keras.Model) else str(source),
        "run_name": meta.get("name") or None,
        "model": {
            "preset": model_cfg.get("preset"),
            "class": type(model).__name__,
            "overrides": model_cfg.get("overrides") or {},
            "geometry": model_cfg.get("geometry"),
            "parameters": int(model.count_params()),
            "dtype_policy": getattr(policy, "name", None),
            "layer_dtype_policies": dict(sorted(layer_policies.items())),
        },
        "views": list(views),
        "size": size,
        "input_shape": [size, size, 1],
        "output_shape": [size, size, size],
        "hu_window": [float(hu_window[0]), float(hu_window[1])],
        "fov_mm": float(fov_mm),
        "spacing_mm": float(fov_mm) / size,
        "orientation": "canonical (I, P, L): axis 0 head to feet, 1 front to back, 2 right to left",
        "preprocessing": {
            "serving_default/predict_hu": "inputs already prepared: square (S, S), [0, 1], "
            "bright = dense (xprospect.inference.prepare_xray)",
            "predict_images": "in the graph: pad to square with the minimum, resize to S "
            "(linear, Gaussian anti-aliasing), 0.5-99.5 percentile window to [0, 1]; send "
            "uint16 (cast 8-bit images up)",
        },
        "signatures": described,
        "training": {
            **_dataset_facts(meta, run_dir),
            "xray_mapping": (meta.get("data") or {}).get("xray_mapping"),
            "loss": meta.get("loss"),
            "optimizer": (meta.get("optimizer") or {}).get("name"),
            "steps": (meta.get("training") or {}).get("steps"),
            "seed": (meta.get("training") or {}).get("seed"),
            "mixed_precision": (meta.get("training") or {}).get("mixed_precision"),
        },
        "metrics": _run_metrics(run_dir),
        "sizes": {"weight_bytes": weight_bytes},
    }


def _fov_mm(meta: Mapping[str, Any], run_dir: Path | None, size: int) -> float:
    facts = _dataset_facts(meta, run_dir)
    fov = (facts.get("dataset") or {}).get("fov_mm")
    if fov:
        return float(fov)
    spacing = (meta.get("model") or {}).get("spacing_mm")
    return float(spacing) * size if spacing else DEFAULT_FOV_MM


def _write_warmup(path: Path, name: str, views: tuple[str, ...], size: int, seed: int = 0) -> int:
    """Writes warmup requests: one per signature (batch 1); returns how many."""
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    rng = np.random.default_rng(seed)
    floats = {v: rng.random((1, size, size, 1), dtype=np.float32) for v in views}
    # A non-square image of another size exercises the pad-and-resize path.
    raw = {v: rng.integers(0, 4096, (1, 2 * size, 2 * size - 3), dtype=np.uint16) for v in views}
    requests: list[tuple[str, dict[str, np.ndarray]]] = [
        ("serving_default", floats),
        ("predict_hu", floats),
        ("predict_images", raw),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for sig, inputs in requests:
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=name, signature_name=sig)
            )
            for key, value in inputs.items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
            log_record = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log_record.SerializeToString())
    return len(requests)


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------
def export_model(
    source: str | os.PathLike[str] | Any,
    name: str,
    *,
    version: int | None = None,
    output_dir: str | os.PathLike[str] = "saved_models",
    warmup: bool = True,
    serving_root: str | None = None,
    hu_window: Sequence[float] | str | None = None,
    fov_mm: float | None = None,
) -> Path:
    """Exports a trained model as a TF Serving SavedModel, ``OUTPUT/NAME/VERSION/``.

    Args:
        source: A run folder (``model.keras`` + ``config.yaml``), a ``.keras`` file, or a
            ``keras.Model``.
        name: The model's name in TF Serving (and its folder).
        version: Version folder number (>= 1); None: 1 + the highest one there.
        output_dir: The TF Serving model root (``saved_models``).
        warmup: Write ``assets.extra/tf_serving_warmup_requests``.
        serving_root: ``base_path`` prefix in ``models.config`` (see :func:`update_models_config`).
        hu_window: Overrides the run's HU window (default the run's, else ``xprospect``).
        fov_mm: Overrides the field of view recorded in the model card (default the dataset's,
            else 320 mm).

    Returns:
        The version folder written.

    Raises:
        MissingDataError: ``source`` holds no model.
        OutputExistsError: The version folder exists (versions are never overwritten).
        ConfigError: Bad name or version, a model whose inputs are not frontal[/lateral], or an
            existing models.config that does not parse (checked before anything is written).
    """
    from xprospect.preprocessing import resolve_hu_window
    from xprospect.utils import atomic_dir

    _check_name(name)
    if version is not None and (int(version) != version or version < 1):
        raise ConfigError(f"version must be an integer >= 1, got {version!r}")
    model, meta, run_dir = _load_source(source)
    views, size = _model_views_size(model)
    window = resolve_hu_window(
        hu_window if hu_window is not None else meta.get("data", {}).get("hu_window", "xprospect")
    )
    fov = float(fov_mm) if fov_mm is not None else _fov_mm(meta, run_dir, size)
    out = Path(output_dir)
    model_dir = out / name
    number = int(version) if version is not None else next_version(model_dir)
    dest = model_dir / str(number)
    if dest.exists():
        raise OutputExistsError("this version exists; versions are never overwritten", dest)
    _read_models_config(out / MODELS_CONFIG)  # a broken config fails before anything is written

    import tensorflow as tf

    module, signatures = build_serving_module(model, views, size, window)
    weight_bytes = int(
        sum(int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize for w in model.weights)
    )
    card = _model_card(
        name=name,
        version=number,
        source=source,
        model=model,
        meta=meta,
        run_dir=run_dir,
        views=views,
        size=size,
        hu_window=window,
        fov_mm=fov,
        signatures=signatures,
        weight_bytes=weight_bytes,
    )
    with atomic_dir(dest) as tmp:
        tf.saved_model.save(module, str(tmp), signatures=signatures)
        if warmup:
            card["warmup_requests"] = _write_warmup(tmp / WARMUP_FILE, name, views, size)
        variables = _folder_bytes(tmp / "variables")
        card["sizes"].update(
            variables_bytes=variables,
            variables_over_weights=round(variables / max(weight_bytes, 1), 4),
            saved_model_pb_bytes=(tmp / "saved_model.pb").stat().st_size,
        )
        card["sizes"]["total_bytes"] = _folder_bytes(tmp)  # before the card itself
        (tmp / MODEL_CARD).write_text(json.dumps(card, indent=2, default=str) + "\n")
    if variables > 1.1 * weight_bytes:
        log.warning(
            "%s: variables take %.2fx the weight bytes (expected about 1x)",
            dest,
            variables / max(weight_bytes, 1),
        )
    update_models_config(out, serving_root=serving_root)
    return dest


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
