"""What a training run returns (:class:`TrainResult`), shared by the loop and the trainer."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = ["TrainResult"]


@dataclass
class TrainResult:
    """What a run did.

    Attributes:
        status: ``completed`` or ``diverged`` (NaN/Inf loss; the last good checkpoint is kept).
        steps: The step reached.
        start_step: The step the run resumed from (0 for a fresh run).
        output_dir: The run folder.
        model_path: ``model.keras`` (None when diverged, or on non-chief workers).
        best: ``best.json`` content (step and validation metrics), if any.
        metrics: The last validation metrics (``val_loss``, ``val_psnr_3d``, ``val_mae``).
        seconds: Wall time of this invocation.
        message: A one-line summary.
    """

    status: Literal["completed", "diverged"]
    steps: int
    start_step: int
    output_dir: Path
    model_path: Path | None = None
    best: dict[str, Any] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    message: str = ""

    @property
    def ok(self) -> bool:
        """Whether the run completed (did not diverge)."""
        return self.status == "completed"
