"""The diffusion process of XctDiff's latent model: noise schedule, forward noising, the
epsilon-prediction loss and the DDPM / DDIM samplers.

The paper (Sec. 2.3, Eq. 7) gives the loss ``E ||eps - eps_theta(x_t, t, y)||^2`` and says that
``x_t`` follows a noise schedule ``alpha_t``; it gives neither the schedule nor the sampler.
*Choices* (from the official configuration the paper links, ``ldm_32x32x32_8.yaml``, and DDIM):

- 1,000 training steps; Latent Diffusion's "linear" schedule, ``beta_t`` linear in
  ``sqrt(beta)`` from ``sqrt(0.0015)`` to ``sqrt(0.0125)`` (``linear_start``, ``linear_end``).
- The latent is the VQ-GAN's normalised code (unit variance per vector by construction), so no
  latent scale factor is applied (the official code's 0.6 scaled unnormalised latents).
- DDIM (Song et al. 2021) on ``steps`` evenly spaced time steps ``t_i = round(i (T - 1) /
  (steps - 1))``, ``eta`` = 0 by default (deterministic given ``x_T``); DDPM ancestral sampling
  with the posterior variance ``beta~_t``. ``x_T`` and the DDPM / ``eta > 0`` noise are
  stateless draws from integer seeds (draw ``k`` uses ``(seed + 1000003 k) mod 2^31``): a seed
  gives the same volume every time, and sampling creates no variable (it runs inside a traced
  ``call`` and a SavedModel).

Everything is ``keras.ops`` (runs on JAX too); the schedule itself is NumPy (float64, then cast).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import numpy.typing as npt
from keras import ops

from xprospect.errors import ConfigError

__all__ = [
    "NoiseSchedule",
    "ddim_sample",
    "ddim_timesteps",
    "ddpm_sample",
    "diffusion_loss_per_example",
    "q_sample",
]

EpsFn = Callable[[Any, Any], Any]
"""``eps_fn(x_t, t) -> predicted noise``; ``t`` is ``(B,)`` float32 time steps."""


@dataclass(frozen=True)
class NoiseSchedule:
    """A variance schedule ``beta_1 .. beta_T`` and its cumulative products.

    Args:
        timesteps: ``T``.
        beta_start: ``beta_1``.
        beta_end: ``beta_T``.
        kind: ``"sqrt_linear"`` (Latent Diffusion's "linear": linear in ``sqrt(beta)``, the
            official XctDiff config) or ``"linear"`` (DDPM's, linear in ``beta``).
    """

    timesteps: int = 1000
    beta_start: float = 0.0015
    beta_end: float = 0.0125
    kind: str = "sqrt_linear"
    betas: npt.NDArray[np.float64] = field(init=False, repr=False)
    alphas_cumprod: npt.NDArray[np.float64] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        t = int(self.timesteps)
        if t < 2:
            raise ConfigError(f"timesteps must be at least 2, got {self.timesteps}")
        if not 0 < self.beta_start <= self.beta_end < 1:
            raise ConfigError(
                f"need 0 < beta_start <= beta_end < 1, got {self.beta_start}, {self.beta_end}"
            )
        if self.kind == "sqrt_linear":
            betas = np.linspace(np.sqrt(self.beta_start), np.sqrt(self.beta_end), t) ** 2
        elif self.kind == "linear":
            betas = np.linspace(self.beta_start, self.beta_end, t)
        else:
            raise ConfigError(f"schedule kind must be sqrt_linear or linear, got {self.kind!r}")
        object.__setattr__(self, "betas", betas.astype(np.float64))
        object.__setattr__(self, "alphas_cumprod", np.cumprod(1.0 - betas))

    def gather(self, values: npt.NDArray[np.float64], t: Any, ndim: int) -> Any:
        """``values[t]`` as float32, shaped ``(B, 1, ..., 1)`` to broadcast over ``ndim`` axes."""
        table = ops.convert_to_tensor(values.astype(np.float32))
        out = ops.take(table, ops.cast(t, "int32"), axis=0)
        return ops.reshape(out, (-1,) + (1,) * (ndim - 1))


def q_sample(schedule: NoiseSchedule, x0: Any, t: Any, noise: Any) -> Any:
    """The closed form of ``q(x_t | x_0)``: ``sqrt(a_t) x_0 + sqrt(1 - a_t) noise`` with ``a_t``
    the cumulative product ``alpha-bar`` at ``t`` ``(B,)`` (0-based)."""
    x0 = ops.cast(x0, "float32")
    ab = schedule.gather(schedule.alphas_cumprod, t, len(x0.shape))
    return ops.sqrt(ab) * x0 + ops.sqrt(1.0 - ab) * ops.cast(noise, "float32")


def diffusion_loss_per_example(
    eps_fn: EpsFn, schedule: NoiseSchedule, x0: Any, t: Any, noise: Any, mask: Any = None
) -> Any:
    """Eq. 7 per example ``(B,)``: the mean squared error between ``noise`` and the predicted
    noise at ``x_t = q_sample(x0, t, noise)``; with ``mask`` (0/1, ``(B, d, h, w, 1)``, e.g.
    the latent cells of a scanned region) the mean over its cells only (0 for an empty one)."""
    x_t = q_sample(schedule, x0, t, noise)
    pred = ops.cast(eps_fn(x_t, ops.cast(t, "float32")), "float32")
    axes = tuple(range(1, len(x_t.shape)))
    square = ops.square(ops.cast(noise, "float32") - pred)
    if mask is None:
        return ops.mean(square, axis=axes)
    m = ops.broadcast_to(ops.cast(mask, "float32"), ops.shape(square))
    return ops.sum(square * m, axis=axes) / ops.maximum(ops.sum(m, axis=axes), 1.0)


def ddim_timesteps(schedule: NoiseSchedule, steps: int) -> list[int]:
    """The ``steps`` time steps DDIM visits, in decreasing order (0-based, from ``T - 1``)."""
    steps = int(steps)
    if not 1 <= steps <= schedule.timesteps:
        raise ConfigError(f"sampling steps must be in [1, {schedule.timesteps}], got {steps}")
    if steps == 1:
        return [schedule.timesteps - 1]
    ts = np.round(np.linspace(0, schedule.timesteps - 1, steps)).astype(int)
    return [int(v) for v in ts[::-1]]


def _normal(shape: Any, seed: int, k: int) -> Any:
    """The ``k``-th stateless standard-normal draw of ``seed``."""
    return keras.random.normal(shape, seed=int((int(seed) + 1000003 * k) % 2**31))


def _batch_t(t: int, like: Any) -> Any:
    return ops.full((ops.shape(like)[0],), float(t), dtype="float32")


def ddim_sample(
    eps_fn: EpsFn,
    schedule: NoiseSchedule,
    shape: Any,
    *,
    steps: int = 50,
    eta: float = 0.0,
    seed: int = 0,
    x_t: Any = None,
) -> Any:
    """DDIM sampling from ``x_T`` (drawn from ``seed`` unless given) down to ``x_0``.

    Each step: ``x0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t)``, ``x_prev = sqrt(a_prev) x0 +
    sqrt(1 - a_prev - s^2) eps + s z`` with ``s = eta sqrt((1 - a_prev) / (1 - a_t)) sqrt(1 -
    a_t / a_prev)``; after the last step ``a_prev = 1`` (the output is the predicted ``x_0``).

    Args:
        eps_fn: The noise predictor.
        schedule: The training schedule.
        shape: Shape of ``x_T`` (with the batch), e.g. ``(B, 32, 32, 32, 8)``.
        steps: Number of sampling steps.
        eta: 0: deterministic DDIM; 1: DDPM-like stochasticity.
        seed: The integer seed of ``x_T`` and of the ``eta > 0`` noise.
        x_t: A given ``x_T`` (then ``shape`` is ignored).

    Returns:
        ``x_0`` float32.
    """
    x = _normal(shape, seed, 0) if x_t is None else ops.cast(x_t, "float32")
    ab = schedule.alphas_cumprod
    ts = ddim_timesteps(schedule, steps)
    for i, t in enumerate(ts):
        a_t = float(ab[t])
        a_prev = float(ab[ts[i + 1]]) if i + 1 < len(ts) else 1.0
        eps = ops.cast(eps_fn(x, _batch_t(t, x)), "float32")
        x0 = (x - np.sqrt(1.0 - a_t) * eps) / np.sqrt(a_t)
        sigma = eta * np.sqrt((1.0 - a_prev) / (1.0 - a_t)) * np.sqrt(1.0 - a_t / a_prev)
        x = np.sqrt(a_prev) * x0 + np.sqrt(max(1.0 - a_prev - sigma**2, 0.0)) * eps
        if sigma > 0:
            x = x + sigma * _normal(ops.shape(x), seed, i + 1)
    return x


def ddpm_sample(
    eps_fn: EpsFn,
    schedule: NoiseSchedule,
    shape: Any,
    *,
    seed: int = 0,
    x_t: Any = None,
) -> Any:
    """Ancestral DDPM sampling through all ``T`` steps (Ho et al. 2020, Algorithm 2, with the
    posterior variance ``beta~_t = beta_t (1 - a_{t-1}) / (1 - a_t)``)."""
    x = _normal(shape, seed, 0) if x_t is None else ops.cast(x_t, "float32")
    ab, betas = schedule.alphas_cumprod, schedule.betas
    for t in range(schedule.timesteps - 1, -1, -1):
        a_t, beta = float(ab[t]), float(betas[t])
        a_prev = float(ab[t - 1]) if t > 0 else 1.0
        eps = ops.cast(eps_fn(x, _batch_t(t, x)), "float32")
        x = (x - beta / np.sqrt(1.0 - a_t) * eps) / np.sqrt(1.0 - beta)
        if t > 0:
            var = beta * (1.0 - a_prev) / (1.0 - a_t)
            x = x + np.sqrt(var) * _normal(ops.shape(x), seed, schedule.timesteps - t)
    return x
