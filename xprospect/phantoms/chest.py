"""A procedural, seedable chest CT phantom in Hounsfield units.

The phantom is built in the canonical orientation of ``docs/conventions.md`` (axis 0 head to feet,
axis 1 front to back, axis 2 patient's right to left) over a 320 mm field of view by default, the
field of view CT preprocessing resamples to, so a 128^3 phantom has 2.5 mm voxels. It holds:

- a body whose cross-section widens from the neck over the shoulders to the chest, with skin,
  subcutaneous fat and chest-wall muscle;
- two lungs (about -850 to -750 HU, denser towards the back as in a supine patient, with a faint
  texture) holding random branching pulmonary vessel trees and airway trees; the trachea, carina
  and main and lobar bronchi;
- the heart (myocardium slightly denser than blood) anterior and on the patient's left, with the
  aorta (ascending, arch, descending left of the spine), its arch branches, the pulmonary trunk and
  arteries, the central pulmonary veins, the venae cavae, brachiocephalic and jugular veins, the
  oesophagus and the thyroid;
- the spine (vertebrae with a cortical shell, cancellous core, arch and processes; discs; the
  spinal canal), 12 rib pairs with costal cartilages, the sternum, clavicles and scapulae;
- the diaphragm, with the liver under the higher right dome and the stomach (with its gas, which
  rises anteriorly in a supine patient) and spleen under the left one;
- optionally, solid nodules of 3 to 15 mm inside the lungs.

Everything random (body size and shape, position, inspiration, heart size, the trees, the HU
levels, the texture, the noise, the nodules) comes from ``numpy.random.SeedSequence(seed)``, so the
same seed gives the same phantom, and the anatomy does not depend on the grid size: a 64^3 and a
128^3 phantom with one seed show the same body. The global random state is never touched.

Anatomy is defined analytically in millimetres: shapes whose cross-section is symmetric about the
midline are described by their half-width as a function of (z, y), so testing a whole volume costs
one broadcast comparison; tubes (vessels, airways, ribs) are sampled along their centre lines and
stamped as unions of balls.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from xprospect.constants import DEFAULT_FOV_MM
from xprospect.errors import ConfigError
from xprospect.image import Volume

__all__ = [
    "BONE_LABELS",
    "LABELS",
    "LUNG_LABELS",
    "PHANTOM_CALIBRATIONS",
    "ChestPhantom",
    "Nodule",
    "PhantomCalibration",
    "chest_phantom",
    "chest_phantoms",
    "phantom_calibration",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

LABELS: dict[str, int] = {
    "background": 0,
    "skin": 1,
    "fat": 2,
    "muscle": 3,
    "mediastinum": 4,
    "lung": 5,
    "pulmonary_vessel": 6,
    "airway": 7,
    "airway_wall": 8,
    "trachea": 9,
    "heart": 10,
    "aorta": 11,
    "artery": 12,
    "pulmonary_artery": 13,
    "vein": 14,
    "esophagus": 15,
    "thyroid": 16,
    "vertebra": 17,
    "disc": 18,
    "spinal_canal": 19,
    "rib": 20,
    "costal_cartilage": 21,
    "sternum": 22,
    "clavicle": 23,
    "scapula": 24,
    "diaphragm": 25,
    "liver": 26,
    "stomach": 27,
    "stomach_gas": 28,
    "spleen": 29,
    "abdomen": 30,
    "nodule": 31,
}
"""Structure name to the value it has in :attr:`ChestPhantom.labels` (treat as read-only).

``background`` is the air around the body; ``mediastinum`` is the fat between the mediastinal
organs; ``artery`` the aortic arch branches; ``vein`` the venae cavae, brachiocephalic, jugular
and central pulmonary veins; ``pulmonary_vessel`` the vessel trees inside the lungs; ``airway``
the air inside the bronchi and ``trachea`` inside the trachea."""

LUNG_LABELS: tuple[str, ...] = ("lung", "pulmonary_vessel", "airway", "airway_wall", "nodule")
"""The labels found inside :attr:`ChestPhantom.lung_mask`."""

BONE_LABELS: tuple[str, ...] = ("vertebra", "rib", "sternum", "clavicle", "scapula")
"""The labels of bone (costal cartilage is not counted)."""

# Tissue classes: finer than labels (a bone's cortex and marrow share a label but not a HU level).
# Each class is (name, label, mean HU, per-phantom standard deviation of that mean).
_TISSUES: tuple[tuple[str, str, float, float], ...] = (
    ("air", "background", -1000.0, 0.0),
    ("skin", "skin", 30.0, 6.0),
    ("fat", "fat", -100.0, 8.0),
    ("muscle", "muscle", 45.0, 5.0),
    ("mediastinum", "mediastinum", -85.0, 10.0),
    ("lung", "lung", -850.0, 0.0),  # set from the inspiration level
    ("vessel", "pulmonary_vessel", 40.0, 4.0),
    ("vessel_partial", "pulmonary_vessel", -450.0, 40.0),  # sub-voxel vessels, partial volume
    ("airway_lumen", "airway", -990.0, 0.0),
    ("airway_wall", "airway_wall", 20.0, 8.0),
    ("trachea_lumen", "trachea", -995.0, 0.0),
    ("myocardium", "heart", 45.0, 4.0),
    ("heart_blood", "heart", 36.0, 3.0),
    ("aorta", "aorta", 38.0, 3.0),
    ("artery", "artery", 38.0, 3.0),
    ("pulmonary_artery", "pulmonary_artery", 37.0, 3.0),
    ("vein", "vein", 36.0, 3.0),
    ("esophagus", "esophagus", 38.0, 5.0),
    ("esophagus_air", "esophagus", -980.0, 0.0),
    ("thyroid", "thyroid", 90.0, 12.0),
    ("vertebra_cortex", "vertebra", 850.0, 60.0),
    ("vertebra_marrow", "vertebra", 260.0, 25.0),
    # Pedicles, laminae and processes: thin cortex round little marrow, partial volume at 2.5 mm.
    ("vertebra_arch", "vertebra", 480.0, 40.0),
    ("disc", "disc", 80.0, 8.0),
    ("spinal_canal", "spinal_canal", 30.0, 5.0),
    ("rib_cortex", "rib", 850.0, 60.0),
    ("rib_marrow", "rib", 280.0, 25.0),
    ("cartilage", "costal_cartilage", 130.0, 25.0),
    ("sternum_cortex", "sternum", 800.0, 60.0),
    ("sternum_marrow", "sternum", 260.0, 25.0),
    ("clavicle_cortex", "clavicle", 900.0, 60.0),
    ("clavicle_marrow", "clavicle", 280.0, 25.0),
    ("scapula", "scapula", 700.0, 60.0),
    ("diaphragm", "diaphragm", 45.0, 5.0),
    ("liver", "liver", 60.0, 6.0),
    ("stomach", "stomach", 30.0, 6.0),
    ("stomach_gas", "stomach_gas", -990.0, 0.0),
    ("spleen", "spleen", 48.0, 5.0),
    ("abdomen", "abdomen", 20.0, 8.0),
    ("nodule", "nodule", 0.0, 0.0),  # each nodule gets its own level
)
_T: dict[str, int] = {name: i for i, (name, _, _, _) in enumerate(_TISSUES)}
_TISSUE_LABEL = np.array([LABELS[label] for _, label, _, _ in _TISSUES], dtype=np.uint8)
_LUNG_TISSUES = np.array(
    [i for i, (_, label, _, _) in enumerate(_TISSUES) if label in LUNG_LABELS], dtype=np.uint8
)


@dataclass(frozen=True)
class Nodule:
    """A spherical nodule placed in a lung.

    Attributes:
        index: Array index (i, j, k) of its centre voxel.
        center_mm: RAS+ world position of its centre, in mm.
        diameter_mm: Its diameter.
        hu: Its attenuation.
        side: ``"right"`` or ``"left"``: the patient's side, i.e. which lung.
    """

    index: tuple[int, int, int]
    center_mm: tuple[float, float, float]
    diameter_mm: float
    hu: float
    side: str


@dataclass(frozen=True, eq=False)
class ChestPhantom:
    """A synthetic chest CT and its ground truth.

    Attributes:
        volume: Canonical HU volume (float32).
        lung_mask: 1 inside the lungs (parenchyma with its vessels, airways and nodules), else 0;
            uint8, same geometry as ``volume``.
        labels: Structure labels (uint8, see :data:`LABELS`), same geometry as ``volume``.
        nodules: The nodules placed in the lungs.
        seed: The seed it was made from; ``chest_phantom(shape, seed)`` makes it again.
        params: The random anatomical choices (body size in mm, inspiration level, ...).
    """

    LABELS: ClassVar[Mapping[str, int]] = MappingProxyType(LABELS)
    """The label map's names (the module's :data:`LABELS`, read-only)."""

    volume: Volume
    lung_mask: Volume
    labels: Volume
    nodules: tuple[Nodule, ...] = ()
    seed: int = 0
    params: Mapping[str, float] = field(default_factory=dict)

    def mask(self, *names: str) -> BoolArray:
        """Boolean array of the voxels carrying any of the named labels."""
        unknown = [n for n in names if n not in LABELS]
        if unknown:
            raise KeyError(f"unknown label(s) {unknown}; known: {sorted(LABELS)}")
        return np.isin(self.labels.array, [LABELS[n] for n in names])

    @property
    def lung_volume_ml(self) -> float:
        """Volume of both lungs in ml."""
        return float(np.count_nonzero(self.lung_mask.array) * self.volume.voxel_volume_ml)


# ------------------------------------------------------------------------------------------------
# Small geometric helpers
# ------------------------------------------------------------------------------------------------


def _superellipse(t: FloatArray, p: float | FloatArray) -> FloatArray:
    """Half-width (relative) of a superellipse at relative height t; negative outside |t| < 1.

    Going linearly negative outside (instead of NaN) keeps the function monotone, so boundaries
    can be found by bisection.
    """
    a = np.abs(t)
    inside = np.clip(1.0 - np.minimum(a, 1.0) ** p, 0.0, 1.0) ** (1.0 / p)
    return np.where(a < 1.0, inside, 1.0 - a)


def _smoothstep(t: FloatArray | float) -> FloatArray:
    t = np.clip(t, 0.0, 1.0)
    return np.asarray(t * t * (3.0 - 2.0 * t), dtype=np.float64)


def _bisect(f: Callable[[FloatArray], FloatArray], lo: FloatArray, hi: FloatArray) -> FloatArray:
    """Elementwise root of f between lo (f < 0) and hi (f >= 0), to ~1e-5 of the bracket."""
    lo, hi = np.array(lo, dtype=np.float64), np.array(hi, dtype=np.float64)
    for _ in range(24):
        mid = 0.5 * (lo + hi)
        neg = f(mid) < 0
        lo = np.where(neg, mid, lo)
        hi = np.where(neg, hi, mid)
    return 0.5 * (lo + hi)


def _unit(v: Sequence[float] | FloatArray) -> FloatArray:
    a = np.asarray(v, dtype=np.float64)
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def _curve(ctrl: npt.ArrayLike, n: int = 60) -> FloatArray:
    """A smooth curve (n, 3) through control points (cubic spline over chord length)."""
    c = np.asarray(ctrl, dtype=np.float64)
    if len(c) == 2:
        return c[0] + np.linspace(0.0, 1.0, n)[:, None] * (c[1] - c[0])
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(c, axis=0), axis=1))])
    from scipy.interpolate import CubicSpline  # imported here: scipy.interpolate is slow to load

    spline = CubicSpline(s, c, axis=0, bc_type="natural")
    return np.asarray(spline(np.linspace(0.0, s[-1], n)), dtype=np.float64)


@dataclass(frozen=True)
class _Tube:
    """A tube along a centre line: points (K, 3) in anatomical mm (z, y, x) and radii (K,).

    ``core`` is (tissue, inset mm): the inner part, ``inset`` mm under the surface, gets that
    tissue (marrow in a bone, air in an airway). ``excl`` is the margin (mm) by which the tube
    pushes the lungs away; None for tubes that may run inside them.
    """

    tissue: str
    points: FloatArray
    radii: FloatArray
    core: tuple[str, float] | None = None
    excl: float | None = 3.0


def _tube(
    tissue: str,
    ctrl: Sequence[npt.ArrayLike],
    radius: float | Sequence[float],
    n: int = 60,
    core: tuple[str, float] | None = None,
    excl: float | None = 3.0,
) -> _Tube:
    pts = _curve(np.asarray(ctrl, dtype=np.float64), n)
    r = np.broadcast_to(np.asarray(radius, dtype=np.float64), (len(ctrl),))
    radii = np.interp(np.linspace(0, 1, n), np.linspace(0, 1, len(ctrl)), r)
    return _Tube(tissue, pts, radii, core, excl)


# ------------------------------------------------------------------------------------------------
# Random anatomical parameters
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhantomCalibration:
    """The population a phantom is drawn from: the knobs measured against real chest CT.

    ``"original"`` is the phantom as first built (anatomy from textbook proportions);
    ``"real_ct"`` closes the largest gaps measured against the real LIDC chest CT the package
    ships (``benchmarks/bench_phantom_realism.py`` prints the distances before and after). Each
    field of ``"real_ct"`` that differs says why in :data:`PHANTOM_CALIBRATIONS`.

    Attributes:
        name: What manifests and reports call it.
        half_width_mm: Mean half-width of the chest (left-right), before the stature factor;
            each phantom draws it times a factor within ``size_factor``.
        half_depth_mm: Mean half-depth (front-back), likewise.
        size_factor: Range of the uniform factors on the stature (all three axes), on the
            half-width and on the half-depth, each drawn on its own.
        fat_mm: Range of the subcutaneous fat thickness.
        shift_z_mm: Range of the anatomy's shift towards the feet in the field of view: the
            lower it is, the higher the lung apices sit (a chest CT is framed from the apices
            down, so the neck is mostly outside the field).
        inspiration: Range of the inspiration level, 0 (shallow) to 1 (full): it sets how low
            the diaphragm sits and how much air the lungs hold.
        lung_base_hu: The lung's HU at the front before the inspiration term (``- 60 HU`` at
            full inspiration) and the gravity gradient.
        cortical_bone_scale: Factor on the HU of cortical bone (shells of vertebrae, ribs,
            sternum, clavicles, scapulae): below 1 for the partial volume of ~1 mm cortices in
            2.5 mm voxels that a scanner's reconstruction averages in.
        lung_gradient_hu: HU rise of the lung from front to back (supine, gravity-dependent).
        lung_texture_hu: Standard deviation of the lung's smooth texture field.
        lung_texture_mm: Size of that field's blobs.
        shoulder_rise_mm: How much higher the body widens from the neck to the shoulders:
            a CT's arms are raised, so the soft tissue of the shoulder girdle and axillae
            reaches the level of the lung apices.
        chest_wall_mm: Thickness of the chest wall's muscle between the subcutaneous fat and
            the pleura, at the front, the sides and the back: with the fat it sets how much of
            the body's depth and width the lungs may fill.
        psf_sigma_mm: Standard deviation of a Gaussian blur applied before the noise (the
            scanner's point-spread function and slice profile); 0 keeps edges sharp.
        supersample: Build the phantom this many times finer per axis and average it down,
            so every voxel holds the mean HU of its volume (partial volume) as in a real CT
            resampled to the cube; 1 samples each voxel at its centre.
    """

    name: str
    half_width_mm: float = 160.0
    half_depth_mm: float = 115.0
    size_factor: tuple[float, float] = (0.95, 1.05)
    fat_mm: tuple[float, float] = (6.0, 18.0)
    shift_z_mm: tuple[float, float] = (4.0, 20.0)
    inspiration: tuple[float, float] = (0.55, 1.0)
    lung_base_hu: float = -790.0
    cortical_bone_scale: float = 1.0
    lung_gradient_hu: float = 60.0
    lung_texture_hu: float = 22.0
    lung_texture_mm: float = 8.0
    shoulder_rise_mm: float = 0.0
    chest_wall_mm: tuple[float, float, float] = (18.0, 16.0, 30.0)
    psf_sigma_mm: float = 0.0
    supersample: int = 1

    def __post_init__(self) -> None:
        # A custom calibration is user input: a range drawn backwards or a wall that leaves no
        # room for the lungs would otherwise build a phantom with an inside-out cage.
        for key in ("size_factor", "fat_mm", "shift_z_mm", "inspiration"):
            lo, hi = getattr(self, key)
            if not lo <= hi:
                raise ConfigError(
                    f"phantom calibration {self.name!r}: {key} {(lo, hi)} is not a range"
                )
        walls = tuple(self.chest_wall_mm)
        if len(walls) != 3 or not all(math.isfinite(w) and w >= 0.0 for w in walls):
            raise ConfigError(
                f"phantom calibration {self.name!r}: chest_wall_mm needs three thicknesses >= 0 "
                f"(front, sides, back), got {self.chest_wall_mm!r}"
            )
        front, side, back = walls
        fat = self.fat_mm[1]
        if front + back + 2 * fat >= 2 * self.half_depth_mm or side + fat >= self.half_width_mm:
            raise ConfigError(
                f"phantom calibration {self.name!r}: chest_wall_mm {walls} and fat_mm up to {fat} "
                f"leave no room for the lungs in a chest {2 * self.half_width_mm:g} x "
                f"{2 * self.half_depth_mm:g} mm"
            )


_REAL_CT = PhantomCalibration(
    "real_ct",
    half_width_mm=165.0,
    half_depth_mm=126.0,
    fat_mm=(10.0, 30.0),
    shift_z_mm=(-36.0, -12.0),
    inspiration=(0.6, 1.0),
    lung_base_hu=-870.0,
    cortical_bone_scale=0.9,
    lung_gradient_hu=140.0,
    lung_texture_hu=40.0,
    lung_texture_mm=16.0,
    shoulder_rise_mm=30.0,
    psf_sigma_mm=1.0,
    supersample=2,
)

PHANTOM_CALIBRATIONS: Mapping[str, PhantomCalibration] = MappingProxyType(
    {
        "original": PhantomCalibration("original"),
        # Measured on the LIDC CT at 128^3 (2.5 mm voxels) against phantoms 0-3 (original):
        # anterior-posterior body diameter 248 mm vs 220-235, left-right 310 vs 295-315, lung
        # apex at the top of the field vs 38 mm below it, the voxels >= 200 HU averaging 385 HU
        # (90th percentile 539) vs 520-570 (852-933), the lung's 10-90 % HU range 220 HU vs 75,
        # fat 36 % of the body's voxels vs 23-28 %, the lungs' cross-section halving below its
        # widest level at 202 mm from the top of the field vs 257-265 mm. A second real CT
        # (RICORD, validation only) agrees but for the diaphragm: 253 mm, 320 mm, apex cut,
        # 345 (545) HU, 297 HU, 44 %, 240 mm; so inspiration keeps a wide range. DRRs of the
        # phantoms showed sharp rib stripes and air in the top corners that real CTs' do not:
        # hence the supersampling (partial volume) and the shoulders.
        "real_ct": _REAL_CT,
        # real_ct's lungs are too shallow: at the level of their widest cross-section they
        # reach 155 mm front to back (mean of 40 phantoms at 64^3) against 185 (LIDC) and
        # 165 mm (RICORD), while the bodies match: the chest wall between the fat and the pleura
        # is thick, and the posterior recesses stop short of the spine. A thinner wall gives
        # 180 mm, but also more lung than either real CT (4.8 l against 3.7 and 4.3; real_ct
        # 4.1) and a larger share of the body (0.225 against 0.20 and 0.19; real_ct 0.19).
        # Over three training seeds the demo trained on it transfers better to RICORD
        # (+0.67 dB) and worse to LIDC (-0.20 dB), so it is an alternative, not the demo's.
        "real_ct_lungs": replace(_REAL_CT, name="real_ct_lungs", chest_wall_mm=(8.0, 14.0, 14.0)),
        # The real_ct means with the spread of an adult population instead of +-5 %: adult
        # chest diameters vary with a coefficient of variation near 10 % (the product of two
        # +-12 % uniform draws, stature and width, has that), and real CTs are framed and
        # breathed less uniformly than two scans show. A model trained on a narrow population
        # answers with that population's anatomy whatever the radiograph shows; a wide one
        # must read it from the radiograph (domain randomisation), which
        # benchmarks/bench_transfer.py measures on real CT.
        "real_ct_population": replace(
            _REAL_CT,
            name="real_ct_population",
            size_factor=(0.88, 1.12),
            fat_mm=(5.0, 35.0),
            shift_z_mm=(-50.0, 0.0),
            inspiration=(0.35, 1.0),
        ),
    }
)
"""The phantom populations by name (read-only); see :class:`PhantomCalibration`."""

_CORTICAL_TISSUES = (
    "vertebra_cortex",
    "vertebra_arch",
    "rib_cortex",
    "sternum_cortex",
    "clavicle_cortex",
    "scapula",
)


def phantom_calibration(calibration: str | PhantomCalibration) -> PhantomCalibration:
    """The population named ``calibration`` in :data:`PHANTOM_CALIBRATIONS` (an instance is
    returned as it is): the one check of a calibration name every entry point shares.

    Raises:
        ConfigError: An unknown name, with the known ones.
    """
    if isinstance(calibration, PhantomCalibration):
        return calibration
    if calibration not in PHANTOM_CALIBRATIONS:
        raise ConfigError(
            f"unknown phantom calibration {calibration!r}; "
            f"known: {', '.join(sorted(PHANTOM_CALIBRATIONS))}"
        )
    return PHANTOM_CALIBRATIONS[calibration]


@dataclass(frozen=True)
class _Params:
    scale: float  # isotropic stature factor
    half_width: float  # chest half-width (mm, before scale)
    half_depth: float
    p_body: float  # superellipse exponent of the body cross-section
    fat: float  # subcutaneous fat thickness (mm)
    shift: tuple[float, float, float]  # position of the anatomy in the FOV (grid mm, z/y/x)
    inspiration: float  # 0 (shallow) .. 1 (full)
    heart_scale: float
    heart_axis: tuple[float, float, float]
    dome_gap: float  # how much lower the left dome is than the right (mm)
    pitch: float  # vertebral level spacing (mm)
    kyphosis: float  # mm
    trachea_r: float
    gas: float  # fraction of the stomach's depth filled with gas
    chest_wall: tuple[float, float, float]  # front, side, back (mm; calibration)
    shoulder_rise: float = 0.0  # mm the neck-to-shoulder widening moves up (calibration)


def _sample_params(rng: np.random.Generator, cal: PhantomCalibration) -> _Params:
    # The draws keep their order whatever the calibration, so a seed keeps its other choices.
    u = rng.uniform
    axis = _unit(np.array([0.45, -0.55, 0.70]) + rng.normal(0.0, 0.06, 3))
    return _Params(
        scale=u(*cal.size_factor),
        half_width=cal.half_width_mm * u(*cal.size_factor),
        half_depth=cal.half_depth_mm * u(*cal.size_factor),
        p_body=u(2.1, 2.7),
        fat=u(*cal.fat_mm),
        shift=(u(*cal.shift_z_mm), u(-6.0, 6.0), u(-6.0, 6.0)),
        inspiration=u(*cal.inspiration),
        heart_scale=u(0.9, 1.12),
        heart_axis=(float(axis[0]), float(axis[1]), float(axis[2])),
        dome_gap=u(10.0, 22.0),
        pitch=24.0 * u(0.96, 1.04),
        kyphosis=u(3.0, 10.0),
        trachea_r=u(8.0, 10.0),
        gas=u(0.15, 0.45),
        shoulder_rise=cal.shoulder_rise_mm,
        chest_wall=cal.chest_wall_mm,
    )


def _hu_table(rng: np.random.Generator, inspiration: float, cal: PhantomCalibration) -> FloatArray:
    hu = np.array([m + (s * rng.standard_normal() if s else 0.0) for _, _, m, s in _TISSUES])
    for name in _CORTICAL_TISSUES:
        hu[_T[name]] *= cal.cortical_bone_scale
    # Deeper inspiration means more air per gram of lung: lower attenuation.
    hu[_T["lung"]] = cal.lung_base_hu - 60.0 * inspiration + 8.0 * rng.standard_normal()
    return hu


# ------------------------------------------------------------------------------------------------
# The anatomy, in anatomical millimetres: z towards the feet, y towards the back, x towards the
# patient's left (the canonical axes), origin at the centre of the field of view before shifting.
# ------------------------------------------------------------------------------------------------

_CAGE_TILT = 0.45  # how much the thoracic inlet slopes down anteriorly (dz/dy)
_CAGE_TOP = -136.0  # top of the pleural domes (posteriorly), mm
_CAGE_FULL = 20.0  # level below which the cage has its full width


class _Anatomy:
    """Analytic anatomy for one set of parameters (grid-independent)."""

    def __init__(self, p: _Params) -> None:
        self.p = p
        hw, hd, fat = p.half_width, p.half_depth, p.fat
        # Body outline: half-width, half-depth and centre (y) along z. Neck values are absolute,
        # chest values follow the sampled size; PCHIP keeps the outline smooth and monotone.
        from scipy.interpolate import PchipInterpolator  # slow to import; only needed here

        r = p.shoulder_rise
        kz = [-260, -165 - r, -150 - r, -138 - r, -125 - r, -110 - r, -95 - r, -60, -10, 50, 120]
        kz.append(260)
        neck_hw, chest_hw = [56, 58, 66, 92, 118], [0.86, 0.89, 0.93, 0.98, 1.0, 0.99, 0.97]
        neck_hd, chest_hd = [56, 56, 57, 62, 72], [0.8, 0.86, 0.93, 0.98, 1.0, 1.0, 1.0]
        self._hw = PchipInterpolator(kz, neck_hw + [f * hw for f in chest_hw])
        self._hd = PchipInterpolator(kz, neck_hd + [f * hd for f in chest_hd])
        self._yc = PchipInterpolator(kz, [40, 40, 38, 30, 22, 14, 8, 3, 0, 0, 0, 0])
        # Thoracic cage (pleural surface; continues as the inner abdominal wall).
        wall_front, wall_side, wall_back = p.chest_wall
        front, back = -hd + fat + wall_front, hd - fat - wall_back
        self.a0 = hw - fat - wall_side
        self.b0 = (back - front) / 2.0
        self.yc0 = (back + front) / 2.0
        self.y_ref = self.yc0 + 0.5 * self.b0  # the inlet's tilt pivots near the spine
        self.pc = 2.3
        # Spine.
        self.pitch = p.pitch
        self.z_t1 = -118.0
        # Diaphragm: right dome near T10 at full inspiration, up to 45 mm higher at shallow.
        self.z_dome_r = self.z_level(9.6) - (1.0 - p.inspiration) * 45.0
        self.z_dome_l = self.z_dome_r + p.dome_gap
        self.dome_r = (-0.42 * self.a0, self.yc0 + 0.05 * self.b0)
        self.dome_l = (0.45 * self.a0, self.yc0 + 0.10 * self.b0)
        self.z_carina = self.z_level(4) + 0.5 * self.pitch
        self._build_heart()
        self.tubes: list[_Tube] = []
        self._build_vessels_and_airways()
        self._build_ribs()
        self.lung_roots = self._lung_roots()

    # --- profiles -----------------------------------------------------------------------------
    def z_level(self, k: float) -> float:
        """z of the centre of vertebra k (1 = T1, 12 = T12, 0 = C7, 13 = L1)."""
        return self.z_t1 + (k - 1.0) * self.pitch

    def spine_y(self, z: FloatArray | float) -> FloatArray:
        """y of the vertebral body centres (a gentle thoracic kyphosis)."""
        zz = np.asarray(z, dtype=np.float64)
        t = (zz - self.z_level(7)) / 170.0
        return 38.0 + 4.0 + self.p.kyphosis * np.clip(1.0 - t * t, 0.0, 1.0)

    def spine_level(self, z: FloatArray | float) -> FloatArray:
        return 1.0 + (np.asarray(z, dtype=np.float64) - self.z_t1) / self.pitch

    def vertebra_axes(self, z: FloatArray | float) -> tuple[FloatArray, FloatArray]:
        """Half-width and half-depth of the vertebral bodies (they grow down the spine)."""
        k = np.clip(self.spine_level(z), -2.0, 16.0)
        return 13.0 + 0.8 * k, 9.5 + 0.55 * k

    def body_w(self, z: FloatArray, y: FloatArray, inset: float = 0.0) -> FloatArray:
        """Half-width of the body (shrunk by ``inset`` mm) at (z, y); negative outside."""
        hw = self._hw(z) - inset
        hd = self._hd(z) - inset
        t = (y - self._yc(z)) / hd
        # The back is flatter than the front (a larger exponent squares the outline off).
        return hw * _superellipse(t, np.where(t > 0, self.p.p_body + 1.2, self.p.p_body))

    def _g(self, ze: FloatArray) -> FloatArray:
        u = (_CAGE_FULL - ze) / (_CAGE_FULL - _CAGE_TOP)
        return np.where(ze >= _CAGE_FULL, 1.0, np.sqrt(np.clip(1.0 - u * u, 0.0, 1.0)))

    def cage_w(self, z: FloatArray, y: FloatArray) -> FloatArray:
        """Half-width of the thoracic cage at (z, y); negative outside.

        The cage narrows towards its top along a plane that slopes down anteriorly (the thoracic
        inlet), so the lung apices sit posteriorly and the first ribs are small.
        """
        ze = z + _CAGE_TILT * (y - self.y_ref)
        g = self._g(ze)
        a = self.a0 * g
        b = self.b0 * (0.3 + 0.7 * g)
        yc = self.yc0 + (1.0 - g) * 28.0
        return a * _superellipse((y - yc) / b, self.pc)

    def cage_front(self, z: FloatArray) -> FloatArray:
        """y of the anterior cage surface in the midline."""
        z = np.asarray(z, dtype=np.float64)
        return _bisect(
            lambda y: -self.cage_w(z, y), np.full(z.shape, self.yc0), np.full(z.shape, -200.0)
        )

    def diaphragm_z(self, y: FloatArray, x: FloatArray) -> FloatArray:
        """z of the upper diaphragm surface (the higher of the two domes)."""

        def dome(z0: float, xc: float, yc: float) -> FloatArray:
            ty = (y - yc) / self.b0
            return (
                z0
                + 42.0 * ((x - xc) / (0.62 * self.a0)) ** 2
                + 30.0 * ty**2
                + 30.0 * np.clip(ty, 0.0, None) ** 2  # the posterior recesses go deepest
            )

        return np.minimum(dome(self.z_dome_r, *self.dome_r), dome(self.z_dome_l, *self.dome_l))

    def midline_gap(self, z: FloatArray, y: FloatArray) -> FloatArray:
        """Half-width of the mediastinal strip the lungs never cross: wider above the heart
        (thymic fat) and posteriorly (oesophagus, azygos), narrow at the anterior junction."""
        z, y = np.asarray(z), np.asarray(y)
        upper = 10.0 / (1.0 + np.exp((z - self.z_carina) / 25.0))
        posterior = 8.0 * np.clip((y - self.yc0 + 0.3 * self.b0) / self.b0, 0.0, 1.0)
        return 7.0 + upper + posterior

    # --- heart ----------------------------------------------------------------------------
    def _build_heart(self) -> None:
        p = self.p
        s = p.heart_scale
        z_mid = 0.5 * (self.z_dome_r + self.z_dome_l) + 20.0
        self.heart_c = np.array([z_mid - 42.0 * s, self.yc0 - 0.30 * self.b0, 0.17 * self.a0])
        e1 = _unit(p.heart_axis)
        e2 = _unit(np.cross(e1, [0.0, 1.0, 0.0]))
        e3 = np.cross(e1, e2)
        self.heart_rot = np.stack([e1, e2, e3])
        self.heart_semi = np.array([58.0, 44.0, 36.0]) * s
        c = self.heart_c
        self.esophagus_y = float(self.spine_y(c[0] - 20) - self.vertebra_axes(c[0] - 20)[1] - 9.0)
        # Atria as spheres: right atrium forms the right heart border, left atrium the back.
        self.ra = (np.array([c[0] + 2.0, c[1] + 22.0, -0.22 * self.a0]), 26.0 * s)
        self.la = (np.array([c[0] - 28.0 * s, self.esophagus_y - 9.0 - 20.0 * s, 4.0]), 20.0 * s)

    def heart_q(
        self, z: FloatArray, y: FloatArray, x: FloatArray, margin: float = 0.0
    ) -> FloatArray:
        """<= 1 inside the heart grown by ``margin`` mm (min over ventricles and atria)."""
        d = (z - self.heart_c[0], y - self.heart_c[1], x - self.heart_c[2])
        q = np.zeros(np.broadcast_shapes(*(np.shape(v) for v in d)))
        for i in range(3):
            r = self.heart_rot[i]
            q = q + ((r[0] * d[0] + r[1] * d[1] + r[2] * d[2]) / (self.heart_semi[i] + margin)) ** 2
        for c, rad in (self.ra, self.la):
            q = np.minimum(
                q, ((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) / (rad + margin) ** 2
            )
        return q

    # --- tubes: great vessels, airways, oesophagus ---------------------------------------
    def _build_vessels_and_airways(self) -> None:
        p, c = self.p, self.heart_c
        s = p.heart_scale
        zc, top, bottom = self.z_carina, -260.0, 260.0
        z1 = self.z_level(1)
        _, ay_c = self.vertebra_axes(zc)
        y_tr = float(self.spine_y(zc) - ay_c - 21.0)  # trachea at the carina
        y_tr_top = float(self.spine_y(-170.0) - self.vertebra_axes(-170.0)[1] - 21.0)
        rt = p.trachea_r
        hil = 0.36 * self.a0
        t = self.tubes
        # Trachea and main bronchi: wall (airway_wall) with an air core.
        carina = np.array([zc, y_tr, -3.0])
        t.append(
            _tube(
                "airway_wall",
                [[top, y_tr_top, 0.0], [z1, 0.5 * (y_tr + y_tr_top), -1.0], carina],
                rt + 2.0,
                core=("trachea_lumen", 2.0),
                excl=4.0,
            )
        )
        rmb = carina + 24.0 * _unit([0.80, 0.10, -0.60])
        lmb = carina + 46.0 * _unit([0.62, 0.20, 0.76])
        self.bronchi = {"rmb": rmb, "lmb": lmb}
        t.append(_tube("airway_wall", [carina, rmb], 8.5, 20, ("airway_lumen", 1.8), 2.5))
        t.append(_tube("airway_wall", [carina, lmb], 7.5, 30, ("airway_lumen", 1.7), 2.5))
        # Aorta: root, ascending, arch over the left main bronchus, descending left of the spine.
        av = c + np.array([-40.0 * s, 14.0, -0.17 * self.a0 + 2.0])
        pv = c + np.array([-45.0 * s, -12.0, -0.17 * self.a0 + 18.0])
        desc = []
        for z in np.linspace(zc, bottom, 9):
            axz, ayz = self.vertebra_axes(z)
            hiatus = float(_smoothstep((z - self.z_dome_r) / 60.0))
            desc.append(
                [
                    z,
                    float(self.spine_y(z) - 0.8 * ayz - 4.0 - 6.0 * hiatus),
                    axz + 9.0 - 10 * hiatus,
                ]
            )
        aorta = [
            av,
            np.add(av, (-25.0, -6.0, -6.0)),
            [zc - 18.0, y_tr - 22.0, -10.0],
            [zc - 32.0, y_tr - 4.0, 2.0],
            [zc - 24.0, y_tr + 16.0, 20.0],
            *desc,
        ]
        radii = [15.0, 15.0, 14.0, 13.0, 12.0, *np.linspace(12.0, 10.5, len(desc))]
        t.append(_tube("aorta", aorta, radii, 120))
        # Arch branches up into the neck.
        yn = y_tr_top + 4.0
        t.append(_tube("artery", [[zc - 28, y_tr - 14, -6], [z1 + 5, y_tr - 8, -16]], 6.0, 20))
        t.append(
            _tube("artery", [[z1 + 5, y_tr - 8, -16], [z1 - 25, yn, -26], [top, yn, -28]], 4.0)
        )
        t.append(
            _tube(
                "artery",
                [
                    [z1 + 5, y_tr - 8, -16],
                    [z1 - 8, y_tr + 5, -40],
                    [z1 - 16, y_tr + 12, -80],
                    [z1 - 14, y_tr + 18, -140],
                ],
                4.5,
            )
        )
        t.append(_tube("artery", [[zc - 32, y_tr, 8], [z1, yn - 2, 22], [top, yn, 28]], 4.0))
        t.append(
            _tube(
                "artery",
                [
                    [zc - 30, y_tr + 8, 16],
                    [z1, y_tr + 12, 34],
                    [z1 - 12, y_tr + 14, 72],
                    [z1 - 12, y_tr + 18, 140],
                ],
                4.5,
            )
        )
        # Pulmonary trunk and arteries to the hila.
        pb = np.array([zc + 6.0, y_tr - 22.0, 10.0])
        self.hilum_a = {
            "right": np.array([zc + 14.0, y_tr - 6.0, -hil]),
            "left": np.array([zc + 0.0, y_tr + 8.0, hil]),
        }
        t.append(_tube("pulmonary_artery", [pv, [pb[0] + 14, y_tr - 32, 16], pb], 14.0, 30))
        t.append(
            _tube(
                "pulmonary_artery", [pb, [zc + 8, y_tr - 13, -14], self.hilum_a["right"]], 10.0, 30
            )
        )
        t.append(
            _tube("pulmonary_artery", [pb, [zc - 4, y_tr - 8, 26], self.hilum_a["left"]], 10.0, 30)
        )
        # Veins: SVC from the brachiocephalic confluence to the right atrium; IVC below it.
        ra, r_ra = self.ra
        conf = np.array([zc - 45.0, y_tr - 22.0, -22.0])
        t.append(
            _tube(
                "vein",
                [conf, [zc, y_tr - 24, -26], np.add(ra, (-r_ra * 0.7, -4.0, -4.0))],
                10.0,
                40,
            )
        )
        t.append(_tube("vein", [conf, [z1 + 2, y_tr - 15, -38], [top, yn - 4, -40]], 7.0, 40))
        t.append(
            _tube(
                "vein",
                [
                    conf,
                    [zc - 56, y_tr - 32, 0],
                    [zc - 62, y_tr - 26, 24],
                    [z1, y_tr - 12, 40],
                    [top, yn - 4, 40],
                ],
                7.0,
                50,
            )
        )
        ivc_y = float(self.spine_y(self.z_dome_r + 40) - 30.0)
        t.append(
            _tube(
                "vein",
                [
                    np.add(ra, (r_ra * 0.6, 4.0, 0.0)),
                    [self.z_dome_r + 40, ivc_y, -20],
                    [bottom, ivc_y + 6, -18],
                ],
                12.0,
                40,
            )
        )
        # Central pulmonary veins from the hila into the left atrium.
        la = self.la[0]
        self.hilum_v = {
            "right": [
                np.array([zc + 22, y_tr - 12, -hil + 2]),
                np.array([zc + 50, y_tr + 6, -hil + 4]),
            ],
            "left": [
                np.array([zc + 18, y_tr + 0, hil - 2]),
                np.array([zc + 45, y_tr + 12, hil - 4]),
            ],
        }
        for side in ("right", "left"):
            for h in self.hilum_v[side]:
                t.append(_tube("vein", [h, 0.5 * (h + la) + (-4.0, 0.0, 0.0), la], 6.5, 30))
        # Oesophagus behind the trachea, then left of the aorta through the hiatus.
        ye = self.esophagus_y
        gej = np.array([self.z_dome_l + 25.0, float(self.spine_y(self.z_dome_l) - 32.0), 30.0])
        t.append(
            _tube(
                "esophagus",
                [
                    [top, y_tr_top + rt + 8, 3],
                    [zc, y_tr + rt + 8, 5],
                    [c[0], ye, 8],
                    [self.z_dome_l, ye - 2, 16],
                    gej,
                ],
                7.5,
                80,
                core=("esophagus_air", 6.0),
            )
        )

    # --- ribs, cartilages, clavicles -------------------------------------------------------
    def cage_ray(self, z: FloatArray, theta: FloatArray, y0: FloatArray) -> FloatArray:
        """Distance from (y0, 0) to the cage surface along the axial ray at angle theta.

        theta is 0 towards the back and pi towards the front, measured through the patient's left
        (the sign of x is added by the caller)."""
        st, ct = np.abs(np.sin(theta)), np.cos(theta)
        return _bisect(
            lambda rho: rho * st - self.cage_w(z, y0 + rho * ct),
            np.zeros_like(z),
            np.full_like(z, 260.0),
        )

    def sternum_half_width(self, z: FloatArray | float) -> FloatArray:
        kz = [
            self.z_jugular,
            self.z_jugular + 20,
            self.z_angle,
            self.z_angle + 40,
            self.z_xiphi,
            self.z_xiphi + 30,
        ]
        w = np.interp(z, kz, [27.0, 24.0, 15.0, 18.0, 12.0, 3.0], left=0.0, right=0.0)
        return np.asarray(w, dtype=np.float64)

    def _build_ribs(self) -> None:
        self.z_jugular = self.z_level(2) + 0.5 * self.pitch
        self.z_angle = self.z_level(4) + 0.5 * self.pitch
        self.z_xiphi = self.z_level(9)
        pitch = self.pitch
        theta_b = np.array([0.88, 0.86, 0.84, 0.83, 0.82, 0.80, 0.78, 0.74, 0.70, 0.66, 0.55, 0.42])
        drop = np.array([35, 55, 70, 80, 88, 95, 100, 100, 95, 85, 60, 40]) * (pitch / 24.0)
        attach = np.concatenate(
            [
                [self.z_jugular + 10.0, self.z_angle],
                np.linspace(self.z_angle + 20, self.z_xiphi - 6, 5),
            ]
        )
        n = 90
        self.ribs: list[tuple[int, int, FloatArray, FloatArray]] = []
        for k in range(1, 13):
            zk = self.z_level(k)
            ys = float(self.spine_y(zk))
            ax, ay = (float(v) for v in self.vertebra_axes(zk))
            y_canal = ys + ay + 9.0
            th0 = 0.5
            th = np.linspace(th0, theta_b[k - 1] * np.pi, n)
            tau = (th - th0) / (th[-1] - th0)
            z = zk + 2.0 + drop[k - 1] * tau**1.3
            y0 = self.yc0 + (1.0 - self._g(z)) * 28.0
            r_rib = 4.5 + 1.0 * tau + (1.0 if k == 1 else 0.0)
            rho = self.cage_ray(z, th, y0) + r_rib + 1.5
            yy, xx = y0 + rho * np.cos(th), rho * np.sin(th)
            for side in (-1, 1):
                head = [zk - 4.0, ys + 0.2 * ay, side * (ax + 3.0)]
                tub = [zk, y_canal + 5.0, side * (ax + 16.0)]
                body = np.stack([z, yy, side * xx], axis=1)
                ctrl = np.concatenate([[head, tub], body[::10], body[-1:]])
                pts = _curve(ctrl, 120)
                radii = np.interp(
                    np.linspace(0, 1, 120),
                    np.linspace(0, 1, len(ctrl)),
                    np.concatenate([[4.0, 4.5], r_rib[::10], r_rib[-1:]]),
                )
                if k >= 11:  # floating ribs taper to a point
                    radii = radii * np.clip((1.0 - np.linspace(0, 1, 120)) * 6.0, 0.3, 1.0)
                self.ribs.append((k, side, pts, radii))
                # Costal cartilage: onward round the cage to the sternum (ribs 1-7) or up to
                # the cartilage above (8-10, the costal margin).
                if k <= 10:
                    span = (np.pi - th[-1]) if k <= 7 else 0.16 * np.pi
                    tc = np.linspace(th[-1], th[-1] + span * 0.999, 40)
                    z_end = attach[k - 1] if k <= 7 else z[-1] - 24.0
                    zcart = z[-1] + (z_end - z[-1]) * np.linspace(0, 1, 40) ** 0.8
                    y0c = self.yc0 + (1.0 - self._g(zcart)) * 28.0
                    rc = self.cage_ray(zcart, tc, y0c) + 5.5
                    cart = np.stack([zcart, y0c + rc * np.cos(tc), side * rc * np.sin(tc)], axis=1)
                    if k <= 7:
                        # Stop at the sternum's edge.
                        keep = np.abs(cart[:, 2]) > self.sternum_half_width(zcart) + 1.0
                        if not keep.all():
                            cart = cart[: max(2, int(np.argmin(keep)))]
                    self.tubes.append(_Tube("cartilage", cart, np.full(len(cart), 4.5), excl=2.0))
        # Clavicles: sternoclavicular joint to the acromion, curving forward medially.
        z_sc = self.z_jugular - 4.0
        y_sc = float(self.cage_front(np.array([z_sc]))[0]) - 12.0
        z_ac = z_sc - 14.0
        hw_ac = float(self._hw(z_ac))
        y_ac = float(self._yc(z_ac))
        for side in (-1, 1):
            self.tubes.append(
                _tube(
                    "clavicle_cortex",
                    [
                        [z_sc, y_sc, side * 26.0],
                        [z_sc - 5, y_sc - 5, side * 60.0],
                        [z_ac - 2, y_ac - 4.0, side * (hw_ac - 38.0)],
                        [z_ac, y_ac + 14.0, side * (hw_ac - 20.0)],
                    ],
                    [6.5, 6.5, 5.5, 5.5],
                    60,
                    core=("clavicle_marrow", 1.8),
                    excl=2.0,
                )
            )

    # --- lung interior (analytic, for the trees) -------------------------------------------
    def lung_inside(self, z: FloatArray, y: FloatArray, x: FloatArray) -> BoolArray:
        """Whether points are inside the pleural cavity, away from heart, spine and midline."""
        ax, ay = self.vertebra_axes(z)
        ys = self.spine_y(z)
        spine = ((x / (ax + 6.0)) ** 2 + ((y - ys) / (ay + 6.0)) ** 2 <= 1.0) | (
            (np.abs(x) < ax + 6.0) & (y > ys)
        )
        return (
            (np.abs(x) < self.cage_w(z, y) - 2.0)
            & (z < self.diaphragm_z(y, x) - 2.0)
            & (np.abs(x) > self.midline_gap(z, y) + 2.0)
            & (self.heart_q(z, y, x, 4.0) > 1.0)
            & ~spine
        )

    def _lung_roots(self) -> dict[str, list[tuple[FloatArray, str]]]:
        """Segmental directions of each lung and the lobe each belongs to ("middle" is the
        lingula on the left); trees are grown along them."""
        right = [
            ((-0.95, 0.15, -0.30), "upper"),
            ((-0.60, 0.60, -0.50), "upper"),
            ((-0.50, -0.65, -0.55), "upper"),
            ((0.30, -0.55, -0.78), "middle"),
            ((0.45, -0.85, -0.20), "middle"),
            ((0.10, 0.90, -0.40), "lower"),
            ((0.80, -0.35, -0.45), "lower"),
            ((0.70, 0.10, -0.70), "lower"),
            ((0.75, 0.60, -0.25), "lower"),
            ((0.90, 0.25, 0.05), "lower"),
        ]
        left = [
            ((-0.95, 0.20, 0.25), "upper"),
            ((-0.55, 0.65, 0.50), "upper"),
            ((-0.50, -0.70, 0.50), "upper"),
            ((0.30, -0.70, 0.65), "middle"),
            ((0.55, -0.70, 0.45), "middle"),
            ((0.10, 0.90, 0.40), "lower"),
            ((0.80, -0.30, 0.50), "lower"),
            ((0.70, 0.15, 0.70), "lower"),
            ((0.75, 0.60, 0.25), "lower"),
        ]
        return {
            "right": [(_unit(d), lobe) for d, lobe in right],
            "left": [(_unit(d), lobe) for d, lobe in left],
        }


# ------------------------------------------------------------------------------------------------
# Trees
# ------------------------------------------------------------------------------------------------


@dataclass
class _Segments:
    p0: FloatArray
    p1: FloatArray
    r0: FloatArray
    r1: FloatArray


def _grow_tree(
    rng: np.random.Generator,
    pos: FloatArray,
    direction: FloatArray,
    radius: FloatArray,
    inside: Callable[[FloatArray, FloatArray, FloatArray], BoolArray],
    *,
    r_min: float,
    length_per_radius: float,
    max_segments: int = 12000,
) -> _Segments:
    """Grows asymmetric binary trees from root tips, one generation at a time (vectorised).

    Each tip draws a segment; where its end is still inside the lung it forks into a major child
    (nearly straight on, 0.83 of the radius) and a minor child (sharply off to the side, 0.66 of
    the radius), roughly Murray's law. Children leaving the lung are mirrored once to the other
    side, which keeps the trees filling the lung instead of running into the pleura.
    """
    segs: list[tuple[FloatArray, FloatArray, FloatArray, FloatArray]] = []
    count = 0
    while len(pos) and count < max_segments:
        n = len(pos)
        length = length_per_radius * radius * rng.uniform(0.75, 1.25, n)
        end = pos + direction * length[:, None]
        r_end = radius * 0.95
        segs.append((pos, end, radius, r_end))
        count += n
        alive = inside(end[:, 0], end[:, 1], end[:, 2])
        if not alive.any():
            break
        e, d, r = end[alive], direction[alive], r_end[alive]
        m = len(e)
        # A random axis perpendicular to each direction: the plane of the bifurcation.
        v = rng.standard_normal((m, 3))
        axis = _unit(v - (v * d).sum(1, keepdims=True) * d)
        ortho = np.cross(axis, d)
        children: list[tuple[FloatArray, FloatArray, FloatArray]] = []
        for factor, angle_lo, angle_hi, sign in ((0.83, 8, 25, 1.0), (0.66, 30, 60, -1.0)):
            ang = np.deg2rad(rng.uniform(angle_lo, angle_hi, m)) * sign
            nd = _unit(d * np.cos(ang)[:, None] + ortho * np.sin(ang)[:, None])
            rr = r * factor * rng.uniform(0.93, 1.07, m)
            probe = e + nd * (length_per_radius * rr)[:, None]
            out = ~inside(probe[:, 0], probe[:, 1], probe[:, 2])
            if out.any():  # mirror to the other side of the parent
                alt = _unit(d * np.cos(ang)[:, None] - ortho * np.sin(ang)[:, None])
                nd[out] = alt[out]
            keep = rr >= r_min
            children.append((e[keep], nd[keep], rr[keep]))
        pos = np.concatenate([c[0] for c in children])
        direction = np.concatenate([c[1] for c in children])
        radius = np.concatenate([c[2] for c in children])
    if not segs:
        empty = np.zeros((0, 3))
        return _Segments(empty, empty, np.zeros(0), np.zeros(0))
    return _Segments(*(np.concatenate([s[i] for s in segs]) for i in range(4)))


def _trees(anat: _Anatomy, rng: np.random.Generator) -> tuple[_Segments, _Segments]:
    """The pulmonary vessel trees (arteries from the hila, veins towards the left atrium) and the
    airway trees (from the lobar bronchi), as segments in anatomical mm."""
    inside = anat.lung_inside
    vp, vd, vr, ap, ad, ar = [], [], [], [], [], []
    rmb, lmb = anat.bronchi["rmb"], anat.bronchi["lmb"]
    lobar = {
        ("right", "upper"): rmb + 14.0 * _unit([-0.25, 0.10, -0.96]),
        ("right", "middle"): rmb
        + 25.0 * _unit([0.92, 0.20, -0.33])
        + 10.0 * _unit([0.45, -0.85, 0]),
        ("right", "lower"): rmb
        + 25.0 * _unit([0.92, 0.20, -0.33])
        + 12.0 * _unit([0.9, 0.35, -0.25]),
        ("left", "upper"): lmb + 12.0 * _unit([-0.35, -0.35, 0.87]),
        ("left", "middle"): lmb
        + 12.0 * _unit([-0.35, -0.35, 0.87])
        + 8.0 * _unit([0.5, -0.7, 0.5]),
        ("left", "lower"): lmb + 14.0 * _unit([0.88, 0.35, 0.30]),
    }
    for side, roots in anat.lung_roots.items():
        for d, lobe in roots:
            # Airways: segmental bronchi from the lobar bronchus.
            ap.append(lobar[(side, lobe)])
            ad.append(_unit(d + rng.normal(0.0, 0.12, 3)))
            ar.append(rng.uniform(3.0, 3.8))
            # Arteries from the hilum; veins from the central pulmonary veins.
            # Two of each per segment: the lung holds far more vessels than airways.
            h = anat.hilum_v[side][0 if lobe == "upper" else 1]
            for origin in (anat.hilum_a[side], anat.hilum_a[side], h, h):
                vp.append(origin + 6.0 * d)
                vd.append(_unit(d + rng.normal(0.0, 0.22, 3)))
                vr.append(rng.uniform(3.2, 4.5))
    vessels = _grow_tree(
        rng, np.array(vp), np.array(vd), np.array(vr), inside, r_min=0.5, length_per_radius=8.5
    )
    airways = _grow_tree(
        rng, np.array(ap), np.array(ad), np.array(ar), inside, r_min=0.9, length_per_radius=7.5
    )
    return vessels, airways


# ------------------------------------------------------------------------------------------------
# Rasterisation
# ------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=128)
def _ball_offsets(half_steps: int) -> npt.NDArray[np.int32]:
    """Integer offsets o whose distance to the cube [-0.5, 0.5]^3 is at most half_steps / 2:
    every voxel within that reach of a point p lies at round(p) + o."""
    reach = half_steps / 2.0
    n = math.ceil(reach + 0.5)
    r = np.arange(-n, n + 1)
    o = np.stack(np.meshgrid(r, r, r, indexing="ij"), axis=-1).reshape(-1, 3)
    gap = np.maximum(np.abs(o) - 0.5, 0.0)
    return o[(gap**2).sum(1) <= reach * reach].astype(np.int32)


class _Grid:
    """The voxel grid, and the map from anatomical mm to it."""

    def __init__(self, shape: tuple[int, int, int], spacing: float, p: _Params) -> None:
        self.shape = shape
        self.spacing = spacing
        self.scale = p.scale
        self.shift = np.asarray(p.shift, dtype=np.float64)
        self.centre = (np.asarray(shape, dtype=np.float64) - 1.0) / 2.0
        self.h = spacing / p.scale  # voxel size in anatomical mm
        self.coords = [
            ((np.arange(n) - self.centre[a]) * spacing - self.shift[a]) / p.scale
            for a, n in enumerate(shape)
        ]

    def to_voxel(self, pts: FloatArray) -> FloatArray:
        return (pts * self.scale + self.shift) / self.spacing + self.centre

    def box(
        self, lo: npt.ArrayLike, hi: npt.ArrayLike
    ) -> tuple[tuple[slice, ...], list[FloatArray]]:
        """Index slices of the anatomical box [lo, hi] and its broadcastable coordinates."""
        lo_a = np.asarray(lo, dtype=np.float64)
        hi_a = np.asarray(hi, dtype=np.float64)
        sl, co = [], []
        for a in range(3):
            i0 = (lo_a[a] * self.scale + self.shift[a]) / self.spacing + self.centre[a]
            i1 = (hi_a[a] * self.scale + self.shift[a]) / self.spacing + self.centre[a]
            a0 = int(np.clip(np.floor(min(i0, i1)), 0, self.shape[a]))
            a1 = int(np.clip(np.ceil(max(i0, i1)) + 1, a0, self.shape[a]))
            sl.append(slice(a0, a1))
            shape = [1, 1, 1]
            shape[a] = a1 - a0
            co.append(self.coords[a][a0:a1].reshape(shape))
        return tuple(sl), co

    def stamp(
        self, pts: FloatArray, radii: FloatArray, margin: float = 0.0
    ) -> tuple[IntArray, FloatArray, FloatArray]:
        """Voxels within radius + margin of any sample point (anatomical mm).

        Returns flat indices (with repeats), their distance to the sample point that found them
        and that point's radius, all in anatomical mm, so callers can cut shells and cores.
        """
        h = self.h
        vox = self.to_voxel(pts)
        reach = (radii + margin) / h
        dims = np.asarray(self.shape)
        keep = (reach > 0) & np.all(vox + reach[:, None] >= -0.5, axis=1)
        keep &= np.all(vox - reach[:, None] <= dims - 0.5, axis=1)
        vox, reach, radii = vox[keep], reach[keep], radii[keep]
        base = np.rint(vox).astype(np.int64)
        frac = (vox - base).astype(np.float32)
        frac2 = (frac**2).sum(1)
        strides = np.array([self.shape[1] * self.shape[2], self.shape[2], 1], dtype=np.int64)
        base_flat = base @ strides
        # Points whose whole neighbourhood is inside the grid skip the per-voxel bounds test.
        ext = np.ceil(reach + 0.5)[:, None]
        interior = np.all((base - ext >= 0) & (base + ext < dims), axis=1)
        bins = np.ceil(2.0 * reach).astype(np.int64)  # half-voxel bins: few wasted candidates
        out_i, out_d, out_r = [], [], []
        for b in np.unique(bins):
            off = _ball_offsets(int(b))
            off_f = off.astype(np.float32)
            off2 = (off_f**2).sum(1)
            off_flat = off.astype(np.int64) @ strides
            sel_b = bins == b
            for inner in (True, False):
                sel = np.flatnonzero(sel_b & (interior == inner))
                chunk = max(1, 4_000_000 // len(off))
                for c0 in range(0, len(sel), chunk):
                    s = sel[c0 : c0 + chunk]
                    # |o - f|^2 expanded, so the bulk is one small matrix product.
                    d2 = off2[None, :] - 2.0 * (frac[s] @ off_f.T) + frac2[s][:, None]
                    ni, ki = np.nonzero(d2 <= (reach[s] ** 2)[:, None])
                    flat = base_flat[s][ni] + off_flat[ki]
                    dist = d2[ni, ki]
                    rad = radii[s][ni]
                    if not inner:
                        v = base[s][ni] + off[ki]
                        ok = np.all((v >= 0) & (v < dims), axis=1)
                        flat, dist, rad = flat[ok], dist[ok], rad[ok]
                    out_i.append(flat)
                    out_d.append(np.sqrt(np.maximum(dist, 0.0)) * h)
                    out_r.append(rad)
        if not out_i:
            return np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
        return (
            np.concatenate(out_i),
            np.concatenate(out_d).astype(np.float64),
            np.concatenate(out_r).astype(np.float64),
        )

    def sample(self, seg: _Segments, min_step_vox: float = 0.35) -> tuple[FloatArray, FloatArray]:
        """Points along segments, close enough that their balls make a smooth tube."""
        if not len(seg.p0):
            return np.zeros((0, 3)), np.zeros(0)
        length = np.linalg.norm(seg.p1 - seg.p0, axis=1)
        # Balls of radius r spaced s apart leave scallops s^2 / 8r deep: under 0.03 r here.
        step = np.clip(0.45 * np.minimum(seg.r0, seg.r1), min_step_vox * self.h, 4.0 * self.h)
        n = np.maximum(np.ceil(length / step).astype(np.int64), 1) + 1
        idx = np.repeat(np.arange(len(n)), n)
        start = np.cumsum(n) - n
        t = (np.arange(int(n.sum())) - start[idx]) / (n[idx] - 1)
        pts = seg.p0[idx] + (seg.p1 - seg.p0)[idx] * t[:, None]
        r = seg.r0[idx] + (seg.r1 - seg.r0)[idx] * t
        return pts, r


def _polyline_segments(pts: FloatArray, radii: FloatArray) -> _Segments:
    return _Segments(pts[:-1], pts[1:], radii[:-1], radii[1:])


def _rasterise(
    anat: _Anatomy, grid: _Grid, vessels: _Segments, airways: _Segments
) -> tuple[npt.NDArray[np.uint8], BoolArray]:
    """Paints tissue classes into the grid; returns them and the lung region."""
    T = _T
    p = anat.p
    za, ya, xa = grid.coords
    Z, X = za[:, None, None], xa[None, None, :]
    absx = np.abs(X)
    zz, yy = za[:, None], ya[None, :]
    # Body layers, nested: summing the nested masks gives air 0, skin 1, fat 2, muscle 3.
    tis = (absx < anat.body_w(zz, yy)[:, :, None]).astype(np.uint8)
    tis += absx < anat.body_w(zz, yy, 2.5)[:, :, None]
    tis += absx < anat.body_w(zz, yy, 2.5 + p.fat)[:, :, None]
    flat = tis.reshape(-1)
    # Cage interior: mediastinum above the diaphragm, diaphragm muscle, abdomen below.
    cage = absx < anat.cage_w(zz, yy)[:, :, None]
    cage &= tis == T["muscle"]
    zd = anat.diaphragm_z(ya[:, None], xa[None, :])[None]
    below = zd <= Z
    below_d = zd + 4.0 <= Z
    thorax = cage & ~below
    tis[thorax] = T["mediastinum"]
    tis[cage & below] = T["diaphragm"]
    abdomen = cage & below_d
    tis[abdomen] = T["abdomen"]
    # Liver: under the right dome, reaching across the midline anteriorly (left lobe).
    edge = 5.0 - 0.7 * (ya - anat.yc0)
    tis[abdomen & (edge[None, :, None] > X)] = T["liver"]
    # Spleen (postero-lateral) and stomach (under the left dome, gas rising anteriorly).
    zl = anat.z_dome_l
    organs = (
        ("spleen", (zl + 50.0, anat.yc0 + 0.55 * anat.b0, 0.70 * anat.a0), (48.0, 32.0, 22.0)),
        ("stomach", (zl + 48.0, anat.yc0 - 0.05 * anat.b0, 0.45 * anat.a0), (45.0, 40.0, 38.0)),
    )
    for name, c, semi in organs:
        sl, (bz, by, bx) = grid.box(np.subtract(c, semi), np.add(c, semi))
        q = (
            ((bz - c[0]) / semi[0]) ** 2
            + ((by - c[1]) / semi[1]) ** 2
            + ((bx - c[2]) / semi[2]) ** 2
        )
        m = (q <= 1.0) & abdomen[sl]
        tis[sl][m] = T[name]
        if name == "stomach":
            gas = m & (by - c[1] < -(1.0 - 2.0 * p.gas) * semi[1])
            tis[sl][gas] = T["stomach_gas"]

    excl = np.zeros(grid.shape, dtype=bool)
    excl_flat = excl.reshape(-1)
    # Heart: myocardium round a blood pool, resting on the diaphragm; the lungs keep 5 mm away
    # (pericardium and its fat, which the mediastinal fill provides).
    hc, rmax = anat.heart_c, float(anat.heart_semi.max()) + 40.0
    sl, (bz, by, bx) = grid.box(hc - rmax, hc + rmax)
    above = bz < anat.diaphragm_z(by, bx) - 4.0
    q = anat.heart_q(bz, by, bx)
    excl[sl] |= (anat.heart_q(bz, by, bx, 5.0) <= 1.0) & above
    heart_box = (q <= 1.0) & above
    blood = (q <= 0.62) & above
    # Spine: bodies with cortex and marrow, discs, the arch round the canal.
    s_lo = [-300.0, float(anat.spine_y(0.0)) - 45.0, -70.0]
    s_hi = [300.0, float(anat.spine_y(0.0)) + 80.0, 70.0]
    ssl, (sz, sy, sx) = grid.box(s_lo, s_hi)
    ax, ay = anat.vertebra_axes(sz)
    ys = anat.spine_y(sz)
    lev = anat.spine_level(sz)
    w = (lev - np.round(lev)) * anat.pitch  # position within the level, mm
    h_body = 0.78 * anat.pitch / 2.0
    rb = np.sqrt((sx / ax) ** 2 + ((sy - ys) / ay) ** 2)
    in_body = rb <= 1.0
    vert_body = in_body & (np.abs(w) < h_body)
    disc = in_body & ~vert_body
    marrow = (rb <= 1.0 - 1.6 / ax) & (np.abs(w) < h_body - 1.5)
    y_canal = ys + ay + 9.0
    rc = np.sqrt(sx**2 + (sy - y_canal) ** 2)
    canal = rc < 7.5
    arch = (rc >= 7.5) & (rc < 13.0) & (np.abs(w) < h_body + 2.0) & ~in_body
    excl[ssl] |= ((sx / (ax + 5.0)) ** 2 + ((sy - ys) / (ay + 5.0)) ** 2 <= 1.0) | (
        (np.abs(sx) < ax + 5.0) & (sy > ys)
    )
    # Tubes: stamped once with their exclusion margin; thresholds pick wall, core and margin.
    stamped: list[tuple[_Tube, IntArray, FloatArray, FloatArray]] = []
    for tube in anat.tubes:
        seg = _polyline_segments(tube.points, tube.radii)
        pts, r = grid.sample(seg)
        idx, d, rr = grid.stamp(pts, r, tube.excl or 0.0)
        stamped.append((tube, idx, d, rr))
        if tube.excl is not None:
            excl_flat[idx] = True
    rib_stamps = []
    for _, _, pts0, radii0 in anat.ribs:
        pts, r = grid.sample(_polyline_segments(pts0, radii0))
        idx, d, rr = grid.stamp(pts, r, 2.0)
        rib_stamps.append((idx, d, rr))
        excl_flat[idx] = True
    # Processes: transverse (out to the rib tubercles) and spinous (sloping down).
    proc: list[_Tube] = []
    for k in range(-1, 16):
        zk = anat.z_level(k)
        ysk = float(anat.spine_y(zk))
        axk, ayk = (float(v) for v in anat.vertebra_axes(zk))
        yck = ysk + ayk + 9.0
        slope = 0.25 if k <= 0 else (0.9 if k < 11 else 0.4)
        proc.append(
            _tube(
                "vertebra_arch",
                [[zk, yck + 10, 0], [zk + slope * anat.pitch, yck + 36, 0]],
                [5.0, 4.0],
                20,
            )
        )
        for side in (-1, 1):
            proc.append(
                _tube(
                    "vertebra_arch",
                    [[zk - 2, yck - 2, side * 9.0], [zk + 2, yck + 5, side * (axk + 14.0)]],
                    [5.0, 4.5],
                    20,
                )
            )
    proc_seg = [grid.sample(_polyline_segments(t.points, t.radii)) for t in proc]
    pidx, pd, pr = grid.stamp(
        np.concatenate([pts for pts, _ in proc_seg]), np.concatenate([r for _, r in proc_seg]), 3.0
    )
    excl_flat[pidx] = True

    # Lungs: the thorax minus everything that pushes them away and the midline strip.
    lung = thorax & ~excl
    lung &= absx >= anat.midline_gap(zz, yy)[:, :, None]
    tis[lung] = T["lung"]

    # Now the solid organs over the rest.
    hv = tis[sl]
    hv[heart_box] = T["myocardium"]
    hv[blood] = T["heart_blood"]
    for tube, idx, d, rr in stamped:
        inner = (d <= rr) & (flat[idx] != T["air"])  # arteries leaving the field of view
        flat[idx[inner]] = T[tube.tissue]
        if tube.core is not None:
            core, inset = tube.core
            flat[idx[inner & (d <= rr - inset)]] = T[core]
    sv = tis[ssl]
    sv[canal] = T["spinal_canal"]
    sv[arch & (sv != T["lung"])] = T["vertebra_arch"]
    sv[disc] = T["disc"]
    sv[vert_body] = T["vertebra_cortex"]
    sv[marrow & vert_body] = T["vertebra_marrow"]
    pin = (pd <= pr) & (flat[pidx] != T["lung"])
    flat[pidx[pin]] = T["vertebra_arch"]
    for idx, d, rr in rib_stamps:
        ok = flat[idx] != T["lung"]
        flat[idx[ok & (d <= rr)]] = T["rib_cortex"]
        flat[idx[ok & (d <= rr - 1.5)]] = T["rib_marrow"]
    _paint_sternum(anat, grid, tis)
    _paint_scapulae(anat, grid, tis)
    _paint_thyroid(anat, grid, tis)

    # Trees, only inside the lungs: vessels, then airway walls and lumens over them.
    h = grid.h
    pts, r = grid.sample(vessels)
    big = r >= 0.55 * h
    idx, d, rr = grid.stamp(pts[big], r[big])
    sidx, _, _ = grid.stamp(pts[~big], np.full(int((~big).sum()), 0.55 * h))
    sidx = sidx[flat[sidx] == T["lung"]]
    flat[sidx] = T["vessel_partial"]
    idx = idx[np.isin(flat[idx], (T["lung"], T["vessel_partial"]))]
    flat[idx] = T["vessel"]
    # Airway walls are ~15% of the lumen radius plus 0.6 mm: stamp the outer radius and recover
    # the lumen radius from it.
    pts, r = grid.sample(airways)
    idx, d, outer = grid.stamp(pts, 1.15 * r + 0.6)
    ok = np.isin(flat[idx], (T["lung"], T["vessel"], T["vessel_partial"]))
    idx, d, outer = idx[ok], d[ok], outer[ok]
    flat[idx] = T["airway_wall"]
    flat[idx[d <= (outer - 0.6) / 1.15]] = T["airway_lumen"]
    return tis, lung


def _paint_sternum(anat: _Anatomy, grid: _Grid, tis: npt.NDArray[np.uint8]) -> None:
    z0, z1 = anat.z_jugular, anat.z_xiphi + 30.0
    sl, (bz, by, bx) = grid.box([z0, -260.0, -30.0], [z1, 0.0, 30.0])
    z = bz.reshape(-1)
    if not z.size:
        return
    half_w = anat.sternum_half_width(z)
    half_t = np.interp(z, [z0, anat.z_angle, anat.z_xiphi, z1], [8.0, 6.5, 6.0, 3.0])
    yc = anat.cage_front(z) - half_t - 1.0
    dy = np.abs(by - yc[:, None, None]) - half_t[:, None, None]
    dx = np.abs(bx) - half_w[:, None, None]
    bone = (dy < 0) & (dx < 0)
    core = (dy < -1.5) & (dx < -1.5)
    v = tis[sl]
    ok = v != _T["lung"]
    v[bone & ok] = _T["sternum_cortex"]
    v[core & ok] = _T["sternum_marrow"]


def _paint_scapulae(anat: _Anatomy, grid: _Grid, tis: npt.NDArray[np.uint8]) -> None:
    z1 = anat.z_level(1)
    z_sup, z_inf = z1 - 6.0, anat.z_level(7) + 4.0
    for side in (-1, 1):
        hw = float(anat._hw(z1 + 18.0))
        tri = np.array([[z_sup, 58.0], [z_inf, 82.0], [z1 + 18.0, hw - 32.0]])
        lo = [z_sup - 20.0, -20.0, 40.0 if side > 0 else -hw]
        hi = [z_inf + 5.0, 200.0, hw if side > 0 else -40.0]
        sl, (bz, by, bx) = grid.box(lo, hi)
        if min(s.stop - s.start for s in sl) <= 0:
            continue
        zz, xx = bz[:, :, 0], np.abs(bx[:, 0, :])  # (nz, 1), (1, nx)
        # Barycentric test of the triangle in the (z, |x|) plane.
        (a0, a1), (b0, b1), (c0, c1) = tri
        den = (b1 - c1) * (a0 - c0) + (c0 - b0) * (a1 - c1)
        l1 = ((b1 - c1) * (zz - c0) + (c0 - b0) * (xx - c1)) / den
        l2 = ((c1 - a1) * (zz - c0) + (a0 - c0) * (xx - c1)) / den
        inside = (l1 >= 0) & (l2 >= 0) & (l1 + l2 <= 1)
        # The blade follows the back, under the posterior muscles; the spine of the scapula is a
        # ridge running from the medial border to the acromion.
        back = anat._yc(zz) + anat._hd(zz) * _superellipse(xx / anat._hw(zz), anat.p.p_body)
        y_plate = back - anat.p.fat - 16.0
        p0, p1 = np.array([anat.z_level(3), 60.0]), np.array([z1 - 4.0, hw - 28.0])
        t = np.clip(
            ((zz - p0[0]) * (p1[0] - p0[0]) + (xx - p0[1]) * (p1[1] - p0[1]))
            / float(np.sum((p1 - p0) ** 2)),
            0,
            1,
        )
        dist = np.hypot(zz - (p0[0] + t * (p1[0] - p0[0])), xx - (p0[1] + t * (p1[1] - p0[1])))
        ridge = 10.0 * np.exp(-((dist / 5.0) ** 2))
        yp = y_plate[:, None, :]
        plate = inside[:, None, :] & (by >= yp - 2.0) & (by <= yp + 2.0 + ridge[:, None, :])
        v = tis[sl]
        v[plate & (v == _T["muscle"])] = _T["scapula"]


def _paint_thyroid(anat: _Anatomy, grid: _Grid, tis: npt.NDArray[np.uint8]) -> None:
    z1 = anat.z_level(1)
    y_tr = float(anat.spine_y(z1 - 25.0) - anat.vertebra_axes(z1 - 25.0)[1] - 21.0)
    rt = anat.p.trachea_r
    for xc, semi in (
        (-16.0, (20.0, 10.0, 8.0)),
        (16.0, (20.0, 10.0, 8.0)),
        (0.0, (6.0, 4.0, 14.0)),
    ):
        c = (z1 - 28.0 if xc else z1 - 22.0, y_tr - (2.0 if xc else rt + 5.0), xc)
        sl, (bz, by, bx) = grid.box(np.subtract(c, semi), np.add(c, semi))
        q = (
            ((bz - c[0]) / semi[0]) ** 2
            + ((by - c[1]) / semi[1]) ** 2
            + ((bx - c[2]) / semi[2]) ** 2
        )
        v = tis[sl]
        v[(q <= 1.0) & (v == _T["muscle"])] = _T["thyroid"]


# ------------------------------------------------------------------------------------------------
# Public API
# ------------------------------------------------------------------------------------------------


def _shape_of(size: int | Sequence[int]) -> tuple[int, int, int]:
    if isinstance(size, int | np.integer):
        shape = (int(size),) * 3
    else:
        dims = tuple(int(s) for s in size)
        if len(dims) != 3:
            raise ValueError(f"size must be an int or three ints, got {size!r}")
        shape = (dims[0], dims[1], dims[2])
    if min(shape) < 16:
        raise ValueError(f"chest_phantom needs at least 16 voxels per axis, got {shape}")
    return shape


def _place_nodules(
    rng: np.random.Generator, n: int, grid: _Grid, lung: BoolArray
) -> list[tuple[IntArray, npt.NDArray[np.int64], float, float]]:
    """Puts n spheres of 3-15 mm in the lungs, each wholly inside where a place allows it.

    Returns, per nodule, its flat voxel indices (always inside the lung mask, at least its
    centre voxel), its centre index, its diameter in mm and its HU level.
    """
    cand = np.flatnonzero(lung)
    out: list[tuple[IntArray, npt.NDArray[np.int64], float, float]] = []
    if n <= 0 or not cand.size:
        return out
    corners = np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1])).reshape(3, -1).T
    dirs = np.concatenate([np.eye(3), -np.eye(3), _unit(corners)])
    shape = np.asarray(grid.shape)
    lung_flat = lung.reshape(-1)
    for _ in range(n):
        diameter = float(np.exp(rng.uniform(np.log(3.0), np.log(15.0))))
        radius_vox = diameter / 2.0 / grid.spacing
        best, best_score = int(cand[0]), -(10**9)
        for _try in range(200):
            c = int(cand[rng.integers(len(cand))])
            ijk = np.array(np.unravel_index(c, grid.shape))
            probe = np.rint(ijk + dirs * (radius_vox + 0.5)).astype(np.int64)
            inb = np.all((probe >= 0) & (probe < shape), axis=1)
            score = int(np.sum(lung[tuple(probe[inb].T)])) - 10 * int(np.sum(~inb))
            if score > best_score:
                best, best_score = c, score
            if score == len(dirs):
                break
        ijk = np.array(np.unravel_index(best, grid.shape), dtype=np.int64)
        centre_mm = ((ijk - grid.centre) * grid.spacing - grid.shift) / grid.scale
        idx, _, _ = grid.stamp(centre_mm[None], np.array([diameter / 2.0 / grid.scale]))
        idx = np.unique(np.concatenate([idx, [best]]))
        out.append((idx[lung_flat[idx]], ijk, diameter, float(rng.uniform(-100.0, 100.0))))
    return out


def _streams(seed: int) -> list[np.random.SeedSequence]:
    """The phantom's independent random streams: anatomy, trees, HU levels, texture, nodules,
    noise. Independent, so e.g. asking for nodules or another size leaves the anatomy as is."""
    return np.random.SeedSequence(seed).spawn(6)


def chest_phantom(
    size: int | Sequence[int] = 128,
    seed: int = 0,
    *,
    spacing_mm: float | None = None,
    nodules: int = 0,
    noise_hu: float = 15.0,
    calibration: str | PhantomCalibration = "original",
) -> ChestPhantom:
    """Builds a random but realistic chest CT phantom.

    Args:
        size: Array shape: one int for a cube, or (n0, n1, n2). At least 16 per axis; anatomy too
            small for the voxels (vessels at 32^3) simply is not drawn.
        seed: Seed of everything random; the same seed gives the same phantom (for the same size,
            spacing and options), and the anatomy is the same at every size.
        spacing_mm: Isotropic voxel size. Defaults to ``DEFAULT_FOV_MM / max(shape)``: the longest
            axis spans 320 mm as in the CT preprocessing (2.5 mm at 128).
        nodules: How many nodules (3-15 mm, -100 to +100 HU) to put in the lungs.
        noise_hu: Standard deviation of the Gaussian noise added to every voxel (0 for none).
        calibration: The population to draw from: a name in :data:`PHANTOM_CALIBRATIONS`
            (``"original"``, the default, keeps every seed's phantom as it was; ``"real_ct"``
            is measured against real chest CT) or a :class:`PhantomCalibration`.

    Returns:
        The phantom: canonical float32 HU volume, lung mask, label map and nodules.

    Raises:
        ValueError: On a shape under 16 voxels, a non-positive spacing, negative counts/noise
            or an unknown calibration.
    """
    cal = phantom_calibration(calibration)
    shape = _shape_of(size)
    spacing = DEFAULT_FOV_MM / max(shape) if spacing_mm is None else float(spacing_mm)
    if not (math.isfinite(spacing) and spacing > 0):
        raise ValueError(f"spacing_mm must be positive, got {spacing_mm!r}")
    if nodules < 0:
        raise ValueError(f"nodules must be >= 0, got {nodules}")
    if not (math.isfinite(noise_hu) and noise_hu >= 0):
        raise ValueError(f"noise_hu must be >= 0, got {noise_hu}")
    seed = int(seed)
    if cal.supersample > 1:
        return _supersampled(shape, spacing, seed, nodules, noise_hu, cal)
    s_anat, s_tree, s_hu, s_tex, s_nod, s_noise = _streams(seed)
    params = _sample_params(np.random.default_rng(s_anat), cal)
    anat = _Anatomy(params)
    vessels, airways = _trees(anat, np.random.default_rng(s_tree))
    grid = _Grid(shape, spacing, params)
    tis, lung_region = _rasterise(anat, grid, vessels, airways)
    flat = tis.reshape(-1)
    lung = np.isin(tis, _LUNG_TISSUES) & lung_region

    placed = _place_nodules(np.random.default_rng(s_nod), nodules, grid, lung)
    for idx, _, _, _ in placed:
        flat[idx] = _T["nodule"]

    from scipy import ndimage  # imported here so importing the package stays fast

    hu_table = _hu_table(np.random.default_rng(s_hu), params.inspiration, cal).astype(np.float32)
    hu = hu_table[tis]
    hflat = hu.reshape(-1)
    # Lung: denser towards the back (gravity, supine) and a faint smooth texture.
    lung_idx = np.flatnonzero(flat == _T["lung"])
    if lung_idx.size:
        i, j, k = np.unravel_index(lung_idx, shape)
        front, back = anat.yc0 - anat.b0, anat.yc0 + anat.b0
        grad = (
            cal.lung_gradient_hu
            * np.clip((grid.coords[1] - front) / (back - front), 0.0, 1.0) ** 1.5
        )
        cell = cal.lung_texture_mm
        low = [math.ceil(n * spacing / cell) + 3 for n in shape]
        field = ndimage.gaussian_filter(
            np.random.default_rng(s_tex).standard_normal(low).astype(np.float32), 0.8
        )
        field *= cal.lung_texture_hu / max(float(field.std()), 1e-6)
        pos = np.stack([i, j, k]).astype(np.float32) * np.float32(spacing / cell) + 1.0
        tex = ndimage.map_coordinates(field, pos, order=1, mode="nearest")
        hflat[lung_idx] += (grad[j] + tex).astype(np.float32)
    for idx, _, _, value in placed:
        hflat[idx] = value
    if cal.psf_sigma_mm > 0:
        hu = ndimage.gaussian_filter(hu, cal.psf_sigma_mm / spacing, mode="nearest")
    if noise_hu > 0:
        hu += np.random.default_rng(s_noise).standard_normal(shape, dtype=np.float32) * np.float32(
            noise_hu
        )
    np.clip(hu, -1024.0, 3071.0, out=hu)

    meta = {"phantom": "chest", "seed": seed, "calibration": cal.name}
    volume = Volume.from_spacing(hu, spacing, source="chest_phantom", metadata=meta)
    x_mid = grid.shift[2] / spacing + grid.centre[2]  # the body's midline, as an axis-2 index
    found = []
    for _, ijk, diameter, value in placed:
        world = volume.index_to_world(ijk.astype(np.float64))
        found.append(
            Nodule(
                index=(int(ijk[0]), int(ijk[1]), int(ijk[2])),
                center_mm=(float(world[0]), float(world[1]), float(world[2])),
                diameter_mm=round(diameter, 2),
                hu=round(value, 1),
                side="right" if ijk[2] < x_mid else "left",
            )
        )
    info: dict[str, float] = {
        "scale": params.scale,
        "chest_width_mm": round(2.0 * params.half_width * params.scale, 1),
        "chest_depth_mm": round(2.0 * params.half_depth * params.scale, 1),
        "fat_mm": round(params.fat * params.scale, 1),
        "inspiration": params.inspiration,
        "heart_scale": params.heart_scale,
        "shift_z_mm": params.shift[0],
        "shift_y_mm": params.shift[1],
        "shift_x_mm": params.shift[2],
    }
    return ChestPhantom(
        volume=volume,
        lung_mask=volume.replace(array=lung.astype(np.uint8)),
        labels=volume.replace(array=_TISSUE_LABEL[tis]),
        nodules=tuple(found),
        seed=seed,
        params=MappingProxyType(info),
    )


def _supersampled(
    shape: tuple[int, int, int],
    spacing: float,
    seed: int,
    nodules: int,
    noise_hu: float,
    cal: PhantomCalibration,
) -> ChestPhantom:
    """The phantom built ``cal.supersample`` times finer and averaged down: each voxel holds the
    mean HU of its volume, the partial volume a CT's reconstruction and ``prepare``'s resampling
    give thin structures (cortices, vessels, fissures) in real scans. The noise is added at the
    final grid, so ``noise_hu`` keeps its meaning."""
    from dataclasses import replace

    k = cal.supersample
    fine = chest_phantom(
        tuple(n * k for n in shape),
        seed,
        spacing_mm=spacing / k,
        nodules=nodules,
        noise_hu=0.0,
        calibration=replace(cal, supersample=1),
    )
    n0, n1, n2 = shape

    def blocks(a: npt.NDArray[np.generic]) -> npt.NDArray[np.float64]:
        return np.asarray(a, np.float64).reshape(n0, k, n1, k, n2, k).mean(axis=(1, 3, 5))

    hu = blocks(fine.volume.array).astype(np.float32)
    if noise_hu > 0:
        noise = np.random.default_rng(_streams(seed)[5]).standard_normal(shape, dtype=np.float32)
        hu += noise * np.float32(noise_hu)
    np.clip(hu, -1024.0, 3071.0, out=hu)
    meta = {**fine.volume.metadata, "supersample": k}
    volume = Volume.from_spacing(hu, spacing, source="chest_phantom", metadata=meta)
    centre = k // 2  # labels: the fine voxel at each block's centre
    labels = fine.labels.array[centre::k, centre::k, centre::k]
    lung = (blocks(fine.lung_mask.array) >= 0.5).astype(np.uint8)
    found = []
    for nod in fine.nodules:
        ijk = np.asarray(nod.index) // k
        world = volume.index_to_world(ijk.astype(np.float64))
        found.append(
            replace(
                nod,
                index=(int(ijk[0]), int(ijk[1]), int(ijk[2])),
                center_mm=(float(world[0]), float(world[1]), float(world[2])),
            )
        )
    return ChestPhantom(
        volume=volume,
        lung_mask=volume.replace(array=lung),
        labels=volume.replace(array=np.ascontiguousarray(labels)),
        nodules=tuple(found),
        seed=seed,
        params=fine.params,
    )


def chest_phantoms(
    n: int,
    size: int | Sequence[int] = 128,
    seed: int = 0,
    *,
    spacing_mm: float | None = None,
    nodules: int = 0,
    noise_hu: float = 15.0,
    calibration: str | PhantomCalibration = "original",
) -> Iterator[ChestPhantom]:
    """Yields n different phantoms, reproducibly.

    Each case's seed is drawn from ``numpy.random.SeedSequence(seed).spawn(n)``, so the cases are
    independent streams and case i is the same whatever n is; ``phantom.seed`` rebuilds one case
    on its own with :func:`chest_phantom`.

    Args:
        n: Number of phantoms.
        size: As for :func:`chest_phantom`.
        seed: Seed of the whole series.
        spacing_mm: As for :func:`chest_phantom`.
        nodules: As for :func:`chest_phantom`.
        noise_hu: As for :func:`chest_phantom`.
        calibration: As for :func:`chest_phantom`.

    Yields:
        The phantoms, one at a time (each 128^3 one holds ~25 MB, so a long series is not kept).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    for child in np.random.SeedSequence(seed).spawn(n):
        case_seed = int(child.generate_state(1, dtype=np.uint64)[0])
        yield chest_phantom(
            size,
            case_seed,
            spacing_mm=spacing_mm,
            nodules=nodules,
            noise_hu=noise_hu,
            calibration=calibration,
        )
