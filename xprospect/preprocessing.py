"""Geometry-preserving preprocessing for CT volumes and radiographs (NumPy/SciPy only).

Two layers:

- Pure functions over :class:`~xprospect.image.Volume`, :class:`~xprospect.image.Radiograph` or
  plain arrays: HU windows, :func:`reorient`, :func:`resample`, :func:`resize`, :func:`body_mask`,
  :func:`scan_mask`, :func:`crop_or_pad`, and the radiograph helpers (:func:`pad_to_square`,
  :func:`crop_to_square`, :func:`resize_image`, :func:`percentile_window`).
- Small callable transforms (:class:`Reorient`, :class:`Resample`, :class:`CropOrPad`, ...) that
  wrap them and chain with :class:`Compose`. A transform called as ``t(image, *labels)`` applies the
  same geometry to label masks (nearest interpolation, fill 0, the crop window of the image).

Every function that changes a volume's grid updates its affine so that the RAS+ world position of
anatomy does not move (see ``docs/conventions.md``). Array shapes are written in array-axis order:
a canonical volume is ``(depth, height, width)`` = (I, P, L), a radiograph ``(rows, columns)``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, overload

import nibabel.orientations as nio
import numpy as np
import numpy.typing as npt

from xprospect.errors import ConfigError, GeometryError
from xprospect.image import CANONICAL_AXCODES, Radiograph, Volume

__all__ = [
    "HU_WINDOWS",
    "SCAN_PADDING_BELOW_HU",
    "XRAY_WINDOW_PERCENTILES",
    "ClipHU",
    "Compose",
    "CropOrPad",
    "CropToSquare",
    "PadToSquare",
    "PercentileWindow",
    "Reorient",
    "Resample",
    "Resize",
    "ResizeImage",
    "Transform",
    "WindowHU",
    "area_matrix",
    "axial_axis",
    "body_mask",
    "clip_hu",
    "crop_or_pad",
    "crop_to_square",
    "ct_preprocessing",
    "linear_matrix",
    "pad_to_square",
    "percentile_window",
    "radiograph_preprocessing",
    "remove_couch",
    "reorient",
    "resample",
    "resize",
    "resize_array",
    "resize_image",
    "resize_images",
    "resolve_hu_window",
    "scan_mask",
    "unwindow_hu",
    "window_hu",
]

XRAY_WINDOW_PERCENTILES = (0.5, 99.5)
"""The percentiles of a radiograph that :func:`percentile_window` maps to 0 and 1: the one window
of every X-ray the package prepares (training DRRs, real radiographs, the SavedModel's graph)."""

HU_WINDOWS: dict[str, tuple[float, float]] = {
    "xprospect": (-1000.0, 1000.0),
    "x2ct": (-1024.0, 1476.0),
    "lung": (-1350.0, 150.0),
    "mediastinum": (-160.0, 240.0),
}
"""Named HU windows ``(low, high)``; see the table in ``docs/conventions.md``."""

HUWindowLike = str | Sequence[float]
"""A window name from :data:`HU_WINDOWS` or an explicit ``(low, high)`` pair in HU."""

Interpolation = Literal["linear", "nearest"]
CenterLike = Literal["body", "center"] | Sequence[float]

_VolOrArray = TypeVar("_VolOrArray", Volume, np.ndarray)
_ImgOrArray = TypeVar("_ImgOrArray", Radiograph, np.ndarray)

# Truncation of the anti-aliasing Gaussian, in standard deviations: scipy.ndimage's default, which
# skimage.transform.resize inherits, so our results match it.
_GAUSS_TRUNCATE = 4.0
# Steps this close to 1 (and offsets this close to 0) are float noise from spacings read off an
# affine; interpolating for them would only blur.
_IDENTITY_STEP_TOL = 1e-9
_IDENTITY_OFFSET_TOL = 1e-6
_OBLIQUE_WARN_DEG = 1.0


# ---------------------------------------------------------------------------------------------
# HU windows
# ---------------------------------------------------------------------------------------------
def resolve_hu_window(hu_window: HUWindowLike) -> tuple[float, float]:
    """Turns a window name or pair into a validated ``(low, high)`` pair in HU.

    Args:
        hu_window: A name from :data:`HU_WINDOWS` (case-insensitive) or a ``(low, high)`` pair.

    Returns:
        ``(low, high)`` as floats, ``low < high``.

    Raises:
        ConfigError: If the name is unknown (the message lists the known names), the pair is not
            two finite numbers, or ``low >= high``.
    """
    if isinstance(hu_window, str):
        key = hu_window.strip().lower()
        if key not in HU_WINDOWS:
            names = ", ".join(sorted(HU_WINDOWS))
            raise ConfigError(f"unknown HU window {hu_window!r}; known windows: {names}")
        return HU_WINDOWS[key]
    try:
        values = [float(v) for v in hu_window]
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"hu_window must be a name or a (low, high) pair, got {hu_window!r}"
        ) from exc
    if len(values) != 2 or not all(math.isfinite(v) for v in values):
        raise ConfigError(f"hu_window must be two finite numbers (low, high), got {hu_window!r}")
    low, high = values
    if low >= high:
        raise ConfigError(f"hu_window needs low < high, got ({low:g}, {high:g})")
    return low, high


def _array_of(image: Volume | np.ndarray) -> np.ndarray:
    return image.array if isinstance(image, Volume) else np.asarray(image)


def _same_kind(image: Volume | np.ndarray, array: np.ndarray) -> Any:
    if isinstance(image, Volume):
        return image.replace(array=array)
    return array


def clip_hu(image: _VolOrArray, hu_window: HUWindowLike) -> _VolOrArray:
    """Clips values to a HU window, keeping the dtype.

    Integer arrays are clipped to ``[ceil(low), floor(high)]`` so they stay integer (an ``int16`` CT
    stays ``int16``).

    Args:
        image: A :class:`Volume` or an array of any shape, in HU.
        hu_window: Window name or ``(low, high)`` pair (see :func:`resolve_hu_window`).

    Returns:
        The same kind as ``image`` (a Volume keeps its affine), same shape and dtype.

    Raises:
        ConfigError: If the window is invalid.
    """
    low, high = resolve_hu_window(hu_window)
    a = _array_of(image)
    if a.dtype.kind in "iu":
        info = np.iinfo(a.dtype)
        lo_i = int(min(max(math.ceil(low), info.min), info.max))
        hi_i = int(min(max(math.floor(high), info.min), info.max))
        out = np.clip(a, a.dtype.type(lo_i), a.dtype.type(hi_i))
    else:
        out = np.clip(a, low, high).astype(a.dtype, copy=False)
    return _same_kind(image, out)


def window_hu(image: _VolOrArray, hu_window: HUWindowLike) -> _VolOrArray:
    """Maps a HU window linearly onto [0, 1]: ``low -> 0``, ``high -> 1``, clipped outside.

    Args:
        image: A :class:`Volume` or an array of any shape, in HU.
        hu_window: Window name or ``(low, high)`` pair.

    Returns:
        The same kind as ``image``, same shape, float32 values in [0, 1].

    Raises:
        ConfigError: If the window is invalid.
    """
    low, high = resolve_hu_window(hu_window)
    a = np.asarray(_array_of(image), dtype=np.float32)
    out = (a - np.float32(low)) / np.float32(high - low)
    np.clip(out, 0.0, 1.0, out=out)
    return _same_kind(image, out)


def unwindow_hu(image: _VolOrArray, hu_window: HUWindowLike) -> _VolOrArray:
    """Inverse of :func:`window_hu` inside the window: ``w * (high - low) + low``.

    Values outside [0, 1] are mapped by the same line (not clipped); HU that :func:`window_hu`
    clipped cannot be recovered.

    Args:
        image: A :class:`Volume` or an array of windowed values.
        hu_window: The window that was applied.

    Returns:
        The same kind as ``image``, float32 HU.

    Raises:
        ConfigError: If the window is invalid.
    """
    low, high = resolve_hu_window(hu_window)
    a = np.asarray(_array_of(image), dtype=np.float32)
    out = a * np.float32(high - low) + np.float32(low)
    return _same_kind(image, out)


# ---------------------------------------------------------------------------------------------
# Orientation
# ---------------------------------------------------------------------------------------------
def _obliquity_deg(affine: np.ndarray) -> float:
    """Largest angle between an array axis and the world axis nearest to it, in degrees."""
    m = affine[:3, :3]
    direction = m / np.linalg.norm(m, axis=0)
    cosines = np.abs(direction).max(axis=0)
    return float(np.degrees(np.arccos(np.clip(cosines.min(), -1.0, 1.0))))


def _target_ornt(axcodes: Sequence[str]) -> np.ndarray:
    codes = tuple(str(c).upper() for c in axcodes)
    try:
        ornt = nio.axcodes2ornt(codes)
    except Exception as exc:
        raise GeometryError(f"invalid axis codes {tuple(axcodes)!r}: {exc}") from exc
    if len(codes) != 3 or np.any(np.isnan(ornt)) or len({int(r[0]) for r in ornt}) != 3:
        raise GeometryError(
            f"axis codes {tuple(axcodes)!r} must name each of L/R, A/P, S/I exactly once"
        )
    return ornt


def reorient(volume: Volume, axcodes: Sequence[str] = CANONICAL_AXCODES) -> Volume:
    """Flips and transposes a volume's array so its axes point along ``axcodes``.

    Only whole-axis flips and permutations are used, so voxel values are never interpolated and
    every voxel keeps its world position exactly. For an oblique volume each array axis is mapped
    to the world axis it is closest to (nibabel's ``io_orientation``); the result is then only
    *approximately* in ``axcodes`` and stays oblique (its affine still carries the rotation). A
    warning is issued when the obliquity exceeds 1 degree.

    Args:
        volume: Any 3D volume, shape ``(n0, n1, n2)``.
        axcodes: The anatomical direction each output array axis increases towards (nibabel codes);
            defaults to the canonical ``("I", "P", "L")``.

    Returns:
        A volume whose ``orientation`` is ``axcodes``; its array is a view of the input where
        possible (no copy).

    Raises:
        GeometryError: If ``axcodes`` is not a valid triple.
    """
    target = _target_ornt(axcodes)
    angle = _obliquity_deg(volume.affine)
    if angle > _OBLIQUE_WARN_DEG:
        warnings.warn(
            f"{volume.source or 'volume'} is oblique by {angle:.1f} degrees; reorienting to the "
            "closest axes (the result keeps its rotation)",
            UserWarning,
            stacklevel=2,
        )
    current = nio.io_orientation(volume.affine)
    transform = nio.ornt_transform(current, target)
    if np.array_equal(transform, [[0, 1], [1, 1], [2, 1]]):
        return volume
    array = nio.apply_orientation(volume.array, transform)
    affine = volume.affine @ nio.inv_ornt_aff(transform, volume.shape)
    return volume.replace(array=array, affine=affine)


# ---------------------------------------------------------------------------------------------
# Resampling: separable, axis by axis, on the already-reduced array
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _AxisMap:
    """New index ``m`` samples old index ``step * m + offset`` (voxel centres at integers)."""

    n_old: int
    n_new: int
    step: float
    offset: float

    @property
    def is_identity(self) -> bool:
        return (
            self.n_new == self.n_old
            and abs(self.step - 1.0) <= _IDENTITY_STEP_TOL
            and abs(self.offset) <= _IDENTITY_OFFSET_TOL
        )

    def positions(self) -> np.ndarray:
        return self.step * np.arange(self.n_new, dtype=np.float64) + self.offset


def _centred_map(n_old: int, n_new: int, step: float) -> _AxisMap:
    # Make the centres of the two fields of view coincide: old centre index (n_old - 1) / 2 is new
    # index (n_new - 1) / 2. For resize (step = n_old / n_new) this reduces to the
    # (m + 0.5) * step - 0.5 rule of skimage.transform.resize and scipy's grid_mode zoom.
    offset = (n_old - 1) / 2.0 - step * (n_new - 1) / 2.0
    return _AxisMap(n_old, n_new, step, offset)


def _maps_affine(affine: np.ndarray, maps: Sequence[_AxisMap]) -> np.ndarray:
    m = np.eye(4)
    for ax, amap in enumerate(maps):
        m[ax, ax] = amap.step
        m[ax, 3] = amap.offset
    return affine @ m


def _gaussian_kernel(sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Taps and weights of scipy.ndimage.gaussian_filter1d's kernel (same radius and rounding)."""
    if sigma <= 0:
        return np.zeros(1, dtype=np.intp), np.ones(1)
    radius = int(_GAUSS_TRUNCATE * sigma + 0.5)
    taps = np.arange(-radius, radius + 1, dtype=np.intp)
    weights = np.exp(-0.5 / (sigma * sigma) * taps.astype(np.float64) ** 2)
    return taps, weights / weights.sum()


@dataclass(frozen=True)
class _AxisWeights:
    """Gaussian pre-filter and linear interpolation along one axis, fused into one banded matrix.

    ``out = matrix @ in + bias`` along the axis; ``bias`` carries the fill value's share for
    samples whose support leaves the array (zero with edge replication).
    """

    matrix: Any  # scipy.sparse.csr_array, (n_new, n_old), float32
    bias: np.ndarray | None  # (n_new,) float32 or None

    def dense_t(self) -> np.ndarray:
        return np.ascontiguousarray(self.matrix.toarray().T, dtype=np.float32)


def _linear_weights(amap: _AxisMap, sigma: float, fill_value: float | None) -> _AxisWeights:
    import scipy.sparse as sparse  # imported here: SciPy adds ~0.1 s to importing this module

    n = amap.n_old
    x = amap.positions()
    if fill_value is None:
        x = np.clip(x, 0.0, n - 1.0)  # edge replication: samples past the end take the end value
    i0 = np.floor(x).astype(np.intp)
    frac = x - i0
    taps, kern = _gaussian_kernel(sigma)
    # Filtering first and interpolating after is W = L @ G; each row of W is the blend of two
    # shifted kernels, so it is built directly instead of multiplying matrices.
    cols = np.concatenate([i0[:, None] + taps, i0[:, None] + 1 + taps], axis=1)
    vals = np.concatenate([(1.0 - frac)[:, None] * kern, frac[:, None] * kern], axis=1)
    rows = np.broadcast_to(np.arange(amap.n_new)[:, None], cols.shape)
    bias = None
    if fill_value is None:
        cols = np.clip(cols, 0, n - 1)
        keep = np.ones(cols.shape, dtype=bool)
    else:
        keep = (cols >= 0) & (cols < n)
        lost = np.where(keep, 0.0, vals).sum(axis=1)
        if np.any(lost > 0):
            bias = (lost * fill_value).astype(np.float32)
    matrix = sparse.csr_array(
        (vals[keep], (rows[keep], cols[keep])), shape=(amap.n_new, n), dtype=np.float64
    )
    matrix.sum_duplicates()
    return _AxisWeights(matrix.astype(np.float32), bias)


def _apply_along(a: np.ndarray, weights: _AxisWeights, axis: int) -> np.ndarray:
    """``weights`` applied along ``axis`` of a (nearly) C-ordered array; returns C-ordered float32.

    The axis is applied as a sparse matrix on (n_old, rest) slabs, which streams contiguous rows;
    only the fastest-varying axis, where that would need a transposed copy, uses a dense BLAS
    product instead.
    """
    n_new, n_old = weights.matrix.shape
    pre = math.prod(a.shape[:axis])
    post = math.prod(a.shape[axis + 1 :])
    out_shape = (*a.shape[:axis], n_new, *a.shape[axis + 1 :])
    if post == 1:
        a2 = a.reshape(pre, n_old).astype(np.float32, copy=False)
        out = a2 @ weights.dense_t()
    else:
        a3 = a.reshape(pre, n_old, post)
        out = np.empty((pre, n_new, post), dtype=np.float32)
        for p in range(pre):
            out[p] = weights.matrix @ a3[p]
    out = out.reshape(out_shape)
    if weights.bias is not None:
        shape = [1] * out.ndim
        shape[axis] = n_new
        out += weights.bias.reshape(shape)
    return out


def _resample_array(
    array: np.ndarray,
    maps: Sequence[_AxisMap],
    interpolation: Interpolation,
    anti_aliasing: bool,
    fill_value: float | None,
) -> np.ndarray:
    """Separable resampling of ``array`` onto the grids in ``maps`` (one per axis)."""
    if interpolation == "nearest":
        out = array
        order = sorted(range(array.ndim), key=lambda ax: maps[ax].n_new / maps[ax].n_old)
        for ax in order:
            amap = maps[ax]
            if amap.is_identity:
                continue
            idx = np.floor(amap.positions() + 0.5).astype(np.intp)
            outside = (idx < 0) | (idx >= amap.n_old)
            out = np.take(out, np.clip(idx, 0, amap.n_old - 1), axis=ax)
            if fill_value is not None and outside.any():
                sl: list[Any] = [slice(None)] * out.ndim
                sl[ax] = outside
                out[tuple(sl)] = fill_value  # np.take returned a new array: safe to write
        return np.ascontiguousarray(out) if out is not array else array.copy()

    # Work in memory order (the caller's array may be a transposed/flipped view from reorient) so
    # each slab the sparse product streams is contiguous.
    perm = sorted(range(array.ndim), key=lambda ax: -abs(array.strides[ax]))
    work = array.transpose(perm)
    pmaps = [maps[ax] for ax in perm]
    todo = [ax for ax in range(work.ndim) if not pmaps[ax].is_identity]
    last = work.ndim - 1
    # Reduce the most-shrinking axes first so later axes touch less data; the fastest-varying axis
    # goes last because it takes the costlier dense path.
    todo.sort(key=lambda ax: (ax == last, pmaps[ax].n_new / pmaps[ax].n_old))
    for ax in todo:
        amap = pmaps[ax]
        sigma = max(0.0, (amap.step - 1.0) / 2.0) if anti_aliasing else 0.0
        work = _apply_along(work, _linear_weights(amap, sigma, fill_value), ax)
    out = work.transpose(np.argsort(perm))
    return np.ascontiguousarray(out, dtype=np.float32)


def _check_interpolation(interpolation: str) -> Interpolation:
    if interpolation not in ("linear", "nearest"):
        raise ConfigError(f"interpolation must be 'linear' or 'nearest', got {interpolation!r}")
    return interpolation  # type: ignore[return-value]


def _check_shape(shape: int | Sequence[int], ndim: int) -> tuple[int, ...]:
    dims = (shape,) * ndim if isinstance(shape, int | np.integer) else tuple(shape)
    if len(dims) != ndim or any(int(d) != d or int(d) < 1 for d in dims):
        raise GeometryError(f"shape must be {ndim} positive integers, got {shape!r}")
    return tuple(int(d) for d in dims)


def resample(
    volume: Volume,
    spacing_mm: float | Sequence[float],
    *,
    interpolation: Interpolation = "linear",
    anti_aliasing: bool = True,
    fill_value: float | None = None,
) -> Volume:
    """Resamples a volume to a new voxel spacing, keeping its direction and field-of-view centre.

    Works in index space, axis by axis: along an axis with old spacing ``s`` and ``n`` voxels the
    new axis has ``max(1, round(n * s / s_new))`` voxels of size ``s_new``, and the new grid is
    centred on the old field of view (new voxel ``m`` samples old index
    ``(n - 1) / 2 + (m - (n_new - 1) / 2) * s_new / s``). The affine is updated to match, so
    world positions of anatomy are unchanged; an oblique volume stays oblique.

    Args:
        volume: The volume, shape ``(n0, n1, n2)``.
        spacing_mm: New voxel size in mm, one number (isotropic) or one per array axis.
        interpolation: ``"linear"`` (separable linear, float32 output) or ``"nearest"`` (for label
            masks: no anti-aliasing, dtype kept).
        anti_aliasing: With linear interpolation, smooth each axis that is downsampled by a factor
            ``f > 1`` with a Gaussian of sigma ``(f - 1) / 2`` voxels first (as
            ``skimage.transform.resize`` does).
        fill_value: ``None`` replicates the edge voxels beyond the array (skimage ``mode="edge"``);
            a number extends the array with that value instead (``mode="constant"``), e.g.
            -1024 so the border blends towards air.

    Returns:
        The resampled volume, shape ``(m0, m1, m2)``, spacing ``spacing_mm``.

    Raises:
        GeometryError: If the spacing is not positive and finite.
        ConfigError: If ``interpolation`` is unknown.
    """
    interpolation = _check_interpolation(interpolation)
    new_sp = np.asarray(spacing_mm, dtype=np.float64).reshape(-1)
    if new_sp.size == 1:
        new_sp = np.repeat(new_sp, 3)
    if new_sp.shape != (3,) or not np.all(np.isfinite(new_sp)) or np.any(new_sp <= 0):
        raise GeometryError(
            f"spacing_mm must be positive (one or three numbers), got {spacing_mm!r}"
        )
    maps = []
    for n, old, new in zip(volume.shape, volume.spacing_mm, new_sp, strict=True):
        n_new = max(1, math.floor(n * old / new + 0.5))
        maps.append(_centred_map(n, n_new, float(new) / old))
    array = _resample_array(volume.array, maps, interpolation, anti_aliasing, fill_value)
    return volume.replace(array=array, affine=_maps_affine(volume.affine, maps))


def resize_array(
    array: npt.ArrayLike,
    shape: Sequence[int],
    *,
    interpolation: Interpolation = "linear",
    anti_aliasing: bool = True,
    fill_value: float | None = None,
) -> np.ndarray:
    """Resizes an N-D array (2D image, 3D volume) to ``shape``, keeping its field of view.

    Output index ``m`` along an axis samples input index ``(m + 0.5) * n / m_new - 0.5``, which
    for ``interpolation="linear"`` and ``fill_value=None`` reproduces
    ``skimage.transform.resize(array, shape, order=1, mode="edge", anti_aliasing=...)`` (up to
    float32 rounding), axis by axis and much faster.

    Args:
        array: Input array of any numeric dtype, shape ``(n0, ..., nk)``.
        shape: Output shape, same length.
        interpolation: ``"linear"`` (float32 output) or ``"nearest"`` (dtype kept, no smoothing).
        anti_aliasing: Gaussian pre-filter of sigma ``(f - 1) / 2`` along axes shrunk by ``f > 1``.
        fill_value: Edge replication if ``None``, else constant extension with this value.

    Returns:
        The resized array, shape ``shape``.

    Raises:
        GeometryError: If ``shape`` does not match the array's dimensions or is not positive.
        ConfigError: If ``interpolation`` is unknown.
    """
    interpolation = _check_interpolation(interpolation)
    a = np.asarray(array)
    if a.ndim < 1 or min(a.shape, default=0) < 1:
        raise GeometryError(f"cannot resize an empty array of shape {a.shape}")
    dims = _check_shape(shape, a.ndim)
    maps = [_centred_map(n, m, n / m) for n, m in zip(a.shape, dims, strict=True)]
    return _resample_array(a, maps, interpolation, anti_aliasing, fill_value)


@overload
def resize(
    volume: Volume,
    shape: Sequence[int],
    *,
    interpolation: Interpolation = ...,
    anti_aliasing: bool = ...,
    fill_value: float | None = ...,
) -> Volume: ...
@overload
def resize(
    volume: np.ndarray,
    shape: Sequence[int],
    *,
    interpolation: Interpolation = ...,
    anti_aliasing: bool = ...,
    fill_value: float | None = ...,
) -> np.ndarray: ...
def resize(
    volume: Volume | np.ndarray,
    shape: Sequence[int],
    *,
    interpolation: Interpolation = "linear",
    anti_aliasing: bool = True,
    fill_value: float | None = None,
) -> Volume | np.ndarray:
    """Resizes a volume to an exact shape, keeping its field of view.

    The new spacing along each axis is ``extent / new_size``; voxel centres follow the same
    centring rule as :func:`resize_array`, and the affine is updated so world positions are
    unchanged.

    Args:
        volume: A :class:`Volume` (or an array, passed to :func:`resize_array`).
        shape: Output shape ``(m0, m1, m2)``.
        interpolation: ``"linear"`` or ``"nearest"`` (label masks).
        anti_aliasing: Gaussian pre-filter along shrunk axes (linear only).
        fill_value: Edge replication if ``None``, else constant extension.

    Returns:
        The same kind as ``volume``, shape ``shape``.

    Raises:
        GeometryError: If ``shape`` is not three positive integers.
        ConfigError: If ``interpolation`` is unknown.
    """
    if not isinstance(volume, Volume):
        return resize_array(
            volume,
            shape,
            interpolation=interpolation,
            anti_aliasing=anti_aliasing,
            fill_value=fill_value,
        )
    interpolation = _check_interpolation(interpolation)
    dims = _check_shape(shape, 3)
    maps = [_centred_map(n, m, n / m) for n, m in zip(volume.shape, dims, strict=True)]
    array = _resample_array(volume.array, maps, interpolation, anti_aliasing, fill_value)
    return volume.replace(array=array, affine=_maps_affine(volume.affine, maps))


# ---------------------------------------------------------------------------------------------
# Body mask and cropping
# ---------------------------------------------------------------------------------------------
def _fill_holes_slicewise(mask: np.ndarray) -> np.ndarray:
    import scipy.ndimage as ndi  # imported here: SciPy adds ~0.2 s to importing this module

    # One 3D labelling whose structure connects only within a slice is equivalent to
    # binary_fill_holes on every axis-0 slice, without a Python loop: background components that
    # never touch a slice border are holes.
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = ndi.generate_binary_structure(2, 1)
    background, n = ndi.label(~mask, structure=structure)
    if n == 0:
        return mask
    border = np.concatenate(
        [
            background[:, 0, :].ravel(),
            background[:, -1, :].ravel(),
            background[:, :, 0].ravel(),
            background[:, :, -1].ravel(),
        ]
    )
    is_hole = np.ones(n + 1, dtype=bool)
    is_hole[0] = False
    is_hole[border] = False
    return mask | is_hole[background]


def axial_axis(image: Volume | np.ndarray) -> int:
    """The array axis along which a volume's axial slices are stacked: the one running
    inferior-superior by a :class:`Volume`'s orientation, 0 for a bare array (taken as
    canonical, docs/conventions.md) or an affine that names no such axis."""
    if isinstance(image, Volume):
        return next((i for i, code in enumerate(image.orientation) if code in ("S", "I")), 0)
    return 0


def body_mask(image: Volume | np.ndarray, threshold_hu: float = -500.0) -> np.ndarray:
    """The patient's body: voxels above a HU threshold, largest component, holes filled.

    Keeps the largest 6-connected component of ``image > threshold_hu`` (dropping the table,
    blankets and noise) and fills enclosed holes (lungs, airways, bowel gas) slice by slice in
    the axial plane (:func:`axial_axis`: by a :class:`Volume`'s orientation, axis 0 of a bare
    array) with 4-connected background, so the mask is solid in every axial slice. Axial, not
    sagittal or coronal: lungs that a scan cuts at its top or bottom slice touch the border of
    every sagittal and coronal slice, but no axial one.

    Args:
        image: A :class:`Volume` or 3D array in HU, shape ``(n0, n1, n2)``.
        threshold_hu: Values strictly above it count as tissue.

    Returns:
        Boolean array of the same shape; all False if nothing exceeds the threshold.

    Raises:
        GeometryError: If the array is not 3D.
    """
    import scipy.ndimage as ndi  # imported here: SciPy adds ~0.2 s to importing this module

    a = _array_of(image)
    if a.ndim != 3:
        raise GeometryError(f"body_mask needs a 3D array, got shape {a.shape}")
    # The axial axis first, the others by falling stride: a view that is C-ordered where the
    # memory allows (a NIfTI's LAS array read as is is Fortran-ordered), which scipy's labelling
    # walks about twice as fast as a strided one.
    axial = axial_axis(image)
    rest = sorted((ax for ax in range(3) if ax != axial), key=lambda ax: -a.strides[ax])
    order = (axial, *rest)
    back = tuple(int(i) for i in np.argsort(order))
    tissue = a.transpose(order) > threshold_hu
    labels, n = ndi.label(tissue)
    if n == 0:
        return tissue.transpose(back)
    label, box = _largest_component(labels)
    # Holes are filled inside the body's bounding box only: background outside it is
    # connected to every slice's border anyway, so a hole is what does not reach the box's edge.
    mask = np.zeros(tissue.shape, dtype=bool)
    mask[box] = _fill_holes_slicewise(labels[box] == label)
    return mask.transpose(back)


def _largest_component(labels: np.ndarray) -> tuple[int, tuple[slice, ...]]:
    """The label with the most voxels in a labelling (ties: the lowest) and its bounding box.

    Counts only the components whose bounding box could hold more voxels than the largest
    counted so far, largest box first: a CT's body fills most of its box, so this reads one or
    two boxes instead of counting every voxel of the volume (``np.bincount``)."""
    import scipy.ndimage as ndi

    boxes = ndi.find_objects(labels)
    volumes = [int(np.prod([s.stop - s.start for s in b])) if b else 0 for b in boxes]
    best, best_count, best_box = 0, -1, boxes[0]
    for i in sorted(range(len(boxes)), key=lambda j: (-volumes[j], j)):
        if volumes[i] < best_count:
            break
        count = int(np.count_nonzero(labels[boxes[i]] == i + 1))
        if count > best_count or (count == best_count and i + 1 < best):
            best, best_count, best_box = i + 1, count, boxes[i]
    return best, best_box


SCAN_PADDING_BELOW_HU = -1024.0
"""Stored values strictly below this are the scanner's padding, not tissue (see :func:`scan_mask`):
-1024 HU is the lowest value of the 12-bit CT range, and scanners mark the corners outside their
reconstruction circle with values such as -2000, -2048 or -3024."""


def scan_mask(
    volume: _VolOrArray, padding_below_hu: float | None = SCAN_PADDING_BELOW_HU
) -> _VolOrArray:
    """The validity mask of a CT on its own grid: 1 where the scanner measured, 0 elsewhere.

    On the scan's own grid every voxel is inside the scanned extent, so the mask is all ones
    except the scanner's padding: the corners outside the reconstruction circle, which scanners
    store with values below the CT range (the sample LIDC CT: -2048 HU, 21 % of its voxels).
    Pass the mask as a label through the preprocessing (``ct_preprocessing(...)(ct, mask)``):
    the transforms carry it with nearest-neighbour interpolation (whole-axis flips for
    :class:`Reorient`, nearest for :class:`Resample`, whose new grid never extends beyond the old
    field of view by more than half an old voxel, and fill 0 for :class:`CropOrPad`), so in the
    output it is 1 exactly where the nearest original voxel is a scanned one and 0 in the padded
    air. The image itself is interpolated linearly, so a band about one output voxel wide along
    the reconstruction circle mixes padding into the (clipped) HU; the mask does not drop it.

    Args:
        volume: A :class:`Volume` or 3D array in HU, as read from the scanner.
        padding_below_hu: Values strictly below it are padding; ``None`` counts every voxel as
            scanned (only the array's extent matters).

    Returns:
        The same kind as ``volume`` (a Volume keeps its affine), ``uint8`` 0/1.

    Raises:
        GeometryError: If the array is not 3D.
    """
    a = _array_of(volume)
    if a.ndim != 3:
        raise GeometryError(f"scan_mask needs a 3D array, got shape {a.shape}")
    if padding_below_hu is None:
        out = np.ones(a.shape, dtype=np.uint8)
    else:
        out = (a >= padding_below_hu).astype(np.uint8)
    return _same_kind(volume, out)


AIR_HU = -1000.0
"""Air, the value :func:`remove_couch` writes where it removes something."""


def remove_couch(
    volume: _VolOrArray,
    threshold_hu: float = -500.0,
    padding_below_hu: float | None = SCAN_PADDING_BELOW_HU,
) -> _VolOrArray:
    """The CT without what lies outside the patient: the couch, blankets, cables, set to air.

    A chest radiograph is taken of a standing patient: it sees no CT couch. A DRR of a CT that
    keeps its couch shows a bright band (and the couch adds attenuation along every
    anterior-posterior ray), and a target that holds it asks a model for an object no X-ray of
    the patient shows. Everything outside :func:`body_mask` (the largest tissue component, holes
    filled) is set to :data:`AIR_HU`; the scanner's padding (values below ``padding_below_hu``)
    is kept, so :func:`scan_mask` of the result equals that of the input. Limbs that do not touch
    the trunk at ``threshold_hu`` (arms lying apart at the sides) are removed with the couch.

    Args:
        volume: A :class:`Volume` or 3D array in HU, as read from the scanner.
        threshold_hu: Tissue threshold of :func:`body_mask`.
        padding_below_hu: Values strictly below it are the scanner's padding and kept as they
            are; ``None`` treats every voxel as measured.

    Returns:
        The same kind as ``volume`` (a Volume keeps its affine and metadata), float32.

    Raises:
        GeometryError: If the array is not 3D.
    """
    a = _array_of(volume)
    if a.ndim != 3:
        raise GeometryError(f"remove_couch needs a 3D array, got shape {a.shape}")
    keep = body_mask(volume, threshold_hu)
    if padding_below_hu is not None:
        keep |= a < padding_below_hu
    # In the array's own dtype where it holds air exactly (a CT's int16): a quarter of the
    # memory traffic of float64, and the same values once cast.
    air = np.asarray(AIR_HU, dtype=_fill_dtype(a.dtype, AIR_HU))
    out = np.where(keep, a, air).astype(np.float32)
    return _same_kind(volume, out)


def _mask_bbox_center(mask: np.ndarray) -> np.ndarray | None:
    centre = np.empty(mask.ndim)
    for ax in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != ax)))
        if hit.size == 0:
            return None
        centre[ax] = (hit[0] + hit[-1]) / 2.0
    return centre


def _window_start(
    volume: Volume, shape: tuple[int, int, int], center: CenterLike
) -> tuple[int, int, int]:
    """First index of a ``shape`` window centred on ``center`` (may be negative or overhang)."""
    array_centre = (np.asarray(volume.shape, dtype=np.float64) - 1.0) / 2.0
    if isinstance(center, str):
        if center == "center":
            c = array_centre
        elif center == "body":
            found = _mask_bbox_center(body_mask(volume))
            if found is None:
                warnings.warn(
                    f"{volume.source or 'volume'}: no voxel above -500 HU; centring the crop on "
                    "the array centre instead of the body",
                    UserWarning,
                    stacklevel=3,
                )
                found = array_centre
            c = found
        else:
            raise ConfigError(f"center must be 'body', 'center' or an index triple, got {center!r}")
    else:
        c = np.asarray(center, dtype=np.float64).reshape(-1)
        if c.shape != (3,) or not np.all(np.isfinite(c)):
            raise ConfigError(f"center must be three finite indices, got {center!r}")
    start = np.floor(c - (np.asarray(shape) - 1.0) / 2.0 + 0.5).astype(int)
    return (int(start[0]), int(start[1]), int(start[2]))


def _fill_dtype(dtype: np.dtype, fill_value: float) -> np.dtype:
    """The array dtype if it can hold ``fill_value`` exactly, else a float type that can."""
    if dtype.kind == "b":
        return dtype if fill_value in (0, 1) else np.dtype(np.float32)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if float(fill_value).is_integer() and info.min <= fill_value <= info.max:
            return dtype
        return np.dtype(np.float32)
    return dtype


def _extract_window(
    array: np.ndarray, start: Sequence[int], shape: Sequence[int], fill_value: float
) -> np.ndarray:
    out = np.full(tuple(shape), fill_value, dtype=_fill_dtype(array.dtype, fill_value))
    src: list[slice] = []
    dst: list[slice] = []
    for s, size, n in zip(start, shape, array.shape, strict=True):
        lo, hi = max(s, 0), min(s + size, n)
        if hi <= lo:
            return out  # the window misses the array entirely
        src.append(slice(lo, hi))
        dst.append(slice(lo - s, hi - s))
    out[tuple(dst)] = array[tuple(src)]
    return out


def _crop_or_pad_at(
    volume: Volume, start: Sequence[int], shape: Sequence[int], fill_value: float
) -> Volume:
    shift = np.eye(4)
    shift[:3, 3] = np.asarray(start, dtype=np.float64)
    return volume.replace(
        array=_extract_window(volume.array, start, shape, fill_value),
        affine=volume.affine @ shift,
    )


def crop_or_pad(
    volume: Volume,
    shape: int | Sequence[int],
    *,
    center: CenterLike = "body",
    fill_value: float = -1024.0,
) -> Volume:
    """Cuts a window of exactly ``shape`` voxels around a centre, padding where it leaves the array.

    The affine is translated by the window's start, so every kept voxel keeps its world position.

    Args:
        volume: The volume, shape ``(n0, n1, n2)`` (HU when ``center="body"``).
        shape: Output shape ``(m0, m1, m2)``, or one int for a cube.
        center: ``"body"`` centres on the bounding box of :func:`body_mask` (falling back, with a
            warning, to the array centre when there is no body); ``"center"`` on the array centre;
            or a fractional index ``(i, j, k)``. The window starts at
            ``round(center - (shape - 1) / 2)``.
        fill_value: Value of padded voxels (-1024 HU = air; use 0 for label volumes). Integer
            arrays keep their dtype when it can hold the value, else become float32.

    Returns:
        A volume of shape ``shape``.

    Raises:
        GeometryError: If ``shape`` is not three positive integers.
        ConfigError: If ``center`` is not understood.
    """
    dims = _check_shape(shape, 3)
    start = _window_start(volume, dims, center)  # type: ignore[arg-type]
    return _crop_or_pad_at(volume, start, dims, fill_value)


# ---------------------------------------------------------------------------------------------
# Radiographs
# ---------------------------------------------------------------------------------------------
def _image_array(img: Radiograph | np.ndarray) -> np.ndarray:
    a = img.array if isinstance(img, Radiograph) else np.asarray(img)
    if a.ndim != 2:
        raise GeometryError(f"expected a 2D image, got shape {a.shape}")
    return a


def pad_to_square(img: _ImgOrArray, fill: Literal["min"] | float = "min") -> _ImgOrArray:
    """Pads the shorter side symmetrically so the image is square (odd extra pixel at the end).

    Args:
        img: A :class:`Radiograph` or 2D array, shape ``(h, w)``.
        fill: Value of the padding, or ``"min"`` for the image minimum (black in display
            convention).

    Returns:
        The same kind, shape ``(n, n)`` with ``n = max(h, w)``; pixel spacing unchanged.

    Raises:
        GeometryError: If the input is not 2D.
        ConfigError: If ``fill`` is neither ``"min"`` nor a number.
    """
    a = _image_array(img)
    if isinstance(fill, str):
        if fill != "min":
            raise ConfigError(f"fill must be 'min' or a number, got {fill!r}")
        value = a.min()
    else:
        value = fill
    n = max(a.shape)
    pads = [((n - s) // 2, n - s - (n - s) // 2) for s in a.shape]
    out = np.pad(a, pads, mode="constant", constant_values=value) if n != min(a.shape) else a
    if out is a:
        out = a.copy()
    if isinstance(img, Radiograph):
        return img.replace(array=out)
    return out


def _square_window(shape: tuple[int, ...], center: Sequence[float] | None) -> tuple[slice, slice]:
    n = min(shape)
    window = []
    for ax, size in enumerate(shape):
        c = (size - 1) / 2.0 if center is None else float(center[ax])
        start = math.floor(c - (n - 1) / 2.0 + 0.5)
        start = min(max(start, 0), size - n)
        window.append(slice(start, start + n))
    return window[0], window[1]


def crop_to_square(img: _ImgOrArray, center: Sequence[float] | None = None) -> _ImgOrArray:
    """Crops the longer side so the image is square.

    Args:
        img: A :class:`Radiograph` or 2D array, shape ``(h, w)``.
        center: ``(row, column)`` the square is centred on (only the coordinate along the longer
            side matters); defaults to the image centre. The square is kept inside the image.

    Returns:
        The same kind, shape ``(n, n)`` with ``n = min(h, w)``; pixel spacing unchanged.

    Raises:
        GeometryError: If the input is not 2D.
        ConfigError: If ``center`` is not two numbers.
    """
    a = _image_array(img)
    if center is not None and len(center) != 2:
        raise ConfigError(f"center must be (row, column), got {center!r}")
    rows, cols = _square_window(a.shape, center)
    out = a[rows, cols].copy()
    if isinstance(img, Radiograph):
        return img.replace(array=out)
    return out


def _image_size(size: int | Sequence[int]) -> tuple[int, int]:
    dims = _check_shape(size, 2)
    return dims[0], dims[1]


def area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` weights of area averaging: pixel overlaps, each row summing to 1."""
    lo_in, hi_in = np.arange(n_in) / n_in, np.arange(1, n_in + 1) / n_in
    lo_out, hi_out = np.arange(n_out) / n_out, np.arange(1, n_out + 1) / n_out
    overlap = np.minimum(hi_out[:, None], hi_in[None, :]) - np.maximum(
        lo_out[:, None], lo_in[None, :]
    )
    return np.clip(overlap, 0.0, None) * n_out


def linear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` weights of linear interpolation at ``(m + 0.5) * n_in / n_out - 0.5``,
    with edge replication (the sampling rule of :func:`resize_array`, without its pre-filter)."""
    x = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0, n_in - 1.0)
    i0 = np.floor(x).astype(np.intp)
    i1 = np.minimum(i0 + 1, n_in - 1)
    frac = x - i0
    weights = np.zeros((n_out, n_in))
    np.add.at(weights, (np.arange(n_out), i0), 1.0 - frac)
    np.add.at(weights, (np.arange(n_out), i1), frac)
    return weights


def resize_images(images: npt.ArrayLike, size: int | Sequence[int]) -> np.ndarray:
    """Resizes a batch of radiographs ``(N, h, w)``: area averaging along an axis that shrinks,
    linear interpolation along one that grows.

    Area averaging is the anti-aliased shrink that equals a block mean for integer factors (no
    high-frequency texture folds back as aliasing); growing needs no anti-aliasing. For a batch
    that shrinks (grows) along both axes this is ``tf.image.resize`` with ``method="area"``
    (``"bilinear"``), computed as two small matrix products. :func:`resize_image` is the
    single-image, Gaussian-prefiltered resize that preprocessing uses.

    Args:
        images: ``(N, h, w)`` array.
        size: Output side (square) or ``(rows, columns)``.

    Returns:
        float32 array ``(N, rows, columns)``.

    Raises:
        GeometryError: If ``images`` is not 3D, is empty, or ``size`` is not positive.
    """
    a = np.asarray(images, dtype=np.float32)
    if a.ndim != 3 or min(a.shape, default=0) < 1:
        raise GeometryError(f"expected a non-empty (N, h, w) batch of images, got shape {a.shape}")
    rows_out, cols_out = _image_size(size)
    _, h, w = a.shape
    if (rows_out, cols_out) == (h, w):
        return a

    def weights(n_in: int, n_out: int) -> np.ndarray:
        if n_out == n_in:
            return np.eye(n_in, dtype=np.float32)
        matrix = area_matrix(n_in, n_out) if n_out < n_in else linear_matrix(n_in, n_out)
        return matrix.astype(np.float32)

    out: np.ndarray = np.einsum(
        "oh,nhw,pw->nop", weights(h, rows_out), a, weights(w, cols_out), optimize=True
    )
    return out.astype(np.float32)


def resize_image(
    img: _ImgOrArray, size: int | Sequence[int], anti_aliasing: bool = True
) -> _ImgOrArray:
    """Resizes a radiograph with linear interpolation, keeping its field of view.

    Args:
        img: A :class:`Radiograph` or 2D array, shape ``(h, w)``.
        size: Output side (square) or ``(rows, columns)``.
        anti_aliasing: Gaussian pre-filter along shrunk axes (see :func:`resize_array`).

    Returns:
        The same kind, float32, shape ``size``; a Radiograph's ``pixel_spacing_mm`` is scaled by
        ``old / new`` along each axis.

    Raises:
        GeometryError: If the input is not 2D or ``size`` is not positive.
    """
    a = _image_array(img)
    dims = _image_size(size)
    out = resize_array(a, dims, interpolation="linear", anti_aliasing=anti_aliasing)
    if isinstance(img, Radiograph):
        return _resized_radiograph(img, out)
    return out


def _resized_radiograph(img: Radiograph, array: np.ndarray) -> Radiograph:
    """``img`` with a resampled array of the same field of view, pixel spacing scaled to match."""
    spacing = img.pixel_spacing_mm
    if spacing is not None:
        spacing = (
            spacing[0] * img.shape[0] / array.shape[0],
            spacing[1] * img.shape[1] / array.shape[1],
        )
    return img.replace(array=array, pixel_spacing_mm=spacing)


def percentile_window(
    img: _ImgOrArray,
    low_percentile: float = XRAY_WINDOW_PERCENTILES[0],
    high_percentile: float = XRAY_WINDOW_PERCENTILES[1],
) -> _ImgOrArray:
    """Maps the ``[low, high]`` percentile range of an image linearly onto [0, 1], clipped.

    Args:
        img: A :class:`Radiograph` or 2D array.
        low_percentile: Percentile (0-100) mapped to 0.
        high_percentile: Percentile mapped to 1; greater than ``low_percentile``.

    Returns:
        The same kind, float32 in [0, 1]; all zeros (never NaN) for a constant image.

    Raises:
        ConfigError: Unless ``0 <= low_percentile < high_percentile <= 100``.
    """
    if not 0.0 <= low_percentile < high_percentile <= 100.0:
        raise ConfigError(
            "percentiles must satisfy 0 <= low < high <= 100, "
            f"got ({low_percentile}, {high_percentile})"
        )
    a = _image_array(img)
    lo, hi = np.percentile(a, [low_percentile, high_percentile])
    if hi > lo:
        out = ((a.astype(np.float64) - lo) / (hi - lo)).astype(np.float32)
        np.clip(out, 0.0, 1.0, out=out)
    else:
        out = np.zeros(a.shape, dtype=np.float32)
    if isinstance(img, Radiograph):
        return img.replace(array=out)
    return out


# ---------------------------------------------------------------------------------------------
# Transforms
# ---------------------------------------------------------------------------------------------
class Transform:
    """Base of the callable transforms.

    ``t(image)`` returns the transformed image; ``t(image, *labels)`` returns the tuple
    ``(image, *labels)``, where label masks (Volumes, Radiographs or arrays on the image's grid)
    get the same geometric change with nearest interpolation and fill 0, and are left alone by
    intensity transforms. Subclasses override :meth:`apply` and, if labels need more than
    passing through, :meth:`apply_label` or :meth:`_apply`.
    """

    @overload
    def __call__(self, image: Any) -> Any: ...
    @overload
    def __call__(self, image: Any, label: Any, /, *labels: Any) -> tuple[Any, ...]: ...
    def __call__(self, image: Any, *labels: Any) -> Any:
        new_image, new_labels = self._apply(image, tuple(labels))
        return (new_image, *new_labels) if labels else new_image

    def _apply(self, image: Any, labels: tuple[Any, ...]) -> tuple[Any, tuple[Any, ...]]:
        return self.apply(image), tuple(self.apply_label(label, image) for label in labels)

    def apply(self, image: Any) -> Any:
        """Transforms the image."""
        raise NotImplementedError

    def apply_label(self, label: Any, image: Any) -> Any:
        """Transforms one label mask; ``image`` is the untransformed image. Default: unchanged."""
        return label


def _label_volume(label: Volume | np.ndarray, image: Volume) -> tuple[Volume, bool]:
    """The label as a Volume on the image's grid, and whether it came as a bare array."""
    if isinstance(label, Volume):
        if label.shape != image.shape or not np.allclose(label.affine, image.affine, atol=1e-4):
            raise GeometryError(
                f"label {label!r} is not on the grid of image {image!r}", label.source
            )
        return label, False
    arr = np.asarray(label)
    if arr.shape != image.shape:
        raise GeometryError(f"label of shape {arr.shape} does not match image shape {image.shape}")
    return Volume(arr, image.affine), True


def _check_volume(image: Any, name: str) -> Volume:
    if not isinstance(image, Volume):
        raise TypeError(f"{name} expects a Volume, got {type(image).__name__}")
    return image


class _VolumeTransform(Transform):
    """Label handling for geometric volume transforms: labels are Volumes or arrays on the grid."""

    def apply_label(self, label: Any, image: Any) -> Any:
        vol, bare = _label_volume(label, _check_volume(image, type(self).__name__))
        out = self.apply_label_volume(vol, image)
        return out.array if bare else out

    def apply_label_volume(self, label: Volume, image: Volume) -> Volume:
        raise NotImplementedError


@dataclass(frozen=True)
class Reorient(_VolumeTransform):
    """Flips/transposes to ``axcodes`` (see :func:`reorient`); labels follow exactly."""

    axcodes: tuple[str, str, str] = CANONICAL_AXCODES

    def __post_init__(self) -> None:
        _target_ornt(self.axcodes)
        object.__setattr__(self, "axcodes", tuple(str(c).upper() for c in self.axcodes))

    def apply(self, image: Any) -> Volume:
        return reorient(_check_volume(image, "Reorient"), self.axcodes)

    def apply_label_volume(self, label: Volume, image: Volume) -> Volume:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the image has already warned about obliquity
            return reorient(label, self.axcodes)


@dataclass(frozen=True)
class Resample(_VolumeTransform):
    """Resamples to ``spacing_mm`` (see :func:`resample`); labels use nearest interpolation."""

    spacing_mm: float | tuple[float, float, float]
    interpolation: Interpolation = "linear"
    anti_aliasing: bool = True
    fill_value: float | None = None

    def __post_init__(self) -> None:
        _check_interpolation(self.interpolation)
        sp = np.asarray(self.spacing_mm, dtype=np.float64).reshape(-1)
        if sp.size not in (1, 3) or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
            raise GeometryError(f"spacing_mm must be positive, got {self.spacing_mm!r}")
        if not isinstance(self.spacing_mm, int | float):
            object.__setattr__(self, "spacing_mm", tuple(float(s) for s in sp))

    def apply(self, image: Any) -> Volume:
        return resample(
            _check_volume(image, "Resample"),
            self.spacing_mm,
            interpolation=self.interpolation,
            anti_aliasing=self.anti_aliasing,
            fill_value=self.fill_value,
        )

    def apply_label_volume(self, label: Volume, image: Volume) -> Volume:
        return resample(label, self.spacing_mm, interpolation="nearest", anti_aliasing=False)


@dataclass(frozen=True)
class Resize(_VolumeTransform):
    """Resizes to an exact ``shape`` keeping the field of view (see :func:`resize`)."""

    shape: tuple[int, int, int]
    interpolation: Interpolation = "linear"
    anti_aliasing: bool = True

    def __post_init__(self) -> None:
        _check_interpolation(self.interpolation)
        object.__setattr__(self, "shape", _check_shape(self.shape, 3))

    def apply(self, image: Any) -> Volume:
        return resize(
            _check_volume(image, "Resize"),
            self.shape,
            interpolation=self.interpolation,
            anti_aliasing=self.anti_aliasing,
        )

    def apply_label_volume(self, label: Volume, image: Volume) -> Volume:
        return resize(label, self.shape, interpolation="nearest", anti_aliasing=False)


@dataclass(frozen=True)
class CropOrPad(_VolumeTransform):
    """Crops/pads to ``shape`` (see :func:`crop_or_pad`); labels get the image's window, fill 0."""

    shape: tuple[int, int, int]
    center: Literal["body", "center"] | tuple[float, float, float] = "body"
    fill_value: float = -1024.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", _check_shape(self.shape, 3))
        if not isinstance(self.center, str):
            centre = tuple(float(c) for c in self.center)
            if len(centre) != 3:
                raise ConfigError(f"center must be three indices, got {self.center!r}")
            object.__setattr__(self, "center", centre)
        elif self.center not in ("body", "center"):
            raise ConfigError(
                f"center must be 'body', 'center' or an index triple, got {self.center!r}"
            )

    def _apply(self, image: Any, labels: tuple[Any, ...]) -> tuple[Any, tuple[Any, ...]]:
        vol = _check_volume(image, "CropOrPad")
        # The window is found once, on the image, so every label is cut exactly like it.
        start = _window_start(vol, self.shape, self.center)
        out_labels = []
        for label in labels:
            lab, bare = _label_volume(label, vol)
            cut = _crop_or_pad_at(lab, start, self.shape, 0)
            out_labels.append(cut.array if bare else cut)
        return _crop_or_pad_at(vol, start, self.shape, self.fill_value), tuple(out_labels)


@dataclass(frozen=True)
class ClipHU(Transform):
    """Clips the image to a HU window (see :func:`clip_hu`); labels pass through."""

    hu_window: str | tuple[float, float] = "xprospect"

    def __post_init__(self) -> None:
        resolve_hu_window(self.hu_window)

    def apply(self, image: Any) -> Any:
        return clip_hu(image, self.hu_window)


@dataclass(frozen=True)
class WindowHU(Transform):
    """Maps a HU window to [0, 1] (see :func:`window_hu`); labels pass through."""

    hu_window: str | tuple[float, float] = "xprospect"

    def __post_init__(self) -> None:
        resolve_hu_window(self.hu_window)

    def apply(self, image: Any) -> Any:
        return window_hu(image, self.hu_window)


@dataclass(frozen=True)
class PadToSquare(Transform):
    """Pads a radiograph to a square (see :func:`pad_to_square`); labels padded with 0."""

    fill: Literal["min"] | float = "min"

    def apply(self, image: Any) -> Any:
        return pad_to_square(image, self.fill)

    def apply_label(self, label: Any, image: Any) -> Any:
        return pad_to_square(label, 0.0)


@dataclass(frozen=True)
class CropToSquare(Transform):
    """Crops a radiograph to a square (see :func:`crop_to_square`); labels cut the same way."""

    center: tuple[float, float] | None = None

    def apply(self, image: Any) -> Any:
        return crop_to_square(image, self.center)

    def apply_label(self, label: Any, image: Any) -> Any:
        if _image_array(label).shape != _image_array(image).shape:
            raise GeometryError("label and radiograph shapes differ")
        return crop_to_square(label, self.center)


@dataclass(frozen=True)
class ResizeImage(Transform):
    """Resizes a radiograph (see :func:`resize_image`); labels use nearest interpolation."""

    size: int | tuple[int, int]
    anti_aliasing: bool = True

    def __post_init__(self) -> None:
        _image_size(self.size)

    def apply(self, image: Any) -> Any:
        return resize_image(image, self.size, self.anti_aliasing)

    def apply_label(self, label: Any, image: Any) -> Any:
        a = _image_array(label)
        out = resize_array(a, _image_size(self.size), interpolation="nearest")
        return _resized_radiograph(label, out) if isinstance(label, Radiograph) else out


@dataclass(frozen=True)
class PercentileWindow(Transform):
    """Percentile window to [0, 1] (see :func:`percentile_window`); labels pass through."""

    low_percentile: float = XRAY_WINDOW_PERCENTILES[0]
    high_percentile: float = XRAY_WINDOW_PERCENTILES[1]

    def __post_init__(self) -> None:
        if not 0.0 <= self.low_percentile < self.high_percentile <= 100.0:
            raise ConfigError(
                "percentiles must satisfy 0 <= low < high <= 100, "
                f"got ({self.low_percentile}, {self.high_percentile})"
            )

    def apply(self, image: Any) -> Any:
        return percentile_window(image, self.low_percentile, self.high_percentile)


@dataclass(frozen=True, repr=False)
class Compose(Transform):
    """Applies transforms in order; labels are threaded through every step.

    Args:
        transforms: Transforms (or any callables with the ``t(image, *labels)`` contract).
    """

    transforms: Sequence[Callable[..., Any]]

    def __post_init__(self) -> None:
        items = tuple(self.transforms)
        for t in items:
            if not callable(t):
                raise ConfigError(f"Compose needs callables, got {t!r}")
        object.__setattr__(self, "transforms", items)

    def _apply(self, image: Any, labels: tuple[Any, ...]) -> tuple[Any, tuple[Any, ...]]:
        for t in self.transforms:
            if labels:
                image, *rest = t(image, *labels)
                labels = tuple(rest)
            else:
                image = t(image)
        return image, labels

    def __len__(self) -> int:
        return len(self.transforms)

    def __iter__(self) -> Iterator[Callable[..., Any]]:
        return iter(self.transforms)

    def __getitem__(self, index: int) -> Callable[..., Any]:
        return self.transforms[index]

    def __repr__(self) -> str:
        inner = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"Compose([{inner}\n])" if inner else "Compose([])"


def ct_preprocessing(
    size: int = 128, fov_mm: float = 320.0, hu_window: HUWindowLike | None = None
) -> Compose:
    """The CT pipeline of the models: canonical, isotropic, a ``size``^3 cube around the body.

    Reorient to ``("I", "P", "L")`` -> resample to ``fov_mm / size`` mm isotropic -> crop or pad to
    ``size``^3 centred on the body (padding with air) -> optionally window to [0, 1].

    Where the scan is shorter (or narrower) than the cube, the padded air is not anatomy: call the
    pipeline with the scan's validity mask as a label, ``ct, valid = pipeline(volume,
    scan_mask(volume))``, to know which voxels of the cube were scanned (see :func:`scan_mask`).

    Args:
        size: Output side in voxels.
        fov_mm: Side of the output cube in mm.
        hu_window: Window applied at the end, or ``None`` to keep HU.

    Returns:
        The pipeline; call it on a Volume (and optional label volumes).

    Raises:
        ConfigError: If ``size``/``fov_mm`` are not positive or the window is invalid.
    """
    if int(size) != size or size < 1 or not (math.isfinite(fov_mm) and fov_mm > 0):
        raise ConfigError(f"size and fov_mm must be positive, got size={size!r}, fov_mm={fov_mm!r}")
    steps: list[Transform] = [
        Reorient(CANONICAL_AXCODES),
        Resample(float(fov_mm) / int(size)),
        CropOrPad((int(size),) * 3, center="body", fill_value=-1024.0),
    ]
    if hu_window is not None:
        window = hu_window if isinstance(hu_window, str) else resolve_hu_window(hu_window)
        steps.append(WindowHU(window))
    return Compose(tuple(steps))


def radiograph_preprocessing(size: int = 128, square: Literal["pad", "crop"] = "pad") -> Compose:
    """The radiograph pipeline: square it, resize to ``size``^2, percentile-window to [0, 1].

    Args:
        size: Output side in pixels.
        square: ``"pad"`` keeps the whole image (padding with its minimum); ``"crop"`` keeps the
            central square.

    Returns:
        The pipeline; call it on a Radiograph (and optional 2D label masks).

    Raises:
        ConfigError: If ``square`` is unknown or ``size`` is not positive.
    """
    if int(size) != size or size < 1:
        raise ConfigError(f"size must be a positive integer, got {size!r}")
    if square not in ("pad", "crop"):
        raise ConfigError(f"square must be 'pad' or 'crop', got {square!r}")
    first: Transform = PadToSquare() if square == "pad" else CropToSquare()
    return Compose((first, ResizeImage(int(size)), PercentileWindow()))
