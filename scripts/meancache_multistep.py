"""MeanCache on multistep solvers: digits model, 50 steps, calls=17, prompts 0-7, seed 0; PSNR against the full
run on the same scheduler. Usage: PYTHONPATH=src python scripts/meancache_multistep.py"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

import etcdiff
from etcdiff.metrics import psnr
from etcdiff.models import load_pipeline

PROMPTS = list(range(8))


def run(pipe, method: str | None, **setting) -> tuple[np.ndarray, int | None]:
    """The images of the prompts at 50 steps, seed 0, under ``method`` (``None``: full), and its model calls."""
    def images() -> np.ndarray:
        return pipe(PROMPTS, num_inference_steps=50, generator=torch.Generator().manual_seed(0),
                    output_type="np").images
    if method is None:
        return images(), None
    with etcdiff.enabled(pipe, method, **setting):
        return images(), etcdiff.summary(pipe)["model_calls"]


def main() -> None:
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    pipe = load_pipeline("digits")
    pipe.set_progress_bar_config(disable=True)
    euler = pipe.scheduler
    print("euler config:", dict(euler.config))
    shift = euler.config.get("shift", 1.0)
    flow = dict(use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=shift)
    schedulers = {"FlowMatchEuler": euler, "UniPC (flow, bh2)": UniPCMultistepScheduler(**flow),
                  "DPM-Solver++ 2M (flow)": DPMSolverMultistepScheduler(**flow)}
    for name, scheduler in schedulers.items():
        pipe.scheduler = scheduler
        full, _ = run(pipe, None)
        for method, setting in (("meancache", dict(calls=17)), ("fixed", dict(interval=3))):
            try:
                img, calls = run(pipe, method, **setting)
            except ValueError as e:
                print(f"{name:24s} {method:9s} refused: {e}")
                continue
            ps = psnr(full, img)
            print(f"{name:24s} {method:9s} calls={calls} PSNR mean {np.mean(ps):.2f} dB (min {min(ps):.2f})")


if __name__ == "__main__":
    main()
