"""The solver's reach: how much of an output error at step t lands in the final latents, replayed exactly.

Every scheduler etcdiff drives (Euler, DDIM, DPM-Solver++, UniPC, flow or epsilon) updates the latents as a fixed
linear combination of the current latents and the model outputs it has seen, so the final latents are
``a·x_0 + sum_t r_t·eps_t`` with one scalar ``r_t`` per step. ETC+'s fit estimates ``r_t`` from a one-step fit
``x_{t+1} = A_t·x_t + B_t·eps_t``, exact for first-order solvers; a multistep solver also carries ``eps_t`` into later
updates through its history and corrector, which that fit cannot see (on a flow model with UniPC at 20 steps, the
last steps reach the end about twice as strongly as the fit says). Here each ``r_t`` is read off a replay of the
recorded run's scheduler with a unit output at step t and zeros elsewhere: no model call.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ...integration.step.sampler import denoise_loop
from ...policies.step.baselines import NoCache
from .replay import _cpu_copy


_SEEN: dict[tuple, list[float] | None] = {}  # per schedule: a calibration fits many subsets of the same runs


def solver_reach(record: Any) -> list[float] | None:
    """``r_t`` per step of ``record``'s scheduler (signed), or ``None`` where the record carries no scheduler
    copy (``Trajectory.solver``), its timesteps do not match the recorded steps, or the scheduler is not linear
    (clipping, thresholding, noise injection: the check replays twice the unit and must get twice the result)."""
    solver = getattr(record, "solver", None)
    if solver is None or len(getattr(solver, "timesteps", ())) != record.num_steps:
        return None
    shape = (1, *record.inputs[0].shape[1:]) if record.inputs[0].dim() > 1 else record.inputs[0].shape
    sigmas = getattr(solver, "sigmas", None)
    key = (type(solver).__name__, repr(sorted(dict(getattr(solver, "config", {})).items())),
           tuple(float(t) for t in solver.timesteps), None if sigmas is None else tuple(float(v) for v in sigmas))
    if key not in _SEEN:
        _SEEN[key] = _replayed_reach(solver, record.num_steps, shape)
    return None if _SEEN[key] is None else list(_SEEN[key])


def _replayed_reach(solver: Any, n: int, shape: tuple[int, ...]) -> list[float] | None:
    index = {float(ts): k for k, ts in enumerate(solver.timesteps)}

    def response(step: int, size: float) -> float:
        def model(x_in: torch.Tensor, ts: Any) -> torch.Tensor:
            return torch.full(shape, size if index[float(ts)] == step else 0.0, dtype=torch.float64)

        final = denoise_loop(model, _cpu_copy(solver), torch.zeros(shape, dtype=torch.float64), NoCache())
        return float(final.double().mean()) / size

    try:
        reach = [response(t, 1.0) for t in range(n)]
        linear = all(math.isclose(response(t, 2.0), reach[t], rel_tol=1e-6, abs_tol=1e-12) for t in (0, n // 2, n - 1))
    except Exception:  # noqa: BLE001 - a scheduler that cannot run on its own: keep the one-step fit
        return None
    return reach if linear and all(math.isfinite(r) for r in reach) else None


__all__ = ["solver_reach"]
