"""Dataset builder behind ``xprospect prepare``: CT (or phantoms) to sharded TFRecords with DRRs.

For each case: read (DICOM series, NIfTI, X2CT case, or a procedural phantom), preprocess
(canonical, ``fov_mm / size`` isotropic, cube centred on the body), render the frontal and lateral
DRRs with the configured geometry, and write the case into a TFRecord shard of its split
(record schema: :mod:`xprospect.data`).

Output folder::

    DIR/journal.json        what the run knows: config, case ids, shards done, each case's source
                            hash and file stats, failures (written first, before any case is read)
    DIR/manifest.json       config, cases (id, source, sha256, shape, spacing, scan_fraction,
                            split, shard), shards
    DIR/failures.json       cases that could not be read, with the reason
    DIR/{split}-{k:05d}.tfrecord
    DIR/.xprospect.lock     held while a run writes (see xprospect.utils.folder_lock)

With ``real_augment`` N, each real CT also gives N variants ``<case>_aug<k>`` (a seeded random
affine, smooth deformation and HU change of its prepared cube, :mod:`xprospect.augmentation`;
the seed and drawn parameters are in the manifest entry's ``augmentation``), whose DRRs are
rendered from the changed volume and which stay in their source's split.

Splits are patient-level (all series of one patient land in one split), drawn with a seed or taken
from a JSON/CSV list. Work is resumable from the first moment: the journal is written before any
case is read, shards are written atomically and recorded in the journal only when complete, so
re-running the same command after a kill (at any point) skips finished shards and ends with the
same manifest and shards as an uninterrupted run. A rerun also rebuilds the shards whose inputs
changed (by content hash) and, with ``retry_failed``, those holding a case that failed. Reading and
preprocessing run in ``workers`` processes, which end with the main process; DRRs are rendered in
the main process in batches (TensorFlow, XLA).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import csv
import hashlib
import json
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from xprospect import __version__
from xprospect.constants import STORED_HU_RANGE
from xprospect.data.manifest import MANIFEST_NAME
from xprospect.errors import ConfigError, MissingDataError, OutputExistsError, XprospectError
from xprospect.utils import LOCK_FILE, atomic_path, folder_lock, progress_bar, read_json_file

__all__ = [
    "JOURNAL_NAME",
    "CaseSpec",
    "PrepareConfig",
    "PrepareResult",
    "assign_splits",
    "augmented_cases",
    "discover_cases",
    "prepare_dataset",
]

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
_NIFTI = (".nii", ".nii.gz")


@dataclass(frozen=True)
class CaseSpec:
    """One case to build.

    Attributes:
        case_id: Unique, file-name safe id.
        kind: ``dicom``, ``nifti``, ``x2ct`` or ``phantom``.
        source: Path (or ``phantom:<seed>``; ``phantom-<calibration>:<seed>`` for a phantom of
            another calibration than ``original``, so its source hash differs).
        patient_id: Splits keep each patient's cases together.
        series_uid: DICOM series to read, if several share a folder.
        seed: Phantom seed.
        calibration: Phantom population (:data:`xprospect.phantoms.PHANTOM_CALIBRATIONS`).
        augment_of: For an augmented variant (``prepare --real-augment``), the case id of its
            source; it is read like the source and kept in the source's split.
        augment_seed: The variant's seed (:func:`xprospect.augmentation.augment_volume`).
    """

    case_id: str
    kind: str
    source: str
    patient_id: str
    series_uid: str | None = None
    seed: int | None = None
    calibration: str = "original"
    augment_of: str | None = None
    augment_seed: int | None = None


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
    real_augment: int = 0
    """Augmented variants of each real (not phantom) CT (see :func:`augmented_cases`)."""
    augment_seed: int = 0
    phantom_calibration: str = "original"
    """Population the phantoms are drawn from (:data:`xprospect.phantoms.PHANTOM_CALIBRATIONS`)."""
    remove_couch: bool = True
    """Set what lies outside the patient in a real CT (the couch) to air
    (:func:`xprospect.preprocessing.remove_couch`); phantoms have none. Recorded in the identity
    of a dataset with real CT only when on, so datasets made before it (couch kept) stay apart."""

    def __post_init__(self) -> None:
        if self.size < 8:
            raise ConfigError(f"size must be >= 8, got {self.size}")
        if not 0 <= self.val_fraction + self.test_fraction < 1:
            raise ConfigError("val_fraction + test_fraction must be in [0, 1)")
        if self.shard_size < 1:
            raise ConfigError(f"shard_size must be >= 1, got {self.shard_size}")
        for key in ("real_augment", "augment_seed"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must be >= 0, got {getattr(self, key)}")
        from xprospect.phantoms import phantom_calibration

        phantom_calibration(self.phantom_calibration)

    @property
    def spacing_mm(self) -> float:
        return self.fov_mm / self.size

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["drr_size"] = self.drr_size or self.size
        d["spacing_mm"] = [self.spacing_mm] * 3
        if not self.real_augment:  # datasets made before augmentation keep their identity
            del d["real_augment"], d["augment_seed"]
        if self.phantom_calibration == "original":  # likewise for datasets made before it
            del d["phantom_calibration"]
        else:
            # The values, not only the name: a package whose calibration of that name changed
            # must not resume (and mix into) a dataset drawn from the old one.
            d[CALIBRATION_VALUES_KEY] = calibration_values(self.phantom_calibration)
        del d["remove_couch"]  # recorded by prepare_dataset, where it knows the real CTs
        return d


CALIBRATION_VALUES_KEY = "phantom_calibration_values"
"""Key of the dataset identity holding the named calibration's values (datasets made before it
was recorded lack it, and resume as before)."""


def calibration_values(name: str) -> dict[str, Any]:
    """The fields of the phantom calibration ``name`` as JSON holds them (tuples as lists)."""
    from xprospect.phantoms import PHANTOM_CALIBRATIONS

    values: dict[str, Any] = json.loads(json.dumps(asdict(PHANTOM_CALIBRATIONS[name])))
    return values


@dataclass
class PrepareResult:
    """What a run did."""

    output: Path
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    reprocessed: list[str] = field(default_factory=list)
    """Cases of done shards built again (an input changed, or ``retry_failed``)."""
    failed: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0


# === Discovery ===


def _safe(text: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in text.strip())
    return keep.strip("._") or "case"


def discover_cases(
    inputs: Sequence[str | os.PathLike[str]],
    phantoms: int = 0,
    phantom_calibration: str = "original",
) -> list[CaseSpec]:
    """Finds the cases in the inputs.

    Args:
        inputs: NIfTI files, X2CT case folders (or folders of them), DICOM folders (every series
            below them is a case), or folders of NIfTI files.
        phantoms: Number of procedural chest phantoms to add (seeds 0..N-1).
        phantom_calibration: The phantoms' population
            (:data:`xprospect.phantoms.PHANTOM_CALIBRATIONS`).

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
    tag = "phantom" if phantom_calibration == "original" else f"phantom-{phantom_calibration}"
    cases += [
        CaseSpec(
            f"phantom-{i:05d}",
            "phantom",
            f"{tag}:{i}",
            f"phantom-{i:05d}",
            seed=i,
            calibration=phantom_calibration,
        )
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
        return _follow_sources(cases, out)
    patients = sorted({c.patient_id for c in cases})
    order = np.random.default_rng(seed).permutation(len(patients))
    n_test = round(test_fraction * len(patients))
    n_val = round(val_fraction * len(patients))
    split_of = {}
    for rank, idx in enumerate(order):
        split_of[patients[idx]] = (
            "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
        )
    return _follow_sources(cases, {c.case_id: split_of[c.patient_id] for c in cases})


def _follow_sources(cases: Sequence[CaseSpec], splits: dict[str, str]) -> dict[str, str]:
    """Augmented variants take their source's split, whatever a split file says of them: a
    variant in train and its original in test would leak the test patient into training."""
    for c in cases:
        if c.augment_of is not None and c.augment_of in splits:
            splits[c.case_id] = splits[c.augment_of]
    return splits


def augmented_cases(cases: Sequence[CaseSpec], count: int, seed: int = 0) -> list[CaseSpec]:
    """The cases plus ``count`` augmented variants of each real CT (phantoms are not augmented).

    Variant ``k`` (1..count) of case ``c`` is ``c_aug<k>``: the same source and patient, its
    seed :func:`xprospect.augmentation.augmentation_seed` of ``(seed, c, k)``.

    Raises:
        ConfigError: A variant's id is already a case's id.
    """
    from xprospect.augmentation import augmentation_seed

    out = list(cases)
    for c in cases:
        if c.kind == "phantom" or c.augment_of is not None:
            continue
        for k in range(1, count + 1):
            vid = f"{c.case_id}_aug{k}"
            vseed = augmentation_seed(seed, c.case_id, k)
            out.append(replace(c, case_id=vid, augment_of=c.case_id, augment_seed=vseed))
    ids = [c.case_id for c in out]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ConfigError(f"augmented case ids {dupes[:5]} clash with input case ids")
    return sorted(out, key=lambda c: c.case_id)


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


def _source_files(spec: CaseSpec, series_cache: dict[str, Any] | None = None) -> list[Path]:
    """The files a case is read from (only its own series when a folder holds several).

    ``series_cache`` (folder -> its DICOM series) spares listing a folder once per series.
    """
    src = Path(spec.source)
    if spec.kind == "dicom":
        from xprospect.io.dicom import list_dicom_series

        if series_cache is None:
            listing: Any = list_dicom_series(src)
        elif spec.source in series_cache:
            listing = series_cache[spec.source]
        else:
            listing = series_cache[spec.source] = list_dicom_series(src)
        for series in listing:
            if series.uid == spec.series_uid:
                return sorted(series.files)
        raise MissingDataError(f"series {spec.series_uid} is no longer in this folder", src)
    if src.is_dir():
        return sorted(f for f in src.rglob("*") if f.is_file())
    return [src]


def load_case(
    spec: CaseSpec, size: int, fov_mm: float, *, force: bool = False, remove_couch: bool = True
) -> dict[str, Any]:
    """Reads and preprocesses one case to a canonical ``size^3`` HU cube (NumPy, no TF).

    A CT that is not plausible (:func:`xprospect.io.check_ct`: few slices, constant values)
    is refused unless ``force``.

    An augmented variant (``spec.augment_seed`` set) is the source's cube changed by
    :func:`xprospect.augmentation.augment_volume`.

    Returns:
        ``volume`` (int16), ``scan_mask`` (uint8: 1 where the CT was scanned, 0 in the air the
        cube was padded with and in the scanner's padding outside its reconstruction circle,
        :func:`xprospect.preprocessing.scan_mask`; all ones for phantoms), ``spacing_mm``,
        ``source_sha256``, ``original_shape`` and ``original_spacing_mm``; for a variant also
        ``augmentation`` (its seed and the parameters each transform drew).
    """
    from xprospect.preprocessing import ct_preprocessing, scan_mask

    if spec.kind == "phantom":
        from xprospect.phantoms import chest_phantom

        volume = chest_phantom(
            size,
            seed=int(spec.seed or 0),
            spacing_mm=fov_mm / size,
            calibration=spec.calibration,
        ).volume
        digest = hashlib.sha256(f"{spec.source}:{size}:{fov_mm}".encode()).hexdigest()
    else:
        from xprospect.io import check_ct, read_volume

        kwargs = {"series_uid": spec.series_uid} if spec.kind == "dicom" else {}
        volume = check_ct(read_volume(spec.source, **kwargs), force=force)
        digest = sha256_paths(_source_files(spec))
        if remove_couch:
            from xprospect.preprocessing import remove_couch as without_couch

            volume = without_couch(volume)
    pipeline = ct_preprocessing(size=size, fov_mm=fov_mm)
    extra: dict[str, Any] = {}
    if spec.kind == "phantom":
        # A phantom is defined everywhere in its cube: nothing was left unscanned.
        prepared = pipeline(volume)
        valid = np.ones(prepared.shape, dtype=np.uint8)
    else:
        prepared, valid_volume = pipeline(volume, scan_mask(volume))
        if spec.augment_seed is not None:
            from xprospect.augmentation import augment_volume

            # The prepared cube is augmented; the scan mask follows it as a label.
            prepared, labels, extra["augmentation"] = augment_volume(
                prepared, spec.augment_seed, valid_volume
            )
            valid_volume = labels[0]
        valid = np.asarray(valid_volume.array, dtype=np.uint8)
    return {
        **extra,
        "volume": np.clip(np.rint(prepared.array), *STORED_HU_RANGE).astype(np.int16),
        "scan_mask": valid,
        "spacing_mm": list(prepared.spacing_mm),
        "source_sha256": digest,
        "original_shape": list(volume.shape),
        "original_spacing_mm": [round(s, 4) for s in volume.spacing_mm],
    }


def _stat_files(files: Sequence[Path]) -> list[list[Any]]:
    """``[path, size, mtime_ns]`` of each file: a cheap first look whether a source changed."""
    out: list[list[Any]] = []
    for p in files:
        st = p.stat()
        out.append([str(p), st.st_size, st.st_mtime_ns])
    return out


def _source_state(
    spec: CaseSpec, series_cache: dict[str, Any] | None = None
) -> tuple[list[Path] | None, list[list[Any]] | None]:
    """A case's source files and their stats; ``(None, None)`` when they cannot be listed."""
    if spec.kind == "phantom":
        return [], []
    try:
        files = _source_files(spec, series_cache)
        return files, _stat_files(files)
    except Exception:  # missing or unreadable: the load reports why
        return None, None


def _try_sha256(files: Sequence[Path] | None) -> str | None:
    if not files:
        return None
    try:
        return sha256_paths(files)
    except OSError:
        return None


def _load_case_safe(
    spec: CaseSpec, size: int, fov_mm: float, force: bool = False, remove_couch: bool = True
) -> dict[str, Any]:
    # The stats are taken before reading: a file changed during the read looks changed next time.
    files, stat = _source_state(spec)
    try:
        case = load_case(spec, size, fov_mm, force=force, remove_couch=remove_couch)
        return {"ok": True, **case, "stat": stat}
    except XprospectError as exc:
        error = str(exc)
    except Exception as exc:  # a bad case must not stop the other cases
        error = f"{type(exc).__name__}: {exc}"
    # The failed input's hash: a rerun retries the case once its input has changed.
    return {"ok": False, "error": error, "stat": stat, "source_sha256": _try_sha256(files)}


# === Builder ===

JOURNAL_NAME = "journal.json"
"""The prepare journal inside a dataset folder (see :func:`prepare_dataset`)."""
_JOURNAL_FORMAT = 1
_MANIFEST_KEYS = ("xprospect_version", "config", "case_ids", "cases", "shards")


def _write_json(path: Path, data: Any, *, sort_keys: bool = False) -> None:
    text = json.dumps(data, indent=2, sort_keys=sort_keys) + "\n"
    with contextlib.suppress(OSError):
        if path.read_text() == text:
            return
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def prepare_dataset(
    inputs: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    config: PrepareConfig | None = None,
    *,
    phantoms: int = 0,
    workers: int = 1,
    overwrite: bool = False,
    retry_failed: bool = False,
    split_file: str | os.PathLike[str] | None = None,
    progress: bool = True,
    on_shard: Callable[[str], None] | None = None,
    force: bool = False,
) -> PrepareResult:
    """Builds (or resumes building) a dataset.

    The folder is locked (:func:`xprospect.utils.folder_lock`) while the run writes into it, and
    ``journal.json`` is written before any case is read: the config, the case ids, the shards
    done, each case's source hash and file stats, and the failures. A run stopped at any point
    (Ctrl-C, ``SIGTERM``, ``kill -9``, a crash) resumes from it when the same command is run
    again; shards are written atomically, so the resumed dataset equals an uninterrupted run's
    (same ``manifest.json``, same shard bytes). ``manifest.json`` and ``failures.json`` are
    derived from the journal after each shard (and repaired from it at each start).

    On a rerun, a shard is built again when one of its cases' input files changed (size or
    modification time differ and the SHA-256 of their content differs from the one recorded),
    or, with ``retry_failed``, when one of its cases failed.

    Args:
        inputs: See :func:`discover_cases`.
        output: Dataset folder.
        config: Sizes, geometry, splits, shard size.
        phantoms: Number of procedural phantoms to add.
        workers: Processes that read and preprocess cases (1 = in this process). They end with
            this process, even when it is killed (``PR_SET_PDEATHSIG`` on Linux, a watchdog
            thread elsewhere).
        overwrite: Replace an existing dataset built with another config (or from other inputs).
        retry_failed: Read the cases that failed before again (and rebuild their shards).
        split_file: Explicit split assignment (see :func:`assign_splits`).
        progress: Show a progress bar.
        on_shard: Called with each shard's name after it is written (used by tests to interrupt).
        force: Accept implausible CTs (:func:`xprospect.io.check_ct`) instead of failing them.

    Returns:
        What was written, skipped, reprocessed and failed.

    Raises:
        OutputExistsError: The folder holds a dataset of another config and ``overwrite`` is
            False, or holds files that are not a dataset.
        LockedError: Another process is writing this dataset.
    """
    cfg = config or PrepareConfig()
    out = Path(output)
    t0 = time.perf_counter()
    found = discover_cases(inputs, phantoms, cfg.phantom_calibration)
    if not found:
        raise MissingDataError("nothing to prepare: give inputs or --phantoms N")
    if cfg.real_augment and all(c.kind == "phantom" for c in found):
        # Phantoms are not augmented: the variants asked for would silently not exist.
        raise ConfigError(
            f"real_augment {cfg.real_augment} needs a real CT among the inputs "
            "(phantoms are not augmented)"
        )
    cases = augmented_cases(found, cfg.real_augment, cfg.augment_seed)
    splits = assign_splits(
        cases,
        val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction,
        seed=cfg.split_seed,
        split_file=split_file,
    )
    plan = _plan_shards(cases, splits, cfg.shard_size)
    identity: dict[str, Any] = {"config": cfg.to_json(), "case_ids": sorted(splits)}
    if cfg.remove_couch and any(c.kind != "phantom" for c in found):
        identity["config"]["remove_couch"] = True
    _refuse_foreign(out, overwrite)
    with folder_lock(out), _terminate_as_interrupt():
        journal = _open_journal(out, identity, overwrite)
        redo = _changed_shards(journal, plan, retry_failed)
        _publish(out, journal)
        result = PrepareResult(output=out)
        todo = [(n, specs) for n, specs in plan.items() if n not in journal["shards"] or n in redo]
        names = {n for n, _ in todo}
        result.skipped = [c.case_id for n, specs in plan.items() if n not in names for c in specs]
        result.reprocessed = [c.case_id for n, specs in plan.items() if n in redo for c in specs]
        try:
            _build_shards(
                out, todo, cfg, splits, journal, result, workers, progress, on_shard, force
            )
        except KeyboardInterrupt as exc:
            why = f" ({exc})" if str(exc) else ""
            raise KeyboardInterrupt(
                f"prepare stopped{why} with {len(journal['shards'])} of {len(plan)} shard(s) "
                f"done; rerun the same command to resume ({out})"
            ) from None
    result.seconds = time.perf_counter() - t0
    return result


def _build_shards(
    out: Path,
    todo: Sequence[tuple[str, Sequence[CaseSpec]]],
    cfg: PrepareConfig,
    splits: dict[str, str],
    journal: dict[str, Any],
    result: PrepareResult,
    workers: int,
    progress: bool,
    on_shard: Callable[[str], None] | None,
    force: bool = False,
) -> None:
    bar = progress_bar(sum(len(s) for _, s in todo), progress)
    pool = _pool(workers) if todo else None
    ok = False
    try:
        for shard_name, specs in todo:
            loaded = _load_all(pool, specs, cfg, force)
            good = []
            for spec, res in zip(specs, loaded, strict=True):
                bar.update(1)
                cid = spec.case_id
                journal["sources"][cid] = {"sha256": res.get("source_sha256"), "stat": res["stat"]}
                journal["cases"].pop(cid, None)
                if res["ok"]:
                    good.append((spec, res))
                    journal["failures"].pop(cid, None)
                else:
                    failure = {"case_id": cid, "source": spec.source, "error": res["error"]}
                    journal["failures"][cid] = failure
                    result.failed.append(failure)
            entries = _write_shard(out, shard_name, good, cfg, splits)
            journal["cases"].update(entries)
            shard = {"file": f"{shard_name}.tfrecord", "cases": len(entries)}
            journal["shards"][shard_name] = shard
            # The journal first: a kill before the manifest is repaired from it at the next start.
            _write_json(out / JOURNAL_NAME, journal)
            _publish(out, journal)
            result.written += [s.case_id for s, _ in good]
            if on_shard is not None:
                on_shard(shard_name)
        ok = True
    finally:
        bar.close()
        if pool is not None:
            # On an error, do not wait for the cases in flight (the workers end with us anyway).
            pool.shutdown(wait=ok, cancel_futures=True)


def _plan_shards(
    cases: Sequence[CaseSpec], splits: dict[str, str], shard_size: int
) -> dict[str, list[CaseSpec]]:
    plan: dict[str, list[CaseSpec]] = {}
    for split in SPLITS:
        members = [c for c in cases if splits[c.case_id] == split]
        for k in range(0, len(members), shard_size):
            plan[f"{split}-{k // shard_size:05d}"] = members[k : k + shard_size]
    return plan


# --- the journal ---


def _is_ours(name: str) -> bool:
    """Files a run makes before the journal exists: the lock and temporaries."""
    return name.startswith(LOCK_FILE) or (name.startswith(".") and ".tmp" in name)


def _refuse_foreign(out: Path, overwrite: bool) -> None:
    """Refuses a file, or a folder of other files, as the output (checked before locking it)."""
    if out.exists() and not out.is_dir():
        raise OutputExistsError("is a file, not a dataset folder; choose another --output", out)
    if not out.is_dir() or overwrite:
        return
    if (out / JOURNAL_NAME).exists() or (out / MANIFEST_NAME).exists():
        return
    if any(not _is_ours(p.name) for p in out.iterdir()):
        raise OutputExistsError(
            "exists and is not an xprospect dataset; choose another --output", out
        )


def _fresh_journal(identity: dict[str, Any]) -> dict[str, Any]:
    return {
        "journal": _JOURNAL_FORMAT,
        "xprospect_version": __version__,
        **identity,
        "cases": {},
        "shards": {},
        "failures": {},
        "sources": {},
    }


def _read_journal(out: Path) -> dict[str, Any] | None:
    """The journal; one rebuilt from the manifest of a dataset made before journals; or None."""
    path = out / JOURNAL_NAME
    if path.exists():
        try:
            journal = read_json_file(path, what="prepare journal")
            if not isinstance(journal, dict) or journal.get("journal") != _JOURNAL_FORMAT:
                raise ValueError("not a prepare journal")
        except (XprospectError, ValueError) as exc:
            raise OutputExistsError(
                f"{JOURNAL_NAME} is unreadable ({exc}); pass --overwrite to rebuild the dataset",
                out,
            ) from None
        return dict(journal)
    manifest_path = out / MANIFEST_NAME
    if not manifest_path.exists():
        return None
    manifest = read_json_file(manifest_path, what="dataset manifest")
    journal = _fresh_journal({k: manifest.get(k) for k in ("config", "case_ids")})
    journal["xprospect_version"] = manifest.get("xprospect_version", __version__)
    journal["cases"] = dict(manifest.get("cases", {}))
    journal["shards"] = dict(manifest.get("shards", {}))
    failures_path = out / "failures.json"
    failures = read_json_file(failures_path, what="failures list") if failures_path.exists() else []
    journal["failures"] = {f["case_id"]: f for f in failures}
    journal["sources"] = {
        cid: {"sha256": entry.get("source_sha256"), "stat": None}
        for cid, entry in journal["cases"].items()
    }
    return journal


def _open_journal(out: Path, identity: dict[str, Any], overwrite: bool) -> dict[str, Any]:
    journal = _read_journal(out)
    if journal is not None:
        config = identity["config"]
        if CALIBRATION_VALUES_KEY not in journal.get("config", {}):
            # Made before calibration values were recorded: compared by name, as then.
            config = {k: v for k, v in config.items() if k != CALIBRATION_VALUES_KEY}
        same = journal.get("config") == config and journal.get("case_ids") == identity["case_ids"]
        if same:
            _write_json(out / JOURNAL_NAME, journal)
            return journal
        if not overwrite:
            raise OutputExistsError(
                "holds a dataset built with another config or other inputs; "
                "pass --overwrite to replace it or choose another --output",
                out,
            )
        for f in out.glob("*.tfrecord"):
            f.unlink()
        for name in (MANIFEST_NAME, "failures.json", JOURNAL_NAME):
            (out / name).unlink(missing_ok=True)
    journal = _fresh_journal(identity)
    _write_json(out / JOURNAL_NAME, journal)
    return journal


def _publish(out: Path, journal: dict[str, Any]) -> None:
    """Writes ``manifest.json`` and ``failures.json`` from the journal (once a shard is done)."""
    if not journal["shards"]:
        return
    failures = [journal["failures"][k] for k in sorted(journal["failures"])]
    _write_json(out / "failures.json", failures)
    _write_json(out / MANIFEST_NAME, {k: journal[k] for k in _MANIFEST_KEYS}, sort_keys=True)


def _changed_shards(
    journal: dict[str, Any], plan: dict[str, list[CaseSpec]], retry_failed: bool
) -> set[str]:
    """The done shards to build again: a case's input changed, or it failed and is retried."""
    redo: set[str] = set()
    series_cache: dict[str, Any] = {}
    for name, specs in plan.items():
        if name not in journal["shards"]:
            continue
        for spec in specs:
            cid = spec.case_id
            failed = cid in journal["failures"]
            if failed and retry_failed:
                redo.add(name)
                break
            if spec.kind == "phantom":
                continue
            known = journal["sources"].get(cid) or {}
            files, stat = _source_state(spec, series_cache)
            if files is None or stat == known.get("stat"):
                continue  # unchanged, or gone (a done case is kept; a failed one stays failed)
            digest = _try_sha256(files)
            if digest is not None and digest != known.get("sha256"):
                log.info("%s: the input changed; shard %s is built again", cid, name)
                redo.add(name)
                break
            journal["sources"][cid] = {**known, "stat": stat}
    return redo


# --- workers ---


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """``SIGTERM`` raises ``KeyboardInterrupt`` (as Ctrl-C does), so clean-up code runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _die_with_parent(parent: int) -> None:
    """Worker initializer: the worker ends when the process that started it ends, even by
    ``kill -9``.

    On Linux the kernel sends the worker ``SIGKILL`` when its parent dies
    (``prctl(PR_SET_PDEATHSIG)``, through ctypes); elsewhere a daemon thread checks the parent
    PID every second. Ctrl-C is left to the parent, which stops the pool.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0) == 0:
                if os.getppid() != parent:  # the parent died before prctl took effect
                    os._exit(1)
                return
        except (OSError, AttributeError):
            pass
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _pool(workers: int) -> cf.ProcessPoolExecutor | None:
    if workers <= 1:
        return None
    # spawn, not fork: the parent holds TensorFlow threads, which fork would copy half-alive.
    return cf.ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_die_with_parent,
        initargs=(os.getpid(),),
    )


def _load_all(
    pool: cf.ProcessPoolExecutor | None,
    specs: Sequence[CaseSpec],
    cfg: PrepareConfig,
    force: bool = False,
) -> list[dict[str, Any]]:
    if pool is None:
        return [_load_case_safe(s, cfg.size, cfg.fov_mm, force, cfg.remove_couch) for s in specs]
    futures = [
        pool.submit(_load_case_safe, s, cfg.size, cfg.fov_mm, force, cfg.remove_couch)
        for s in specs
    ]
    return [f.result() for f in futures]


def _write_shard(
    out: Path,
    shard_name: str,
    good: Sequence[tuple[CaseSpec, dict[str, Any]]],
    cfg: PrepareConfig,
    splits: dict[str, str],
) -> dict[str, dict[str, Any]]:
    """Renders the DRRs and writes one shard atomically; returns its cases' manifest entries."""
    import tensorflow as tf

    from xprospect.data import encode_case
    from xprospect.projection.drr import render_drr_batch

    drr_size = cfg.drr_size or cfg.size
    records = []
    entries: dict[str, dict[str, Any]] = {}
    for start in range(0, len(good), 4):  # a few volumes per render call bounds memory
        chunk = good[start : start + 4]
        vols = np.stack([r["volume"] for _, r in chunk]).astype(np.float32)
        drrs = render_drr_batch(
            vols, cfg.spacing_mm, cfg.geometry, ("frontal", "lateral"), drr_size
        ).numpy()
        for (spec, res), d in zip(chunk, drrs, strict=True):
            records.append(
                encode_case(
                    spec.case_id,
                    res["volume"],
                    res["spacing_mm"],
                    d[0],
                    d[1],
                    scan_mask=res["scan_mask"],
                )
            )
            entries[spec.case_id] = {
                "source": spec.source,
                "kind": spec.kind,
                "patient_id": spec.patient_id,
                "series_uid": spec.series_uid,
                "source_sha256": res["source_sha256"],
                "shape": [cfg.size] * 3,
                "spacing_mm": res["spacing_mm"],
                "original_shape": res["original_shape"],
                "original_spacing_mm": res["original_spacing_mm"],
                "scan_fraction": round(float(np.mean(res["scan_mask"])), 6),
                "split": splits[spec.case_id],
                "shard": f"{shard_name}.tfrecord",
            }
            if spec.augment_of is not None:
                entries[spec.case_id]["augment_of"] = spec.augment_of
                entries[spec.case_id]["augmentation"] = res["augmentation"]
    path = out / f"{shard_name}.tfrecord"
    with atomic_path(path) as tmp, tf.io.TFRecordWriter(str(tmp)) as writer:
        for rec in records:
            writer.write(rec)
    return entries
