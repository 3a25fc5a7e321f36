"""ETC+ and ERTACache on the scenes model's development prompts, per noise seed: where method choices for that model
are tried before any evaluation caption is looked at.

Development prompts: the scenes grammar at seed 11, less any calibration or evaluation caption of
docs/bench-scenes, the first ``--prompts`` of them; 50 steps, true CFG 3.0; the profiles of docs/bench-scenes
(calibrated on its calibration captions at seed 42). Prints, per method and seed, the mean, median and worst PSNR
against the full run of the same noise, and the mean over all seeds. Every prompt of one seed starts from the same
noise, so a seed is one draw of the noise: compare methods over several seeds.

Run: PYTHONPATH=src python scripts/scenes_dev.py --calls 10,13 --ertacache 0.5,0.3 --seeds 0,1,2
(about 30 s per method and seed at 24 prompts on 2 CPU cores, plus 90 s per seed for the full runs)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

import etcdiff
from etcdiff.metrics import psnr
from etcdiff.models import call_kwargs, load_pipeline
from etcdiff.scenes.grammar import sample_prompts

BENCH = Path(__file__).resolve().parent.parent / "docs" / "bench-scenes"
DEV_GRAMMAR_SEED = 11


def dev_prompts(count: int) -> list[str]:
    """The first ``count`` grammar-seed-11 captions that are neither calibration nor evaluation captions."""
    used = {p.strip() for f in ("calibration_prompts.txt", "evaluation_prompts.txt")
            for p in (BENCH / f).read_text().splitlines() if p.strip()}
    return [p for p in sample_prompts(4 * count + 40, DEV_GRAMMAR_SEED) if p not in used][:count]


def generate(pipe, prompt: str, seed: int, method: str = "none", **settings) -> np.ndarray:
    """One 50-step image of ``prompt`` at ``seed`` with ``method`` on (``"none"``: the full run)."""
    with etcdiff.enabled(pipe, method, **settings):
        return pipe(**call_kwargs(pipe, prompt, 50, seed), output_type="np").images


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", default="10,13,17,25", help="ETC+ budgets (comma-separated)")
    ap.add_argument("--ertacache", default="0.5", help="ERTACache thresholds of docs/bench-scenes/profiles")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--prompts", type=int, default=24)
    args = ap.parse_args()
    torch.set_num_threads(2)
    pipe = load_pipeline("demo")
    pipe.set_progress_bar_config(disable=True)
    prompts, seeds = dev_prompts(args.prompts), [int(s) for s in args.seeds.split(",")]
    profiles = BENCH / "profiles"
    methods = [(f"etc-plus calls={c}", "etc-plus", {"profile": str(profiles / "scenes_50steps_etc-plus.json"),
                                                    "calls": int(c)}) for c in args.calls.split(",") if c]
    methods += [(f"ertacache {t}", "ertacache", {"profile": str(profiles / f"ertacache_{t}.json")})
                for t in args.ertacache.split(",") if t]
    refs = {(p, s): generate(pipe, p, s) for s in seeds for p in prompts}
    print(f"{len(prompts)} development prompts, seeds {seeds}, 50 steps, CFG 3.0")
    for label, method, settings in methods:
        per_seed = []
        for s in seeds:
            v = np.array([float(np.mean(psnr(refs[p, s], generate(pipe, p, s, method, **settings)))) for p in prompts])
            per_seed.append(v)
            print(f"{label:24s} seed {s}: mean {v.mean():6.2f}  median {np.median(v):6.2f}  worst {v.min():6.2f}",
                  flush=True)
        print(f"{label:24s} all seeds: mean {np.concatenate(per_seed).mean():6.2f}", flush=True)


if __name__ == "__main__":
    main()
