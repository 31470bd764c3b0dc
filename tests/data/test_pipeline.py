"""The tf.data pipeline: shapes, normalisation, determinism, sharding, augmentation coherence."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from xprospect.data import Augmentation, load_dataset, radiograph_augment, spatial_augment
from xprospect.data.prepare import PrepareConfig, prepare_dataset
from xprospect.errors import ConfigError
from xprospect.projection import render_drr_batch


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "ds"
    cfg = PrepareConfig(size=32, geometry="parallel", shard_size=2, val_fraction=0, test_fraction=0)
    prepare_dataset([], out, cfg, phantoms=4, progress=False)
    return out


def _one(ds):
    return next(iter(ds))


def test_batches_have_model_shapes_and_normalisation(dataset):
    ds = load_dataset(dataset, "train", batch_size=2, shuffle=False, with_case_id=True)
    x, y = _one(ds)
    assert x["frontal"].shape == (2, 32, 32, 1) and x["lateral"].shape == (2, 32, 32, 1)
    assert y.shape == (2, 32, 32, 32, 1) and y.dtype == tf.float32
    raw = load_dataset(
        dataset,
        "train",
        batch_size=2,
        shuffle=False,
        xray_mapping="line_integral",
        hu_window=(-1000, 1000),
        with_case_id=True,
    )
    xr, _ = _one(raw)
    # display mapping: each image divided by its own maximum
    line = xr["frontal"].numpy()
    np.testing.assert_allclose(
        x["frontal"].numpy(), line / line.max(axis=(1, 2, 3), keepdims=True), rtol=1e-6
    )
    # target: HU window [-1000, 1000] to [0, 1]; recover HU from the stored record independently
    from xprospect.data import parse_case

    first = next(iter(tf.data.TFRecordDataset(str(dataset / "train-00000.tfrecord"))))
    hu = parse_case(first)["volume"].numpy()
    np.testing.assert_allclose(y.numpy()[0, ..., 0], np.clip((hu + 1000) / 2000, 0, 1), atol=1e-6)
    assert x["case_id"].numpy()[0] == parse_case(first)["case_id"].numpy()


def test_same_seed_same_order_and_single_view(dataset):
    def ids(s):
        return [
            x["case_id"].numpy()[0]
            for x, _ in load_dataset(
                dataset, "train", shuffle=True, seed=s, with_case_id=True, views=("frontal",)
            )
        ]

    assert ids(3) == ids(3)
    assert sorted(ids(3)) == sorted(ids(4))
    x, _ = _one(load_dataset(dataset, "train", views=("frontal",)))
    assert set(x) == {"frontal"}
    with pytest.raises(ConfigError, match="unknown view"):
        load_dataset(dataset, "train", views=("axial",))


def test_input_context_shards_are_disjoint_and_complete(dataset):
    def ids(i):
        ctx = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=i, num_replicas_in_sync=2
        )
        ds = load_dataset(
            dataset, "train", batch_size=2, shuffle=False, input_context=ctx, with_case_id=True
        )
        return [c for x, _ in ds for c in x["case_id"].numpy()]

    a, b = ids(0), ids(1)
    assert not set(a) & set(b) and len(a) + len(b) == 4
    # per-replica batch: global 2 over 2 replicas = 1 case per batch
    ctx = tf.distribute.InputContext(2, 0, 2)
    x, _ = _one(load_dataset(dataset, "train", batch_size=2, input_context=ctx))
    assert x["frontal"].shape[0] == 1


def test_rerender_without_augmentation_reproduces_stored_drrs(dataset):
    common = dict(batch_size=4, shuffle=False, xray_mapping="line_integral")
    stored, _ = _one(load_dataset(dataset, "train", **common))
    live, _ = _one(load_dataset(dataset, "train", rerender=True, **common))
    for v in ("frontal", "lateral"):  # float16 storage is the only difference
        np.testing.assert_allclose(live[v].numpy(), stored[v].numpy(), rtol=2e-3, atol=2e-3)


def test_flip_is_coherent_between_volume_and_drrs(dataset):
    common = dict(batch_size=4, shuffle=False, xray_mapping="line_integral")
    base_x, base_y = _one(load_dataset(dataset, "train", **common))
    flip = Augmentation(flip_lr_prob=1.0)
    fx, fy = _one(load_dataset(dataset, "train", augment=flip, **common))
    np.testing.assert_allclose(fy.numpy(), base_y.numpy()[:, :, :, ::-1], atol=1e-6)
    # Mirroring the patient mirrors the frontal DRR; the parallel lateral is unchanged.
    np.testing.assert_allclose(
        fx["frontal"].numpy(), base_x["frontal"].numpy()[:, :, ::-1], rtol=2e-3, atol=2e-3
    )
    np.testing.assert_allclose(
        fx["lateral"].numpy(), base_x["lateral"].numpy(), rtol=2e-3, atol=2e-3
    )
    # And the DRRs are those of the augmented volume itself.
    hu = fy.numpy()[..., 0] * 2000 - 1000
    drr = render_drr_batch(hu, 10.0, "parallel", size=32).numpy()
    np.testing.assert_allclose(fx["frontal"].numpy()[..., 0], drr[:, 0], rtol=0.05, atol=0.05)


def test_spatial_augment_rotation_and_shift_move_anatomy_rigidly():
    vol = np.full((16, 32, 32), -1024.0, np.float32)
    vol[:, 8, 20] = 1000.0  # a rod along the head-feet axis, off-centre
    seed = tf.constant([1, 2], tf.int64)
    out = spatial_augment(
        tf.constant(vol), tf.constant([2.0, 1.0, 1.0]), Augmentation(rotate_deg=90.0), seed
    ).numpy()
    # A rotation about the head-feet axis keeps the rod a rod (same in every slice) at the same
    # distance from the in-plane centre (15.5, 15.5).
    np.testing.assert_allclose(out[0], out[-1], atol=1e-3)
    peak = np.unravel_index(np.argmax(out[5]), out[5].shape)
    np.testing.assert_allclose(
        np.hypot(peak[0] - 15.5, peak[1] - 15.5), np.hypot(8 - 15.5, 20 - 15.5), atol=1.5
    )
    shifted = spatial_augment(
        tf.constant(vol), tf.constant([1.0, 1.0, 1.0]), Augmentation(shift_mm=3.0), seed
    ).numpy()
    # Bilinear shifts spread the rod over neighbours but keep its mass and move it <= 3 mm.
    mass = vol[8] + 1024.0
    moved = shifted[8] + 1024.0
    np.testing.assert_allclose(moved.sum(), mass.sum(), rtol=1e-3)
    rows, cols = np.indices(mass.shape)
    d = [(moved * g).sum() / moved.sum() - (mass * g).sum() / mass.sum() for g in (rows, cols)]
    assert 0 < np.hypot(*d) <= 3.0 * np.sqrt(2) + 1e-3
    np.testing.assert_allclose(shifted.min(), -1024.0)


def test_radiograph_augmentation_is_bounded_and_deterministic():
    img = tf.constant(np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32))
    aug = Augmentation(gamma=0.3, contrast=0.2, blur_sigma_px=1.0, noise_std=0.05)
    a = radiograph_augment(img, aug, tf.constant([5, 6], tf.int64)).numpy()
    b = radiograph_augment(img, aug, tf.constant([5, 6], tf.int64)).numpy()
    c = radiograph_augment(img, aug, tf.constant([7, 8], tf.int64)).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert a.min() >= 0 and a.max() <= 1 and not np.allclose(a, img.numpy(), atol=1e-3)
    gamma_only = radiograph_augment(img, Augmentation(gamma=0.5), tf.constant([1, 1], tf.int64))
    # x ** g is monotone: order of pixel values is kept.
    flat = gamma_only.numpy().ravel()
    assert np.all(np.diff(flat) >= -1e-6)


def test_pipeline_with_augmentation_runs_in_model_fit_shapes(dataset):
    ds = load_dataset(
        dataset,
        "train",
        batch_size=2,
        augment=Augmentation.default(),
        repeat=True,
        drop_remainder=True,
    )
    x, y = _one(ds)
    assert x["frontal"].shape == (2, 32, 32, 1) and y.shape == (2, 32, 32, 32, 1)
    assert float(tf.reduce_min(x["lateral"])) >= 0 and float(tf.reduce_max(x["lateral"])) <= 1


_MIRRORED_SCRIPT = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from xprospect.data import load_dataset
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
dist = strategy.distribute_datasets_from_function(
    lambda ctx: load_dataset(sys.argv[1], "train", batch_size=2, shuffle=False,
                             input_context=ctx, with_case_id=True))
seen = []
for x, y in dist:
    for ids, vol in zip(strategy.experimental_local_results(x["case_id"]),
                        strategy.experimental_local_results(y)):
        assert vol.shape[1:] == (32, 32, 32, 1), vol.shape
        seen += [i.decode() for i in ids.numpy()]
print(",".join(sorted(seen)))
"""


def test_mirrored_strategy_on_two_cpus_sees_every_case_once(dataset):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", _MIRRORED_SCRIPT, str(dataset)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    seen = proc.stdout.strip().splitlines()[-1].split(",")
    assert seen == [f"phantom-{i:05d}" for i in range(4)]


def test_manifest_reads_and_counts_splits_without_tensorflow(dataset, tmp_path):
    import subprocess
    import sys

    import xprospect.data
    import xprospect.data.manifest as manifest_module
    from xprospect.errors import MissingDataError

    # The package's lazy re-exports are the manifest module's names.
    for name in ("MANIFEST_NAME", "read_manifest", "split_cases"):
        assert getattr(xprospect.data, name) is getattr(manifest_module, name)
    manifest = xprospect.data.read_manifest(dataset)
    assert manifest["config"]["size"] == 32
    assert manifest_module.split_cases(manifest, "train") == 4
    assert manifest_module.split_cases(manifest, "val") == 0
    assert manifest_module.split_cases({}, "train") == 0
    with pytest.raises(MissingDataError, match=r"no manifest\.json"):
        manifest_module.read_manifest(tmp_path)
    code = (
        "import sys\n"
        "from xprospect.data import read_manifest, split_cases\n"
        f"assert split_cases(read_manifest({str(dataset)!r}), 'train') == 4\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_float16_bits_decode_exactly_like_numpy() -> None:
    """Every half-precision pattern (zeros, subnormals, normals, infinities, NaN) decodes to
    NumPy's float16 -> float32 value, signs of zeros included."""
    import numpy as np
    import tensorflow as tf

    from xprospect.data.pipeline import float16_bits_to_float32

    bits = np.arange(2**16, dtype=np.uint16)
    got = float16_bits_to_float32(tf.constant(bits)).numpy()
    want = bits.view(np.float16).astype(np.float32)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(want))


def test_dataset_without_masks_still_loads_with_all_ones_masks(dataset, tmp_path):
    """A dataset written before masks (no ``scan_mask`` feature, no ``scan_fraction``)."""
    import json
    import shutil

    from xprospect.data import encode_case, parse_case, scan_fraction

    old = tmp_path / "old"
    shutil.copytree(dataset, old)
    for shard in sorted(old.glob("*.tfrecord")):
        cases = [parse_case(r) for r in tf.data.TFRecordDataset(str(shard))]
        with tf.io.TFRecordWriter(str(shard)) as writer:
            for c in cases:
                writer.write(
                    encode_case(
                        c["case_id"].numpy().decode(),
                        c["volume"].numpy(),
                        c["spacing_mm"].numpy(),
                        c["frontal"].numpy(),
                        c["lateral"].numpy(),
                    )
                )
    manifest = json.loads((old / "manifest.json").read_text())
    for case in manifest["cases"].values():
        case.pop("scan_fraction", None)
    (old / "manifest.json").write_text(json.dumps(manifest))
    assert scan_fraction(manifest) == 1.0
    raw = next(iter(tf.data.TFRecordDataset(str(sorted(old.glob("*.tfrecord"))[0]))))
    assert "scan_mask" not in tf.train.Example.FromString(raw.numpy()).features.feature
    x, y = _one(load_dataset(old, "train", batch_size=2, shuffle=False, with_scan_mask=True))
    assert x["scan_mask"].shape == y.shape == (2, 32, 32, 32, 1)
    np.testing.assert_array_equal(x["scan_mask"].numpy(), 1.0)
    x_new, y_new = _one(load_dataset(dataset, "train", batch_size=2, shuffle=False))
    assert "scan_mask" not in x_new
    np.testing.assert_array_equal(y.numpy(), y_new.numpy())


def test_scan_mask_round_trips_as_bits_and_moves_with_the_volume():
    from xprospect.data import encode_case, parse_case

    rng = np.random.default_rng(3)
    mask = (rng.random((5, 6, 7)) > 0.4).astype(np.uint8)  # 210 bits: a partial last byte
    drr = np.zeros((4, 4), np.float32)
    rec = encode_case("c", np.zeros((5, 6, 7)), [1.0] * 3, drr, drr, scan_mask=mask)
    parsed = parse_case(tf.constant(rec), with_scan_mask=True)
    np.testing.assert_array_equal(parsed["scan_mask"].numpy(), mask)
    with pytest.raises(ConfigError):
        encode_case("c", np.zeros((5, 6, 7)), [1.0] * 3, drr, drr, scan_mask=mask[:-1])
    # Augmentation: the same seed moves a tissue-filled volume and its all-ones mask; a voxel
    # stays scanned exactly where at most half of its bilinear weight came from outside, which
    # the volume shows as at least -512 HU (its fill is -1024 HU, the mask's 0).
    vol = tf.zeros((12, 16, 16), tf.float32)
    aug = Augmentation(rotate_deg=20.0, shift_mm=4.0, scale=0.1)
    seed = tf.constant([4, 2], tf.int64)
    moved = spatial_augment(vol, tf.constant([2.0, 1.0, 1.0]), aug, seed).numpy()
    moved_mask = spatial_augment(
        tf.ones_like(vol), tf.constant([2.0, 1.0, 1.0]), aug, seed, fill_value=0.0
    ).numpy()
    np.testing.assert_allclose(moved_mask, 1.0 + moved / 1024.0, atol=1e-4)
    assert 0 < np.mean(moved_mask >= 0.5) < 1
