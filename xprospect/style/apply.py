"""Using trained style models: translate images, stylize a dataset, prepare real X-rays.

A style model is the run folder ``xprospect style train`` writes (``style.json`` with the view,
size and preprocessing, ``drr2real.keras`` and ``real2drr.keras``). Two uses:

- ``drr2real`` (XprospeCT's "Stylized CT"): :func:`stylize_dataset` writes a copy of a prepared
  dataset whose X-rays are the style model's translations of its DRRs (or mean-CT projections),
  so that a reconstruction model trains on inputs that look like real radiographs. The copy's
  ``manifest.json`` says ``"xray_values": "display"``: :func:`xprospect.data.load_dataset` then
  reads the stored [0, 1] images as they are (only ``xray_mapping: display`` is allowed, and no
  spatial augmentation, since re-rendered DRRs would lose the style).
- ``real2drr`` (XctDiff's direction): :meth:`StyleModel.real_to_drr` preprocesses a real
  radiograph as in training (thorax square, resize, percentile window, marker suppression) and
  translates it into DRR style before reconstruction (``xprospect predict --style-model``).

Translation is deterministic: the generators run in inference mode and have no random layers
(instance norm uses each image's own statistics).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from xprospect.data.manifest import MANIFEST_NAME, read_manifest
from xprospect.errors import ConfigError, MissingDataError, OutputExistsError
from xprospect.image import Radiograph
from xprospect.preprocessing import XRAY_WINDOW_PERCENTILES
from xprospect.utils import atomic_dir, progress_bar, read_json_file

__all__ = ["StyleModel", "load_style_model", "stylize_dataset"]

log = logging.getLogger("xprospect.style")

Direction = Literal["drr2real", "real2drr"]
DIRECTIONS: tuple[str, ...] = ("drr2real", "real2drr")


class StyleModel:
    """A trained CycleGAN of one view (see the module docstring).

    Args:
        folder: The style run folder (with ``style.json``).
        trust: Load the generators with Keras safe mode off (``--trust-model``); by default a
            generator holding Python code (a ``Lambda`` layer) is refused.

    Attributes:
        view: ``frontal`` or ``lateral``.
        size: The image edge it was trained at.
        source: What domain A was: ``drr`` or ``mean_ct``.
        meta: The whole ``style.json``.
        meta_path: That file.
    """

    def __init__(self, folder: str | os.PathLike[str], *, trust: bool = False) -> None:
        from xprospect.style.training import GENERATOR_FILES, STYLE_FILE

        self.folder = Path(folder)
        self.trust = trust
        meta_path = self.meta_path = self.folder / STYLE_FILE
        if not meta_path.exists():
            raise MissingDataError(
                f"no {STYLE_FILE}: not a finished 'xprospect style train' run", self.folder
            )
        self.meta: dict[str, Any] = read_json_file(meta_path, what="style metadata")
        if not isinstance(self.meta, dict):
            raise ConfigError("style metadata is not a JSON object", meta_path)
        self.view = str(self.meta["view"])
        self.size = int(self.meta["size"])
        self.source = str(self.meta.get("source", "drr"))
        self._files = {k: self.folder / v for k, v in GENERATOR_FILES.items()}
        self._generators: dict[str, Any] = {}

    def generator(self, direction: str) -> Any:
        """The Keras generator of ``direction`` (loaded on first use)."""
        if direction not in DIRECTIONS:
            raise ConfigError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        if direction not in self._generators:
            import xprospect.models.cyclegan  # noqa: F401  (registers the classes)
            from xprospect.trust import load_keras_model

            path = self._files[direction]
            if not path.exists():
                raise MissingDataError("generator file missing", path)
            self._generators[direction] = load_keras_model(path, trust=self.trust, compile=False)
        return self._generators[direction]

    def translate(self, images: np.ndarray, direction: str, batch_size: int = 8) -> np.ndarray:
        """Translates ``(N, S, S)`` (or one ``(S, S)``) [0, 1] images at the model's size.

        Images of another size are resized to :attr:`size` and the result back (anti-aliased).
        """
        from xprospect.style.training import resize_batch, translate_images

        a = np.asarray(images, dtype=np.float32)
        single = a.ndim == 2
        a = a[None] if single else a
        if a.ndim != 3:
            raise ConfigError(f"expected (N, S, S) or (S, S) images, got shape {a.shape}")
        shape = a.shape[1:]
        if shape[0] != shape[1]:
            raise ConfigError(f"expected square images, got {shape}")
        x = resize_batch(np.clip(a, 0.0, 1.0), self.size)
        y = translate_images(self.generator(direction), x, batch_size)
        y = resize_batch(y, shape[0])
        return y[0] if single else y

    def film(self, images: np.ndarray, seed: int = 0, *, noise: bool = True) -> np.ndarray:
        """Domain-A images ``(N, S, S)`` as the generators learned them: through the run's film
        augmentation (:mod:`xprospect.style.film`, the ``i``-th image with seed
        ``film_seed(seed, i)``) when it was trained with one; unchanged otherwise.

        A run trained on film-like DRRs never saw a clean one, so clean DRRs are outside its
        domain A: evaluation and :func:`stylize_dataset` pass them through this first.

        Args:
            images: DRRs ``(N, S, S)`` in [0, 1].
            seed: Base seed of the draws.
            noise: False: the same films without their detector noise (every other draw is
                unchanged, see :class:`~xprospect.style.film.FilmAugmentation`), the image
                content a cycle can give back; the noise itself is a fresh random draw.
        """
        a = np.asarray(images, dtype=np.float32)
        config = self.meta.get("film_augmentation")
        if config is None:
            return a
        from xprospect.style.film import FilmAugmentation, FilmAugmentationConfig, film_seed

        try:
            cfg = FilmAugmentationConfig(**config)
        except TypeError as exc:
            raise ConfigError(f"film_augmentation: {exc}", self.meta_path) from None
        if not noise:
            cfg = dataclasses.replace(cfg, noise_probability=0.0)
        low, high = self.meta.get("percentiles", list(XRAY_WINDOW_PERCENTILES))
        pct = (float(low), float(high))
        out = [FilmAugmentation(cfg, film_seed(seed, i), pct)(x) for i, x in enumerate(a)]
        return np.stack(out) if out else a

    def prepare_real(self, image: Radiograph | np.ndarray) -> np.ndarray:
        """A real radiograph preprocessed as in training: ``(size, size)`` float32 in [0, 1]."""
        from xprospect.style.radiographs import preprocess_real_xray

        low, high = self.meta.get("percentiles", list(XRAY_WINDOW_PERCENTILES))
        return preprocess_real_xray(
            image,
            self.size,
            crop=self.meta.get("crop", "thorax"),
            percentiles=(float(low), float(high)),
            suppress=bool(self.meta.get("suppress_markers", True)),
        )

    def real_to_drr(self, image: Radiograph | np.ndarray, size: int | None = None) -> np.ndarray:
        """A real radiograph in DRR style, ``(size, size)`` (default: the model's size)."""
        out = self.translate(self.prepare_real(image), "real2drr")
        if size is not None and size != self.size:
            from xprospect.style.training import resize_batch

            out = resize_batch(out[None], size)[0]
        return out

    def domain_a(self, volume_hu: np.ndarray, line_integral: np.ndarray) -> np.ndarray:
        """The domain-A image of one case, as in training: display DRR or mean-CT projection."""
        from xprospect.projection.physics import display_unit

        if self.source == "mean_ct":
            from xprospect.preprocessing import window_hu
            from xprospect.style.training import minmax_per_image

            # The window domain_a_images sees: load_dataset's default, "xprospect".
            w = window_hu(np.asarray(volume_hu, np.float32), "xprospect")
            proj = w.mean(axis=1 if self.view == "frontal" else 2)
            return minmax_per_image(proj[None])[0]
        return np.asarray(display_unit(np.asarray(line_integral, np.float32)), np.float32)


def load_style_model(
    path: str | os.PathLike[str] | StyleModel, *, trust: bool = False
) -> StyleModel:
    """A :class:`StyleModel` from a run folder (or the model itself); ``trust`` as in
    :class:`StyleModel`."""
    return path if isinstance(path, StyleModel) else StyleModel(path, trust=trust)


def _models_by_view(models: Iterable[str | os.PathLike[str] | StyleModel]) -> dict[str, StyleModel]:
    out: dict[str, StyleModel] = {}
    for m in models:
        model = load_style_model(m)
        if model.view in out:
            raise ConfigError(
                f"two style models for the {model.view} view: {out[model.view].folder} and "
                f"{model.folder}"
            )
        out[model.view] = model
    if not out:
        raise ConfigError("give at least one style model")
    return out


def stylize_dataset(
    dataset_dir: str | os.PathLike[str],
    models: Sequence[str | os.PathLike[str] | StyleModel],
    out_dir: str | os.PathLike[str],
    *,
    direction: Direction = "drr2real",
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Writes a copy of a prepared dataset whose X-rays are translated by style models.

    Every split and case is kept; volumes are copied unchanged. Views with a style model get its
    translation of their domain-A image; views without one get their display-mapped DRR. The copy
    is written to a temporary folder beside ``out_dir`` and renamed at the end, so an
    interrupted run (or a full disk) leaves nothing half-written.

    Args:
        dataset_dir: A folder written by ``xprospect prepare``.
        models: Style run folders (or :class:`StyleModel`), at most one per view.
        out_dir: The new dataset folder: new or empty, or with ``overwrite`` an xprospect dataset
            (replaced as a whole once the copy is complete).
        direction: ``drr2real`` (the paper's "Stylized CT" inputs).
        progress: Show a progress bar.
        overwrite: Replace an existing dataset at ``out_dir`` (never ``dataset_dir`` itself, nor
            a folder that is not a dataset).

    Returns:
        ``out_dir``.

    Raises:
        OutputExistsError: ``out_dir`` exists and ``overwrite`` is False, or it holds something
            other than a dataset.
        OutputError: The disk is full (or the folder not writable); nothing is left behind.
        MissingDataError: Not a dataset folder, or a style model is missing.
    """
    if direction != "drr2real":
        raise ConfigError("a dataset holds DRRs: only direction drr2real stylizes it")
    src, out = Path(dataset_dir), Path(out_dir)
    manifest = read_manifest(src)
    if manifest.get("config", {}).get("xray_values") == "display":
        raise ConfigError("this dataset is already stylized", src)
    _check_stylized_output(src, out, overwrite)
    by_view = _models_by_view(models)
    shards = sorted(src.glob("*.tfrecord"))
    bar = progress_bar(
        sum(int(s.get("cases", 0)) for s in manifest.get("shards", {}).values()), progress
    )
    with atomic_dir(out, overwrite=overwrite) as tmp:
        try:
            _write_stylized(src, tmp, shards, manifest, by_view, direction, bar)
        finally:
            bar.close()
    log.info("wrote the stylized dataset %s", out)
    return out


def _check_stylized_output(src: Path, out: Path, overwrite: bool) -> None:
    """Refuses ``out`` before any work: existing (unless ``overwrite``), not a dataset, or the
    source itself."""
    if os.path.lexists(out) and out.resolve() == src.resolve():
        raise ConfigError("is the dataset being stylized; choose a new output folder", out)
    link = out.is_symlink()
    if not os.path.lexists(out) or (out.is_dir() and not link and not any(out.iterdir())):
        return
    if not overwrite:
        raise OutputExistsError("already exists; pass --overwrite to replace it", out)
    if out.is_dir() and not link and not (out / MANIFEST_NAME).exists():
        raise OutputExistsError(
            "exists and is not an xprospect dataset; choose a new output folder", out
        )


def _write_stylized(
    src: Path,
    tmp: Path,
    shards: Sequence[Path],
    manifest: dict[str, Any],
    by_view: dict[str, StyleModel],
    direction: str,
    bar: Any,
) -> None:
    """The stylized copy of ``src``, written into the temporary folder ``tmp``."""
    import tensorflow as tf

    from xprospect.data.pipeline import VIEWS, encode_case, parse_case

    for item in src.iterdir():
        if item.suffix != ".tfrecord" and item.name != MANIFEST_NAME and item.is_file():
            shutil.copy2(item, tmp / item.name)
    for shard in shards:
        records = []
        cases = [parse_case(r, with_scan_mask=True) for r in tf.data.TFRecordDataset(str(shard))]
        for case in cases:
            volume = case["volume"].numpy()
            xrays = {}
            for view in VIEWS:
                line = case[view].numpy()
                model = by_view.get(view)
                if model is None:
                    from xprospect.projection.physics import display_unit

                    xrays[view] = np.asarray(display_unit(line), np.float32)
                else:
                    # The film draw is seeded by the case id: the same case, the same film.
                    seed = zlib.crc32(case["case_id"].numpy())
                    image = model.film(model.domain_a(volume, line)[None], seed)[0]
                    xrays[view] = model.translate(image, direction)
            records.append(
                encode_case(
                    case["case_id"].numpy().decode(),
                    volume,
                    case["spacing_mm"].numpy(),
                    xrays["frontal"],
                    xrays["lateral"],
                    scan_mask=case["scan_mask"].numpy(),
                )
            )
            bar.update(1)
        with tf.io.TFRecordWriter(str(tmp / shard.name)) as writer:
            for rec in records:
                writer.write(rec)
    new = dict(manifest)
    new["config"] = dict(manifest.get("config", {}), xray_values="display")
    new["style"] = {
        "direction": direction,
        "source_dataset": str(src),
        "models": {
            v: {"folder": str(m.folder), "source": m.source, "steps": m.meta.get("steps")}
            for v, m in by_view.items()
        },
    }
    (tmp / MANIFEST_NAME).write_text(json.dumps(new, indent=2) + "\n")
