"""Building blocks of :mod:`xprospect.train`: distribution, checkpoints, logs and figures.

- :mod:`xprospect.training.distribute`: strategy choice, chief/worker roles, per-replica input.
- :mod:`xprospect.training.checkpoints`: resumable checkpoints, ``state.json``, the best model.
- :mod:`xprospect.training.logs`: ``metrics.csv``, TensorBoard scalars and slice images, figures.
"""

from __future__ import annotations
