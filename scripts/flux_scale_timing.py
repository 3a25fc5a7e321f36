"""Wall-clock speedup against call reduction, and peak memory, on a FLUX.1-dev-sized transformer.

Builds a ``FluxTransformer2DModel`` with FLUX.1-dev's shape (19 double-stream and 38 single-stream blocks, hidden
size 3072 = 24 heads x 128, guidance embedding) and **random weights** (no download), in bf16, and samples a
1024x1024 image (4096 packed latent tokens) against 512 random text tokens with ``etcdiff.sample`` and
FlowMatch Euler at FLUX's shift for 4096 tokens (exp(1.15)), at 28 and 50 steps, under ``none``, ``etc``,
``etc-plus`` and ``ertacache``.

Random weights say nothing about image quality; they do give the real cost of a call, of each method's
bookkeeping between calls and of its memory. The calibrated methods need settings fitted on the model they run
on, so each is calibrated inside the script on this random model (``etcdiff.calibrate_policy`` at the
``--calibration-seeds``, disjoint from the timed ``--seeds``): ETC's tolerance, ETC+'s window errors (at
``calls`` = steps / each of ``--etc-plus-speedups``) and ERTACache's profile (threshold 0.2). The output says so
for every row. Model calls are counted at the denoiser and checked against each policy's report.

Usage::

    python scripts/flux_scale_timing.py --out flux-scale-out            # CUDA, FLUX.1-dev size (about 24 GB)
    python scripts/flux_scale_timing.py --tiny --steps 8 --out /tmp/fs  # a few seconds on a CPU (the test)

Writes ``flux_scale_timing.json`` and ``flux_scale_timing.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

import etcdiff
from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

FLUX_DEV = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
                axes_dims_rope=(16, 56, 56))
TINY = dict(patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=16, guidance_embeds=True,
            axes_dims_rope=(4, 6, 6))
FLUX_SHIFT = math.exp(1.15)  # FLUX's dynamic shift at 4096 image tokens (mu = max_shift)
CALIBRATED = ("etc", "etc-plus", "ertacache")


class Denoiser:
    """``model(latents, t)`` for ``etcdiff.sample``: the transformer with fixed text conditioning; counts calls."""

    def __init__(self, transformer: FluxTransformer2DModel, resolution: int, text_tokens: int, guidance: float,
                 device: torch.device, dtype: torch.dtype, seed: int = 1234) -> None:
        cfg = transformer.config
        g = torch.Generator().manual_seed(seed)
        self.transformer, self.calls = transformer, 0
        self.text = torch.randn(1, text_tokens, cfg.joint_attention_dim, generator=g).to(device, dtype)
        self.pooled = torch.randn(1, cfg.pooled_projection_dim, generator=g).to(device, dtype)
        self.side = resolution // 16  # VAE /8, then 2x2 packing
        ids = torch.zeros(self.side, self.side, 3)
        ids[..., 1] = torch.arange(self.side)[:, None]
        ids[..., 2] = torch.arange(self.side)[None, :]
        self.img_ids = ids.reshape(-1, 3).to(device, dtype)
        self.txt_ids = torch.zeros(text_tokens, 3, device=device, dtype=dtype)
        self.guidance = torch.tensor([guidance], device=device, dtype=torch.float32)

    @property
    def latent_shape(self) -> tuple[int, int]:
        return self.side * self.side, self.transformer.config.in_channels

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        b = x.shape[0]
        return self.transformer(hidden_states=x, timestep=(t / 1000).expand(b).to(x.dtype),
                                guidance=self.guidance.expand(b), pooled_projections=self.pooled.expand(b, -1),
                                encoder_hidden_states=self.text.expand(b, -1, -1), txt_ids=self.txt_ids,
                                img_ids=self.img_ids, return_dict=False)[0]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Packed latents to a 3-channel "image" in [0, 1] (the first three latent channels; there is no VAE)."""
        n, side = latents.shape[0], self.side
        x = latents.float().cpu().view(n, side, side, -1, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(n, -1, 2 * side, 2 * side)
        return (x[:, :3] / 2 + 0.5).clamp(0, 1)


def build(tiny: bool, device: torch.device, dtype: torch.dtype) -> FluxTransformer2DModel:
    """The transformer with random weights, made directly on ``device`` in ``dtype`` (no fp32 copy)."""
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = FluxTransformer2DModel(**(TINY if tiny else FLUX_DEV))
    finally:
        torch.set_default_dtype(default)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def noises(seeds: list[int], shape: tuple[int, int], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.cat([torch.randn(1, *shape, generator=torch.Generator().manual_seed(s)) for s in seeds]).to(device, dtype)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def settings_for(steps: int, speedups: list[float]) -> list[tuple[str, dict[str, Any]]]:
    """(method, settings) of every timed row at ``steps``."""
    rows: list[tuple[str, dict[str, Any]]] = [("none", {}), ("etc", {})]
    rows += [("etc-plus", {"calls": max(2, round(steps / s))}) for s in speedups]
    return rows + [("ertacache", {"threshold": 0.2})]


def calibrate(name: str, settings: dict[str, Any], den: Denoiser, cal: torch.Tensor, steps: int,
              fitted: dict[str, Any], replays: bool = False) -> tuple[Any, dict]:
    """The method's policy and how it was obtained (calibration seeds, generations, seconds). A method is
    calibrated once per step count (kept in ``fitted``); ETC+'s profile does not depend on ``calls``, so its rows
    share one. ``replays``: ETC+'s probe runs are replayed from its full runs (two generations in all here)."""
    if name not in CALIBRATED:
        return etcdiff.make_policy(name, **settings), {"source": "no calibration needed"}
    if name in fitted:
        first, how = fitted[name]
        if name != "etc-plus":
            return first, how
        # ``calibrated``, not ``profile``: the latter is the fit chosen for the first row's budget
        return etcdiff.make_policy(name, profile=first.calibrated, **settings), {**how, "shared_with": repr(first)}
    sync(cal.device)
    before, t0 = den.calls, time.perf_counter()
    extra = {"replays": True} if replays and name == "etc-plus" else {}
    policy = etcdiff.calibrate_policy(name, den, FlowMatchEulerDiscreteScheduler(shift=FLUX_SHIFT), cal, steps,
                                      decode=den.decode, **settings, **extra)
    sync(cal.device)
    how = {"source": "calibrated inside this script on the same random-weight model",
           "generations": (den.calls - before) / steps, "seconds": time.perf_counter() - t0, **extra}
    if replays and name == "etc-plus":  # whether the probes really were replayed, and if not why
        how["replay_used"] = bool((policy.calibrated.get("replay") or {}).get("used"))
    fitted[name] = (policy, how)
    return policy, how


def time_policy(policy: Any, den: Denoiser, noise: torch.Tensor, steps: int, repeats: int,
                warmups: int = 1) -> dict[str, Any]:
    """Median wall-clock of ``repeats`` timed runs after ``warmups`` untimed ones; calls counted and reported;
    peak memory."""
    device = noise.device
    times, calls, reported = [], [], []
    out = None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for r in range(repeats + warmups):
        sched = FlowMatchEulerDiscreteScheduler(shift=FLUX_SHIFT)
        sync(device)
        before, t0 = den.calls, time.perf_counter()
        out = etcdiff.sample(den, sched, noise.clone(), steps, policy)
        sync(device)
        if r >= warmups:
            times.append(time.perf_counter() - t0)
        calls.append(den.calls - before)
        reported.append(policy.report().num_computed)
    if len(set(calls)) != 1 or calls != reported:
        raise RuntimeError(f"{policy!r}: counted calls {calls} disagree with the reports {reported}.")
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return {"model_calls": calls[0], "reported_calls": reported[0], "computed_steps": policy.report().computed_steps,
            "wall_s_median": statistics.median(times), "wall_s_iqr": [q[0], q[2]], "wall_s_all": times,
            "peak_memory_bytes": peak, "final": out, "finite": bool(torch.isfinite(out).all())}


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    t0 = time.perf_counter()
    model = build(args.tiny, device, dtype)
    den = Denoiser(model, args.resolution, args.text_tokens, args.guidance, device, dtype)
    result: dict[str, Any] = {
        "model": "FluxTransformer2DModel, random weights, " + ("tiny test size" if args.tiny else "FLUX.1-dev size"),
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in model.config.items() if not k.startswith("_")},
        "parameters": sum(p.numel() for p in model.parameters()), "dtype": args.dtype, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "resolution": args.resolution, "image_tokens": den.latent_shape[0],
        "text_tokens": args.text_tokens, "guidance": args.guidance, "batch": 1,
        "scheduler": f"FlowMatchEulerDiscreteScheduler(shift={FLUX_SHIFT:.4f})",
        "calibration_seeds": args.calibration_seeds, "seeds": args.seeds, "repeats": args.repeats,
        "build_seconds": time.perf_counter() - t0, "warmups": args.warmups, "etc_plus_replays": args.etc_plus_replays,
        "rows": []}
    cal = noises(args.calibration_seeds, den.latent_shape, device, dtype)
    sync(device)  # one untimed call first: CUDA's context, kernels and allocator before anything is timed
    t0 = time.perf_counter()
    den(cal[:1], torch.full((1,), 500.0, device=device))
    sync(device)
    result["first_call_seconds"] = time.perf_counter() - t0
    for steps in args.steps:
        fitted: dict[str, Any] = {}  # calibrated policies at this step count
        for seed in args.seeds:
            noise = noises([seed], den.latent_shape, device, dtype)
            base = None
            for name, settings in settings_for(steps, args.etc_plus_speedups):
                if name not in args.methods:
                    continue
                policy, how = calibrate(name, settings, den, cal, steps, fitted, args.etc_plus_replays)
                row = time_policy(policy, den, noise, steps, args.repeats, args.warmups)
                final = row.pop("final")
                if name == "none":
                    base = {"wall": row["wall_s_median"], "final": final.float()}
                row.update(steps=steps, seed=seed, method=name, settings=settings, policy=repr(policy), **how,
                           call_reduction=steps / row["model_calls"])
                if base is not None:
                    row["wall_speedup"] = base["wall"] / row["wall_s_median"]
                    row["speedup_over_call_reduction"] = row["wall_speedup"] / row["call_reduction"]
                    row["rel_l2_vs_none"] = float((final.float() - base["final"]).norm() / base["final"].norm())
                result["rows"].append(row)
                write(result, args.out)  # after every row: a run stopped early keeps what it measured
                print(f"{steps} steps seed {seed} {name} {settings}: {row['model_calls']} calls, "
                      f"{row['wall_s_median']:.3f} s", flush=True)
    return result


def markdown(result: dict[str, Any]) -> str:
    gib = 1024 ** 3
    lines = [f"# {result['model']}", "",
             f"{result['parameters'] / 1e6:,.1f} M parameters, {result['dtype']}, {result['device']} "
             f"({result['device_name']}), {result['resolution']}x{result['resolution']} ({result['image_tokens']} image "
             f"tokens), {result['text_tokens']} text tokens, batch 1, {result['scheduler']}; timed seeds "
             f"{result['seeds']}, median of {result['repeats']} runs after {result['warmups']} warm-up run(s) per row; "
             f"etc, etc-plus and ertacache calibrated inside the script on this random model at seeds "
             f"{result['calibration_seeds']}"
             + (" (etc-plus with replays=True: on 2 runs nothing is held out, so no probe or held-out run is made)"
                if result["etc_plus_replays"] else "") + ".", "",
             "| steps | method | settings | calls | call reduction | wall s | wall speedup | speedup / reduction "
             "| peak GiB | calibration (generations, s) |", "|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in result["rows"]:
        peak = "n/a" if r["peak_memory_bytes"] is None else f"{r['peak_memory_bytes'] / gib:.2f}"
        calib = f"{r['generations']:.0f}, {r['seconds']:.1f}" if "generations" in r else "none"
        lines.append(f"| {r['steps']} | {r['method']} | {r['settings'] or ''} | {r['model_calls']} | "
                     f"{r['call_reduction']:.2f}x | {r['wall_s_median']:.3f} | {r.get('wall_speedup', 1.0):.2f}x | "
                     f"{r.get('speedup_over_call_reduction', 1.0):.2f} | {peak} | {calib} |")
    return "\n".join(lines) + "\n"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ints = lambda s: [int(v) for v in s.split(",")]  # noqa: E731
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tiny", action="store_true", help="a tiny transformer (1+1 blocks, 32 hidden), 64x64, 8 text tokens")
    p.add_argument("--steps", type=ints, default=[28, 50])
    p.add_argument("--methods", type=lambda s: s.split(","), default=["none", "etc", "etc-plus", "ertacache"])
    p.add_argument("--etc-plus-speedups", type=lambda s: [float(v) for v in s.split(",")], default=[2.0, 3.0])
    p.add_argument("--seeds", type=ints, default=[0])
    p.add_argument("--calibration-seeds", type=ints, default=[100, 101])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmups", type=int, default=1, help="untimed runs before each row's timed ones")
    p.add_argument("--etc-plus-replays", action="store_true",
                   help="calibrate etc-plus with replays=True (2 generations instead of about 21 at 2 seeds)")
    p.add_argument("--resolution", type=int, default=None, help="pixels per side (default 1024; --tiny 64)")
    p.add_argument("--text-tokens", type=int, default=None, help="default 512; --tiny 8")
    p.add_argument("--guidance", type=float, default=3.5)
    p.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default=None, help="default bf16; --tiny fp32")
    p.add_argument("--device", default=None)
    p.add_argument("--out", type=Path, default=Path("flux-scale-out"))
    a = p.parse_args(argv)
    a.resolution = a.resolution or (64 if a.tiny else 1024)
    a.text_tokens = a.text_tokens or (8 if a.tiny else 512)
    a.dtype = a.dtype or ("fp32" if a.tiny else "bf16")
    if "etc" in a.methods and min(a.steps) < 8:
        p.error("--steps: etc's change-point search needs at least 8 steps; give 8 or more, or leave etc out of "
                "--methods.")
    if a.resolution % 16 or a.repeats < 1 or a.warmups < 0 or "none" not in a.methods:
        p.error("--resolution must be a multiple of 16, --repeats at least 1, --warmups at least 0, and --methods "
                "must include none.")
    return a


def write(result: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "flux_scale_timing.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "flux_scale_timing.md").write_text(markdown(result))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    result = run(args)
    write(result, args.out)
    print(f"wrote {args.out / 'flux_scale_timing.json'} and flux_scale_timing.md")
    return result


if __name__ == "__main__":
    main()
