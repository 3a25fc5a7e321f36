"""ETC+'s output stream: one denoiser call's last two real outputs, and its estimate of a skipped step from them."""

from __future__ import annotations

import math
from typing import Any

import torch

from ..base import OutputStream, is_finite


class ETCPlusStream(OutputStream):
    """One denoiser call's last two real outputs; estimates with the policy's (an ``ETCPlus``) gains for (c', c, t)."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.last: torch.Tensor | None = None
        self.prev: torch.Tensor | None = None
        self.last_real: int | None = None
        self.prev_real = -1

    def record(self, step: int, output: torch.Tensor) -> None:
        if self.last_real == step:  # a second record of the same step (pipelines that re-run a branch)
            self.last = output
            return
        self.prev, self.prev_real = self.last, (-1 if self.last_real is None else self.last_real)
        self.last, self.last_real = output, step

    def estimate(self, step: int) -> torch.Tensor | None:
        if self.last is None or self.last_real is None:
            return None
        g, k = self.policy.gains(self.prev_real if self.prev is not None else -1, self.last_real, step)
        est = self.last if g == 0.0 else self.last * (1.0 + g)
        if k != 0.0 and self.prev is not None:
            est = est + k * (self.last - self.prev)
        return est

    def trend_share(self, g: float, k: float, output: torch.Tensor) -> float | None:
        """How much of the trend ``k·(last - prev)`` the real ``output`` carried beyond ``(1 + g)·last``: the
        least-squares coefficient per sample, the least over the batch; None without a trend to weigh."""
        if self.last is None or self.prev is None or k == 0.0 or output.shape != self.last.shape:
            return None
        trend = (k * (self.last - self.prev)).reshape(output.shape[0], -1).double()
        moved = (output - (1.0 + g) * self.last).reshape(output.shape[0], -1).double()
        norm = (trend * trend).sum(1)
        share = float(((moved * trend).sum(1) / norm.clamp_min(1e-300)).min())
        return share if bool((norm > 0).all()) and math.isfinite(share) else None

    def predict(self, step: int) -> torch.Tensor | None:
        if self.last_real != self.policy.last_real:
            return None  # a branch that missed the policy's last real step must run
        est = self.estimate(step)
        return est if est is not None and is_finite(est) else None


__all__ = ["ETCPlusStream"]
