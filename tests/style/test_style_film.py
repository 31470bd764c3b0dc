"""Film-like augmentation of domain A (issue 17): each feature against an independent reference,
determinism, config errors, and that style training applies it to domain A's training stream
only (without training)."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from scipy import ndimage as ndi

from xprospect.errors import ConfigError, GeometryError
from xprospect.preprocessing import percentile_window
from xprospect.style.config import style_config_from_dict
from xprospect.style.film import (
    FilmAugmentation,
    FilmAugmentationConfig,
    film_seed,
    poisson_gaussian,
)
from xprospect.style.training import DomainImages, StyleTrainingRun, film_augment_dataset

OFF = {
    "position_probability": 0.0,
    "blur_probability": 0.0,
    "noise_probability": 0.0,
    "gamma_probability": 0.0,
    "border_probability": 0.0,
    "marker_probability": 0.0,
    "window": False,
}


def only(**over: Any) -> FilmAugmentationConfig:
    """Every feature off but the ones ``over`` turns on."""
    return FilmAugmentationConfig(**{**OFF, **over})


def ramp(size: int = 48) -> np.ndarray:
    y, x = np.mgrid[:size, :size] / (size - 1)
    return (0.1 + 0.8 * (0.6 * x + 0.4 * y)).astype(np.float32)


def test_same_seed_same_image_and_output_in_range() -> None:
    image = ramp()
    cfg = FilmAugmentationConfig(blur_probability=0.5)
    a = FilmAugmentation(cfg, seed=7)
    out = a(image)
    np.testing.assert_array_equal(out, FilmAugmentation(cfg, seed=7)(image))
    assert a.draw(image.shape) == a.draw(image.shape)
    assert out.shape == image.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    others = [FilmAugmentation(cfg, seed=s)(image) for s in range(1, 4)]
    assert all(np.abs(o - out).max() > 0.05 for o in others)
    np.testing.assert_array_equal(image, ramp())  # the input is not modified


def test_poisson_gaussian_variance_matches_the_model() -> None:
    gain, read = 2e-3, 0.01
    flat = np.full((256, 256), 0.5, np.float32)
    cfg = only(
        noise_probability=1.0, noise_gain_range=[gain, gain], read_noise_std_range=[read] * 2
    )
    out = FilmAugmentation(cfg, seed=3)(flat).astype(np.float64)
    np.testing.assert_allclose(out.var(), gain * 0.5 + read**2, rtol=0.05)
    np.testing.assert_allclose(out.mean(), 0.5, atol=3 * np.sqrt(gain * 0.5 + read**2) / 256)
    # Signal-dependent: a brighter flat image is noisier by exactly the quantum term.
    bright = FilmAugmentation(cfg, seed=4)(np.full_like(flat, 0.9)).astype(np.float64)
    np.testing.assert_allclose(bright.var(), gain * 0.9 + read**2, rtol=0.05)


def test_tiny_gain_uses_the_gaussian_limit_with_the_same_variance() -> None:
    flat = np.full((256, 256), 0.5)
    for gain in (1e-9, 1e-30):  # 5e8 and 5e29 counts: beyond NumPy's Poisson sampler
        out = poisson_gaussian(flat, gain, 0.0, seed=0)
        np.testing.assert_allclose(out.var(), gain * 0.5, rtol=0.05)
    np.testing.assert_array_equal(poisson_gaussian(flat, 0.0, 0.0, seed=0), flat)


def test_gamma_is_the_power_curve() -> None:
    image = ramp()
    cfg = only(gamma_probability=1.0, gamma_range=[1.3, 1.3])
    aug = FilmAugmentation(cfg, seed=1)
    gamma = aug.draw(image.shape)["gamma"]["gamma"]
    np.testing.assert_allclose(gamma, 1.3, rtol=1e-12)
    np.testing.assert_allclose(aug(image), image.astype(np.float64) ** 1.3, rtol=1e-5, atol=1e-7)


def test_borders_make_each_margin_constant() -> None:
    image = ramp(50)
    width = 0.1  # 5 px of 50
    cfg = only(
        border_probability=1.0,
        border_width_range=[width, width],
        border_tilt_deg=0.0,
        border_value_range=[0.02, 0.02],
    )
    out = FilmAugmentation(cfg, seed=2)(image)
    for band in (out[:5], out[-5:], out[:, :5], out[:, -5:]):
        np.testing.assert_allclose(band, 0.02, rtol=1e-6)
    np.testing.assert_allclose(out[5:-5, 5:-5], image[5:-5, 5:-5], rtol=1e-6)
    bright = dataclasses.replace(cfg, bright_border_fraction=1.0)
    np.testing.assert_allclose(FilmAugmentation(bright, seed=2)(image)[:5], 0.98, rtol=1e-6)


def test_markers_are_bright_blocks_near_corners() -> None:
    image = np.zeros((64, 64), np.float32)
    cfg = only(
        marker_probability=1.0,
        max_markers=1,
        marker_size_range=[0.0625, 0.0625],
        marker_value_range=[0.9, 0.9],
        corner_fraction=0.15,
    )
    for seed in range(5):
        out = FilmAugmentation(cfg, seed=seed)(image)
        rows, cols = np.nonzero(out)
        assert len(rows) == 16  # one 4x4 block
        np.testing.assert_allclose(out[rows, cols], 0.9, rtol=1e-6)
        assert np.ptp(rows) == 3 and np.ptp(cols) == 3
        near = 0.15 * 64 + 4
        assert min(rows.min(), 63 - rows.max()) <= near
        assert min(cols.min(), 63 - cols.max()) <= near


def test_positioning_shift_and_scale() -> None:
    image = ramp(40)
    cfg = only(position_probability=1.0, shift_fraction=0.1, rotation_deg=0.0, scale_range=[1, 1])
    aug = FilmAugmentation(cfg, seed=5)
    shift = aug.draw(image.shape)["position"]["shift_px"]
    expected = ndi.shift(image.astype(np.float64), shift, order=1, mode="constant", cval=0.0)
    np.testing.assert_allclose(aug(image), expected, atol=1e-5)
    ones = np.ones((64, 64), np.float32)
    half = only(
        position_probability=1.0, shift_fraction=0.0, rotation_deg=0.0, scale_range=[0.5] * 2
    )
    # Zooming out by 0.5 leaves the body a quarter of the frame, air around it.
    np.testing.assert_allclose(FilmAugmentation(half, seed=0)(ones).mean(), 0.25, atol=0.02)
    turned = only(position_probability=1.0, shift_fraction=0.0, rotation_deg=30.0)
    assert abs(FilmAugmentation(turned, seed=1).draw(ones.shape)["position"]["rotation_deg"]) <= 30


def test_blur_kernel_has_the_drawn_sigma() -> None:
    impulse = np.zeros((41, 41), np.float32)
    impulse[20, 20] = 1.0
    aug = FilmAugmentation(only(blur_probability=1.0, blur_sigma_px_range=[1.5, 1.5]), seed=0)
    out = aug(impulse).astype(np.float64)
    np.testing.assert_allclose(out.sum(), 1.0, rtol=1e-4)
    offsets = np.arange(41) - 20
    np.testing.assert_allclose((out.sum(axis=0) * offsets**2).sum(), 1.5**2, rtol=1e-3)


def test_window_is_the_real_radiographs_percentile_window() -> None:
    image = ramp()
    out = FilmAugmentation(only(window=True), seed=0, percentiles=(2.0, 98.0))(image)
    np.testing.assert_allclose(out, percentile_window(image, 2.0, 98.0), atol=1e-6)


def test_bad_inputs_raise_typed_errors() -> None:
    with pytest.raises(ConfigError, match="seed"):
        FilmAugmentation(FilmAugmentationConfig(), seed=-1)
    with pytest.raises(GeometryError, match="2D"):
        FilmAugmentation(FilmAugmentationConfig(), seed=0)(np.zeros((2, 8, 8)))
    base = {"data": {"dir": "d"}, "training": {"steps": 10}}
    cfg = style_config_from_dict(base)
    assert cfg.data.film_augmentation is None  # off unless asked for
    cfg = style_config_from_dict({**base, "data": {"dir": "d", "film_augmentation": {}}})
    assert cfg.data.film_augmentation == FilmAugmentationConfig()
    bad = {
        "gamma_range": [0.0, 1.0],
        "noise_probability": 1.5,
        "scale_range": [0.9],
        "max_markers": 0,
        "rotation_deg": -1.0,
        "no_such_key": 1,
    }
    for key, value in bad.items():
        data = {"dir": "d", "film_augmentation": {key: value}}
        with pytest.raises(ConfigError, match=f"data.film_augmentation.{key}"):
            style_config_from_dict({**base, "data": data}, source="s.yaml")


def _first_batches(run: Any, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    ctx = SimpleNamespace(
        num_input_pipelines=1,
        input_pipeline_id=0,
        num_replicas_in_sync=1,
        get_per_replica_batch_size=lambda b: b,
    )
    ds = run._dataset_fn(0)(ctx)
    return [(a.numpy()[..., 0], b.numpy()[..., 0]) for a, b in ds.take(n)]


def test_training_augments_domain_a_only() -> None:
    rng = np.random.default_rng(0)
    a_train = rng.uniform(0.2, 0.8, (3, 16, 16)).astype(np.float32)
    b_train = rng.uniform(0.2, 0.8, (3, 16, 16)).astype(np.float32)
    film = {"film_augmentation": {"border_probability": 1.0}}
    run = object.__new__(StyleTrainingRun)  # only the input pipeline, no networks
    run.images = DomainImages(a_train, a_train[:1], b_train, b_train[:1])
    run.cfg = style_config_from_dict({"data": {"dir": "d", "size": 16}, "training": {"steps": 3}})
    plain = _first_batches(run, 4)
    run.cfg = style_config_from_dict(
        {"data": {"dir": "d", "size": 16, **film}, "training": {"steps": 3}}
    )
    augmented = _first_batches(run, 4)
    for (a0, b0), (a1, b1) in zip(plain, augmented, strict=True):
        np.testing.assert_array_equal(b1, b0)  # domain B untouched, same order
        assert any(np.array_equal(a0[0], x) for x in a_train)
        assert not any(np.array_equal(a1[0], x) for x in a_train)
    # The n-th image of the stream is FilmAugmentation seeded film_seed(seed, n).
    cfg = run.cfg.data.film_augmentation
    seed = run.cfg.training.seed
    for n, ((a0, _), (a1, _)) in enumerate(zip(plain, augmented, strict=True)):
        expected = FilmAugmentation(cfg, film_seed(seed, n), (0.5, 99.5))(a0[0])
        np.testing.assert_array_equal(a1[0], expected)
    # Validation images are never augmented.
    np.testing.assert_array_equal(run.images.a_val, a_train[:1])


def test_film_augment_dataset_is_reproducible() -> None:
    import tensorflow as tf

    images = np.random.default_rng(1).uniform(0, 1, (2, 16, 16, 1)).astype(np.float32)
    cfg = FilmAugmentationConfig()

    def stream() -> list[np.ndarray]:
        ds = film_augment_dataset(tf.data.Dataset.from_tensor_slices(images).repeat(), cfg, 3)
        return [x.numpy() for x in ds.take(4)]

    first, second = stream(), stream()
    for x, y in zip(first, second, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(first[0], first[2])  # the same image, another draw
