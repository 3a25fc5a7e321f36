"""Memory and time of ETC+'s serving surrogate (``serve_steps``) against a spline of the recorded data itself.

Records ``--runs`` full runs of a cheap stand-in model (FlowMatch Euler, ``--steps`` steps, latents of
``--shape``), then, each in a fresh process so that the peak memory of one does not hide the other's:

- ``weights``: :class:`etcdiff.calibration.etc_plus.surrogate.SurrogateDenoiser` (the runs kept once, a spline of
  the unit vectors gives each recorded step's weight), then ``--repeats`` surrogate runs at ``--at`` steps;
- ``data``: scipy's ``CubicSpline`` of the recorded inputs and outputs themselves (float64 coefficients: what the
  first version of the surrogate held), evaluated over the same runs.

Prints the recorded size, the rise of the peak resident memory while building, the build time and the runs' time,
and the largest difference between the two surrogates' final latents (relative). Usage::

    python scripts/surrogate_memory.py                      # 10 runs of 16x64x64, 50 steps: about a minute
    python scripts/surrogate_memory.py --shape 1 4 4 --runs 3 --steps 12 --at 8   # seconds
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import subprocess
import sys
import tempfile
import time

import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from scipy.interpolate import CubicSpline

import etcdiff
from etcdiff.calibration.etc_plus.replay import noise_scales
from etcdiff.calibration.etc_plus.surrogate import SPLINE_ENDS, SurrogateDenoiser
from etcdiff.calibration.runs import record_denoiser_runs
from etcdiff.policies import NoCache

PULL = 0.3  # a constant feedback: both surrogates answer strays alike


def _model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A stand-in denoiser, smooth in time, that follows its input a little."""
    return torch.sin(3 * float(t) / 1000 + x) - 0.1 * x


class _DataSpline(SurrogateDenoiser):
    """The surrogate with scipy's spline of the recorded data itself (float64 coefficients per value)."""

    def __init__(self, records: list, feedback: list[float], scales: list[float]) -> None:
        super().__init__(records, feedback, scales)
        data = {name: CubicSpline(self._axis(self._times), getattr(self, name).double().numpy(), axis=0,
                                  bc_type=SPLINE_ENDS)
                for name in ("_inputs", "_outputs")}
        self._inputs = self._outputs = None  # only the splines are held
        self._splines = data

    def _recorded(self, t: float) -> tuple[torch.Tensor, torch.Tensor]:
        at = self._axis(t)
        return (torch.from_numpy(self._splines["_inputs"](at)).reshape(self.shape),
                torch.from_numpy(self._splines["_outputs"](at)).reshape(self.shape))


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def measure(kind: str, args: argparse.Namespace, out: str) -> dict:
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    noises = torch.randn(args.runs, *args.shape, generator=torch.Generator().manual_seed(0))
    records = record_denoiser_runs(_model, sched, noises, args.steps)
    scales = noise_scales(records)
    before = _peak_mb()
    start = time.perf_counter()
    surrogate = (SurrogateDenoiser if kind == "weights" else _DataSpline)(records, [PULL] * args.steps, scales)
    built = time.perf_counter()
    after = _peak_mb()
    for _ in range(args.repeats):
        final = etcdiff.sample(surrogate, copy.deepcopy(sched), noises, args.at, NoCache())
    torch.save(final, out)
    return {"kind": kind, "recorded_mb": 2 * args.steps * noises.numel() * 4 / 2**20, "peak_rise_mb": after - before,
            "build_s": built - start, "runs_s": time.perf_counter() - built}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs="+", default=[16, 64, 64])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--at", type=int, default=28, help="the step count the surrogate runs at")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", choices=("weights", "data"), help=argparse.SUPPRESS)  # one side, in its own process
    ap.add_argument("--final", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.only:
        print(json.dumps(measure(args.only, args, args.final)))
        return
    rows, finals = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("weights", "data"):
            finals.append(f"{tmp}/{kind}.pt")
            cmd = [sys.executable, __file__, "--only", kind, "--final", finals[-1], "--shape", *map(str, args.shape),
                   "--runs", str(args.runs), "--steps", str(args.steps), "--at", str(args.at),
                   "--repeats", str(args.repeats)]
            rows.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout))
        a, b = (torch.load(f) for f in finals)
    print(f"{args.runs} runs of {'x'.join(map(str, args.shape))} latents, {args.steps} steps "
          f"({rows[0]['recorded_mb']:.0f} MB recorded); {args.repeats} surrogate runs at {args.at} steps")
    for r in rows:
        print(f"  {r['kind']:7s} peak memory +{r['peak_rise_mb']:.0f} MB while building "
              f"({r['peak_rise_mb'] / r['recorded_mb']:.1f}x the runs), build {r['build_s']:.1f} s, "
              f"runs {r['runs_s']:.1f} s")
    print(f"  largest difference of the final latents: {float((a - b).abs().max() / b.abs().max()):.1e} (relative)")


if __name__ == "__main__":
    main()
