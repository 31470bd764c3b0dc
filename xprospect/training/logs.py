"""What a training run leaves for people to read: CSV, TensorBoard, PNG figures.

``metrics.csv`` has one row per logged step (columns :data:`CSV_COLUMNS`, empty cells where a
value was not measured at that step). On resume, rows after the restored step are dropped before
new ones are appended, so a re-run never duplicates a step. Figures use matplotlib's object API
(no pyplot state) and are written atomically through :func:`xprospect.viz.save_figure`.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xprospect.utils import atomic_path, output_error

__all__ = [
    "CSV_COLUMNS",
    "MetricsCSV",
    "TensorBoardLog",
    "save_curves",
    "save_panel",
    "slice_grid",
]

CSV_COLUMNS = (
    "step",
    "epoch",
    "elapsed_s",
    "loss",
    "learning_rate",
    "val_loss",
    "val_psnr_3d",
    "val_mae",
)
PLANES = ("axial", "coronal", "sagittal")


class MetricsCSV:
    """Appends rows to ``metrics.csv``; on resume keeps only rows up to the restored step.

    Args:
        path: The CSV file.
        resume_step: The step training restarts from; later rows (logged after the checkpoint a
            crashed run resumed from) are removed, because they will be logged again.
        extra_columns: Columns after :data:`CSV_COLUMNS` (a GAN's ``g_adversarial``,
            ``d_loss``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        resume_step: int,
        extra_columns: Sequence[str] = (),
    ) -> None:
        self.path = Path(path)
        self.columns = (*CSV_COLUMNS, *extra_columns)
        kept = [r for r in read_metrics(self.path) if int(float(r["step"])) <= resume_step]
        # Rewrite atomically so that an interruption here cannot lose the earlier rows.
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(kept)
        with atomic_path(self.path) as tmp:
            tmp.write_text(buf.getvalue())

    def append(self, row: Mapping[str, Any]) -> None:
        """Writes one row (missing columns stay empty) and flushes it to disk."""
        cells = {k: _cell(row.get(k)) for k in self.columns}
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.columns).writerow(cells)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.8g}"
    return str(value)


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """The rows of a ``metrics.csv`` (empty list when it does not exist)."""
    p = Path(path)
    if not p.exists():
        return []
    with p.open(newline="") as f:
        return [row for row in csv.DictReader(f) if row.get("step")]


class TensorBoardLog:
    """Scalars and images under ``DIR/train`` and ``DIR/validation`` (TensorBoard's layout).

    Args:
        log_dir: ``output_dir/tensorboard``.
    """

    def __init__(self, log_dir: str | os.PathLike[str]) -> None:
        import tensorflow as tf

        self._tf = tf
        root = Path(log_dir)
        self.root = root
        self.train = tf.summary.create_file_writer(str(root / "train"))
        self.validation = tf.summary.create_file_writer(str(root / "validation"))

    def scalars(self, split: str, values: Mapping[str, float], step: int) -> None:
        """Writes scalars to the ``train`` or ``validation`` run."""
        writer = self.train if split == "train" else self.validation
        with self._writing(writer, step):
            for name, value in values.items():
                if value is not None and math.isfinite(value):
                    self._tf.summary.scalar(name, value)

    def slices(self, truth: np.ndarray, prediction: np.ndarray, step: int) -> None:
        """Writes one grayscale image: rows axial/coronal/sagittal, columns truth | prediction |
        absolute error (all on the [0, 1] target scale)."""
        grid = slice_grid(truth, prediction)
        with self._writing(self.validation, step):
            self._tf.summary.image(
                "slices/truth_prediction_error", grid[None, ..., None], max_outputs=1
            )

    def image(self, name: str, image: np.ndarray, step: int) -> None:
        """Writes one grayscale image in [0, 1] ``(H, W)`` to the ``validation`` run."""
        grid = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
        with self._writing(self.validation, step):
            self._tf.summary.image(name, grid[None, ..., None], max_outputs=1)

    @contextlib.contextmanager
    def _writing(self, writer: Any, step: int) -> Iterator[None]:
        """Writes summaries of ``step`` with ``writer`` and flushes them; a full disk is an
        :class:`~xprospect.errors.OutputError` naming the TensorBoard folder (an event file is
        appended as it goes: nothing to roll back)."""
        try:
            with writer.as_default(step=step):
                yield
            writer.flush()
        except Exception as exc:
            err = output_error(exc, self.root, "the TensorBoard log could not be written")
            if err is None:
                raise
            raise err from exc

    def close(self) -> None:
        self.train.close()
        self.validation.close()


def _planes(volume: np.ndarray) -> list[np.ndarray]:
    i, j, k = (n // 2 for n in volume.shape)
    return [volume[i], volume[:, j, :], volume[:, :, k]]


def slice_grid(truth: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """(3*D, 3*W) float32 image in [0, 1] of the central planes of two (D, H, W) volumes."""
    t = np.clip(np.asarray(truth, np.float32), 0, 1)
    p = np.clip(np.asarray(prediction, np.float32), 0, 1)
    rows = [
        np.concatenate([a, b, np.abs(a - b)], axis=1)
        for a, b in zip(_planes(t), _planes(p), strict=True)
    ]
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]))) for r in rows]
    return np.concatenate(rows, axis=0).astype(np.float32)


def _float(row: Mapping[str, str], key: str) -> float:
    try:
        return float(row.get(key) or "nan")
    except ValueError:
        return math.nan


def save_curves(rows: Sequence[Mapping[str, str]], path: str | os.PathLike[str]) -> Path:
    """Training / validation loss and validation PSNR-3D against the step (PNG).

    Args:
        rows: Rows of ``metrics.csv``.
        path: Destination PNG.
    """
    from matplotlib.figure import Figure

    from xprospect.viz import save_figure

    step = np.array([_float(r, "step") for r in rows])
    fig = Figure(figsize=(11, 4))
    ax_loss, ax_psnr = fig.subplots(1, 2)
    curves = (
        ("loss", "training loss (generator)" if rows and "d_loss" in rows[0] else "training loss"),
        ("d_loss", "discriminator loss"),
        ("val_loss", "validation loss"),
    )
    for key, label in curves:
        y = np.array([_float(r, key) for r in rows])
        ok = np.isfinite(y)
        if ok.any():
            # Markers where points are few: a single logged point would draw no line at all.
            dots = key == "val_loss" or ok.sum() < 50
            ax_loss.plot(step[ok], y[ok], marker="." if dots else None, label=label)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("loss")
    if np.any(np.array([_float(r, "loss") for r in rows]) > 0):
        ax_loss.set_yscale("log")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    psnr = np.array([_float(r, "val_psnr_3d") for r in rows])
    ok = np.isfinite(psnr)
    if ok.any():
        ax_psnr.plot(step[ok], psnr[ok], marker="o", color="tab:green")
    else:
        ax_psnr.text(0.5, 0.5, "no validation split", ha="center", transform=ax_psnr.transAxes)
    ax_psnr.set_xlabel("step")
    ax_psnr.set_ylabel("PSNR-3D (dB)")
    ax_psnr.set_title("validation PSNR-3D")
    ax_psnr.grid(alpha=0.3)
    return save_figure(fig, path)


def save_panel(
    truth: np.ndarray,
    prediction: np.ndarray,
    path: str | os.PathLike[str],
    *,
    title: str = "",
) -> Path:
    """Central axial / coronal / sagittal planes: truth | prediction | absolute error (PNG).

    Args:
        truth: (D, H, W) target on the [0, 1] window scale.
        prediction: (D, H, W) model output.
        path: Destination PNG.
        title: Figure title (e.g. case and PSNR).
    """
    from matplotlib.figure import Figure

    from xprospect.viz import save_figure

    fig = Figure(figsize=(10, 10))
    axes = fig.subplots(3, 3)
    t = np.asarray(truth, np.float32)
    p = np.clip(np.asarray(prediction, np.float32), 0, 1)
    for r, (plane, a, b) in enumerate(zip(PLANES, _planes(t), _planes(p), strict=True)):
        for c, (img, name, cmap, vmax) in enumerate(
            (
                (a, "truth", "gray", 1.0),
                (b, "prediction", "gray", 1.0),
                (np.abs(a - b), "|error|", "magma", 0.5),
            )
        ):
            ax = axes[r][c]
            im = ax.imshow(img, cmap=cmap, vmin=0.0, vmax=vmax)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{name} - {plane}", fontsize=9)
            if c == 2:
                fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)
