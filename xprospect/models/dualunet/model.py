"""The XprospeCT DualUNet: biplanar (or frontal-only) chest X-rays to a canonical CT volume.

:class:`DualUNet` is a ``keras.Model`` subclass built functionally in its constructor, the way
keras-hub's ``Backbone`` classes are: ``DualUNet(size=64, ...)`` is a ready functional model whose
``get_config`` holds the constructor arguments, so ``.keras`` files rebuild it from them.

**Inputs and output.** ``{"frontal": (B, S, S, 1), "lateral": (B, S, S, 1)}`` float X-rays in
[0, 1] in display layout (only ``"frontal"`` in single-view mode) →  ``(B, S, S, S, 1)`` float32 in
[0, 1] (a sigmoid; the targets are window-normalised), in the canonical orientation of
``docs/conventions.md`` (axis 0 head → feet, axis 1 anterior → posterior, axis 2 patient's right →
left).

**Frames.** Frontal image = (rows = axis 0, columns = axis 2), beam along axis 1; lateral image =
(rows = axis 0, columns = axis 1), beam along axis 2. Each view's 3D decoder works in its *view
frame* (rows, columns, depth) where depth is the view's beam axis: the frontal view frame is
(axis 0, axis 2, axis 1), the lateral one (axis 0, axis 1, axis 2). The *canonical* frame is the
fusion network's: Connection C swaps the frontal features' last two spatial axes and leaves the
lateral ones as they are (:func:`xprospect.models.blocks.view_to_canonical`), then averages.

**Network** (``L = log2(S / g)`` decoder levels above the grid ``g``; level ``l`` has resolution
``S / 2**l`` and ``min(base_filters * 2**l, max_filters)`` filters)::

    per view v:  X-ray ─ 2D encoder (ConvBlock, max-pool) x depth ─ apex ConvBlock
                 apex ─ Connection A (Dense(dense_units) → g^3 grid) ─┐
                 encoder features at each resolution ─ Connection B ─┤ 3D decoder (view frame):
                                                                     └ upsample, concat, ConvBlock
    fusion:      Connection C (decoders at each scale, canonical, averaged)
                 [+ back-projected X-rays, average-pooled to the scale]   ("ProjInj")
                 coarsest: ConvBlock; then Connection D at every finer scale
    head:        Conv3D(1, 1x1x1, sigmoid, dtype float32)

The encoders use SELU with LeCun-normal initialisation (self-normalising; optional AlphaDropout)
or ReLU with He-normal initialisation (optional Dropout).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras

from xprospect.constants import DEFAULT_FOV_MM, VIEWS
from xprospect.errors import ConfigError
from xprospect.models.args import (
    check_upsampling,
    check_views,
    network_config,
    power_of_two,
    resolve_policy,
)
from xprospect.models.blocks import ConnectionC
from xprospect.models.dualunet.layers import (
    ACTIVATIONS,
    BackProjection,
    ConnectionA,
    ConnectionB,
    ConnectionD,
    ConvBlock,
    upsample_layer,
)
from xprospect.projection.geometry import GEOMETRY_PRESETS

__all__ = ["DualUNet"]


@keras.saving.register_keras_serializable(package="xprospect")
class DualUNet(keras.Model):
    """Per-view 2D UNet encoders and 3D decoders fused into one volume (XprospeCT).

    Args:
        size: Edge of the square X-rays and of the output cube (a power of two, >= 2 * grid).
        views: ``("frontal", "lateral")`` (biplanar) or ``("frontal",)`` (single view); one
            input of that name each.
        base_filters: Filters at full resolution; doubled at every coarser level.
        max_filters: Cap on the filters of any level.
        dense_units: Width of Connection A's dense bottleneck (64 or 512 in the paper).
        grid_size: Edge of the 3D grid the bottleneck is reshaped into; None: the cube root of
            ``dense_units`` (64 → 4, 512 → 8).
        depth: Max-pools in each 2D encoder; None: down to the grid (``log2(size / grid)``).
        num_convs: Convolutions per block.
        activation: ``"selu"`` or ``"relu"``.
        dropout: Dropout rate after every block and the bottleneck (AlphaDropout with SELU).
        back_projection: Inject the X-rays' back-projections into the fusion network at every
            scale (average-pooled, concatenated after Connection C): the paper's "ProjInj".
        geometry: Geometry of the back-projection (``"x2ct"``, ``"xprospect_mean"``,
            ``"parallel"``); only used with ``back_projection``.
        spacing_mm: Voxel size of the output cube, mm; None: ``320 / size``.
        upsampling: The decoders' and Connection D's x2 upsampling: ``"transpose"`` (the paper's
            ``Conv3DTranspose(2x2x2, stride 2)``), or, a deliberate deviation for
            checkerboard-free output (issue 17), ``"resize_conv"`` (nearest-neighbour resize +
            3x3x3 convolution; Odena et al. 2016, "Deconvolution and Checkerboard Artifacts") or
            ``"subpixel"`` (3x3x3 convolution + depth-to-space, ICNR-initialised; Aitken et al.
            2017, "Checkerboard artifact free sub-pixel convolution"). See
            :class:`xprospect.models.blocks.Upsample`.
        dtype: Dtype policy of every layer (e.g. ``"mixed_bfloat16"``); None: the global policy.
            The back-projection and the output layer always compute in float32.
        **kwargs: ``keras.Model`` arguments (``name``, ``trainable``).

    Returns:
        Called on the input dict: ``(B, size, size, size, 1)`` float32 in [0, 1], canonical.

    Attributes:
        connection_a, connection_b, connection_c, connection_d: The connection layer classes. A
            variant subclasses :class:`DualUNet` and replaces one with a layer of the same call
            signature and input/output shapes (see :mod:`xprospect.models.dualunet.layers`); the
            rest of the network is unchanged. Register the subclass like this one.
    """

    connection_a: type[keras.layers.Layer] = ConnectionA
    connection_b: type[keras.layers.Layer] = ConnectionB
    connection_c: type[keras.layers.Layer] = ConnectionC
    connection_d: type[keras.layers.Layer] = ConnectionD

    def __init__(
        self,
        size: int = 64,
        views: Sequence[str] = VIEWS,
        base_filters: int = 16,
        max_filters: int = 256,
        dense_units: int = 512,
        grid_size: int | None = None,
        depth: int | None = None,
        num_convs: int = 2,
        activation: str = "selu",
        dropout: float = 0.0,
        back_projection: bool = False,
        geometry: str = "x2ct",
        spacing_mm: float | None = None,
        upsampling: str = "transpose",
        dtype: Any = None,
        **kwargs: Any,
    ) -> None:
        views = tuple(views)
        check_upsampling(upsampling)
        # One policy for every layer (keras-hub style), so a model saved under mixed precision
        # loads with it; the back-projection and the head stay float32.
        policy = resolve_policy(dtype)
        grid = self._check(
            size,
            views,
            base_filters,
            max_filters,
            dense_units,
            grid_size,
            depth,
            num_convs,
            activation,
            dropout,
            geometry,
            spacing_mm,
        )
        n_down = depth if depth is not None else int(math.log2(size // grid))
        spacing = float(spacing_mm) if spacing_mm is not None else DEFAULT_FOV_MM / size

        def filters_at(resolution: int) -> int:
            level = int(math.log2(size // resolution)) if resolution <= size else 0
            return int(min(base_filters * 2**level, max_filters))

        block: dict[str, Any] = {
            "num_convs": num_convs,
            "activation": activation,
            "dropout": dropout,
            "dtype": policy,
        }
        scales = [grid * 2**k for k in range(int(math.log2(size // grid)) + 1)]  # coarse → fine

        # === Inputs ===
        inputs = {v: keras.Input((size, size, 1), name=v) for v in views}

        # === Per-view encoders and decoders (view frames) ===
        decoded: dict[str, dict[int, Any]] = {}
        for v in views:
            x = inputs[v]
            skips: dict[int, Any] = {}
            res = size
            for _ in range(n_down):
                x = ConvBlock(filters_at(res), rank=2, **block, name=f"{v}_enc{res}")(x)
                skips[res] = x
                x = keras.layers.MaxPooling2D(2, dtype=policy, name=f"{v}_pool{res}")(x)
                res //= 2
            x = ConvBlock(filters_at(res), rank=2, **block, name=f"{v}_apex{res}")(x)
            skips[res] = x
            d = self.connection_a(
                dense_units,
                grid,
                filters_at(grid),
                activation,
                dropout,
                dtype=policy,
                name=f"{v}_connA",
            )(x)
            decoded[v] = {}
            for r in scales:
                f = filters_at(r)
                if r > grid:
                    d = upsample_layer(upsampling, f, activation, policy, f"{v}_up{r}")(d)
                if r in skips:
                    lifted = self.connection_b(
                        f, r, activation=activation, dtype=policy, name=f"{v}_connB{r}"
                    )(skips[r])
                    d = keras.layers.Concatenate(dtype=policy, name=f"{v}_skip{r}")([d, lifted])
                if r > grid or r in skips:
                    d = ConvBlock(f, rank=3, **block, name=f"{v}_dec{r}")(d)
                decoded[v][r] = d

        # === Back-projection injection ===
        injected: Any = None
        if back_projection:
            bps = [
                BackProjection(
                    geometry,
                    v,
                    size,
                    spacing,
                    normalize=True,
                    dtype="float32",
                    name=f"{v}_backproj",
                )(inputs[v])
                for v in views
            ]
            injected = (
                bps[0]
                if len(bps) == 1
                else keras.layers.Concatenate(dtype=policy, name="backproj")(bps)
            )

        # === Fusion (canonical frame) ===
        fused: Any = None
        for r in scales:
            feats = [decoded[v][r] for v in views]
            c = self.connection_c(views, dtype=policy, name=f"fusion_connC{r}")(
                feats if len(feats) > 1 else feats[0]
            )
            extra = []
            if injected is not None:
                bp = injected
                if r < size:
                    bp = keras.layers.AveragePooling3D(
                        size // r, dtype=policy, name=f"backproj_pool{r}"
                    )(bp)
                extra.append(bp)
            if fused is None:
                if extra:
                    c = keras.layers.Concatenate(dtype=policy, name=f"fusion_inject{r}")(
                        [c, *extra]
                    )
                fused = ConvBlock(filters_at(r), rank=3, **block, name=f"fusion{r}")(c)
            else:
                # Injected channels join C inside D's one concatenation (no extra copy of C).
                # Passed only when not the default, so a variant's Connection D without the
                # argument still fits.
                up = {} if upsampling == "transpose" else {"upsampling": upsampling}
                fused = self.connection_d(filters_at(r), **block, **up, name=f"fusion_connD{r}")(
                    [c, fused, *extra]
                )

        # === Head ===
        volume = keras.layers.Conv3D(1, 1, activation="sigmoid", dtype="float32", name="volume")(
            fused
        )

        super().__init__(inputs=inputs, outputs=volume, **kwargs)

        # === Config ===
        self.size = size
        self.views = views
        self.base_filters = base_filters
        self.max_filters = max_filters
        self.dense_units = dense_units
        self.grid_size = grid_size
        self.depth = depth
        self.num_convs = num_convs
        self.activation = activation
        self.dropout = dropout
        self.back_projection = back_projection
        self.geometry = geometry
        self.spacing_mm = spacing_mm
        self.upsampling = upsampling
        self._policy_name = policy.name

    @staticmethod
    def _check(
        size: int,
        views: tuple[str, ...],
        base_filters: int,
        max_filters: int,
        dense_units: int,
        grid_size: int | None,
        depth: int | None,
        num_convs: int,
        activation: str,
        dropout: float,
        geometry: str,
        spacing_mm: float | None,
    ) -> int:
        """Validates the arguments; returns the grid size."""
        check_views(views, need_frontal=True)
        if activation not in ACTIVATIONS:
            raise ConfigError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        for name, val in (("base_filters", base_filters), ("max_filters", max_filters)):
            if not isinstance(val, int) or val < 1:
                raise ConfigError(f"{name} must be a positive integer, got {val!r}")
        if not isinstance(num_convs, int) or num_convs < 1:
            raise ConfigError(f"num_convs must be a positive integer, got {num_convs!r}")
        if not isinstance(dense_units, int) or dense_units < 1:
            raise ConfigError(f"dense_units must be a positive integer, got {dense_units!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout!r}")
        grid = grid_size if grid_size is not None else round(dense_units ** (1.0 / 3.0))
        if not power_of_two(grid) or dense_units % grid**3:
            raise ConfigError(
                f"grid_size {grid} must be a power of two whose cube divides dense_units "
                f"({dense_units}); pass grid_size"
            )
        if not isinstance(size, int) or not power_of_two(size) or size < 2 * grid:
            raise ConfigError(f"size must be a power of two >= {2 * grid}, got {size!r}")
        if depth is not None and (not isinstance(depth, int) or depth < 1 or size >> depth < 1):
            raise ConfigError(f"depth must be an integer in [1, log2(size)], got {depth!r}")
        if geometry.strip().lower() not in (*GEOMETRY_PRESETS, "mean"):
            raise ConfigError(f"unknown geometry {geometry!r}; expected one of {GEOMETRY_PRESETS}")
        if spacing_mm is not None and not (math.isfinite(spacing_mm) and spacing_mm > 0):
            raise ConfigError(f"spacing_mm must be positive, got {spacing_mm!r}")
        return int(grid)

    def get_config(self) -> dict[str, Any]:
        return {
            **network_config(self),
            "size": self.size,
            "views": list(self.views),
            "base_filters": self.base_filters,
            "max_filters": self.max_filters,
            "dense_units": self.dense_units,
            "grid_size": self.grid_size,
            "depth": self.depth,
            "num_convs": self.num_convs,
            "activation": self.activation,
            "dropout": self.dropout,
            "back_projection": self.back_projection,
            "geometry": self.geometry,
            "spacing_mm": self.spacing_mm,
            "upsampling": self.upsampling,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DualUNet:
        return cls(**config)
