"""Reconstruction losses for volumes, written with ``keras.ops`` (any Keras backend).

Every loss takes ``y_true`` and ``y_pred`` of shape ``(B, D, H, W, 1)`` (channels-last canonical
volumes, see ``docs/conventions.md``; ``(B, D, H, W)`` works too), usually window-normalised to
[0, 1]. ``call`` returns one value per example, shape ``(B,)``, and Keras' ``reduction`` then
applies as for any :class:`keras.losses.Loss`: the default ``"sum_over_batch_size"`` gives the
batch mean, ``"none"`` (or ``None``) keeps the per-example losses for a custom training loop (e.g.
to scale by the global batch size under a distribution strategy), ``"sum"`` sums them, and
``sample_weight`` of shape ``(B,)`` weights examples.

Terms:

- :class:`MAELoss`: mean absolute error over all voxels of an example (the XprospeCT paper's loss).
- :class:`MSELoss`: mean squared error over all voxels of an example.
- :class:`ProjectionLoss`: X2CT-GAN's projection ("map") loss. The volume is averaged along each
  spatial axis (axes 1, 2, 3 of ``(B, D, H, W, 1)``: the mean projections along head-feet,
  front-back and right-left), each pair of projections is compared by L1 (mean absolute
  difference), and the three are averaged. X2CT-GAN averages ``|v|``, which is the same for the
  non-negative volumes it and xprospect use.
- :func:`masked_mae_per_example`, :func:`masked_mse_per_example`: the same of the volumes times a
  mask (the lungs), normalised by the whole volume as DuoLift's Eqs. (3), (4).
- :func:`discriminator_loss_per_example`, :func:`generator_adversarial_per_example`: LSGAN or BCE
  on a discriminator's patch logits (the GAN family's trainer, :mod:`xprospect.training.steps`).
- :class:`WeightedLoss` / :func:`build_loss`: a non-negative weighted sum of named terms, from a
  config mapping such as ``{"mae": 1.0, "projection": 0.1}`` (keys in :data:`LOSS_TERMS`).
- :func:`per_example_loss`: any Keras loss (or loss function) as a ``(B,)`` per-example function,
  for custom training loops that average over a distributed global batch.
- :func:`within_scan_mask`: a per-example loss restricted to each case's scanned region (the
  validity mask of :func:`xprospect.preprocessing.scan_mask`), so the air a short scan was padded
  with is not a target; the trainers use it with ``data.validity_mask``.

Under mixed precision the predictions may arrive as ``bfloat16`` or ``float16``; every loss casts
both inputs to ``float32`` first and returns ``float32``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import keras
from keras import ops

from xprospect.errors import ConfigError

__all__ = [
    "ADVERSARIAL_KINDS",
    "GENERATOR_TERMS",
    "LOSS_TERMS",
    "MASKED_TERMS",
    "MASK_NORMALIZATIONS",
    "MAELoss",
    "MSELoss",
    "ProjectionLoss",
    "WeightedLoss",
    "build_loss",
    "discriminator_loss_per_example",
    "generator_adversarial_per_example",
    "mae_per_example",
    "masked_mae_per_example",
    "masked_mse_per_example",
    "mse_per_example",
    "per_example_loss",
    "projection_per_example",
    "within_scan_mask",
]

_COMPUTE_DTYPE = "float32"


def _float32(x: Any) -> Any:
    return ops.cast(x, _COMPUTE_DTYPE)


def _mean_over_examples(x: Any) -> Any:
    """Mean over every axis but the first: ``(B, ...) -> (B,)``."""
    return ops.mean(ops.reshape(x, (ops.shape(x)[0], -1)), axis=1)


def mae_per_example(y_true: Any, y_pred: Any) -> Any:
    """Mean absolute error of each example.

    Args:
        y_true: Tensor ``(B, ...)``.
        y_pred: Tensor of the same shape.

    Returns:
        float32 tensor ``(B,)``.
    """
    return _mean_over_examples(ops.abs(_float32(y_pred) - _float32(y_true)))


def mse_per_example(y_true: Any, y_pred: Any) -> Any:
    """Mean squared error of each example.

    Args:
        y_true: Tensor ``(B, ...)``.
        y_pred: Tensor of the same shape.

    Returns:
        float32 tensor ``(B,)``.
    """
    return _mean_over_examples(ops.square(_float32(y_pred) - _float32(y_true)))


def projection_per_example(y_true: Any, y_pred: Any) -> Any:
    """X2CT-GAN's projection loss of each example: mean of the L1s of the three mean projections.

    Args:
        y_true: Tensor ``(B, D, H, W, C)`` or ``(B, D, H, W)``.
        y_pred: Tensor of the same shape.

    Returns:
        float32 tensor ``(B,)``.

    Raises:
        ValueError: If the tensors are not 4D or 5D.
    """
    rank = len(ops.shape(y_pred))
    if rank not in (4, 5):
        raise ValueError(f"ProjectionLoss needs (B, D, H, W[, C]) volumes, got rank {rank}")
    t, p = _float32(y_true), _float32(y_pred)
    terms = [mae_per_example(ops.mean(t, axis=axis), ops.mean(p, axis=axis)) for axis in (1, 2, 3)]
    return (terms[0] + terms[1] + terms[2]) / 3.0


MASK_NORMALIZATIONS = ("volume", "mask")


def _masked_mean(values: Any, mask: Any, normalization: str) -> Any:
    if normalization not in MASK_NORMALIZATIONS:
        raise ConfigError(
            f"normalization must be one of {MASK_NORMALIZATIONS}, got {normalization!r}"
        )
    m = _float32(mask)
    flat_v = ops.reshape(values * m, (ops.shape(values)[0], -1))
    if normalization == "volume":
        return ops.mean(flat_v, axis=1)
    flat_m = ops.reshape(m, (ops.shape(m)[0], -1))
    # An example with an empty mask contributes 0 rather than 0 / 0.
    return ops.sum(flat_v, axis=1) / ops.maximum(ops.sum(flat_m, axis=1), 1.0)


def masked_mae_per_example(
    y_true: Any, y_pred: Any, mask: Any, normalization: str = "volume"
) -> Any:
    """Mean absolute error of the masked volumes (DuoLift's lung term, Eq. (4)).

    DuoLift-GAN's Eq. (4): ``L_inside^L1 = 1/|Omega| sum_Omega |M I - M Î|``, the sum over the
    whole volume ``Omega`` (the same ``1/|Omega|`` as its unmasked Eq. (2)), so voxels outside
    the mask count as zeros in the mean.

    Args:
        y_true: Tensor ``(B, ...)``.
        y_pred: Tensor of the same shape.
        mask: 0/1 tensor of the same shape (e.g. :func:`xprospect.segmentation.lung_mask`).
        normalization: ``"volume"`` (the paper's ``1/|Omega|``, default) or ``"mask"``: divide
            by the number of voxels in the mask instead (the mean inside the lungs, 5-10x
            heavier for chest volumes; what xprospect < 0.2 computed).

    Returns:
        float32 tensor ``(B,)``: ``mean(|p - t| * m)`` over all voxels (``"volume"``) or
        ``sum(|p - t| * m) / max(sum(m), 1)`` (``"mask"``).

    Raises:
        ConfigError: Unknown ``normalization``.
    """
    return _masked_mean(ops.abs(_float32(y_pred) - _float32(y_true)), mask, normalization)


def masked_mse_per_example(
    y_true: Any, y_pred: Any, mask: Any, normalization: str = "volume"
) -> Any:
    """Mean squared error of the masked volumes (DuoLift's Eq. (3); see
    :func:`masked_mae_per_example`).

    Returns:
        float32 tensor ``(B,)``.
    """
    return _masked_mean(ops.square(_float32(y_pred) - _float32(y_true)), mask, normalization)


# === Adversarial terms (logits in, per-example values out) ===


def _patch_mean(x: Any) -> Any:
    return _mean_over_examples(_float32(x))


def _bce_with_logits(logits: Any, target: float) -> Any:
    # log(1 + exp(-|z|)) + max(z, 0) - z * t: stable for large |z|.
    z = _float32(logits)
    return ops.maximum(z, 0.0) - z * target + ops.log1p(ops.exp(-ops.abs(z)))


def discriminator_loss_per_example(
    real_logits: Any, fake_logits: Any, kind: str, weight: float = 0.5
) -> Any:
    """The discriminator's loss per example: real patches towards 1, generated towards 0.

    ``lsgan``: ``weight * (mean((D(real) - 1)^2) + mean(D(fake)^2))`` (Mao et al.).
    ``bce``: ``weight * (mean(BCE(D(real), 1)) + mean(BCE(D(fake), 0)))``. The papers' weights:
    X2CT-GAN's official code multiplies the sum by its ``gan_lambda`` 0.1 (``backward_D_basic``);
    DuoLift-GAN's Eq. (8) is ``L_D = beta * L_ad`` with beta 0.01; CycleGAN halves it (0.5, the
    default). With Adam the weight hardly changes the updates (they are scale-free up to
    epsilon), but it changes the logged ``d_loss``.

    Args:
        real_logits: The discriminator's raw output on real volumes, ``(B, ...)``.
        fake_logits: Its raw output on generated volumes, same shape.
        kind: ``"lsgan"`` or ``"bce"``.
        weight: Factor on the sum of the real and fake terms.

    Returns:
        float32 tensor ``(B,)``.
    """
    if kind == "lsgan":
        real = _patch_mean(ops.square(_float32(real_logits) - 1.0))
        fake = _patch_mean(ops.square(_float32(fake_logits)))
    elif kind == "bce":
        real = _patch_mean(_bce_with_logits(real_logits, 1.0))
        fake = _patch_mean(_bce_with_logits(fake_logits, 0.0))
    else:
        raise ConfigError(f"adversarial loss must be lsgan or bce, got {kind!r}")
    return float(weight) * (real + fake)


def generator_adversarial_per_example(fake_logits: Any, kind: str) -> Any:
    """The generator's adversarial term per example: its volumes judged real.

    ``lsgan``: ``mean((D(fake) - 1)^2)``; ``bce``: ``mean(BCE(D(fake), 1))`` (the non-saturating
    form).

    Returns:
        float32 tensor ``(B,)``.
    """
    if kind == "lsgan":
        return _patch_mean(ops.square(_float32(fake_logits) - 1.0))
    if kind == "bce":
        return _patch_mean(_bce_with_logits(fake_logits, 1.0))
    raise ConfigError(f"adversarial loss must be lsgan or bce, got {kind!r}")


ADVERSARIAL_KINDS = ("lsgan", "bce")
MASKED_TERMS: dict[str, Callable[[Any, Any, Any], Any]] = {
    "masked_mae": masked_mae_per_example,
    "masked_mse": masked_mse_per_example,
}
"""Terms that also take a mask ``(y_true, y_pred, mask) -> (B,)`` (the lung mask)."""
GENERATOR_TERMS = (
    "mae",
    "mse",
    "projection",
    "masked_mae",
    "masked_mse",
    "perceptual",
    "adversarial",
)
"""Every term name a config's ``loss`` may weight (the last four need the generator trainer's
extra inputs: a lung mask, a feature network, a discriminator)."""


LOSS_TERMS: dict[str, Callable[[Any, Any], Any]] = {
    "mae": mae_per_example,
    "mse": mse_per_example,
    "projection": projection_per_example,
}
"""Names usable in :func:`build_loss`, each a per-example loss ``(y_true, y_pred) -> (B,)``."""


class _VolumeLoss(keras.losses.Loss):
    """Base of the single-term losses: float32 computation, per-example ``call``."""

    term: str = ""

    def __init__(self, reduction: str | None = "sum_over_batch_size", name: str | None = None):
        super().__init__(name=name, reduction=reduction, dtype=_COMPUTE_DTYPE)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        """Per-example loss.

        Args:
            y_true: Tensor ``(B, D, H, W, 1)``.
            y_pred: Tensor of the same shape (any float dtype).

        Returns:
            float32 tensor ``(B,)``.
        """
        return LOSS_TERMS[self.term](y_true, y_pred)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "reduction": self.reduction}


@keras.saving.register_keras_serializable(package="xprospect")
class MAELoss(_VolumeLoss):
    """Mean absolute error per example (see the module docstring).

    Args:
        reduction: Keras reduction of the per-example values (``"sum_over_batch_size"``,
            ``"sum"``, ``"mean"``, ``"mean_with_sample_weight"``, ``"none"`` or ``None``).
        name: Loss name; defaults to ``"mae_loss"``.
    """

    term = "mae"

    def __init__(
        self, reduction: str | None = "sum_over_batch_size", name: str | None = "mae_loss"
    ) -> None:
        super().__init__(reduction=reduction, name=name)


@keras.saving.register_keras_serializable(package="xprospect")
class MSELoss(_VolumeLoss):
    """Mean squared error per example (see the module docstring).

    Args:
        reduction: Keras reduction of the per-example values.
        name: Loss name; defaults to ``"mse_loss"``.
    """

    term = "mse"

    def __init__(
        self, reduction: str | None = "sum_over_batch_size", name: str | None = "mse_loss"
    ) -> None:
        super().__init__(reduction=reduction, name=name)


@keras.saving.register_keras_serializable(package="xprospect")
class ProjectionLoss(_VolumeLoss):
    """X2CT-GAN's projection loss per example (see the module docstring).

    Args:
        reduction: Keras reduction of the per-example values.
        name: Loss name; defaults to ``"projection_loss"``.
    """

    term = "projection"

    def __init__(
        self, reduction: str | None = "sum_over_batch_size", name: str | None = "projection_loss"
    ) -> None:
        super().__init__(reduction=reduction, name=name)


def _check_weights(weights: Mapping[str, float]) -> dict[str, float]:
    if not isinstance(weights, Mapping):
        raise ConfigError(f"loss weights must be a mapping of term name to weight, got {weights!r}")
    valid = ", ".join(sorted(LOSS_TERMS))
    unknown = sorted(str(k) for k in weights if k not in LOSS_TERMS)
    if unknown:
        raise ConfigError(f"unknown loss term(s) {', '.join(unknown)}; valid terms: {valid}")
    checked: dict[str, float] = {}
    for key, value in weights.items():
        try:
            w = float(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"loss weight {key!r} must be a number, got {value!r}") from exc
        if not math.isfinite(w) or w < 0:
            raise ConfigError(f"loss weight {key!r} must be finite and >= 0, got {value!r}")
        checked[str(key)] = w
    if not any(w > 0 for w in checked.values()):
        raise ConfigError(f"at least one loss weight must be > 0 (valid terms: {valid})")
    return checked


@keras.saving.register_keras_serializable(package="xprospect")
class WeightedLoss(keras.losses.Loss):
    """Weighted sum of named loss terms: ``sum(weights[k] * term_k(y_true, y_pred))`` per example.

    Args:
        weights: Term name (a key of :data:`LOSS_TERMS`: ``"mae"``, ``"mse"``, ``"projection"``)
            to its weight; weights are finite, ``>= 0`` and not all 0. Zero-weight terms are not
            computed.
        reduction: Keras reduction of the per-example values.
        name: Loss name; defaults to ``"weighted_loss"``.

    Raises:
        ConfigError: On an unknown term (the message lists the valid ones), a negative or
            non-finite weight, or all weights 0.
    """

    def __init__(
        self,
        weights: Mapping[str, float],
        reduction: str | None = "sum_over_batch_size",
        name: str | None = "weighted_loss",
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=_COMPUTE_DTYPE)
        self.weights = _check_weights(weights)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        """Per-example weighted sum.

        Args:
            y_true: Tensor ``(B, D, H, W, 1)``.
            y_pred: Tensor of the same shape (any float dtype).

        Returns:
            float32 tensor ``(B,)``.
        """
        total = None
        for key, weight in self.weights.items():
            if weight == 0:
                continue
            term = weight * LOSS_TERMS[key](y_true, y_pred)
            total = term if total is None else total + term
        return total

    def get_config(self) -> dict[str, Any]:
        return {"weights": dict(self.weights), "name": self.name, "reduction": self.reduction}


def build_loss(
    weights: Mapping[str, float], reduction: str | None = "sum_over_batch_size"
) -> keras.losses.Loss:
    """Builds the training loss from a config mapping, e.g. ``{"mae": 1.0, "projection": 0.1}``.

    Args:
        weights: Term name (``"mae"``, ``"mse"``, ``"projection"``) to a weight ``>= 0``; at least
            one weight must be positive.
        reduction: Keras reduction of the per-example values; ``"none"`` for custom loops.

    Returns:
        A :class:`WeightedLoss`, usable in ``model.compile(loss=...)``.

    Raises:
        ConfigError: On an unknown term (listing the valid ones) or invalid weights.
    """
    return WeightedLoss(weights, reduction=reduction)


def per_example_loss(loss: Any) -> Callable[[Any, Any], Any]:
    """Wraps a loss so that it returns one float32 value per example, shape ``(B,)``.

    A custom training loop needs per-example values to average over the *global* batch (the
    trainers of :mod:`xprospect.training`). For a :class:`keras.losses.Loss` the wrapper calls its
    ``call`` method, which returns the values before Keras' batch reduction: the caller's object
    keeps its ``reduction``, and no copy is made (copying a Keras loss goes through
    serialization, which custom losses may not support); both inputs are cast to the loss's
    dtype first. Element-wise values, e.g. ``(B, D, H, W)``, are averaged over all but the batch
    axis.

    Args:
        loss: A :class:`keras.losses.Loss`, or a function ``fn(y_true, y_pred)`` such as
            ``keras.losses.mean_absolute_error`` (which receives ``y_pred`` as float32).

    Returns:
        ``fn(y_true, y_pred) -> (B,)`` float32.

    Raises:
        ConfigError: When called, if the loss returns a scalar (already reduced over the batch).
    """
    if isinstance(loss, keras.losses.Loss):
        dtype = loss.dtype or _COMPUTE_DTYPE

        def values_of(y_true: Any, y_pred: Any) -> Any:
            return loss.call(ops.cast(y_true, dtype), ops.cast(y_pred, dtype))
    else:
        values_of = loss

    def per_example(y_true: Any, y_pred: Any) -> Any:
        values = _float32(values_of(y_true, _float32(y_pred)))
        if ops.ndim(values) == 0:
            raise ConfigError("the loss must return one value per example (or per voxel)")
        return _mean_over_examples(values)

    return per_example


def within_scan_mask(per_example: Callable[[Any, Any], Any]) -> Callable[[Any, Any, Any], Any]:
    """Restricts a per-example voxel loss to a validity mask: ``fn(y_true, y_pred, mask) -> (B,)``.

    Outside the mask the prediction is replaced by the truth, so those voxels add no error and
    no gradient, and the value is divided by the mask's share of the volume. For a loss that is
    a mean over voxels (MAE, MSE) this is exactly the mean inside the mask,
    ``sum(mask * err) / sum(mask)``; for the projection loss the outside voxels project as the
    truth's and the same ``1 / share`` scale applies, so a short scan's example weighs as much
    as a full one. An all-ones mask returns the unmasked loss unchanged (bit for bit); an empty
    one returns 0. Not to be confused with :func:`masked_mae_per_example` (DuoLift's lung
    term, normalised by the whole volume by default).

    Args:
        per_example: ``fn(y_true, y_pred) -> (B,)``, e.g. :func:`mae_per_example` or
            :func:`per_example_loss` of a :class:`WeightedLoss`.

    Returns:
        ``fn(y_true, y_pred, mask) -> (B,)`` float32; ``mask`` is 0/1 of the volumes' shape
        (``"scan_mask"`` of :func:`xprospect.data.load_dataset`).
    """

    def masked(y_true: Any, y_pred: Any, mask: Any) -> Any:
        t, p, m = _float32(y_true), _float32(y_pred), _float32(mask)
        inside = m * p + (1.0 - m) * t
        flat_m = ops.reshape(m, (ops.shape(m)[0], -1))
        n = ops.cast(ops.shape(flat_m)[1], _COMPUTE_DTYPE)
        # sum(mask) / n: the share of the volume scored; at least one voxel's worth, so an
        # empty mask gives 0 / (1 / n) = 0 rather than 0 / 0.
        share = ops.maximum(ops.sum(flat_m, axis=1), 1.0) / n
        return per_example(t, inside) / share

    return masked
