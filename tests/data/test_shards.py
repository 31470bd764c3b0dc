"""Damaged datasets: a truncated or corrupt TFRecord shard, or a broken manifest, is a typed
error naming the file before iteration starts, not TensorFlow's DataLossError mid-run."""

from __future__ import annotations

import shutil

import pytest
import tensorflow as tf

from xprospect.data import load_dataset
from xprospect.data.manifest import read_manifest
from xprospect.data.pipeline import verify_shards
from xprospect.data.prepare import PrepareConfig, prepare_dataset
from xprospect.errors import ImageFormatError, MissingDataError, ResourceLimitError, ShardError


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards") / "ds"
    cfg = PrepareConfig(size=16, geometry="parallel", shard_size=2, val_fraction=0, test_fraction=0)
    prepare_dataset([], out, cfg, phantoms=4, progress=False)
    return out


@pytest.fixture
def dataset(pristine, tmp_path):
    copy = tmp_path / "ds"
    shutil.copytree(pristine, copy)
    return copy


def _shard(dataset):
    return dataset / "train-00001.tfrecord"


def test_an_intact_dataset_verifies_and_loads(dataset):
    files = sorted(str(p) for p in dataset.glob("train-*.tfrecord"))
    verify_shards(files, read_manifest(dataset))
    assert sum(1 for _ in load_dataset(dataset, "train", shuffle=False)) == 4


def test_a_truncated_shard_is_named(dataset):
    shard = _shard(dataset)
    shard.write_bytes(shard.read_bytes()[:-1000])
    with pytest.raises(ShardError) as info:
        load_dataset(dataset, "train")
    text = str(info.value)
    assert text.startswith(f"{shard}: TFRecord shard is truncated or corrupt (truncated record")
    assert "xprospect prepare" in text and "\n" not in text
    assert isinstance(info.value, ImageFormatError)


@pytest.mark.parametrize("where", [0.01, 0.5], ids=["length", "payload"])
def test_a_flipped_byte_is_named(dataset, where):
    shard = _shard(dataset)
    data = bytearray(shard.read_bytes())
    data[int(len(data) * where)] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ShardError, match=r"train-00001\.tfrecord: .*corrupt"):
        load_dataset(dataset, "train")


def test_a_shard_with_fewer_records_than_the_manifest_says_is_named(dataset):
    shard = _shard(dataset)
    records = list(tf.data.TFRecordDataset(str(shard)).as_numpy_iterator())
    with tf.io.TFRecordWriter(str(shard)) as writer:
        writer.write(records[0])
    with pytest.raises(ShardError, match="holds 1 record"):
        load_dataset(dataset, "train")


def test_without_verification_the_damage_shows_only_while_iterating(dataset):
    shard = _shard(dataset)
    shard.write_bytes(shard.read_bytes()[:-1000])
    ds = load_dataset(dataset, "train", shuffle=False, verify=False)
    with pytest.raises(tf.errors.DataLossError):
        for _ in ds:
            pass


def test_a_broken_manifest_is_a_typed_error(dataset):
    manifest = dataset / "manifest.json"
    manifest.write_text("{not json")
    with pytest.raises(
        ImageFormatError, match=r"manifest.json: dataset manifest is not valid JSON"
    ):
        read_manifest(dataset)
    manifest.write_text("[1, 2]")
    with pytest.raises(ImageFormatError, match="not a JSON object"):
        load_dataset(dataset, "train")
    manifest.write_text('{"a":' * 100 + "1" + "}" * 100)
    with pytest.raises(ResourceLimitError, match="nests deeper"):
        read_manifest(dataset)
    manifest.unlink()
    with pytest.raises(MissingDataError):
        read_manifest(dataset)
