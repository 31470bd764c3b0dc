"""Tests of the checkerboard-free upsampling option (issue 17): ``xprospect.models.blocks``'s
:func:`depth_to_space`, :class:`ICNR`, :class:`Upsample` and :func:`upsample_unit`, and every
family's ``upsampling`` argument.

References are independent of the code under test: a NumPy loop for depth-to-space (and
TensorFlow's ``tf.nn.depth_to_space`` in 2D), ``np.repeat`` of a plain :class:`ConvNormAct` with
the same kernel for ICNR (Aitken et al. 2017: sub-pixel convolution = convolution followed by
nearest-neighbour resize at initialisation), and, for the checkerboard measure, the closed form of
a 2x2x2 stride-2 transposed convolution of a constant input (each output phase is one kernel tap
summed over the input channels). Sizes are tiny.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import backend_cases
import keras
import numpy as np
import pytest
import tensorflow as tf
from keras_contract import check_layer, check_model
from numpy.testing import assert_allclose

from xprospect.errors import ConfigError
from xprospect.models import build_model
from xprospect.models.blocks import (
    ICNR,
    UPSAMPLING_MODES,
    ConvNormAct,
    Upsample,
    depth_to_space,
    upsample_unit,
)
from xprospect.models.cyclegan import ResnetGenerator, build_style_generator

RNG = np.random.default_rng(0)


def _rand(*shape: int) -> np.ndarray:
    return RNG.random(shape, dtype=np.float32)


# === Depth-to-space ===


def _depth_to_space_loop(x: np.ndarray, factor: int, rank: int) -> np.ndarray:
    """Voxel by voxel: channel ``phase * C + c`` of input voxel ``i`` -> output voxel
    ``i * factor + offset`` (``phase`` the offsets' row-major index), channel ``c``."""
    b, *spatial, cf = x.shape
    c = cf // factor**rank
    out = np.zeros((b, *(s * factor for s in spatial), c), x.dtype)
    for idx in itertools.product(*(range(s) for s in spatial)):
        for phase, offset in enumerate(itertools.product(range(factor), repeat=rank)):
            target = tuple(i * factor + o for i, o in zip(idx, offset, strict=True))
            out[(slice(None), *target)] = x[(slice(None), *idx, slice(phase * c, (phase + 1) * c))]
    return out


@pytest.mark.parametrize(("rank", "factor"), [(2, 2), (2, 3), (3, 2)])
def test_depth_to_space_matches_a_numpy_loop(rank: int, factor: int) -> None:
    x = _rand(2, *([3] * rank), 2 * factor**rank)
    got = keras.ops.convert_to_numpy(depth_to_space(x, factor, rank))
    assert_allclose(got, _depth_to_space_loop(x, factor, rank), rtol=0, atol=0)


def test_depth_to_space_2d_is_tensorflows() -> None:
    x = _rand(2, 3, 5, 12)
    got = keras.ops.convert_to_numpy(depth_to_space(x, 2, 2))
    assert_allclose(got, tf.nn.depth_to_space(x, 2).numpy(), rtol=0, atol=0)


# === ICNR: sub-pixel = nearest-neighbour upsampling of one convolution at initialisation ===


def _nearest(x: np.ndarray, factor: int, rank: int) -> np.ndarray:
    for axis in range(1, rank + 1):
        x = np.repeat(x, factor, axis=axis)
    return x


def test_icnr_tiles_one_kernel_over_the_phases() -> None:
    kernel = keras.ops.convert_to_numpy(ICNR("he_normal", 2, 3)((3, 3, 3, 4, 5 * 8)))
    phases = kernel.reshape(3, 3, 3, 4, 8, 5)
    for p in range(1, 8):
        assert_allclose(phases[..., p, :], phases[..., 0, :], rtol=0, atol=0)
    assert np.std(kernel) > 0.1  # drawn, not zero
    with pytest.raises(ConfigError, match="divisible by 8"):
        ICNR("he_normal", 2, 3)((3, 3, 3, 4, 12))


@pytest.mark.parametrize(
    ("rank", "norm", "activation"), [(3, "instance", "relu"), (2, "none", "selu")]
)
def test_subpixel_at_init_is_nearest_upsampling_of_one_convolution(
    rank: int, norm: str, activation: str
) -> None:
    keras.utils.set_random_seed(1)
    x = _rand(2, *([4] * rank), 3)
    layer = Upsample(5, 3, 2, rank, "subpixel", norm=norm, activation=activation)
    got = keras.ops.convert_to_numpy(layer(x))
    # The same convolution (the first phase's kernel) as a plain stride-1 unit, then np.repeat.
    plain = ConvNormAct(5, 3, rank=rank, norm=norm, activation=activation)
    plain.build(x.shape)
    weights = [w.numpy() if hasattr(w, "numpy") else np.asarray(w) for w in layer.conv.weights]
    weights[0] = weights[0][..., :5]
    if len(weights) > 1:
        weights[1] = weights[1][:5]
    plain.conv.set_weights(weights)
    expected = _nearest(keras.ops.convert_to_numpy(plain(x)), 2, rank)
    assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert np.std(got) > 1e-3


# === Checkerboard measure ===


def nyquist_fraction(y: np.ndarray, axis: int) -> float:
    """The fraction of ``y``'s energy at the Nyquist frequency (period 2) along ``axis``:
    ``sum |FFT(y)[N/2]|^2 / (N * sum y^2)`` (Parseval: 1 for a pure +-1 alternation, 0 for a
    signal with no period-2 component)."""
    n = y.shape[axis]
    assert n % 2 == 0
    spectrum = np.fft.fft(y.astype(np.float64), axis=axis)
    nyquist = np.take(spectrum, n // 2, axis=axis)
    return float(np.sum(np.abs(nyquist) ** 2) / (n * np.sum(y.astype(np.float64) ** 2)))


def _linear_unit(mode: str, kernel_size: int) -> Upsample:
    return Upsample(4, kernel_size, 2, 3, mode, norm="none", activation="linear")


@pytest.mark.parametrize("mode", ["resize_conv", "subpixel"])
def test_resize_modes_have_no_checkerboard_at_init(mode: str) -> None:
    keras.utils.set_random_seed(2)
    x = np.ones((1, 6, 6, 6, 3), np.float32)
    y = keras.ops.convert_to_numpy(_linear_unit(mode, 2)(x))
    # Crop the border the zero padding touches: a constant input gives a constant interior.
    y = y[:, 2:-2, 2:-2, 2:-2, :]
    assert np.abs(y).max() > 1e-3
    for axis in (1, 2, 3):
        assert_allclose(nyquist_fraction(y, axis), 0.0, atol=1e-10)


def test_subpixel_smooth_input_has_no_checkerboard_anywhere_at_init() -> None:
    keras.utils.set_random_seed(3)
    grid = np.linspace(0.0, 1.0, 6, dtype=np.float32)
    smooth = np.sin(grid[:, None, None] + 2 * grid[None, :, None] + 3 * grid[None, None, :])
    x = np.repeat(smooth[None, ..., None], 3, axis=-1)
    y = keras.ops.convert_to_numpy(_linear_unit("subpixel", 3)(x))
    for axis in (1, 2, 3):  # pairs of equal voxels: exactly no period-2 energy, border included
        assert_allclose(nyquist_fraction(y, axis), 0.0, atol=1e-10)


def test_transposed_convolution_prints_the_analytic_checkerboard() -> None:
    keras.utils.set_random_seed(4)
    x = np.ones((1, 6, 6, 6, 3), np.float32)
    layer = _linear_unit("transpose", 2)
    y = keras.ops.convert_to_numpy(layer(x))
    # Keras' transposed kernel is (k, k, k, out, in); bias is zero at init. Output phase (a, b, c)
    # of channel f is S[a, b, c, f] = sum over the input channels of the kernel tap (a, b, c):
    # along axis 0 every line alternates S[0, ...], S[1, ...], so the Nyquist fraction is
    # sum (S0 - S1)^2 / (2 sum (S0^2 + S1^2)), and likewise along the other axes.
    s = keras.ops.convert_to_numpy(layer.conv.kernel).astype(np.float64).sum(axis=-1)
    for axis in range(3):
        s0, s1 = np.take(s, 0, axis=axis), np.take(s, 1, axis=axis)
        expected = np.sum((s0 - s1) ** 2) / (2 * np.sum(s0**2 + s1**2))
        assert expected > 0.05
        assert_allclose(nyquist_fraction(y, axis + 1), expected, rtol=1e-5)


def test_stride_2_kernel_3_transposed_convolution_has_a_checkerboard() -> None:
    keras.utils.set_random_seed(5)
    y = keras.ops.convert_to_numpy(_linear_unit("transpose", 3)(np.ones((1, 6, 6, 6, 3), "f4")))
    y = y[:, 2:-2, 2:-2, 2:-2, :]  # uneven overlap, not the border, makes this one
    assert min(nyquist_fraction(y, axis) for axis in (1, 2, 3)) > 0.01


# === The layer ===


@pytest.mark.parametrize("mode", UPSAMPLING_MODES)
def test_upsample_contract(mode: str, tmp_path: Path) -> None:
    kwargs: dict[str, Any] = {"filters": 3, "kernel_size": 2, "factor": 2, "rank": 3, "mode": mode}
    layer = Upsample(**kwargs, norm="instance", activation="leaky_relu")
    check_layer(layer, kwargs, _rand(2, 4, 4, 4, 2), tmp_path)


def test_transpose_mode_is_conv_norm_act_transposed() -> None:
    x = _rand(2, 4, 4, 4, 2)
    unit = upsample_unit("transpose", 3, 3, name="up")
    assert isinstance(unit, ConvNormAct) and unit.transpose and unit.strides == 2
    layer = Upsample(3, 3, 2, 3, "transpose")
    layer.build(x.shape)
    unit.build(x.shape)
    layer.conv.set_weights(unit.conv.get_weights())
    assert_allclose(keras.ops.convert_to_numpy(layer(x)), keras.ops.convert_to_numpy(unit(x)))
    assert isinstance(upsample_unit("subpixel", 3, 3), Upsample)


def test_bad_mode_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="upsampling must be one of"):
        Upsample(3, mode="bilinear")
    with pytest.raises(ConfigError, match="upsampling must be one of"):
        build_model("64-Dense", size=16, upsampling="deconv", **backend_cases.TINY["dualunet"])


# === The families ===

FAMILY_PRESETS = {
    "dualunet": "512-Dense",
    "x2ct": "X2CT-GAN",
    "cvaa": "CVAA-GAN",
    "duolift": "DuoLift-GAN",
    "sxr2ct": "S-XR2CT",
}


def _forward_backward(model: keras.Model) -> Any:
    x = backend_cases.inputs_of(model)
    with tf.GradientTape() as tape:
        y = model(x, training=True)
        loss = tf.reduce_mean(tf.square(y - 0.5))
    grads = tape.gradient(loss, model.trainable_variables)
    assert all(g is not None for g in grads)
    # tf.convert_to_tensor: an attention bias gathered by index gets IndexedSlices.
    assert all(np.isfinite(tf.convert_to_tensor(g).numpy()).all() for g in grads)
    return keras.ops.convert_to_numpy(y)


@pytest.mark.parametrize("family", list(FAMILY_PRESETS))
def test_every_family_builds_and_trains_with_each_mode(family: str) -> None:
    preset = FAMILY_PRESETS[family]
    counts = {}
    for mode in UPSAMPLING_MODES:
        keras.utils.set_random_seed(0)
        model = build_model(preset, size=16, upsampling=mode, **backend_cases.TINY[family])
        assert model.get_config()["upsampling"] == mode
        y = _forward_backward(model)
        assert y.shape[1:] == (16, 16, 16, 1)
        counts[mode] = model.count_params()
        if mode == "transpose":  # the default, unchanged: the same network as without the flag
            default = build_model(preset, size=16, **backend_cases.TINY[family])
            assert default.count_params() == counts[mode]
            assert [w.shape for w in default.weights] == [w.shape for w in model.weights]
    print(f"{preset} parameters at 16^3 (tiny widths): {counts}")
    # Sub-pixel convolves to 8x the channels: always the most weights.
    assert counts["subpixel"] > max(counts["transpose"], counts["resize_conv"])


def _upsampling_kernels(model: keras.Model) -> list[tuple[int, ...]]:
    """The DualUNet's transposed kernels ``(2, 2, 2, out, in)``, the nested ones included."""
    shapes = []
    for layer in model.layers:
        conv = getattr(layer, "upsample", layer)
        if isinstance(conv, keras.layers.Conv3DTranspose):
            shapes.append(tuple(conv.kernel.shape))
    return shapes


def test_dualunet_parameter_counts_are_the_analytic_ones() -> None:
    tiny = backend_cases.TINY["dualunet"]
    models = {m: build_model("512-Dense", size=16, upsampling=m, **tiny) for m in UPSAMPLING_MODES}
    kernels = _upsampling_kernels(models["transpose"])
    assert len(kernels) == 3  # two views' decoders and Connection D, 8^3 -> 16^3
    # Per layer: transposed 2^3 * in * out + out; resize 3^3 * in * out + out; sub-pixel
    # 3^3 * in * 8 out + 8 out (every layer has a bias: the DualUNet does not normalise here).
    resize = sum((27 - 8) * k[4] * k[3] for k in kernels)
    subpixel = sum(27 * k[4] * 8 * k[3] + 8 * k[3] - (8 * k[4] * k[3] + k[3]) for k in kernels)
    base = models["transpose"].count_params()
    assert models["resize_conv"].count_params() - base == resize
    assert models["subpixel"].count_params() - base == subpixel


@pytest.mark.parametrize("mode", ["resize_conv", "subpixel"])
def test_family_round_trips_with_a_new_mode(mode: str, tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    model = build_model("64-Dense", size=16, upsampling=mode, **backend_cases.TINY["dualunet"])
    check_model(model, backend_cases.inputs_of(model), tmp_path, savedmodel=mode == "subpixel")


# === The style CycleGAN generator (2D) ===


@pytest.mark.parametrize("mode", UPSAMPLING_MODES)
def test_style_generator_with_each_mode(mode: str, tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    g = build_style_generator(16, filters=2, n_blocks=1, upsampling=mode)
    assert isinstance(g, ResnetGenerator) and g.upsampling == mode
    x = _rand(2, 16, 16, 1)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(g(x, training=True))
    assert all(v is not None for v in tape.gradient(loss, g.trainable_variables))
    if mode == "subpixel":
        check_model(g, x, tmp_path)
