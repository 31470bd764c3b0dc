"""A real preset can learn: overfitting one phantom raises PSNR-3D by at least 10 dB at 32^3."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def test_512_dense_overfits_one_phantom_by_10_db():
    import keras

    from xprospect.losses import build_loss
    from xprospect.metrics import psnr_3d
    from xprospect.models import build_model
    from xprospect.phantoms import chest_phantom
    from xprospect.preprocessing import window_hu
    from xprospect.projection import display_unit, render_drr_batch
    from xprospect.utils import seed_everything

    seed_everything(0)
    ct = chest_phantom(32, seed=3, noise_hu=0.0).volume
    hu = np.clip(ct.array, -1024, 3071).astype(np.float32)
    drrs = display_unit(render_drr_batch(hu[None], ct.spacing_mm, "x2ct", size=32)).numpy()[0]
    x = {"frontal": drrs[0][None, ..., None], "lateral": drrs[1][None, ..., None]}
    target = np.asarray(window_hu(hu, (-1000, 1000)), np.float32)
    y = target[None, ..., None]

    model = build_model("512-Dense", size=32, base_filters=8, dense_units=64)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3), loss=build_loss({"mae": 1.0}), jit_compile=False
    )
    before = psnr_3d(target, np.asarray(model(x, training=False))[0, ..., 0])
    for _ in range(300):
        model.train_on_batch(x, y)
    after = psnr_3d(target, np.asarray(model(x, training=False))[0, ..., 0])
    assert after - before >= 10.0, (before, after)
