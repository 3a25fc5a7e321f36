"""Trivial comparison policies: no skipping, and reuse at a fixed interval."""

from __future__ import annotations

from typing import Any

import torch

from .base import StepPolicy
from .numbers import as_int


class NoCache(StepPolicy):
    """Runs the model on every step: the full-step reference, and the hook's overhead baseline."""

    name = "none"

    def should_compute(self, step: int, latents: torch.Tensor | None = None) -> bool:
        self._check_step(step)
        return True


class FixedInterval(StepPolicy):
    """Runs the model on the first ``warmup`` steps, then every ``interval``-th step and on the last step;
    reuses the last real output in between."""

    name = "fixed"

    def __init__(self, interval: int = 2, warmup: int = 1) -> None:
        super().__init__()
        interval = interval if as_int(interval) is None else as_int(interval)
        warmup = warmup if as_int(warmup) is None else as_int(warmup)
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f"FixedInterval: interval must be an integer >= 1, got {interval!r}.")
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 1:
            raise ValueError(f"FixedInterval: warmup must be an integer >= 1 (step 0 has nothing to reuse), got {warmup!r}.")
        self.interval = interval
        self.warmup = warmup

    def params(self) -> dict[str, Any]:
        return {"interval": self.interval, "warmup": self.warmup}

    def should_compute(self, step: int, latents: torch.Tensor | None = None) -> bool:
        self._check_step(step)
        return step < self.warmup or step == self.num_steps - 1 or (step - self.warmup) % self.interval == 0
