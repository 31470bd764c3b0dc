"""Tests of xprospect.style.metrics against SciPy and analytic spectra.

References: ``scipy.stats.mannwhitneyu`` (AUC), ``scipy.stats.wasserstein_distance``,
``scipy.spatial.distance.jensenshannon``, Parseval's theorem and the spectra of cosines and white
noise. The classifier two-sample test is checked on synthetic "radiographs" (smooth random blobs
plus noise) that are either drawn from one distribution or visibly differ.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.spatial.distance import jensenshannon
from scipy.stats import mannwhitneyu, wasserstein_distance

from xprospect.errors import ConfigError, GeometryError, InvalidValuesError
from xprospect.style.metrics import (
    C2STResult,
    classifier_two_sample_test,
    histogram_distances,
    mean_periodogram,
    radial_power_spectrum,
    roc_auc,
    save_histogram_plot,
    save_spectrum_plot,
    save_style_grid,
    spectrum_distance,
    style_scores,
)


def blobs(
    n: int,
    size: int,
    seed: int,
    *,
    stripes: float = 0.0,
    offset: float = 0.0,
    noise: float = 0.03,
) -> np.ndarray:
    """``(n, size, size)`` float32 in [0, 1]: four Gaussian blobs of random place, width and
    height on a grey background, Gaussian noise, optional vertical stripes (0.25 cycles/pixel)
    and an optional brightness offset."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    out = np.full((n, size, size), 0.3 + offset)
    for _ in range(4):
        cy, cx = rng.uniform(0, size, (2, n, 1, 1))
        sigma = rng.uniform(size / 10, size / 4, (n, 1, 1))
        amp = rng.uniform(0.1, 0.3, (n, 1, 1))
        out += amp * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
    out += noise * rng.standard_normal(out.shape)
    out += stripes * np.cos(2 * np.pi * 0.25 * xx)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


# --- ROC AUC ---------------------------------------------------------------------------------
def test_roc_auc_hand_computed() -> None:
    # Positive 0.35 beats negative 0.1 only; positive 0.8 beats both: 3 of 4 pairs.
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75, abs=1e-12)
    # A tie between classes counts half.
    assert roc_auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5, abs=1e-12)
    assert roc_auc([1, 0, 1], [0.2, 0.2, 0.9]) == pytest.approx(0.75, abs=1e-12)
    assert roc_auc(np.array([True, False]), [1.0, 0.0]) == 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_auc_matches_mann_whitney(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 57)
    # Integer scores: many ties, within and between classes.
    scores = rng.integers(0, 6, 57) + labels
    pos, neg = scores[labels == 1], scores[labels == 0]
    expected = mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg))
    np.testing.assert_allclose(roc_auc(labels, scores), expected, rtol=1e-12)


def test_roc_auc_rejects_bad_input() -> None:
    with pytest.raises(InvalidValuesError, match="both classes"):
        roc_auc([1, 1], [0.1, 0.2])
    with pytest.raises(InvalidValuesError, match="0 or 1"):
        roc_auc([0, 2], [0.1, 0.2])
    with pytest.raises(GeometryError):
        roc_auc([0, 1, 1], [0.1, 0.2])


# --- histograms ------------------------------------------------------------------------------
def test_histogram_distances_match_scipy() -> None:
    a = blobs(5, 20, 0)
    b = blobs(7, 18, 1, offset=0.1)[..., None]  # other count, size and a channel axis
    got = histogram_distances(a, b, bins=32)
    np.testing.assert_allclose(
        got["wasserstein"], wasserstein_distance(a.ravel(), b.ravel()), rtol=1e-9
    )
    pa, _ = np.histogram(a, bins=32, range=(0, 1))
    pb, _ = np.histogram(b, bins=32, range=(0, 1))
    np.testing.assert_allclose(got["jensen_shannon"], jensenshannon(pa, pb, base=2), rtol=1e-9)
    assert 0.0 < got["jensen_shannon"] < 1.0


def test_histogram_distances_analytic_cases() -> None:
    a = np.full((2, 8, 8), 0.2, np.float32)
    b = np.full((3, 8, 8), 0.5, np.float32)
    # Moving every pixel by 0.3 costs 0.3; disjoint histograms are 1 apart (base 2).
    got = histogram_distances(a, b)
    np.testing.assert_allclose(got["wasserstein"], 0.3, rtol=1e-6)
    np.testing.assert_allclose(got["jensen_shannon"], 1.0, rtol=1e-12)
    same = histogram_distances(a, a[:1])
    np.testing.assert_allclose([same["wasserstein"], same["jensen_shannon"]], 0.0, atol=1e-12)
    with pytest.raises(InvalidValuesError, match=r"\[0, 1\]"):
        histogram_distances(a * 2 - 1, b)


# --- spectra ---------------------------------------------------------------------------------
@pytest.mark.parametrize("window", ["hann", None])
@pytest.mark.parametrize(("ky", "kx"), [(0, 5), (3, 4), (7, 0), (12, 9)])
def test_cosine_peaks_in_its_ring(window, ky: int, kx: int) -> None:
    n = 64
    yy, xx = np.mgrid[0:n, 0:n]
    image = 0.5 + 0.3 * np.cos(2 * np.pi * (ky * yy + kx * xx) / n + 0.4)
    freqs, power = radial_power_spectrum(image[None], window=window)
    np.testing.assert_allclose(freqs, np.arange(1, n // 2 + 1) / n, rtol=1e-12)
    f = np.hypot(ky, kx) / n
    peak = int(np.argmax(power))
    # The ring centred nearest f holds it (ring half-width 0.5 / n).
    assert abs(freqs[peak] - f) <= 0.5 / n + 1e-12, (freqs[peak], f)


@pytest.mark.parametrize("window", ["hann", None])
def test_white_noise_is_flat_at_its_variance(window) -> None:
    sigma = 0.1
    noise = np.random.default_rng(3).normal(0.5, sigma, (48, 64, 64))
    freqs, power = radial_power_spectrum(noise, window=window)
    # Each of the 32 rings averages >= 8 frequencies over 48 images: a few % scatter.
    np.testing.assert_allclose(power, sigma**2, rtol=0.2)
    np.testing.assert_allclose(power[4:].mean(), sigma**2, rtol=0.03)
    assert freqs[-1] == 0.5


def test_parseval() -> None:
    rng = np.random.default_rng(4)
    x = rng.random((3, 24, 40))
    # 2D: the mean PSD over all frequencies is the mean per-image variance.
    np.testing.assert_allclose(
        mean_periodogram(x, window=None).mean(), x.var(axis=(1, 2)).mean(), rtol=1e-6
    )
    # Radial: for noise band-limited to |f| < 0.4 cycles/pixel, integrating the ring PSD over
    # annuli (2 pi f df) gives back the variance (up to rings vs pixel counts).
    n = 128
    spec = np.fft.fft2(rng.standard_normal((16, n, n)))
    f = np.hypot(np.fft.fftfreq(n)[:, None], np.fft.fftfreq(n)[None, :])
    band = np.real(np.fft.ifft2(spec * (f < 0.4)))
    freqs, power = radial_power_spectrum(band, window=None)
    df = freqs[1] - freqs[0]
    np.testing.assert_allclose(
        np.sum(power * 2 * np.pi * freqs * df), band.var(axis=(1, 2)).mean(), rtol=0.02
    )


def test_spectrum_distance_in_decades() -> None:
    a = blobs(6, 32, 0)
    # Amplitude x sqrt(10) is power x 10: one decade at every frequency.
    np.testing.assert_allclose(spectrum_distance(a, a * np.sqrt(10.0)), 1.0, rtol=1e-6)
    assert spectrum_distance(a, a[..., None]) == 0.0
    assert spectrum_distance(a, blobs(6, 32, 1)) < spectrum_distance(
        a, blobs(6, 32, 1, stripes=0.1)
    )
    with pytest.raises(GeometryError, match="one size"):
        spectrum_distance(a, blobs(2, 16, 0))
    with pytest.raises(ConfigError, match="too fine"):
        radial_power_spectrum(a, n_bins=100)


# --- classifier two-sample test --------------------------------------------------------------
@pytest.fixture(scope="module")
def reference_blobs() -> np.ndarray:
    return blobs(100, 32, 10)


def test_c2st_same_distribution_is_chance(reference_blobs) -> None:
    result = classifier_two_sample_test(reference_blobs, blobs(110, 32, 11), seed=0)
    assert isinstance(result, C2STResult)
    # Balanced: 100 of each, 30 of each held out.
    assert (result.n_train, result.n_test) == (140, 60)
    assert abs(result.accuracy - 0.5) <= 0.15, result
    assert abs(result.auc - 0.5) <= 0.15, result
    assert result.p_value > 0.01
    assert set(result.to_dict()) == {"accuracy", "auc", "n_train", "n_test", "p_value"}


@pytest.mark.parametrize(
    "kwargs", [{"stripes": 0.1}, {"offset": 0.15}], ids=["stripes", "brightness"]
)
def test_c2st_tells_different_sets_apart(reference_blobs, kwargs) -> None:
    result = classifier_two_sample_test(reference_blobs, blobs(100, 32, 12, **kwargs), seed=0)
    assert result.accuracy >= 0.9, result
    assert result.auc >= 0.95, result
    assert result.p_value < 1e-6


def test_c2st_rejects_bad_input(reference_blobs) -> None:
    with pytest.raises(ConfigError, match="test_fraction"):
        classifier_two_sample_test(reference_blobs, reference_blobs, test_fraction=1.0)
    with pytest.raises(ConfigError, match="cannot be split"):
        classifier_two_sample_test(reference_blobs[:1], reference_blobs)
    with pytest.raises(GeometryError, match="image size"):
        classifier_two_sample_test(reference_blobs, blobs(4, 16, 0))
    with pytest.raises(GeometryError, match=r"\(N, H, W\)"):
        classifier_two_sample_test(reference_blobs[0], reference_blobs)
    with pytest.raises(InvalidValuesError, match="NaN"):
        classifier_two_sample_test(reference_blobs * np.nan, reference_blobs)


def test_style_scores_wires_the_metrics() -> None:
    # 40 x 40 images shrink to 32 x 32 for the classifier (a non-integer factor).
    a, b = blobs(24, 40, 20), blobs(24, 40, 21, offset=0.1)[..., None]
    kwargs = {"epochs": 2, "image_size": 32}
    scores = style_scores(a, b, seed=3, c2st_kwargs=kwargs)
    c2st = classifier_two_sample_test(a, b, seed=3, **kwargs)  # same seed: same result
    hist = histogram_distances(a, b)
    expected = {
        "c2st_accuracy": c2st.accuracy,
        "c2st_auc": c2st.auc,
        "hist_wasserstein": hist["wasserstein"],
        "hist_js": hist["jensen_shannon"],
        "spectrum_log10_l1": spectrum_distance(a, b),
    }
    assert scores.keys() == expected.keys()
    np.testing.assert_allclose(list(scores.values()), list(expected.values()), rtol=1e-6)
    with pytest.raises(ConfigError, match="seed"):
        style_scores(a, b, c2st_kwargs={"seed": 1})
    with pytest.raises(GeometryError, match="image size"):
        style_scores(a, blobs(4, 32, 0))


# --- figures ---------------------------------------------------------------------------------
def _check_png(path: Path, written: Path) -> None:
    assert written == path
    assert path.stat().st_size > 1000
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.width > 100 and im.height > 100
    # Atomic write: no temporary file left beside it.
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_save_style_grid(tmp_path) -> None:
    drr = blobs(5, 24, 0)
    columns = {
        "DRR": drr,
        "translated": blobs(5, 24, 1, noise=0.08)[..., None],
        "cycled": drr[:2],  # fewer than rows: empty cells
        "real": blobs(5, 24, 2, offset=0.1),
    }
    path = tmp_path / "grid" / "style.png"
    _check_png(path, save_style_grid(columns, path, rows=3, title="epoch 1"))
    with pytest.raises(ConfigError):
        save_style_grid({}, tmp_path / "empty.png")


def test_save_spectrum_and_histogram_plots(tmp_path) -> None:
    sets = {"DRR": blobs(4, 32, 0), "real": blobs(4, 32, 1, stripes=0.1)}
    spectra = {name: radial_power_spectrum(images) for name, images in sets.items()}
    spectrum_png = tmp_path / "spectra" / "spectrum.png"
    _check_png(spectrum_png, save_spectrum_plot(spectra, spectrum_png, title="spectra"))
    hist_png = tmp_path / "hist" / "hist.png"
    _check_png(hist_png, save_histogram_plot(sets, hist_png))
