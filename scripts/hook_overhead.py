"""Overhead of the etcdiff hook with a policy that never skips (NoCache), against the bare pipeline.

Embedded demo model, ten digits in one batch, 50 steps, guidance 2.0, seed 0; bare and hooked runs interleaved,
median of the per-pair ratios. Usage: python scripts/hook_overhead.py [--repeats 30] [--threads 1]
"""

import argparse
import statistics
import time

import torch

import etcdiff
from etcdiff.digits import DigitsPipeline


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=50)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pipe = DigitsPipeline.from_embedded()
    pipe.set_progress_bar_config(disable=True)

    def run() -> float:
        g = torch.Generator().manual_seed(0)
        t0 = time.perf_counter()
        pipe(prompt=list(range(10)), num_inference_steps=args.steps, generator=g, output_type="latent")
        return time.perf_counter() - t0

    run()
    bare, hooked, ratios = [], [], []
    for i in range(args.repeats):  # alternate the order (ABBA) so that drift on the machine cancels
        if i % 2 == 0:
            b = run()
        with etcdiff.enabled(pipe, etcdiff.NoCache()):
            h = run()
        if i % 2 == 1:
            b = run()
        bare.append(b)
        hooked.append(h)
        ratios.append(h / b)
    print(f"bare median {statistics.median(bare) * 1000:.1f} ms, NoCache hook median {statistics.median(hooked) * 1000:.1f} ms")
    print(f"overhead: median of paired ratios {100 * (statistics.median(ratios) - 1):+.2f} %, "
          f"ratio of medians {100 * (statistics.median(hooked) / statistics.median(bare) - 1):+.2f} % "
          f"({args.repeats} pairs, {args.steps} steps, {args.threads} thread(s))")


if __name__ == "__main__":
    main()
