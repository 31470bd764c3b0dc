"""Seeded augmentation of real CT volumes: small affine changes, smooth deformation, HU changes.

``xprospect prepare --real-augment N`` turns each real CT into N more training cases with these
transforms (a user with ten real CTs gets a useful training set). They follow the transforms of
:mod:`xprospect.preprocessing` (TorchIO style): small frozen callables, ``t(volume)`` or
``t(volume, *labels)``, where label masks (Volumes or arrays on the volume's grid) follow every
geometric change with nearest interpolation and fill 0, and pass intensity changes untouched.

Each random transform holds its ``seed`` and draws everything from it: the same seed gives the
same output bit for bit, and :meth:`draw` returns the parameters it drew (JSON-ready) so a dataset
manifest can record them. The arguments are the ranges to draw from, in physical units. None of
the papers the package follows augments CT (they train on the LIDC-IDRI CTs as given); the
defaults are modest and anatomically plausible, each docstring says why.

Interpolation is SciPy's (``scipy.ndimage.map_coordinates``: cubic B-spline for HU, order 0 for
labels). ``elasticdeform`` (the library that does the same warp) was the first choice, but its
only release (0.5.1) ships extensions built against NumPy 1.x that do not import under NumPy 2,
and it draws its random grid from NumPy's global state; the coarse-grid B-spline warp it does is
a few lines of SciPy.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from xprospect.constants import STORED_HU_RANGE
from xprospect.errors import ConfigError, GeometryError
from xprospect.image import Volume
from xprospect.preprocessing import Compose, Transform

__all__ = [
    "AIR_HU",
    "RandomAffine",
    "RandomElasticDeformation",
    "RandomHUPerturbation",
    "augment_volume",
    "augmentation_seed",
    "real_ct_augmentation",
]

AIR_HU = -1000.0
"""Air by the definition of the Hounsfield scale: the HU perturbation leaves it where it is."""


def augmentation_seed(base_seed: int, case_id: str, index: int) -> int:
    """The seed of variant ``index`` of a case: a hash, so a case's variants do not change when
    other cases are added or removed, and variants of different cases are unrelated."""
    digest = hashlib.sha256(f"{int(base_seed)}:{case_id}:{int(index)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # 63 bits: any NumPy seed, JSON-exact


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _check_range(value: Sequence[float], name: str, low_limit: float) -> tuple[float, float]:
    pair = tuple(float(v) for v in value)
    if (
        len(pair) != 2
        or not all(math.isfinite(v) for v in pair)
        or not (low_limit < pair[0] <= pair[1])
    ):
        raise ConfigError(f"{name} must be (low, high), {low_limit} < low <= high: {value!r}")
    return pair[0], pair[1]


def _check_nonneg(value: float, name: str) -> float:
    v = float(value)
    if not math.isfinite(v) or v < 0:
        raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
    return v


def _as_volume(image: Any, name: str) -> Volume:
    if not isinstance(image, Volume):
        raise TypeError(f"{name} expects a Volume, got {type(image).__name__}")
    return image


def _label_array(label: Any, image: Volume) -> np.ndarray:
    arr = label.array if isinstance(label, Volume) else np.asarray(label)
    if arr.shape != image.shape:
        raise GeometryError(f"label of shape {arr.shape} does not match image shape {image.shape}")
    return arr


def _same_kind(label: Any, array: np.ndarray) -> Any:
    return label.replace(array=array) if isinstance(label, Volume) else array


def _warp(array: np.ndarray, coords: np.ndarray, order: int, fill: float) -> np.ndarray:
    """``array`` sampled at index ``coords`` (3, *shape); outside is ``fill``.

    Cubic results are clipped to the input's range: a B-spline rings at sharp edges (air/skin,
    bone), and an augmentation must not invent HU values the CT did not have.
    """
    src = array.astype(np.float32, copy=False)
    # A coordinate a rounding error outside the grid (the locked border of a deformation) would
    # sample the fill: snap those to the voxel they mean.
    nearest = np.rint(coords)
    coords = np.where(np.abs(coords - nearest) < 1e-6, nearest, coords)
    out = ndimage.map_coordinates(src, coords, order=order, mode="constant", cval=fill)
    if order > 1:
        out = np.clip(out, min(float(src.min()), fill), max(float(src.max()), fill))
    return out.astype(array.dtype if order == 0 else np.float32, copy=False)


def _spline_weights(control_points: int, n: int) -> np.ndarray:
    """``(n, control_points)``: cubic B-spline interpolation from a control grid spanning ``n``
    voxels (control point j at voxel ``j * (n - 1) / (control_points - 1)``) to every voxel."""
    where = np.linspace(0.0, control_points - 1.0, n)[None]
    basis = np.eye(control_points)
    return np.stack(
        [ndimage.map_coordinates(b, where, order=3, mode="nearest") for b in basis], axis=1
    )


class _RandomWarp(Transform):
    """A geometric warp drawn from a seed: HU with cubic splines, labels nearest (fill 0)."""

    fill_hu: float

    def draw(self, image: Volume) -> dict[str, Any]:
        """The parameters drawn for ``image`` (JSON-ready); the same on every call."""
        raise NotImplementedError

    def _coords(self, image: Volume) -> np.ndarray:
        raise NotImplementedError

    def _apply(self, image: Any, labels: tuple[Any, ...]) -> tuple[Any, tuple[Any, ...]]:
        vol = _as_volume(image, type(self).__name__)
        arrays = [_label_array(label, vol) for label in labels]
        coords = self._coords(vol)
        out = vol.replace(array=_warp(vol.array, coords, 3, self.fill_hu))
        new_labels = tuple(
            _same_kind(label, _warp(a, coords, 0, 0.0))
            for label, a in zip(labels, arrays, strict=True)
        )
        return out, new_labels

    def apply(self, image: Any) -> Any:
        return self._apply(image, ())[0]


@dataclass(frozen=True)
class RandomAffine(_RandomWarp):
    """A random rotation, per-axis scale and translation about the volume's centre.

    The rotation angles (about each array axis), scales and shifts are drawn uniformly from the
    ranges. The defaults are what positioning and body size change between patients and scans:
    a few degrees of rotation (patients lie straight on the table, within ~5 degrees), 0.9-1.1
    scale (chest sizes of adults differ by far more; larger changes would leave the field of view)
    and 10 mm shifts (the body is centred by preprocessing to about that).

    Args:
        degrees: Largest rotation about each axis, degrees.
        scales: ``(low, high)`` scale factor of each axis (> 1 makes anatomy larger).
        translation_mm: Largest shift along each axis, mm.
        seed: Seed of every draw.
        fill_hu: Value of what comes in from outside the volume (air).
    """

    degrees: float = 5.0
    scales: tuple[float, float] = (0.9, 1.1)
    translation_mm: float = 10.0
    seed: int = 0
    fill_hu: float = STORED_HU_RANGE[0]

    def __post_init__(self) -> None:
        object.__setattr__(self, "degrees", _check_nonneg(self.degrees, "degrees"))
        object.__setattr__(self, "scales", _check_range(self.scales, "scales", 0.0))
        object.__setattr__(
            self, "translation_mm", _check_nonneg(self.translation_mm, "translation_mm")
        )
        object.__setattr__(self, "seed", _check_seed(self.seed))

    def draw(self, image: Volume | None = None) -> dict[str, Any]:
        rng = np.random.default_rng(self.seed)
        return {
            "seed": self.seed,
            "rotation_deg": rng.uniform(-self.degrees, self.degrees, 3).tolist(),
            "scales": rng.uniform(*self.scales, 3).tolist(),
            "translation_mm": rng.uniform(-self.translation_mm, self.translation_mm, 3).tolist(),
        }

    def index_map(self, image: Volume) -> tuple[np.ndarray, np.ndarray]:
        """``(matrix, offset)`` taking an output index to the input index it samples (the
        convention of ``scipy.ndimage.affine_transform``), for the drawn parameters."""
        p = self.draw(image)
        spacing = np.asarray(image.spacing_mm, dtype=np.float64)
        # Anatomy moves by x -> R S x + t (mm, about the centre); each output voxel samples the
        # inverse of that, worked out in mm so that anisotropic voxels rotate correctly.
        rotation = Rotation.from_euler("xyz", p["rotation_deg"], degrees=True).as_matrix()
        forward = rotation @ np.diag(p["scales"])
        inverse = np.linalg.inv(forward)
        matrix = np.diag(1.0 / spacing) @ inverse @ np.diag(spacing)
        centre = (np.asarray(image.shape, dtype=np.float64) - 1.0) / 2.0
        shift = inverse @ np.asarray(p["translation_mm"]) / spacing
        return matrix, centre - matrix @ centre - shift

    def _coords(self, image: Volume) -> np.ndarray:
        matrix, offset = self.index_map(image)
        grid = np.indices(image.shape, dtype=np.float64).reshape(3, -1)
        return (matrix @ grid + offset[:, None]).reshape(3, *image.shape)


@dataclass(frozen=True)
class RandomElasticDeformation(_RandomWarp):
    """A smooth random deformation: displacements on a coarse control grid, cubic B-spline between.

    Each control point gets a displacement drawn uniformly within ``max_displacement_mm`` along each
    axis; the outermost control points stay put, so the cube's edges do not pull in fill. With 7
    control points along a 320 mm cube they lie ~53 mm apart, so the deformation bends organs
    (breathing depth, posture, heart size) without tearing them; 4 mm is the order of the
    differences between two scans of one patient in the same breath hold. The dense field is the
    B-spline interpolation of the grid, so it may exceed the bound slightly between control points;
    :meth:`draw` reports the largest displacement of the dense field.

    Args:
        max_displacement_mm: Largest displacement of a control point along each axis, mm.
        control_points: Control points along each axis (>= 4: two fixed borders, a cubic between).
        seed: Seed of every draw.
        fill_hu: Value of what comes in from outside the volume (air).
    """

    max_displacement_mm: float = 4.0
    control_points: int = 7
    seed: int = 0
    fill_hu: float = STORED_HU_RANGE[0]

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "max_displacement_mm",
            _check_nonneg(self.max_displacement_mm, "max_displacement_mm"),
        )
        if isinstance(self.control_points, bool) or int(self.control_points) != self.control_points:
            raise ConfigError(f"control_points must be an integer, got {self.control_points!r}")
        if self.control_points < 4:
            raise ConfigError(f"control_points must be >= 4, got {self.control_points}")
        object.__setattr__(self, "control_points", int(self.control_points))
        object.__setattr__(self, "seed", _check_seed(self.seed))

    def control_displacement_mm(self) -> np.ndarray:
        """The drawn displacements ``(3, c, c, c)`` in mm (array-axis order), borders zero."""
        c = self.control_points
        rng = np.random.default_rng(self.seed)
        grid = rng.uniform(-self.max_displacement_mm, self.max_displacement_mm, (3, c, c, c))
        locked = np.zeros((3, c, c, c))
        locked[:, 1:-1, 1:-1, 1:-1] = grid[:, 1:-1, 1:-1, 1:-1]
        return locked

    def displacement_mm(self, image: Volume) -> np.ndarray:
        """The dense displacement ``(3, *image.shape)`` in mm that each output voxel samples at."""
        control = self.control_displacement_mm()
        w0, w1, w2 = (_spline_weights(self.control_points, n) for n in image.shape)
        # SciPy's 3D spline interpolation is the tensor product of its 1D one: three small
        # matrices give the same field as map_coordinates on the grid, ~100x faster.
        return np.einsum("ia,jb,kc,dabc->dijk", w0, w1, w2, control, optimize=True)

    def draw(self, image: Volume) -> dict[str, Any]:
        dense = self.displacement_mm(image)
        return {
            "seed": self.seed,
            "max_displacement_mm": self.max_displacement_mm,
            "control_points": self.control_points,
            "largest_displacement_mm": float(np.sqrt((dense**2).sum(axis=0)).max()),
        }

    def _coords(self, image: Volume) -> np.ndarray:
        spacing = np.asarray(image.spacing_mm, dtype=np.float64).reshape(3, 1, 1, 1)
        grid = np.indices(image.shape, dtype=np.float64)
        return grid + self.displacement_mm(image) / spacing


@dataclass(frozen=True)
class RandomHUPerturbation(Transform):
    """A random HU scale and offset and Gaussian noise, leaving air at air.

    With ``w = clip((x - AIR_HU) / ramp_hu, 0, 1)`` (0 for air, 1 from lung tissue up), a voxel
    becomes ``x + w * ((scale - 1) * (x - AIR_HU) + offset + noise)``, clipped to the stored range
    ``[-1024, 3071]``: the scale stretches about air, and air (and the -1024 padding outside the
    scan) is left exactly as it was, as on a real scanner whose calibration holds air and water.
    The defaults are within what calibration, kVp and reconstruction kernels shift between
    scanners: 5 % scale, 20 HU offset, 10 HU noise (soft tissue noise of a chest CT).

    Args:
        scale: ``(low, high)`` of the HU scale about air.
        offset_hu: Largest offset of tissue, HU.
        noise_hu: Standard deviation of the added noise, HU.
        ramp_hu: Width of the ramp from air (unchanged) to tissue (fully changed), HU.
        seed: Seed of every draw.
    """

    scale: tuple[float, float] = (0.95, 1.05)
    offset_hu: float = 20.0
    noise_hu: float = 10.0
    ramp_hu: float = 100.0
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", _check_range(self.scale, "scale", 0.0))
        object.__setattr__(self, "offset_hu", _check_nonneg(self.offset_hu, "offset_hu"))
        object.__setattr__(self, "noise_hu", _check_nonneg(self.noise_hu, "noise_hu"))
        if not (math.isfinite(float(self.ramp_hu)) and self.ramp_hu > 0):
            raise ConfigError(f"ramp_hu must be > 0, got {self.ramp_hu!r}")
        object.__setattr__(self, "seed", _check_seed(self.seed))

    def draw(self, image: Volume | None = None) -> dict[str, Any]:
        rng = np.random.default_rng(self.seed)
        return {
            "seed": self.seed,
            "scale": float(rng.uniform(*self.scale)),
            "offset_hu": float(rng.uniform(-self.offset_hu, self.offset_hu)),
            "noise_hu": self.noise_hu,
        }

    def apply(self, image: Any) -> Any:
        vol = image if isinstance(image, Volume) else None
        x = (vol.array if vol is not None else np.asarray(image)).astype(np.float32)
        p = self.draw()
        # The noise has its own stream, apart from the draws of scale and offset.
        rng = np.random.default_rng([self.seed, 1])
        noise = rng.normal(0.0, self.noise_hu, x.shape) if self.noise_hu > 0 else 0.0
        weight = np.clip((x - AIR_HU) / self.ramp_hu, 0.0, 1.0)
        change = (p["scale"] - 1.0) * (x - AIR_HU) + p["offset_hu"] + noise
        out = np.clip(x + weight * change, *STORED_HU_RANGE).astype(np.float32)
        return vol.replace(array=out) if vol is not None else out


def _variant_transforms(
    seed: int,
) -> tuple[RandomAffine, RandomElasticDeformation, RandomHUPerturbation]:
    seeds = np.random.SeedSequence(_check_seed(seed)).generate_state(3, dtype=np.uint64) >> 1
    return (
        RandomAffine(seed=int(seeds[0])),
        RandomElasticDeformation(seed=int(seeds[1])),
        RandomHUPerturbation(seed=int(seeds[2])),
    )


def real_ct_augmentation(seed: int) -> Compose:
    """The augmentation of ``prepare --real-augment``: affine, then deformation, then HU.

    The three transforms (default ranges) get seeds spawned from ``seed``
    (``numpy.random.SeedSequence``), so one number reproduces the variant.
    """
    return Compose(_variant_transforms(seed))


def augment_volume(
    volume: Volume, seed: int, *labels: Any
) -> tuple[Volume, tuple[Any, ...], dict[str, Any]]:
    """One variant of a CT (and its label masks) by :func:`real_ct_augmentation`.

    Args:
        volume: The CT in HU.
        seed: The variant's seed.
        *labels: Label masks on the volume's grid (Volumes or arrays); they follow the geometry
            (nearest, fill 0) and ignore the HU changes.

    Returns:
        The augmented volume (float32 HU within ``STORED_HU_RANGE``), the labels, and a record
        ``{"seed", "transforms": [{"name", **drawn parameters}, ...]}`` for a manifest.
    """
    transforms = _variant_transforms(seed)
    record = {
        "seed": int(seed),
        "transforms": [{"name": type(t).__name__, **t.draw(volume)} for t in transforms],
    }
    pipeline = Compose(transforms)
    out, *rest = pipeline(volume, *labels) if labels else (pipeline(volume),)
    return out, tuple(rest), record
