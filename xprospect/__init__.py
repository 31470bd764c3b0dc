"""xprospect: chest X-rays to 3D CT volumes with TensorFlow/Keras 3.

Importing the package is cheap: the I/O, image and preprocessing modules need only NumPy, SciPy,
nibabel, pydicom and h5py. TensorFlow and Keras are imported by the modules that need them.
"""

from __future__ import annotations

__version__ = "0.2.0.dev0"

from xprospect.errors import XprospectError
from xprospect.image import Radiograph, View, Volume

__all__ = ["Radiograph", "View", "Volume", "XprospectError", "__version__"]
