"""Keras layers shared by several model families: normalised convolutions, the X-ray expansion,
the view frames and Connection C.

Everything here is written with ``keras.ops`` and ``keras.layers`` only (no TensorFlow calls), so
the layers run on any Keras 3 backend (TensorFlow, JAX). Tensors are channels-last. Each layer is
registered under the ``xprospect`` package, keeps every init argument as an attribute of the same
name and returns it from ``get_config``, so saved models rebuild without custom-object arguments.
A layer used by one family only lives with that family (e.g. the DualUNet's connections A, B, D
and back-projection in :mod:`xprospect.models.dualunet.layers`).

**Frames.** The *canonical* volume frame is that of ``docs/conventions.md``: array axis 0 runs
head → feet, axis 1 anterior → posterior, axis 2 patient's right → left; a batch is
``(B, D0, D1, D2, ch)``. The X-rays are in display layout:

=========  =====================  ====================  ==========================
view       image rows             image columns         beam (projection) axis
=========  =====================  ====================  ==========================
frontal    axis 0 (head → feet)   axis 2 (right → left)  axis 1
lateral    axis 0 (head → feet)   axis 1 (ant. → post.)  axis 2
=========  =====================  ====================  ==========================

A per-view 3D decoder works in its *view frame* ``(B, rows, cols, depth, ch)``: 2D features of
shape ``(B, rows, cols, ch)`` are lifted by repeating them along a new last spatial axis, the
*depth*, which is the view's beam axis (index increasing with the canonical index). So

- the frontal view frame is (axis 0, axis 2, axis 1): canonical = swap spatial axes 2 and 3 of the
  ``(B, r, c, d, ch)`` tensor (batch axis counted), see :func:`view_to_canonical`;
- the lateral view frame is (axis 0, axis 1, axis 2): it already is the canonical frame.

:class:`ConnectionC` moves every view's features into the canonical frame (the frontal frame
after its swap) and averages them, so a voxel lit in both views' frames at the positions of the
same anatomical point lights that point in the fused volume. The DualUNet and X2CT-GAN both fuse
their views with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from xprospect.constants import VIEWS
from xprospect.errors import ConfigError
from xprospect.models.args import (
    NORMS,
    UPSAMPLING_MODES,
    check_upsampling,
    check_view,
    check_views,
    positive_int,
)

__all__ = [
    "ICNR",
    "NORM_ACTIVATIONS",
    "UPSAMPLING_MODES",
    "ConnectionC",
    "ConvNormAct",
    "ExpandXrays",
    "Upsample",
    "activation_fn",
    "canonical_to_view",
    "depth_to_space",
    "nearest_upsample",
    "normalization",
    "upsample_unit",
    "view_to_canonical",
]

# Permutation of a (B, r, c, d, ch) view-frame tensor into the canonical frame (its own inverse).
_VIEW_TO_CANONICAL = {"frontal": (0, 1, 3, 2, 4), "lateral": (0, 1, 2, 3, 4)}


# === Frames ===


def view_to_canonical(x: Any, view: str) -> Any:
    """Moves ``(B, rows, cols, depth, ch)`` features from a view frame into the canonical frame.

    Args:
        x: Features in the view frame of ``view`` (see the module docstring).
        view: ``"frontal"`` (frame axis 0, 2, 1: swaps the last two spatial axes) or
            ``"lateral"`` (frame axis 0, 1, 2: unchanged).

    Returns:
        ``(B, D0, D1, D2, ch)`` in the canonical orientation.
    """
    perm = _VIEW_TO_CANONICAL[check_view(view)]
    return x if perm == (0, 1, 2, 3, 4) else ops.transpose(x, perm)


def canonical_to_view(x: Any, view: str) -> Any:
    """Inverse of :func:`view_to_canonical` (the permutations are their own inverses)."""
    return view_to_canonical(x, view)


# === Normalised blocks (the GAN family) ===

NORM_ACTIVATIONS = ("relu", "leaky_relu", "selu", "gelu", "linear")
"""Activations of :class:`ConvNormAct` (:func:`activation_fn`)."""


def normalization(norm: str, name: str, dtype: Any = None) -> keras.layers.Layer | None:
    """The normalisation layer named by ``norm`` (None for ``"none"``).

    Instance norm is ``GroupNormalization(groups=-1)`` (one group per channel: per-example,
    per-channel statistics over the spatial axes), tensorflow-addons' ``InstanceNormalization``
    in Keras core.
    """
    if norm == "instance":
        return keras.layers.GroupNormalization(groups=-1, epsilon=1e-5, dtype=dtype, name=name)
    if norm == "batch":
        return keras.layers.BatchNormalization(dtype=dtype, name=name)
    if norm == "none":
        return None
    raise ConfigError(f"norm must be one of {NORMS}, got {norm!r}")


def activation_fn(activation: str, leaky_alpha: float = 0.2) -> Any:
    """The ``keras.ops`` function of one of :data:`NORM_ACTIVATIONS`."""
    if activation == "leaky_relu":
        return lambda x: ops.leaky_relu(x, negative_slope=leaky_alpha)
    if activation == "linear":
        return lambda x: x
    if activation in ("relu", "selu", "gelu"):
        return getattr(ops, activation)
    raise ConfigError(f"activation must be one of {NORM_ACTIVATIONS}, got {activation!r}")


@keras.saving.register_keras_serializable(package="xprospect")
class ConvNormAct(keras.layers.Layer):
    """Convolution → normalisation → activation, the unit of the GAN-family networks.

    Args:
        filters: Output channels.
        kernel_size: Square / cubic kernel size.
        strides: Stride (one number).
        rank: 2 (``(B, H, W, ch)``) or 3 (``(B, D, H, W, ch)``).
        norm: ``"instance"``, ``"batch"`` or ``"none"``.
        activation: ``"relu"``, ``"leaky_relu"``, ``"selu"``, ``"gelu"`` or ``"linear"``.
        transpose: A transposed convolution (upsampling by ``strides``) instead.
        padding: ``"same"`` or ``"valid"``.
        leaky_alpha: Negative slope of ``"leaky_relu"``.
        use_bias: None: only without normalisation (a bias before a norm is cancelled by it).
        **kwargs: ``keras.layers.Layer`` arguments.

    Returns:
        Called on ``(B, *spatial, ch)``: ``(B, *spatial', filters)``.
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int = 3,
        strides: int = 1,
        rank: int = 3,
        norm: str = "instance",
        activation: str = "relu",
        transpose: bool = False,
        padding: str = "same",
        leaky_alpha: float = 0.2,
        use_bias: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if rank not in (2, 3):
            raise ConfigError(f"rank must be 2 or 3, got {rank!r}")
        if filters < 1 or kernel_size < 1 or strides < 1:
            raise ConfigError(
                f"filters, kernel_size and strides must be positive, got {filters}, "
                f"{kernel_size}, {strides}"
            )
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.rank = int(rank)
        self.norm = norm
        self.activation = activation
        self.transpose = bool(transpose)
        self.padding = padding
        self.leaky_alpha = float(leaky_alpha)
        self.use_bias = use_bias
        self._act = activation_fn(activation, self.leaky_alpha)
        bias = (norm == "none") if use_bias is None else bool(use_bias)
        conv_cls = {
            (2, False): keras.layers.Conv2D,
            (3, False): keras.layers.Conv3D,
            (2, True): keras.layers.Conv2DTranspose,
            (3, True): keras.layers.Conv3DTranspose,
        }[(self.rank, self.transpose)]
        init = "lecun_normal" if activation == "selu" else "he_normal"
        self.conv = conv_cls(
            filters,
            kernel_size,
            strides=strides,
            padding=padding,
            use_bias=bias,
            kernel_initializer=init,
            dtype=self.dtype_policy,
            name="conv",
        )
        self.norm_layer = normalization(norm, "norm", self.dtype_policy)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        self.conv.build(tuple(input_shape))
        if self.norm_layer is not None:
            self.norm_layer.build(self.conv.compute_output_shape(tuple(input_shape)))
        self.built = True

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        x = self.conv(inputs)
        if self.norm_layer is not None:
            x = self.norm_layer(x, training=training)
        return self._act(x)

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
            activation=self.activation,
            transpose=self.transpose,
            padding=self.padding,
            leaky_alpha=self.leaky_alpha,
            use_bias=self.use_bias,
        )
        return config


@keras.saving.register_keras_serializable(package="xprospect")
class ExpandXrays(keras.layers.Layer):
    """Each X-ray repeated along its own beam axis into a canonical volume (one channel per view).

    The frontal image (rows = axis 0, columns = axis 2) is repeated along axis 1, the lateral
    (rows = axis 0, columns = axis 1) along axis 2, so ``out[b, i, j, k] = (frontal[b, i, k],
    lateral[b, i, j])``: the X-ray conditioning of X2CT-GAN's discriminator and DuoLift's second
    branch. Each image's mean over the repeated axis equals the image.

    Args:
        views: The input views, in channel order.
        **kwargs: ``keras.layers.Layer`` arguments.

    Returns:
        Called on a dict ``{view: (B, S, S, ch)}`` (or a list in ``views`` order, or one tensor
        for one view): ``(B, S, S, S, len(views) * ch)``.
    """

    def __init__(self, views: Sequence[str] = VIEWS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.views = check_views([views] if isinstance(views, str) else list(views))

    def _images(self, inputs: Any) -> list[Any]:
        if isinstance(inputs, dict):
            return [inputs[v] for v in self.views]
        # A shape tuple (ints and None) is one image's shape, not a list of images.
        is_shape = isinstance(inputs, tuple) and all(
            d is None or isinstance(d, int) for d in inputs
        )
        if isinstance(inputs, list | tuple) and not is_shape:
            return list(inputs)
        return [inputs]

    def call(self, inputs: Any) -> Any:
        vols = []
        for view, image in zip(self.views, self._images(inputs), strict=True):
            depth = ops.shape(image)[2] if view == "frontal" else ops.shape(image)[1]
            beam = 2 if view == "frontal" else 3
            vol = ops.repeat(ops.expand_dims(image, beam), depth, axis=beam)
            vols.append(vol)
        return vols[0] if len(vols) == 1 else ops.concatenate(vols, axis=-1)

    def compute_output_shape(self, input_shape: Any) -> tuple[int | None, ...]:
        shapes = self._images(input_shape)
        s = tuple(shapes[0])
        return (s[0], s[1], s[2], s[2], sum(int(tuple(x)[-1]) for x in shapes))

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(views=list(self.views))
        return config


# === Connection C ===


@keras.saving.register_keras_serializable(package="xprospect")
class ConnectionC(keras.layers.Layer):
    """Connection C: the views' 3D features at one scale, in the canonical frame, averaged.

    Each input is moved from its view frame into the canonical frame (:func:`view_to_canonical`:
    the frontal features' last two spatial axes are swapped, the lateral ones are unchanged), then
    the views are averaged. With one view nothing is averaged (single-view mode).

    Args:
        views: The view of each input, in input order, e.g. ``("frontal", "lateral")``.
        **kwargs: ``keras.layers.Layer`` arguments.

    Returns:
        Called on a list of ``(B, r, c, d, ch)`` view-frame tensors (or one tensor for one view):
        ``(B, D0, D1, D2, ch)`` in the canonical frame.
    """

    def __init__(self, views: Sequence[str] = VIEWS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.views = check_views(views)

    def _as_list(self, inputs: Any) -> list[Any]:
        items = list(inputs) if isinstance(inputs, list | tuple) else [inputs]
        if len(items) != len(self.views):
            raise ConfigError(f"ConnectionC expects {len(self.views)} inputs, got {len(items)}")
        return items

    def call(self, inputs: Any) -> Any:
        items = [
            view_to_canonical(x, v) for x, v in zip(self._as_list(inputs), self.views, strict=True)
        ]
        if len(items) == 1:
            return items[0]
        total = items[0]
        for x in items[1:]:
            total = total + x
        return total / float(len(items))

    def compute_output_shape(self, input_shape: Any) -> tuple[int | None, ...]:
        several = isinstance(input_shape, list | tuple) and isinstance(input_shape[0], list | tuple)
        s = tuple(input_shape[0] if several else input_shape)
        return tuple(s[i] for i in _VIEW_TO_CANONICAL[self.views[0]])

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(views=list(self.views))
        return config


# === Upsampling without checkerboard (issue 17) ===
#
# A transposed convolution with a kernel not divisible by its stride overlaps unevenly, and even
# one that is (2x2x2, stride 2) gives each of the 2**rank output phases its own kernel: both print
# a period-2 grid on the output (Odena, Dumoulin & Olah 2016, "Deconvolution and Checkerboard
# Artifacts", Distill). Their fix is to resize (nearest neighbour) and then convolve; Aitken et
# al. 2017 ("Checkerboard artifact free sub-pixel convolution", arXiv:1707.02937) keep the cheaper
# sub-pixel convolution and initialise it so that every phase starts with the same kernel (ICNR),
# which makes it equal to nearest-neighbour resize + convolution at initialisation.


def depth_to_space(x: Any, factor: int, rank: int) -> Any:
    """Channels-last depth-to-space (pixel shuffle) in 2D or 3D, with ``keras.ops`` only.

    Channel ``(o_1 * factor**(rank-1) + ... + o_rank) * C + c`` of input voxel ``(i_1, ...)``
    goes to output voxel ``(i_1 * factor + o_1, ...)``, channel ``c``: TensorFlow's
    ``tf.nn.depth_to_space`` order (DCR) in 2D, the same order extended to 3D.

    Args:
        x: ``(B, *spatial, C * factor**rank)``.
        factor: Upsampling factor of every spatial axis.
        rank: Spatial axes (2 or 3).

    Returns:
        ``(B, *(s * factor for s in spatial), C)``.
    """
    shape = ops.shape(x)
    spatial = [shape[1 + i] for i in range(rank)]
    channels = int(x.shape[-1]) // factor**rank
    x = ops.reshape(x, (-1, *spatial, *([factor] * rank), channels))
    # (B, s_1, .., s_r, o_1, .., o_r, C) -> (B, s_1, o_1, .., s_r, o_r, C)
    perm = [0]
    for i in range(rank):
        perm += [1 + i, 1 + rank + i]
    x = ops.transpose(x, (*perm, 2 * rank + 1))
    return ops.reshape(x, (-1, *(s * factor for s in spatial), channels))


def nearest_upsample(x: Any, factor: int, rank: int) -> Any:
    """Nearest-neighbour upsampling of every spatial axis of a channels-last tensor by ``factor``
    (each voxel repeated ``factor`` times along each axis; ``keras.ops.repeat``)."""
    for axis in range(1, rank + 1):
        x = ops.repeat(x, factor, axis=axis)
    return x


@keras.saving.register_keras_serializable(package="xprospect")
class ICNR(keras.initializers.Initializer):
    """ICNR: a sub-pixel convolution kernel whose ``factor**rank`` phases start equal.

    Aitken et al. 2017: the sub-pixel kernel is initialised as a convolution followed by
    nearest-neighbour resize, so that at initialisation the output is nearest-neighbour
    upsampling of one convolution's output, free of checkerboard. The base kernel
    ``(*k, C_in, C_out)`` is drawn from ``initializer`` and tiled along the output channels (the
    channel order of :func:`depth_to_space`: phase-major, so channel ``p * C_out + c`` holds base
    channel ``c``).

    Args:
        initializer: The base kernel's initializer (a Keras name or config), e.g. ``"he_normal"``.
        factor: Upsampling factor per axis.
        rank: Spatial axes (2 or 3).
    """

    def __init__(self, initializer: Any = "he_normal", factor: int = 2, rank: int = 3) -> None:
        self.initializer = initializer
        self.factor = positive_int("factor", factor)
        self.rank = int(rank)
        self._base = keras.initializers.get(initializer)

    def __call__(self, shape: Any, dtype: Any = None) -> Any:
        phases = self.factor**self.rank
        shape = tuple(int(d) for d in shape)
        if shape[-1] % phases:
            raise ConfigError(f"ICNR needs output channels divisible by {phases}, got {shape}")
        base = self._base((*shape[:-1], shape[-1] // phases), dtype=dtype)
        return ops.tile(base, (*([1] * (len(shape) - 1)), phases))

    def get_config(self) -> dict[str, Any]:
        initializer = self.initializer
        if not isinstance(initializer, str | dict):
            initializer = keras.initializers.serialize(initializer)
        return {"initializer": initializer, "factor": self.factor, "rank": self.rank}


@keras.saving.register_keras_serializable(package="xprospect")
class Upsample(keras.layers.Layer):
    """Learned upsampling by ``factor`` → normalisation → activation, three ways.

    The papers' decoders all upsample with a transposed convolution (``mode="transpose"``, the
    default, the same numerics as :class:`ConvNormAct` with ``transpose=True``). The other two
    modes are a deliberate deviation for checkerboard-free output (issue 17):

    - ``"resize_conv"``: nearest-neighbour resize, then a stride-1 convolution (Odena et al.
      2016, "Deconvolution and Checkerboard Artifacts": "resize the image (using nearest-neighbor
      interpolation or bilinear interpolation) and then do a convolutional layer"). It costs the
      convolution at the fine resolution.
    - ``"subpixel"``: a stride-1 convolution at the coarse resolution to ``filters *
      factor**rank`` channels, then :func:`depth_to_space`, the kernel :class:`ICNR`-initialised
      (Aitken et al. 2017, "Checkerboard artifact free sub-pixel convolution"): at
      initialisation its output equals nearest-neighbour upsampling of one convolution's output.

    The two resize modes convolve with an odd kernel (``kernel_size``, or ``kernel_size + 1``
    when it is even: a 2x2x2 transposed kernel becomes 3x3x3) so ``"same"`` padding is centred
    and the output is not shifted by half a voxel.

    Args:
        filters: Output channels.
        kernel_size: The transposed convolution's kernel; see above for the other modes.
        factor: Upsampling factor of every spatial axis.
        rank: 2 (``(B, H, W, ch)``) or 3 (``(B, D, H, W, ch)``).
        mode: ``"transpose"``, ``"resize_conv"`` or ``"subpixel"``.
        norm: ``"instance"``, ``"batch"`` or ``"none"``.
        activation: One of :data:`NORM_ACTIVATIONS`.
        leaky_alpha: Negative slope of ``"leaky_relu"``.
        use_bias: None: only without normalisation.
        **kwargs: ``keras.layers.Layer`` arguments.

    Returns:
        Called on ``(B, *spatial, ch)``: ``(B, *(factor * s for s in spatial), filters)``.
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int = 3,
        factor: int = 2,
        rank: int = 3,
        mode: str = "transpose",
        norm: str = "instance",
        activation: str = "relu",
        leaky_alpha: float = 0.2,
        use_bias: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if rank not in (2, 3):
            raise ConfigError(f"rank must be 2 or 3, got {rank!r}")
        self.filters = positive_int("filters", filters)
        self.kernel_size = positive_int("kernel_size", kernel_size)
        self.factor = positive_int("factor", factor)
        self.rank = int(rank)
        self.mode = check_upsampling(mode)
        self.norm = norm
        self.activation = activation
        self.leaky_alpha = float(leaky_alpha)
        self.use_bias = use_bias
        self._act = activation_fn(activation, self.leaky_alpha)
        bias = (norm == "none") if use_bias is None else bool(use_bias)
        init: Any = "lecun_normal" if activation == "selu" else "he_normal"
        odd = self.kernel_size | 1
        conv_args: dict[str, Any] = {"padding": "same", "use_bias": bias}
        if self.mode == "transpose":
            cls = keras.layers.Conv3DTranspose if self.rank == 3 else keras.layers.Conv2DTranspose
            conv_args.update(kernel_size=self.kernel_size, strides=self.factor)
            out = self.filters
        else:
            cls = keras.layers.Conv3D if self.rank == 3 else keras.layers.Conv2D
            conv_args.update(kernel_size=odd)
            out = self.filters
            if self.mode == "subpixel":
                out = self.filters * self.factor**self.rank
                init = ICNR(init, self.factor, self.rank)
        self.conv = cls(
            out, kernel_initializer=init, dtype=self.dtype_policy, name="conv", **conv_args
        )
        self.norm_layer = normalization(norm, "norm", self.dtype_policy)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        s = tuple(input_shape)
        spatial = tuple(None if d is None else int(d) * self.factor for d in s[1:-1])
        return (s[0], *spatial, self.filters)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        s = tuple(input_shape)
        conv_in = (
            tuple(None if d is None else int(d) * self.factor for d in s[1:-1])
            if self.mode == "resize_conv"
            else s[1:-1]
        )
        self.conv.build((s[0], *conv_in, s[-1]))
        if self.norm_layer is not None:
            self.norm_layer.build(self.compute_output_shape(s))
        self.built = True

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        if self.mode == "resize_conv":
            x = self.conv(nearest_upsample(inputs, self.factor, self.rank))
        elif self.mode == "subpixel":
            x = depth_to_space(self.conv(inputs), self.factor, self.rank)
        else:
            x = self.conv(inputs)
        if self.norm_layer is not None:
            x = self.norm_layer(x, training=training)
        return self._act(x)

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            factor=self.factor,
            rank=self.rank,
            mode=self.mode,
            norm=self.norm,
            activation=self.activation,
            leaky_alpha=self.leaky_alpha,
            use_bias=self.use_bias,
        )
        return config


def upsample_unit(
    mode: str,
    filters: int,
    kernel_size: int = 3,
    factor: int = 2,
    *,
    rank: int = 3,
    norm: str = "instance",
    activation: str = "relu",
    dtype: Any = None,
    name: str | None = None,
) -> keras.layers.Layer:
    """A decoder's learned upsampling: the families' one entry point for issue 17's option.

    ``mode="transpose"`` returns the :class:`ConvNormAct` (``transpose=True``) the families have
    always built, so a model saved before the option existed keeps its layer classes, names and
    weights layout and loads unchanged; the other modes return an :class:`Upsample`.

    Args:
        mode: One of :data:`UPSAMPLING_MODES`.
        filters, kernel_size, factor, rank, norm, activation: As :class:`Upsample`.
        dtype: Dtype policy.
        name: Layer name.

    Returns:
        An unbuilt layer mapping ``(B, *spatial, ch)`` to ``(B, *(factor * spatial), filters)``.
    """
    if check_upsampling(mode) == "transpose":
        return ConvNormAct(
            filters,
            kernel_size,
            strides=factor,
            rank=rank,
            norm=norm,
            activation=activation,
            transpose=True,
            dtype=dtype,
            name=name,
        )
    return Upsample(
        filters,
        kernel_size,
        factor,
        rank,
        mode,
        norm=norm,
        activation=activation,
        dtype=dtype,
        name=name,
    )
