"""Score budget-ranking rules offline on a solver grid run with ``--raw-ladder`` (``scripts/etc_plus_solvers.py``).

Such a run keeps, per case, the evaluation PSNR of every budget's free plan and of its plan computing the last step
(``raw_ladder``), and the calibration's per-run budget errors (``budget_logs``). A ranking rule maps a budget B and
those errors to the plan it runs; its evaluation PSNR is then read from the raw ladder, so any rule is scored on
the same runs without generating anything. Rules:

- ``walk-up``: :func:`etcdiff.policies.step.etc_plus.budgets.ranked_plan` (the one ETC+ runs);
- ``walk-up-1.5se``, ``walk-up-2se``: the same with a bigger plan kept only where it is closer by 1.5 or 2 standard
  errors instead of 1;
- ``lowest-mean``: the same without the per-run errors (the plan with the least mean error);
- ``asked-unless-smaller-clearly-closer``: the plan of B calls unless a smaller one is clearly closer.

Usage: python scripts/budget_ranking_rules.py GRID.json [GRID.json ...]
Prints per case the worst PSNR drop when one more call is given and the PSNR at N/2, N/3, N/4 calls, then per
rule the cases over 1 dB, the worst drop and the mean of those PSNRs.
"""

from __future__ import annotations

import json
import statistics
import sys
from typing import Any, Callable

from etcdiff.policies.step.etc_plus.budgets import FREE, LAST, LOGS, clearly_lower, ranked_plan


def asked_unless_smaller(profile: dict[str, Any], calls: int) -> tuple[int, bool]:
    """Walk the plans up, a bigger one replacing the kept one unless the kept one is clearly lower on the same
    runs (at one budget, the last-step plan replaces the free one only where it is clearly lower)."""
    options = sorted((int(k), kind == LAST, (profile.get(LOGS[kind]) or {}).get(k))
                     for kind in (FREE, LAST) for k in (profile.get(kind) or {}) if int(k) <= calls)
    kept = options[0]
    for option in options[1:]:
        bigger = option[0] > kept[0]
        if (not clearly_lower(kept[2], option[2])) if bigger else clearly_lower(option[2], kept[2]):
            kept = option
    return kept[0], kept[1]


RULES: dict[str, Callable[[dict[str, Any], int], tuple[int, bool]]] = {
    "walk-up": ranked_plan,
    "walk-up-1.5se": lambda p, b: ranked_plan(p, b, margin=1.5),
    "walk-up-2se": lambda p, b: ranked_plan(p, b, margin=2.0),
    "lowest-mean": lambda p, b: ranked_plan({k: v for k, v in p.items() if k not in LOGS.values()}, b),
    "asked-unless-smaller-clearly-closer": asked_unless_smaller,
}


def score(case: dict[str, Any], rule: Callable[[dict[str, Any], int], tuple[int, bool]]) -> tuple[float, list]:
    """The worst drop (dB) when one more call is given, and the PSNR at N/2, N/3, N/4 calls, under ``rule``."""
    extra = case["extra"]["etc-plus"]
    raw, logs, n = extra["raw_ladder"], extra["budget_logs"], case["steps"]
    psnr = {}
    for b in sorted(int(k) for k in logs.get(FREE) or {}):
        k, last = rule(logs, b)
        psnr[b] = raw.get(f"{k}{'L' if last else ''}")
    drops = [psnr[b] - psnr[b + 1] for b in psnr if b + 1 in psnr and None not in (psnr[b], psnr[b + 1])]
    return max(drops, default=0.0), [psnr.get(max(2, round(n / s))) for s in (2, 3, 4)]


def main(paths: list[str]) -> None:
    cases = [c for p in paths for c in json.load(open(p)) if "raw_ladder" in c["extra"].get("etc-plus", {})]
    totals: dict[str, list] = {r: [] for r in RULES}
    for case in cases:
        line = f"{case['model']:9s} {case['scheduler']:5s} {case['steps']:2d}"
        for name, rule in RULES.items():
            drop, front = score(case, rule)
            totals[name].append((drop, front))
            line += f" | {name}: drop {drop:4.1f}, " + " ".join("n/a" if v is None else f"{v:.1f}" for v in front)
        print(line)
    for name, got in totals.items():
        fronts = [v for _, f in got for v in f if v is not None]
        print(f"{name}: {sum(d > 1.0 for d, _ in got)} of {len(got)} cases over 1 dB, worst "
              f"{max(d for d, _ in got):.2f} dB, mean PSNR at N/2, N/3, N/4 {statistics.mean(fronts):.2f} dB")


if __name__ == "__main__":
    main(sys.argv[1:])
