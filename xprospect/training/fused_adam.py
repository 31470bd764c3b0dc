"""Keras Adam with TensorFlow's fused kernel for the per-variable update.

Keras 3's :class:`keras.optimizers.Adam` writes each variable's update as about twenty small
ops (casts, two powers, the moment updates, the step). A 3D GAN has a thousand variables (X2CT-GAN:
931 in G and D), so the optimizer alone adds some 19,000 nodes to the training step's graph: a
quarter of it, traced by Python and rewritten by Grappler before the first step can run.
:class:`FusedAdam` hands the same update to ``ResourceApplyAdam`` (one node per variable):

    m <- b1 m + (1 - b1) g,   v <- b2 v + (1 - b2) g^2,
    w <- w - lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)

which is Keras' update term for term (Kingma & Ba, Algorithm 1 with the "epsilon hat" of Section 2,
as Keras writes it). Its variables, their names and its config are Adam's, so checkpoints of either
class restore into the other. Where the fused kernel cannot be used (AMSGrad, sparse gradients,
variables mirrored across devices by a distribution strategy, or another Keras backend) the update
is Keras' own.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

__all__ = ["FusedAdam"]


@keras.saving.register_keras_serializable(package="xprospect")
class FusedAdam(keras.optimizers.Adam):
    """:class:`keras.optimizers.Adam` updating each variable with one fused TensorFlow op.

    Takes Adam's arguments; the result equals Adam's up to float rounding (tested).
    """

    def apply(self, grads: Any, trainable_variables: Any = None) -> Any:
        """Keras' ``apply``; the step's scalars (``b^t``, the rate) are made once for all
        variables instead of once per variable."""
        self._step_scalars: _Scalars | None = _Scalars()
        try:
            return super().apply(grads, trainable_variables)
        finally:
            self._step_scalars = None

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        """One variable's Adam update (Keras' ``update_step`` contract)."""
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        var, m_var, v_var = (_plain(x) for x in (variable, m, v))
        if (
            self.amsgrad
            or keras.backend.backend() != "tensorflow"
            or isinstance(gradient, tf.IndexedSlices)
            or var is None
            or m_var is None
            or v_var is None
        ):
            super().update_step(gradient, variable, learning_rate)
            return
        cache = getattr(self, "_step_scalars", None) or _Scalars()
        s = cache.get(self, var.dtype, learning_rate)
        tf.raw_ops.ResourceApplyAdam(
            var=var.handle,
            m=m_var.handle,
            v=v_var.handle,
            grad=tf.cast(gradient, var.dtype),
            use_locking=False,
            use_nesterov=False,
            **s,
        )


class _Scalars:
    """The scalar inputs of ``ResourceApplyAdam`` for one ``apply``, per dtype."""

    def __init__(self) -> None:
        self.by_dtype: dict[Any, dict[str, Any]] = {}

    def get(self, opt: FusedAdam, dtype: Any, learning_rate: Any) -> dict[str, Any]:
        if dtype not in self.by_dtype:
            step = tf.cast(opt.iterations + 1, dtype)
            beta_1 = tf.cast(opt.beta_1, dtype)
            beta_2 = tf.cast(opt.beta_2, dtype)
            self.by_dtype[dtype] = {
                "beta1_power": tf.pow(beta_1, step),
                "beta2_power": tf.pow(beta_2, step),
                "lr": tf.cast(learning_rate, dtype),
                "beta1": beta_1,
                "beta2": beta_2,
                "epsilon": tf.cast(opt.epsilon, dtype),
            }
        return self.by_dtype[dtype]


def _plain(variable: Any) -> tf.Variable | None:
    """The plain ``tf.Variable`` under a Keras variable; None for distributed ones."""
    value = variable.value if isinstance(variable, keras.Variable) else variable
    if isinstance(value, tf.distribute.DistributedValues) or not isinstance(value, tf.Variable):
        return None
    return value
