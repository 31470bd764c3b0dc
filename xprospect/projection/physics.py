"""X-ray physics of the DRR: HU to linear attenuation, line integral to intensity, display maps.

Each function takes a NumPy array (and returns one) or a TensorFlow tensor (and returns one,
differentiably); TensorFlow is imported only for tensors.

Conventions: a *line integral* is ``∫ mu dl`` along a ray (dimensionless; mu in 1/mm, length in
mm). The detected *intensity* relative to the unattenuated beam is ``exp(-∫ mu dl)`` (Beer-Lambert,
monochromatic, no scatter). *Display* images follow ``docs/conventions.md``: bright = dense.
"""

from __future__ import annotations

import functools
from typing import Any, TypeVar, cast

import numpy as np

__all__ = [
    "EFFECTIVE_ENERGY_KEV",
    "MU_WATER_PER_MM",
    "display_unit",
    "display_x2ct_uint8",
    "hu_to_mu",
    "intensity",
]

EFFECTIVE_ENERGY_KEV = 70.0
"""Effective (monochromatic) photon energy of the simulated beam, keV; a typical value for a
120 kVp chest CT / radiograph spectrum after filtration."""

MU_WATER_PER_MM = 0.01929
"""Linear attenuation coefficient of liquid water at 70 keV, in 1/mm.

NIST XCOM (Berger et al., NIST Standard Reference Database 8) gives a total mass attenuation
coefficient, coherent scattering included, of 0.1929 cm^2/g for water at 70 keV; times a density of
1.000 g/cm^3 that is 0.1929 /cm = 0.01929 /mm. (NIST SRD 126, Hubbell & Seltzer, tabulates
0.2059 cm^2/g at 60 keV and 0.1837 cm^2/g at 80 keV; log-log interpolation gives 0.1937 at 70 keV,
0.4 % higher.) For comparison, Plastimatch's ``drr`` uses 0.022 (its 50 keV value) with a
-800 HU air threshold.
"""

T = TypeVar("T")


def _is_tensor(x: Any) -> bool:
    return type(x).__module__.startswith("tensorflow") or hasattr(x, "_keras_history")


def hu_to_mu(hu: T, mu_water_per_mm: float = MU_WATER_PER_MM) -> T:
    """Hounsfield units to linear attenuation: ``mu = mu_water * (1 + HU / 1000)``, clipped at 0.

    Air (-1000 HU) and anything below it map to 0 (the clip also removes the -2048 HU padding some
    scanners write outside the field of view).

    Args:
        hu: HU array or tensor, any shape.
        mu_water_per_mm: Water's attenuation at the effective energy, 1/mm.

    Returns:
        mu in 1/mm, same shape; float32 for integer input, else the input's float type.
    """
    if _is_tensor(hu):
        import tensorflow as tf

        x = tf.convert_to_tensor(hu)
        if not x.dtype.is_floating:
            x = tf.cast(x, tf.float32)
        return _compiled_hu_to_mu()(x, tf.constant(mu_water_per_mm, x.dtype))
    a = np.asarray(hu)
    if a.dtype.kind != "f":
        a = a.astype(np.float32)
    mu = np.maximum(a * (mu_water_per_mm / 1000.0) + mu_water_per_mm, 0)
    return cast(T, mu.astype(a.dtype, copy=False))


@functools.cache
def _compiled_hu_to_mu() -> Any:
    """One fused XLA pass (eagerly, multiply, add and clip would each stream the whole batch).

    Elementwise, so one trace of any shape serves all (``reduce_retracing``): volumes of many
    sizes pass through it without retracing or TensorFlow's retracing warning."""
    import tensorflow as tf

    def convert(x: Any, mu_water: Any) -> Any:
        return tf.nn.relu(x * (mu_water / 1000.0) + mu_water)

    return tf.function(convert, jit_compile=True, autograph=False, reduce_retracing=True)


def intensity(line_integral: T) -> T:
    """Transmitted intensity relative to the open beam, ``exp(-∫ mu dl)``, in (0, 1]."""
    if _is_tensor(line_integral):
        import tensorflow as tf

        return tf.exp(-tf.convert_to_tensor(line_integral))
    return np.exp(-np.asarray(line_integral))


def display_unit(line_integral: T) -> T:
    """The [0, 1] display image: each DRR divided by its own maximum (bright = dense).

    This is X2CT-GAN's mapping before its 8-bit quantisation: a line integral image scaled so that
    the most attenuating ray is 1 and an unattenuated ray 0. It is applied per image over the last
    two axes, so a batch ``(..., rows, cols)`` keeps every image's own scale. An all-zero image
    stays zero.

    Args:
        line_integral: ``(..., rows, cols)`` non-negative line integrals.

    Returns:
        Same shape, in [0, 1].
    """
    if _is_tensor(line_integral):
        import tensorflow as tf

        x = tf.convert_to_tensor(line_integral)
        peak = tf.reduce_max(x, axis=[-2, -1], keepdims=True)
        return tf.math.divide_no_nan(x, peak)
    a = np.asarray(line_integral)
    peak = a.max(axis=(-2, -1), keepdims=True)
    return np.divide(a, peak, out=np.zeros_like(a), where=peak > 0)


def display_x2ct_uint8(line_integral: Any) -> np.ndarray:
    """X2CT-GAN's 8-bit DRR: ``uint8(L / max(L) * 255)`` per image (truncation, as they do).

    Args:
        line_integral: ``(..., rows, cols)`` line integrals (NumPy or tensor).

    Returns:
        uint8 NumPy array of the same shape.
    """
    unit = np.asarray(display_unit(np.asarray(line_integral, dtype=np.float64)))
    return (unit * 255.0).astype(np.uint8)
