"""The CycleGAN networks: shapes, reflection padding, the 70x70 receptive field, Keras contract."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras_contract import check_layer, check_model

from xprospect.errors import ConfigError
from xprospect.models.cyclegan import (
    STYLE_PRESETS,
    PatchDiscriminator2D,
    ReflectionPadding2D,
    ResnetBlock2D,
    ResnetGenerator,
    build_style_discriminator,
    build_style_generator,
    default_blocks,
    patch_receptive_field,
)

RNG = np.random.default_rng(0)


def _images(n: int, size: int) -> np.ndarray:
    return RNG.random((n, size, size, 1)).astype("float32")


def test_reflection_padding_matches_numpy_reflect() -> None:
    x = RNG.normal(size=(2, 5, 7, 3)).astype("float32")
    out = keras.ops.convert_to_numpy(ReflectionPadding2D(2)(x))
    expected = np.pad(x, [(0, 0), (2, 2), (2, 2), (0, 0)], mode="reflect")
    np.testing.assert_allclose(out, expected, rtol=0, atol=0)


def test_generator_maps_unit_images_to_unit_images_of_the_same_size() -> None:
    g = ResnetGenerator(32, filters=4, n_blocks=2)
    out = keras.ops.convert_to_numpy(g(_images(2, 32)))
    assert out.shape == (2, 32, 32, 1) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    any_size = ResnetGenerator(None, filters=4, n_blocks=1)
    assert keras.ops.shape(any_size(_images(1, 48))) == (1, 48, 48, 1)


def test_cyclegan_block_counts_and_presets() -> None:
    assert default_blocks(128) == 6 and default_blocks(256) == 9 and default_blocks(None) == 9
    assert STYLE_PRESETS["CycleGAN-128"]["generator"]["n_blocks"] == 6
    assert STYLE_PRESETS["CycleGAN-256"]["generator"]["n_blocks"] == 9
    g = build_style_generator(128, filters=4)
    assert g.blocks == 6 and sum(name.startswith("res") for name in [x.name for x in g.layers]) == 6


def test_discriminator_sees_70x70_patches() -> None:
    d = PatchDiscriminator2D(128, filters=4)
    assert d.receptive_field == 70 == patch_receptive_field(4, [2, 2, 2, 1, 1])
    assert d.output_shape == (None, 14, 14, 1)  # pix2pix' 70x70 PatchGAN map at 128^2
    # Measured: without normalisation (which couples every pixel), the gradient of one interior
    # logit reaches exactly a 70 x 70 input window.
    plain = PatchDiscriminator2D(128, filters=4, norm="none")
    x = keras.Variable(_images(1, 128))
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(x.value)
        logit = plain(x.value)[0, 7, 7, 0]
    grad = np.abs(tape.gradient(logit, x.value).numpy()[0, ..., 0])
    rows, cols = np.nonzero(grad.sum(1))[0], np.nonzero(grad.sum(0))[0]
    assert rows.max() - rows.min() + 1 == 70 and cols.max() - cols.min() + 1 == 70


def test_bad_arguments_raise_config_errors() -> None:
    with pytest.raises(ConfigError, match="divisible"):
        ResnetGenerator(30, filters=4, n_blocks=1)
    with pytest.raises(ConfigError, match="norm"):
        PatchDiscriminator2D(32, norm="layer")
    with pytest.raises(ConfigError, match="style generator"):
        build_style_generator(32, width=3)
    with pytest.raises(ConfigError, match="style discriminator"):
        build_style_discriminator(32, width=3)
    with pytest.raises(ConfigError, match="input channels"):
        ResnetBlock2D(8)(np.zeros((1, 4, 4, 3), "float32"))


def _dir(path):
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_layers_keep_the_keras_contract(tmp_path) -> None:
    check_layer(ReflectionPadding2D(3), {"padding": 3}, _images(1, 8), _dir(tmp_path / "pad"))
    kwargs = {"filters": 2, "norm": "instance", "dropout": 0.0}
    x = RNG.normal(size=(1, 6, 6, 2)).astype("float32")
    check_layer(ResnetBlock2D(**kwargs), kwargs, x, _dir(tmp_path / "block"))


def test_networks_round_trip_through_keras_and_savedmodel(tmp_path) -> None:
    from keras_contract import check_registration

    g_kwargs = {"size": 16, "filters": 2, "n_blocks": 1, "n_downsampling": 2, "norm": "instance"}
    g = ResnetGenerator(**g_kwargs)
    check_registration(g, g_kwargs)
    check_model(g, _images(2, 16), _dir(tmp_path / "g"))
    d_kwargs = {"size": 32, "filters": 2, "n_layers": 3, "kernel_size": 4}
    d = PatchDiscriminator2D(**d_kwargs)
    check_registration(d, d_kwargs)
    check_model(d, _images(2, 32), _dir(tmp_path / "d"))
