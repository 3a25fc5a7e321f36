"""AdaptiveDiffusion (Ye et al., NeurIPS 2024), a step-wise peer of ETC (docs/methods.md).

Pure tensor math. The signal is the third-order latent difference: with D_t = mean|x_t - x_{t-1}| over the
latents the sampler feeds the denoiser, step t reuses the previous output when

    |(D_t + D_{t-2}) / 2 - D_{t-1}| <= threshold * D_{t-1},

i.e. when the latent change is locally linear. Defaults are the authors' (threshold 0.01, max_skip_steps 4,
the constructor defaults of their ``sparse_pipeline.py``; 0.008 is their video setting).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .base import StepPolicy
from ..._numbers import as_int, as_real


def _check_int(name: str, value: Any, low: int, hint: str) -> int:
    value = value if as_int(value) is None else as_int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"AdaptiveDiffusion: {name} must be an integer >= {low}{hint}, got {value!r}.")
    return value


class AdaptiveDiffusion(StepPolicy):
    """Skip a step (reuse the previous output) while the latent trajectory's third-order difference is small.

    Args:
        threshold: relative tolerance on the third-order difference (the paper: 0.01 for images, 0.008 for video).
        max_skip_steps: after this many skips in a row the model runs (the paper: 4).
        warmup: the first steps that always run the model.

    The rule needs D_t, D_{t-1}, D_{t-2}, so four consecutive latents x_{t-3}..x_t; a step where any of them is
    missing runs the model. ``etcdiff.sample`` shows the initial noise x_0 at step 0, so the first decision
    can come at step 3; the diffusers hook shows ``None`` at step 0 (the tracker has no x_0 yet), so there the
    first decision comes at step 4, as in the authors' pipeline, which keeps the latents after each scheduler
    step only. The last step always runs (our addition, as for every policy here). The decision is one for
    the whole batch: D is the mean over all elements, as in the reference.
    """

    name = "adaptive"

    def __init__(self, threshold: float = 0.01, max_skip_steps: int = 4, warmup: int = 3) -> None:
        super().__init__()
        threshold = threshold if as_real(threshold) is None else as_real(threshold)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold) or threshold < 0:
            raise ValueError(
                f"AdaptiveDiffusion: threshold must be a finite number >= 0, got {threshold!r}; "
                "the authors use 0.01 for images and 0.008 for video."
            )
        self.threshold = float(threshold)
        self.max_skip_steps = _check_int("max_skip_steps", max_skip_steps, 1, " (the authors use 4)")
        self.warmup = _check_int("warmup", warmup, 1, " (step 0 has nothing to reuse)")

    def params(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "max_skip_steps": self.max_skip_steps, "warmup": self.warmup}

    def reset_state(self) -> None:
        self._prev_x: torch.Tensor | None = None  # x_{t-1}
        self._prev_step = -1  # the step at which _prev_x was shown
        self._diffs: dict[int, float] = {}  # D_s for the last few steps s
        self._skips = 0  # skips in a row
        self._err: float | None = None  # the relative third-order difference measured at this step

    def should_compute(self, step: int, latents: torch.Tensor | None = None) -> bool:
        self._check_step(step)
        self._err = None
        if latents is not None:
            x = latents.detach()
            if self._prev_x is not None and self._prev_step == step - 1 and x.shape == self._prev_x.shape:
                self._diffs[step] = (x - self._prev_x).abs().mean().item()
                self._diffs.pop(step - 3, None)
            self._prev_x, self._prev_step = x, step
        d = [self._diffs.get(step - k) for k in range(3)]  # D_t, D_{t-1}, D_{t-2}
        if None in d:
            return True
        gap = abs((d[0] + d[2]) / 2 - d[1])  # the third-order latent difference
        self._err = gap / d[1] if d[1] > 0 else None  # logged relative to D_{t-1}
        if step < self.warmup or step == self.num_steps - 1 or self._skips >= self.max_skip_steps:
            return True
        return not gap <= self.threshold * d[1]

    def observe(self, step: int, output: torch.Tensor, computed: bool) -> None:
        self._skips = 0 if computed else self._skips + 1
        self._log(step, computed, err=self._err, window=self._skips)
        if computed:
            self.main_stream.record(step, output)
