"""Tests of xprospect.losses against NumPy references and the shared Keras contract.

References are written here with NumPy from the definitions (X2CT-GAN's projection loss: mean
projections along the three spatial axes, L1 between them, averaged), never with the code under
test.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras_contract import check_loss

from xprospect.errors import ConfigError
from xprospect.losses import (
    LOSS_TERMS,
    MAELoss,
    MSELoss,
    ProjectionLoss,
    WeightedLoss,
    build_loss,
    mae_per_example,
    per_example_loss,
    within_scan_mask,
)

SHAPE = (3, 6, 7, 8, 1)


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y_true = rng.random(SHAPE).astype(np.float32)
    y_pred = np.clip(y_true + 0.2 * rng.standard_normal(SHAPE), 0, 1).astype(np.float32)
    return y_true, y_pred


def ref_mae(t: np.ndarray, p: np.ndarray) -> np.ndarray:
    d = p.astype(np.float64) - t.astype(np.float64)
    return np.abs(d).reshape(len(d), -1).mean(axis=1)


def ref_mse(t: np.ndarray, p: np.ndarray) -> np.ndarray:
    d = p.astype(np.float64) - t.astype(np.float64)
    return np.square(d).reshape(len(d), -1).mean(axis=1)


def ref_projection(t: np.ndarray, p: np.ndarray) -> np.ndarray:
    t, p = t.astype(np.float64), p.astype(np.float64)
    per_axis = []
    for axis in (1, 2, 3):  # head-feet, front-back, right-left
        pt, pp = t.mean(axis=axis), p.mean(axis=axis)
        per_axis.append(np.abs(pp - pt).reshape(len(pt), -1).mean(axis=1))
    return np.mean(per_axis, axis=0)


REFERENCES = {"mae": ref_mae, "mse": ref_mse, "projection": ref_projection}
CLASSES = {"mae": MAELoss, "mse": MSELoss, "projection": ProjectionLoss}


def _np(x: object) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x))


@pytest.mark.parametrize("term", sorted(CLASSES))
def test_each_term_matches_numpy_reference(term: str, pair) -> None:
    t, p = pair
    ref = REFERENCES[term](t, p)
    per_example = CLASSES[term](reduction="none")(t, p)
    assert tuple(per_example.shape) == (SHAPE[0],)
    np.testing.assert_allclose(_np(per_example), ref, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(_np(CLASSES[term]()(t, p)), ref.mean(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(
        _np(CLASSES[term](reduction="sum")(t, p)), ref.sum(), rtol=1e-5, atol=1e-7
    )
    w = np.array([0.5, 2.0, 0.0], dtype=np.float32)
    np.testing.assert_allclose(
        _np(CLASSES[term]()(t, p, sample_weight=w)), (w * ref).sum() / len(w), rtol=1e-5
    )


def test_projection_loss_analytic_values() -> None:
    # One voxel moved front-to-back (axis 2 of the batch): the projection over axis 2 is unchanged;
    # the other two each differ at 2 of 16 pixels by 1/4, an L1 of 1/32. Mean: (1/32 + 0 + 1/32)/3.
    t = np.zeros((1, 4, 4, 4, 1), np.float32)
    t[0, 1, 1, 1] = 1.0
    p = np.zeros_like(t)
    p[0, 1, 2, 1] = 1.0
    np.testing.assert_allclose(_np(ProjectionLoss(reduction="none")(t, p)), [1 / 48], rtol=1e-6)
    np.testing.assert_allclose(ref_projection(t, p), [1 / 48], rtol=1e-12)
    # Even- and odd-parity voxels of a 2x2x2 cube: different volumes (MAE 1) whose three mean
    # projections are all 1/2 everywhere, so the projection loss is 0.
    i, j, k = np.indices((2, 2, 2))
    even = ((i + j + k) % 2 == 0).astype(np.float32)[None, ..., None]
    np.testing.assert_allclose(_np(MAELoss()(even, 1 - even)), 1.0)
    np.testing.assert_allclose(_np(ProjectionLoss()(even, 1 - even)), 0.0, atol=1e-7)


def test_projection_loss_accepts_volumes_without_channel(pair) -> None:
    t, p = pair
    np.testing.assert_allclose(
        _np(ProjectionLoss(reduction="none")(t[..., 0], p[..., 0])),
        ref_projection(t, p),
        rtol=1e-5,
    )
    with pytest.raises(ValueError, match="rank"):
        ProjectionLoss()(t[:, 0, 0], p[:, 0, 0])


def test_weighted_loss_is_weighted_sum_of_terms(pair) -> None:
    t, p = pair
    weights = {"mae": 1.0, "mse": 0.5, "projection": 2.0}
    expected = sum(w * REFERENCES[k](t, p) for k, w in weights.items())
    loss = build_loss(weights, reduction="none")
    assert isinstance(loss, WeightedLoss)
    np.testing.assert_allclose(_np(loss(t, p)), expected, rtol=1e-5)
    np.testing.assert_allclose(_np(build_loss(weights)(t, p)), expected.mean(), rtol=1e-5)
    # A zero weight drops the term.
    only_mae = build_loss({"mae": 3.0, "projection": 0.0}, reduction="none")
    np.testing.assert_allclose(_np(only_mae(t, p)), 3.0 * ref_mae(t, p), rtol=1e-5)


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({"mae": 1.0, "ssim": 1.0}, "unknown loss term.*ssim.*valid terms: mae, mse, projection"),
        ({"mae": -1.0}, ">= 0"),
        ({"mae": float("nan")}, ">= 0"),
        ({"mae": 0.0, "mse": 0}, "at least one"),
        ({}, "at least one"),
        ({"mae": "heavy"}, "must be a number"),
        ([("mae", 1.0)], "mapping"),
    ],
)
def test_build_loss_rejects_bad_config(weights, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_loss(weights)


def test_terms_listed() -> None:
    assert set(LOSS_TERMS) == {"mae", "mse", "projection"}


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_mixed_precision_predictions_computed_in_float32(dtype: str, pair) -> None:
    t, p = pair
    p_low = tf.cast(tf.constant(p), dtype)
    p_rounded = tf.cast(p_low, tf.float32).numpy()  # the values the loss actually sees
    loss = build_loss({"mae": 1.0, "mse": 1.0, "projection": 1.0}, reduction="none")
    out = loss(t, p_low)
    assert out.dtype == tf.float32
    expected = ref_mae(t, p_rounded) + ref_mse(t, p_rounded) + ref_projection(t, p_rounded)
    np.testing.assert_allclose(_np(out), expected, rtol=1e-5)


def test_custom_loop_gradient_matches_analytic(pair) -> None:
    t, p = pair
    var = tf.Variable(p)
    n_vox = np.prod(SHAPE[1:])
    with tf.GradientTape() as tape:
        per_example = build_loss({"mae": 1.0, "mse": 2.0}, reduction="none")(t, var)
        total = tf.reduce_sum(per_example) / SHAPE[0]  # the global-batch scaling a loop does
    grad = tape.gradient(total, var).numpy()
    d = p.astype(np.float64) - t
    expected = (np.sign(d) + 2.0 * 2.0 * d) / (n_vox * SHAPE[0])
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-9)


def test_compiled_model_reports_the_reference_loss(pair) -> None:
    t, p = pair
    inp = keras.Input(SHAPE[1:])
    model = keras.Model(inp, keras.layers.Identity()(inp))
    model.compile(optimizer="sgd", loss=build_loss({"mae": 1.0, "projection": 0.5}))
    value = model.evaluate(p, t, batch_size=SHAPE[0], verbose=0)
    expected = (ref_mae(t, p) + 0.5 * ref_projection(t, p)).mean()
    np.testing.assert_allclose(value, expected, rtol=1e-5)


@pytest.mark.parametrize(
    ("loss", "init_kwargs"),
    [
        (MAELoss(reduction="sum", name="l1"), {"reduction": "sum", "name": "l1"}),
        (MSELoss(), {"reduction": "sum_over_batch_size", "name": "mse_loss"}),
        (ProjectionLoss(reduction="none"), {"reduction": "none"}),
        (
            WeightedLoss({"mae": 1.0, "projection": 0.1}, reduction="sum"),
            {"weights": {"mae": 1.0, "projection": 0.1}, "reduction": "sum"},
        ),
    ],
    ids=["mae", "mse", "projection", "weighted"],
)
def test_keras_contract(loss, init_kwargs, pair, tmp_path: Path) -> None:
    t, p = pair
    check_loss(loss, init_kwargs, t, p, tmp_path)


def _reference_per_example(loss, y_true, y_pred):
    """The trainer's per-example wrapper as it was written with ``tf.*`` (release 0.1.0)."""
    if isinstance(loss, keras.losses.Loss):
        dtype = loss.dtype or "float32"

        def values_of(t, p):
            return loss.call(tf.cast(t, dtype), tf.cast(p, dtype))
    else:
        values_of = loss
    values = tf.cast(values_of(y_true, tf.cast(y_pred, tf.float32)), tf.float32)
    return tf.reduce_mean(tf.reshape(values, [tf.shape(values)[0], -1]), axis=1)


def test_per_example_loss_matches_the_tf_wrapper_and_keeps_the_loss(pair):
    y_true, y_pred = pair
    mae = ref_mae(y_true, y_pred)
    cases = [
        (MAELoss(), mae),
        (build_loss({"mae": 1.0, "projection": 0.1}), mae + 0.1 * ref_projection(y_true, y_pred)),
        # A plain function with element-wise (B, D, H, W) values, averaged per example.
        (keras.losses.mean_absolute_error, mae),
    ]
    for loss, expected in cases:
        fn = per_example_loss(loss)
        for pred in (y_pred, y_pred.astype(np.float16)):
            got = fn(tf.constant(y_true), tf.constant(pred))
            assert got.shape == (SHAPE[0],) and got.dtype == tf.float32
            want = _reference_per_example(loss, tf.constant(y_true), tf.constant(pred))
            np.testing.assert_array_equal(got.numpy(), want.numpy())
        np.testing.assert_allclose(fn(y_true, y_pred).numpy(), expected, rtol=1e-5)
    assert cases[0][0].reduction == "sum_over_batch_size"  # the wrapped object is not changed
    with pytest.raises(ConfigError, match="one value per example"):
        per_example_loss(lambda t, p: keras.ops.mean(p))(y_true, y_pred)


# --- inside the scanned region (validity mask) ----------------------------------------------
def _scan_masks() -> np.ndarray:
    """Per-example masks: a short scan's slab, a full scan, and one slice."""
    m = np.zeros(SHAPE, np.float32)
    m[0, 2:5] = 1.0
    m[1] = 1.0
    m[2, 3] = 1.0
    return m


def test_loss_within_scan_mask_is_the_mean_inside_the_mask_with_its_gradient(pair) -> None:
    t, p = pair
    m = _scan_masks()
    d = p.astype(np.float64) - t.astype(np.float64)
    sel = m.reshape(len(m), -1) > 0
    err_abs, err_sq = np.abs(d).reshape(len(d), -1), np.square(d).reshape(len(d), -1)
    ref_mae_in = np.array([e[s].mean() for e, s in zip(err_abs, sel, strict=True)])
    ref_mse_in = np.array([e[s].mean() for e, s in zip(err_sq, sel, strict=True)])
    loss = within_scan_mask(per_example_loss(build_loss({"mae": 1.0, "mse": 2.0})))
    var = tf.Variable(p)
    with tf.GradientTape() as tape:
        per_example = loss(t, var, m)
        total = tf.reduce_sum(per_example) / SHAPE[0]
    np.testing.assert_allclose(_np(per_example), ref_mae_in + 2.0 * ref_mse_in, rtol=1e-5)
    # d/dp of sum(m |d|) / sum(m) + 2 sum(m d^2) / sum(m), then the batch mean.
    count = m.reshape(len(m), -1).sum(axis=1).reshape(-1, 1, 1, 1, 1)
    expected = m * (np.sign(d) + 2.0 * 2.0 * d) / (count * SHAPE[0])
    np.testing.assert_allclose(tape.gradient(total, var).numpy(), expected, rtol=1e-4, atol=1e-9)


def test_loss_within_an_all_ones_mask_is_the_unmasked_loss(pair) -> None:
    t, p = pair
    plain = per_example_loss(build_loss({"mae": 1.0, "projection": 0.5}))
    masked = within_scan_mask(plain)
    np.testing.assert_array_equal(_np(masked(t, p, np.ones(SHAPE))), _np(plain(t, p)))
    # An empty mask scores nothing (0, not NaN).
    np.testing.assert_array_equal(_np(within_scan_mask(mae_per_example)(t, p, 0 * t)), 0.0)
