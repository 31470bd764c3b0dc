"""The tf.data input pipeline over datasets written by ``xprospect prepare``.

A dataset folder holds uncompressed TFRecord shards ``{split}-{k:05d}.tfrecord`` and a
``manifest.json`` (see :mod:`xprospect.data.prepare`). Each record is one case:

=================  =======================================================================
feature            content
=================  =======================================================================
``case_id``        bytes
``volume``         int16 little-endian HU, canonical orientation (docs/conventions.md), C order
``volume_shape``   int64 (D, H, W)
``spacing_mm``     float (3,)
``frontal``        float16 little-endian DRR line integrals (rows, cols), display layout
``lateral``        float16 little-endian DRR line integrals (rows, cols)
``drr_shape``      int64 (rows, cols)
``scan_mask``      optional: the validity mask, 1 bit per voxel (``np.packbits`` of the C-order
                   0/1 volume, most significant bit first): 1 where the CT was scanned, 0 in the
                   air ``prepare`` padded the cube with (:func:`xprospect.preprocessing.scan_mask`).
                   Records written before masks existed lack it and read as all ones.
=================  =======================================================================

:func:`load_dataset` yields ``(inputs, target)`` pairs ready for ``model.fit``: ``inputs`` is a
dict ``{"frontal": (B, R, C, 1), "lateral": (B, R, C, 1)}`` float32 X-rays mapped to [0, 1]
(bright = dense) and ``target`` the ``(B, D, H, W, 1)`` float32 volume window-normalised to [0, 1].
With ``with_scan_mask`` the inputs also hold ``"scan_mask"``, ``(B, D, H, W, 1)`` float32 0/1, which
losses and metrics use to ignore the voxels outside the scanned region (models ignore it).
Optionally the volume is augmented in space (flip, rotation, shift, scale) and its DRRs are
rendered again on the fly so that the X-rays stay consistent with the volume; radiograph
augmentation (gamma, contrast, blur, noise) is applied to the X-rays only.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import tensorflow as tf

from xprospect.data.manifest import read_manifest
from xprospect.errors import ConfigError, MissingDataError, ShardError
from xprospect.preprocessing import resolve_hu_window

__all__ = [
    "Augmentation",
    "augmentation_from_dict",
    "encode_case",
    "load_dataset",
    "parse_case",
    "radiograph_augment",
    "spatial_augment",
    "verify_shards",
]

VIEWS = ("frontal", "lateral")
AIR_HU = -1024.0
XrayMapping = Literal["display", "line_integral", "intensity"]

_FEATURES = {
    "case_id": tf.io.FixedLenFeature([], tf.string),
    "volume": tf.io.FixedLenFeature([], tf.string),
    "volume_shape": tf.io.FixedLenFeature([3], tf.int64),
    "spacing_mm": tf.io.FixedLenFeature([3], tf.float32),
    "frontal": tf.io.FixedLenFeature([], tf.string),
    "lateral": tf.io.FixedLenFeature([], tf.string),
    "drr_shape": tf.io.FixedLenFeature([2], tf.int64),
    "scan_mask": tf.io.FixedLenFeature([], tf.string, default_value=b""),
}


# === Records ===


def _bytes(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def encode_case(
    case_id: str,
    volume_hu: np.ndarray,
    spacing_mm: Sequence[float],
    frontal: np.ndarray,
    lateral: np.ndarray,
    scan_mask: np.ndarray | None = None,
) -> bytes:
    """Serialises one case as a ``tf.train.Example`` (the schema in the module docstring).

    Args:
        case_id: Unique case name.
        volume_hu: (D, H, W) canonical HU; rounded and clipped to int16.
        spacing_mm: Voxel size along the three axes.
        frontal: (R, C) frontal DRR line integrals.
        lateral: (R, C) lateral DRR line integrals (same shape as frontal).
        scan_mask: Optional (D, H, W) validity mask (nonzero = scanned), stored as bits;
            ``None`` writes none (the case reads as fully scanned).

    Returns:
        The serialised Example.

    Raises:
        ConfigError: If the X-rays differ in shape or the mask's shape is not the volume's.
    """
    vol = np.clip(np.rint(np.asarray(volume_hu, dtype=np.float32)), -32768, 32767)
    vol = np.ascontiguousarray(vol.astype("<i2"))
    f = np.ascontiguousarray(np.asarray(frontal, dtype="<f2"))
    lat = np.ascontiguousarray(np.asarray(lateral, dtype="<f2"))
    if f.shape != lat.shape or f.ndim != 2:
        raise ConfigError(f"frontal {f.shape} and lateral {lat.shape} must be equal 2D shapes")
    feats = {
        "case_id": _bytes(case_id.encode()),
        "volume": _bytes(vol.tobytes()),
        "volume_shape": tf.train.Feature(int64_list=tf.train.Int64List(value=list(vol.shape))),
        "spacing_mm": tf.train.Feature(
            float_list=tf.train.FloatList(value=[float(s) for s in spacing_mm])
        ),
        "frontal": _bytes(f.tobytes()),
        "lateral": _bytes(lat.tobytes()),
        "drr_shape": tf.train.Feature(int64_list=tf.train.Int64List(value=list(f.shape))),
    }
    if scan_mask is not None:
        m = np.asarray(scan_mask)
        if m.shape != vol.shape:
            raise ConfigError(f"scan_mask {m.shape} must have the volume's shape {vol.shape}")
        feats["scan_mask"] = _bytes(np.packbits(m.astype(bool).ravel()).tobytes())
    # Deterministic: map entries in key order, so a shard's bytes do not depend on the process
    # (protobuf orders maps by a per-process hash otherwise); a resumed prepare equals a fresh one.
    example = tf.train.Example(features=tf.train.Features(feature=feats))
    return example.SerializeToString(deterministic=True)


def parse_case(
    serialized: tf.Tensor,
    volume_shape: Sequence[int] | None = None,
    drr_shape: Sequence[int] | None = None,
    *,
    with_scan_mask: bool = False,
) -> dict[str, tf.Tensor]:
    """Parses one record into ``case_id``, ``volume`` (int16 → float32 HU), ``spacing_mm``,
    ``frontal`` and ``lateral`` (float32 line integrals); with ``with_scan_mask`` also
    ``scan_mask`` (uint8 0/1 of the volume's shape; all ones for a record without one). Static
    shapes are set when given."""
    ex = tf.io.parse_single_example(serialized, _FEATURES)
    vshape = ex["volume_shape"] if volume_shape is None else tuple(volume_shape)
    dshape = ex["drr_shape"] if drr_shape is None else tuple(drr_shape)
    volume = tf.reshape(tf.io.decode_raw(ex["volume"], tf.int16, little_endian=True), vshape)
    out = {
        "case_id": ex["case_id"],
        "volume": tf.cast(volume, tf.float32),
        "spacing_mm": ex["spacing_mm"],
    }
    if with_scan_mask:
        out["scan_mask"] = _unpack_mask(ex["scan_mask"], vshape)
    for view in VIEWS:
        raw = tf.io.decode_raw(ex[view], tf.uint16, little_endian=True)
        out[view] = tf.reshape(float16_bits_to_float32(raw), dshape)
    return out


def _unpack_mask(packed: tf.Tensor, shape: Sequence[int] | tf.Tensor) -> tf.Tensor:
    """The uint8 0/1 volume of ``np.packbits`` bytes; all ones for empty bytes (no mask)."""
    n = tf.reduce_prod(tf.cast(shape, tf.int64))

    def unpack() -> tf.Tensor:
        raw = tf.cast(tf.io.decode_raw(packed, tf.uint8), tf.int32)
        shifts = tf.constant([7, 6, 5, 4, 3, 2, 1, 0], tf.int32)
        bits = tf.bitwise.bitwise_and(tf.bitwise.right_shift(raw[:, None], shifts), 1)
        return tf.cast(tf.reshape(bits, [-1])[:n], tf.uint8)

    flat = tf.cond(tf.strings.length(packed) > 0, unpack, lambda: tf.ones([n], tf.uint8))
    return tf.reshape(flat, shape)


def float16_bits_to_float32(bits: tf.Tensor) -> tf.Tensor:
    """IEEE half-precision values (given as their ``uint16`` bit patterns) as ``float32``.

    Integer arithmetic instead of a ``float16`` tensor and a cast: any op on a ``float16``
    tensor makes TensorFlow's oneDNN build log an error line ("oneDNN supports DT_HALF only on
    platforms with AVX-512") on CPUs without AVX-512 FP16, once per process, in the middle of a
    training run's output. Exact for every pattern (zeros, subnormals, infinities, NaN).
    """
    h = tf.cast(bits, tf.int32)
    sign = tf.bitwise.left_shift(tf.bitwise.bitwise_and(h, 0x8000), 16)
    exponent = tf.bitwise.bitwise_and(tf.bitwise.right_shift(h, 10), 0x1F)
    mantissa = tf.bitwise.left_shift(tf.bitwise.bitwise_and(h, 0x3FF), 13)
    # Rebias the exponent (15 -> 127); all ones (infinity, NaN) stays all ones.
    exponent32 = tf.where(exponent == 0x1F, 0xFF, exponent + 112)
    normal = tf.bitcast(
        tf.bitwise.bitwise_or(
            sign, tf.bitwise.bitwise_or(tf.bitwise.left_shift(exponent32, 23), mantissa)
        ),
        tf.float32,
    )
    # Zeros and subnormals: mantissa * 2^-24, with the sign.
    tiny = tf.cast(tf.bitwise.bitwise_and(h, 0x3FF), tf.float32) * 2.0**-24
    tiny = tf.where(sign != 0, -tiny, tiny)
    return tf.where(exponent == 0, tiny, normal)


# === Augmentation ===


@dataclass(frozen=True)
class Augmentation:
    """Random augmentation settings (all off by default).

    Spatial (applied to the HU volume, then the DRRs are rendered again; needs ``rerender``):
        flip_lr_prob: Probability of mirroring patient left/right (array axis 2).
        rotate_deg: Maximum rotation about the head-feet axis (patient turning), degrees.
        shift_mm: Maximum shift along each axis, mm.
        scale: Maximum relative isotropic scale change (0.05 = ±5 %).

    Radiograph (applied to each X-ray after mapping to [0, 1]):
        gamma: Maximum |log gamma|; the image becomes ``x ** gamma``.
        contrast: Maximum relative contrast change around the image mean.
        blur_sigma_px: Maximum Gaussian blur sigma, pixels.
        noise_std: Maximum standard deviation of additive Gaussian noise.
    """

    flip_lr_prob: float = 0.0
    rotate_deg: float = 0.0
    shift_mm: float = 0.0
    scale: float = 0.0
    gamma: float = 0.0
    contrast: float = 0.0
    blur_sigma_px: float = 0.0
    noise_std: float = 0.0

    @property
    def spatial(self) -> bool:
        return any(v > 0 for v in (self.flip_lr_prob, self.rotate_deg, self.shift_mm, self.scale))

    @property
    def radiograph(self) -> bool:
        return any(v > 0 for v in (self.gamma, self.contrast, self.blur_sigma_px, self.noise_std))

    @classmethod
    def default(cls) -> Augmentation:
        """Mild settings that keep anatomy plausible and help models meet real X-rays."""
        return cls(
            flip_lr_prob=0.0,
            rotate_deg=5.0,
            shift_mm=5.0,
            scale=0.05,
            gamma=0.3,
            contrast=0.2,
            blur_sigma_px=1.0,
            noise_std=0.02,
        )


def _projective(images: tf.Tensor, matrix: tf.Tensor, fill_value: float) -> tf.Tensor:
    """Applies one 2D affine map (output pixel → input pixel, 3x3) to (N, H, W, 1) images."""
    transform = tf.reshape(matrix, [9])[:8][None]
    n = tf.shape(images)[0]
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=tf.tile(transform, [n, 1]),
        output_shape=tf.shape(images)[1:3],
        fill_value=fill_value,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )


def _about_centre(linear: tf.Tensor, shift: tf.Tensor, h: tf.Tensor, w: tf.Tensor) -> tf.Tensor:
    """Output→input pixel map of ``linear`` about the image centre, then a shift (pixels)."""
    c = tf.stack([(tf.cast(w, tf.float32) - 1) / 2, (tf.cast(h, tf.float32) - 1) / 2])
    offset = c - tf.linalg.matvec(linear, c) - tf.linalg.matvec(linear, shift)
    top = tf.concat([linear, offset[:, None]], axis=1)
    return tf.concat([top, tf.constant([[0.0, 0.0, 1.0]])], axis=0)


def spatial_augment(
    volume: tf.Tensor,
    spacing_mm: tf.Tensor,
    aug: Augmentation,
    seed: tf.Tensor,
    *,
    fill_value: float = AIR_HU,
) -> tf.Tensor:
    """Randomly flips, rotates (about the head-feet axis), shifts and scales a canonical HU volume.

    Args:
        volume: (D, H, W) HU.
        spacing_mm: (3,) voxel size.
        aug: The settings.
        seed: (2,) int stateless seed.
        fill_value: What fills the voxels that moved in from outside the volume: air (-1024
            HU) for CT; 0 moves a validity mask with the same seed (what moved in was not
            scanned).

    Returns:
        The transformed (D, H, W) volume (bilinear in each plane).
    """
    seeds = tf.random.experimental.stateless_split(seed, 6)
    u = [tf.random.stateless_uniform([], seeds[i], -1.0, 1.0) for i in range(5)]
    flip = tf.random.stateless_uniform([], seeds[5]) < aug.flip_lr_prob
    volume = tf.cond(flip, lambda: tf.reverse(volume, axis=[2]), lambda: volume)
    theta = u[0] * aug.rotate_deg * math.pi / 180.0
    scale = 1.0 + u[1] * aug.scale
    shift_mm = tf.stack([u[2], u[3], u[4]]) * aug.shift_mm
    shift_px = shift_mm / spacing_mm
    d, h, w = tf.shape(volume)[0], tf.shape(volume)[1], tf.shape(volume)[2]
    # Axial plane (rows = axis 1, cols = axis 2): rotation + scale + in-plane shift.
    cos, sin = tf.cos(theta) / scale, tf.sin(theta) / scale
    # Pixel (x=col, y=row) coordinates; anisotropic in-plane spacing keeps rotation rigid in mm.
    sy, sx = spacing_mm[1], spacing_mm[2]
    linear = tf.stack([tf.stack([cos, -sin * sy / sx]), tf.stack([sin * sx / sy, cos])])
    m_axial = _about_centre(linear, tf.stack([-shift_px[2], -shift_px[1]]), h, w)
    out = _projective(volume[..., None], m_axial, fill_value)[..., 0]
    # Coronal plane (rows = axis 0, cols = axis 2 unchanged): scale and shift along head-feet.
    lin_z = tf.stack([tf.stack([1.0, 0.0]), tf.stack([0.0, 1.0 / scale])])
    m_z = _about_centre(lin_z, tf.stack([0.0, -shift_px[0]]), d, w)
    out = tf.transpose(out, [1, 0, 2])  # (H, D, W): treat axis 1 as the batch of coronal images
    out = _projective(out[..., None], m_z, fill_value)[..., 0]
    return tf.transpose(out, [1, 0, 2])


def _gaussian_blur(image: tf.Tensor, sigma: tf.Tensor, radius: int) -> tf.Tensor:
    x = tf.range(-radius, radius + 1, dtype=tf.float32)
    k = tf.exp(-0.5 * tf.square(x / tf.maximum(sigma, 1e-3)))
    k = k / tf.reduce_sum(k)
    img = image[None, ..., None]
    img = tf.nn.conv2d(
        tf.pad(img, [[0, 0], [radius, radius], [0, 0], [0, 0]], "SYMMETRIC"),
        tf.reshape(k, [-1, 1, 1, 1]),
        1,
        "VALID",
    )
    img = tf.nn.conv2d(
        tf.pad(img, [[0, 0], [0, 0], [radius, radius], [0, 0]], "SYMMETRIC"),
        tf.reshape(k, [1, -1, 1, 1]),
        1,
        "VALID",
    )
    return img[0, ..., 0]


def radiograph_augment(image: tf.Tensor, aug: Augmentation, seed: tf.Tensor) -> tf.Tensor:
    """Random gamma, contrast, blur and noise on a [0, 1] X-ray (R, C); output clipped to [0, 1]."""
    seeds = tf.random.experimental.stateless_split(seed, 5)
    u = [tf.random.stateless_uniform([], seeds[i], -1.0, 1.0) for i in range(3)]
    x = tf.clip_by_value(image, 0.0, 1.0)
    if aug.gamma > 0:
        x = tf.pow(x + 1e-6, tf.exp(u[0] * aug.gamma))
    if aug.contrast > 0:
        mean = tf.reduce_mean(x)
        x = (x - mean) * (1.0 + u[1] * aug.contrast) + mean
    if aug.blur_sigma_px > 0:
        sigma = (u[2] + 1.0) / 2.0 * aug.blur_sigma_px
        x = _gaussian_blur(x, sigma, radius=max(1, math.ceil(3 * aug.blur_sigma_px)))
    if aug.noise_std > 0:
        std = tf.random.stateless_uniform([], seeds[3], 0.0, aug.noise_std)
        x = x + std * tf.random.stateless_normal(tf.shape(x), seeds[4])
    return tf.clip_by_value(x, 0.0, 1.0)


# === Pipeline ===


def map_xray(line_integral: tf.Tensor, mapping: XrayMapping) -> tf.Tensor:
    """Maps DRR line integrals to the model's input scale (``display``: per-image max → 1)."""
    from xprospect.projection.physics import display_unit

    if mapping == "display":
        return display_unit(line_integral)
    if mapping == "intensity":
        return tf.exp(-line_integral)
    if mapping == "line_integral":
        return line_integral
    raise ConfigError(
        f"unknown xray mapping {mapping!r}; expected display, intensity, line_integral"
    )


def shard_files(data_dir: str | os.PathLike[str], split: str) -> list[str]:
    """The shard files of one split, in order."""
    files = sorted(str(p) for p in Path(data_dir).glob(f"{split}-*.tfrecord"))
    if not files:
        raise MissingDataError(f"no '{split}' shards ({split}-*.tfrecord)", data_dir)
    return files


_VERIFIED: dict[tuple[str, int, int], int] = {}
"""Record counts of shards already verified in this process, by (path, size, mtime_ns)."""
_count_records_fn: tf.types.experimental.PolymorphicFunction | None = None


def _count_records(path: str) -> int:
    global _count_records_fn
    if _count_records_fn is None:

        @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
        def count(file: tf.Tensor) -> tf.Tensor:
            records = tf.data.TFRecordDataset(file, buffer_size=8 << 20)
            return records.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1)

        _count_records_fn = count
    return int(_count_records_fn(tf.constant(path)))


def _tf_reason(exc: tf.errors.OpError) -> str:
    """TensorFlow's own words without its graph-node preamble: ``corrupted record at 12``."""
    text = " ".join(str(exc.message).split())
    match = re.search(r"(truncated record at \d+|corrupted record at \d+[^\[]*)", text)
    return match.group(1).strip().rstrip("'") if match else text[:200]


def verify_shards(
    files: Sequence[str | os.PathLike[str]], manifest: Mapping[str, object] | None = None
) -> None:
    """Reads every record of every shard once (checksums included) and compares the record
    counts with the manifest's, so a truncated or corrupt shard is named before training or
    evaluation starts instead of failing mid-run with TensorFlow's ``DataLossError``.

    About 1 s per GiB from the page cache; a shard whose size and modification time are
    unchanged is verified once per process.

    Args:
        files: The shard files.
        manifest: The dataset's manifest (:func:`~xprospect.data.manifest.read_manifest`): its
            ``shards`` entries give the expected record counts.

    Raises:
        ShardError: Names the shard and what is wrong with it.
    """
    shards = manifest.get("shards", {}) if manifest is not None else {}
    expected = {
        str(v.get("file")): v.get("cases")
        for v in (shards.values() if isinstance(shards, Mapping) else [])
        if isinstance(v, Mapping)
    }
    hint = "the dataset is damaged: rebuild it with 'xprospect prepare'"
    for file in files:
        path = Path(file)
        try:
            stat = path.stat()
        except OSError as exc:
            raise ShardError(f"cannot read shard: {exc.strerror or exc}", path) from None
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        count = _VERIFIED.get(key)
        if count is None:
            try:
                count = _count_records(str(path))
            except tf.errors.OpError as exc:
                raise ShardError(
                    f"TFRecord shard is truncated or corrupt ({_tf_reason(exc)}); {hint}", path
                ) from None
            _VERIFIED[key] = count
        want = expected.get(path.name)
        if isinstance(want, int) and want != count:
            raise ShardError(
                f"TFRecord shard holds {count} record(s), the manifest says {want}; {hint}", path
            )


def load_dataset(
    data_dir: str | os.PathLike[str],
    split: str = "train",
    *,
    batch_size: int = 1,
    hu_window: str | Sequence[float] = "xprospect",
    views: Sequence[str] = VIEWS,
    xray_mapping: XrayMapping = "display",
    shuffle: bool | None = None,
    shuffle_buffer: int = 64,
    seed: int = 0,
    repeat: bool = False,
    cache: bool = False,
    augment: Augmentation | None = None,
    rerender: bool | None = None,
    input_context: tf.distribute.InputContext | None = None,
    drop_remainder: bool = False,
    with_case_id: bool = False,
    with_lung_mask: bool = False,
    verify: bool = True,
    with_scan_mask: bool = False,
) -> tf.data.Dataset:
    """Builds the input pipeline of one split.

    The split's shards are verified first (:func:`verify_shards`), so a truncated or corrupt
    shard is a :class:`~xprospect.errors.ShardError` naming it, not a ``DataLossError``
    mid-iteration.

    Args:
        data_dir: A folder written by ``xprospect prepare``.
        split: ``train``, ``val`` or ``test``.
        batch_size: Global batch size; under ``tf.distribute`` with ``input_context`` the
            per-replica size is derived from it.
        hu_window: Window that maps the target volume to [0, 1] (name or (low, high) HU).
        views: Which X-rays to return (``("frontal",)`` for single-view models).
        xray_mapping: How DRR line integrals become model inputs.
        shuffle: Shuffle (default: only for ``train``).
        shuffle_buffer: Shuffle buffer size in cases; it holds up to this many parsed cases
            (float32 volume and DRRs: about 8.1 MiB each at 128^3), whatever the split's size.
        seed: Seed of shuffling and augmentation (deterministic given the seed).
        repeat: Repeat indefinitely (for step-based training).
        cache: Cache parsed cases in memory (before augmentation): memory grows with the split.
        augment: Augmentation settings; None for none.
        rerender: Render DRRs from the (augmented) volume on the fly with the dataset's geometry
            instead of reading the stored ones. Default: True when spatial augmentation is on.
        input_context: From ``strategy.distribute_datasets_from_function``: shards files (or
            records, when there are fewer files than input pipelines) across workers.
        drop_remainder: Drop the last partial batch (static batch shapes).
        with_case_id: Add ``"case_id"`` to the inputs dict (for evaluation).
        with_lung_mask: Add ``"lung_mask"``, ``(B, D, H, W, 1)`` float32 0/1, to the inputs dict:
            :func:`xprospect.segmentation.lung_mask` of each (augmented) target volume, computed
            on the fly (about 0.1 s per case at 64^3 and 1 s at 128^3, in parallel with
            training). Models ignore it; the GAN trainer's masked terms use it.
        verify: Verify the shards' records and checksums first (:func:`verify_shards`).
        with_scan_mask: Add ``"scan_mask"``, ``(B, D, H, W, 1)`` float32 0/1, to the inputs
            dict: 1 where the case's CT was scanned, 0 in the air ``prepare`` padded the cube
            with (all ones for phantoms and for datasets written before masks). Spatial
            augmentation moves it with the volume (bilinear, then kept where >= 0.5; what moves
            in from outside is 0). Models ignore it; the trainers' voxel losses and the
            evaluation use it (``data.validity_mask``).

    Returns:
        A dataset of ``(inputs, target)``; see the module docstring for shapes.
    """
    manifest = read_manifest(data_dir)
    size = int(manifest["config"]["size"])
    drr_size = int(manifest["config"].get("drr_size", size))
    geometry = str(manifest["config"]["geometry"])
    window = resolve_hu_window(hu_window)
    for v in views:
        if v not in VIEWS:
            raise ConfigError(f"unknown view {v!r}; expected some of {VIEWS}")
    aug = augment or Augmentation()
    if rerender is None:
        rerender = aug.spatial
    if aug.spatial and not rerender:
        raise ConfigError("spatial augmentation needs rerender=True to keep X-rays consistent")
    # A stylized copy (xprospect.style.apply.stylize_dataset) stores [0, 1] display images.
    stylized = manifest["config"].get("xray_values") == "display"
    if stylized and (rerender or xray_mapping != "display"):
        raise ConfigError(
            "its X-rays are stylized display images: use xray_mapping display and no spatial "
            "augmentation (re-rendered DRRs would lose the style)",
            data_dir,
        )
    shuffle = (split == "train") if shuffle is None else shuffle

    files = shard_files(data_dir, split)
    if verify:
        verify_shards(files, manifest)
    ds = tf.data.Dataset.from_tensor_slices(files)
    options = tf.data.Options()
    if input_context is not None and input_context.num_input_pipelines > 1:
        if len(files) >= input_context.num_input_pipelines:
            ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
            per_file = False
        else:
            per_file = True
        batch_size = input_context.get_per_replica_batch_size(batch_size)
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    else:
        per_file = False
        # With experimental_distribute_dataset, shard by file when possible, else by record.
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.AUTO
        )
    ds = tf.data.TFRecordDataset(ds, num_parallel_reads=min(len(files), 4))
    if per_file and input_context is not None:
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    vshape, dshape = (size, size, size), (drr_size, drr_size)
    spacing = [float(v) for v in np.broadcast_to(manifest["config"]["spacing_mm"], (3,))]
    ds = ds.map(
        lambda s: parse_case(s, vshape, dshape, with_scan_mask=with_scan_mask),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    if cache:
        ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    needs_seed = aug.spatial or aug.radiograph
    if needs_seed:
        ds = tf.data.Dataset.zip((ds, tf.data.Dataset.random(seed=seed).batch(2)))
    else:
        ds = ds.map(lambda c: (c, tf.zeros([2], tf.int64)))

    def per_case(case: dict[str, tf.Tensor], rnd: tf.Tensor) -> dict[str, tf.Tensor]:
        seeds = tf.random.experimental.stateless_split(rnd, 2)
        if aug.spatial:
            case = dict(
                case, volume=spatial_augment(case["volume"], case["spacing_mm"], aug, seeds[0])
            )
            if with_scan_mask:
                # The same seed draws the same transform; bilinear weights >= 0.5 are the
                # nearest neighbour's verdict.
                moved = spatial_augment(
                    tf.cast(case["scan_mask"], tf.float32),
                    case["spacing_mm"],
                    aug,
                    seeds[0],
                    fill_value=0.0,
                )
                case["scan_mask"] = tf.cast(moved >= 0.5, tf.uint8)
        case["seed"] = seeds[1]
        if with_lung_mask:
            case["lung_mask"] = _lung_mask_tf(case["volume"], spacing)
        return case

    ds = ds.map(per_case, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)

    def finish(batch: dict[str, tf.Tensor]) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
        volume = batch["volume"]
        if rerender:
            from xprospect.projection.drr import render_drr_batch

            drrs = render_drr_batch(
                volume, manifest["config"]["spacing_mm"], geometry, VIEWS, drr_size
            )
            batch = dict(batch, frontal=drrs[:, 0], lateral=drrs[:, 1])
        inputs: dict[str, tf.Tensor] = {}
        for i, v in enumerate(views):
            x = batch[v] if stylized else map_xray(batch[v], xray_mapping)
            if aug.radiograph:
                # fold_in returns int32 seeds whatever it is given; keep one dtype for map_fn.
                view_seeds = tf.map_fn(
                    lambda s, i=i: tf.cast(
                        tf.random.experimental.stateless_fold_in(s, i), tf.int64
                    ),
                    batch["seed"],
                )
                x = tf.map_fn(
                    lambda args: radiograph_augment(args[0], aug, args[1]),
                    (x, view_seeds),
                    fn_output_signature=tf.float32,
                )
            inputs[v] = x[..., None]
        if with_case_id:
            inputs["case_id"] = batch["case_id"]
        if with_lung_mask:
            inputs["lung_mask"] = batch["lung_mask"][..., None]
        if with_scan_mask:
            inputs["scan_mask"] = tf.cast(batch["scan_mask"], tf.float32)[..., None]
        lo, hi = window
        target = tf.clip_by_value((volume - lo) / (hi - lo), 0.0, 1.0)[..., None]
        return inputs, target

    ds = ds.map(finish, num_parallel_calls=tf.data.AUTOTUNE)
    options.deterministic = True
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def _lung_mask_tf(volume_hu: tf.Tensor, spacing_mm: Sequence[float]) -> tf.Tensor:
    """:func:`xprospect.segmentation.lung_mask` inside a tf.data map (NumPy/SciPy code)."""
    from xprospect.segmentation import lung_mask

    def segment(hu: np.ndarray) -> np.ndarray:
        return lung_mask(np.asarray(hu), spacing_mm=spacing_mm).astype(np.float32)

    mask = tf.numpy_function(segment, [volume_hu], tf.float32, stateful=False)
    mask.set_shape(volume_hu.shape)
    return mask


def augmentation_from_dict(values: dict[str, float] | None) -> Augmentation | None:
    """Builds :class:`Augmentation` from a config mapping (unknown keys are a ConfigError)."""
    if not values:
        return None
    known = set(asdict(Augmentation()))
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"unknown augmentation keys {sorted(unknown)}; known: {sorted(known)}")
    return Augmentation(**{k: float(v) for k, v in values.items()})
