"""The X2CT-GAN generator (Ying et al., CVPR 2019), also X2CT-CNN+B when trained without a GAN.

:class:`X2CTGenerator` is a functional ``keras.Model`` subclass built in its constructor, like
:class:`~xprospect.models.dualunet.DualUNet`; ``get_config`` holds the constructor arguments.

**Inputs and output.** ``{"frontal": (B, S, S, 1), "lateral": (B, S, S, 1)}`` X-rays in [0, 1] in
display layout (``"frontal"`` only in single-view mode) → ``(B, S, S, S, 1)`` float32 (>= 0 with
the official ReLU head, in [0, 1] with the sigmoid option) in the canonical frame of
:mod:`xprospect.models.blocks` (axis 0 head → feet, axis 1 anterior → posterior, axis 2 patient's
right → left).

**Network** (``g`` the grid edge, ``n = log2(S / g)`` encoder stages and decoder scales above the
grid; scale ``r = S / 2**l`` is level ``l``, level 0 the full resolution)::

    per view v (view frame: rows, columns, depth = the view's beam axis):
        X-ray ─ stem Conv7x7 (norm, ReLU) ─────────────────────────────── skip at S
        stage k = 0..n-1:  norm-ReLU-Conv3x3/2 ─ DenseBlock(block_layers[k]) ─
                           norm-ReLU-Conv1x1 (channels / 2) ─ skip at S / 2**(k+1)
                           (the last stage: global average pooling instead)
        Connection A:      Dense(g^3 * grid_filters) ─ Dropout(0.5) ─ ReLU ─ (g, g, g, ch)
        skips ─ LiftToVolume (Conv1x1, repeat along depth, Conv3x3x3; norm, ReLU)
        decoder at scale r > g:  compress(concat(upsampled, lifted skip)) = h_v(r)
                                  [h_v(r) ← the fused average, back in the view frame]
                                  view_convs[l] x ConvNormAct ─ ConvTranspose3x3/2 (to 2r)
    fusion (canonical):
        scale g:   Connection C(h_v(g)) ─ ConvTranspose3x3/2
        scale r:   Connection C(h_v(r)) ─ concat with the upsampled fusion output ─ compress ─
                   fusion_convs[l] x ConvNormAct ─ ConvTranspose3x3/2 (to 2r, unless r = S)
    head:      Conv3D(1, head_kernel_size) + head_activation (the official ReLU), float32

With one view there is no fusion network: the view's decoder runs to full resolution (its
``view_convs`` at every scale), is moved into the canonical frame and ends in the head.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from xprospect.constants import VIEWS
from xprospect.errors import ConfigError
from xprospect.models.args import (
    check_norm,
    check_upsampling,
    check_views,
    network_config,
    positive_int,
    power_of_two,
    resolve_policy,
)
from xprospect.models.blocks import (
    ConnectionC,
    ConvNormAct,
    canonical_to_view,
    normalization,
    upsample_unit,
)

__all__ = [
    "HEAD_ACTIVATIONS",
    "LEGACY_DEFAULTS",
    "DenseBlock",
    "LiftToVolume",
    "PreActConv",
    "ToViewFrame",
    "X2CTGenerator",
]

HEAD_ACTIVATIONS = ("relu", "sigmoid")
"""Activations of :class:`X2CTGenerator`'s output convolution."""
LEGACY_DEFAULTS: dict[str, Any] = {"head_activation": "sigmoid"}
"""What a stored :class:`X2CTGenerator` config without these keys (xprospect < 0.2) was built
with; :meth:`X2CTGenerator.from_config` fills them in, so old ``.keras`` files compute as before."""


# === Layers ===


@keras.saving.register_keras_serializable(package="xprospect")
class PreActConv(keras.layers.Layer):
    """Normalisation → ReLU → convolution: DenseNet's pre-activation unit.

    Args:
        filters: Output channels.
        kernel_size: Square / cubic kernel size.
        strides: Stride (one number); the convolution is ``"same"``-padded.
        rank: 2 (``(B, H, W, ch)``) or 3 (``(B, D, H, W, ch)``).
        norm: ``"instance"``, ``"batch"`` or ``"none"``.
        **kwargs: ``keras.layers.Layer`` arguments (name, dtype, ...).

    Returns:
        Called on ``(B, *spatial, ch)``: ``(B, *spatial / strides, filters)``.
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int = 3,
        strides: int = 1,
        rank: int = 2,
        norm: str = "instance",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if rank not in (2, 3):
            raise ConfigError(f"rank must be 2 or 3, got {rank!r}")
        self.filters = positive_int("filters", filters)
        self.kernel_size = positive_int("kernel_size", kernel_size)
        self.strides = positive_int("strides", strides)
        self.rank = int(rank)
        self.norm = check_norm(norm)
        self.norm_layer = normalization(norm, "norm", self.dtype_policy)
        conv = keras.layers.Conv2D if rank == 2 else keras.layers.Conv3D
        self.conv = conv(
            filters,
            kernel_size,
            strides=strides,
            padding="same",
            # The next unit normalises first, so the bias would only matter without a norm.
            use_bias=norm == "none",
            kernel_initializer="he_normal",
            dtype=self.dtype_policy,
            name="conv",
        )

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        if self.norm_layer is not None:
            self.norm_layer.build(tuple(input_shape))
        self.conv.build(tuple(input_shape))
        self.built = True

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        x = inputs if self.norm_layer is None else self.norm_layer(inputs, training=training)
        return self.conv(ops.relu(x))

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return tuple(self.conv.compute_output_shape(tuple(input_shape)))

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=self.strides,
            rank=self.rank,
            norm=self.norm,
        )
        return config


@keras.saving.register_keras_serializable(package="xprospect")
class DenseBlock(keras.layers.Layer):
    """A 2D DenseNet block: each layer's new features concatenated to everything before it.

    Layer ``i``: ``PreActConv(bottleneck * growth_rate, 1)`` → ``PreActConv(growth_rate, 3)``
    (DenseNet-BC), its ``growth_rate`` output channels appended to its input.

    Args:
        num_layers: Layers in the block.
        growth_rate: Channels each layer adds (``k``).
        bottleneck: Width of the 1x1 bottleneck in units of ``k`` (DenseNet-BC: 4).
        norm: ``"instance"``, ``"batch"`` or ``"none"``.
        **kwargs: ``keras.layers.Layer`` arguments.

    Returns:
        Called on ``(B, H, W, ch)``: ``(B, H, W, ch + num_layers * growth_rate)``.
    """

    def __init__(
        self,
        num_layers: int,
        growth_rate: int = 32,
        bottleneck: int = 4,
        norm: str = "instance",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.num_layers = positive_int("num_layers", num_layers)
        self.growth_rate = positive_int("growth_rate", growth_rate)
        self.bottleneck = positive_int("bottleneck", bottleneck)
        self.norm = check_norm(norm)
        self.units = [
            (
                PreActConv(
                    bottleneck * growth_rate, 1, norm=norm, dtype=self.dtype_policy, name=f"b{i}"
                ),
                PreActConv(growth_rate, 3, norm=norm, dtype=self.dtype_policy, name=f"c{i}"),
            )
            for i in range(num_layers)
        ]

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        shape = tuple(input_shape)
        channels = int(shape[-1])  # type: ignore[arg-type]
        for squeeze, grow in self.units:
            squeeze.build((*shape[:-1], channels))
            grow.build((*shape[:-1], self.bottleneck * self.growth_rate))
            channels += self.growth_rate
        self.built = True

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        x = inputs
        for squeeze, grow in self.units:
            new = grow(squeeze(x, training=training), training=training)
            x = ops.concatenate([x, new], axis=-1)
        return x

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        s = tuple(input_shape)
        return (*s[:-1], int(s[-1]) + self.num_layers * self.growth_rate)  # type: ignore[arg-type]

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(
            num_layers=self.num_layers,
            growth_rate=self.growth_rate,
            bottleneck=self.bottleneck,
            norm=self.norm,
        )
        return config


@keras.saving.register_keras_serializable(package="xprospect")
class LiftToVolume(keras.layers.Layer):
    """X2CT-GAN's Connection B: 2D skip features lifted into a view's 3D decoder.

    ``ConvNormAct(filters, 1)`` (2D) → repeat ``depth`` times along a new last spatial axis (the
    view's beam axis, exactly as :class:`xprospect.models.dualunet.layers.ConnectionB`) →
    ``ConvNormAct(filters, 3)`` (3D). Unlike ``ConnectionB`` both convolutions are normalised.

    Args:
        filters: Output channels.
        depth: Length of the new depth axis; None: the number of columns (cubic volumes).
        norm: ``"instance"``, ``"batch"`` or ``"none"``.
        activation: ``"relu"`` (``"linear"`` too, for tests).
        **kwargs: ``keras.layers.Layer`` arguments.

    Returns:
        Called on ``(B, rows, cols, ch)``: ``(B, rows, cols, depth, filters)`` in the view frame.
    """

    def __init__(
        self,
        filters: int,
        depth: int | None = None,
        norm: str = "instance",
        activation: str = "relu",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.filters = positive_int("filters", filters)
        self.depth = depth if depth is None else positive_int("depth", depth)
        self.norm = check_norm(norm)
        self.activation = activation
        unit: dict[str, Any] = {"norm": norm, "activation": activation, "dtype": self.dtype_policy}
        self.channel_conv = ConvNormAct(filters, 1, rank=2, name="channel_conv", **unit)
        self.depth_conv = ConvNormAct(filters, 3, rank=3, name="depth_conv", **unit)

    def _depth(self, input_shape: tuple[int | None, ...]) -> int:
        depth = self.depth if self.depth is not None else input_shape[2]
        if depth is None:
            raise ConfigError("LiftToVolume needs a depth or a static number of columns")
        return int(depth)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        s = tuple(input_shape)
        self.channel_conv.build(s)
        self.depth_conv.build((s[0], s[1], s[2], self._depth(s), self.filters))
        self.built = True

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        x = self.channel_conv(inputs, training=training)
        x = ops.repeat(ops.expand_dims(x, 3), self._depth(tuple(inputs.shape)), axis=3)
        return self.depth_conv(x, training=training)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        s = tuple(input_shape)
        return (s[0], s[1], s[2], self._depth(s), self.filters)

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(
            filters=self.filters, depth=self.depth, norm=self.norm, activation=self.activation
        )
        return config


@keras.saving.register_keras_serializable(package="xprospect")
class ToViewFrame(keras.layers.Layer):
    """Canonical ``(B, D0, D1, D2, ch)`` features moved into a view frame (the inverse of the
    move Connection C makes; :func:`xprospect.models.blocks.canonical_to_view`).

    Args:
        view: ``"frontal"`` (frame: axis 0, 2, 1) or ``"lateral"`` (frame: axis 0, 1, 2).
        **kwargs: ``keras.layers.Layer`` arguments.

    Returns:
        Called on canonical ``(B, D0, D1, D2, ch)``: ``(B, rows, cols, depth, ch)``.
    """

    def __init__(self, view: str = "frontal", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if view not in VIEWS:
            raise ConfigError(f"view must be one of {VIEWS}, got {view!r}")
        self.view = view

    def call(self, inputs: Any) -> Any:
        return canonical_to_view(inputs, self.view)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        s = tuple(input_shape)
        return (s[0], s[1], s[3], s[2], s[4]) if self.view == "frontal" else s

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(view=self.view)
        return config


# === Model ===


def _per_level(name: str, value: int | Sequence[int], n: int, minimum: int) -> list[int]:
    """One number per level 0..n-1 (level 0 = full resolution) from an int or a sequence."""
    if isinstance(value, int):
        values = [value] * n
    else:
        values = list(value)
        if len(values) < n:
            raise ConfigError(
                f"{name} needs at least {n} entries (one per level, finest first) at this size, "
                f"got {value!r}"
            )
        values = values[:n]
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise ConfigError(f"{name} entries must be integers >= {minimum}, got {value!r}")
    return values


@keras.saving.register_keras_serializable(package="xprospect")
class X2CTGenerator(keras.Model):
    """X2CT-GAN's generator: per-view DenseNet encoders and 3D decoders, fused by averaging.

    Args:
        size: Edge of the square X-rays and of the output cube: ``grid_size * 2**n``, ``n >= 1``
            (32, 64, 128 with the default grid).
        views: ``("frontal", "lateral")`` (biplanar) or ``("frontal",)`` (single view).
        stem_filters: Channels of the 7x7 stem (the paper: 64).
        growth_rate: DenseNet growth rate ``k`` (32).
        block_layers: Dense layers per encoder stage, first (finest) stage first
            (``(6, 12, 24, 16, 6)``); the first ``n`` are used.
        bottleneck: Width of the dense layers' 1x1 bottleneck in units of ``k`` (4).
        compression: Channel factor of the 1x1 transition after each dense block but the last
            (0.5).
        grid_size: Edge of Connection A's cube (4).
        grid_filters: Channels of Connection A's cube (256).
        decoder_filters: Channels of the decoders at levels 0..n-1 (level 0 = full resolution),
            a sequence (the first ``n`` entries are used; default ``(16, 16, 32, 64, 128)``) or
            a base ``b`` giving the official pattern ``b * 2**max(l - 1, 0)`` (16 → 16, 16, 32,
            64, 128).
        view_convs: Extra 3x3x3 convolutions per level in each view's decoder, after the skip
            is merged (an int: the same at every level; default ``(1, 2, 2, 2, 2)``). With two
            views the full-resolution entry is unused (the view decoders end at the merge).
        fusion_convs: The same for the fusion decoder (default ``(1, 1, 1, 1, 1)``).
        back_to_views: Each view's decoder continues from the fused average (moved back into
            its frame) rather than from its own features, as the official configuration does.
        dropout: Dropout of Connection A (0.5).
        norm: Normalisation of every block: ``"instance"`` (``GroupNormalization(groups=-1)``),
            ``"batch"`` or ``"none"``.
        head_kernel_size: Kernel of the output convolution (the official code: 7).
        head_activation: Activation of the output convolution: ``"relu"`` (the official
            configurations' ``activation_type: 'relu'``, default) or ``"sigmoid"`` (bounded to
            [0, 1]; what releases before 0.2 built, and what a stored config without this key
            loads as).
        upsampling: The decoder's x2 upsampling: ``"transpose"`` (the official 3x3x3 stride-2
            transposed convolution, the default) or, a deliberate deviation for checkerboard-free
            output (issue 17), ``"resize_conv"`` (nearest-neighbour resize + convolution; Odena et
            al. 2016, "Deconvolution and Checkerboard Artifacts") or ``"subpixel"`` (convolution +
            depth-to-space, ICNR-initialised; Aitken et al. 2017, "Checkerboard artifact free
            sub-pixel convolution"); see :class:`xprospect.models.blocks.Upsample`.
        dtype: Dtype policy of every layer (e.g. ``"mixed_bfloat16"``); None: the global policy.
            The head always computes in float32.
        **kwargs: ``keras.Model`` arguments (``name``, ``trainable``).

    Returns:
        Called on the input dict: ``(B, size, size, size, 1)`` float32, canonical: in [0, 1]
        for the targets the data pipeline makes ([0, inf) with the ReLU head, [0, 1] with
        sigmoid).

    Size: with the default widths the biplanar network has 61.88 M parameters at 128^3 (57.4 M
    at 64^3; single view (X2CT-CNN+S) 29.47 M / 28.2 M), 23.1 M of them in the two Connection A
    dense layers; the official biplanar generator has 61.74 M (the 0.14 M difference: affine
    instance norms here, where the official ``InstanceNorm3d`` has none but its convolutions
    keep their biases, and the per-view full-resolution convolutions left out, see
    *Decoders*). X2CT-GAN's discriminator (:func:`~xprospect.models.discriminators.
    x2ct_discriminator`) has 11.06 M, as the official one.

    Choices (where the paper leaves them open, mostly settled by the official code):

    - **Sizes.** ``n = log2(size / grid_size)`` encoder stages, so the last dense block works at
      ``grid_size`` and the 4^3 grid is kept at every size: 5 stages at 128 (the paper), 4 at
      64, 3 at 32. Smaller sizes drop the coarsest entries of every per-level list: the 64^3
      network is the 128^3 one with its deepest encoder stage (and the decoder scale above the
      grid that mirrors it) removed, each remaining level keeping the paper's widths for its
      distance from the full resolution.
    - **Encoder.** Stem: zero-padded 7x7 convolution, norm, ReLU (the official code pads by
      reflection). Every stage: norm-ReLU-Conv3x3/2 (pre-activation, channels kept), a
      DenseNet-BC block, and norm-ReLU-Conv1x1 halving the channels; the last stage is
      average-pooled globally (the official ``AdaptiveAvgPool2d(1)``) instead, so Connection A's
      dense layer has ``channels x g^3 x grid_filters`` weights, independent of the size.
    - **Connection A.** ``Dense → Dropout(0.5) → ReLU → reshape (g, g, g, grid_filters)``; the
      cube is in the view frame (rows, columns, depth).
    - **Connection B.** :class:`LiftToVolume` on the stem output (full resolution) and on each
      stage's output but the last, with the decoder's filters at that scale.
    - **Decoders.** Upsampling is a 3x3x3 transposed convolution with stride 2, norm and ReLU
      (the official ``upsample_mode='transposed'``). At each scale the upsampled features and
      the lifted skip are concatenated and compressed by a 3x3x3 ConvNormAct; the fusion takes
      the views' compressed features, so each view's own convolutions at full resolution (which
      only fed the official per-view heads, not the fused output) are left out.
    - **Fusion.** Connection C (canonical frame, average) at every scale, the grid included;
      the official ``backToSub`` variant, default here, feeds the average back to each view.
    - **Head.** ``Conv3D(1, 7)`` + ReLU in float32 (the official code: the same kernel and its
      configurations' ``activation_type: 'relu'``); no per-view heads. Sigmoid is an option.
    """

    def __init__(
        self,
        size: int = 128,
        views: Sequence[str] = VIEWS,
        stem_filters: int = 64,
        growth_rate: int = 32,
        block_layers: Sequence[int] = (6, 12, 24, 16, 6),
        bottleneck: int = 4,
        compression: float = 0.5,
        grid_size: int = 4,
        grid_filters: int = 256,
        decoder_filters: int | Sequence[int] = (16, 16, 32, 64, 128),
        view_convs: int | Sequence[int] = (1, 2, 2, 2, 2),
        fusion_convs: int | Sequence[int] = (1, 1, 1, 1, 1),
        back_to_views: bool = True,
        dropout: float = 0.5,
        norm: str = "instance",
        head_kernel_size: int = 7,
        head_activation: str = "relu",
        upsampling: str = "transpose",
        dtype: Any = None,
        **kwargs: Any,
    ) -> None:
        views = tuple(views)
        policy = resolve_policy(dtype)
        n = self._check_size(size, views, grid_size)
        positive_int("stem_filters", stem_filters)
        positive_int("growth_rate", growth_rate)
        positive_int("bottleneck", bottleneck)
        positive_int("grid_filters", grid_filters)
        positive_int("head_kernel_size", head_kernel_size)
        if head_activation not in HEAD_ACTIVATIONS:
            raise ConfigError(
                f"head_activation must be one of {HEAD_ACTIVATIONS}, got {head_activation!r}"
            )
        check_norm(norm)
        check_upsampling(upsampling)
        if not 0.0 < float(compression) <= 1.0:
            raise ConfigError(f"compression must be in (0, 1], got {compression!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout!r}")
        layers_per_stage = _per_level("block_layers", tuple(block_layers), n, 1)
        if isinstance(decoder_filters, int) and not isinstance(decoder_filters, bool):
            base = positive_int("decoder_filters", decoder_filters)
            filters = [base * 2 ** max(level - 1, 0) for level in range(n)]
        else:
            filters = _per_level("decoder_filters", decoder_filters, n, 1)
        v_convs = _per_level("view_convs", view_convs, n, 0)
        f_convs = _per_level("fusion_convs", fusion_convs, n, 0)
        fuse = len(views) > 1
        g = grid_size
        unit: dict[str, Any] = {"norm": norm, "dtype": policy}

        def res(level: int) -> int:
            return size >> level

        def up(f: int, name: str) -> keras.layers.Layer:
            return upsample_unit(upsampling, f, 3, name=name, **unit)

        def convs(x: Any, count: int, f: int, name: str) -> Any:
            for i in range(count):
                x = ConvNormAct(f, 3, name=f"{name}_{i}", **unit)(x)
            return x

        # === Inputs ===
        inputs = {v: keras.Input((size, size, 1), name=v) for v in views}

        # === Encoders and Connections A, B (view frames) ===
        grids: dict[str, Any] = {}
        lifted: dict[str, dict[int, Any]] = {}
        for v in views:
            x = ConvNormAct(stem_filters, 7, rank=2, name=f"{v}_stem", **unit)(inputs[v])
            channels = stem_filters
            lifted[v] = {}
            for k in range(n):
                lifted[v][k] = LiftToVolume(filters[k], name=f"{v}_connB{res(k)}", **unit)(x)
                x = PreActConv(channels, 3, 2, name=f"{v}_down{res(k + 1)}", **unit)(x)
                x = DenseBlock(
                    layers_per_stage[k],
                    growth_rate,
                    bottleneck,
                    name=f"{v}_dense{res(k + 1)}",
                    **unit,
                )(x)
                channels += layers_per_stage[k] * growth_rate
                if k < n - 1:
                    channels = max(1, int(channels * compression))
                    x = PreActConv(channels, 1, name=f"{v}_transition{res(k + 1)}", **unit)(x)
            x = keras.layers.GlobalAveragePooling2D(dtype=policy, name=f"{v}_pool")(x)
            x = keras.layers.Dense(
                g**3 * grid_filters,
                kernel_initializer="he_normal",
                dtype=policy,
                name=f"{v}_connA_dense",
            )(x)
            x = keras.layers.Dropout(dropout, dtype=policy, name=f"{v}_connA_dropout")(x)
            x = keras.layers.ReLU(dtype=policy, name=f"{v}_connA_relu")(x)
            grids[v] = keras.layers.Reshape(
                (g, g, g, grid_filters), dtype=policy, name=f"{v}_connA_grid"
            )(x)

        # === Decoders and fusion (coarse → fine) ===
        h = dict(grids)  # each view's features at the current scale, view frame
        fused: Any = None  # the fusion decoder's output, upsampled to the current scale
        for level in range(n, -1, -1):
            r = res(level)
            if level < n:
                for v in views:
                    merged = keras.layers.Concatenate(dtype=policy, name=f"{v}_skip{r}")(
                        [h[v], lifted[v][level]]
                    )
                    h[v] = ConvNormAct(filters[level], 3, name=f"{v}_compress{r}", **unit)(merged)
            if fuse:
                avg = ConnectionC(views, dtype=policy, name=f"fusion_connC{r}")(
                    [h[v] for v in views]
                )
                if fused is None:
                    x = avg
                else:
                    x = keras.layers.Concatenate(dtype=policy, name=f"fusion_skip{r}")([avg, fused])
                    x = ConvNormAct(filters[level], 3, name=f"fusion_compress{r}", **unit)(x)
                    x = convs(x, f_convs[level], filters[level], f"fusion_conv{r}")
                if level > 0:
                    fused = up(filters[level - 1], f"fusion_up{2 * r}")(x)
                if back_to_views and level > 0:
                    h = {v: ToViewFrame(v, dtype=policy, name=f"{v}_back{r}")(avg) for v in views}
            if level > 0 or not fuse:
                for v in views:
                    f = filters[level] if level < n else grid_filters
                    x = convs(h[v], v_convs[level] if level < n else 0, f, f"{v}_conv{r}")
                    h[v] = up(filters[level - 1], f"{v}_up{2 * r}")(x) if level > 0 else x
            else:
                fused = x
        if not fuse:
            fused = ConnectionC(views, dtype=policy, name="canonical")(h[views[0]])

        # === Head ===
        volume = keras.layers.Conv3D(
            1,
            head_kernel_size,
            padding="same",
            activation=head_activation,
            dtype="float32",
            name="volume",
        )(fused)

        super().__init__(inputs=inputs, outputs=volume, **kwargs)

        # === Config ===
        self.size = size
        self.views = views
        self.stem_filters = stem_filters
        self.growth_rate = growth_rate
        self.block_layers = tuple(block_layers)
        self.bottleneck = bottleneck
        self.compression = compression
        self.grid_size = grid_size
        self.grid_filters = grid_filters
        self.decoder_filters = (
            decoder_filters if isinstance(decoder_filters, int) else tuple(decoder_filters)
        )
        self.view_convs = view_convs if isinstance(view_convs, int) else tuple(view_convs)
        self.fusion_convs = fusion_convs if isinstance(fusion_convs, int) else tuple(fusion_convs)
        self.back_to_views = bool(back_to_views)
        self.dropout = dropout
        self.norm = norm
        self.head_kernel_size = head_kernel_size
        self.head_activation = head_activation
        self.num_stages = n
        self.upsampling = upsampling
        self._policy_name = policy.name

    @staticmethod
    def _check_size(size: int, views: tuple[str, ...], grid_size: int) -> int:
        """Validates size, views and grid; returns the number of encoder stages."""
        check_views(views, need_frontal=True)
        if not power_of_two(grid_size):
            raise ConfigError(f"grid_size must be a power of two, got {grid_size!r}")
        if (
            not isinstance(size, int)
            or size < 2 * grid_size
            or size % grid_size
            or not power_of_two(size // grid_size)
        ):
            raise ConfigError(
                f"size must be grid_size ({grid_size}) times a power of two >= 2, got {size!r}"
            )
        return int(math.log2(size // grid_size))

    def get_config(self) -> dict[str, Any]:
        def plain(value: Any) -> Any:
            return value if isinstance(value, int) else list(value)

        return {
            **network_config(self),
            "size": self.size,
            "views": list(self.views),
            "stem_filters": self.stem_filters,
            "growth_rate": self.growth_rate,
            "block_layers": list(self.block_layers),
            "bottleneck": self.bottleneck,
            "compression": self.compression,
            "grid_size": self.grid_size,
            "grid_filters": self.grid_filters,
            "decoder_filters": plain(self.decoder_filters),
            "view_convs": plain(self.view_convs),
            "fusion_convs": plain(self.fusion_convs),
            "back_to_views": self.back_to_views,
            "dropout": self.dropout,
            "norm": self.norm,
            "upsampling": self.upsampling,
            "head_kernel_size": self.head_kernel_size,
            "head_activation": self.head_activation,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> X2CTGenerator:
        # A config saved before head_activation existed was built with a sigmoid head.
        return cls(**{**LEGACY_DEFAULTS, **config})
