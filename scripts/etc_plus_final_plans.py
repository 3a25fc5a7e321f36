"""ETC+ profiles calibrated with ``--set final_plans=true``, read off the benches of the profiles they stand beside.

Calibration measures every budget of the ladder on held-out runs and ``ETCPlus(calls=B)`` then runs, among the
measured plans of at most B calls, the one that came clearly closest. Without ``final_plans`` those measurements
are of the fold fits' own plans, which can differ from the plan the profile makes; with it, each fold fit runs the
profile's own plan. Either way a budget runs one of the profile's plans, so where the new profile's fits are the
old one's (the same candidate chosen, the window costs alike), every plan it runs was already benched at some
budget of the old profile, and its ladder can be read off those images:

- each budget of the ladder: the plan the new profile runs (real steps, last-step rule, trend cap, adapt_trend and
  the candidate serving it) and the budget of the old profile that ran the same plan, if any;
- the ladder those images give, pooled over the folders' seeds as ``etc_plus_ladder_seeds.py`` pools it (PSNR
  against the full-step image, identical images at 100 dB), beside the old profile's;
- the budgets whose plan no benched budget ran: read from the folders given that benched the new profile itself
  on the same images (``benched anew``), else left out (the ladder is then incomplete there). Where such a folder
  also ran budgets that were read off, the two are compared image by image (``read_off_gap_db``).

Where the two fits differ (another candidate chosen, or window costs more than :data:`COST_TOLERANCE` apart) the
case is listed without a ladder. Reading the old benches is only as good as the claim that the same plan of
nearly the same fit gives the same image; a bench of the new profile is the check.

Usage: python scripts/etc_plus_final_plans.py --case NEW_PROFILE FOLDER [FOLDER ...] [--case ...] [--out DIR]
       (FOLDER: benches of the profile it stands beside, and of NEW_PROFILE itself on the same images)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from etc_plus_ladder_seeds import ladder_runs, pooled, publish  # noqa: E402

from etcdiff.policies.step.etc_plus import ETCPlus  # noqa: E402

COST_TOLERANCE = 0.01  # the largest relative difference of two fits' window errors taken as the same fit


def profile_of(path: str | Path) -> dict[str, Any]:
    """The ETC+ profile in a saved calibration (``etcdiff calibrate`` JSON) or a bare profile JSON."""
    data = json.loads(Path(path).read_text())
    return data["settings"]["profile"] if "settings" in data else data


def plan_key(profile: dict[str, Any], calls: int, steps: int) -> tuple | None:
    """What ``ETCPlus(profile, calls=calls)`` runs at ``steps`` steps: its real steps, whether it computes the last
    step, its trend cap, adapt_trend and the candidate serving it (``None``: no plan of that budget)."""
    try:
        policy = ETCPlus(profile, calls=calls)
        planned = tuple(policy.planned_steps(steps))
    except ValueError:
        return None
    serve = ((profile.get("budget_fits") or {}).get("serve") or {}).get(str(policy.calls))
    return planned, policy.compute_last, policy.trend_cap, policy.adapt_trend, serve


def fit_difference(new: dict[str, Any], old: dict[str, Any]) -> str | None:
    """Why two profiles are not the same fit (``None``: the same candidate, window errors alike)."""
    chosen = [(p.get("selection") or {}).get("chosen") for p in (new, old)]
    if chosen[0] != chosen[1]:
        return f"another candidate chosen ({chosen[0]} against {chosen[1]})"
    a, b = new.get("segments") or [], old.get("segments") or []
    if len(a) != len(b) or any(x[:3] != y[:3] for x, y in zip(a, b)):
        return "other windows measured"
    gap = max((abs(x[3] - y[3]) / max(abs(y[3]), 1e-30) for x, y in zip(a, b)), default=0.0)
    return None if gap <= COST_TOLERANCE else f"window errors up to {100 * gap:.1f} % apart"


def read_off(new_path: Path, folders: list[Path]) -> dict[str, Any]:
    """The new profile's ladder read off the old profile's bench ``folders`` (module docstring); folders that
    benched the new profile itself fill the budgets no old plan ran, on the same images, and check the rest."""
    runs = [ladder_runs(f) for f in folders]
    own_runs = [ladder for (_, path, _), ladder in runs if Path(path).resolve() == new_path.resolve()]
    runs = [(case, ladder) for case, ladder in runs if Path(case[1]).resolve() != new_path.resolve()]
    cases = {case for case, _ in runs}
    if len(cases) != 1:
        raise SystemExit(f"{folders}: give the benches of one other profile at one step count: {sorted(cases)}.")
    (model, old_path, steps), = cases
    old, new = profile_of(old_path), profile_of(new_path)
    budgets = sorted({b for _, ladder in runs for b in ladder})
    out: dict[str, Any] = {"model": model, "steps": steps, "scheduler": (new.get("scheduler") or {}).get("class"),
                           "profile": str(new_path), "benched_profile": old_path, "folders": [str(f) for f in folders],
                           "old": pooled([ladder for _, ladder in runs])}
    differs = fit_difference(new, old)
    if differs:
        return {**out, "fits_differ": differs}
    own: dict[int, dict[tuple[str, int], float]] = {}
    for ladder in own_runs:
        for b, images in ladder.items():
            own.setdefault(b, {}).update(images)
    old_keys = {b: plan_key(old, b, steps) for b in budgets}
    plans: dict[str, dict[str, Any]] = {}
    for b in budgets:
        key = plan_key(new, b, steps)
        same = sorted((c for c in budgets if key is not None and old_keys[c] == key), key=lambda c: c != b)
        plans[str(b)] = {"calls": len(key[0]) if key else None, "last_step": bool(key and key[1]),
                         "benched_as": same[0] if same else ("own" if b in own else None)}
    matched = {b: plans[str(b)]["benched_as"] for b in budgets if plans[str(b)]["benched_as"] is not None}
    ladders = [{b: ({k: v for k, v in own[b].items() if k in ladder[min(ladder)]} if c == "own" else ladder[c])
                for b, c in matched.items() if c == "own" or c in ladder} for _, ladder in runs]
    every = {k for _, ladder in runs for k in ladder[min(ladder)]}
    for b, c in matched.items():
        if c == "own":
            plans[str(b)]["images"] = [len(every & own[b].keys()), len(every)]
    gaps = [abs(own[b][k] - ladder[c][k]) for b, c in matched.items() if c != "own" and b in own
            for _, ladder in runs if c in ladder for k in ladder[c] if k in own[b]]
    return {**out, "plans": plans, "changed": [b for b, c in matched.items() if c != b],
            "unbenched": [b for b in budgets if b not in matched], "new": pooled(ladders),
            "benched_new": sorted(own), "read_off_gap_db": None if not gaps else
            {"images": len(gaps), "mean": round(sum(gaps) / len(gaps), 3), "max": round(max(gaps), 3)},
            "tolerance_scale": [new.get("tolerance_scale"), old.get("tolerance_scale")]}


def markdown(cases: list[dict[str, Any]]) -> str:
    lines = ["| model | scheduler | steps | seeds | budgets whose plan changed (calls -> the benched budget with it) | "
             "worst drop +1 call, benched profile | read off for the new one | PSNR from N/5 to N/2 calls, new "
             "(old where it differs) | unbenched |", "|---|---|---|---|---|---|---|---|---|"]
    for c in cases:
        old = c["old"]
        if "fits_differ" in c:
            lines.append(f"| {c['model']} | {c['scheduler']} | {c['steps']} | {','.join(map(str, old['seeds']))} | "
                         f"not read off: {c['fits_differ']} | {old['worst_drop']:.2f} | | | |")
            continue
        new = c["new"]
        smaller = ", ".join(f"{b} -> {p['benched_as']}" for b, p in c["plans"].items()
                            if p["benched_as"] not in (None, "own", int(b))) or "none"
        benched = [b + ("" if p["images"][0] == p["images"][1] else f" ({p['images'][0]} of {p['images'][1]} images)")
                   for b, p in c["plans"].items() if p["benched_as"] == "own"]
        smaller += f"; benched anew: {', '.join(benched)}" if benched else ""
        psnr = " ".join(f"{b}:{v:.1f}" + (f" ({old['ladder_psnr'][b]:.1f})" if old["ladder_psnr"].get(b) != v else "")
                        for b, v in new["ladder_psnr"].items())
        lines.append(
            f"| {c['model']} | {c['scheduler']} | {c['steps']} | {','.join(map(str, old['seeds']))} | {smaller} | "
            f"{old['worst_drop']:.2f} ± {old['worst_drop_se_seeds']} ({old['worst_drop_at']} -> "
            f"{old['worst_drop_at'] + 1}) | {new['worst_drop']:.2f} ± {new['worst_drop_se_seeds']} "
            f"({new['worst_drop_at']} -> {new['worst_drop_at'] + 1}) | {psnr} | "
            f"{', '.join(map(str, c['unbenched'])) or 'none'} |")
    gaps = [c["read_off_gap_db"] for c in cases if c.get("read_off_gap_db")]
    read = [c for c in cases if "new" in c]
    over = [sum(c[k]["worst_drop"] > 1.0 for c in read) for k in ("old", "new")]
    lines += ["", f"Read off in {len(read)} of {len(cases)} cases; one more call cost over 1 dB on average in "
              f"{over[0]} of them with the benched profiles and {over[1]} with the new ones. ± is the standard error "
              "over the seeds. A budget the new profile serves with a smaller plan is read off the benched budget "
              "that ran the same plan; \"benched anew\": a plan no benched budget ran, benched on the same images."]
    if gaps:
        lines += ["", "Read off against benched anew, where both exist: " + "; ".join(
            f"{c['model']} {c['scheduler']} {c['steps']}: {g['images']} images, mean |difference| {g['mean']} dB, "
            f"max {g['max']} dB" for c in cases if (g := c.get("read_off_gap_db")))]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", action="append", nargs="+", required=True, metavar="PATH",
                    help="a new profile, then the bench folders of the profile it stands beside (and of itself)")
    ap.add_argument("--out", default="", help="folder for etc_plus_final_plans.json/.md (default: print only)")
    args = ap.parse_args()
    cases = []
    for new, *folders in args.case:
        if not folders:
            raise SystemExit(f"--case {new}: give the bench folders of the profile it stands beside after it.")
        cases.append(read_off(Path(new), [Path(f) for f in folders]))
    publish(cases, "etc_plus_final_plans", args.out, "ETC+ profiles calibrated with `final_plans=true`, their "
            "ladders read off the benches of the profiles they stand beside", markdown)


if __name__ == "__main__":
    main()
