"""A prepared dataset made partly scanned, for the tests of ``data.validity_mask``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import tensorflow as tf

from xprospect.data import encode_case, parse_case


def partly_scanned_copy(src: Path, dst: Path, *, masked: bool, garbage: bool = False) -> Path:
    """A copy of ``src`` whose cases are scanned only in their lower half (``masked``), with
    random HU outside the scan (``garbage``), or written without masks at all (an old dataset).
    The stored DRRs are kept, so the inputs are the same in every copy."""
    shutil.copytree(src, dst)
    rng = np.random.default_rng(0)
    for shard in sorted(dst.glob("*.tfrecord")):
        cases = [parse_case(r) for r in tf.data.TFRecordDataset(str(shard))]
        with tf.io.TFRecordWriter(str(shard)) as writer:
            for c in cases:
                volume = c["volume"].numpy()
                mask = None
                if masked:
                    mask = np.zeros(volume.shape, np.uint8)
                    mask[volume.shape[0] // 2 :] = 1
                    if garbage:
                        noise = rng.uniform(-1000, 1000, volume.shape)
                        volume = np.where(mask > 0, volume, noise)
                writer.write(
                    encode_case(
                        c["case_id"].numpy().decode(),
                        volume,
                        c["spacing_mm"].numpy(),
                        c["frontal"].numpy(),
                        c["lateral"].numpy(),
                        scan_mask=mask,
                    )
                )
    manifest = json.loads((dst / "manifest.json").read_text())
    for case in manifest["cases"].values():
        case.pop("scan_fraction", None)
        if masked:
            case["scan_fraction"] = 0.5
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst
