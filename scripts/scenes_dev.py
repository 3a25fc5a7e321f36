"""ETC+ and ERTACache on the scenes model, per noise seed, one caption per generation: where method choices for
that model are tried (on development prompts) before any evaluation caption is looked at, and where many draws
of the noise are measured at once (on a GPU).

Captions: ``dev`` (default), the scenes grammar at seed 11 less any calibration or evaluation caption of
docs/scenes/bench, the first ``--prompts`` of them; or ``heldout:A:B``, the held-out captions A..B-1 of the
evaluation grammar (``held_out_prompts()``: the bench's 8 evaluation captions are 0..7), less any development
prompt. 50 steps, true CFG 3.0; the profiles of docs/scenes/bench (calibrated on its calibration captions at seed
42); ``--steps 28`` takes docs/scenes/bench/adherence-28's profiles. ``--trend-caps`` also runs ETC+ with each cap
(``trend_cap``), ``--adapt-trend`` with the trend weighed online (``adapt_trend``). Prints, per method and seed,
the mean, median and worst PSNR against the full run of the same noise; the mean over all seeds with the share
of the captions' objects read right (``etcdiff.scenes.adherence``); and each method's front at 2x-5x fewer calls
(``etcdiff.bench.front.front_at``). Every
prompt of one seed starts from the same noise, so a seed is one draw of the noise: compare methods over several.
A seed draws other noise on a GPU than on the CPU (the generator lives on the device).

Run: PYTHONPATH=src python scripts/scenes_dev.py --calls 10,13 --ertacache 0.5,0.3 --seeds 0,1,2
(at 28 steps, with caps: ``--steps 28 --calls 14,9,7 --trend-caps 0.5,0 --ertacache 0.4,0.7 --seeds 0,1``)
(about 30 s per method and seed at 24 prompts on 2 CPU cores, plus 90 s per seed for the full runs;
``--device cuda --workers 14`` spreads the (caption, seed) pairs over 14 processes on one GPU)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
from collections import defaultdict
from pathlib import Path
from statistics import mean, median

import numpy as np
import torch

import etcdiff
from etcdiff.bench.front import front_at
from etcdiff.metrics import psnr
from etcdiff.models import call_kwargs, load_pipeline
from etcdiff.scenes.adherence import read_objects
from etcdiff.scenes.grammar import held_out_prompts, sample_prompts

BENCH = Path(__file__).resolve().parent.parent / "docs" / "scenes" / "bench"
DEV_GRAMMAR_SEED = 11
PROFILES = {50: BENCH / "profiles", 28: BENCH / "adherence-28" / "profiles"}  # ETC+ and ERTACache, per step count


def case_scheduler(sched: str, steps: int) -> str | None:
    """The scheduler a margin-table case's bench loaded the pipeline with: ``None`` (the pipeline's own FlowMatch
    Euler) for Euler at 28 steps, the adherence bench; the case's scheduler otherwise."""
    return None if (sched, int(steps)) == ("euler", 28) else sched


def dev_prompts(count: int) -> list[str]:
    """The first ``count`` grammar-seed-11 captions that are neither calibration nor evaluation captions."""
    used = {p.strip() for f in ("calibration_prompts.txt", "evaluation_prompts.txt")
            for p in (BENCH / f).read_text().splitlines() if p.strip()}
    return [p for p in sample_prompts(4 * count + 40, DEV_GRAMMAR_SEED) if p not in used][:count]


def captions(which: str, count: int) -> list[str]:
    """``dev`` (the first ``count`` development prompts) or ``heldout:A:B`` (held-out captions A..B-1, less any
    development prompt)."""
    if which == "dev":
        return dev_prompts(count)
    lo, hi = (int(v) for v in which.split(":")[1:])
    dev = set(dev_prompts(200))
    return [p for p in held_out_prompts(hi + 20)[lo:] if p not in dev][: hi - lo]


def methods(args: argparse.Namespace) -> list[tuple[str, str, dict]]:
    """(label, method, settings) of every policy measured."""
    profiles = PROFILES[args.steps]
    plus = str(profiles / f"scenes_{args.steps}steps_etc-plus.json")
    out = [(f"etc-plus calls={c}", "etc-plus", {"profile": plus, "calls": int(c)}) for c in args.calls.split(",") if c]
    out += [(f"etc-plus-cap{cap} calls={c}", "etc-plus", {"profile": plus, "calls": int(c), "trend_cap": float(cap)})
            for cap in args.trend_caps.split(",") if cap for c in args.calls.split(",") if c]
    out += [(f"etc-plus-adapt calls={c}", "etc-plus", {"profile": plus, "calls": int(c), "adapt_trend": True})
            for c in (args.calls.split(",") if args.adapt_trend else []) if c]
    out += [(f"etc-plus-probes calls={c}", "etc-plus", {"profile": str(BENCH / "variants" / "etc-plus_probes.json"),
                                                        "calls": int(c)}) for c in args.probes.split(",") if c]
    out += [(f"ertacache {t}", "ertacache", {"profile": str(profiles / f"ertacache_{t}.json")})
            for t in args.ertacache.split(",") if t]
    return out


def measure(pairs: list[tuple[str, int]], args: argparse.Namespace) -> list[dict]:
    """One record per (caption, seed, method): PSNR against the full run and the real steps."""
    torch.set_num_threads(args.threads)
    pipe = load_pipeline("demo", device=args.device)
    pipe.set_progress_bar_config(disable=True)
    measured, rows = methods(args), []
    for prompt, seed in pairs:
        def generate(method: str = "none", **settings) -> tuple[np.ndarray, list[int] | None]:
            with etcdiff.enabled(pipe, method, **settings) as policy:
                image = pipe(**call_kwargs(pipe, prompt, args.steps, seed), output_type="np").images
            report = getattr(policy, "report", None)
            return image, (list(report().computed_steps) if report is not None else None)

        ref, _ = generate()
        full = read_objects(ref[0], prompt)
        rows.append({"method": "full steps", "prompt": prompt, "seed": seed, "psnr": None, "calls": args.steps,
                     "steps": None, "objects": len(full), "right": sum(r.correct for r in full)})
        for label, method, settings in measured:
            image, steps = generate(method, **settings)
            read = read_objects(image[0], prompt)
            rows.append({"method": label, "prompt": prompt, "seed": seed, "psnr": float(np.mean(psnr(ref, image))),
                         "calls": len(steps) if steps is not None else None, "steps": steps, "objects": len(read),
                         "right": sum(r.correct for r in read)})
    return rows


def _worker(job: tuple[list[tuple[str, int]], argparse.Namespace]) -> list[dict]:
    return measure(*job)


def summarize(rows: list[dict], seeds: list[int], steps: int) -> None:
    by = defaultdict(list)
    for r in rows:
        by[r["method"]].append(r)
    full = by.pop("full steps", [])
    if full:
        share = sum(r["right"] for r in full) / sum(r["objects"] for r in full)
        print(f"{'full steps':28s} objects read right {share:.1%}")
    for label, rs in by.items():
        for s in seeds:
            v = [r["psnr"] for r in rs if r["seed"] == s]
            print(f"{label:28s} seed {s}: mean {mean(v):6.2f}  median {median(v):6.2f}  worst {min(v):6.2f}")
        share = sum(r["right"] for r in rs) / sum(r["objects"] for r in rs)
        print(f"{label:28s} all seeds: mean {mean(r['psnr'] for r in rs):6.2f}  calls {mean(r['calls'] for r in rs):.1f}"
              f"  objects read right {share:.1%}")
    families = defaultdict(list)
    for label, rs in by.items():
        families[label.split()[0]].append((steps / mean(r["calls"] for r in rs), mean(r["psnr"] for r in rs)))
    print(f"\nfront over {len(seeds)} seeds, PSNR (dB) at 2x / 3x / 4x / 5x fewer calls:")
    for family, points in families.items():
        cells = [front_at(points, x) for x in (2, 3, 4, 5)]
        print(f"  {family:16s} " + " / ".join("n/a" if c is None else f"{c:.1f}" for c in cells))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", default="10,13,17,25", help="ETC+ budgets (comma-separated)")
    ap.add_argument("--probes", default="", help="budgets for ETC+ with the probes forced on (docs/scenes/bench/variants)")
    ap.add_argument("--ertacache", default="0.5", help="ERTACache thresholds of docs/scenes/bench/profiles")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, choices=sorted(PROFILES), default=50)
    ap.add_argument("--trend-caps", default="", help="also ETC+ at each budget with these trend_cap values")
    ap.add_argument("--adapt-trend", action="store_true", help="also ETC+ at each budget with adapt_trend=True")
    ap.add_argument("--prompts", type=int, default=24, help="how many development prompts")
    ap.add_argument("--captions", default="dev", help="dev, or heldout:A:B (held-out captions A..B-1)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=1, help="processes, each with its share of (caption, seed)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads per process")
    ap.add_argument("--out", default="", help="also write every record here (JSON lines)")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    prompts = captions(args.captions, args.prompts)
    pairs = [(p, s) for s in seeds for p in prompts]
    print(f"{len(prompts)} captions ({args.captions}), seeds {seeds}, {args.steps} steps, CFG 3.0, {args.device}",
          flush=True)
    if args.workers > 1:
        with mp.get_context("spawn").Pool(args.workers) as pool:
            rows = [r for part in pool.map(_worker, [(pairs[i::args.workers], args) for i in range(args.workers)])
                    for r in part]
    else:
        rows = measure(pairs, args)
    if args.out:
        Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    summarize(rows, seeds, args.steps)


if __name__ == "__main__":
    main()
