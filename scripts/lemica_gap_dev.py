"""Where ETC+'s gap to LeMiCa on the scenes model comes from, asked of development captions (a diagnostic; never the
evaluation captions). LeMiCa run with ETC's trend (``predictor="etc"``) is the best other step method in most scenes
cells; it differs from ETC+ in two things at once, its schedule (a lexicographic-minimax path searched for that
predictor) and its predictor (ETC's recursive trend instead of ETC+'s fitted gains). Per budget N/2, N/3 (rounded)
and N/4, on each case's development bench captions (``docs/scenes/bench/dev-schedules/CASE``), this runs:

- ``A``: ETC+ as committed (``calls=B``; the profile's budget records may run a smaller plan);
- ``A0``: the same fit without its budget records, so its own plan of exactly B calls;
- ``B``: ``A0``'s fit pinned to LeMiCa's schedule (the profile's ``pinned_steps``): the schedule's effect is B - A0;
- ``C``: LeMiCa with ETC's trend on that schedule: the predictor's effect is C - B;
- ``P<p>`` (``--power p``): ``A0`` planned on its window errors to the power p instead of 2 (p = 8 is close to
  LeMiCa's minimax: no single window may carry a large error).

``--rev`` takes the profiles as they were at a commit (``git show``). ``--summary`` prints each effect's mean and
how many budgets it raised and lowered.

Usage: PYTHONPATH=src python scripts/lemica_gap_dev.py CASE --out RECORDS.jsonl [--seeds 6,7,8,9] [--power 8] [--rev R]
       python scripts/lemica_gap_dev.py --summary RECORDS.jsonl [...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from statistics import mean
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from profile_pair_dev import change_line, dev_runner  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BUDGET_KEYS = ("budget_errors", "budget_errors_last", "budget_logs", "budget_logs_last", "budget_fits",
               "budget_schedules", "budget_trend_caps", "budget_adapt_trend")


def read_json(path: str, rev: str) -> dict[str, Any]:
    """A repository JSON file, as committed at ``rev`` where one is given."""
    if not rev:
        return json.loads((ROOT / path).read_text())
    return json.loads(subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, capture_output=True, text=True,
                                     check=True).stdout)


def variant(saved: dict[str, Any], pinned: list[int] | None = None, power: float = 2.0) -> dict[str, Any]:
    """A copy of a saved ETC+ profile without its budget records, optionally pinned to ``pinned`` or planned on its
    window errors to the power ``power`` (the planner squares the stored error)."""
    out = json.loads(json.dumps(saved))
    profile = out["settings"]["profile"]
    for key in BUDGET_KEYS:
        profile.pop(key, None)
    if pinned is not None:
        profile["pinned_steps"] = pinned
    if power != 2.0:
        profile["segments"] = [[a, b, c, e ** (power / 2)] for a, b, c, e in profile["segments"]]
    return out


def measure(case: str, seeds: list[int], out: str, power: float | None, rev: str) -> None:
    """One record per (caption, seed, variant, budget) in ``out`` (JSON lines)."""
    import numpy as np

    from etcdiff.metrics import psnr
    from etcdiff.policies.step.lemica import search_leximax

    config, steps, generate = dev_runner(case)
    plus = next(g["setting"]["profile"] for g in config["grid"] if g["method"] == "etc-plus")
    lemica = next(g["setting"]["profile"] for g in config["grid"] if g["method"] == "lemica")
    saved, saved_lemica = read_json(plus, rev), read_json(lemica, rev)
    costs = saved_lemica["settings"]["profile"]["costs"]["etc"]
    tmp = Path(tempfile.mkdtemp(prefix="lemica-gap-"))

    def written(name: str, data: dict[str, Any]) -> str:
        path = tmp / f"{name}.json"
        path.write_text(json.dumps(data))
        return str(path)

    same = {"A": written("A", saved), "A0": written("A0", variant(saved)),  # the profiles every budget shares
            "C": written("C", saved_lemica) if rev else str(ROOT / lemica),
            **({"P": written("P", variant(saved, power=power))} if power is not None else {})}
    runs: list[tuple[str, int, str, dict[str, Any]]] = []
    for calls in (steps // 2, round(steps / 3), steps // 4):
        schedule = search_leximax(costs, calls)
        runs += [("A", calls, "etc-plus", {"profile": same["A"]}),
                 ("A0", calls, "etc-plus", {"profile": same["A0"]}),
                 ("B", calls, "etc-plus", {"profile": written(f"B{calls}", variant(saved, schedule))}),
                 ("C", calls, "lemica", {"profile": same["C"], "predictor": "etc"})]
        if power is not None:
            runs.append((f"P{power:g}", calls, "etc-plus", {"profile": same["P"]}))
    with open(out, "w") as fh:
        for seed in seeds:
            for prompt in config["prompts"]:
                ref, _ = generate(prompt, seed)
                for name, calls, method, settings in runs:
                    image, real = generate(prompt, seed, method, calls=calls, **settings)
                    fh.write(json.dumps({"case": case, "variant": name, "calls": calls, "prompt": prompt,
                                         "seed": seed, "psnr": float(np.mean(psnr(ref, image))),
                                         "steps": real}) + "\n")


def summary(paths: list[str]) -> str:
    """Each effect's mean over the budgets measured, and at how many it was above and below zero."""
    psnrs: dict[tuple, list[float]] = defaultdict(list)
    for path in paths:
        for line in Path(path).read_text().splitlines():
            row = json.loads(line)
            psnrs[(row["case"], row["calls"], row["variant"])].append(row["psnr"])
    means = {key: mean(v) for key, v in psnrs.items()}
    budgets = sorted({(case, calls) for case, calls, _ in means})
    names = sorted({name for *_, name in means if name.startswith("P")})
    effects = [("LeMiCa with ETC's trend minus ETC+ (C - A)", "C", "A"), ("the schedule (B - A0)", "B", "A0"),
               ("the predictor on that schedule (C - B)", "C", "B"),
               *((f"ETC+'s errors to the power {n[1:]} (P - A0)", n, "A0") for n in names)]
    lines = []
    for label, new, old in effects:
        d = [means[(c, b, new)] - means[(c, b, old)] for c, b in budgets
             if (c, b, new) in means and (c, b, old) in means]
        if d:
            lines.append(f"{label}: {change_line(d)}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("args", nargs="+", help="CASE, or the records with --summary")
    ap.add_argument("--seeds", default="6,7,8,9")
    ap.add_argument("--out", default="", help="records (JSON lines)")
    ap.add_argument("--power", type=float, default=None, help="also ETC+ planned on its errors to this power")
    ap.add_argument("--rev", default="", help="the profiles as committed at this revision")
    ap.add_argument("--summary", action="store_true", help="summarise records instead of measuring")
    a = ap.parse_args()
    if a.summary:
        print(summary(a.args))
        return
    if len(a.args) != 1 or not a.out:
        ap.error("give one CASE and --out RECORDS.jsonl")
    measure(a.args[0], [int(s) for s in a.seeds.split(",")], a.out, a.power, a.rev)


if __name__ == "__main__":
    main()
