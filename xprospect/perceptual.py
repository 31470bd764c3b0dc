"""Perceptual loss for volumes: a 2D feature network's distance between slices of two volumes.

The volumes ``(B, D0, D1, D2, C)`` (canonical frame, values in [0, 1]) are cut into 2D slices
along one or more spatial axes (optionally only ``num_slices`` evenly spaced ones, to bound the
cost), the slices of truth and prediction go through one 2D feature network, and the mean L1 or
squared-L2 distance between their feature maps is the loss of each example; with several axes the
per-axis values are averaged. S-XR2CT (Hor, Yang and Kim 2025) adds this term with weight 1 to its
generator's loss.

- :func:`perceptual_per_example`: the per-example value ``(B,)`` for any feature function, for a
  custom training loop.
- :func:`vgg16_features`: the default feature network, Keras' VGG16 truncated at a named layer.
- :class:`PerceptualLoss`: the registered ``keras.losses.Loss``.

The default network wants ImageNet weights, which Keras downloads from storage.googleapis.com on
first use (cached in ``~/.keras/models``). Offline, building the loss raises
:class:`~xprospect.errors.ConfigError` saying how to pass ``weights=None`` (random weights), a
local weights file, or a feature model of one's own.

Everything is written with ``keras.ops`` (any Keras backend); the distances are in float32.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from xprospect.errors import ConfigError

__all__ = [
    "DISTANCES",
    "VGG_MEAN_BGR",
    "PerceptualLoss",
    "perceptual_per_example",
    "slice_volume",
    "vgg16_features",
    "vgg_preprocess",
]

DISTANCES = ("l1", "l2")
"""``"l1"``: mean absolute feature difference; ``"l2"``: mean squared feature difference."""
VGG_MEAN_BGR = (103.939, 116.779, 123.68)
"""ImageNet channel means (BGR, 0-255) that Keras' VGG16 expects subtracted ("caffe" mode)."""
_SPATIAL_AXES = (0, 1, 2)


# === Helpers ===


def _check_axes(axes: Any) -> tuple[int, ...]:
    if isinstance(axes, str):
        if axes != "all":
            raise ConfigError(f"axes must be 'all', a spatial axis 0-2 or a list of them: {axes!r}")
        return _SPATIAL_AXES
    items = [axes] if isinstance(axes, int | np.integer) else list(axes)
    if (
        not items
        or any(isinstance(a, bool) or a not in _SPATIAL_AXES for a in items)
        or len(set(items)) != len(items)
    ):
        raise ConfigError(
            f"axes must be 'all', a spatial axis 0-2 or a list of distinct ones, got {axes!r}"
        )
    return tuple(int(a) for a in items)


def _check_num_slices(num_slices: Any) -> int | None:
    if num_slices is None:
        return None
    if isinstance(num_slices, bool) or not isinstance(num_slices, int) or num_slices < 1:
        raise ConfigError(f"num_slices must be a positive integer or None, got {num_slices!r}")
    return int(num_slices)


def _check_distance(distance: str) -> str:
    if distance not in DISTANCES:
        raise ConfigError(f"distance must be one of {DISTANCES}, got {distance!r}")
    return distance


def slice_indices(length: int, num_slices: int | None) -> np.ndarray | None:
    """Evenly spaced slice indices, ``round(linspace(0, length - 1, num_slices))``.

    Args:
        length: Number of slices along the axis.
        num_slices: How many to keep; None or ``>= length``: all (returns None).

    Returns:
        Sorted unique int32 indices, or None for every slice.
    """
    if num_slices is None or num_slices >= length:
        return None
    return np.unique(np.round(np.linspace(0, length - 1, num_slices)).astype(np.int32))


def slice_volume(volume: Any, axis: int, num_slices: int | None = None) -> Any:
    """The 2D slices of a batch of volumes along one spatial axis, stacked along the batch.

    Args:
        volume: ``(B, D0, D1, D2, C)`` with static spatial sizes.
        axis: Spatial axis (0, 1 or 2) the slices are taken across.
        num_slices: Keep only this many evenly spaced slices (:func:`slice_indices`); None: all.

    Returns:
        ``(B * k, h, w, C)``: example ``b``'s ``k`` slices are rows ``b * k .. b * k + k - 1``;
        ``(h, w)`` are the two other spatial axes in their order.
    """
    perm = {0: (0, 1, 2, 3, 4), 1: (0, 2, 1, 3, 4), 2: (0, 3, 1, 2, 4)}[axis]
    x = ops.transpose(volume, perm) if axis else volume
    index = slice_indices(int(x.shape[1]), num_slices)
    if index is not None:
        x = ops.take(x, index, axis=1)
    return ops.reshape(x, (-1, x.shape[2], x.shape[3], x.shape[4]))


def vgg_preprocess(slices: Any) -> Any:
    """One-channel slices in [0, 1] as Keras' VGG16 expects them.

    Replicated to three channels, scaled to 0-255 and centred by the ImageNet BGR means
    (:data:`VGG_MEAN_BGR`); the grey channels make the RGB → BGR flip moot.

    Args:
        slices: ``(N, h, w, 1)``.

    Returns:
        ``(N, h, w, 3)`` float32.
    """
    x = ops.repeat(ops.cast(slices, "float32"), 3, axis=-1) * 255.0
    return x - ops.convert_to_tensor(np.asarray(VGG_MEAN_BGR, np.float32))


def vgg16_features(layer: str = "block3_conv3", weights: str | None = "imagenet") -> keras.Model:
    """Keras' VGG16 (no top), truncated at ``layer``, frozen.

    Args:
        layer: Name of the last layer kept (e.g. ``"block2_conv2"``, ``"block3_conv3"``,
            ``"block4_conv3"``).
        weights: ``"imagenet"`` (downloaded once by Keras), None (random) or the path to a
            local ``vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5``.

    Returns:
        A ``keras.Model`` on ``(N, h, w, 3)`` VGG-preprocessed images (:func:`vgg_preprocess`),
        ``h, w >= 2**(block - 1)`` for the block of ``layer``.

    Raises:
        ConfigError: If the weights cannot be loaded (offline, missing file) or ``layer`` is not
            a VGG16 layer.
    """
    if weights is not None and weights != "imagenet" and not os.path.isfile(os.fspath(weights)):
        raise ConfigError(
            f"VGG16 weights file {weights!r} does not exist; pass weights='imagenet', "
            "weights=None (random weights) or feature_model=<a keras.Model>"
        )
    try:
        vgg = keras.applications.VGG16(
            include_top=False, weights=weights, input_shape=(None, None, 3)
        )
    except Exception as exc:  # Keras raises a bare Exception on a failed download
        raise ConfigError(
            f"could not load VGG16 weights {weights!r} for the perceptual loss ({exc}). "
            "Offline, download vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 elsewhere and "
            "pass its path as weights=..., or pass weights=None (random VGG16 weights) or "
            "feature_model=<a keras.Model or the path of a saved .keras model>"
        ) from exc
    names = [lyr.name for lyr in vgg.layers]
    if layer not in names:
        raise ConfigError(f"layer {layer!r} is not a VGG16 layer; choose one of {names[1:]}")
    model = keras.Model(vgg.input, vgg.get_layer(layer).output, name=f"vgg16_{layer}")
    model.trainable = False
    return model


# === Per-example loss ===


def perceptual_per_example(
    y_true: Any,
    y_pred: Any,
    feature_fn: Callable[[Any], Any],
    axes: str | int | Sequence[int] = "all",
    num_slices: int | None = None,
    distance: str = "l1",
) -> Any:
    """Perceptual distance of each example.

    For each axis in ``axes``: the slices of both volumes (:func:`slice_volume`) go through
    ``feature_fn`` in one batch, and the example's value is the mean over its slices and all
    feature entries of ``|F(t) - F(p)|`` (``"l1"``) or ``(F(t) - F(p))**2`` (``"l2"``). The
    values of several axes are averaged.

    Args:
        y_true: ``(B, D0, D1, D2, C)`` volumes (static spatial sizes).
        y_pred: Same shape, any float dtype.
        feature_fn: Maps ``(N, h, w, C)`` slices to ``(N, ...)`` features (a ``keras.Model`` or
            any callable of ``keras.ops``).
        axes: ``"all"`` (0, 1, 2), one spatial axis or a list of them.
        num_slices: Evenly spaced slices per axis; None: all.
        distance: ``"l1"`` or ``"l2"``.

    Returns:
        float32 ``(B,)``.

    Raises:
        ConfigError: On bad ``axes``, ``num_slices`` or ``distance``.
    """
    axes_t = _check_axes(axes)
    num = _check_num_slices(num_slices)
    dist = _check_distance(distance)
    t = ops.cast(y_true, "float32")
    p = ops.cast(y_pred, "float32")
    batch = ops.shape(t)[0]
    total: Any = None
    for axis in axes_t:
        st, sp = slice_volume(t, axis, num), slice_volume(p, axis, num)
        n = ops.shape(st)[0]
        # One call for both, so a network with batch statistics sees them together.
        feats = ops.cast(feature_fn(ops.concatenate([st, sp], axis=0)), "float32")
        diff = feats[:n] - feats[n:]
        diff = ops.abs(diff) if dist == "l1" else ops.square(diff)
        value = ops.mean(ops.reshape(diff, (batch, -1)), axis=1)
        total = value if total is None else total + value
    return total / float(len(axes_t))


# === Loss ===


@keras.saving.register_keras_serializable(package="xprospect")
class PerceptualLoss(keras.losses.Loss):
    """Perceptual loss of volumes through a 2D feature network (see the module docstring).

    With ``feature_model=None`` the network is :func:`vgg16_features` (``layer``, ``weights``)
    and the slices are prepared by :func:`vgg_preprocess` (grey → 3 channels, ImageNet
    centring). A user network instead receives the raw ``(N, h, w, C)`` slices in the volumes'
    value range. The network is frozen (its ``trainable`` is set to False).

    **What round-trips through** ``get_config``: the VGG arguments do (a rebuilt loss loads the
    same VGG weights again); a ``feature_model`` given as the path of a saved ``.keras`` model
    does, weights included; a ``keras.Model`` object is serialised by its architecture only
    (``keras.saving.serialize_keras_object``), so a loss rebuilt from the config has freshly
    initialised feature weights. Save a trained feature network to ``.keras`` and pass its
    path to keep its weights.

    Args:
        feature_model: None (VGG16), a ``keras.Model`` on ``(N, h, w, C)`` slices, the path of
            a ``.keras`` file holding one, or a serialised model config (from ``get_config``).
        layer: VGG16 layer whose output is the feature map (VGG only).
        weights: VGG16 weights: ``"imagenet"``, None (random) or a local weights file.
        axes: ``"all"``, one spatial axis (0, 1, 2) or a list of them.
        num_slices: Evenly spaced slices per axis; None: all.
        distance: ``"l1"`` or ``"l2"``.
        reduction: Keras reduction of the per-example values.
        name: Loss name.

    Raises:
        ConfigError: If the VGG weights or the feature model cannot be loaded, or on bad
            ``axes``, ``num_slices``, ``distance`` or ``layer``.
    """

    def __init__(
        self,
        feature_model: keras.Model | str | dict[str, Any] | None = None,
        layer: str = "block3_conv3",
        weights: str | None = "imagenet",
        axes: str | int | Sequence[int] = "all",
        num_slices: int | None = None,
        distance: str = "l1",
        reduction: str | None = "sum_over_batch_size",
        name: str | None = "perceptual_loss",
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype="float32")
        _check_axes(axes)
        self.axes = list(axes) if isinstance(axes, list | tuple) else axes
        self.num_slices = _check_num_slices(num_slices)
        self.distance = _check_distance(distance)
        self.layer = layer
        self.weights = weights
        self.feature_model = feature_model
        self.feature_net = self._resolve(feature_model)
        self.feature_net.trainable = False
        self._vgg = feature_model is None

    def _resolve(self, feature_model: Any) -> keras.Model:
        if feature_model is None:
            return vgg16_features(self.layer, self.weights)
        if isinstance(feature_model, keras.Model):
            return feature_model
        if isinstance(feature_model, str | os.PathLike):
            try:
                model = keras.saving.load_model(feature_model)
            except Exception as exc:  # any load failure is a config error here
                raise ConfigError(
                    f"could not load the perceptual feature model: {exc}", feature_model
                ) from exc
            assert isinstance(model, keras.Model)
            return model
        if isinstance(feature_model, dict):
            model = keras.saving.deserialize_keras_object(feature_model)
            if not isinstance(model, keras.Model):
                raise ConfigError(f"feature_model config gives a {type(model).__name__}")
            return model
        raise ConfigError(
            "feature_model must be None (VGG16), a keras.Model, a .keras path or a model "
            f"config, got {type(feature_model).__name__}"
        )

    def features(self, slices: Any) -> Any:
        """The feature network on ``(N, h, w, C)`` slices (VGG-preprocessed for VGG16)."""
        x = vgg_preprocess(slices) if self._vgg else slices
        return self.feature_net(x, training=False)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        """Per-example perceptual distance.

        Args:
            y_true: ``(B, D0, D1, D2, C)``.
            y_pred: Same shape, any float dtype.

        Returns:
            float32 ``(B,)``.
        """
        return perceptual_per_example(
            y_true, y_pred, self.features, self.axes, self.num_slices, self.distance
        )

    def get_config(self) -> dict[str, Any]:
        model: Any = self.feature_model
        if isinstance(model, keras.Model):
            model = keras.saving.serialize_keras_object(model)
        elif isinstance(model, os.PathLike):
            model = os.fspath(model)
        return {
            "feature_model": model,
            "layer": self.layer,
            "weights": self.weights,
            "axes": self.axes,
            "num_slices": self.num_slices,
            "distance": self.distance,
            "name": self.name,
            "reduction": self.reduction,
        }
