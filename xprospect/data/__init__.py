"""The data layer: sample data, dataset building (``prepare``) and the ``tf.data`` input pipeline.

- :mod:`xprospect.data.samples`: the real CT and CR shipped by packages (no TensorFlow).
- :mod:`xprospect.data.prepare`: CTs and phantoms to a sharded TFRecord dataset with DRRs.
- :mod:`xprospect.data.pipeline`: reading that dataset (:func:`load_dataset`, augmentation).

The pipeline's names are re-exported here but imported on first use, so that importing
``xprospect.data.samples`` does not import TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from xprospect.data.pipeline import (
        MANIFEST_NAME,
        Augmentation,
        augmentation_from_dict,
        encode_case,
        load_dataset,
        parse_case,
        radiograph_augment,
        read_manifest,
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
    "spatial_augment",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("xprospect.data.pipeline"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
