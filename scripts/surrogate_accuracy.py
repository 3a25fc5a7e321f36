"""How well serve_steps' surrogate interpolates recorded runs between their steps, on the log or the linear
timestep axis.

For each model and scheduler: the calibration noises of ``etc_plus_eval`` (the calibration side only) are run
for real at ``--source`` steps, and the surrogate is built on them
(:class:`etcdiff.calibration.etc_plus.surrogate.SurrogateDenoiser`, no pull). At every timestep of each
``--steps`` count it gives interpolated latents and outputs; the model is then called at those latents (each run
with its own label), and the relative RMS difference from the interpolated outputs says how far the spline leaves
the model between recorded steps. Printed: the largest over the steps and the last three steps, per axis.
Usage::

    PYTHONPATH=src python scripts/surrogate_accuracy.py --models gmm-ddim gmm-flow --schedulers euler unipc dpm
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from typing import Any

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import etc_plus_eval as ev  # noqa: E402
from etc_plus_solvers import scheduler  # noqa: E402

from etcdiff.calibration.etc_plus.surrogate import SurrogateDenoiser  # noqa: E402
from etcdiff.calibration.runs import record_denoiser_runs  # noqa: E402


class _LogAxis(SurrogateDenoiser):
    """The surrogate with its splines on the log of the timestep (floored: a last timestep of 0 stays finite)."""

    def _axis(self, t: Any) -> Any:
        return np.log(np.asarray(t, dtype=np.float64) + 1e-3 * float(self._times[-1]))


def misses(model: str, kind: str, source: int, steps: int) -> dict[str, list[float]]:
    """Per axis, the relative RMS miss of the interpolated outputs at each timestep of ``steps``."""
    m = ev.setup(model)
    m["sched"] = scheduler(model, kind)
    cal_model, noises = ev.calibration_set(m, source)
    labels = [lab for labs, _ in m["calib"] for lab in labs]
    records = record_denoiser_runs(cal_model, copy.deepcopy(m["sched"]), noises, source)
    grid = copy.deepcopy(m["sched"])
    grid.set_timesteps(steps)
    out = {}
    for name, cls in (("t", SurrogateDenoiser), ("log t", _LogAxis)):
        surrogate = cls(records, [0.0] * source, [1.0] * source)
        row = []
        for t in grid.timesteps:
            latents, outputs = surrogate._recorded(float(t))
            real = torch.cat([m["model"](latents[i:i + 1].float(), t, labels=[labels[i]])
                              for i in range(latents.shape[0])]).double()
            row.append(float((outputs - real).pow(2).mean().sqrt() / real.pow(2).mean().sqrt().clamp_min(1e-30)))
        out[name] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["gmm-ddim", "gmm-flow"])
    ap.add_argument("--schedulers", nargs="+", default=["euler", "unipc", "dpm"])
    ap.add_argument("--source", type=int, default=50)
    ap.add_argument("--steps", type=int, nargs="+", default=[20, 28])
    args = ap.parse_args()
    print("| model | scheduler | steps | axis | largest miss | last three steps |")
    print("|---|---|---|---|---|---|")
    for model in args.models:
        for kind in args.schedulers:
            for steps in args.steps:
                for axis, row in misses(model, kind, args.source, steps).items():
                    print(f"| {model} | {kind} | {steps} | {axis} | {max(row):.1e} | "
                          f"{' / '.join(f'{v:.1e}' for v in row[-3:])} |", flush=True)


if __name__ == "__main__":
    main()
