"""Style transfer between DRRs and real radiographs: a Keras CycleGAN per view.

Models trained on DRRs meet real radiographs at inference. XprospeCT trains one CycleGAN per view
to make DRRs look like real X-rays (its "Stylized CT" inputs); XctDiff turns real radiographs
into DRR style before reconstruction. Both directions live here:

- :mod:`xprospect.style.radiographs`: domain B, real radiographs from a folder and a CSV of
  views (``../shared/data/real_xrays/manifest.csv`` shape), with the preprocessing that makes them
  model inputs (thorax square, resize, percentile window, marker suppression).
- :mod:`xprospect.style.config` and :mod:`xprospect.style.training`: ``xprospect style train``,
  the CycleGAN (:mod:`xprospect.models.cyclegan`) trained in the shared training loop.
- :mod:`xprospect.style.apply`: stylized dataset copies (``drr2real``) that ``xprospect train``
  reads, and real X-rays mapped to DRR style (``real2drr``, ``xprospect predict --style-model``).
- :mod:`xprospect.style.metrics` and :mod:`xprospect.style.evaluate`: ``xprospect style
  evaluate``, scores without pretrained networks (classifier two-sample test, histogram and
  spectrum distances, cycle errors).
"""

from __future__ import annotations
