"""Figures a user can open: orthogonal slices of volumes and radiograph panels (PNG, atomic).

Uses matplotlib's object API with the Agg canvas (no pyplot global state, no display needed).
Volumes are shown in the canonical orientation (``docs/conventions.md``): axial with anterior up
and the patient's left on the image right, coronal and sagittal with the head up.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from xprospect.image import Radiograph, Volume
from xprospect.utils import atomic_path

__all__ = ["save_figure", "save_orthogonal_slices", "save_radiographs"]

_PLANES = ("axial", "coronal", "sagittal")


def save_figure(
    fig: Figure, path: str | os.PathLike[str], *, dpi: int = 100, overwrite: bool = True
) -> Path:
    """Saves a figure as PNG atomically.

    Args:
        fig: The figure.
        path: Destination PNG.
        dpi: Resolution.
        overwrite: If False, refuse to replace an existing file (or link) at ``path``.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
        OutputError: The disk is full or the folder not writable; ``path`` is unchanged.
    """
    FigureCanvasAgg(fig)
    with atomic_path(path, overwrite=overwrite) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight")
    return Path(path)


def _canonical(volume: Volume) -> Volume:
    if volume.is_canonical:
        return volume
    from xprospect.preprocessing import reorient

    return reorient(volume)


def _planes(volume: Volume, index: Sequence[int] | None) -> list[tuple[np.ndarray, float]]:
    a = volume.array
    s0, s1, s2 = volume.spacing_mm
    i, j, k = index if index is not None else [n // 2 for n in a.shape]
    # imshow aspect = row spacing / column spacing keeps anatomy undistorted.
    return [(a[i], s1 / s2), (a[:, j, :], s0 / s2), (a[:, :, k], s0 / s1)]


def save_orthogonal_slices(
    volumes: Volume | Sequence[Volume],
    path: str | os.PathLike[str],
    *,
    titles: Sequence[str] | None = None,
    hu_window: tuple[float, float] = (-1000.0, 1000.0),
    index: Sequence[int] | None = None,
    cmap: str = "gray",
    overwrite: bool = True,
) -> Path:
    """Saves a grid: one row per volume, columns axial | coronal | sagittal through the centre.

    Args:
        volumes: One volume or several on the same grid (e.g. truth, prediction, error).
        path: Destination PNG.
        titles: One title per row.
        hu_window: Display range in HU (values outside are clipped).
        index: Voxel (i, j, k) the three planes pass through; the centre by default.
        cmap: Matplotlib colormap name.
        overwrite: If False, refuse to replace an existing file at ``path``.

    Returns:
        The path written.
    """
    vols = [volumes] if isinstance(volumes, Volume) else list(volumes)
    vols = [_canonical(v) for v in vols]
    rows = len(vols)
    fig = Figure(figsize=(10, 3.4 * rows))
    axes = fig.subplots(rows, 3, squeeze=False)
    for r, vol in enumerate(vols):
        for c, (plane, (img, aspect)) in enumerate(zip(_PLANES, _planes(vol, index), strict=True)):
            ax = axes[r][c]
            ax.imshow(img, cmap=cmap, vmin=hu_window[0], vmax=hu_window[1], aspect=aspect)
            ax.set_xticks([])
            ax.set_yticks([])
            label = f"{titles[r]} - {plane}" if titles else plane
            ax.set_title(label, fontsize=9)
            # Orientation letters make a flipped display obvious at a glance.
            left, right = ("R", "L") if plane in ("axial", "coronal") else ("A", "P")
            top = "A" if plane == "axial" else "S"
            for x, y, t in ((0.02, 0.5, left), (0.98, 0.5, right), (0.5, 0.97, top)):
                ax.text(
                    x,
                    y,
                    t,
                    color="yellow",
                    fontsize=8,
                    transform=ax.transAxes,
                    ha="center",
                    va="center",
                )
    return save_figure(fig, path, overwrite=overwrite)


def save_radiographs(
    images: Sequence[Radiograph | np.ndarray],
    path: str | os.PathLike[str],
    *,
    titles: Sequence[str] | None = None,
    value_range: tuple[float, float] | None = None,
    overwrite: bool = True,
) -> Path:
    """Saves radiographs side by side (display convention: bright = dense); with
    ``overwrite=False`` an existing file at ``path`` is refused."""
    fig = Figure(figsize=(3.6 * len(images), 3.8))
    axes = fig.subplots(1, len(images), squeeze=False)[0]
    for n, (ax, im) in enumerate(zip(axes, images, strict=True)):
        a = im.array if isinstance(im, Radiograph) else np.asarray(im)
        vmin, vmax = value_range if value_range else (float(a.min()), float(a.max()))
        ax.imshow(a, cmap="gray", vmin=vmin, vmax=vmax)
        ax.set_xticks([])
        ax.set_yticks([])
        if titles:
            ax.set_title(titles[n], fontsize=9)
    return save_figure(fig, path, overwrite=overwrite)
