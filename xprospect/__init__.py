"""xprospect: chest X-rays to 3D CT volumes with TensorFlow/Keras 3.

Importing the package is cheap: the I/O, image and preprocessing modules need only NumPy, SciPy,
nibabel, pydicom and h5py. TensorFlow and Keras are imported by the modules that need them.
"""

from __future__ import annotations

__version__ = "0.2.0.dev0"

from typing import TYPE_CHECKING, Any

from xprospect.errors import XprospectError

if TYPE_CHECKING:
    from xprospect.image import Radiograph, View, Volume

__all__ = ["Radiograph", "View", "Volume", "XprospectError", "__version__"]


def __getattr__(name: str) -> Any:
    # The image classes load on first use, not with the package: ``import xprospect.cli`` must
    # be able to set NumPy's environment (``NUMPY_ENVIRONMENT``) before NumPy is imported.
    if name in ("Radiograph", "View", "Volume"):
        from xprospect import image

        return getattr(image, name)
    raise AttributeError(f"module 'xprospect' has no attribute {name!r}")
