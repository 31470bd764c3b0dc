"""Scoring reconstructions on a prepared dataset, with the two baselines a model must beat.

Baselines, fitted on the dataset's ``train`` split and scored on the same cases as the model:

- **mean volume**: the voxel-wise mean of the training targets (what a model that ignores its
  input would learn);
- **back-projection**: the unfiltered back-projection (exact adjoint of the dataset's DRR
  projector) of the input DRRs, summed over views, mapped to the target scale with the one affine
  map ``a * bp + b`` that fits the training targets best in least squares, then clipped to [0, 1]
  (so the baseline is judged on its shape, not on an arbitrary scale).

Metric definitions: by default (``protocol=None``) the two modes of
:func:`xprospect.metrics.evaluate_case`; with ``protocol`` a paper's own definitions
(:mod:`xprospect.protocols`: ``xprospect``, ``x2ct``, ``duolift``, ``cvaa``, ``s-xr2ct``,
``xctdiff``), LPIPS included where the paper reports it (backbone weights from a local file).

Outputs in the output folder: ``per_case.csv`` (one row per case and method), ``summary.json`` and
``summary.md`` (mean ± standard deviation of every metric per method) and ``panels/*.png``
(truth | prediction | error, three planes) for the first few cases.

Scanned region: a real CT shorter (or narrower) than the cube was padded with air that no scanner
saw, so a model (and the baselines) are scored only inside each case's validity mask
(:func:`xprospect.preprocessing.scan_mask`, stored by ``prepare``) when the split holds a partly
scanned case: every voxel metric of :func:`xprospect.metrics.evaluate_case` is then taken inside
it. The tables say so (``scored inside the scanned region, N% of the cube``; ``summary.json``:
``scored_region``). Fully scanned splits (phantoms, datasets made before masks) are scored on the
whole cube, as are the papers' protocols (their own definitions).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xprospect.constants import VIEWS
from xprospect.data import load_dataset, read_manifest, scan_fraction
from xprospect.errors import MissingDataError
from xprospect.inference import Predictor
from xprospect.metrics import EvaluationMode
from xprospect.protocols import LpipsScorer, Protocol, evaluate_protocol, get_protocol
from xprospect.utils import atomic_path, check_output

__all__ = [
    "BackProjectionBaseline",
    "EvaluationResult",
    "MeanVolumeBaseline",
    "RealCTCase",
    "RealCTScores",
    "dataset_cases",
    "evaluate_dataset",
    "lpips_scorers",
    "real_ct_case",
    "save_comparison_panel",
    "scope_note",
    "score_real_ct",
    "summary_markdown",
]

Reconstructor = Callable[[Mapping[str, np.ndarray]], np.ndarray]


@dataclass
class MeanVolumeBaseline:
    """Predicts the mean training volume for every case."""

    mean: np.ndarray

    @classmethod
    def fit(
        cls, data_dir: str | os.PathLike[str], hu_window: Any = "xprospect"
    ) -> MeanVolumeBaseline:
        total, n = None, 0
        for _, y in load_dataset(
            data_dir, "train", batch_size=8, shuffle=False, hu_window=hu_window
        ):
            batch = y.numpy()[..., 0]
            total = batch.sum(0) if total is None else total + batch.sum(0)
            n += len(batch)
        if total is None:
            raise ValueError("the train split is empty")
        return cls(total / n)

    def __call__(self, case: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.mean


@dataclass
class BackProjectionBaseline:
    """Calibrated unfiltered back-projection of the DRR line integrals (see module docstring)."""

    geometry: str
    drr_size: int
    spacing_mm: Sequence[float]
    views: tuple[str, ...]
    scale: float = 1.0
    offset: float = 0.0

    def back_project(self, case: Mapping[str, np.ndarray]) -> np.ndarray:
        from xprospect.projection import back_project, geometry_preset

        first = np.asarray(case[self.views[0] + "_line"])
        size = first.shape[-2]
        total = np.zeros((size, size, size), np.float32)
        for v in self.views:
            geom = geometry_preset(self.geometry, v, self.drr_size)
            line = np.asarray(case[v + "_line"], np.float32).reshape(
                1, self.drr_size, self.drr_size
            )
            total += back_project(line, geom, (size,) * 3, self.spacing_mm).numpy()[0]
        return total

    @classmethod
    def fit(
        cls, data_dir: str | os.PathLike[str], views: Sequence[str], hu_window: Any = "xprospect"
    ) -> BackProjectionBaseline:
        cfg = read_manifest(data_dir)["config"]
        base = cls(
            str(cfg["geometry"]),
            int(cfg.get("drr_size", cfg["size"])),
            tuple(cfg["spacing_mm"]),
            tuple(views),
        )
        sxx = sx = sxy = sy = 0.0
        n = 0
        for case, target in dataset_cases(data_dir, "train", hu_window):
            bp = base.back_project(case).ravel().astype(np.float64)
            t = target.ravel().astype(np.float64)
            sxx += float(bp @ bp)
            sx += float(bp.sum())
            sxy += float(bp @ t)
            sy += float(t.sum())
            n += bp.size
        det = n * sxx - sx * sx
        if n == 0 or det <= 0:
            raise ValueError(
                "cannot calibrate the back-projection baseline on an empty train split"
            )
        base.scale = float((n * sxy - sx * sy) / det)
        base.offset = float((sy - base.scale * sx) / n)
        return base

    def __call__(self, case: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.clip(self.scale * self.back_project(case) + self.offset, 0.0, 1.0)


def dataset_cases(
    data_dir: str | os.PathLike[str], split: str, hu_window: Any, *, with_scan_mask: bool = False
) -> Iterable[tuple[dict[str, np.ndarray], np.ndarray]]:
    """The cases of one split in order, for scoring: what a model and the baselines need.

    Args:
        data_dir: A dataset made by ``xprospect prepare``.
        split: The split.
        hu_window: The targets' window.
        with_scan_mask: Add ``"scan_mask"``, the (S, S, S) boolean validity mask, to each case.

    Yields:
        (case dict with model inputs, line integrals and id; target (S, S, S) in [0, 1]).
    """
    shown = load_dataset(
        data_dir,
        split,
        batch_size=1,
        shuffle=False,
        hu_window=hu_window,
        with_case_id=True,
        with_scan_mask=with_scan_mask,
    )
    raw = load_dataset(
        data_dir,
        split,
        batch_size=1,
        shuffle=False,
        hu_window=hu_window,
        xray_mapping="line_integral",
    )
    for (x, y), (xl, _) in zip(shown, raw, strict=True):
        case: dict[str, Any] = {"case_id": x["case_id"].numpy()[0].decode()}
        for v in VIEWS:
            if v in x:
                case[v] = x[v].numpy()
                case[v + "_line"] = xl[v].numpy()[0, ..., 0]
        if with_scan_mask:
            case["scan_mask"] = x["scan_mask"].numpy()[0, ..., 0] > 0
        yield case, y.numpy()[0, ..., 0]


@dataclass
class EvaluationResult:
    """Per-case metrics per method and their summaries."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    output_dir: Path | None = None
    scored_fraction: float | None = None
    """Mean share of the cube scored per case when the scan masks were used; None: whole cube."""
    baselines: dict[str, Reconstructor] = field(default_factory=dict)
    """The baselines as fitted on the dataset's train split, by name (empty when none were
    scored): a caller scoring more volumes against them (:func:`score_real_ct`) need not fit
    them again."""

    def mean(self, method: str, metric: str) -> float:
        return self.summary[method][metric]["mean"]

    @property
    def scope_note(self) -> str:
        """One line saying where the metrics were taken (for the tables)."""
        return scope_note(self.scored_fraction)


def scope_note(scored_fraction: float | None) -> str:
    """``scored inside the scanned region, N% of the cube`` (or ``over the whole cube``).

    Args:
        scored_fraction: The share of the cube inside the validity mask, or None if no mask was
            used.
    """
    if scored_fraction is None:
        return "Scored over the whole cube (no validity mask)."
    return f"Scored inside the scanned region, {100.0 * scored_fraction:.1f}% of the cube."


def _score(
    truth: np.ndarray,
    pred: np.ndarray,
    hu_window: Any,
    mode: EvaluationMode,
    spacing_mm: Sequence[float] | None = None,
    mask: np.ndarray | None = None,
) -> dict[str, float]:
    from xprospect.metrics import evaluate_case

    return dict(
        evaluate_case(truth, pred, hu_window=hu_window, mode=mode, spacing_mm=spacing_mm, mask=mask)
    )


def lpips_scorers(
    protocol: Protocol, weights: Mapping[str, str | os.PathLike[str] | None] | None = None
) -> dict[str, LpipsScorer]:
    """The LPIPS scorers a protocol needs, their backbones loaded from local weights files.

    Args:
        protocol: The protocol.
        weights: Backbone weights file by network (``"vgg"``, ``"alex"``); a network not given
            is looked up in ``XPROSPECT_LPIPS_VGG_WEIGHTS`` / ``XPROSPECT_LPIPS_ALEX_WEIGHTS``.

    Raises:
        ConfigError: If a weights file is not given or does not exist (one line naming it).
    """
    from xprospect.lpips import LPIPS, volume_lpips

    scorers: dict[str, LpipsScorer] = {}
    for net in protocol.needs_lpips:
        path = (weights or {}).get(net)
        model = LPIPS(net=net, backbone_weights=None if path is None else os.fspath(path))

        def score(t: np.ndarray, p: np.ndarray, axes: Sequence[int], m: Any = model) -> float:
            return volume_lpips(m, t, p, axes=axes)

        scorers[net] = score
    return scorers


def evaluate_dataset(
    predictor: Predictor | None,
    data_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    split: str = "test",
    baselines: bool = True,
    mode: EvaluationMode = "xprospect",
    panels: int = 3,
    max_cases: int | None = None,
    overwrite: bool = True,
    protocol: str | Protocol | None = None,
    lpips_weights: Mapping[str, str | os.PathLike[str] | None] | None = None,
    skip_lpips: bool = False,
    validity_mask: bool = True,
) -> EvaluationResult:
    """Scores a model (and the baselines) on one split and writes the report files.

    Every file is written atomically; a full disk is an :class:`~xprospect.errors.OutputError`
    naming the file, which is left as it was.

    Args:
        predictor: The model to score (None to score the baselines alone).
        data_dir: A dataset made by ``xprospect prepare``.
        output_dir: Where ``per_case.csv``, ``summary.json``, ``summary.md`` and ``panels/`` go.
        split: The split to score.
        baselines: Also score the mean-volume and back-projection baselines.
        mode: ``"xprospect"`` or ``"x2ct_compatible"`` metric definitions.
        panels: Number of cases to draw truth | prediction | error panels for.
        max_cases: Stop after this many cases.
        overwrite: If False, ``output_dir`` must be new or empty (checked first) and no report
            file is ever replaced.
        protocol: A paper's protocol (:data:`xprospect.protocols.PROTOCOLS`) instead of ``mode``.
        lpips_weights: LPIPS backbone weights files by network, for protocols with LPIPS.
        skip_lpips: Leave the protocol's LPIPS metrics out (no backbone weights at hand).
        validity_mask: Score inside each case's scanned region when the split holds a partly
            scanned case (see the module docstring); False scores the whole cube. Protocols
            always score the whole cube.

    Returns:
        The per-case rows, the summary and the share of the cube scored.

    Raises:
        OutputExistsError: ``overwrite`` is False and ``output_dir`` holds files.
        ConfigError: On an unknown protocol, or an LPIPS weights file missing.
    """
    proto = None if protocol is None else get_protocol(protocol)
    if proto is not None and skip_lpips:
        proto = proto.without_lpips()
    # Missing LPIPS weights fail here, before any case is scored.
    scorers = lpips_scorers(proto, lpips_weights) if proto is not None else {}
    out = check_output(output_dir, overwrite, folder=True)
    out.mkdir(parents=True, exist_ok=True)
    hu_window = predictor.hu_window if predictor is not None else (-1000.0, 1000.0)
    views = predictor.views if predictor is not None else VIEWS
    methods: dict[str, Reconstructor] = {}
    if predictor is not None:
        methods["model"] = lambda case: predictor.predict({v: case[v] for v in views})[0]
    if baselines:
        methods["mean_volume"] = MeanVolumeBaseline.fit(data_dir, hu_window)
        methods["back_projection"] = BackProjectionBaseline.fit(data_dir, views, hu_window)
    manifest = read_manifest(data_dir)
    # Lung volumes in ml need the dataset's real voxel size (5 mm at 64^3, 2.5 mm at 128^3).
    spacing_mm = tuple(manifest["config"]["spacing_mm"])
    masked = validity_mask and proto is None and scan_fraction(manifest, split) < 1.0
    result = EvaluationResult(
        output_dir=out, baselines={k: v for k, v in methods.items() if k != "model"}
    )
    fractions: list[float] = []
    cases = dataset_cases(data_dir, split, hu_window, with_scan_mask=masked)
    for i, (case, truth) in enumerate(cases):
        if max_cases is not None and i >= max_cases:
            break
        mask = case.pop("scan_mask", None)
        if mask is not None:
            fractions.append(float(np.mean(mask)))
        preds = {name: fn(case) for name, fn in methods.items()}
        for name, pred in preds.items():
            row = {"case_id": case["case_id"], "method": name}
            if proto is None:
                row.update(_score(truth, pred, hu_window, mode, spacing_mm, mask))
            else:
                row.update(
                    evaluate_protocol(
                        truth,
                        np.asarray(pred),
                        proto,
                        hu_window=hu_window,
                        spacing_mm=spacing_mm,
                        lpips=scorers,
                    )
                )
            result.rows.append(row)
        if i < panels:
            shown = preds.get("model", next(iter(preds.values())))
            case_id = str(case["case_id"])
            save_comparison_panel(
                truth, shown, out / "panels" / f"{case_id}.png", title=case_id, overwrite=overwrite
            )
    if not result.rows:
        raise MissingDataError(f"the '{split}' split holds no cases (empty shards?)", data_dir)
    result.summary = _summarise(result.rows)
    result.scored_fraction = float(np.mean(fractions)) if fractions else None
    extra = None
    if proto is not None:
        # The paper's own column names beside our keys, so the report reads like its table.
        extra = {
            "paper": proto.paper,
            "hu_window": list(proto.hu_window),
            "columns": {m.key: m.column for m in proto.metrics},
        }
    _write_reports(result, out, split, mode if proto is None else proto.name, overwrite, extra)
    return result


def _summarise(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        metrics = [k for k in mine[0] if k not in ("case_id", "method")]
        summary[method] = {}
        for m in metrics:
            vals = np.asarray([r[m] for r in mine], dtype=np.float64)
            finite = vals[np.isfinite(vals)]
            summary[method][m] = {
                "mean": float(finite.mean()) if finite.size else float("nan"),
                "std": float(finite.std(ddof=1)) if finite.size > 1 else 0.0,
                "n": int(finite.size),
            }
    return summary


def _write_reports(
    result: EvaluationResult,
    out: Path,
    split: str,
    mode: str,
    overwrite: bool,
    extra: Mapping[str, Any] | None = None,
) -> None:
    if not result.rows:
        return
    fields = list(result.rows[0])
    with (
        atomic_path(out / "per_case.csv", overwrite=overwrite) as tmp,
        tmp.open("w", newline="") as f,
    ):
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(result.rows)
    with atomic_path(out / "summary.json", overwrite=overwrite) as tmp:
        report: dict[str, Any] = {"split": split, "mode": mode}
        report["scored_region"] = {
            "validity_mask": result.scored_fraction is not None,
            "fraction_of_cube": 1.0 if result.scored_fraction is None else result.scored_fraction,
        }
        if extra:
            report["protocol"] = dict(extra)
        report["summary"] = result.summary
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    with atomic_path(out / "summary.md", overwrite=overwrite) as tmp:
        tmp.write_text(
            summary_markdown(
                result.summary, title=f"{split} split ({mode} metrics)", note=result.scope_note
            )
        )


def summary_markdown(
    summary: Mapping[str, Mapping[str, Mapping[str, float]]],
    title: str,
    *,
    note: str | None = None,
) -> str:
    """A Markdown table: one row per method, one column per metric, mean ± std.

    Args:
        summary: Method to metric to ``{"mean", "std", ...}``.
        title: The heading.
        note: A line under the table (e.g. :attr:`EvaluationResult.scope_note`).
    """
    methods = list(summary)
    metrics = list(next(iter(summary.values())))
    lines = [
        f"### {title}",
        "",
        "| method | " + " | ".join(metrics) + " |",
        "|---" * (len(metrics) + 1) + "|",
    ]
    for m in methods:
        cells = [f"{summary[m][k]['mean']:.4g} ± {summary[m][k]['std']:.2g}" for k in metrics]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    if note:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def save_comparison_panel(
    truth: np.ndarray,
    pred: np.ndarray,
    path: str | os.PathLike[str],
    *,
    title: str = "",
    overwrite: bool = True,
) -> Path:
    """Truth | prediction | |error| through the centre, axial / coronal / sagittal rows ([0, 1]);
    with ``overwrite=False`` an existing file at ``path`` is refused."""
    from matplotlib.figure import Figure

    from xprospect.viz import save_figure

    err = np.abs(pred - truth)
    fig = Figure(figsize=(8.4, 8.4))
    axes = fig.subplots(3, 3)
    c = [n // 2 for n in truth.shape]
    planes = [lambda a: a[c[0]], lambda a: a[:, c[1]], lambda a: a[:, :, c[2]]]
    for r, (plane, name) in enumerate(zip(planes, ("axial", "coronal", "sagittal"), strict=True)):
        for col, (img, label, cmap, vmax) in enumerate(
            (
                (truth, "truth", "gray", 1.0),
                (pred, "prediction", "gray", 1.0),
                (err, "|error|", "magma", 0.5),
            )
        ):
            ax = axes[r][col]
            im = ax.imshow(plane(img), cmap=cmap, vmin=0.0, vmax=vmax)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{label} - {name}", fontsize=8)
            if col == 2:
                fig.colorbar(im, ax=ax, fraction=0.046)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path, overwrite=overwrite)


@dataclass
class RealCTCase:
    """A real CT prepared as ``prepare`` would, with its DRRs as a model's inputs.

    Attributes:
        case: ``{view: (1, n, n, 1) display-unit DRR, f"{view}_line": (n, n) line integrals}``
            for both views: what models and baselines take.
        hu: The canonical HU cube (float32, clipped to the stored range).
        mask: Its validity mask (:func:`xprospect.preprocessing.scan_mask`), boolean.
        spacing_mm: Voxel spacing of the cube.
    """

    case: dict[str, Any]
    hu: np.ndarray
    mask: np.ndarray
    spacing_mm: tuple[float, ...]


def real_ct_case(
    ct_path: str | os.PathLike[str],
    size: int,
    geometry: str = "x2ct",
    *,
    remove_couch: bool = True,
) -> RealCTCase:
    """Reads a CT file, preprocesses it to a ``size^3`` cube over 320 mm with its validity mask
    and renders both views' DRRs of ``geometry`` (see :class:`RealCTCase`).

    ``remove_couch`` (the default) sets what lies outside the patient to air first
    (:func:`xprospect.preprocessing.remove_couch`), as ``prepare`` does: the radiographs a model
    is given show no CT couch, so neither do the DRRs nor the truth."""
    from xprospect.constants import STORED_HU_RANGE
    from xprospect.io import read_volume
    from xprospect.preprocessing import ct_preprocessing, scan_mask
    from xprospect.preprocessing import remove_couch as without_couch
    from xprospect.projection import display_unit, render_drr_batch

    raw = read_volume(ct_path)
    if remove_couch:
        raw = without_couch(raw)
    ct, valid = ct_preprocessing(size=size)(raw, scan_mask(raw))
    hu = np.clip(ct.array, *STORED_HU_RANGE).astype(np.float32)
    drrs = render_drr_batch(hu[None], ct.spacing_mm, geometry, VIEWS, size).numpy()[0]
    case: dict[str, Any] = {v: display_unit(drrs[i])[None, ..., None] for i, v in enumerate(VIEWS)}
    case.update({f"{v}_line": drrs[i] for i, v in enumerate(VIEWS)})
    return RealCTCase(case, hu, np.asarray(valid.array) > 0, tuple(ct.spacing_mm))


@dataclass
class RealCTScores:
    """A model and the two baselines on one real CT reconstructed from its own DRRs.

    Attributes:
        metrics: Metric name to value, by method (``model``, ``mean_volume``,
            ``back_projection``), all taken inside the CT's scanned region.
        scanned_fraction: Share of the cube that region covers.
        truth: The CT in the model's HU window, [0, 1].
        prediction: The model's reconstruction, [0, 1].
    """

    metrics: dict[str, dict[str, float]]
    scanned_fraction: float
    truth: np.ndarray
    prediction: np.ndarray

    def best_baseline(self, metric: str) -> tuple[str, float]:
        """The baseline scoring best on ``metric`` (higher is better) and its value."""
        name = max((m for m in self.metrics if m != "model"), key=lambda m: self.metrics[m][metric])
        return name, self.metrics[name][metric]


def score_real_ct(
    predictor: Predictor,
    ct_path: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    *,
    geometry: str = "x2ct",
    baselines: Mapping[str, Reconstructor] | None = None,
    remove_couch: bool = True,
) -> RealCTScores:
    """Scores a model and both baselines on a real CT file, reconstructed from its own DRRs.

    The CT is preprocessed as ``prepare`` does (canonical cube of the model's size over 320 mm)
    with its validity mask (:func:`xprospect.preprocessing.scan_mask`); its DRRs of the
    dataset's geometry are the inputs. Every metric is taken inside the mask, so the air the
    cube was padded with (and the scanner's padding outside its reconstruction circle) counts
    for no method.

    Args:
        predictor: The model.
        ct_path: A CT volume file (NIfTI, or whatever :func:`xprospect.io.read_volume` reads).
        data_dir: The prepared dataset whose ``train`` split the baselines are fitted on
            (ignored when ``baselines`` is given).
        geometry: DRR geometry preset of the inputs.
        baselines: Already fitted baselines by name (fitting takes a pass over the train split,
            so callers scoring several CTs fit them once).
        remove_couch: Set what lies outside the patient (the couch) to air first (see
            :func:`real_ct_case`); False scores the CT as scanned.

    Returns:
        The scores, the scanned share of the cube and the truth and prediction volumes.
    """
    from xprospect.metrics import evaluate_case
    from xprospect.preprocessing import window_hu

    real = real_ct_case(ct_path, predictor.size, geometry, remove_couch=remove_couch)
    case = real.case
    pred = predictor.predict({v: case[v] for v in predictor.views})[0]
    truth = np.asarray(window_hu(real.hu, predictor.hu_window))
    if baselines is None:
        baselines = {
            "mean_volume": MeanVolumeBaseline.fit(data_dir, predictor.hu_window),
            "back_projection": BackProjectionBaseline.fit(
                data_dir, tuple(predictor.views), predictor.hu_window
            ),
        }
    preds = {"model": pred, **{name: b(case) for name, b in baselines.items()}}
    metrics = {
        name: {
            k: float(v)
            for k, v in evaluate_case(
                truth, p, hu_window=predictor.hu_window, spacing_mm=real.spacing_mm, mask=real.mask
            ).items()
        }
        for name, p in preds.items()
    }
    return RealCTScores(metrics, float(np.mean(real.mask)), truth, pred)
