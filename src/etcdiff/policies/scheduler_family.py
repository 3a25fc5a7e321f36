"""Which solver a calibration was recorded with, and whether a run's scheduler is the same kind.

A calibrated plan is only as good as its fit of what the solver does with an estimated output: a first-order
step (Euler, DDIM) uses the model output once, a multistep solver (UniPC, DPM-Solver++ 2M) also keeps it in its
history for the next steps, and UniPC's corrector revisits it. A profile fitted on one family therefore does
not carry over to another. Pure Python: schedulers are read by their class name and config, diffusers is not
imported.
"""

from __future__ import annotations

from typing import Any

#: scheduler class -> family; a class not listed is its own family.
FAMILIES = {
    "FlowMatchEulerDiscreteScheduler": "euler", "EulerDiscreteScheduler": "euler",
    "EulerAncestralDiscreteScheduler": "euler-ancestral", "DDIMScheduler": "ddim",
    "UniPCMultistepScheduler": "unipc", "DPMSolverMultistepScheduler": "dpm-solver-multistep",
    "DPMSolverSinglestepScheduler": "dpm-solver-singlestep", "FlowMatchHeunDiscreteScheduler": "heun",
    "HeunDiscreteScheduler": "heun",
}
CONFIG_KEYS = ("solver_order", "algorithm_type", "prediction_type", "use_flow_sigmas", "disable_corrector")


def scheduler_signature(scheduler: Any) -> dict[str, Any] | None:
    """``{"class", "family", <the config entries that change the solver>}`` of a scheduler (``None`` for none)."""
    if scheduler is None:
        return None
    name = type(scheduler).__name__
    config = getattr(scheduler, "config", None) or {}
    get = config.get if isinstance(config, dict) else (lambda k, d=None: getattr(config, k, d))
    out: dict[str, Any] = {"class": name, "family": FAMILIES.get(name, name)}
    for key in CONFIG_KEYS:
        value = get(key, None)
        if isinstance(value, (bool, int, float, str)) or (isinstance(value, list) and key == "disable_corrector"):
            out[key] = value
    return out


def scheduler_mismatch(fitted: dict[str, Any] | None, scheduler: Any) -> tuple[str, str] | None:
    """``None`` when ``scheduler`` is the kind of solver ``fitted`` (a :func:`scheduler_signature`) describes;
    else ``("family" | "config", what differs)``: another family, or the same family with another order,
    algorithm or prediction type."""
    if not fitted or scheduler is None:
        return None
    now = scheduler_signature(scheduler)
    if now["family"] != fitted.get("family"):
        return "family", f"{fitted.get('class')} ({fitted.get('family')}) and now {now['class']} ({now['family']})"
    diff = [f"{k} {fitted[k]!r} -> {now[k]!r}" for k in CONFIG_KEYS
            if k in fitted and k in now and fitted[k] != now[k]]
    return ("config", ", ".join(diff)) if diff else None


__all__ = ["FAMILIES", "scheduler_mismatch", "scheduler_signature"]
