"""``xprospect style evaluate``: how real do translated DRRs look, without pretrained networks.

Each score compares an image set with held-out real radiographs of the same view (the patients
the style run held out for validation), once for the DRRs as they are ("before") and once for
their ``drr2real`` translations ("after"):

- a classifier two-sample test (C2ST, Lopez-Paz & Oquab 2017): a small CNN trained to tell the
  set from real images, scored on a held-out part; accuracy and AUC, 0.5 is indistinguishable;
- the 1-D Wasserstein distance and the Jensen-Shannon distance between intensity histograms;
- the mean absolute difference of log10 radial power spectra (decades);

and the cycle reconstruction errors ``|F(G(a)) - a|`` and ``|G(F(b)) - b|`` (mean absolute, on
the [0, 1] scale). A run trained on film-like DRRs (``data.film_augmentation``) translates the
DRRs after the same seeded film augmentation (its domain A, :meth:`StyleModel.film`), the cycle
is taken against those, and a third column scores the film DRRs alone. Such a run also records
the DRR cycle against each film's noiseless twin (``drr_to_real_to_drr_noiseless``: the same
draws without the detector noise, which is random and cannot come back through a cycle) and the
noise's own mean absolute size (``film_noise``). The report folder gets
``style_eval.json``, ``style_eval.md``, ``grid.png`` (DRR | translated | cycled | real),
``spectra.png`` and ``histograms.png``.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xprospect.errors import ConfigError
from xprospect.style.apply import StyleModel, load_style_model

__all__ = ["StyleEvaluation", "evaluate_style"]

log = logging.getLogger("xprospect.style")


@dataclass
class StyleEvaluation:
    """Scores of one style model (see the module docstring)."""

    before: dict[str, float]
    after: dict[str, float]
    cycle: dict[str, float]
    counts: dict[str, int]
    output_dir: Path
    seconds: float = 0.0
    files: list[Path] = field(default_factory=list)
    film: dict[str, float] | None = None
    """The film-augmented DRRs alone against the real X-rays (runs trained with film
    augmentation): how much of "after" the film gives before the generator."""
    c2st_repeats: dict[str, list[float]] | None = None
    """The translated DRRs' C2ST repeated with seeds ``seed, seed + 1, ...`` (``auc``,
    ``accuracy``; ``c2st_repeats > 1``): with a few dozen held-out images one split's AUC
    moves by about 0.1, so a verdict reads the median and range."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "before": self.before,
            "film": self.film,
            "after": self.after,
            "cycle": self.cycle,
            "counts": self.counts,
            "c2st_repeats": self.c2st_repeats,
            "seconds": self.seconds,
        }

    def table(self) -> str:
        """A Markdown table: one row per score, columns before | after."""
        names = {
            "c2st_accuracy": "C2ST accuracy (0.5 ideal)",
            "c2st_auc": "C2ST AUC (0.5 ideal)",
            "hist_wasserstein": "histogram Wasserstein-1",
            "hist_js": "histogram Jensen-Shannon distance",
            "spectrum_log10_l1": "radial spectrum |log10| difference (decades)",
        }
        film = self.film
        head = "| vs held-out real | DRR (before) |" + (" film DRR |" if film else "")
        lines = [head + " translated (after) |", "|---|---|---|" + ("---|" if film else "")]
        for key, label in names.items():
            mid = f" {film[key]:.3f} |" if film else ""
            lines.append(f"| {label} | {self.before[key]:.3f} |{mid} {self.after[key]:.3f} |")
        if self.c2st_repeats:
            auc, acc = self.c2st_repeats["auc"], self.c2st_repeats["accuracy"]
            lines.append("")
            lines.append(
                f"Translated DRRs' C2ST over {len(auc)} seeded splits: AUC median "
                f"{np.median(auc):.3f} ({min(auc):.3f}-{max(auc):.3f}), accuracy median "
                f"{np.median(acc):.3f} ({min(acc):.3f}-{max(acc):.3f})."
            )
        lines.append("")
        lines.append("| cycle error (mean absolute, [0, 1] scale) | value |")
        lines.append("|---|---|")
        for key, value in self.cycle.items():
            lines.append(f"| {key} | {value:.4f} |")
        return "\n".join(lines)


def evaluate_style(
    model: str | os.PathLike[str] | StyleModel,
    output_dir: str | os.PathLike[str],
    *,
    dataset_dir: str | os.PathLike[str] | None = None,
    split: str = "test",
    real_dir: str | os.PathLike[str] | None = None,
    max_images: int | None = None,
    seed: int = 0,
    c2st_kwargs: dict[str, Any] | None = None,
    c2st_repeats: int = 1,
) -> StyleEvaluation:
    """Scores a style model's ``drr2real`` direction against held-out real X-rays.

    Args:
        model: A style run folder (or :class:`StyleModel`).
        output_dir: The report folder (created).
        dataset_dir: Domain A; default: the dataset the model was trained on.
        split: The dataset split whose DRRs are translated (default ``test``; the CycleGAN never
            saw them).
        real_dir: Domain B folder; default: the training run's (``config.yaml``) or the shared
            default folder.
        max_images: Use at most this many images of each set.
        seed: Seed of the C2ST.
        c2st_kwargs: Extra arguments of
            :func:`~xprospect.style.metrics.classifier_two_sample_test`.
        c2st_repeats: Repeat the translated DRRs' C2ST with this many seeds (``seed`` and up:
            other splits and initial weights) and record each AUC and accuracy; 1: once.

    Returns:
        The scores; the report files are in ``output_dir``.
    """
    from xprospect.style.config import load_style_config
    from xprospect.style.metrics import (
        classifier_two_sample_test,
        radial_power_spectrum,
        save_histogram_plot,
        save_spectrum_plot,
        save_style_grid,
        style_scores,
    )
    from xprospect.style.training import domain_a_images, domain_b_images
    from xprospect.training.checkpoints import write_json
    from xprospect.utils import atomic_path

    if c2st_repeats < 1:
        raise ConfigError(f"c2st_repeats: must be >= 1, got {c2st_repeats}")
    t0 = time.perf_counter()
    m = load_style_model(model)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_style_config(m.folder / "config.yaml")
    if real_dir is not None:
        cfg.data.real_dir = str(real_dir)
    data = Path(dataset_dir) if dataset_dir is not None else Path(m.meta["dataset"])
    drr = domain_a_images(data, split, m.view, m.size, source=m.source, limit=max_images)
    real = domain_b_images(cfg, "val", limit=max_images)
    # The generators' own domain A: film-like when the run was trained so (StyleModel.film).
    filmed = m.meta.get("film_augmentation") is not None
    drr_in = m.film(drr, seed)
    translated = m.translate(drr_in, "drr2real")
    cycled = m.translate(translated, "real2drr")
    real_cycled = m.translate(m.translate(real, "real2drr"), "drr2real")
    before = style_scores(drr, real, seed=seed, c2st_kwargs=c2st_kwargs)
    film = None
    if filmed:
        film = style_scores(drr_in, real, seed=seed, c2st_kwargs=c2st_kwargs)
    after = style_scores(translated, real, seed=seed, c2st_kwargs=c2st_kwargs)
    repeats = None
    if c2st_repeats > 1:
        # Seed ``seed`` is the test ``after`` already ran: only the other splits are trained.
        runs = [
            classifier_two_sample_test(translated, real, seed=seed + k, **(c2st_kwargs or {}))
            for k in range(1, c2st_repeats)
        ]
        repeats = {
            "auc": [after["c2st_auc"], *(r.auc for r in runs)],
            "accuracy": [after["c2st_accuracy"], *(r.accuracy for r in runs)],
        }
    cycle = {
        "drr_to_real_to_drr": float(np.mean(np.abs(cycled - drr_in))),
        "real_to_drr_to_real": float(np.mean(np.abs(real_cycled - real))),
    }
    if filmed:
        # The detector noise of a film DRR is a fresh random draw that no generator can give
        # back: the same cycle against the noiseless twin of each film separates what the
        # cycle loses from the noise, whose own size is recorded beside it.
        noiseless = m.film(drr, seed, noise=False)
        cycle["drr_to_real_to_drr_noiseless"] = float(np.mean(np.abs(cycled - noiseless)))
        cycle["film_noise"] = float(np.mean(np.abs(drr_in - noiseless)))
    result = StyleEvaluation(
        before=before,
        after=after,
        cycle=cycle,
        counts={"drr": len(drr), "real": len(real)},
        output_dir=out,
        film=film,
        c2st_repeats=repeats,
    )
    files = [
        save_style_grid(
            {
                "DRR (film)" if filmed else "DRR": drr_in,
                "translated": translated,
                "cycled": cycled,
                "real (held out)": real,
            },
            out / "grid.png",
            title=f"{m.view}: {m.folder.name}",
        ),
        save_spectrum_plot(
            {
                "DRR": radial_power_spectrum(drr),
                "translated": radial_power_spectrum(translated),
                "real": radial_power_spectrum(real),
            },
            out / "spectra.png",
        ),
        save_histogram_plot(
            {"DRR": drr, "translated": translated, "real": real}, out / "histograms.png"
        ),
    ]
    result.seconds = time.perf_counter() - t0
    meta = {
        "model": str(m.folder),
        "view": m.view,
        "size": m.size,
        "dataset": str(data),
        "split": split,
        **result.to_dict(),
    }
    write_json(out / "style_eval.json", meta)
    with atomic_path(out / "style_eval.md") as tmp:
        tmp.write_text(
            f"# Style evaluation: {m.folder} ({m.view}, {m.size}^2)\n\n"
            f"{len(drr)} DRRs of {data} ({split}) against {len(real)} held-out real X-rays.\n\n"
            f"{result.table()}\n"
        )
    result.files = [*files, out / "style_eval.json", out / "style_eval.md"]
    log.info("style evaluation written to %s", out)
    return result
