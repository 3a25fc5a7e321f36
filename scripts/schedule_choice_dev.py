"""How the searched schedules' choice should be made, asked of the scenes model's development prompts (grammar seed
11, none of them a calibration or evaluation caption; ``scenes_dev.dev_prompts``), never of the evaluation
captions the margin tables report.

For each scenes case of the margin table (scheduler, step count), this benches on the development prompts what
ETC+'s profile runs at the case's budgets of 2x, 3x and 4x (``calls=``, the default profile of the case's bench)
and, at the budgets LeMiCa was benched at, the searched schedule with each predictor: LeMiCa calibrated on the
calibration captions with ETC+'s seed per caption (:func:`ours_schedules`), so that its schedules are the ones
ETC+'s calibration searches (checked against the budgets the twin profile keeps) and run bit for bit as ETC+ runs
a kept one. The PSNR of these runs is what each choice rule would give at that budget. ``--rules`` then reads,
for each case, the held-out means of the twin profile's ``schedule_check`` (``<case>-schedules``) and prints what
each rule picks and the development PSNR of its pick. The rules were written down, with what would make the lower
mean the rule, before any of these images was benched (docs/etc-plus/README.md, "The schedules' bar asked of
development prompts").

Usage: python scripts/schedule_choice_dev.py [--cases euler:28 unipc:50 ...] [--prompts 8] [--seeds 0,1]
       python scripts/schedule_choice_dev.py --rules   (after the benches; reads docs/scenes/bench/dev-schedules)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from scenes_dev import BENCH, case_scheduler, dev_prompts  # noqa: E402

from etcdiff.policies.step.etc_plus.schedules import SCHEDULE_PREDICTORS as PREDICTORS  # noqa: E402

OUT = BENCH / "dev-schedules"  # run from the repository root: the settings name profiles by relative paths
CASES = [f"{s}:{n}" for n in (20, 28, 50) for s in ("euler", "unipc", "dpm")]
CHECK = "schedule_check.json"  # the twin profile's schedule_check when the case was benched, beside its results


def case_folder(case: str) -> str:
    """The case's own bench folder (its profiles, its peers beside it)."""
    sched, steps = case.split(":")
    return os.path.relpath(BENCH / ("adherence-28" if case == "euler:28" else f"solvers-{steps}/{sched}"))


def twin_profile(case: str) -> str:
    """The case's ETC+ profile calibrated with the searched schedules (``<case folder>-schedules``)."""
    return os.path.join(case_folder(case) + "-schedules", "profiles", "etc-plus.json")


def split_case(spec: str) -> tuple[str, int | None]:
    """``SCHEDULER:STEPS`` or ``SCHEDULER:STEPS@CALLS`` (one budget only) -> (case, calls or None)."""
    case, _, calls = spec.partition("@")
    return case, int(calls) if calls else None


def settings(case: str, only: int | None = None) -> tuple[list[str], str]:
    """The scheduler flag and ``--settings`` of a case: ETC+ as its bench ran it, LeMiCa at the same budgets (with
    ``only``, that budget alone)."""
    folder = case_folder(case)
    with open(os.path.join(folder, "results.json")) as f:
        grid = json.load(f)["config"]["grid"]
    sched, steps = case.split(":")
    profiles = os.path.join(folder, "profiles") if case == "euler:28" else os.path.join(os.path.dirname(folder),
                                                                                        "profiles", sched)
    ours = os.path.join(profiles, f"scenes_{steps}steps_etc-plus.json")
    calls = [g["setting"]["calls"] for g in grid if g["method"] == "etc-plus" and "calls" in g["setting"]]
    lemica = ours_schedules(case)
    with open(os.path.join(folder + "-peers", "results.json")) as f:
        theirs = sorted({g["setting"]["calls"] for g in json.load(f)["config"]["grid"] if g["method"] == "lemica"})
    if only is not None:
        calls, theirs = [only], [only]
    text = [f"etc-plus:profile={ours} calls={','.join(str(c) for c in sorted(set(calls) | set(theirs)))}",
            f"lemica:profile={lemica} calls={','.join(str(c) for c in theirs)} predictor={','.join(PREDICTORS)}"]
    sch = case_scheduler(sched, int(steps))
    return ([] if sch is None else ["--scheduler", sch]), ";".join(text)


def ours_schedules(case: str) -> str:
    """LeMiCa calibrated on the calibration captions with a seed per caption (``held_out_seeds(42, ...)``), as ETC+
    records them, so that its schedules are the ones ETC+'s searched schedules would serve (the ``-peers`` profile
    ran every caption from seed 42: other noise, and at some budgets other steps). Checked against the budgets the
    twin profile keeps; the profile's path."""
    from etcdiff.bench import read_prompts
    from etcdiff.calibrate import calibrate_method, held_out_seeds
    from etcdiff.calibration import profile_identity
    from etcdiff.calibration.peer_profiles import save_peer_profile
    from etcdiff.models import load_pipeline
    from etcdiff.policies.step.lemica import LeMiCaProfile

    sched, steps = case.split(":")
    path = os.path.relpath(folder(case) / "lemica_seed_per_prompt.json")
    if not os.path.exists(path):
        prompts = read_prompts(BENCH / "calibration_prompts.txt")
        pipe = load_pipeline("demo", scheduler=case_scheduler(sched, int(steps)))
        pipe.set_progress_bar_config(disable=True)
        fitted = calibrate_method(pipe, "lemica", prompts, int(steps), seed=held_out_seeds(42, len(prompts)))
        save_peer_profile(profile_identity(pipe), "lemica", int(steps), fitted, path,
                          scheduler=type(pipe.scheduler).__name__,
                          prompts=prompts, seed=42)
    with open(path) as f:
        search = LeMiCaProfile.from_dict(json.load(f)["settings"]["profile"])
    with open(twin_profile(case)) as f:
        kept = (json.load(f)["settings"]["profile"].get("budget_schedules") or {}).get("plans") or {}
    for calls, plan in kept.items():
        if search.schedule(int(calls), plan["predictor"]) != plan["steps"]:
            raise SystemExit(f"{path}: its {calls}-call schedule is not the one ETC+'s twin profile keeps")
    return path


def folder(case: str, skip: int = 0) -> Path:
    """Where a case's development bench goes: ``<scheduler>-<steps>``, ``-from<skip>`` past the first captions."""
    sched, steps = case.split(":")
    return OUT / (f"{sched}-{steps}" + (f"-from{skip}" if skip else ""))


def bench(spec: str, prompts: int, seeds: str, skip: int = 0) -> None:
    case, only = split_case(spec)
    steps = case.split(":")[1]
    out = os.path.relpath(folder(case, skip))
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "development_prompts.txt"), "w") as f:
        f.write("\n".join(dev_prompts(skip + prompts)[skip:]) + "\n")
    flag, text = settings(case, only)
    if not os.path.exists(os.path.join(out, CHECK)):
        with open(twin_profile(case)) as f:
            check = json.load(f)["settings"]["profile"]["schedule_check"]
        with open(os.path.join(out, CHECK), "w") as f:
            json.dump(check, f, indent=1)
    cmd = ["etcdiff", "bench", "--model", "demo", *flag, "--prompts", os.path.join(out, "development_prompts.txt"),
           "--seeds", seeds, "--steps", steps, "--repeats", "1", "--threads", "1", "--no-progress", "--out", out,
           "--settings", text]
    print(" ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


RULES = {  # per budget, from the held-out means of schedule_check: what serves it ("plan" or a predictor)
    "two standard errors (as calibrated)": lambda check: check["kept"] or "plan",
    "lowest held-out mean": lambda check: min(("plan", *PREDICTORS), key=lambda k: check[k]),
    # read off the first 8 development captions after the fact; checked on the next 8 (``--skip 8``)
    "lowest mean, reuse at two standard errors": lambda check: (
        "reuse" if check["kept"] == "reuse"
        else min(("plan", *(p for p in PREDICTORS if p != "reuse")), key=lambda k: check[k])),
}


def development_psnr(case: str, skip: int = 0) -> dict[tuple[int, str], float]:
    """Mean PSNR on the development images per (budget, "plan" or predictor)."""
    from etcdiff.bench.merge import summarize

    with open(folder(case, skip) / "results.json") as f:
        result = json.load(f)
    out = {}
    for row in summarize(result["runs"], result["config"]["grid"]):
        if row["kind"] == "run" and row["psnr"] is not None:
            setting = row["setting"]
            out[(int(setting["calls"]), setting.get("predictor", "plan"))] = float(row["psnr"])
    return out


def rules_table(cases: list[str], skip: int = 0) -> str:
    """:func:`picks_table` of the benched cases, each with the twin profile's ``schedule_check`` as it was when the
    case was benched (``schedule_check.json`` beside the results: a later calibration's choices, made by another
    rule, do not rewrite what the rules were scored against)."""
    measured = []
    for case in (split_case(spec)[0] for spec in cases):
        if (folder(case, skip) / "results.json").exists():
            with open(folder(case, skip) / CHECK) as f:
                measured.append((case, development_psnr(case, skip), json.load(f)))
    return picks_table(measured)


def picks_table(measured: list[tuple[str, dict[tuple[int, str], float], dict[str, dict]]]) -> str:
    """Per case and budget benched with LeMiCa's schedules: each rule's pick and its development PSNR; then each
    rule's mean over the budgets and how often it is above or below the first rule (by more than 0.05 dB)."""
    lines = ["| case | calls | held-out mean log error: plan / etc / linear / reuse | "
             + " | ".join(RULES) + " | best on these images |", "|---|---:|---|" + "---|" * (len(RULES) + 1)]
    totals: dict[str, list[float]] = {rule: [] for rule in RULES}
    for case, dev, checks in measured:
        for calls in sorted({c for c, p in dev if p != "plan"}, reverse=True):
            check = checks[str(calls)]
            cells = []
            for rule, pick in RULES.items():
                totals[rule].append(dev[(calls, pick(check))])
                cells.append(f"{pick(check)} {totals[rule][-1]:.1f}")
            best = max(("plan", *PREDICTORS), key=lambda k: dev[(calls, k)])
            held = " / ".join(f"{check[k]:.2f}" for k in ("plan", *PREDICTORS))
            lines.append(f"| {case} | {calls} | {held} | " + " | ".join(cells)
                         + f" | {best} {dev[(calls, best)]:.1f} |")
    base = totals[next(iter(RULES))]
    lines.append("")
    for rule, got in totals.items():
        if got:
            higher = sum(a > b + 0.05 for a, b in zip(got, base))
            lower = sum(a < b - 0.05 for a, b in zip(got, base))
            lines.append(f"- {rule}: mean {sum(got) / len(got):.2f} dB over {len(got)} budgets; against the "
                         f"calibrated rule {higher} higher, {lower} lower")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", nargs="*", default=CASES,
                    help="SCHEDULER:STEPS of the scenes benches (SCHEDULER:STEPS@CALLS: that budget only)")
    ap.add_argument("--prompts", type=int, default=8, help="development prompts (default 8)")
    ap.add_argument("--seeds", default="0,1", help="noise seeds (default 0,1)")
    ap.add_argument("--skip", type=int, default=0, help="start past this many development prompts (default 0)")
    ap.add_argument("--rules", action="store_true", help="print what each choice rule gives (no bench)")
    args = ap.parse_args()
    unknown = [c for c in args.cases if split_case(c)[0] not in CASES]
    if unknown:
        raise SystemExit(f"unknown case {unknown[0]!r}; the scenes cases: {' '.join(CASES)}")
    if args.rules:
        print(rules_table(args.cases, args.skip))
        return
    for spec in args.cases:
        bench(spec, args.prompts, args.seeds, args.skip)


if __name__ == "__main__":
    main()
