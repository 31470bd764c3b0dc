"""Argument checks and dtype helpers shared by every model family (no layers here).

The checks raise :class:`~xprospect.errors.ConfigError` naming the argument, so a bad preset
override reads the same whichever family's constructor rejects it. They sit apart from
:mod:`xprospect.models.blocks` so that a module needing only a check does not depend on the
layers, and the layers' module stays about layers.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from xprospect.constants import VIEWS
from xprospect.errors import ConfigError

__all__ = [
    "NORMS",
    "UPSAMPLING_MODES",
    "check_norm",
    "check_upsampling",
    "check_view",
    "check_views",
    "network_config",
    "positive_int",
    "power_of_two",
    "resolve_policy",
]

NORMS = ("instance", "batch", "none")
"""Normalisations of :class:`~xprospect.models.blocks.ConvNormAct`: instance norm is
``GroupNormalization(groups=-1)``."""


UPSAMPLING_MODES = ("transpose", "resize_conv", "subpixel")
"""Learned x2 upsamplings of the decoders (:class:`~xprospect.models.blocks.Upsample`):
``"transpose"`` (a transposed convolution, every paper's choice and the default), ``"resize_conv"``
(nearest-neighbour resize, then a convolution: Odena et al. 2016) and ``"subpixel"`` (a
convolution to ``factor**rank`` times the channels, then depth-to-space, ICNR-initialised:
Aitken et al. 2017)."""


def check_view(view: str) -> str:
    """``view`` if it is one of :data:`VIEWS`, else a ConfigError."""
    if view not in VIEWS:
        raise ConfigError(f"view must be one of {VIEWS}, got {view!r}")
    return view


def check_views(views: Any, *, need_frontal: bool = False) -> tuple[str, ...]:
    """``views`` as a tuple if they are distinct names from :data:`VIEWS`, else a ConfigError.

    Args:
        views: A sequence of view names (a bare string is refused: it is not a list of views).
        need_frontal: Also require the frontal view (every single-view model takes the frontal).
    """
    if isinstance(views, str) or not views or len(set(views)) != len(views):
        raise ConfigError(f"views must be distinct names from {VIEWS}, got {views!r}")
    if not set(views) <= set(VIEWS):
        raise ConfigError(f"views must be distinct names from {VIEWS}, got {views!r}")
    if need_frontal and "frontal" not in views:
        raise ConfigError(f"the frontal view is required (single-view mode), got {views!r}")
    return tuple(views)


def check_norm(norm: str) -> str:
    """``norm`` if it is one of :data:`NORMS`, else a ConfigError."""
    if norm not in NORMS:
        raise ConfigError(f"norm must be one of {NORMS}, got {norm!r}")
    return norm


def check_upsampling(mode: str) -> str:
    """``mode`` if it is one of :data:`UPSAMPLING_MODES`, else a ConfigError."""
    if mode not in UPSAMPLING_MODES:
        raise ConfigError(f"upsampling must be one of {UPSAMPLING_MODES}, got {mode!r}")
    return mode


def positive_int(name: str, value: Any) -> int:
    """``value`` as an int if it is a positive integer (bools excluded), else a ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def power_of_two(n: Any) -> bool:
    """Whether ``n`` is an integer power of two (1, 2, 4, ...)."""
    return bool(isinstance(n, int | np.integer) and n >= 1 and (n & (n - 1)) == 0)


def resolve_policy(dtype: Any) -> Any:
    """The Keras dtype policy named by ``dtype``, or the global policy when it is None."""
    return keras.dtype_policies.get(dtype) if dtype is not None else keras.config.dtype_policy()


def network_config(model: Any) -> dict[str, Any]:
    """The ``keras.Model`` part of a functional network's ``get_config``: name, trainable and
    the dtype policy it was built with (``model._policy_name``)."""
    return {"name": model.name, "trainable": model.trainable, "dtype": model._policy_name}
