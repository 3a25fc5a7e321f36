"""Do replays miss every ETC+ candidate alike? Calibration data only: half a model's calibration runs are held out,
ETC+ is fitted on the other half without probes under each setting of ``corrections``, and each fit's plans at
N/2, N/3 and N/4 calls run on the held-out runs for real and in replays (with no pull and with ``--pull``). A miss
that differs by candidate reorders the candidates, which no single pull can undo.

Printed: per candidate, the mean log relative error for real and replayed, and their difference; per held-out
run, the mean difference. Usage (the scenes model's 10 calibration captions at seeds 42 + k)::

    PYTHONPATH=src python scripts/replay_miss_by_candidate.py --model demo --scheduler euler --steps 50 \
        --prompts docs/scenes/bench/calibration_prompts.txt --pull -0.1
"""

from __future__ import annotations

import argparse
import statistics

import torch

from etcdiff.calibrate import _fitters, calibrated_method, held_out_seeds
from etcdiff.calibration import load_prompts
from etcdiff.calibration.etc_plus.replay import Replay, log_error, noise_scales
from etcdiff.calibration.policy_runs import pipeline_runner
from etcdiff.calibration.runs import record_pipeline_runs
from etcdiff.models import load_pipeline

CANDIDATES = (True, "auto", False)  # corrections, without probes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="demo")
    p.add_argument("--scheduler", default="euler")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--prompts", required=True, help="a calibration prompt file (the first 10 are used)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--pull", type=float, default=0.0, help="the replays' constant pull (the fitted one, e.g. -0.1)")
    args = p.parse_args()
    torch.set_num_threads(1)
    pipe = load_pipeline(args.model, device="cpu", scheduler=args.scheduler)
    pipe.set_progress_bar_config(disable=True)
    prompts = load_prompts(args.prompts)[:10]
    seeds = held_out_seeds(args.seed, len(prompts))
    records = record_pipeline_runs(pipe, prompts, args.steps, seeds, None, None)
    run = pipeline_runner(pipe, prompts, args.steps, seeds, None, None)
    fit, build, _ = _fitters(calibrated_method("etc-plus"), None, {}, {})
    held = list(range(len(records) // 2, len(records)))
    train = [r for i, r in enumerate(records) if i not in held]
    replay = Replay(records, args.pull, noise_scales(records))
    budgets = sorted({max(2, round(args.steps / k)) for k in (2, 3, 4)})
    by_run: dict[int, list[float]] = {i: [] for i in held}
    print(f"{args.model} {args.scheduler} {args.steps} steps, held-out runs {held}, budgets {budgets}, "
          f"pull {args.pull:g}")
    for corrections in CANDIDATES:
        fitted = fit(train, propagation=False, corrections=corrections)
        real, replayed = [], []
        for calls in budgets:
            policy = build(fitted, calls)
            for i in held:
                real.append(log_error(run(policy, i), records[i].final))
                replayed.append(log_error(replay(policy, i), records[i].final))
                by_run[i].append(real[-1] - replayed[-1])
        a, b = statistics.mean(real), statistics.mean(replayed)
        print(f"corrections={corrections!s:5}  real {a:.3f}  replayed {b:.3f}  real - replayed {a - b:+.3f}")
    for i in held:
        print(f"run {i} ({prompts[i]!r}): real - replayed {statistics.mean(by_run[i]):+.3f} (mean over candidates)")


if __name__ == "__main__":
    main()
