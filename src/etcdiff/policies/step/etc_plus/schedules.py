"""ETC+'s searched schedules (opt-in at calibration, ``searched_schedules=True``): for a call budget, a fixed set of
real steps searched over the calibration runs instead of ETC+'s planned windows, with a predictor of its own on the
steps between.

The search is LeMiCa's lexicographic minimax over the gaps' errors (:func:`~etcdiff.policies.step.lemica.
search_leximax`): no single gap may carry a large error. ETC+'s own plan minimises the *sum* of its windows'
predicted errors, and where those predictions rank plans wrongly (long windows priced too cheap) a schedule that
only bounds its worst gap does better: on the scenes model at 28 Euler steps the searched schedule with ETC's
recursive trend landed 3.9 dB closer than ETC+'s plan at 9 calls. Which serves a budget is not assumed: calibration
runs both on the held-out calibration runs and keeps a schedule only where it is closer on average, a reuse
schedule only where it is clearly closer (:mod:`etcdiff.calibration.etc_plus.schedules`). The profile's
``budget_schedules`` then holds, per budget, the steps and the predictor (``"etc"``: ETC's recursive trend spread
over the gap; ``"linear"``: the line through the last two real outputs; ``"reuse"``: the last real output,
LeMiCa's own), for the step count it was searched at; runs at other step counts plan as before.
"""

from __future__ import annotations

from typing import Any

SCHEDULES = "budget_schedules"  # profile key: {"num_steps": N, "plans": {calls: {"steps": [...], "predictor": p}}}
SCHEDULE_FIT = "searched_schedules"  # the fit setting (opt-in) under which calibration measures the schedules
SCHEDULE_PREDICTORS = ("etc", "linear", "reuse")  # the predictors a searched schedule is measured with, in order


def budget_schedule(profile: dict[str, Any], calls: int | None, compute_last: bool,
                    num_steps: int) -> tuple[list[int], str] | None:
    """``(steps, predictor)`` of the searched schedule that serves the free plan of ``calls`` calls in a
    ``num_steps`` run, or ``None`` (no budget, a plan forced to compute the last step, another step count, or no
    schedule chosen there)."""
    kept = profile.get(SCHEDULES) or {}
    if calls is None or compute_last or int(kept.get("num_steps", -1)) != num_steps:
        return None
    plan = (kept.get("plans") or {}).get(str(calls))
    if plan is None:
        return None
    steps = [int(s) for s in plan["steps"]]
    if not steps or steps[0] != 0 or steps != sorted(set(steps)) or steps[-1] >= num_steps or len(steps) > calls:
        raise ValueError(f"etc-plus: the profile's searched schedule for calls={calls} is not a list of increasing "
                         f"steps from 0 within {num_steps} steps and {calls} calls ({steps!r}); calibrate again.")
    if plan["predictor"] not in SCHEDULE_PREDICTORS:
        raise ValueError(f"etc-plus: the profile's searched schedule for calls={calls} names an unknown predictor "
                         f"{plan['predictor']!r} (one of {', '.join(SCHEDULE_PREDICTORS)}); calibrate again.")
    return steps, str(plan["predictor"])


def schedule_entry(num_steps: int, plans: dict[int, tuple[list[int], str]]) -> dict[str, Any]:
    """The profile's ``budget_schedules`` value for ``plans`` (calls -> (steps, predictor))."""
    return {"num_steps": int(num_steps),
            "plans": {str(c): {"steps": [int(s) for s in steps], "predictor": p}
                      for c, (steps, p) in sorted(plans.items())}}


def gaps(steps: list[int], num_steps: int) -> list[int]:
    """Per step, the length of the gap of skipped steps it lies in (0 on a real step)."""
    out = [0] * num_steps
    for a, b in zip(steps, [*steps[1:], num_steps]):
        for s in range(a + 1, b):
            out[s] = b - a - 1
    return out


__all__ = ["SCHEDULES", "SCHEDULE_FIT", "SCHEDULE_PREDICTORS", "budget_schedule", "gaps", "schedule_entry"]
