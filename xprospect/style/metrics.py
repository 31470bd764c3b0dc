"""How real does a set of radiographs look? Style metrics without pretrained networks.

A CycleGAN that turns DRRs (digitally reconstructed radiographs) into the style of real chest
X-rays is judged by comparing two sets of images: "DRR vs real" before translation and
"translated vs real" after. No pretrained network can be downloaded here (so no FID/KID on
Inception features); every metric below is computed from the images alone.

Images are float32 arrays with values in [0, 1] (display convention, ``docs/conventions.md``),
shape ``(N, H, W)`` or ``(N, H, W, 1)``. The two sets may hold different numbers of images.

- :func:`classifier_two_sample_test` (C2ST, Lopez-Paz and Oquab, ICLR 2017): a small CNN, trained
  from scratch, tries to tell the two sets apart; its held-out accuracy and AUC are 0.5 when the
  sets are indistinguishable (to this classifier) and 1.0 when they are trivially told apart. It
  is the headline number: it sees texture, noise, contrast and layout together.
- :func:`histogram_distances`: distances between the pixel-intensity distributions of the two
  sets (earth mover's distance in intensity units, and the Jensen-Shannon distance of their
  histograms, in [0, 1]). Blind to where the pixels are.
- :func:`radial_power_spectrum` and :func:`spectrum_distance`: the azimuthally averaged power
  spectrum, which says how much structure there is at each scale (noise, sharpness, grid lines);
  the distance is in decades of power.
- :func:`style_scores`: all of the above as one flat dict, for logs and tables.
- :func:`save_style_grid`, :func:`save_spectrum_plot`, :func:`save_histogram_plot`: PNG figures
  (matplotlib Agg canvas, written atomically).

Lower is better for every score, with 0.5 (not 0) the best value of the two C2ST scores.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from matplotlib.figure import Figure
from scipy.special import xlogy
from scipy.stats import binomtest, rankdata

from xprospect.errors import ConfigError, GeometryError, InvalidValuesError
from xprospect.preprocessing import resize_images
from xprospect.viz import save_figure

__all__ = [
    "C2STResult",
    "classifier_two_sample_test",
    "histogram_distances",
    "mean_periodogram",
    "radial_power_spectrum",
    "roc_auc",
    "save_histogram_plot",
    "save_spectrum_plot",
    "save_style_grid",
    "spectrum_distance",
    "style_scores",
]

Window = Literal["hann"] | None

# Power below this floor (e.g. a constant image) is clipped before log10, so that a missing
# band counts as a finite (large) difference rather than inf.
_LOG_POWER_FLOOR = 1e-20
# Images per FFT chunk: bounds the complex128 temporaries to ~32 * H * W * 16 bytes.
_FFT_CHUNK = 32


# --- input checks ----------------------------------------------------------------------------
def _as_images(images: npt.ArrayLike, name: str) -> np.ndarray:
    """Returns ``images`` as a float32 ``(N, H, W)`` array, checking shape and finiteness."""
    a = np.asarray(images, dtype=np.float32)
    if a.ndim == 4 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim != 3:
        raise GeometryError(f"{name}: expected images (N, H, W) or (N, H, W, 1), got {a.shape}")
    if a.shape[0] == 0 or a.shape[1] < 2 or a.shape[2] < 2:
        raise GeometryError(f"{name}: expected at least one image of 2 x 2 pixels, got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise InvalidValuesError(f"{name}: images hold NaN or Inf")
    return a


def _check_unit_range(a: np.ndarray, name: str) -> None:
    lo, hi = float(a.min()), float(a.max())
    # A small tolerance for float round-off of a generator's sigmoid/rescaling.
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise InvalidValuesError(
            f"{name}: values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}] "
            "(a tanh generator's output needs (x + 1) / 2 first)"
        )


def _shrink(images: np.ndarray, image_size: int) -> np.ndarray:
    """Shrinks every axis longer than ``image_size`` to it by area averaging; ``(N, h, w)``.

    Area averaging is the anti-aliased downsampling that equals a block mean for integer factors,
    so shrinking does not fold high-frequency texture back into the image as aliasing.
    """
    _, h, w = images.shape
    return resize_images(images, (min(h, image_size), min(w, image_size)))


# --- ROC AUC ---------------------------------------------------------------------------------
def roc_auc(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Area under the ROC curve, from ranks (the Mann-Whitney U statistic over n1 * n0).

    It is the probability that a random positive scores higher than a random negative, ties
    counted half.

    Args:
        labels: ``(n,)`` binary labels (0/1 or bool); 1 is the positive class.
        scores: ``(n,)`` scores, higher meaning more likely positive.

    Returns:
        The AUC in [0, 1].

    Raises:
        GeometryError: If labels and scores differ in length or are not 1-D.
        InvalidValuesError: If labels are not binary, only one class is present, or scores hold
            NaN.
    """
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or y.shape != s.shape:
        raise GeometryError(
            f"labels and scores must be 1-D of one length, got {y.shape}, {s.shape}"
        )
    if not np.all(np.isin(y, (0, 1))):
        raise InvalidValuesError("labels must be 0 or 1")
    if np.isnan(s).any():
        raise InvalidValuesError("scores hold NaN")
    positive = y.astype(bool)
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise InvalidValuesError(f"AUC needs both classes, got {n_pos} positive, {n_neg} negative")
    ranks = rankdata(s)  # average ranks: a tie between classes counts half
    u_pos = float(ranks[positive].sum()) - n_pos * (n_pos + 1) / 2
    return u_pos / (n_pos * n_neg)


# --- classifier two-sample test --------------------------------------------------------------
@dataclass(frozen=True)
class C2STResult:
    """Outcome of a classifier two-sample test on held-out images.

    Attributes:
        accuracy: Held-out accuracy at threshold 0.5; 0.5 is chance (the held-out set is
            balanced).
        auc: Held-out ROC AUC of the classifier's probability for the second set.
        n_train: Training images, both sets together (equal numbers of each).
        n_test: Held-out images, both sets together (equal numbers of each).
        p_value: One-sided binomial p-value of the accuracy against chance, P(correct >= observed
            | p = 0.5): a small value means the sets are distinguishable.
    """

    accuracy: float
    auc: float
    n_train: int
    n_test: int
    p_value: float

    def to_dict(self) -> dict[str, float | int]:
        """The fields as a plain dict (JSON-ready)."""
        return asdict(self)


def _build_classifier(image_shape: tuple[int, int], seed: int) -> Any:
    import keras
    from keras import layers

    def init(n: int) -> keras.initializers.Initializer:
        return keras.initializers.GlorotUniform(seed=seed * 101 + n)

    # A stride-2 conv on the full-resolution input (it still sees pixel-scale texture: noise,
    # sharpness, stripes), two conv + max-pooling stages, global average pooling (global
    # intensity and texture statistics). ~6 k weights: a step on 32 images of 64 x 64 takes
    # ~10 ms on two CPU cores, so a test is seconds, most of it tracing the training step.
    inputs = keras.Input((*image_shape, 1))
    x = layers.Rescaling(2.0, offset=-1.0)(inputs)
    x = layers.Conv2D(
        8, 3, strides=2, padding="same", activation="relu", kernel_initializer=init(0)
    )(x)
    for n, filters in enumerate((16, 32), start=1):
        x = layers.Conv2D(
            filters, 3, padding="same", activation="relu", kernel_initializer=init(n)
        )(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(1, activation="sigmoid", kernel_initializer=init(9))(x)
    model = keras.Model(inputs, outputs, name="c2st_classifier")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=3e-3),
        loss="binary_crossentropy",
        jit_compile=False,  # XLA compiling costs more than it saves for a run of seconds
    )
    # Creating the optimizer's variables now spares a second trace of the training step (a
    # tf.function that creates variables on its first call is traced again).
    model.optimizer.build(model.trainable_variables)
    return model


def classifier_two_sample_test(
    a: npt.ArrayLike,
    b: npt.ArrayLike,
    *,
    test_fraction: float = 0.3,
    epochs: int = 20,
    batch_size: int = 32,
    seed: int = 0,
    image_size: int = 64,
) -> C2STResult:
    """Classifier two-sample test (Lopez-Paz and Oquab, 2017): can a small CNN tell a from b?

    Images of ``a`` are labelled 0 and of ``b`` 1. **Classes are balanced** by keeping
    ``n = min(len(a), len(b))`` images of each (a seeded random subset of the larger set), so
    chance is exactly 0.5 and the 0.5 threshold is unbiased. Each class is split the same way
    (stratified, seeded) into ``round(test_fraction * n)`` held-out images and the rest for
    training. Images with a side longer than ``image_size`` are shrunk to it by area averaging.
    The CNN (a stride-2 Conv2D + ReLU, two Conv2D + ReLU + max-pooling stages, global average
    pooling, one sigmoid unit) is trained from seeded initial weights with Adam (learning rate
    3e-3) on binary cross-entropy, in equal-size batches drawn in a seeded order (one
    permutation per epoch), so a run is reproducible on one machine without touching global
    seeds.

    Args:
        a: First image set ``(Na, H, W)`` or ``(Na, H, W, 1)``, values in [0, 1] (e.g. the
            translated DRRs).
        b: Second image set ``(Nb, H', W')`` or with a channel axis (e.g. real radiographs). It
            must have the same size as ``a`` after shrinking to ``image_size``.
        test_fraction: Fraction of each class held out, in (0, 1).
        epochs: Passes over the training images.
        batch_size: Training batch size.
        seed: Seed of the subset, split, weights and batch order.
        image_size: Longest side the classifier sees, in pixels.

    Returns:
        The held-out accuracy and AUC (0.5: indistinguishable; 1: fully distinguishable).

    Raises:
        ConfigError: On an invalid argument, or too few images to leave one of each class for
            training and for testing.
        GeometryError: If the image shapes are invalid or differ after resizing.
        InvalidValuesError: If images hold NaN/Inf.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    if epochs < 1 or batch_size < 1 or image_size < 4:
        raise ConfigError(
            f"need epochs >= 1, batch_size >= 1, image_size >= 4; "
            f"got {epochs}, {batch_size}, {image_size}"
        )
    xa = _shrink(_as_images(a, "a"), image_size)
    xb = _shrink(_as_images(b, "b"), image_size)
    if xa.shape[1:] != xb.shape[1:]:
        raise GeometryError(
            f"a and b differ in image size after shrinking to {image_size}: "
            f"{xa.shape[1:]} and {xb.shape[1:]}"
        )
    n = min(len(xa), len(xb))
    n_test = round(test_fraction * n)
    if n_test < 1 or n - n_test < 1:
        raise ConfigError(
            f"{n} images per class cannot be split with test_fraction={test_fraction}: "
            "each class needs at least one training and one held-out image"
        )

    rng = np.random.default_rng(seed)
    # Balanced subsets, shuffled; the first n_test of each go to the held-out set.
    ia = rng.permutation(len(xa))[:n]
    ib = rng.permutation(len(xb))[:n]
    x_train = np.concatenate([xa[ia[n_test:]], xb[ib[n_test:]]])[..., None]
    y_train = np.repeat(np.array([0.0, 1.0], np.float32), n - n_test)
    x_test = np.concatenate([xa[ia[:n_test]], xb[ib[:n_test]]])[..., None]
    y_test = np.repeat(np.array([0, 1]), n_test)

    import keras

    model = _build_classifier(x_train.shape[1:3], seed)
    # Own batch loop: Keras' fit() shuffles with TensorFlow's global seed, which we leave alone.
    # Batches are cut from a stream of per-epoch permutations, all of one size: a smaller last
    # batch would cost a second trace of the training step (longer than many steps).
    batch_size = min(batch_size, len(x_train))
    steps = epochs * math.ceil(len(x_train) / batch_size)
    stream = np.concatenate(
        [rng.permutation(len(x_train)) for _ in range(math.ceil(steps * batch_size / len(x_train)))]
    )
    for step in range(steps):
        batch = stream[step * batch_size : (step + 1) * batch_size]
        model.train_on_batch(x_train[batch], y_train[batch])
    prob = np.concatenate(
        [
            keras.ops.convert_to_numpy(model(x_test[i : i + 256], training=False)).reshape(-1)
            for i in range(0, len(x_test), 256)
        ]
    )

    correct = int(np.sum((prob > 0.5) == y_test.astype(bool)))
    return C2STResult(
        accuracy=correct / len(y_test),
        auc=roc_auc(y_test, prob),
        n_train=len(x_train),
        n_test=len(x_test),
        p_value=float(binomtest(correct, len(y_test), 0.5, alternative="greater").pvalue),
    )


# --- intensity histograms --------------------------------------------------------------------
def _wasserstein_1d(u: np.ndarray, v: np.ndarray) -> float:
    """Earth mover's distance between the empirical distributions of ``u`` and ``v``.

    It is the area between their cumulative distribution functions, evaluated exactly between
    consecutive sorted sample values.
    """
    u = np.sort(u)
    v = np.sort(v)
    grid = np.sort(np.concatenate([u, v]))
    widths = np.diff(grid)
    cdf_u = np.searchsorted(u, grid[:-1], side="right") / u.size
    cdf_v = np.searchsorted(v, grid[:-1], side="right") / v.size
    return float(np.sum(np.abs(cdf_u - cdf_v) * widths))


def _histogram(values: np.ndarray, bins: int) -> np.ndarray:
    counts, _ = np.histogram(values, bins=bins, range=(0.0, 1.0))
    return counts / counts.sum()


def _jensen_shannon_base2(p: np.ndarray, q: np.ndarray) -> float:
    m = 0.5 * (p + q)
    # xlogy gives 0 * log 0 = 0 for empty bins.
    kl_pm = np.sum(xlogy(p, p) - xlogy(p, m))
    kl_qm = np.sum(xlogy(q, q) - xlogy(q, m))
    divergence = 0.5 * (kl_pm + kl_qm) / math.log(2.0)
    return float(np.sqrt(max(divergence, 0.0)))


def histogram_distances(a: npt.ArrayLike, b: npt.ArrayLike, *, bins: int = 64) -> dict[str, float]:
    """Distances between the pixel-intensity distributions of two image sets.

    All pixels of all images of a set are pooled; the sets may differ in size and image shape.

    Args:
        a: Image set ``(Na, H, W)`` or ``(Na, H, W, 1)``, values in [0, 1].
        b: Image set ``(Nb, H', W')`` or with a channel axis, values in [0, 1].
        bins: Equal-width bins on [0, 1] of the histograms for the Jensen-Shannon distance.

    Returns:
        ``wasserstein``: the exact 1-D earth mover's distance between the two empirical
        intensity distributions (from the pixel values, not the histograms), in intensity units
        ([0, 1]; e.g. 0.1 for a set 0.1 brighter everywhere). ``jensen_shannon``: the
        Jensen-Shannon *distance* (square root of the divergence, logs base 2) of the
        ``bins``-bin histograms, in [0, 1] (0: same histogram, 1: disjoint).

    Raises:
        ConfigError: If ``bins < 2``.
        GeometryError: On an invalid image shape.
        InvalidValuesError: If values are NaN/Inf or outside [0, 1].
    """
    if bins < 2:
        raise ConfigError(f"bins must be at least 2, got {bins}")
    xa, xb = _as_images(a, "a"), _as_images(b, "b")
    _check_unit_range(xa, "a")
    _check_unit_range(xb, "b")
    ua = xa.reshape(-1).astype(np.float64)
    ub = xb.reshape(-1).astype(np.float64)
    return {
        "wasserstein": _wasserstein_1d(ua, ub),
        "jensen_shannon": _jensen_shannon_base2(_histogram(ua, bins), _histogram(ub, bins)),
    }


# --- power spectra ---------------------------------------------------------------------------
def mean_periodogram(images: npt.ArrayLike, *, window: Window = "hann") -> np.ndarray:
    """Mean 2-D power spectral density of a set of images, DC at ``[0, 0]`` (NumPy FFT order).

    Each image has its own mean removed, is optionally multiplied by a 2-D Hann window, and its
    periodogram is ``|FFT2(x)|^2 / sum(w^2)`` (``w = 1`` without a window, so the divisor is
    ``H * W``). This is a power spectral density in intensity^2 per (cycle/pixel)^2: white noise
    of variance s^2 has the flat density s^2, and without a window the density's mean over all
    frequencies equals the image variance (Parseval). The Hann window suppresses the leakage
    from the image's edges (a real radiograph is not periodic, and the jump between opposite
    borders otherwise adds a spurious cross of 1/f^2 power); dividing by ``sum(w^2)`` keeps
    white-noise levels unchanged by it.

    Args:
        images: ``(N, H, W)`` or ``(N, H, W, 1)``.
        window: ``"hann"`` (default) or ``None`` for no window.

    Returns:
        ``(H, W)`` float64 array, the mean periodogram over the images; frequencies are
        ``np.fft.fftfreq(H)`` by ``np.fft.fftfreq(W)`` in cycles/pixel.

    Raises:
        ConfigError: On an unknown window.
        GeometryError, InvalidValuesError: On invalid images.
    """
    x = _as_images(images, "images")
    n, h, w = x.shape
    if window == "hann":
        # NumPy's symmetric Hann: zero on the borders, so opposite edges meet smoothly.
        taper = np.outer(np.hanning(h), np.hanning(w))
    elif window is None:
        taper = np.ones((h, w))
    else:
        raise ConfigError(f"window must be 'hann' or None, got {window!r}")
    norm = float(np.sum(taper**2))
    total = np.zeros((h, w))
    for start in range(0, n, _FFT_CHUNK):
        chunk = x[start : start + _FFT_CHUNK].astype(np.float64)
        chunk = (chunk - chunk.mean(axis=(1, 2), keepdims=True)) * taper
        total += np.sum(np.abs(np.fft.fft2(chunk)) ** 2, axis=0)
    return total / (n * norm)


def radial_power_spectrum(
    images: npt.ArrayLike, *, n_bins: int | None = None, window: Window = "hann"
) -> tuple[np.ndarray, np.ndarray]:
    """Azimuthally averaged power spectral density, averaged over a set of images.

    The mean periodogram (:func:`mean_periodogram`: per-image mean removed, Hann window by
    default, PSD in intensity^2 per (cycle/pixel)^2) is averaged over rings of radial frequency
    ``|f| = sqrt(fy^2 + fx^2)``. Ring ``k`` (``k = 1..n_bins``) is centred on
    ``f_k = k * 0.5 / n_bins`` cycles/pixel and holds the frequencies with
    ``|f| in [f_k - d/2, f_k + d/2)``, ``d = 0.5 / n_bins``. The DC term and the corners beyond
    ``0.5 + d/2`` are left out. With the default ``n_bins = min(H, W) // 2`` and a square image
    of side N, ring k holds the FFT frequencies whose radius rounds to k / N.

    Args:
        images: ``(N, H, W)`` or ``(N, H, W, 1)``.
        n_bins: Number of rings; default ``min(H, W) // 2``.
        window: ``"hann"`` (default) or ``None``.

    Returns:
        ``(freqs, power)``: ``(n_bins,)`` ring centres in cycles/pixel, in (0, 0.5], and the
        ``(n_bins,)`` mean PSD over each ring.

    Raises:
        ConfigError: If ``n_bins`` is less than 1 or so large that a ring is empty.
        GeometryError, InvalidValuesError: On invalid images.
    """
    psd = mean_periodogram(images, window=window)
    h, w = psd.shape
    if n_bins is None:
        n_bins = max(min(h, w) // 2, 1)
    if n_bins < 1:
        raise ConfigError(f"n_bins must be at least 1, got {n_bins}")
    step = 0.5 / n_bins
    radius = np.hypot(np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :])
    ring = np.floor(radius / step + 0.5).astype(np.int64).reshape(-1)
    keep = (ring >= 1) & (ring <= n_bins)
    counts = np.bincount(ring[keep], minlength=n_bins + 1)[1:]
    sums = np.bincount(ring[keep], weights=psd.reshape(-1)[keep], minlength=n_bins + 1)[1:]
    if np.any(counts == 0):
        raise ConfigError(
            f"n_bins={n_bins} is too fine for images of {h} x {w}: some rings hold no frequency"
        )
    freqs = np.arange(1, n_bins + 1) * step
    return freqs, sums / counts


def spectrum_distance(
    a: npt.ArrayLike, b: npt.ArrayLike, *, n_bins: int | None = None, window: Window = "hann"
) -> float:
    """Mean absolute difference of the log10 radial power spectra of two image sets.

    Args:
        a: Image set ``(Na, H, W)`` or ``(Na, H, W, 1)``.
        b: Image set of the same image size ``(Nb, H, W)`` (frequencies are in cycles/pixel, so
            spectra of different sizes are not comparable bin by bin).
        n_bins: Rings of :func:`radial_power_spectrum`.
        window: Window of :func:`radial_power_spectrum`.

    Returns:
        The distance in **decades** of power, averaged over the rings: 1.0 means that one set
        has on average 10 times (or a tenth of) the other's power at each frequency. Power below
        1e-20 is clipped to 1e-20 first, so a flat image gives a large but finite distance.

    Raises:
        GeometryError: If the image sizes differ.
    """
    xa, xb = _as_images(a, "a"), _as_images(b, "b")
    if xa.shape[1:] != xb.shape[1:]:
        raise GeometryError(
            f"spectra need images of one size, got {xa.shape[1:]} and {xb.shape[1:]}"
        )
    _, pa = radial_power_spectrum(xa, n_bins=n_bins, window=window)
    _, pb = radial_power_spectrum(xb, n_bins=n_bins, window=window)
    la = np.log10(np.maximum(pa, _LOG_POWER_FLOOR))
    lb = np.log10(np.maximum(pb, _LOG_POWER_FLOOR))
    return float(np.mean(np.abs(la - lb)))


def style_scores(
    translated_or_drr: npt.ArrayLike,
    real: npt.ArrayLike,
    *,
    seed: int = 0,
    c2st_kwargs: Mapping[str, Any] | None = None,
    bins: int = 64,
) -> dict[str, float]:
    """Every style metric of one image set against real radiographs, as a flat dict.

    Call it twice, with the DRRs ("before") and with the translated DRRs ("after"), against the
    same real images and seed.

    Args:
        translated_or_drr: ``(N, H, W)`` or ``(N, H, W, 1)``, values in [0, 1].
        real: ``(M, H, W)`` or ``(M, H, W, 1)``, values in [0, 1], same image size.
        seed: Seed of the classifier two-sample test.
        c2st_kwargs: Other keyword arguments of :func:`classifier_two_sample_test` (not
            ``seed``).
        bins: Histogram bins of :func:`histogram_distances`.

    Returns:
        ``c2st_accuracy``, ``c2st_auc`` (0.5 best), ``hist_wasserstein`` (intensity units),
        ``hist_js`` (JS distance, [0, 1]), ``spectrum_log10_l1`` (decades); lower is better for
        the last three.

    Raises:
        ConfigError: If ``c2st_kwargs`` holds ``seed``.
        GeometryError, InvalidValuesError: On invalid images.
    """
    kwargs = dict(c2st_kwargs or {})
    if "seed" in kwargs:
        raise ConfigError("pass the seed as style_scores(seed=...), not in c2st_kwargs")
    x, r = _as_images(translated_or_drr, "translated_or_drr"), _as_images(real, "real")
    if x.shape[1:] != r.shape[1:]:
        raise GeometryError(
            f"translated_or_drr and real differ in image size: {x.shape[1:]} and {r.shape[1:]}"
        )
    hist = histogram_distances(x, r, bins=bins)
    c2st = classifier_two_sample_test(x, r, seed=seed, **kwargs)
    return {
        "c2st_accuracy": c2st.accuracy,
        "c2st_auc": c2st.auc,
        "hist_wasserstein": hist["wasserstein"],
        "hist_js": hist["jensen_shannon"],
        "spectrum_log10_l1": spectrum_distance(x, r),
    }


# --- figures ---------------------------------------------------------------------------------
def save_style_grid(
    columns: Mapping[str, npt.ArrayLike],
    path: str | os.PathLike[str],
    *,
    rows: int = 4,
    title: str | None = None,
) -> Path:
    """Saves a PNG grid of examples: one column per named image set, ``rows`` examples each.

    Images are shown in grey with the fixed range [0, 1] (no per-image stretching, so brightness
    and contrast differences stay visible). Row ``i`` shows image ``i`` of every set, so pass
    sets that correspond (e.g. "DRR", "translated", "cycled" of the same cases, then "real").
    A set with fewer than ``rows`` images leaves its remaining cells empty.

    Args:
        columns: Column title -> images ``(N, H, W)`` or ``(N, H, W, 1)``.
        path: Destination PNG, written atomically.
        rows: Examples per column.
        title: Figure title.

    Returns:
        The path written.

    Raises:
        ConfigError: If ``columns`` is empty or ``rows < 1``.
    """
    if not columns or rows < 1:
        raise ConfigError(f"need at least one column and rows >= 1, got {len(columns)}, {rows}")
    sets = {name: _as_images(images, name) for name, images in columns.items()}
    fig = Figure(figsize=(2.2 * len(sets), 2.2 * rows + (0.4 if title else 0.0)))
    axes = fig.subplots(rows, len(sets), squeeze=False)
    for c, (name, images) in enumerate(sets.items()):
        for r in range(rows):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if r < len(images):
                ax.imshow(images[r], cmap="gray", vmin=0.0, vmax=1.0)
            else:
                ax.set_axis_off()
            if r == 0:
                ax.set_title(name, fontsize=10)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def save_spectrum_plot(
    spectra: Mapping[str, tuple[npt.ArrayLike, npt.ArrayLike]],
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
) -> Path:
    """Saves a log-log plot of radial power spectra (from :func:`radial_power_spectrum`).

    Args:
        spectra: Label -> ``(freqs, power)``, frequencies in cycles/pixel.
        path: Destination PNG, written atomically.
        title: Axes title.

    Returns:
        The path written.

    Raises:
        ConfigError: If ``spectra`` is empty.
    """
    if not spectra:
        raise ConfigError("no spectra to plot")
    fig = Figure(figsize=(6, 4.5))
    ax = fig.subplots()
    for label, (freqs, power) in spectra.items():
        p = np.maximum(np.asarray(power, dtype=np.float64), _LOG_POWER_FLOOR)
        ax.loglog(np.asarray(freqs, dtype=np.float64), p, label=label)
    ax.set_xlabel("spatial frequency (cycles/pixel)")
    ax.set_ylabel("power spectral density (intensity² · pixel²)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def save_histogram_plot(
    sets: Mapping[str, npt.ArrayLike],
    path: str | os.PathLike[str],
    *,
    bins: int = 64,
    title: str | None = None,
) -> Path:
    """Saves the pixel-intensity histograms of named image sets, as densities on [0, 1].

    Args:
        sets: Label -> images ``(N, H, W)`` or ``(N, H, W, 1)``, values in [0, 1].
        path: Destination PNG, written atomically.
        bins: Equal-width bins on [0, 1].
        title: Axes title.

    Returns:
        The path written.

    Raises:
        ConfigError: If ``sets`` is empty or ``bins < 1``.
    """
    if not sets or bins < 1:
        raise ConfigError(f"need at least one image set and bins >= 1, got {len(sets)}, {bins}")
    fig = Figure(figsize=(6, 4.5))
    ax = fig.subplots()
    for label, images in sets.items():
        values = _as_images(images, label).reshape(-1)
        ax.hist(values, bins=bins, range=(0.0, 1.0), density=True, histtype="step", label=label)
    ax.set_xlabel("intensity")
    ax.set_ylabel("density")
    ax.set_xlim(0.0, 1.0)
    ax.legend()
    if title:
        ax.set_title(title)
    return save_figure(fig, path)
