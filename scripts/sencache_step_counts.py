"""SenCache at a step count it was not calibrated at: tables calibrated at 20 steps against the shipped tables
calibrated at 50 steps, both used for 20-step runs. Digits model, calibration prompts 0-7 seed 42 (20 steps);
evaluation prompts 0-9 seed 0; eps_start 0.005, K 10, eps_main 0.3, 0.6, 1.0; PSNR against the full run.
Usage: PYTHONPATH=src python scripts/sencache_step_counts.py"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch

import etcdiff
from etcdiff.calibrate import calibrate_method
from etcdiff.metrics import psnr
from etcdiff.models import load_pipeline
from etcdiff.policies.step.sencache import SenCacheTables

PROMPTS = list(range(10))


def run(pipe, **setting) -> tuple[np.ndarray, int | None]:
    """The evaluation images at 20 steps, seed 0, with SenCache under ``setting`` (none: full), and its calls."""
    kwargs = dict(num_inference_steps=20, generator=torch.Generator().manual_seed(0), output_type="np")
    if not setting:
        return pipe(PROMPTS, **kwargs).images, None
    with etcdiff.enabled(pipe, "sencache", **setting):
        return pipe(PROMPTS, **kwargs).images, etcdiff.summary(pipe)["model_calls"]


def main() -> None:
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    pipe = load_pipeline("digits")
    pipe.set_progress_bar_config(disable=True)
    shipped_file = Path(etcdiff.__file__).parent / "data/profiles/digits_50steps_sencache.json"
    shipped = json.loads(shipped_file.read_text())["settings"]["tables"]
    own = calibrate_method(pipe, "sencache", list(range(8)), 20, seed=42)["tables"]
    t50, t20 = SenCacheTables.from_dict(shipped), SenCacheTables.from_dict(own)
    rel = [(abs(t50.lookup(t)[0] - jx) / jx, abs(t50.lookup(t)[1] - jt) / jt)
           for t, jx, jt in zip(t20.timesteps, t20.j_x, t20.j_t)]
    print(f"tables at the 20-step timesteps, 50-step lookup vs 20-step: median |rel diff| J_x "
          f"{np.median([r[0] for r in rel]):.3f}, J_t {np.median([r[1] for r in rel]):.3f}; max J_x "
          f"{max(r[0] for r in rel):.3f}, J_t {max(r[1] for r in rel):.3f}")
    full, _ = run(pipe)
    for eps in ({"eps_main": 0.3}, {"eps_main": 0.6}, {"eps_main": 1.0}):
        for label, tables in (("50-step tables", shipped), ("20-step tables", own)):
            img, calls = run(pipe, tables=tables, **eps)
            ps = psnr(full, img)
            print(f"20-step runs, {label}, {eps}: calls {calls} PSNR mean {np.mean(ps):.2f} dB "
                  f"(min {min(ps):.2f})", flush=True)


if __name__ == "__main__":
    main()
