"""The tolerance mode of ETC+ in the solver grid before and after a change: per case, the share of evaluation
images within the target, the mean calls and the PSNR of the default tolerance mode (``etc-plus-tol``), from two
grid JSONs of ``scripts/etc_plus_solvers.py``, with what the calibration of the second checked (the tolerance
mode's mean calls at its kept scale and the budgets tried: calls, share within, ratio to the target at the share's
edge). A case in only one of the two is listed as not measured.

Usage: python scripts/tolerance_mode_change.py BEFORE.json AFTER.json [--out FILE.md]
       (BEFORE can be a committed grid: git show REV:docs/etc-plus/etc_plus_solvers.json > before.json)
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

OURS, TOLERANCE_ROW = "etc-plus", "etc-plus-tol"


def tolerance_row(case: dict[str, Any]) -> dict[str, Any] | None:
    """The case's tolerance-mode row, or None."""
    return next((r for r in case["rows"] if r["method"] == TOLERANCE_ROW), None)


def checked(case: dict[str, Any]) -> str:
    """What calibration checked: the tolerance mode's mean calls at the kept scale and the budgets tried."""
    extra = case["extra"].get(OURS, {})
    check, scale = extra.get("tolerance_check"), extra.get("tolerance_scale")
    if not check or scale is None:
        return "not recorded"
    if check.get("met"):
        kept = min(check["passes"], key=lambda p: abs(p["scale"] - scale))
        mode = f"{kept['calls']:g} calls at {scale:.2g}" if "calls" in kept else f"scale {scale:.2g}"
    else:
        n = len(check["passes"])
        mode = f"no scale held ({n} pass{'es' * (n != 1)})"
    budgets = ", ".join(f"{b['calls']}: {100 * b['within']:.0f} % / {b['edge']:.2f}" for b in check.get("budgets", []))
    return f"{mode}; budgets {budgets or 'none tried'}"


def rows(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[list[str]]:
    """One table row per case of ``after``: the tolerance mode before and after, and what calibration checked."""
    old = {(c["model"], c["scheduler_class"], c["steps"]): c for c in before}
    table = []
    for case in after:
        key = (case["model"], case["scheduler_class"], case["steps"])
        new, was = tolerance_row(case), tolerance_row(old[key]) if key in old else None

        def cell(r: dict[str, Any] | None) -> str:
            return "not measured" if r is None else f"{100 * r['within']:.0f} % / {r['calls']:.2f} / {r['psnr']:.1f}"

        table.append([case["model"], case["scheduler_class"], str(case["steps"]), cell(was), cell(new),
                      checked(case)])
    return sorted(table, key=lambda r: (r[0], r[1], int(r[2])))


def markdown(table: list[list[str]]) -> str:
    head = ("| model | scheduler | steps | before: within / calls / PSNR | after | calibration: tolerance mode; "
            "budgets tried (calls: within / edge) |\n|---|---|---|---|---|---|\n")
    return head + "".join("| " + " | ".join(r) + " |\n" for r in table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--out", default="", help="write the table here too")
    args = ap.parse_args()
    text = markdown(rows(json.load(open(args.before)), json.load(open(args.after))))
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write("ETC+'s tolerance mode in the solver grid, before and after (within the target / mean calls / "
                    f"PSNR); made by `{' '.join(['python', 'scripts/tolerance_mode_change.py', *sys.argv[1:]])}`.\n\n"
                    + text)


if __name__ == "__main__":
    main()
