"""LazyCache: ComfyUI's lighter variant of EasyCache (``comfy_extras/nodes_easycache.py``, GPL-3.0 project; read,
not copied).

Pure tensor math, no calibration. The same transformation-rate rule as :mod:`.easycache`, with ComfyUI's choices:

- it works on the guided prediction (ComfyUI hooks the sampler's noise prediction after guidance), which is what
  the step interface sees anyway;
- the input change is measured against the input of the last *computed* step, mean|x_t - x_c| (EasyCache's
  official code: against the step just before), on a subsampled grid (every ``subsample``-th element of the last
  two dimensions; ComfyUI: 8), and so is the output change in k; the output norm uses the whole output;
- caching is active only between ``start_percent`` (0.15) and ``end_percent`` (0.95) of the run; k is only
  measured inside that range, so the first active step always computes;
- the skipped step gets x_t + (out_c - x_c), the cached difference added to the new input.

Ours: ComfyUI places start and end on the model's noise axis (``percent_to_sigma``); we place them on the step
index (step / steps), which the step interface always has. ComfyUI's difference is taken on the denoised (x0)
prediction; ours on the output the sampler consumes (eps or velocity). The last step always runs here as in
every etcdiff policy (in ComfyUI it runs because it lies past ``end_percent``).
"""

from __future__ import annotations

from typing import Any

import torch

from .easycache import EasyCache, check_count, check_real, check_reuse, mean_abs


def subsampled(x: torch.Tensor, factor: int) -> torch.Tensor:
    return x[..., ::factor, ::factor] if factor > 1 and x.dim() >= 3 else x


class LazyCache(EasyCache):
    """LazyCache, the policy (module docstring).

    Args:
        threshold: the bound on the summed estimated relative output change (ComfyUI's reuse_threshold, 0.2).
        start_percent, end_percent: the fraction of the steps where caching starts and stops (0.15, 0.95).
        subsample: the stride of the grid the changes are measured on (8).
        reuse: ``"residual"`` (ComfyUI's rule) or ``"output"``.
    """

    name = "lazycache"

    def __init__(self, threshold: float = 0.2, start_percent: float = 0.15, end_percent: float = 0.95,
                 subsample: int = 8, reuse: str = "residual") -> None:
        self.start_percent = check_real("LazyCache", "start_percent", start_percent, 0.0, 1.0)
        self.end_percent = check_real("LazyCache", "end_percent", end_percent, 0.0, 1.0)
        if self.end_percent < self.start_percent:
            raise ValueError(f"LazyCache: end_percent ({end_percent}) must not be below start_percent ({start_percent}).")
        self.subsample = check_count("LazyCache", "subsample", subsample, 1)
        super().__init__(threshold=check_real("LazyCache", "threshold", threshold, 0.0), warmup=1,
                         reuse=check_reuse("LazyCache", reuse))

    def params(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "start_percent": self.start_percent, "end_percent": self.end_percent,
                "subsample": self.subsample, "reuse": self.reuse}

    def reset_state(self) -> None:
        super().reset_state()
        self._dx: float | None = None  # the input change measured at this step, for k after a computed step

    def active(self, step: int) -> bool:
        frac = step / self.num_steps
        return self.start_percent <= frac < self.end_percent and step < self.num_steps - 1

    def should_compute(self, step: int, latents: torch.Tensor | None = None) -> bool:
        self._check_step(step)
        self._err, self._dx = None, None
        if latents is not None:
            self.late_input(step, latents)
        x = self.inputs.get(step)
        if not self.active(step) or step == 0:
            return True
        if x is not None and self.last_x is not None and x.shape == self.last_x.shape:
            self._dx = mean_abs(subsampled(x, self.subsample) - subsampled(self.last_x, self.subsample))
        return self.accumulate(self._dx)

    def observe(self, step: int, output: torch.Tensor, computed: bool) -> None:
        self._log(step, computed, err=self._err)
        if not computed:
            return
        if self._dx is None and self.active(step) and step > 0:  # the hook shows x_t only now (late_input)
            x = self.inputs.get(step)
            if x is not None and self.last_x is not None and x.shape == self.last_x.shape:
                self._dx = mean_abs(subsampled(x, self.subsample) - subsampled(self.last_x, self.subsample))
        if self._dx is not None and self.last_out is not None and output.shape == self.last_out.shape:
            dy = mean_abs(subsampled(output, self.subsample) - subsampled(self.last_out, self.subsample))
            self.rate = dy / self._dx if self._dx > 0 else self.rate
        self.last_out, self.last_x = output.detach(), self.inputs.get(step)
        self.main_stream.record(step, output)
