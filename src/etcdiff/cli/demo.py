"""``etcdiff demo``: an embedded model's demo prompts, full 50 steps against ETC, side by side."""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import guidance_value, noisy, prepare_output_dir, timing

if TYPE_CHECKING:
    import numpy as np


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="Offline demo: an embedded model, full sampling against ETC",
        description="Sample the embedded model's demo prompts at full steps and with ETC; write a "
        "side-by-side PNG and a JSON; print model calls, wall-clock speedup, SSIM and PSNR.",
    )
    p.add_argument("--steps", type=int, default=50, help="sampling steps (default 50)")
    p.add_argument("--threshold", type=float, default=None, help="ETC tolerance (default: the demo model's shipped profile)")
    p.add_argument("--warmup", type=int, default=None, help="ETC warm-up steps (default: from the profile, else 6)")
    p.add_argument("--model", default="demo", help="an embedded model: demo (the default, = scenes), digits, unet-digits or unet-digits-dpm")
    p.add_argument("--guidance", type=guidance_value, default=None, help="guidance scale (default: the model's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial noise (default 0)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats of each run; the median is reported (default 3)")
    p.add_argument("--out", type=Path, default=Path("etcdiff-out/demo"), help="output folder (default etcdiff-out/demo)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    import etcdiff
    from etcdiff.api import resolve_policy
    from etcdiff.metrics import psnr, ssim
    from etcdiff.models import EMBEDDED, load_pipeline

    if args.steps < 2 or args.repeats < 1:
        raise ValueError("--steps must be at least 2 and --repeats at least 1")
    if args.model not in EMBEDDED:
        raise ValueError(f"--model {args.model!r}: demo runs an embedded model: {', '.join(EMBEDDED)}.")
    prepare_output_dir(args.out)  # before any sampling
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    pipe = load_pipeline(args.model)
    pipe.set_progress_bar_config(disable=True)
    prompts = list(pipe.etcdiff_demo_prompts)
    guidance = pipe.etcdiff_guidance if args.guidance is None else args.guidance
    kwargs: dict[str, Any] = {}
    if args.threshold is not None:
        kwargs["threshold"] = args.threshold
    if args.warmup is not None:
        kwargs["warmup"] = args.warmup

    def generate() -> np.ndarray:
        g = torch.Generator().manual_seed(args.seed)
        return pipe(prompt=prompts, num_inference_steps=args.steps, guidance_scale=guidance, generator=g, output_type="np").images

    methods = {"full": etcdiff.NoCache(), "etc": resolve_policy("etc", pipe, **kwargs)}
    images: dict[str, np.ndarray] = {}
    reports: dict[str, Any] = {}
    times: dict[str, list[float]] = {m: [] for m in methods}
    print(f"etcdiff demo: {pipe.etcdiff_description}, {args.steps} steps, guidance {guidance}, seed {args.seed}, "
          f"{len(prompts)} prompts in one batch, {methods['etc']!r}")
    from tqdm.auto import tqdm

    with tqdm(total=len(methods) * (args.repeats + 1), desc="sampling", unit="run") as bar:
        for r in range(args.repeats + 1):  # round 0 is the warm-up and gives the images; the rest are timed
            for name, policy in methods.items():
                with etcdiff.enabled(pipe, policy):
                    t0 = time.perf_counter()
                    out = generate()
                    dt = time.perf_counter() - t0
                    if r == 0:
                        images[name], reports[name] = out, etcdiff.last_report(pipe)
                    else:
                        times[name].append(dt)
                bar.update()

    s, p = ssim(images["full"], images["etc"]), psnr(images["full"], images["etc"])
    spread = {m: timing(v) for m, v in times.items()}
    med = {m: spread[m]["median"] for m in times}
    full_calls, etc_calls = reports["full"].model_calls, reports["etc"].model_calls
    result = {
        "model": pipe.etcdiff_description,
        "prompts": prompts,
        "seed": args.seed,
        "steps": args.steps,
        "guidance_scale": guidance,
        "policy": repr(methods["etc"]),
        "model_calls": {"full": full_calls, "etc": etc_calls},
        "call_reduction": full_calls / etc_calls,
        "computed_steps": reports["etc"].computed_steps,
        "latency_s": spread,
        "wallclock_speedup": med["full"] / med["etc"],
        "wallclock_noisy": noisy(med["full"] / med["etc"], full_calls / etc_calls),
        "ssim": {"mean": float(s.mean()), "per_image": s.tolist()},
        "psnr_db": {"mean": float(p.mean()), "min": float(p.min()), "per_image": p.tolist()},
        "versions": {"etcdiff": etcdiff.__version__, "torch": torch.__version__, "python": platform.python_version()},
        "machine": {"cpu_threads": torch.get_num_threads(), "platform": platform.platform()},
    }
    png = args.out / "demo.png"
    _side_by_side(images["full"], images["etc"], png, result)
    (args.out / "demo.json").write_text(json.dumps(result, indent=2))
    print(f"model calls   : full {full_calls}, ETC {etc_calls}  ({result['call_reduction']:.2f}x fewer)")
    iqr = {m: f"{spread[m]['q1'] * 1000:.0f}-{spread[m]['q3'] * 1000:.0f}" for m in methods}
    print(f"wall-clock    : full {med['full'] * 1000:.0f} ms (IQR {iqr['full']}), ETC {med['etc'] * 1000:.0f} ms "
          f"(IQR {iqr['etc']}), median of {args.repeats}  ({result['wallclock_speedup']:.2f}x faster)")
    if result["wallclock_noisy"]:
        print(f"                the wall-clock speedup exceeds the {result['call_reduction']:.2f}x reduction in model "
              "calls by more than 10 %: the machine's load changed between runs, so this timing is not trustworthy")
    print(f"fidelity      : SSIM {s.mean():.4f}, PSNR {p.mean():.2f} dB (min {p.min():.2f}) against the full run")
    print(f"computed steps: {reports['etc'].computed_steps}")
    print(f"wrote {png} and {args.out / 'demo.json'}")
    return 0


def column_title(prompt: Any, width: int = 22) -> str:
    """A prompt wrapped to a picture column's width (at most four lines)."""
    import textwrap

    lines = textwrap.wrap(str(prompt), width) or [repr(prompt)]
    return "\n".join(lines[:3] + ([" ".join(lines[3:])] if len(lines) > 3 else []))


def _side_by_side(full: np.ndarray, etc: np.ndarray, path: Path, result: dict[str, Any]) -> None:
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [("full", full), ("ETC", etc), ("|diff| x10", np.clip(np.abs(full - etc) * 10, 0, 1))]
    width = max(full.shape[0] * 1.1, 4.0)  # room for the two-line title with few prompts, and the prompts
    fig, axes = plt.subplots(len(rows), full.shape[0], figsize=(width, len(rows) * width / full.shape[0] + 1.1),
                             squeeze=False)
    for r, (label, imgs) in enumerate(rows):
        for c in range(full.shape[0]):
            ax = axes[r, c]
            img = imgs[c]
            if img.shape[-1] == 1:
                ax.imshow(img[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            else:
                ax.imshow(np.clip(img, 0, 1), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
            if r == 0:  # each column says which prompt it draws
                ax.set_title(column_title(result["prompts"][c]), fontsize=5)
    fig.suptitle(
        f"{result['steps']} steps: {result['model_calls']['full']} vs {result['model_calls']['etc']} model calls, "
        f"{result['wallclock_speedup']:.2f}x wall-clock,\n PSNR {result['psnr_db']['mean']:.1f} dB, "
        f"SSIM {result['ssim']['mean']:.3f}",
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
