"""Which plan a call budget runs: the budgets and final-step rules that calibration measured on held-out runs.

ETC+'s plan ranks its options by predicted errors, and those can be wrong in order: a plan with one more call can
come out worse than the one before it, and on some models and solvers a plan that estimates the last step loses
several dB to one that computes it (the model's last call corrects what earlier estimates left; the planned
costs, measured with every later step real, cannot see that), while on others computing it costs as much. Where
calibration ran the plans (:mod:`etcdiff.calibration.etc_plus.refine`), the profile keeps the mean log relative
error of each budget's plan: ``budget_errors`` (the plan as it chooses) and ``budget_errors_last`` (the plan
that computes the last step), and the same per held-out run. ``ETCPlus(calls=B)`` runs, among the plans of at
most B calls, the one that came clearly closest (:func:`ranked_plan`), from the candidate fit calibration chose
for that budget (:func:`budget_profile`). Where calibration found no tolerance scale under which enough held-out
runs ended within the target, but found a budget that did, the tolerance mode runs that budget
(``tolerance_calls``; :func:`asked_budget`).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from .schedules import SCHEDULES

FREE, LAST = "budget_errors", "budget_errors_last"
BUDGET_FITS = "budget_fits"  # per budget, a candidate other than the profile's own (calibration's per-budget choice)
TREND_CAPS = "budget_trend_caps"  # per budget, the trend cap its free plan runs with (calibration's choice, opt-in)
ADAPT = "budget_adapt_trend"  # per budget and plan kind, whether it weighs its trend after spikes (opt-in choice)
LOGS = {FREE: "budget_logs", LAST: "budget_logs_last"}  # the same, per held-out run (paired across plans)
TOLERANCE_CALLS = "tolerance_calls"  # the budget the tolerance mode runs where no tolerance scale held


def clearly_lower(errors: Sequence[float], base: Sequence[float], margin: float = 1.0, slack: float = 0.0) -> bool:
    """Whether ``errors`` (log errors, paired run by run with ``base``) are lower than ``base`` by more than
    ``margin`` standard errors of their paired differences (at least 3 runs) plus ``slack``: an option chosen on a
    few held-out runs must beat the one it replaces by more than their noise (and, where the runs are replays, by
    more than the replays are known to miss real runs by)."""
    if len(errors) != len(base) or len(errors) < 3:
        return False
    diff = torch.tensor([a - b for a, b in zip(errors, base)], dtype=torch.float64)
    return bool(diff.mean() + margin * diff.std() / math.sqrt(len(diff)) + slack < 0)


def budget_profile(profile: dict[str, Any], calls: int | None) -> dict[str, Any]:
    """The profile a plan of ``calls`` calls runs from: where calibration chose another candidate for that budget
    (``budget_fits``: ``serve`` maps a budget to a candidate, ``fits`` holds each such candidate's fitted
    settings that differ from the profile's), the profile with those settings; else the profile itself."""
    fits = profile.get(BUDGET_FITS) or {}
    label = (fits.get("serve") or {}).get(str(calls)) if calls is not None else None
    if label is None:
        return profile
    return {**profile, **fits["fits"][label]}


def budgets_served(serve: dict[str, str]) -> str:
    """``budget_fits["serve"]`` in words: each candidate with the runs of budgets it serves, e.g.
    ``calls 9-10 with propagation=True,corrections=auto``."""
    spans: list[list[Any]] = []  # [first, last, label]
    for calls in sorted(int(k) for k in serve):
        label = serve[str(calls)]
        if spans and spans[-1][2] == label and spans[-1][1] == calls - 1:
            spans[-1][1] = calls
        else:
            spans.append([calls, calls, label])
    return "; ".join(f"calls {a}{f'-{b}' if b != a else ''} with {label}" for a, b, label in spans)


def budget_trend_cap(profile: dict[str, Any], calls: int | None, compute_last: bool) -> float | None:
    """The trend cap calibration chose for the free plan of ``calls`` calls (``None``: none, or a plan that
    computes the last step, which was measured uncapped)."""
    if calls is None or compute_last:
        return None
    cap = (profile.get(TREND_CAPS) or {}).get(str(calls))
    return None if cap is None else float(cap)


def budget_adapt_trend(profile: dict[str, Any], calls: int | None, compute_last: bool) -> bool | None:
    """Whether calibration kept ``adapt_trend`` for the plan of ``calls`` calls (free, or computing the last step);
    ``None`` where it was not measured (no budget, or a profile calibrated without the choice)."""
    if calls is None:
        return None
    chosen = ((profile.get(ADAPT) or {}).get("last" if compute_last else "free") or {}).get(str(calls))
    return None if chosen is None else bool(chosen)


def asked_budget(profile: dict[str, Any], calls: int | None, tolerance: float | None) -> int | None:
    """The budget a policy plans for: the user's ``calls``; with neither ``calls`` nor a ``tolerance`` of the
    user's, the profile's ``tolerance_calls`` where calibration set one (the default tolerance served by the budget
    measured to hold it), else ``None`` (the tolerance mode)."""
    if calls is not None or tolerance is not None:
        return calls
    got = profile.get(TOLERANCE_CALLS)
    if got is not None and (isinstance(got, bool) or not isinstance(got, int) or got < 1):
        raise ValueError(f"etc-plus: the profile's {TOLERANCE_CALLS} must be a positive number of calls, got "
                         f"{got!r}; calibrate again.")
    return got


def ranked_plan(profile: dict[str, Any], calls: int | None, last_step: bool | None = None,
                margin: float = 1.0) -> tuple[int | None, bool]:
    """``(budget, compute_last)`` to plan with under ``calls``, among the measured plans of at most ``calls``
    calls (only the free plans with ``last_step=False``, only those computing the last step with ``True``, both
    with ``None``); ``calls`` itself, unmeasured, when ``calls`` was not measured.

    Where the profile keeps each plan's errors per held-out run (``budget_logs``), the plans are walked from the
    fewest calls up and a plan replaces the one kept so far only where it is :func:`clearly_lower` on the same
    runs (by ``margin`` standard errors): a bigger budget whose plan measured about as close runs the smaller plan
    (fewer calls, and no drop the held-out runs cannot vouch for). A searched schedule kept so far (``budget_
    schedules``) is the exception: it won a choice among several predictors on these same runs, so its errors there
    are the lucky draw of that choice, and a bigger budget's own plan replaces it where the schedule's mean error
    is not below the plan's. Else the plan with the least mean error (the larger budget of equal ones, then the
    free plan)."""
    kinds = {False: (FREE,), True: (LAST,), None: (FREE, LAST)}[last_step]
    forced = bool(last_step)
    if calls is None:
        return None, forced
    options = sorted((int(k), kind == LAST, float(v), (profile.get(LOGS[kind]) or {}).get(k))
                     for kind in kinds for k, v in (profile.get(kind) or {}).items() if int(k) <= calls)
    if not any(k == calls for k, *_ in options):
        return calls, forced
    if all(logs is not None and len(logs) >= 3 for *_, logs in options):
        searched = {int(k) for k in ((profile.get(SCHEDULES) or {}).get("plans") or {})}

        def is_schedule(option: tuple) -> bool:
            return option[0] in searched and not option[1]  # a schedule serves its budget's free plan

        kept = options[0]
        for option in options[1:]:
            if is_schedule(kept) and not is_schedule(option):
                replace = not clearly_lower(kept[3], option[3], 0.0)
            else:
                replace = clearly_lower(option[3], kept[3], margin)
            if replace:
                kept = option
        return kept[0], kept[1]
    k, last, _, _ = min(options, key=lambda o: (o[2], -o[0], o[1]))
    return k, last


def smaller_plans(profile: dict[str, Any]) -> dict[int, int]:
    """The measured budgets whose call budget runs a plan of fewer calls (:func:`ranked_plan`): ``{calls: plan's
    calls}``, e.g. ``{16: 15}`` where the 16-call plan came out no clearly closer than the 15-call one."""
    budgets = sorted({int(k) for kind in (FREE, LAST) for k in (profile.get(kind) or {})})
    return {b: k for b in budgets if (k := ranked_plan(profile, b)[0]) is not None and k < b}


__all__ = ["ADAPT", "BUDGET_FITS", "FREE", "LAST", "LOGS", "TREND_CAPS", "budget_adapt_trend", "budget_profile",
           "budget_trend_cap", "budgets_served", "clearly_lower", "ranked_plan", "smaller_plans"]
