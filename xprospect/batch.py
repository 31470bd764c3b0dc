"""Many cases at once: ``xprospect predict --batch``, with a self-check for cases without a CT.

A batch is a CSV of radiograph paths (columns ``frontal``, optional ``lateral`` and ``case_id``;
relative paths are relative to the CSV's folder) or a folder of radiographs with a
``manifest.csv`` in the shape of ``../shared/data/real_xrays`` (columns ``file``, ``view``
(PA | AP | AP Supine | L), ``pair_id``; the files in its ``images/`` subfolder if it has one):
images sharing a ``pair_id`` form a frontal + lateral case, an unpaired frontal image a
single-view case (listed only for single-view models).

:func:`predict_batch` loads nothing itself: it takes a loaded
:class:`~xprospect.inference.Predictor` (loaded once for the whole batch) and goes through the
cases, keeping going past a bad one (it is listed in ``failures.json`` with its file and the
error). Every case writes ``CASE.nii.gz`` and ``CASE_preview.png``; every successful case adds a
row per view to ``reprojection.csv``: the **reprojection agreement**, PSNR-2D and SSIM-2D between
the model's input image and a DRR of the predicted volume rendered with the geometry the model
was trained on and mapped to the input's domain the same way (display mapping; the percentile
window of real radiographs unless a style model mapped that view). A reconstruction whose
projections do not resemble its radiographs is implausible, whatever the ground truth: a signal
for cases that have none. It is not an accuracy: a blurred volume can reproject well.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xprospect.errors import ConfigError, MissingDataError, XprospectError

__all__ = [
    "DEFAULT_DRR_GEOMETRY",
    "FAILURES_FILE",
    "REPROJECTION_FILE",
    "BatchCase",
    "BatchResult",
    "predict_batch",
    "read_cases",
    "reprojection_agreement",
    "training_geometry",
]

REPROJECTION_FILE = "reprojection.csv"
"""The per-case, per-view self-check table of a batch."""
FAILURES_FILE = "failures.json"
"""The cases a batch could not predict: ``[{"case_id", "file", "error"}]``."""
DEFAULT_DRR_GEOMETRY = "x2ct"
"""The DRR geometry assumed for a model whose run records none (``prepare``'s default)."""

_FRONTAL_VIEWS = {"PA": "PA", "AP": "AP", "AP SUPINE": "AP", "FRONTAL": "PA"}
_LATERAL_VIEWS = {"L", "LL", "RL", "LAT", "LATERAL"}
_READ_VIEW = {"frontal": "PA", "lateral": "LATERAL"}


@dataclass(frozen=True)
class BatchCase:
    """One case of a batch: its id and its radiograph files by view (``frontal``, ``lateral``)."""

    case_id: str
    files: Mapping[str, Path]


@dataclass
class BatchResult:
    """What :func:`predict_batch` wrote.

    Attributes:
        output_dir: The batch's output folder.
        written: Ids of the cases predicted.
        failures: ``{"case_id", "file", "error"}`` of each case that failed.
        reprojection: Rows of ``reprojection.csv``.
    """

    output_dir: Path
    written: list[str] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)
    reprojection: list[dict[str, Any]] = field(default_factory=list)


# === The list of cases ===


def read_cases(source: str | os.PathLike[str], views: Sequence[str]) -> list[BatchCase]:
    """The cases of a batch CSV, or of a radiograph folder with a ``manifest.csv``.

    Args:
        source: A CSV file, or a folder holding ``manifest.csv`` (see the module docstring).
        views: The model's input views; from a folder, unpaired frontal images are cases only
            when the model takes the frontal view alone.

    Raises:
        MissingDataError: No such file or folder, or a folder without ``manifest.csv``.
        ConfigError: A CSV without the needed columns, an empty batch, a duplicate case id, or a
            case without a file for a view the model needs (naming the CSV and the row).
    """
    path = Path(source)
    if path.is_dir():
        manifest = path / "manifest.csv"
        if not manifest.is_file():
            raise MissingDataError(
                "expected a batch CSV or a folder with manifest.csv (file, view, pair_id)", path
            )
        cases = _manifest_cases(manifest, views)
        where = manifest
    elif path.is_file():
        cases = _csv_cases(path, views)
        where = path
    else:
        raise MissingDataError("no batch CSV or folder here", path)
    if not cases:
        raise ConfigError(f"no case to predict for a model taking {list(views)}", where)
    seen: set[str] = set()
    for case in cases:
        if case.case_id in seen:
            raise ConfigError(f"case id {case.case_id!r} appears twice", where)
        seen.add(case.case_id)
    return cases


def _rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = [{k.strip(): (v or "").strip() for k, v in r.items() if k} for r in reader]
            columns = [c.strip() for c in reader.fieldnames or []]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"not a readable CSV ({type(exc).__name__}: {exc})", path) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", path) from None
    return columns, rows


def _csv_cases(path: Path, views: Sequence[str]) -> list[BatchCase]:
    columns, rows = _rows(path)
    if "frontal" not in columns:
        raise ConfigError(
            f"a batch CSV needs a 'frontal' column (and 'lateral' for biplanar models); "
            f"it has {columns}",
            path,
        )
    cases = []
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        files = {v: path.parent / row[v] for v in ("frontal", "lateral") if row.get(v)}
        missing = [v for v in views if v not in files]
        if missing:
            raise ConfigError(f"row {line} has no {missing[0]} file; the model needs it", path)
        case_id = row.get("case_id") or _stem(files["frontal"])
        cases.append(BatchCase(_safe_id(case_id, path, line), files))
    return cases


def _manifest_cases(manifest: Path, views: Sequence[str]) -> list[BatchCase]:
    columns, rows = _rows(manifest)
    if not {"file", "view"} <= set(columns):
        raise ConfigError(f"manifest needs 'file' and 'view' columns; it has {columns}", manifest)
    # real_xrays' layout keeps the images in images/; a flat folder holds them beside the CSV.
    images = manifest.parent / "images"
    if not images.is_dir():
        images = manifest.parent
    pairs: dict[str, dict[str, list[Path]]] = {}
    singles: list[dict[str, Path]] = []
    for line, row in enumerate(rows, start=2):
        view = row["view"].upper()
        role = "frontal" if view in _FRONTAL_VIEWS else "lateral" if view in _LATERAL_VIEWS else ""
        if not role:
            raise ConfigError(f"row {line}: unknown view {row['view']!r}", manifest)
        file = images / row["file"]
        pair = row.get("pair_id", "")
        if pair:
            pairs.setdefault(pair, {}).setdefault(role, []).append(file)
        elif role == "frontal":
            singles.append({"frontal": file})
    cases = []
    for pid, by_role in pairs.items():
        # A pair_id shared by more images (two studies of one patient): the n-th frontal goes
        # with the n-th lateral, in manifest order.
        for n in range(max(len(files) for files in by_role.values())):
            files = {role: found[n] for role, found in by_role.items() if n < len(found)}
            if all(v in files for v in views):
                case_id = f"pair-{pid}" if n == 0 else f"pair-{pid}-{n + 1}"
                cases.append(BatchCase(_safe_id(case_id, manifest, 0), files))
    if tuple(views) == ("frontal",):
        cases += [BatchCase(_safe_id(_stem(f["frontal"]), manifest, 0), f) for f in singles]
    return cases


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".dcm", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _safe_id(case_id: str, where: Path, line: int) -> str:
    # A case id names output files: no folders, no hidden files.
    if not case_id or "/" in case_id or "\\" in case_id or case_id.startswith("."):
        row = f"row {line}: " if line else ""
        raise ConfigError(f"{row}case id {case_id!r} cannot name a file", where)
    return case_id


# === The self-check ===


def training_geometry(metadata: Mapping[str, Any]) -> str:
    """The DRR geometry a model was trained with, from a predictor's metadata.

    Looked up in the run's config (``model.geometry``, else the manifest of its ``data.dir``),
    else the model card of an export; :data:`DEFAULT_DRR_GEOMETRY` when none records it.
    """
    from xprospect.data.manifest import read_manifest

    model = metadata.get("model") or {}
    if isinstance(model, Mapping) and model.get("geometry"):
        return str(model["geometry"])
    data_dir = (metadata.get("data") or {}).get("dir") if isinstance(metadata, Mapping) else None
    if data_dir:
        try:
            geometry = read_manifest(data_dir)["config"].get("geometry")
        except (XprospectError, OSError, KeyError, TypeError):
            geometry = None
        if geometry:
            return str(geometry)
    card = metadata.get("model_card") or {}
    card_model = card.get("model") or {} if isinstance(card, Mapping) else {}
    if card_model.get("geometry"):
        return str(card_model["geometry"])
    return DEFAULT_DRR_GEOMETRY


def reprojection_agreement(
    volume: Any,
    inputs: Mapping[str, np.ndarray],
    geometry: str,
    *,
    windowed: Sequence[str] = (),
) -> dict[str, dict[str, float]]:
    """PSNR-2D (dB) and SSIM-2D between each model input and the DRR of the predicted volume.

    Args:
        volume: The predicted HU :class:`~xprospect.image.Volume`.
        inputs: The model's input images by view, ``(S, S)`` in [0, 1].
        geometry: The DRR geometry preset the model was trained with.
        windowed: Views whose input was a radiograph prepared with the percentile window
            (:func:`xprospect.inference.prepare_xray`); their DRR is prepared the same way. Other
            views (style-mapped to DRR style) are compared with the display-mapped DRR.

    Returns:
        ``{view: {"psnr_2d_db": ..., "ssim_2d": ...}}`` with data range 1 and the Gaussian SSIM
        window (:func:`xprospect.metrics.ssim_2d`).
    """
    from xprospect.inference import prepare_xray
    from xprospect.metrics import psnr_2d, ssim_2d
    from xprospect.projection import render_drr

    out: dict[str, dict[str, float]] = {}
    for view, image in inputs.items():
        ref = np.asarray(image, np.float32)
        size = ref.shape[0]
        drr = render_drr(volume, view, geometry, size=size, output="display").array
        rep = prepare_xray(drr, size) if view in windowed else np.clip(drr, 0.0, 1.0)
        out[view] = {
            "psnr_2d_db": float(psnr_2d(ref[None], rep[None], axis=0, zero_mse_db=100.0)),
            "ssim_2d": float(ssim_2d(ref[None], rep[None], axis=0)),
        }
    return out


# === The batch ===


def predict_batch(
    predictor: Any,
    cases: Sequence[BatchCase],
    output_dir: str | os.PathLike[str],
    *,
    style_inputs: Callable[[str, Any], np.ndarray] | None = None,
    styled_views: Sequence[str] = (),
    force: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> BatchResult:
    """Predicts every case with one loaded model, checking each by reprojection.

    Args:
        predictor: A loaded :class:`~xprospect.inference.Predictor`.
        cases: From :func:`read_cases`.
        output_dir: The batch's folder: ``CASE.nii.gz``, ``CASE_preview.png``,
            ``reprojection.csv``, ``failures.json``. Must be new or empty unless ``overwrite``.
        style_inputs: ``(view, radiograph) -> (S, S)`` model input for ``styled_views`` (a style
            model's real-to-DRR mapping); other views are prepared with
            :func:`~xprospect.inference.prepare_xray`.
        styled_views: The views ``style_inputs`` maps.
        force: Accept implausible radiographs (:func:`xprospect.io.check_radiograph`).
        overwrite: Write into a folder that is not empty, replacing files of the same names.
        progress: Show a progress bar.

    Returns:
        What was written; a failed case never stops the batch.

    Raises:
        OutputExistsError: ``output_dir`` is not empty and ``overwrite`` is False.
    """
    from xprospect.inference import prepare_xray
    from xprospect.io import check_radiograph, read_radiograph, write_nifti
    from xprospect.utils import atomic_path, check_output, progress_bar
    from xprospect.viz import save_orthogonal_slices

    out = check_output(output_dir, overwrite, folder=True)
    out.mkdir(parents=True, exist_ok=True)
    geometry = training_geometry(predictor.metadata)
    result = BatchResult(output_dir=out)
    bar = progress_bar(len(cases), progress, desc="predict")
    try:
        for case in cases:
            file = ""
            try:
                xrays = {}
                for view in predictor.views:
                    file = str(case.files[view])
                    image = read_radiograph(file, view=_READ_VIEW[view])
                    xrays[view] = check_radiograph(image, view, force=force)
                file = ""
                inputs = {
                    v: (
                        style_inputs(v, xrays[v])
                        if style_inputs is not None and v in styled_views
                        else prepare_xray(xrays[v], predictor.size)
                    )
                    for v in predictor.views
                }
                volume = predictor.reconstruct(xrays, prepared=inputs)
                write_nifti(volume, out / f"{case.case_id}.nii.gz", overwrite=overwrite)
                save_orthogonal_slices(
                    volume,
                    out / f"{case.case_id}_preview.png",
                    titles=[case.case_id],
                    overwrite=overwrite,
                )
                windowed = [v for v in predictor.views if v not in styled_views]
                agreement = reprojection_agreement(volume, inputs, geometry, windowed=windowed)
            except XprospectError as exc:
                where = file or exc.path or ""
                result.failures.append({"case_id": case.case_id, "file": where, "error": str(exc)})
                continue
            finally:
                bar.update(1)
            result.written.append(case.case_id)
            for view, scores in agreement.items():
                row: dict[str, Any] = {
                    "case_id": case.case_id,
                    "view": view,
                    "file": str(case.files[view]),
                }
                row.update({k: round(v, 4) for k, v in scores.items() if math.isfinite(v)})
                row["geometry"] = geometry
                result.reprojection.append(row)
    finally:
        bar.close()
    columns = ["case_id", "view", "file", "psnr_2d_db", "ssim_2d", "geometry"]
    with atomic_path(out / REPROJECTION_FILE, overwrite=True) as tmp:
        tmp.write_text(_csv_text(columns, result.reprojection), encoding="utf-8")
    with atomic_path(out / FAILURES_FILE, overwrite=True) as tmp:
        tmp.write_text(json.dumps(result.failures, indent=2) + "\n", encoding="utf-8")
    return result


def _csv_text(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
