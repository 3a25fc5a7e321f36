"""MeanCache (Gao et al., ICLR 2026): a fixed schedule per call budget, and an average-velocity estimate of the
denoiser's output on the steps it skips. Flow-matching samplers (velocity output; on multistep ones see docs).

Run time. The sampler moves by x_{i+1} = x_i + (sigma_{i+1} - sigma_i)·v_i. A schedule names the steps where the
denoiser runs (always the first and the last) and, for each gap between two of them, a span K. On a skipped step i
the average velocity over the last K steps is read off the trajectory, u = (x_i - x_{i-K}) / (sigma_i - sigma_{i-K});
its departure from the velocity consumed K steps back is J = (v_{i-K} - u) / (sigma_i - sigma_{i-K}); the estimate
is v_i = v_{i-1} - (sigma_{i+1} - sigma_i)·J. The v_j are the velocities the sampler consumed, real or estimated.
K = 1 is plain reuse (J vanishes under an exact Euler step; we return v_{i-1} as it is). There is no online
decision: a run makes exactly as many model calls as the schedule has computed steps.

Guidance branches. Both branches skip together (one decision per step). Each denoiser call keeps its own history
of v and shares the history of x, so each branch estimates its own output. The estimate is affine in the v's with
coefficients fixed by x and sigma; guidance that combines the branches with weights summing to one
(u + s·(c - u)) therefore combines the branch estimates into exactly the estimate on the guided velocity, which is
what the authors' loop computes. A non-affine combination (a norm rescale after guidance) makes ours an
approximation of theirs.

Schedule search: ours. The paper's "peak-suppressed shortest path" is not in the authors' release (it ships fixed
schedules for Qwen-Image and Z-Image), so :func:`fit_meancache` and :func:`search_schedule` rebuild it from its
description. On full calibration trajectories an edge a -> b (compute at a and b, estimate between) costs
C = the mean over its skipped steps of mean|v_true - v_est|, where the estimate runs along the gap from the true
history up to a; C is averaged over the trajectories, and each edge takes the span K in 1..max_span with the
lowest C (the released schedules use K = 1 on most gaps and K = 2..5 on short early gaps and near the end). The
DP minimises sum C^gamma over paths 0 -> N-1 through exactly B computed steps, so a run makes exactly B calls.
On a run of a multistep flow solver (UniPC, DPM-Solver++ on flow sigmas) the estimated path keeps the solver's own
departure from the Euler step on the recorded run: x_{i+1} = x_i + (s_{i+1} - s_i)·v_est + (x*_{i+1} - x*_i -
(s_{i+1} - s_i)·v*_i), stars the recorded run; on an Euler run the bracket is 0. Fit and run accept the same
schedulers (:mod:`etcdiff.policies.flow_solvers`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from .base import OutputStream, StepPolicy, is_finite
from ..flow_solvers import FLOW_SOLVERS_HINT, flow_sigmas_problem, flow_solver_problem
from ..settings_file import fitted
from ..trajectory import Trajectory, check_step_count

DEFAULT_GAMMA = 2.0
DEFAULT_MAX_SPAN = 6  # the largest span in the authors' released schedules


def _check_span_fits(computed: Sequence[int], spans: Sequence[int]) -> None:
    for a, b, k in zip(computed, computed[1:], spans):
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"MeanCacheSchedule: the span of gap {a}->{b} must be an integer >= 1, got {k!r}.")
        if b > a + 1 and k > a + 1:
            raise ValueError(
                f"MeanCacheSchedule: gap {a}->{b} has span {k} but step {a + 1} has only {a + 1} steps before it; "
                f"use a span <= {a + 1}."
            )


@dataclass
class MeanCacheSchedule:
    """The computed steps of a run of ``num_steps`` steps (first and last included) and one span per gap."""

    num_steps: int
    computed: list[int]
    spans: list[int]
    cost: float | None = None  # sum C^gamma of the search, where it came from one

    def __post_init__(self) -> None:
        n, c = self.num_steps, self.computed
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"MeanCacheSchedule: num_steps must be a positive integer, got {n!r}.")
        if not c or c != sorted(set(c)) or c[0] != 0 or c[-1] != n - 1:
            raise ValueError(
                f"MeanCacheSchedule: computed must be increasing distinct steps from 0 to {n - 1} (the first and the "
                f"last step always run), got {c!r}."
            )
        if len(self.spans) != len(c) - 1:
            raise ValueError(f"MeanCacheSchedule: give one span per gap ({len(c) - 1}), got {len(self.spans)}.")
        _check_span_fits(c, self.spans)

    @property
    def calls(self) -> int:
        return len(self.computed)

    def step_spans(self) -> list[int | None]:
        """Per step: the span K used there, ``None`` where the denoiser runs."""
        out: list[int | None] = [None] * self.num_steps
        for a, b, k in zip(self.computed, self.computed[1:], self.spans):
            for i in range(a + 1, b):
                out[i] = k
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"num_steps": self.num_steps, "computed": list(self.computed), "spans": list(self.spans), "cost": self.cost}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MeanCacheSchedule":
        try:
            return cls(int(data["num_steps"]), [int(v) for v in data["computed"]], [int(v) for v in data["spans"]],
                       None if data.get("cost") is None else float(data["cost"]))
        except (KeyError, TypeError) as e:
            raise ValueError(f"MeanCacheSchedule.from_dict: not a MeanCache schedule ({e!r}).") from None


def search_schedule(cost: Sequence[Sequence[float | None]] | torch.Tensor, budget: int, gamma: float = DEFAULT_GAMMA) -> list[int]:
    """The peak-suppressed shortest path: the computed steps 0 = c_1 < ... < c_B = N-1 (exactly ``budget`` of
    them) minimising sum_j cost[c_j][c_{j+1}]^gamma. ``cost`` is N x N; entries with b <= a are ignored and a
    ``None``, NaN or infinite entry is no edge. Ties go to the earlier predecessor."""
    rows = cost.tolist() if isinstance(cost, torch.Tensor) else [list(r) for r in cost]
    n = len(rows)
    if n < 1 or any(len(r) != n for r in rows):
        raise ValueError(f"search_schedule: cost must be a square N x N matrix, got {n} rows of lengths {sorted({len(r) for r in rows})}.")
    if isinstance(budget, bool) or not isinstance(budget, int) or not (min(2, n) <= budget <= n):
        raise ValueError(f"search_schedule: budget must be an integer from {min(2, n)} to {n} (the first and last step run), got {budget!r}.")
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not math.isfinite(gamma) or gamma <= 0:
        raise ValueError(f"search_schedule: gamma must be a finite number > 0, got {gamma!r}.")
    if n == 1:
        return [0]
    inf = math.inf

    def w(a: int, b: int) -> float:
        c = rows[a][b]
        if c is None or not math.isfinite(float(c)):
            return inf
        if c < 0:
            raise ValueError(f"search_schedule: cost[{a}][{b}] = {c} is negative; edge costs must be >= 0.")
        return float(c) ** gamma

    weights = [[w(a, b) if b > a else inf for b in range(n)] for a in range(n)]
    best = [[inf] * n for _ in range(budget + 1)]  # best[c][b]: cheapest path 0 -> b through c nodes
    back = [[-1] * n for _ in range(budget + 1)]
    best[1][0] = 0.0
    for c in range(2, budget + 1):
        prev, cur, bk = best[c - 1], best[c], back[c]
        for b in range(c - 1, n):
            for a in range(c - 2, b):
                v = prev[a] + weights[a][b]
                if v < cur[b]:
                    cur[b], bk[b] = v, a
    if not math.isfinite(best[budget][n - 1]):
        raise ValueError(f"search_schedule: no path from step 0 to step {n - 1} through {budget} steps has finite cost.")
    path, b = [n - 1], n - 1
    for c in range(budget, 1, -1):
        b = back[c][b]
        path.append(b)
    return path[::-1]


@dataclass
class MeanCacheProfile:
    """What :func:`fit_meancache` learns for one model and step count (JSON-serialisable).

    ``cost[a][b]`` and ``span[a][b]`` are the calibrated edge costs and best spans (``None`` where b <= a or the
    cost is not finite); ``schedules`` the searched schedules by budget. :meth:`schedule` searches any other budget
    from the stored costs.
    """

    num_steps: int
    gamma: float
    max_span: int
    cost: list[list[float | None]]
    span: list[list[int | None]]
    schedules: dict[int, MeanCacheSchedule] = field(default_factory=dict)
    num_trajectories: int = 0

    def __post_init__(self) -> None:
        n = self.num_steps
        if len(self.cost) != n or len(self.span) != n or any(len(r) != n for r in (*self.cost, *self.span)):
            raise ValueError(f"MeanCacheProfile: cost and span must be {n} x {n} matrices.")
        for b, s in self.schedules.items():
            if s.num_steps != n or s.calls != b:
                raise ValueError(f"MeanCacheProfile: the schedule stored for budget {b} has {s.calls} calls over {s.num_steps} steps.")

    def schedule(self, calls: int) -> MeanCacheSchedule:
        """The schedule for ``calls`` model calls per generation (stored, or searched from the edge costs)."""
        if calls in self.schedules:
            return self.schedules[calls]
        computed = search_schedule(self.cost, calls, self.gamma)
        spans = [self.span[a][b] or 1 for a, b in zip(computed, computed[1:])]
        total = sum(float(self.cost[a][b]) ** self.gamma for a, b in zip(computed, computed[1:]))
        return MeanCacheSchedule(self.num_steps, computed, spans, total)

    def to_dict(self) -> dict[str, Any]:
        return {"num_steps": self.num_steps, "gamma": self.gamma, "max_span": self.max_span, "cost": self.cost,
                "span": self.span, "schedules": {str(b): s.to_dict() for b, s in self.schedules.items()},
                "num_trajectories": self.num_trajectories}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MeanCacheProfile":
        try:
            return cls(
                num_steps=int(data["num_steps"]), gamma=float(data["gamma"]), max_span=int(data["max_span"]),
                cost=[[None if v is None else float(v) for v in r] for r in data["cost"]],
                span=[[None if v is None else int(v) for v in r] for r in data["span"]],
                schedules={int(b): MeanCacheSchedule.from_dict(s) for b, s in data.get("schedules", {}).items()},
                num_trajectories=int(data.get("num_trajectories", 0)),
            )
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"MeanCacheProfile.from_dict: not a MeanCache profile ({e!r}).") from None


def scheduler_refusal(problem: str, doing: str) -> str:
    """The one-line refusal of MeanCache on a scheduler (``problem`` from :mod:`etcdiff.policies.flow_solvers`)."""
    return (f"meancache {doing} only on flow-matching schedulers ({FLOW_SOLVERS_HINT}), and {problem}; set one "
            "of those as the scheduler, or use another step method (etc, etc-plus and ertacache run on any scheduler).")


def _check_trajectories(trajectories: Sequence["Trajectory"]) -> tuple[int, list[list[float]], list[bool]]:
    """Step count, sigmas (N + 1 each) and, per run, whether it is an exact Euler run. A run's recorded scheduler
    must pass the rule the run time applies; a run without one (built by hand) must be Euler steps."""
    if not isinstance(trajectories, (list, tuple)) or not trajectories:
        raise ValueError("fit_meancache: give a non-empty list of recorded full-step trajectories (record_pipeline).")
    n = trajectories[0].num_steps
    if n < 2:
        raise ValueError(f"fit_meancache: the trajectories have {n} step(s); at least 2 are needed.")
    all_sigmas, euler = [], []
    for p, tr in enumerate(trajectories):
        check_step_count(tr, p, n, "fit_meancache")
        solver = tr.solver if tr.solver is not None else tr.scheduler
        name = "the run" if solver is None else _solver_name(solver)
        s = [] if tr.sigmas is None else [float(v) for v in torch.as_tensor(tr.sigmas).flatten()]
        s = s + [0.0] * (n + 1 - len(s)) if len(s) == n else s
        problem = (None if solver is None else flow_solver_problem(solver)) or flow_sigmas_problem(name, s)
        if problem is not None:
            raise ValueError(scheduler_refusal(problem, "calibrates"))
        exact = True
        for t in range(n - 1):  # an Euler velocity step?
            step = tr.inputs[t + 1].double() - tr.inputs[t].double()
            pred = (s[t + 1] - s[t]) * tr.outputs[t].double()
            exact = exact and float((step - pred).norm()) <= 1e-3 * float(step.norm()) + 1e-6
        if not exact and solver is None:
            raise ValueError(
                f"fit_meancache: trajectory {p} does not follow x_(t+1) = x_t + (sigma_(t+1) - sigma_t)·v_t and names "
                "no scheduler; record it with record_pipeline or etcdiff.calibrate_policy (they note the scheduler), "
                "on a velocity-output flow-matching Euler or multistep flow solver."
            )
        all_sigmas.append(s[: n + 1])
        euler.append(exact)
    return n, all_sigmas, euler


def _solver_name(solver: Any) -> str:
    return str(solver.get("class")) if isinstance(solver, dict) else type(solver).__name__


def average_velocity_estimate(x_i: torch.Tensor, x_back: torch.Tensor, v_prev: torch.Tensor, v_back: torch.Tensor,
                              s_back: float, s_i: float, s_next: float) -> torch.Tensor:
    """v_i = v_{i-1} - (s_next - s_i)·J with J = (v_{i-K} - u) / (s_i - s_back), u = (x_i - x_{i-K}) / (s_i - s_back)."""
    span = s_i - s_back
    u = (x_i - x_back) / span
    if u.shape != v_back.shape:  # batched guidance: the denoiser saw cat([x] * k)
        k = v_back.shape[0] // max(u.shape[0], 1)
        if u.dim() == 0 or k * u.shape[0] != v_back.shape[0] or u.shape[1:] != v_back.shape[1:]:
            raise ValueError(
                f"MeanCache: the denoiser output has shape {tuple(v_back.shape)} but the latents have shape "
                f"{tuple(u.shape)}; MeanCache needs velocities in the latents' layout."
            )
        u = torch.cat([u] * k)
    return v_prev - (s_next - s_i) * ((v_back - u) / span)


def fit_meancache(trajectories: list["Trajectory"], budgets: Sequence[int], gamma: float = DEFAULT_GAMMA,
                  max_span: int = DEFAULT_MAX_SPAN) -> MeanCacheProfile:
    """Edge costs and spans from full calibration trajectories, and the schedule for every budget in ``budgets``
    (module docstring). ``trajectories`` are :class:`~etcdiff.policies.trajectory.Trajectory` objects of a
    flow-matching sampler (Euler, or a multistep solver on flow sigmas), all with the same step count."""
    n, sigmas, euler = _check_trajectories(trajectories)
    if isinstance(max_span, bool) or not isinstance(max_span, int) or max_span < 1:
        raise ValueError(f"fit_meancache: max_span must be an integer >= 1, got {max_span!r}.")
    budgets = [budgets] if isinstance(budgets, int) else list(budgets)
    for b in budgets:
        if isinstance(b, bool) or not isinstance(b, int) or not (min(2, n) <= b <= n):
            raise ValueError(f"fit_meancache: each budget must be an integer from {min(2, n)} to {n}, got {b!r}.")
    err_sum: dict[tuple[int, int, int], float] = {}  # (a, b, K) -> sum over trajectories of C
    for tr, s, exact in zip(trajectories, sigmas, euler):
        xs = [x.double() for x in tr.inputs]
        vs = [v.double() for v in tr.outputs]
        # a multistep solver's own step on the recorded run, beyond the Euler step (none on an Euler run)
        drift = [None if exact else xs[i + 1] - xs[i] - (s[i + 1] - s[i]) * vs[i] for i in range(n - 1)]
        for a in range(n - 2):
            for k in range(1, min(max_span, a + 1) + 1):
                x_hist, v_hist = {j: xs[j] for j in range(max(a - k, 0), a + 1)}, {j: vs[j] for j in range(max(a - k, 0), a + 1)}
                x_hist[a + 1] = xs[a + 1]
                total = 0.0
                for i in range(a + 1, n - 1):  # edge a -> i+1 has skipped steps a+1..i
                    if math.isfinite(total):
                        est = v_hist[i - 1] if k == 1 else average_velocity_estimate(
                            x_hist[i], x_hist[i - k], v_hist[i - 1], v_hist[i - k], s[i - k], s[i], s[i + 1])
                        e = float((est - vs[i]).abs().mean())
                        total = total + e if math.isfinite(e) else math.inf
                        v_hist[i], x_hist[i + 1] = est, x_hist[i] + (s[i + 1] - s[i]) * est
                        if drift[i] is not None:
                            x_hist[i + 1] = x_hist[i + 1] + drift[i]
                    key = (a, i + 1, k)
                    err_sum[key] = err_sum.get(key, 0.0) + total / (i - a)
    cost: list[list[float | None]] = [[None] * n for _ in range(n)]
    span: list[list[int | None]] = [[None] * n for _ in range(n)]
    for a in range(n - 1):
        cost[a][a + 1], span[a][a + 1] = 0.0, 1
    for (a, b, k), total in sorted(err_sum.items()):
        c = total / len(trajectories)
        if math.isfinite(c) and (cost[a][b] is None or c < cost[a][b]):
            cost[a][b], span[a][b] = c, k
    profile = MeanCacheProfile(n, float(gamma), max_span, cost, span, {}, len(trajectories))
    profile.schedules = {b: profile.schedule(b) for b in budgets}
    return profile


class MeanStream(OutputStream):
    """One denoiser call's consumed outputs (real ones and its own estimates), for the average-velocity estimate."""

    def __init__(self, policy: "MeanCache") -> None:
        self.policy = policy
        self.v: dict[int, torch.Tensor] = {}

    def record(self, step: int, output: torch.Tensor) -> None:
        self.v[step] = output
        self.policy.prune(self.v, step)

    def predict(self, step: int) -> torch.Tensor | None:
        return self.policy.estimate(step, self.v)

    def use(self, step: int, estimate: torch.Tensor) -> None:
        self.record(step, estimate)  # the estimate enters the history, as a consumed velocity


class MeanCache(StepPolicy):
    """MeanCache, the policy (see the module docstring).

    Args:
        calls: the model calls per generation B; picks the schedule for B from ``profile``.
        schedule: an explicit :class:`MeanCacheSchedule` (or its ``to_dict()``) instead of ``profile``.
        profile: a :class:`MeanCacheProfile` from :func:`fit_meancache`, its ``to_dict()`` or a JSON path.

    The schedule is fitted for one step count (another one raises a ValueError; we do not resample a schedule).
    """

    name, profile_per_step_count = "meancache", True  # a run at another step count needs a calibration made there

    def __init__(self, calls: int | None = None, *, schedule: MeanCacheSchedule | dict[str, Any] | None = None,
                 profile: MeanCacheProfile | dict[str, Any] | str | os.PathLike | None = None) -> None:
        super().__init__()
        if calls is not None and (isinstance(calls, bool) or not isinstance(calls, int) or calls < 1):
            raise ValueError(f"MeanCache: calls must be a positive integer (model calls per generation), got {calls!r}.")
        if (schedule is None) == (profile is None):
            raise ValueError(
                "MeanCache: give either profile= (from fit_meancache or `etcdiff calibrate --method meancache`) with "
                "calls=B, or an explicit schedule=; not both, not neither."
            )
        if profile is not None:
            profile = fitted(profile, MeanCacheProfile, "profile", "meancache", "MeanCache", "a MeanCacheProfile")
            if calls is None:
                raise ValueError(f"MeanCache: give calls=B, the model calls per generation (calibrated: {sorted(profile.schedules)}).")
            schedule = profile.schedule(calls)
        if isinstance(schedule, dict):
            schedule = MeanCacheSchedule.from_dict(schedule)
        if not isinstance(schedule, MeanCacheSchedule):
            raise ValueError(f"MeanCache: schedule must be a MeanCacheSchedule or its to_dict(), got {type(schedule).__name__}.")
        if calls is not None and calls != schedule.calls:
            raise ValueError(f"MeanCache: calls={calls} but the schedule has {schedule.calls} computed steps.")
        self.schedule = schedule
        self._spans = schedule.step_spans()
        self._keep = max(schedule.spans, default=1) + 1
        self.sigmas: list[float] = []

    @property
    def calls(self) -> int:
        return self.schedule.calls

    def params(self) -> dict[str, Any]:
        return {"calls": self.schedule.calls, "schedule_steps": self.schedule.num_steps}

    def begin(self, num_steps: int) -> None:
        if isinstance(num_steps, int) and not isinstance(num_steps, bool) and num_steps != self.schedule.num_steps:
            raise ValueError(f"MeanCache: the schedule was searched for {self.schedule.num_steps} steps but the run has "
                             f"{num_steps}; calibrate at {num_steps} steps: `etcdiff calibrate --method meancache --steps "
                             f"{num_steps}` (a pipeline) or fit_meancache on trajectories recorded at that step count.")
        super().begin(num_steps)

    def budget_refusal(self, step: int) -> str | None:  # a fixed schedule of exactly B calls
        return f"calls={self.calls} run on a fixed schedule, which has no room for another call."

    def reset_state(self) -> None:
        self.x: dict[int, torch.Tensor] = {}
        self._pad_sigmas()

    def use_schedule(self, sigmas: torch.Tensor | None) -> None:
        """The run's sigmas; integrations call this just before :meth:`begin` (which pads them to N + 1)."""
        self._given_sigmas = None if sigmas is None else [
            float(v) for v in torch.as_tensor(sigmas).detach().flatten().cpu()]
        self._pad_sigmas()

    def _pad_sigmas(self) -> None:
        s = getattr(self, "_given_sigmas", None) or []
        self.sigmas = s + [0.0] * (self.num_steps + 1 - len(s)) if s else []

    def check_scheduler(self, scheduler: Any) -> None:
        name = type(scheduler).__name__
        sigmas = getattr(scheduler, "sigmas", None)
        sigmas = None if sigmas is None else [float(v) for v in torch.as_tensor(sigmas).detach().flatten().cpu()]
        problem = flow_solver_problem(scheduler) or flow_sigmas_problem(name, sigmas)
        if problem is not None:
            raise ValueError(scheduler_refusal(problem, "runs"))

    def new_stream(self) -> MeanStream:
        return MeanStream(self)

    def prune(self, history: dict[int, torch.Tensor], step: int) -> None:
        for j in [j for j in history if j <= step - self._keep]:
            del history[j]

    def should_compute(self, step: int, latents: torch.Tensor | None = None) -> bool:
        self._check_step(step)
        if latents is not None:
            self.late_input(step, latents)
        return self._spans[step] is None

    def late_input(self, step: int, latents: torch.Tensor) -> None:
        self.x[step] = latents.detach()
        self.prune(self.x, step)

    def estimate(self, step: int, v: dict[int, torch.Tensor]) -> torch.Tensor | None:
        """The estimate at skipped ``step`` from the consumed outputs ``v`` of one stream (None: run the model)."""
        k = self._spans[step]
        if k is None or step - 1 not in v:
            return None
        if k == 1:
            return v[step - 1]
        if step - k not in v or step not in self.x or step - k not in self.x or len(self.sigmas) <= step + 1:
            return None
        s = self.sigmas
        v_prev = v[step - 1]
        est = average_velocity_estimate(self.x[step].float(), self.x[step - k].float(), v_prev.float(),
                                        v[step - k].float(), s[step - k], s[step], s[step + 1]).to(v_prev.dtype)
        return est if is_finite(est) else None

    def observe(self, step: int, output: torch.Tensor, computed: bool) -> None:
        self.main_stream.record(step, output)  # v_j is the velocity consumed, real or estimated
        self._log(step, computed, window=self._spans[step])
