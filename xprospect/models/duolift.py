"""The DuoLift generator (Zhang and Ying 2024): two lifting branches, a 3D UNet++ and a 3D UNet.

:class:`DuoLiftGenerator` is the generator of DuoLift-GAN and of its CNN variant (the same network
trained without the discriminator). No code was published with the paper, so this is a
re-implementation from its text; every place where the text leaves a choice open is listed in the
class docstring under *Choices*.

**Inputs and output.** ``{"frontal": (B, S, S, 1), "lateral": (B, S, S, 1)}`` X-rays in [0, 1] in
display layout (``"frontal"`` only in single-view mode) → ``(B, S, S, S, 1)`` float32 in [0, 1], in
the canonical frame of :mod:`xprospect.models.blocks` (axis 0 head → feet, axis 1 anterior →
posterior, axis 2 patient's right → left).

**Network** (``S`` the size, ``s = 4 * prod(encoder_strides)`` the encoder's stride, ``n =
log2(s)`` upsamplings; the paper's values in brackets, at S = 128)::

    branch 1 (feature lifting), per view v:
        X-ray ─ Conv7x7/2 ─ MaxPool3x3/2 ─ ResNet-34 stages (basic blocks 3, 4, 6, 3 at 64, 128,
        256, 512 filters, stride 1) ─ F2D (S/s)^2 [512 x H/4 x W/4]
        F2D of all views ─ ExpandXrays (each along its beam axis) ─ F_B (S/s)^3 [1024 x (D'/4)^3]
        k = 0..n:  ResidualBlock3D(lift_filters[k]) ─ f_k [256 @ D'/4, 128 @ D'/2, 64 @ D']
                   k < n: f_k ─ upsample "type 1" (nearest to S, conv, type1_filters [64]) ─ kept
                          f_k ─ upsample "type 2" (transposed conv x2 to lift_filters[k + 1])
    branch 2 (image lifting):
        X-rays ─ ExpandXrays ─ S^3 ─ ResidualBlock3D(xray_filters [32]) ─ F_o
    fusion:  F_u = concat(f_n, type-1 outputs, F_o) [224 = 64 + 64 + 64 + 32] ─ Dropout(0.25)
             ─ 3D UNet++ (depth 4, nested dense skips; heads X^{0,1..4}: features averaged,
               each also a supervised volume prediction pp_out{j}, concatenated)
             ─ 3D UNet ─ Conv3D(1, 1x1x1, sigmoid, float32)

A config stored by xprospect < 0.2 (no ``lift_filters`` key) builds that release's network:
ResNet stages halving after the first (lift at S/8), lifting stage ``k`` of ``n`` a
``ResidualBlock3D(base_filters * 2**(n - k))`` followed by a type-2 upsampling, every
full-resolution output ``base_filters`` channels (:data:`LEGACY_DEFAULTS`).

Everything is written with ``keras.ops`` / ``keras.layers`` only, so it also runs on JAX.
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
from xprospect.models.blocks import ConvNormAct, ExpandXrays, activation_fn, upsample_unit

__all__ = ["LEGACY_DEFAULTS", "VIEWS", "DuoLiftGenerator", "ResidualBlock"]

LEGACY_DEFAULTS: dict[str, Any] = {
    "encoder_strides": "halve",
    "lift_filters": None,
    "deep_supervision": False,
}
"""What a stored :class:`DuoLiftGenerator` config without these keys (xprospect < 0.2) was built
with; :meth:`DuoLiftGenerator.from_config` fills them in, so old ``.keras`` files load as before."""


# === Layers ===


@keras.saving.register_keras_serializable(package="xprospect")
class ResidualBlock(keras.layers.Layer):
    """ResNet basic block: two 3x3 convolutions with normalisation and an identity shortcut.

    ``act(norm(conv(act(norm(conv(x))))) + shortcut(x))``. The shortcut is the identity when the
    input already has ``filters`` channels and ``strides`` is 1, otherwise a 1x1 convolution with
    the same stride followed by normalisation (ResNet's projection shortcut, "option B").

    Args:
        filters: Output channels.
        rank: 2 (``(B, H, W, ch)``) or 3 (``(B, D, H, W, ch)``).
        strides: Stride of the first convolution and of the projection (1 or 2).
        kernel_size: Kernel of both convolutions.
        norm: ``"instance"``, ``"batch"`` or ``"none"`` (see :class:`ConvNormAct`).
        activation: Activation after the first convolution and after the sum
            (``"relu"``, ``"leaky_relu"``, ``"selu"``, ``"gelu"``, ``"linear"``).
        leaky_alpha: Negative slope of ``"leaky_relu"``.
        **kwargs: ``keras.layers.Layer`` arguments (name, dtype, ...).

    Returns:
        Called on ``(B, *spatial, ch)``: ``(B, *spatial / strides, filters)``.
    """

    def __init__(
        self,
        filters: int,
        rank: int = 3,
        strides: int = 1,
        kernel_size: int = 3,
        norm: str = "instance",
        activation: str = "relu",
        leaky_alpha: float = 0.2,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if rank not in (2, 3):
            raise ConfigError(f"rank must be 2 or 3, got {rank!r}")
        check_norm(norm)
        self.filters = positive_int("filters", filters)
        self.rank = int(rank)
        self.strides = positive_int("strides", strides)
        self.kernel_size = positive_int("kernel_size", kernel_size)
        self.norm = norm
        self.activation = activation
        self.leaky_alpha = float(leaky_alpha)
        unit: dict[str, Any] = {
            "rank": self.rank,
            "norm": norm,
            "leaky_alpha": self.leaky_alpha,
            "dtype": self.dtype_policy,
        }
        self.conv1 = ConvNormAct(
            filters, kernel_size, strides, activation=activation, name="conv1", **unit
        )
        # Linear before the sum: the activation comes after the shortcut is added (ResNet v1).
        self.conv2 = ConvNormAct(filters, kernel_size, 1, activation="linear", name="conv2", **unit)
        self._act = activation_fn(activation, self.leaky_alpha)
        self.shortcut: ConvNormAct | None = None

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        shape = tuple(input_shape)
        if self.strides != 1 or shape[-1] != self.filters:
            self.shortcut = ConvNormAct(
                self.filters,
                1,
                self.strides,
                rank=self.rank,
                norm=self.norm,
                activation="linear",
                leaky_alpha=self.leaky_alpha,
                dtype=self.dtype_policy,
                name="shortcut",
            )
            self.shortcut.build(shape)
        self.conv1.build(shape)
        self.conv2.build(self.conv1.compute_output_shape(shape))
        self.built = True

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        x = self.conv2(self.conv1(inputs, training=training), training=training)
        skip = inputs if self.shortcut is None else self.shortcut(inputs, training=training)
        return self._act(ops.add(x, skip))

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return tuple(self.conv1.compute_output_shape(tuple(input_shape)))

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(
            filters=self.filters,
            rank=self.rank,
            strides=self.strides,
            kernel_size=self.kernel_size,
            norm=self.norm,
            activation=self.activation,
            leaky_alpha=self.leaky_alpha,
        )
        return config


# === Model ===


@keras.saving.register_keras_serializable(package="xprospect")
class DuoLiftGenerator(keras.Model):
    """DuoLift's generator: feature- and image-lifting branches decoded by a 3D UNet++ and UNet.

    Args:
        size: Edge of the square X-rays and of the output cube; a power of two divisible by the
            encoder's stride and by ``2**unetpp_depth`` and ``2**unet_depth`` (32, 64, 128, ...).
        views: ``("frontal", "lateral")`` (biplanar) or ``("frontal",)`` (single view).
        encoder_filters: Filters of the 2D stem and first ResNet stage (ResNet-34: 64); doubled
            at every later stage.
        encoder_blocks: Basic blocks per 2D ResNet stage (ResNet-34: ``(3, 4, 6, 3)``, so F2D
            has ``64 * 2**3 = 512`` channels as the paper's).
        encoder_strides: Stride of each ResNet stage's first block; None: all 1, so F2D stays at
            the max-pool's ``S/4`` (the paper's ``512 x H/4 x W/4``); ``"halve"``: 1 then 2 (the
            standard ResNet, and xprospect < 0.2). The lift is at ``S / (4 * prod(strides))``.
        base_filters: Only for a network without ``lift_filters`` (xprospect < 0.2): channels of
            every full-resolution branch output; its lifting stage ``k`` of ``n`` has
            ``base_filters * 2**(n - k)`` filters.
        lift_filters: Channels of branch 1's 3D ResNet blocks, from the lift's resolution to
            full resolution, one per scale (the paper: ``(256, 128, 64)`` for f_u21 at D'/4,
            f_u22 at D'/2, f_u23 at D'); None: the xprospect < 0.2 network (``base_filters``).
        type1_filters: Channels of each "type 1" upsampling's output (f_u11, f_u12: 64).
        xray_filters: Channels of branch 2's ResNet block (F_o: 224 - 3 x 64 = 32).
        resnet_blocks: 3D residual blocks per scale of branch 1 and in branch 2 (the paper: 1).
        unetpp_filters: Filters of the UNet++'s full-resolution level (doubled per level).
        unetpp_depth: Down-samplings of the UNet++ (4: nodes X^{0..4, *}, heads X^{0,1..4}).
        unet_filters: Filters of the final UNet's full-resolution level (doubled per level).
        unet_depth: Down-samplings of the final UNet.
        max_filters: Cap on the filters of any 3D layer.
        norm: ``"instance"`` (``GroupNormalization(groups=-1)``), ``"batch"`` or ``"none"``.
        activation: Activation of every block (``"relu"``, ``"leaky_relu"``, ...).
        dropout: Dropout rate on the fused full-resolution features (the paper: 0.25).
        deep_supervision: UNet++'s deep supervision ("with Deep Supervision (Zhou et al.
            2018)"): each nested head ``X^{0,1..4}`` also predicts the volume (1x1x1 conv,
            sigmoid, layers :attr:`supervision_layers`), the trainer adds the reconstruction loss
            of each prediction (averaged over the heads), and the predictions join the UNet's
            input. False: no such heads (xprospect < 0.2, and what a stored config without this
            key loads as).
        upsampling: The decoder's x2 upsampling: ``"transpose"`` (the paper's transposed
            convolutions, the default) or, a deliberate deviation for checkerboard-free output
            (issue 17), ``"resize_conv"`` (nearest-neighbour resize + convolution; Odena et al.
            2016, "Deconvolution and Checkerboard Artifacts") or ``"subpixel"`` (convolution +
            depth-to-space, ICNR-initialised; Aitken et al. 2017, "Checkerboard artifact free
            sub-pixel convolution"); see :class:`xprospect.models.blocks.Upsample`.
        dtype: Dtype policy of every layer (e.g. ``"mixed_bfloat16"``); None: the global policy.
            The output layer always computes in float32.
        **kwargs: ``keras.Model`` arguments (``name``, ``trainable``).

    Returns:
        Called on the input dict: ``(B, size, size, size, 1)`` float32 in [0, 1], canonical.

    Size: 128^3 biplanar with the defaults: see ``tests/models/test_paper_presets.py`` (the
    two ResNet-34 encoders hold 2 x 21.3 M of it, the first 3D block on the 1024-channel F_B
    another 7.1 M + 0.3 M shortcut).

    Paper values (Zhang and Ying, "Generator Architecture"): "a ResNet-34 2D feature encoder to
    extract 2D features F^2D in R^{512 x H/4 x W/4}"; "lifted ... by repeating ... D'/4 times";
    "F_B in R^{1024 x D'/4 x H'/4 x W'/4}"; ResNet blocks output "f_u21 in R^{256 x D'/4 ...},
    f_u22 in R^{128 x D'/2 ...} and f_u23 in R^{64 x D' ...}"; type 1 gives "f_u11, f_u12 in
    R^{64 x D' ...}"; "F_u in R^{224 x D' x W' x H'}"; "Dropout with a probability of 0.25";
    "U-Net++ ... four encoder layers, four decoder layers ... with Deep Supervision"; then "a
    U-Net". Single view: the same network with one encoder (``views=("frontal",)``).

    Choices (where the paper's text leaves the design open):

    - **Encoder strides.** ResNet-34's four stages give 512 channels, but at ``S/32``; the
      paper's ``H/4`` means its later stages keep the resolution, so every stage has stride 1
      here (``encoder_strides``; the text does not say whether it dilates instead).
    - **Up path.** The text has "three ResNet blocks ... each followed by an Upsample Type 2
      block", but gives the three blocks' outputs at ``D'/4``, ``D'/2`` and ``D'``: two x2
      steps. The shapes are taken as the specification: a type-2 upsampling between
      consecutive blocks, none after the last.
    - **F_o.** 32 channels, so that ``F_u`` has the paper's 224 (64 + 64 + 64 + 32).
    - **Lift.** Each view's features are repeated along that view's beam axis with
      :class:`~xprospect.models.blocks.ExpandXrays` (frontal along axis 1, lateral along axis 2),
      which puts them straight into the canonical frame; the views' volumes are concatenated
      channel-wise. The encoders do not share weights.
    - **Upsampling.** "Type 2" is a learned x2 step: ``Conv3DTranspose(3x3x3, stride 2)`` →
      norm → activation, to the next block's channels (256 → 128 → 64: "the channel dimension
      of the volumes is reduced"). "Type 1" is nearest-neighbour upsampling straight to ``S``
      followed by a 3x3x3 convolution → norm → activation to ``type1_filters``.
    - **UNet++.** Max-pool down, transposed-conv (2x2x2, stride 2) up; every node two
      conv-norm-act units; node ``X^{i,j}`` sees ``X^{i,0..j-1}`` and the upsampled
      ``X^{i+1,j-1}``. Deep supervision: the four nested heads ``X^{0,1..4}`` go through
      1x1x1 convolutions (``unetpp_filters`` channels each, linear) and are averaged (UNet++'s
      "ensemble" mode, done on features), and the average feeds the final 3D UNet. Deep
      supervision (``deep_supervision``): each head also predicts the volume through a 1x1x1
      sigmoid convolution; the trainer adds the voxel loss terms (``mse`` / ``mae``, not the
      masked or adversarial ones) of each prediction, averaged over the heads (UNet++'s mean
      over its supervised outputs), and the four predictions are concatenated to the UNet's
      input (the paper does not say how the heads feed the UNet).
    - **Widths of the UNet++ and UNet.** Not in the text: 16 filters at full resolution,
      doubled per level (``unetpp_filters``, ``unet_filters``), capped at ``max_filters``.
    - **UNet.** A plain 3D UNet (max-pool down, transposed-conv up, concatenated skips, two
      conv-norm-act units per level), then the sigmoid head.
    - **Normalisation.** The text we could consult does not name it; instance norm, because
      the paper trains with batch size 1 (with gradient accumulation), where batch norm's
      running statistics would differ from the per-volume statistics it trains with. ReLU
      throughout (ResNet's).
    """

    def __init__(
        self,
        size: int = 128,
        views: Sequence[str] = VIEWS,
        encoder_filters: int = 64,
        encoder_blocks: Sequence[int] = (3, 4, 6, 3),
        base_filters: int = 16,
        resnet_blocks: int = 1,
        encoder_strides: Sequence[int] | str | None = None,
        lift_filters: Sequence[int] | None = (256, 128, 64),
        type1_filters: int = 64,
        xray_filters: int = 32,
        unetpp_filters: int = 16,
        unetpp_depth: int = 4,
        unet_filters: int = 16,
        unet_depth: int = 4,
        max_filters: int = 256,
        norm: str = "instance",
        activation: str = "relu",
        dropout: float = 0.25,
        deep_supervision: bool = True,
        upsampling: str = "transpose",
        dtype: Any = None,
        **kwargs: Any,
    ) -> None:
        views = tuple(views)
        encoder_blocks = tuple(encoder_blocks)
        strides = self._strides(encoder_strides, len(encoder_blocks))
        lift = None if lift_filters is None else tuple(lift_filters)
        self._check_lift(size, strides, lift, type1_filters, xray_filters)
        self._check(
            size,
            views,
            encoder_filters,
            encoder_blocks,
            base_filters,
            resnet_blocks,
            unetpp_filters,
            unetpp_depth,
            unet_filters,
            unet_depth,
            max_filters,
            norm,
            activation,
            dropout,
            4 * math.prod(strides),
        )
        check_upsampling(upsampling)
        policy = resolve_policy(dtype)
        n_stages = int(math.log2(4 * math.prod(strides)))  # log2 of the encoder's stride

        def cap(filters: int) -> int:
            return int(min(filters, max_filters))

        unit: dict[str, Any] = {"norm": norm, "activation": activation, "dtype": policy}

        def cna(filters: int, name: str, **extra: Any) -> ConvNormAct:
            return ConvNormAct(filters, **{"kernel_size": 3, **extra}, **unit, name=name)

        def double_conv(x: Any, filters: int, name: str) -> Any:
            x = cna(filters, f"{name}_conv0")(x)
            return cna(filters, f"{name}_conv1")(x)

        def up(x: Any, filters: int, name: str) -> Any:
            return upsample_unit(upsampling, filters, 2, name=name, **unit)(x)

        # === Inputs ===
        inputs = {v: keras.Input((size, size, 1), name=v) for v in views}

        # === Branch 1: 2D ResNet encoders (view frames) ===
        features = {}
        for v in views:
            x = ConvNormAct(encoder_filters, 7, 2, rank=2, **unit, name=f"{v}_stem")(inputs[v])
            x = keras.layers.MaxPooling2D(3, 2, padding="same", dtype=policy, name=f"{v}_pool")(x)
            for stage, blocks in enumerate(encoder_blocks):
                for i in range(blocks):
                    x = ResidualBlock(
                        encoder_filters * 2**stage,
                        rank=2,
                        strides=strides[stage] if i == 0 else 1,
                        **unit,
                        name=f"{v}_enc{stage}_{i}",
                    )(x)
            features[v] = x

        # === Branch 1: lift, 3D ResNet stages, type-2 / type-1 upsampling (canonical) ===
        x = ExpandXrays(views, dtype=policy, name="feature_lift")(features)
        fused: list[Any] = []
        for k, f in enumerate(lift or ()):
            for i in range(resnet_blocks):
                x = ResidualBlock(f, rank=3, **unit, name=f"lift{k}_res{i}")(x)
            if k < n_stages:
                t1 = keras.layers.UpSampling3D(
                    2 ** (n_stages - k), dtype=policy, name=f"lift{k}_up1"
                )(x)
                fused.append(cna(type1_filters, f"lift{k}_up1_conv")(t1))
                x = upsample_unit(upsampling, lift[k + 1], 3, name=f"lift{k}_up2", **unit)(x)  # type: ignore[index]
        for k in range(n_stages if lift is None else 0):
            for i in range(resnet_blocks):
                x = ResidualBlock(
                    cap(base_filters * 2 ** (n_stages - k)), rank=3, **unit, name=f"lift{k}_res{i}"
                )(x)
            x = upsample_unit(
                upsampling,
                cap(base_filters * 2 ** (n_stages - 1 - k)),
                3,
                name=f"lift{k}_up2",
                **unit,
            )(x)
            if k < n_stages - 1:
                t1 = keras.layers.UpSampling3D(
                    2 ** (n_stages - 1 - k), dtype=policy, name=f"lift{k}_up1"
                )(x)
                fused.append(cna(base_filters, f"lift{k}_up1_conv")(t1))
        fused.insert(0, x)

        # === Branch 2: the X-rays lifted (canonical) ===
        y = ExpandXrays(views, dtype=policy, name="xray_lift")(inputs)
        for i in range(resnet_blocks):
            y = ResidualBlock(
                base_filters if lift is None else xray_filters, rank=3, **unit, name=f"xray_res{i}"
            )(y)
        fused.append(y)

        z = keras.layers.Concatenate(dtype=policy, name="fuse")(fused)
        if dropout > 0:
            z = keras.layers.Dropout(dropout, dtype=policy, name="fuse_dropout")(z)

        # === 3D UNet++ (nested dense skips, heads averaged) ===
        def pp_filters(level: int) -> int:
            return cap(unetpp_filters * 2**level)

        nodes: dict[tuple[int, int], Any] = {}
        for i in range(unetpp_depth + 1):
            src = (
                z
                if i == 0
                else keras.layers.MaxPooling3D(2, dtype=policy, name=f"pp_pool{i}")(
                    nodes[(i - 1, 0)]
                )
            )
            nodes[(i, 0)] = double_conv(src, pp_filters(i), f"pp_x{i}_0")
            # Fill the anti-diagonal ending at row 0 as soon as row i's first node exists.
            for j in range(1, i + 1):
                r = i - j
                parts = [nodes[(r, c)] for c in range(j)]
                parts.append(up(nodes[(r + 1, j - 1)], pp_filters(r), f"pp_up{r + 1}_{j - 1}"))
                cat = keras.layers.Concatenate(dtype=policy, name=f"pp_cat{r}_{j}")(parts)
                nodes[(r, j)] = double_conv(cat, pp_filters(r), f"pp_x{r}_{j}")
        heads = [
            keras.layers.Conv3D(unetpp_filters, 1, dtype=policy, name=f"pp_head{j}")(nodes[(0, j)])
            for j in range(1, unetpp_depth + 1)
        ]
        z = (
            heads[0]
            if len(heads) == 1
            else keras.layers.Average(dtype=policy, name="pp_heads_mean")(heads)
        )
        supervised: list[str] = []
        if deep_supervision:
            # Each nested head also predicts the volume (UNet++'s deep supervision); the
            # predictions join the UNet's input, which keeps them in the graph, and the trainer
            # adds a reconstruction loss on each (supervision_layers).
            outs = []
            for j in range(1, unetpp_depth + 1):
                name = f"pp_out{j}"
                outs.append(
                    keras.layers.Conv3D(1, 1, activation="sigmoid", dtype="float32", name=name)(
                        nodes[(0, j)]
                    )
                )
                supervised.append(name)
            z = keras.layers.Concatenate(dtype=policy, name="pp_supervised")([z, *outs])

        # === 3D UNet ===
        def u_filters(level: int) -> int:
            return cap(unet_filters * 2**level)

        skips = []
        for i in range(unet_depth):
            z = double_conv(z, u_filters(i), f"unet_enc{i}")
            skips.append(z)
            z = keras.layers.MaxPooling3D(2, dtype=policy, name=f"unet_pool{i}")(z)
        z = double_conv(z, u_filters(unet_depth), f"unet_bottom{unet_depth}")
        for i in reversed(range(unet_depth)):
            z = up(z, u_filters(i), f"unet_up{i}")
            z = keras.layers.Concatenate(dtype=policy, name=f"unet_cat{i}")([skips[i], z])
            z = double_conv(z, u_filters(i), f"unet_dec{i}")

        # === Head ===
        volume = keras.layers.Conv3D(1, 1, activation="sigmoid", dtype="float32", name="volume")(z)

        super().__init__(inputs=inputs, outputs=volume, **kwargs)

        # === Config ===
        self.size = size
        self.views = views
        self.encoder_filters = encoder_filters
        self.encoder_blocks = encoder_blocks
        self.base_filters = base_filters
        self.resnet_blocks = resnet_blocks
        self.encoder_strides = (
            None
            if encoder_strides is None
            else (encoder_strides if isinstance(encoder_strides, str) else tuple(encoder_strides))
        )
        self.lift_filters = lift
        self.type1_filters = type1_filters
        self.xray_filters = xray_filters
        self.unetpp_filters = unetpp_filters
        self.unetpp_depth = unetpp_depth
        self.unet_filters = unet_filters
        self.unet_depth = unet_depth
        self.max_filters = max_filters
        self.norm = norm
        self.activation = activation
        self.dropout = dropout
        self.deep_supervision = bool(deep_supervision)
        self.supervision_layers: tuple[str, ...] = tuple(supervised)
        self.upsampling = upsampling
        self._policy_name = policy.name

    @staticmethod
    def _check(
        size: int,
        views: tuple[str, ...],
        encoder_filters: int,
        encoder_blocks: tuple[int, ...],
        base_filters: int,
        resnet_blocks: int,
        unetpp_filters: int,
        unetpp_depth: int,
        unet_filters: int,
        unet_depth: int,
        max_filters: int,
        norm: str,
        activation: str,
        dropout: float,
        stride: int,
    ) -> None:
        """Validates the arguments (raises :class:`ConfigError`)."""
        check_views(views, need_frontal=True)
        for name, val in (
            ("encoder_filters", encoder_filters),
            ("base_filters", base_filters),
            ("resnet_blocks", resnet_blocks),
            ("unetpp_filters", unetpp_filters),
            ("unet_filters", unet_filters),
            ("max_filters", max_filters),
        ):
            positive_int(name, val)
        if not encoder_blocks:
            raise ConfigError("encoder_blocks must name at least one ResNet stage, got ()")
        for val in encoder_blocks:
            positive_int("encoder_blocks entries", val)
        for name, val in (("unetpp_depth", unetpp_depth), ("unet_depth", unet_depth)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 0:
                raise ConfigError(f"{name} must be a non-negative integer, got {val!r}")
        check_norm(norm)
        if activation not in ("relu", "leaky_relu", "selu", "gelu"):
            raise ConfigError(
                f"activation must be relu, leaky_relu, selu or gelu, got {activation!r}"
            )
        if not 0.0 <= float(dropout) < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout!r}")
        need = max(stride, 2**unetpp_depth, 2**unet_depth)
        if not power_of_two(size) or size < need:
            raise ConfigError(
                f"size must be a power of two >= {need} (encoder stride {stride}, "
                f"2**unetpp_depth, 2**unet_depth), got {size!r}"
            )

    @staticmethod
    def _strides(encoder_strides: Sequence[int] | str | None, n: int) -> tuple[int, ...]:
        """The stride of each ResNet stage (None: all 1; ``"halve"``: 1 then 2)."""
        if encoder_strides is None:
            return (1,) * n
        if encoder_strides == "halve":
            return (1,) + (2,) * (n - 1)
        if isinstance(encoder_strides, str):
            raise ConfigError(
                f"encoder_strides must be None, 'halve' or one stride per stage, got "
                f"{encoder_strides!r}"
            )
        strides = tuple(encoder_strides)
        if len(strides) != n or any(
            isinstance(v, bool) or not isinstance(v, int) or v not in (1, 2) for v in strides
        ):
            raise ConfigError(
                f"encoder_strides needs one stride (1 or 2) per encoder stage ({n}), got "
                f"{encoder_strides!r}"
            )
        return strides

    @staticmethod
    def _check_lift(
        size: int,
        strides: tuple[int, ...],
        lift: tuple[int, ...] | None,
        type1_filters: int,
        xray_filters: int,
    ) -> None:
        positive_int("type1_filters", type1_filters)
        positive_int("xray_filters", xray_filters)
        if lift is None:
            return
        n = int(math.log2(4 * math.prod(strides)))
        if len(lift) != n + 1:
            raise ConfigError(
                f"lift_filters needs {n + 1} entries (one per scale from the lift at S/"
                f"{2**n} to S), got {list(lift)}"
            )
        for f in lift:
            positive_int("lift_filters entries", f)

    def get_config(self) -> dict[str, Any]:
        return {
            **network_config(self),
            "size": self.size,
            "views": list(self.views),
            "encoder_filters": self.encoder_filters,
            "encoder_blocks": list(self.encoder_blocks),
            "base_filters": self.base_filters,
            "resnet_blocks": self.resnet_blocks,
            "encoder_strides": (
                self.encoder_strides
                if self.encoder_strides is None or isinstance(self.encoder_strides, str)
                else list(self.encoder_strides)
            ),
            "lift_filters": None if self.lift_filters is None else list(self.lift_filters),
            "type1_filters": self.type1_filters,
            "xray_filters": self.xray_filters,
            "unetpp_filters": self.unetpp_filters,
            "unetpp_depth": self.unetpp_depth,
            "unet_filters": self.unet_filters,
            "unet_depth": self.unet_depth,
            "max_filters": self.max_filters,
            "norm": self.norm,
            "upsampling": self.upsampling,
            "activation": self.activation,
            "dropout": self.dropout,
            "deep_supervision": self.deep_supervision,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DuoLiftGenerator:
        # A config saved before lift_filters existed describes the xprospect < 0.2 network.
        return cls(**{**LEGACY_DEFAULTS, **config})
