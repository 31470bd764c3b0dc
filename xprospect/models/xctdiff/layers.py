"""XctDiff's own layers: the homogeneous vector quantiser, the sinusoidal time embedding and the
3D pixel shuffle of the super-resolution module, plus the codebook statistics.

Everything is ``keras.ops`` only (runs on JAX too). Choices the paper (Bai et al., "XctDiff",
``shared/papers/xctdiff.txt``) leaves open are written in each docstring under *Choices*.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from xprospect.errors import ConfigError
from xprospect.models.args import positive_int

__all__ = [
    "PixelShuffle3D",
    "SinusoidalEmbedding",
    "VectorQuantizer",
    "codebook_usage",
    "perplexity",
    "zscore",
]


def zscore(x: Any, epsilon: float = 1e-5) -> Any:
    """The z-score normalisation N of the paper's Eq. 2, over the last axis.

    Each vector (an encoder output vector or a codebook entry, ``code_dim`` components) becomes
    ``(v - mean(v)) / sqrt(var(v) + epsilon)``.

    *Choice:* the paper says only "z-score normalization to transform the variance space into a
    homogeneous space". Normalising each vector over its own components (not over a batch) keeps
    the quantiser independent of the batch (same code for a case whatever it is batched with)
    and puts every vector and every entry on the same sphere of radius ``sqrt(code_dim)``, which
    is what makes the space isotropic.
    """
    x = ops.convert_to_tensor(x)
    mean = ops.mean(x, axis=-1, keepdims=True)
    var = ops.mean(ops.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) / ops.sqrt(var + epsilon)


def codebook_usage(indices: Any, num_codes: int) -> Any:
    """Share of the ``num_codes`` codebook entries that ``indices`` uses (a float32 scalar)."""
    flat = ops.reshape(ops.cast(indices, "int32"), (-1,))
    counts = ops.bincount(flat, minlength=num_codes)
    return ops.mean(ops.cast(counts > 0, "float32"))


def perplexity(indices: Any, num_codes: int) -> Any:
    """``exp(H(p))`` of the code histogram ``p`` of ``indices`` (1: one code; ``num_codes``: all
    equally often)."""
    flat = ops.reshape(ops.cast(indices, "int32"), (-1,))
    counts = ops.cast(ops.bincount(flat, minlength=num_codes), "float32")
    p = counts / ops.maximum(ops.sum(counts), 1.0)
    return ops.exp(-ops.sum(p * ops.log(p + 1e-10)))


@keras.saving.register_keras_serializable(package="xprospect")
class VectorQuantizer(keras.layers.Layer):
    """Element-wise vector quantisation to the nearest codebook entry (the paper's Eq. 1), with
    the homogeneous codebook (Eq. 2) and straight-through gradients.

    Called on ``z`` ``(B, ..., code_dim)`` it returns ``(quantized, indices)``: ``indices``
    ``(B, ...)`` int32 is the nearest entry of each vector, and ``quantized`` has the value of
    that entry and the gradient of the identity with respect to ``z`` (straight-through,
    ``z + sg[e - z]``). With ``normalize`` (the paper's homogeneous space) the nearest entry is
    searched between ``N(z)`` and ``N(codebook)`` (:func:`zscore`) and ``quantized`` is
    ``N(e_k)``, the normalised entry: the latent the decoder and the diffusion model see.

    :meth:`codebook_loss` is Eq. 2 per example: ``||N(sg[z]) - N(z_q)||^2 + commitment *
    ||N(sg[z_q]) - N(z)||^2`` (means over the latent grid and components), without ``N`` when
    ``normalize`` is False (the VQ-VAE loss, the paper's baseline rows of Table 2).

    *Choices:* the paper writes the two terms with weight 1 (``commitment=1.0``, the default;
    VQ-VAE's 0.25 is an option). Entries start uniform in ``[-1/num_codes, 1/num_codes]`` (the
    VQ-GAN code the paper builds on); after ``N`` that scale does not matter. Distances are
    computed in float32 whatever the policy. The full ``(vectors, num_codes)`` distance matrix
    is built at once: 1 GiB for a 32^3 latent grid and 8,192 entries.

    Args:
        num_codes: Number of entries (8,192, the paper's Table 2 default).
        code_dim: Dimension of an entry (8, the paper's default).
        normalize: Use the homogeneous (z-score) space (the paper); False: plain VQ.
        commitment: Weight of the encoder-side term.
        epsilon: Variance floor of :func:`zscore`.
        **kwargs: ``keras.layers.Layer`` arguments (``trainable=False`` freezes the codebook, as
            the progressive encoder does with the VQ-GAN's).
    """

    def __init__(
        self,
        num_codes: int = 8192,
        code_dim: int = 8,
        normalize: bool = True,
        commitment: float = 1.0,
        epsilon: float = 1e-5,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.num_codes = positive_int("num_codes", num_codes)
        self.code_dim = positive_int("code_dim", code_dim)
        if normalize and self.code_dim < 2:
            raise ConfigError("code_dim must be at least 2 with normalize (z-score over it)")
        self.normalize = bool(normalize)
        self.commitment = float(commitment)
        self.epsilon = float(epsilon)
        limit = 1.0 / self.num_codes
        self.codebook = self.add_weight(
            shape=(self.num_codes, self.code_dim),
            initializer=keras.initializers.RandomUniform(-limit, limit),
            name="codebook",
            dtype="float32",
        )

    def build(self, input_shape: Any) -> None:
        if input_shape[-1] != self.code_dim:
            raise ConfigError(
                f"VectorQuantizer: input has {input_shape[-1]} channels, code_dim is "
                f"{self.code_dim}"
            )
        self.built = True

    def _space(self, x: Any) -> Any:
        return zscore(x, self.epsilon) if self.normalize else x

    def entries(self) -> Any:
        """The codebook as the quantiser compares it: ``N(codebook)`` or the raw entries."""
        return self._space(ops.convert_to_tensor(self.codebook))

    def nearest(self, z: Any) -> Any:
        """Index ``(B, ...)`` int32 of the nearest (normalised) entry of each vector of ``z``."""
        z = self._space(ops.cast(z, "float32"))
        flat = ops.reshape(z, (-1, self.code_dim))
        book = self.entries()
        dist = (
            ops.sum(ops.square(flat), axis=1, keepdims=True)
            - 2.0 * ops.matmul(flat, ops.transpose(book))
            + ops.sum(ops.square(book), axis=1)[None, :]
        )
        idx = ops.cast(ops.argmin(dist, axis=1), "int32")
        return ops.reshape(idx, ops.shape(z)[:-1])

    def lookup(self, indices: Any) -> Any:
        """The (normalised) entries at ``indices``: ``(..., code_dim)`` float32."""
        return ops.take(self.entries(), ops.cast(indices, "int32"), axis=0)

    def call(self, inputs: Any) -> tuple[Any, Any]:
        z = self._space(ops.cast(inputs, "float32"))
        indices = self.nearest(inputs)
        e = self.lookup(indices)
        quantized = z + ops.stop_gradient(e - z)
        return ops.cast(quantized, self.compute_dtype), indices

    def codebook_loss(self, z: Any, indices: Any) -> Any:
        """Eq. 2 per example ``(B,)``: codebook term + ``commitment`` x encoder term."""
        z = self._space(ops.cast(z, "float32"))
        e = self.lookup(indices)
        axes = tuple(range(1, len(z.shape)))
        book_term = ops.mean(ops.square(ops.stop_gradient(z) - e), axis=axes)
        enc_term = ops.mean(ops.square(ops.stop_gradient(e) - z), axis=axes)
        return book_term + self.commitment * enc_term

    def compute_output_spec(self, inputs: Any) -> tuple[Any, Any]:
        shape = tuple(inputs.shape)
        return (
            keras.KerasTensor(shape, dtype=self.compute_dtype),
            keras.KerasTensor(shape[:-1], dtype="int32"),
        )

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(
            num_codes=self.num_codes,
            code_dim=self.code_dim,
            normalize=self.normalize,
            commitment=self.commitment,
            epsilon=self.epsilon,
        )
        return config


@keras.saving.register_keras_serializable(package="xprospect")
class SinusoidalEmbedding(keras.layers.Layer):
    """The transformer / DDPM sinusoidal embedding of a diffusion time step.

    ``t`` ``(B,)`` → ``(B, dim)``: ``[sin(t w_i), cos(t w_i)]`` with ``w_i = max_period^(-i /
    (dim / 2))``, ``i = 0 .. dim/2 - 1`` (the DDPM code's layout, sines first).

    Args:
        dim: Even embedding width.
        max_period: Longest period, in steps.
        **kwargs: ``keras.layers.Layer`` arguments.
    """

    def __init__(self, dim: int, max_period: float = 10000.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dim = positive_int("dim", dim)
        if self.dim % 2:
            raise ConfigError(f"SinusoidalEmbedding: dim must be even, got {dim}")
        self.max_period = float(max_period)

    def call(self, inputs: Any) -> Any:
        half = self.dim // 2
        freqs = ops.exp(
            -math.log(self.max_period) * ops.arange(half, dtype="float32") / float(half)
        )
        t = ops.reshape(ops.cast(inputs, "float32"), (-1, 1))
        args = t * freqs[None, :]
        out = ops.concatenate([ops.sin(args), ops.cos(args)], axis=-1)
        return ops.cast(out, self.compute_dtype)

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
        return (input_shape[0], self.dim)

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(dim=self.dim, max_period=self.max_period)
        return config


@keras.saving.register_keras_serializable(package="xprospect")
class PixelShuffle3D(keras.layers.Layer):
    """Sub-pixel upsampling in 3D (ESPCN's pixel shuffle): ``(B, D, H, W, C * s^3)`` →
    ``(B, s D, s H, s W, C)``; channel ``((a s + b) s + c) C + k`` goes to offset ``(a, b, c)``
    of channel ``k``.

    Args:
        scale: The factor ``s``.
        **kwargs: ``keras.layers.Layer`` arguments.
    """

    def __init__(self, scale: int = 2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scale = positive_int("scale", scale)

    def call(self, inputs: Any) -> Any:
        _, d, h, w, c = inputs.shape
        s = self.scale
        out_c = c // s**3
        x = ops.reshape(inputs, (-1, d, h, w, s, s, s, out_c))
        x = ops.transpose(x, (0, 1, 4, 2, 5, 3, 6, 7))
        return ops.reshape(x, (-1, d * s, h * s, w * s, out_c))

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
        b, d, h, w, c = input_shape
        s = self.scale
        return (b, d * s, h * s, w * s, c // s**3)

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(scale=self.scale)
        return config
