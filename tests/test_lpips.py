"""LPIPS in Keras against a NumPy reimplementation of the same network (random backbones)."""

from __future__ import annotations

import numpy as np
import pytest
from keras_contract import check_model, check_registration

from xprospect.errors import ConfigError
from xprospect.lpips import LPIPS, LPIPS_LAYERS, backbone, lpips_heads, volume_lpips

SHIFT = np.array([-0.030, -0.088, -0.188])
SCALE = np.array([0.458, 0.448, 0.450])


def _conv(x, kernel, bias, stride=1, pad=0):
    """Cross-correlation (N, H, W, C) with an HWIO kernel, by explicit windows."""
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    kh, kw = kernel.shape[:2]
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))
    win = win[:, ::stride, ::stride]  # (N, H', W', C, kh, kw)
    return np.maximum(np.einsum("nhwcij,ijco->nhwo", win, kernel) + bias, 0.0)


def _pool(x, size, stride):
    win = np.lib.stride_tricks.sliding_window_view(x, (size, size), axis=(1, 2))
    return win[:, ::stride, ::stride].max(axis=(-1, -2))


def _features_np(net, weights, x):
    """torchvision's VGG16 / AlexNet feature taps, written out layer by layer."""
    w = iter(zip(weights[::2], weights[1::2], strict=True))
    taps = []
    if net == "vgg":
        for block, n_conv in enumerate((2, 2, 3, 3, 3)):
            if block:
                x = _pool(x, 2, 2)
            for _ in range(n_conv):
                x = _conv(x, *next(w), pad=1)
            taps.append(x)
        return taps
    x = _conv(x, *next(w), stride=4, pad=2)
    taps.append(x)
    x = _conv(_pool(x, 3, 2), *next(w), pad=2)
    taps.append(x)
    x = _conv(_pool(x, 3, 2), *next(w), pad=1)
    taps.append(x)
    x = _conv(x, *next(w), pad=1)
    taps.append(x)
    taps.append(_conv(x, *next(w), pad=1))
    return taps


def _lpips_np(net, weights, x0, x1):
    heads = lpips_heads(net)
    prep = [((2 * np.repeat(x, 3, -1) - 1) - SHIFT) / SCALE for x in (x0, x1)]
    f0, f1 = (_features_np(net, weights, p.astype(np.float64)) for p in prep)
    total = np.zeros(len(x0))
    for a, b, h in zip(f0, f1, heads, strict=True):
        a = a / (np.sqrt((a**2).sum(-1, keepdims=True)) + 1e-10)
        b = b / (np.sqrt((b**2).sum(-1, keepdims=True)) + 1e-10)
        total += ((a - b) ** 2 * h).sum(-1).mean(axis=(1, 2))
    return total


def test_heads_are_the_shipped_lpips_heads():
    for net, channels in LPIPS_LAYERS.items():
        heads = lpips_heads(net)
        assert [h.size for h in heads] == list(channels)
        assert all(h.dtype == np.float32 and h.min() >= 0 and h.max() > 0 for h in heads)


@pytest.mark.parametrize(("net", "size"), [("vgg", 32), ("alex", 64)])
def test_lpips_equals_numpy_reimplementation(net, size):
    model = LPIPS(net=net, backbone_weights="random", seed=3)
    rng = np.random.default_rng(0)
    x0 = rng.random((2, size, size, 1)).astype(np.float32)
    x1 = np.clip(x0 + rng.normal(0, 0.2, x0.shape), 0, 1).astype(np.float32)
    got = np.asarray(model([x0, x1]))
    weights = model.features.get_weights()
    np.testing.assert_allclose(got, _lpips_np(net, weights, x0, x1), rtol=2e-4, atol=1e-7)
    np.testing.assert_allclose(np.asarray(model([x0, x0])), 0.0, atol=1e-7)
    # A volume: the mean over its axial slices of the per-slice values.
    vol0 = np.concatenate([x0[..., 0], x1[..., 0], x0[..., 0]])  # 6 slices: 2 pairs identical
    vol1 = np.concatenate([x1[..., 0], x1[..., 0], x1[..., 0]])
    expected = np.mean(_lpips_np(net, weights, vol0[..., None], vol1[..., None]))
    np.testing.assert_allclose(volume_lpips(model, vol0, vol1, batch_size=5), expected, rtol=2e-4)


def test_lpips_keras_contract(tmp_path):
    model = LPIPS(net="alex", backbone_weights="random", seed=1)
    check_registration(model, {"net": "alex", "backbone_weights": "random", "seed": 1})
    rng = np.random.default_rng(1)
    x = [rng.random((1, 64, 64, 1)).astype(np.float32) for _ in range(2)]
    check_model(model, x, tmp_path)


def test_missing_backbone_weights_is_one_line_config_error(tmp_path, monkeypatch):
    monkeypatch.delenv("XPROSPECT_LPIPS_VGG_WEIGHTS", raising=False)
    with pytest.raises(ConfigError, match="XPROSPECT_LPIPS_VGG_WEIGHTS") as info:
        LPIPS(net="vgg")
    assert "\n" not in str(info.value)
    missing = tmp_path / "vgg16_lpips.weights.h5"
    monkeypatch.setenv("XPROSPECT_LPIPS_ALEX_WEIGHTS", str(missing))
    with pytest.raises(ConfigError, match=r"vgg16_lpips\.weights\.h5") as info:
        LPIPS(net="alex")
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="net must be"):
        LPIPS(net="squeeze", backbone_weights="random")


@pytest.mark.filterwarnings("ignore:Skipping nested container")
def test_backbone_weights_load_from_a_file(tmp_path):
    source = backbone("alex", "random", seed=5)
    path = tmp_path / "alex.weights.h5"
    source.save_weights(path)
    model = LPIPS(net="alex", backbone_weights=str(path))
    for a, b in zip(model.features.get_weights(), source.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    bad = tmp_path / "vgg.weights.h5"
    backbone("vgg", "random").save_weights(bad)
    with pytest.raises(ConfigError, match="do not load") as info:
        LPIPS(net="alex", backbone_weights=str(bad))
    assert "\n" not in str(info.value)
