"""Which schedulers step a flow-matching velocity field: the one rule MeanCache's run and its calibration share.

A scheduler qualifies when the model output is a velocity (a ``FlowMatch*`` class, or ``prediction_type=
"flow_prediction"``), its update takes one model output per step (no Heun or LCM step), it samples
deterministically, and its sigmas fall from <= 1 to 0. That admits the flow-matching Euler scheduler and the
multistep solvers run on flow sigmas (UniPC and DPM-Solver++ with ``use_flow_sigmas=True,
prediction_type="flow_prediction"``). Pure Python: schedulers are read by class name, config and attributes;
a recorded run's :func:`~etcdiff.policies.scheduler_family.scheduler_signature` (a dict) is read the same way.
"""

from __future__ import annotations

from typing import Any, Sequence

#: what to use instead, for the refusals
FLOW_SOLVERS_HINT = ("FlowMatchEulerDiscreteScheduler, or UniPCMultistepScheduler / DPMSolverMultistepScheduler with "
                     "use_flow_sigmas=True, prediction_type='flow_prediction'")


def _read(scheduler: Any) -> tuple[str, Any]:
    """(class name, config getter) of a scheduler object or of a scheduler signature dict."""
    if isinstance(scheduler, dict):
        return str(scheduler.get("class")), scheduler.get
    config = getattr(scheduler, "config", None) or {}
    get = config.get if isinstance(config, dict) else (lambda k, d=None: getattr(config, k, d))
    return type(scheduler).__name__, get


def flow_solver_problem(scheduler: Any) -> str | None:
    """Why ``scheduler`` (an object or a scheduler signature) is not a deterministic one-output-per-step
    flow-matching solver, or ``None`` when it is one. Its sigmas are checked apart (:func:`flow_sigmas_problem`):
    they exist only once the timesteps are set."""
    name, get = _read(scheduler)
    if "FlowMatch" not in name and get("prediction_type", None) != "flow_prediction":
        return f"{name} is not a flow-matching scheduler (its output is not a velocity)"
    if "Heun" in name or "LCM" in name or getattr(scheduler, "order", 1) != 1:
        return f"{name} takes several model outputs per step"
    if get("stochastic_sampling", False):
        return f"{name} samples stochastically"
    return None


def flow_sigmas_problem(name: str, sigmas: Sequence[float] | None) -> str | None:
    """Why a run's ``sigmas`` (of scheduler ``name``) do not fall from <= 1 to 0, or ``None``."""
    s = [] if sigmas is None else [float(v) for v in sigmas]
    if len(s) < 2:
        return f"{name} has no sigmas"
    if min(s) < 0 or max(s) > 1 + 1e-6 or any(b > a + 1e-9 for a, b in zip(s, s[1:])) or abs(s[-1]) > 1e-6:
        return f"{name}'s sigmas do not fall from <= 1 to 0 (a multistep solver needs use_flow_sigmas=True)"
    return None


__all__ = ["FLOW_SOLVERS_HINT", "flow_sigmas_problem", "flow_solver_problem"]
