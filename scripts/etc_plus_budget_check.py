"""Does an ETC+ profile's budget ladder hold for the plans the profile runs? Its calibration runs again, for real.

Calibration ranks the budgets (``budget_errors``, ``budget_logs``) by running each fold's fit on the runs that fold
held out: the plan of a fold fit, which need not be the plan the profile (fitted on every run) makes at the same
budget. This script runs the profile itself at the given budgets on the calibration prompts at the seeds calibration
gave them (prompt k at seed + k), against their full-step runs, and puts each held-out run's change in error from
one budget to the next beside what calibration measured for it.

- PSNR (dB) of the image and the log relative error of the final latents (natural log of |x - full| / |full|,
  the quantity calibration ranks by), per run and per budget;
- for each pair of consecutive budgets given, the mean change on the held-out runs, and in how many of them the
  bigger budget came out worse, beside the same from the profile's ``budget_logs``.

Usage: python scripts/etc_plus_budget_check.py --model demo --scheduler unipc --steps 50 --calls 15,16 \\
    --profile docs/scenes/bench/solvers-50/profiles/unipc/scenes_50steps_etc-plus.json \\
    --prompts docs/scenes/bench/calibration_prompts.txt [--seed 42] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Any

import torch

import etcdiff
from etcdiff.bench.fidelity import psnr_ssim
from etcdiff.bench.measure import FinalLatents, pipeline_images
from etcdiff.calibrate import held_out_seeds
from etcdiff.integration.step.recording import call_kwargs
from etcdiff.models import load_pipeline


def generate(pipe: Any, prompt: str, steps: int, seed: int) -> tuple[Any, torch.Tensor]:
    """Images and final latents of one generation."""
    with FinalLatents(pipe) as fin:
        images = pipeline_images(pipe(**call_kwargs(pipe, prompt, steps, seed), output_type="np"))
    return images, fin.latents


def changes(rows: list[dict[str, Any]], calls: list[int], logs: dict[str, list[float]],
            held: list[int]) -> list[dict[str, Any]]:
    """For each consecutive pair of ``calls``: the held-out runs' mean change (bigger budget minus smaller) in log
    error and PSNR, and how many got worse, here and in calibration's ``budget_logs`` (same runs, same order)."""
    out = []
    by_run = {r["prompt_index"]: r for r in rows}
    for a, b in zip(calls, calls[1:]):
        runs = [by_run[k] for k in held if k in by_run]
        log = [r["log_error"][str(b)] - r["log_error"][str(a)] for r in runs]
        db = [r["psnr"][str(b)] - r["psnr"][str(a)] for r in runs]
        fold = [y - x for x, y in zip(logs.get(str(a), []), logs.get(str(b), []))]
        out.append({"from": a, "to": b, "runs": len(runs),
                    "log_change": round(statistics.mean(log), 4), "worse": sum(v > 0 for v in log),
                    "psnr_change": round(statistics.mean(db), 2), "psnr_worse": sum(v < 0 for v in db),
                    "calibration_log_change": round(statistics.mean(fold), 4) if fold else None,
                    "calibration_worse": sum(v > 0 for v in fold) if fold else None})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--scheduler", default=None, help="euler|unipc|dpm|ddim (default: the pipeline's own)")
    ap.add_argument("--profile", required=True, help="an ETC+ profile (a file etcdiff calibrate wrote)")
    ap.add_argument("--prompts", required=True, type=Path, help="the calibration prompts, one per line, in order")
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--calls", required=True, help="budgets, comma-separated, in increasing order")
    ap.add_argument("--seed", type=int, default=42, help="calibration's seed (prompt k ran at seed + k)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, help="write the per-run figures and the changes as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    calls = sorted(int(c) for c in args.calls.split(","))
    profile = json.loads(Path(args.profile).read_text())["settings"]["profile"]
    held = [int(k) for k in (profile.get("selection") or {}).get("held_out_runs", [])]
    prompts = [line.strip() for line in args.prompts.read_text().splitlines() if line.strip()]
    pipe = load_pipeline(args.model, scheduler=args.scheduler)
    pipe.set_progress_bar_config(disable=True)
    rows = []
    for k, (prompt, seed) in enumerate(zip(prompts, held_out_seeds(args.seed, len(prompts)))):
        ref_images, ref = generate(pipe, prompt, args.steps, seed)
        row: dict[str, Any] = {"prompt_index": k, "seed": seed, "held_out": k in held, "psnr": {}, "log_error": {},
                               "computed_steps": {}}
        for c in calls:
            with etcdiff.enabled(pipe, "etc-plus", profile=args.profile, calls=c):
                images, latents = generate(pipe, prompt, args.steps, seed)
            row["computed_steps"][str(c)] = list(etcdiff.last_report(pipe).computed_steps)
            row["psnr"][str(c)] = round(psnr_ssim(ref_images, images)["psnr"], 3)
            row["log_error"][str(c)] = round(math.log(float((latents - ref).norm() / ref.norm())), 4)
        rows.append(row)
        print(json.dumps({k: row[k] for k in ("prompt_index", "seed", "held_out", "psnr", "log_error")}), flush=True)
    result = {"profile": args.profile, "model": args.model, "scheduler": args.scheduler, "steps": args.steps,
              "calls": calls, "held_out_runs": held, "runs": rows,
              "changes": changes(rows, calls, profile.get("budget_logs") or {}, held)}
    for c in result["changes"]:
        print(f"{c['from']} -> {c['to']} calls on the {c['runs']} held-out runs: the profile's plans "
              f"{c['log_change']:+.3f} in log error ({c['worse']} worse), {c['psnr_change']:+.2f} dB "
              f"({c['psnr_worse']} worse); calibration measured {c['calibration_log_change']} "
              f"({c['calibration_worse']} worse)")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
