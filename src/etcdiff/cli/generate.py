"""``etcdiff generate``: one pipeline call with any method, saving the output and reporting model calls."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from .common import add_scheduler_argument, check_device, guidance_value, key_value, method_options, prepare_output_file


def _method_names() -> list[str]:
    from etcdiff import METHODS

    return list(METHODS)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="Generate with a method on the demo model or a diffusers pipeline",
        description="Run one pipeline call with a caching method and save what it makes.",
    )
    p.add_argument("--model", default="demo", help="'demo' (embedded, offline) or a diffusers hub id / local path")
    add_scheduler_argument(p)
    p.add_argument("--prompt", action="append", required=True, help="prompt (repeat for a batch); for demo a scene caption such as 'a small green ring at the right', for digits a digit 0-9")
    p.add_argument("--method", default="etc", help="method name: " + ", ".join(_method_names()) + " (default etc)")
    p.add_argument("--threshold", type=float, default=None,
                   help="the method's tolerance (ETC: tau; cache-dit: residual_diff_threshold); refused by methods "
                        "without one")
    p.add_argument("--warmup", type=int, default=None, help="steps that always run the model (step methods that have it)")
    p.add_argument("--set", dest="options", action="append", type=key_value, default=[], metavar="KEY=VALUE",
                   help="any other method option, e.g. --set alpha=0.5 (repeatable)")
    p.add_argument("--steps", type=int, default=50, help="sampling steps (default 50)")
    p.add_argument("--guidance", type=guidance_value, default=None, help="guidance scale (default: the pipeline's)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--out", type=Path, default=Path("etcdiff-out/generate.png"),
                   help="output image path; a batch adds -0, -1, ... (default etcdiff-out/generate.png)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    import etcdiff
    from etcdiff.models import call_kwargs, load_pipeline

    if args.steps < 1:
        raise ValueError("--steps must be a positive integer")
    options, notes = method_options(args.method, dict(args.options), args.threshold, args.warmup)
    check_device(args.device)
    prepare_output_file(args.out)  # before the model loads and samples
    for note in notes:
        print(note)
    pipe = load_pipeline(args.model, device=args.device, scheduler=args.scheduler)
    etcdiff.enable(pipe, args.method, **options)
    try:
        kwargs = call_kwargs(pipe, args.prompt if len(args.prompt) > 1 else args.prompt[0], args.steps, args.seed, args.guidance)
        t0 = time.perf_counter()
        with torch.no_grad():
            result = pipe(**kwargs)
        elapsed = time.perf_counter() - t0
        summary = etcdiff.summary(pipe)
        report = etcdiff.last_report(pipe)
    finally:
        etcdiff.disable(pipe)
    paths = _save(result, args.out)
    settings = ", ".join(f"{k}={v}" for k, v in summary["settings"].items())
    kind = etcdiff.get_method(args.method).kind
    print(f"{args.method}({settings}) on {args.model}, {report.num_steps} steps, {elapsed:.2f} s (one run)")
    if kind == "step":
        print(f"model calls: {report.model_calls} (denoiser forwards; {report.num_computed} of {report.num_steps} "
              f"steps computed, {summary['speedup']:.2f}x fewer)")
        print("computed steps:", report.computed_steps)
        if summary.get("note"):
            print("note:", summary["note"])
    else:  # block-level and external peers: the head and tail run every step; the block stack is what is skipped
        print(f"block-stack executions: {report.stack_runs} (the model's head and tail run on every step)")
    for path in paths:
        print("wrote", path)
    return 0


def _save(result: Any, out: Path) -> list[Path]:
    images = getattr(result, "images", None)
    frames = getattr(result, "frames", None)  # the folder was made by prepare_output_file before sampling
    paths: list[Path] = []
    if images is not None:
        items = list(images)
        for i, img in enumerate(items):
            path = out if len(items) == 1 else out.with_name(f"{out.stem}-{i}{out.suffix}")
            _to_pil(img).save(path)
            paths.append(path)
        return paths
    if frames is not None:  # video pipelines: one GIF per video
        for i, video in enumerate(frames):
            pil = [_to_pil(f) for f in video]
            path = out.with_suffix(".gif") if len(frames) == 1 else out.with_name(f"{out.stem}-{i}.gif")
            pil[0].save(path, save_all=True, append_images=pil[1:], duration=100, loop=0)
            paths.append(path)
        return paths
    raise ValueError(f"don't know how to save a {type(result).__name__} (no images or frames); "
                     "use the Python API for this pipeline.")


def _to_pil(img: Any) -> Any:
    import numpy as np
    from PIL import Image

    if isinstance(img, Image.Image):
        return img
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0, 1) * 255).round().astype(np.uint8)
    return Image.fromarray(arr.squeeze(-1) if arr.ndim == 3 and arr.shape[-1] == 1 else arr)
