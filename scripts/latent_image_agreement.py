"""Do the held-out calibration runs' metric (the log relative error of the final latents) and the decoded image's
PSNR rank ETC+'s plan and the searched schedules alike? Asked on the scenes model, on the calibration captions (a
seed per caption, 42 + k, as calibration runs them) and the development captions (seeds 0-1), never the evaluation
captions.

For a case (scheduler, step count) and budgets, each (caption, seed) runs the full steps, the searched-schedules
twin profile of the case (``<case folder>-schedules``) at each budget, and LeMiCa's schedule searched on the
calibration captions with ETC+'s seed per caption (``lemica_seed_per_prompt.json`` in the case's folder of
``docs/scenes/bench/dev-schedules``) driving ETC's trend and the linear predictor. Each run keeps its latent log
relative error (:func:`etcdiff.calibration.selection.log_rel_errors`) and the PSNR of its decoded image. Prints,
per caption group and setting, the means; with ``--pair A B``, how often the two metrics agree on which of two
settings is closer.

Usage: PYTHONPATH=src python scripts/latent_image_agreement.py unipc 50 25,17,12 [--out rows.jsonl]
       [--rows rows.jsonl] [--pair plan25 linear25]
(about 9 s per (caption, seed) at three budgets on 2 CPU cores)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections import defaultdict
from pathlib import Path
from statistics import mean

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from scenes_dev import BENCH, case_scheduler, dev_prompts  # noqa: E402
from schedule_choice_dev import folder, twin_profile  # noqa: E402

DB = 20 / math.log(10)  # a log relative error difference in dB


def settings(sched: str, steps: int, budgets: list[int]) -> list[tuple[str, str, dict]]:
    """(label, method, settings): the twin profile's plan at each budget, LeMiCa's schedule with each predictor."""
    case = f"{sched}:{steps}"
    twin, lemica = twin_profile(case), str(folder(case) / "lemica_seed_per_prompt.json")
    out = [(f"plan{b}", "etc-plus", {"profile": twin, "calls": b}) for b in budgets]
    return out + [(f"{p}{b}", "lemica", {"profile": lemica, "calls": b, "predictor": p})
                  for b in budgets for p in ("etc", "linear")]


def measure(sched: str, steps: int, budgets: list[int]) -> list[dict]:
    import numpy as np
    import torch

    import etcdiff
    from etcdiff.bench import read_prompts
    from etcdiff.calibration.decode import pipeline_decoder
    from etcdiff.calibration.selection import log_rel_errors
    from etcdiff.metrics import psnr
    from etcdiff.models import call_kwargs, load_pipeline

    pipe = load_pipeline("demo", scheduler=case_scheduler(sched, steps))  # as the case's bench
    pipe.set_progress_bar_config(disable=True)
    decode = pipeline_decoder(pipe)
    calibration = read_prompts(BENCH / "calibration_prompts.txt")
    pairs = [("calibration", p, 42 + k) for k, p in enumerate(calibration)]
    pairs += [("development", p, s) for s in (0, 1) for p in dev_prompts(8)]
    rows = []
    for group, prompt, seed in pairs:
        def generate(method: str = "none", **setting) -> torch.Tensor:
            with etcdiff.enabled(pipe, method, **setting):
                return pipe(**call_kwargs(pipe, prompt, steps, seed), output_type="latent").images

        ref = generate()
        image = decode(ref).numpy()
        for label, method, setting in settings(sched, steps, budgets):
            latents = generate(method, **setting)
            rows.append({"group": group, "prompt": prompt, "seed": seed, "label": label,
                         "log": log_rel_errors(latents, ref.double())[0],
                         "psnr": float(np.mean(psnr(image, decode(latents).numpy())))})
    return rows


def means(rows: list[dict]) -> list[str]:
    """Per group and setting: the mean latent log error (and in dB) and the mean PSNR."""
    by = defaultdict(list)
    for r in rows:
        by[(r["group"], r["label"])].append(r)
    return [f"{g:12s} {label:10s} log {mean(r['log'] for r in rs):7.3f} ({-DB * mean(r['log'] for r in rs):6.2f} dB)"
            f"  PSNR {mean(r['psnr'] for r in rs):6.2f}" for (g, label), rs in by.items()]


def agreement(rows: list[dict], a: str, b: str) -> tuple[int, int]:
    """(agree, disagree): the images where the latent error and the PSNR put the same one of ``a``, ``b`` closer."""
    by = defaultdict(dict)
    for r in rows:
        by[(r["group"], r["prompt"], r["seed"])][r["label"]] = r
    same = [(v[a]["log"] < v[b]["log"]) == (v[a]["psnr"] > v[b]["psnr"]) for v in by.values() if a in v and b in v]
    return sum(same), len(same) - sum(same)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("scheduler")
    ap.add_argument("steps", type=int)
    ap.add_argument("budgets")
    ap.add_argument("--out", default="", help="write every run's record here (JSON lines)")
    ap.add_argument("--rows", default="", help="read the records from this file instead of generating")
    ap.add_argument("--pair", nargs=2, default=None, help="two labels to count the metrics' agreement on")
    args = ap.parse_args()
    if args.rows:
        rows = [json.loads(line) for line in Path(args.rows).read_text().splitlines() if line.strip()]
    else:
        rows = measure(args.scheduler, args.steps, [int(b) for b in args.budgets.split(",")])
    if args.out:
        Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    print("\n".join(means(rows)))
    if args.pair:
        agree, disagree = agreement(rows, *args.pair)
        print(f"{args.pair[0]} against {args.pair[1]}: the two metrics agree on {agree} images, disagree on {disagree}")


if __name__ == "__main__":
    main()
