"""The corpus of bad, hostile and odd inputs behind the CLI's error contract (issue 15).

Every case is a command line of ``xprospect`` and the files it needs, generated from a seed into
the case's own folder at test time (nothing large is committed), with its expected outcome: the
exit code (``docs/errors.md``), a pattern the one-line message must match and the user's path or
key it must name. ``test_corpus.py`` runs each case in-process and checks the contract; run this
file to list the cases::

    python tests/reliability/make_corpus.py --summary        # cases by kind and expected code
    python tests/reliability/make_corpus.py --list           # one line per case

Placeholders in a case's arguments: ``{case}`` its folder (inputs), ``{out}`` the folder it may
write in (``{case}/out``), ``{model}`` the shared tiny run folder (16^3, made once per session),
``{data}`` the shared tiny dataset (16^3 phantoms).
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import shutil
import socket
import struct
import subprocess
import sys
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SEED = 15
"""The corpus seed: every case draws from ``numpy.random.default_rng([SEED, crc32(name)])``."""

EXIT = {
    "ok": 0,
    "usage": 2,
    "input": 4,
    "config": 5,
    "model": 6,
    "output": 7,
    "resource": 8,
}
"""Exit code by category (the table of ``docs/errors.md``)."""

CATEGORY = {code: name for name, code in EXIT.items()}


@dataclass(frozen=True)
class Shared:
    """What cases share, made once per session: a tiny run folder and a tiny dataset."""

    model: Path
    data: Path


Make = Callable[[Path, np.random.Generator, Shared], None]


@dataclass(frozen=True)
class Case:
    """One corpus case.

    Attributes:
        name: ``kind/what``, unique (the test id).
        argv: The command line after ``xprospect`` (with placeholders, see the module docstring).
        make: Writes the case's inputs into its folder.
        code: The expected exit code.
        message: A regular expression the error line must match (case-insensitive); None: any.
        names: Text the error line must contain (the user's path or key, with placeholders).
        unchanged: Files (with placeholders) whose bytes must not change, even inside ``{out}``.
        absent: Paths that must not exist afterwards (e.g. a hostile model's marker file).
        env: Environment variables set while the case runs.
        as_root: False where root cannot test it (permissions).
    """

    name: str
    argv: tuple[str, ...]
    make: Make | None
    code: int
    message: str | None = None
    names: str | None = None
    unchanged: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    as_root: bool = True

    @property
    def kind(self) -> str:
        return self.name.split("/")[0]

    @property
    def category(self) -> str:
        return CATEGORY.get(self.code, str(self.code))


def rng_for(name: str) -> np.random.Generator:
    """The case's own generator: the same files for the same name, whatever runs before."""
    return np.random.default_rng([SEED, zlib.crc32(name.encode())])


# =============================================================================================
# Writers
# =============================================================================================


def _combine(*makers: Make) -> Make:
    def make(folder: Path, rng: np.random.Generator, shared: Shared) -> None:
        for maker in makers:
            maker(folder, rng, shared)

    return make


def _write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)


def _file(name: str, data: bytes | str | Callable[[np.random.Generator], bytes | str]) -> Make:
    """Writes ``data`` (or what it makes from the case's generator) to ``{case}/name``."""

    def make(folder: Path, rng: np.random.Generator, shared: Shared) -> None:
        _write(folder / name, data(rng) if callable(data) else data)

    return make


def _random_bytes(n: int) -> Callable[[np.random.Generator], bytes]:
    return lambda rng: rng.integers(0, 256, n, dtype=np.uint8).tobytes()


# --- CT volumes -------------------------------------------------------------------------------


def _ct_array(rng: np.random.Generator, shape: Sequence[int] = (24, 24, 24)) -> np.ndarray:
    """A small CT-like int16 array: air around a soft-tissue ellipsoid with a bony core."""
    axes = [np.linspace(-1, 1, n) if n > 1 else np.zeros(1) for n in shape]
    grids = np.meshgrid(*axes, indexing="ij")
    r2 = sum(g**2 for g in grids)
    hu = np.where(r2 < 0.7, 40.0, -1000.0) + np.where(r2 < 0.05, 700.0, 0.0)
    return (hu + rng.normal(0, 20, shape)).astype(np.int16)


def _nifti_bytes(array: np.ndarray, affine: np.ndarray | None = None) -> bytearray:
    import nibabel as nib

    img = nib.Nifti1Image(array, np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else affine)
    img.header.set_xyzt_units("mm")
    return bytearray(img.to_bytes())


def _patch(data: bytearray, offset: int, fmt: str, *values: Any) -> bytearray:
    struct.pack_into("<" + fmt, data, offset, *values)
    return data


# NIfTI-1 header offsets.
_DIM, _PIXDIM, _QFORM_CODE, _SFORM_CODE, _SROW, _MAGIC = 40, 76, 252, 254, 280, 344


def _nifti(
    name: str,
    array: Callable[[np.random.Generator], np.ndarray] | None = None,
    *,
    affine: np.ndarray | None = None,
    patch: Callable[[bytearray], bytearray] | None = None,
    gz: bool | None = None,
    cut: float | None = None,
) -> Make:
    """A NIfTI file made from ``array`` (default: a small CT), its header patched, optionally
    gzipped (by the name) and cut to a fraction of its bytes."""

    def make(folder: Path, rng: np.random.Generator, shared: Shared) -> None:
        data = _nifti_bytes(array(rng) if array else _ct_array(rng), affine)
        if patch is not None:
            data = patch(data)
        raw = bytes(data)
        if gz if gz is not None else name.endswith(".gz"):
            raw = gzip.compress(raw, mtime=0)
        if cut is not None:
            raw = raw[: int(len(raw) * cut)]
        _write(folder / name, raw)

    return make


def _huge_dims(*dims: int, datatype: tuple[int, int] = (4, 16)) -> Callable[[bytearray], bytearray]:
    """A header claiming ``dims`` (datatype code, bits), over a few bytes of data."""

    def patch(data: bytearray) -> bytearray:
        _patch(data, _DIM, "8h", len(dims), *dims, *([1] * (7 - len(dims))))
        _patch(data, 70, "hh", *datatype)
        return data

    return patch


def _sform(affine: np.ndarray) -> Callable[[bytearray], bytearray]:
    """Writes ``affine`` into sform (code 1) and drops the qform."""

    def patch(data: bytearray) -> bytearray:
        _patch(data, _QFORM_CODE, "hh", 0, 1)
        for row in range(3):
            _patch(data, _SROW + 16 * row, "4f", *affine[row])
        return data

    return patch


def _pixdim_only(spacing: float) -> Callable[[bytearray], bytearray]:
    """No qform or sform: the affine comes from pixdim, set to ``spacing``."""

    def patch(data: bytearray) -> bytearray:
        _patch(data, _QFORM_CODE, "hh", 0, 0)
        _patch(data, _PIXDIM + 4, "3f", spacing, spacing, spacing)
        return data

    return patch


def _gzip_bomb(name: str, shape: Sequence[int], payload_mb: int) -> Make:
    """A ``.nii.gz`` whose header claims ``shape`` (int16) and whose stream inflates to
    ``payload_mb`` MiB of zeros (a few hundred KiB compressed)."""

    def make(folder: Path, rng: np.random.Generator, shared: Shared) -> None:
        header = _patch(
            _nifti_bytes(np.zeros((2, 2, 2), np.int16)), _DIM, "8h", 3, *shape, 1, 1, 1, 1
        )
        z = zlib.compressobj(9, zlib.DEFLATED, 31)
        chunks = [z.compress(bytes(header[:352]))]
        block = bytes(1 << 20)
        chunks += [z.compress(block) for _ in range(payload_mb)]
        chunks.append(z.flush())
        _write(folder / name, b"".join(chunks))

    return make


def _phantom_nifti(name: str) -> Make:
    def make(folder: Path, rng: np.random.Generator, shared: Shared) -> None:
        from xprospect.io import write_nifti
        from xprospect.phantoms import asymmetric_phantom

        write_nifti(asymmetric_phantom().volume, folder / name)

    return make


# --- DICOM ----------------------------------------------------------------------------------


def _dcm_save(ds: Any, path: Path, sop_class: str, transfer_syntax: str | None = None) -> None:
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax or ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _uid(rng: np.random.Generator) -> str:
    return "1.2.826.0.1.3680043.10.1015." + ".".join(str(v) for v in rng.integers(1, 10**6, 3))


def _ct_series(
    sub: str = "series",
    *,
    n: int = 6,
    rows: int = 16,
    cols: int = 16,
    step: float = 2.5,
    modality: str = "CT",
    drop: Sequence[str] = (),
    z: Sequence[float] | None = None,
    constant: float | None = None,
    claim: tuple[int, int] | None = None,
    pixel_spacing: Sequence[float] = (1.0, 1.0),
    thickness: float | None = 2.5,
    compressed: bool = False,
    uid_per_slice: bool = False,
    sizes: Sequence[tuple[int, int]] | None = None,
) -> Make:
    """A CT (or other modality) series of ``n`` axial slices in ``{case}/sub``.

    Args:
        drop: Tags left out of every slice (``PixelData`` for none).
        z: Slice positions (default ``step`` apart).
        constant: Every stored value (default: CT-like noise).
        claim: Rows and columns written into the header, whatever the pixels are.
        compressed: Pixel data encapsulated as JPEG 2000 (junk: needs a codec that fails).
        uid_per_slice: Every slice its own series (nothing groups).
        sizes: Per-slice (rows, columns), mixed geometry within one series.
    """

    def make(folder: Path, rng: np.random.Generator, shared: Shared) -> None:
        from pydicom.dataset import Dataset
        from pydicom.encaps import encapsulate
        from pydicom.uid import CTImageStorage, JPEG2000Lossless, MRImageStorage

        series = _uid(rng)
        zs = list(z) if z is not None else [k * step for k in range(n)]
        for k, zk in enumerate(zs):
            r, c = sizes[k] if sizes else (rows, cols)
            ds = Dataset()
            ds.SOPInstanceUID = _uid(rng)
            ds.Modality = modality
            ds.SeriesInstanceUID = _uid(rng) if uid_per_slice else series
            ds.StudyInstanceUID = "1.2.826.0.1.3680043.10.1015.1"
            ds.PatientID = "CORPUS"
            ds.InstanceNumber = k + 1
            ds.ImagePositionPatient = ["-8.0", "-8.0", f"{zk:.3f}"]
            ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
            ds.PixelSpacing = [f"{v:g}" for v in pixel_spacing]
            if thickness is not None:
                ds.SliceThickness = f"{thickness:g}"
            ds.RescaleSlope = "1"
            ds.RescaleIntercept = "-1024"
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.Rows, ds.Columns = claim or (r, c)
            ds.BitsAllocated = ds.BitsStored = 16
            ds.HighBit = 15
            ds.PixelRepresentation = 0
            if constant is not None:
                stored = np.full((r, c), constant, np.uint16)
            else:
                stored = (_ct_array(rng, (r, c, 1))[..., 0] + 1024).clip(0).astype(np.uint16)
            ts = None
            if compressed:
                ds.PixelData = encapsulate([b"\xff\x4f\xff\x51 junk, not JPEG 2000 \xff\xd9"])
                ds["PixelData"].VR = "OB"
                ts = JPEG2000Lossless
            else:
                ds.PixelData = stored.astype("<u2").tobytes()
            for tag in drop:
                if tag in ds:
                    delattr(ds, tag)
            sop = MRImageStorage if modality == "MR" else CTImageStorage
            _dcm_save(ds, folder / sub / f"slice{k:03d}.dcm", sop, ts)

    return make


def _cr(
    name: str,
    *,
    rows: int = 256,
    cols: int = 256,
    view: str | None = "PA",
    modality: str = "CR",
    orientation: Sequence[str] | None = None,
    photometric: str = "MONOCHROME2",
    pixel_spacing: Sequence[float] | None = (0.5, 0.5),
    frames: int | None = None,
    claim: tuple[int, int] | None = None,
    compressed: bool = False,
    drop: Sequence[str] = (),
) -> Make:
    """A computed radiograph (or another modality's single image) as DICOM."""

    def make(folder: Path, rng: np.random.Generator, shared: Shared) -> None:
        from pydicom.dataset import Dataset
        from pydicom.encaps import encapsulate
        from pydicom.uid import ComputedRadiographyImageStorage, CTImageStorage, JPEGLSLossless

        ds = Dataset()
        ds.SOPInstanceUID = _uid(rng)
        ds.Modality = modality
        ds.SeriesInstanceUID = _uid(rng)
        ds.PatientID = "CORPUS"
        if view is not None:
            ds.ViewPosition = view
        if orientation is not None:
            ds.PatientOrientation = list(orientation)
        if pixel_spacing is not None:
            ds.PixelSpacing = [f"{v:g}" for v in pixel_spacing]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = photometric
        ds.Rows, ds.Columns = claim or (rows, cols)
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        shape = (frames, rows, cols) if frames else (rows, cols)
        if frames:
            ds.NumberOfFrames = frames
        stored = _xray_array(rng, shape[-2:]) * 4095
        stored = np.broadcast_to(stored, shape).astype("<u2")
        ts = None
        if compressed:
            ds.PixelData = encapsulate([b"\xff\xd8 not really JPEG-LS \xff\xd9"])
            ds["PixelData"].VR = "OB"
            ts = JPEGLSLossless
        else:
            ds.PixelData = stored.tobytes()
        if modality == "CT":
            ds.ImagePositionPatient = ["0", "0", "0"]
            ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
            ds.RescaleSlope, ds.RescaleIntercept = "1", "-1024"
        for tag in drop:
            if tag in ds:
                delattr(ds, tag)
        sop = CTImageStorage if modality == "CT" else ComputedRadiographyImageStorage
        _dcm_save(ds, folder / name, sop, ts)

    return make


# --- Radiographs ----------------------------------------------------------------------------


def _xray_array(rng: np.random.Generator, shape: Sequence[int] = (256, 256)) -> np.ndarray:
    """A chest-X-ray-like image in [0, 1]: two dark lungs in a bright body, with noise."""
    h, w = shape
    y, x = np.mgrid[0:h, 0:w]
    yy, xx = (y - h / 2) / (h / 2), (x - w / 2) / (w / 2)
    body = ((xx / 0.9) ** 2 + (yy / 0.95) ** 2) < 1
    lungs = (((np.abs(xx) - 0.4) / 0.25) ** 2 + (yy / 0.6) ** 2) < 1
    image = 0.15 + 0.55 * body - 0.35 * lungs + rng.normal(0, 0.03, (h, w))
    return np.clip(image, 0, 1)


def _png(
    name: str,
    shape: Sequence[int] = (256, 256),
    *,
    mode: str = "I;16",
    fmt: str | None = None,
    scale: float | None = None,
) -> Make:
    """A radiograph saved by Pillow in ``mode`` (``I;16``, ``L``, ``P``, ``RGBA``, ``LA``, ``1``,
    ``RGB``, ``CMYK``, ``F``) as ``fmt`` (default: by the name's suffix)."""

    def make(folder: Path, rng: np.random.Generator, shared: Shared) -> None:
        from PIL import Image

        a = _xray_array(rng, shape)
        if mode in ("I;16", "F") or scale is not None:
            full = scale if scale is not None else 65535.0
            arr = (a * full).astype(np.uint16 if mode == "I;16" else np.float32)
            img = Image.fromarray(arr)
        else:
            img = Image.fromarray((a * 255).astype(np.uint8), mode="L")
            if mode != "L":
                img = img.convert(mode)
        folder.mkdir(parents=True, exist_ok=True)
        img.save(folder / name, format=fmt)

    return make


def _good_xrays(folder: Path, rng: np.random.Generator, shared: Shared) -> None:
    """``{case}/frontal.png`` and ``{case}/lateral.png``: plausible 16-bit radiographs."""
    _png("frontal.png")(folder, rng, shared)
    _png("lateral.png")(folder, rng, shared)


def _png_chunks(width: int, height: int, *, bit_depth: int = 8, colour: int = 0) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` and whose data is one compressed row."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    idat = zlib.compress(bytes(min(width, 4096) + 1))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A JPEG whose frame header (SOF0) claims ``width`` x ``height``."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def _cut(name: str, maker: Make, fraction: float) -> Make:
    """What ``maker`` writes to ``{case}/name``, cut to ``fraction`` of its bytes."""

    def make(folder: Path, rng: np.random.Generator, shared: Shared) -> None:
        maker(folder, rng, shared)
        path = folder / name
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * fraction)])

    return make


# --- Configs --------------------------------------------------------------------------------

_TRAIN_YAML = """\
name: corpus
data:
  dir: {data}
  batch_size: 1
model:
  preset: 512-Dense
  size: 16
  overrides: {base_filters: 4, dense_units: 64}
training:
  steps: 1
  output_dir: {out}/run
"""


def _yaml(name: str, text: str | Callable[[np.random.Generator], str | bytes]) -> Make:
    """A config file; ``{data}`` and ``{out}`` in the text become the shared dataset and the
    case's output folder."""

    def make(folder: Path, rng: np.random.Generator, shared: Shared) -> None:
        body = text(rng) if callable(text) else text
        if isinstance(body, str):
            body = body.replace("{data}", str(shared.data)).replace("{out}", str(folder / "out"))
        _write(folder / name, body)

    return make


def _alias_bomb(levels: int = 6, width: int = 9) -> str:
    """The "billion laughs" in YAML: ``width**levels`` strings once the aliases are expanded."""
    lines = ['a0: &a0 ["lol"]']
    for k in range(1, levels + 1):
        refs = ", ".join([f"*a{k - 1}"] * width)
        lines.append(f"a{k}: &a{k} [{refs}]")
    return "\n".join(lines) + "\n"


def _deep(depth: int, opener: str = "[", closer: str = "]") -> str:
    return "lol: " + opener * depth + closer * depth + "\n"


def _huge_yaml(megabytes: int) -> Callable[[np.random.Generator], str]:
    # Valid until line 2, so that a loader without a size limit fails fast on its syntax.
    filler = "# " + "x" * 1021 + "\n"
    return lambda rng: "name: huge\n  bad: indentation\n" + filler * (megabytes * 1024)


# --- Datasets -------------------------------------------------------------------------------


def _dataset_copy(
    sub: str = "ds", edit: Callable[[Path, np.random.Generator], None] | None = None
) -> Make:
    """A copy of the shared dataset in ``{case}/sub``, changed by ``edit``."""

    def make(folder: Path, rng: np.random.Generator, shared: Shared) -> None:
        dest = folder / sub
        shutil.copytree(shared.data, dest)
        if edit is not None:
            edit(dest, rng)

    return make


def _first(ds: Path, split: str) -> Path:
    return sorted(ds.glob(f"{split}-*.tfrecord"))[0]


def _corrupt_shard(split: str, how: str) -> Callable[[Path, np.random.Generator], None]:
    def edit(ds: Path, rng: np.random.Generator) -> None:
        shard = _first(ds, split)
        data = bytearray(shard.read_bytes())
        if how == "truncate":
            data = data[: len(data) // 2]
        elif how == "random":
            data = bytearray(rng.integers(0, 256, len(data), dtype=np.uint8).tobytes())
        elif how == "flip":  # one byte in the middle of the first record's data: its CRC fails
            data[len(data) // 2] ^= 0xFF
        elif how == "empty":
            data = bytearray()
        shard.write_bytes(bytes(data))

    return edit


def _remove(name: str) -> Callable[[Path, np.random.Generator], None]:
    def edit(ds: Path, rng: np.random.Generator) -> None:
        target = ds / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            for path in ds.glob(name):
                path.unlink()

    return edit


def _replace(name: str, data: bytes | str) -> Callable[[Path, np.random.Generator], None]:
    def edit(ds: Path, rng: np.random.Generator) -> None:
        _write(ds / name, data)

    return edit


# --- Locks ----------------------------------------------------------------------------------

_HELD: list[subprocess.Popen[str]] = []
"""Processes holding a lock for the case that runs now (:func:`release_locks` ends them)."""

_HOLD = (
    "import fcntl, sys, time\n"
    "f = open(sys.argv[1], 'a')\n"
    "fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
    "print('locked', flush=True)\n"
    "time.sleep(600)\n"
)


def _locked(sub: str) -> Make:
    """``{case}/sub`` locked by another process as ``xprospect.utils.folder_lock`` locks a run
    folder or dataset (``flock`` on ``.xprospect.lock``, the holder in ``.xprospect.lock.json``)."""

    def make(folder: Path, rng: np.random.Generator, shared: Shared) -> None:
        target = folder / sub
        target.mkdir(parents=True)
        proc = subprocess.Popen(
            [sys.executable, "-c", _HOLD, str(target / ".xprospect.lock")],
            stdout=subprocess.PIPE,
            text=True,
        )
        _HELD.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        holder = {
            "pid": proc.pid,
            "host": socket.gethostname(),
            "since": "2026-12-03T07:00:00+0000",
            "command": "xprospect prepare (the corpus's lock holder)",
        }
        _write(target / ".xprospect.lock.json", json.dumps(holder) + "\n")

    return make


def release_locks() -> None:
    """Ends the processes that hold a case's locks."""
    while _HELD:
        proc = _HELD.pop()
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


# --- Models ---------------------------------------------------------------------------------


def _model_copy(
    sub: str = "run", edit: Callable[[Path, np.random.Generator], None] | None = None
) -> Make:
    """A copy of the shared run folder in ``{case}/sub``, changed by ``edit``."""

    def make(folder: Path, rng: np.random.Generator, shared: Shared) -> None:
        dest = folder / sub
        shutil.copytree(shared.model, dest)
        if edit is not None:
            edit(dest, rng)

    return make


def _keras_file(name: str, how: str) -> Make:
    """A ``.keras`` file made from the shared model: ``truncate``, ``no-config`` (zip without
    config.json), ``unknown-class`` (a class no one registered), ``no-weights``."""

    def make(folder: Path, rng: np.random.Generator, shared: Shared) -> None:
        data = (shared.model / "model.keras").read_bytes()
        dest = folder / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if how == "truncate":
            dest.write_bytes(data[: len(data) // 2])
            return
        with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(dest, "w") as out:
            for item in src.infolist():
                body = src.read(item.filename)
                if item.filename == "config.json":
                    if how == "no-config":
                        continue
                    if how == "unknown-class":
                        config = json.loads(body)
                        config["class_name"] = "corpus>NoSuchModel"
                        config["module"] = "corpus.nowhere"
                        config["registered_name"] = "corpus>NoSuchModel"
                        body = json.dumps(config).encode()
                if how == "no-weights" and item.filename.endswith(".h5"):
                    continue
                out.writestr(item, body)

    return make


def _lambda_keras(name: str) -> Make:
    """A ``.keras`` model with a Lambda layer (Python bytecode): refused by safe mode."""

    def make(folder: Path, rng: np.random.Generator, shared: Shared) -> None:
        import keras

        inputs = {v: keras.Input((16, 16, 1), name=v) for v in ("frontal", "lateral")}
        x = keras.layers.Concatenate()([inputs["frontal"], inputs["lateral"]])
        x = keras.layers.Lambda(lambda t: t * 1.0)(x)
        x = keras.layers.Reshape((1, 16, 16, 2))(x)
        x = keras.layers.UpSampling3D((16, 1, 1))(x)
        out = keras.layers.Conv3D(1, 1, activation="sigmoid")(x)
        folder.mkdir(parents=True, exist_ok=True)
        keras.Model(inputs, out).save(folder / name)

    return make


def _saved_model(
    sub: str, *, marker: str | None = None, printing: bool = False, card: bool = False
) -> Make:
    """A SavedModel with xprospect's serving signature (frontal, lateral -> volume), written by
    plain TensorFlow: not an xprospect export. ``marker``: its serving function writes this file
    of the case folder (a hostile model); ``printing``: it prints; ``card``: a forged model card."""

    def make(folder: Path, rng: np.random.Generator, shared: Shared) -> None:
        import tensorflow as tf

        spec = [
            tf.TensorSpec([None, 16, 16, 1], tf.float32, name=v) for v in ("frontal", "lateral")
        ]
        target = None if marker is None else str(folder / marker)

        class Module(tf.Module):
            @tf.function(input_signature=spec)
            def serve(self, frontal: Any, lateral: Any) -> dict[str, Any]:
                if target is not None:
                    tf.io.write_file(target, "written by a model")
                if printing:
                    tf.print("a model that prints")
                mean = tf.reduce_mean(frontal) + tf.reduce_mean(lateral)
                volume = tf.zeros([tf.shape(frontal)[0], 16, 16, 16, 1]) + 0.25 * mean
                return {"volume": volume}

        module = Module()
        dest = folder / sub
        tf.saved_model.save(module, str(dest), signatures={"serving_default": module.serve})
        if card:
            _write(dest / "xprospect.json", json.dumps({"name": "forged", "views": ["frontal"]}))

    return make


# =============================================================================================
# The cases
# =============================================================================================

_CASES: list[Case] = []


def _add(
    name: str,
    argv: Sequence[str],
    make: Make | None,
    code: int | str,
    message: str | None = None,
    names: str | None = None,
    **kwargs: Any,
) -> None:
    _CASES.append(
        Case(
            name,
            tuple(argv),
            make,
            EXIT[code] if isinstance(code, str) else code,
            message,
            names,
            **kwargs,
        )
    )


def _info(path: str) -> list[str]:
    return ["info", path]


def _drr(path: str) -> list[str]:
    return ["drr", path, "--out", "{out}/drr", "--size", "16", "--geometry", "parallel"]


def _predict(
    frontal: str = "{case}/frontal.png",
    lateral: str | None = "{case}/lateral.png",
    *,
    model: str = "{model}",
    out: str = "{out}/ct.nii.gz",
    extra: Sequence[str] = (),
) -> list[str]:
    argv = ["predict", "--model", model, "--frontal", frontal, "--out", out]
    if lateral is not None:
        argv += ["--lateral", lateral]
    return argv + list(extra)


def _evaluate(data: str = "{data}", model: str = "{model}", *extra: str) -> list[str]:
    return [
        "evaluate",
        "--model",
        model,
        "--data",
        data,
        "--split",
        "test",
        "--output",
        "{out}/eval",
        "--max-cases",
        "1",
        *extra,
    ]


def _prepare(*inputs: str, out: str = "{out}/ds", extra: Sequence[str] = ()) -> list[str]:
    return ["prepare", *inputs, "--output", out, "--size", "16", "--geometry", "parallel", *extra]


def _train(config: str = "{case}/c.yaml", *extra: str) -> list[str]:
    return ["train", "--config", config, "--no-progress", *extra]


def _nifti_cases() -> None:
    ct = "{case}/ct.nii"
    gz = "{case}/ct.nii.gz"
    bad = "not a readable NIfTI|truncated|corrupt"
    _add("nifti/control", _info(gz), _nifti("ct.nii.gz"), "ok")
    _add("nifti/control-drr", _drr(gz), _phantom_nifti("ct.nii.gz"), "ok")
    _add("nifti/truncated", _info(ct), _nifti("ct.nii", cut=0.6), "input", bad, ct)
    _add("nifti/truncated-gz", _info(gz), _nifti("ct.nii.gz", cut=0.5), "input", bad, gz)
    _add("nifti/header-only", _info(ct), _nifti("ct.nii", cut=352 / 28000), "input", bad, ct)
    _add(
        "nifti/wrong-magic",
        _info(ct),
        _nifti("ct.nii", patch=lambda d: _patch(d, _MAGIC, "4s", b"xyz\0")),
        "input",
        bad,
        ct,
    )
    _add("nifti/garbage", _info(ct), _file("ct.nii", _random_bytes(5000)), "input", bad, ct)
    _add(
        "nifti/garbage-gz",
        _info(gz),
        _file("ct.nii.gz", _random_bytes(5000)),
        "input",
        "gzip|corrupt|readable",
        gz,
    )
    _add("nifti/empty", _info(ct), _file("ct.nii", b""), "input", "empty", ct)
    _add("nifti/empty-gz", _info(gz), _file("ct.nii.gz", b""), "input", "empty", gz)
    _add("nifti/text", _info(ct), _file("ct.nii", "hello, not a volume\n"), "input", bad, ct)
    _add(
        "nifti/not-gzipped",
        _info(gz),
        _nifti("ct.nii.gz", gz=False),
        "input",
        "gzip|corrupt|readable",
        gz,
    )
    _add(
        "nifti/double-gzip",
        _info(gz),
        lambda f, r, s: _write(
            f / "ct.nii.gz", gzip.compress(gzip.compress(bytes(_nifti_bytes(_ct_array(r)))))
        ),
        "input",
        bad,
        gz,
    )
    _add(
        "nifti/missing",
        _info("{case}/absent.nii.gz"),
        None,
        "input",
        "no such file",
        "{case}/absent.nii.gz",
    )
    _add(
        "nifti/folder-named-nii",
        _info("{case}/ct.nii"),
        _file("ct.nii/readme.txt", "a folder, not a file"),
        "input",
        "DICOM|folder|file",
        "{case}/ct.nii",
    )
    limit = "limit"
    _add(
        "nifti/huge-dims",
        _info(ct),
        _nifti("ct.nii", patch=_huge_dims(10000, 10000, 10000)),
        "resource",
        limit,
        ct,
    )
    _add(
        "nifti/huge-dims-gz",
        _info(gz),
        _nifti("ct.nii.gz", patch=_huge_dims(10000, 10000, 10000)),
        "resource",
        limit,
        gz,
    )
    _add(
        "nifti/huge-dims-float64",
        _info(gz),
        _nifti("ct.nii.gz", patch=_huge_dims(4096, 4096, 4096, datatype=(64, 64))),
        "resource",
        limit,
        gz,
    )
    _add(
        "nifti/huge-dims-4d-singleton",
        _info(gz),
        _nifti("ct.nii.gz", patch=_huge_dims(4096, 4096, 4096, 1)),
        "resource",
        limit,
        gz,
    )
    _add(
        "nifti/negative-dim",
        _info(ct),
        _nifti("ct.nii", patch=_huge_dims(24, -24, 24)),
        "input",
        bad + "|dim|shape",
        ct,
    )
    _add(
        "nifti/too-many-dims",
        _info(ct),
        _nifti("ct.nii", patch=lambda d: _patch(d, _DIM, "h", 9)),
        "input",
        bad,
        ct,
    )
    spacing = "spacing|plausible|affine"
    nan_affine = np.diag([np.nan, 2.0, 2.0, 1.0])
    _add(
        "nifti/nan-spacing",
        _info(gz),
        _nifti("ct.nii.gz", patch=_sform(nan_affine)),
        "input",
        spacing,
        gz,
    )
    _add(
        "nifti/nan-pixdim",
        _info(gz),
        _nifti("ct.nii.gz", patch=_pixdim_only(float("nan"))),
        "input",
        spacing,
        gz,
    )
    _add(
        "nifti/inf-spacing",
        _info(gz),
        _nifti("ct.nii.gz", patch=_sform(np.diag([np.inf, 2.0, 2.0, 1.0]))),
        "input",
        spacing,
        gz,
    )
    _add(
        "nifti/zero-spacing",
        _info(gz),
        _nifti("ct.nii.gz", patch=_sform(np.diag([0.0, 2.0, 2.0, 1.0]))),
        "input",
        spacing,
        gz,
    )
    _add(
        "nifti/zero-pixdim",  # nibabel takes a zero pixdim for 1 mm (with no qform or sform)
        _info(gz),
        _nifti("ct.nii.gz", patch=_pixdim_only(0.0)),
        "ok",
    )
    _add(
        "nifti/kilometre-spacing",
        _info(gz),
        _nifti("ct.nii.gz", patch=_sform(np.diag([1e6, 1e6, 1e6, 1.0]))),
        "input",
        spacing,
        gz,
    )
    _add(
        "nifti/micrometre-spacing",
        _info(gz),
        _nifti("ct.nii.gz", patch=_sform(np.diag([1e-6, 1e-6, 1e-6, 1.0]))),
        "input",
        spacing,
        gz,
    )
    _add(
        "nifti/kilometre-spacing-drr",
        _drr(gz),
        _nifti("ct.nii.gz", patch=_sform(np.diag([1e6, 1e6, 1e6, 1.0]))),
        "input",
        spacing,
        gz,
    )
    _add(
        "nifti/mirrored-affine",
        _info(gz),
        _nifti("ct.nii.gz", affine=np.diag([-2.0, -2.0, 2.0, 1.0])),
        "ok",
    )
    _add(
        "nifti/one-slice",
        _drr(gz),
        _nifti("ct.nii.gz", lambda r: _ct_array(r, (64, 64, 1))),
        "input",
        "slice",
        gz,
    )
    _add(
        "nifti/two-slices",
        _drr(gz),
        _nifti("ct.nii.gz", lambda r: _ct_array(r, (64, 64, 2))),
        "input",
        "slice",
        gz,
    )
    _add(
        "nifti/constant-air",
        _drr(gz),
        _nifti("ct.nii.gz", lambda r: np.full((24, 24, 24), -1000, np.int16)),
        "input",
        "constant|spread|HU",
        gz,
    )
    _add(
        "nifti/constant-zero",
        _drr(gz),
        _nifti("ct.nii.gz", lambda r: np.zeros((24, 24, 24), np.int16)),
        "input",
        "constant|spread|HU",
        gz,
    )
    _add(
        "nifti/one-slice-prepare",
        _prepare(gz),
        _nifti("ct.nii.gz", lambda r: _ct_array(r, (64, 64, 1))),
        "input",
        "slice",
        gz,
    )
    _add(
        "nifti/4d",
        _info(gz),
        _nifti("ct.nii.gz", lambda r: np.stack([_ct_array(r, (8, 8, 8))] * 3, -1)),
        "input",
        "3D",
        gz,
    )
    _add(
        "nifti/4d-singleton",
        _info(gz),
        _nifti("ct.nii.gz", lambda r: _ct_array(r, (8, 8, 8))[..., None]),
        "ok",
    )
    _add(
        "nifti/2d",
        _info(gz),
        _nifti("ct.nii.gz", lambda r: _ct_array(r, (8, 8, 1))[..., 0]),
        "input",
        "3D",
        gz,
    )

    def with_value(value: float) -> Callable[[np.random.Generator], np.ndarray]:
        def array(rng: np.random.Generator) -> np.ndarray:
            a = _ct_array(rng).astype(np.float32)
            a[3, 4, 5] = value
            return a

        return array

    _add("nifti/nan-values", _info(gz), _nifti("ct.nii.gz", with_value(np.nan)), "input", "NaN", gz)
    _add(
        "nifti/inf-values",
        _info(gz),
        _nifti("ct.nii.gz", with_value(np.inf)),
        "input",
        "NaN or Inf",
        gz,
    )
    _add(
        "nifti/nan-values-prepare",
        _prepare(gz),
        _nifti("ct.nii.gz", with_value(np.nan)),
        "input",
        "NaN",
        gz,
    )
    _add(
        "nifti/float64",
        _info(gz),
        _nifti("ct.nii.gz", lambda r: _ct_array(r).astype(np.float64)),
        "ok",
    )
    _add(
        "nifti/uint8",
        _info(gz),
        _nifti("ct.nii.gz", lambda r: (_ct_array(r) // 8 + 128).clip(0, 255).astype(np.uint8)),
        "ok",
    )
    _add(
        "nifti/big-endian",
        _info(gz),
        _nifti("ct.nii.gz", lambda r: _ct_array(r).astype(">i2")),
        "ok",
    )
    _add(
        "nifti/gzip-bomb-header",
        _info(gz),
        _gzip_bomb("ct.nii.gz", (4096, 4096, 4096), 8),
        "resource",
        limit,
        gz,
    )
    _add("nifti/gzip-bomb-stream", _info(gz), _gzip_bomb("ct.nii.gz", (32, 32, 32), 64), "ok")
    _add(
        "nifti/gzip-concatenated",
        _info(gz),
        lambda f, r, s: _write(
            f / "ct.nii.gz",
            (lambda b: gzip.compress(b[:2000], mtime=0) + gzip.compress(b[2000:], mtime=0))(
                bytes(_nifti_bytes(_ct_array(r)))
            ),
        ),
        "ok",
    )


def _dicom_cases() -> None:
    s = "{case}/series"
    _add("dicom/control", _info(s), _ct_series(), "ok")
    _add("dicom/control-drr", _drr(s), _ct_series(n=12), "ok")
    _add("dicom/control-cr", _info("{case}/cr.dcm"), _cr("cr.dcm"), "ok")
    _add(
        "dicom/no-pixel-data",
        _info(s),
        _ct_series(drop=("PixelData",)),
        "input",
        "pixel",
        "{case}/series",
    )
    _add(
        "dicom/no-pixel-data-cr",
        _info("{case}/cr.dcm"),
        _cr("cr.dcm", drop=("PixelData",)),
        "input",
        "pixel",
        "{case}/cr.dcm",
    )
    _add("dicom/mr-series-drr", _drr(s), _ct_series(modality="MR"), "input", "MR", s)
    _add("dicom/mr-series-prepare", _prepare(s), _ct_series(modality="MR"), "input", "MR|no CT", s)
    _add(
        "dicom/ct-as-frontal",
        _predict("{case}/ct.dcm"),
        _combine(_good_xrays, _cr("ct.dcm", modality="CT")),
        "input",
        "CT",
        "{case}/ct.dcm",
    )
    _add(
        "dicom/mr-as-frontal",
        _predict("{case}/mr.dcm"),
        _combine(_good_xrays, _cr("mr.dcm", modality="MR")),
        "input",
        "MR",
        "{case}/mr.dcm",
    )
    view = "lateral|LL|view|frontal"
    _add(
        "dicom/lateral-as-frontal",
        _predict("{case}/ll.dcm"),
        _combine(_good_xrays, _cr("ll.dcm", view="LL")),
        "input",
        view,
        "{case}/ll.dcm",
    )
    _add(
        "dicom/rl-as-frontal",
        _predict("{case}/rl.dcm"),
        _combine(_good_xrays, _cr("rl.dcm", view="RL")),
        "input",
        view,
        "{case}/rl.dcm",
    )
    _add(
        "dicom/pa-as-lateral",
        _predict(lateral="{case}/pa.dcm"),
        _combine(_good_xrays, _cr("pa.dcm", view="PA")),
        "input",
        "PA|view|lateral",
        "{case}/pa.dcm",
    )
    _add(
        "dicom/lateral-orientation-as-frontal",
        _predict("{case}/lo.dcm"),
        _combine(_good_xrays, _cr("lo.dcm", view=None, orientation=("A", "F"))),
        "input",
        "lateral|orientation|view|frontal",
        "{case}/lo.dcm",
    )
    _add(
        "dicom/cr-control-predict",
        _predict("{case}/pa.dcm"),
        _combine(_good_xrays, _cr("pa.dcm")),
        "ok",
    )
    codec = r"codec|decod|compress|xprospect\[dicom\]"
    _add(
        "dicom/compressed-cr",
        _info("{case}/c.dcm"),
        _cr("c.dcm", compressed=True),
        "input",
        codec,
        "{case}/c.dcm",
    )
    _add("dicom/compressed-series", _info(s), _ct_series(compressed=True), "input", codec, s)
    _add(
        "dicom/compressed-as-frontal",
        _predict("{case}/c.dcm"),
        _combine(_good_xrays, _cr("c.dcm", compressed=True)),
        "input",
        codec,
        "{case}/c.dcm",
    )
    _add(
        "dicom/no-position",
        _info(s),
        _ct_series(drop=("ImagePositionPatient",)),
        "input",
        "ImagePositionPatient",
        s,
    )
    _add(
        "dicom/no-orientation",
        _info(s),
        _ct_series(drop=("ImageOrientationPatient",)),
        "input",
        "ImageOrientationPatient",
        s,
    )
    _add("dicom/no-rows", _info(s), _ct_series(drop=("Rows",)), "input", "Rows|no DICOM images", s)
    _add("dicom/no-rescale", _info(s), _ct_series(drop=("RescaleSlope", "RescaleIntercept")), "ok")
    _add("dicom/two-series", _info(s), _combine(_ct_series(n=6), _ct_series(n=4)), "ok")
    _add(
        "dicom/every-slice-its-own-series",
        _info(s),
        _ct_series(uid_per_slice=True, thickness=None),
        "input",
        "slice|thickness|series",
        s,
    )
    _add(
        "dicom/mixed-sizes",
        _info(s),
        _ct_series(n=4, sizes=[(16, 16), (16, 16), (12, 16), (16, 16)]),
        "input",
        "image size",
        s,
    )
    _add(
        "dicom/gap",
        _info(s),
        _ct_series(z=[0, 2.5, 5, 10, 12.5, 15]),
        "input",
        "gap|missing slice",
        s,
    )
    _add(
        "dicom/duplicate-position",
        _info(s),
        _ct_series(z=[0, 2.5, 5, 5, 7.5]),
        "input",
        "duplicate",
        s,
    )
    _add(
        "dicom/irregular",
        _info(s),
        _ct_series(z=[0, 2.5, 5, 8.2, 10.7, 13.2]),
        "input",
        "irregular",
        s,
    )
    _add(
        "dicom/truncated-slice",
        _info(s),
        _cut("series/slice002.dcm", _ct_series(), 0.9),
        "input",
        "truncated",
        "{case}/series/slice002.dcm",
    )
    _add(
        "dicom/truncated-cr",
        _info("{case}/cr.dcm"),
        _cut("cr.dcm", _cr("cr.dcm"), 0.5),
        "input",
        "truncated|corrupt",
        "{case}/cr.dcm",
    )
    _add(
        "dicom/not-dicom-folder",
        _info(s),
        _file("series/readme.txt", "not DICOM\n"),
        "input",
        "DICOM",
        s,
    )
    _add(
        "dicom/empty-folder",
        _info(s),
        lambda f, r, sh: (f / "series").mkdir(parents=True),
        "input",
        "DICOM|empty|no",
        s,
    )
    _add(
        "dicom/text-as-dcm",
        _info("{case}/x.dcm"),
        _file("x.dcm", "hello\n" * 40),
        "input",
        "DICOM",
        "{case}/x.dcm",
    )
    _add(
        "dicom/preamble-then-garbage",
        _info("{case}/x.dcm"),
        _file(
            "x.dcm",
            lambda r: bytes(128) + b"DICM" + r.integers(0, 256, 600, dtype=np.uint8).tobytes(),
        ),
        "input",
        "DICOM|truncated|corrupt|readable",
        "{case}/x.dcm",
    )
    limit = "limit"
    _add(
        "dicom/huge-rows-series",
        _info(s),
        _ct_series(n=3, claim=(60000, 60000)),
        "resource",
        limit,
        s,
    )
    _add(
        "dicom/huge-rows-cr",
        _info("{case}/cr.dcm"),
        _cr("cr.dcm", claim=(65535, 65535)),
        "resource",
        limit,
        "{case}/cr.dcm",
    )
    _add(
        "dicom/huge-rows-as-frontal",
        _predict("{case}/cr.dcm"),
        _combine(_good_xrays, _cr("cr.dcm", claim=(65535, 65535))),
        "resource",
        limit,
        "{case}/cr.dcm",
    )
    _add(
        "dicom/tiny-cr-as-frontal",
        _predict("{case}/cr.dcm"),
        _combine(_good_xrays, _cr("cr.dcm", rows=1, cols=1)),
        "input",
        "small|size|pixel",
        "{case}/cr.dcm",
    )
    _add(
        "dicom/one-slice-drr",
        _drr(s),
        _ct_series(n=1, rows=32, cols=32),
        "input",
        "slice",
        s,
    )
    _add(
        "dicom/constant-series-drr",
        _drr(s),
        _ct_series(n=8, constant=24),
        "input",
        "constant|spread|HU",
        s,
    )
    _add(
        "dicom/kilometre-slices",
        _info(s),
        _ct_series(step=1e6),
        "input",
        "spacing|plausible",
        s,
    )
    _add(
        "dicom/kilometre-pixels",
        _info(s),
        _ct_series(pixel_spacing=(1e6, 1e6)),
        "input",
        "spacing|plausible",
        s,
    )
    _add(
        "dicom/zero-pixel-spacing",
        _info(s),
        _ct_series(pixel_spacing=(0.0, 0.0)),
        "input",
        "spacing|plausible",
        s,
    )
    _add(
        "dicom/multi-frame-cr",
        _info("{case}/cr.dcm"),
        _cr("cr.dcm", rows=32, cols=32, frames=2),
        "input",
        "multi-frame",
        "{case}/cr.dcm",
    )
    _add(
        "dicom/palette-cr",
        _info("{case}/cr.dcm"),
        _cr("cr.dcm", photometric="PALETTE COLOR"),
        "input",
        "grey",
        "{case}/cr.dcm",
    )
    _add(
        "dicom/cr-without-spacing", _info("{case}/cr.dcm"), _cr("cr.dcm", pixel_spacing=None), "ok"
    )
    _add(
        "dicom/cr-monochrome1",
        _info("{case}/cr.dcm"),
        _cr("cr.dcm", photometric="MONOCHROME1"),
        "ok",
    )
    _add(
        "dicom/cr-prepare",
        _prepare("{case}/cr.dcm"),
        _cr("cr.dcm"),
        "config",
        "NIfTI|folder",
        "{case}/cr.dcm",
    )


def _raster_cases() -> None:
    png = "{case}/x.png"
    bad = "not a readable image|truncated|corrupt"
    _add("raster/control", _info(png), _png("x.png"), "ok")
    _add("raster/1x1-info", _info(png), _png("x.png", (1, 1), mode="L"), "ok")
    _add(
        "raster/1x1-as-frontal",
        _predict(png),
        _combine(_good_xrays, _png("x.png", (1, 1), mode="L")),
        "input",
        "small|size|pixel",
        png,
    )
    _add(
        "raster/8x8-as-frontal",
        _predict(png),
        _combine(_good_xrays, _png("x.png", (8, 8))),
        "input",
        "small|size|pixel",
        png,
    )
    _add(
        "raster/sliver-as-frontal",
        _predict(png),
        _combine(_good_xrays, _png("x.png", (1800, 300))),
        "input",
        "aspect|ratio|size",
        png,
    )
    _add(
        "raster/sliver-as-lateral",
        _predict(lateral=png),
        _combine(_good_xrays, _png("x.png", (300, 1800))),
        "input",
        "aspect|ratio|size",
        png,
    )
    _add("raster/empty", _info(png), _file("x.png", b""), "input", "empty", png)
    _add(
        "raster/empty-jpg",
        _info("{case}/x.jpg"),
        _file("x.jpg", b""),
        "input",
        "empty",
        "{case}/x.jpg",
    )
    _add(
        "raster/empty-as-frontal",
        _predict(png),
        _combine(_good_xrays, _file("x.png", b"")),
        "input",
        "empty",
        png,
    )
    _add("raster/truncated", _info(png), _cut("x.png", _png("x.png"), 0.5), "input", bad, png)
    _add(
        "raster/truncated-jpeg",
        _info("{case}/x.jpg"),
        _cut("x.jpg", _png("x.jpg", mode="L"), 0.5),
        "input",
        bad,
        "{case}/x.jpg",
    )
    _add(
        "raster/truncated-as-frontal",
        _predict(png),
        _combine(_good_xrays, _cut("x.png", _png("x.png"), 0.3)),
        "input",
        bad,
        png,
    )
    _add(
        "raster/corrupt",
        _info(png),
        _file("x.png", b"\x89PNG\r\n\x1a\n" + bytes(40)),
        "input",
        bad,
        png,
    )
    _add("raster/text-as-png", _info(png), _file("x.png", "hello\n"), "input", bad, png)
    _add(
        "raster/random-bytes-jpg",
        _info("{case}/x.jpg"),
        _file("x.jpg", _random_bytes(3000)),
        "input",
        bad,
        "{case}/x.jpg",
    )
    limit = "limit"
    _add(
        "raster/bomb-header",
        _info(png),
        _file("x.png", _png_chunks(100_000, 100_000)),
        "resource",
        limit,
        png,
    )
    _add(
        "raster/bomb-20k",
        _info(png),
        _file("x.png", _png_chunks(20_000, 20_000)),
        "resource",
        limit,
        png,
    )
    _add(
        "raster/bomb-16bit",
        _info(png),
        _file("x.png", _png_chunks(30_000, 30_000, bit_depth=16)),
        "resource",
        limit,
        png,
    )
    _add(
        "raster/bomb-rgba",
        _info(png),
        _file("x.png", _png_chunks(40_000, 40_000, colour=6)),
        "resource",
        limit,
        png,
    )
    _add(
        "raster/bomb-as-frontal",
        _predict(png),
        _combine(_good_xrays, _file("x.png", _png_chunks(100_000, 100_000))),
        "resource",
        limit,
        png,
    )
    _add(
        "raster/bomb-jpeg",
        _info("{case}/x.jpg"),
        _file("x.jpg", _jpeg_claiming(65000, 65000)),
        "resource",
        limit,
        "{case}/x.jpg",
    )
    _add("raster/16bit-12bit-values", _info(png), _png("x.png", scale=4095.0), "ok")
    _add(
        "raster/16bit-12bit-as-frontal",
        _predict(png),
        _combine(_good_xrays, _png("x.png", scale=4095.0)),
        "ok",
    )
    _add("raster/8bit", _info(png), _png("x.png", mode="L"), "ok")
    _add("raster/palette", _info(png), _png("x.png", mode="P"), "ok")
    _add("raster/rgba", _info(png), _png("x.png", mode="RGBA"), "ok")
    _add("raster/grey-alpha", _info(png), _png("x.png", mode="LA"), "ok")
    _add("raster/1bit", _info(png), _png("x.png", mode="1"), "ok")
    _add("raster/rgb-jpeg", _info("{case}/x.jpg"), _png("x.jpg", mode="RGB"), "ok")
    _add("raster/cmyk-jpeg", _info("{case}/x.jpg"), _png("x.jpg", mode="CMYK"), "ok")
    _add("raster/float-tiff", _info("{case}/x.tif"), _png("x.tif", mode="F"), "ok")
    _add("raster/png-named-jpg", _info("{case}/x.jpg"), _png("x.jpg", fmt="PNG"), "ok")
    _add("raster/bmp", _info("{case}/x.bmp"), _png("x.bmp", mode="L"), "ok")
    _add(
        "raster/gif",
        _info("{case}/x.gif"),
        _png("x.gif", mode="L"),
        "input",
        "format",
        "{case}/x.gif",
    )
    _add(
        "raster/gif-as-frontal",
        _predict("{case}/x.gif"),
        _combine(_good_xrays, _png("x.gif", mode="L")),
        "input",
        "format",
        "{case}/x.gif",
    )
    _add(
        "raster/folder-as-frontal",
        _predict("{case}/dir"),
        _combine(_good_xrays, _file("dir/readme.txt", "x")),
        "input",
        "folder",
        "{case}/dir",
    )
    _add(
        "raster/missing-frontal",
        _predict("{case}/absent.png"),
        _good_xrays,
        "input",
        "no such file",
        "{case}/absent.png",
    )
    _add(
        "raster/missing-lateral",
        _predict(lateral="{case}/absent.png"),
        _good_xrays,
        "input",
        "no such file",
        "{case}/absent.png",
    )


def _config_cases() -> None:
    c = "{case}/c.yaml"
    good = _yaml("c.yaml", _TRAIN_YAML)
    alias = "alias|anchor"
    _add(
        "config/alias-bomb",
        _train(),
        _yaml("c.yaml", _alias_bomb()),
        "config",
        alias,
        c,
    )
    _add(
        "config/alias",
        _train(),
        _yaml("c.yaml", _TRAIN_YAML + "extra: &x 1\nmore: *x\n"),
        "config",
        alias,
        c,
    )
    _add(
        "config/merge-key",
        _train(),
        _yaml(
            "c.yaml",
            "base: &b {steps: 1}\ntraining:\n  <<: *b\n" + _TRAIN_YAML.split("training:")[0],
        ),
        "config",
        alias,
        c,
    )
    text = "text|UTF-8|binary"
    _add(
        "config/binary",
        _train(),
        _yaml(
            "c.yaml", lambda r: b"\xff\xfe\x00" + r.integers(0, 256, 4000, dtype=np.uint8).tobytes()
        ),
        "config",
        text,
        c,
    )
    _add(
        "config/nul-bytes",
        _train(),
        _yaml("c.yaml", "name: a\x00b\n"),
        "config",
        text + "|character|special",
        c,
    )
    _add("config/utf16", _train(), _yaml("c.yaml", "name: x\n".encode("utf-16")), "config", text, c)
    _add(
        "config/png-as-config",
        _train("{case}/x.png"),
        _png("x.png"),
        "config",
        text,
        "{case}/x.png",
    )
    _add(
        "config/gzip-as-config",
        _train(),
        _yaml("c.yaml", gzip.compress(b"name: x\n", mtime=0)),
        "config",
        text,
        c,
    )
    _add(
        "config/unknown-key",
        _train(),
        _yaml("c.yaml", _TRAIN_YAML + "trainig: {steps: 2}\n"),
        "config",
        "unknown",
        "trainig",
    )
    _add(
        "config/unknown-nested-key",
        _train(),
        _yaml("c.yaml", _TRAIN_YAML.replace("  steps: 1", "  stepz: 1")),
        "config",
        "unknown",
        "stepz",
    )
    _add(
        "config/wrong-type",
        _train(),
        _yaml("c.yaml", _TRAIN_YAML.replace("steps: 1", "steps: many")),
        "config",
        "expected an integer",
        "training.steps",
    )
    _add(
        "config/section-not-mapping",
        _train(),
        _yaml(
            "c.yaml",
            _TRAIN_YAML.replace(
                "training:\n  steps: 1\n  output_dir: {out}/run\n", "training: 5\n"
            ),
        ),
        "config",
        "expected a mapping",
        "training",
    )
    _add(
        "config/negative-steps",
        _train(),
        _yaml("c.yaml", _TRAIN_YAML.replace("steps: 1", "steps: -3")),
        "config",
        "steps",
        "training.steps",
    )
    _add(
        "config/unknown-preset",
        _train(),
        _yaml("c.yaml", _TRAIN_YAML.replace("512-Dense", "1024-Imaginary")),
        "config",
        "preset",
        "1024-Imaginary",
    )
    _add(
        "config/bool-for-int",
        _train(),
        _yaml("c.yaml", _TRAIN_YAML.replace("batch_size: 1", "batch_size: yes")),
        "config",
        "expected",
        "data.batch_size",
    )
    _add(
        "config/deep-nesting",
        _train(),
        _yaml("c.yaml", _deep(5000)),
        "resource",
        "nest|deep|depth",
        c,
    )
    _add(
        "config/deep-nesting-mappings",
        _train(),
        _yaml("c.yaml", _deep(3000, "{a: ", "}")),
        "resource",
        "nest|deep|depth",
        c,
    )
    _add(
        "config/moderate-nesting",
        _train(),
        _yaml("c.yaml", _deep(200)),
        "resource",
        "nest|deep|depth",
        c,
    )
    _add(
        "config/huge-file",
        _train(),
        _yaml("c.yaml", _huge_yaml(40)),
        "resource",
        "limit|large|size",
        c,
    )
    _add("config/empty", _train(), _yaml("c.yaml", ""), "config", "data.dir", c)
    _add(
        "config/comments-only",
        _train(),
        _yaml("c.yaml", "# nothing here\n"),
        "config",
        "data.dir",
        c,
    )
    _add("config/top-level-list", _train(), _yaml("c.yaml", "- a\n- b\n"), "config", "mapping", c)
    _add("config/top-level-scalar", _train(), _yaml("c.yaml", "42\n"), "config", "mapping", c)
    _add(
        "config/unclosed-bracket",
        _train(),
        _yaml("c.yaml", "data: [1, 2\n"),
        "config",
        "invalid YAML",
        c,
    )
    _add(
        "config/tab-indent",
        _train(),
        _yaml("c.yaml", "data:\n\tdir: x\n"),
        "config",
        "invalid YAML",
        c,
    )
    _add(
        "config/python-tag",
        _train(),
        _yaml("c.yaml", "name: !!python/object/apply:os.system ['touch {out}/pwned']\n"),
        "config",
        "invalid YAML|constructor|tag",
        c,
        absent=("{out}/pwned",),
    )
    _add(
        "config/missing",
        _train("{case}/absent.yaml"),
        None,
        "config",
        "not found",
        "{case}/absent.yaml",
    )
    _add(
        "config/folder",
        _train("{case}/dir"),
        _file("dir/x", "x"),
        "config",
        "not a file",
        "{case}/dir",
    )
    _add(
        "config/bad-override-syntax",
        _train(c, "--set", "training.steps"),
        good,
        "config",
        "KEY=VALUE|key=value",
        "training.steps",
    )
    _add(
        "config/override-unknown-key",
        _train(c, "--set", "training.stepz=3"),
        good,
        "config",
        "unknown",
        "stepz",
    )
    _add(
        "config/override-wrong-type",
        _train(c, "--set", "training.steps=many"),
        good,
        "config",
        "expected an integer",
        "training.steps",
    )
    _add(
        "config/override-deep",
        _train(c, "--set", "training.steps=" + "[" * 3000 + "]" * 3000),
        good,
        "config",
        "training.steps",
        "training.steps",
    )
    _add(
        "config/missing-data-dir",
        _train(c, "--data", "{case}/nowhere"),
        good,
        "input",
        "no such|manifest|not found|shards",
        "{case}/nowhere",
    )
    tune = "{case}/t.yaml"
    tune_good = "experiment: {case}/c.yaml\ntuner: {max_trials: 1, steps_per_trial: 1}\n"

    def tune_yaml(text: str) -> Make:
        def make(folder: Path, rng: np.random.Generator, shared: Shared) -> None:
            _yaml("c.yaml", _TRAIN_YAML)(folder, rng, shared)
            _write(folder / "t.yaml", text.replace("{case}", str(folder)))

        return make

    _add(
        "config/tune-unknown-key",
        ["tune", "--config", tune, "--no-progress"],
        tune_yaml(tune_good + "tunner: {}\n"),
        "config",
        "unknown",
        "tunner",
    )
    _add(
        "config/tune-wrong-type",
        ["tune", "--config", tune, "--no-progress"],
        tune_yaml(tune_good.replace("max_trials: 1", "max_trials: lots")),
        "config",
        "expected",
        "max_trials",
    )
    _add(
        "config/tune-binary",
        ["tune", "--config", tune, "--no-progress"],
        _file("t.yaml", _random_bytes(3000)),
        "config",
        text,
        tune,
    )
    _add(
        "config/tune-alias",
        ["tune", "--config", tune, "--no-progress"],
        tune_yaml(tune_good + "x: &a 1\ny: *a\n"),
        "config",
        alias,
        tune,
    )
    _add(
        "config/tune-missing",
        ["tune", "--config", "{case}/absent.yaml"],
        None,
        "config",
        "not found",
        "{case}/absent.yaml",
    )
    _add(
        "config/tune-deep-nesting",
        ["tune", "--config", tune],
        _file("t.yaml", _deep(5000)),
        "resource",
        "nest|deep|depth",
        tune,
    )
    style = ["style", "train", "--config", "{case}/s.yaml", "--no-progress"]
    _add(
        "config/style-unknown-key",
        style,
        _file("s.yaml", "dataa: {}\n"),
        "config",
        "unknown",
        "dataa",
    )
    _add(
        "config/style-wrong-type",
        style,
        _file("s.yaml", "training: {steps: many}\n"),
        "config",
        "expected",
        "training.steps",
    )
    _add(
        "config/style-binary",
        style,
        _file("s.yaml", _random_bytes(3000)),
        "config",
        text,
        "{case}/s.yaml",
    )
    _add(
        "config/style-alias",
        style,
        _file("s.yaml", "x: &a 1\ny: *a\n"),
        "config",
        alias,
        "{case}/s.yaml",
    )
    _add(
        "config/style-missing",
        ["style", "train", "--config", "{case}/absent.yaml"],
        None,
        "config",
        "not found",
        "{case}/absent.yaml",
    )
    _add(
        "config/splits-missing-columns",
        _prepare(extra=("--phantoms", "1", "--splits", "{case}/s.csv")),
        _file("s.csv", "a,b\n1,2\n"),
        "config",
        "columns",
        "{case}/s.csv",
    )
    _add(
        "config/splits-binary",
        _prepare(extra=("--phantoms", "1", "--splits", "{case}/s.json")),
        _file("s.json", _random_bytes(500)),
        "config",
        "split|JSON|text|UTF-8",
        "{case}/s.json",
    )
    _add(
        "config/splits-missing",
        _prepare(extra=("--phantoms", "1", "--splits", "{case}/s.csv")),
        None,
        "input",
        "no such|not found|not exist",
        "{case}/s.csv",
    )
    _add(
        "config/fractions",
        _prepare(extra=("--phantoms", "1", "--val-fraction", "0.9")),
        None,
        "config",
        "fraction",
        "val_fraction",
    )
    _add(
        "config/prepare-size-zero",
        ["prepare", "--phantoms", "1", "--size", "0", "--output", "{out}/ds"],
        None,
        "config",
        "size",
        "size",
    )
    _add(
        "config/drr-size-zero",
        [*_drr("{case}/ct.nii.gz")[:-4], "--size", "0"],
        _phantom_nifti("ct.nii.gz"),
        "config",
        "size",
        "size",
    )
    _add(
        "config/predict-without-lateral",
        _predict(lateral=None),
        _good_xrays,
        "config",
        "--lateral",
        "--lateral",
    )
    _add(
        "config/predict-bad-out-suffix",
        _predict(out="{out}/ct.txt"),
        _good_xrays,
        "config",
        r"\.nii",
        "{out}/ct.txt",
    )
    _add(
        "config/style-apply-without-data",
        ["style", "apply", "--model", "{case}/none", "--output", "{out}/x"],
        None,
        "config",
        "--data",
        "--data",
    )
    _add(
        "config/style-apply-without-input",
        [
            "style",
            "apply",
            "--model",
            "{case}/none",
            "--direction",
            "real2drr",
            "--output",
            "{out}/x",
        ],
        None,
        "config",
        "--input",
        "--input",
    )
    # prepare --real-augment N (issue 16): N and its seed are counts, and only real CTs have
    # variants.
    _add(
        "config/prepare-real-augment-negative",
        _prepare(extra=("--phantoms", "1", "--real-augment", "-1")),
        None,
        "config",
        ">= 0",
        "real_augment",
    )
    _add(
        "config/prepare-augment-seed-negative",
        _prepare(extra=("--phantoms", "1", "--real-augment", "1", "--augment-seed", "-3")),
        None,
        "config",
        ">= 0",
        "augment_seed",
    )
    _add(
        "config/prepare-real-augment-phantoms-only",
        _prepare(extra=("--phantoms", "1", "--real-augment", "2")),
        None,
        "config",
        "real CT",
        "real_augment",
    )
    _add(
        "config/prepare-nothing",
        ["prepare", "--output", "{out}/ds"],
        None,
        "input",
        "nothing to prepare",
        "--phantoms",
    )


def _dataset_cases() -> None:
    d = "{case}/ds"
    _add("dataset/control", _evaluate(d), _dataset_copy(), "ok")
    _add("dataset/missing", _evaluate(d), None, "input", "manifest|no such", d)
    _add(
        "dataset/whole-cube-missing",
        _evaluate(d, "{model}", "--whole-cube"),
        None,
        "input",
        "manifest|no such",
        d,
    )
    _add(
        "dataset/a-file",
        _evaluate(d),
        _file("ds", "not a folder"),
        "input",
        "manifest|folder|no such",
        d,
    )
    _add("dataset/empty-folder", _evaluate(d), _file("ds/.keep", ""), "input", "manifest", d)
    _add(
        "dataset/missing-manifest",
        _evaluate(d),
        _dataset_copy(edit=_remove("manifest.json")),
        "input",
        "manifest",
        d,
    )
    _add(
        "dataset/corrupt-manifest",
        _evaluate(d),
        _dataset_copy(edit=_replace("manifest.json", '{"shards": [')),
        "input",
        "manifest",
        d,
    )
    _add(
        "dataset/binary-manifest",
        _evaluate(d),
        _dataset_copy(edit=_replace("manifest.json", bytes(range(256)))),
        "input",
        "manifest",
        d,
    )
    _add(
        "dataset/list-manifest",
        _evaluate(d),
        _dataset_copy(edit=_replace("manifest.json", "[1, 2]")),
        "input",
        "manifest",
        d,
    )
    _add(
        "dataset/no-test-shards",
        _evaluate(d),
        _dataset_copy(edit=_remove("test-*.tfrecord")),
        "input",
        "test",
        d,
    )
    shard = "{case}/ds/test-00000.tfrecord"
    _add(
        "dataset/corrupt-shard",
        _evaluate(d),
        _dataset_copy(edit=_corrupt_shard("test", "random")),
        "input",
        "shard|corrupt",
        shard,
    )
    _add(
        "dataset/truncated-shard",
        _evaluate(d),
        _dataset_copy(edit=_corrupt_shard("test", "truncate")),
        "input",
        "shard|truncated",
        shard,
    )
    _add(
        "dataset/flipped-byte-shard",
        _evaluate(d),
        _dataset_copy(edit=_corrupt_shard("test", "flip")),
        "input",
        "shard|corrupt",
        shard,
    )
    _add(
        "dataset/empty-shard",
        _evaluate(d),
        _dataset_copy(edit=_corrupt_shard("test", "empty")),
        "input",
        "no cases|record",  # r4 names the shard, which holds fewer records than the manifest says
        d,
    )
    _add(
        "dataset/truncated-train-shard",
        _train("{case}/c.yaml", "--data", d),
        _combine(
            _yaml("c.yaml", _TRAIN_YAML), _dataset_copy(edit=_corrupt_shard("train", "random"))
        ),
        "input",
        "shard|truncated",
        "{case}/ds/train-00000.tfrecord",
    )
    _add(
        "dataset/prepare-output-other-config",
        _prepare(out=d, extra=("--phantoms", "1")),
        _dataset_copy(),
        "output",
        "another config|overwrite",
        d,
    )


def _model_cases() -> None:
    m = "{case}/model.keras"
    x = _good_xrays
    _add("model/control", _predict(), x, "ok")
    _add(
        "model/control-keras-file",
        _predict(model="{case}/run/model.keras"),
        _combine(x, _model_copy()),
        "ok",
    )
    _add("model/missing", _predict(model="{case}/absent"), x, "model", "no model", "{case}/absent")
    _add(
        "model/empty-keras",
        _predict(model=m),
        _combine(x, _file("model.keras", b"")),
        "model",
        "empty|load",
        m,
    )
    _add(
        "model/random-keras",
        _predict(model=m),
        _combine(x, _file("model.keras", _random_bytes(4096))),
        "model",
        "load",
        m,
    )
    _add(
        "model/text-keras",
        _predict(model=m),
        _combine(x, _file("model.keras", "hello\n")),
        "model",
        "load",
        m,
    )
    _add(
        "model/truncated-keras",
        _predict(model=m),
        _combine(x, _keras_file("model.keras", "truncate")),
        "model",
        "load",
        m,
    )
    _add(
        "model/keras-without-config",
        _predict(model=m),
        _combine(x, _keras_file("model.keras", "no-config")),
        "model",
        "load",
        m,
    )
    _add(
        "model/keras-without-weights",
        _predict(model=m),
        _combine(x, _keras_file("model.keras", "no-weights")),
        "model",
        "load",
        m,
    )
    _add(
        "model/keras-unknown-class",
        _predict(model=m),
        _combine(x, _keras_file("model.keras", "unknown-class")),
        "model",
        "load",
        m,
    )
    _add(
        "model/keras-lambda",
        _predict(model=m),
        _combine(x, _lambda_keras("model.keras")),
        "model",
        "load|safe|unsafe|lambda",
        m,
    )
    run = "{case}/run"
    _add(
        "model/run-without-model",
        _predict(model=run),
        _combine(x, _model_copy(edit=_remove("model.keras"))),
        "model",
        "run folder|model",
        run,
    )
    _add(
        "model/run-corrupt-config",
        _predict(model=run),
        _combine(x, _model_copy(edit=_replace("config.yaml", "data: [1, 2\n"))),
        "model",
        "load|config|YAML",
        run,
    )
    _add(
        "model/run-binary-config",
        _predict(model=run),
        _combine(x, _model_copy(edit=_replace("config.yaml", bytes(range(256))))),
        "model",
        "load|config|UTF-8|text",
        run,
    )
    _add(
        "model/empty-folder",
        _predict(model=run),
        _combine(x, _file("run/.keep", "")),
        "model",
        "run folder|model",
        run,
    )
    _add(
        "model/h5-file",
        _predict(model="{case}/model.h5"),
        _combine(x, _file("model.h5", b"\x89HDF\r\n\x1a\n" + bytes(600))),
        "model",
        "run folder|model|load",
        "{case}/model.h5",
    )
    sm = "{case}/sm"
    _add(
        "model/savedmodel-corrupt-pb",
        _predict(model=sm),
        _combine(x, _file("sm/saved_model.pb", _random_bytes(2000))),
        "model",
        "load",
        sm,
    )
    _add(
        "model/savedmodel-empty-pb",
        _predict(model=sm),
        _combine(x, _file("sm/saved_model.pb", b"")),
        "model",
        "load|empty",
        sm,
    )
    trust = "trust"
    _add(
        "model/savedmodel-hostile",
        _predict(model=sm),
        _combine(x, _saved_model("sm", marker="marker.txt")),
        "model",
        trust,
        sm,
        absent=("{case}/marker.txt",),
    )
    _add(
        "model/savedmodel-printing",
        _predict(model=sm),
        _combine(x, _saved_model("sm", printing=True)),
        "model",
        trust,
        sm,
    )
    _add(
        "model/savedmodel-without-card",
        _predict(model=sm),
        _combine(x, _saved_model("sm")),
        "model",
        trust,
        sm,
    )
    _add(
        "model/savedmodel-forged-card",
        _predict(model=sm),
        _combine(x, _saved_model("sm", marker="marker.txt", card=True)),
        "model",
        trust,
        sm,
        absent=("{case}/marker.txt",),
    )
    _add(
        "model/evaluate-missing",
        _evaluate(model="{case}/absent"),
        None,
        "model",
        "no model",
        "{case}/absent",
    )
    _add(
        "model/evaluate-random-keras",
        _evaluate(model=m),
        _file("model.keras", _random_bytes(4096)),
        "model",
        "load",
        m,
    )
    _add(
        "model/evaluate-hostile-savedmodel",
        _evaluate(model=sm),
        _saved_model("sm", marker="marker.txt"),
        "model",
        trust,
        sm,
        absent=("{case}/marker.txt",),
    )
    export = ["export", "--name", "x", "--output-dir", "{out}/models", "--no-warmup"]
    _add(
        "model/export-missing",
        [*export[:1], "{case}/absent", *export[1:]],
        None,
        "model",
        "no run folder|model",
        "{case}/absent",
    )
    _add(
        "model/export-random-keras",
        [*export[:1], m, *export[1:]],
        _file("model.keras", _random_bytes(4096)),
        "model",
        "export|load",
        m,
    )
    _add(
        "model/export-lambda",
        [*export[:1], m, *export[1:]],
        _lambda_keras("model.keras"),
        "model",
        "export|load|safe|unsafe|lambda",
        m,
    )
    _add(
        "model/export-text-file",
        [*export[:1], "{case}/model.txt", *export[1:]],
        _file("model.txt", "x"),
        "model",
        "run folder|keras",
        "{case}/model.txt",
    )
    _add(
        "model/style-missing",
        [
            "style",
            "apply",
            "--model",
            "{case}/absent",
            "--direction",
            "real2drr",
            "--input",
            "{case}/frontal.png",
            "--output",
            "{out}/pngs",
        ],
        x,
        "model",
        "style",
        "{case}/absent",
    )
    _add(
        "model/style-corrupt-meta",
        [
            "style",
            "apply",
            "--model",
            "{case}/st",
            "--direction",
            "real2drr",
            "--input",
            "{case}/frontal.png",
            "--output",
            "{out}/pngs",
        ],
        _combine(x, _file("st/style.json", "{not json")),
        "model",
        "style|metadata",
        "{case}/st",
    )
    _add(
        "model/style-missing-generator",
        [
            "style",
            "apply",
            "--model",
            "{case}/st",
            "--direction",
            "real2drr",
            "--input",
            "{case}/frontal.png",
            "--output",
            "{out}/pngs",
        ],
        _combine(x, _file("st/style.json", '{"view": "frontal", "size": 16}')),
        "model",
        "load|generator|no such|style",
        "{case}/st",
    )
    _add(
        "model/style-evaluate-missing",
        ["style", "evaluate", "--model", "{case}/absent", "--output", "{out}/ev"],
        None,
        "model",
        "style",
        "{case}/absent",
    )
    _add(
        "model/predict-style-missing",
        _predict(extra=("--style-model", "{case}/absent")),
        x,
        "model",
        "style",
        "{case}/absent",
    )


def _output_cases() -> None:
    x = _good_xrays
    out = "{out}/ct.nii.gz"
    exists = "exists|overwrite"

    def user_file(name: str, text: str = "the user's own file\n") -> Make:
        return _file(name, text)

    def symlink(name: str, target: str) -> Make:
        def make(folder: Path, rng: np.random.Generator, shared: Shared) -> None:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).symlink_to(folder / target)

        return make

    _add(
        "output/predict-existing-file",
        _predict(),
        _combine(x, user_file("out/ct.nii.gz")),
        "output",
        exists,
        out,
        unchanged=(out,),
    )
    _add(
        "output/predict-symlink-to-user-file",
        _predict(),
        _combine(x, user_file("mine.nii.gz"), symlink("out/ct.nii.gz", "mine.nii.gz")),
        "output",
        exists,
        out,
        unchanged=("{case}/mine.nii.gz",),
    )
    _add(
        "output/predict-existing-preview",
        _predict(),
        _combine(x, user_file("out/ct_preview.png")),
        "output",
        exists,
        "{out}/ct_preview.png",
        unchanged=("{out}/ct_preview.png",),
    )
    _add(
        "output/predict-existing-dicom-folder",
        _predict(extra=("--dicom-out", "{out}/dcm")),
        _combine(x, user_file("out/dcm/mine.txt")),
        "output",
        exists,
        "{out}/dcm",
        unchanged=("{out}/dcm/mine.txt",),
    )
    _add(
        "output/predict-parent-is-a-file",
        _predict(out="{case}/afile/ct.nii.gz"),
        _combine(x, user_file("afile")),
        "output",
        "folder|file|cannot write",
        "{case}/afile",
        unchanged=("{case}/afile",),
    )
    _add(
        "output/predict-out-is-a-folder",
        _predict(out="{out}/dir.nii.gz"),
        _combine(x, user_file("out/dir.nii.gz/mine.txt")),
        "output",
        "folder|exists|directory|cannot write",
        "{out}/dir.nii.gz",
        unchanged=("{out}/dir.nii.gz/mine.txt",),
    )
    _add(
        "output/predict-unwritable-folder",
        _predict(out="{case}/locked/ct.nii.gz"),
        _combine(x, lambda f, r, s: (f / "locked").mkdir(mode=0o555)),
        "output",
        "permission|cannot write",
        "{case}/locked",
        as_root=False,
    )
    _add("output/predict-new-deep-folder", _predict(out="{out}/a/b/c/ct.nii.gz"), x, "ok")
    _add("output/predict-odd-name", _predict(out="{out}/ct scan é (1).nii.gz"), x, "ok")
    _add(
        "output/drr-out-is-a-file",
        ["drr", "{case}/ct.nii.gz", "--out", "{case}/afile", "--size", "16"],
        _combine(_phantom_nifti("ct.nii.gz"), user_file("afile")),
        "output",
        "folder|file|exists|cannot write",
        "{case}/afile",
        unchanged=("{case}/afile",),
    )
    _add(
        "output/drr-existing-png",
        _drr("{case}/ct.nii.gz"),
        _combine(_phantom_nifti("ct.nii.gz"), user_file("out/drr/frontal.png")),
        "output",
        exists,
        "{out}/drr/frontal.png",
        unchanged=("{out}/drr/frontal.png",),
    )
    _add(
        "output/prepare-into-user-folder",
        _prepare(out="{out}/mine", extra=("--phantoms", "1")),
        user_file("out/mine/notes.txt"),
        "output",
        "not an xprospect dataset|exists",
        "{out}/mine",
        unchanged=("{out}/mine/notes.txt",),
    )
    _add(
        "output/prepare-output-is-a-file",
        _prepare(out="{out}/afile", extra=("--phantoms", "1")),
        user_file("out/afile"),
        "output",
        "file|exists|folder|cannot write",
        "{out}/afile",
        unchanged=("{out}/afile",),
    )
    _add(
        "output/evaluate-output-is-a-file",
        [*_evaluate()[:-4], "--output", "{out}/afile", "--max-cases", "1"],
        user_file("out/afile"),
        "output",
        "file|exists|folder|cannot write",
        "{out}/afile",
        unchanged=("{out}/afile",),
    )
    _add(
        "output/export-output-dir-is-a-file",
        ["export", "{model}", "--name", "x", "--output-dir", "{out}/afile", "--no-warmup"],
        user_file("out/afile"),
        "output",
        "file|exists|folder|cannot write",
        "{out}/afile",
        unchanged=("{out}/afile",),
    )
    _add(
        "output/export-existing-version",
        [
            "export",
            "{model}",
            "--name",
            "x",
            "--output-dir",
            "{out}/models",
            "--version",
            "1",
            "--no-warmup",
        ],
        user_file("out/models/x/1/mine.txt"),
        "output",
        "exists|overwrit",
        "{out}/models/x/1",
        unchanged=("{out}/models/x/1/mine.txt",),
    )
    _add(
        "output/train-output-dir-is-a-file",
        _train("{case}/c.yaml"),
        _combine(_yaml("c.yaml", _TRAIN_YAML), user_file("out/run")),
        "output",
        "file|exists|folder|cannot write",
        "{out}/run",
        unchanged=("{out}/run",),
    )
    _add(
        "output/prepare-locked-by-another-process",
        _prepare(out="{out}/ds", extra=("--phantoms", "1")),
        _locked("out/ds"),
        "output",
        "in use|lock",
        "{out}/ds",
        unchanged=("{out}/ds/.xprospect.lock.json",),
    )


def _batch(source: str = "{case}/cases.csv") -> list[str]:
    return ["predict", "--model", "{model}", "--batch", source, "--out-dir", "{out}/preds"]


def _batch_cases() -> None:
    """``predict --batch``: its case list (CSV or manifest folder) and its flags."""
    _add(
        "config/batch-csv-without-frontal-column",
        _batch(),
        _yaml("cases.csv", "front,lateral\na.png,b.png\n"),
        "config",
        "frontal",
        "{case}/cases.csv",
    )
    _add(
        "config/batch-csv-binary",
        _batch(),
        _yaml("cases.csv", lambda rng: b"\xff\xfe\x00" + rng.bytes(64)),
        "config",
        "CSV|column",
        "{case}/cases.csv",
    )
    _add(
        "config/batch-csv-row-without-lateral",
        _batch(),
        _yaml("cases.csv", "frontal,lateral\na.png,\n"),
        "config",
        "row 2.*lateral",
        "{case}/cases.csv",
    )
    _add(
        "input/batch-folder-without-manifest",
        _batch("{case}"),
        _yaml("notes.txt", "no manifest here\n"),
        "input",
        "manifest",
        "{case}",
    )
    _add(
        "input/batch-every-file-missing",
        _batch(),
        _yaml("cases.csv", "frontal,lateral\ngone_f.png,gone_l.png\n"),
        "input",
        "1 case.*failed",
        "{out}/preds/failures.json",
    )
    _add(
        "usage/batch-with-out",
        [*_batch(), "--out", "o.nii.gz"],
        None,
        "usage",
        "out-dir",
        "--out-dir",
    )


def _usage_cases() -> None:
    usage = "usage"
    _add("usage/no-command", [], None, usage, "command", None)
    _add("usage/unknown-command", ["reconstruct"], None, usage, "invalid choice", "reconstruct")
    _add(
        "usage/unknown-flag", ["info", "x.png", "--colour"], None, usage, "unrecognized", "--colour"
    )
    _add(
        "usage/predict-without-model",
        ["predict", "--frontal", "f.png", "--out", "o.nii.gz"],
        None,
        usage,
        "required",
        "--model",
    )
    _add(
        "usage/predict-without-out",
        ["predict", "--model", "m", "--frontal", "f.png"],
        None,
        usage,
        "required",
        "--out",
    )
    _add(
        "usage/drr-size-not-a-number",
        ["drr", "ct.nii", "--out", "o", "--size", "big"],
        None,
        usage,
        "invalid int",
        "--size",
    )
    _add(
        "usage/drr-unknown-geometry",
        ["drr", "ct.nii", "--out", "o", "--geometry", "fan"],
        None,
        usage,
        "invalid choice",
        "--geometry",
    )
    _add(
        "usage/drr-bits",
        ["drr", "ct.nii", "--out", "o", "--bits", "12"],
        None,
        usage,
        "invalid choice",
        "--bits",
    )
    _add(
        "usage/evaluate-split",
        ["evaluate", "--model", "m", "--data", "d", "--split", "all"],
        None,
        usage,
        "invalid choice",
        "--split",
    )
    _add(
        "usage/prepare-real-augment-not-an-integer",
        ["prepare", "--output", "o", "--phantoms", "1", "--real-augment", "2.5"],
        None,
        usage,
        "invalid int",
        "--real-augment",
    )
    _add(
        "usage/prepare-real-augment-without-value",
        ["prepare", "--output", "o", "--phantoms", "1", "--real-augment"],
        None,
        usage,
        "expected one argument",
        "--real-augment",
    )
    _add(
        "usage/prepare-augment-seed-not-an-integer",
        ["prepare", "--output", "o", "--real-augment", "1", "--augment-seed", "seven"],
        None,
        usage,
        "invalid int",
        "--augment-seed",
    )
    _add(
        "usage/evaluate-whole-cube-with-value",
        ["evaluate", "--model", "m", "--data", "d", "--whole-cube=yes"],
        None,
        usage,
        "ignored explicit argument",
        "--whole-cube",
    )
    _add(
        "usage/evaluate-whole-cube-on-predict",
        ["predict", "--model", "m", "--frontal", "f.png", "--out", "o.nii.gz", "--whole-cube"],
        None,
        usage,
        "unrecognized",
        "--whole-cube",
    )
    _add(
        "usage/prepare-phantom-calibration-unknown",
        ["prepare", "--output", "o", "--phantoms", "1", "--phantom-calibration", "cadaver"],
        None,
        usage,
        "invalid choice",
        "--phantom-calibration",
    )
    _add(
        "usage/demo-phantom-calibration-unknown",
        ["demo", "--output", "o", "--phantom-calibration", "cadaver"],
        None,
        usage,
        "invalid choice",
        "--phantom-calibration",
    )
    _add(
        "config/demo-preset-unknown",
        ["demo", "--output", "o", "--preset", "512-Densest"],
        None,
        "config",
        "unknown preset",
        "512-Densest",
    )
    _add(
        "config/style-evaluate-c2st-repeats-zero",
        ["style", "evaluate", "--model", "{case}/absent", "--c2st-repeats", "0"],
        None,
        "config",
        "must be >= 1",
        "--c2st-repeats",
    )
    _add("usage/style-alone", ["style"], None, usage, "subcommand", "style")
    _add("usage/style-unknown", ["style", "paint"], None, usage, "invalid choice", "paint")
    _add("usage/train-without-config", ["train"], None, usage, "required", "--config")
    _add("usage/info-without-path", ["info"], None, usage, "required", "path")
    _add("usage/info-two-paths", ["info", "a", "b"], None, usage, "unrecognized", "b")
    _add(
        "usage/prepare-workers",
        ["prepare", "--output", "o", "--workers", "many"],
        None,
        usage,
        "invalid int",
        "--workers",
    )
    _add(
        "usage/tune-set-without-value",
        ["tune", "--config", "c", "--set"],
        None,
        usage,
        "expected one argument",
        "--set",
    )
    _add(
        "usage/style-apply-direction",
        ["style", "apply", "--model", "m", "--output", "o", "--direction", "sideways"],
        None,
        usage,
        "invalid choice",
        "--direction",
    )
    _add("usage/models-sizes", ["models", "--sizes", "x"], None, usage, "invalid int", "--sizes")
    _add(
        "usage/export-version",
        ["export", "r", "--name", "n", "--version", "one"],
        None,
        usage,
        "invalid int",
        "--version",
    )
    _add("usage/version", ["--version"], None, "ok")
    _add("usage/help", ["--help"], None, "ok")
    _add("usage/predict-help", ["predict", "--help"], None, "ok")


def build_cases() -> list[Case]:
    """Every case of the corpus, in a fixed order."""
    if not _CASES:
        for group in (
            _nifti_cases,
            _dicom_cases,
            _raster_cases,
            _config_cases,
            _dataset_cases,
            _model_cases,
            _output_cases,
            _batch_cases,
            _usage_cases,
        ):
            group()
        names = [c.name for c in _CASES]
        duplicates = sorted(n for n, k in Counter(names).items() if k > 1)
        assert not duplicates, duplicates
    return list(_CASES)


# =============================================================================================
# Summary
# =============================================================================================


def summary(cases: Sequence[Case], outcomes: dict[str, str] | None = None) -> str:
    """A table of the cases by kind and expected category (and, given ``outcomes`` by case
    name, how many passed or failed)."""
    kinds = sorted({c.kind for c in cases}, key=[c.kind for c in cases].index)
    categories = [name for name in EXIT if any(c.category == name for c in cases)]
    head = f"{'kind':<10}{'cases':>6}  " + " ".join(f"{c:>8}" for c in categories)
    if outcomes is not None:
        head += f"  {'passed':>7} {'failed':>7}"
    lines = [head, "-" * len(head)]
    for kind in [*kinds, "all"]:
        group = [c for c in cases if kind in ("all", c.kind)]
        row = f"{kind:<10}{len(group):>6}  " + " ".join(
            f"{sum(c.category == cat for c in group):>8}" for cat in categories
        )
        if outcomes is not None:
            got = Counter(outcomes.get(c.name, "not run") for c in group)
            row += f"  {got['passed']:>7} {got['failed']:>7}"
        if kind == "all":
            lines.append("-" * len(head))
        lines.append(row)
    return "\n".join(lines)


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--summary", action="store_true", help="cases by kind and category")
    parser.add_argument("--list", action="store_true", help="one line per case")
    args = parser.parse_args(argv)
    cases = build_cases()
    if args.list:
        for c in cases:
            print(f"{c.name:<44} exit {c.code} ({c.category})  xprospect {' '.join(c.argv)}")
    if args.summary or not args.list:
        print(summary(cases))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
