"""An asymmetric phantom whose every axis can be told apart, for orientation tests.

It is built in the canonical orientation (``docs/conventions.md``): axis 0 head to feet, axis 1
front to back, axis 2 patient's right to left. A water-filled elliptic body in air holds:

- a dense ``heart`` sphere, anterior and on the patient's **left**, in the upper half;
- a ``spine`` bone rod, posterior and central, running the whole length;
- a ``liver`` block on the patient's **right**, in the lower half;
- a small ``apex_marker`` bone cube near the **head**, on the patient's right.

No flip or transpose of the array maps the phantom onto itself, so any orientation mistake moves a
landmark and a test comparing landmark positions fails.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xprospect.image import Volume

__all__ = ["AsymmetricPhantom", "asymmetric_phantom"]

AIR_HU = -1000.0
WATER_HU = 0.0
HEART_HU = 400.0
LIVER_HU = 150.0
BONE_HU = 1000.0


@dataclass(frozen=True)
class AsymmetricPhantom:
    """The phantom volume and its landmarks.

    Attributes:
        volume: Canonical HU volume (float32).
        landmarks: Name to array index (i, j, k) of each structure's centre.
    """

    volume: Volume
    landmarks: dict[str, tuple[int, int, int]]

    def landmark_world_mm(self, name: str) -> np.ndarray:
        """RAS+ position of a landmark, in mm."""
        return self.volume.index_to_world(self.landmarks[name])


def asymmetric_phantom(
    shape: tuple[int, int, int] = (32, 32, 32),
    spacing_mm: tuple[float, float, float] = (4.0, 3.0, 2.5),
) -> AsymmetricPhantom:
    """Builds the asymmetric phantom (deterministic; no randomness).

    Args:
        shape: Array shape (axis 0, 1, 2); each at least 16.
        spacing_mm: Voxel size along axes 0, 1, 2 (anisotropic by default so axis mix-ups show).

    Returns:
        The phantom with its landmark indices.
    """
    if min(shape) < 16:
        raise ValueError(f"asymmetric_phantom needs every axis >= 16 voxels, got {shape}")
    n0, n1, n2 = shape
    i, j, k = np.meshgrid(
        np.arange(n0, dtype=np.float32),
        np.arange(n1, dtype=np.float32),
        np.arange(n2, dtype=np.float32),
        indexing="ij",
    )
    a = np.full(shape, AIR_HU, dtype=np.float32)
    body = ((j - (n1 - 1) / 2) / (0.42 * n1)) ** 2 + ((k - (n2 - 1) / 2) / (0.45 * n2)) ** 2 <= 1
    a[body] = WATER_HU

    heart = (round(0.35 * n0), round(0.35 * n1), round(0.68 * n2))
    r = 0.12 * min(shape)
    a[(i - heart[0]) ** 2 + (j - heart[1]) ** 2 + (k - heart[2]) ** 2 <= r**2] = HEART_HU

    spine = (n0 // 2, round(0.78 * n1), (n2 - 1) // 2)
    a[((j - spine[1]) ** 2 + (k - (n2 - 1) / 2) ** 2 <= (0.06 * min(n1, n2)) ** 2)] = BONE_HU

    liver = (round(0.72 * n0), round(0.45 * n1), round(0.27 * n2))
    hl = np.array([0.12 * n0, 0.15 * n1, 0.12 * n2])
    a[
        (np.abs(i - liver[0]) <= hl[0])
        & (np.abs(j - liver[1]) <= hl[1])
        & (np.abs(k - liver[2]) <= hl[2])
    ] = LIVER_HU

    apex = (round(0.1 * n0), round(0.5 * n1), round(0.3 * n2))
    a[(np.abs(i - apex[0]) <= 1) & (np.abs(j - apex[1]) <= 1) & (np.abs(k - apex[2]) <= 1)] = (
        BONE_HU
    )

    volume = Volume.from_spacing(a, spacing_mm, source="asymmetric_phantom")
    landmarks = {"heart": heart, "spine": spine, "liver": liver, "apex_marker": apex}
    return AsymmetricPhantom(volume=volume, landmarks=landmarks)
