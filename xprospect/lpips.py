"""LPIPS (Zhang et al., CVPR 2018) in Keras, and its slice-wise mean over a volume.

DuoLift-GAN (LPIPS with VGG), S-XR2CT and XctDiff report the Learned Perceptual Image Patch
Similarity of reconstructed CT, computed "for each slice and then [taking] the mean value across
all slices" (DuoLift-GAN, Evaluation Metrics). LPIPS version 0.1 of two images ``x0, x1`` in
[-1, 1]:

1. Both are shifted and scaled per channel (``(x - shift) / scale``, shift (-0.030, -0.088,
   -0.188), scale (0.458, 0.448, 0.450): ImageNet's normalisation expressed on [-1, 1]).
2. A backbone gives feature maps at five layers: VGG16's relu1_2, relu2_2, relu3_3, relu4_3,
   relu5_3 (Keras' ``block1_conv2`` ... ``block5_conv3``) or AlexNet's five ReLUs.
3. Each map is unit-normalised along channels (``f / (sqrt(sum f^2) + 1e-10)``), the squared
   difference of the two is weighted per channel by the layer's linear head (a 1 x 1 convolution
   without bias, learnt on human judgements), summed over channels and averaged over positions.
4. The five layer values are summed.

The heads ship with xprospect (``xprospect/assets/lpips/lpips_heads_v0.1.npz``, converted once
by ``scripts/convert_lpips.py`` from the ``lpips`` 0.1.4 package's ``weights/v0.1/*.pth``;
BSD-2-Clause, its licence beside them). The backbones' ImageNet weights cannot ship or be
downloaded at run time: pass the path of a weights file (``backbone_weights=``, or the
environment variables ``XPROSPECT_LPIPS_VGG_WEIGHTS`` / ``XPROSPECT_LPIPS_ALEX_WEIGHTS``). LPIPS'
heads were trained on torchvision's backbones, so the file should hold those weights converted
(``scripts/convert_lpips.py backbone``); Keras' own caffe-style VGG16 ImageNet file loads but
expects other input scaling, and gives other numbers. ``backbone_weights="random"`` builds a
randomly initialised backbone (seeded), for tests.

- :func:`backbone`: the feature network (VGG16 from ``keras.applications``; AlexNet built from
  Keras layers with torchvision's layout, as ``keras.applications`` has none).
- :class:`LPIPS`: the registered Keras model, ``(x0, x1) -> (N,)`` distances for images in [0, 1].
- :func:`volume_lpips`: the slice-wise mean over a volume (NumPy in, float out).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from importlib import resources
from typing import Any

import keras
import numpy as np
from keras import ops

from xprospect.errors import ConfigError, GeometryError

__all__ = [
    "LPIPS",
    "LPIPS_LAYERS",
    "LPIPS_NETS",
    "backbone",
    "backbone_weights_path",
    "lpips_heads",
    "volume_lpips",
]

LPIPS_NETS = ("vgg", "alex")
"""The backbones with linear heads: torchvision's VGG16 and AlexNet."""
LPIPS_LAYERS: dict[str, tuple[int, ...]] = {
    "vgg": (64, 128, 256, 512, 512),
    "alex": (64, 192, 384, 256, 256),
}
"""Channels of the five tapped layers of each backbone (the lengths of the heads)."""
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
_EPS = 1e-10
_VGG_TAPS = ("block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3")
_HEADS_FILE = "lpips_heads_v0.1.npz"


def lpips_heads(net: str) -> list[np.ndarray]:
    """The five linear heads of ``net`` (float32 vectors), from the shipped ``.npz``."""
    _check_net(net)
    ref = resources.files("xprospect") / "assets" / "lpips" / _HEADS_FILE
    with resources.as_file(ref) as path, np.load(path) as data:
        return [np.asarray(data[f"{net}/lin{i}"], np.float32) for i in range(5)]


def _check_net(net: str) -> str:
    if net not in LPIPS_NETS:
        raise ConfigError(f"LPIPS net must be one of {LPIPS_NETS}, got {net!r}")
    return net


def backbone_weights_path(net: str, path: str | os.PathLike[str] | None = None) -> str:
    """The backbone weights file of ``net``: ``path``, else the environment variable.

    Raises:
        ConfigError: If neither names a file, or the file does not exist (one line naming it).
    """
    _check_net(net)
    variable = f"XPROSPECT_LPIPS_{net.upper()}_WEIGHTS"
    chosen = os.fspath(path) if path is not None else os.environ.get(variable) or None
    if chosen is None:
        raise ConfigError(
            f"LPIPS ({net}) needs ImageNet backbone weights: pass a weights file or set {variable}"
        )
    if not os.path.isfile(chosen):
        raise ConfigError(f"LPIPS ({net}) backbone weights file not found: {chosen}")
    return chosen


def _alexnet() -> keras.Model:
    # torchvision's AlexNet ``features``: conv 11/4 pad 2, pool 3/2, conv 5 pad 2, pool 3/2,
    # three conv 3 pad 1 (ReLU after each conv); LPIPS taps the five ReLUs.
    layers = keras.layers
    x_in = keras.Input((None, None, 3))
    x = layers.ZeroPadding2D(2)(x_in)
    r1 = layers.Conv2D(64, 11, strides=4, activation="relu", name="conv1")(x)
    x = layers.MaxPooling2D(3, strides=2)(r1)
    x = layers.ZeroPadding2D(2)(x)
    r2 = layers.Conv2D(192, 5, activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(3, strides=2)(r2)
    x = layers.ZeroPadding2D(1)(x)
    r3 = layers.Conv2D(384, 3, activation="relu", name="conv3")(x)
    x = layers.ZeroPadding2D(1)(r3)
    r4 = layers.Conv2D(256, 3, activation="relu", name="conv4")(x)
    x = layers.ZeroPadding2D(1)(r4)
    r5 = layers.Conv2D(256, 3, activation="relu", name="conv5")(x)
    return keras.Model(x_in, [r1, r2, r3, r4, r5], name="alexnet_features")


def _vgg16() -> keras.Model:
    vgg = keras.applications.VGG16(include_top=False, weights=None, input_shape=(None, None, 3))
    outputs = [vgg.get_layer(name).output for name in _VGG_TAPS]
    return keras.Model(vgg.input, outputs, name="vgg16_features")


def backbone(net: str, weights: str | os.PathLike[str] | None = None, seed: int = 0) -> keras.Model:
    """The feature network of ``net``, five feature maps out, weights loaded from a file.

    Args:
        net: ``"vgg"`` or ``"alex"``.
        weights: A Keras weights file of this network (``.weights.h5``, or for VGG16 Keras'
            ``vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5``); None: the environment
            variable; ``"random"``: random weights drawn with ``seed``.
        seed: Seed of the random weights.

    Raises:
        ConfigError: If the weights file is missing or does not fit the network.
    """
    _check_net(net)
    if weights is not None and os.fspath(weights) == "random":
        keras.utils.set_random_seed(int(seed))
        return _vgg16() if net == "vgg" else _alexnet()
    path = backbone_weights_path(net, weights)
    model = _vgg16() if net == "vgg" else _alexnet()
    try:
        model.load_weights(path)
    except Exception as exc:  # a file of another network, or not a weights file
        raise ConfigError(
            f"LPIPS ({net}) backbone weights {path} do not load: {str(exc).splitlines()[0]}"
        ) from exc
    return model


@keras.saving.register_keras_serializable(package="xprospect")
class LPIPS(keras.Model):
    """LPIPS distance (version 0.1, original linear heads) between two batches of images.

    Args:
        net: Backbone, ``"vgg"`` (DuoLift-GAN's choice) or ``"alex"`` (the ``lpips`` package's
            default).
        backbone_weights: Weights file of the backbone; None reads
            ``XPROSPECT_LPIPS_<NET>_WEIGHTS``; ``"random"`` draws them with ``seed`` (tests).
        seed: Seed of random backbone weights.
        name: Model name.
        **kwargs: Passed to ``keras.Model``.

    Call: ``model([x0, x1])`` with images ``(N, H, W, C)`` in [0, 1], ``C`` 1 (repeated to RGB,
    as for grey CT slices) or 3; returns ``(N,)`` distances (0 for identical images).

    Raises:
        ConfigError: If the backbone weights file is missing (one line naming it).
    """

    def __init__(
        self,
        net: str = "vgg",
        backbone_weights: str | None = None,
        seed: int = 0,
        name: str = "lpips",
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.net = _check_net(net)
        self.backbone_weights = None if backbone_weights is None else os.fspath(backbone_weights)
        self.seed = int(seed)
        self.features = backbone(self.net, self.backbone_weights, self.seed)
        self.features.trainable = False
        self.heads = [
            ops.convert_to_tensor(h.reshape(1, 1, 1, -1), "float32") for h in lpips_heads(net)
        ]

    def call(self, inputs: Sequence[Any]) -> Any:
        x0, x1 = (ops.cast(x, "float32") for x in inputs)
        if ops.shape(x0)[-1] == 1:
            x0, x1 = (ops.repeat(x, 3, axis=-1) for x in (x0, x1))
        shift = ops.convert_to_tensor(np.asarray(_SHIFT, np.float32).reshape(1, 1, 1, 3))
        scale = ops.convert_to_tensor(np.asarray(_SCALE, np.float32).reshape(1, 1, 1, 3))
        # [0, 1] images to LPIPS' [-1, 1], then its per-channel scaling layer.
        f0 = self.features((2.0 * x0 - 1.0 - shift) / scale)
        f1 = self.features((2.0 * x1 - 1.0 - shift) / scale)
        total = 0.0
        for a, b, head in zip(f0, f1, self.heads, strict=True):
            a = a / (ops.sqrt(ops.sum(a * a, axis=-1, keepdims=True)) + _EPS)
            b = b / (ops.sqrt(ops.sum(b * b, axis=-1, keepdims=True)) + _EPS)
            weighted = ops.sum(ops.square(a - b) * head, axis=-1)
            total = total + ops.mean(weighted, axis=(1, 2))
        return total

    def get_config(self) -> dict[str, Any]:
        return {
            "net": self.net,
            "backbone_weights": self.backbone_weights,
            "seed": self.seed,
            "name": self.name,
        }


def volume_lpips(
    model: LPIPS,
    truth: np.ndarray,
    pred: np.ndarray,
    *,
    axes: Sequence[int] = (0,),
    batch_size: int = 32,
) -> float:
    """Mean LPIPS over the slices of a volume pair, averaged over ``axes``.

    Args:
        model: The LPIPS model.
        truth: Ground truth ``(D, H, W)`` in [0, 1].
        pred: Prediction, same shape.
        axes: Slices normal to these axes (0 axial, 1 coronal, 2 sagittal).
        batch_size: Slices per forward pass.

    Returns:
        The mean over axes of the mean over that axis' slices.

    Raises:
        GeometryError: If the shapes differ or are not 3D.
    """
    t = np.asarray(truth, np.float32)
    p = np.asarray(pred, np.float32)
    if t.shape != p.shape or t.ndim != 3:
        raise GeometryError(f"volume_lpips needs two 3D volumes of one shape: {t.shape}, {p.shape}")
    per_axis = []
    for axis in axes:
        ts = np.moveaxis(t, axis, 0)[..., None]
        ps = np.moveaxis(p, axis, 0)[..., None]
        values = [
            np.asarray(
                ops.convert_to_numpy(model([ts[i : i + batch_size], ps[i : i + batch_size]]))
            )
            for i in range(0, len(ts), batch_size)
        ]
        per_axis.append(float(np.mean(np.concatenate(values))))
    return float(np.mean(per_axis))
