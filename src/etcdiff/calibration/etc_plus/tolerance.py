"""ETC+'s tolerance mode checked on held-out calibration runs (:func:`~.refine.refine_etc_plus` calls it).

The planning tolerance is scaled down (``"tolerance_scale"``: :func:`tolerance_scale`) until at least
:data:`TOLERANCE_SHARE` of the held-out runs end within the profile's target: the choice's held-out runs, and the
probed runs each held out alone with a fit on the others (the choice cannot hold them out; with 5 prompts it holds
out 2 runs, too few for a share). Where the held-out runs are replays, the share must also hold on the runs the
replays' feedback was fitted on, run for real: a replay's model pulls a strayed sample back linearly, which can
flatter the long windows a loose tolerance plans.

Where no scale held, the fewest calls of the ladder under which the share holds serve the tolerance mode instead
(``"tolerance_calls"``: :func:`tolerance_budget`). Where one held, the tolerance mode plans online as calibrated,
even where a budget of fewer calls also held on the calibration runs: serving such a budget was tried and failed
on the held-out UNet (3 of 9 cases fell to 50-60 % of the evaluation images within the target, from 100 %).
"""

from __future__ import annotations

import math
from typing import Any

from ...policies.step.etc_plus.budgets import TOLERANCE_CALLS, ranked_plan
from ..selection import HeldOut

TOLERANCE_SHARE = 0.95  # the share of held-out calibration runs that must end within the target
TOLERANCE_ROUNDS = 4  # at most this many tolerance-mode passes over the held-out runs
REAL_ROUNDS = 2  # of which at most this many also run for real, where the held-out runs are replays
BISECT_UNTIL = 1.15  # once a scale holds, passes left try looser ones until the one that failed is this close
MARGIN = 0.9  # where the scale search aims the run at the share's edge (its ratio to the target); a looser scale
#               tried once one held is kept only where that run ends at least this far within
NIL = 1e-4  # an error below this share of the target: a run that computed every step (float noise)


def tolerance_scale(held: HeldOut) -> tuple[float, dict[str, Any]]:
    """The factor on the planning tolerance under which :data:`TOLERANCE_SHARE` of the held-out runs end within the
    profile's default tolerance, and a record of the passes (``share`` within per pass; ``calls``: the mean calls
    the runs made; ``over``: the runs beyond the target, each with its ratio to it) and of how many runs were
    checked (``runs``: the choice's held-out runs and, where ``held.probed`` gives them, the probed runs, each held
    out alone, listed in ``probed``: :func:`~etcdiff.calibration.selection.probed_held_out`). Each failed pass
    scales the tolerance by :data:`MARGIN` over the ratio to the target of the run at the share's edge (each pass
    records it: ``edge``); once a pass holds, the passes left try the scale halfway (geometrically) to the smallest
    one that failed, and the loosest scale that held is kept (the first scale that holds can be far tighter than
    needed: one stubborn run sets it). A failed pass that moved nothing (the share and the edge of the pass before:
    no plan that counts changed) says nothing of how far the scale must go, so its next step is twice the last one
    in log scale (gmm-flow under Euler at 28 steps: four passes from 1 to 0.52 left the same two runs beyond the
    target, where 0.21 holds); where the edge moved at all, the step is its ratio's. A halfway scale holds only with
    the margin the search aims for (the edge within :data:`MARGIN`): on a few runs, one that ends just within the
    target says little of the next images (the UNet under DPM-Solver++ at 50 steps: 5 of 5 calibration runs within
    at 0.40, 6 of 10 evaluation images; at 0.30, 10 of 10). Where no pass held, the last scale, tightened after the
    last pass, is kept unchecked. Where the held-out runs are replays, the share must hold on the replays and then,
    run for real, on the runs of ``held.real`` (which are run only in passes where the replays already hold: at most
    :data:`REAL_ROUNDS` times). There the record also keeps ``"replay_miss"``: the rms of log(real / replayed error)
    over those runs, how far the replays are from the real runs for the chosen fit's own plans (the pull is fitted
    on another candidate's), left out where no run skipped a step (both errors nil: a replay of computed steps is
    exact, so it tests nothing)."""
    scale, passes, real_rounds, ratios = 1.0, [], 0, []
    held_at, failed_at, last, step = None, None, None, 0.0  # the last failed pass's (share, edge) and log step
    probed, checked, targets = _checked_runs(held)
    for _ in range(TOLERANCE_ROUNDS):
        def with_scale(fit: dict[str, Any], s: float = scale) -> dict[str, Any]:
            return {**fit, "profile": {**fit["profile"], "tolerance_scale": s}}

        counted: list[int] = []
        replayed = [got for one in checked for got in one.measure(None, with_scale, counted=counted)]
        share, worst = _share(replayed, targets)
        record = {"scale": round(scale, 5), "within": round(share, 4), "edge": round(worst, 4),
                  "calls": round(sum(counted) / len(counted), 2), **_over(replayed, targets)}
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
    probed, _, targets = _checked_runs(held)
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


def check_tolerance(profile: dict[str, Any], held: HeldOut, ladder: list[int]) -> str | None:
    """Set ``profile``'s ``tolerance_scale`` and ``tolerance_check`` (:func:`tolerance_scale`) and, where no scale
    held and a budget of ``ladder`` holds the share instead (:func:`tolerance_budget`; not on replays: their real
    runs are bounded), ``tolerance_calls``. Returns the note for the user where no scale held
    (:func:`unmet_tolerance`), else None."""
    profile["tolerance_scale"], check = tolerance_scale(held)
    profile["tolerance_check"] = check
    if not check["met"] and held.real is None:
        calls, check["budgets"] = tolerance_budget(held, ladder, profile)
        if calls is not None:
            profile[TOLERANCE_CALLS] = calls
    return unmet_tolerance(check, profile.get(TOLERANCE_CALLS))


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


def _checked_runs(held: HeldOut) -> tuple[HeldOut | None, list[HeldOut], dict[int, float]]:
    """The runs a tolerance check measures: the probed runs each held out alone (None where ``held`` has none),
    those and ``held`` together, and each run's target (its fold fit's ``tolerance``)."""
    probed = held.probed() if held.probed is not None else None
    checked = [held] + ([probed] if probed is not None else [])
    targets = {i: float(fit["profile"]["tolerance"]) for one in checked
               for fold, fit in zip(one.folds, one.fold_fits) for i in fold}
    return probed, checked, targets


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


__all__ = ["MARGIN", "REAL_ROUNDS", "TOLERANCE_ROUNDS", "TOLERANCE_SHARE", "check_tolerance",
           "held_tolerance", "tolerance_budget", "tolerance_scale", "unmet_tolerance"]
