"""The CycleGAN networks of the style-transfer stage: a ResNet generator and a 70x70 PatchGAN.

Zhu et al. (ICCV 2017) translate images between two unpaired domains; XprospeCT uses one
CycleGAN per view to make DRRs look like real radiographs (and XctDiff the other way). The
networks follow the CycleGAN paper's appendix (the official ``resnet_6blocks`` /
``resnet_9blocks`` generators and the ``basic`` 70x70 discriminator):

- :class:`ResnetGenerator`: ``c7s1-64, d128, d256, R256 x n, u128, u64, c7s1-1`` with reflection
  padding around the 7x7 and residual convolutions, instance norm
  (``GroupNormalization(groups=-1)``) and ReLU; ``n`` = 6 residual blocks at 128^2 and 9 at 256^2
  (:func:`default_blocks`). Images are in xprospect's [0, 1] display scale; the network maps them
  to [-1, 1] inside and its ``tanh`` output back to [0, 1].
- :class:`PatchDiscriminator2D`: ``C64-C128-C256-C512`` (kernel 4, strides 2, 2, 2, 1, zero
  padding 1, LeakyReLU 0.2, no norm on the first layer) and a 1-channel 4x4 convolution: each
  output logit sees a 70x70 patch (:attr:`PatchDiscriminator2D.receptive_field`).

Choices: the downsampling convolutions use Keras ``"same"`` padding (PyTorch's symmetric padding 1
and Keras' asymmetric ``"same"`` give the same output size; they differ by one pixel of
alignment). The generators are fully convolutional; ``size=None`` accepts any edge divisible by
``2 ** n_downsampling``. Everything is ``keras.ops`` / ``keras.layers``, so the networks also run
on the JAX backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from xprospect.errors import ConfigError
from xprospect.models.args import (
    check_norm,
    check_upsampling,
    network_config,
    positive_int,
    resolve_policy,
)
from xprospect.models.blocks import ConvNormAct, upsample_unit

__all__ = [
    "STYLE_PRESETS",
    "PatchDiscriminator2D",
    "ReflectionPadding2D",
    "ResnetBlock2D",
    "ResnetGenerator",
    "build_style_discriminator",
    "build_style_generator",
    "default_blocks",
    "patch_receptive_field",
]


# === Layers ===


@keras.saving.register_keras_serializable(package="xprospect")
class ReflectionPadding2D(keras.layers.Layer):
    """Reflection padding of the two spatial axes (PyTorch's ``ReflectionPad2d``).

    Args:
        padding: Pixels added on each side of each spatial axis.
        **kwargs: ``keras.layers.Layer`` arguments.

    Returns:
        Called on ``(B, H, W, C)``: ``(B, H + 2p, W + 2p, C)``; each border mirrors the image
        without repeating the edge pixel.
    """

    def __init__(self, padding: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.padding = positive_int("padding", padding)

    def call(self, inputs: Any) -> Any:
        p = self.padding
        return keras.ops.pad(inputs, [[0, 0], [p, p], [p, p], [0, 0]], mode="reflect")

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        b, h, w, c = input_shape
        grow = 2 * self.padding
        return (b, None if h is None else h + grow, None if w is None else w + grow, c)

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(padding=self.padding)
        return config


@keras.saving.register_keras_serializable(package="xprospect")
class ResnetBlock2D(keras.layers.Layer):
    """CycleGAN's residual block: ``x + [pad, conv3, norm, ReLU, (dropout), pad, conv3, norm](x)``.

    Args:
        filters: Channels (input and output).
        norm: ``"instance"``, ``"batch"`` or ``"none"``.
        dropout: Dropout rate between the two convolutions (CycleGAN: 0).
        **kwargs: ``keras.layers.Layer`` arguments.

    Returns:
        Called on ``(B, H, W, filters)``: the same shape.
    """

    def __init__(
        self, filters: int, norm: str = "instance", dropout: float = 0.0, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.filters = positive_int("filters", filters)
        self.norm = check_norm(norm)
        if not 0.0 <= float(dropout) < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout!r}")
        self.dropout = float(dropout)
        policy = self.dtype_policy
        self.pad = ReflectionPadding2D(1, dtype=policy, name="pad")
        common = {"rank": 2, "norm": norm, "padding": "valid", "dtype": policy}
        self.conv1 = ConvNormAct(filters, 3, activation="relu", name="conv1", **common)
        self.conv2 = ConvNormAct(filters, 3, activation="linear", name="conv2", **common)
        self.drop = keras.layers.Dropout(self.dropout, dtype=policy) if self.dropout else None

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        if input_shape[-1] != self.filters:
            raise ConfigError(f"ResnetBlock2D({self.filters}) got {input_shape[-1]} input channels")
        padded = self.pad.compute_output_shape(tuple(input_shape))
        self.conv1.build(padded)
        self.conv2.build(padded)
        self.built = True

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        x = self.conv1(self.pad(inputs), training=training)
        if self.drop is not None:
            x = self.drop(x, training=training)
        return inputs + self.conv2(self.pad(x), training=training)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return tuple(input_shape)

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(filters=self.filters, norm=self.norm, dropout=self.dropout)
        return config


# === Networks ===


def default_blocks(size: int | None) -> int:
    """CycleGAN's residual-block count: 6 up to 128^2 images, 9 above (and for ``None``)."""
    return 6 if size is not None and size <= 128 else 9


@keras.saving.register_keras_serializable(package="xprospect")
class ResnetGenerator(keras.Model):
    """CycleGAN's ResNet generator on one-channel [0, 1] images.

    Args:
        size: Image edge, or None for any edge divisible by ``2 ** n_downsampling``.
        filters: Channels of the first convolution (64); doubled at each downsampling.
        n_blocks: Residual blocks at the lowest resolution; None: :func:`default_blocks`.
        n_downsampling: Stride-2 convolutions (and transposed convolutions back up).
        norm: ``"instance"`` (``GroupNormalization(groups=-1)``), ``"batch"`` or ``"none"``.
        dropout: Dropout inside the residual blocks.
        upsampling: The decoder's x2 upsampling: ``"transpose"`` (CycleGAN's 3x3 stride-2 transposed
            convolutions, the default) or, a deliberate deviation for checkerboard-free output
            (issue 17), ``"resize_conv"`` (nearest-neighbour resize + convolution; Odena et al.
            2016, "Deconvolution and Checkerboard Artifacts") or ``"subpixel"`` (convolution +
            depth-to-space, ICNR-initialised; Aitken et al. 2017, "Checkerboard artifact free
            sub-pixel convolution"); see :class:`xprospect.models.blocks.Upsample`.
        dtype: Dtype policy of every layer; None: the global policy. The output layer computes
            in float32.
        **kwargs: ``keras.Model`` arguments (``name``, ``trainable``).

    Returns:
        Called on ``(B, H, W, 1)`` in [0, 1]: ``(B, H, W, 1)`` float32 in [0, 1].
    """

    def __init__(
        self,
        size: int | None = 128,
        filters: int = 64,
        n_blocks: int | None = None,
        n_downsampling: int = 2,
        norm: str = "instance",
        dropout: float = 0.0,
        upsampling: str = "transpose",
        dtype: Any = None,
        **kwargs: Any,
    ) -> None:
        policy = resolve_policy(dtype)
        if size is not None:
            positive_int("size", size)
        positive_int("filters", filters)
        blocks = default_blocks(size) if n_blocks is None else positive_int("n_blocks", n_blocks)
        positive_int("n_downsampling", n_downsampling)
        if size is not None and size % 2**n_downsampling:
            raise ConfigError(
                f"size {size} must be divisible by 2 ** n_downsampling = {2**n_downsampling}"
            )
        check_norm(norm)
        check_upsampling(upsampling)

        # === Inputs ===
        image = keras.Input((size, size, 1), name="image")
        x = keras.layers.Rescaling(2.0, offset=-1.0, dtype=policy, name="to_tanh_range")(image)

        # === Layers ===
        x = ReflectionPadding2D(3, dtype=policy, name="stem_pad")(x)
        x = ConvNormAct(filters, 7, rank=2, norm=norm, padding="valid", dtype=policy, name="stem")(
            x
        )
        for i in range(n_downsampling):
            x = ConvNormAct(
                filters * 2 ** (i + 1), 3, 2, rank=2, norm=norm, dtype=policy, name=f"down{i}"
            )(x)
        width = filters * 2**n_downsampling
        for i in range(blocks):
            x = ResnetBlock2D(width, norm, dropout, dtype=policy, name=f"res{i}")(x)
        for i in reversed(range(n_downsampling)):
            x = upsample_unit(
                upsampling, filters * 2**i, 3, rank=2, norm=norm, dtype=policy, name=f"up{i}"
            )(x)
        x = ReflectionPadding2D(3, dtype=policy, name="head_pad")(x)
        x = keras.layers.Conv2D(1, 7, dtype="float32", name="head")(x)
        out = keras.layers.Activation("tanh", dtype="float32", name="tanh")(x)
        out = keras.layers.Rescaling(0.5, offset=0.5, dtype="float32", name="to_unit_range")(out)
        super().__init__(inputs=image, outputs=out, **kwargs)

        # === Config ===
        self.size = size
        self.filters = filters
        self.n_blocks = n_blocks
        self.n_downsampling = n_downsampling
        self.norm = norm
        self.dropout = float(dropout)
        self.blocks = blocks
        self.upsampling = upsampling
        self._policy_name = policy.name

    def get_config(self) -> dict[str, Any]:
        return {
            **network_config(self),
            "size": self.size,
            "filters": self.filters,
            "n_blocks": self.n_blocks,
            "n_downsampling": self.n_downsampling,
            "norm": self.norm,
            "upsampling": self.upsampling,
            "dropout": self.dropout,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ResnetGenerator:
        return cls(**config)


def patch_receptive_field(kernel_size: int, strides: Sequence[int]) -> int:
    """Edge of the input patch one output of a stack of equal-kernel convolutions sees.

    ``r = 1 + sum_i (k - 1) * prod_{j < i} s_j`` over every convolution (the strides' list
    includes the final stride-1 convolution).
    """
    r, jump = 1, 1
    for s in strides:
        r += (kernel_size - 1) * jump
        jump *= s
    return r


@keras.saving.register_keras_serializable(package="xprospect")
class PatchDiscriminator2D(keras.Model):
    """The 70x70 PatchGAN of pix2pix / CycleGAN on one-channel [0, 1] images.

    Args:
        size: Image edge, or None for any edge.
        filters: Channels of the first convolution (64).
        n_layers: Stride-2 convolutions (3 gives the 70x70 discriminator).
        kernel_size: Kernel of every convolution (4).
        norm: Normalisation of all hidden layers but the first.
        leaky_alpha: Negative slope of the LeakyReLU.
        dtype: Dtype policy; None: the global policy. The logits are float32.
        **kwargs: ``keras.Model`` arguments.

    Returns:
        Called on ``(B, H, W, 1)``: ``(B, h, w, 1)`` float32 logits (14 x 14 at 128^2 with the
        defaults, 30 x 30 at 256^2).

    Attributes:
        receptive_field: Edge of the input patch behind each logit (70 with the defaults).
    """

    def __init__(
        self,
        size: int | None = 128,
        filters: int = 64,
        n_layers: int = 3,
        kernel_size: int = 4,
        norm: str = "instance",
        leaky_alpha: float = 0.2,
        dtype: Any = None,
        **kwargs: Any,
    ) -> None:
        policy = resolve_policy(dtype)
        if size is not None:
            positive_int("size", size)
        positive_int("filters", filters)
        positive_int("n_layers", n_layers)
        positive_int("kernel_size", kernel_size)
        check_norm(norm)
        image = keras.Input((size, size, 1), name="image")
        x = keras.layers.Rescaling(2.0, offset=-1.0, dtype=policy, name="to_tanh_range")(image)
        strides = [2] * n_layers + [1]
        for i, s in enumerate(strides):
            x = keras.layers.ZeroPadding2D(1, dtype=policy, name=f"pad{i}")(x)
            x = ConvNormAct(
                filters * 2 ** min(i, 3),
                kernel_size,
                s,
                rank=2,
                norm="none" if i == 0 else norm,
                activation="leaky_relu",
                padding="valid",
                leaky_alpha=leaky_alpha,
                dtype=policy,
                name=f"conv{i}",
            )(x)
        x = keras.layers.ZeroPadding2D(1, dtype=policy, name="pad_logits")(x)
        logits = keras.layers.Conv2D(1, kernel_size, dtype="float32", name="logits")(x)
        super().__init__(inputs=image, outputs=logits, **kwargs)
        self.size = size
        self.filters = filters
        self.n_layers = n_layers
        self.kernel_size = kernel_size
        self.norm = norm
        self.leaky_alpha = float(leaky_alpha)
        self.receptive_field = patch_receptive_field(kernel_size, [*strides, 1])
        self._policy_name = policy.name

    def get_config(self) -> dict[str, Any]:
        return {
            **network_config(self),
            "size": self.size,
            "filters": self.filters,
            "n_layers": self.n_layers,
            "kernel_size": self.kernel_size,
            "norm": self.norm,
            "leaky_alpha": self.leaky_alpha,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PatchDiscriminator2D:
        return cls(**config)


# === Presets ===

STYLE_PRESETS: dict[str, dict[str, Any]] = {
    "CycleGAN-128": {
        "size": 128,
        "generator": {"filters": 64, "n_blocks": 6},
        "discriminator": {"filters": 64, "n_layers": 3},
    },
    "CycleGAN-256": {
        "size": 256,
        "generator": {"filters": 64, "n_blocks": 9},
        "discriminator": {"filters": 64, "n_layers": 3},
    },
}
"""The CycleGAN paper's two configurations (``resnet_6blocks`` at 128^2, ``resnet_9blocks`` at
256^2, each with the 70x70 ``basic`` discriminator)."""


def _checked(cls: type, what: str, overrides: dict[str, Any]) -> None:
    import inspect

    valid = {*inspect.signature(cls).parameters, "name", "trainable"} - {
        "self",
        "kwargs",
        "size",
    }
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ConfigError(
            f"style {what}: unknown argument(s) {', '.join(unknown)}; valid: "
            f"{', '.join(sorted(valid))}"
        )


def build_style_generator(size: int | None = 128, **overrides: Any) -> ResnetGenerator:
    """A :class:`ResnetGenerator` with the CycleGAN defaults for ``size`` and ``overrides``."""
    _checked(ResnetGenerator, "generator", overrides)
    return ResnetGenerator(size=size, **overrides)


def build_style_discriminator(size: int | None = 128, **overrides: Any) -> PatchDiscriminator2D:
    """A :class:`PatchDiscriminator2D` (70x70 by default) with ``overrides``."""
    _checked(PatchDiscriminator2D, "discriminator", overrides)
    return PatchDiscriminator2D(size=size, **overrides)
