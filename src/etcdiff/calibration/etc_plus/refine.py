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
- **tolerance**: the tolerance mode runs on the held-out runs, and on the probed runs each held out alone with a
  fit on the others (the choice cannot hold them out; with 5 prompts it holds out 2 runs, too few for a share),
  and the planning tolerance is scaled down (``"tolerance_scale"``) until at least :data:`TOLERANCE_SHARE` of
  them end within the target. Where the
  held-out runs are replays, the share must hold on the replays and also, run for real, on the runs the
  replays' feedback was fitted on: a replay's model pulls a strayed sample back linearly, which can flatter the
  long windows a loose tolerance plans, and three real runs alone are too few to bound a share of 95 %. Where no
  scale held (and the held-out runs are real), the budgets of the ladder run on the same runs, and the fewest
  calls under which the share holds serve the tolerance mode instead (``"tolerance_calls"``:
  :func:`tolerance_budget`).

The generations it makes are counted by :func:`refine_generations`.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

from ...policies.step.etc_plus.budgets import (ADAPT, BUDGET_FITS, FREE, LAST, LOGS, TOLERANCE_CALLS, TREND_CAPS,
                                               clearly_lower, ranked_plan)
from ...policies.step.etc_plus.plan import PINNED
from ...policies.step.etc_plus.schedules import SCHEDULE_FIT
from ..selection import HeldOut
from .schedules import measure_schedules

TOLERANCE_SHARE = 0.95  # the share of held-out calibration runs that must end within the target
TOLERANCE_ROUNDS = 4  # at most this many tolerance-mode passes over the held-out runs
REAL_ROUNDS = 2  # of which at most this many also run for real, where the held-out runs are replays
BISECT_UNTIL = 1.15  # once a scale holds, passes left try looser ones until the one that failed is this close
MARGIN = 0.9  # where the scale search aims the run at the share's edge (its ratio to the target); a looser scale
#               tried once one held is kept only where that run ends at least this far within
TREND_CAP_CANDIDATES = (0.5, 0.25, 0.0)  # the caps on the trend a budget's plan is also run with (opt-in)
NIL = 1e-4  # an error below this share of the target: a run that computed every step (float noise)
ADAPT_FIT = "adapt_trend"  # the fit setting (opt-in) under which each budget's plans also run with adapt_trend
FINAL_PLANS_FIT = "final_plans"  # the fit setting (opt-in) under which the budgets rank the final fit's plans


def budget_ladder(num_steps: int) -> list[int]:
    """Every budget from ``ceil(N/5)`` to ``N/2`` calls (at least 2)."""
    return list(range(max(2, -(-num_steps // 5)), max(2, num_steps // 2) + 1))


def refine_generations(held_out: int, num_steps: int, measured: int, probed: int = 0) -> int:
    """Generations the checks make at most: the unmeasured budgets of the ladder, the ladder's plans computing the
    last step, the tolerance passes and, where none held, the budgets :func:`tolerance_budget` tries, over the
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
    profile["tolerance_scale"], profile["tolerance_check"] = tolerance_scale(held)
    if not profile["tolerance_check"]["met"] and held.real is None:  # not on replays: their real runs are bounded
        ladder = budget_ladder(int(profile["num_steps"]))
        calls, profile["tolerance_check"]["budgets"] = tolerance_budget(held, ladder, profile)
        if calls is not None:
            profile[TOLERANCE_CALLS] = calls
    note = unmet_tolerance(profile["tolerance_check"], profile.get(TOLERANCE_CALLS))
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


def tolerance_scale(held: HeldOut) -> tuple[float, dict[str, Any]]:
    """The factor on the planning tolerance under which :data:`TOLERANCE_SHARE` of the held-out runs end within
    the profile's default tolerance, and a record of the passes (``share`` within per pass; ``over``: the runs
    beyond the target, each with its ratio to it) and of how many runs were checked (``runs``: the choice's
    held-out runs and, where ``held.probed`` gives them, the probed runs, each held out alone, listed in
    ``probed``: :func:`~etcdiff.calibration.selection.probed_held_out`). Each failed pass scales the
    tolerance by :data:`MARGIN` over the ratio to the target of the run at the share's edge (each pass records it:
    ``edge``); once a pass holds, the passes left try the scale halfway (geometrically) to the smallest one that
    failed, and the loosest scale that held is kept (the first scale that holds can be far tighter than needed: one
    stubborn run sets it). A failed pass that moved nothing (the share and the edge of the pass before: no plan
    that counts changed) says nothing of how far the scale must go, so its next step is twice the last one in log
    scale (gmm-flow under Euler at 28 steps: four passes from 1 to 0.52 left the same two runs beyond the target,
    where 0.21 holds); where the edge moved at all, the step is its ratio's. A halfway scale holds only with the
    margin the search aims for (the edge within :data:`MARGIN`): on a few runs, one that ends just within the
    target says little of the next images (the UNet under DPM-Solver++ at 50 steps: 5 of 5 calibration runs within
    at 0.40, 6 of 10 evaluation images; at 0.30, 10 of 10). Where no pass held, the last scale, tightened after
    the last pass, is kept unchecked. Where the held-out runs are replays, the share must hold on the replays and
    then, run for real, on the runs of ``held.real`` (which are run only in passes where the replays already hold:
    at most :data:`REAL_ROUNDS` times). There the record also keeps ``"replay_miss"``: the rms of log(real /
    replayed error) over those runs, how far the replays are from the real runs for the chosen fit's own plans
    (the pull is fitted on another candidate's), left out where no run skipped a step (both errors nil: a replay
    of computed steps is exact, so it tests nothing)."""
    scale, passes, real_rounds, ratios = 1.0, [], 0, []
    held_at, failed_at, last, step = None, None, None, 0.0  # the last failed pass's (share, edge) and log step
    probed = held.probed() if held.probed is not None else None
    checked = [held] + ([probed] if probed is not None else [])
    targets = {i: float(fit["profile"]["tolerance"]) for one in checked
               for fold, fit in zip(one.folds, one.fold_fits) for i in fold}
    for _ in range(TOLERANCE_ROUNDS):
        def with_scale(fit: dict[str, Any], s: float = scale) -> dict[str, Any]:
            return {**fit, "profile": {**fit["profile"], "tolerance_scale": s}}

        replayed = [got for one in checked for got in one.measure(None, with_scale)]
        share, worst = _share(replayed, targets)
        record = {"scale": round(scale, 5), "within": round(share, 4), "edge": round(worst, 4),
                  **_over(replayed, targets)}
        if share >= TOLERANCE_SHARE and held.real is not None:
            if real_rounds >= REAL_ROUNDS:  # the replays held where no real run is left to check them
                passes.append(record)
                break
            real_rounds += 1
            real = held.measure(None, with_scale, real=True)
            real_share, real_worst = _share(real, targets)
            record["within_real"] = round(real_share, 4)
            record.update(_over(real, targets, "over_real"))
            share, worst = min(share, real_share), max(worst, real_worst)
            record["edge"] = round(worst, 4)
            ratios += _log_ratios(real, replayed, targets)
        passes.append(record)
        if share >= TOLERANCE_SHARE and (held_at is None or worst <= MARGIN):
            held_at = scale
        else:
            failed_at = scale if failed_at is None else min(failed_at, scale)
        if held_at is None:  # aim the edge at MARGIN, or twice the last step where that step moved nothing
            step = 2.0 * step if last == (share, worst) else math.log(worst / MARGIN)
            scale, last = scale * math.exp(-step), (share, worst)
            continue
        if failed_at is None or failed_at / held_at < BISECT_UNTIL:
            break  # held at the default, or already close to the scale that failed
        if held.real is not None and real_rounds >= REAL_ROUNDS:
            break  # a looser scale could not be checked for real
        scale = math.sqrt(held_at * failed_at)
    met = held_at is not None
    check = {"share": TOLERANCE_SHARE, "runs": len(targets), "passes": passes, "met": met}
    if probed is not None:
        check["probed"] = sorted(i for fold in probed.folds for i in fold)
    if ratios:  # the chosen fit's own plans, replayed and run for real on the same runs
        check["replay_miss"] = round(math.sqrt(sum(r * r for r in ratios) / len(ratios)), 4)
    return (held_at if met else scale), check


def tolerance_budget(held: HeldOut, ladder: list[int], profile: dict[str, Any]
                     ) -> tuple[int | None, list[dict[str, Any]]]:
    """Where :func:`tolerance_scale` found no scale that held: the fewest calls of ``ladder`` under which the plan
    ``ETCPlus(profile, calls=B)`` runs (:func:`~etcdiff.policies.step.etc_plus.budgets.ranked_plan`, run by the fold
    fits) ends within the target on :data:`TOLERANCE_SHARE` of the runs that check checked (``None`` where the
    largest budget does not), by bisection from the largest (more calls end closer, as the ladder measured), and
    the budgets tried (``calls``; ``runs``: the plan's calls and whether it computes the last step; ``within``;
    ``edge``: the ratio to the target at the share's edge). A multistep solver can make the tolerance mode miss at
    every scale while a plan of a few calls holds (gmm-flow under DPM-Solver++ at 20 steps: 90 % of the
    calibration runs within at best, 70 % of the evaluation images at the scale kept). A budget a searched schedule
    serves (opt-in) is checked with the fold fits' plan of as many calls, as the ladder measures budgets."""
    probed = held.probed() if held.probed is not None else None
    checked = [held] + ([probed] if probed is not None else [])
    targets = {i: float(fit["profile"]["tolerance"]) for one in checked
               for fold, fit in zip(one.folds, one.fold_fits) for i in fold}
    tried: list[dict[str, Any]] = []
    measured: dict[tuple[int, bool], tuple[float, float]] = {}

    def holds(calls: int) -> bool:
        plan = ranked_plan(profile, calls)  # the plan this budget runs, measured once
        if plan not in measured:
            runs, last = plan
            forced = (lambda fit: {**fit, "last_step": True}) if last else (lambda fit: fit)
            got = held.for_calls(runs).measure(runs, forced) + (
                probed.measure(runs, forced) if probed is not None else [])
            measured[plan] = _share(got, targets)
        share, worst = measured[plan]
        tried.append({"calls": calls, "runs": [plan[0], plan[1]], "within": round(share, 4),
                      "edge": round(worst, 4)})
        return share >= TOLERANCE_SHARE

    if not ladder or not holds(ladder[-1]):
        return None, tried
    lo, hi = 0, len(ladder) - 1  # ladder[hi] holds
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if holds(ladder[mid]) else (mid + 1, hi)
    return ladder[hi], tried


def unmet_tolerance(check: dict[str, Any], calls: int | None = None) -> str | None:
    """A sentence for the user where :func:`tolerance_scale` found no scale under which the share held (and, with
    ``calls``, the budget :func:`tolerance_budget` found to hold instead), else None."""
    if check.get("met", True):
        return None
    last = check["passes"][-1]
    within = _within(last)
    if within >= check["share"]:  # replays held where no real run was left to check them
        seen = f"held on the replays at its last scale ({last['scale']:g}), which no real run checked"
    else:
        seen = (f"ended within its target on {100 * within:.0f} % of the {check.get('runs', '?')} held-out "
                f"calibration runs at its last checked scale ({last['scale']:g})")
    asked = f"(asked: {100 * check['share']:.0f} %, {len(check['passes'])} passes)"
    if calls is not None:
        return (f"the tolerance mode {seen} {asked}, so it runs the {calls}-call plan instead, under which "
                f"{100 * _budget_within(check, calls):.0f} % ended within the target (calls=N or tolerance=T asks "
                "otherwise).")
    return (f"the tolerance mode {seen} {asked}, so more images than that may exceed the tolerance: calibrate on "
            "more prompts, or run with calls=N.")


def held_tolerance(profile: dict[str, Any]) -> str | None:
    """The tolerance check's result in words where a scale held (where none did, :func:`unmet_tolerance` speaks),
    e.g. ``tolerance mode: planned at 0.43 times the tolerance, under which 100 % of 10 held-out calibration runs
    ended within the target (RMS 0.021; 3 passes)``, or where a budget serves the tolerance mode instead
    (:func:`tolerance_budget`), that budget's; None for a profile without a check that held."""
    check, scale = profile.get("tolerance_check"), profile.get("tolerance_scale")
    calls = profile.get(TOLERANCE_CALLS)
    if check and calls is not None:
        within = _budget_within(check, calls)
        return (f"tolerance mode: runs the {calls}-call plan, under which {100 * within:.0f} % of "
                f"{check.get('runs', 'the')} held-out calibration runs ended within the target (RMS "
                f"{profile['tolerance']:.2g}; no planning scale held it)")
    if not check or not check.get("met") or scale is None:
        return None
    kept = min(check["passes"], key=lambda p: abs(p["scale"] - scale))
    runs = f" of {check['runs']}" if check.get("runs") else " of the"
    passes = len(check["passes"])
    return (f"tolerance mode: planned at {scale:.2g} times the tolerance, under which {100 * _within(kept):.0f} %"
            f"{runs} held-out calibration runs ended within the target (RMS {profile['tolerance']:.2g}; {passes} "
            f"pass{'es' * (passes != 1)}){_set_by(check, scale)}")


def _budget_within(check: dict[str, Any], calls: int) -> float:
    """The share of runs within the target under the budget :func:`tolerance_budget` kept (``check["budgets"]``)."""
    return next(t["within"] for t in check.get("budgets", []) if t["calls"] == calls)


def _set_by(check: dict[str, Any], scale: float) -> str:
    """Where one calibration run alone failed the tightest pass looser than ``scale``, a clause that names it
    (and whether it was a probed run, held out with the other probed runs' probes only); else empty."""
    failed = [p for p in check["passes"] if p["scale"] > scale and _within(p) < check["share"]]
    if not failed:
        return ""
    tightest = min(failed, key=lambda p: p["scale"])
    runs = {i for i, _ in tightest.get("over", []) + tightest.get("over_real", [])}
    if len(runs) != 1:
        return ""
    run = runs.pop()
    probed = ", a probed run held out with the other probed runs' probes" if run in check.get("probed", []) else ""
    others = f"the other {check['runs'] - 1}" if check.get("runs") else "the others"
    return (f"; one run alone (calibration prompt {run + 1}{probed}) held the scale below {tightest['scale']:.2g}, "
            f"where {others} ended within")


def _within(record: dict[str, Any]) -> float:
    """A pass's share within the target: of the replays and, where they ran, of the real runs, the lower."""
    return min(record["within"], record.get("within_real", 1.0))


def _log_ratios(real: list[tuple[int, float]], replayed: list[tuple[int, float]], targets: dict[int, float]
                ) -> list[float]:
    """log(real error / replayed error) of each run that was both run for real and replayed, but for runs where
    both errors are nil (below :data:`NIL` of the target): a plan that computed every step."""
    again = dict(replayed)
    return [math.log(max(err, 1e-30) / max(again[i], 1e-30)) for i, err in real
            if i in again and max(err, again[i]) > NIL * targets[i]]


def _ratios(errors: list[tuple[int, float]], targets: dict[int, float]) -> list[tuple[int, float]]:
    """``(run, error / the run's target)``: within the target where at most 1."""
    return [(i, err / max(targets[i], 1e-30)) for i, err in errors]


def _over(errors: list[tuple[int, float]], targets: dict[int, float], key: str = "over") -> dict[str, Any]:
    """``{key: [[run, ratio to its target], ...]}`` for the runs that ended beyond their target; empty where none."""
    over = sorted([i, round(r, 4)] for i, r in _ratios(errors, targets) if r > 1.0)
    return {key: over} if over else {}


def _share(errors: list[tuple[int, float]], targets: dict[int, float]) -> tuple[float, float]:
    """The share of ``(run, error)`` within the run's target, and the ratio to the target at that share."""
    ratios = sorted(r for _, r in _ratios(errors, targets))
    worst = ratios[min(len(ratios) - 1, math.ceil(TOLERANCE_SHARE * len(ratios)) - 1)]
    return sum(r <= 1.0 for r in ratios) / len(ratios), worst


__all__ = ["TOLERANCE_SHARE", "TREND_CAP_CANDIDATES", "budget_ladder", "held_tolerance", "refine_etc_plus",
           "refine_generations", "robust_choice", "tolerance_budget", "unmet_tolerance"]
