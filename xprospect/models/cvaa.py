"""The CVAA-GAN generator (Qiao et al. 2024): biplanar X-rays fused by coarse-fine view attention.

:class:`CVAAGenerator` is the generator of "Coarse-Fine View Attention Alignment-Based GAN for CT
Reconstruction from Biplanar X-Rays" (Qiao, Chu, Ouyang, Yuan, Zhen, Dong, Qian; arXiv 2408.09736).
No code was published with the paper, so this is a re-implementation from its text; every place
where the text leaves a choice open is listed in the class docstring under *Choices*. The paper's
Patch-3D discriminator and its losses are not here (see the trainer).

**Inputs and output.** ``{"frontal": (B, S, S, 1), "lateral": (B, S, S, 1)}`` X-rays in [0, 1] in
display layout (both views are required: the network's fusion needs two) → ``(B, S, S, S, 1)``
float32 in [0, 1], in the canonical frame of :mod:`xprospect.models.blocks` (axis 0 head → feet,
axis 1 anterior → posterior, axis 2 patient's right → left).

**Network** (``L`` levels, level ``l`` at resolution ``S / 2**l`` with
``c_l = min(base_filters * 2**l, max_filters)`` channels; ``l = 0`` is the finest)::

    per view v (own weights):
        X-ray ─ stem ConvNormAct2D ─ [Feat2D(c_l) ─ e_l ─ stride-2 ConvNormAct2D] x L  (2D)
        e_l ─ CanonicalLift(v): repeat along v's beam axis, into the canonical frame, Conv3D
            = V_v,l  (S/2**l)^3 x c_l, canonical
    decoder (canonical frame):
        deepest  D_{L-1} = ConvNormAct3D(V_f,L-1 + V_l,L-1)          (fusion by addition)
        l = L-2 .. 0:  D_l = CFVAA([V_f,l, V_l,l, D_{l+1}])
            U      = up-conv(D_{l+1})                                (transposed, stride 2)
            coarse = VAA([V_f,l, V_l,l, U])          (softmax weights on V_f,l and V_l,l)
            fine   = FD([coarse, U])                                 (sigmoid gate)
            D_l    = ConvNormAct3D(concat(V_f,l + V_l,l, coarse, fine, U))
    head: Conv3D(1, 1x1x1, sigmoid, float32)

Everything is written with ``keras.ops`` / ``keras.layers`` only, so it also runs on JAX.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from xprospect.constants import VIEWS
from xprospect.errors import ConfigError
from xprospect.models.args import (
    check_norm,
    check_upsampling,
    check_view,
    network_config,
    positive_int,
    resolve_policy,
)
from xprospect.models.blocks import ConvNormAct, upsample_unit, view_to_canonical

__all__ = [
    "CFVAA",
    "LEGACY_DEFAULTS",
    "WEIGHS",
    "CVAAGenerator",
    "CanonicalLift",
    "Feat2D",
    "FineDistillation",
    "ViewAttentionAlignment",
    "lift_to_canonical",
]


WEIGHS = ("shallow", "branch")
"""What :class:`ViewAttentionAlignment`'s weights combine."""
LEGACY_DEFAULTS: dict[str, Any] = {"weigh": "branch"}
"""What a stored CVAA config without these keys (xprospect < 0.2) was built with; the
``from_config`` of :class:`CVAAGenerator`, :class:`CFVAA` and :class:`ViewAttentionAlignment`
fill them in, so old ``.keras`` files compute as before."""


def _check_weigh(weigh: Any) -> str:
    if weigh not in WEIGHS:
        raise ConfigError(f"weigh must be one of {WEIGHS}, got {weigh!r}")
    return str(weigh)


def _odd_kernel(name: str, value: Any) -> int:
    if positive_int(name, value) % 2 == 0:
        raise ConfigError(f"{name} must be odd (a centred, same-padded kernel), got {value!r}")
    return int(value)


def lift_to_canonical(x: Any, view: str, depth: int) -> Any:
    """2D view features repeated along the view's beam axis, in the canonical frame.

    The features are repeated along a new last spatial axis (the view frame's depth, which is the
    view's beam axis), then moved into the canonical frame with
    :func:`xprospect.models.blocks.view_to_canonical`, so ``out[b, i, j, k] = x[b, i, k]`` for the
    frontal view and ``x[b, i, j]`` for the lateral one.

    Args:
        x: ``(B, rows, cols, ch)`` features of ``view`` in display layout.
        view: ``"frontal"`` (beam along canonical axis 1) or ``"lateral"`` (along axis 2).
        depth: Length of the repeated axis (``cols`` for cubes).

    Returns:
        ``(B, D0, D1, D2, ch)`` canonical features.
    """
    vol = ops.repeat(ops.expand_dims(x, 3), depth, axis=3)  # (B, r, c, depth, ch): view frame
    return view_to_canonical(vol, view)


# === Layers ===


@keras.saving.register_keras_serializable(package="xprospect")
class Feat2D(keras.layers.Layer):
    """The paper's Feat2D: a 2D dense block followed by a 1x1 compression.

    DenseNet style: layer ``k`` of the block (a ``ConvNormAct`` of ``growth_rate`` channels)
    sees the concatenation of the block input and the outputs of layers ``0..k-1``; the block's
    output, the concatenation of all of them, is compressed to ``filters`` channels by a 1x1
    ``ConvNormAct`` (DenseNet's transition, without its pooling: the generator downsamples with
    a stride-2 convolution between levels).

    Args:
        filters: Output channels.
        growth_rate: Channels each dense layer adds.
        num_layers: Dense layers in the block.
        kernel_size: Kernel of the dense layers.
        norm: ``"instance"``, ``"batch"`` or ``"none"``.
        **kwargs: ``keras.layers.Layer`` arguments.

    Returns:
        Called on ``(B, H, W, ch)``: ``(B, H, W, filters)``.
    """

    def __init__(
        self,
        filters: int,
        growth_rate: int = 16,
        num_layers: int = 4,
        kernel_size: int = 3,
        norm: str = "instance",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.filters = positive_int("filters", filters)
        self.growth_rate = positive_int("growth_rate", growth_rate)
        self.num_layers = positive_int("num_layers", num_layers)
        self.kernel_size = _odd_kernel("kernel_size", kernel_size)
        self.norm = check_norm(norm)
        self.dense_layers = [
            ConvNormAct(
                growth_rate,
                kernel_size,
                rank=2,
                norm=norm,
                dtype=self.dtype_policy,
                name=f"dense{i}",
            )
            for i in range(num_layers)
        ]
        self.compress = ConvNormAct(
            filters, 1, rank=2, norm=norm, dtype=self.dtype_policy, name="compress"
        )

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        shape = tuple(input_shape)
        channels = int(shape[-1])  # type: ignore[arg-type]
        for layer in self.dense_layers:
            layer.build((*shape[:-1], channels))
            channels += self.growth_rate
        self.compress.build((*shape[:-1], channels))
        self.built = True

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        features = [inputs]
        for layer in self.dense_layers:
            x = features[0] if len(features) == 1 else ops.concatenate(features, axis=-1)
            features.append(layer(x, training=training))
        return self.compress(ops.concatenate(features, axis=-1), training=training)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (*tuple(input_shape)[:-1], self.filters)

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(
            filters=self.filters,
            growth_rate=self.growth_rate,
            num_layers=self.num_layers,
            kernel_size=self.kernel_size,
            norm=self.norm,
        )
        return config


@keras.saving.register_keras_serializable(package="xprospect")
class CanonicalLift(keras.layers.Layer):
    """A view's 2D features lifted into a canonical 3D volume: repetition + a 3D convolution.

    :func:`lift_to_canonical` (repeat along the view's beam axis, the paper's assumption that the
    3D features are constant along the projection direction, and move into the canonical frame)
    followed by ``ConvNormAct`` (rank 3) in the canonical frame, so both views' volumes are
    aligned voxel for voxel.

    Args:
        filters: Output channels.
        view: ``"frontal"`` (repeated along canonical axis 1) or ``"lateral"`` (axis 2).
        kernel_size: Kernel of the 3D convolution.
        norm: ``"instance"``, ``"batch"`` or ``"none"``.
        activation: Activation of the convolution (``"relu"``; ``"linear"`` for tests).
        **kwargs: ``keras.layers.Layer`` arguments.

    Returns:
        Called on ``(B, S, S, ch)``: ``(B, S, S, S, filters)``, canonical.
    """

    def __init__(
        self,
        filters: int,
        view: str,
        kernel_size: int = 3,
        norm: str = "instance",
        activation: str = "relu",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.filters = positive_int("filters", filters)
        self.view = check_view(view)
        self.kernel_size = _odd_kernel("kernel_size", kernel_size)
        self.norm = check_norm(norm)
        self.activation = activation
        self.conv = ConvNormAct(
            filters,
            kernel_size,
            rank=3,
            norm=norm,
            activation=activation,
            dtype=self.dtype_policy,
            name="conv",
        )

    @staticmethod
    def _depth(input_shape: tuple[int | None, ...]) -> int:
        if input_shape[1] is None or input_shape[2] is None or input_shape[1] != input_shape[2]:
            raise ConfigError(
                f"CanonicalLift needs square (B, S, S, ch) features, got {input_shape}"
            )
        return int(input_shape[2])

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        s = tuple(input_shape)
        d = self._depth(s)
        self.conv.build((s[0], d, d, d, s[-1]))
        self.built = True

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        vol = lift_to_canonical(inputs, self.view, self._depth(tuple(inputs.shape)))
        return self.conv(vol, training=training)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        d = self._depth(tuple(input_shape))
        return (input_shape[0], d, d, d, self.filters)

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(
            filters=self.filters,
            view=self.view,
            kernel_size=self.kernel_size,
            norm=self.norm,
            activation=self.activation,
        )
        return config


@keras.saving.register_keras_serializable(package="xprospect")
class ViewAttentionAlignment(keras.layers.Layer):
    """View Attention Alignment (VAA): per-voxel softmax weights of the two views → coarse features.

    For each view ``v``: ``b_v = ConvNormAct(filters)(concat(skip_v, up))`` (the view's shallow
    features made structure-aware by the deep, up-convolved ones; ReLU). Then
    ``w = softmax(Conv3D(2, attention_kernel_size)(concat(b_f, b_l)))`` over its two channels, one
    weight per view and voxel (they sum to one), and ``coarse = w_f * skip_f + w_l * skip_l``:
    the paper's "The weights are used to combine the two shallow features via operations of dot
    product and addition". ``weigh="branch"`` combines ``b_f``, ``b_l`` instead.

    Args:
        filters: Channels of the branches (and of the output with ``weigh="branch"``).
        kernel_size: Kernel of the two branch convolutions.
        attention_kernel_size: Kernel of the convolution to the two view logits (7 in the paper).
        norm: Normalisation of the branch convolutions (``"instance"``, ``"batch"``, ``"none"``).
        weigh: ``"shallow"`` (the paper, default) or ``"branch"`` (the structure-aware features;
            xprospect < 0.2, and what a stored config without this key loads as).
        **kwargs: ``keras.layers.Layer`` arguments.

    Returns:
        Called on ``[skip_frontal, skip_lateral, up]`` (``(B, D0, D1, D2, ch)`` each, canonical,
        the same spatial shape): ``coarse`` ``(B, D0, D1, D2, ch)`` (``filters`` channels with
        ``weigh="branch"``); with
        ``return_weights=True``, ``(coarse, weights)`` with ``weights`` ``(B, D0, D1, D2, 2)``
        (channel 0 the frontal view's, 1 the lateral's).
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int = 3,
        attention_kernel_size: int = 7,
        norm: str = "instance",
        weigh: str = "shallow",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.filters = positive_int("filters", filters)
        self.kernel_size = _odd_kernel("kernel_size", kernel_size)
        self.attention_kernel_size = _odd_kernel("attention_kernel_size", attention_kernel_size)
        self.norm = check_norm(norm)
        self.weigh = _check_weigh(weigh)
        self.branches = [
            ConvNormAct(filters, kernel_size, rank=3, norm=norm, dtype=self.dtype_policy, name=name)
            for name in ("frontal_branch", "lateral_branch")
        ]
        # Logits only: no normalisation (it would equalise the two channels' scales) and a bias.
        self.attention = keras.layers.Conv3D(
            2, attention_kernel_size, padding="same", dtype=self.dtype_policy, name="attention"
        )

    def build(self, input_shape: Any) -> None:
        f_shape, l_shape, up_shape = (tuple(s) for s in input_shape)
        for branch, shape in zip(self.branches, (f_shape, l_shape), strict=True):
            branch.build((*shape[:-1], int(shape[-1]) + int(up_shape[-1])))
        self.attention.build((*f_shape[:-1], 2 * self.filters))
        self.built = True

    def call(self, inputs: Any, return_weights: bool = False, training: bool | None = None) -> Any:
        skip_f, skip_l, up = inputs
        b_f = self.branches[0](ops.concatenate([skip_f, up], axis=-1), training=training)
        b_l = self.branches[1](ops.concatenate([skip_l, up], axis=-1), training=training)
        logits = self.attention(ops.concatenate([b_f, b_l], axis=-1))
        weights = ops.softmax(logits, axis=-1)
        a_f, a_l = (skip_f, skip_l) if self.weigh == "shallow" else (b_f, b_l)
        coarse = weights[..., 0:1] * a_f + weights[..., 1:2] * a_l
        return (coarse, weights) if return_weights else coarse

    def compute_output_shape(self, input_shape: Any) -> tuple[int | None, ...]:
        shape = tuple(input_shape[0])
        return (*shape[:-1], shape[-1] if self.weigh == "shallow" else self.filters)

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            attention_kernel_size=self.attention_kernel_size,
            norm=self.norm,
            weigh=self.weigh,
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ViewAttentionAlignment:
        return cls(**{**LEGACY_DEFAULTS, **config})


@keras.saving.register_keras_serializable(package="xprospect")
class FineDistillation(keras.layers.Layer):
    """Fine Distillation (FD): a per-voxel sigmoid gate, from coarse and deep features, on coarse.

    ``gate = sigmoid(Conv3D(1, kernel_size)(concat(coarse, up)))`` and
    ``fine = coarse * gate`` (the gate broadcast over the channels).

    Args:
        kernel_size: Kernel of the gate's convolution (3 in the paper).
        **kwargs: ``keras.layers.Layer`` arguments.

    Returns:
        Called on ``[coarse, up]`` (``(B, D0, D1, D2, ch)`` each, the same spatial shape):
        ``fine`` with ``coarse``'s shape; with ``return_gate=True``, ``(fine, gate)`` with
        ``gate`` ``(B, D0, D1, D2, 1)`` in [0, 1].
    """

    def __init__(self, kernel_size: int = 3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kernel_size = _odd_kernel("kernel_size", kernel_size)
        self.gate_conv = keras.layers.Conv3D(
            1, kernel_size, padding="same", dtype=self.dtype_policy, name="gate"
        )

    def build(self, input_shape: Any) -> None:
        c_shape, up_shape = (tuple(s) for s in input_shape)
        self.gate_conv.build((*c_shape[:-1], int(c_shape[-1]) + int(up_shape[-1])))
        self.built = True

    def call(self, inputs: Any, return_gate: bool = False) -> Any:
        coarse, up = inputs
        gate = ops.sigmoid(self.gate_conv(ops.concatenate([coarse, up], axis=-1)))
        fine = coarse * gate
        return (fine, gate) if return_gate else fine

    def compute_output_shape(self, input_shape: Any) -> tuple[int | None, ...]:
        return tuple(input_shape[0])

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(kernel_size=self.kernel_size)
        return config


@keras.saving.register_keras_serializable(package="xprospect")
class CFVAA(keras.layers.Layer):
    """Coarse-Fine View Attention Alignment: one decoder level of the CVAA-GAN generator.

    ``up = ConvNormAct(filters, 3, stride 2, transposed)(deep)``;
    ``coarse = VAA([skip_f, skip_l, up])`` (``weigh`` as :class:`ViewAttentionAlignment`);
    ``fine = FD([coarse, up])``;
    ``out = ConvNormAct(filters)(concat(skip_f + skip_l, coarse, fine, up))``: the additive fusion
    of the two views is kept next to the attention-weighted one.

    Args:
        filters: Channels of the level (``up``, the VAA branches and the output).
        kernel_size: Kernel of the up-convolution, the VAA branches and the output convolution.
        attention_kernel_size: Kernel of VAA's view-logit convolution (7).
        distill_kernel_size: Kernel of FD's gate convolution (3).
        norm: ``"instance"``, ``"batch"`` or ``"none"``.
        weigh: What VAA's weights combine: ``"shallow"`` (the paper) or ``"branch"``.
        upsampling: ``up``'s kind: ``"transpose"`` (the paper) or a checkerboard-free
            ``"resize_conv"`` / ``"subpixel"`` (:func:`xprospect.models.blocks.upsample_unit`).
        **kwargs: ``keras.layers.Layer`` arguments.

    Returns:
        Called on ``[skip_frontal, skip_lateral, deep]``, the skips ``(B, r, r, r, ch)`` with equal
        channels and ``deep`` ``(B, r/2, r/2, r/2, ch_d)``, all canonical:
        ``(B, r, r, r, filters)``.
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int = 3,
        attention_kernel_size: int = 7,
        distill_kernel_size: int = 3,
        norm: str = "instance",
        weigh: str = "shallow",
        upsampling: str = "transpose",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.weigh = _check_weigh(weigh)
        self.upsampling = check_upsampling(upsampling)
        self.filters = positive_int("filters", filters)
        self.kernel_size = _odd_kernel("kernel_size", kernel_size)
        self.attention_kernel_size = _odd_kernel("attention_kernel_size", attention_kernel_size)
        self.distill_kernel_size = _odd_kernel("distill_kernel_size", distill_kernel_size)
        self.norm = check_norm(norm)
        policy = self.dtype_policy
        self.up = upsample_unit(
            upsampling, filters, kernel_size, norm=norm, dtype=policy, name="up"
        )
        self.vaa = ViewAttentionAlignment(
            filters, kernel_size, attention_kernel_size, norm, weigh, dtype=policy, name="vaa"
        )
        self.fd = FineDistillation(distill_kernel_size, dtype=policy, name="fd")
        self.fuse = ConvNormAct(filters, kernel_size, rank=3, norm=norm, dtype=policy, name="fuse")

    def build(self, input_shape: Any) -> None:
        f_shape, l_shape, deep_shape = (tuple(s) for s in input_shape)
        if f_shape != l_shape:
            raise ConfigError(f"CFVAA needs equal skip shapes, got {f_shape} and {l_shape}")
        self.up.build(deep_shape)
        up_shape = (*f_shape[:-1], self.filters)
        self.vaa.build([f_shape, l_shape, up_shape])
        coarse_shape = self.vaa.compute_output_shape([f_shape, l_shape, up_shape])
        self.fd.build([coarse_shape, up_shape])
        self.fuse.build(
            (*f_shape[:-1], int(f_shape[-1]) + 2 * int(coarse_shape[-1]) + self.filters)  # type: ignore[arg-type]
        )
        self.built = True

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        skip_f, skip_l, deep = inputs
        up = self.up(deep, training=training)
        coarse = self.vaa([skip_f, skip_l, up], training=training)
        fine = self.fd([coarse, up])
        added = skip_f + skip_l
        return self.fuse(ops.concatenate([added, coarse, fine, up], axis=-1), training=training)

    def compute_output_shape(self, input_shape: Any) -> tuple[int | None, ...]:
        return (*tuple(input_shape[0])[:-1], self.filters)

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            attention_kernel_size=self.attention_kernel_size,
            distill_kernel_size=self.distill_kernel_size,
            norm=self.norm,
            weigh=self.weigh,
            upsampling=self.upsampling,
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CFVAA:
        return cls(**{**LEGACY_DEFAULTS, **config})


# === Model ===


@keras.saving.register_keras_serializable(package="xprospect")
class CVAAGenerator(keras.Model):
    """The CVAA-GAN generator: two dense 2D encoders, per-level lifting, CFVAA decoder levels.

    Args:
        size: Edge of the square X-rays and of the output cube (a power of two, >= 8).
        base_filters: Channels of the finest level; doubled at every coarser level.
        max_filters: Cap on any level's channels.
        growth_rate: Channels each dense layer of a Feat2D block adds.
        dense_layers: Dense layers per Feat2D block.
        num_levels: Encoder/decoder levels (resolutions ``size / 2**l``, ``l < num_levels``);
            None: down to a 4^3 deepest level (``log2(size) - 1``: 4 at 32, 5 at 64, 6 at 128).
            At least 2 (one CFVAA level), and the deepest resolution must be >= 2.
        attention_kernel_size: Kernel of VAA's view-logit convolution (7 in the paper).
        distill_kernel_size: Kernel of FD's gate convolution (3 in the paper).
        norm: ``"instance"`` (the paper), ``"batch"`` or ``"none"``.
        weigh: What VAA's softmax weights combine: ``"shallow"`` (the two views' lifted skip
            features, the paper's "combine the two shallow features"; default) or ``"branch"``
            (the structure-aware branch features; xprospect < 0.2, and what a stored config
            without this key loads as).
        upsampling: The decoder's x2 upsampling: ``"transpose"`` (the paper's 3x3x3 stride-2
            transposed convolution, the default) or, a deliberate deviation for checkerboard-free
            output (issue 17), ``"resize_conv"`` (nearest-neighbour resize + convolution; Odena et
            al. 2016, "Deconvolution and Checkerboard Artifacts") or ``"subpixel"`` (convolution +
            depth-to-space, ICNR-initialised; Aitken et al. 2017, "Checkerboard artifact free
            sub-pixel convolution"); see :class:`xprospect.models.blocks.Upsample`.
        dtype: Dtype policy of every layer (e.g. ``"mixed_bfloat16"``); None: the global policy.
            The output layer always computes in float32.
        **kwargs: ``keras.Model`` arguments (``name``, ``trainable``).

    Returns:
        Called on ``{"frontal": (B, size, size, 1), "lateral": (B, size, size, 1)}``:
        ``(B, size, size, size, 1)`` float32 in [0, 1], canonical.

    Choices (where the paper's text leaves them open):
        - Widths: the paper gives no channel counts; ``c_l = min(base_filters * 2**l,
          max_filters)`` with 16 / 256 (as the DualUNet presets), Feat2D growth rate 16 and 4
          dense layers per block (DenseNet-like, small).
        - Depth: the encoders go down to 4^2 (X2CT-GAN's encoder apex, on which the paper's
          encoder is modelled); every level, the finest included, is lifted to 3D and has a
          CFVAA decoder level except the deepest, which is fused by addition.
        - Stem: one 3x3 ``ConvNormAct2D(base_filters)`` before the first Feat2D; downsampling
          between levels: a 3x3 stride-2 ``ConvNormAct2D`` to the next level's channels.
        - Lifting: repeat along the beam axis into the canonical frame, then one 3x3x3
          ``ConvNormAct`` to ``c_l`` (conv after the alignment: both views share the frame
          the decoder works in).
        - Deepest level: the two aligned views added, then one 3x3x3 ``ConvNormAct``.
        - VAA: the weights come from the views' branch features (skip ⊕ up-convolved deep,
          conv, IN, ReLU) and combine the shallow (skip) features, as the paper says; the
          branch convolutions use instance norm like every other convolution (the paper's
          "Conv3d+Relu" names none; instance norm is its generator-wide choice); the kernel-7
          logit convolution and FD's kernel-3 gate convolution have biases and no norm.
        - CFVAA output: concat(addition-fused skips, coarse, fine, up-convolved deep) → one 3x3x3
          ``ConvNormAct(c_l)``; the up-convolution is a 3x3x3 stride-2 transposed
          ``ConvNormAct`` at the start of the next finer level.
        - Head: ``Conv3D(1, 1)`` + sigmoid in float32 (targets in [0, 1]).
        - Activations: ReLU everywhere (the paper's Feat2D and VAA use ReLU).
    """

    views: tuple[str, ...] = VIEWS

    def __init__(
        self,
        size: int = 128,
        base_filters: int = 16,
        max_filters: int = 256,
        growth_rate: int = 16,
        dense_layers: int = 4,
        num_levels: int | None = None,
        attention_kernel_size: int = 7,
        distill_kernel_size: int = 3,
        norm: str = "instance",
        weigh: str = "shallow",
        upsampling: str = "transpose",
        dtype: Any = None,
        **kwargs: Any,
    ) -> None:
        _check_weigh(weigh)
        check_upsampling(upsampling)
        levels = self._check(
            size,
            base_filters,
            max_filters,
            growth_rate,
            dense_layers,
            num_levels,
            attention_kernel_size,
            distill_kernel_size,
            norm,
        )
        # One policy for every layer (keras-hub style), so a model saved under mixed precision
        # loads with it; the head stays float32.
        policy = resolve_policy(dtype)
        widths = [min(base_filters * 2**lvl, max_filters) for lvl in range(levels)]
        res = [size // 2**lvl for lvl in range(levels)]

        # === Inputs ===
        inputs = {v: keras.Input((size, size, 1), name=v) for v in VIEWS}

        # === Encoders (2D, per view) and lifting (canonical 3D) ===
        lifted: dict[str, list[Any]] = {}
        for v in VIEWS:
            x = ConvNormAct(base_filters, 3, rank=2, norm=norm, dtype=policy, name=f"{v}_stem")(
                inputs[v]
            )
            lifted[v] = []
            for lvl in range(levels):
                x = Feat2D(
                    widths[lvl],
                    growth_rate,
                    dense_layers,
                    norm=norm,
                    dtype=policy,
                    name=f"{v}_feat2d_{res[lvl]}",
                )(x)
                lifted[v].append(
                    CanonicalLift(
                        widths[lvl], v, norm=norm, dtype=policy, name=f"{v}_lift_{res[lvl]}"
                    )(x)
                )
                if lvl + 1 < levels:
                    x = ConvNormAct(
                        widths[lvl + 1],
                        3,
                        strides=2,
                        rank=2,
                        norm=norm,
                        dtype=policy,
                        name=f"{v}_down_{res[lvl]}",
                    )(x)

        # === Decoder (canonical frame) ===
        deepest = levels - 1
        added = keras.layers.Add(dtype=policy, name=f"fuse_add_{res[deepest]}")(
            [lifted["frontal"][deepest], lifted["lateral"][deepest]]
        )
        d = ConvNormAct(
            widths[deepest], 3, rank=3, norm=norm, dtype=policy, name=f"fuse_{res[deepest]}"
        )(added)
        for lvl in range(deepest - 1, -1, -1):
            d = CFVAA(
                widths[lvl],
                attention_kernel_size=attention_kernel_size,
                distill_kernel_size=distill_kernel_size,
                norm=norm,
                weigh=weigh,
                upsampling=upsampling,
                dtype=policy,
                name=f"cfvaa_{res[lvl]}",
            )([lifted["frontal"][lvl], lifted["lateral"][lvl], d])

        # === Head ===
        volume = keras.layers.Conv3D(1, 1, activation="sigmoid", dtype="float32", name="volume")(d)

        super().__init__(inputs=inputs, outputs=volume, **kwargs)

        # === Config ===
        self.size = size
        self.base_filters = base_filters
        self.max_filters = max_filters
        self.growth_rate = growth_rate
        self.dense_layers = dense_layers
        self.num_levels = num_levels
        self.attention_kernel_size = attention_kernel_size
        self.distill_kernel_size = distill_kernel_size
        self.norm = norm
        self.weigh = weigh
        self.upsampling = upsampling
        self._policy_name = policy.name

    @staticmethod
    def _check(
        size: int,
        base_filters: int,
        max_filters: int,
        growth_rate: int,
        dense_layers: int,
        num_levels: int | None,
        attention_kernel_size: int,
        distill_kernel_size: int,
        norm: str,
    ) -> int:
        """Validates the arguments; returns the number of levels."""
        for name, val in (
            ("base_filters", base_filters),
            ("max_filters", max_filters),
            ("growth_rate", growth_rate),
            ("dense_layers", dense_layers),
        ):
            positive_int(name, val)
        _odd_kernel("attention_kernel_size", attention_kernel_size)
        _odd_kernel("distill_kernel_size", distill_kernel_size)
        check_norm(norm)
        if (
            isinstance(size, bool)
            or not isinstance(size, int)
            or size < 8
            or size & (size - 1) != 0
        ):
            raise ConfigError(f"size must be a power of two >= 8, got {size!r}")
        max_levels = int(math.log2(size))  # deepest resolution 2
        if num_levels is None:
            return max_levels - 1
        if isinstance(num_levels, bool) or not isinstance(num_levels, int):
            raise ConfigError(f"num_levels must be an integer or None, got {num_levels!r}")
        if not 2 <= num_levels <= max_levels:
            raise ConfigError(
                f"num_levels must be in [2, {max_levels}] at size {size} (at least one CFVAA "
                f"level, deepest resolution >= 2), got {num_levels}"
            )
        return num_levels

    def get_config(self) -> dict[str, Any]:
        return {
            **network_config(self),
            "size": self.size,
            "base_filters": self.base_filters,
            "max_filters": self.max_filters,
            "growth_rate": self.growth_rate,
            "dense_layers": self.dense_layers,
            "num_levels": self.num_levels,
            "attention_kernel_size": self.attention_kernel_size,
            "distill_kernel_size": self.distill_kernel_size,
            "norm": self.norm,
            "upsampling": self.upsampling,
            "weigh": self.weigh,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CVAAGenerator:
        # A config saved before weigh existed had VAA weigh the branch features.
        return cls(**{**LEGACY_DEFAULTS, **config})
