"""Print the speed-fidelity front of every method in an ``etcdiff bench`` results.json: PSNR at 2x, 3x, 4x and 5x
fewer model calls, the best of the method's settings at that speedup or more, or the straight line between two
of its Pareto settings around it where that is higher (``n/a``: no setting got there;
:func:`etcdiff.bench.front.front_at`).

Settings whose ``profile`` lies in a ``variants/`` folder are a method's variants (e.g. ETC+ calibrated
another way): they get their own row, ``method [file stem]``, and stay out of the ranking lines.

Several results.json files (sweeps of one model at other seeds) are pooled: the table is over all their runs of
the settings that every sweep ran (matched by method and label). ``--by-seed`` prints one more table per noise
seed (the runs of that seed alone). Every image of one seed starts from the same noise, so how a method fares can
move with the seed as a whole.

Usage: python scripts/front_table.py docs/digits/bench/results.json [more results.json ...] [--by-seed]
"""

from __future__ import annotations

import json
import math
import sys

from etcdiff.bench.front import front_at
from etcdiff.bench.merge import summarize

SPEEDUPS = (2.0, 3.0, 4.0, 5.0)


def label(row: dict) -> str:
    """The row's method, or ``method [stem]`` for a variant (a profile file in a ``variants/`` folder)."""
    profile = str((row.get("setting") or {}).get("profile", ""))
    if "/variants/" in profile.replace("\\", "/"):
        return f"{row['method']} [{profile.replace(chr(92), '/').rsplit('/', 1)[-1].rsplit('.', 1)[0]}]"
    return row["method"]


def fronts(summary: list[dict], speedups: tuple[float, ...] = SPEEDUPS) -> dict[str, list[float | None]]:
    """Each method's (or variant's) front at ``speedups`` from a bench summary."""
    rows = [r for r in summary if r["kind"] == "run" and r["psnr"] is not None]
    table = {}
    for m in dict.fromkeys(label(r) for r in rows):
        pts = sorted((r["speedup_nfe"], r["psnr"]) for r in rows if label(r) == m and math.isfinite(r["psnr"]))
        table[m] = [front_at(pts, s) for s in speedups]
    return table


def best_other(values: dict[str, float | None], ours: str) -> tuple[str, float] | None:
    """Among ``values`` (method -> its front at one speedup, None where it misses it), the method other than
    ``ours`` with the highest front, and that front; None where no other method reaches the speedup."""
    others = {m: v for m, v in values.items() if m != ours and v is not None}
    if not others:
        return None
    best = max(others, key=lambda m: others[m])
    return best, others[best]


def print_front(summary: list[dict]) -> None:
    table = fronts(summary)
    print("| method | " + " | ".join(f"{s:g}x" for s in SPEEDUPS) + " |")
    print("|---|" + "---:|" * len(SPEEDUPS))
    for m, vals in table.items():
        print(f"| {m} | " + " | ".join("n/a" if v is None else f"{v:.1f}" for v in vals) + " |")
    for i, s in enumerate(SPEEDUPS):
        ranked = sorted(((v[i], m) for m, v in table.items() if v[i] is not None and "[" not in m), reverse=True)
        if len(ranked) >= 2:
            (b, bm), (c, cm) = ranked[0], ranked[1]
            print(f"- {s:g}x: {bm} {b:.1f} dB, next {cm} {c:.1f} dB ({b - c:+.1f} dB)")


def main(paths: list[str], by_seed: bool = False) -> None:
    sweeps = [json.load(open(p)) for p in paths]
    shared = set.intersection(*({(g["method"], g["label"]) for g in s["config"]["grid"]} for s in sweeps))
    grid = [g for g in sweeps[0]["config"]["grid"] if (g["method"], g["label"]) in shared]
    runs = [r for s in sweeps for r in s["runs"]]
    print_front(summarize(runs, grid))
    for seed in sorted({r["seed"] for r in runs}) if by_seed else ():
        print(f"\nseed {seed}:")
        print_front(summarize([r for r in runs if r["seed"] == seed], grid))


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--by-seed"]
    main(args or ["docs/digits/bench/results.json"], "--by-seed" in sys.argv[1:])
