"""Tests of the X2CT-GAN generator and the conditional 3D PatchGAN discriminators.

Everything is built at 32^3 with tiny widths (a few channels, one dense layer per stage), so the
module runs in well under a minute on two cores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from keras_contract import check_layer, check_model, check_registration

from xprospect.errors import ConfigError
from xprospect.models.blocks import ConnectionC, view_to_canonical
from xprospect.models.discriminators import (
    PatchDiscriminator3D,
    duolift_discriminator,
    patch_map_size,
    x2ct_discriminator,
)
from xprospect.models.x2ct import (
    DenseBlock,
    LiftToVolume,
    PreActConv,
    ToViewFrame,
    X2CTGenerator,
)

SIZE = 32
BIPLANAR = ("frontal", "lateral")
TINY: dict[str, Any] = {
    "stem_filters": 4,
    "growth_rate": 2,
    "block_layers": (1, 1, 1),
    "bottleneck": 2,
    "grid_filters": 4,
    "decoder_filters": 2,
}
TINY_D: dict[str, Any] = {"filters": (2, 3, 4, 4)}


def _xrays(views: tuple[str, ...] = BIPLANAR, batch: int = 2, size: int = SIZE) -> dict:
    rng = np.random.default_rng(1)
    return {v: rng.random((batch, size, size, 1), dtype=np.float32) for v in views}


def _d_inputs(views: tuple[str, ...] = BIPLANAR, size: int = SIZE) -> dict:
    rng = np.random.default_rng(2)
    return {
        "volume": rng.random((1, size, size, size, 1), dtype=np.float32),
        **_xrays(views, 1, size),
    }


def _np(x: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x))


# === Generator ===


@pytest.mark.parametrize("views", [BIPLANAR, ("frontal",)], ids=["biplanar", "single-view"])
def test_generator_shapes_and_range(views: tuple[str, ...]) -> None:
    model = X2CTGenerator(size=SIZE, views=views, **TINY)
    assert sorted(model.input) == sorted(views)
    assert model.num_stages == 3  # 32 → 4x4 apex in three stride-2 stages
    out = _np(model(_xrays(views), training=False))
    assert out.shape == (2, SIZE, SIZE, SIZE, 1) and out.dtype == np.float32
    # The official head is a ReLU (activation_type: 'relu'): non-negative, not bounded by 1.
    assert out.min() >= 0.0
    assert model.get_layer("volume").activation is keras.activations.relu
    bounded = X2CTGenerator(size=SIZE, views=views, head_activation="sigmoid", **TINY)
    out = _np(bounded(_xrays(views), training=False))
    assert out.min() >= 0.0 and out.max() <= 1.0
    names = [layer.name for layer in model.layers]
    if len(views) == 1:
        assert not any(n.startswith(("lateral", "fusion")) for n in names)
    else:
        assert {f"fusion_connC{r}" for r in (4, 8, 16, 32)} <= set(names)


def test_generator_widths_follow_the_paper_pattern() -> None:
    model = X2CTGenerator(size=SIZE, **TINY)
    # decoder_filters=2 is a base: 2 * 2**max(l - 1, 0) at levels 0, 1, 2 (32, 16, 8).
    for res, filters in ((32, 2), (16, 2), (8, 4)):
        assert model.get_layer(f"frontal_compress{res}").filters == filters
    assert model.get_layer("frontal_connA_grid").output.shape == (None, 4, 4, 4, 4)
    # Stem 4 → dense +2 = 6 → transition 3 → +2 = 5 → 2 → +2 = 4 channels pooled at 4x4.
    assert model.get_layer("frontal_dense4").output.shape == (None, 4, 4, 4)
    assert model.get_layer("frontal_connA_dense").kernel.shape == (4, 4**3 * 4)
    # The grid is kept at every size; the number of stages follows it.
    assert X2CTGenerator._check_size(64, BIPLANAR, 4) == 4
    assert X2CTGenerator._check_size(128, BIPLANAR, 4) == 5
    assert X2CTGenerator._check_size(32, BIPLANAR, 2) == 4


def test_generator_without_feedback_to_views() -> None:
    a = X2CTGenerator(size=SIZE, back_to_views=False, **TINY)
    b = X2CTGenerator(size=SIZE, back_to_views=True, **TINY)
    assert a.count_params() == b.count_params()  # the feedback only reroutes features
    assert not any(layer.name.startswith("frontal_back") for layer in a.layers)
    assert _np(a(_xrays(), training=False)).shape == (2, SIZE, SIZE, SIZE, 1)


@pytest.mark.parametrize("views", [BIPLANAR, ("frontal",)], ids=["biplanar", "single-view"])
def test_generator_contract(views: tuple[str, ...], tmp_path: Path) -> None:
    kwargs = {**TINY, "view_convs": (1, 1, 0), "fusion_convs": 1}
    model = X2CTGenerator(size=SIZE, views=views, **kwargs)
    check_registration(model, {"size": SIZE, "views": views, **kwargs})
    check_model(model, _xrays(views), tmp_path)


def test_generator_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="size"):
        X2CTGenerator(size=48, **TINY)
    with pytest.raises(ConfigError, match="size"):
        X2CTGenerator(size=4, **TINY)
    with pytest.raises(ConfigError, match="block_layers"):
        X2CTGenerator(size=SIZE, **{**TINY, "block_layers": (1, 1)})
    with pytest.raises(ConfigError, match="decoder_filters"):
        X2CTGenerator(size=SIZE, **{**TINY, "decoder_filters": (2, 2)})
    with pytest.raises(ConfigError, match="views"):
        X2CTGenerator(size=SIZE, views=("lateral", "axial"), **TINY)
    with pytest.raises(ConfigError, match="frontal"):
        X2CTGenerator(size=SIZE, views=("lateral",), **TINY)
    with pytest.raises(ConfigError, match="norm"):
        X2CTGenerator(size=SIZE, norm="layer", **TINY)
    with pytest.raises(ConfigError, match="dropout"):
        X2CTGenerator(size=SIZE, dropout=1.0, **TINY)
    with pytest.raises(ConfigError, match="head_activation"):
        X2CTGenerator(size=SIZE, head_activation="tanh", **TINY)


def test_config_without_head_activation_loads_with_the_old_sigmoid_head() -> None:
    model = X2CTGenerator(size=SIZE, **TINY)
    config = model.get_config()
    assert config["head_activation"] == "relu"
    del config["head_activation"]  # what xprospect < 0.2 stored
    old = X2CTGenerator.from_config(config)
    assert old.head_activation == "sigmoid"
    assert old.get_layer("volume").activation is keras.activations.sigmoid


# === Layers ===


def test_pre_act_conv_matches_numpy() -> None:
    layer = PreActConv(3, 1, norm="none")
    x = np.random.default_rng(3).normal(size=(2, 5, 6, 4)).astype(np.float32)
    out = _np(layer(x))
    kernel, bias = (_np(w) for w in layer.conv.weights)
    expected = np.maximum(x, 0.0) @ kernel[0, 0] + bias
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_dense_block_keeps_its_input_and_grows(tmp_path: Path) -> None:
    kwargs: dict[str, Any] = {
        "num_layers": 3,
        "growth_rate": 2,
        "bottleneck": 2,
        "norm": "instance",
    }
    layer = DenseBlock(**kwargs)
    x = np.random.default_rng(4).normal(size=(2, 8, 8, 5)).astype(np.float32)
    out = _np(layer(x))
    assert out.shape == (2, 8, 8, 5 + 3 * 2)
    np.testing.assert_allclose(out[..., :5], x, rtol=0, atol=0)  # dense concatenation
    check_layer(DenseBlock(**kwargs), kwargs, x, tmp_path)


def test_lift_and_to_view_frame_contracts(tmp_path: Path) -> None:
    x = np.random.default_rng(5).normal(size=(1, 4, 4, 3)).astype(np.float32)
    kwargs: dict[str, Any] = {"filters": 2, "depth": None, "norm": "instance", "activation": "relu"}
    (tmp_path / "lift").mkdir()
    (tmp_path / "view").mkdir()
    check_layer(LiftToVolume(**kwargs), kwargs, x, tmp_path / "lift")
    v = np.random.default_rng(6).normal(size=(1, 3, 4, 5, 2)).astype(np.float32)
    check_layer(ToViewFrame("frontal"), {"view": "frontal"}, v, tmp_path / "view")


def _identity_lift(channels: int = 1) -> LiftToVolume:
    """A LiftToVolume whose convolutions are identities, so it only repeats along depth."""
    layer = LiftToVolume(channels, norm="none", activation="linear")
    layer.build((None, 6, 6, channels))
    eye2 = np.eye(channels, dtype=np.float32)[None, None]
    eye3 = np.zeros((3, 3, 3, channels, channels), np.float32)
    eye3[1, 1, 1] = np.eye(channels)
    zero = np.zeros(channels, np.float32)
    layer.channel_conv.conv.set_weights([eye2, zero])
    layer.depth_conv.conv.set_weights([eye3, zero])
    return layer


def test_lift_and_fusion_align_an_asymmetric_lateral_pattern() -> None:
    n = 6
    frontal = np.zeros((1, n, n, 1), np.float32)
    lateral = np.zeros((1, n, n, 1), np.float32)
    frontal[0, 1, 4] = 1.0  # a point at axis 0 = 1, axis 2 = 4 (frontal rows, columns)
    frontal[0, 5, 0] = 0.5  # an asymmetric second mark
    lateral[0, 1, 2] = 1.0  # the same point seen from the side: axis 0 = 1, axis 1 = 2
    lateral[0, 3, 5] = 0.25
    lift = _identity_lift()
    lifted = {v: lift(img) for v, img in (("frontal", frontal), ("lateral", lateral))}
    canonical = {v: _np(view_to_canonical(x, v))[0, ..., 0] for v, x in lifted.items()}
    # Independent reference: each image repeated along its beam axis.
    np.testing.assert_allclose(canonical["frontal"], np.repeat(frontal[0, :, None, :, 0], n, 1))
    np.testing.assert_allclose(canonical["lateral"], np.repeat(lateral[0, :, :, None, 0], n, 2))
    # The views agree only at the point both saw: canonical voxel (1, 2, 4).
    both = canonical["frontal"] * canonical["lateral"]
    assert np.argwhere(both > 0).tolist() == [[1, 2, 4]]
    # Connection C averages the two lifted views in the canonical frame...
    fused = _np(ConnectionC(BIPLANAR)([lifted["frontal"], lifted["lateral"]]))[0, ..., 0]
    np.testing.assert_allclose(fused, (canonical["frontal"] + canonical["lateral"]) / 2)
    assert np.unravel_index(np.argmax(fused), fused.shape) == (1, 2, 4)
    # ... and the feedback to the views moves it back into each view frame exactly.
    for v in BIPLANAR:
        back = _np(ToViewFrame(v)(fused[None, ..., None]))[0, ..., 0]
        expected = np.transpose(fused, (0, 2, 1)) if v == "frontal" else fused
        np.testing.assert_allclose(back, expected)
        np.testing.assert_allclose(
            _np(view_to_canonical(back[None, ..., None], v))[0, ..., 0], fused
        )


# === Discriminators ===


def _hand_map_size(config: str, size: int) -> int:
    if config == "x2ct":
        # k4 p2 (the official padw = ceil(3 / 2)): stride 2 maps an edge n to n // 2 + 1, stride 1
        # adds one voxel: 128 → 65 → 33 → 17 → 18 → 19, i.e. S/8 + 1 + 1 + 1.
        return size // 8 + 3
    # k4 s1 p2 adds one voxel (n + 1); k3 s2 p1 pooling maps it to (n + 1 - 1) // 2 + 1: four
    # times n → n // 2 + 1, then the padded final conv adds one.
    n = size
    for _ in range(4):
        n = n // 2 + 1
    return n + 1


@pytest.mark.parametrize("config", ["x2ct", "duolift"])
@pytest.mark.parametrize("size", [32, 64])
def test_discriminator_map_size(config: str, size: int) -> None:
    factory = x2ct_discriminator if config == "x2ct" else duolift_discriminator
    disc = factory(size, **TINY_D)
    d = _hand_map_size(config, size)
    assert disc.map_size == d
    out = disc(_d_inputs(size=size), training=False)
    assert tuple(out.shape) == (1, d, d, d, 1)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"


def test_discriminator_map_size_at_128() -> None:
    # The reading of the official code: "output 19^3 at 128^3".
    assert patch_map_size(128, (2, 2, 2, 1), 4, 2) == [128, 65, 33, 17, 18, 19]
    # pix2pix' padding 1 (xprospect < 0.2) stays available.
    assert patch_map_size(128, (2, 2, 2, 1), 4, 1) == [128, 64, 32, 16, 15, 14]
    # DuoLift: "four convolutional layers, each with a 4x4x4 kernel, a stride of one, and
    # padding of two, along with average pooling using a 3x3x3 kernel, a stride of two, and
    # padding of one".
    assert patch_map_size(128, (1, 1, 1, 1), 4, 2, "avg", 3, 2, 1) == [128, 65, 33, 17, 9, 10]
    assert patch_map_size(64, (1, 1, 1, 1), 4, 2, "avg", 3, 2, 1)[-2] == 5  # "5x5x5" at 64
    assert patch_map_size(128, (1, 1, 1, 1), 4, 2, "avg", 3, 2) == [128, 64, 32, 16, 8, 9]
    for config in ("x2ct", "duolift"):
        assert _hand_map_size(config, 128) == (19 if config == "x2ct" else 10)


@pytest.mark.parametrize("config", ["x2ct", "duolift"])
def test_discriminator_contract(config: str, tmp_path: Path) -> None:
    factory = x2ct_discriminator if config == "x2ct" else duolift_discriminator
    disc = factory(SIZE, **TINY_D)
    init = {"size": SIZE, "views": BIPLANAR, "condition": True, "filters": TINY_D["filters"]}
    init |= (
        {"strides": (2, 2, 2, 1), "padding": 2, "pool": None}
        if config == "x2ct"
        else {
            "strides": (1, 1, 1, 1),
            "padding": 2,
            "pool": "avg",
            "pool_size": 3,
            "pool_padding": 1,
        }
    )
    check_registration(disc, init)
    check_model(disc, _d_inputs(), tmp_path)


def test_discriminator_conditioning() -> None:
    plain = x2ct_discriminator(SIZE, condition=False, **TINY_D)
    assert list(plain.input) == ["volume"]
    single = x2ct_discriminator(SIZE, ("frontal",), **TINY_D)
    assert sorted(single.input) == ["frontal", "volume"]
    # The first convolution sees the volume plus one channel per view.
    assert plain.get_layer("conv0").conv.kernel.shape[-2] == 1
    assert single.get_layer("conv0").conv.kernel.shape[-2] == 2
    biplanar = x2ct_discriminator(SIZE, **TINY_D)
    assert biplanar.get_layer("conv0").conv.kernel.shape[-2] == 3
    # Instance norm on every hidden layer but the first; no sigmoid on the logits.
    assert biplanar.get_layer("conv0").norm == "none"
    assert all(biplanar.get_layer(f"conv{i}").norm == "instance" for i in (1, 2, 3))
    assert biplanar.get_layer("logits").activation is keras.activations.linear
    # The conditioning changes the output.
    x = _d_inputs()
    a = _np(biplanar(x, training=False))
    b = _np(biplanar({**x, "lateral": 1.0 - x["lateral"]}, training=False))
    assert not np.allclose(a, b)


def test_cvaa_discriminator_convolves_the_expanded_xrays(tmp_path: Path) -> None:
    # CVAA-GAN: "X_1 and X_2 are first extended from 2D to 3D and then followed by a basic 3D
    # convolution layer ... Then, the 3D features combined with Y via concatenation".
    disc = x2ct_discriminator(SIZE, condition_filters=3, **TINY_D)
    assert disc.get_layer("condition_conv").conv.kernel.shape == (3, 3, 3, 2, 3)
    assert disc.get_layer("conv0").conv.kernel.shape[-2] == 1 + 3
    init = {"size": SIZE, "condition_filters": 3, "filters": TINY_D["filters"]}
    check_registration(disc, init)
    check_model(disc, _d_inputs(), tmp_path)
    # A config without the key (xprospect < 0.2) builds no such convolution.
    config = disc.get_config()
    del config["condition_filters"]
    assert PatchDiscriminator3D.from_config(config).condition_filters == 0


def test_discriminator_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="empty"):
        x2ct_discriminator(16, padding=1, **TINY_D)
    with pytest.raises(ConfigError, match="condition_filters"):
        PatchDiscriminator3D(SIZE, filters=(2,), strides=(2,), condition_filters=-1)
    with pytest.raises(ConfigError, match="pool_padding"):
        PatchDiscriminator3D(SIZE, filters=(2,), strides=(2,), pool="avg", pool_padding=-1)
    with pytest.raises(ConfigError, match="strides"):
        PatchDiscriminator3D(SIZE, filters=(2, 2), strides=(2,))
    with pytest.raises(ConfigError, match="pool"):
        PatchDiscriminator3D(SIZE, filters=(2,), strides=(2,), pool="max")
    with pytest.raises(ConfigError, match="views"):
        PatchDiscriminator3D(SIZE, views=("axial",), filters=(2,), strides=(2,))


# === Precision ===


def test_mixed_bfloat16_outputs_float32() -> None:
    gen = X2CTGenerator(size=SIZE, dtype="mixed_bfloat16", **TINY)
    assert gen.get_layer("fusion_compress32").compute_dtype == "bfloat16"
    assert gen.get_layer("frontal_dense4").compute_dtype == "bfloat16"
    assert gen.get_layer("volume").compute_dtype == "float32"
    out = gen(_xrays(), training=False)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    clone = X2CTGenerator.from_config(gen.get_config())
    assert clone.get_layer("frontal_stem").compute_dtype == "bfloat16"
    disc = duolift_discriminator(SIZE, dtype="mixed_bfloat16", **TINY_D)
    assert disc.get_layer("conv1").compute_dtype == "bfloat16"
    logits = disc(_d_inputs(), training=False)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
