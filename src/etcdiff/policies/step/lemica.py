"""LeMiCa (NeurIPS 2025, UnicomAI/LeMiCa, MIT): a fixed set of computed steps per call budget, found offline as a
lexicographic-minimax path over a graph of steps.

The graph: nodes are the steps 0..N-1; an edge i -> j (i < j) means "compute at i, predict the steps i+1..j-1,
compute at j" and weighs the error that this one gap causes. A run of budget B is a path 0 -> N-1 through B nodes.
LeMiCa picks the path whose *largest* edge weight is smallest, ties broken by the next largest, and so on
(the lexicographic order of the weights sorted from large to small): no single gap may carry a large error. The
search (:func:`search_leximax`) is a dynamic programme over (node, nodes used) keeping the best sorted weight
vector; this is exact because adding the same edge to two paths keeps their lexicographic order.

Faithful: the graph, the lexicographic-minimax criterion, one schedule per budget, a plain reuse predictor
(``predictor="reuse"``; LeMiCa reuses the transformer's residual, the step interface the whole output), the first
and last steps computed. Ours: the edge weights. LeMiCa measures the error of the final image for each cached
gap with extra model runs (their search code is not released; a fork publishes only the FLUX schedules). We price
an edge from the full calibration runs alone, with no extra model call: the predictor runs along the gap from
the true history up to i, and each skipped step's output error is carried to the final latents by the solver's
own linear weights (``etc_plus.fit.solver_weights``: a least-squares fit of x_{t+1} = a_t x_t + b_t eps_t on the
recorded runs). The weight is the RMS of the summed carried errors over the final latents' RMS, averaged over the
calibration samples. The ``predictor`` setting lets the searched schedule drive other step predictors, each priced
with its own edge weights: ``"linear"`` (the line through the last two real outputs, along the step index) and ``"etc"`` (ETC's recursive trend,
its window set by the schedule's gap instead of ETC's error rule).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from .base import OutputStream, StepPolicy, is_finite
from .etc import TrendState
from .etc_plus.fit import flat_items, solver_weights
from ..settings_file import fitted
from ..trajectory import Trajectory

PREDICTORS = ("reuse", "linear", "etc")
ETC_ALPHA = 0.5  # ETC's default trend weight


class ScheduleStream(OutputStream):
    """One denoiser call's estimate on the skipped steps of a fixed schedule; never ``None`` once an output was
    recorded (a predictor that lacks history falls back to reuse), so a run never exceeds its budget."""

    def __init__(self, predictor: str, gap: Callable[[int], int]) -> None:
        self.predictor, self.gap = predictor, gap
        self.real: list[tuple[int, torch.Tensor]] = []  # the last two real outputs and their steps
        self.last: torch.Tensor | None = None  # the last output used, real or estimated
        self.trend = TrendState(ETC_ALPHA)

    def record(self, step: int, output: torch.Tensor) -> None:
        self.last = output
        self.real = [*self.real[-1:], (step, output)]
        if self.predictor == "etc":
            self.trend.update(output)

    def predict(self, step: int) -> torch.Tensor | None:
        if self.last is None:
            return None
        if self.predictor == "linear" and len(self.real) == 2 and self.real[0][1].shape == self.real[1][1].shape:
            (a, prev), (b, last) = self.real
            est = last + (step - b) / (b - a) * (last - prev)  # the line through the last two real outputs
        elif self.predictor == "etc" and self.trend.d is not None:
            est = self.trend.estimate(max(self.gap(step), 1))
        else:
            return self.last
        return est if is_finite(est) else self.last

    def use(self, step: int, estimate: torch.Tensor) -> None:
        self.last = estimate
        self.trend.pre = estimate


def search_leximax(cost: Sequence[Sequence[float | None]], budget: int) -> list[int]:
    """The path 0 = c_1 < ... < c_B = N-1 through exactly ``budget`` steps whose edge weights cost[c_k][c_k+1],
    sorted from large to small, are lexicographically smallest. ``None`` or non-finite entries are no edge; ties
    go to the earlier predecessor."""
    n = len(cost)
    if n < 1 or any(len(r) != n for r in cost):
        raise ValueError(f"search_leximax: cost must be a square N x N matrix, got {n} rows.")
    if isinstance(budget, bool) or not isinstance(budget, int) or not min(2, n) <= budget <= n:
        raise ValueError(f"search_leximax: budget must be an integer from {min(2, n)} to {n}, got {budget!r}.")
    if n == 1:
        return [0]

    def w(a: int, b: int) -> float | None:
        c = cost[a][b]
        return None if c is None or not math.isfinite(float(c)) else float(c)

    best: list[dict[int, tuple[tuple[float, ...], int]]] = [dict() for _ in range(budget + 1)]
    best[1][0] = ((), -1)
    for c in range(2, budget + 1):
        for b in range(c - 1, n):
            if c == budget and b != n - 1:
                continue
            for a, (vec, _) in best[c - 1].items():
                weight = w(a, b) if a < b else None
                if weight is None:
                    continue
                cand = tuple(sorted((*vec, weight), reverse=True))
                if b not in best[c] or cand < best[c][b][0]:
                    best[c][b] = (cand, a)
    if n - 1 not in best[budget]:
        raise ValueError(f"search_leximax: no path from step 0 to step {n - 1} through {budget} steps has finite weights.")
    path, b = [n - 1], n - 1
    for c in range(budget, 1, -1):
        b = best[c][b][1]
        path.append(b)
    return path[::-1]


@dataclass
class LeMiCaProfile:
    """The edge weights of one model and step count, per predictor (``costs[p][i][j]``, ``None`` where j <= i)."""

    num_steps: int
    costs: dict[str, list[list[float | None]]] = field(default_factory=dict)
    num_trajectories: int = 0

    def __post_init__(self) -> None:
        n = self.num_steps
        for p, m in self.costs.items():
            if p not in PREDICTORS or len(m) != n or any(len(r) != n for r in m):
                raise ValueError(f"LeMiCaProfile: costs[{p!r}] must be an {n} x {n} matrix of a predictor in {PREDICTORS}.")

    def schedule(self, calls: int, predictor: str = "reuse") -> list[int]:
        if predictor not in self.costs:
            raise ValueError(f"LeMiCa: the profile has no edge weights for predictor {predictor!r} (it has "
                             f"{', '.join(self.costs)}); calibrate again with `etcdiff calibrate --method lemica`.")
        return search_leximax(self.costs[predictor], max(min(calls, self.num_steps), min(2, self.num_steps)))

    def to_dict(self) -> dict[str, Any]:
        costs = {p: [[None if v is None else float(f"{v:.6g}") for v in r] for r in m] for p, m in self.costs.items()}
        return {"num_steps": self.num_steps, "costs": costs, "num_trajectories": self.num_trajectories}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LeMiCaProfile":
        try:
            return cls(int(data["num_steps"]),
                       {p: [[None if v is None else float(v) for v in r] for r in m] for p, m in data["costs"].items()},
                       int(data.get("num_trajectories", 0)))
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"LeMiCaProfile.from_dict: not a LeMiCa profile ({e!r}).") from None


def fit_lemica(trajectories: Sequence[Trajectory], predictors: Sequence[str] = PREDICTORS) -> LeMiCaProfile:
    """Edge weights from full calibration runs (module docstring), for each predictor in ``predictors``."""
    if not isinstance(trajectories, (list, tuple)) or not trajectories:
        raise ValueError("fit_lemica: give a non-empty list of recorded full-step trajectories (record_pipeline).")
    if not all(isinstance(tr, Trajectory) for tr in trajectories):
        raise ValueError("fit_lemica: every item must be a recorded Trajectory (record_pipeline(...)[0]).")
    n = trajectories[0].num_steps
    for p, tr in enumerate(trajectories):
        if tr.num_steps != n or len(tr.inputs) != n or tr.final is None:
            raise ValueError(f"fit_lemica: trajectory {p} must have {n} outputs, {n} inputs and its final latents "
                             "(record all calibration runs with the same num_inference_steps).")
    if n < 2:
        raise ValueError(f"fit_lemica: the trajectories have {n} step(s); at least 2 are needed.")
    for p in predictors:
        if p not in PREDICTORS:
            raise ValueError(f"fit_lemica: unknown predictor {p!r}; choose from {', '.join(PREDICTORS)}.")
    outs = torch.stack([torch.cat([flat_items(tr.outputs[t]).double() for tr in trajectories]) for t in range(n)])
    ins = torch.stack([torch.cat([flat_items(tr.inputs[t]).double() for tr in trajectories]) for t in range(n)])
    finals = torch.cat([flat_items(tr.final).double() for tr in trajectories])
    weights = solver_weights(ins, outs, finals)
    scale = finals.pow(2).mean(1).sqrt().clamp_min(1e-12)  # per item

    def weight(carried: torch.Tensor) -> float:
        return float((carried.pow(2).mean(1).sqrt() / scale).mean())

    costs: dict[str, list[list[float | None]]] = {}
    for p in predictors:
        m: list[list[float | None]] = [[None] * n for _ in range(n)]
        for i in range(n - 1):
            m[i][i + 1] = 0.0
            ends = [None] if p != "etc" else list(range(i + 2, n))  # the etc estimate depends on the gap length
            for end in ends:
                stream = ScheduleStream(p, (lambda s, g=(end or 0) - i - 1: g))
                for t in range(i + 1):
                    stream.record(t, outs[t])
                carried = torch.zeros_like(outs[0])
                for k in range(i + 1, n - 1 if end is None else end):
                    est = stream.predict(k)
                    carried = carried + weights[k] * (est - outs[k])
                    stream.use(k, est)
                    if end is None:
                        m[i][k + 1] = weight(carried)
                if end is not None:
                    m[i][end] = weight(carried)
        costs[p] = m
    return LeMiCaProfile(n, costs, len(trajectories))


class LeMiCa(StepPolicy):
    """LeMiCa, the policy: the model runs exactly on the searched steps (module docstring).

    Args:
        calls: the budget B, model calls per generation (per guidance branch); its schedule is searched in
            ``profile``. A run never makes more than B calls.
        predictor: ``"reuse"`` (LeMiCa's), ``"linear"`` or ``"etc"``: what the skipped steps get.
        profile: a :class:`LeMiCaProfile` from :func:`fit_lemica` (``etcdiff calibrate --method lemica``), its
            ``to_dict()`` or a JSON path.
        computed: an explicit list of computed steps instead (e.g. a published schedule); first and last included.
    """

    name, profile_per_step_count = "lemica", True  # a run at another step count needs a calibration made there

    def __init__(self, calls: int | None = None, predictor: str = "reuse", *,
                 profile: LeMiCaProfile | dict[str, Any] | str | os.PathLike | None = None,
                 computed: Sequence[int] | None = None) -> None:
        super().__init__()
        if calls is not None and (isinstance(calls, bool) or not isinstance(calls, int) or calls < 2):
            raise ValueError(f"LeMiCa: calls must be an integer >= 2 (model calls per generation), got {calls!r}.")
        if predictor not in PREDICTORS:
            raise ValueError(f"LeMiCa: predictor must be one of {', '.join(PREDICTORS)}, got {predictor!r}.")
        self.predictor = predictor
        if (computed is None) == (profile is None):
            raise ValueError("LeMiCa: give either profile= (from `etcdiff calibrate --method lemica --set calls=B`) "
                             "with calls=B, or an explicit computed= list of steps; not both, not neither.")
        if profile is not None:
            profile = fitted(profile, LeMiCaProfile, "profile", "lemica", "LeMiCa", "a LeMiCaProfile")
            if calls is None:
                raise ValueError("LeMiCa: give calls=B, the model calls per generation.")
            computed = profile.schedule(calls, predictor)
            self.schedule_steps = profile.num_steps
        else:
            computed = list(computed)
            if any(isinstance(s, bool) or not isinstance(s, int) for s in computed) or not computed \
                    or computed != sorted(set(computed)) or computed[0] != 0:
                raise ValueError(f"LeMiCa: computed must be increasing distinct step indices starting at 0, got {computed!r}.")
            if calls is not None and calls < len(computed):
                raise ValueError(f"LeMiCa: computed has {len(computed)} steps but calls={calls}.")
            self.schedule_steps = computed[-1] + 1
        self.computed = list(computed)
        self.calls = len(self.computed)
        self._gaps: list[int] = []

    def params(self) -> dict[str, Any]:
        return {"calls": self.calls, "predictor": self.predictor, "computed": self.computed}

    def begin(self, num_steps: int) -> None:
        if isinstance(num_steps, int) and not isinstance(num_steps, bool) and num_steps != self.schedule_steps:
            raise ValueError(
                f"LeMiCa: the schedule is for {self.schedule_steps} steps but the run has {num_steps}; calibrate at "
                "this step count (`etcdiff calibrate --method lemica --steps N`) or give computed= for it.")
        super().begin(num_steps)

    def reset_state(self) -> None:
        gaps, done = [0] * self.num_steps, set(self.computed)
        for a, b in zip(self.computed, self.computed[1:]):
            for s in range(a + 1, b):
                gaps[s] = b - a - 1
        self._gaps, self._done = gaps, done

    def gap(self, step: int) -> int:
        return self._gaps[step] if 0 <= step < len(self._gaps) else 1

    def new_stream(self) -> ScheduleStream:
        return ScheduleStream(self.predictor, self.gap)

    def should_compute(self, step: int, latents: torch.Tensor | None = None) -> bool:
        self._check_step(step)
        return step in self._done

    def observe(self, step: int, output: torch.Tensor, computed: bool) -> None:
        self._log(step, computed, window=None if computed else self._gaps[step])
        if computed:
            self.main_stream.record(step, output)
        else:
            self.main_stream.use(step, output)
