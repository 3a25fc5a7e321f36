"""Issue 25, item 6 on every scenes bench of the margin table: ETC+'s prompt adherence at 3x and 4x against every
other step method's at the same calls.

For each scenes case of ``etc_plus_margins.BENCHES`` (its bench, the benches read with it and its ``-peers``),
ETC+'s settings ``calls=N/3`` and ``calls=N/4`` are set against, per other step method, that method's setting with
the most calls that makes no more calls than ETC+'s setting did on average (a cheaper or equal setting: where it
keeps more of the requested objects, ETC+ is behind at its own cost). The share of objects read back right is the
scenes model's own adherence check (``classifier_prompt_match``); calls are the step count over the setting's
call reduction. Item 6 holds in a cell where ETC+'s share is at least every such setting's.

``--pool SUFFIX`` reads every bench with ``<its folder>-SUFFIX`` (more seeds, ``scripts/bench_more_seeds.py``);
``--variant NAME`` takes ETC+'s settings from the twin bench ``<bench folder>-NAME``.

Usage: python scripts/adherence_at_calls.py [--pool seeds-2-5] [--variant schedules] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_more_seeds import pooled  # noqa: E402
from etc_plus_margins import (BENCHES, OURS, SCHEDULER_CLASSES, complete_rows, extra_benches,  # noqa: E402
                             save_table, variant_folder)

SPEEDS = (3, 4)
MATCH = "classifier_prompt_match"


def _calls(row: dict[str, Any], steps: int) -> float:
    return steps / row["speedup_nfe"]


def _settings(path: str, pool: str) -> tuple[list[dict[str, Any]], int]:
    """The settings of bench ``path`` (pooled) run on every image, and the number of images."""
    rows, images = complete_rows(pooled(path, pool)["summary"])
    return [r for r in rows if r["kind"] == "run"], images


def cells(path: str, sched: str, steps: int, pool: str = "", variant: str = "") -> list[list[str]]:
    """One row per speedup of :data:`SPEEDS` for the case of bench ``path`` (see the module's docstring)."""
    ours_path = os.path.join(variant_folder(path, variant), "results.json") if variant else path
    if not os.path.exists(ours_path):
        return [[f"{s}x", f"not measured with {variant}", "", "", ""] for s in SPEEDS]
    benches = [_settings(p, pool) for p in (path, *extra_benches("scenes", sched, steps, path))]
    ours_rows, images = _settings(ours_path, pool) if variant else benches[0]  # the case's bench read once
    ours = [r for r in ours_rows if r["method"] == OURS]
    others = [r for rows, _ in benches for r in rows if not r["method"].startswith(OURS)]
    out = []
    for s in SPEEDS:
        row = next((r for r in ours if r["setting"].get("calls") == steps // s), None)
        if row is None:
            out.append([f"{s}x", f"no calls={steps // s} setting", "", "", str(images)])
            continue
        calls = _calls(row, steps)
        best: dict[str, dict[str, Any]] = {}
        for r in others:
            if _calls(r, steps) <= calls + 1e-9 and r.get(MATCH) is not None:
                kept = best.get(r["method"])
                if kept is None or (_calls(r, steps), r[MATCH]) > (_calls(kept, steps), kept[MATCH]):
                    best[r["method"]] = r
        top = max(best.values(), key=lambda r: r[MATCH], default=None)
        held = top is None or row[MATCH] >= top[MATCH] - 1e-12
        other = ("none at these calls" if top is None else
                 f"{100 * top[MATCH]:.1f} % ({top['method']} {_short(top['setting_label'])}, "
                 f"{_calls(top, steps):.1f} calls, {top['psnr']:.1f} dB)")
        out.append([f"{s}x", f"{100 * row[MATCH]:.1f} % ({calls:.1f} calls, {row['psnr']:.1f} dB)", other,
                    "met" if held else "not met", str(images)])
    return out


def _short(label: str) -> str:
    """A setting's label without profile paths (the file name kept)."""
    return " ".join(os.path.basename(v) if k == "profile" else f"{k}={v}"
                    for k, _, v in (item.partition("=") for item in label.split()))


def table(pool: str = "", variant: str = "") -> list[list[str]]:
    """The rows of every scenes case of :data:`BENCHES`: scheduler, steps, then :func:`cells`."""
    rows = []
    for model, sched, steps, path in BENCHES:
        if model == "scenes" and os.path.exists(path):
            rows += [[SCHEDULER_CLASSES[sched], str(steps), *c] for c in cells(path, sched, steps, pool, variant)]
    return sorted(rows, key=lambda r: (r[0], int(r[1]), r[2]))


def markdown(rows: list[list[str]]) -> str:
    head = ("| scheduler | steps | speedup | ETC+ objects right (calls, PSNR) | best other at no more calls | "
            "item 6 | images |\n|---|---|---|---|---|---|---|\n")
    met = sum(r[5] == "met" for r in rows)
    judged = sum(r[5] in ("met", "not met") for r in rows)
    return head + "".join("| " + " | ".join(r) + " |\n" for r in rows) + f"\nmet in {met} of {judged} cells.\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", default="", help="read each bench with <bench folder>-POOL (more seeds)")
    ap.add_argument("--variant", default="", help="ETC+'s settings from <bench folder>-VARIANT")
    ap.add_argument("--out", default="", help="folder for etc_plus_adherence[_VARIANT][_with_POOL].md")
    args = ap.parse_args()
    text = markdown(table(args.pool, args.variant))
    print(text)
    if args.out:
        save_table(args.out, "etc_plus_adherence", args.variant, args.pool,
                   "Issue 25, item 6: the share of requested objects read back right at 3x and 4x, ETC+ against "
                   "every other step method at no more calls", text)


if __name__ == "__main__":
    main()
