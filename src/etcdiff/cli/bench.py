"""``etcdiff bench``: speed (model calls, FLOPs, latency) against fidelity (SSIM, PSNR, ...), method by method."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from .common import add_scheduler_argument, add_threads_argument, guidance_value

EPILOG = """\
examples:
  etcdiff bench --model demo --methods etc,fixed \\
      --settings 'etc:threshold=0.05,0.1,0.2;fixed:interval=2,3' --seeds 0 --steps 50 --out bench-out
  etcdiff bench --model path/to/pipeline --methods etc,teacache --prompts prompts.txt --seeds 0,1,2

settings: groups separated by ';', each METHOD:KEY=V1,V2 [KEY2=V1,V2 ...]; a group is the Cartesian
  product of its items, values are JSON numbers/true/false/null or strings. A method of --methods without
  settings runs with its defaults.

outputs in --out: results.json (every run, settings, versions, machine), results.csv, report.md (the table),
  pareto.png; reference/ keeps the full-step images and latents (reused by the next run on the same --out);
  runs/rank<R>.jsonl gets each run as soon as it finishes: run the same command again after a crash or
  Ctrl-C and only the missing runs execute.

several processes: each takes every WORLD_SIZE-th (prompt, seed) pair by its RANK and writes its own
  shard; rank 0 waits for the others at a torch.distributed (gloo) barrier and merges. Launch with
      accelerate launch --multi_gpu --num_processes 2 -m etcdiff bench ...     (also on a CPU-only machine)
      torchrun --nproc_per_node 2 -m etcdiff bench ...
  or set RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT yourself. Note: `accelerate launch --cpu` (and
  `--num_processes N` without --multi_gpu on a machine with no GPU) starts a single process. If a process
  died, merge what finished with `etcdiff bench --merge DIR`. On a CPU each process gets cpu_count / WORLD_SIZE threads unless --threads.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="Benchmark methods: speed against fidelity, tables, plots, multi-process sweeps",
        description="Run the full-step reference once per (prompt, seed), then every method x setting; measure "
        "model calls, denoiser FLOPs and wall-clock latency against the reference, and SSIM, PSNR (LPIPS, CLIP score "
        "when their weights are on disk; a digit classifier's agreement on the demo model); write JSON, CSV, a "
        "Markdown table and a Pareto plot.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    p.set_defaults(func=run)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="demo", help="'demo' (embedded, offline) or a diffusers hub id / local path (default demo)")
    add_scheduler_argument(p)
    p.add_argument("--methods", default=None, help="comma-separated method names, any that etcdiff.enable accepts "
                   "(e.g. etc,fixed,teacache); default: the methods named in --settings")
    p.add_argument("--settings", default=None, help="settings grid per method, e.g. 'etc:threshold=0.05,0.1;fixed:interval=2,3'")
    p.add_argument("--prompts", default="demo", help="'demo' (the model's demo prompts: the digits model's ten classes, the scenes model's captions) or a text file with one prompt per line (default demo)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    p.add_argument("--steps", type=int, default=50, help="sampling steps (default 50)")
    p.add_argument("--repeats", type=int, default=3,
                   help="timed repeats per run; the median is reported (default 3); 0 times nothing: each setting "
                   "runs once instead of 1 + 2 x repeats times (quality, calls and FLOPs only)")
    p.add_argument("--guidance", type=guidance_value, default=None, help="guidance scale (default: the pipeline's)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--flops", choices=("per-call", "direct"), default="per-call",
                   help="per-call: count one denoiser forward per input shape and multiply by the calls made (default); "
                   "direct: count every call")
    add_threads_argument(p, "every core, shared among the processes of a launch")
    p.add_argument("--out", type=Path, default=Path("etcdiff-out/bench"), help="output folder (default etcdiff-out/bench)")
    p.add_argument("--merge", type=Path, default=None, metavar="DIR",
                   help="only merge the finished runs of the sweep in DIR into its outputs, run nothing")
    p.add_argument("--wait", type=float, default=None, metavar="SECONDS",
                   help="rank 0: give up waiting for the other processes after this long and merge (default: a week)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _ints(text: str, what: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"{what} must be comma-separated integers, got {text!r}") from None


def config_from_args(args: argparse.Namespace):  # -> BenchConfig
    from ..bench.sweep import BenchConfig, build_grid, read_prompts

    methods = [m for m in (args.methods or "").split(",") if m.strip()]
    return BenchConfig(
        model=args.model, grid=build_grid(methods, args.settings), prompts=read_prompts(args.prompts, args.model),
        seeds=_ints(args.seeds, "--seeds"), steps=args.steps, repeats=args.repeats, guidance=args.guidance,
        out=args.out, device=args.device, flops=args.flops, threads=args.threads, scheduler=args.scheduler,
    )


def run(args: argparse.Namespace) -> int:
    from ..bench.merge import merge
    from ..bench.runner import run_bench

    if args.merge is not None:
        results = merge(args.merge)
        _print_summary(results, args.merge)
        return 0
    config = config_from_args(args)
    result = run_bench(config, progress=not args.no_progress, wait_timeout=args.wait)
    tag = "" if result.world == 1 else f"rank {result.rank}/{result.world}: "
    failed = f", {len(result.failed)} raised (see report.md)" if result.failed else ""
    print(f"etcdiff bench: {tag}{len(result.executed)} runs done{failed}, {len(result.skipped)} already in {config.out} "
          f"(references: {result.references_generated} generated, {result.references_loaded} reused), "
          f"{result.elapsed_s:.0f} s", file=sys.stderr)
    if result.merged is not None:
        _print_summary(result.merged, config.out)
    return 0


def _print_summary(results: dict, out: Path) -> None:
    print((Path(out) / "report.md").read_text())
    print(f"wrote {Path(out) / 'results.json'}, results.csv, report.md, pareto.png")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m etcdiff.cli.bench ...``: the subcommand on its own (same as ``etcdiff bench ...``)."""
    parser = argparse.ArgumentParser(prog="etcdiff bench", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return int(run(args) or 0)
    except (ValueError, KeyError, FileNotFoundError) as e:
        print(f"etcdiff bench: error: {e.args[0] if isinstance(e, KeyError) and e.args else e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
