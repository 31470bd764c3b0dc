"""Image-quality metrics for reconstructed CT: NumPy/SciPy functions and Keras metrics.

Evaluation functions (NumPy/SciPy, one case at a time)
------------------------------------------------------
They take two canonical volumes of shape ``(D, H, W)`` (axis 0 head to feet, 1 front to back,
2 right to left; ``docs/conventions.md``), the ground truth first, window-normalised so that the
data range is 1 unless ``data_range`` says otherwise. Everything is computed in float64.

- :func:`mae`, :func:`mse`: mean absolute and squared error over all voxels.
- :func:`cosine_similarity`: ``<t, p> / (|t| |p|)`` over the flattened volumes. Where a volume is
  all zeros the cosine is undefined; we return 1.0 if both volumes are identical (e.g. both all
  zeros) and 0.0 if only one is all zeros.
- :func:`psnr_3d`: ``10 log10(data_range^2 / MSE)`` over the whole volume, which is
  ``20 log10(data_range / sqrt(MSE))``. Identical volumes (MSE 0) give ``inf``, or
  ``zero_mse_db`` if that is set.
- :func:`psnr_2d`: PSNR of every slice along an axis, averaged over the slices (axis 0 axial,
  1 coronal, 2 sagittal); ``axis=None`` returns the three and their mean. **Slices with MSE 0**
  have no finite PSNR: by default they are left out of the mean (a perfectly predicted slice of
  pure air would otherwise make the mean infinite, and capping it at an arbitrary number would
  inflate the score by how many such slices there are); if every slice has MSE 0 the result is
  ``inf``. With ``zero_mse_db`` set they count as that value instead (X2CT-GAN uses 100 dB).
- :func:`ssim_3d`: SSIM of Wang et al. (2004) with a 3D Gaussian window (sigma 1.5, truncated at
  3.5 sigma: 11 taps per axis), K1 = 0.01, K2 = 0.03, population covariances, reflected edges,
  averaged over the voxels at least 5 from every face. This is what
  ``skimage.metrics.structural_similarity(t, p, gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1)`` computes on a 3D array.
- :func:`ssim_2d`: the same SSIM on every 2D slice along an axis, averaged over slices (and
  ``axis=None``: the three axes and their mean). Each slice is scored as scikit-image scores a 2D
  image; the window options follow scikit-image's names.
- SSIM edges: ``padding="reflect"`` (default; scikit-image) or ``padding="zeros"`` (zero padding
  by the window radius and the whole map averaged, as ``pytorch-ssim`` and its 3D fork, which
  DuoLift-GAN's SSIM uses); see :data:`SSIM_PADDINGS`.
- :func:`vessel_dice`: Dice coefficient of the classical pulmonary-vessel masks
  (:func:`xprospect.segmentation.vessel_mask`, an approximation of TotalSegmentator's), in HU.
- :func:`lung_dice`: Dice coefficient of the classical lung masks
  (:func:`xprospect.segmentation.lung_mask`) of the two volumes, in HU. It asks whether the
  reconstruction has lungs of the right shape and size, which voxel errors do not.
- :func:`evaluate_case`: all of the above for one case, in one of two modes (below).

The two modes of :func:`evaluate_case`
--------------------------------------
:func:`evaluate_case` takes the two volumes as the data pipeline and the models have them:
window-normalised to [0, 1] with ``hu_window`` (default [-1000, 1000] HU, the XprospeCT paper's).
The prediction is clipped to [0, 1] first (the truth cannot leave it). ``hu_window`` maps both
back to HU (``w * (high - low) + low``) where HU are needed: for the lung masks and for the
X2CT-compatible values.

``mode="xprospect"`` (default): every metric is computed on the [0, 1] values with data range 1:
MAE, MSE, cosine similarity, 3D PSNR, slice-wise PSNR (zero-MSE slices left out), 3D SSIM
(Gaussian window) and slice-wise SSIM (Gaussian window, sigma 1.5, population covariance: Wang et
al.'s definition). ``mae_hu`` is the MAE times the window's width, in HU.

``mode="x2ct_compatible"`` reproduces the numbers X2CT-GAN publishes (Ying et al., CVPR 2019;
``3DGAN/test.py`` and ``3DGAN/lib/utils/metrics_np.py`` of its code), so that xprospect models
can be put in the same table:

- CT is stored as ``HU + 1024`` clipped to [0, 2500] (the ``x2ct`` window [-1024, 1476] HU) and
  divided by 2500; the prediction is clipped to [0, 1]. The mode is exact for volumes windowed
  with ``hu_window="x2ct"``; with a narrower window (such as the default) HU outside it were
  already clipped (air at -1024 HU reads -1000, bone above 1000 HU reads 1000) and the numbers
  are X2CT's definitions on slightly different data.
- MAE, MSE, cosine similarity and SSIM are computed on these [0, 1] values.
- SSIM is only slice-wise, as scikit-image's ``compare_ssim(..., multichannel=True)`` computed it
  with the slices as channels: each slice scored with scikit-image's defaults, a 7 x 7 *uniform*
  window, *sample* covariances (N / (N - 1)), K1 = 0.01, K2 = 0.03, ``data_range=1``, averaged
  over its pixels at least 3 from the slice's edges; then averaged over the slices of each axis,
  and over the three axes. X2CT-GAN has no 3D SSIM, so this mode has no ``ssim_3d``.
- PSNR is computed on the CT values ``x * 2500`` truncated to integers (their ``astype(int32)``)
  with ``PIXEL_MAX = 4095``, although the data range is 2500. This adds
  ``20 log10(4095 / 2500) = 4.29 dB`` to every PSNR compared with the same PSNR taken with the
  true data range. A volume or slice with MSE 0 scores 100 dB. ``mae_hu`` is the MAE of those
  integer CT values (their "MAE" in CT units, i.e. HU).

So X2CT-compatible PSNRs are systematically higher than xprospect-mode PSNRs, for three reasons:
the 4.29 dB offset, the wider window (2500 HU instead of 2000 HU: the same error is a smaller
fraction of it), and slices of air that both volumes clip to 0, which score 100 dB each in the
slice-wise mean. Their SSIM differs from ours by the window (uniform 7 x 7 against Gaussian sigma
1.5) and by the HU window. Only compare numbers computed in the same mode.

Keras metrics (``keras.ops``, any backend)
------------------------------------------
:class:`PSNR3D` and :class:`SSIM3D` follow a validation run on batches ``(B, D, H, W, 1)`` of
window-normalised volumes: each is the mean over cases of the per-case value, with the
definitions above (data range 1; PSNR capped at ``max_db`` so that a perfect case does not make
the mean infinite; SSIM3D equals :func:`ssim_3d`, computed with valid separable convolutions).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal, overload

import keras
import numpy as np
import numpy.typing as npt
from keras import ops

from xprospect.errors import ConfigError, GeometryError, InvalidValuesError
from xprospect.image import CANONICAL_AXCODES, Volume
from xprospect.preprocessing import HUWindowLike, reorient, resolve_hu_window
from xprospect.segmentation import (
    DEFAULT_SPACING_MM,
    VESSEL_THRESHOLD_HU,
    dice,
    lung_mask,
    vessel_mask,
)

__all__ = [
    "AXIS_NAMES",
    "PSNR3D",
    "SSIM3D",
    "SSIM_PADDINGS",
    "X2CT_CT_MAX",
    "X2CT_PIXEL_MAX",
    "X2CT_ZERO_MSE_DB",
    "EvaluationMode",
    "cosine_similarity",
    "evaluate_case",
    "lung_dice",
    "mae",
    "mse",
    "psnr_2d",
    "psnr_3d",
    "ssim_2d",
    "ssim_3d",
    "vessel_dice",
]

AXIS_NAMES: tuple[str, str, str] = ("axial", "coronal", "sagittal")
"""Name of the slices normal to canonical array axes 0, 1 and 2."""

X2CT_CT_MAX = 2500.0
"""X2CT-GAN stores CT as ``HU + 1024`` clipped to ``[0, X2CT_CT_MAX]``."""
X2CT_PIXEL_MAX = 4095.0
"""The ``PIXEL_MAX`` X2CT-GAN's PSNR uses on that [0, 2500] CT."""
X2CT_ZERO_MSE_DB = 100.0
"""The PSNR X2CT-GAN gives a volume or slice with MSE 0."""
_X2CT_HU_OFFSET = 1024.0
# Window-normalised truth may overshoot [0, 1] by float noise, never more.
_RANGE_TOL = 1e-4
_TRUNC_TOL = 1e-6

EvaluationMode = Literal["xprospect", "x2ct_compatible"]
FloatArray = npt.NDArray[np.float64]

# Wang et al. (2004) and scikit-image's structural_similarity.
_SSIM_TRUNCATE = 3.5
SSIM_PADDINGS = ("reflect", "zeros")
"""How SSIM treats the window at the edges: ``"reflect"`` (scikit-image: reflected edges, the map
averaged over the pixels at least the window radius from every edge) or ``"zeros"``
(``pytorch-ssim``: zero padding by the radius, the whole map averaged)."""


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
def _pair(truth: npt.ArrayLike, pred: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    t = np.asarray(truth.array if isinstance(truth, Volume) else truth, dtype=np.float64)
    p = np.asarray(pred.array if isinstance(pred, Volume) else pred, dtype=np.float64)
    if t.shape != p.shape:
        raise GeometryError(f"truth and prediction differ in shape: {t.shape} and {p.shape}")
    if t.ndim != 3:
        raise GeometryError(f"metrics need 3D volumes (D, H, W), got shape {t.shape}")
    return t, p


def _check_mask(mask: npt.ArrayLike | None, shape: tuple[int, ...]) -> np.ndarray | None:
    """The validity mask as a boolean array of ``shape`` (``None`` stays ``None``: all voxels)."""
    if mask is None:
        return None
    m = np.asarray(mask.array if isinstance(mask, Volume) else mask)
    if m.shape != shape:
        raise GeometryError(f"mask shape {m.shape} differs from the volumes' {shape}")
    return np.asarray(m != 0)


def _masked_mean(values: FloatArray, mask: np.ndarray | None) -> float:
    """Mean of ``values`` inside ``mask`` (all voxels if ``None``); NaN for an empty mask."""
    if mask is None:
        return float(np.mean(values))
    n = int(np.count_nonzero(mask))
    return float(np.sum(values[mask]) / n) if n else math.nan


def _check_axis(axis: int) -> int:
    if axis not in (0, 1, 2):
        raise ConfigError(f"axis must be 0 (axial), 1 (coronal), 2 (sagittal) or None, got {axis}")
    return int(axis)


def _check_range(data_range: float) -> float:
    r = float(data_range)
    if not (math.isfinite(r) and r > 0):
        raise ConfigError(f"data_range must be positive, got {data_range!r}")
    return r


def _psnr_from_mse(mse_values: FloatArray, data_range: float) -> FloatArray:
    with np.errstate(divide="ignore"):
        return np.asarray(10.0 * np.log10(data_range**2 / mse_values), dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# Voxel-wise metrics
# ---------------------------------------------------------------------------------------------
def mae(truth: npt.ArrayLike, pred: npt.ArrayLike, *, mask: npt.ArrayLike | None = None) -> float:
    """Mean absolute error.

    Args:
        truth: Ground truth, shape ``(D, H, W)``.
        pred: Prediction, same shape.
        mask: Optional validity mask of the same shape (nonzero = scored), e.g. the scanned
            region of a real CT (:func:`xprospect.preprocessing.scan_mask`); ``None`` scores
            every voxel. The mean is taken over the masked voxels only (NaN if there are none).

    Returns:
        ``mean(|pred - truth|)`` over the (masked) voxels.

    Raises:
        GeometryError: If the shapes differ or are not 3D.
    """
    t, p = _pair(truth, pred)
    return _masked_mean(np.abs(p - t), _check_mask(mask, t.shape))


def mse(truth: npt.ArrayLike, pred: npt.ArrayLike, *, mask: npt.ArrayLike | None = None) -> float:
    """Mean squared error.

    Args:
        truth: Ground truth, shape ``(D, H, W)``.
        pred: Prediction, same shape.
        mask: Optional validity mask of the same shape (nonzero = scored), e.g. the scanned
            region of a real CT (:func:`xprospect.preprocessing.scan_mask`); ``None`` scores
            every voxel. The mean is taken over the masked voxels only (NaN if there are none).

    Returns:
        ``mean((pred - truth)^2)`` over the (masked) voxels.

    Raises:
        GeometryError: If the shapes differ or are not 3D.
    """
    t, p = _pair(truth, pred)
    return _masked_mean(np.square(p - t), _check_mask(mask, t.shape))


def cosine_similarity(
    truth: npt.ArrayLike, pred: npt.ArrayLike, *, mask: npt.ArrayLike | None = None
) -> float:
    """Cosine of the angle between the flattened volumes.

    Args:
        truth: Ground truth, shape ``(D, H, W)``.
        pred: Prediction, same shape.
        mask: Optional validity mask of the same shape: only its voxels enter the vectors.

    Returns:
        ``<t, p> / (|t| |p|)`` in [-1, 1]. If a volume is all zeros (undefined): 1.0 when the two
        volumes are identical, else 0.0.

    Raises:
        GeometryError: If the shapes differ or are not 3D.
    """
    t, p = _pair(truth, pred)
    m = _check_mask(mask, t.shape)
    if m is not None:
        t, p = t[m], p[m]
    nt, np_ = float(np.linalg.norm(t)), float(np.linalg.norm(p))
    if nt == 0.0 or np_ == 0.0:
        return 1.0 if np.array_equal(t, p) else 0.0
    value = float(np.dot(t.ravel(), p.ravel())) / (nt * np_)
    return min(1.0, max(-1.0, value))


# ---------------------------------------------------------------------------------------------
# PSNR
# ---------------------------------------------------------------------------------------------
def psnr_3d(
    truth: npt.ArrayLike,
    pred: npt.ArrayLike,
    *,
    data_range: float = 1.0,
    zero_mse_db: float | None = None,
    mask: npt.ArrayLike | None = None,
) -> float:
    """Peak signal-to-noise ratio of the whole volume (or of the voxels in ``mask``), in dB.

    Args:
        truth: Ground truth, shape ``(D, H, W)``.
        pred: Prediction, same shape.
        data_range: The peak value (1 for window-normalised volumes).
        zero_mse_db: Value for identical volumes; ``None`` returns ``inf``.
        mask: Optional validity mask of the same shape; the MSE is taken over its voxels only.

    Returns:
        ``10 log10(data_range^2 / MSE)``.

    Raises:
        GeometryError: If the shapes differ or are not 3D.
        ConfigError: If ``data_range`` is not positive.
    """
    r = _check_range(data_range)
    value = mse(truth, pred, mask=mask)
    if math.isnan(value):
        return math.nan
    if value == 0.0:
        return math.inf if zero_mse_db is None else float(zero_mse_db)
    return float(_psnr_from_mse(np.asarray(value), r))


def _slice_mse(
    t: FloatArray, p: FloatArray, axis: int, mask: np.ndarray | None = None
) -> FloatArray:
    """MSE of every slice normal to ``axis``; inside ``mask``, NaN for a slice it misses."""
    other = tuple(a for a in range(3) if a != axis)
    if mask is None:
        return np.asarray(np.mean(np.square(p - t), axis=other), dtype=np.float64)
    n = np.count_nonzero(mask, axis=other)
    total = np.sum(np.where(mask, np.square(p - t), 0.0), axis=other)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(np.where(n > 0, total / np.maximum(n, 1), np.nan), dtype=np.float64)


def _mean_slice_psnr(slice_mse: FloatArray, data_range: float, zero_mse_db: float | None) -> float:
    # NaN: a slice outside the validity mask, which is not scored at all.
    slice_mse = slice_mse[~np.isnan(slice_mse)]
    if slice_mse.size == 0:
        return math.nan
    zero = slice_mse == 0.0
    psnr = _psnr_from_mse(np.where(zero, 1.0, slice_mse), data_range)
    if zero_mse_db is not None:
        return float(np.mean(np.where(zero, float(zero_mse_db), psnr)))
    if np.all(zero):
        return math.inf
    return float(np.mean(psnr[~zero]))


@overload
def psnr_2d(
    truth: npt.ArrayLike,
    pred: npt.ArrayLike,
    axis: int,
    *,
    data_range: float = ...,
    zero_mse_db: float | None = ...,
    mask: npt.ArrayLike | None = ...,
) -> float: ...
@overload
def psnr_2d(
    truth: npt.ArrayLike,
    pred: npt.ArrayLike,
    axis: None = ...,
    *,
    data_range: float = ...,
    zero_mse_db: float | None = ...,
    mask: npt.ArrayLike | None = ...,
) -> dict[str, float]: ...
def psnr_2d(
    truth: npt.ArrayLike,
    pred: npt.ArrayLike,
    axis: int | None = None,
    *,
    data_range: float = 1.0,
    zero_mse_db: float | None = None,
    mask: npt.ArrayLike | None = None,
) -> float | dict[str, float]:
    """Slice-wise PSNR: the mean over slices of each slice's PSNR, in dB.

    Args:
        truth: Ground truth, shape ``(D, H, W)``, canonical.
        pred: Prediction, same shape.
        axis: Slices normal to this axis (0 axial, 1 coronal, 2 sagittal), or ``None`` for all
            three.
        data_range: The peak value (1 for window-normalised volumes).
        zero_mse_db: Value of a slice with MSE 0. ``None`` (default) leaves such slices out of the
            mean, and gives ``inf`` if every slice has MSE 0.
        mask: Optional validity mask of the same shape: each slice's MSE is taken over its
            masked pixels, and slices without any are left out of the mean.

    Returns:
        A float for one axis; for ``axis=None`` a dict with keys ``"axial"``, ``"coronal"``,
        ``"sagittal"`` and ``"mean"`` (the mean of the three).

    Raises:
        GeometryError: If the shapes differ or are not 3D.
        ConfigError: If ``axis`` or ``data_range`` is invalid.
    """
    t, p = _pair(truth, pred)
    r = _check_range(data_range)
    m = _check_mask(mask, t.shape)
    if axis is not None:
        return _mean_slice_psnr(_slice_mse(t, p, _check_axis(axis), m), r, zero_mse_db)
    out = {
        name: _mean_slice_psnr(_slice_mse(t, p, ax, m), r, zero_mse_db)
        for ax, name in enumerate(AXIS_NAMES)
    }
    out["mean"] = float(np.mean([out[name] for name in AXIS_NAMES]))
    return out


# ---------------------------------------------------------------------------------------------
# SSIM
# ---------------------------------------------------------------------------------------------
def _ssim_per_slice(
    t: FloatArray,
    p: FloatArray,
    axes: Sequence[int],
    *,
    data_range: float,
    gaussian_weights: bool,
    sigma: float,
    win_size: int | None,
    use_sample_covariance: bool,
    k1: float,
    k2: float,
    padding: str = "reflect",
    mask: np.ndarray | None = None,
) -> FloatArray:
    """SSIM map filtered along ``axes`` only, cropped and averaged over them.

    Filtering a stack along its in-plane axes is filtering every slice on its own, so this is
    scikit-image's ``structural_similarity`` applied to each slice (``axes`` of length 2) or to
    the whole volume (all three axes), without a Python loop. With ``padding="zeros"`` the images
    are zero-padded by the window radius and the whole map is averaged, as the PyTorch SSIM of
    Po-Hsun Su's ``pytorch-ssim`` (and its 3D fork by jinh0park, which DuoLift-GAN cites) does.

    With a validity ``mask`` the map is computed as without one (the window still sees the
    voxels outside it) and averaged over the masked voxels of the cropped map; an index whose
    slice holds none is NaN.

    Returns:
        The mean SSIM over ``axes`` for every index of the remaining axis (a 0D array if none).
    """
    import scipy.ndimage as ndi

    if sigma <= 0 or k1 < 0 or k2 < 0:
        raise ConfigError(f"need sigma > 0, K1 >= 0 and K2 >= 0, got {sigma}, {k1}, {k2}")
    if padding not in SSIM_PADDINGS:
        raise ConfigError(f"padding must be one of {SSIM_PADDINGS}, got {padding!r}")
    mode, cval = ("reflect", 0.0) if padding == "reflect" else ("constant", 0.0)
    if win_size is None:
        win_size = 2 * int(_SSIM_TRUNCATE * sigma + 0.5) + 1 if gaussian_weights else 7
    if win_size < 1 or win_size % 2 != 1:
        raise ConfigError(f"win_size must be odd and positive, got {win_size}")
    for ax in axes:
        if t.shape[ax] < win_size:
            raise GeometryError(
                f"SSIM window of {win_size} exceeds the volume's extent {t.shape[ax]} along axis "
                f"{ax}"
            )

    def smooth(x: FloatArray) -> FloatArray:
        for ax in axes:
            if gaussian_weights:
                x = ndi.gaussian_filter1d(
                    x, sigma, axis=ax, mode=mode, cval=cval, truncate=_SSIM_TRUNCATE
                )
            else:
                x = ndi.uniform_filter1d(x, win_size, axis=ax, mode=mode, cval=cval)
        return x

    n_window = win_size ** len(axes)
    cov_norm = n_window / (n_window - 1) if use_sample_covariance else 1.0
    ux, uy = smooth(t), smooth(p)
    vx = cov_norm * (smooth(t * t) - ux * ux)
    vy = cov_norm * (smooth(p * p) - uy * uy)
    vxy = cov_norm * (smooth(t * p) - ux * uy)
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    pad = (win_size - 1) // 2 if padding == "reflect" else 0
    crop: list[slice] = [slice(None)] * 3
    for ax in axes:
        crop[ax] = slice(pad, t.shape[ax] - pad)
    if mask is None:
        return np.asarray(np.mean(s[tuple(crop)], axis=tuple(axes)), dtype=np.float64)
    w = mask[tuple(crop)]
    n = np.count_nonzero(w, axis=tuple(axes))
    total = np.sum(np.where(w, s[tuple(crop)], 0.0), axis=tuple(axes))
    return np.asarray(np.where(n > 0, total / np.maximum(n, 1), np.nan), dtype=np.float64)


def ssim_3d(
    truth: npt.ArrayLike,
    pred: npt.ArrayLike,
    *,
    data_range: float = 1.0,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    padding: str = "reflect",
    mask: npt.ArrayLike | None = None,
) -> float:
    """Structural similarity with a 3D Gaussian window (see the module docstring).

    Args:
        truth: Ground truth, shape ``(D, H, W)``, each side at least 11 (the window).
        pred: Prediction, same shape.
        data_range: The data range (1 for window-normalised volumes).
        sigma: Standard deviation of the Gaussian window, in voxels.
        k1: Constant of the luminance term.
        k2: Constant of the contrast-structure term.
        padding: ``"reflect"`` (scikit-image, default) or ``"zeros"`` (``pytorch-ssim-3D``, which
            DuoLift-GAN's SSIM(3D) uses); see :data:`SSIM_PADDINGS`.
        mask: Optional validity mask of the same shape: the SSIM map (computed on the whole
            volumes, as ``structural_similarity(..., full=True)`` returns it) is averaged over
            the masked voxels of the region the unmasked mean uses (at least 5 voxels from every
            face with ``"reflect"``), so an all-ones mask gives the unmasked value. NaN if no
            masked voxel is left.

    Returns:
        Mean SSIM, at most 1 (identical volumes, constant ones included, give exactly 1).

    Raises:
        GeometryError: If the shapes differ, are not 3D, or are smaller than the window.
        ConfigError: If a parameter is out of range.
    """
    t, p = _pair(truth, pred)
    return float(
        _ssim_per_slice(
            t,
            p,
            (0, 1, 2),
            data_range=_check_range(data_range),
            gaussian_weights=True,
            sigma=float(sigma),
            win_size=None,
            use_sample_covariance=False,
            k1=float(k1),
            k2=float(k2),
            padding=str(padding),
            mask=_check_mask(mask, t.shape),
        )
    )


@overload
def ssim_2d(
    truth: npt.ArrayLike,
    pred: npt.ArrayLike,
    axis: int,
    *,
    data_range: float = ...,
    gaussian_weights: bool = ...,
    sigma: float = ...,
    win_size: int | None = ...,
    use_sample_covariance: bool = ...,
    k1: float = ...,
    k2: float = ...,
    padding: str = ...,
    mask: npt.ArrayLike | None = ...,
) -> float: ...
@overload
def ssim_2d(
    truth: npt.ArrayLike,
    pred: npt.ArrayLike,
    axis: None = ...,
    *,
    data_range: float = ...,
    gaussian_weights: bool = ...,
    sigma: float = ...,
    win_size: int | None = ...,
    use_sample_covariance: bool = ...,
    k1: float = ...,
    k2: float = ...,
    padding: str = ...,
    mask: npt.ArrayLike | None = ...,
) -> dict[str, float]: ...
def ssim_2d(
    truth: npt.ArrayLike,
    pred: npt.ArrayLike,
    axis: int | None = None,
    *,
    data_range: float = 1.0,
    gaussian_weights: bool = True,
    sigma: float = 1.5,
    win_size: int | None = None,
    use_sample_covariance: bool = False,
    k1: float = 0.01,
    k2: float = 0.03,
    padding: str = "reflect",
    mask: npt.ArrayLike | None = None,
) -> float | dict[str, float]:
    """Slice-wise SSIM: the mean over slices of each 2D slice's SSIM.

    Each slice is scored as ``skimage.metrics.structural_similarity`` scores a 2D image with the
    same options. The defaults are Wang et al.'s Gaussian window; X2CT-GAN's definition is
    ``gaussian_weights=False, win_size=7, use_sample_covariance=True`` (scikit-image's defaults).

    Args:
        truth: Ground truth, shape ``(D, H, W)``, canonical.
        pred: Prediction, same shape.
        axis: Slices normal to this axis (0 axial, 1 coronal, 2 sagittal), or ``None`` for all
            three.
        data_range: The data range (1 for window-normalised volumes).
        gaussian_weights: Gaussian window of ``sigma`` (True) or a uniform ``win_size`` square.
        sigma: Standard deviation of the Gaussian window, in pixels.
        win_size: Side of the window; defaults to 11 for the Gaussian (3.5 sigma) and 7 for the
            uniform window.
        use_sample_covariance: Normalise covariances by ``N - 1`` instead of ``N``.
        k1: Constant of the luminance term.
        k2: Constant of the contrast-structure term.
        padding: ``"reflect"`` (scikit-image, default) or ``"zeros"`` (``pytorch-ssim``); see
            :data:`SSIM_PADDINGS`.
        mask: Optional validity mask of the same shape: each slice's SSIM map is averaged over
            its masked pixels (as :func:`ssim_3d`), and slices without any are left out.

    Returns:
        A float for one axis; for ``axis=None`` a dict with keys ``"axial"``, ``"coronal"``,
        ``"sagittal"`` and ``"mean"``.

    Raises:
        GeometryError: If the shapes differ, are not 3D, or a slice is smaller than the window.
        ConfigError: If ``axis`` or a parameter is invalid.
    """
    t, p = _pair(truth, pred)
    options: dict[str, Any] = {
        "data_range": _check_range(data_range),
        "gaussian_weights": bool(gaussian_weights),
        "sigma": float(sigma),
        "win_size": None if win_size is None else int(win_size),
        "use_sample_covariance": bool(use_sample_covariance),
        "k1": float(k1),
        "k2": float(k2),
        "padding": str(padding),
        "mask": _check_mask(mask, t.shape),
    }

    def one(ax: int) -> float:
        in_plane = tuple(a for a in range(3) if a != ax)
        values = _ssim_per_slice(t, p, in_plane, **options)
        values = values[~np.isnan(values)]
        return float(np.mean(values)) if values.size else math.nan

    if axis is not None:
        return one(_check_axis(axis))
    out = {name: one(ax) for ax, name in enumerate(AXIS_NAMES)}
    out["mean"] = float(np.mean([out[name] for name in AXIS_NAMES]))
    return out


# ---------------------------------------------------------------------------------------------
# Lungs
# ---------------------------------------------------------------------------------------------
def lung_dice(
    truth_hu: np.ndarray | Volume,
    pred_hu: np.ndarray | Volume,
    *,
    spacing_mm: float | Sequence[float] | None = None,
) -> float:
    """Dice coefficient of the classical lung masks of two CT volumes.

    Args:
        truth_hu: Ground-truth CT in HU, canonical ``(D, H, W)`` array or any Volume.
        pred_hu: Predicted CT in HU, same shape (and geometry).
        spacing_mm: Voxel size for bare arrays (see :func:`xprospect.segmentation.lung_mask`).

    Returns:
        ``2 |A & B| / (|A| + |B|)``; 1.0 if neither volume has lungs.

    Raises:
        GeometryError: If the shapes differ.
    """
    a = (
        lung_mask(truth_hu)
        if isinstance(truth_hu, Volume)
        else lung_mask(truth_hu, spacing_mm=spacing_mm)
    )
    b = (
        lung_mask(pred_hu)
        if isinstance(pred_hu, Volume)
        else lung_mask(pred_hu, spacing_mm=spacing_mm)
    )
    return dice(a, b)


def vessel_dice(
    truth_hu: np.ndarray,
    pred_hu: np.ndarray,
    *,
    spacing_mm: float | Sequence[float] | None = None,
    threshold_hu: float = VESSEL_THRESHOLD_HU,
    truth_lungs: npt.ArrayLike | None = None,
    pred_lungs: npt.ArrayLike | None = None,
) -> float:
    """Dice coefficient of the classical pulmonary-vessel masks of two CT volumes.

    DuoLift-GAN's Table 3 reports DICE(VesselSeg) with TotalSegmentator's masks; this uses
    :func:`xprospect.segmentation.vessel_mask` (a HU threshold inside each volume's own lungs),
    an approximation of it, so the values are comparable between methods scored here, not with
    the paper's digits.

    Args:
        truth_hu: Ground-truth CT in HU, canonical ``(D, H, W)``.
        pred_hu: Predicted CT in HU, same shape.
        spacing_mm: Voxel size (default 2.5 mm).
        threshold_hu: Lung voxels at or above it are vessel.
        truth_lungs: The truth's lung mask if already computed.
        pred_lungs: The prediction's lung mask if already computed.

    Returns:
        ``2 |A & B| / (|A| + |B|)``; 1.0 if neither volume has vessels.

    Raises:
        GeometryError: If the shapes differ.
    """
    t, p = _pair(truth_hu, pred_hu)
    a = vessel_mask(t, spacing_mm=spacing_mm, threshold_hu=threshold_hu, lungs=truth_lungs)
    b = vessel_mask(p, spacing_mm=spacing_mm, threshold_hu=threshold_hu, lungs=pred_lungs)
    return dice(a, b)


# ---------------------------------------------------------------------------------------------
# One case, both modes
# ---------------------------------------------------------------------------------------------
def _canonical_array(
    image: np.ndarray | Volume,
) -> tuple[FloatArray, tuple[float, float, float] | None]:
    if isinstance(image, Volume):
        vol = image if image.is_canonical else reorient(image, CANONICAL_AXCODES)
        return np.asarray(vol.array, dtype=np.float64), vol.spacing_mm
    return np.asarray(image, dtype=np.float64), None


def evaluate_case(
    truth: np.ndarray | Volume,
    pred: np.ndarray | Volume,
    *,
    hu_window: HUWindowLike = (-1000.0, 1000.0),
    mode: EvaluationMode = "xprospect",
    spacing_mm: float | Sequence[float] | None = None,
    mask: np.ndarray | Volume | None = None,
) -> dict[str, float]:
    """Every metric of one reconstructed case, from two window-normalised volumes.

    Args:
        truth: Ground truth in [0, 1], windowed with ``hu_window`` (``window_hu``): a canonical
            ``(D, H, W)`` array, or a Volume (reoriented to canonical if needed).
        pred: Prediction of the same shape and window (a model's output); values outside [0, 1]
            are clipped to it.
        hu_window: The window both volumes were normalised with (name or ``(low, high)`` HU). It
            maps them back to HU for the lung masks and for the X2CT-compatible mode.
        mode: ``"xprospect"`` or ``"x2ct_compatible"`` (see the module docstring). The X2CT mode
            is exact for volumes windowed with X2CT-GAN's own window ``"x2ct"`` ([-1024, 1476]
            HU); a narrower window has already clipped HU that X2CT-GAN would keep.
        spacing_mm: Voxel size for the lung masks and lung volumes; defaults to the truth
            Volume's spacing, else 2.5 mm isotropic (the 128^3 preprocessing grid).
        mask: Optional validity mask on the truth's grid (nonzero = scored): the scanned region
            of a real CT (:func:`xprospect.preprocessing.scan_mask`), outside which the truth is
            padding, not anatomy. The voxel metrics (MAE, MSE, cosine, PSNR, SSIM, 2D and 3D)
            are then taken inside it (SSIM: the map averaged inside it); the lung Dice and
            volumes stay whole-volume (the lung masks are segmented on each volume).

    Returns:
        ``mae``, ``mse``, ``mae_hu``, ``cosine_similarity``, ``psnr_3d``, ``psnr_axial``,
        ``psnr_coronal``, ``psnr_sagittal``, ``psnr_2d`` (mean of the three), ``ssim_axial``,
        ``ssim_coronal``, ``ssim_sagittal``, ``ssim_2d`` (mean of the three), ``ssim_3d``
        (xprospect mode only), ``lung_dice``, ``lung_volume_ml_truth`` and
        ``lung_volume_ml_pred``.

    Raises:
        ConfigError: On an unknown mode or window.
        GeometryError: If the volumes differ in shape or are not 3D.
        InvalidValuesError: If the truth is not in [0, 1] (e.g. HU were passed) or holds NaN.
    """
    low, high = resolve_hu_window(hu_window)
    t_w, t_spacing = _canonical_array(truth)
    p_w, _ = _canonical_array(pred)
    if t_w.shape != p_w.shape or t_w.ndim != 3:
        raise GeometryError(
            f"truth and prediction must be 3D of one shape, got {t_w.shape} and {p_w.shape}"
        )
    if not (np.all(np.isfinite(t_w)) and np.all(np.isfinite(p_w))):
        raise InvalidValuesError("truth or prediction holds NaN or Inf")
    t_lo, t_hi = float(t_w.min()), float(t_w.max())
    if t_lo < -_RANGE_TOL or t_hi > 1.0 + _RANGE_TOL:
        raise InvalidValuesError(
            f"evaluate_case needs window-normalised volumes in [0, 1]; the truth spans "
            f"[{t_lo:g}, {t_hi:g}] (map HU with xprospect.preprocessing.window_hu first)"
        )
    t_w = np.clip(t_w, 0.0, 1.0)
    p_w = np.clip(p_w, 0.0, 1.0)
    t_hu = t_w * (high - low) + low
    p_hu = p_w * (high - low) + low
    spacing_values: Sequence[float] | np.ndarray
    if spacing_mm is None:
        spacing_values = t_spacing if t_spacing is not None else (DEFAULT_SPACING_MM,) * 3
    else:
        spacing_values = np.broadcast_to(np.asarray(spacing_mm, dtype=np.float64), (3,))
    spacing = tuple(float(s) for s in spacing_values)
    m = None
    if mask is not None:
        m_arr, _ = _canonical_array(mask)
        m = _check_mask(m_arr, t_w.shape)
        if m is not None and bool(np.all(m)):
            m = None  # all-ones: the unmasked code path, bit for bit

    out: dict[str, float] = {}
    if mode == "xprospect":
        t, p = t_w, p_w
        out["mae"] = mae(t, p, mask=m)
        out["mse"] = mse(t, p, mask=m)
        out["mae_hu"] = out["mae"] * (high - low)
        out["cosine_similarity"] = cosine_similarity(t, p, mask=m)
        out["psnr_3d"] = psnr_3d(t, p, mask=m)
        psnr = psnr_2d(t, p, mask=m)
        ssim = ssim_2d(t, p, mask=m)
        out["ssim_3d"] = ssim_3d(t, p, mask=m)
    elif mode == "x2ct_compatible":
        ct_t = np.clip(t_hu + _X2CT_HU_OFFSET, 0.0, X2CT_CT_MAX)
        ct_p = np.clip(p_hu + _X2CT_HU_OFFSET, 0.0, X2CT_CT_MAX)
        t, p = ct_t / X2CT_CT_MAX, ct_p / X2CT_CT_MAX
        out["mae"] = mae(t, p, mask=m)
        out["mse"] = mse(t, p, mask=m)
        out["cosine_similarity"] = cosine_similarity(t, p, mask=m)
        # X2CT-GAN casts [0, 2500] floats to int32: truncation, i.e. floor for values >= 0. The
        # small tolerance keeps integer HU that the window arithmetic left a hair below.
        int_t = np.floor(ct_t + _TRUNC_TOL)
        int_p = np.floor(ct_p + _TRUNC_TOL)
        out["mae_hu"] = mae(int_t, int_p, mask=m)
        out["psnr_3d"] = psnr_3d(
            int_t, int_p, data_range=X2CT_PIXEL_MAX, zero_mse_db=X2CT_ZERO_MSE_DB, mask=m
        )
        psnr = psnr_2d(
            int_t, int_p, data_range=X2CT_PIXEL_MAX, zero_mse_db=X2CT_ZERO_MSE_DB, mask=m
        )
        ssim = ssim_2d(
            t,
            p,
            gaussian_weights=False,
            win_size=7,
            use_sample_covariance=True,
            data_range=1.0,
            mask=m,
        )
    else:
        raise ConfigError(f"unknown mode {mode!r}; expected 'xprospect' or 'x2ct_compatible'")
    for name in AXIS_NAMES:
        out[f"psnr_{name}"] = psnr[name]
        out[f"ssim_{name}"] = ssim[name]
    out["psnr_2d"] = psnr["mean"]
    out["ssim_2d"] = ssim["mean"]

    mask_t = lung_mask(t_hu, spacing_mm=spacing)
    mask_p = lung_mask(p_hu, spacing_mm=spacing)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    out["lung_dice"] = dice(mask_t, mask_p)
    out["lung_volume_ml_truth"] = float(np.count_nonzero(mask_t)) * voxel_ml
    out["lung_volume_ml_pred"] = float(np.count_nonzero(mask_p)) * voxel_ml
    return out


# ---------------------------------------------------------------------------------------------
# Keras metrics
# ---------------------------------------------------------------------------------------------
def _per_case_mse(y_true: Any, y_pred: Any, mask: Any = None) -> Any:
    diff = ops.cast(y_pred, "float32") - ops.cast(y_true, "float32")
    batch = ops.shape(diff)[0]
    square = ops.reshape(ops.square(diff), (batch, -1))
    if mask is None:
        return ops.mean(square, axis=1)
    m = ops.reshape(ops.broadcast_to(mask, ops.shape(diff)), (batch, -1))
    return ops.divide_no_nan(ops.sum(square * m, axis=1), ops.sum(m, axis=1))


def _voxel_mask(sample_weight: Any, y_true: Any) -> Any:
    """``sample_weight`` as a float32 voxel mask shaped like ``y_true`` (nonzero = scored)."""
    m = ops.cast(ops.cast(sample_weight, "float32") != 0, "float32")
    if len(ops.shape(m)) == len(ops.shape(y_true)) - 1:
        m = ops.expand_dims(m, -1)
    return ops.broadcast_to(m, ops.shape(y_true))


class _MeanOverCases(keras.metrics.Metric):
    """Weighted mean of a per-case value over every case seen.

    ``sample_weight`` is either per case, ``(B,)``, or a voxel mask shaped like the volumes
    (``(B, D, H, W)`` or ``(B, D, H, W, 1)``), e.g. the scan masks of partly scanned real CTs
    (:func:`xprospect.preprocessing.scan_mask`): each case is then scored inside its mask only,
    as the NumPy functions' ``mask=`` do, and a case with an empty mask is left out.
    """

    def __init__(self, name: str | None, dtype: Any) -> None:
        super().__init__(name=name, dtype=dtype)
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def per_case(self, y_true: Any, y_pred: Any, mask: Any = None) -> Any:
        raise NotImplementedError

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        """Adds a batch.

        Args:
            y_true: Tensor ``(B, D, H, W, 1)`` (or ``(B, D, H, W)``), window-normalised.
            y_pred: Tensor of the same shape (any float dtype; computed in float32).
            sample_weight: Optional per-case weights ``(B,)``, or a voxel mask shaped like
                ``y_true`` (with or without its channel axis): nonzero voxels are scored.
        """
        if sample_weight is not None and len(ops.shape(sample_weight)) >= 4:
            mask = _voxel_mask(sample_weight, y_true)
            values = ops.cast(self.per_case(y_true, y_pred, mask), "float32")
            scored = self.scored_voxels(mask)
            weights = ops.cast(scored > 0, "float32")
            # An empty mask gives 0/0: its case is left out, not averaged in as NaN.
            values = ops.where(scored > 0, values, ops.zeros_like(values))
        elif sample_weight is None:
            values = ops.cast(self.per_case(y_true, y_pred), "float32")
            weights = ops.ones_like(values)
        else:
            values = ops.cast(self.per_case(y_true, y_pred), "float32")
            weights = ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
            weights = ops.broadcast_to(weights, ops.shape(values))
        self.total.assign(self.total + ops.cast(ops.sum(values * weights), self.total.dtype))
        self.count.assign(self.count + ops.cast(ops.sum(weights), self.count.dtype))

    def scored_voxels(self, mask: Any) -> Any:
        """Per case, how many voxels of ``mask`` the value is taken over."""
        return ops.sum(ops.reshape(mask, (ops.shape(mask)[0], -1)), axis=1)

    def result(self) -> Any:
        """Mean of the per-case values (0 before any update)."""
        return ops.divide_no_nan(self.total, self.count)

    def reset_state(self) -> None:
        self.total.assign(ops.zeros_like(self.total))
        self.count.assign(ops.zeros_like(self.count))


@keras.saving.register_keras_serializable(package="xprospect")
class PSNR3D(_MeanOverCases):
    """Mean over cases of each case's 3D PSNR, in dB (keras.ops; for validation in ``fit``).

    Args:
        data_range: Peak value of the volumes (1 for window-normalised volumes).
        max_db: A case's PSNR is capped here, so a perfect case (MSE 0) adds ``max_db`` instead
            of making the mean infinite.
        name: Metric name.
        dtype: Dtype of the metric's state (default float32).
    """

    def __init__(
        self,
        data_range: float = 1.0,
        max_db: float = 100.0,
        name: str | None = "psnr_3d",
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, dtype=dtype)
        self.data_range = _check_range(data_range)
        self.max_db = float(max_db)

    def per_case(self, y_true: Any, y_pred: Any, mask: Any = None) -> Any:
        floor = self.data_range**2 * 10.0 ** (-self.max_db / 10.0)
        mse_values = ops.maximum(_per_case_mse(y_true, y_pred, mask), floor)
        return 10.0 * ops.log10(self.data_range**2 / mse_values)

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(data_range=self.data_range, max_db=self.max_db)
        return config


def _gaussian_taps(sigma: float) -> np.ndarray:
    radius = int(_SSIM_TRUNCATE * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return np.asarray(w / w.sum(), dtype=np.float32)


@keras.saving.register_keras_serializable(package="xprospect")
class SSIM3D(_MeanOverCases):
    """Mean over cases of each case's 3D SSIM (keras.ops; equals :func:`ssim_3d` per case).

    The Gaussian window is applied as three separable ``valid`` convolutions, which computes
    exactly the voxels :func:`ssim_3d` (and scikit-image) average over: those at least the window
    radius from every face.

    Args:
        data_range: Data range of the volumes (1 for window-normalised volumes).
        sigma: Standard deviation of the Gaussian window, in voxels (11 taps at 1.5).
        k1: Constant of the luminance term.
        k2: Constant of the contrast-structure term.
        name: Metric name.
        dtype: Dtype of the metric's state (default float32).
    """

    def __init__(
        self,
        data_range: float = 1.0,
        sigma: float = 1.5,
        k1: float = 0.01,
        k2: float = 0.03,
        name: str | None = "ssim_3d",
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, dtype=dtype)
        self.data_range = _check_range(data_range)
        self.sigma = float(sigma)
        self.k1 = float(k1)
        self.k2 = float(k2)
        if self.sigma <= 0 or self.k1 < 0 or self.k2 < 0:
            raise ConfigError(f"need sigma > 0, K1 >= 0, K2 >= 0, got {sigma}, {k1}, {k2}")
        self._taps = _gaussian_taps(self.sigma)

    def _smooth(self, x: Any) -> Any:
        n = int(self._taps.size)
        for axis in range(3):
            shape = [1, 1, 1, 1, 1]
            shape[axis] = n
            kernel = ops.convert_to_tensor(self._taps.reshape(shape), dtype="float32")
            x = ops.conv(x, kernel, strides=1, padding="valid", data_format="channels_last")
        return x

    def _interior(self, mask: Any) -> Any:
        """The part of a ``(B, D, H, W, C)`` mask the valid convolutions leave: voxels at
        least the window radius from every face (where :func:`ssim_3d` averages)."""
        r = int(self._taps.size) // 2
        if len(ops.shape(mask)) == 4:
            mask = ops.expand_dims(mask, -1)
        return mask[
            :, r : ops.shape(mask)[1] - r, r : ops.shape(mask)[2] - r, r : ops.shape(mask)[3] - r, :
        ]

    def scored_voxels(self, mask: Any) -> Any:
        return super().scored_voxels(self._interior(mask))

    def per_case(self, y_true: Any, y_pred: Any, mask: Any = None) -> Any:
        t = ops.cast(y_true, "float32")
        p = ops.cast(y_pred, "float32")
        if len(ops.shape(t)) == 4:
            t, p = ops.expand_dims(t, -1), ops.expand_dims(p, -1)
        # One channel per case: fold channels into the batch.
        t = ops.reshape(ops.moveaxis(t, -1, 1), (-1, *ops.shape(t)[1:4], 1))
        p = ops.reshape(ops.moveaxis(p, -1, 1), (-1, *ops.shape(p)[1:4], 1))
        ux, uy = self._smooth(t), self._smooth(p)
        vx = self._smooth(t * t) - ux * ux
        vy = self._smooth(p * p) - uy * uy
        vxy = self._smooth(t * p) - ux * uy
        c1 = (self.k1 * self.data_range) ** 2
        c2 = (self.k2 * self.data_range) ** 2
        s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
        batch = ops.shape(y_true)[0]
        if mask is None:
            return ops.mean(ops.reshape(s, (batch, -1)), axis=1)
        m = self._interior(ops.cast(mask, "float32"))
        m = ops.reshape(ops.moveaxis(m, -1, 1), (-1, *ops.shape(m)[1:4], 1))
        s_flat, m_flat = ops.reshape(s * m, (batch, -1)), ops.reshape(m, (batch, -1))
        return ops.divide_no_nan(ops.sum(s_flat, axis=1), ops.sum(m_flat, axis=1))

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(data_range=self.data_range, sigma=self.sigma, k1=self.k1, k2=self.k2)
        return config
