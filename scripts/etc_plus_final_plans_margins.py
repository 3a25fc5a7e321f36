"""Item 1 of issue 25 for the ``final_plans`` profiles: ETC+'s front at 2x, 3x and 4x fewer calls with the benched
(default) profile and with its ``final_plans`` twin, beside the best other step method's front, all on the same
images, with no new generation.

Each case of ``etc_plus_final_plans.json`` (``scripts/etc_plus_final_plans.py``) says, for every budget of the
ladder, which benched budget ran the plan the new profile runs (or that the new profile was benched itself there).
So both profiles' ladders are points of (calls made, PSNR) on the bench folders' images, and their fronts follow
as the margin table's do (:func:`etcdiff.bench.front.front_at`: speedup in denoiser calls against the full run,
PSNR against the full-step image, identical images at 100 dB). The other methods' fronts come from the benches
of ``scripts/etc_plus_margins.py`` for the case (``BENCHES`` and ``extra_benches`` there), on the images they share with
the ladder folders, so every front of a row is taken on the same images. A budget whose images are not all there is
left out of that profile's front and listed.

Usage: python scripts/etc_plus_final_plans_margins.py [--cases docs/etc-plus/etc_plus_final_plans.json] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from etc_plus_ladder_seeds import publish  # noqa: E402
from etc_plus_ladder_tolerance import CAP_DB  # noqa: E402
from etc_plus_margins import BENCHES, MODELS, SCHEDULER_CLASSES, SPEEDUPS, extra_benches  # noqa: E402

from etcdiff.bench.front import front_at  # noqa: E402

SHORT = {name: short for short, name in SCHEDULER_CLASSES.items()}

Image = tuple[str, int]
Runs = dict[Image, tuple[float, float, float]]  # image -> (PSNR, calls, calls of the full run)


def bench_runs(folder: str | Path) -> dict[tuple[str, str, Any], Runs]:
    """``(method, profile, calls)`` (ETC+) or ``(method, setting label, None)`` -> the runs of that setting."""
    out: dict[tuple[str, str, Any], Runs] = defaultdict(dict)
    for r in json.loads(Path(folder, "results.json").read_text())["runs"]:
        if r.get("kind") != "run" or r.get("psnr") is None:
            continue
        setting = r.get("setting") or {}
        key = ((r["method"], str(Path(setting["profile"]).resolve()), setting.get("calls"))
               if r["method"] == "etc-plus" and "profile" in setting else (r["method"], r["setting_label"], None))
        out[key][(str(r["prompt"]), int(r["seed"]))] = (min(float(r["psnr"]), CAP_DB), float(r["nfe"]),
                                                        float(r["ref_nfe"]))
    return out


def point(runs: Runs, images: set[Image]) -> tuple[float, float] | None:
    """(speedup in calls, mean PSNR) over ``images``, or None where a run of them is missing."""
    if not images <= runs.keys():
        return None
    got = [runs[i] for i in sorted(images)]  # a fixed order: the same sums to the last digit
    return sum(g[2] for g in got) / sum(g[1] for g in got), sum(g[0] for g in got) / len(got)


def fronts(points: list[tuple[float, float]]) -> dict[str, float | None]:
    """The front of ``(speedup, PSNR)`` points at each of :data:`SPEEDUPS`."""
    return {f"{s:g}x": front_at(points, s) for s in SPEEDUPS}


def case_margins(case: dict[str, Any]) -> dict[str, Any]:
    """Both profiles' fronts and the best other method's on the images the case's folders share with its bench."""
    model, sched = MODELS.get(case["model"], case["model"]), SHORT[case["scheduler"]]
    bench = next((p for m, s, n, p in BENCHES if (m, s, n) == (model, sched, case["steps"])), None)
    if bench is None or not Path(bench).exists():
        raise SystemExit(f"{model} {sched} {case['steps']}: no bench of the other methods ({bench or 'none listed'} "
                         "in etc_plus_margins.BENCHES); bench them first.")
    ours: dict[tuple[str, str, Any], Runs] = defaultdict(dict)
    for folder in case["folders"]:
        for key, runs in bench_runs(folder).items():
            ours[key].update(runs)
    old, new = (str(Path(case[k]).resolve()) for k in ("benched_profile", "profile"))
    others: dict[tuple[str, str, Any], Runs] = defaultdict(dict)
    for path in (bench, *extra_benches(model, sched, case["steps"], bench)):
        for key, runs in bench_runs(Path(path).parent).items():
            if key[0] != "etc-plus":
                others[key].update(runs)
    images = set().union(*(ours[k] for k in ours if k[1] == old)) & set().union(*others.values())
    out = {"model": model, "scheduler": case["scheduler"], "steps": case["steps"], "bench": bench,
           "images": len(images), "seeds": sorted({s for _, s in images}), "missing": {"old": [], "new": []}}
    ladders: dict[str, list[tuple[float, float]]] = {"old": [], "new": []}
    for budget, plan in case.get("plans", {}).items():
        b = int(budget)
        for name, key in (("old", (old, b)), ("new", (new, b) if plan["benched_as"] == "own"
                                               else (old, plan["benched_as"]))):
            got = None if key[1] is None else point(ours.get(("etc-plus", *key), {}), images)
            if got:
                ladders[name].append(got)
            else:
                out["missing"][name].append(b)
    best: dict[str, tuple[float, str]] = {}
    for method in {k[0] for k in others}:
        pts = [p for k, runs in others.items() if k[0] == method and (p := point(runs, images))]
        for s, v in fronts(pts).items():
            if v is not None and v > best.get(s, (-1.0, ""))[0]:
                best[s] = (v, method)
    out.update({name: fronts(pts) for name, pts in ladders.items()})
    out["best_other"] = {s: {"psnr": v, "method": m} for s, (v, m) in best.items()}
    return out


def cell(c: dict[str, Any], s: str) -> str:
    """Both margins at speedup ``s`` over the best other method, or the fronts where no margin can be taken."""
    other = c["best_other"].get(s)
    old, new = c["old"][s], c["new"][s]
    if other is None or old is None or new is None:
        reach = "no other method reaches it" if other is None else "one profile does not reach it"
        return " / ".join("n/a" if v is None else f"{v:.1f}" for v in (old, new)) + f" dB ({reach})"
    return f"{old - other['psnr']:+.1f} / {new - other['psnr']:+.1f} ({other['method']}; {new - old:+.1f})"


def markdown(cases: list[dict[str, Any]]) -> str:
    lines = ["| model | scheduler | steps | images | 2x margin: default / final_plans (best other; change) | 3x | 4x "
             "| budgets left out |", "|---|---|---|---|---|---|---|---|"]
    for c in cases:
        left = "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in c["missing"].items() if v) or "none"
        lines.append(f"| {c['model']} | {c['scheduler']} | {c['steps']} | {c['images']} (seeds "
                     f"{','.join(map(str, c['seeds']))}) | " + " | ".join(cell(c, f"{s:g}x") for s in SPEEDUPS)
                     + f" | {left} |")
    changes = [c["new"][k] - c["old"][k] for c in cases for k in c["old"] if None not in (c["new"][k], c["old"][k])]
    below = {name: sum(any(c["best_other"].get(k) and c[name][k] is not None and
                           c[name][k] < c["best_other"][k]["psnr"] for k in c[name]) for c in cases)
             for name in ("old", "new")}
    lines += ["", f"Front change with final_plans over {len(changes)} (case, speedup) cells: mean "
              f"{sum(changes) / max(1, len(changes)):+.2f} dB, from {min(changes, default=0):+.1f} to "
              f"{max(changes, default=0):+.1f}. Below the best other method at some speedup: {below['old']} of "
              f"{len(cases)} cases with the benched profile, {below['new']} with final_plans. Each front is read "
              "off the profile's whole ladder (every budget from N/5 to N/2 calls), so it can differ from the "
              "margin table's, which interpolates between the few ETC+ settings a bench ran: a measured budget "
              "between two of them can lie below the line joining them."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default="docs/etc-plus/etc_plus_final_plans.json",
                    help="a JSON of scripts/etc_plus_final_plans.py (default: %(default)s)")
    ap.add_argument("--out", default="", help="folder for etc_plus_final_plans_margins.json/.md (default: print)")
    args = ap.parse_args()
    cases = [case_margins(c) for c in json.loads(Path(args.cases).read_text()) if "plans" in c]
    publish(cases, "etc_plus_final_plans_margins", args.out, "ETC+'s margin over the best other step method at 2x, "
            "3x and 4x, with the benched profile and its final_plans twin read off the same images", markdown)


if __name__ == "__main__":
    main()
