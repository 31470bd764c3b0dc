"""Dataset builder behind ``xprospect prepare``: CT (or phantoms) to sharded TFRecords with DRRs.

For each case: read (DICOM series, NIfTI, X2CT case, or a procedural phantom), preprocess
(canonical, ``fov_mm / size`` isotropic, cube centred on the body), render the frontal and lateral
DRRs with the configured geometry, and write the case into a TFRecord shard of its split
(record schema: :mod:`xprospect.data`).

Output folder::

    DIR/manifest.json       config, cases (id, source, sha256, shape, spacing, split, shard), shards
    DIR/failures.json       cases that could not be read, with the reason
    DIR/{split}-{k:05d}.tfrecord

Splits are patient-level (all series of one patient land in one split), drawn with a seed or taken
from a JSON/CSV list. Work is resumable: shards are written atomically and recorded in the manifest
only when complete, so re-running the same command skips finished shards, and a killed run leaves
no half-written shard. Reading and preprocessing run in ``workers`` processes; DRRs are rendered in
the main process in batches (TensorFlow, XLA).
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import hashlib
import json
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xprospect import __version__
from xprospect.errors import ConfigError, MissingDataError, OutputExistsError, XprospectError
from xprospect.utils import atomic_path, progress_bar, read_json_file

__all__ = [
    "CaseSpec",
    "PrepareConfig",
    "PrepareResult",
    "assign_splits",
    "discover_cases",
    "prepare_dataset",
]

SPLITS = ("train", "val", "test")
STORED_HU_RANGE = (-1024.0, 3071.0)
"""Stored volumes are clamped to the 12-bit CT range: scanners pad outside the reconstruction
circle with values like -2048 or -3024, which are not tissue and would skew windows and losses."""
_NIFTI = (".nii", ".nii.gz")


@dataclass(frozen=True)
class CaseSpec:
    """One case to build.

    Attributes:
        case_id: Unique, file-name safe id.
        kind: ``dicom``, ``nifti``, ``x2ct`` or ``phantom``.
        source: Path (or ``phantom:<seed>``).
        patient_id: Splits keep each patient's cases together.
        series_uid: DICOM series to read, if several share a folder.
        seed: Phantom seed.
    """

    case_id: str
    kind: str
    source: str
    patient_id: str
    series_uid: str | None = None
    seed: int | None = None


@dataclass(frozen=True)
class PrepareConfig:
    """What a dataset is built with; stored in the manifest and compared on resume."""

    size: int = 128
    fov_mm: float = 320.0
    geometry: str = "x2ct"
    drr_size: int | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    split_seed: int = 0
    shard_size: int = 16

    def __post_init__(self) -> None:
        if self.size < 8:
            raise ConfigError(f"size must be >= 8, got {self.size}")
        if not 0 <= self.val_fraction + self.test_fraction < 1:
            raise ConfigError("val_fraction + test_fraction must be in [0, 1)")
        if self.shard_size < 1:
            raise ConfigError(f"shard_size must be >= 1, got {self.shard_size}")

    @property
    def spacing_mm(self) -> float:
        return self.fov_mm / self.size

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["drr_size"] = self.drr_size or self.size
        d["spacing_mm"] = [self.spacing_mm] * 3
        return d


@dataclass
class PrepareResult:
    """What a run did."""

    output: Path
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0


# === Discovery ===


def _safe(text: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in text.strip())
    return keep.strip("._") or "case"


def discover_cases(inputs: Sequence[str | os.PathLike[str]], phantoms: int = 0) -> list[CaseSpec]:
    """Finds the cases in the inputs.

    Args:
        inputs: NIfTI files, X2CT case folders (or folders of them), DICOM folders (every series
            below them is a case), or folders of NIfTI files.
        phantoms: Number of procedural chest phantoms to add (seeds 0..N-1).

    Returns:
        Cases with unique ids, sorted by id.

    Raises:
        MissingDataError: An input does not exist or holds no case.
    """
    from xprospect.io.x2ct import X2CT_FILENAME

    cases: list[CaseSpec] = []
    for raw in inputs:
        p = Path(raw)
        if not p.exists():
            raise MissingDataError("input does not exist", p)
        found: list[CaseSpec] = []
        if p.is_file():
            if p.name.lower().endswith(_NIFTI):
                found.append(_nifti_case(p))
            elif p.suffix.lower() in (".h5", ".hdf5"):
                found.append(CaseSpec(_safe(p.parent.name), "x2ct", str(p), _patient_of(p.parent)))
            else:
                raise ConfigError(
                    "input files must be NIfTI or X2CT .h5; give DICOM as a folder", p
                )
        elif (p / X2CT_FILENAME).exists():
            found.append(CaseSpec(_safe(p.name), "x2ct", str(p), _patient_of(p)))
        else:
            x2ct = sorted(d for d in p.iterdir() if (d / X2CT_FILENAME).exists())
            found += [CaseSpec(_safe(d.name), "x2ct", str(d), _patient_of(d)) for d in x2ct]
            found += [
                _nifti_case(f) for f in sorted(p.iterdir()) if f.name.lower().endswith(_NIFTI)
            ]
            if not found:
                found += _dicom_cases(p)
        if not found:
            raise MissingDataError("no CT found (DICOM series, NIfTI, or X2CT cases)", p)
        cases += found
    cases += [
        CaseSpec(f"phantom-{i:05d}", "phantom", f"phantom:{i}", f"phantom-{i:05d}", seed=i)
        for i in range(phantoms)
    ]
    ids = [c.case_id for c in cases]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ConfigError(f"duplicate case ids {dupes[:5]}; rename the inputs")
    return sorted(cases, key=lambda c: c.case_id)


def _patient_of(folder: Path) -> str:
    # X2CT names cases like LIDC-IDRI-0001.20000101.3000566.1: the patient is the first part.
    return folder.name.split(".")[0]


def _nifti_case(p: Path) -> CaseSpec:
    stem = p.name[: -len(".nii.gz")] if p.name.lower().endswith(".gz") else p.stem
    return CaseSpec(_safe(stem), "nifti", str(p), _safe(stem))


def _dicom_cases(folder: Path) -> list[CaseSpec]:
    from xprospect.io.dicom import list_dicom_series

    out = []
    for s in list_dicom_series(folder):
        if s.modality != "CT":
            continue
        patient = _safe(s.patient_id or folder.name)
        out.append(CaseSpec(f"{patient}_{s.uid[-12:]}", "dicom", str(folder), patient, s.uid))
    return out


# === Splits ===


def assign_splits(
    cases: Sequence[CaseSpec],
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    split_file: str | os.PathLike[str] | None = None,
) -> dict[str, str]:
    """Assigns each case to train/val/test at the patient level.

    Args:
        cases: The cases.
        val_fraction: Share of patients in ``val``.
        test_fraction: Share of patients in ``test``.
        seed: Seed of the patient shuffle.
        split_file: Optional JSON (``{"id": "split"}``) or CSV (columns ``id,split``) naming the
            split of each case id or patient id; cases not named go to ``train``.

    Returns:
        Case id to split name.
    """
    if split_file is not None:
        given = _read_split_file(Path(split_file))
        out = {}
        for c in cases:
            split = given.get(c.case_id, given.get(c.patient_id, "train"))
            if split not in SPLITS:
                raise ConfigError(f"unknown split {split!r} for {c.case_id}", split_file)
            out[c.case_id] = split
        return out
    patients = sorted({c.patient_id for c in cases})
    order = np.random.default_rng(seed).permutation(len(patients))
    n_test = round(test_fraction * len(patients))
    n_val = round(val_fraction * len(patients))
    split_of = {}
    for rank, idx in enumerate(order):
        split_of[patients[idx]] = (
            "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
        )
    return {c.case_id: split_of[c.patient_id] for c in cases}


def _read_split_file(path: Path) -> dict[str, str]:
    if not path.exists():
        raise MissingDataError("split file does not exist", path)
    try:
        if path.suffix.lower() == ".json":
            data = read_json_file(path, what="split file")
            if not isinstance(data, dict):
                raise ConfigError('split JSON must map ids to split names: {"id": "train"}', path)
            return {str(k): str(v) for k, v in data.items()}
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (ValueError, csv.Error) as exc:  # UnicodeDecodeError, bad CSV
        raise ConfigError(
            f"not a readable split file ({type(exc).__name__}: {exc})", path
        ) from None
    if not rows or not {"id", "split"} <= set(rows[0]):
        raise ConfigError("split CSV needs columns 'id' and 'split'", path)
    return {r["id"]: r["split"] for r in rows}


# === Per-case work (runs in worker processes: NumPy only) ===


def sha256_paths(paths: Iterable[Path]) -> str:
    """SHA-256 of the files' bytes in order: the content key of a case's sources."""
    h = hashlib.sha256()
    for p in paths:
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _source_files(spec: CaseSpec) -> list[Path]:
    """The files a case is read from (only its own series when a folder holds several)."""
    src = Path(spec.source)
    if spec.kind == "dicom":
        from xprospect.io.dicom import list_dicom_series

        for series in list_dicom_series(src):
            if series.uid == spec.series_uid:
                return sorted(series.files)
        raise MissingDataError(f"series {spec.series_uid} is no longer in this folder", src)
    if src.is_dir():
        return sorted(f for f in src.rglob("*") if f.is_file())
    return [src]


def load_case(spec: CaseSpec, size: int, fov_mm: float, *, force: bool = False) -> dict[str, Any]:
    """Reads and preprocesses one case to a canonical ``size^3`` HU cube (NumPy, no TF).

    A CT that is not plausible (:func:`xprospect.io.check_ct`: few slices, constant values)
    is refused unless ``force``.

    Returns:
        ``volume`` (int16), ``spacing_mm``, ``source_sha256``, ``original_shape`` and
        ``original_spacing_mm``.
    """
    from xprospect.preprocessing import ct_preprocessing

    if spec.kind == "phantom":
        from xprospect.phantoms import chest_phantom

        volume = chest_phantom(size, seed=int(spec.seed or 0), spacing_mm=fov_mm / size).volume
        digest = hashlib.sha256(f"{spec.source}:{size}:{fov_mm}".encode()).hexdigest()
    else:
        from xprospect.io import check_ct, read_volume

        kwargs = {"series_uid": spec.series_uid} if spec.kind == "dicom" else {}
        volume = check_ct(read_volume(spec.source, **kwargs), force=force)
        digest = sha256_paths(_source_files(spec))
    prepared = ct_preprocessing(size=size, fov_mm=fov_mm)(volume)
    return {
        "volume": np.clip(np.rint(prepared.array), *STORED_HU_RANGE).astype(np.int16),
        "spacing_mm": list(prepared.spacing_mm),
        "source_sha256": digest,
        "original_shape": list(volume.shape),
        "original_spacing_mm": [round(s, 4) for s in volume.spacing_mm],
    }


def _load_case_safe(
    spec: CaseSpec, size: int, fov_mm: float, force: bool = False
) -> dict[str, Any]:
    try:
        return {"ok": True, **load_case(spec, size, fov_mm, force=force)}
    except XprospectError as exc:
        return {"ok": False, "error": str(exc)}
    except Exception as exc:  # a bad case must not stop the other cases
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


# === Builder ===


def _write_json(path: Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


def prepare_dataset(
    inputs: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    config: PrepareConfig | None = None,
    *,
    phantoms: int = 0,
    workers: int = 1,
    overwrite: bool = False,
    split_file: str | os.PathLike[str] | None = None,
    progress: bool = True,
    on_shard: Callable[[str], None] | None = None,
    force: bool = False,
) -> PrepareResult:
    """Builds (or resumes building) a dataset.

    Args:
        inputs: See :func:`discover_cases`.
        output: Dataset folder.
        config: Sizes, geometry, splits, shard size.
        phantoms: Number of procedural phantoms to add.
        workers: Processes that read and preprocess cases (1 = in this process).
        overwrite: Replace an existing dataset built with another config (or from other inputs).
        split_file: Explicit split assignment (see :func:`assign_splits`).
        progress: Show a progress bar.
        on_shard: Called with each shard's name after it is written (used by tests to interrupt).
        force: Accept implausible CTs (:func:`xprospect.io.check_ct`) instead of failing them.

    Returns:
        What was written, skipped and failed.

    Raises:
        OutputExistsError: The folder holds a dataset of another config and ``overwrite`` is False.
    """
    cfg = config or PrepareConfig()
    out = Path(output)
    t0 = time.perf_counter()
    cases = discover_cases(inputs, phantoms)
    if not cases:
        raise MissingDataError("nothing to prepare: give inputs or --phantoms N")
    splits = assign_splits(
        cases,
        val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction,
        seed=cfg.split_seed,
        split_file=split_file,
    )
    plan = _plan_shards(cases, splits, cfg.shard_size)
    identity = {"config": cfg.to_json(), "case_ids": sorted(splits)}
    manifest = _open_manifest(out, identity, overwrite)
    failures: list[dict[str, str]] = _read_failures(out) if manifest["shards"] else []
    result = PrepareResult(output=out)
    todo = [(name, specs) for name, specs in plan.items() if name not in manifest["shards"]]
    result.skipped = [
        c.case_id for name, specs in plan.items() if name not in dict(todo) for c in specs
    ]
    bar = progress_bar(sum(len(s) for _, s in todo), progress)
    pool = _pool(workers)
    try:
        for shard_name, specs in todo:
            loaded = _load_all(pool, specs, cfg, force)
            good = []
            for spec, res in zip(specs, loaded, strict=True):
                bar.update(1)
                if res["ok"]:
                    good.append((spec, res))
                else:
                    failures = [f for f in failures if f["case_id"] != spec.case_id]
                    failures.append(
                        {"case_id": spec.case_id, "source": spec.source, "error": res["error"]}
                    )
                    result.failed.append(failures[-1])
            _write_shard(out, shard_name, good, cfg, splits, manifest)
            _write_json(out / "failures.json", failures)
            _write_json(out / "manifest.json", manifest)
            result.written += [s.case_id for s, _ in good]
            if on_shard is not None:
                on_shard(shard_name)
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    result.seconds = time.perf_counter() - t0
    return result


def _plan_shards(
    cases: Sequence[CaseSpec], splits: dict[str, str], shard_size: int
) -> dict[str, list[CaseSpec]]:
    plan: dict[str, list[CaseSpec]] = {}
    for split in SPLITS:
        members = [c for c in cases if splits[c.case_id] == split]
        for k in range(0, len(members), shard_size):
            plan[f"{split}-{k // shard_size:05d}"] = members[k : k + shard_size]
    return plan


def _open_manifest(out: Path, identity: dict[str, Any], overwrite: bool) -> dict[str, Any]:
    path = out / "manifest.json"
    fresh = {"xprospect_version": __version__, **identity, "cases": {}, "shards": {}}
    if path.exists():
        old = json.loads(path.read_text())
        same = (
            old.get("config") == identity["config"] and old.get("case_ids") == identity["case_ids"]
        )
        if same and not overwrite:
            return dict(old)
        if not overwrite:
            raise OutputExistsError(
                "holds a dataset built with another config or other inputs; "
                "pass --overwrite to replace it or choose another --output",
                out,
            )
        for f in out.glob("*.tfrecord"):
            f.unlink()
        for name in ("manifest.json", "failures.json"):
            (out / name).unlink(missing_ok=True)
    elif out.exists() and any(out.iterdir()) and not overwrite:
        raise OutputExistsError(
            "exists and is not an xprospect dataset; choose another --output", out
        )
    out.mkdir(parents=True, exist_ok=True)
    return fresh


def _read_failures(out: Path) -> list[dict[str, str]]:
    path = out / "failures.json"
    return list(json.loads(path.read_text())) if path.exists() else []


def _pool(workers: int) -> cf.ProcessPoolExecutor | None:
    if workers <= 1:
        return None
    # spawn, not fork: the parent holds TensorFlow threads, which fork would copy half-alive.
    return cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


def _load_all(
    pool: cf.ProcessPoolExecutor | None,
    specs: Sequence[CaseSpec],
    cfg: PrepareConfig,
    force: bool = False,
) -> list[dict[str, Any]]:
    if pool is None:
        return [_load_case_safe(s, cfg.size, cfg.fov_mm, force) for s in specs]
    futures = [pool.submit(_load_case_safe, s, cfg.size, cfg.fov_mm, force) for s in specs]
    return [f.result() for f in futures]


def _write_shard(
    out: Path,
    shard_name: str,
    good: Sequence[tuple[CaseSpec, dict[str, Any]]],
    cfg: PrepareConfig,
    splits: dict[str, str],
    manifest: dict[str, Any],
) -> None:
    import tensorflow as tf

    from xprospect.data import encode_case
    from xprospect.projection.drr import render_drr_batch

    drr_size = cfg.drr_size or cfg.size
    records = []
    for start in range(0, len(good), 4):  # a few volumes per render call bounds memory
        chunk = good[start : start + 4]
        vols = np.stack([r["volume"] for _, r in chunk]).astype(np.float32)
        drrs = render_drr_batch(
            vols, cfg.spacing_mm, cfg.geometry, ("frontal", "lateral"), drr_size
        ).numpy()
        for (spec, res), d in zip(chunk, drrs, strict=True):
            records.append(encode_case(spec.case_id, res["volume"], res["spacing_mm"], d[0], d[1]))
            manifest["cases"][spec.case_id] = {
                "source": spec.source,
                "kind": spec.kind,
                "patient_id": spec.patient_id,
                "series_uid": spec.series_uid,
                "source_sha256": res["source_sha256"],
                "shape": [cfg.size] * 3,
                "spacing_mm": res["spacing_mm"],
                "original_shape": res["original_shape"],
                "original_spacing_mm": res["original_spacing_mm"],
                "split": splits[spec.case_id],
                "shard": f"{shard_name}.tfrecord",
            }
    path = out / f"{shard_name}.tfrecord"
    with atomic_path(path) as tmp, tf.io.TFRecordWriter(str(tmp)) as writer:
        for rec in records:
            writer.write(rec)
    manifest["shards"][shard_name] = {"file": path.name, "cases": len(records)}
