"""The ``manifest.json`` of a prepared dataset: reading it and counting its splits.

``xprospect prepare`` (:mod:`xprospect.data.prepare`) writes the manifest beside the TFRecord
shards; it holds the dataset's ``config`` (size, geometry, spacing, ...), its ``cases`` and its
``shards`` (``{"train-00000": {"file": ..., "cases": n}, ...}``). This module needs no TensorFlow,
so config resolution and split counting stay cheap.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from xprospect.errors import ImageFormatError, MissingDataError
from xprospect.utils import read_json_file

__all__ = ["MANIFEST_NAME", "read_manifest", "scan_fraction", "split_cases"]

MANIFEST_NAME = "manifest.json"
"""The manifest's file name inside a dataset folder."""


def read_manifest(data_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Reads ``manifest.json`` of a prepared dataset.

    Raises:
        MissingDataError: No manifest (not a dataset folder, or ``prepare`` never finished a shard).
        ImageFormatError: The manifest is not a JSON object.
        ResourceLimitError: The manifest is larger or nests deeper than
            :func:`xprospect.utils.read_json_file` allows.
    """
    path = Path(data_dir) / MANIFEST_NAME
    if not path.exists():
        raise MissingDataError(
            f"no {MANIFEST_NAME}: not a dataset made by 'xprospect prepare'", path
        )
    manifest = read_json_file(path, error=ImageFormatError, what="dataset manifest")
    if not isinstance(manifest, dict):
        raise ImageFormatError("dataset manifest is not a JSON object", path)
    return manifest


def split_cases(manifest: Mapping[str, Any], split: str) -> int:
    """The number of cases in one split, summed over its shards (``{split}-NNNNN``).

    Args:
        manifest: As :func:`read_manifest` returns it.
        split: ``train``, ``val`` or ``test``.

    Returns:
        The case count; 0 when the dataset has no shard of that split.
    """
    shards = manifest.get("shards", {})
    return sum(int(s.get("cases", 0)) for name, s in shards.items() if name.startswith(f"{split}-"))


def scan_fraction(manifest: Mapping[str, Any], split: str | None = None) -> float:
    """The mean share of the cube that was scanned, over a split's cases (or all cases).

    ``prepare`` records each case's ``scan_fraction`` (the mean of its validity mask,
    :func:`xprospect.preprocessing.scan_mask`); cases of datasets written before masks existed
    have none and count as fully scanned, as their records read.

    Args:
        manifest: As :func:`read_manifest` returns it.
        split: ``train``, ``val``, ``test`` or ``None`` for every case.

    Returns:
        A value in [0, 1]; 1.0 when there is no case.
    """
    cases = manifest.get("cases", {})
    values = [
        float(c.get("scan_fraction", 1.0))
        for c in (cases.values() if isinstance(cases, Mapping) else [])
        if isinstance(c, Mapping) and (split is None or c.get("split") == split)
    ]
    return sum(values) / len(values) if values else 1.0
