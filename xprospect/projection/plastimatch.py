"""Optional DRR backend: Plastimatch's ``drr`` command (the renderer X2CT-GAN used).

X2CT-GAN ran ``drr -t pfm -nrm <n> -g "541 949" -r "320 320" -o <volume centre> -z "500 500"``
with ``nrm "0 1 0"`` (frontal) and ``"1 0 0"`` (lateral), then flipped the frontal image left-right
and scaled each image by its maximum. Plastimatch 1.9 spells ``-g`` as ``--sad``/``--sid`` and
``-nrm`` as ``-n``/``--nrm``. This module runs, for a :class:`ConeBeam`::

    plastimatch drr -t raw -A cpu -i exact --sad <sad> --sid <sid> -r "<cols> <rows>"
        -z "<cols_mm> <rows_mm>" -n "<nrm>" --vup "0 0 1" -o "<isocentre>" [-P none]
        -O <prefix> -I <volume>.mha

Facts about Plastimatch 1.9.4 this relies on (each checked against this package's renderer by
``tests/projection/test_projection.py``):

- The input is a MetaImage in DICOM LPS millimetres; ``-o`` is the isocentre in LPS.
- The source sits at ``isocentre + sad * nrm``; ``vup`` points to the top row; image columns run
  along ``vup x nrm``, so a PA frontal (``nrm = +y``, source posterior) comes out with the
  patient's left on the image left and is flipped here, as X2CT did.
- ``-r`` and ``-z`` take the horizontal size first: ``-r "a b"`` gives ``b`` rows of ``a`` pixels.
- Ray lengths are in cm. With ``-P none`` the output is ``sum(value * length_cm)``; the default HU
  conversion uses ``mu = 0.022 * (1 + HU / 1000)`` above -800 HU and 0 below.

With ``hu_conversion="xprospect"`` (the default) the volume is converted with
:func:`~xprospect.projection.physics.hu_to_mu` and projected with ``-P none``, and the result is
rescaled to the line integral ``∫ mu dl`` this package's renderers return. With
``hu_conversion="plastimatch"`` the HU volume goes in as X2CT gave it and the raw output comes
back unchanged (Plastimatch's own units).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from xprospect.errors import ConfigError, GeometryError
from xprospect.projection.geometry import ConeBeam
from xprospect.projection.physics import hu_to_mu

__all__ = ["PLASTIMATCH_CM_PER_MM", "plastimatch_available", "plastimatch_drr", "write_mha"]

PLASTIMATCH_CM_PER_MM = 0.1
"""Plastimatch's drr sums value times ray length in cm; multiply its output by 10 for mm."""


def plastimatch_available() -> bool:
    """True if the ``plastimatch`` executable is on PATH."""
    return shutil.which("plastimatch") is not None


def write_mha(
    path: str | Path, canonical: npt.ArrayLike, spacing_mm: Sequence[float]
) -> tuple[float, float, float]:
    """Writes a canonical volume as an uncompressed float32 MetaImage in LPS, centred at 0.

    The array is flipped along axis 0 so that all three MetaImage axes point along +x (patient's
    left), +y (posterior), +z (superior) and the direction matrix is the identity (older
    Plastimatch versions ignore direction cosines).

    Args:
        path: Output ``.mha`` path.
        canonical: (D, H, W) canonical array.
        spacing_mm: Voxel size along axes 0, 1, 2.

    Returns:
        The LPS origin (centre of the first stored voxel), mm.
    """
    a = np.ascontiguousarray(np.asarray(canonical, dtype=np.float32)[::-1])
    d, h, w = a.shape
    s0, s1, s2 = (float(s) for s in spacing_mm)
    origin = (-(w - 1) / 2 * s2, -(h - 1) / 2 * s1, -(d - 1) / 2 * s0)
    header = (
        "ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
        "CompressedData = False\nTransformMatrix = 1 0 0 0 1 0 0 0 1\n"
        f"Offset = {origin[0]!r} {origin[1]!r} {origin[2]!r}\nCenterOfRotation = 0 0 0\n"
        "AnatomicalOrientation = RAI\n"
        f"ElementSpacing = {s2!r} {s1!r} {s0!r}\nDimSize = {w} {h} {d}\n"
        "ElementType = MET_FLOAT\nElementDataFile = LOCAL\n"
    )
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(a.astype("<f4", copy=False).tobytes())
    return origin


def plastimatch_drr(
    canonical_hu: npt.ArrayLike,
    spacing_mm: Sequence[float],
    geometry: ConeBeam,
    *,
    hu_conversion: Literal["xprospect", "plastimatch"] = "xprospect",
    algorithm: Literal["exact", "uniform"] = "exact",
    timeout_s: float = 600.0,
) -> npt.NDArray[np.float32]:
    """Renders one DRR with Plastimatch, in this package's image layout.

    Args:
        canonical_hu: (D, H, W) canonical HU array.
        spacing_mm: Voxel size along axes 0, 1, 2, mm.
        geometry: The cone-beam geometry.
        hu_conversion: ``"xprospect"``: line integrals of :func:`hu_to_mu` (comparable with
            :func:`~xprospect.projection.project`); ``"plastimatch"``: Plastimatch's default HU
            conversion and raw output, as X2CT-GAN used it.
        algorithm: Plastimatch's ``-i``: ``"exact"`` (Siddon-style exact path lengths through
            voxels) or ``"uniform"`` (fixed-step sampling).
        timeout_s: Give up after this many seconds.

    Returns:
        (rows, cols) float32 image.

    Raises:
        ConfigError: If plastimatch is not installed or an option is unknown.
        GeometryError: If the geometry is not a cone beam.
        RuntimeError: If plastimatch fails (its message is included).
    """
    exe = shutil.which("plastimatch")
    if exe is None:
        raise ConfigError(
            "backend='plastimatch' needs the plastimatch executable on PATH "
            "(e.g. apt-get install plastimatch)"
        )
    if not isinstance(geometry, ConeBeam):
        raise GeometryError(f"Plastimatch renders cone-beam geometries only, got {geometry!r}")
    if hu_conversion not in ("xprospect", "plastimatch"):
        raise ConfigError(f"unknown hu_conversion {hu_conversion!r}")
    if algorithm not in ("exact", "uniform"):
        raise ConfigError(f"unknown algorithm {algorithm!r}")
    hu = np.asarray(canonical_hu, dtype=np.float32)
    values = hu_to_mu(hu) if hu_conversion == "xprospect" else hu
    rows, cols = geometry.detector_shape_px
    rows_mm, cols_mm = geometry.detector_size_mm
    off = geometry.isocenter_offset_mm
    iso_lps = (off[2], off[1], -off[0])  # axes 2, 1, 0 point to +x, +y, -z in LPS
    sign = geometry.source_sign
    if geometry.view == "frontal":
        nrm = np.array([0.0, sign, 0.0])
        wanted_columns = np.array([1.0, 0.0, 0.0])  # patient's right to left = +x
    else:
        nrm = np.array([sign, 0.0, 0.0])
        wanted_columns = np.array([0.0, 1.0, 0.0])  # anterior to posterior = +y
    vup = np.array([0.0, 0.0, 1.0])
    flip_columns = float(np.dot(np.cross(vup, nrm), wanted_columns)) < 0

    def fmt(xs: Sequence[float] | npt.NDArray[np.float64]) -> str:
        return " ".join(repr(float(x)) for x in xs)

    with tempfile.TemporaryDirectory(prefix="xprospect-drr-") as tmp:
        volume_path = Path(tmp) / "volume.mha"
        write_mha(volume_path, values, spacing_mm)
        prefix = Path(tmp) / "drr"
        cmd = [
            exe, "drr", "-t", "raw", "-A", "cpu", "-i", algorithm,
            "--sad", repr(geometry.sad_mm), "--sid", repr(geometry.sid_mm),
            "-r", f"{cols} {rows}", "-z", fmt((cols_mm, rows_mm)),
            "-n", fmt(nrm), "--vup", fmt(vup), "-o", fmt(iso_lps),
            "-O", str(prefix), "-I", str(volume_path),
        ]  # fmt: skip
        if hu_conversion == "xprospect":
            cmd[2:2] = ["-P", "none"]
        try:
            subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.CalledProcessError as exc:
            tail = (exc.stderr or exc.stdout or "").strip()[-500:]
            raise RuntimeError(f"plastimatch drr failed (exit {exc.returncode}): {tail}") from exc
        out = Path(f"{prefix}0000.raw")
        if not out.exists():
            raise RuntimeError(f"plastimatch drr wrote no {out.name}")
        image = np.fromfile(out, dtype="<f4").reshape(rows, cols)
    if flip_columns:
        image = image[:, ::-1]
    if hu_conversion == "xprospect":
        image = image / PLASTIMATCH_CM_PER_MM
    return np.ascontiguousarray(image, dtype=np.float32)
