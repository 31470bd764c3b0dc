"""Tests of xprospect.models.duolift: shapes, the lift's frame, residual block, saving, precision.

Models are built at 32^3 with tiny widths so the module runs in well under a minute on two cores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from keras_contract import check_layer, check_model, check_registration

from xprospect.errors import ConfigError
from xprospect.models.blocks import ExpandXrays
from xprospect.models.duolift import DuoLiftGenerator, ResidualBlock

SIZE = 32
TINY: dict[str, Any] = {
    "encoder_filters": 4,
    "encoder_blocks": (1, 1),
    "base_filters": 2,
    "lift_filters": (8, 4, 2),
    "type1_filters": 2,
    "xray_filters": 3,
    "unetpp_filters": 2,
    "unet_filters": 2,
    "max_filters": 8,
}


def _inputs(views: tuple[str, ...] = ("frontal", "lateral"), batch: int = 2) -> dict:
    rng = np.random.default_rng(3)
    return {v: rng.random((batch, SIZE, SIZE, 1), dtype=np.float32) for v in views}


def _np(x: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x))


@pytest.fixture(scope="module")
def tiny() -> DuoLiftGenerator:
    return DuoLiftGenerator(size=SIZE, **TINY)


# === Model ===


def test_builds_at_32_with_volume_output(tiny: DuoLiftGenerator) -> None:
    assert sorted(tiny.input) == ["frontal", "lateral"]
    out = _np(tiny(_inputs(), training=False))
    assert out.shape == (2, SIZE, SIZE, SIZE, 1)
    assert out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    # Deep supervision: the four nested UNet++ heads X^{0,1..4}, averaged into the final UNet.
    names = {layer.name for layer in tiny.layers}
    assert {f"pp_head{j}" for j in range(1, 5)} <= names and "pp_heads_mean" in names
    assert {f"pp_x{i}_{j}_conv1" for i in range(5) for j in range(5 - i)} <= names
    # Lift at S/4, three 3D ResNet blocks at S/4, S/2, S; the first two also taken to S by
    # type 1, two type-2 steps between them.
    assert {"lift0_up1_conv", "lift1_up1_conv", "lift0_up2", "lift1_up2", "lift2_res0"} <= names
    assert "lift2_up1_conv" not in names and "lift2_up2" not in names
    assert [tuple(tiny.get_layer(f"lift{k}_res0").output.shape[1:]) for k in range(3)] == [
        (SIZE // 4,) * 3 + (8,),
        (SIZE // 2,) * 3 + (4,),
        (SIZE,) * 3 + (2,),
    ]
    fuse = tiny.get_layer("fuse")
    assert [tuple(t.shape[1:4]) for t in fuse.input] == [(SIZE,) * 3] * 4
    assert fuse.output.shape[-1] == 2 + 2 + 2 + 3  # f_u23, f_u11, f_u12, F_o


def test_config_without_lift_filters_builds_the_old_network() -> None:
    # xprospect < 0.2 stored no lift_filters / encoder_strides: its stages halved after the
    # first (lift at S/8) and every full-resolution output had base_filters channels.
    config = DuoLiftGenerator(size=SIZE, **TINY).get_config()
    for key in (
        "lift_filters",
        "encoder_strides",
        "type1_filters",
        "xray_filters",
        "deep_supervision",
    ):
        del config[key]
    old = DuoLiftGenerator.from_config(config)
    assert old.lift_filters is None and old.encoder_strides == "halve"
    assert tuple(old.get_layer("feature_lift").output.shape[1:4]) == (SIZE // 8,) * 3
    assert {"lift2_up2", "lift1_up1_conv"} <= {layer.name for layer in old.layers}
    assert old.get_layer("fuse").output.shape[-1] == 4 * TINY["base_filters"]
    assert old.supervision_layers == () and "pp_out1" not in {layer.name for layer in old.layers}


def test_deep_supervision_heads_predict_the_volume(tiny: DuoLiftGenerator) -> None:
    # UNet++ "with Deep Supervision": each nested head X^{0,1..4} predicts the volume (sigmoid,
    # float32); the predictions join the UNet's input next to the heads' mean.
    assert tiny.supervision_layers == tuple(f"pp_out{j}" for j in range(1, 5))
    probe = keras.Model(tiny.input, [tiny.get_layer(n).output for n in tiny.supervision_layers])
    for out in probe(_inputs(batch=1), training=False):
        out = _np(out)
        assert out.shape == (1, SIZE, SIZE, SIZE, 1) and out.min() >= 0.0 and out.max() <= 1.0
    concat = tiny.get_layer("pp_supervised")
    assert concat.output.shape[-1] == TINY["unetpp_filters"] + 4


def test_single_view_and_h4_encoder() -> None:
    model = DuoLiftGenerator(
        size=SIZE, views=("frontal",), **{**TINY, "encoder_blocks": (1,)}, unet_depth=2
    )
    assert list(model.input) == ["frontal"]
    lift = model.get_layer("feature_lift")
    assert tuple(lift.output.shape[1:4]) == (SIZE // 4,) * 3  # stop at H/4: two stages
    assert "lift0_up1_conv" in {layer.name for layer in model.layers}
    out = _np(model(_inputs(("frontal",), batch=1), training=False))
    assert out.shape == (1, SIZE, SIZE, SIZE, 1)


def test_generator_contract(tiny: DuoLiftGenerator, tmp_path: Path) -> None:
    init = {"size": SIZE, "views": ("frontal", "lateral"), **TINY, "dropout": 0.25}
    check_registration(tiny, init)
    check_model(tiny, _inputs(batch=1), tmp_path)


def test_mixed_bfloat16_gives_float32() -> None:
    model = DuoLiftGenerator(size=SIZE, **TINY, unet_depth=2, dtype="mixed_bfloat16")
    assert model.get_layer("lift0_res0").compute_dtype == "bfloat16"
    out = _np(model(_inputs(batch=1), training=False))
    assert out.dtype == np.float32
    assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0
    assert model.get_config()["dtype"] == "mixed_bfloat16"


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"size": 48}, "size"),
        ({"size": 8}, "size"),
        ({"views": ("lateral",)}, "frontal"),
        ({"views": ("frontal", "axial")}, "views"),
        ({"encoder_blocks": ()}, "encoder_blocks"),
        ({"base_filters": 0}, "base_filters"),
        ({"norm": "layer"}, "norm"),
        ({"activation": "tanh"}, "activation"),
        ({"dropout": 1.0}, "dropout"),
        ({"encoder_strides": (1, 1, 1)}, "encoder_strides"),
        ({"encoder_strides": "double"}, "encoder_strides"),
        ({"lift_filters": (8, 4)}, "lift_filters"),
        ({"xray_filters": 0}, "xray_filters"),
    ],
)
def test_bad_arguments_raise_config_error(override: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        DuoLiftGenerator(**{"size": SIZE, **TINY, **override})


# === The lift (canonical frame) ===


def test_lift_puts_views_on_their_beam_axes(tiny: DuoLiftGenerator) -> None:
    # An asymmetric pattern: frontal features lit at (row 1, col 3), lateral at (row 2, col 0).
    n, ch = 4, 2
    front = np.zeros((1, n, n, ch), np.float32)
    lat = np.zeros((1, n, n, ch), np.float32)
    front[0, 1, 3, 0] = 1.0
    lat[0, 2, 0, 1] = 2.0
    vol = _np(tiny.get_layer("feature_lift")({"frontal": front, "lateral": lat}))
    assert vol.shape == (1, n, n, n, 2 * ch)
    # Frontal: rows = axis 0, columns = axis 2, repeated along the beam (axis 1).
    lit = np.argwhere(vol[0, ..., 0])
    np.testing.assert_array_equal(lit, [[1, j, 3] for j in range(n)])
    # Lateral: rows = axis 0, columns = axis 1, repeated along the beam (axis 2).
    lit = np.argwhere(vol[0, ..., ch + 1])
    np.testing.assert_array_equal(lit, [[2, 0, k] for k in range(n)])
    np.testing.assert_allclose(vol[0, 2, 0, :, ch + 1], 2.0)
    assert np.count_nonzero(vol) == 2 * n


def test_model_lifts_its_encoder_features(tiny: DuoLiftGenerator) -> None:
    """Inside the model: the lift is the NumPy repeat of each encoder's output on its beam axis."""
    probe = keras.Model(
        tiny.input,
        [
            tiny.get_layer("frontal_enc1_0").output,
            tiny.get_layer("lateral_enc1_0").output,
            tiny.get_layer("feature_lift").output,
            tiny.get_layer("xray_lift").output,
        ],
    )
    x = _inputs(batch=1)
    f, lat, lifted, xrays = (_np(t) for t in probe(x, training=False))
    n, ch = f.shape[1], f.shape[-1]
    assert n == SIZE // 4  # F2D at H/4 (every ResNet stage has stride 1), as the paper's
    want = np.concatenate(
        [
            np.broadcast_to(f[:, :, None, :, :], (1, n, n, n, ch)),  # [b, i, j, k] = f[b, i, k]
            np.broadcast_to(lat[:, :, :, None, :], (1, n, n, n, ch)),  # [b, i, j, k] = l[b, i, j]
        ],
        axis=-1,
    )
    np.testing.assert_allclose(lifted, want, rtol=0, atol=0)
    fr, la = x["frontal"][..., 0], x["lateral"][..., 0]
    np.testing.assert_allclose(
        xrays[..., 0], np.broadcast_to(fr[:, :, None, :], (1,) + (SIZE,) * 3)
    )
    np.testing.assert_allclose(
        xrays[..., 1], np.broadcast_to(la[:, :, :, None], (1,) + (SIZE,) * 3)
    )
    assert isinstance(tiny.get_layer("xray_lift"), ExpandXrays)


# === Residual block ===


def _conv2d_same(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Stride-1 'same' 2D convolution (cross-correlation), NHWC, odd kernel."""
    k = kernel.shape[0]
    p = k // 2
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    h, w = x.shape[1:3]
    out = np.zeros((*x.shape[:3], kernel.shape[-1]), np.float64)
    for di in range(k):
        for dj in range(k):
            out += np.einsum("bhwc,cf->bhwf", xp[:, di : di + h, dj : dj + w, :], kernel[di, dj])
    return out + bias


def test_residual_block_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 6, 2)).astype(np.float32)
    block = ResidualBlock(3, rank=2, norm="none", activation="relu")
    out = _np(block(x))
    k1, b1 = (_np(w) for w in block.conv1.conv.weights)
    k2, b2 = (_np(w) for w in block.conv2.conv.weights)
    assert block.shortcut is not None  # 2 → 3 channels: projection shortcut
    ks, bs = (_np(w) for w in block.shortcut.conv.weights)
    h = np.maximum(_conv2d_same(x, k1, b1), 0.0)
    want = np.maximum(_conv2d_same(h, k2, b2) + _conv2d_same(x, ks, bs), 0.0)
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5)


def test_residual_block_with_zero_branch_is_identity_then_act() -> None:
    x = np.random.default_rng(1).standard_normal((1, 4, 4, 4, 3)).astype(np.float32)
    block = ResidualBlock(3, rank=3, norm="instance", activation="relu")
    block.build(x.shape)
    assert block.shortcut is None  # same channels, stride 1: identity shortcut
    block.conv2.conv.kernel.assign(np.zeros(block.conv2.conv.kernel.shape, np.float32))
    np.testing.assert_allclose(_np(block(x)), np.maximum(x, 0.0), rtol=0, atol=1e-6)


def test_residual_block_strided_shape() -> None:
    block = ResidualBlock(6, rank=2, strides=2)
    assert block.compute_output_shape((None, 8, 8, 4)) == (None, 4, 4, 6)
    assert _np(block(np.ones((1, 8, 8, 4), np.float32))).shape == (1, 4, 4, 6)
    with pytest.raises(ConfigError, match="rank"):
        ResidualBlock(4, rank=1)
    with pytest.raises(ConfigError, match="norm"):
        ResidualBlock(4, norm="layer")


@pytest.mark.parametrize(
    ("init", "shape"),
    [
        ({"filters": 4, "rank": 3, "norm": "instance", "activation": "relu"}, (2, 4, 4, 4, 3)),
        (
            {"filters": 4, "rank": 2, "strides": 2, "norm": "batch", "activation": "leaky_relu"},
            (2, 8, 8, 4),
        ),
    ],
)
def test_residual_block_contract(init: dict, shape: tuple, tmp_path: Path) -> None:
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    check_layer(ResidualBlock(**init), init, x, tmp_path)
