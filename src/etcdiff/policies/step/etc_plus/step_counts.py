"""Which calibration plans an ETC+ run of a given step count: the profile as fitted at its own step count, the
calibration made for that step count on a surrogate of the recorded runs (``served_steps``), or else the profile
resampled on the sigma axis (:mod:`etcdiff.policies.step.etc_plus.resample`, with a warning)."""

from __future__ import annotations

import warnings
from typing import Any

from .budgets import asked_budget, budget_profile, ranked_plan
from .resample import resample_profile


def profile_for_steps(calibrated: dict[str, Any], fitted: dict[str, Any], num_steps: int,
                      run_sigmas: list[float] | None, calls: int | None, last_step: bool | None,
                      cache: dict[tuple, dict[str, Any]], tolerance: float | None = None) -> dict[str, Any]:
    """The profile that plans a ``num_steps`` run: ``fitted`` at its own step count, else the served calibration
    for ``num_steps`` (with the fit it chose for the budget the run plans for: the user's ``calls``, or with
    neither ``calls`` nor a ``tolerance`` of the user's the served calibration's own tolerance budget), else
    ``calibrated`` resampled for the run's ``run_sigmas``; the last two are built once into ``cache``. A one-line
    ValueError where nothing serves."""
    if num_steps == int(fitted["num_steps"]):
        return fitted
    served = (calibrated.get("served_steps") or {}).get(str(num_steps))
    if served is not None:
        key: tuple = ("served", num_steps)
        if key not in cache:
            budget = ranked_plan(served, asked_budget(served, calls, tolerance), last_step)[0]
            cache[key] = budget_profile(served, budget)
        return cache[key]
    prof_n = int(fitted["num_steps"])
    if run_sigmas is None or len(run_sigmas) < num_steps or not fitted.get("sigmas"):
        raise ValueError(
            f"etc-plus: the profile was fitted for {prof_n} steps but the run has {num_steps}, and a profile is "
            "resampled for other step counts only where both schedules have sigmas; calibrate at this step count: "
            f"`etcdiff calibrate --method etc-plus --steps {num_steps}` (a pipeline) or fit_etc_plus on "
            "trajectories recorded at it, or serve it from a calibration at another step count "
            f"(`--set serve_steps={num_steps}`)."
        )
    key = (num_steps, tuple(run_sigmas[:num_steps]))
    if key not in cache:
        cache[key] = resample_profile(calibrated, run_sigmas[:num_steps])
        warnings.warn(f"etc-plus: the profile was fitted at {prof_n} steps; this {num_steps}-step run is planned "
                      "from its window errors resampled on the sigma axis (calibrating at this step count, or with "
                      f"`--set serve_steps={num_steps}` / serve_steps=[{num_steps}], is the accurate way).",
                      UserWarning, stacklevel=5)
    return cache[key]


__all__ = ["profile_for_steps"]
