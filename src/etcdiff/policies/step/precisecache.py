"""PreciseCache's step half, LFCache (Wang et al., ICLR 2026): a RECONSTRUCTION, not the authors' method as coded.

No code is released (the paper says it will be). What the paper states: at each step, a cheap pass of the model on
a downsampled latent gives a low-resolution prediction; the Low-Frequency Difference (LFD) between it and the
prediction of the step whose features are cached measures how redundant the step is; a step whose LFD stays
under a threshold reuses the cached prediction, otherwise the full model runs and its prediction is cached.

What we can and cannot do on etcdiff's step interface: a policy sees the sampler's latents x_t before the call
and the outputs the sampler consumed, and never calls the denoiser itself. A downsampled forward is not possible
generically (patch embeddings, positional tables, UNet strides and conditioning sizes are model-specific), so
the low-resolution prediction is not available. Our proxy measures the low-frequency difference on the *input*
side instead:

    LFD_t = mean|P(x_t) - P(x_c)| / mean|P(x_c)|,

where P average-pools the last two dimensions by ``downsample`` (the low-frequency band, as a downsampled pass
sees it) and c is the last computed step. The step reuses out_c while LFD_t < ``threshold`` (at most
``max_skip`` steps in a row), and the first ``warmup`` steps and the last step always run (the paper: the early,
high-noise steps set the structure and are not skipped). Differences from the paper, exactly: (1) the signal is
the change of the denoiser's input, not of a low-resolution prediction, so it cannot see how the model reacts to
that change; (2) it costs nothing, where the paper pays one low-resolution forward per step; (3) the threshold,
the pooling factor, the warm-up and the run limit are ours (the paper's values are not public to us).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .base import StepPolicy
from .easycache import check_count, check_real, mean_abs


def low_pass(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Average-pools the last two dimensions by ``factor`` (tensors with fewer than 3 dimensions unchanged)."""
    if factor <= 1 or x.dim() < 3 or min(x.shape[-2:]) < factor:
        return x
    lead = x.shape[:-2]
    flat = x.detach().float().reshape(-1, 1, *x.shape[-2:])
    pooled = F.avg_pool2d(flat, factor)
    return pooled.reshape(*lead, *pooled.shape[-2:])


class PreciseCache(StepPolicy):
    """LFCache, reconstructed (module docstring: what is the paper's, what is our proxy).

    Args:
        threshold: the bound on the relative low-frequency change of the input since the last computed step.
        downsample: the pooling factor that keeps the low-frequency band.
        warmup: the first steps that always run.
        max_skip: the longest run of reused steps.
    """

    name = "precisecache"

    def __init__(self, threshold: float = 0.1, downsample: int = 4, warmup: int = 3, max_skip: int = 4) -> None:
        super().__init__()
        self.threshold = check_real("PreciseCache", "threshold", threshold, 0.0)
        self.downsample = check_count("PreciseCache", "downsample", downsample, 1)
        self.warmup = check_count("PreciseCache", "warmup", warmup, 1)
        self.max_skip = check_count("PreciseCache", "max_skip", max_skip, 1)

    def params(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "downsample": self.downsample, "warmup": self.warmup,
                "max_skip": self.max_skip}

    def reset_state(self) -> None:
        self.x: torch.Tensor | None = None  # the pooled input of this step
        self.cached_x: torch.Tensor | None = None  # the pooled input of the last computed step
        self.skips = 0
        self._err: float | None = None

    def late_input(self, step: int, latents: torch.Tensor) -> None:
        self.x = low_pass(latents, self.downsample)

    def lfd(self) -> float | None:
        if self.x is None or self.cached_x is None or self.x.shape != self.cached_x.shape:
            return None
        norm = mean_abs(self.cached_x)
        return mean_abs(self.x - self.cached_x) / norm if norm > 0 else None

    def should_compute(self, step: int, latents: torch.Tensor | None = None) -> bool:
        self._check_step(step)
        self.x = None if latents is None else low_pass(latents, self.downsample)
        self._err = self.lfd()
        if step < self.warmup or step == self.num_steps - 1 or self.skips >= self.max_skip or self._err is None:
            return True
        return not self._err < self.threshold

    def observe(self, step: int, output: torch.Tensor, computed: bool) -> None:
        self.skips = 0 if computed else self.skips + 1
        self._log(step, computed, err=self._err, window=self.skips)
        if computed:
            self.cached_x = self.x
            self.main_stream.record(step, output)
