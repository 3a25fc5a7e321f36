"""The other step methods of ``scripts/peer_grid.py`` (``pipeline_settings``) on the images of each pipeline bench
of the margin table.

For each case of ``etc_plus_margins.BENCHES`` (the scenes model and the held-out UNet, every scheduler and step
count), this calibrates reference ETC, LeMiCa and SenCache with ``etcdiff calibrate`` on the model's calibration
prompts (seed 42, the scheduler of the case; nothing is tuned on the evaluation images) and runs ``etcdiff bench``
over the same prompts, seeds and step count as the case's bench, into a folder beside it (``<bench folder>-peers``,
profiles in its ``profiles/``). ``etc_plus_margins.py`` reads that folder with the case's bench.

Usage: python scripts/etc_plus_peer_benches.py [--cases scenes:unipc:28 unet-digits:ddim:20 ...] [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import peer_grid  # noqa: E402
from etc_plus_margins import BENCHES, peers_folder  # noqa: E402

#: per model: the pipeline model name of each scheduler, the scheduler flag it takes, and its prompt files
PIPELINES = {
    "scenes": {"models": {"euler": "demo", "unipc": "demo", "dpm": "demo"}, "flag": ("euler", "unipc", "dpm"),
               "prompts": "docs/scenes/bench"},
    "unet-digits": {"models": {"ddim": "unet-digits", "unipc": "unet-digits", "dpm": "unet-digits-dpm"},
                    "flag": ("unipc",), "prompts": "docs/unet-digits"},
}
CALIBRATED = {"etc": [], "lemica": ["--set", "calls={third}"], "sencache": []}  # `etcdiff calibrate` per method


def commands(model: str, sched: str, steps: int, bench: str) -> list[list[str]]:
    """The calibrations and the bench of one case, on the bench's own prompts, seeds and step count."""
    spec = PIPELINES[model]
    with open(bench) as f:
        config = json.load(f)["config"]
    prompts_dir = spec["prompts"]
    with open(os.path.join(prompts_dir, "evaluation_prompts.txt")) as f:
        evaluation = [line.strip() for line in f if line.strip()]
    if config["prompts"] != evaluation or int(config["steps"]) != steps:
        raise SystemExit(f"{bench}: its prompts or steps are not those of {prompts_dir}/evaluation_prompts.txt at "
                         f"{steps} steps; this script benches the peers on the bench's own images only.")
    out = peers_folder(bench)
    pipe = ["--model", spec["models"][sched], *(["--scheduler", sched] if sched in spec["flag"] else [])]
    cal = ["etcdiff", "calibrate", *pipe, "--prompts", os.path.join(prompts_dir, "calibration_prompts.txt"),
           "--seed", "42", "--steps", str(steps), "--quiet", "--out", os.path.join(out, "profiles"), "--no-plot"]
    cmds = [[*cal, *(["--method", m] if m != "etc" else []), *(a.format(third=steps // 3) for a in args)]
            for m, args in CALIBRATED.items()]
    cmds.append(["etcdiff", "bench", *pipe, "--prompts", os.path.join(prompts_dir, "evaluation_prompts.txt"),
                 "--seeds", ",".join(str(s) for s in config["seeds"]), "--steps", str(steps), "--repeats", "1",
                 "--threads", "1", "--no-progress", "--out", out,
                 "--settings", peer_grid.bench_settings(peer_grid.pipeline_settings(steps))])
    return cmds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", nargs="*", default=None, help="MODEL:SCHEDULER:STEPS (default: every bench)")
    ap.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = ap.parse_args()
    cases = [(m, s, n, p) for m, s, n, p in BENCHES
             if args.cases is None or f"{m}:{s}:{n}" in args.cases]
    if args.cases is not None and len(cases) != len(args.cases):
        raise SystemExit(f"unknown case among {args.cases}; the benches: "
                         f"{', '.join(f'{m}:{s}:{n}' for m, s, n, _ in BENCHES)}")
    for model, sched, steps, bench in cases:
        out = peers_folder(bench)
        env = {**os.environ, "ETCDIFF_PROFILE_DIR": os.path.join(out, "profiles")}
        for cmd in commands(model, sched, steps, bench):
            print(" ".join(cmd if "--settings" not in cmd else [*cmd[:-1], repr(cmd[-1])]), flush=True)
            if not args.dry_run:
                subprocess.run(cmd, check=True, env=env)


if __name__ == "__main__":
    main()
