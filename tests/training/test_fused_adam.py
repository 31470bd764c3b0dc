"""FusedAdam: Keras Adam's update through ``ResourceApplyAdam``, checked against Keras' own Adam
and against Adam's formula in NumPy (Kingma & Ba, Algorithm 1, Keras' epsilon placement)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras_contract import check_registration

from xprospect.training.fused_adam import FusedAdam


def _np(x) -> np.ndarray:
    return keras.ops.convert_to_numpy(x)


ARGS = {"learning_rate": 1e-2, "beta_1": 0.5, "beta_2": 0.9, "epsilon": 1e-6}


def _train(cls: type, steps: int = 4, *, graph: bool = True, strategy=None) -> list[np.ndarray]:
    """Weights and optimizer variables after ``steps`` updates of a small regression model."""
    strategy = strategy or tf.distribute.get_strategy()
    keras.utils.set_random_seed(0)
    x = tf.constant(np.random.default_rng(0).normal(size=(16, 5)), tf.float32)
    y = tf.reduce_sum(x, axis=1, keepdims=True)
    with strategy.scope():
        model = keras.Sequential(
            [keras.Input((5,)), keras.layers.Dense(6, activation="tanh"), keras.layers.Dense(1)]
        )
        opt = cls(**ARGS)
        opt.build(model.trainable_variables)

    def replica_step() -> None:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((model(x) - y) ** 2) / strategy.num_replicas_in_sync
        opt.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)

    def step() -> None:
        strategy.run(replica_step)

    run = tf.function(step) if graph else step
    for _ in range(steps):
        run()
    return [_np(w) for w in model.weights] + [_np(v) for v in opt.variables]


@pytest.mark.parametrize("graph", [True, False], ids=["tf.function", "eager"])
def test_fused_update_equals_keras_adam(graph: bool) -> None:
    fused, keras_adam = _train(FusedAdam, graph=graph), _train(keras.optimizers.Adam, graph=graph)
    assert len(fused) == len(keras_adam)
    for a, b in zip(fused, keras_adam, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_fused_update_follows_adams_formula() -> None:
    """Three steps on one variable against Adam written out in NumPy."""
    grads = [np.array([0.3, -1.2, 2.0]), np.array([0.1, 0.4, -0.5]), np.array([-2.0, 0.0, 1.0])]
    var = keras.Variable(np.array([1.0, -1.0, 0.5]), dtype="float32")
    opt = FusedAdam(**ARGS)
    for g in grads:
        opt.apply([tf.constant(g, tf.float32)], [var])
    w, m, v = np.array([1.0, -1.0, 0.5]), np.zeros(3), np.zeros(3)
    lr, b1, b2, eps = ARGS["learning_rate"], ARGS["beta_1"], ARGS["beta_2"], ARGS["epsilon"]
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        w = w - lr * np.sqrt(1 - b2**t) / (1 - b1**t) * m / (np.sqrt(v) + eps)
    np.testing.assert_allclose(_np(var), w, rtol=1e-5, atol=1e-7)


def test_mirrored_variables_fall_back_to_keras_update() -> None:
    """Mirrored variables (DistributedValues, here on one device) take Keras' update."""
    strategy = tf.distribute.MirroredStrategy(
        ["/cpu:0"], cross_device_ops=tf.distribute.ReductionToOneDevice()
    )
    fused = _train(FusedAdam, strategy=strategy)
    plain = _train(keras.optimizers.Adam)
    for a, b in zip(fused, plain, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_amsgrad_uses_keras_update() -> None:
    args = {**ARGS, "amsgrad": True}
    var_a = keras.Variable(np.ones(3), dtype="float32")
    var_b = keras.Variable(np.ones(3), dtype="float32")
    a, b = FusedAdam(**args), keras.optimizers.Adam(**args)
    for g in ([0.5, -1.0, 2.0], [-3.0, 0.2, 0.1]):
        a.apply([tf.constant(g)], [var_a])
        b.apply([tf.constant(g)], [var_b])
    np.testing.assert_allclose(_np(var_a), _np(var_b), rtol=1e-6)


def test_registered_with_adams_config() -> None:
    kept = {k: v for k, v in ARGS.items() if k != "learning_rate"}  # held as a variable
    config = check_registration(FusedAdam(**ARGS), kept)
    assert config["learning_rate"] == pytest.approx(ARGS["learning_rate"])
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(FusedAdam(**ARGS)))
    assert isinstance(restored, FusedAdam)


def test_checkpoint_of_keras_adam_restores_into_fused_adam(tmp_path) -> None:
    """Run folders written before FusedAdam (Keras Adam) resume with it: same variables."""
    var = keras.Variable(np.ones(3), dtype="float32")
    old = keras.optimizers.Adam(**ARGS)
    old.apply([tf.constant([0.5, -1.0, 2.0])], [var])
    path = tf.train.Checkpoint(optimizer=old, var=var).write(str(tmp_path / "ckpt"))
    var2 = keras.Variable(np.zeros(3), dtype="float32")
    new = FusedAdam(**ARGS)
    new.build([var2])
    tf.train.Checkpoint(optimizer=new, var=var2).read(path).assert_consumed()
    for a, b in zip(old.variables, new.variables, strict=True):
        np.testing.assert_allclose(_np(a), _np(b))
