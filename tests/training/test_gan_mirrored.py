"""Every GAN family trains under MirroredStrategy on two logical CPU devices.

Kept in its own file so that the test runner's two workers (``pytest -n 2 --dist loadfile``) run
it beside ``test_gan.py`` rather than after it: it is the longest test of the suite.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from faults import run_script
from test_gan import dataset as dataset

_MIRRORED_SCRIPT = r"""
import sys
sys.path.insert(0, sys.argv[1])
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import numpy as np
from test_gan import gan_config
from xprospect.training import Trainer
from xprospect.training.logs import read_metrics
data, root = sys.argv[2], sys.argv[3]
for preset in sys.argv[4:]:
    cfg = gan_config(data, f"{root}/{preset}", preset, **{"training.strategy": "mirrored"})
    trainer = Trainer(cfg, progress=False)
    result = trainer.fit()
    assert result.ok and result.steps == 2, (preset, result.message)
    assert trainer.strategy.num_replicas_in_sync == 2
    nets = [trainer.model] + ([trainer.discriminator] if trainer.discriminator else [])
    assert (trainer.discriminator is not None) == preset.endswith(("GAN", "XR2CT")), preset
    for net in nets:
        for v in net.weights:
            a, b = trainer.strategy.experimental_local_results(v.value)
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=f"{preset} {v.path}")
    for row in read_metrics(f"{root}/{preset}/metrics.csv"):
        assert np.isfinite(float(row["loss"])), (preset, row)
    print("trained", preset, flush=True)
print("OK")
"""


@pytest.mark.slow
def test_every_family_trains_under_mirrored_strategy(dataset: Path, tmp_path: Path) -> None:
    # One process for all four: its own logical-device set-up, and the CPU strategy reduces on
    # one device, so successive strategies do not share collective instance keys. Each family's
    # GAN preset runs its generator's step and its discriminator's; the generator-only step under
    # the strategy is tested with the DualUNet (tests/training/test_train.py).
    presets = ["X2CT-GAN", "CVAA-GAN", "DuoLift-GAN", "S-XR2CT"]
    here = Path(__file__).parent
    proc = run_script(_MIRRORED_SCRIPT, here, str(dataset), str(tmp_path), *presets)
    assert proc.stdout.strip().endswith("OK"), proc.stdout
    trained = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("trained")]
    assert trained == presets
