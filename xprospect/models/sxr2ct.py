"""The S-XR2CT generator (Hor, Yang and Kim 2025): one frontal X-ray and a template CT to a volume.

:class:`SXR2CTGenerator` is a re-implementation from the paper's description (no code of theirs is
used). Where the text leaves a choice open, the choice is written in the class docstring under
*Choices*. The paper's discriminator (X2CT-GAN's, conditioned on the expanded X-ray) and its
losses live elsewhere: :mod:`xprospect.perceptual` has the perceptual term, the trainer the rest.

**Inputs and output.** ``{"frontal": (B, S, S, 1)}`` (single view: rows = canonical axis 0,
columns = axis 2, beam along axis 1) in [0, 1] → ``(B, S, S, S, 1)`` float32 in [0, 1] in the
canonical frame of :mod:`xprospect.models.blocks` (axis 0 head → feet, axis 1 anterior →
posterior, axis 2 patient's right → left).

**Network** (``L = len(depths)`` levels; level ``l`` at resolution ``r_l = S / 2**l`` with 2D
width ``a_l = min(base_filters_2d * 2**l, max_filters)`` and 3D width
``c_l = min(base_filters * 2**l, max_filters)``)::

    likelihood  Λ = LikelihoodImage(X)                                  (B, S, S, 1), float32
    2D ConvNeXt encoder:
        h = LayerNorm(Conv2D(a_0, 3)(X))                                stem, full resolution
        level l: [LayerNorm → Conv2D(a_l, 2, stride 2)] (l > 0) → ConvNeXtBlock x depths[l]
        f_l = Conv2D(c_l, 1)(concat(h_l, AvgPool_{2**l}(Λ)))            X-ray features + Λ
        V_l = ExpandXrays("frontal")(f_l)       repeated along the beam (axis 1), canonical
    3D encoder (canonical frame):
        T = TemplateVolume (non-trainable (S, S, S, 1) weight: the mean training CT)
        e_0 = Conv3D-block(concat(T, V_0))
        e_l = Conv3D-block(concat(stride-2 ConvNormAct(e_{l-1}), V_l, AvgPool_{2**l}(T)))
    3D decoder:
        d = ConvNormAct(c_{L-1})(e_{L-1})  →  WindowAttention3D x attention_blocks
                                              (shift 0, w/2, 0, ...: W-MSA / SW-MSA)
        l = L-2 .. 0:  d = Conv3D-block(concat(transposed-conv up(d), e_l))
    head: Conv3D(1, 1x1x1, sigmoid, float32)

A *Conv3D-block* is two :class:`~xprospect.models.blocks.ConvNormAct` (3x3x3, instance norm).

Everything is written with ``keras.ops`` / ``keras.layers`` only, so it also runs on JAX.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import numpy.typing as npt
from keras import ops

from xprospect.errors import ConfigError
from xprospect.models.args import (
    check_norm,
    check_upsampling,
    network_config,
    positive_int,
    power_of_two,
    resolve_policy,
)
from xprospect.models.blocks import ConvNormAct, ExpandXrays, upsample_unit

__all__ = [
    "LEGACY_DEFAULTS",
    "ConvNeXtBlock",
    "LikelihoodImage",
    "SXR2CTGenerator",
    "TemplateVolume",
    "WindowAttention3D",
    "relative_position_index",
    "shifted_window_mask",
    "window_partition",
    "window_reverse",
]

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_ACTIVATIONS = ("relu", "leaky_relu", "selu", "gelu")
LEGACY_DEFAULTS: dict[str, Any] = {"template_every_level": False, "shifted_windows": False}
"""What a stored :class:`SXR2CTGenerator` config without these keys (xprospect < 0.2) was built
with; :meth:`SXR2CTGenerator.from_config` fills them in, so old ``.keras`` files load as before."""


# === Helpers ===


def _positive_float(name: str, value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be a positive number, got {value!r}") from exc
    if not (math.isfinite(out) and out > 0):
        raise ConfigError(f"{name} must be a positive number, got {value!r}")
    return out


def _roll(x: Any, shift: int, axis: int) -> Any:
    """``numpy.roll`` along one static axis, from slices and a concatenation: exported graphs
    then hold only ops that :data:`xprospect.trust.ALLOWED_OPS` already lists (no ``Roll``)."""
    n = int(x.shape[axis])
    s = shift % n
    if s == 0:
        return x
    head = (slice(None),) * axis
    return ops.concatenate([x[(*head, slice(n - s, None))], x[(*head, slice(0, n - s))]], axis)


def window_partition(x: Any, window_size: int) -> Any:
    """Cuts a channels-last volume into non-overlapping cubic windows.

    Args:
        x: ``(B, D, H, W, C)`` with ``D, H, W`` static multiples of ``window_size``.
        window_size: Edge ``w`` of a window.

    Returns:
        ``(B * nD * nH * nW, w**3, C)``: windows ordered batch-major, then along D, H, W (``nD =
        D / w`` ...); the voxels of a window in row-major (d, h, w) order.
    """
    _, d, h, w_, c = x.shape
    w = window_size
    x = ops.reshape(x, (-1, d // w, w, h // w, w, w_ // w, w, c))
    x = ops.transpose(x, (0, 1, 3, 5, 2, 4, 6, 7))
    return ops.reshape(x, (-1, w**3, c))


def window_reverse(windows: Any, window_size: int, spatial: Sequence[int]) -> Any:
    """Inverse of :func:`window_partition`.

    Args:
        windows: ``(B * nD * nH * nW, w**3, C)``.
        window_size: Edge ``w`` of a window.
        spatial: ``(D, H, W)`` of the volume.

    Returns:
        ``(B, D, H, W, C)``.
    """
    d, h, w_ = (int(s) for s in spatial)
    w = window_size
    c = windows.shape[-1]
    x = ops.reshape(windows, (-1, d // w, h // w, w_ // w, w, w, w, c))
    x = ops.transpose(x, (0, 1, 4, 2, 5, 3, 6, 7))
    return ops.reshape(x, (-1, d, h, w_, c))


def shifted_window_mask(
    spatial: Sequence[int], window_size: int, shift_size: int
) -> npt.NDArray[np.float32]:
    """Swin's attention mask for shifted windows of a volume rolled back by ``shift_size``.

    After the cyclic shift (``roll`` by ``-shift_size`` along D, H, W) the windows at the far
    edges hold voxels from opposite sides of the volume; the mask keeps attention inside each
    window to voxels that were neighbours before the roll. Along each axis of length ``n`` the
    rolled coordinate ``c`` is in region 0 (``c < n - w``), 1 (``c < n - shift``) or 2; two
    voxels may attend to each other iff their regions match on all three axes.

    Args:
        spatial: ``(D, H, W)``, multiples of ``window_size``.
        window_size: Window edge ``w``.
        shift_size: The shift, ``0 < shift_size < w``.

    Returns:
        ``(nD * nH * nW, w**3, w**3)`` float32: 0 where attention is allowed, -100 elsewhere
        (Swin's value: ``exp(-100)`` vanishes next to the other logits), windows ordered as
        :func:`window_partition` orders them.
    """
    w, sh = int(window_size), int(shift_size)
    labels = np.zeros(tuple(int(n) for n in spatial), np.int64)
    for axis, n in enumerate(labels.shape):
        region = np.where(np.arange(n) < n - w, 0, np.where(np.arange(n) < n - sh, 1, 2))
        shape = [1, 1, 1]
        shape[axis] = n
        labels = labels * 3 + region.reshape(shape)
    d, h, w_ = labels.shape
    windows = labels.reshape(d // w, w, h // w, w, w_ // w, w).transpose(0, 2, 4, 1, 3, 5)
    windows = windows.reshape(-1, w**3)
    same = windows[:, :, None] == windows[:, None, :]
    return np.where(same, 0.0, -100.0).astype(np.float32)


def relative_position_index(window_size: int) -> npt.NDArray[np.int32]:
    """Swin's relative-position lookup for a cubic window.

    Args:
        window_size: Edge ``w`` of the window (``T = w**3`` voxels).

    Returns:
        ``(T, T)`` int32: for voxels ``i, j`` (row-major (d, h, w) order), the row of the
        ``((2w - 1)**3, heads)`` bias table for the offset ``coords[i] - coords[j]``.
    """
    w = int(window_size)
    grid = np.stack(np.meshgrid(*(np.arange(w),) * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    rel = grid[:, None, :] - grid[None, :, :] + (w - 1)  # each offset in [0, 2w - 2]
    span = 2 * w - 1
    return (rel[..., 0] * span * span + rel[..., 1] * span + rel[..., 2]).astype(np.int32)


# === Layers ===


@keras.saving.register_keras_serializable(package="xprospect")
class LikelihoodImage(keras.layers.Layer):
    """The X-ray's pixel-wise Gaussian negative log-likelihood under its own statistics.

    ``L = log sqrt(2 pi sigma^2) + (X - mu)^2 / (2 sigma^2)`` with ``mu`` and ``sigma`` the mean
    and (population) standard deviation of each image over its pixels and channels. ``sigma``
    gets ``epsilon`` added so a flat image (``sigma = 0``) gives finite values: the log term is
    then ``log(epsilon) + log sqrt(2 pi)`` and the quadratic term 0. It is computed in float32
    whatever the policy (a log and a division by a small variance), then cast to the compute
    dtype.

    Args:
        epsilon: Added to ``sigma`` (in the X-ray's units; the X-rays are in [0, 1]).
        **kwargs: ``keras.layers.Layer`` arguments.

    Returns:
        Called on ``(B, H, W, C)``: ``(B, H, W, C)``.
    """

    def __init__(self, epsilon: float = 1e-3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.epsilon = _positive_float("epsilon", epsilon)

    def call(self, inputs: Any) -> Any:
        x = ops.cast(inputs, "float32")
        mu = ops.mean(x, axis=(1, 2, 3), keepdims=True)
        centred = x - mu
        sigma = ops.sqrt(ops.mean(ops.square(centred), axis=(1, 2, 3), keepdims=True))
        sigma = sigma + self.epsilon
        out = ops.log(sigma) + _LOG_SQRT_2PI + ops.square(centred) / (2.0 * ops.square(sigma))
        return ops.cast(out, self.compute_dtype)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return tuple(input_shape)

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(epsilon=self.epsilon)
        return config


@keras.saving.register_keras_serializable(package="xprospect")
class ConvNeXtBlock(keras.layers.Layer):
    """A 2D ConvNeXt block (Liu et al. 2022): depthwise conv, LayerNorm, 4x MLP, layer scale.

    ``x + gamma * Dense(filters)(GELU(Dense(mlp_ratio * filters)(LayerNorm(DWConv_k(x)))))``,
    with ``gamma`` a learned per-channel scale initialised to ``layer_scale_init``. Stochastic
    depth (drop path) is left out.

    Args:
        filters: Channels in and out.
        kernel_size: Depthwise kernel (7 in ConvNeXt).
        mlp_ratio: Hidden width of the pointwise MLP, in multiples of ``filters``.
        layer_scale_init: Initial value of ``gamma`` (1e-6 in ConvNeXt).
        epsilon: LayerNorm epsilon.
        **kwargs: ``keras.layers.Layer`` arguments.

    Returns:
        Called on ``(B, H, W, filters)``: ``(B, H, W, filters)``.
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int = 7,
        mlp_ratio: int = 4,
        layer_scale_init: float = 1e-6,
        epsilon: float = 1e-6,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.filters = positive_int("filters", filters)
        self.kernel_size = positive_int("kernel_size", kernel_size)
        self.mlp_ratio = positive_int("mlp_ratio", mlp_ratio)
        self.layer_scale_init = _positive_float("layer_scale_init", layer_scale_init)
        self.epsilon = _positive_float("epsilon", epsilon)
        policy = self.dtype_policy
        self.dwconv = keras.layers.DepthwiseConv2D(
            kernel_size, padding="same", dtype=policy, name="dwconv"
        )
        self.norm = keras.layers.LayerNormalization(epsilon=epsilon, dtype=policy, name="norm")
        self.pw1 = keras.layers.Dense(
            mlp_ratio * filters, activation="gelu", dtype=policy, name="pw1"
        )
        self.pw2 = keras.layers.Dense(filters, dtype=policy, name="pw2")

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        shape = tuple(input_shape)
        if shape[-1] != self.filters:
            raise ConfigError(f"ConvNeXtBlock({self.filters}) got {shape[-1]} input channels")
        self.dwconv.build(shape)
        self.norm.build(shape)
        self.pw1.build(shape)
        self.pw2.build((*shape[:-1], self.mlp_ratio * self.filters))
        self.gamma = self.add_weight(
            shape=(self.filters,),
            initializer=keras.initializers.Constant(self.layer_scale_init),
            name="gamma",
        )
        self.built = True

    def call(self, inputs: Any) -> Any:
        x = self.pw2(self.pw1(self.norm(self.dwconv(inputs))))
        return inputs + self.gamma * x

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return tuple(input_shape)

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            mlp_ratio=self.mlp_ratio,
            layer_scale_init=self.layer_scale_init,
            epsilon=self.epsilon,
        )
        return config


@keras.saving.register_keras_serializable(package="xprospect")
class TemplateVolume(keras.layers.Layer):
    """A fixed template CT (the mean training volume), broadcast to the batch of its input.

    The template is a non-trainable weight, so it is saved and loaded with the model (``.keras``
    and SavedModel) and untouched by the optimiser. It starts as the constant ``value``; fill it
    with :meth:`set_template` (e.g. the mean of the training volumes) before training.

    Args:
        size: Edge of the cubic template.
        value: Initial constant value (in the volumes' normalised [0, 1] range).
        **kwargs: ``keras.layers.Layer`` arguments.

    Returns:
        Called on any tensor with a batch axis (e.g. the ``(B, S, S, 1)`` X-ray):
        ``(B, size, size, size, 1)``, every example the template.
    """

    def __init__(self, size: int, value: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.size = positive_int("size", size)
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"value must be finite, got {value!r}")
        self.value = value
        self.template = self.add_weight(
            shape=(size, size, size, 1),
            initializer=keras.initializers.Constant(value),
            trainable=False,
            name="template",
        )

    def set_template(self, volume: Any) -> None:
        """Replaces the template.

        Args:
            volume: Array of shape ``(size, size, size)``, ``(size, size, size, 1)`` or
                ``(1, size, size, size, 1)``, canonical frame, finite values.

        Raises:
            ConfigError: On another shape or non-finite values.
        """
        arr = np.asarray(keras.ops.convert_to_numpy(volume), dtype=np.float32)
        s = self.size
        if arr.shape not in ((s, s, s), (s, s, s, 1), (1, s, s, s, 1)):
            raise ConfigError(
                f"template must have shape ({s}, {s}, {s}[, 1]), got {arr.shape}; it is the "
                "mean training volume at the model's size"
            )
        if not np.all(np.isfinite(arr)):
            raise ConfigError("template holds NaN or infinite values")
        self.template.assign(arr.reshape(s, s, s, 1))

    def call(self, inputs: Any) -> Any:
        # Zeros of shape (B, 1, 1, 1, 1) broadcast the template over a batch of unknown size.
        first = inputs[(slice(None),) + (slice(0, 1),) * (len(inputs.shape) - 1)]
        zeros = ops.reshape(ops.zeros_like(first, dtype=self.compute_dtype), (-1, 1, 1, 1, 1))
        return ops.expand_dims(ops.cast(self.template, self.compute_dtype), 0) + zeros

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        batch = tuple(input_shape)[:1]
        return (*batch, self.size, self.size, self.size, 1)

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(size=self.size, value=self.value)
        return config


@keras.saving.register_keras_serializable(package="xprospect")
class WindowAttention3D(keras.layers.Layer):
    """A Swin-style transformer block on a 3D feature map with non-overlapping cubic windows.

    ``y = x + W-MSA(LayerNorm(x))``; ``out = y + MLP(LayerNorm(y))``. W-MSA cuts the map into
    ``window_size**3`` windows (:func:`window_partition`), runs multi-head self-attention inside
    each window, ``softmax(q k^T / sqrt(head_dim) + B) v`` with ``B`` Swin's learned relative
    position bias (one ``((2w - 1)**3, num_heads)`` table, looked up by
    :func:`relative_position_index`; zero-initialised, off with ``relative_position_bias=False``),
    projects the heads back and reassembles the map (:func:`window_reverse`). The MLP is
    ``Dense(mlp_ratio * filters, GELU) → Dense(filters)``. With ``shift_size > 0`` the block is
    Swin's SW-MSA: the normalised map is rolled by ``-shift_size`` along D, H, W before the
    windows are cut, attention is masked to voxels that were neighbours before the roll
    (:func:`shifted_window_mask`), and the result is rolled back; alternating blocks with shift
    0 and ``window_size // 2`` let information cross window borders (Swin, Swin UNETR). The
    attention logits and softmax are computed in float32.

    Args:
        filters: Channels in and out; a multiple of ``num_heads``.
        num_heads: Attention heads.
        window_size: Window edge; must divide every spatial size of the input.
        mlp_ratio: Hidden width of the MLP, in multiples of ``filters``.
        relative_position_bias: Add the learned relative position bias.
        epsilon: LayerNorm epsilon.
        shift_size: Cyclic shift of the windows (0: W-MSA; Swin's SW-MSA: ``window_size // 2``);
            ``0 <= shift_size < window_size``.
        **kwargs: ``keras.layers.Layer`` arguments.

    Returns:
        Called on ``(B, D, H, W, filters)``: the same shape.
    """

    def __init__(
        self,
        filters: int,
        num_heads: int = 4,
        window_size: int = 4,
        mlp_ratio: float = 4.0,
        relative_position_bias: bool = True,
        epsilon: float = 1e-5,
        shift_size: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.filters = positive_int("filters", filters)
        self.num_heads = positive_int("num_heads", num_heads)
        if filters % num_heads:
            raise ConfigError(f"filters ({filters}) must be a multiple of num_heads ({num_heads})")
        self.window_size = positive_int("window_size", window_size)
        if (
            isinstance(shift_size, bool)
            or not isinstance(shift_size, int)
            or not 0 <= shift_size < window_size
        ):
            raise ConfigError(
                f"shift_size must be an integer in [0, window_size = {window_size}), got "
                f"{shift_size!r}"
            )
        self.shift_size = shift_size
        self._mask: npt.NDArray[np.float32] | None = None
        self.mlp_ratio = _positive_float("mlp_ratio", mlp_ratio)
        self.relative_position_bias = bool(relative_position_bias)
        self.epsilon = _positive_float("epsilon", epsilon)
        self.head_dim = filters // num_heads
        self._index = relative_position_index(window_size).reshape(-1)
        policy = self.dtype_policy
        self.norm1 = keras.layers.LayerNormalization(epsilon=epsilon, dtype=policy, name="norm1")
        self.qkv = keras.layers.Dense(3 * filters, dtype=policy, name="qkv")
        self.proj = keras.layers.Dense(filters, dtype=policy, name="proj")
        self.norm2 = keras.layers.LayerNormalization(epsilon=epsilon, dtype=policy, name="norm2")
        self.hidden = max(1, round(mlp_ratio * filters))
        self.mlp1 = keras.layers.Dense(self.hidden, activation="gelu", dtype=policy, name="mlp1")
        self.mlp2 = keras.layers.Dense(filters, dtype=policy, name="mlp2")

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        shape = tuple(input_shape)
        if len(shape) != 5 or shape[-1] != self.filters:
            raise ConfigError(
                f"WindowAttention3D({self.filters}) needs (B, D, H, W, {self.filters}), got {shape}"
            )
        for s in shape[1:4]:
            if s is None or s % self.window_size:
                raise ConfigError(
                    f"window_size {self.window_size} must divide the static spatial sizes "
                    f"{shape[1:4]}"
                )
        tokens = (None, self.window_size**3, self.filters)
        if self.shift_size:
            spatial = tuple(int(v) for v in shape[1:4])  # type: ignore[arg-type]
            self._mask = shifted_window_mask(spatial, self.window_size, self.shift_size)
        self.norm1.build(shape)
        self.qkv.build(tokens)
        self.proj.build(tokens)
        self.norm2.build(shape)
        self.mlp1.build(shape)
        self.mlp2.build((*shape[:-1], self.hidden))
        if self.relative_position_bias:
            self.bias_table = self.add_weight(
                shape=((2 * self.window_size - 1) ** 3, self.num_heads),
                initializer="zeros",
                name="relative_position_bias",
            )
        self.built = True

    def attention(self, x: Any) -> Any:
        """Windowed multi-head self-attention alone (no norms, residuals or MLP).

        Args:
            x: ``(B, D, H, W, filters)``.

        Returns:
            ``(B, D, H, W, filters)``.
        """
        w, heads, hd = self.window_size, self.num_heads, self.head_dim
        tokens = w**3
        if self.shift_size:
            for axis in (1, 2, 3):
                x = _roll(x, -self.shift_size, axis)
        windows = window_partition(x, w)  # (N, T, C)
        qkv = ops.reshape(self.qkv(windows), (-1, tokens, 3, heads, hd))
        qkv = ops.transpose(qkv, (2, 0, 3, 1, 4))  # (3, N, heads, T, hd)
        q, k, v = qkv[0], qkv[1], qkv[2]
        logits = ops.matmul(
            ops.cast(q, "float32"), ops.transpose(ops.cast(k, "float32"), (0, 1, 3, 2))
        )
        logits = logits / math.sqrt(hd)
        if self.relative_position_bias:
            bias = ops.take(ops.cast(self.bias_table, "float32"), self._index, axis=0)
            bias = ops.transpose(ops.reshape(bias, (tokens, tokens, heads)), (2, 0, 1))
            logits = logits + ops.expand_dims(bias, 0)
        if self._mask is not None:
            n_windows = self._mask.shape[0]
            logits = ops.reshape(logits, (-1, n_windows, heads, tokens, tokens))
            logits = logits + ops.convert_to_tensor(self._mask[None, :, None], "float32")
            logits = ops.reshape(logits, (-1, heads, tokens, tokens))
        weights = ops.cast(ops.softmax(logits, axis=-1), v.dtype)
        out = ops.transpose(ops.matmul(weights, v), (0, 2, 1, 3))  # (N, T, heads, hd)
        out = self.proj(ops.reshape(out, (-1, tokens, self.filters)))
        out = window_reverse(out, w, x.shape[1:4])
        if self.shift_size:
            for axis in (1, 2, 3):
                out = _roll(out, self.shift_size, axis)
        return out

    def call(self, inputs: Any) -> Any:
        x = inputs + self.attention(self.norm1(inputs))
        return x + self.mlp2(self.mlp1(self.norm2(x)))

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return tuple(input_shape)

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(
            filters=self.filters,
            num_heads=self.num_heads,
            window_size=self.window_size,
            mlp_ratio=self.mlp_ratio,
            relative_position_bias=self.relative_position_bias,
            epsilon=self.epsilon,
            shift_size=self.shift_size,
        )
        return config


# === Model ===


@keras.saving.register_keras_serializable(package="xprospect")
class SXR2CTGenerator(keras.Model):
    """S-XR2CT's generator: a frontal X-ray plus a template CT to a CT volume (single view).

    See the module docstring for the graph. Layer names: ``likelihood``, ``stem_conv``,
    ``stage{l}_block{b}``, ``xray_proj{l}``, ``lift{l}``, ``template``, ``enc{l}_conv{0,1}``,
    ``dec_attention{i}``, ``dec{l}_conv{0,1}``, ``volume``.

    *Choices* (where the paper's text leaves them open):

    - Likelihood image: ``mu`` and ``sigma`` are each X-ray's own mean and population standard
      deviation over all its pixels; ``likelihood_epsilon`` (1e-3) is added to ``sigma`` so a
      flat image stays finite. It is computed in float32.
    - 2D encoder: ConvNeXt stages at full resolution and after each stride-2 downsampling (a
      full-resolution 3x3 stem instead of ConvNeXt's 4x4 patchify, so there is a 2D feature map
      for every 3D level down to full resolution); ConvNeXt-T's stage depths (3, 3, 9, 3); no
      stochastic depth; layer scale 1e-6.
    - Fusion of 2D and likelihood: the pooled likelihood is concatenated to the stage output and
      a 1x1 Conv2D maps them to the 3D width of the level before lifting (lifting in 2D widths
      would cost ``S`` times more memory in 3D).
    - Lifting: repeat along the frontal beam (canonical axis 1) with
      :class:`~xprospect.models.blocks.ExpandXrays`, no learned depth weighting.
    - 3D encoder / decoder blocks: two 3x3x3 :class:`~xprospect.models.blocks.ConvNormAct` (instance
      norm, ``activation``) per level; stride-2 conv down, stride-2 transposed conv up. The paper:
      "The 3D encoder takes a template CT image as a module parameter and the X-ray style
      features as inputs, concatenating them at each layer": the template, average-pooled to
      each level's resolution, and the lifted X-ray features are concatenated to every level's
      input (``template_every_level``).
    - Attention: ``attention_blocks`` :class:`WindowAttention3D` blocks after the decoder's first
      (coarsest) layer ("self-attention following the Swin UNETR model after the first layer in
      the decoder"), window ``min(window_size, r_{L-1})``, the odd blocks shifted by half a
      window as Swin UNETR's (``shifted_windows``; no shift where the window covers the whole
      map, as Swin), learned relative position bias, MLP ratio 4.
    - Template: a non-trainable weight initialised to ``template_value`` (0.0); set it to the
      mean training volume with :meth:`set_template` before training.

    Args:
        size: Edge of the square X-ray and of the output cube; a power of two with
            ``size / 2**(len(depths) - 1) >= 2``.
        views: Must be ``("frontal",)``: the network is single view (kept so that generic
            builders can pass the views).
        base_filters: 3D width at full resolution; doubled per level, capped by ``max_filters``.
        base_filters_2d: 2D (ConvNeXt) width at full resolution; doubled per level, capped.
        max_filters: Cap on any level's width.
        depths: ConvNeXt blocks per 2D stage; its length is the number of levels.
        num_heads: Attention heads of the window attention (a divisor of the coarsest 3D width).
        window_size: Attention window edge (clipped to the coarsest resolution).
        attention_blocks: Window-attention blocks after the decoder's first layer (0: none).
        mlp_ratio: MLP width of the attention blocks, in multiples of the channels.
        activation: Activation of the 3D blocks: ``"relu"``, ``"leaky_relu"``, ``"selu"`` or
            ``"gelu"``.
        norm: Normalisation of the 3D blocks: ``"instance"``, ``"batch"`` or ``"none"``.
        likelihood_epsilon: Added to each X-ray's standard deviation in the likelihood image.
        template_value: Initial constant value of the template CT.
        template_every_level: Concatenate the (pooled) template at every encoder level (the
            paper, default); False: at full resolution only (xprospect < 0.2, and what a stored
            config without this key loads as).
        shifted_windows: Shift every second attention block's windows by ``window_size // 2``
            (Swin UNETR, default); False: no shifts (xprospect < 0.2, and what a stored config
            without this key loads as).
        upsampling: The decoder's x2 upsampling: ``"transpose"`` (the 2x2x2 stride-2 transposed
            convolution, the default) or, a deliberate deviation for checkerboard-free output (issue
            17), ``"resize_conv"`` (nearest-neighbour resize + convolution; Odena et al. 2016,
            "Deconvolution and Checkerboard Artifacts") or ``"subpixel"`` (convolution +
            depth-to-space, ICNR-initialised; Aitken et al. 2017, "Checkerboard artifact free
            sub-pixel convolution"); see :class:`xprospect.models.blocks.Upsample`.
        dtype: Dtype policy of every layer (e.g. ``"mixed_bfloat16"``); None: the global policy.
            The likelihood image and the output layer always compute in float32.
        **kwargs: ``keras.Model`` arguments (``name``, ``trainable``).

    Returns:
        Called on ``{"frontal": (B, size, size, 1)}``: ``(B, size, size, size, 1)`` float32 in
        [0, 1], canonical frame.
    """

    def __init__(
        self,
        size: int = 128,
        views: Sequence[str] = ("frontal",),
        base_filters: int = 16,
        base_filters_2d: int = 48,
        max_filters: int = 384,
        depths: Sequence[int] = (3, 3, 9, 3),
        num_heads: int = 4,
        window_size: int = 4,
        attention_blocks: int = 2,
        mlp_ratio: float = 4.0,
        activation: str = "leaky_relu",
        norm: str = "instance",
        likelihood_epsilon: float = 1e-3,
        template_value: float = 0.0,
        template_every_level: bool = True,
        shifted_windows: bool = True,
        upsampling: str = "transpose",
        dtype: Any = None,
        **kwargs: Any,
    ) -> None:
        views = (views,) if isinstance(views, str) else tuple(views)
        depths = tuple(depths)
        policy = resolve_policy(dtype)
        self._check(
            size,
            views,
            base_filters,
            base_filters_2d,
            max_filters,
            depths,
            num_heads,
            window_size,
            attention_blocks,
            activation,
            norm,
        )
        check_upsampling(upsampling)
        levels = len(depths)

        def width3(level: int) -> int:
            return int(min(base_filters * 2**level, max_filters))

        def width2(level: int) -> int:
            return int(min(base_filters_2d * 2**level, max_filters))

        coarsest = width3(levels - 1)
        if coarsest % num_heads:
            raise ConfigError(
                f"num_heads ({num_heads}) must divide the coarsest 3D width ({coarsest})"
            )
        block3: dict[str, Any] = {"rank": 3, "norm": norm, "activation": activation}

        def conv3(x: Any, filters: int, name: str) -> Any:
            x = ConvNormAct(filters, 3, **block3, dtype=policy, name=f"{name}_conv0")(x)
            return ConvNormAct(filters, 3, **block3, dtype=policy, name=f"{name}_conv1")(x)

        # === Inputs ===
        xray = keras.Input((size, size, 1), name="frontal")
        inputs = {"frontal": xray}
        likelihood = LikelihoodImage(likelihood_epsilon, dtype="float32", name="likelihood")(xray)

        # === 2D ConvNeXt encoder, lifted along the frontal beam ===
        h = keras.layers.Conv2D(width2(0), 3, padding="same", dtype=policy, name="stem_conv")(xray)
        h = keras.layers.LayerNormalization(epsilon=1e-6, dtype=policy, name="stem_norm")(h)
        lifted = []
        for level in range(levels):
            if level > 0:
                h = keras.layers.LayerNormalization(
                    epsilon=1e-6, dtype=policy, name=f"down{level}_norm"
                )(h)
                h = keras.layers.Conv2D(
                    width2(level), 2, strides=2, dtype=policy, name=f"down{level}_conv"
                )(h)
            for b in range(depths[level]):
                h = ConvNeXtBlock(width2(level), dtype=policy, name=f"stage{level}_block{b}")(h)
            lik = likelihood
            if level > 0:
                lik = keras.layers.AveragePooling2D(
                    2**level, dtype=policy, name=f"likelihood_pool{level}"
                )(likelihood)
            f = keras.layers.Concatenate(dtype=policy, name=f"xray_concat{level}")([h, lik])
            f = keras.layers.Conv2D(width3(level), 1, dtype=policy, name=f"xray_proj{level}")(f)
            # A one-element list: ExpandXrays.compute_output_shape misreads a bare shape tuple.
            lifted.append(ExpandXrays(("frontal",), dtype=policy, name=f"lift{level}")([f]))

        # === 3D encoder: template CT + lifted X-ray features ===
        template = TemplateVolume(size, template_value, dtype=policy, name="template")(xray)
        x = template
        skips = []
        for level in range(levels):
            parts = [lifted[level]]
            if level > 0:
                x = ConvNormAct(
                    width3(level), 3, strides=2, **block3, dtype=policy, name=f"enc{level}_down"
                )(x)
                if template_every_level:
                    parts.append(
                        keras.layers.AveragePooling3D(
                            2**level, dtype=policy, name=f"template_pool{level}"
                        )(template)
                    )
            x = keras.layers.Concatenate(dtype=policy, name=f"enc{level}_concat")([x, *parts])
            x = conv3(x, width3(level), f"enc{level}")
            skips.append(x)

        # === 3D decoder with window attention ===
        res = size // 2 ** (levels - 1)
        window = min(window_size, res)
        d = ConvNormAct(coarsest, 3, **block3, dtype=policy, name=f"dec{levels - 1}_conv0")(
            skips[-1]
        )
        for i in range(attention_blocks):
            shift = window // 2 if shifted_windows and i % 2 == 1 and window < res else 0
            d = WindowAttention3D(
                coarsest,
                num_heads,
                window,
                mlp_ratio,
                shift_size=shift,
                dtype=policy,
                name=f"dec_attention{i}",
            )(d)
        for level in range(levels - 2, -1, -1):
            d = upsample_unit(
                upsampling, width3(level), 2, **block3, dtype=policy, name=f"dec{level}_up"
            )(d)
            d = keras.layers.Concatenate(dtype=policy, name=f"dec{level}_concat")([d, skips[level]])
            d = conv3(d, width3(level), f"dec{level}")

        # === Head ===
        volume = keras.layers.Conv3D(1, 1, activation="sigmoid", dtype="float32", name="volume")(d)

        super().__init__(inputs=inputs, outputs=volume, **kwargs)

        # === Config ===
        self.size = size
        self.views = views
        self.base_filters = base_filters
        self.base_filters_2d = base_filters_2d
        self.max_filters = max_filters
        self.depths = depths
        self.num_heads = num_heads
        self.window_size = window_size
        self.attention_blocks = attention_blocks
        self.mlp_ratio = mlp_ratio
        self.activation = activation
        self.norm = norm
        self.likelihood_epsilon = likelihood_epsilon
        self.template_value = template_value
        self.template_every_level = bool(template_every_level)
        self.shifted_windows = bool(shifted_windows)
        self.upsampling = upsampling
        self._policy_name = policy.name

    @staticmethod
    def _check(
        size: int,
        views: tuple[str, ...],
        base_filters: int,
        base_filters_2d: int,
        max_filters: int,
        depths: tuple[int, ...],
        num_heads: int,
        window_size: int,
        attention_blocks: int,
        activation: str,
        norm: str,
    ) -> None:
        """Validates the arguments."""
        if views != ("frontal",):
            raise ConfigError(f"S-XR2CT is single view: views must be ('frontal',), got {views!r}")
        for name, val in (
            ("base_filters", base_filters),
            ("base_filters_2d", base_filters_2d),
            ("max_filters", max_filters),
            ("num_heads", num_heads),
            ("window_size", window_size),
        ):
            positive_int(name, val)
        if not depths:
            raise ConfigError("depths must list the ConvNeXt blocks of at least one stage")
        for d in depths:
            positive_int("depths entries", d)
        if isinstance(attention_blocks, bool) or not isinstance(attention_blocks, int):
            raise ConfigError(f"attention_blocks must be an integer >= 0, got {attention_blocks!r}")
        if attention_blocks < 0:
            raise ConfigError(f"attention_blocks must be an integer >= 0, got {attention_blocks!r}")
        if activation not in _ACTIVATIONS:
            raise ConfigError(f"activation must be one of {_ACTIVATIONS}, got {activation!r}")
        check_norm(norm)
        levels = len(depths)
        if (
            isinstance(size, bool)
            or not isinstance(size, int)
            or not power_of_two(size)
            or size // 2 ** (levels - 1) < 2
        ):
            raise ConfigError(
                f"size must be a power of two >= {2**levels} for {levels} levels, got {size!r}"
            )
        res = size // 2 ** (levels - 1)
        if res % min(window_size, res):
            raise ConfigError(
                f"window_size {window_size} must divide the coarsest resolution {res}"
            )

    # === Template ===

    @property
    def template(self) -> npt.NDArray[np.float32]:
        """The template CT, ``(size, size, size, 1)`` float32."""
        layer = self.get_layer("template")
        return np.asarray(keras.ops.convert_to_numpy(layer.template), dtype=np.float32)

    def set_template(self, volume: Any) -> None:
        """Sets the template CT (the mean training volume, canonical frame, normalised).

        Args:
            volume: ``(size, size, size)``, ``(size, size, size, 1)`` or
                ``(1, size, size, size, 1)``.

        Raises:
            ConfigError: On a wrong shape or non-finite values.
        """
        layer = self.get_layer("template")
        assert isinstance(layer, TemplateVolume)
        layer.set_template(volume)

    # === Config ===

    def get_config(self) -> dict[str, Any]:
        return {
            **network_config(self),
            "size": self.size,
            "views": list(self.views),
            "base_filters": self.base_filters,
            "base_filters_2d": self.base_filters_2d,
            "max_filters": self.max_filters,
            "depths": list(self.depths),
            "num_heads": self.num_heads,
            "window_size": self.window_size,
            "attention_blocks": self.attention_blocks,
            "mlp_ratio": self.mlp_ratio,
            "activation": self.activation,
            "norm": self.norm,
            "upsampling": self.upsampling,
            "likelihood_epsilon": self.likelihood_epsilon,
            "template_value": self.template_value,
            "template_every_level": self.template_every_level,
            "shifted_windows": self.shifted_windows,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SXR2CTGenerator:
        # A config saved before these keys existed describes the xprospect < 0.2 network.
        return cls(**{**LEGACY_DEFAULTS, **config})
