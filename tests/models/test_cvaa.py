"""Tests of xprospect.models.cvaa: the CVAA-GAN generator and its VAA / FD / CFVAA layers.

Everything is built at 32^3 (or smaller) with tiny widths so the module runs in well under a
minute on two cores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras_contract import check_layer, check_model, check_registration

from xprospect.errors import ConfigError
from xprospect.models.cvaa import (
    CFVAA,
    CanonicalLift,
    CVAAGenerator,
    Feat2D,
    FineDistillation,
    ViewAttentionAlignment,
    lift_to_canonical,
)

SIZE = 32
TINY: dict[str, Any] = {"base_filters": 2, "max_filters": 4, "growth_rate": 2, "dense_layers": 2}


def _xrays(batch: int = 2, size: int = SIZE) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {v: rng.random((batch, size, size, 1), dtype=np.float32) for v in ("frontal", "lateral")}


def _np(x: object) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x))


def _rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


# === Generator ===


def test_builds_at_32_with_tiny_widths() -> None:
    model = CVAAGenerator(size=SIZE, **TINY)
    assert sorted(model.input) == ["frontal", "lateral"]
    out = _np(model(_xrays(), training=False))
    assert out.shape == (2, SIZE, SIZE, SIZE, 1)
    assert out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    # Default depth: down to a 4^3 deepest level, one CFVAA per finer level.
    names = {layer.name for layer in model.layers}
    assert {"fuse_add_4", "cfvaa_8", "cfvaa_16", "cfvaa_32"} <= names
    assert isinstance(model.get_layer("cfvaa_32"), CFVAA)


def test_generator_contract(tmp_path: Path) -> None:
    init: dict[str, Any] = {"size": SIZE, "num_levels": 3, "norm": "instance", **TINY}
    model = CVAAGenerator(**init)
    assert model.get_layer("fuse_add_8") is not None  # 3 levels: 32, 16, 8
    check_registration(model, init)
    check_model(model, _xrays(batch=1), tmp_path)


def test_bad_arguments_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="size"):
        CVAAGenerator(size=48, **TINY)
    with pytest.raises(ConfigError, match="num_levels"):
        CVAAGenerator(size=SIZE, num_levels=1, **TINY)
    with pytest.raises(ConfigError, match="num_levels"):
        CVAAGenerator(size=SIZE, num_levels=6, **TINY)
    with pytest.raises(ConfigError, match="growth_rate"):
        CVAAGenerator(size=SIZE, growth_rate=0)
    with pytest.raises(ConfigError, match="attention_kernel_size"):
        CVAAGenerator(size=SIZE, attention_kernel_size=6, **TINY)
    with pytest.raises(ConfigError, match="norm"):
        CVAAGenerator(size=SIZE, norm="layer", **TINY)
    with pytest.raises(ConfigError, match="view"):
        CanonicalLift(4, "axial")


def test_mixed_bfloat16_gives_float32_output() -> None:
    model = CVAAGenerator(size=SIZE, num_levels=3, dtype="mixed_bfloat16", **TINY)
    cfvaa = model.get_layer("cfvaa_32")
    assert cfvaa.compute_dtype == "bfloat16"
    assert cfvaa.vaa.attention.compute_dtype == "bfloat16"
    assert model.get_layer("volume").compute_dtype == "float32"
    out = model(_xrays(batch=1), training=False)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    assert float(_np(out).min()) >= 0.0 and float(_np(out).max()) <= 1.0
    # The policy is part of the config.
    clone = CVAAGenerator.from_config(model.get_config())
    assert clone.get_layer("frontal_stem").compute_dtype == "bfloat16"


# === Frame alignment ===


def test_lifting_aligns_both_views_in_the_canonical_frame() -> None:
    # An asymmetric point: axis 0 = 3, axis 1 (ant.-post.) = 9, axis 2 (right-left) = 13. The
    # frontal X-ray sees it at (row 3, column 13), the lateral at (row 3, column 9).
    n, (i, j, k) = 16, (3, 9, 13)
    frontal = np.zeros((1, n, n, 1), np.float32)
    lateral = np.zeros((1, n, n, 1), np.float32)
    frontal[0, i, k, 0] = 1.0
    lateral[0, i, j, 0] = 1.0
    vol_f = _np(lift_to_canonical(frontal, "frontal", n))[0, ..., 0]
    vol_l = _np(lift_to_canonical(lateral, "lateral", n))[0, ..., 0]
    expected_f = np.zeros((n, n, n), np.float32)
    expected_f[i, :, k] = 1.0  # the frontal ray runs along axis 1
    expected_l = np.zeros((n, n, n), np.float32)
    expected_l[i, j, :] = 1.0  # the lateral ray runs along axis 2
    np.testing.assert_array_equal(vol_f, expected_f)
    np.testing.assert_array_equal(vol_l, expected_l)
    # The two rays cross at the point, and only there.
    point = np.zeros((n, n, n), np.float32)
    point[i, j, k] = 1.0
    np.testing.assert_array_equal(vol_f * vol_l, point)

    # The layer (with an identity 1x1x1 convolution) does the same.
    for view, image, expected in (("frontal", frontal, vol_f), ("lateral", lateral, vol_l)):
        layer = CanonicalLift(1, view, kernel_size=1, norm="none", activation="linear")
        layer.build(image.shape)
        layer.conv.conv.set_weights([np.ones((1, 1, 1, 1, 1), np.float32), np.zeros(1, np.float32)])
        np.testing.assert_allclose(_np(layer(image))[0, ..., 0], expected, atol=0, rtol=0)


# === VAA ===


@pytest.mark.parametrize("weigh", ["shallow", "branch"])
def test_vaa_weights_sum_to_one_and_weight_the_views(weigh: str) -> None:
    # The paper: "The weights are used to combine the two shallow features via operations of
    # dot product and addition"; "branch" (xprospect < 0.2) combines the branch features.
    shape = (2, 6, 6, 6)
    skip_f, skip_l, up = (
        _rand(*shape, 3, seed=1),
        _rand(*shape, 3, seed=2),
        _rand(*shape, 4, seed=3),
    )
    vaa = ViewAttentionAlignment(5, attention_kernel_size=3, weigh=weigh)
    coarse, weights = vaa([skip_f, skip_l, up], return_weights=True)
    coarse, weights = _np(coarse), _np(weights)
    assert coarse.shape == (*shape, 3 if weigh == "shallow" else 5)
    assert weights.shape == (*shape, 2)
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0, rtol=0, atol=1e-6)
    assert weights.min() >= 0.0 and weights.max() <= 1.0
    assert weights.std() > 0  # not a constant 0.5 / 0.5 split
    # NumPy reference of the softmax and of the weighted sum, from the layer's own branches.
    b_f = _np(vaa.branches[0](np.concatenate([skip_f, up], axis=-1)))
    b_l = _np(vaa.branches[1](np.concatenate([skip_l, up], axis=-1)))
    logits = _np(vaa.attention(np.concatenate([b_f, b_l], axis=-1))).astype(np.float64)
    expected_w = np.exp(logits - logits.max(-1, keepdims=True))
    expected_w /= expected_w.sum(-1, keepdims=True)
    np.testing.assert_allclose(weights, expected_w, rtol=1e-5, atol=1e-6)
    a_f, a_l = (skip_f, skip_l) if weigh == "shallow" else (b_f, b_l)
    expected = expected_w[..., :1] * a_f + expected_w[..., 1:] * a_l
    np.testing.assert_allclose(coarse, expected, rtol=1e-4, atol=1e-5)
    # The default call returns the coarse features alone.
    np.testing.assert_allclose(_np(vaa([skip_f, skip_l, up])), coarse, rtol=1e-6, atol=1e-6)


def test_vaa_weights_inside_a_built_generator() -> None:
    model = CVAAGenerator(size=SIZE, num_levels=3, **TINY)
    cfvaa = model.get_layer("cfvaa_16")
    sub = keras.Model(
        model.input,
        [model.get_layer(f"{v}_lift_16").output for v in ("frontal", "lateral")]
        + [model.get_layer("fuse_8").output],
    )
    skip_f, skip_l, deep = sub(_xrays(batch=1))
    up = cfvaa.up(deep)
    _, weights = cfvaa.vaa([skip_f, skip_l, up], return_weights=True)
    weights = _np(weights)
    assert weights.shape == (1, 16, 16, 16, 2)
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0, rtol=0, atol=1e-6)
    assert weights.min() >= 0.0 and weights.max() <= 1.0


def test_vaa_contract(tmp_path: Path) -> None:
    init: dict[str, Any] = {
        "filters": 3,
        "kernel_size": 3,
        "attention_kernel_size": 7,
        "norm": "instance",
    }
    inputs = [_rand(1, 4, 4, 4, 2, seed=4), _rand(1, 4, 4, 4, 2, seed=5), _rand(1, 4, 4, 4, 3)]
    check_layer(ViewAttentionAlignment(**init), init, inputs, tmp_path)


# === FD ===


def test_fd_gate_in_unit_interval_and_multiplies_coarse() -> None:
    shape = (2, 5, 5, 5)
    coarse, up = _rand(*shape, 4, seed=6), _rand(*shape, 3, seed=7)
    fd = FineDistillation()
    fine, gate = fd([coarse, up], return_gate=True)
    fine, gate = _np(fine), _np(gate)
    assert gate.shape == (*shape, 1) and fine.shape == coarse.shape
    assert gate.min() >= 0.0 and gate.max() <= 1.0
    np.testing.assert_allclose(fine, coarse * gate, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(_np(fd([coarse, up])), fine, rtol=1e-6, atol=1e-7)


def test_fd_matches_numpy_with_a_pointwise_gate() -> None:
    shape = (1, 4, 4, 4)
    coarse, up = _rand(*shape, 3, seed=8), _rand(*shape, 2, seed=9)
    fd = FineDistillation(kernel_size=1)
    fd.build([coarse.shape, up.shape])
    kernel, bias = _rand(1, 1, 1, 5, 1, seed=10), np.array([0.3], np.float32)
    fd.gate_conv.set_weights([kernel, bias])
    x = np.concatenate([coarse, up], axis=-1).astype(np.float64)
    gate = 1.0 / (1.0 + np.exp(-(x @ kernel[0, 0, 0].astype(np.float64) + bias)))
    np.testing.assert_allclose(_np(fd([coarse, up])), coarse * gate, rtol=1e-5, atol=1e-6)


def test_fd_contract(tmp_path: Path) -> None:
    init: dict[str, Any] = {"kernel_size": 3}
    inputs = [_rand(1, 4, 4, 4, 2, seed=11), _rand(1, 4, 4, 4, 3, seed=12)]
    check_layer(FineDistillation(**init), init, inputs, tmp_path)


# === CFVAA, Feat2D, lifting ===


def test_cfvaa_contract(tmp_path: Path) -> None:
    init: dict[str, Any] = {
        "filters": 3,
        "kernel_size": 3,
        "attention_kernel_size": 5,
        "distill_kernel_size": 3,
        "norm": "instance",
    }
    layer = CFVAA(**init)
    inputs = [_rand(1, 4, 4, 4, 2, seed=13), _rand(1, 4, 4, 4, 2, seed=14), _rand(1, 2, 2, 2, 5)]
    assert _np(layer(inputs)).shape == (1, 4, 4, 4, 3)
    check_layer(layer, init, inputs, tmp_path)


def test_configs_without_weigh_load_as_branch_weighting() -> None:
    # xprospect < 0.2 stored no "weigh": its VAA combined the branch features.
    for obj in (
        CVAAGenerator(size=SIZE, num_levels=3, **TINY),
        CFVAA(3),
        ViewAttentionAlignment(3),
    ):
        config = obj.get_config()
        assert config.pop("weigh") == "shallow"
        assert type(obj).from_config(config).weigh == "branch"


def test_feat2d_and_lift_config_round_trip() -> None:
    feat = Feat2D(5, growth_rate=3, num_layers=2, kernel_size=3, norm="instance")
    check_registration(
        feat,
        {"filters": 5, "growth_rate": 3, "num_layers": 2, "kernel_size": 3, "norm": "instance"},
    )
    assert _np(feat(_rand(1, 8, 8, 2))).shape == (1, 8, 8, 5)
    # Dense connectivity: layer k sees the input and the k earlier outputs.
    assert [int(layer.conv.kernel.shape[2]) for layer in feat.dense_layers] == [2, 5]
    assert int(feat.compress.conv.kernel.shape[2]) == 2 + 2 * 3
    lift = CanonicalLift(4, "lateral", kernel_size=3, norm="none", activation="relu")
    check_registration(
        lift,
        {"filters": 4, "view": "lateral", "kernel_size": 3, "norm": "none", "activation": "relu"},
    )
    assert _np(lift(_rand(1, 8, 8, 2))).shape == (1, 8, 8, 8, 4)


def test_every_weight_gets_a_gradient_and_a_few_steps_reduce_the_loss() -> None:
    keras.utils.set_random_seed(0)
    model = CVAAGenerator(size=SIZE, num_levels=3, **TINY)
    x = _xrays(batch=1)
    y = np.zeros((1, SIZE, SIZE, SIZE, 1), np.float32)
    y[:, 8:24, 10:22, 6:26] = 0.8
    with tf.GradientTape() as tape:
        loss = keras.ops.mean((model(x, training=True) - y) ** 2)
    grads = tape.gradient(loss, model.trainable_weights)
    missing = [w.path for w, g in zip(model.trainable_weights, grads, strict=True) if g is None]
    assert not missing, missing
    # Eager: tracing the train step costs more than the steps themselves on two cores.
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3, beta_1=0.5, beta_2=0.99), loss="mse", run_eagerly=True
    )
    losses = [float(model.train_on_batch(x, y)) for _ in range(4)]
    assert losses[-1] < losses[0]
