"""MagCache ratios calibrated at 50 steps and resampled to 20 and 28 steps, against ratios calibrated at 20 and 28
steps: the magnitude-curve resample (etcdiff's) and the nearest index (the reference code's). Digits model
(prompts 0-3) and scenes model (its first 4 demo prompts), seed 0, full runs.
Usage: PYTHONPATH=src python scripts/magcache_resample.py"""

from __future__ import annotations

import math
import warnings

import torch

from etcdiff.integration.block.calibration import calibrate_magcache
from etcdiff.models import demo_prompts, load_pipeline
from etcdiff.policies.block.magcache import nearest_interp, resample_ratios


def mean_log_error(ratios: list[float], measured: list[float]) -> float:
    """Mean |log| ratio between two ratio curves of one step count, past the first step."""
    return sum(abs(math.log(a) - math.log(b)) for a, b in zip(ratios[1:], measured[1:])) / (len(measured) - 1)


def main() -> None:
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    for name in ("digits", "scenes"):
        pipe = load_pipeline(name)
        pipe.set_progress_bar_config(disable=True)
        prompts = list(range(4)) if name == "digits" else demo_prompts(name)[:4]
        ratios = {n: calibrate_magcache(pipe, prompts, n, seed=0).ratios for n in (50, 20, 28)}
        for m in (20, 28):
            measured = ratios[m]
            own = sum(abs(math.log(g)) for g in measured[1:]) / (m - 1)
            print(f"{name} 50 -> {m} steps: mean |log error| magnitude curve "
                  f"{mean_log_error(resample_ratios(ratios[50], m), measured):.4f}, nearest index "
                  f"{mean_log_error(nearest_interp(ratios[50], m), measured):.4f} (measured ratios' mean |log gamma| "
                  f"{own:.4f})")


if __name__ == "__main__":
    main()
