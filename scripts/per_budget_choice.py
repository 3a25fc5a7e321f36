"""Judge, from saved ETC+ profiles alone, a held-out choice made per budget instead of once for all budgets.

ETC+'s calibration chooses its variant (probes, corrections) once, on each held-out run's log error averaged over
the budgets at 2x-5x (``etcdiff.calibration.selection``). The profile keeps the same errors per budget
(``selection.budget_run_log_rel_error``, profiles calibrated since it was added); this prints, per profile and
budget, the chosen candidate's mean log error and the candidate the per-budget rule would serve it with: the
lowest-scored of those lower than the chosen one at that budget alone, paired run by run, by ``--margin``
standard errors (default: the rule's, ``BUDGET_MARGIN``), with the gain in dB (20 log10 e per unit of log error).
Calibration data only: nothing here looks at an evaluation prompt.

Usage: python scripts/per_budget_choice.py PROFILE.json [PROFILE.json ...] [--margin 1.0]
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from etcdiff.calibration.selection import BUDGET_MARGIN, budget_choice, candidate_label

DB_PER_LOG = 20 / math.log(10)  # a log relative error lower by 1 is this many dB more PSNR


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def rows(path: Path, margin: float = BUDGET_MARGIN) -> list[str]:
    """Markdown rows for one profile: one per budget."""
    data = json.loads(path.read_text())
    profile = data.get("settings", {}).get("profile", data)
    sel = profile.get("selection") or {}
    by_budget = sel.get("budget_run_log_rel_error")
    if not by_budget:
        return [f"| {path} | – | – | no per-budget record (calibrated before it was kept) | |"]
    names = sel["setting"] if isinstance(sel["setting"], list) else [sel["setting"]]
    chosen = candidate_label(names, tuple(sel["chosen"]) if len(names) > 1 else sel["chosen"])
    budgets = list(by_budget[chosen])
    judged = {k: [v[c] for c in budgets] for k, v in by_budget.items()}
    served = budget_choice(chosen, budgets, judged, margin)  # the rule calibration applies, at ``margin``
    out = []
    for calls in budgets:
        mean = _mean(by_budget[chosen][calls])
        other = served.get(calls)
        gain = None if other is None else DB_PER_LOG * (mean - _mean(by_budget[other][calls]))
        verdict = "none" if other is None else f"{other}: {gain:+.1f} dB"
        out.append(f"| {path} | {calls} | {chosen} | {mean:.3f} | {verdict} |")
    return out


def main(argv: list[str]) -> None:
    margin = BUDGET_MARGIN
    if "--margin" in argv:
        at = argv.index("--margin")
        margin = float(argv[at + 1])
        argv = argv[:at] + argv[at + 2:]
    if not argv:
        sys.exit(__doc__)
    print(f"| profile | calls | chosen | mean log error | serves it at {margin:g} standard errors (gain) |")
    print("|---|---:|---|---:|---|")
    for arg in argv:
        print("\n".join(rows(Path(arg), margin)))


if __name__ == "__main__":
    main(sys.argv[1:])
