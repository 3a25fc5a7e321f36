"""The scenes margin table with LeMiCa's predictor chosen on development captions instead of on the evaluation
images.

``scripts/etc_plus_margins.py`` draws LeMiCa's front from all three of its predictor settings (``reuse`` as
published, ``linear``, and ETC's trend ``etc``) at each budget, so at every budget LeMiCa gets the predictor that
did best on the very images the table reports: a choice no user could make, where ETC+ has one setting per budget
chosen on calibration runs. Each scenes case's development bench (``docs/scenes/bench/dev-schedules/<s>-<n>``: 8
development captions x seeds 0-1, none of them calibration or evaluation captions) ran LeMiCa's committed profile
with all three predictors at the same budgets; here each budget keeps the predictor with the highest mean PSNR
there, and the margins are read again with only those LeMiCa settings on the evaluation images (the other
methods' fronts as in the margin table).

Usage: python scripts/rival_choice_dev.py [--variant NAME] [--out DIR]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import etc_plus_margins as em  # noqa: E402

RIVAL = "lemica"
DEV = "docs/scenes/bench/dev-schedules"


def dev_choice(dev: str, profile: str) -> dict[int, str]:
    """Per budget (``calls``): the predictor of LeMiCa's ``profile`` (the peers' bench's) with the highest mean PSNR
    in the development bench ``dev``, which ran that same file."""
    got: dict[int, dict[str, float]] = defaultdict(dict)
    for r in json.load(open(dev))["summary"]:
        s = r.get("setting") or {}
        if r["method"] == RIVAL and s.get("profile") == profile:
            got[int(s["calls"])][s.get("predictor", "reuse")] = r["psnr"]
    return {calls: max(by, key=lambda p: by[p]) for calls, by in got.items()}


def case_rows(model: str, sched: str, steps: int, bench: str, variant: str) -> list[str] | None:
    """One table row of a scenes case: the choice per budget, and ETC+'s margin over the best other method with
    LeMiCa's envelope (as the margin table) and with LeMiCa's development choice; None where a source is missing."""
    dev = os.path.join(DEV, f"{sched}-{steps}", "results.json")
    extra = em.extra_benches(model, sched, steps, bench)
    if not os.path.exists(dev) or not extra:
        return None
    profiles = glob.glob(os.path.join(em.peers_folder(bench), "profiles", f"*_{RIVAL}.json"))
    if len(profiles) != 1:  # the peers' bench ran LeMiCa from the one profile of its folder
        return None
    choice = dev_choice(dev, profiles[0])
    if not choice:
        return None

    def kept(row: dict) -> bool:
        setting = row.get("setting") or {}
        return row["method"] != RIVAL or setting.get("predictor", "reuse") == choice.get(int(setting["calls"]))

    fronts, chosen = em.bench_fronts(bench, extra), em.bench_fronts(bench, extra, kept)
    if variant:
        (fronts, _), (chosen, _) = em.with_variant(fronts, bench, variant), em.with_variant(chosen, bench, variant)
        if fronts is None or chosen is None:
            return None
    picks = ", ".join(f"{c}: {p}" for c, p in sorted(choice.items()))
    return [model, em.SCHEDULER_CLASSES[sched], str(steps), picks, " / ".join(em.margins(fronts)),
            " / ".join(em.margins(chosen))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="", help="ETC+'s front from <bench folder>-VARIANT (as the margin table)")
    ap.add_argument("--out", default="", help="folder for rival_choice_dev[_VARIANT].md (default: print only)")
    args = ap.parse_args()
    head = ("| model | scheduler | steps | LeMiCa's predictor per budget (development captions) | 2x / 3x / 4x "
            "margin, LeMiCa's envelope | the same, LeMiCa's development choice |\n|---|---|---|---|---|---|\n")
    body = ""
    for model, sched, steps, bench in em.BENCHES:
        if model != "scenes":
            continue
        row = case_rows(model, sched, steps, bench, args.variant)
        body += "| " + " | ".join(row or [model, em.SCHEDULER_CLASSES[sched], str(steps), "not measured", "", ""])
        body += " |\n"
    print(head + body)
    if args.out:
        name = f"rival_choice_dev_{args.variant}.md" if args.variant else "rival_choice_dev.md"
        with open(os.path.join(args.out, name), "w") as f:
            f.write("ETC+'s margin (dB) over the best other step method, LeMiCa's predictor chosen on development "
                    f"captions; made by `{' '.join(['python', 'scripts/rival_choice_dev.py', *sys.argv[1:]])}`.\n\n"
                    + head + body)


if __name__ == "__main__":
    main()
