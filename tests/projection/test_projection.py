"""Tests of xprospect.projection: geometry, physics, renderers, adjoints, orientation, backends.

References are independent of the code under test: NumPy sums for parallel beams, closed-form chord
lengths through ellipsoids (rays written out here from the documented geometry), finite
differences for gradients, phantom landmark indices for orientation, Plastimatch for the backend.
Sizes are tiny (16^3 to 32^3) so the module runs in well under a minute on two cores.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from numpy.testing import assert_allclose
from scipy import ndimage

from xprospect.errors import ConfigError, GeometryError
from xprospect.image import View, Volume
from xprospect.phantoms import asymmetric_phantom
from xprospect.projection import (
    MU_WATER_PER_MM,
    ConeBeam,
    MeanProjection,
    ParallelBeam,
    back_project,
    back_project_views,
    display_unit,
    display_x2ct_uint8,
    geometry_preset,
    hu_to_mu,
    intensity,
    plastimatch_available,
    plastimatch_drr,
    project,
    project_views,
    render_drr,
    render_drr_batch,
)

SPACING = (3.0, 2.5, 2.0)  # anisotropic, so an axis mix-up changes the numbers


# --- independent references -----------------------------------------------------------------------


def ellipsoid_volume(shape, spacing, centre, semi, supersample=4):
    """Partial-volume occupancy of an ellipsoid (volume frame: mm from the volume centre)."""
    axes = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing, strict=True)]
    grid = np.meshgrid(*axes, indexing="ij")
    offsets = ((np.arange(supersample) + 0.5) / supersample - 0.5)[:, None] * np.asarray(spacing)
    occupancy = np.zeros(shape)
    for a in offsets[:, 0]:
        for b in offsets[:, 1]:
            for c in offsets[:, 2]:
                rho = sum(
                    ((g + o - m) / r) ** 2
                    for g, o, m, r in zip(grid, (a, b, c), centre, semi, strict=True)
                )
                occupancy += rho <= 1
    return occupancy / supersample**3


def chord_lengths(origins, directions, centre, semi):
    """Length of each ray p + t d (t over all reals) inside the ellipsoid, mm."""
    q = (origins - centre) / semi
    e = directions / semi
    a = (e * e).sum(-1)
    b = (q * e).sum(-1)
    c = (q * q).sum(-1) - 1
    disc = b * b - a * c
    return np.where(disc > 0, 2 * np.sqrt(np.maximum(disc, 0)) / a, 0.0) * np.linalg.norm(
        directions, axis=-1
    )


def reference_rays(geometry, detector_shape, pixel_spacing):
    """Ray origins and directions (R, C, 3), written from docs of ParallelBeam / ConeBeam."""
    rows, cols = detector_shape
    u = (np.arange(rows) - (rows - 1) / 2) * pixel_spacing[0]
    v = (np.arange(cols) - (cols - 1) / 2) * pixel_spacing[1]
    p, q = (1, 2) if geometry.view == "frontal" else (2, 1)
    iso = np.asarray(geometry.isocenter_offset_mm, dtype=float)
    pixel = np.zeros((rows, cols, 3))
    pixel[..., 0] = iso[0] + u[:, None]
    pixel[..., q] = iso[q] + v[None, :]
    if isinstance(geometry, ConeBeam):
        towards = {"posterior": 1.0, "anterior": -1.0, "right": -1.0, "left": 1.0}
        source = iso.copy()
        source[p] += towards[geometry.source_side] * geometry.sad_mm
        pixel[..., p] = source[p] - towards[geometry.source_side] * geometry.sid_mm
        return np.broadcast_to(source, pixel.shape), pixel - source
    direction = np.zeros_like(pixel)
    direction[..., p] = 1.0
    return pixel, direction


def rel_rms(a, b):
    return float(np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(b**2)))


# --- physics --------------------------------------------------------------------------------------


def test_hu_to_mu_and_output_mappings():
    hu = np.array([-2048.0, -1000.0, -500.0, 0.0, 1000.0])
    expected = np.array([0.0, 0.0, 0.5, 1.0, 2.0]) * 0.01929
    assert_allclose(hu_to_mu(hu), expected, rtol=1e-12, atol=1e-15)
    assert_allclose(hu_to_mu(tf.constant(hu)).numpy(), expected, rtol=1e-12, atol=1e-15)
    assert 0.0190 <= MU_WATER_PER_MM <= 0.0195  # water near 70 keV, /mm
    line = np.array([[[0.0, 1.0], [2.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]]])
    assert_allclose(intensity(line), [[[1, np.e**-1], [np.e**-2, np.e**-4]], np.ones((2, 2))])
    assert_allclose(display_unit(line), [[[0, 0.25], [0.5, 1]], np.zeros((2, 2))])
    assert_allclose(display_unit(tf.constant(line)).numpy(), display_unit(line))
    assert display_x2ct_uint8(line).dtype == np.uint8
    assert_allclose(display_x2ct_uint8(line)[0], [[0, 63], [127, 255]])


# --- exactness on the volume grid -----------------------------------------------------------------


@pytest.mark.parametrize("view, axis", [("frontal", 1), ("lateral", 2)])
def test_parallel_and_mean_are_sums_and_means(view, axis):
    a = np.random.default_rng(0).random((2, 12, 14, 16))
    out = project(a, ParallelBeam(view), SPACING).numpy()
    assert_allclose(out, a.sum(axis=axis + 1) * SPACING[axis], rtol=1e-12)
    mean = project(a, MeanProjection(view), SPACING).numpy()
    assert_allclose(mean, a.mean(axis=axis + 1), rtol=1e-12)


def test_parallel_resampling_matches_interpolated_sum():
    a = np.random.default_rng(1).random((1, 10, 12, 14))
    geom = ParallelBeam("frontal", detector_shape_px=(5, 7), pixel_spacing_mm=(6.0, 4.0))
    out = project(a, geom, SPACING).numpy()[0]
    # Pixel centres in index units: every other voxel, exactly half-way between two.
    total = a[0].sum(axis=1) * SPACING[1]
    rows = (np.arange(5) - 2) * 6.0 / SPACING[0] + 4.5
    cols = (np.arange(7) - 3) * 4.0 / SPACING[2] + 6.5
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    expected = ndimage.map_coordinates(total, [rr, cc], order=1, mode="constant")
    assert_allclose(out, expected, rtol=1e-12)


# --- analytic accuracy ----------------------------------------------------------------------------

SHAPE = (32, 32, 32)
EXTENT = np.asarray(SHAPE) * np.asarray(SPACING)
CENTRE = np.array([0.05, -0.04, 0.03]) * EXTENT
SEMI = np.array([0.38, 0.33, 0.40]) * EXTENT


@pytest.fixture(scope="module")
def ellipsoid():
    return ellipsoid_volume(SHAPE, SPACING, CENTRE, SEMI)


ANALYTIC_CASES = [
    ParallelBeam("frontal"),
    ParallelBeam("lateral", detector_shape_px=(40, 24), pixel_spacing_mm=(2.5, 4.0)),
    ConeBeam("frontal", 500.0, 900.0, (32, 32), (200.0, 160.0)),
    ConeBeam("lateral", 400.0, 700.0, (28, 36), (180.0, 200.0), (5.0, -4.0, 3.0)),
    ConeBeam("AP", 300.0, 600.0, (32, 32), (240.0, 200.0)),
    ConeBeam("lateral", 541.0, 949.0, (32, 32), (300.0, 300.0), source_side="left"),
]


@pytest.mark.parametrize("geometry", ANALYTIC_CASES, ids=lambda g: f"{type(g).__name__}")
def test_chord_lengths_through_ellipsoid(ellipsoid, geometry):
    out = project(ellipsoid[None], geometry, SPACING).numpy()[0]
    rows, cols = out.shape
    if isinstance(geometry, ConeBeam) or geometry.pixel_spacing_mm is not None:
        pixel = geometry.pixel_spacing_mm
    else:
        q = 2 if geometry.view == "frontal" else 1
        pixel = (SPACING[0], SPACING[q])
    ref = chord_lengths(*reference_rays(geometry, (rows, cols), pixel), CENTRE, SEMI)
    assert ref.max() > 50 and (ref == 0).mean() > 0.05  # the object is inside, with air around
    # At 32^3 the whole-image error (2-4.3 % measured) is set by the voxelised phantom's
    # silhouette: partial-volume and interpolation blur of the edge, first order in voxel size /
    # radius (Plastimatch's exact Siddon tracer does no better on such phantoms). Rays well inside
    # the silhouette (chord > 40 % of the longest) see only the second-order interpolation error
    # (0.25-0.95 % measured); the total (volume-weighted) integral is exact to rounding plus
    # voxelisation (< 0.3 %).
    assert rel_rms(out, ref) < 0.05
    inner = ref > 0.4 * ref.max()
    assert rel_rms(out[inner], ref[inner]) < 0.012
    assert_allclose(out.sum(), ref.sum(), rtol=0.01)


def test_cubic_interpolation_is_exact_for_quadratics_and_sharper_at_the_edge(ellipsoid):
    from xprospect.projection.renderers import cubic_taps

    # Keys' kernel (a = -0.5) reproduces polynomials up to degree 2 exactly (third-order accurate).
    f = lambda t: 0.3 * t**2 - 2.0 * t + 1.0  # noqa: E731
    grid = f(np.arange(20.0))
    at = np.array([3.25, 7.5, 11.9, 15.01])
    idx, w = cubic_taps(at, 20)
    assert_allclose((grid[idx] * w).sum(-1), f(at), rtol=1e-12)
    assert_allclose(w.sum(-1), 1.0, rtol=1e-12)
    geom = ANALYTIC_CASES[2]
    ref = chord_lengths(*reference_rays(geom, (32, 32), geom.pixel_spacing_mm), CENTRE, SEMI)
    lin = project(ellipsoid[None], geom, SPACING).numpy()[0]
    cub = project(ellipsoid[None], geom, SPACING, method="cubic").numpy()[0]
    assert rel_rms(cub, ref) < rel_rms(lin, ref)
    assert_allclose(cub.sum(), ref.sum(), rtol=0.01)


def test_trilinear_ray_marching_agrees(ellipsoid):
    geom = ANALYTIC_CASES[3]
    joseph = project(ellipsoid[None], geom, SPACING).numpy()[0]
    marched = project(ellipsoid[None], geom, SPACING, method="trilinear", step_mm=0.5).numpy()[0]
    ref = chord_lengths(*reference_rays(geom, joseph.shape, geom.pixel_spacing_mm), CENTRE, SEMI)
    assert rel_rms(marched, ref) < 0.05
    inner = ref > 0.4 * ref.max()
    assert rel_rms(marched[inner], ref[inner]) < 0.012
    # Two different samplings of the same trilinear field: close everywhere (0.02 % measured).
    assert_allclose(marched, joseph, rtol=0, atol=0.002 * ref.max())


# --- linear algebra: adjoint and gradients --------------------------------------------------------

ADJOINT_CASES = [
    (ParallelBeam("frontal", detector_shape_px=(9, 11), pixel_spacing_mm=(5.0, 3.0)), "joseph"),
    (ParallelBeam("lateral"), "joseph"),
    (MeanProjection("lateral", detector_shape_px=(10, 7)), "joseph"),
    (ConeBeam("frontal", 300.0, 500.0, (12, 14), (90.0, 80.0), (4.0, 2.0, -3.0)), "joseph"),
    (ConeBeam("lateral", 300.0, 500.0, (13, 11), (90.0, 80.0)), "joseph"),
    (ConeBeam("lateral", 300.0, 500.0, (9, 10), (90.0, 80.0)), "trilinear"),
    (ConeBeam("frontal", 300.0, 500.0, (12, 14), (90.0, 80.0), (4.0, 2.0, -3.0)), "cubic"),
    (ParallelBeam("frontal", detector_shape_px=(9, 11), pixel_spacing_mm=(5.0, 3.0)), "cubic"),
]


@pytest.mark.parametrize("geometry, method", ADJOINT_CASES, ids=lambda x: str(x)[:18])
def test_back_projection_is_the_adjoint(geometry, method):
    rng = np.random.default_rng(2)
    shape = (16, 18, 20)
    x = rng.standard_normal((2, *shape))
    forward = project(x, geometry, SPACING, method=method).numpy()
    y = rng.standard_normal(forward.shape)
    back = back_project(y, geometry, shape, SPACING, method=method).numpy()
    assert back.shape == x.shape
    lhs, rhs = np.sum(forward * y), np.sum(x * back)
    assert_allclose(lhs, rhs, rtol=1e-4)
    assert abs(lhs) > 1e-3 * np.linalg.norm(forward) * np.linalg.norm(y)  # not a trivial 0 = 0


def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(3)
    shape = (12, 12, 12)
    hu = rng.uniform(-600, 800, (1, *shape))
    geom = ConeBeam("lateral", 300.0, 500.0, (10, 10), (80.0, 80.0), (3.0, -2.0, 1.0))
    weights = rng.random((1, 10, 10))

    def loss(h):
        # A nonlinear chain as a model would use: HU -> mu -> line integral -> intensity.
        return tf.reduce_sum(weights * intensity(project(hu_to_mu(h), geom, SPACING)))

    x = tf.constant(hu)
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = loss(x)
    grad = tape.gradient(value, x).numpy()
    eps = 1e-2  # HU; the loss is smooth away from -1000 HU
    for idx in [(0, 6, 5, 6), (0, 3, 8, 2), (0, 9, 1, 10), (0, 6, 6, 6)]:
        plus, minus = hu.copy(), hu.copy()
        plus[idx] += eps
        minus[idx] -= eps
        numeric = (loss(tf.constant(plus)).numpy() - loss(tf.constant(minus)).numpy()) / (2 * eps)
        assert_allclose(grad[idx], numeric, rtol=1e-5, atol=1e-12)
    assert np.abs(grad).max() > 0


# --- orientation on the asymmetric phantom --------------------------------------------------------


def _centroid(img):
    w = np.clip(img, 0, None)
    rows, cols = np.indices(img.shape)
    return float((w * rows).sum() / w.sum()), float((w * cols).sum() / w.sum())


def _landmark_images(geometry, name):
    """DRR of the phantom minus the DRR with one structure turned to water: that structure."""
    ph = asymmetric_phantom()
    a = ph.volume.array
    i, j, _ = np.indices(a.shape)
    masks = {
        "heart": a == 400.0,
        "spine": (a == 1000.0) & (j > 0.65 * a.shape[1]),
        "apex_marker": (a == 1000.0) & (i < 0.2 * a.shape[0]) & (j < 0.65 * a.shape[1]),
    }
    without = ph.volume.replace(array=np.where(masks[name], 0.0, a).astype(np.float32))
    full = render_drr(ph.volume, geometry=geometry).array
    return full - render_drr(without, geometry=geometry).array, ph


def _expected_cone_pixel(ph, name, geom):
    """Perspective projection of a landmark's centre: (row, col) on the detector."""
    pos = ph.volume.index_to_world(ph.landmarks[name]) - np.asarray(ph.volume.center_mm)
    # RAS+ offsets to the canonical axes 0 (towards feet), 1 (posterior), 2 (patient's left).
    along = {"feet": -pos[2], "posterior": -pos[1], "left": -pos[0]}
    if geom.view == "frontal":  # source posterior
        depth, col = geom.sad_mm - along["posterior"], along["left"]
    else:  # source on the patient's right
        depth, col = geom.sad_mm + along["left"], along["posterior"]
    mag = geom.sid_mm / depth
    (rows, cols), (pr, pc) = geom.detector_shape_px, geom.pixel_spacing_mm
    return (rows - 1) / 2 + along["feet"] * mag / pr, (cols - 1) / 2 + col * mag / pc


ORIENTATION_GEOMETRIES = {
    "parallel": ParallelBeam,
    "x2ct": lambda view: ConeBeam(view, 541.0, 949.0, (64, 64), (400.0, 400.0)),
}


@pytest.mark.parametrize("kind", ["parallel", "x2ct"])
def test_frontal_orientation(kind):
    geom = ORIENTATION_GEOMETRIES[kind]("frontal")
    heart, ph = _landmark_images(geom, "heart")
    apex, _ = _landmark_images(geom, "apex_marker")
    rows, cols = heart.shape
    hr, hc = _centroid(heart)
    ar, ac = _centroid(apex)
    assert hc > cols / 2  # heart (patient's left) on the image right
    assert ac < cols / 2  # apex marker (patient's right) on the image left ...
    assert ar < hr < rows / 2  # ... and above the heart, both in the upper half
    if kind == "parallel":  # on the volume grid the centroids are the landmark indices
        assert_allclose((hr, hc), np.take(ph.landmarks["heart"], [0, 2]), atol=0.6)
        assert_allclose((ar, ac), np.take(ph.landmarks["apex_marker"], [0, 2]), atol=0.6)
    else:
        assert_allclose((hr, hc), _expected_cone_pixel(ph, "heart", geom), atol=0.5)
        assert_allclose((ar, ac), _expected_cone_pixel(ph, "apex_marker", geom), atol=0.5)


@pytest.mark.parametrize("kind", ["parallel", "x2ct"])
def test_lateral_orientation(kind):
    geom = ORIENTATION_GEOMETRIES[kind]("lateral")
    heart, ph = _landmark_images(geom, "heart")
    spine, _ = _landmark_images(geom, "spine")
    cols = heart.shape[1]
    assert _centroid(heart)[1] < cols / 2  # anterior on the image left
    assert _centroid(spine)[1] > cols / 2  # spine on the image right
    if kind == "parallel":
        assert_allclose(_centroid(heart), np.take(ph.landmarks["heart"], [0, 1]), atol=0.6)
    else:
        assert_allclose(_centroid(heart), _expected_cone_pixel(ph, "heart", geom), atol=0.5)


@pytest.mark.parametrize("view", ["frontal", "lateral"])
def test_cone_beam_layout_matches_parallel(view):
    ph = asymmetric_phantom()
    par = render_drr(ph.volume, view, "parallel", size=32).array
    cone_geom = geometry_preset("x2ct", view, size=128)
    cone = render_drr(ph.volume, geometry=cone_geom).array
    # Map each parallel pixel (on the volume's extent) through the isocentre magnification.
    q = 2 if view == "frontal" else 1
    extent = np.asarray(ph.volume.extent_mm)[[0, q]]
    mag = cone_geom.sid_mm / cone_geom.sad_mm
    pos = [(np.arange(32) + 0.5) / 32 * e - e / 2 for e in extent]
    rr, cc = np.meshgrid(*pos, indexing="ij")
    pix = cone_geom.pixel_spacing_mm
    coords = [rr * mag / pix[0] + 63.5, cc * mag / pix[1] + 63.5]
    resampled = ndimage.map_coordinates(cone, coords, order=1)
    corr = np.corrcoef(resampled.ravel(), par.ravel())[0, 1]
    assert corr > 0.95
    # The body outline alone correlates highly when mirrored (0.98 lateral); the anatomy must
    # still prefer the right layout. The landmark tests above pin the layout down exactly.
    assert corr > np.corrcoef(resampled[:, ::-1].ravel(), par.ravel())[0, 1]


def test_non_canonical_volume_is_reoriented():
    ph = asymmetric_phantom()
    ras = ph.volume.replace(
        array=np.ascontiguousarray(ph.volume.array[::-1, ::-1, ::-1].transpose(2, 1, 0)),
        affine=ph.volume.affine
        @ np.array([[0, 0, -1, 31], [0, -1, 0, 31], [-1, 0, 0, 31], [0, 0, 0, 1]], dtype=float),
    )
    assert ras.orientation == ("R", "A", "S")
    for view in ("frontal", "lateral"):
        expected = render_drr(ph.volume, view, "x2ct", size=32).array
        assert_allclose(render_drr(ras, view, "x2ct", size=32).array, expected, rtol=1e-6)


def test_oblique_volume_raises():
    ph = asymmetric_phantom()
    c, s = np.cos(0.3), np.sin(0.3)
    rot = np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    oblique = ph.volume.replace(affine=rot @ ph.volume.affine)
    with pytest.raises(GeometryError):
        render_drr(oblique)


# --- API: batching, outputs, errors ---------------------------------------------------------------


def test_batch_of_volumes_and_views_equals_single_items():
    rng = np.random.default_rng(4)
    hu = rng.uniform(-1000, 1500, (2, 16, 16, 16)).astype(np.float32)
    batch = render_drr_batch(hu, SPACING, "x2ct", ("frontal", "lateral"), 24).numpy()
    assert batch.shape == (2, 2, 24, 24)
    for b in range(2):
        vol = Volume.from_spacing(hu[b], SPACING)
        for v, view in enumerate(("frontal", "lateral")):
            single = render_drr(vol, view, "x2ct", size=24).array
            assert_allclose(batch[b, v], single, rtol=1e-5, atol=1e-6)
    # The same through the tensor API, channels-last, and its adjoint.
    geoms = [geometry_preset("x2ct", v, 24) for v in ("frontal", "lateral")]
    mu = hu_to_mu(hu)[..., None]
    stacked = project_views(mu, geoms, SPACING).numpy()
    assert stacked.shape == (2, 2, 24, 24, 1)
    assert_allclose(stacked[..., 0], batch, rtol=1e-5, atol=1e-6)
    back = back_project_views(stacked, geoms, (16, 16, 16), SPACING).numpy()
    each = sum(
        back_project(stacked[:, i], g, (16, 16, 16), SPACING).numpy() for i, g in enumerate(geoms)
    )
    assert back.shape == (2, 16, 16, 16, 1)
    assert_allclose(back, each, rtol=1e-6)


def test_render_drr_outputs_and_metadata():
    ph = asymmetric_phantom()
    line = render_drr(ph.volume, "lateral", "x2ct", size=32)
    assert line.view is View.LATERAL and line.array.dtype == np.float32
    assert_allclose(line.pixel_spacing_mm, (500 / 32, 500 / 32))
    inten = render_drr(ph.volume, "lateral", "x2ct", size=32, output="intensity")
    assert_allclose(inten.array, np.exp(-line.array), rtol=1e-6)
    disp = render_drr(ph.volume, "lateral", "x2ct", size=32, output="display")
    assert_allclose(disp.array, line.array / line.array.max(), rtol=1e-6)
    ap = render_drr(ph.volume, geometry=ConeBeam(View.AP, detector_shape_px=(16, 16)))
    assert ap.view is View.AP
    # The XprospeCT mean image: windowed [-1000, 1000] HU averaged along the view's axis.
    mean = render_drr(ph.volume, "frontal", "xprospect_mean", size=32, output="display")
    windowed = np.clip((ph.volume.array + 1000) / 2000, 0, 1)
    assert_allclose(mean.array, windowed.mean(axis=1), rtol=1e-6, atol=1e-7)
    assert mean.view is View.PA
    assert_allclose(mean.pixel_spacing_mm, (4.0, 2.5))
    mean_line = render_drr(ph.volume, "frontal", "mean", size=32).array
    parallel_line = render_drr(ph.volume, "frontal", "parallel", size=32).array
    assert_allclose(mean_line, parallel_line, rtol=1e-5)


def test_presets_and_geometry_errors():
    x2ct = geometry_preset("x2ct", "lateral", 64)
    assert (x2ct.sad_mm, x2ct.sid_mm, x2ct.detector_size_mm) == (541.0, 949.0, (500.0, 500.0))
    assert x2ct.source_side == "right" and geometry_preset("x2ct").source_side == "posterior"
    assert x2ct.detector_shape_px == (64, 64)
    with pytest.raises(ConfigError):
        geometry_preset("nonsense")
    with pytest.raises(ConfigError):
        render_drr(asymmetric_phantom().volume, "lateral", ParallelBeam("frontal"))
    with pytest.raises(GeometryError):
        ConeBeam(sad_mm=900.0, sid_mm=500.0)
    with pytest.raises(GeometryError):
        ConeBeam("frontal", source_side="left")
    with pytest.raises(GeometryError):  # source inside a 32 x 3 mm deep volume
        project(np.zeros((1, 32, 32, 32)), ConeBeam(sad_mm=40.0, sid_mm=400.0), 3.0)
    with pytest.raises(GeometryError):
        project(np.zeros((32, 32, 32)), ParallelBeam(), 1.0)  # no batch axis


# --- Plastimatch backend --------------------------------------------------------------------------


def test_plastimatch_missing_is_a_clear_error(monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match="plastimatch"):
        render_drr(asymmetric_phantom().volume, backend="plastimatch", size=16)


@pytest.mark.skipif(not plastimatch_available(), reason="plastimatch is not installed")
@pytest.mark.parametrize("view", ["frontal", "lateral"])
def test_plastimatch_backend_agrees(view):
    ph = asymmetric_phantom()
    geom = ConeBeam(view, 541.0, 949.0, (40, 48), (240.0, 336.0))
    ours = render_drr(ph.volume, geometry=geom).array
    theirs = render_drr(ph.volume, geometry=geom, backend="plastimatch").array
    assert theirs.shape == ours.shape
    assert np.corrcoef(ours.ravel(), theirs.ravel())[0, 1] > 0.99
    assert_allclose(theirs.sum(), ours.sum(), rtol=0.02)  # same units: ∫ mu dl
    raw = plastimatch_drr(ph.volume.array, ph.volume.spacing_mm, geom, hu_conversion="plastimatch")
    assert np.corrcoef(raw.ravel(), theirs.ravel())[0, 1] > 0.95


def test_changing_batch_sizes_reuse_one_trace_without_a_retracing_warning(caplog):
    from xprospect.projection.renderers import get_projector

    geom = geometry_preset("x2ct", "frontal", 12)
    proj = get_projector(geom, (12, 12, 12), 25.0)
    rng = np.random.default_rng(0)
    vols = rng.uniform(-1000, 1000, (7, 12, 12, 12)).astype(np.float32)
    singles = [render_drr_batch(v[None], 25.0, [geom]).numpy()[0] for v in vols]
    with caplog.at_level("WARNING", logger="tensorflow"):
        for b in range(1, 8):  # a new batch size each call, as shards and single CTs give
            got = render_drr_batch(vols[:b], 25.0, [geom]).numpy()
            assert_allclose(got, np.stack(singles[:b]), rtol=1e-5, atol=1e-4)
    assert not [r for r in caplog.records if "retracing" in r.getMessage()]
    # The first shape, then one relaxed trace for every other batch size.
    assert proj._forward.experimental_get_tracing_count() <= 2
