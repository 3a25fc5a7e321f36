"""Print the speed-fidelity front of every method in an ``etcdiff bench`` results.json: PSNR at 2x, 3x, 4x and 5x
fewer model calls, the best of the method's settings at that speedup or more, or the straight line between two
of its Pareto settings around it where that is higher (``n/a``: no setting got there;
:func:`etcdiff.bench.front.front_at`).

Settings whose ``profile`` lies in a ``variants/`` folder are a method's variants (e.g. ETC+ calibrated
another way): they get their own row, ``method [file stem]``, and stay out of the ranking lines.

Usage: python scripts/front_table.py docs/bench-digits/results.json
"""

from __future__ import annotations

import json
import math
import sys

from etcdiff.bench.front import front_at

SPEEDUPS = (2.0, 3.0, 4.0, 5.0)


def label(row: dict) -> str:
    """The row's method, or ``method [stem]`` for a variant (a profile file in a ``variants/`` folder)."""
    profile = str((row.get("setting") or {}).get("profile", ""))
    if "/variants/" in profile.replace("\\", "/"):
        return f"{row['method']} [{profile.replace(chr(92), '/').rsplit('/', 1)[-1].rsplit('.', 1)[0]}]"
    return row["method"]


def main(path: str) -> None:
    rows = [r for r in json.load(open(path))["summary"] if r["kind"] == "run" and r["psnr"] is not None]
    methods = list(dict.fromkeys(label(r) for r in rows))
    table = {}
    for m in methods:
        pts = sorted((r["speedup_nfe"], r["psnr"]) for r in rows if label(r) == m and math.isfinite(r["psnr"]))
        table[m] = [front_at(pts, s) for s in SPEEDUPS]
    print("| method | " + " | ".join(f"{s:g}x" for s in SPEEDUPS) + " |")
    print("|---|" + "---:|" * len(SPEEDUPS))
    for m, vals in table.items():
        print(f"| {m} | " + " | ".join("n/a" if v is None else f"{v:.1f}" for v in vals) + " |")
    for i, s in enumerate(SPEEDUPS):
        ranked = sorted(((v[i], m) for m, v in table.items() if v[i] is not None and "[" not in m), reverse=True)
        if len(ranked) >= 2:
            (b, bm), (c, cm) = ranked[0], ranked[1]
            print(f"- {s:g}x: {bm} {b:.1f} dB, next {cm} {c:.1f} dB ({b - c:+.1f} dB)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/bench-digits/results.json")
