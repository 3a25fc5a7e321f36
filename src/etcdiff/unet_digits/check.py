"""How well the UNet digits model draws what it is asked: ``python -m etcdiff.unet_digits.check [--seeds 0,1]
[--steps 20] [--png FILE]``. Samples the ten digits at each seed with DDIM and with DPM-Solver++, prints how many
the shipped digit classifier reads as the prompted digit, and can save the samples as one grid (a row per solver
and seed)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from ..bench.classifier import load_classifier
from .pipeline import SOLVERS, UNetDigitsPipeline


def check(seeds: list[int], steps: int, png: Path | None = None) -> dict[str, int]:
    """Correctly read samples per solver (out of ``10 * len(seeds)``); the grid goes to ``png`` if given."""
    classifier, rows, correct = load_classifier(), [], {}
    for solver in SOLVERS:
        pipe = UNetDigitsPipeline.from_embedded(solver)
        pipe.set_progress_bar_config(disable=True)
        correct[solver] = 0
        for seed in seeds:
            images = pipe(list(range(10)), num_inference_steps=steps, generator=torch.Generator().manual_seed(seed),
                          output_type="np").images
            read = classifier.predict(images)
            correct[solver] += int((read == np.arange(10)).sum())
            print(f"{solver} seed {seed}: read as {read.tolist()}")
            rows.append(np.concatenate(list(images[..., 0]), axis=1))
    if png is not None:
        from PIL import Image

        grid = (np.concatenate(rows, axis=0) * 255).round().astype(np.uint8)
        Image.fromarray(grid).resize((grid.shape[1] * 4, grid.shape[0] * 4), Image.NEAREST).save(png)
    return correct


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")], default=[0, 1])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--png", type=Path, default=None)
    a = p.parse_args(argv)
    for solver, n in check(a.seeds, a.steps, a.png).items():
        print(f"{solver}: {n} of {10 * len(a.seeds)} read as the prompted digit ({a.steps} steps, guidance 2.0)")


if __name__ == "__main__":
    main()
