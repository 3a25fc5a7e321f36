"""MeanCache and SenCache on the digits demo (50 steps): calibrate on prompts 0-4 (seed 100), evaluate on the
held-out prompts 5-9 (seeds 0, 1): mean model calls per generation and PSNR / SSIM against the full run.

Run: PYTHONPATH=src python scripts/peers_2026_digits.py  (a few minutes on an idle CPU)
"""

from __future__ import annotations

import time

import numpy as np
import torch

import etcdiff
from etcdiff.integration.step.recording import record_pipeline
from etcdiff.integration.step.sensitivity import record_sensitivity_pipeline
from etcdiff.metrics import psnr, ssim
from etcdiff.models import call_kwargs, load_pipeline
from etcdiff.policies import ETC, MeanCache, SenCache, fit_meancache, fit_sencache

STEPS, CAL_SEED = 50, 100
CAL, EVAL, SEEDS = "01234", "56789", (0, 1)
BUDGETS = (10, 13, 17, 25)
SENCACHE = [(0.005, 0.07, 10), (0.05, 0.2, 4), (0.1, 0.5, 6), (0.2, 1.0, 8)]
ETC_TAUS = (0.065, 0.15)


def run(pipe, policy):
    images, calls = [], []
    for p in EVAL:
        for s in SEEDS:
            if policy is None:
                etcdiff.disable(pipe)
            else:
                etcdiff.enable(pipe, policy)
            images.append(pipe(**call_kwargs(pipe, p, STEPS, s), output_type="pt").images)
            calls.append(etcdiff.last_report(pipe).model_calls if policy is not None else STEPS)
    etcdiff.disable(pipe)
    return torch.cat(images), float(np.mean(calls))


def main() -> None:
    torch.manual_seed(0)
    pipe = load_pipeline("digits")
    pipe.set_progress_bar_config(disable=True)
    t0 = time.time()
    trajs = [record_pipeline(pipe, **call_kwargs(pipe, p, STEPS, CAL_SEED), output_type="latent")[0] for p in CAL]
    profile = fit_meancache(trajs, BUDGETS)
    records = [r for p in CAL for r in record_sensitivity_pipeline(pipe, **call_kwargs(pipe, p, STEPS, CAL_SEED), output_type="latent")]
    tables = fit_sencache(records)
    print(f"calibration: {time.time() - t0:.0f} s", flush=True)
    for b in BUDGETS:
        s = profile.schedules[b]
        print(f"  meancache B={b}: computed {s.computed} spans {s.spans}")
    full, _ = run(pipe, None)
    settings = [(f"meancache calls={b}", MeanCache(b, profile=profile)) for b in BUDGETS]
    settings += [(f"sencache eps={es}/{em} K={k}", SenCache(tables, eps_start=es, eps_main=em, max_reuse=k))
                 for es, em, k in SENCACHE]
    settings += [(f"etc tau={tau}", ETC(threshold=tau)) for tau in ETC_TAUS]
    print(f"\n{'method':32s} {'calls':>6s} {'speedup':>8s} {'PSNR':>7s} {'SSIM':>6s}", flush=True)
    for name, policy in settings:
        images, calls = run(pipe, policy)
        print(f"{name:32s} {calls:6.1f} {STEPS / calls:7.2f}x {psnr(full, images).mean():7.2f} "
              f"{ssim(full, images).mean():6.3f}", flush=True)


if __name__ == "__main__":
    main()
