"""MeanCache calibrated on the multistep flow solvers themselves vs the shipped profile fitted on Euler runs.
Digits model, 50 steps, calls=17; calibration: prompts 0-7, seed 42; evaluation: prompts 0-9, seed 0 (other
noises); PSNR against the full run on the same scheduler.
Usage: PYTHONPATH=src python scripts/meancache_multistep_fit.py"""
import math, warnings, torch, numpy as np, etcdiff
from diffusers import UniPCMultistepScheduler, DPMSolverMultistepScheduler
from etcdiff.calibrate import calibrate_method
from etcdiff.models import load_pipeline
from pathlib import Path

SHIPPED = Path(etcdiff.__file__).parent / "data" / "profiles" / "digits_50steps_meancache.json"  # made on Euler runs
evaluate = list(range(10))


def psnr(a, b):
    mse = float(((a - b) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def run(pipe, **kw):
    if kw: etcdiff.enable(pipe, "meancache", **kw)
    out = pipe(evaluate, num_inference_steps=50, generator=torch.Generator().manual_seed(0), output_type="np").images
    calls = etcdiff.summary(pipe)["model_calls"] if kw else None
    etcdiff.disable(pipe)
    return out, calls


def main():
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    pipe = load_pipeline("digits"); pipe.set_progress_bar_config(disable=True)
    shift = pipe.scheduler.config.get("shift", 1.0)
    scheds = {
        "UniPC (flow, bh2)": lambda: UniPCMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=shift),
        "DPM-Solver++ 2M (flow)": lambda: DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=shift),
    }
    for name, make in scheds.items():
        pipe.scheduler = make()
        full, _ = run(pipe)
        own = calibrate_method(pipe, "meancache", list(range(8)), 50, seed=42, calls=17)["profile"]
        for label, kw in (("shipped Euler-fitted profile", dict(calls=17, profile=str(SHIPPED))),
                          ("profile fitted on this solver", dict(calls=17, profile=own))):
            img, calls = run(pipe, **kw)
            ps = [psnr(img[i], full[i]) for i in range(len(evaluate))]
            print(f"{name:24s} {label:30s} calls={calls} PSNR mean {np.mean(ps):.2f} dB (min {min(ps):.2f})", flush=True)


if __name__ == "__main__":
    main()
