"""ETC+'s searched schedules, measured on the held-out calibration runs (opt-in: the fit's ``searched_schedules``;
the policy side is :mod:`etcdiff.policies.step.etc_plus.schedules`).

Per budget of the ladder, after ETC+'s own plans were measured (:func:`~.refine.measured_budgets`):

1. each fold's schedule is searched on the runs its fits were made on (:func:`~etcdiff.policies.step.lemica.
   fit_lemica`, the gaps' errors per predictor; no extra model call), and runs with each predictor of
   :data:`~etcdiff.policies.step.etc_plus.schedules.SCHEDULE_PREDICTORS` on the fold's held-out runs, through
   ``ETCPlus`` itself (the code path users run);
2. the schedule replaces ETC+'s plan at that budget where it clears its predictor's bar in :data:`BARS` against
   the closer of ETC+'s two plans there (free, computing the last step), :func:`~.budgets.clearly_lower` by that
   many standard errors of the paired differences: ETC's trend and the linear predictor where their mean is lower,
   reuse where it is lower by :data:`MARGIN`. On development prompts of the scenes model (neither calibration nor
   evaluation captions) the two extrapolating predictors kept their held-out lead on fresh images, while reuse
   schedules came out farther than their held-out runs said. Of the schedules that clear their bar, the lowest
   mean;
3. the kept budgets' schedules are searched again on every calibration run, into the profile's
   ``budget_schedules``, and their held-out errors become the budget's (``budget_errors``), so that
   :func:`~etcdiff.policies.step.etc_plus.budgets.ranked_plan` ranks them with the other plans.
"""

from __future__ import annotations

from typing import Any

from ...policies.step.etc_plus.budgets import clearly_lower
from ...policies.step.etc_plus.schedules import SCHEDULE_PREDICTORS, SCHEDULES, schedule_entry
from ...policies.step.lemica import fit_lemica
from ..selection import BUDGET_MARGIN, HeldOut

MARGIN = BUDGET_MARGIN  # standard errors by which a reuse schedule must beat ETC+'s plan at a budget to serve it
BARS = {"etc": 0.0, "linear": 0.0, "reuse": MARGIN}  # per predictor: standard errors below ETC+'s plan to serve


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def schedule_choice(options: dict[str, list[float]], base: list[float]) -> str | None:
    """The predictor whose schedule serves a budget, from the held-out log errors of each predictor's schedule
    (``options``) and of ETC+'s plan (``base``, paired run by run): of those that clear their bar in
    :data:`BARS`, the lowest mean; ``None`` where none does."""
    better = [p for p, logs in options.items() if clearly_lower(logs, base, BARS[p])]
    return min(better, key=lambda p: _mean(options[p])) if better else None


def measure_schedules(fitted: dict[str, Any], held: HeldOut, free: dict[str, list[float]],
                      last: dict[str, list[float]]) -> dict[str, dict[str, Any]]:
    """Where a searched schedule serves a budget, put it in ``fitted["profile"]`` (``budget_schedules``) and its
    held-out log errors in ``free`` (dropping the budget from ``last``); return what was measured per budget
    (``{"plan": ETC+'s mean, predictor: mean, "kept": predictor or None, "logs": the same per held-out run}``) for
    the profile's record."""
    profile = fitted["profile"]
    n = int(profile["num_steps"])
    if not held.records or not held.folds:
        return {}
    fold_searches = [fit_lemica(rest, SCHEDULE_PREDICTORS) for rest in held.fold_records()]
    record, kept = {}, {}
    for key in sorted(set(free) | set(last), key=int):
        calls = int(key)
        plans = [logs for logs in (free.get(key), last.get(key)) if logs]
        base = min(plans, key=_mean)
        options = {}
        for p in SCHEDULE_PREDICTORS:
            policies = [held.build(_with_schedule(fit, n, calls, search.schedule(calls, p), p), calls)
                        for fit, search in zip(held.fold_fits, fold_searches)]
            options[p] = held.log_errors(policies)
        best = schedule_choice(options, base)
        measured = {"plan": base, **options}
        record[key] = {**{k: round(_mean(v), 4) for k, v in measured.items()}, "kept": best,
                       "logs": {k: [round(x, 4) for x in v] for k, v in measured.items()}}
        if best is not None:
            kept[calls] = best
            free[key] = options[best]
            last.pop(key, None)
    if kept:
        search = fit_lemica(list(held.records), sorted(set(kept.values())))
        profile[SCHEDULES] = schedule_entry(n, {c: (search.schedule(c, p), p) for c, p in kept.items()})
    return record


def _with_schedule(fit: dict[str, Any], num_steps: int, calls: int, steps: list[int], predictor: str
                   ) -> dict[str, Any]:
    """``fit`` whose profile serves ``calls`` with the searched schedule ``steps`` and ``predictor``."""
    return {**fit, "profile": {**fit["profile"], SCHEDULES: schedule_entry(num_steps, {calls: (steps, predictor)})}}


__all__ = ["BARS", "MARGIN", "measure_schedules", "schedule_choice"]
