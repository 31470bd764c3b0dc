"""Film-like augmentation of domain A: DRRs made to look acquired, not rendered (issue 17).

A DRR of a phantom is centred, noiseless, frameless and label-free; a preprocessed real
radiograph (:func:`xprospect.style.radiographs.preprocess_real_xray`) keeps dark bands around the
body, the odd burnt-in label that marker suppression missed, quantum and detector noise, its own
exposure curve and an off-centre patient. A classifier tells the two apart by those alone, and a
CycleGAN has to invent them. :class:`FilmAugmentation` gives every training DRR a random dose of
each, in the order an image is made:

1. **positioning**: a small shift, rotation and scale (zoom out) of the patient, air (0) around;
2. **blur**: a Gaussian detector MTF (off by default);
3. **noise**: Poisson-Gaussian, ``gain * Poisson(x / gain) + N(0, read_noise_std^2)``, so the
   variance is ``gain * x + read_noise_std^2`` (signal-dependent quantum noise plus read noise);
4. **gamma**: the display curve ``x ** gamma``;
5. **borders**: collimation / letterbox bands, straight, slightly tilted, at each side;
6. **markers**: small bright blocks near corners (burnt-in labels);
7. **window** (off by default): the percentile window real radiographs get, last (the style
   config's ``data.percentiles``); off, the DRRs keep the display mapping they have at use.

Defaults come from 60 preprocessed real frontal radiographs of ``../shared/data/real_xrays``
(training patients, ``size`` 128, thorax crop, markers suppressed, window 0.5-99.5) against the
DRRs of procedural phantoms (``xprospect prepare``, X2CT geometry, 128^2); each field's docstring
gives its measurement. Like :mod:`xprospect.augmentation`, a :class:`FilmAugmentation` is a frozen
callable holding its seed: the same seed gives the same image bit for bit, and :meth:`draw`
returns the drawn parameters (JSON-ready).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from xprospect.errors import ConfigError, GeometryError
from xprospect.preprocessing import percentile_window

__all__ = [
    "FilmAugmentation",
    "FilmAugmentationConfig",
    "film_seed",
    "poisson_gaussian",
    "validate_film_config",
]


@dataclass
class FilmAugmentationConfig:
    """Probability and range of each film feature (``data.film_augmentation`` of a style config).

    Ranges are ``[low, high]`` lists drawn uniformly (``gamma_range`` log-uniformly); lengths are
    fractions of the image edge so one config serves every ``data.size``.

    Attributes:
        position_probability: Chance of moving the patient. Real films are framed by hand; the
            thorax crop re-centres the body but leaves it off-centre by a few pixels and at
            varying size, with dark air around it on every side (see ``border_*``).
        shift_fraction: Largest shift per axis, fraction of the edge (0.03: about 4 px at 128,
            the typical left/right imbalance of the dark bands measured below).
        rotation_deg: Largest in-plane rotation in degrees (a patient a few degrees off square;
            visible tilted clavicles and film edges in the real set).
        scale_range: Zoom, < 1 shrinks the body and frames it with air. The DRR body fills the
            whole frame; in the real images a band of near-zero pixels 2-20 px wide lies at the
            sides (per side: median 2 px, 75th percentile 7, 90th 13, max 20 at 128 px), and
            8-27 % (10th-90th percentile, median 16 %) of each image is below 0.01 against about
            1 % of a DRR. A scale of 0.8-1.0 leaves 0-13 px per side.
        blur_probability: Chance of a Gaussian blur (detector MTF). 0: the high-frequency
            residual of the real images (Immerkaer's estimate, median 0.0058) is above the
            DRRs' (0.0034), so at 128^2 DRRs are not sharper than the films and need no blur.
        blur_sigma_px_range: Blur sigma in pixels of the output image.
        noise_probability: Chance of adding Poisson-Gaussian noise.
        noise_gain_range: Quantum gain: the variance added per unit signal ([0, 1] display
            units). Robust noise (MAD of the normalised Laplacian) in the real images peaks at
            0.0076 for mid-grey (0.3-0.5) against 0.0027 in DRRs: the missing variance, about
            5e-5 at x ~ 0.4, is a gain of about 1.2e-4; the range goes to twice that.
        read_noise_std_range: Signal-independent noise std (display units). The real images'
            Immerkaer noise (10th-90th percentile 0.0041-0.0096) against the DRRs' 0.0034 leaves
            up to about 0.009; the range is 0-0.006 since the quantum term adds the rest.
        gamma_probability: Chance of a display curve.
        gamma_range: ``x ** gamma``, drawn log-uniformly. Per-image medians of the real images
            span 0.43-0.71 (10th-90th percentile) against about 0.55 for windowed DRRs; mapping
            0.55 onto those takes gamma 1.43-0.60.
        border_probability: Chance, per side, of a collimation/letterbox band. After the thorax
            crop a band of at least 5 px lies on some side of 68 % of the real images (10 px:
            42 %); with four independent sides, 0.35 gives 82 % of images a band somewhere.
        border_width_range: Band width, fraction of the edge (0.02-0.15: 3-20 px at 128, the
            measured range).
        border_tilt_deg: Largest tilt of a band's edge in degrees (collimator blades are not
            quite square to the film).
        bright_border_fraction: Share of bands that are bright (an unexposed collimated region
            shown white). None of the 60 preprocessed real images has one (rows/columns with 90 %
            of pixels above 0.9), so 0.
        border_value_range: Grey level of a dark band before the window (bright bands use
            ``1 - value``).
        marker_probability: Chance of burnt-in markers. Small bright blobs (area 3-13 px at
            128, 10th-90th percentile) over dark surroundings in the outer 20 px lie in most real
            images even after marker suppression (the detector counts body edges too); 0.5.
        max_markers: Markers drawn when they are (uniform in 1..max).
        marker_size_range: Marker side, fraction of the edge (0.015-0.04: 2-5 px at 128, areas
            4-25 px).
        marker_value_range: Marker grey level (burnt-in text is near white).
        corner_fraction: Markers lie within this fraction of the edge from a corner.
        window: Apply the percentile window of real radiographs last (the style config's
            ``data.percentiles``). Off by default: the DRRs the style stage is evaluated on and
            applied to keep their display mapping (per-image maximum -> 1), so windowing only
            the augmented training DRRs puts domain A on another scale at training than at
            use. The 1,500 s benchmark with it on (2026-12-03) cycled DRRs back with a mean
            error of 0.26 against 0.03 without augmentation.
    """

    position_probability: float = 1.0
    shift_fraction: float = 0.03
    rotation_deg: float = 3.0
    scale_range: list[float] = field(default_factory=lambda: [0.8, 1.0])
    blur_probability: float = 0.0
    blur_sigma_px_range: list[float] = field(default_factory=lambda: [0.3, 1.0])
    noise_probability: float = 1.0
    noise_gain_range: list[float] = field(default_factory=lambda: [0.0, 2.5e-4])
    read_noise_std_range: list[float] = field(default_factory=lambda: [0.0, 0.006])
    gamma_probability: float = 1.0
    gamma_range: list[float] = field(default_factory=lambda: [0.6, 1.45])
    border_probability: float = 0.35
    border_width_range: list[float] = field(default_factory=lambda: [0.02, 0.15])
    border_tilt_deg: float = 2.0
    bright_border_fraction: float = 0.0
    border_value_range: list[float] = field(default_factory=lambda: [0.0, 0.05])
    marker_probability: float = 0.5
    max_markers: int = 2
    marker_size_range: list[float] = field(default_factory=lambda: [0.015, 0.04])
    marker_value_range: list[float] = field(default_factory=lambda: [0.85, 1.0])
    corner_fraction: float = 0.15
    window: bool = False


_PROBABILITIES = (
    "position_probability",
    "blur_probability",
    "noise_probability",
    "gamma_probability",
    "border_probability",
    "bright_border_fraction",
    "marker_probability",
)
# key -> (lowest allowed low, highest allowed high, low may equal the limit)
_RANGES: dict[str, tuple[float, float]] = {
    "scale_range": (0.0, 2.0),
    "blur_sigma_px_range": (0.0, 10.0),
    "noise_gain_range": (0.0, 1.0),
    "read_noise_std_range": (0.0, 1.0),
    "gamma_range": (0.0, 10.0),
    "border_width_range": (0.0, 0.5),
    "border_value_range": (0.0, 1.0),
    "marker_size_range": (0.0, 0.5),
    "marker_value_range": (0.0, 1.0),
}
_POSITIVE_LOW = ("scale_range", "gamma_range")


def validate_film_config(
    config: FilmAugmentationConfig, where: str = "film_augmentation", source: str | None = None
) -> None:
    """Checks every field; a :class:`ConfigError` naming ``where.key``.

    Args:
        config: The settings.
        where: The key prefix of the message (``data.film_augmentation`` in a style config).
        source: The file the values came from, for the message.
    """

    def fail(key: str, message: str) -> None:
        raise ConfigError(f"{where}.{key}: {message}", source)

    for key in _PROBABILITIES:
        p = getattr(config, key)
        if not (math.isfinite(p) and 0.0 <= p <= 1.0):
            fail(key, f"must be in [0, 1], got {p!r}")
    for key, (lo_limit, hi_limit) in _RANGES.items():
        pair = getattr(config, key)
        ok = len(pair) == 2 and all(math.isfinite(v) for v in pair)
        ok = ok and lo_limit <= pair[0] <= pair[1] <= hi_limit
        if ok and key in _POSITIVE_LOW:
            ok = pair[0] > 0
        if not ok:
            low = ">" if key in _POSITIVE_LOW else ">="
            fail(
                key,
                f"must be [low, high] with {lo_limit} {low} low <= high <= {hi_limit}, "
                f"got {pair!r}",
            )
    if not (math.isfinite(config.shift_fraction) and 0.0 <= config.shift_fraction <= 0.5):
        fail("shift_fraction", f"must be in [0, 0.5], got {config.shift_fraction!r}")
    for key in ("rotation_deg", "border_tilt_deg"):
        v = getattr(config, key)
        if not (math.isfinite(v) and 0.0 <= v <= 45.0):
            fail(key, f"must be in [0, 45] degrees, got {v!r}")
    if config.max_markers < 1:
        fail("max_markers", f"must be >= 1, got {config.max_markers!r}")
    if not (math.isfinite(config.corner_fraction) and 0.0 < config.corner_fraction <= 0.5):
        fail("corner_fraction", f"must be in (0, 0.5], got {config.corner_fraction!r}")


def film_seed(base_seed: int, index: int) -> int:
    """The seed of the ``index``-th augmented image of a run seeded ``base_seed``: a hash, so
    neighbouring indices and seeds give unrelated draws."""
    digest = hashlib.sha256(f"film:{int(base_seed)}:{int(index)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


_SIDES = ("top", "bottom", "left", "right")
_CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")


@dataclass(frozen=True)
class FilmAugmentation:
    """One seeded film-like augmentation of a 2D image in [0, 1] (bright = dense).

    Args:
        config: Probabilities and ranges (:class:`FilmAugmentationConfig`).
        seed: Non-negative integer; every draw comes from it.
        percentiles: ``(low, high)`` of the final window (the style config's
            ``data.percentiles``; used when ``config.window``).

    ``t(image)`` returns float32 of the same shape in [0, 1]; ``t.draw(shape)`` the parameters
    it uses (a section per feature, None where the feature was not drawn).
    """

    config: FilmAugmentationConfig
    seed: int = 0
    percentiles: Sequence[float] = (0.5, 99.5)

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int | np.integer):
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")
        if len(self.percentiles) != 2 or not 0 <= self.percentiles[0] < self.percentiles[1] <= 100:
            raise ConfigError(
                f"percentiles must be [low, high] in [0, 100], got {self.percentiles}"
            )
        validate_film_config(self.config)

    def draw(self, shape: Sequence[int]) -> dict[str, Any]:
        """The parameters for an image of ``shape`` ``(h, w)`` (JSON-ready; pixels, degrees)."""
        if len(shape) != 2 or min(shape) < 2:
            raise GeometryError(f"film augmentation needs a 2D image, got shape {tuple(shape)}")
        c = self.config
        h, w = int(shape[0]), int(shape[1])
        edge = float(min(h, w))
        rng = np.random.default_rng(int(self.seed))

        def uniform(pair: Sequence[float]) -> float:
            return float(rng.uniform(pair[0], pair[1]))

        # Every feature draws the same numbers whether or not it is used, so turning one
        # feature off leaves the others' draws unchanged.
        use = {
            k: bool(rng.random() < getattr(c, f"{k}_probability"))
            for k in ("position", "blur", "noise", "gamma", "marker")
        }
        position = {
            "shift_px": [float(v) for v in rng.uniform(-1, 1, 2) * c.shift_fraction * edge],
            "rotation_deg": uniform([-c.rotation_deg, c.rotation_deg]),
            "scale": uniform(c.scale_range),
        }
        blur = {"sigma_px": uniform(c.blur_sigma_px_range)}
        noise = {
            "gain": uniform(c.noise_gain_range),
            "read_noise_std": uniform(c.read_noise_std_range),
            "noise_seed": int(rng.integers(0, 2**62)),
        }
        log_g = np.log(c.gamma_range)
        gamma = {"gamma": float(np.exp(rng.uniform(log_g[0], log_g[1])))}
        borders = []
        for side in _SIDES:
            present = bool(rng.random() < c.border_probability)
            bright = bool(rng.random() < c.bright_border_fraction)
            width = uniform(c.border_width_range) * edge
            tilt = uniform([-c.border_tilt_deg, c.border_tilt_deg])
            value = uniform(c.border_value_range)
            if present:
                borders.append(
                    {
                        "side": side,
                        "width_px": width,
                        "tilt_deg": tilt,
                        "value": 1.0 - value if bright else value,
                    }
                )
        n_markers = int(rng.integers(1, c.max_markers + 1))
        markers = []
        for _ in range(c.max_markers):
            corner = _CORNERS[int(rng.integers(0, 4))]
            side_px = max(1, round(uniform(c.marker_size_range) * edge))
            offset = rng.uniform(0, c.corner_fraction * edge, 2)
            value = uniform(c.marker_value_range)
            r = int(offset[0]) if corner.startswith("top") else h - 1 - int(offset[0]) - side_px
            col = int(offset[1]) if corner.endswith("left") else w - 1 - int(offset[1]) - side_px
            markers.append(
                {
                    "corner": corner,
                    "row": max(0, r),
                    "col": max(0, col),
                    "size_px": int(side_px),
                    "value": value,
                }
            )
        return {
            "seed": int(self.seed),
            "position": position if use["position"] else None,
            "blur": blur if use["blur"] else None,
            "noise": noise if use["noise"] else None,
            "gamma": gamma if use["gamma"] else None,
            "borders": borders,
            "markers": markers[:n_markers] if use["marker"] else [],
            "window": list(map(float, self.percentiles)) if c.window else None,
        }

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """The augmented image, float32, same shape, in [0, 1]."""
        x = np.asarray(image, dtype=np.float64)
        p = self.draw(x.shape)
        if p["position"] is not None:
            x = _position(x, **{k: v for k, v in p["position"].items()})
        if p["blur"] is not None:
            x = ndi.gaussian_filter(x, p["blur"]["sigma_px"], mode="nearest")
        if p["noise"] is not None:
            n = p["noise"]
            x = poisson_gaussian(x, n["gain"], n["read_noise_std"], n["noise_seed"])
        x = np.clip(x, 0.0, 1.0)
        if p["gamma"] is not None:
            x = x ** p["gamma"]["gamma"]
        for border in p["borders"]:
            x = np.where(_band_mask(x.shape, border), border["value"], x)
        for m in p["markers"]:
            x[m["row"] : m["row"] + m["size_px"], m["col"] : m["col"] + m["size_px"]] = m["value"]
        if p["window"] is not None:
            x = percentile_window(x, p["window"][0], p["window"][1])
        return np.clip(x, 0.0, 1.0).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """The config, seed and percentiles (JSON-ready)."""
        return {
            "config": asdict(self.config),
            "seed": int(self.seed),
            "percentiles": [float(v) for v in self.percentiles],
        }


def poisson_gaussian(x: np.ndarray, gain: float, read_noise_std: float, seed: int) -> np.ndarray:
    """``gain * Poisson(x / gain) + N(0, read_noise_std^2)``: mean ``x``, variance
    ``gain * x + read_noise_std^2`` (Foi et al. 2008's Poisson-Gaussian model). ``gain`` 0 is the
    noiseless limit of the Poisson term."""
    rng = np.random.default_rng(int(seed))
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, None)
    if gain > 0 and float(x.max(initial=0.0)) / gain < 1e7:
        out = gain * rng.poisson(x / gain)
    else:
        # Beyond 1e7 counts per pixel (or gain 0) the Poisson term is Gaussian to any precision
        # that matters, and NumPy's Poisson sampler would overflow near 1e19.
        out = x + np.sqrt(gain * x) * rng.standard_normal(x.shape)
    if read_noise_std > 0:
        out = out + rng.normal(0.0, read_noise_std, x.shape)
    return np.asarray(out, dtype=np.float64)


def _position(
    x: np.ndarray, shift_px: Sequence[float], rotation_deg: float, scale: float
) -> np.ndarray:
    """Rotates by ``rotation_deg`` and scales by ``scale`` about the centre, then shifts by
    ``shift_px`` (rows, columns); outside the image is air (0), linear interpolation."""
    theta = math.radians(rotation_deg)
    cos, sin = math.cos(theta), math.sin(theta)
    # Output pixel o comes from input i = A (o - c - t) + c with A the inverse of scale*rotation.
    inverse = np.array([[cos, sin], [-sin, cos]]) / scale
    centre = (np.array(x.shape, dtype=np.float64) - 1.0) / 2.0
    shift = np.asarray(shift_px, dtype=np.float64)
    offset = centre - inverse @ (centre + shift)
    return np.asarray(
        ndi.affine_transform(x, inverse, offset=offset, order=1, mode="constant", cval=0.0)
    )


def _band_mask(shape: tuple[int, ...], border: Mapping[str, Any]) -> np.ndarray:
    """Pixels within ``width_px`` of one side, along a line tilted by ``tilt_deg`` about the
    side's middle."""
    h, w = shape
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    slope = math.tan(math.radians(border["tilt_deg"]))
    side, width = border["side"], border["width_px"]
    if side == "top":
        return np.asarray(rows - slope * (cols - (w - 1) / 2) < width)
    if side == "bottom":
        return np.asarray((h - 1 - rows) - slope * (cols - (w - 1) / 2) < width)
    if side == "left":
        return np.asarray(cols - slope * (rows - (h - 1) / 2) < width)
    return np.asarray((w - 1 - cols) - slope * (rows - (h - 1) / 2) < width)
