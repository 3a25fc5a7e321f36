"""ETC+ calibrated two ways on the same grid, side by side: one row per case (model, scheduler, steps) of two
``scripts/etc_plus_solvers.py`` result files, with the generations each calibration made, the second's front at
2x / 3x / 4x and its difference from the first's, the share of held-out runs within the tolerance target, and
the worst drop when a budget gets one more call. Ends with a summary of the differences and of the checks each
side misses; ``--steps 50`` keeps the cases at those step counts.

Usage::

    python scripts/compare_calibrations.py docs/etc-plus/etc_plus_solvers.json docs/etc-plus/etc_plus_replays.json
    python scripts/compare_calibrations.py docs/etc-plus/etc_plus_default_s100.json \
        docs/etc-plus/etc_plus_replays_s100.json --steps 50
    python scripts/compare_calibrations.py docs/etc-plus/etc_plus_solvers.json \
        docs/etc-plus/etc_plus_served_recorded_from_50.json

A file of served runs (``etc_plus_solvers.py --serve-from N``) stands for the profile served from N steps (its
generations: those made for the served step count alone).
"""

from __future__ import annotations

import json
import statistics
import sys
from typing import Any

SPEEDUPS = ("2x", "3x", "4x")


def _load(paths: list[str]) -> dict[tuple, dict[str, Any]]:
    """The cases of the files by (model, scheduler, steps); a served run's (``--serve-from``) front of the profile
    served from another step count stands as its ``etc-plus``, with the generations its served step count cost."""
    cases = {}
    for path in paths:
        with open(path) as f:
            for case in json.load(f):
                served = f"etc-plus-from-{case.get('source_steps')}"
                if "etc-plus" not in case.get("fronts", {}) and served in case.get("fronts", {}):
                    case = {**case, "fronts": {"etc-plus": case["fronts"][served]}, "rows": [],
                            "extra": {"etc-plus": {"cost": case.get("served_cost") or {}}}}
                if "etc-plus" in case.get("fronts", {}):
                    cases[(case["model"], case["scheduler"], case["steps"])] = case
    return cases


def _tolerance(case: dict[str, Any]) -> str:
    row = next((r for r in case["rows"] if r["method"] == "etc-plus-tol"), None)
    return "n/a" if row is None or "within" not in row else f"{100 * row['within']:.0f} %"


def table(first: dict[tuple, dict[str, Any]], second: dict[tuple, dict[str, Any]]) -> tuple[str, list[float]]:
    """The markdown table over the cases both hold, and every front difference (second - first)."""
    lines = ["| model, scheduler, steps | generations (first -> second) | "
             + " | ".join(f"{s} (second - first)" for s in SPEEDUPS) + " | tolerance within | worst drop +1 call |",
             "|---|---|" + "---|" * len(SPEEDUPS) + "---|---|"]
    diffs = []
    for key in sorted(set(first) & set(second)):
        a, b = first[key], second[key]
        cost = [c["extra"]["etc-plus"].get("cost", {}).get("generations") for c in (a, b)]
        cells = []
        for s in SPEEDUPS:
            x, y = a["fronts"]["etc-plus"].get(s), b["fronts"]["etc-plus"].get(s)
            if x is None or y is None:
                cells.append("n/a")
                continue
            diffs.append(y - x)
            cells.append(f"{y:.1f} ({y - x:+.1f})")
        drop = b["extra"]["etc-plus"].get("worst_drop")
        lines.append(f"| {', '.join(map(str, key))} | {cost[0]} -> {cost[1]} | " + " | ".join(cells)
                     + f" | {_tolerance(b)} | {'n/a' if drop is None else f'{drop:.1f} dB'} |")
    return "\n".join(lines), diffs


def checks(cases: dict[tuple, dict[str, Any]]) -> str:
    """How many cases miss the tolerance (under 90 % of runs within the target) and the budget ranking (one more
    call costing over 1 dB)."""
    shares = [r["within"] for c in cases.values() for r in c["rows"] if r["method"] == "etc-plus-tol" and "within" in r]
    drops = [d for c in cases.values() if (d := c["extra"]["etc-plus"].get("worst_drop")) is not None]
    if not shares and not drops:
        return "not measured"
    return (f"tolerance under 90 % in {sum(v < 0.9 for v in shares)} of {len(shares)} cases, one more call "
            f"costing over 1 dB in {sum(d > 1.0 for d in drops)} of {len(drops)}")


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    steps = None
    if len(args) == 4 and args[2] == "--steps":  # only the cases at these step counts
        steps, args = {int(v) for v in args[3].split(",")}, args[:2]
    if len(args) != 2:
        raise SystemExit("usage: compare_calibrations.py FIRST.json[,MORE.json] SECOND.json[,MORE.json] "
                         "[--steps 20,28]")
    first, second = (_load(a.split(",")) for a in args)
    if steps is not None:
        first, second = ({k: c for k, c in cases.items() if k[2] in steps} for cases in (first, second))
    text, diffs = table(first, second)
    print(text)
    if diffs:
        print(f"\n{len(diffs)} points: {sum(d >= -0.5 for d in diffs)} within 0.5 dB or above, "
              f"{sum(d >= -1.0 for d in diffs)} within 1 dB; mean {statistics.mean(diffs):+.2f} dB, "
              f"median {statistics.median(diffs):+.2f}, worst {min(diffs):+.1f}")
        both = {k: c for k, c in first.items() if k in second}
        print(f"first: {checks(both)}; second: {checks({k: second[k] for k in both})}")


if __name__ == "__main__":
    main()
