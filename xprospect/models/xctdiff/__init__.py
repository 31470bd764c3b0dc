"""XctDiff (Bai et al. 2024): CT from one frontal radiograph by prior-guided latent diffusion.

- :mod:`~xprospect.models.xctdiff.layers`: the homogeneous :class:`VectorQuantizer`, the time
  embedding, the 3D pixel shuffle, codebook usage and perplexity.
- :mod:`~xprospect.models.xctdiff.diffusion`: noise schedule, forward noising, Eq. 7's loss,
  DDIM and DDPM samplers.
- :mod:`~xprospect.models.xctdiff.model`: the VQ-GAN (:class:`XctDiffAutoencoder`,
  :class:`XctDiffDiscriminator`), the progressive encoder (:class:`XctDiffPriorEncoder`), the
  latent UNet (:class:`XctDiffUNet`) and the pipeline (:class:`XctDiff`).
"""

from __future__ import annotations

from xprospect.models.xctdiff.diffusion import (
    NoiseSchedule,
    ddim_sample,
    ddim_timesteps,
    ddpm_sample,
    diffusion_loss_per_example,
    q_sample,
)
from xprospect.models.xctdiff.layers import (
    PixelShuffle3D,
    SinusoidalEmbedding,
    VectorQuantizer,
    codebook_usage,
    perplexity,
    zscore,
)
from xprospect.models.xctdiff.model import (
    CONDITIONING,
    XctDiff,
    XctDiffAutoencoder,
    XctDiffDiscriminator,
    XctDiffPriorEncoder,
    XctDiffUNet,
)

__all__ = [
    "CONDITIONING",
    "NoiseSchedule",
    "PixelShuffle3D",
    "SinusoidalEmbedding",
    "VectorQuantizer",
    "XctDiff",
    "XctDiffAutoencoder",
    "XctDiffDiscriminator",
    "XctDiffPriorEncoder",
    "XctDiffUNet",
    "codebook_usage",
    "ddim_sample",
    "ddim_timesteps",
    "ddpm_sample",
    "diffusion_loss_per_example",
    "perplexity",
    "q_sample",
    "zscore",
]
