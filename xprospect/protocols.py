"""Each paper's evaluation protocol as data: which metrics, on which values, defined how.

The papers xprospect follows report their tables with different definitions of the same names:
PSNR on [0, 1] values or on integer CT units with ``PIXEL_MAX = 4095``; SSIM with a uniform
7 x 7 window and sample covariances (scikit-image's old defaults, X2CT-GAN's code) or a Gaussian
11 x 11 window zero-padded (``pytorch-ssim``, DuoLift-GAN); slice-wise or over the whole volume;
in an HU window of [-1000, 1000], [-1024, 1476] or [-1000, 4096]. A number is only comparable to a
paper's if it is computed the paper's way, so each paper's way is written down once here:

- :class:`MetricDef`: one reported column (its output key, the paper's column name, the kind of
  metric and every option of its definition).
- :class:`Protocol`: a paper's HU window and its metrics.
- :data:`PROTOCOLS`: the registry (``xprospect``, ``x2ct``, ``duolift``, ``cvaa``, ``s-xr2ct``,
  ``xctdiff``); :func:`get_protocol` looks one up.
- :func:`evaluate_protocol`: scores one case under a protocol.

What each paper's text says, and what we chose where it is silent, is in each protocol's
``notes`` (and in ``docs/reproducing.md``). Where a definition follows a paper's reference code
rather than its text (X2CT-GAN's ``3DGAN/lib/utils/metrics_np.py`` and ``test.py``, read, never
copied), the note says so.

Values. A case comes as the data pipeline has it: window-normalised to [0, 1] with the data's
window (``hu_window``). Both volumes are mapped back to HU, clipped to the protocol's window and
normalised with it (``scale="unit"``); ``scale="ct_int"`` metrics use the CT units of that window
truncated to integers (``floor((HU - low))`` for HU in the window), as X2CT-GAN's ``astype(int32)``
does on ``HU + 1024`` clipped to [0, 2500]. If the data's window is narrower than the protocol's,
HU outside it were clipped before and the numbers are the protocol's definitions on slightly
different data; the exact route is to prepare the data with the protocol's window.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from xprospect.errors import ConfigError, GeometryError, InvalidValuesError
from xprospect.metrics import (
    AXIS_NAMES,
    X2CT_PIXEL_MAX,
    X2CT_ZERO_MSE_DB,
    cosine_similarity,
    mae,
    mse,
    psnr_2d,
    psnr_3d,
    ssim_2d,
    ssim_3d,
)
from xprospect.preprocessing import HUWindowLike, resolve_hu_window
from xprospect.segmentation import DEFAULT_SPACING_MM, dice, lung_mask, vessel_mask

__all__ = [
    "METRIC_KINDS",
    "PROTOCOLS",
    "MetricDef",
    "Protocol",
    "evaluate_protocol",
    "get_protocol",
    "protocol_names",
    "rewindow",
]

MetricKind = Literal[
    "mae",
    "mse",
    "cosine",
    "psnr_3d",
    "psnr_2d",
    "ssim_3d",
    "ssim_2d",
    "lpips",
    "lung_dice",
    "vessel_dice",
]
METRIC_KINDS: tuple[str, ...] = (
    "mae",
    "mse",
    "cosine",
    "psnr_3d",
    "psnr_2d",
    "ssim_3d",
    "ssim_2d",
    "lpips",
    "lung_dice",
    "vessel_dice",
)
"""The kinds of metric a protocol can hold (the functions of :mod:`xprospect.metrics`,
:mod:`xprospect.lpips` and :mod:`xprospect.segmentation` behind them)."""

# X2CT-GAN truncates its float CT to int32; the tolerance keeps integer HU that the window
# arithmetic left a hair below their integer.
_TRUNC_TOL = 1e-6
_RANGE_TOL = 1e-4


@dataclass(frozen=True)
class MetricDef:
    """One reported metric of a paper, with every option of its definition.

    Args:
        key: Output name (a column of ``per_case.csv``).
        column: The paper's name for it (its table's column header).
        kind: One of :data:`METRIC_KINDS`.
        scale: ``"unit"``: on the protocol-window values in [0, 1]; ``"ct_int"``: on the CT units
            ``HU - low`` of the protocol window, truncated to integers (X2CT-GAN's PSNR).
        data_range: PSNR's peak value / SSIM's data range (X2CT-GAN's ``PIXEL_MAX``).
        zero_mse_db: PSNR of a volume or slice with MSE 0 (X2CT-GAN: 100 dB); None leaves such
            slices out (see :func:`xprospect.metrics.psnr_2d`).
        axes: For slice-wise metrics, the axes the slices are normal to (0 axial, 1 coronal,
            2 sagittal); the value is the mean over the axes of the mean over their slices, and
            with several axes each axis is also reported as ``key_axial`` etc.
        gaussian: SSIM window: Gaussian of ``sigma`` (True) or uniform ``win_size`` (False).
        sigma: Standard deviation of the Gaussian SSIM window, in voxels.
        win_size: Side of the uniform SSIM window.
        sample_covariance: SSIM covariances normalised by ``N - 1`` (scikit-image's default).
        padding: SSIM edges: ``"reflect"`` (scikit-image) or ``"zeros"`` (``pytorch-ssim``).
        net: LPIPS backbone, ``"vgg"`` or ``"alex"``.
    """

    key: str
    column: str
    kind: MetricKind
    scale: Literal["unit", "ct_int"] = "unit"
    data_range: float = 1.0
    zero_mse_db: float | None = None
    axes: tuple[int, ...] = (0, 1, 2)
    gaussian: bool = True
    sigma: float = 1.5
    win_size: int | None = None
    sample_covariance: bool = False
    padding: str = "reflect"
    net: str = "vgg"

    def __post_init__(self) -> None:
        if self.kind not in METRIC_KINDS:
            raise ConfigError(f"unknown metric kind {self.kind!r}; known: {METRIC_KINDS}")
        if self.scale not in ("unit", "ct_int"):
            raise ConfigError(f"scale must be 'unit' or 'ct_int', got {self.scale!r}")
        if not self.axes or any(a not in (0, 1, 2) for a in self.axes):
            raise ConfigError(f"axes must be a non-empty tuple of 0, 1, 2, got {self.axes!r}")


@dataclass(frozen=True)
class Protocol:
    """A paper's evaluation protocol.

    Args:
        name: Registry name (``--protocol``).
        paper: The paper, as cited.
        hu_window: The paper's HU window ``(low, high)``; values are clipped to it and normalised.
        metrics: The paper's reported metrics, in its table's order.
        notes: What the paper says and what was chosen where it is silent.
    """

    name: str
    paper: str
    hu_window: tuple[float, float]
    metrics: tuple[MetricDef, ...]
    notes: str = ""
    keys: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        keys = tuple(m.key for m in self.metrics)
        if len(set(keys)) != len(keys):
            raise ConfigError(f"protocol {self.name!r} repeats a metric key: {keys}")
        object.__setattr__(self, "keys", keys)

    @property
    def needs_lpips(self) -> tuple[str, ...]:
        """The LPIPS backbones this protocol uses (empty if none)."""
        return tuple(dict.fromkeys(m.net for m in self.metrics if m.kind == "lpips"))

    def without_lpips(self) -> Protocol:
        """The same protocol without its LPIPS metrics (when no backbone weights are at hand)."""
        return Protocol(
            self.name,
            self.paper,
            self.hu_window,
            tuple(m for m in self.metrics if m.kind != "lpips"),
            self.notes,
        )


# --- The definitions shared by several papers -------------------------------------------------

_X2CT_WINDOW = (-1024.0, 1476.0)
# X2CT-GAN, 3DGAN/test.py: MAE, MSE and cosine similarity on the [0, 1] CT (MAE0, MSE0 in its
# log), PSNR on the int32 CT of [0, 2500] with PIXEL_MAX 4095 and 100 dB for MSE 0, SSIM as
# skimage's compare_ssim(multichannel=True) on the [0, 1] CT: every slice of an axis with the 7 x 7
# uniform window and sample covariances, averaged over the slices and over the three axes.
_X2CT_PSNR_3D = MetricDef(
    "psnr_3d",
    "PSNR (3D)",
    "psnr_3d",
    scale="ct_int",
    data_range=X2CT_PIXEL_MAX,
    zero_mse_db=X2CT_ZERO_MSE_DB,
)
_X2CT_PSNR_2D = MetricDef(
    "psnr_2d",
    "PSNR (slice-wise, mean of 3 axes)",
    "psnr_2d",
    scale="ct_int",
    data_range=X2CT_PIXEL_MAX,
    zero_mse_db=X2CT_ZERO_MSE_DB,
)
_X2CT_SSIM = MetricDef(
    "ssim_2d",
    "SSIM",
    "ssim_2d",
    gaussian=False,
    win_size=7,
    sample_covariance=True,
)

PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol(
            "xprospect",
            "Tinsley et al., XprospeCT (2023)",
            (-1000.0, 1000.0),
            (
                MetricDef("mse", "Test Accuracy MSE", "mse"),
                MetricDef("mae", "MAE (training loss)", "mae"),
            ),
            notes=(
                "Section 3.1: CT scaled from [-1000, 1000] HU to [0, 1]; Table 1 reports the "
                "test MSE on those values (30 test cases). The MAE is the loss the paper chose "
                "(Section 4.2), listed for completeness."
            ),
        ),
        Protocol(
            "x2ct",
            "Ying et al., X2CT-GAN (CVPR 2019)",
            _X2CT_WINDOW,
            (
                MetricDef("mae", "MAE", "mae"),
                MetricDef("mse", "MSE", "mse"),
                MetricDef("cosine_similarity", "CS", "cosine"),
                _X2CT_PSNR_3D,
                _X2CT_PSNR_2D,
                _X2CT_SSIM,
            ),
            notes=(
                "Official code (kylekma/X2CT, 3DGAN/test.py, lib/utils/metrics_np.py): CT as "
                "HU + 1024 clipped to [0, 2500] and divided by 2500; PSNR on the int32 CT with "
                "PIXEL_MAX 4095 (4.29 dB above the same PSNR with the true range 2500)."
            ),
        ),
        Protocol(
            "duolift",
            "DuoLift-GAN (2025)",
            _X2CT_WINDOW,
            (
                MetricDef(
                    "psnr_2d", "PSNR(2D)", "psnr_2d", zero_mse_db=X2CT_ZERO_MSE_DB, axes=(0,)
                ),
                MetricDef("psnr_3d", "PSNR(3D)", "psnr_3d", zero_mse_db=X2CT_ZERO_MSE_DB),
                MetricDef("ssim_2d", "SSIM(2D)", "ssim_2d", padding="zeros", axes=(0,)),
                MetricDef("ssim_3d", "SSIM(3D)", "ssim_3d", padding="zeros"),
                MetricDef("lpips_vgg", "LPIPS(vgg)", "lpips", net="vgg", axes=(0,)),
                MetricDef("lung_dice", "DICE(LungSeg)", "lung_dice"),
                MetricDef("vessel_dice", "DICE(VesselSeg)", "vessel_dice"),
            ),
            notes=(
                "Text: X2CT-GAN's preprocessed LIDC-IDRI (so its window [-1024, 1476] HU), "
                "SSIM(2D) slice by slice with a 2D Gaussian kernel, SSIM(3D) with a 3D Gaussian "
                "kernel (jinh0park's pytorch-ssim-3D: 11 taps, sigma 1.5, zero padding, whole "
                "map averaged), PSNR(2D) per slice and PSNR(3D) on the volume, LPIPS(vgg) per "
                "slice averaged over all slices, DICE of lung (lungmask) and vessel "
                "(TotalSegmentator) masks. Its X2CT-GAN PSNR(3D) is 4.6 dB below X2CT-GAN's own "
                "figure, as the data range 1 (not PIXEL_MAX 4095) implies. Silent on the slice "
                "axis (we take axial slices, CT's own) and on MSE-0 slices (we follow X2CT's "
                "100 dB). Masks: classical lungs and vessels by HU threshold, approximating "
                "lungmask and TotalSegmentator."
            ),
        ),
        Protocol(
            "cvaa",
            "Qiao et al., CVAA-GAN",
            (-1000.0, 4096.0),
            (
                MetricDef("mae", "MAE", "mae"),
                MetricDef("mse", "MSE", "mse"),
                MetricDef("cosine_similarity", "Cosine Similarity", "cosine"),
                MetricDef("psnr_3d", "PSNR", "psnr_3d", zero_mse_db=X2CT_ZERO_MSE_DB),
                _X2CT_SSIM,
            ),
            notes=(
                "Section IV-A: CT clipped to [-1000, 4096] and min-max normalised to [0, 1]; "
                "Table I: MAE, MSE, cosine similarity, PSNR, SSIM. Silent on their definitions; "
                "the baseline was run with X2CT-GAN's open code, so we use its MAE/MSE/cosine "
                "and SSIM, and PSNR with data range 1 on the [0, 1] volume (per-case mean; "
                "Table I's PSNRs sit 0.3-0.7 dB above 10 log10(1 / mean MSE), as per-case "
                "averaging of a 3D PSNR with peak 1 does)."
            ),
        ),
        Protocol(
            "s-xr2ct",
            "Hor, Yang and Kim, S-XR2CT (KICS 2025)",
            _X2CT_WINDOW,
            (
                _X2CT_SSIM,
                _X2CT_PSNR_3D,
                MetricDef("lpips_alex", "LIPIP", "lpips", net="alex", axes=(0,)),
            ),
            notes=(
                "Table 1: SSIM, PSNR, LPIPS against X2CT-GAN on LIDC-IDRI; silent on the "
                "definitions, window and LPIPS network. Its X2CT-GAN PSNR (23.40) is X2CT's "
                "PIXEL_MAX-4095 scale, not DuoLift's range-1 scale (17.9), so X2CT's code "
                "definitions; LPIPS with the lpips package's default network (AlexNet), axial "
                "slices."
            ),
        ),
        Protocol(
            "xctdiff",
            "XctDiff (2024)",
            _X2CT_WINDOW,
            (
                _X2CT_PSNR_3D,
                _X2CT_SSIM,
                MetricDef("lpips_vgg", "LPIPS", "lpips", net="vgg", axes=(0,)),
            ),
            notes=(
                "Section 3.1/3.3: LIDC-IDRI at 2.5 mm cropped to 128^3 (X2CT-GAN's grid and "
                "split, 916/102), PSNR, SSIM, LPIPS; silent on the definitions. Its X2CTGAN row "
                "(22.66 dB, SSIM 0.503) is on X2CT's PIXEL_MAX-4095 scale, so X2CT's code "
                "definitions; LPIPS with VGG (the network of its own LPIPS loss, "
                "ldm/modules/losses/lpips.py of its code), axial slices. Its code min-max "
                "normalises each CT; the window here is X2CT's."
            ),
        ),
    )
}
"""Every paper's protocol by name."""


def protocol_names() -> tuple[str, ...]:
    """The registered protocol names."""
    return tuple(PROTOCOLS)


def get_protocol(name: str | Protocol) -> Protocol:
    """Looks a protocol up by name (a :class:`Protocol` is returned as is).

    Raises:
        ConfigError: On an unknown name.
    """
    if isinstance(name, Protocol):
        return name
    key = str(name).lower()
    if key not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {name!r}; known: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[key]


def rewindow(
    values: np.ndarray, from_window: tuple[float, float], to_window: tuple[float, float]
) -> np.ndarray:
    """Window-normalised values of one window as values of another: to HU, clipped, normalised.

    Args:
        values: Values in [0, 1] normalised with ``from_window`` (clipped to [0, 1] first).
        from_window: ``(low, high)`` HU they were normalised with.
        to_window: ``(low, high)`` HU of the result.

    Returns:
        ``clip((HU - low') / (high' - low'), 0, 1)`` in float64.
    """
    lo, hi = from_window
    lo2, hi2 = to_window
    hu = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0) * (hi - lo) + lo
    return np.clip((hu - lo2) / (hi2 - lo2), 0.0, 1.0)


LpipsScorer = Callable[[np.ndarray, np.ndarray, Sequence[int]], float]
"""``(truth, pred, axes) -> mean LPIPS``, volumes in [0, 1]; see :mod:`xprospect.lpips`."""


def _mean_over_axes(key: str, per_axis: Mapping[int, float]) -> dict[str, float]:
    out = {key: float(np.mean(list(per_axis.values())))}
    if len(per_axis) > 1:
        out.update({f"{key}_{AXIS_NAMES[a]}": v for a, v in per_axis.items()})
    return out


def _one(
    m: MetricDef,
    unit: tuple[np.ndarray, np.ndarray],
    ct_int: tuple[np.ndarray, np.ndarray],
    masks: Callable[[str], tuple[np.ndarray, np.ndarray]],
    lpips: Mapping[str, LpipsScorer] | None,
) -> dict[str, float]:
    t, p = ct_int if m.scale == "ct_int" else unit
    if m.kind == "mae":
        return {m.key: mae(t, p)}
    if m.kind == "mse":
        return {m.key: mse(t, p)}
    if m.kind == "cosine":
        return {m.key: cosine_similarity(t, p)}
    if m.kind == "psnr_3d":
        return {m.key: psnr_3d(t, p, data_range=m.data_range, zero_mse_db=m.zero_mse_db)}
    if m.kind == "psnr_2d":
        return _mean_over_axes(
            m.key,
            {
                a: psnr_2d(t, p, a, data_range=m.data_range, zero_mse_db=m.zero_mse_db)
                for a in m.axes
            },
        )
    ssim_options: dict[str, Any] = {
        "data_range": m.data_range,
        "sigma": m.sigma,
        "padding": m.padding,
    }
    if m.kind == "ssim_3d":
        return {m.key: ssim_3d(t, p, **ssim_options)}
    if m.kind == "ssim_2d":
        ssim_options.update(
            gaussian_weights=m.gaussian,
            win_size=m.win_size,
            use_sample_covariance=m.sample_covariance,
        )
        return _mean_over_axes(m.key, {a: ssim_2d(t, p, a, **ssim_options) for a in m.axes})
    if m.kind == "lpips":
        if lpips is None or m.net not in lpips:
            raise ConfigError(
                f"metric {m.key!r} needs an LPIPS {m.net} scorer (xprospect.lpips.LPIPS); "
                "pass lpips={...} or drop it with Protocol.without_lpips()"
            )
        return {m.key: float(lpips[m.net](t, p, m.axes))}
    mask_t, mask_p = masks(m.kind)
    return {m.key: dice(mask_t, mask_p)}


def evaluate_protocol(
    truth: np.ndarray,
    pred: np.ndarray,
    protocol: str | Protocol,
    *,
    hu_window: HUWindowLike = "xprospect",
    spacing_mm: float | Sequence[float] | None = None,
    lpips: Mapping[str, LpipsScorer] | None = None,
) -> dict[str, float]:
    """Scores one case with a paper's definitions.

    Args:
        truth: Ground truth, canonical ``(D, H, W)``, window-normalised to [0, 1] with
            ``hu_window`` (as ``load_dataset`` yields it).
        pred: Prediction of the same shape and window; clipped to [0, 1].
        protocol: A name from :data:`PROTOCOLS` or a :class:`Protocol`.
        hu_window: The window both volumes were normalised with.
        spacing_mm: Voxel size for the lung and vessel masks (default 2.5 mm).
        lpips: LPIPS scorers by backbone (``"vgg"``, ``"alex"``) for protocols that report it.

    Returns:
        One value per metric key (and per axis where a slice-wise metric has several axes).

    Raises:
        ConfigError: On an unknown protocol or window, or LPIPS asked for without a scorer.
        GeometryError: If the volumes differ in shape or are not 3D.
        InvalidValuesError: If the truth is not in [0, 1] or a volume holds NaN.
    """
    proto = get_protocol(protocol)
    data_window = resolve_hu_window(hu_window)
    t0 = np.asarray(truth, dtype=np.float64)
    p0 = np.asarray(pred, dtype=np.float64)
    if t0.shape != p0.shape or t0.ndim != 3:
        raise GeometryError(
            f"truth and prediction must be 3D of one shape, got {t0.shape} and {p0.shape}"
        )
    if not (np.all(np.isfinite(t0)) and np.all(np.isfinite(p0))):
        raise InvalidValuesError("truth or prediction holds NaN or Inf")
    if t0.min() < -_RANGE_TOL or t0.max() > 1.0 + _RANGE_TOL:
        raise InvalidValuesError(
            f"evaluate_protocol needs window-normalised volumes in [0, 1]; the truth spans "
            f"[{t0.min():g}, {t0.max():g}]"
        )
    low, high = proto.hu_window
    t = rewindow(t0, data_window, proto.hu_window)
    p = rewindow(p0, data_window, proto.hu_window)
    width = high - low
    ct_int = (np.floor(t * width + _TRUNC_TOL), np.floor(p * width + _TRUNC_TOL))
    sp = (
        (DEFAULT_SPACING_MM,) * 3
        if spacing_mm is None
        else tuple(np.broadcast_to(np.asarray(spacing_mm, dtype=np.float64), (3,)))
    )
    # Masks are computed on the data's own HU (the segmentation's thresholds are in HU), once.
    cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def masks(kind: str) -> tuple[np.ndarray, np.ndarray]:
        if "lung_dice" not in cache:
            lo, hi = data_window
            hu_t = np.clip(t0, 0, 1) * (hi - lo) + lo
            hu_p = np.clip(p0, 0, 1) * (hi - lo) + lo
            cache["hu"] = (hu_t, hu_p)
            cache["lung_dice"] = (
                lung_mask(hu_t, spacing_mm=sp),
                lung_mask(hu_p, spacing_mm=sp),
            )
        if kind == "vessel_dice" and kind not in cache:
            (hu_t, hu_p), (lung_t, lung_p) = cache["hu"], cache["lung_dice"]
            cache[kind] = (
                vessel_mask(hu_t, spacing_mm=sp, lungs=lung_t),
                vessel_mask(hu_p, spacing_mm=sp, lungs=lung_p),
            )
        return cache[kind]

    out: dict[str, float] = {}
    for m in proto.metrics:
        out.update(_one(m, (t, p), ct_int, masks, lpips))
    return {k: (float(v) if math.isfinite(v) else v) for k, v in out.items()}
