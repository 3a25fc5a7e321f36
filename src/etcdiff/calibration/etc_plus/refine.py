"""ETC+'s checks on held-out calibration runs, after its variant is chosen (:func:`~.selection.choose_fit`).

The plan ranks budgets and meets tolerances by its predicted errors (window errors summed as independent), and
those predictions can be wrong in order: on a multistep solver, a plan with one more call came out several dB
worse than the one before it, and the tolerance mode missed its target on most images at 28 steps. Both are
checked here the empirical way, on the same held-out calibration runs and fold fits as the choice:

- **budgets**: each plan from ``ceil(N/5)`` to ``N/2`` calls runs on the held-out runs, as planned and made to
  compute the last step; the profile keeps the mean log relative error per budget (``"budget_errors"``, and
  ``"budget_errors_last"`` where computing the last step is the same plan or beats it by more than the held-out
  runs' noise: :func:`~etcdiff.policies.step.etc_plus.budgets.clearly_lower`), with the errors per run
  (``"budget_logs"``, ``"budget_logs_last"``); ``ETCPlus(calls=B)`` then runs, among the measured plans of
  ``<= B`` calls, the one clearly closest (never more than B calls; :mod:`etcdiff.policies.step.etc_plus.budgets`);
- **trend caps** (opt-in: the fit's ``trend_caps``): each budget's free plan also runs with its trend capped at
  each of :data:`TREND_CAP_CANDIDATES` (``ETCPlus(trend_cap=...)``). Among the options whose mean log error is not
  clearly above the lowest mean, the one with the least mean squared relative error (which the worst runs
  dominate) is kept (:func:`robust_choice`), in ``"budget_trend_caps"``, with its errors as the budget's. On the
  scenes model at 28 Euler steps the uncapped trend ran some samples' long windows into errors 10 dB beyond the
  rest, and those samples lost the prompt's small objects (docs/scenes/bench/adherence-28);
- **adapt_trend** (opt-in: the fit's ``adapt_trend``): each budget's plans (free, with the cap kept, and computing
  the last step) also run with ``ETCPlus(adapt_trend=True)``, and :func:`robust_choice` keeps it or not (off on
  ties: a run without spikes is the same either way), in ``"budget_adapt_trend"``, with its errors as the plan's.
  Weighing the trend after spikes helped the scenes model's samples that lost small objects and cost up to 1.6 dB
  on the UNet under DPM-Solver++, so it is chosen per model and scheduler like every fitted variant;
- **the profile's own plans** (opt-in: the fit's ``final_plans``): each fold fit runs the real steps of the plan
  the fit on all runs makes for the budget (:func:`final_plans`), instead of the plan it would make itself, so the
  ladder ranks the plans users run;
- **searched schedules** (opt-in: the fit's ``searched_schedules``): each budget also runs a schedule searched
  by lexicographic minimax with its own predictor, which serves the budget where it is closer than the plans
  above, a reuse schedule where it is clearly closer (:mod:`etcdiff.calibration.etc_plus.schedules`; the
  profile's ``budget_schedules`` and, for every budget, what was measured: ``schedule_check``);
- **tolerance** (:mod:`etcdiff.calibration.etc_plus.tolerance`): the tolerance mode runs on the held-out runs,
  and on the probed runs each held out alone with a fit on the others, and the planning tolerance is scaled down
  (``"tolerance_scale"``) until at least 95 % of them end within the target; where none held, a budget of the
  ladder serves the tolerance mode instead (``"tolerance_calls"``).

The generations it makes are counted by :func:`refine_generations`.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

from ...policies.step.etc_plus.budgets import ADAPT, BUDGET_FITS, FREE, LAST, LOGS, TREND_CAPS, clearly_lower
from ...policies.step.etc_plus.plan import PINNED
from ...policies.step.etc_plus.schedules import SCHEDULE_FIT
from ..selection import HeldOut
from .schedules import measure_schedules
from .tolerance import TOLERANCE_ROUNDS, check_tolerance

TREND_CAP_CANDIDATES = (0.5, 0.25, 0.0)  # the caps on the trend a budget's plan is also run with (opt-in)
ADAPT_FIT = "adapt_trend"  # the fit setting (opt-in) under which each budget's plans also run with adapt_trend
FINAL_PLANS_FIT = "final_plans"  # the fit setting (opt-in) under which the budgets rank the final fit's plans


def budget_ladder(num_steps: int) -> list[int]:
    """Every budget from ``ceil(N/5)`` to ``N/2`` calls (at least 2)."""
    return list(range(max(2, -(-num_steps // 5)), max(2, num_steps // 2) + 1))


def refine_generations(held_out: int, num_steps: int, measured: int, probed: int = 0) -> int:
    """Generations the checks make at most: the unmeasured budgets of the ladder, the ladder's plans computing the
    last step, the tolerance passes and the budgets :func:`~.tolerance.tolerance_budget` tries, over the
    ``held_out`` runs and, with a full run each for its reference, the ``probed`` ones (not the plans of the opt-in
    ``trend_caps`` and ``adapt_trend``, which the progress bar counts from the settings; the profile's ``cost``
    counts every run made)."""
    ladder = len(budget_ladder(num_steps))
    passes = TOLERANCE_ROUNDS + 1 + math.ceil(math.log2(ladder))
    return held_out * (2 * max(0, ladder - measured) + passes) + probed * (1 + passes)


def robust_choice(options: dict[Any, list[float]]) -> Any:
    """The key of ``options`` (log relative errors, paired run by run) to keep: among the options that the one of
    lowest mean is not :func:`clearly_lower` than, the one of least mean squared relative error (which the worst
    runs dominate); the first key on ties (list the incumbent first)."""
    keys = list(options)
    best = min(keys, key=lambda k: sum(options[k]) / len(options[k]))
    near = [k for k in keys if not clearly_lower(options[best], options[k])]
    return min(near, key=lambda k: sum(math.exp(2 * v) for v in options[k]) / len(options[k]))


def refine_etc_plus(fitted: dict[str, Any], held: HeldOut) -> None:
    """Add ``budget_errors``, ``budget_errors_last`` and ``tolerance_scale`` to ``fitted["profile"]`` (module
    docstring)."""
    profile = fitted["profile"]
    caps = TREND_CAP_CANDIDATES if profile.get("trend_caps") else ()
    offer_adapt = bool(profile.get(ADAPT_FIT))
    final = fitted if profile.get(FINAL_PLANS_FIT) else None
    free, last, chosen, adapted = measured_budgets(held, int(profile["num_steps"]), caps, offer_adapt, final)
    if profile.get(SCHEDULE_FIT):  # opt-in: a searched schedule serves a budget where it is closer
        profile["schedule_check"] = measure_schedules(fitted, held, free, last)
    if chosen:
        profile[TREND_CAPS] = chosen
    if offer_adapt:
        profile[ADAPT] = adapted
    if BUDGET_FITS in profile:  # each budget of the ladder runs the candidate chosen at the nearest compared one
        labels = {k: held.for_calls(int(k)).label for k in free}
        serve = {k: label for k, label in labels.items() if label != held.label}
        fits = {label: got for label, got in profile[BUDGET_FITS]["fits"].items() if label in serve.values()}
        profile[BUDGET_FITS] = {"fits": fits, "serve": serve}
        if not serve:
            del profile[BUDGET_FITS]
    for kind, measured in ((FREE, free), (LAST, last)):
        profile[kind] = {k: round(sum(v) / len(v), 4) for k, v in measured.items()}
        profile[LOGS[kind]] = {k: [round(x, 4) for x in v] for k, v in measured.items()}
    note = check_tolerance(profile, held, budget_ladder(int(profile["num_steps"])))
    if note:
        warnings.warn(f"etc-plus: {note}", UserWarning, stacklevel=2)


def measured_budgets(held: HeldOut, num_steps: int, caps: tuple[float, ...] = (), adapt: bool = False,
                     final: dict[str, Any] | None = None
                     ) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, float], dict[str, dict]]:
    """Log relative errors on the held-out runs per budget of :func:`budget_ladder`, of the plans as they
    choose and of the plans that compute the last step (budgets no plan can cover are left out), each budget with
    the candidate that serves it (:meth:`HeldOut.for_calls`); with ``caps``, the trend cap each budget's free
    plan keeps (:func:`robust_choice`; its errors are then the free plan's); with ``adapt``, whether each plan
    keeps ``adapt_trend`` (``{"free": {calls: bool}, "last": {...}}``; its errors are then the plan's); with
    ``final`` (the fit on all runs), each fold fit runs the real steps of the plan ``final`` makes
    (:func:`final_plans`), so that the budgets rank the plans the profile will run. Runs already made are reused:
    the choice's (both kinds) where the plans are the same, and the free plans' where every fold's free plan
    computes the last step anyway."""
    free, last, chosen, whole = {}, {}, {}, held
    adapted: dict[str, dict[str, bool]] = {"free": {}, "last": {}}
    for calls in budget_ladder(num_steps):
        held = whole.for_calls(calls)  # the candidate that serves this budget (selection's per-budget choice)
        try:
            fits = final_plans(final, whole, held, calls, num_steps) if final is not None else held.fold_fits
            plans = [held.build(fit, calls) for fit in fits]
            ends = all(p.planned_steps(num_steps)[-1] == num_steps - 1 for p in plans)
            same = final is None or all(held.build(fit, calls).planned_steps(num_steps) == p.planned_steps(num_steps)
                                        for fit, p in zip(held.fold_fits, plans))  # the choice's plans
        except ValueError:  # too few calls for the plan's longest window
            continue
        logs = (held.logs.get(calls) if same else None) or held.log_errors(plans)
        free[str(calls)] = list(logs)
        if caps:
            options = {None: list(logs), **{cap: held.log_errors([held.build({**fit, "trend_cap": cap}, calls)
                                                              for fit in fits]) for cap in caps}}
            cap = robust_choice(options)
            if cap is not None:
                chosen[str(calls)], free[str(calls)] = cap, options[cap]
        key = str(calls)
        if adapt:  # under a cap of 0 there is no trend to weigh: the same runs, so not measured
            kept_cap = {} if key not in chosen else {"trend_cap": chosen[key]}
            adapting = [held.build({**fit, **kept_cap, "adapt_trend": True}, calls) for fit in fits]
            on = held.log_errors(adapting) if chosen.get(key) != 0 else free[key]
            adapted["free"][key] = robust_choice({False: free[key], True: on})
            free[key] = on if adapted["free"][key] else free[key]
        if ends and adapt and key not in chosen:  # the same plans, so the free plan's choice
            last[key], adapted["last"][key] = list(free[key]), adapted["free"][key]
            continue
        lasts = fits  # the fold fits of the plans that compute the last step
        if ends:  # the same plans, uncapped where they compute the last step
            forced = list(logs)
        else:
            forced = held.variant_logs.get(calls) if final is None else None
        if not forced:
            try:
                lasts = (final_plans(final, whole, held, calls, num_steps, True) if final is not None
                         else held.fold_fits)
                policies = [held.build({**fit, "last_step": True}, calls) for fit in lasts]
                for policy in policies:
                    policy.planned_steps(num_steps)
            except ValueError:  # no plan of this budget can compute the last step
                continue
            forced = held.log_errors(policies)
        if adapt:
            on = held.log_errors([held.build({**fit, "last_step": True, "adapt_trend": True}, calls)
                                  for fit in lasts])
            adapted["last"][key] = robust_choice({False: forced, True: on})
            forced = on if adapted["last"][key] else forced
        if ends or clearly_lower(forced, free[key]):  # only where it beats the free plan (as kept) beyond the noise
            last[key] = list(forced)
    return free, last, chosen, adapted


def final_plans(final: dict[str, Any], whole: HeldOut, held: HeldOut, calls: int, num_steps: int,
                last_step: bool = False) -> list[dict[str, Any]]:
    """The fold fits of ``held`` (the candidate serving ``calls``), each pinned to the real steps of the plan of
    ``calls`` calls (computing the last step with ``last_step``) that ``final``, the fit on all runs, makes with
    that candidate (``whole``: the view of the chosen one). A fold fit's own plan of the same budget can differ from
    the profile's (other runs, other window costs), and then the budgets would be ranked on plans no user runs:
    on the scenes model at 50 UniPC steps the fold plans ranked 16 calls ahead of 15, and the profile's own plan of
    16 lost 1.6 dB to its plan of 15 on every held-out run."""
    profile = final["profile"]
    if held.label != whole.label:  # another candidate serves this budget (selection's per-budget choice)
        profile = {**profile, **(profile.get(BUDGET_FITS) or {}).get("fits", {}).get(held.label, {})}
    steps = held.build({**final, "profile": profile, **({"last_step": True} if last_step else {})},
                       calls).planned_steps(num_steps)
    return [{**fit, "profile": {**fit["profile"], PINNED: steps}} for fit in held.fold_fits]


__all__ = ["TREND_CAP_CANDIDATES", "budget_ladder", "refine_etc_plus", "refine_generations", "robust_choice"]
