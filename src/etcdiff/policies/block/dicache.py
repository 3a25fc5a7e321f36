"""DiCache (Bu et al., ICLR 2026): a shallow probe decides online; skipped calls extrapolate the stack's residual.

Re-implemented from the paper's description (the authors' code has no licence). Per CFG branch, with N steps:

* **Retention steps** (``step <= int(retention_ratio * N)``) and the last step run the whole stack.
* **Every other step: probe first.** The first ``probe_depth`` blocks run; with ``p_t`` the probe's output,
  ``delta_y = mean|p_t - p_prev| / mean|p_prev|`` against the previous call's probe output (computed or not).
  In ``"delta_minus"`` mode the error is ``|delta_y - delta_x|`` with ``delta_x`` the same measure on the stack's
  input. The errors accumulate; the rest of the stack is skipped while the sum stays below ``threshold``;
  otherwise it runs from the probe's output (the probe is not run twice) and the sum is reset.
* **On a skip (trajectory alignment):** with ``R`` the whole stack's residual (output minus input) and ``P`` the
  probe's residual at the last two computed calls, the output is
  ``x + R[-2] + gamma * (R[-1] - R[-2])``, ``gamma = clip(mean|P_now - P[-2]| / mean|P[-1] - P[-2]|, 1, 1.5)``;
  with one computed call so far it is ``x + R[-1]``.

Measures are over the whole tensor (the batch shares one decision), as published. Ours: the state is per CFG
branch (the published code keeps one global state), the same gamma extrapolates every stream the blocks carry,
and ``gamma`` is 1 when the two stored probe residuals are equal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from .base import Stage, Streams, rel_l1, same_shapes, streams_minus

#: The published demo settings per error mode: (threshold, retention_ratio).
DICACHE_PRESETS = {"delta_y": (0.4, 0.2), "delta_minus": (0.08, 0.0)}


@dataclass
class DiCacheState:
    """One branch: the last probe output and stack input, the last two residuals, the accumulated error."""

    prev_probe: torch.Tensor | None = None
    prev_input: torch.Tensor | None = None
    residuals: list[Streams] = field(default_factory=list)  # whole-stack residuals, last two computed calls
    probe_residuals: list[torch.Tensor] = field(default_factory=list)
    acc: float = 0.0
    last_err: float | None = None
    gamma: float | None = None


class DiCache:
    """The DiCache rule for the block machinery (a :class:`~etcdiff.policies.block.base.StagedBlockRule`)."""

    name = "dicache"
    needs_signal = False

    def __init__(self, threshold: float = 0.4, probe_depth: int = 1, retention_ratio: float = 0.2,
                 error: str = "delta_y", gamma_max: float = 1.5) -> None:
        threshold = float(threshold)
        if not threshold >= 0.0:
            raise ValueError(f"dicache: threshold must be >= 0, got {threshold!r}.")
        if int(probe_depth) != probe_depth or probe_depth < 1:
            raise ValueError(f"dicache: probe_depth must be a positive integer, got {probe_depth!r}.")
        if not 0.0 <= float(retention_ratio) <= 1.0:
            raise ValueError(f"dicache: retention_ratio must be in [0, 1], got {retention_ratio!r}.")
        if error not in DICACHE_PRESETS:
            raise ValueError(f"dicache: error must be one of {', '.join(DICACHE_PRESETS)}, got {error!r}.")
        if not float(gamma_max) >= 1.0:
            raise ValueError(f"dicache: gamma_max must be >= 1, got {gamma_max!r}.")
        self.threshold = threshold
        self.probe_depth = int(probe_depth)
        self.retention_ratio = float(retention_ratio)
        self.error = error
        self.gamma_max = float(gamma_max)
        self.num_steps = 0

    def begin(self, num_steps: int) -> None:
        if not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"dicache: the number of steps must be a positive integer, got {num_steps!r}.")
        self.num_steps = num_steps

    def new_state(self) -> DiCacheState:
        return DiCacheState()

    def stages(self, list_lengths: Sequence[int]) -> list[Stage]:
        total = sum(list_lengths)
        if total < 1:
            raise ValueError("dicache: the model has no blocks.")
        return [Stage(0, min(self.probe_depth, total), total)]

    def retained(self, step: int) -> bool:
        return step <= int(self.retention_ratio * self.num_steps) or step >= self.num_steps - 1

    def decide_stage(self, state: DiCacheState, stage: int, step: int, start: Streams, probe: Streams) -> bool:
        x, p = start["hidden_states"], probe["hidden_states"]
        prev_probe, prev_input = state.prev_probe, state.prev_input
        state.prev_probe, state.prev_input = p.detach(), x.detach()
        state.last_err = None
        usable = state.residuals and same_shapes(state.residuals[-1], start)
        if self.retained(step) or not usable or prev_probe is None or prev_probe.shape != p.shape:
            state.acc = 0.0
            return True
        err = rel_l1(p, prev_probe)
        if self.error == "delta_minus":
            err = abs(err - rel_l1(x, prev_input))
        state.acc += err
        state.last_err = state.acc
        if state.acc < self.threshold:  # NaN compares False: the stack runs
            return False
        state.acc = 0.0
        return True

    def reuse(self, state: DiCacheState, stage: int, start: Streams, probe: Streams) -> Streams:
        r = state.residuals
        if len(r) < 2:
            state.gamma = None
            return {n: t + r[-1][n] if n in r[-1] else t for n, t in start.items()}
        p_now = (probe["hidden_states"] - start["hidden_states"]).float()
        p1, p2 = state.probe_residuals[-2].float(), state.probe_residuals[-1].float()
        den = float((p2 - p1).abs().mean())
        gamma = 1.0 if den == 0.0 else float((p_now - p1).abs().mean()) / den
        gamma = min(max(gamma, 1.0), self.gamma_max) if gamma == gamma else 1.0
        state.gamma = gamma
        out = {}
        for n, t in start.items():
            if n in r[-1] and n in r[-2]:
                out[n] = t + r[-2][n] + gamma * (r[-1][n] - r[-2][n])
            elif n in r[-1]:
                out[n] = t + r[-1][n]
            else:
                out[n] = t
        return out

    def record(self, state: DiCacheState, stage: int, start: Streams, probe: Streams, end: Streams) -> None:
        res = streams_minus(end, start)
        if state.residuals and not same_shapes(state.residuals[-1], start):
            state.residuals, state.probe_residuals = [], []
        state.residuals = (state.residuals + [res])[-2:]
        state.probe_residuals = (state.probe_residuals + [
            (probe["hidden_states"] - start["hidden_states"]).detach()])[-2:]

    def params(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "probe_depth": self.probe_depth,
                "retention_ratio": self.retention_ratio, "error": self.error, "gamma_max": self.gamma_max}

    def __repr__(self) -> str:
        return (f"DiCache(threshold={self.threshold!r}, probe_depth={self.probe_depth!r}, "
                f"retention_ratio={self.retention_ratio!r}, error={self.error!r})")
