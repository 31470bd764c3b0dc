"""Conditional 3D PatchGAN discriminators of X2CT-GAN and DuoLift-GAN (one configurable class).

:class:`PatchDiscriminator3D` scores a CT volume, optionally conditioned on the X-rays it was
reconstructed from, with a map of raw logits, one per receptive-field patch. The adversarial
losses (LSGAN or BCE on logits) live with the trainer, so there is no sigmoid here.

**Inputs and output.** ``{"volume": (B, S, S, S, 1), "frontal": (B, S, S, 1)[, "lateral": ...]}``
(only ``"volume"`` with ``condition=False``), the volume in the canonical frame of
:mod:`xprospect.models.blocks`, the X-rays in display layout → ``(B, d, d, d, 1)`` float32 logits.

**Conditioning.** Each X-ray is repeated along its own beam axis by
:class:`~xprospect.models.blocks.ExpandXrays` (frontal along axis 1, lateral along axis 2), so
every voxel sees the pixels whose rays cross it; the views are concatenated to the volume as
channels. CVAA-GAN passes the expanded X-rays through "a basic 3D convolution layer (as the 2D
=> 3D sub-module in the encoder pathway)" first (``condition_filters``).

**Network**::

    x ─ for each (filters[i], strides[i]):
            ZeroPadding3D(padding) ─ Conv3D(kernel_size, strides[i], 'valid')
            ─ [instance norm, except on the first layer] ─ LeakyReLU(0.2)
            ─ [ZeroPadding3D(pool_padding) ─ AveragePooling3D(pool_size, pool_strides, 'valid')
               when pool="avg"]
      ─ ZeroPadding3D(padding) ─ Conv3D(1, kernel_size, 'valid'), float32

Each convolution maps an edge ``n`` to ``(n + 2 * padding - kernel_size) // stride + 1`` and each
pooling to ``(n + 2 * pool_padding - pool_size) // pool_strides + 1`` (:func:`patch_map_size`).
The two papers' settings (:func:`x2ct_discriminator`, :func:`duolift_discriminator`):

- X2CT-GAN (the official ``basic3d``, pix2pix' 70x70 PatchGAN in 3D): kernel 4, strides
  2-2-2-1 and a stride-1 final conv, padding 2 (the official ``padw = ceil((4 - 1) / 2)``), no
  pooling; maps 19^3 / 11^3 / 7^3 at 128 / 64 / 32 (``S / 8 + 3``). pix2pix' padding 1 (maps
  ``S / 8 - 2``, what xprospect < 0.2 used) is ``padding=1``.
- DuoLift-GAN ("four convolutional layers, each with a 4x4x4 kernel, a stride of one, and
  padding of two, along with average pooling using a 3x3x3 kernel, a stride of two, and padding
  of one"): four such convolutions, each followed by that pooling (zero padding counted in the
  average, as PyTorch's default), then the final conv (padding 2); maps 10^3 / 6^3 / 4^3 at
  128 / 64 / 32. Pooling without padding (xprospect < 0.2) is ``pool_padding=0``.

DuoLift's text says the volumes are encoded "into a 5x5x5 vector"; that is what its four
conv + pool pairs give on a 64^3 input (65 → 33 → 34 → 17 → 18 → 9 → 10 → 5) without a separate
1-channel classifier. The paper does not say how the 5^3 map becomes a probability, so the
PatchGAN's 1-channel final convolution is kept (the paper's data are 128^3: map 10^3).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from xprospect.constants import VIEWS
from xprospect.errors import ConfigError
from xprospect.models.args import (
    check_norm,
    check_views,
    network_config,
    positive_int,
    resolve_policy,
)
from xprospect.models.blocks import ConvNormAct, ExpandXrays

__all__ = [
    "POOLS",
    "PatchDiscriminator3D",
    "duolift_discriminator",
    "patch_map_size",
    "x2ct_discriminator",
]
POOLS = (None, "avg")


def patch_map_size(
    size: int,
    strides: Sequence[int],
    kernel_size: int = 4,
    padding: int = 1,
    pool: str | None = None,
    pool_size: int = 3,
    pool_strides: int = 2,
    pool_padding: int = 0,
) -> list[int]:
    """Edges of the feature maps of a :class:`PatchDiscriminator3D`, input first, output last.

    Args:
        size: Edge of the input volume.
        strides: Stride of each hidden convolution (the final one has stride 1).
        kernel_size: Kernel of every convolution.
        padding: Zero padding on each side before every convolution.
        pool: None or ``"avg"`` (valid average pooling after each hidden convolution).
        pool_size: Pooling window.
        pool_strides: Pooling stride.
        pool_padding: Zero padding on each side before every pooling.

    Returns:
        ``[size, after layer 1, ..., after the final convolution]`` (a pooled layer counts once).

    Raises:
        ConfigError: A map would be empty.
    """
    sizes = [int(size)]
    n = int(size)
    for i, stride in enumerate([*strides, 1]):
        n = (n + 2 * padding - kernel_size) // stride + 1
        if pool is not None and i < len(strides):
            n += 2 * pool_padding
            n = (n - pool_size) // pool_strides + 1 if n >= pool_size else 0
        if n < 1:
            raise ConfigError(
                f"the discriminator's map is empty after layer {i + 1} at size {size} "
                f"(sizes so far {sizes}); use fewer layers, smaller strides or more padding"
            )
        sizes.append(n)
    return sizes


@keras.saving.register_keras_serializable(package="xprospect")
class PatchDiscriminator3D(keras.Model):
    """A conditional 3D PatchGAN: volume (+ X-rays repeated along their beams) → patch logits.

    Args:
        size: Edge of the volume (and of the X-rays).
        views: The conditioning views, ``("frontal", "lateral")`` or ``("frontal",)``.
        condition: Concatenate the X-rays (:class:`~xprospect.models.blocks.ExpandXrays`) to the
            volume; False: an unconditional discriminator with the ``"volume"`` input only.
        filters: Channels of the hidden convolutions (``(64, 128, 256, 512)``).
        kernel_size: Kernel of every convolution (4).
        strides: Stride of each hidden convolution, one per entry of ``filters``.
        padding: Zero padding on each side before every convolution, the final one included
            (pix2pix / X2CT-GAN: 1; DuoLift: 2).
        pool: None, or ``"avg"``: ``AveragePooling3D(pool_size, pool_strides)`` (valid) after each
            hidden convolution (DuoLift).
        pool_size: Pooling window.
        pool_strides: Pooling stride.
        pool_padding: Zero padding on each side before every pooling (DuoLift: 1; the zeros
            count in the average). 0, the default, is what a stored config without this key
            (xprospect < 0.2) was built with.
        condition_filters: Channels of a 3x3x3 convolution + ReLU applied to the expanded X-rays
            before they are concatenated to the volume (CVAA-GAN); 0, the default: none (X2CT-GAN,
            DuoLift, and what a stored config without this key was built with).
        norm: Normalisation of the hidden layers but the first: ``"instance"``
            (``GroupNormalization(groups=-1)``), ``"batch"`` or ``"none"``.
        leaky_alpha: Negative slope of the LeakyReLU (0.2).
        dtype: Dtype policy of every layer; None: the global policy. The final convolution
            computes in float32.
        **kwargs: ``keras.Model`` arguments (``name``, ``trainable``).

    Returns:
        Called on the input dict: ``(B, d, d, d, 1)`` float32 logits, ``d`` = :attr:`map_size`
        (see :func:`patch_map_size`).

    Attributes:
        map_sizes: Edges of the feature maps, input first (:func:`patch_map_size`).
        map_size: Edge of the output map.

    Choices: the hidden convolutions of a normalised layer have no bias (the norm removes it);
    the final convolution has one. DuoLift's text gives no normalisation, so the same rule as
    X2CT-GAN (instance norm on all but the first and the last layer) is used for it.
    """

    def __init__(
        self,
        size: int = 128,
        views: Sequence[str] = VIEWS,
        condition: bool = True,
        filters: Sequence[int] = (64, 128, 256, 512),
        kernel_size: int = 4,
        strides: Sequence[int] = (2, 2, 2, 1),
        padding: int = 1,
        pool: str | None = None,
        pool_size: int = 3,
        pool_strides: int = 2,
        pool_padding: int = 0,
        condition_filters: int = 0,
        norm: str = "instance",
        leaky_alpha: float = 0.2,
        dtype: Any = None,
        **kwargs: Any,
    ) -> None:
        views = (views,) if isinstance(views, str) else tuple(views)
        filters = tuple(filters)
        strides = tuple(strides)
        policy = resolve_policy(dtype)
        self._check(views, filters, strides, kernel_size, padding, pool, pool_size, pool_strides)
        if isinstance(pool_padding, bool) or not isinstance(pool_padding, int) or pool_padding < 0:
            raise ConfigError(f"pool_padding must be a non-negative integer, got {pool_padding!r}")
        if (
            isinstance(condition_filters, bool)
            or not isinstance(condition_filters, int)
            or condition_filters < 0
        ):
            raise ConfigError(
                f"condition_filters must be a non-negative integer, got {condition_filters!r}"
            )
        check_norm(norm)
        sizes = patch_map_size(
            positive_int("size", size),
            strides,
            kernel_size,
            padding,
            pool,
            pool_size,
            pool_strides,
            pool_padding,
        )

        # === Inputs ===
        inputs: dict[str, Any] = {"volume": keras.Input((size, size, size, 1), name="volume")}
        x = inputs["volume"]
        if condition:
            for v in views:
                inputs[v] = keras.Input((size, size, 1), name=v)
            xrays = ExpandXrays(views, dtype=policy, name="expand_xrays")(
                {v: inputs[v] for v in views}
            )
            if condition_filters:
                xrays = ConvNormAct(
                    condition_filters,
                    3,
                    rank=3,
                    norm="none",
                    activation="relu",
                    dtype=policy,
                    name="condition_conv",
                )(xrays)
            x = keras.layers.Concatenate(dtype=policy, name="condition")([x, xrays])

        # === Layers ===
        for i, (f, s) in enumerate(zip(filters, strides, strict=True)):
            if padding:
                x = keras.layers.ZeroPadding3D(padding, dtype=policy, name=f"pad{i}")(x)
            x = ConvNormAct(
                f,
                kernel_size,
                s,
                norm="none" if i == 0 else norm,
                activation="leaky_relu",
                padding="valid",
                leaky_alpha=leaky_alpha,
                dtype=policy,
                name=f"conv{i}",
            )(x)
            if pool is not None:
                if pool_padding:
                    x = keras.layers.ZeroPadding3D(pool_padding, dtype=policy, name=f"pool_pad{i}")(
                        x
                    )
                x = keras.layers.AveragePooling3D(
                    pool_size, pool_strides, padding="valid", dtype=policy, name=f"pool{i}"
                )(x)
        if padding:
            x = keras.layers.ZeroPadding3D(padding, dtype=policy, name="pad_logits")(x)
        logits = keras.layers.Conv3D(1, kernel_size, dtype="float32", name="logits")(x)

        super().__init__(inputs=inputs, outputs=logits, **kwargs)

        # === Config ===
        self.size = size
        self.views = views
        self.condition = bool(condition)
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.padding = padding
        self.pool = pool
        self.pool_size = pool_size
        self.pool_strides = pool_strides
        self.pool_padding = pool_padding
        self.condition_filters = condition_filters
        self.norm = norm
        self.leaky_alpha = float(leaky_alpha)
        self.map_sizes = tuple(sizes)
        self.map_size = sizes[-1]
        self._policy_name = policy.name

    @staticmethod
    def _check(
        views: tuple[str, ...],
        filters: tuple[int, ...],
        strides: tuple[int, ...],
        kernel_size: int,
        padding: int,
        pool: str | None,
        pool_size: int,
        pool_strides: int,
    ) -> None:
        check_views(views)
        if not filters:
            raise ConfigError("filters must name at least one hidden layer")
        for f in filters:
            positive_int("filters entries", f)
        if len(strides) != len(filters):
            raise ConfigError(
                f"strides needs one entry per filters entry ({len(filters)}), got {strides!r}"
            )
        for s in strides:
            positive_int("strides entries", s)
        positive_int("kernel_size", kernel_size)
        if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
            raise ConfigError(f"padding must be a non-negative integer, got {padding!r}")
        if pool not in POOLS:
            raise ConfigError(f"pool must be one of {POOLS}, got {pool!r}")
        positive_int("pool_size", pool_size)
        positive_int("pool_strides", pool_strides)

    def get_config(self) -> dict[str, Any]:
        return {
            **network_config(self),
            "size": self.size,
            "views": list(self.views),
            "condition": self.condition,
            "filters": list(self.filters),
            "kernel_size": self.kernel_size,
            "strides": list(self.strides),
            "padding": self.padding,
            "pool": self.pool,
            "pool_size": self.pool_size,
            "pool_strides": self.pool_strides,
            "pool_padding": self.pool_padding,
            "condition_filters": self.condition_filters,
            "norm": self.norm,
            "leaky_alpha": self.leaky_alpha,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PatchDiscriminator3D:
        return cls(**config)


# === Presets ===

X2CT_DISCRIMINATOR: dict[str, Any] = {
    "filters": (64, 128, 256, 512),
    "kernel_size": 4,
    "strides": (2, 2, 2, 1),
    "padding": 2,
    "pool": None,
    "norm": "instance",
    "leaky_alpha": 0.2,
}
"""X2CT-GAN's 3D PatchGAN (pix2pix' 70x70 discriminator in 3D; the official ``basic3d``).

Padding 2 is the official X2CT code's ``ceil((4 - 1) / 2)`` (19^3 maps at 128^3); pix2pix'
padding 1 (14^3) is ``padding=1``. 11.06 M parameters with two views, as the official one."""

DUOLIFT_DISCRIMINATOR: dict[str, Any] = {
    "filters": (64, 128, 256, 512),
    "kernel_size": 4,
    "strides": (1, 1, 1, 1),
    "padding": 2,
    "pool": "avg",
    "pool_size": 3,
    "pool_strides": 2,
    "pool_padding": 1,
    "norm": "instance",
    "leaky_alpha": 0.2,
}
"""DuoLift-GAN's: four k4/s1/p2 convolutions, each followed by k3/s2/p1 average pooling."""


def x2ct_discriminator(
    size: int, views: Sequence[str] = VIEWS, **overrides: Any
) -> PatchDiscriminator3D:
    """X2CT-GAN's conditional discriminator at ``size`` (map 19^3 at 128, 11^3 at 64, 7^3 at 32).

    Args:
        size: Edge of the volume.
        views: The conditioning views.
        **overrides: Any :class:`PatchDiscriminator3D` argument, e.g. ``filters=(8, 16, 32, 64)``.

    Returns:
        The configured discriminator.
    """
    return PatchDiscriminator3D(size=size, views=views, **{**X2CT_DISCRIMINATOR, **overrides})


def duolift_discriminator(
    size: int, views: Sequence[str] = VIEWS, **overrides: Any
) -> PatchDiscriminator3D:
    """DuoLift-GAN's conditional discriminator at ``size`` (map 10^3 at 128, 6^3 at 64, 4^3 at 32).

    Args:
        size: Edge of the volume.
        views: The conditioning views.
        **overrides: Any :class:`PatchDiscriminator3D` argument.

    Returns:
        The configured discriminator.
    """
    return PatchDiscriminator3D(size=size, views=views, **{**DUOLIFT_DISCRIMINATOR, **overrides})
