"""Per-paper evaluation protocols, each against a hand-computed example by an independent route."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.ndimage as ndi
from scipy.signal import fftconvolve
from skimage.metrics import structural_similarity

from xprospect.errors import ConfigError, InvalidValuesError
from xprospect.protocols import (
    PROTOCOLS,
    MetricDef,
    evaluate_protocol,
    get_protocol,
    protocol_names,
    rewindow,
)

X2CT_WINDOW = (-1024.0, 1476.0)


def _hu_pair(shape=(16, 16, 16), seed=0):
    """Integer HU with air, tissue and bone, and a noisy prediction of them."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(-1100, 1600, size=shape).astype(np.float64)
    truth[:, :4] = -1024.0  # a band of air, identical in both
    pred = np.round(truth + rng.normal(0, 150, size=shape))
    pred[:, :4] = -1024.0
    return truth, pred


def _norm(hu, window):
    lo, hi = window
    return np.clip((hu - lo) / (hi - lo), 0.0, 1.0)


def _gauss_taps():
    x = np.arange(11) - 5.0
    g = np.exp(-(x**2) / (2 * 1.5**2))
    return g / g.sum()


def _ssim_zero_padded(t, p, kernel):
    """pytorch-ssim's definition by direct FFT convolution with a zero-padded full kernel."""

    def filt(x):
        return fftconvolve(x, kernel, mode="same")

    c1, c2 = 0.01**2, 0.03**2
    mu_t, mu_p = filt(t), filt(p)
    vt = filt(t * t) - mu_t**2
    vp = filt(p * p) - mu_p**2
    cov = filt(t * p) - mu_t * mu_p
    s = ((2 * mu_t * mu_p + c1) * (2 * cov + c2)) / ((mu_t**2 + mu_p**2 + c1) * (vt + vp + c2))
    return float(s.mean())


def test_registry_has_every_paper_and_rejects_unknown_names():
    assert protocol_names() == ("xprospect", "x2ct", "duolift", "cvaa", "s-xr2ct", "xctdiff")
    assert get_protocol("X2CT") is PROTOCOLS["x2ct"]
    with pytest.raises(ConfigError, match="unknown protocol 'nope'"):
        get_protocol("nope")
    with pytest.raises(ConfigError, match="kind"):
        MetricDef("x", "X", "psnr_4d")  # type: ignore[arg-type]
    with pytest.raises(dataclasses.FrozenInstanceError):
        PROTOCOLS["x2ct"].hu_window = (0.0, 1.0)  # type: ignore[misc]


def test_rewindow_maps_through_hu_and_clips():
    values = np.array([0.0, 0.5, 1.0])  # -1000, 0, 1000 HU in the xprospect window
    out = rewindow(values, (-1000.0, 1000.0), X2CT_WINDOW)
    np.testing.assert_allclose(out, [24 / 2500, 1024 / 2500, 2024 / 2500])
    np.testing.assert_allclose(rewindow(values, (-1000.0, 1000.0), (-500.0, 500.0)), [0, 0.5, 1])


def test_x2ct_protocol_equals_x2ct_own_formulas():
    hu_t, hu_p = _hu_pair()
    truth, pred = _norm(hu_t, X2CT_WINDOW), _norm(hu_p, X2CT_WINDOW)
    out = evaluate_protocol(truth, pred, "x2ct", hu_window="x2ct")
    # X2CT-GAN's test.py: [0, 2500] CT, int32, PIXEL_MAX 4095, 100 dB for MSE 0.
    ct_t = np.clip(hu_t + 1024, 0, 2500).astype(np.int32).astype(np.float64)
    ct_p = np.clip(hu_p + 1024, 0, 2500).astype(np.int32).astype(np.float64)
    psnr_3d = 20 * np.log10(4095 / np.sqrt(np.mean((ct_t - ct_p) ** 2)))
    np.testing.assert_allclose(out["psnr_3d"], psnr_3d, rtol=1e-12)
    per_axis = []
    for axis in range(3):
        se = np.moveaxis((ct_t - ct_p) ** 2, axis, 0).reshape(16, -1).mean(1)
        psnr = np.where(se == 0, 100.0, 20 * np.log10(4095 / np.sqrt(np.maximum(se, 1e-10))))
        per_axis.append(psnr.mean())
    np.testing.assert_allclose(out["psnr_2d"], np.mean(per_axis), rtol=1e-12)
    np.testing.assert_allclose(out["psnr_2d_coronal"], per_axis[1], rtol=1e-12)
    assert per_axis[1] > per_axis[0]  # the four air slices score 100 dB each
    u_t, u_p = ct_t / 2500, ct_p / 2500
    np.testing.assert_allclose(out["mae"], np.abs(u_t - u_p).mean(), rtol=1e-12)
    np.testing.assert_allclose(out["mse"], ((u_t - u_p) ** 2).mean(), rtol=1e-12)
    cos = (u_t * u_p).sum() / np.linalg.norm(u_t) / np.linalg.norm(u_p)
    np.testing.assert_allclose(out["cosine_similarity"], cos, rtol=1e-12)
    # compare_ssim(multichannel=True) with the slices as channels, for each axis.
    ssim = [
        structural_similarity(
            np.moveaxis(u_t, a, -1), np.moveaxis(u_p, a, -1), channel_axis=-1, data_range=1.0
        )
        for a in range(3)
    ]
    np.testing.assert_allclose(out["ssim_2d"], np.mean(ssim), rtol=1e-9)
    assert set(out) == {
        "mae", "mse", "cosine_similarity", "psnr_3d", "ssim_2d",
        "psnr_2d", "psnr_2d_axial", "psnr_2d_coronal", "psnr_2d_sagittal",
        "ssim_2d_axial", "ssim_2d_coronal", "ssim_2d_sagittal",
    }  # fmt: skip


def test_x2ct_protocol_psnr_is_429_db_above_the_true_range_psnr():
    hu_t, hu_p = _hu_pair(seed=1)
    out = evaluate_protocol(
        _norm(hu_t, X2CT_WINDOW), _norm(hu_p, X2CT_WINDOW), "x2ct", hu_window="x2ct"
    )
    duo = evaluate_protocol(
        _norm(hu_t, X2CT_WINDOW),
        _norm(hu_p, X2CT_WINDOW),
        "duolift",
        hu_window="x2ct",
        lpips={"vgg": lambda t, p, a: 0.0},
    )
    np.testing.assert_allclose(
        out["psnr_3d"] - duo["psnr_3d"], 20 * np.log10(4095 / 2500), atol=1e-9
    )


def test_duolift_protocol_uses_zero_padded_gaussian_ssim_and_range_one_psnr():
    hu_t, hu_p = _hu_pair(seed=2)
    truth, pred = _norm(hu_t, X2CT_WINDOW), _norm(hu_p, X2CT_WINDOW)
    seen = []

    def fake_lpips(t, p, axes):
        seen.append((t.copy(), tuple(axes)))
        return 0.25

    out = evaluate_protocol(truth, pred, "duolift", hu_window="x2ct", lpips={"vgg": fake_lpips})
    g = _gauss_taps()
    k3 = g[:, None, None] * g[None, :, None] * g[None, None, :]
    np.testing.assert_allclose(out["ssim_3d"], _ssim_zero_padded(truth, pred, k3), rtol=1e-9)
    k2 = (g[:, None] * g[None, :])[None]  # in-plane only: each axial slice on its own
    np.testing.assert_allclose(out["ssim_2d"], _ssim_zero_padded(truth, pred, k2), rtol=1e-9)
    mse_3d = np.mean((truth - pred) ** 2)
    np.testing.assert_allclose(out["psnr_3d"], -10 * np.log10(mse_3d), rtol=1e-12)
    se = ((truth - pred) ** 2).reshape(16, -1).mean(1)
    np.testing.assert_allclose(out["psnr_2d"], np.mean(-10 * np.log10(se)), rtol=1e-12)
    assert out["lpips_vgg"] == 0.25 and seen[0][1] == (0,)
    np.testing.assert_allclose(seen[0][0], truth)
    # A 16^3 random pair has no lungs: both masks empty agree perfectly.
    assert out["lung_dice"] == 1.0 and out["vessel_dice"] == 1.0


def test_cvaa_protocol_rewindows_to_its_wide_window():
    # One voxel of bone at 3000 HU seen through CVAA-GAN's [-1000, 4096] window.
    hu_t = np.full((12, 12, 12), -1000.0)
    hu_p = hu_t.copy()
    hu_t[6, 6, 6] = 3000.0
    hu_p[6, 6, 6] = 2000.0
    window = (-1000.0, 4096.0)
    out = evaluate_protocol(_norm(hu_t, window), _norm(hu_p, window), "cvaa", hu_window=window)
    err = 1000.0 / 5096.0
    np.testing.assert_allclose(out["mae"], err / 12**3, rtol=1e-12)
    np.testing.assert_allclose(out["mse"], err**2 / 12**3, rtol=1e-12)
    np.testing.assert_allclose(out["psnr_3d"], 10 * np.log10(12**3 / err**2), rtol=1e-12)
    np.testing.assert_allclose(out["cosine_similarity"], 1.0, rtol=1e-12)  # one voxel each
    # Data in the xprospect window has lost the bone above 1000 HU: both read 1000 HU.
    lo, hi = -1000.0, 1000.0
    clipped = evaluate_protocol(_norm(hu_t, (lo, hi)), _norm(hu_p, (lo, hi)), "cvaa")
    assert clipped["mse"] == 0.0 and clipped["psnr_3d"] == 100.0


def test_xprospect_protocol_is_the_papers_test_mse():
    rng = np.random.default_rng(3)
    truth, pred = rng.random((8, 8, 8)), rng.random((8, 8, 8))
    out = evaluate_protocol(truth, pred, "xprospect")
    assert set(out) == {"mse", "mae"}
    np.testing.assert_allclose(out["mse"], np.mean((truth - pred) ** 2), rtol=1e-12)
    np.testing.assert_allclose(out["mae"], np.mean(np.abs(truth - pred)), rtol=1e-12)


@pytest.mark.parametrize(("name", "net"), [("s-xr2ct", "alex"), ("xctdiff", "vgg")])
def test_single_view_papers_use_x2ct_definitions_and_their_lpips(name, net):
    hu_t, hu_p = _hu_pair(seed=4)
    truth, pred = _norm(hu_t, X2CT_WINDOW), _norm(hu_p, X2CT_WINDOW)
    x2ct = evaluate_protocol(truth, pred, "x2ct", hu_window="x2ct")
    out = evaluate_protocol(
        truth, pred, name, hu_window="x2ct", lpips={net: lambda t, p, a: float(np.abs(t - p).max())}
    )
    for key in ("psnr_3d", "ssim_2d"):
        assert out[key] == x2ct[key]
    np.testing.assert_allclose(out[f"lpips_{net}"], np.abs(truth - pred).max())
    assert get_protocol(name).needs_lpips == (net,)
    with pytest.raises(ConfigError, match=f"LPIPS {net} scorer"):
        evaluate_protocol(truth, pred, name, hu_window="x2ct")
    assert f"lpips_{net}" not in evaluate_protocol(
        truth, pred, get_protocol(name).without_lpips(), hu_window="x2ct"
    )


def test_protocol_rejects_hu_and_nan():
    hu_t, _ = _hu_pair()
    with pytest.raises(InvalidValuesError, match="window-normalised"):
        evaluate_protocol(hu_t, hu_t, "x2ct")
    bad = np.full((8, 8, 8), np.nan)
    with pytest.raises(InvalidValuesError, match="NaN"):
        evaluate_protocol(bad, bad, "xprospect")


def test_ssim_zeros_padding_matches_direct_convolution():
    from xprospect.metrics import ssim_2d, ssim_3d

    rng = np.random.default_rng(5)
    t = ndi.gaussian_filter(rng.random((14, 15, 16)), 1.0)
    p = np.clip(t + rng.normal(0, 0.05, t.shape), 0, 1)
    g = _gauss_taps()
    k3 = g[:, None, None] * g[None, :, None] * g[None, None, :]
    np.testing.assert_allclose(
        ssim_3d(t, p, padding="zeros"), _ssim_zero_padded(t, p, k3), rtol=1e-9
    )
    k2 = (g[:, None] * g[None, :])[:, None, :]  # slices normal to axis 1
    np.testing.assert_allclose(
        ssim_2d(t, p, 1, padding="zeros"), _ssim_zero_padded(t, p, k2), rtol=1e-9
    )
    with pytest.raises(ConfigError, match="padding"):
        ssim_3d(t, p, padding="wrap")


def test_x2ct_protocol_agrees_with_the_x2ct_compatible_mode():
    from xprospect.metrics import evaluate_case

    hu_t, hu_p = _hu_pair(shape=(16, 18, 20), seed=6)
    truth, pred = _norm(hu_t, X2CT_WINDOW), _norm(hu_p, X2CT_WINDOW)
    out = evaluate_protocol(truth, pred, "x2ct", hu_window="x2ct")
    mode = evaluate_case(truth, pred, hu_window="x2ct", mode="x2ct_compatible")
    for key in ("mae", "mse", "cosine_similarity", "psnr_3d", "psnr_2d", "ssim_2d"):
        np.testing.assert_allclose(out[key], mode[key], rtol=1e-12)


def test_cli_offers_every_registered_protocol():
    import argparse

    from xprospect.cli.evaluate import add_parser

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["evaluate", "--model", "m", "--data", "d", "--protocol", "cvaa"])
    assert args.protocol == "cvaa" and not args.skip_lpips
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    choices = next(a.choices for a in sub.choices["evaluate"]._actions if a.dest == "protocol")
    assert tuple(choices) == protocol_names()
