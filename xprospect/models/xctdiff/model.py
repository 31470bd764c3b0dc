"""XctDiff (Bai et al. 2024): a 3D VQ-GAN, a progressive encoder and a prior-guided latent
diffusion model, for CT from one frontal radiograph.

A re-implementation from the paper's description (``shared/papers/xctdiff.txt``); no code of the
authors' is used. The paper's choices are the defaults; where it is silent the choice is written
under *Choices* in the class docstring.

- :class:`XctDiffAutoencoder`: the 3D perceptual compression model (Sec. 2.1): encoder to a
  latent grid, :class:`~xprospect.models.xctdiff.layers.VectorQuantizer` (homogeneous
  codebook), decoder ending in a super-resolution module. Called on a volume it returns the
  reconstruction; :attr:`encoder`, :attr:`quantizer` and :attr:`decoder` are its parts.
- :class:`XctDiffDiscriminator`: the 3D volume (``rank=3``) and 2D slice (``rank=2``) PatchGAN
  discriminators of Eq. 3.
- :class:`XctDiffPriorEncoder`: the progressive encoder (Sec. 2.2, Eq. 5-6): a per-pixel MLP
  that lifts the frontal radiograph into depth along the beam, 3D convolutions, and quantisation
  with the VQ-GAN's (frozen) codebook: the prior ``y``.
- :class:`XctDiffUNet`: the noise predictor ``eps_theta(x_t, t, y)`` (Sec. 2.3) with in-plane
  convolutions, a time embedding and cross-attention to ``y`` (or concatenation).
- :class:`XctDiff`: the whole pipeline, radiograph → volume by DDIM (or DDPM) sampling in the
  latent space and decoding; the model ``xprospect predict`` runs.

**Frames.** Volumes are canonical (:doc:`conventions`): ``(B, S, S, S, 1)``, axis 0 head → feet
(axial slice index), axis 1 anterior → posterior (the frontal beam), axis 2 right → left. The
frontal radiograph ``(B, S, S, 1)`` has rows = axis 0 and columns = axis 2, so it matches a
coronal slice; the prior encoder's MLP produces axis 1. The paper's "3x3x1" kernel (``H x W x
D``, ``D`` the slice axis) is ``(1, 3, 3)`` here: in the axial plane, axes 1 and 2.

Everything is ``keras.ops`` / ``keras.layers`` (runs on JAX too).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import keras
from keras import ops

from xprospect.errors import ConfigError
from xprospect.models.args import network_config, positive_int, power_of_two, resolve_policy
from xprospect.models.xctdiff.diffusion import (
    NoiseSchedule,
    ddim_sample,
    ddpm_sample,
)
from xprospect.models.xctdiff.layers import PixelShuffle3D, SinusoidalEmbedding, VectorQuantizer

__all__ = [
    "CONDITIONING",
    "XctDiff",
    "XctDiffAutoencoder",
    "XctDiffDiscriminator",
    "XctDiffPriorEncoder",
    "XctDiffUNet",
]

CONDITIONING = ("cross_attention", "concat", "both")
"""How the UNet sees the prior: the paper's cross-attention, the official code's concatenation
of ``y`` to the input, or both."""
IN_PLANE = (1, 3, 3)
"""The paper's 3x3x1 kernel in the canonical frame (axial plane = axes 1, 2)."""


# === Building blocks (functional) ===


def _groups(groups: int, channels: int) -> int:
    return math.gcd(int(groups), int(channels))


def _norm_act(x: Any, groups: int, policy: Any, name: str) -> Any:
    x = keras.layers.GroupNormalization(
        _groups(groups, x.shape[-1]), epsilon=1e-6, dtype=policy, name=f"{name}_norm"
    )(x)
    return keras.layers.Activation("silu", dtype=policy, name=f"{name}_act")(x)


def _conv(rank: int) -> Any:
    return keras.layers.Conv3D if rank == 3 else keras.layers.Conv2D


def _res_block(
    x: Any,
    filters: int,
    *,
    groups: int,
    policy: Any,
    name: str,
    kernel: Any = 3,
    rank: int = 3,
    temb: Any = None,
) -> Any:
    """GroupNorm-SiLU-Conv twice with a skip (1x1 conv when the width changes); with ``temb``, a
    Dense projection of the time embedding is added between the two convolutions (DDPM)."""
    conv = _conv(rank)
    h = _norm_act(x, groups, policy, f"{name}_a")
    h = conv(filters, kernel, padding="same", dtype=policy, name=f"{name}_conv_a")(h)
    if temb is not None:
        t = keras.layers.Dense(filters, dtype=policy, name=f"{name}_temb")(temb)
        t = keras.layers.Reshape((1,) * rank + (filters,), dtype=policy, name=f"{name}_temb_r")(t)
        h = keras.layers.Add(dtype=policy, name=f"{name}_temb_add")([h, t])
    h = _norm_act(h, groups, policy, f"{name}_b")
    h = conv(filters, kernel, padding="same", dtype=policy, name=f"{name}_conv_b")(h)
    if x.shape[-1] != filters:
        x = conv(filters, 1, dtype=policy, name=f"{name}_skip")(x)
    return keras.layers.Add(dtype=policy, name=f"{name}_add")([x, h])


def _check_levels(size: int, channel_mult: Sequence[int], what: str) -> tuple[int, ...]:
    mult = tuple(positive_int(f"{what}: channel_mult", m) for m in channel_mult)
    if not mult:
        raise ConfigError(f"{what}: channel_mult must not be empty")
    factor = 2 ** (len(mult) - 1)
    if not power_of_two(size) or size < factor:
        raise ConfigError(f"{what}: size must be a power of two >= {factor}, got {size}")
    return mult


# === Stage 1: the VQ-GAN ===


@keras.saving.register_keras_serializable(package="xprospect")
class XctDiffAutoencoder(keras.Model):
    """The 3D perceptual compression model (VQ-GAN generator) of Sec. 2.1.

    ``volume (B, S, S, S, 1)`` → encoder → ``z (B, S/f, S/f, S/f, code_dim)`` →
    :class:`VectorQuantizer` → decoder → ``(B, S, S, S, 1)`` in [0, 1], ``f = 2^(len(channel_mult)
    - 1)``. Encoder: Conv3D stem, per level ``num_res_blocks`` residual blocks (width
    ``base_filters * channel_mult[l]``) and a stride-2 convolution (not after the last), then
    GroupNorm-SiLU-Conv(1x1x1) to ``code_dim``. Decoder: the mirror, with nearest-neighbour
    upsampling and a convolution per level; with ``super_resolution`` its last upsampling stage
    is the super-resolution module: a residual block, Conv3D to ``8 x width`` channels,
    :class:`PixelShuffle3D` (x2), Conv3D to one channel.

    *Choices* (the paper gives no architecture): widths and depth follow the official
    configuration (``ch`` 32, ``ch_mult`` (1, 2, 4), two residual blocks, GroupNorm groups 8):
    a 128^3 volume becomes a 32^3 x 8 latent grid (``f`` = 4). The official encoder's attention
    at 8^3 is left out (the grid here is 32^3). The super-resolution module of [14] is not
    specified beyond "an extra super-resolution module at the end of the decoder"; a sub-pixel
    (ESPCN) module replacing the last upsampling is the choice.

    Args:
        size: Cube edge ``S`` (power of two, at least ``f``).
        base_filters: Width of the first level.
        channel_mult: Width multipliers per level (its length sets ``f``).
        num_res_blocks: Residual blocks per level.
        code_dim: Latent channels = codebook entry dimension (8, paper).
        num_codes: Codebook entries (8,192, paper).
        normalize_codes: The homogeneous (z-score) codebook (paper); False: plain VQ (the
            paper's baseline).
        commitment: Weight of the encoder-side codebook term (1, Eq. 2).
        super_resolution: End the decoder with the super-resolution module (paper).
        groups: GroupNormalization groups (reduced to divide each width).
        dtype: Dtype policy (None: the global one); the codebook and outputs are float32.
        **kwargs: ``keras.Model`` arguments (``name``).
    """

    def __init__(
        self,
        size: int = 128,
        base_filters: int = 32,
        channel_mult: Sequence[int] = (1, 2, 4),
        num_res_blocks: int = 2,
        code_dim: int = 8,
        num_codes: int = 8192,
        normalize_codes: bool = True,
        commitment: float = 1.0,
        super_resolution: bool = True,
        groups: int = 8,
        dtype: Any = None,
        **kwargs: Any,
    ) -> None:
        size = positive_int("size", size)
        mult = _check_levels(size, channel_mult, "XctDiffAutoencoder")
        base = positive_int("base_filters", base_filters)
        blocks = positive_int("num_res_blocks", num_res_blocks)
        policy = resolve_policy(dtype)
        levels = len(mult)
        if super_resolution and levels < 2:
            raise ConfigError("super_resolution needs at least two levels (channel_mult)")
        latent = size // 2 ** (levels - 1)
        kw: dict[str, Any] = {"groups": groups, "policy": policy}

        # Encoder
        vol = keras.Input((size, size, size, 1), name="volume")
        h = keras.layers.Conv3D(base, 3, padding="same", dtype=policy, name="enc_stem")(vol)
        for level, m in enumerate(mult):
            for b in range(blocks):
                h = _res_block(h, base * m, name=f"enc{level}_block{b}", **kw)
            if level < levels - 1:
                h = keras.layers.Conv3D(
                    base * m, 3, strides=2, padding="same", dtype=policy, name=f"enc{level}_down"
                )(h)
        h = _norm_act(h, groups, policy, "enc_out")
        z = keras.layers.Conv3D(code_dim, 1, dtype="float32", name="enc_out_conv")(h)
        encoder = keras.Model(vol, z, name="encoder")

        # Decoder
        zq = keras.Input((latent, latent, latent, code_dim), name="latent")
        top = base * mult[-1]
        d = keras.layers.Conv3D(top, 3, padding="same", dtype=policy, name="dec_stem")(zq)
        last = 1 if super_resolution else 0
        for level in range(levels - 1, last - 1, -1):
            for b in range(blocks):
                d = _res_block(d, base * mult[level], name=f"dec{level}_block{b}", **kw)
            if level > last:
                d = keras.layers.UpSampling3D(2, dtype=policy, name=f"dec{level}_up")(d)
                d = keras.layers.Conv3D(
                    base * mult[level - 1],
                    3,
                    padding="same",
                    dtype=policy,
                    name=f"dec{level}_upconv",
                )(d)
        width = base * mult[0]
        if super_resolution:
            d = _res_block(d, width, name="sr_block", **kw)
            d = keras.layers.Conv3D(width * 8, 3, padding="same", dtype=policy, name="sr_expand")(d)
            d = PixelShuffle3D(2, dtype=policy, name="sr_shuffle")(d)
        d = _norm_act(d, groups, policy, "dec_out")
        out = keras.layers.Conv3D(
            1, 3, padding="same", activation="sigmoid", dtype="float32", name="dec_out_conv"
        )(d)
        decoder = keras.Model(zq, out, name="decoder")

        quantizer = VectorQuantizer(
            num_codes, code_dim, normalize_codes, commitment, dtype="float32", name="quantizer"
        )
        inp = keras.Input((size, size, size, 1), name="volume")
        quantized, _ = quantizer(encoder(inp))
        recon = decoder(quantized)
        super().__init__(inputs=inp, outputs=recon, **kwargs)

        self.encoder = encoder
        self.quantizer = quantizer
        self.decoder = decoder
        self.size = size
        self.base_filters = base
        self.channel_mult = mult
        self.num_res_blocks = blocks
        self.code_dim = int(code_dim)
        self.num_codes = int(num_codes)
        self.normalize_codes = bool(normalize_codes)
        self.commitment = float(commitment)
        self.super_resolution = bool(super_resolution)
        self.groups = int(groups)
        self.latent_size = latent
        self._policy_name = policy.name

    def get_config(self) -> dict[str, Any]:
        return {
            **network_config(self),
            "size": self.size,
            "base_filters": self.base_filters,
            "channel_mult": self.channel_mult,
            "num_res_blocks": self.num_res_blocks,
            "code_dim": self.code_dim,
            "num_codes": self.num_codes,
            "normalize_codes": self.normalize_codes,
            "commitment": self.commitment,
            "super_resolution": self.super_resolution,
            "groups": self.groups,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> XctDiffAutoencoder:
        return cls(**config)


@keras.saving.register_keras_serializable(package="xprospect")
class XctDiffDiscriminator(keras.Model):
    """A PatchGAN discriminator for Eq. 3: ``rank=3`` the volume discriminator ``D_3d`` on
    ``(B, S, S, S, 1)``, ``rank=2`` the slice discriminator ``D_2d`` on axial slices ``(N, S, S,
    1)``. Output: patch logits (float32).

    Conv(k=4, stride 2)-LeakyReLU(0.2), then ``num_layers - 1`` Conv(stride 2)-GroupNorm-
    LeakyReLU with doubling widths (up to ``8 x base_filters``), one at stride 1, and a
    one-channel Conv.

    *Choices:* the paper names the two discriminators only; this is the VQ-GAN
    ``NLayerDiscriminator`` layout (three layers, 64 filters in the official configuration),
    with GroupNorm in place of BatchNorm (batch size 1 in the paper).

    Args:
        size: Edge ``S`` of the input.
        rank: 3 (volume) or 2 (slice).
        base_filters: Width of the first layer.
        num_layers: Stride-2 layers (the input must stay at least 1 voxel wide).
        groups: GroupNormalization groups.
        dtype: Dtype policy.
        **kwargs: ``keras.Model`` arguments.
    """

    def __init__(
        self,
        size: int = 128,
        rank: int = 3,
        base_filters: int = 64,
        num_layers: int = 3,
        groups: int = 8,
        dtype: Any = None,
        **kwargs: Any,
    ) -> None:
        if rank not in (2, 3):
            raise ConfigError(f"XctDiffDiscriminator: rank must be 2 or 3, got {rank!r}")
        size = positive_int("size", size)
        layers = positive_int("num_layers", num_layers)
        if size < 2**layers:
            raise ConfigError(f"XctDiffDiscriminator: size {size} < 2^num_layers ({2**layers})")
        base = positive_int("base_filters", base_filters)
        policy = resolve_policy(dtype)
        conv = _conv(rank)
        inp = keras.Input((size,) * rank + (1,), name="volume" if rank == 3 else "slice")
        h = conv(base, 4, strides=2, padding="same", dtype=policy, name="conv0")(inp)
        h = keras.layers.LeakyReLU(0.2, dtype=policy, name="act0")(h)
        for i in range(1, layers + 1):
            width = base * min(2**i, 8)
            h = conv(
                width,
                4,
                strides=2 if i < layers else 1,
                padding="same",
                dtype=policy,
                name=f"conv{i}",
            )(h)
            h = keras.layers.GroupNormalization(
                _groups(groups, width), dtype=policy, name=f"norm{i}"
            )(h)
            h = keras.layers.LeakyReLU(0.2, dtype=policy, name=f"act{i}")(h)
        out = conv(1, 4, padding="same", dtype="float32", name="logits")(h)
        super().__init__(inputs=inp, outputs=out, **kwargs)
        self.size = size
        self.rank = int(rank)
        self.base_filters = base
        self.num_layers = layers
        self.groups = int(groups)
        self._policy_name = policy.name

    def get_config(self) -> dict[str, Any]:
        return {
            **network_config(self),
            "size": self.size,
            "rank": self.rank,
            "base_filters": self.base_filters,
            "num_layers": self.num_layers,
            "groups": self.groups,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> XctDiffDiscriminator:
        return cls(**config)


# === Stage 2: the progressive encoder ===


@keras.saving.register_keras_serializable(package="xprospect")
class XctDiffPriorEncoder(keras.Model):
    """The progressive encoder ``PE`` (Sec. 2.2): frontal radiograph → prior ``y``.

    ``{"frontal": (B, S, S, 1)}`` → 2D stem and ``log2(f)`` stride-2 convolution blocks to
    ``(B, s, s, base_filters_2d)`` (``s = S / f``, the latent edge) → *shape mapping*: a
    per-pixel MLP (Dense ``mlp_hidden``, GELU, Dense ``s x base_filters``) turns each pixel's
    features into a column of ``s`` voxels along the beam (canonical axis 1: the frontal view
    matches a coronal slice, Eq. 5) → ``(B, s, s, s, base_filters)`` → *anatomy mapping*:
    ``num_res_blocks`` 3D residual blocks → GroupNorm-SiLU-Conv(1x1x1) to ``code_dim`` (``z``,
    :attr:`features`) → the VQ-GAN's quantiser with its codebook frozen: ``y = N(q(Conv(z)))``
    (Eq. 6), ``(B, s, s, s, code_dim)`` float32.

    *Choices:* the paper gives no widths; the MLP acts on 2D features at the latent
    resolution (one column per latent pixel), not on raw pixels, so its size does not grow with
    ``S^2``. The training target (the paper says only that the prior is "mapped into the
    homogeneous space") is the VQ-GAN encoder's normalised output of the true CT:
    ``||N(z) - N(E(x))||^2`` plus the commitment term to the frozen codebook (the trainer's
    ``xctdiff-encoder`` stage); the official code instead decodes to a CT.

    Args:
        size: Radiograph edge ``S``.
        latent_size: Latent edge ``s`` (``S / f``, the VQ-GAN's).
        code_dim, num_codes, normalize_codes: The VQ-GAN's codebook (its weights are copied in
            with :meth:`set_codebook`).
        base_filters_2d: Width of the 2D convolutions.
        base_filters: Width of the 3D convolutions (channels per depth voxel out of the MLP).
        mlp_hidden: Hidden width of the MLP.
        num_res_blocks: 3D residual blocks.
        groups: GroupNormalization groups.
        views: ``("frontal",)`` (single view only).
        dtype: Dtype policy.
        **kwargs: ``keras.Model`` arguments.
    """

    def __init__(
        self,
        size: int = 128,
        latent_size: int = 32,
        code_dim: int = 8,
        num_codes: int = 8192,
        normalize_codes: bool = True,
        base_filters_2d: int = 64,
        base_filters: int = 32,
        mlp_hidden: int = 256,
        num_res_blocks: int = 2,
        groups: int = 8,
        views: Sequence[str] = ("frontal",),
        dtype: Any = None,
        **kwargs: Any,
    ) -> None:
        views = (views,) if isinstance(views, str) else tuple(views)
        if views != ("frontal",):
            raise ConfigError(f"XctDiff takes one frontal radiograph, got views {list(views)}")
        size = positive_int("size", size)
        s = positive_int("latent_size", latent_size)
        if not (power_of_two(size) and power_of_two(s) and s <= size):
            raise ConfigError(f"size {size} and latent_size {s} must be powers of two, s <= size")
        f2 = positive_int("base_filters_2d", base_filters_2d)
        f3 = positive_int("base_filters", base_filters)
        hidden = positive_int("mlp_hidden", mlp_hidden)
        blocks = positive_int("num_res_blocks", num_res_blocks)
        policy = resolve_policy(dtype)
        kw: dict[str, Any] = {"groups": groups, "policy": policy}

        xray = keras.Input((size, size, 1), name="frontal")
        h = keras.layers.Conv2D(f2, 3, padding="same", dtype=policy, name="stem")(xray)
        for i in range(int(math.log2(size // s))):
            h = _res_block(h, f2, rank=2, name=f"down{i}_block", **kw)
            h = keras.layers.Conv2D(
                f2, 3, strides=2, padding="same", dtype=policy, name=f"down{i}_conv"
            )(h)
        h = _res_block(h, f2, rank=2, name="mid_block", **kw)
        # Shape mapping: each (row, column) pixel of the coronal-like view → a depth column.
        h = keras.layers.LayerNormalization(dtype=policy, name="mlp_norm")(h)
        h = keras.layers.Dense(hidden, activation="gelu", dtype=policy, name="mlp_hidden")(h)
        h = keras.layers.Dense(s * f3, dtype=policy, name="mlp_depth")(h)
        h = keras.layers.Reshape((s, s, s, f3), dtype=policy, name="to_columns")(h)
        # (row = axis 0, column = axis 2, depth = axis 1) → canonical (0, 1, 2).
        h = keras.layers.Permute((1, 3, 2, 4), dtype=policy, name="to_canonical")(h)
        for b in range(blocks):
            h = _res_block(h, f3, name=f"anatomy{b}", **kw)
        h = _norm_act(h, groups, policy, "out")
        z = keras.layers.Conv3D(code_dim, 1, dtype="float32", name="out_conv")(h)
        features = keras.Model({"frontal": xray}, z, name="features")

        quantizer = VectorQuantizer(
            num_codes,
            code_dim,
            normalize_codes,
            dtype="float32",
            trainable=False,
            name="quantizer",
        )
        inp = keras.Input((size, size, 1), name="frontal")
        prior, _ = quantizer(features({"frontal": inp}))
        super().__init__(inputs={"frontal": inp}, outputs=prior, **kwargs)
        self.features = features
        self.quantizer = quantizer
        self.size = size
        self.latent_size = s
        self.code_dim = int(code_dim)
        self.num_codes = int(num_codes)
        self.normalize_codes = bool(normalize_codes)
        self.base_filters_2d = f2
        self.base_filters = f3
        self.mlp_hidden = hidden
        self.num_res_blocks = blocks
        self.groups = int(groups)
        self.views = views
        self._policy_name = policy.name

    def set_codebook(self, codebook: Any) -> None:
        """Copies the VQ-GAN's codebook ``(num_codes, code_dim)`` into the frozen quantiser."""
        value = ops.convert_to_numpy(codebook)
        if tuple(value.shape) != (self.num_codes, self.code_dim):
            raise ConfigError(
                f"codebook of shape {tuple(value.shape)} does not fit ({self.num_codes}, "
                f"{self.code_dim})"
            )
        self.quantizer.codebook.assign(value)

    def get_config(self) -> dict[str, Any]:
        return {
            **network_config(self),
            "size": self.size,
            "latent_size": self.latent_size,
            "code_dim": self.code_dim,
            "num_codes": self.num_codes,
            "normalize_codes": self.normalize_codes,
            "base_filters_2d": self.base_filters_2d,
            "base_filters": self.base_filters,
            "mlp_hidden": self.mlp_hidden,
            "num_res_blocks": self.num_res_blocks,
            "groups": self.groups,
            "views": self.views,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> XctDiffPriorEncoder:
        return cls(**config)


# === Stage 3: the latent diffusion UNet ===


@keras.saving.register_keras_serializable(package="xprospect")
class XctDiffUNet(keras.Model):
    """The noise predictor ``eps_theta(x_t, t, y)`` of Sec. 2.3 (Eq. 7).

    Inputs ``{"latent": x_t (B, s, s, s, c), "timestep": t (B,), "prior": y (B, s, s, s, c)}``,
    output the predicted noise ``(B, s, s, s, c)`` float32. Every convolution is in-plane
    (:data:`IN_PLANE`, the paper's 3x3x1) and so is the down/upsampling (stride ``(1, 2, 2)``):
    the axial-slice axis keeps its ``s`` slices. The time step goes through
    :class:`SinusoidalEmbedding` and a two-layer MLP (width ``4 x base_filters``) into every
    residual block. With cross-attention, ``y`` is embedded by an in-plane convolution
    (``context_dim`` channels), average-pooled in-plane to each attention level's grid, and
    the voxels of that level attend to it (``keras.layers.MultiHeadAttention``, queries
    GroupNorm-ed, residual).

    *Choices:* the paper gives no widths; ``base_filters`` 64 follows the official
    ``dim: 64``. Cross-attention runs at ``attention_levels`` (default: the deepest level)
    and in the middle block, where a 32^3 latent has ``32 x 8 x 8`` = 2,048 tokens (full
    attention at 32^3 would be 32,768). The output convolution starts at zero (the prediction
    starts at 0). ``conditioning="concat"`` (the official code) concatenates ``y`` to ``x_t``
    instead; ``"both"`` does both.

    Args:
        latent_size: ``s`` (its in-plane edge must be divisible by ``2^(levels - 1)``).
        code_dim: Channels ``c`` of the latent and of ``y``.
        base_filters: Width of the first level.
        channel_mult: Width multipliers per level.
        num_res_blocks: Residual blocks per level (down path; the up path has the same).
        attention_levels: Levels (0-based) with cross-attention after each residual block.
        num_heads: Attention heads.
        context_dim: Channels of the embedded prior.
        conditioning: One of :data:`CONDITIONING`.
        groups: GroupNormalization groups.
        dtype: Dtype policy.
        **kwargs: ``keras.Model`` arguments.
    """

    def __init__(
        self,
        latent_size: int = 32,
        code_dim: int = 8,
        base_filters: int = 64,
        channel_mult: Sequence[int] = (1, 2, 4),
        num_res_blocks: int = 2,
        attention_levels: Sequence[int] = (2,),
        num_heads: int = 4,
        context_dim: int = 64,
        conditioning: str = "cross_attention",
        groups: int = 8,
        dtype: Any = None,
        **kwargs: Any,
    ) -> None:
        s = positive_int("latent_size", latent_size)
        mult = _check_levels(s, channel_mult, "XctDiffUNet")
        levels = len(mult)
        attn = tuple(int(a) for a in attention_levels)
        if any(not 0 <= a < levels for a in attn):
            raise ConfigError(f"attention_levels {list(attn)} must be in [0, {levels - 1}]")
        if conditioning not in CONDITIONING:
            raise ConfigError(f"conditioning must be one of {CONDITIONING}, got {conditioning!r}")
        base = positive_int("base_filters", base_filters)
        blocks = positive_int("num_res_blocks", num_res_blocks)
        heads = positive_int("num_heads", num_heads)
        ctx_dim = positive_int("context_dim", context_dim)
        policy = resolve_policy(dtype)
        cross = conditioning in ("cross_attention", "both")
        kw: dict[str, Any] = {"groups": groups, "policy": policy, "kernel": IN_PLANE}

        latent = keras.Input((s, s, s, code_dim), name="latent")
        t_in = keras.Input((), name="timestep")
        prior = keras.Input((s, s, s, code_dim), name="prior")
        temb = SinusoidalEmbedding(base, dtype=policy, name="time_sin")(t_in)
        temb = keras.layers.Dense(4 * base, activation="silu", dtype=policy, name="time_mlp0")(temb)
        temb = keras.layers.Dense(4 * base, dtype=policy, name="time_mlp1")(temb)
        temb = keras.layers.Activation("silu", dtype=policy, name="time_act")(temb)

        ctx = None
        if cross:
            ctx = keras.layers.Conv3D(
                ctx_dim, IN_PLANE, padding="same", dtype=policy, name="context"
            )(prior)

        def attend(x: Any, level: int, name: str) -> Any:
            if not cross:
                return x
            c = ctx
            if level > 0:
                c = keras.layers.AveragePooling3D(
                    (1, 2**level, 2**level), dtype=policy, name=f"{name}_pool"
                )(ctx)
            d, hh, ww, ch = x.shape[1:]
            q = keras.layers.GroupNormalization(
                _groups(groups, ch), epsilon=1e-6, dtype=policy, name=f"{name}_norm"
            )(x)
            q = keras.layers.Reshape((d * hh * ww, ch), dtype=policy, name=f"{name}_q")(q)
            kv = keras.layers.Reshape((d * hh * ww, ctx_dim), dtype=policy, name=f"{name}_kv")(c)
            a = keras.layers.MultiHeadAttention(
                heads, max(1, ch // heads), output_shape=ch, dtype=policy, name=f"{name}_mha"
            )(q, kv)
            a = keras.layers.Reshape((d, hh, ww, ch), dtype=policy, name=f"{name}_out")(a)
            return keras.layers.Add(dtype=policy, name=f"{name}_add")([x, a])

        x = latent
        if conditioning in ("concat", "both"):
            x = keras.layers.Concatenate(dtype=policy, name="concat_prior")([latent, prior])
        x = keras.layers.Conv3D(base, IN_PLANE, padding="same", dtype=policy, name="stem")(x)
        skips = []
        for level, m in enumerate(mult):
            for b in range(blocks):
                x = _res_block(x, base * m, temb=temb, name=f"down{level}_block{b}", **kw)
                if level in attn:
                    x = attend(x, level, f"down{level}_attn{b}")
            skips.append(x)
            if level < levels - 1:
                x = keras.layers.Conv3D(
                    base * m,
                    IN_PLANE,
                    strides=(1, 2, 2),
                    padding="same",
                    dtype=policy,
                    name=f"down{level}_conv",
                )(x)
        x = _res_block(x, base * mult[-1], temb=temb, name="mid_block0", **kw)
        x = attend(x, levels - 1, "mid_attn")
        x = _res_block(x, base * mult[-1], temb=temb, name="mid_block1", **kw)
        for level in range(levels - 1, -1, -1):
            x = keras.layers.Concatenate(dtype=policy, name=f"up{level}_concat")([x, skips[level]])
            for b in range(blocks):
                x = _res_block(x, base * mult[level], temb=temb, name=f"up{level}_block{b}", **kw)
                if level in attn:
                    x = attend(x, level, f"up{level}_attn{b}")
            if level > 0:
                x = keras.layers.UpSampling3D((1, 2, 2), dtype=policy, name=f"up{level}_up")(x)
        x = _norm_act(x, groups, policy, "out")
        eps = keras.layers.Conv3D(
            code_dim,
            IN_PLANE,
            padding="same",
            kernel_initializer="zeros",
            dtype="float32",
            name="out_conv",
        )(x)
        super().__init__(
            inputs={"latent": latent, "timestep": t_in, "prior": prior}, outputs=eps, **kwargs
        )
        self.latent_size = s
        self.code_dim = int(code_dim)
        self.base_filters = base
        self.channel_mult = mult
        self.num_res_blocks = blocks
        self.attention_levels = attn
        self.num_heads = heads
        self.context_dim = ctx_dim
        self.conditioning = conditioning
        self.groups = int(groups)
        self._policy_name = policy.name

    def get_config(self) -> dict[str, Any]:
        return {
            **network_config(self),
            "latent_size": self.latent_size,
            "code_dim": self.code_dim,
            "base_filters": self.base_filters,
            "channel_mult": self.channel_mult,
            "num_res_blocks": self.num_res_blocks,
            "attention_levels": self.attention_levels,
            "num_heads": self.num_heads,
            "context_dim": self.context_dim,
            "conditioning": self.conditioning,
            "groups": self.groups,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> XctDiffUNet:
        return cls(**config)


# === The pipeline ===

SAMPLERS = ("ddim", "ddpm")


@keras.saving.register_keras_serializable(package="xprospect")
class XctDiff(keras.Model):
    """The whole XctDiff pipeline: ``{"frontal": (B, S, S, 1)}`` → ``(B, S, S, S, 1)`` in [0, 1].

    ``y = prior_encoder(frontal)``; ``x_0`` is sampled with the UNet conditioned on ``y``
    (DDIM with ``sampling_steps`` steps, or DDPM through all ``timesteps``), starting from
    ``x_T`` drawn with ``seed`` (the same seed gives the same volume); ``x_0`` is snapped to its
    nearest normalised codebook entries (``quantize_samples``) and decoded by the VQ-GAN's
    decoder. The three parts are :attr:`autoencoder`, :attr:`prior_encoder` and :attr:`unet`;
    the trainer's three stages train them one after the other.

    *Choices:* ``quantize_samples`` (Latent Diffusion's VQ interface quantises before decoding,
    so the decoder sees latents like those it was trained on); ``sampling_steps`` 50, ``eta`` 0
    (the paper does not say how it samples); the noise schedule of
    :mod:`xprospect.models.xctdiff.diffusion`.

    Args:
        size: Radiograph / volume edge ``S``.
        views: ``("frontal",)``.
        code_dim, num_codes, normalize_codes: The shared codebook (8, 8,192, homogeneous).
        autoencoder_args: Further :class:`XctDiffAutoencoder` arguments (``base_filters``,
            ``channel_mult`` (sets the latent size), ``num_res_blocks``, ``super_resolution``,
            ...).
        prior_encoder_args: Further :class:`XctDiffPriorEncoder` arguments.
        unet_args: Further :class:`XctDiffUNet` arguments.
        timesteps, beta_start, beta_end, schedule: The :class:`NoiseSchedule`.
        sampler: ``"ddim"`` or ``"ddpm"``.
        sampling_steps: DDIM steps (``xprospect predict --sampling-steps``).
        eta: DDIM's eta.
        seed: Seed of ``x_T`` (and of the DDPM / ``eta > 0`` noise).
        quantize_samples: Snap ``x_0`` to the codebook before decoding.
        dtype: Dtype policy of the three networks.
        **kwargs: ``keras.Model`` arguments.
    """

    def __init__(
        self,
        size: int = 128,
        views: Sequence[str] = ("frontal",),
        code_dim: int = 8,
        num_codes: int = 8192,
        normalize_codes: bool = True,
        autoencoder_args: Mapping[str, Any] | None = None,
        prior_encoder_args: Mapping[str, Any] | None = None,
        unet_args: Mapping[str, Any] | None = None,
        timesteps: int = 1000,
        beta_start: float = 0.0015,
        beta_end: float = 0.0125,
        schedule: str = "sqrt_linear",
        sampler: str = "ddim",
        sampling_steps: int = 50,
        eta: float = 0.0,
        seed: int = 0,
        quantize_samples: bool = True,
        dtype: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if sampler not in SAMPLERS:
            raise ConfigError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        self.size = positive_int("size", size)
        self.views = (views,) if isinstance(views, str) else tuple(views)
        self.code_dim = positive_int("code_dim", code_dim)
        self.num_codes = positive_int("num_codes", num_codes)
        self.normalize_codes = bool(normalize_codes)
        self.autoencoder_args = dict(autoencoder_args or {})
        self.prior_encoder_args = dict(prior_encoder_args or {})
        self.unet_args = dict(unet_args or {})
        self.noise_schedule = NoiseSchedule(
            int(timesteps), float(beta_start), float(beta_end), str(schedule)
        )
        self.timesteps = int(timesteps)
        self.beta_start = float(beta_start)
        self.beta_end = float(beta_end)
        self.schedule = str(schedule)
        self.sampler = sampler
        self.sampling_steps = positive_int("sampling_steps", sampling_steps)
        self.eta = float(eta)
        self.seed = int(seed)
        self.quantize_samples = bool(quantize_samples)
        codebook: dict[str, Any] = {
            "code_dim": self.code_dim,
            "num_codes": self.num_codes,
            "normalize_codes": self.normalize_codes,
        }
        try:
            self.autoencoder = XctDiffAutoencoder(
                self.size, **codebook, **self.autoencoder_args, dtype=dtype, name="autoencoder"
            )
            s = self.autoencoder.latent_size
            self.prior_encoder = XctDiffPriorEncoder(
                self.size,
                s,
                **codebook,
                views=self.views,
                **self.prior_encoder_args,
                dtype=dtype,
                name="prior_encoder",
            )
            self.unet = XctDiffUNet(s, self.code_dim, **self.unet_args, dtype=dtype, name="unet")
        except TypeError as exc:
            raise ConfigError(f"XctDiff: {exc}") from None
        self.latent_size = s
        # The three networks are functional (built) and the pipeline has no weights of its own,
        # so it is built now (weights can be saved before any call); the input shapes that a
        # first call would record (for build configs and SavedModel export) are set with it.
        self._build_shapes_dict = {
            "input_shape": {v: (None, self.size, self.size, 1) for v in self.views}
        }
        self.built = True

    def build(self, input_shape: Any = None) -> None:
        self.built = True

    @property
    def xray_network(self) -> XctDiffPriorEncoder:
        """The network that takes the radiograph (its symbolic inputs are the pipeline's)."""
        return self.prior_encoder

    def denoiser(self, prior: Any) -> Any:
        """``eps_fn(x_t, t)`` of the UNet conditioned on ``prior``."""
        unet = self.unet

        def eps_fn(x_t: Any, t: Any) -> Any:
            return unet({"latent": x_t, "timestep": t, "prior": prior}, training=False)

        return eps_fn

    def sample_latent(
        self, prior: Any, *, steps: int | None = None, seed: int | None = None
    ) -> Any:
        """``x_0`` sampled for ``prior`` (``steps`` and ``seed`` default to the model's)."""
        steps = self.sampling_steps if steps is None else int(steps)
        seed = self.seed if seed is None else int(seed)
        shape = ops.shape(prior)
        if self.sampler == "ddpm":
            return ddpm_sample(self.denoiser(prior), self.noise_schedule, shape, seed=seed)
        return ddim_sample(
            self.denoiser(prior), self.noise_schedule, shape, steps=steps, eta=self.eta, seed=seed
        )

    def decode(self, latent: Any) -> Any:
        """The VQ-GAN decoder's volume for a (sampled) latent, snapped first if configured."""
        if self.quantize_samples:
            latent, _ = self.autoencoder.quantizer(latent)
        return self.autoencoder.decoder(latent, training=False)

    def call(self, inputs: Any, training: bool = False) -> Any:
        prior = self.prior_encoder(inputs, training=False)
        return self.decode(self.sample_latent(prior))

    def generate(self, inputs: Any, *, steps: int | None = None, seed: int | None = None) -> Any:
        """Like calling the model, with another number of sampling steps or seed."""
        prior = self.prior_encoder(inputs, training=False)
        return self.decode(self.sample_latent(prior, steps=steps, seed=seed))

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(
            size=self.size,
            views=self.views,
            code_dim=self.code_dim,
            num_codes=self.num_codes,
            normalize_codes=self.normalize_codes,
            autoencoder_args=self.autoencoder_args,
            prior_encoder_args=self.prior_encoder_args,
            unet_args=self.unet_args,
            timesteps=self.timesteps,
            beta_start=self.beta_start,
            beta_end=self.beta_end,
            schedule=self.schedule,
            sampler=self.sampler,
            sampling_steps=self.sampling_steps,
            eta=self.eta,
            seed=self.seed,
            quantize_samples=self.quantize_samples,
        )
        return config
