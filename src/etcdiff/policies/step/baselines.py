"""Trivial comparison policies: no skipping, reuse at a fixed interval, and naive linear extrapolation."""

from __future__ import annotations

from typing import Any

import torch

from .base import OutputStream, StepPolicy
from ..._numbers import as_int


class NoCache(StepPolicy):
    """Runs the model on every step: the full-step reference, and the hook's overhead baseline."""

    name = "none"

    def should_compute(self, step: int, latents: torch.Tensor | None = None) -> bool:
        self._check_step(step)
        return True


class SkipSteps(StepPolicy):
    """Runs the model on every step except ``skip``, where the last real output is reused (step 0 always runs).
    A probe for calibration: how much one reused step moves the final result."""

    name = "skip-steps"

    def __init__(self, skip: tuple[int, ...] | list[int] | set[int] = ()) -> None:
        super().__init__()
        if any(isinstance(t, bool) or not isinstance(t, int) or t < 1 for t in skip):
            raise ValueError(f"SkipSteps: skip must hold step indices >= 1 (step 0 has nothing to reuse), got {skip!r}.")
        self.skip = frozenset(skip)

    def params(self) -> dict[str, Any]:
        return {"skip": sorted(self.skip)}

    def should_compute(self, step: int, latents: torch.Tensor | None = None) -> bool:
        self._check_step(step)
        return step not in self.skip


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


class LinearStream(OutputStream):
    """Extrapolates the last two outputs used (real or estimated): ``2·last − prev``."""

    def __init__(self) -> None:
        self.last: torch.Tensor | None = None
        self.prev: torch.Tensor | None = None

    def record(self, step: int, output: torch.Tensor) -> None:
        self.prev, self.last = self.last, output

    def predict(self, step: int) -> torch.Tensor | None:
        if self.last is None or self.prev is None:
            return None
        return 2 * self.last - self.prev

    def use(self, step: int, estimate: torch.Tensor) -> None:
        self.record(step, estimate)


class LinearExtrapolation(FixedInterval):
    """Naive linear extrapolation (a comparison baseline): the model runs on the first ``warmup`` steps, every
    ``interval``-th step after them and the last step; a skipped step gets ``2·eps_last − eps_prev`` from the two
    outputs used before it. With ``interval=2`` this is "extrapolate every other step"."""

    name = "linear"

    def __init__(self, interval: int = 2, warmup: int = 2) -> None:
        super().__init__(interval, warmup)
        if self.warmup < 2:
            raise ValueError(f"LinearExtrapolation: warmup must be >= 2 (two outputs make a line), got {warmup!r}.")

    def new_stream(self) -> LinearStream:
        return LinearStream()

    def observe(self, step: int, output: torch.Tensor, computed: bool) -> None:
        super().observe(step, output, computed)
        if not computed:
            self.main_stream.use(step, output)
