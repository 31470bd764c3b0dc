"""Each GAN-family preset against what its paper (or, for X2CT, its official code) specifies.

The expected numbers are written here from the texts in ``../shared/papers/`` (quoted in the
comments), not read back from the code. Parameter counts do not depend on the size for these
networks (no layer's weights scale with it), so the DuoLift network is counted at 32^3 (seconds)
and its 128^3 shapes follow from the same strides; X2CT is built at 128^3 (about 6 s).
"""

from __future__ import annotations

import keras
import pytest

from xprospect.config import load_config
from xprospect.config.presets import preset_training_defaults
from xprospect.models import PRESETS, build_discriminator, build_model
from xprospect.models.discriminators import patch_map_size
from xprospect.preprocessing import resolve_hu_window


def _block_params(c_in: int, c_out: int, k: int, rank: int, projection: bool) -> int:
    """A ResNet basic block: two k^rank convolutions without bias, each normalised (2 * c_out
    affine parameters), plus a 1x1 projection (and its norm) when the channels change."""
    kk = k**rank
    n = kk * c_in * c_out + kk * c_out * c_out + 2 * (2 * c_out)
    if projection:
        n += c_in * c_out + 2 * c_out
    return n


# === X2CT-GAN / X2CT-CNN+B / X2CT-CNN+S (the official kylekma/X2CT configuration) ===


@pytest.fixture(scope="module")
def x2ct_128() -> keras.Model:
    with keras.device("cpu"):
        return build_model("X2CT-GAN", size=128)


def test_x2ct_generator_size_is_the_official_one(x2ct_128: keras.Model) -> None:
    # The official multiview2500 generator has 61.74 M parameters. Ours differs by 0.14 M (0.2 %):
    # affine instance norms where the official InstanceNorm3d has none but its convolutions keep
    # biases, and the per-view full-resolution convolutions that fed only unused per-view heads.
    official = 61.74e6
    assert abs(x2ct_128.count_params() - official) / official < 0.003
    # activation_type: 'relu' (both official experiment files).
    assert x2ct_128.get_layer("volume").activation is keras.activations.relu
    # Connection A: the 4^3 x 256 grid ("decoder_begin_size = input_shape // 2**5", channels 256).
    assert tuple(x2ct_128.get_layer("frontal_connA_grid").output.shape[1:]) == (4, 4, 4, 256)


def test_x2ct_discriminator_is_the_official_basic3d() -> None:
    # basic3d with ndf 64, n_layers 3 and padw = ceil((4 - 1) / 2) = 2: 11.06 M parameters with
    # two conditioning views (input_nc_D 1 + 2 X-ray channels), a 19^3 map at 128^3.
    with keras.device("cpu"):
        disc = build_discriminator("X2CT-GAN", size=128)
    assert round(disc.count_params() / 1e6, 2) == 11.06
    assert tuple(disc.output.shape[1:]) == (19, 19, 19, 1)
    assert patch_map_size(128, (2, 2, 2, 1), 4, 2)[-1] == 19


def test_x2ct_cnn_s_is_the_single_view_generator_without_discriminator() -> None:
    # singleview2500: which_model_netG 'singleview_network_denseUNet_transposed', one view.
    assert PRESETS["X2CT-CNN+S"]["views"] == (("frontal",),)
    assert build_discriminator("X2CT-CNN+S", size=32) is None
    model = build_model("X2CT-CNN+S", size=32, growth_rate=2, stem_filters=4, grid_filters=4)
    assert list(model.input) == ["frontal"]
    assert not any(layer.name.startswith(("lateral", "fusion")) for layer in model.layers)
    # The CNN baselines train with the reconstruction loss only (idt_lambda 10, mse).
    assert preset_training_defaults("X2CT-CNN+S")["loss_weights"] == {"mse": 10.0}


def test_x2ct_training_defaults_are_the_official_ones() -> None:
    # lr 0.0002, beta1 0.5, beta2 0.99, niter 50 + niter_decay 50 (linear decay from half way),
    # idt_lambda 10 (mse), map_projection_lambda 10, gan_lambda 0.1 on G and on D (real + fake).
    t = preset_training_defaults("X2CT-GAN")
    assert t["loss_weights"] == {"mse": 10.0, "projection": 10.0, "adversarial": 0.1}
    assert (t["learning_rate"], t["beta_1"], t["beta_2"]) == (2e-4, 0.5, 0.99)
    assert t["schedule"] == {"name": "linear", "start_fraction": 0.5}
    assert t["adversarial"] == "lsgan" and t["d_loss_weight"] == 0.1
    for name in ("x2ct-gan", "x2ct-cnn-b"):
        cfg = load_config(name)
        assert cfg.training.epochs == 100 and cfg.training.steps is None
        # CT_MIN_MAX [0, 2500] on HU + 1024.
        assert resolve_hu_window(cfg.data.hu_window) == (-1024.0, 1476.0)


# === DuoLift-GAN / DuoLift-CNN (Zhang and Ying) ===


@pytest.fixture(scope="module")
def duolift() -> keras.Model:
    with keras.device("cpu"):
        return build_model("DuoLift-GAN", size=32)


def test_duolift_encoder_is_resnet34(duolift: keras.Model) -> None:
    # "a ResNet-34 (He et al. 2016) 2D feature encoder": torchvision's ResNet-34 has 21,797,672
    # parameters; without its 1000-class fc (512 * 1000 + 1000) and with a 1-channel stem
    # (7 * 7 * 2 * 64 fewer weights) that is 21,278,400 per view.
    resnet34 = 21_797_672 - (512 * 1000 + 1000) - 7 * 7 * 2 * 64
    for view in ("frontal", "lateral"):
        encoder = sum(
            layer.count_params() for layer in duolift.layers if layer.name.startswith(f"{view}_")
        )
        assert encoder == resnet34
    # "F^2D in R^{512 x H/4 x W/4}".
    assert tuple(duolift.get_layer("frontal_enc3_2").output.shape[1:]) == (32 // 4, 32 // 4, 512)


def test_duolift_lift_and_up_path_have_the_papers_shapes(duolift: keras.Model) -> None:
    s = 32
    # "F_B in R^{1024 x D'/4 x H'/4 x W'/4}".
    assert tuple(duolift.get_layer("feature_lift").output.shape[1:]) == (s // 4,) * 3 + (1024,)
    # "f_u21 in R^{256 x D'/4 ...}, f_u22 in R^{128 x D'/2 ...} and f_u23 in R^{64 x D' ...}".
    for k, (edge, channels) in enumerate(((s // 4, 256), (s // 2, 128), (s, 64))):
        assert tuple(duolift.get_layer(f"lift{k}_res0").output.shape[1:]) == (edge,) * 3 + (
            channels,
        )
    # The first ResNet block takes F_B's 1024 channels to 256 (3x3x3 convolutions).
    assert duolift.get_layer("lift0_res0").count_params() == _block_params(1024, 256, 3, 3, True)
    # "f_u11 and f_u12 in R^{64 x D' x H' x W'}".
    for k in (0, 1):
        assert tuple(duolift.get_layer(f"lift{k}_up1_conv").output.shape[1:]) == (s,) * 3 + (64,)
    # "F_u in R^{224 x D' x W' x H'}", then "Dropout with a probability of 0.25".
    assert tuple(duolift.get_layer("fuse").output.shape[1:]) == (s,) * 3 + (224,)
    assert duolift.get_layer("fuse_dropout").rate == 0.25
    # "U-Net++ ... four encoder layers, four decoder layers ... with Deep Supervision".
    names = {layer.name for layer in duolift.layers}
    assert {f"pp_head{j}" for j in range(1, 5)} <= names and "pp_x4_0_conv1" in names


def test_duolift_single_view_and_discriminator() -> None:
    # "Reconstructing CT from Single-view and Biplanar X-Rays": both settings.
    assert PRESETS["DuoLift-GAN"]["views"] == (("frontal", "lateral"), ("frontal",))
    # "four convolutional layers, each with a 4x4x4 kernel, a stride of one, and padding of two,
    # along with average pooling using a 3x3x3 kernel, a stride of two, and padding of one".
    disc = build_discriminator("DuoLift-GAN", size=32, filters=(2, 2, 2, 2))
    assert (disc.kernel_size, disc.strides, disc.padding) == (4, (1, 1, 1, 1), 2)
    assert (disc.pool, disc.pool_size, disc.pool_strides, disc.pool_padding) == ("avg", 3, 2, 1)
    assert patch_map_size(128, (1, 1, 1, 1), 4, 2, "avg", 3, 2, 1)[-1] == 10


def test_duolift_training_defaults_are_the_papers() -> None:
    # "a learning rate of 5e-4 for training DuoLift-CNN and 1e-4 for training DuoLift-GAN ...
    # reduced to one-tenth after 70 epochs ... batch size of 1, accumulating gradients over four
    # batches ... for 100 epochs"; Eq. (7)-(8): alpha 1.0, beta 0.01, L_D = beta * L_ad.
    cnn, gan = preset_training_defaults("DuoLift-CNN"), preset_training_defaults("DuoLift-GAN")
    assert cnn["learning_rate"] == 5e-4 and gan["learning_rate"] == 1e-4
    for t in (cnn, gan):
        assert t["schedule"] == {"name": "multistep", "milestones": [0.7], "decay_factor": 0.1}
        assert t["grad_accum_steps"] == 4
    assert gan["loss_weights"] == {
        "mse": 1.0,
        "mae": 1.0,
        "masked_mse": 1.0,
        "masked_mae": 1.0,
        "adversarial": 0.01,
    }
    assert gan["adversarial"] == "bce" and gan["d_loss_weight"] == 0.01
    for name in ("duolift-gan", "duolift-cnn"):
        cfg = load_config(name)
        assert cfg.training.epochs == 100 and cfg.data.batch_size == 1
        # "We utilized the preprocessed data from X2CT-GAN".
        assert resolve_hu_window(cfg.data.hu_window) == (-1024.0, 1476.0)


# === CVAA-GAN (Qiao et al.) ===


def test_cvaa_modules_and_training_are_the_papers() -> None:
    model = build_model("CVAA-GAN", size=32, base_filters=2, max_filters=4, growth_rate=2)
    cfvaa = model.get_layer("cfvaa_16")
    # VAA: "another basic Conv3D block (kernel size = 7, padding = 3, out_channel = 2)" and the
    # weights "combine the two shallow features".
    assert cfvaa.vaa.attention.kernel.shape[:3] == (7, 7, 7) and cfvaa.vaa.attention.filters == 2
    assert cfvaa.vaa.weigh == "shallow"
    # FD: "a basic Conv3D layer (kernel size = 3, padding = 1, out_channel = 1)".
    assert cfvaa.fd.gate_conv.kernel.shape[:3] == (3, 3, 3) and cfvaa.fd.gate_conv.filters == 1
    # D: "X_1 and X_2 are first extended from 2D to 3D and then followed by a basic 3D
    # convolution layer".
    disc = build_discriminator("CVAA-GAN", size=32, filters=(2, 2, 2, 2))
    assert disc.condition_filters > 0 and "condition_conv" in {layer.name for layer in disc.layers}
    # "Adam ... 2e-4, beta_1 = 0.5 and beta_2 = 0.99"; Eq. (1): L(D) = real + fake (weight 1).
    t = preset_training_defaults("CVAA-GAN")
    assert (t["learning_rate"], t["beta_1"], t["beta_2"]) == (2e-4, 0.5, 0.99)
    assert t["adversarial"] == "lsgan" and t["d_loss_weight"] == 1.0
    # "clip data with CT value span [-1000, 4096] ... min-max normalization"; "200 epochs";
    # "the batch size is set to 4".
    cfg = load_config("cvaa-gan")
    assert resolve_hu_window(cfg.data.hu_window) == (-1000.0, 4096.0)
    assert cfg.training.epochs == 200 and cfg.data.batch_size == 4


# === S-XR2CT (Hor, Yang and Kim) ===


def test_sxr2ct_structure_and_losses_are_the_papers() -> None:
    # "X_i in R^{1 x 128 x 128}" (one frontal view) → "Y_i' in R^{1 x 128 x 128 x 128}".
    assert PRESETS["S-XR2CT"]["views"] == (("frontal",),)
    model = build_model(
        "S-XR2CT",
        size=32,
        base_filters=2,
        base_filters_2d=4,
        max_filters=8,
        depths=(1, 1, 1),
        num_heads=2,
        window_size=2,
    )
    names = {layer.name for layer in model.layers}
    # "concatenating them at each layer": the template enters every encoder level.
    assert {"template_pool1", "template_pool2"} <= names
    # "self-attention following ... Swin UNETR ... after the first layer in the decoder": W-MSA
    # then SW-MSA.
    shifts = [model.get_layer(f"dec_attention{i}").shift_size for i in range(2)]
    assert shifts == [0, 1]
    # "lambda_1 = 0.1, lambda_2 = 10, lambda_3 = 1"; "D = argmin lambda_1 L_D".
    t = preset_training_defaults("S-XR2CT")
    assert t["loss_weights"] == {
        "mse": 10.0,
        "projection": 10.0,
        "perceptual": 1.0,
        "adversarial": 0.1,
    }
    assert t["adversarial"] == "lsgan" and t["d_loss_weight"] == 0.1


def test_model_keys_list_each_argument_once() -> None:
    from xprospect.models.presets import PRESETS, model_keys

    for preset in PRESETS:
        keys = model_keys(preset)
        assert len(keys) == len(set(keys)), preset
        assert "name" in keys and "dtype" in keys, preset
