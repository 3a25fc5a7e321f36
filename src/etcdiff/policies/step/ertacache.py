"""ERTACache (Peng et al. 2025, arXiv 2508.21091): a documented RECONSTRUCTION, not the authors' code.

No public formulas or code were available to us, so this module rebuilds the three
parts the paper names, each in closed form and pure tensor math, from recorded full-step trajectories
(:class:`~etcdiff.policies.trajectory.Trajectory`: eps_t as the scheduler consumed it, x_t, sigmas):

1. Offline residual profiling -> one fixed, prompt-independent reuse schedule. Walking the steps with c the
   last computed step, r_t = mean over prompts of rel(eps_t, eps_c) (rel(a, b) = mean|a - b| / mean|b|) is
   accumulated; step t reuses while acc + r_t < threshold, else it is computed and acc resets to 0. The first
   and the last step are always computed.
2. Residual linearization (error rectification). On a reused step t with source c and the computed step c'
   before it, the reuse error is modelled as eps_t - eps_c ≈ k_t·(eps_c - eps_c'), the last observed output
   change; k_t = sum_p <e_p, d_p> / sum_p |d_p|^2 (least squares over prompts; 0 when there is no c').
3. Trajectory-aware timestep adjustment. The rectified reused output r_t = eps_c + k_t·d is fitted to the
   full run's latent update: lambda_t = sum_p <x_{t+1} - x_t, dt_t·r_t> / sum_p |dt_t·r_t|^2 with
   dt_t = sigma_{t+1} - sigma_t. For a first-order solver (x_{t+1} = x_t + dt·eps) scaling the output by
   lambda_t is the same as scaling the solver's interval by lambda_t, so the policy returns lambda_t·r_t and
   never touches the scheduler.

At run time a reused step costs two tensor operations. Every operation is linear in the outputs, so each
classifier-free-guidance branch applies the same correction to its own outputs and the branches combine into
exactly the corrected combined output. The published claim to compare with: up to 2x speedup with minimal
quality loss (its abstract).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch

from .base import OutputStream, StepPolicy, is_finite
from ..settings_file import fitted
from ..._numbers import as_real

from ..trajectory import Trajectory, check_step_count


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """rel(a, b) = mean|a - b| / mean|b| (the notation of docs/methods.md)."""
    denom = b.abs().mean().item()
    return (a - b).abs().mean().item() / denom if denom > 0 else (0.0 if torch.equal(a, b) else math.inf)


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() * b.double()).sum())


@dataclass
class ERTACacheProfile:
    """What :func:`fit_ertacache` learns: the reuse schedule and the per-step corrections (JSON-serializable).

    ``compute[t]`` is True where the model runs; ``lambdas[t]`` (1 on computed steps) scales the reused output;
    ``coeffs[t]`` (0 on computed steps) is the residual-linearization coefficient k_t; ``rel[t]`` the mean
    profiled rel(eps_t, eps_c) (None on the first step); ``num_trajectories`` the calibration runs used.
    """

    threshold: float
    compute: list[bool]
    lambdas: list[float]
    coeffs: list[float]
    rel: list[float | None]
    num_trajectories: int = 0

    def __post_init__(self) -> None:
        n = len(self.compute)
        if n < 1 or len(self.lambdas) != n or len(self.coeffs) != n or len(self.rel) != n:
            raise ValueError(
                "ERTACacheProfile: compute, lambdas, coeffs and rel must be non-empty lists of the same length "
                f"(got {len(self.compute)}, {len(self.lambdas)}, {len(self.coeffs)}, {len(self.rel)})."
            )
        if not self.compute[0]:
            raise ValueError("ERTACacheProfile: step 0 must be computed (there is nothing to reuse before it).")
        if not all(math.isfinite(v) for v in (*self.lambdas, *self.coeffs)):
            raise ValueError("ERTACacheProfile: lambdas and coeffs must be finite numbers.")

    @property
    def num_steps(self) -> int:
        return len(self.compute)

    @property
    def computed_steps(self) -> list[int]:
        return [t for t, c in enumerate(self.compute) if c]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ERTACacheProfile":
        try:
            return cls(
                threshold=float(data["threshold"]),
                compute=[bool(v) for v in data["compute"]],
                lambdas=[float(v) for v in data["lambdas"]],
                coeffs=[float(v) for v in data["coeffs"]],
                rel=[None if v is None else float(v) for v in data["rel"]],
                num_trajectories=int(data.get("num_trajectories", 0)),
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"ERTACacheProfile.from_dict: not an ERTACache profile ({e!r}).") from None


def _check_trajectories(trajectories: Sequence["Trajectory"]) -> tuple[int, list[list[float]]]:
    if not isinstance(trajectories, (list, tuple)) or not trajectories:
        raise ValueError("fit_ertacache: give a non-empty list of recorded full-step trajectories (record_pipeline).")
    n = trajectories[0].num_steps
    sigmas = []
    for i, tr in enumerate(trajectories):
        check_step_count(tr, i, n, "fit_ertacache")
        if tr.sigmas is None or len(tr.sigmas) < n:
            raise ValueError(
                f"fit_ertacache: trajectory {i} has no sigmas for its {n} steps; the timestep correction needs a "
                "sigma-parametrised first-order scheduler (e.g. FlowMatchEulerDiscreteScheduler, EulerDiscreteScheduler)."
            )
        s = [float(v) for v in torch.as_tensor(tr.sigmas).flatten()]
        sigmas.append(s + [0.0] * (n + 1 - len(s)))  # a trailing final sigma 0 when only N were recorded
    if n < 2:
        raise ValueError(f"fit_ertacache: the trajectories have {n} step(s); at least 2 are needed.")
    return n, sigmas


def scheduler_problem(scheduler: Any) -> str | None:
    """Why ERTACache cannot run on ``scheduler``, or None. The timestep correction scales a reused output by the
    step's sigma difference, which is the step a first-order solver takes (Euler on sigmas, flow matching). A
    multistep solver that predicts noise builds its step from several outputs converted to x0 instead, and the
    correction then ruins the image."""
    config = getattr(scheduler, "config", None)
    prediction = getattr(config, "prediction_type", None)
    multistep = hasattr(scheduler, "model_outputs") or "Multistep" in type(scheduler).__name__
    if multistep and prediction not in (None, "flow_prediction") and not getattr(config, "use_flow_sigmas", False):
        return (f"ertacache: its timestep correction assumes a first-order step on the scheduler's sigmas, and "
                f"{type(scheduler).__name__} with {prediction} prediction is a multistep solver (the images come out "
                "broken). Use etc-plus, etc or fixed on this scheduler, or ertacache with an Euler or flow-matching one.")
    return None


def fit_ertacache(trajectories: list["Trajectory"], threshold: float) -> ERTACacheProfile:
    """Fit the ERTACache reconstruction (module docstring, parts 1–3) on recorded full-step trajectories."""
    threshold = threshold if as_real(threshold) is None else as_real(threshold)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold) or threshold < 0:
        raise ValueError(f"fit_ertacache: threshold must be a finite number >= 0, got {threshold!r}.")
    problem = scheduler_problem(getattr(trajectories[0], "solver", None)) if trajectories else None
    if problem:  # the schedule would be fitted for a run that enable then refuses
        raise ValueError(problem)
    n, sigmas = _check_trajectories(trajectories)
    outs = [[o.detach().double() for o in tr.outputs] for tr in trajectories]
    compute, rels = [True] * n, [None] * n
    sources: dict[int, tuple[int, int | None]] = {}  # reused step -> (c, c')
    c, c_prev, acc = 0, None, 0.0
    for t in range(1, n):  # part 1: the schedule
        r = sum(rel(o[t], o[c]) for o in outs) / len(outs)
        rels[t] = r
        if t < n - 1 and acc + r < threshold:
            compute[t], acc = False, acc + r
            sources[t] = (c, c_prev)
        else:
            c_prev, c, acc = c, t, 0.0
    lambdas, coeffs = [1.0] * n, [0.0] * n
    for t, (c, cp) in sources.items():
        diffs = [o[c] - o[cp] for o in outs] if cp is not None else None
        if diffs is not None:  # part 2: k_t by least squares over prompts
            dd = sum(_dot(d, d) for d in diffs)
            coeffs[t] = sum(_dot(o[t] - o[c], d) for o, d in zip(outs, diffs)) / dd if dd > 0 else 0.0
        num = den = 0.0
        for p, (tr, o) in enumerate(zip(trajectories, outs)):  # part 3: lambda_t by least squares
            reused = o[c] + coeffs[t] * diffs[p] if diffs is not None else o[c]
            step = (sigmas[p][t + 1] - sigmas[p][t]) * reused
            num += _dot(tr.inputs[t + 1] - tr.inputs[t], step)
            den += _dot(step, step)
        lambdas[t] = num / den if den > 0 else 1.0
    return ERTACacheProfile(float(threshold), compute, lambdas, coeffs, rels, len(trajectories))


class ERTAStream(OutputStream):
    """One denoiser call's last two real outputs; on a reused step returns lambda_t·(eps_c + k_t·(eps_c - eps_c'))."""

    def __init__(self, policy: "ERTACache") -> None:
        self.policy = policy
        self.last: torch.Tensor | None = None
        self.prev: torch.Tensor | None = None
        self.last_real: int | None = None

    def record(self, step: int, output: torch.Tensor) -> None:
        self.prev, self.last, self.last_real = self.last, output, step

    def predict(self, step: int) -> torch.Tensor | None:
        p = self.policy
        if self.last is None or self.last_real != p.last_real:
            return None  # a branch that missed the last computed step must run
        k, lam = p.profile.coeffs[step], p.profile.lambdas[step]
        est = self.last + k * (self.last - self.prev) if k != 0.0 and self.prev is not None else self.last
        est = lam * est if lam != 1.0 else est
        return est if is_finite(est) else None


class ERTACache(StepPolicy):
    """ERTACache, a documented RECONSTRUCTION (see the module docstring and docs/methods.md).

    Args:
        profile: an :class:`ERTACacheProfile` from :func:`fit_ertacache` (or its ``to_dict()``), fitted with the
            same number of steps as the runs it drives.
    """

    name = "ertacache"
    #: its calibration is made for one step count: a run at another needs one made there
    profile_per_step_count = True

    def __init__(self, profile: ERTACacheProfile | dict[str, Any] | str | os.PathLike) -> None:
        super().__init__()
        profile = fitted(profile, ERTACacheProfile, "profile", "ertacache", "ERTACache",
                         "an ERTACacheProfile (from fit_ertacache)")
        self.profile = profile

    def params(self) -> dict[str, Any]:
        return {"threshold": self.profile.threshold, "profile_steps": self.profile.num_steps}

    def begin(self, num_steps: int) -> None:
        if isinstance(num_steps, int) and not isinstance(num_steps, bool) and num_steps != self.profile.num_steps:
            raise ValueError(
                f"ERTACache: the profile was fitted for {self.profile.num_steps} steps but the run has {num_steps}; "
                f"calibrate at {num_steps} steps: `etcdiff calibrate --method ertacache --steps {num_steps}` (a pipeline) "
                "or fit_ertacache on trajectories recorded at that step count."
            )
        super().begin(num_steps)

    def check_scheduler(self, scheduler: Any) -> None:
        """Refuse a scheduler the timestep correction breaks (:func:`scheduler_problem`)."""
        problem = scheduler_problem(scheduler)
        if problem:
            raise ValueError(problem)

    def new_stream(self) -> ERTAStream:
        return ERTAStream(self)

    def reset_state(self) -> None:
        self.last_real: int | None = None
        self._skips = 0

    def should_compute(self, step: int, latents: torch.Tensor | None = None) -> bool:
        self._check_step(step)
        return self.profile.compute[step]

    def observe(self, step: int, output: torch.Tensor, computed: bool) -> None:
        self._skips = 0 if computed else self._skips + 1
        if computed:
            self.last_real = step
            self.main_stream.record(step, output)
        self._log(step, computed, window=self._skips)
