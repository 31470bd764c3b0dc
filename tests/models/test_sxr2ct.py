"""Tests of the S-XR2CT generator (xprospect.models.sxr2ct) and the perceptual loss.

Models are built at 32^3 with widths of 2-8 channels and one ConvNeXt block per stage, so the
module runs in well under a minute on two cores. Numerics are checked against NumPy references
written independently of the layers (explicit loops instead of reshapes where possible).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from keras_contract import check_layer, check_loss, check_model, check_registration

from xprospect.errors import ConfigError
from xprospect.models.blocks import ExpandXrays
from xprospect.models.sxr2ct import (
    ConvNeXtBlock,
    LikelihoodImage,
    SXR2CTGenerator,
    TemplateVolume,
    WindowAttention3D,
    relative_position_index,
    window_partition,
    window_reverse,
)
from xprospect.perceptual import (
    PerceptualLoss,
    perceptual_per_example,
    slice_volume,
    vgg16_features,
)

SIZE = 32
TINY: dict[str, Any] = {
    "base_filters": 2,
    "base_filters_2d": 4,
    "max_filters": 8,
    "depths": (1, 1, 1),
    "num_heads": 2,
    "attention_blocks": 1,
}


def _xray(batch: int = 2, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"frontal": rng.random((batch, SIZE, SIZE, 1), dtype=np.float32)}


def _np(x: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x))


@pytest.fixture(scope="module")
def tiny_model() -> SXR2CTGenerator:
    keras.utils.set_random_seed(0)
    return SXR2CTGenerator(size=SIZE, **TINY)


# === NumPy references ===


def _layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * gamma + beta


def _gelu(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _window_block_reference(layer: WindowAttention3D, x: np.ndarray) -> np.ndarray:
    """The layer's transformer block, window by window with explicit slicing; with a shift,
    Swin's SW-MSA: roll, attend only to voxels that were neighbours before the roll, roll back."""
    w, heads, hd, c = layer.window_size, layer.num_heads, layer.head_dim, layer.filters
    sh = layer.shift_size
    g = {v.path.split("/")[-2] + "/" + v.name: _np(v) for v in layer.weights}
    table = _np(layer.bias_table) if layer.relative_position_bias else None
    h = _layer_norm(x, g["norm1/gamma"], g["norm1/beta"], layer.epsilon)
    h = np.roll(h, (-sh, -sh, -sh), axis=(1, 2, 3))
    attn = np.zeros_like(x)
    b_, d_, h_, w_ = x.shape[:4]

    def region(coord: int, n: int) -> int:
        # Rolled coordinate → which of the three strips it came from (Swin's img_mask slices).
        return 0 if coord < n - w else (1 if coord < n - sh else 2)

    coords = [(a, b, cc) for a in range(w) for b in range(w) for cc in range(w)]
    for b in range(b_):
        for z0 in range(0, d_, w):
            for y0 in range(0, h_, w):
                for x0 in range(0, w_, w):
                    tok = h[b, z0 : z0 + w, y0 : y0 + w, x0 : x0 + w].reshape(-1, c)
                    qkv = tok @ g["qkv/kernel"] + g["qkv/bias"]
                    out = np.zeros((w**3, c))
                    for m in range(heads):
                        q = qkv[:, m * hd : (m + 1) * hd]
                        k = qkv[:, c + m * hd : c + (m + 1) * hd]
                        v = qkv[:, 2 * c + m * hd : 2 * c + (m + 1) * hd]
                        logits = q @ k.T / math.sqrt(hd)
                        if table is not None:
                            span = 2 * w - 1
                            for i, ci in enumerate(coords):
                                for j, cj in enumerate(coords):
                                    r = [ci[a] - cj[a] + w - 1 for a in range(3)]
                                    logits[i, j] += table[
                                        r[0] * span * span + r[1] * span + r[2], m
                                    ]
                        if sh:
                            for i, ci in enumerate(coords):
                                for j, cj in enumerate(coords):
                                    pi = (z0 + ci[0], y0 + ci[1], x0 + ci[2])
                                    pj = (z0 + cj[0], y0 + cj[1], x0 + cj[2])
                                    dims = (d_, h_, w_)
                                    if any(
                                        region(pi[a], dims[a]) != region(pj[a], dims[a])
                                        for a in range(3)
                                    ):
                                        logits[i, j] = -np.inf
                        out[:, m * hd : (m + 1) * hd] = _softmax(logits) @ v
                    out = out @ g["proj/kernel"] + g["proj/bias"]
                    attn[b, z0 : z0 + w, y0 : y0 + w, x0 : x0 + w] = out.reshape(w, w, w, c)
    y = x + np.roll(attn, (sh, sh, sh), axis=(1, 2, 3))
    mlp = _layer_norm(y, g["norm2/gamma"], g["norm2/beta"], layer.epsilon)
    mlp = _gelu(mlp @ g["mlp1/kernel"] + g["mlp1/bias"]) @ g["mlp2/kernel"] + g["mlp2/bias"]
    return y + mlp


# === Likelihood image ===


def test_likelihood_image_matches_the_formula() -> None:
    rng = np.random.default_rng(3)
    x = rng.random((3, 16, 12, 1), dtype=np.float32)
    x[1] = 0.3 * x[1] + 0.6  # another mean and spread
    x[2] = 0.25  # flat: sigma = 0, only epsilon keeps it finite
    eps = 1e-3
    out = _np(LikelihoodImage(epsilon=eps)(x))
    ref = np.empty_like(x, dtype=np.float64)
    for b in range(3):
        img = x[b].astype(np.float64)
        mu, sigma = img.mean(), img.std() + eps
        ref[b] = np.log(np.sqrt(2 * np.pi * sigma**2)) + (img - mu) ** 2 / (2 * sigma**2)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[2], np.log(eps) + 0.5 * np.log(2 * np.pi), rtol=1e-5)
    with pytest.raises(ConfigError, match="epsilon"):
        LikelihoodImage(epsilon=0.0)


# === Window attention ===


def test_window_partition_matches_numpy_and_reverses() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((2, 4, 8, 6, 3), dtype=np.float32)
    w = 2
    windows = _np(window_partition(x, w))
    expected = [
        x[b, z : z + w, y : y + w, c : c + w].reshape(-1, 3)
        for b in range(2)
        for z in range(0, 4, w)
        for y in range(0, 8, w)
        for c in range(0, 6, w)
    ]
    np.testing.assert_array_equal(windows, np.stack(expected))
    np.testing.assert_array_equal(_np(window_reverse(windows, w, (4, 8, 6))), x)


def test_relative_position_index() -> None:
    w = 3
    index = relative_position_index(w)
    span = 2 * w - 1
    centre = (w - 1) * (span * span + span + 1)  # offset (0, 0, 0)
    assert index.shape == (w**3, w**3)
    assert (np.diag(index) == centre).all()
    np.testing.assert_array_equal(index + index.T, 2 * centre)  # -offset mirrors offset
    assert index.min() == 0 and index.max() == span**3 - 1
    # Voxel 0 is (0, 0, 0), voxel 1 is (0, 0, 1): offset (0, 0, -1).
    assert index[0, 1] == centre - 1


@pytest.mark.parametrize("bias", [True, False], ids=["rel-bias", "no-bias"])
def test_window_attention_matches_numpy(bias: bool) -> None:
    keras.utils.set_random_seed(2)
    layer = WindowAttention3D(8, num_heads=2, window_size=2, relative_position_bias=bias)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 4, 4, 2, 8)).astype(np.float32)
    layer.build(x.shape)
    for v in layer.weights:  # away from the zero / one initialisations
        v.assign(rng.normal(scale=0.5, size=v.shape).astype(np.float32))
    np.testing.assert_allclose(
        _np(layer(x)), _window_block_reference(layer, x), rtol=1e-4, atol=1e-4
    )


def test_shifted_window_attention_matches_numpy() -> None:
    # Swin UNETR's blocks alternate W-MSA and SW-MSA (windows shifted by half their edge).
    keras.utils.set_random_seed(3)
    layer = WindowAttention3D(4, num_heads=2, window_size=2, shift_size=1)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(1, 4, 4, 4, 4)).astype(np.float32)
    layer.build(x.shape)
    for v in layer.weights:
        v.assign(rng.normal(scale=0.5, size=v.shape).astype(np.float32))
    got = _np(layer(x))
    np.testing.assert_allclose(got, _window_block_reference(layer, x), rtol=1e-4, atol=1e-4)
    # The shift changes the result (the windows differ), and a wrong shift is refused.
    plain = WindowAttention3D(4, num_heads=2, window_size=2)
    plain.build(x.shape)
    plain.set_weights(layer.get_weights())
    assert not np.allclose(_np(plain(x)), got, atol=1e-3)
    with pytest.raises(ConfigError, match="shift_size"):
        WindowAttention3D(4, num_heads=2, window_size=2, shift_size=2)


def test_window_attention_rejects_bad_shapes() -> None:
    with pytest.raises(ConfigError, match="num_heads"):
        WindowAttention3D(6, num_heads=4)
    layer = WindowAttention3D(4, num_heads=2, window_size=4)
    with pytest.raises(ConfigError, match="window_size"):
        layer.build((None, 6, 8, 8, 4))


# === ConvNeXt block ===


def test_convnext_block_matches_numpy() -> None:
    keras.utils.set_random_seed(5)
    block = ConvNeXtBlock(4, kernel_size=3, mlp_ratio=2, layer_scale_init=0.5)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 5, 6, 4)).astype(np.float32)
    out = _np(block(x))
    g = {v.path.split("/")[-2] + "/" + v.name: _np(v) for v in block.weights}
    gamma = _np(block.gamma)
    k = g["dwconv/kernel"][..., 0]  # (3, 3, 4)
    pad = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    dw = np.zeros_like(x)
    for a in range(3):
        for b in range(3):
            dw += pad[:, a : a + 5, b : b + 6] * k[a, b]
    dw += g["dwconv/bias"]
    h = _layer_norm(dw, g["norm/gamma"], g["norm/beta"], 1e-6)
    h = _gelu(h @ g["pw1/kernel"] + g["pw1/bias"]) @ g["pw2/kernel"] + g["pw2/bias"]
    np.testing.assert_allclose(out, x + gamma * h, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gamma, 0.5)


# === Lifting ===


def test_lift_follows_the_frontal_beam() -> None:
    # An asymmetric pattern: rows are canonical axis 0, columns axis 2, the beam axis 1.
    f = np.zeros((1, 8, 8, 2), np.float32)
    f[0, 1, 6, 0] = 1.0  # top, patient's left
    f[0, 5, 2, 1] = 2.0  # lower, patient's right
    out = _np(ExpandXrays(("frontal",))([f]))
    assert out.shape == (1, 8, 8, 8, 2)
    for j in range(8):  # every depth along axis 1 carries the image
        np.testing.assert_array_equal(out[:, :, j, :, :], f)
    assert out[0, 1, :, 6, 0].min() == 1.0 and out[0, 1, 6, :, 0].sum() == 1.0


def test_model_lifts_along_axis_1(tiny_model: SXR2CTGenerator) -> None:
    probe = keras.Model(
        tiny_model.input,
        [tiny_model.get_layer("xray_proj1").output, tiny_model.get_layer("lift1").output],
    )
    flat, lifted = (_np(t) for t in probe(_xray(1)))
    np.testing.assert_allclose(lifted, np.repeat(flat[:, :, None], flat.shape[2], axis=2))


# === Model ===


def test_model_builds_tiny(tiny_model: SXR2CTGenerator) -> None:
    assert list(tiny_model.input) == ["frontal"]
    out = _np(tiny_model(_xray(), training=False))
    assert out.shape == (2, SIZE, SIZE, SIZE, 1) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    attn = tiny_model.get_layer("dec_attention0")
    assert isinstance(attn, WindowAttention3D) and attn.window_size == 4  # at 8^3
    assert tiny_model.get_layer("lift0").output.shape == (None, SIZE, SIZE, SIZE, 2)
    # "concatenating them at each layer": the template, pooled, enters every encoder level.
    for level in (1, 2):
        pool = tiny_model.get_layer(f"template_pool{level}")
        assert tuple(pool.output.shape[1:]) == (SIZE >> level,) * 3 + (1,)
        concat = tiny_model.get_layer(f"enc{level}_concat")
        assert any(t is pool.output for t in concat.input)


def test_model_shifts_every_second_attention_block() -> None:
    model = SXR2CTGenerator(
        size=SIZE, **{**TINY, "depths": (1, 1), "attention_blocks": 2}, window_size=4
    )
    # Coarsest map 16^3, window 4: blocks 0 and 1 are W-MSA and SW-MSA (shift 2).
    assert [model.get_layer(f"dec_attention{i}").shift_size for i in range(2)] == [0, 2]


def test_config_without_new_keys_builds_the_old_network() -> None:
    model = SXR2CTGenerator(size=SIZE, **TINY)
    config = model.get_config()
    assert config.pop("template_every_level") is True and config.pop("shifted_windows") is True
    old = SXR2CTGenerator.from_config(config)
    assert not old.template_every_level and not old.shifted_windows
    assert not any(layer.name.startswith("template_pool") for layer in old.layers)


@pytest.mark.parametrize("size", [64, 128])
def test_model_builds_at_preset_sizes(size: int) -> None:
    model = SXR2CTGenerator(size=size, **{**TINY, "depths": (1, 1, 1, 1)})
    assert tuple(model.output.shape) == (None, size, size, size, 1)
    assert model.template.shape == (size, size, size, 1)


def test_template_is_used_saved_and_loaded(tiny_model: SXR2CTGenerator, tmp_path: Path) -> None:
    template_var = tiny_model.get_layer("template").template
    assert any(v is template_var for v in tiny_model.non_trainable_weights)
    assert not any(v is template_var for v in tiny_model.trainable_weights)
    x = _xray(1)
    before = _np(tiny_model(x))
    rng = np.random.default_rng(7)
    volume = rng.random((SIZE, SIZE, SIZE), dtype=np.float32)
    tiny_model.set_template(volume)
    np.testing.assert_array_equal(tiny_model.template[..., 0], volume)
    after = _np(tiny_model(x))
    assert np.abs(after - before).max() > 1e-4  # the template reaches the output
    tiny_model.save(tmp_path / "sxr2ct.keras")
    loaded = keras.saving.load_model(tmp_path / "sxr2ct.keras")
    assert isinstance(loaded, SXR2CTGenerator)
    np.testing.assert_array_equal(loaded.template[..., 0], volume)
    np.testing.assert_allclose(_np(loaded(x)), after, atol=1e-6)
    with pytest.raises(ConfigError, match="shape"):
        tiny_model.set_template(volume[:16])
    with pytest.raises(ConfigError, match="NaN"):
        tiny_model.set_template(np.full_like(volume, np.nan))


def test_model_contract(tmp_path: Path) -> None:
    model = SXR2CTGenerator(size=SIZE, **TINY)
    model.set_template(np.full((SIZE,) * 3, 0.3, np.float32))
    init = {"size": SIZE, "views": ("frontal",), "template_value": 0.0, **TINY}
    check_registration(model, init)
    check_model(model, _xray(1), tmp_path)


def test_layer_contracts(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    image = rng.random((2, 8, 8, 1), dtype=np.float32)
    for sub in ("lik", "convnext", "attn"):
        (tmp_path / sub).mkdir()
    check_layer(LikelihoodImage(epsilon=1e-2), {"epsilon": 1e-2}, image, tmp_path / "lik")
    conv_init: dict[str, Any] = {
        "filters": 4,
        "kernel_size": 3,
        "mlp_ratio": 2,
        "layer_scale_init": 0.1,
    }
    check_layer(
        ConvNeXtBlock(**conv_init),
        conv_init,
        rng.random((2, 8, 8, 4), dtype=np.float32),
        tmp_path / "convnext",
    )
    attn_init: dict[str, Any] = {
        "filters": 4,
        "num_heads": 2,
        "window_size": 2,
        "relative_position_bias": True,
    }
    check_layer(
        WindowAttention3D(**attn_init),
        attn_init,
        rng.random((2, 4, 4, 4, 4), dtype=np.float32),
        tmp_path / "attn",
    )
    template = TemplateVolume(4, value=0.5)
    check_registration(template, {"size": 4, "value": 0.5})
    out = _np(template(image))
    assert out.shape == (2, 4, 4, 4, 1) and (out == 0.5).all()


def test_bad_arguments_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="single view"):
        SXR2CTGenerator(size=SIZE, views=("frontal", "lateral"), **TINY)
    with pytest.raises(ConfigError, match="size"):
        SXR2CTGenerator(size=48, **TINY)
    with pytest.raises(ConfigError, match="size"):
        SXR2CTGenerator(size=8, **{**TINY, "depths": (1, 1, 1, 1)})
    with pytest.raises(ConfigError, match="num_heads"):
        SXR2CTGenerator(size=SIZE, **{**TINY, "num_heads": 3})
    with pytest.raises(ConfigError, match="activation"):
        SXR2CTGenerator(size=SIZE, activation="swish", **TINY)
    with pytest.raises(ConfigError, match="depths"):
        SXR2CTGenerator(size=SIZE, **{**TINY, "depths": ()})


def test_mixed_bfloat16_gives_float32_output() -> None:
    model = SXR2CTGenerator(size=SIZE, dtype="mixed_bfloat16", **TINY)
    assert model.get_layer("dec_attention0").compute_dtype == "bfloat16"
    assert model.get_layer("stage0_block0").compute_dtype == "bfloat16"
    assert model.get_layer("likelihood").compute_dtype == "float32"
    assert model.get_layer("template").template.dtype == "float32"
    out = model(_xray(1), training=False)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    assert np.isfinite(_np(out)).all()
    clone = SXR2CTGenerator.from_config(model.get_config())
    assert clone.get_layer("enc0_conv0").compute_dtype == "bfloat16"


# === Perceptual loss ===


def _linear_features(in_ch: int = 1, out_ch: int = 3, seed: int = 0) -> keras.Model:
    """A 1x1 convolution without bias: features are a linear map of the slice's channels."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((None, None, in_ch))
    return keras.Model(inp, keras.layers.Conv2D(out_ch, 1, use_bias=False)(inp))


def _volumes(batch: int = 2, size: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = (batch, size, size + 2, size + 4, 1)  # non-cubic: axis mix-ups change shapes
    return rng.random(shape, dtype=np.float32), rng.random(shape, dtype=np.float32)


def _perceptual_reference(
    t: np.ndarray, p: np.ndarray, kernel: np.ndarray, axes: tuple[int, ...], num: Any, dist: str
) -> np.ndarray:
    values = []
    for axis in axes:
        n = t.shape[axis + 1]
        idx = range(n) if num is None else sorted({round(v) for v in np.linspace(0, n - 1, num)})
        per = []
        for b in range(t.shape[0]):
            diffs = []
            for i in idx:
                st = np.take(t[b], i, axis=axis)  # (h, w, 1)
                sp = np.take(p[b], i, axis=axis)
                d = st @ kernel - sp @ kernel
                diffs.append(np.abs(d) if dist == "l1" else d**2)
            per.append(np.mean(diffs))
        values.append(per)
    return np.mean(values, axis=0)


@pytest.mark.parametrize(
    ("axes", "num", "dist"),
    [("all", None, "l1"), ((1,), 3, "l2"), ((2, 0), 4, "l1")],
    ids=["all-l1", "axis1-l2", "axes20-l1"],
)
def test_perceptual_matches_numpy(axes: Any, num: Any, dist: str) -> None:
    t, p = _volumes()
    model = _linear_features()
    kernel = _np(model.layers[-1].kernel)[0, 0]  # (1, 3)
    loss = PerceptualLoss(feature_model=model, axes=axes, num_slices=num, distance=dist)
    per = _np(perceptual_per_example(t, p, model, axes, num, dist))
    axes_t = (0, 1, 2) if axes == "all" else tuple(axes)
    ref = _perceptual_reference(t, p, kernel, axes_t, num, dist)
    assert per.shape == (2,)
    np.testing.assert_allclose(per, ref, rtol=1e-5)
    np.testing.assert_allclose(_np(loss(t, p)), ref.mean(), rtol=1e-5)


def test_perceptual_zero_for_identical_positive_otherwise() -> None:
    t, p = _volumes()
    loss = PerceptualLoss(feature_model=_linear_features(), num_slices=2)
    assert float(_np(loss(t, t))) == 0.0
    assert float(_np(loss(t, p))) > 0.0


def test_slice_volume_order() -> None:
    t, _ = _volumes(batch=2, size=4)
    s = _np(slice_volume(t, 1, num_slices=2))  # axis 1 has 6 slices: indices 0 and 5
    assert s.shape == (4, 4, 8, 1)
    np.testing.assert_array_equal(s[1], t[0, :, 5])
    np.testing.assert_array_equal(s[2], t[1, :, 0])


def test_perceptual_vgg_random_weights() -> None:
    t, p = _volumes(batch=1, size=32)
    loss = PerceptualLoss(weights=None, layer="block2_conv2", axes=(0,), num_slices=2)
    assert loss.feature_net.output.shape[-1] == 128 and not loss.feature_net.trainable
    assert float(_np(loss(t, t))) == 0.0
    value = float(_np(loss(t, p)))
    assert np.isfinite(value) and value > 0.0
    with pytest.raises(ConfigError, match="not a VGG16 layer"):
        vgg16_features("block9_conv1", weights=None)


def test_perceptual_imagenet_offline_raises_config_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from keras.src.utils import file_utils

    def offline(*args: Any, **kwargs: Any) -> str:
        raise Exception("URL fetch failure on https://storage.googleapis.com: no network")

    # Never touch the network, even where the weights happen to be cached.
    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(ConfigError, match="weights=None") as info:
        PerceptualLoss()
    assert "feature_model" in str(info.value) and "path" in str(info.value)
    with pytest.raises(ConfigError, match="does not exist"):
        PerceptualLoss(weights=str(tmp_path / "missing.h5"))


def test_perceptual_bad_arguments() -> None:
    model = _linear_features()
    with pytest.raises(ConfigError, match="axes"):
        PerceptualLoss(feature_model=model, axes=3)
    with pytest.raises(ConfigError, match="num_slices"):
        PerceptualLoss(feature_model=model, num_slices=0)
    with pytest.raises(ConfigError, match="distance"):
        PerceptualLoss(feature_model=model, distance="cosine")
    with pytest.raises(ConfigError, match="feature_model"):
        PerceptualLoss(feature_model=42)


def test_perceptual_loss_contract(tmp_path: Path) -> None:
    t, p = _volumes()
    # A saved feature model round-trips with its weights (a Model object only by architecture).
    _linear_features().save(tmp_path / "features.keras")
    init: dict[str, Any] = {
        "feature_model": str(tmp_path / "features.keras"),
        "axes": (0, 2),
        "num_slices": 3,
        "distance": "l2",
    }
    check_loss(PerceptualLoss(**init), init, t, p, tmp_path)


def test_perceptual_model_object_round_trips_by_architecture() -> None:
    t, p = _volumes()
    loss = PerceptualLoss(feature_model=_linear_features(), axes=1)
    config = loss.get_config()
    assert isinstance(config["feature_model"], dict)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(restored, PerceptualLoss) and restored.axes == 1
    assert restored.feature_net.output.shape[-1] == 3
    assert _np(restored(t, p)).shape == ()


def test_perceptual_feature_model_path_keeps_weights(tmp_path: Path) -> None:
    t, p = _volumes()
    model = _linear_features(seed=3)
    path = tmp_path / "features.keras"
    model.save(path)
    loss = PerceptualLoss(feature_model=str(path), num_slices=2)
    direct = PerceptualLoss(feature_model=model, num_slices=2)
    restored = PerceptualLoss.from_config(loss.get_config())
    np.testing.assert_allclose(_np(restored(t, p)), _np(direct(t, p)), rtol=1e-6)


def test_every_trainable_weight_gets_a_gradient(tiny_model: SXR2CTGenerator) -> None:
    import tensorflow as tf

    t, _ = _volumes(batch=1, size=SIZE)
    target = t[:, :, :SIZE, :SIZE]
    perceptual = PerceptualLoss(feature_model=_linear_features(), num_slices=2)
    with tf.GradientTape() as tape:
        pred = tiny_model(_xray(1), training=True)
        loss = keras.ops.mean(keras.ops.abs(pred - target)) + perceptual(target, pred)
    grads = tape.gradient(loss, tiny_model.trainable_weights)
    weights = tiny_model.trainable_weights
    missing = [v.path for v, g in zip(weights, grads, strict=True) if g is None]
    assert not missing
    assert all(np.isfinite(_np(g)).all() for g in grads)
    assert np.abs(_np(grads[-1])).max() > 0
