"""Tests of XctDiff's layers, diffusion process and networks (xprospect.models.xctdiff).

Networks are built at 16^3 (latent 8^3) with 2-8 channels so the module runs in about a minute
on two cores. Numerics are checked against NumPy references written independently (explicit
loops, the paper's formulas).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras_contract import check_layer, check_model, check_registration

from xprospect.errors import ConfigError
from xprospect.models.xctdiff import (
    NoiseSchedule,
    PixelShuffle3D,
    SinusoidalEmbedding,
    VectorQuantizer,
    XctDiff,
    XctDiffAutoencoder,
    XctDiffDiscriminator,
    XctDiffPriorEncoder,
    XctDiffUNet,
    codebook_usage,
    ddim_sample,
    ddim_timesteps,
    ddpm_sample,
    diffusion_loss_per_example,
    perplexity,
    q_sample,
    zscore,
)

SIZE = 16
LATENT = 8
CODE = 4
AE: dict[str, Any] = {"base_filters": 4, "channel_mult": (1, 2), "num_res_blocks": 1, "groups": 2}
PE: dict[str, Any] = {
    "base_filters_2d": 4,
    "base_filters": 4,
    "mlp_hidden": 8,
    "num_res_blocks": 1,
    "groups": 2,
}
UNET: dict[str, Any] = {
    "base_filters": 8,
    "channel_mult": (1, 2),
    "num_res_blocks": 1,
    "attention_levels": (1,),
    "num_heads": 2,
    "context_dim": 8,
    "groups": 2,
}


def _np(x: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x))


def _np_zscore(x: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps)


def _volume(batch: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((batch, SIZE, SIZE, SIZE, 1), dtype=np.float32)


def _phantom_latent(size: int = LATENT, seed: int = 3) -> np.ndarray:
    """A smooth latent 'phantom': an ellipsoid of code vectors on a background code."""
    rng = np.random.default_rng(seed)
    g = np.stack(np.meshgrid(*(np.linspace(-1, 1, size),) * 3, indexing="ij"), -1)
    inside = ((g / np.array([0.8, 0.6, 0.7])) ** 2).sum(-1) < 1
    codes = _np_zscore(rng.normal(size=(2, CODE)))
    return np.where(inside[..., None], codes[0], codes[1])[None].astype(np.float32)


# === Quantiser ===


@pytest.mark.parametrize("normalize", [True, False])
def test_quantizer_matches_numpy_nearest_neighbour(normalize: bool) -> None:
    keras.utils.set_random_seed(1)
    vq = VectorQuantizer(num_codes=16, code_dim=CODE, normalize=normalize)
    rng = np.random.default_rng(0)
    book = rng.normal(size=(16, CODE)).astype(np.float32)
    vq.codebook.assign(book)
    z = rng.normal(size=(2, 3, 3, 3, CODE)).astype(np.float32)
    quantized, idx = vq(z)
    zs = _np_zscore(z) if normalize else z
    bs = _np_zscore(book) if normalize else book
    expected = np.empty(z.shape[:-1], dtype=np.int64)
    for pos in np.ndindex(*z.shape[:-1]):
        expected[pos] = int(np.argmin([np.sum((zs[pos] - e) ** 2) for e in bs]))
    np.testing.assert_array_equal(_np(idx), expected)
    np.testing.assert_allclose(_np(quantized), bs[expected], atol=1e-5)


def test_homogeneous_codebook_loss_matches_formula() -> None:
    vq = VectorQuantizer(num_codes=8, code_dim=CODE, normalize=True, commitment=0.25)
    rng = np.random.default_rng(2)
    book = rng.normal(size=(8, CODE)).astype(np.float32) * 3 + 1
    vq.codebook.assign(book)
    z = (rng.normal(size=(2, 2, 2, 2, CODE)) * 5 - 2).astype(np.float32)
    _, idx = vq(z)
    loss = _np(vq.codebook_loss(z, idx))
    zq = book[_np(idx)]
    # ||N(sg[E(x)]) - N(z_q)||^2 + beta ||N(sg[z_q]) - N(E(x))||^2, each a mean per example.
    per = ((_np_zscore(z) - _np_zscore(zq)) ** 2).reshape(2, -1).mean(1)
    np.testing.assert_allclose(loss, per * 1.25, rtol=1e-5)
    # Without N: the plain VQ-VAE terms on the raw vectors.
    plain = VectorQuantizer(num_codes=8, code_dim=CODE, normalize=False)
    plain.codebook.assign(book)
    _, idx2 = plain(z)
    expected = ((z - book[_np(idx2)]) ** 2).reshape(2, -1).mean(1) * 2.0
    np.testing.assert_allclose(_np(plain.codebook_loss(z, idx2)), expected, rtol=1e-5)


def test_codebook_loss_gradients_go_to_their_sides() -> None:
    vq = VectorQuantizer(num_codes=8, code_dim=CODE, normalize=False, commitment=0.5)
    vq.build((None, CODE))
    z = tf.Variable(np.random.default_rng(4).normal(size=(1, 5, CODE)).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        _, idx = vq(z)
        loss = tf.reduce_sum(vq.codebook_loss(z, idx))
    e = vq.codebook.numpy()[_np(idx)]
    # d/dz of commitment * mean((sg[e] - z)^2) = -2 * 0.5 * (e - z) / n.
    n = 5 * CODE
    np.testing.assert_allclose(tape.gradient(loss, z).numpy(), -(e - z.numpy()) / n, rtol=1e-5)
    assert tape.gradient(loss, vq.codebook) is not None


@pytest.mark.parametrize("normalize", [False, True])
def test_straight_through_gradient_is_identity(normalize: bool) -> None:
    vq = VectorQuantizer(num_codes=16, code_dim=CODE, normalize=normalize)
    vq.build((None, CODE))
    rng = np.random.default_rng(5)
    z = tf.Variable(rng.normal(size=(2, 3, 3, CODE)).astype(np.float32))
    w = rng.normal(size=(2, 3, 3, CODE)).astype(np.float32)
    with tf.GradientTape(persistent=True) as tape:
        quantized, _ = vq(z)
        out = tf.reduce_sum(quantized * w)
        ref = tf.reduce_sum((zscore(z) if normalize else z) * w)
    # The quantised output passes the gradient of what it replaces, unchanged.
    np.testing.assert_allclose(
        tape.gradient(out, z).numpy(), tape.gradient(ref, z).numpy(), rtol=1e-5, atol=1e-6
    )
    if not normalize:
        np.testing.assert_allclose(tape.gradient(out, z).numpy(), w, rtol=1e-6)


def test_usage_and_perplexity_match_numpy() -> None:
    idx = np.array([[0, 0, 1, 3], [3, 3, 3, 7]])
    counts = np.bincount(idx.ravel(), minlength=10)
    p = counts / counts.sum()
    nz = p[p > 0]
    np.testing.assert_allclose(float(_np(codebook_usage(idx, 10))), (counts > 0).mean())
    np.testing.assert_allclose(
        float(_np(perplexity(idx, 10))), math.exp(-(nz * np.log(nz)).sum()), rtol=1e-5
    )


def test_quantizer_rejects_wrong_channels() -> None:
    vq = VectorQuantizer(num_codes=4, code_dim=CODE)
    with pytest.raises(ConfigError, match="code_dim"):
        vq(np.zeros((1, 2, 3), np.float32))
    with pytest.raises(ConfigError, match="positive integer"):
        VectorQuantizer(num_codes=0)


# === Small layers ===


def test_pixel_shuffle_matches_loop() -> None:
    s, c = 2, 3
    x = np.random.default_rng(6).normal(size=(2, 2, 3, 2, c * s**3)).astype(np.float32)
    out = _np(PixelShuffle3D(s)(x))
    ref = np.empty((2, 4, 6, 4, c), np.float32)
    for b, d, h, w, a, bb, cc, k in np.ndindex(2, 2, 3, 2, s, s, s, c):
        ref[b, d * s + a, h * s + bb, w * s + cc, k] = x[
            b, d, h, w, ((a * s + bb) * s + cc) * c + k
        ]
    np.testing.assert_allclose(out, ref)


def test_sinusoidal_embedding_matches_formula() -> None:
    t = np.array([0.0, 3.0, 999.0], np.float32)
    out = _np(SinusoidalEmbedding(8, max_period=100.0)(t))
    freqs = 100.0 ** (-np.arange(4) / 4)
    np.testing.assert_allclose(out[:, :4], np.sin(t[:, None] * freqs), atol=1e-4)
    np.testing.assert_allclose(out[:, 4:], np.cos(t[:, None] * freqs), atol=1e-4)


# === Diffusion ===


def test_schedule_and_forward_noising_match_closed_form() -> None:
    sched = NoiseSchedule(100, 0.0015, 0.0125)
    betas = (np.sqrt(0.0015) + np.arange(100) / 99 * (np.sqrt(0.0125) - np.sqrt(0.0015))) ** 2
    np.testing.assert_allclose(sched.betas, betas, rtol=1e-12)
    ab = np.array([np.prod(1 - betas[: i + 1]) for i in range(100)])
    rng = np.random.default_rng(7)
    x0 = rng.normal(size=(3, 4, 4, 4, 2)).astype(np.float32)
    noise = rng.normal(size=x0.shape).astype(np.float32)
    t = np.array([0, 50, 99])
    out = _np(q_sample(sched, x0, t, noise))
    ref = np.sqrt(ab[t])[:, None, None, None, None] * x0
    ref = ref + np.sqrt(1 - ab[t])[:, None, None, None, None] * noise
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    # The loss of Eq. 7 with a predictor that knows the noise is 0, with a zero predictor E[n^2].
    loss = diffusion_loss_per_example(lambda x, tt: noise, sched, x0, t, noise)
    np.testing.assert_allclose(_np(loss), 0.0, atol=1e-10)
    loss0 = diffusion_loss_per_example(lambda x, tt: x * 0, sched, x0, t, noise)
    np.testing.assert_allclose(_np(loss0), (noise**2).reshape(3, -1).mean(1), rtol=1e-5)


@pytest.mark.parametrize("steps", [1, 7])
def test_ddim_with_the_true_noise_reproduces_x0(steps: int) -> None:
    sched = NoiseSchedule(50)
    rng = np.random.default_rng(8)
    x0 = rng.normal(size=(2, 3, 3, 3, 2)).astype(np.float32)
    eps = rng.normal(size=x0.shape).astype(np.float32)
    ab_t = sched.alphas_cumprod[-1]
    x_t = np.sqrt(ab_t) * x0 + np.sqrt(1 - ab_t) * eps
    out = ddim_sample(lambda x, t: eps, sched, x0.shape, steps=steps, x_t=x_t)
    np.testing.assert_allclose(_np(out), x0, atol=1e-4)
    assert ddim_timesteps(sched, 7)[0] == 49 and ddim_timesteps(sched, 7)[-1] == 0


def test_samplers_are_seeded() -> None:
    sched = NoiseSchedule(10)
    shape = (1, 2, 2, 2, 2)

    def eps_fn(x: Any, t: Any) -> Any:
        return 0.1 * x

    a = _np(ddpm_sample(eps_fn, sched, shape, seed=3))
    b = _np(ddpm_sample(eps_fn, sched, shape, seed=3))
    c = _np(ddpm_sample(eps_fn, sched, shape, seed=4))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3
    d = _np(ddim_sample(eps_fn, sched, shape, steps=5, eta=1.0, seed=3))
    e = _np(ddim_sample(eps_fn, sched, shape, steps=5, eta=1.0, seed=3))
    np.testing.assert_array_equal(d, e)
    with pytest.raises(ConfigError, match="sampling steps"):
        ddim_sample(eps_fn, sched, shape, steps=11)
    with pytest.raises(ConfigError, match="beta"):
        NoiseSchedule(10, 0.5, 0.1)


def test_overfitting_one_phantom_latent_cuts_the_diffusion_loss_tenfold() -> None:
    keras.utils.set_random_seed(0)
    sched = NoiseSchedule(100)
    # A 4^3 latent keeps the few hundred steps to seconds.
    unet = XctDiffUNet(4, CODE, **{**UNET, "base_filters": 16, "context_dim": 8})
    x0 = _phantom_latent(4)
    prior = x0  # the prior of a perfect encoder
    rng = np.random.default_rng(9)
    t_eval = np.arange(0, 100, 4)
    noise_eval = rng.normal(size=(len(t_eval), *x0.shape[1:])).astype(np.float32)
    x_eval = np.repeat(x0, len(t_eval), 0)
    p_eval = np.repeat(prior, len(t_eval), 0)

    def loss_at(x: Any, p: Any, t: Any, n: Any) -> Any:
        p = tf.convert_to_tensor(p)
        fn = lambda xt, tt: unet({"latent": xt, "timestep": tt, "prior": p}, training=True)  # noqa: E731
        return tf.reduce_mean(diffusion_loss_per_example(fn, sched, x, t, n))

    before = float(loss_at(x_eval, p_eval, t_eval, noise_eval))
    opt = keras.optimizers.Adam(3e-3)
    batch = 8

    @tf.function
    def step(t: Any, n: Any) -> Any:
        with tf.GradientTape() as tape:
            loss = loss_at(np.repeat(x0, batch, 0), np.repeat(prior, batch, 0), t, n)
        opt.apply(tape.gradient(loss, unet.trainable_variables), unet.trainable_variables)
        return loss

    for _ in range(300):
        step(rng.integers(0, 100, batch), rng.normal(size=(batch, *x0.shape[1:])).astype("f4"))
    after = float(loss_at(x_eval, p_eval, t_eval, noise_eval))
    assert before > 0.5
    assert after < before / 10, (before, after)


# === Networks and the Keras contract ===


def test_layers_keras_contract(tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    for sub in ("vq", "emb", "ps"):
        (tmp_path / sub).mkdir()
    z = np.random.default_rng(0).normal(size=(2, 3, 3, 3, CODE)).astype(np.float32)
    vq_args = {"num_codes": 16, "code_dim": CODE, "normalize": True, "commitment": 0.5}
    check_layer(VectorQuantizer(**vq_args), vq_args, z, tmp_path / "vq")
    check_layer(
        SinusoidalEmbedding(6, max_period=50.0),
        {"dim": 6, "max_period": 50.0},
        np.array([1.0, 7.0], np.float32),
        tmp_path / "emb",
    )
    check_layer(
        PixelShuffle3D(2), {"scale": 2}, np.ones((1, 2, 2, 2, 16), np.float32), tmp_path / "ps"
    )


def test_autoencoder_contract_and_parts(tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    args = {**AE, "size": SIZE, "code_dim": CODE, "num_codes": 32}
    ae = XctDiffAutoencoder(**args)
    check_registration(ae, args)
    x = _volume()
    out = _np(ae(x))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    z = ae.encoder(x)
    assert tuple(z.shape) == (2, LATENT, LATENT, LATENT, CODE) and ae.latent_size == LATENT
    q, _ = ae.quantizer(z)
    np.testing.assert_allclose(_np(ae.decoder(q)), out, atol=1e-5)
    check_model(ae, x, tmp_path)
    plain = XctDiffAutoencoder(**{**args, "super_resolution": False, "normalize_codes": False})
    assert plain(x).shape == x.shape
    with pytest.raises(ConfigError, match="power of two"):
        XctDiffAutoencoder(**{**args, "size": 12})


@pytest.mark.parametrize("rank", [3, 2])
def test_discriminators_contract(rank: int, tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    args = {"size": SIZE, "rank": rank, "base_filters": 4, "num_layers": 2, "groups": 2}
    d = XctDiffDiscriminator(**args)
    check_registration(d, args)
    x = _volume()[:, 0] if rank == 2 else _volume()
    assert d(x).shape == (2,) + (SIZE // 4,) * rank + (1,)
    check_model(d, x, tmp_path)


def test_prior_encoder_contract_and_frozen_codebook(tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    args = {**PE, "size": SIZE, "latent_size": LATENT, "code_dim": CODE, "num_codes": 32}
    pe = XctDiffPriorEncoder(**args)
    check_registration(pe, args)
    assert not pe.quantizer.trainable
    assert all("quantizer" not in v.path for v in pe.trainable_variables)
    book = np.random.default_rng(1).normal(size=(32, CODE)).astype(np.float32)
    pe.set_codebook(book)
    x = {"frontal": _volume()[..., 0, :]}
    y = _np(pe(x))
    # y is made of normalised codebook entries: each vector equals one row of N(book).
    nb = _np_zscore(book)
    dist = ((y.reshape(-1, 1, CODE) - nb[None]) ** 2).sum(-1).min(1)
    np.testing.assert_allclose(dist, 0.0, atol=1e-8)
    check_model(pe, x, tmp_path)
    with pytest.raises(ConfigError, match="does not fit"):
        pe.set_codebook(book[:3])
    with pytest.raises(ConfigError, match="one frontal"):
        XctDiffPriorEncoder(**{**args, "views": ("frontal", "lateral")})


def test_prior_encoder_mlp_lifts_along_the_beam() -> None:
    """The shape mapping (Eq. 5) turns the 2D feature at (row i, column k) into the column of
    voxels (i, :, k) along the frontal beam (canonical axis 1), and nothing else."""
    keras.utils.set_random_seed(0)
    pe = XctDiffPriorEncoder(
        SIZE, LATENT, CODE, 32, base_filters_2d=4, base_filters=4, mlp_hidden=8, num_res_blocks=1
    )
    names = ("mlp_norm", "mlp_hidden", "mlp_depth", "to_columns", "to_canonical")

    def lift(f: np.ndarray) -> np.ndarray:
        h: Any = f
        for name in names:
            h = pe.features.get_layer(name)(h)
        return _np(h)

    rng = np.random.default_rng(0)
    a = rng.normal(size=(1, LATENT, LATENT, 4)).astype(np.float32)
    b = a.copy()
    b[0, 5, 3] += 1.0
    diff = np.abs(lift(b) - lift(a)).sum(axis=(0, 4))
    assert diff.shape == (LATENT, LATENT, LATENT)
    assert np.all(diff[5, :, 3] > 0)
    diff[5, :, 3] = 0
    np.testing.assert_array_equal(diff, 0.0)


@pytest.mark.parametrize("conditioning", ["cross_attention", "concat", "both"])
def test_unet_contract(conditioning: str, tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    args = {**UNET, "latent_size": LATENT, "code_dim": CODE, "conditioning": conditioning}
    unet = XctDiffUNet(**args)
    check_registration(unet, args)
    rng = np.random.default_rng(0)
    x = {
        "latent": rng.normal(size=(2, LATENT, LATENT, LATENT, CODE)).astype(np.float32),
        "timestep": np.array([3.0, 40.0], np.float32),
        "prior": rng.normal(size=(2, LATENT, LATENT, LATENT, CODE)).astype(np.float32),
    }
    # Fresh, the output convolution is zero: the first prediction is 0.
    np.testing.assert_array_equal(_np(unet(x)), 0.0)
    out = unet.get_layer("out_conv")
    out.kernel.assign(rng.normal(size=out.kernel.shape).astype(np.float32) * 0.1)
    assert all(k == (1, 3, 3) for k in _kernels(unet))
    if conditioning == "cross_attention":  # the round trips once (each takes ~10 s)
        check_model(unet, x, tmp_path)
    else:
        assert unet(x).shape == x["latent"].shape


def _kernels(model: keras.Model) -> list[tuple[int, ...]]:
    return [
        tuple(layer.kernel_size)
        for layer in model.layers
        if isinstance(layer, keras.layers.Conv3D) and tuple(layer.kernel_size) != (1, 1, 1)
    ]


def _pipeline(**kw: Any) -> XctDiff:
    return XctDiff(
        SIZE,
        code_dim=CODE,
        num_codes=32,
        autoencoder_args=AE,
        prior_encoder_args=PE,
        unet_args=UNET,
        timesteps=20,
        sampling_steps=1,  # one step keeps the traced SavedModel small
        **kw,
    )


def test_pipeline_contract_and_seeded_sampling(tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    model = _pipeline()
    check_registration(model, {"size": SIZE, "sampling_steps": 1, "unet_args": UNET})
    unet_out = model.unet.get_layer("out_conv")
    unet_out.kernel.assign(np.full(unet_out.kernel.shape, 0.05, np.float32))
    x = {"frontal": _volume(1)[..., 0, :]}
    a, b = _np(model(x)), _np(model(x))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (1, SIZE, SIZE, SIZE, 1)
    c = _np(model.generate(x, steps=3, seed=5))
    assert np.abs(a - c).max() > 0
    check_model(model, x, tmp_path)
    with pytest.raises(ConfigError, match="sampler"):
        _pipeline(sampler="plms")
