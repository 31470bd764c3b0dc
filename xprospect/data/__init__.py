"""The data layer: sample data, dataset building (``prepare``) and the ``tf.data`` input pipeline.

- :mod:`xprospect.data.samples`: the real CT and CR shipped by packages (no TensorFlow).
- :mod:`xprospect.data.prepare`: CTs and phantoms to a sharded TFRecord dataset with DRRs.
- :mod:`xprospect.data.manifest`: a dataset's ``manifest.json`` and its split sizes (no
  TensorFlow).
- :mod:`xprospect.data.pipeline`: reading that dataset (:func:`load_dataset`, augmentation).

The manifest's and the pipeline's names are re-exported here but imported on first use, so that
importing ``xprospect.data.samples`` (or the manifest) does not import TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from xprospect.data.manifest import MANIFEST_NAME, read_manifest, scan_fraction, split_cases
    from xprospect.data.pipeline import (
        Augmentation,
        augmentation_from_dict,
        encode_case,
        load_dataset,
        parse_case,
        radiograph_augment,
        spatial_augment,
    )

__all__ = [
    "MANIFEST_NAME",
    "Augmentation",
    "augmentation_from_dict",
    "encode_case",
    "load_dataset",
    "parse_case",
    "radiograph_augment",
    "read_manifest",
    "scan_fraction",
    "spatial_augment",
    "split_cases",
]

_MANIFEST_NAMES = frozenset({"MANIFEST_NAME", "read_manifest", "scan_fraction", "split_cases"})


def __getattr__(name: str) -> Any:
    if name in _MANIFEST_NAMES:
        return getattr(importlib.import_module("xprospect.data.manifest"), name)
    if name in __all__:
        return getattr(importlib.import_module("xprospect.data.pipeline"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
