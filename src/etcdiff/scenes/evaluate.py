"""Evaluate the scenes model: ``python -m etcdiff.scenes.evaluate [--n 200] [--steps 50] [--grid PNG] [--json OUT]``.

Prompt adherence on held-out prompts (drawn from the grammar with ``EVAL_SEED``; calibration uses
``CALIBRATION_SEED``, training scenes ``random.Random(0)``), a grid PNG of prompts and images, and optionally
the ETC tolerance search (``--calibrate K``: K calibration prompts, s_bar / d_bar curves and change point r).
"""

from __future__ import annotations

import argparse
import json
import random
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .adherence import read_objects
from .grammar import CALIBRATION_SEED, EVAL_SEED, caption, calibration_prompts, held_out_prompts, sample_scene

def training_captions(pool: int, seed: int) -> set[str]:
    """The set of object lists (as sorted phrases) seen in training, to report held-out overlap."""
    rng = random.Random(seed)
    return {" and ".join(sorted(o.phrase() for o in sample_scene(rng).objects)) for _ in range(pool)}


@torch.no_grad()
def generate(pipe: Any, prompts: list[str], steps: int = 50, seed: int = 0, batch: int = 10,
             guidance_scale: float | None = None) -> list[np.ndarray]:
    """One uint8 [64, 64, 3] image per prompt; prompt i uses a generator seeded ``seed + i``."""
    images: list[np.ndarray] = []
    kw = {} if guidance_scale is None else {"guidance_scale": guidance_scale}
    for start in range(0, len(prompts), batch):
        chunk = prompts[start : start + batch]
        gens = [torch.Generator().manual_seed(seed + start + i) for i in range(len(chunk))]
        out = pipe(chunk, num_inference_steps=steps, generator=gens, output_type="np", **kw).images
        images.extend((np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8))
    return images


def adherence_report(images: list[np.ndarray], prompts: list[str]) -> dict[str, Any]:
    """Pooled and per-attribute adherence figures."""
    rows = [r for im, p in zip(images, prompts) for r in read_objects(im, p)]
    n = len(rows)
    return dict(
        objects=n, prompts=len(prompts),
        adherence=sum(r.correct for r in rows) / n,
        present=sum(r.pixels >= 10 for r in rows) / n,
        color=sum(r.color == r.requested.color for r in rows) / n,
        shape=sum(r.shape == r.requested.shape for r in rows) / n,
        size=sum(r.size == r.requested.size for r in rows) / n,
        by_count={k: sum(r.correct for r in rows_k) / len(rows_k) for k in (1, 2, 3)
                  if (rows_k := [r for im, p in zip(images, prompts) if p.count(" and ") + 1 == k
                                 for r in read_objects(im, p)])},
    )


def save_grid(images: list[np.ndarray], prompts: list[str], path: Path, cols: int = 6,
              scores: list[float] | None = None) -> None:
    """A grid of images, each titled with its (wrapped) prompt and, if given, its adherence."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = (len(images) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.4, rows * 2.9))
    for ax in np.atleast_1d(axes).ravel():
        ax.axis("off")
    for k, (im, p) in enumerate(zip(images, prompts)):
        ax = np.atleast_1d(axes).ravel()[k]
        ax.imshow(im, interpolation="nearest")
        title = textwrap.fill(p.replace(" and ", " and\n"), 30, replace_whitespace=False)
        if scores is not None:
            title += f"\n[{scores[k]:.0%}]"
        ax.set_title(title, fontsize=5.5)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Prompt adherence, grid and ETC search of the scenes model.")
    p.add_argument("--n", type=int, default=200, help="held-out prompts")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, default=None, help="true-CFG scale (default: the pipeline's)")
    p.add_argument("--weights", type=Path, default=None, help="weights folder (default: the shipped one)")
    p.add_argument("--grid", type=Path, default=None, help="save a grid PNG of the first --grid-n prompts")
    p.add_argument("--grid-n", type=int, default=24)
    p.add_argument("--json", type=Path, default=None, help="write the figures as JSON")
    p.add_argument("--calibrate", type=int, default=0, help="also run the ETC search on this many prompts")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--prompt-seed", type=int, default=EVAL_SEED,
                   help="grammar seed of the prompts (default: the held-out set; another seed gives a development set "
                        "for choosing settings without touching the reported prompts)")
    p.add_argument("--part", default=None, help="generate only held-out prompts LO:HI (save with --images-out)")
    p.add_argument("--images-out", type=Path, default=None, help="save generated images (.npz)")
    p.add_argument("--images-in", type=Path, nargs="*", default=None, help="score saved parts instead of generating")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    from .pipeline import ScenesPipeline

    pipe = ScenesPipeline.from_embedded(weights_dir=a.weights)
    pipe.set_progress_bar_config(disable=True)
    result: dict[str, Any] = dict(steps=a.steps, guidance=a.guidance, eval_seed=a.prompt_seed)
    if a.n:
        prompts = held_out_prompts(a.n, seed=a.prompt_seed)
        lo, hi = (int(v) for v in a.part.split(":")) if a.part else (0, a.n)
        if a.images_in:  # merge parts generated earlier
            images = [im for f in a.images_in for im in np.load(f)["images"]]
        else:
            t0 = time.time()
            images = generate(pipe, prompts[lo:hi], a.steps, seed=lo, guidance_scale=a.guidance)
            result["seconds"] = round(time.time() - t0, 1)
            if a.images_out:
                np.savez_compressed(a.images_out, images=np.stack(images), start=lo)
            if a.part:
                print(json.dumps(dict(part=a.part, seconds=result["seconds"], threads=a.threads)))
                return
        if len(images) != len(prompts):
            raise ValueError(f"got {len(images)} images for {len(prompts)} held-out prompts; merge every part")
        result.update(adherence_report(images, prompts))
        from .model import WEIGHTS_DIR

        recipe = json.loads(((a.weights or WEIGHTS_DIR) / "recipe.json").read_text())
        seen = training_captions(recipe["pool"], recipe["seed"])
        fresh = [i for i, q in enumerate(prompts) if " and ".join(sorted(q.split(" and "))) not in seen]
        result["prompts_unseen_in_training"] = len(fresh)
        if fresh:
            result["adherence_unseen"] = adherence_report([images[i] for i in fresh], [prompts[i] for i in fresh])["adherence"]
        print(json.dumps(result, indent=1))
        if a.grid:
            k = min(a.grid_n, len(prompts))
            scores = [sum(r.correct for r in read_objects(images[i], prompts[i])) / (prompts[i].count(" and ") + 1)
                      for i in range(k)]
            save_grid(images[:k], prompts[:k], a.grid, scores=scores)
    if a.calibrate:
        from ..calibration.search import calibrate_pipeline

        cprompts = calibration_prompts(a.calibrate)
        prof = calibrate_pipeline(pipe, cprompts, steps=a.steps, guidance_scale=a.guidance, progress=False)
        result["calibration"] = dict(prompts=cprompts, change_point=prof.change_point, tau=prof.tau,
                                     s_bar=[round(x, 4) for x in prof.s_bar], d_bar=[round(x, 5) for x in prof.d_bar])
        print(json.dumps(result["calibration"]))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()


__all__ = ["CALIBRATION_SEED", "EVAL_SEED", "adherence_report", "calibration_prompts", "caption", "generate",
           "held_out_prompts", "save_grid"]
