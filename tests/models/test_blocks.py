"""Tests of the DualUNet's layers (xprospect.models.dualunet.layers) and the shared ones
(xprospect.models.blocks): blocks, connections A-D, back-projection.

References are independent of the code under test: NumPy broadcasts written from the frame table
of docs/conventions.md (frontal image = (axis 0, axis 2), lateral = (axis 0, axis 1)), sums of a
canonical volume for projections, and the TensorFlow projector's adjoint
(``xprospect.projection.back_project``) for the back-projection. Sizes are tiny.
"""

from __future__ import annotations

import ast
from pathlib import Path

import keras
import numpy as np
import pytest
from keras_contract import check_layer
from numpy.testing import assert_allclose

from xprospect.errors import ConfigError, GeometryError
from xprospect.models.blocks import ConnectionC, view_to_canonical
from xprospect.models.dualunet.layers import (
    BackProjection,
    ConnectionA,
    ConnectionB,
    ConnectionD,
    ConvBlock,
)

RNG = np.random.default_rng(0)


def _rand(*shape: int) -> np.ndarray:
    return RNG.random(shape, dtype=np.float32)


def _identity_lift(view_shape: tuple[int, int], depth: int, channels: int = 1) -> ConnectionB:
    """A ConnectionB whose convolutions are identities, so it only repeats along depth."""
    layer = ConnectionB(channels, depth=depth, activation="linear")
    layer.build((None, *view_shape, channels))
    eye = np.eye(channels, dtype=np.float32)
    k3 = np.zeros((3, 3, 3, channels, channels), np.float32)
    k3[1, 1, 1] = eye
    layer.channel_conv.set_weights([eye[None, None], np.zeros(channels, np.float32)])
    layer.depth_conv.set_weights([k3, np.zeros(channels, np.float32)])
    return layer


# === Keras contract ===


def test_conv_block_contract(tmp_path: Path) -> None:
    kwargs = {"filters": 3, "rank": 3, "num_convs": 2, "kernel_size": 3, "activation": "selu"}
    check_layer(
        ConvBlock(**kwargs, dropout=0.1), {**kwargs, "dropout": 0.1}, _rand(2, 4, 4, 4, 2), tmp_path
    )


def test_conv_block_2d_relu_shape() -> None:
    layer = ConvBlock(5, rank=2, num_convs=1, activation="relu", dropout=0.2)
    assert isinstance(layer.drop, keras.layers.Dropout)
    assert tuple(layer(_rand(2, 6, 6, 1)).shape) == (2, 6, 6, 5)
    assert isinstance(ConvBlock(2, dropout=0.2).drop, keras.layers.AlphaDropout)


def test_connection_a_contract(tmp_path: Path) -> None:
    kwargs = {"units": 64, "grid_size": 4, "filters": 3, "activation": "selu", "dropout": 0.0}
    layer = ConnectionA(**kwargs)
    check_layer(layer, kwargs, _rand(2, 4, 4, 2), tmp_path)
    assert tuple(layer(_rand(2, 4, 4, 2)).shape) == (2, 4, 4, 4, 3)


def test_connection_b_contract(tmp_path: Path) -> None:
    kwargs = {"filters": 3, "depth": 5, "kernel_size": 3, "activation": "selu"}
    layer = ConnectionB(**kwargs)
    check_layer(layer, kwargs, _rand(2, 4, 6, 2), tmp_path)
    assert tuple(layer(_rand(2, 4, 6, 2)).shape) == (2, 4, 6, 5, 3)
    assert tuple(ConnectionB(2)(_rand(1, 4, 6, 2)).shape) == (1, 4, 6, 6, 2)  # depth = columns


def test_connection_c_contract(tmp_path: Path) -> None:
    kwargs = {"views": ("frontal", "lateral")}
    # Frontal view frame (D0, D2, D1) and lateral (D0, D1, D2) of one (3, 4, 5) canonical grid.
    check_layer(
        ConnectionC(**kwargs), kwargs, [_rand(2, 3, 5, 4, 2), _rand(2, 3, 4, 5, 2)], tmp_path
    )


def test_connection_d_contract(tmp_path: Path) -> None:
    kwargs = {"filters": 3, "num_convs": 1, "kernel_size": 3, "activation": "relu"}
    layer = ConnectionD(**kwargs, dropout=0.0)
    check_layer(
        layer, {**kwargs, "dropout": 0.0}, [_rand(2, 4, 4, 4, 2), _rand(2, 2, 2, 2, 5)], tmp_path
    )
    assert tuple(layer([_rand(1, 4, 4, 4, 2), _rand(1, 2, 2, 2, 5)]).shape) == (1, 4, 4, 4, 3)


def test_back_projection_contract(tmp_path: Path) -> None:
    kwargs = {
        "geometry": "x2ct",
        "view": "lateral",
        "volume_shape": (8, 10, 12),
        "spacing_mm": (30.0, 25.0, 20.0),
        "normalize": True,
    }
    check_layer(BackProjection(**kwargs), kwargs, _rand(2, 8, 8, 1), tmp_path)


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="activation"):
        ConvBlock(4, activation="gelu")
    with pytest.raises(ConfigError, match="grid_size"):
        ConnectionA(100, 4, 8)
    with pytest.raises(ConfigError, match="views"):
        ConnectionC(("frontal", "frontal"))
    with pytest.raises(ConfigError, match="geometry"):
        BackProjection("fan", "frontal", 8)
    with pytest.raises(GeometryError, match="square"):
        BackProjection("parallel", "frontal", 8)(_rand(1, 8, 6, 1))


def test_layers_do_not_use_tensorflow() -> None:
    root = Path(__file__).resolve().parents[2] / "xprospect"
    paths = sorted((root / "models").rglob("*.py"))
    assert (
        root / "models" / "blocks.py" in paths
        and root / "models" / "dualunet" / "layers.py" in paths
    )
    for path in paths:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            bad = [n for n in names if n.split(".")[0] == "tensorflow" or "renderers" in n]
            assert not bad, f"{path.name} imports {bad}"


# === Frames: Connection B lifts along the beam axis, Connection C aligns the views ===


@pytest.mark.parametrize("view", ["frontal", "lateral"])
def test_connection_b_repeats_along_the_beam_axis(view: str) -> None:
    d0, d1, d2 = 4, 5, 6  # canonical grid
    if view == "frontal":  # image (axis 0, axis 2), beam along axis 1
        image = _rand(2, d0, d2, 1)
        expected = np.broadcast_to(image[:, :, None, :, :], (2, d0, d1, d2, 1))
        depth = d1
    else:  # image (axis 0, axis 1), beam along axis 2
        image = _rand(2, d0, d1, 1)
        expected = np.broadcast_to(image[:, :, :, None, :], (2, d0, d1, d2, 1))
        depth = d2
    lifted = _identity_lift(image.shape[1:3], depth)(image)
    canonical = keras.ops.convert_to_numpy(ConnectionC((view,))(lifted))
    assert_allclose(canonical, expected, rtol=1e-6, atol=1e-6)
    assert_allclose(keras.ops.convert_to_numpy(view_to_canonical(lifted, view)), expected, 1e-6)


def test_connection_c_aligns_the_views_at_a_canonical_voxel() -> None:
    d0, d1, d2 = 5, 6, 7  # non-cubic, so the two frames differ in shape too
    a0, a1, a2 = 1, 4, 2  # a1 != a2: the swapped position is a different voxel
    lateral = np.zeros((1, d0, d1, d2, 1), np.float32)  # lateral frame (axis 0, axis 1, axis 2)
    lateral[0, a0, a1, a2, 0] = 1.0
    frontal = np.zeros((1, d0, d2, d1, 1), np.float32)  # frontal frame (axis 0, axis 2, axis 1)
    frontal[0, a0, a2, a1, 0] = 1.0
    fused = keras.ops.convert_to_numpy(ConnectionC(("frontal", "lateral"))([frontal, lateral]))
    assert fused.shape == (1, d0, d1, d2, 1)
    assert np.unravel_index(np.argmax(fused[0, ..., 0]), fused.shape[1:4]) == (a0, a1, a2)
    assert fused[0, a0, a1, a2, 0] == pytest.approx(1.0)  # both views agree there
    # A wrong permutation (frontal left untransposed) would not: on a cube the frontal voxel would
    # land on the swapped position and the two views would never meet.
    cube_f = np.zeros((1, 7, 7, 7, 1), np.float32)
    cube_l = np.zeros_like(cube_f)
    cube_l[0, a0, a1, a2, 0] = 1.0
    cube_f[0, a0, a2, a1, 0] = 1.0
    wrong = (cube_f + cube_l) / 2.0
    assert wrong.max() == pytest.approx(0.5) and wrong[0, a0, a2, a1, 0] == pytest.approx(0.5)
    right = keras.ops.convert_to_numpy(ConnectionC(("frontal", "lateral"))([cube_f, cube_l]))
    assert right[0, a0, a1, a2, 0] == pytest.approx(1.0)
    assert right[0, a0, a2, a1, 0] == pytest.approx(0.0)


def test_lifted_projections_intersect_at_the_voxel() -> None:
    """Project a one-voxel volume with plain sums, lift each view, fuse: the rays meet there."""
    d0, d1, d2 = 6, 7, 8
    voxel = (2, 5, 1)
    vol = np.zeros((d0, d1, d2), np.float32)
    vol[voxel] = 1.0
    frontal = vol.sum(axis=1)[None, ..., None]  # (1, D0, D2, 1): rows axis 0, columns axis 2
    lateral = vol.sum(axis=2)[None, ..., None]  # (1, D0, D1, 1): rows axis 0, columns axis 1
    lifted_f = _identity_lift((d0, d2), d1)(frontal)
    lifted_l = _identity_lift((d0, d1), d2)(lateral)
    fused = keras.ops.convert_to_numpy(ConnectionC(("frontal", "lateral"))([lifted_f, lifted_l]))
    assert fused.shape == (1, d0, d1, d2, 1)
    assert np.unravel_index(np.argmax(fused[0, ..., 0]), (d0, d1, d2)) == voxel
    assert fused[0, ..., 0][voxel] == pytest.approx(1.0)
    assert np.sort(fused.ravel())[-2] == pytest.approx(0.5)  # elsewhere only one ray


# === Back-projection ===

BP_SHAPE = (16, 20, 24)
BP_SPACING = (15.0, 13.0, 11.0)  # anisotropic and ~260 mm wide, so the cone covers the volume


@pytest.mark.parametrize("geometry", ["parallel", "xprospect_mean", "x2ct"])
@pytest.mark.parametrize("view", ["frontal", "lateral"])
def test_back_projection_matches_tensorflow_adjoint(geometry: str, view: str) -> None:
    from xprospect.projection import back_project, geometry_preset

    images = _rand(2, 18, 18, 1)
    ours = keras.ops.convert_to_numpy(BackProjection(geometry, view, BP_SHAPE, BP_SPACING)(images))
    ref = np.asarray(
        back_project(images, geometry_preset(geometry, view, 18), BP_SHAPE, BP_SPACING)
    )
    assert ours.shape == ref.shape == (2, *BP_SHAPE, 1)
    atol = 1e-6 * float(np.abs(ref).max())
    assert_allclose(ours, ref, rtol=1e-5, atol=atol)
    assert_allclose(ref, ours, rtol=1e-5, atol=atol)
    assert float(np.abs(ref).max()) > 0


@pytest.mark.parametrize("geometry", ["parallel", "x2ct"])
def test_normalized_back_projection_of_ones(geometry: str) -> None:
    layer = BackProjection(geometry, "frontal", BP_SHAPE, BP_SPACING, normalize=True)
    out = keras.ops.convert_to_numpy(layer(np.ones((1, 18, 18, 1), np.float32)))[0, ..., 0]
    reached = out > 0
    assert reached.mean() > 0.9
    assert_allclose(out[reached], 1.0, rtol=1e-5)
    assert_allclose(out[~reached], 0.0)


def test_back_projection_default_spacing_and_config() -> None:
    layer = BackProjection("mean", "lateral", 8)
    out = layer(_rand(1, 8, 8, 1))
    assert tuple(out.shape) == (1, 8, 8, 8, 1)
    clone = BackProjection.from_config(layer.get_config())
    assert_allclose(keras.ops.convert_to_numpy(clone(np.ones((1, 8, 8, 1), np.float32))), 1.0 / 8)
