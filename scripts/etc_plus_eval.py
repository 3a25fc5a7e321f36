"""Evaluate etc-plus against reference ETC, ERTACache, fixed interval and linear extrapolation on bare denoisers.

Models: ``digits`` (the embedded demo DiT with CFG 2.0, FlowMatch Euler; calibration seeds 100-101, evaluation
seeds 0-1, every digit), and two HELD-OUT closed-form denoisers from ``tests/heldout_models.py`` that no method
was tuned on: ``gmm-flow`` (class-conditional Gaussian-mixture flow with CFG, FlowMatch shift 3) and ``gmm-ddim``
(epsilon prediction, DDIM). Each generation is one sample (batch 1); calibrated methods (etc-plus, ERTACache)
are fitted on calibration seeds disjoint from the evaluation seeds. Fidelity: PSNR of the decoded final image
against the full-step output of the same noise; calls: real steps per generation.

Usage: python scripts/etc_plus_eval.py [--models digits gmm-flow gmm-ddim] [--steps 50] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Any, Callable

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import etcdiff  # noqa: E402
from etcdiff.integration.recording import Trajectory  # noqa: E402
from etcdiff.metrics import psnr  # noqa: E402
from etcdiff.policies import ETC, ERTACache, FixedInterval, NoCache, StepPolicy, fit_ertacache  # noqa: E402
from etcdiff.policies.etc_plus import ETCPlus, fit_etc_plus  # noqa: E402

SPEEDUPS = (2.0, 3.0, 4.0, 5.0)


class Recorder(NoCache):
    """Full-step run that keeps x_t (what should_compute sees) and eps_t (what observe sees)."""

    def reset_state(self) -> None:
        self.inputs: list[torch.Tensor] = []
        self.outputs: list[torch.Tensor] = []

    def should_compute(self, step: int, latents: torch.Tensor | None = None) -> bool:
        self.inputs.append(latents.detach().clone())
        return super().should_compute(step, latents)

    def observe(self, step: int, output: torch.Tensor, computed: bool) -> None:
        self.outputs.append(output.detach().clone())
        super().observe(step, output, computed)


class LinearEvery(StepPolicy):
    """Real every ``interval``-th step (and the last); in between eps_c + (t-c)/(c-c')·(eps_c - eps_c') from the
    last two real outputs (step-index trend; interval 2 is "eps_hat = 2·eps_last - eps_prev" every other step)."""

    name = "linear"

    def __init__(self, interval: int) -> None:
        super().__init__()
        self.interval = interval

    def params(self) -> dict[str, Any]:
        return {"interval": self.interval}

    def reset_state(self) -> None:
        self.real: list[tuple[int, torch.Tensor]] = []

    def should_compute(self, step: int, latents: torch.Tensor | None = None) -> bool:
        return step % self.interval == 0 or step == self.num_steps - 1 or step == 1

    def predict(self, step: int) -> torch.Tensor | None:
        if len(self.real) < 2:
            return self.real[-1][1] if self.real else None
        (cp, ep), (c, ec) = self.real[-2:]
        return ec + (step - c) / (c - cp) * (ec - ep)

    def observe(self, step: int, output: torch.Tensor, computed: bool) -> None:
        self._log(step, computed)
        if computed:
            self.real = (self.real + [(step, output)])[-2:]


def digits_model() -> tuple[Callable, Any, Callable]:
    from diffusers import FlowMatchEulerDiscreteScheduler

    from etcdiff.demo.model import NULL_CLASS, load_transformer

    tr = load_transformer()

    def model(x: torch.Tensor, t: torch.Tensor, labels: list[int]) -> torch.Tensor:
        lab = torch.tensor(list(labels) + [NULL_CLASS] * len(labels))
        out = tr(torch.cat([x, x]), timestep=t.expand(2 * x.shape[0]), class_labels=lab, return_dict=False)[0]
        cond, uncond = out.chunk(2)
        return uncond + 2.0 * (cond - uncond)

    return model, FlowMatchEulerDiscreteScheduler(shift=1.0), lambda z: ((z.float() + 1) / 2).clamp(0, 1)


def setup(name: str) -> dict[str, Any]:
    """Model, scheduler, decode, and the calibration and evaluation cases (labels, seed) of one model."""
    import heldout_models as hm

    if name == "digits":
        model, sched, dec = digits_model()
        calib = [(list(range(10)), s) for s in (100, 101)]
        evals = [([d], s) for s in (0, 1) for d in range(10)]
    elif name == "gmm-flow":
        model, sched, dec = hm.gmm_flow()
        calib = [(list(range(10)), s) for s in (100, 101)]
        evals = [([d], s) for s in (0, 1, 2) for d in range(10)]
    elif name in ("gmm-ddim", "dataset-euler"):
        model, sched, dec = hm.MODELS[name]()
        calib = [([0] * 10, s) for s in (100, 101)]
        evals = [([0], s) for s in range(30)]
    else:
        raise ValueError(f"unknown model {name!r}; choose digits, gmm-flow, gmm-ddim or dataset-euler")
    return {"model": model, "sched": sched, "decode": dec, "calib": calib, "evals": evals}


def noise(labels: list[int], seed: int) -> torch.Tensor:
    return torch.randn(len(labels), 1, 16, 16, generator=torch.Generator().manual_seed(seed))


def run(m: dict[str, Any], policy: StepPolicy, labels: list[int], seed: int, steps: int) -> tuple[torch.Tensor, int]:
    m["sched"].set_timesteps(steps)  # init_noise_sigma follows the step count on sigma schedulers
    x = noise(labels, seed) * getattr(m["sched"], "init_noise_sigma", 1.0)
    out = etcdiff.sample(m["model"], m["sched"], x, steps, policy, labels=labels)
    return out, policy.report().num_computed


def record(m: dict[str, Any], steps: int) -> list[Trajectory]:
    trajs = []
    for labels, seed in m["calib"]:
        rec = Recorder()
        final, _ = run(m, rec, labels, seed, steps)
        sig = getattr(m["sched"], "sigmas", None)
        trajs.append(Trajectory(outputs=rec.outputs, inputs=rec.inputs, final=final,
                                timesteps=m["sched"].timesteps.clone(), sigmas=None if sig is None else sig.clone()))
    return trajs


def settings(trajs: list[Trajectory], steps: int) -> list[tuple[str, str, Callable[[], StepPolicy]]]:
    prof = fit_etc_plus(trajs)
    out: list[tuple[str, str, Callable[[], StepPolicy]]] = []
    for b in (25, 17, 13, 11, 10, 9):
        out.append(("etc-plus", f"calls={b}", lambda b=b: ETCPlus(prof, calls=b)))
    for f in (0.5, 1.0, 1.5):
        out.append(("etc-plus-tol", f"tolerance={f:g}x", lambda f=f: ETCPlus(prof, tolerance=f * prof["tolerance"])))
    for tau in (0.01, 0.02, 0.03, 0.05, 0.1):
        out.append(("etc", f"tau={tau:g}", lambda tau=tau: ETC(tau)))
    if trajs[0].sigmas is not None:
        for thr in (0.1, 0.2, 0.3, 0.4, 0.6, 1.0):
            try:
                ep = fit_ertacache(trajs, thr)
            except ValueError:
                continue
            out.append(("ertacache", f"threshold={thr:g}", lambda ep=ep: ERTACache(ep)))
    for n in (2, 3, 4, 5):
        out.append(("fixed", f"interval={n}", lambda n=n: FixedInterval(interval=n)))
        out.append(("linear", f"interval={n}", lambda n=n: LinearEvery(n)))
    return out


def front(points: list[tuple[float, float]], s: float) -> float | None:
    """PSNR of a method's front at ``s``x fewer calls: the best of its points at ``s``x or more, or linear between
    its two Pareto points around ``s``, whichever is higher; None when no point reaches ``s``x."""
    reach = [p for sp, p in points if sp >= s - 1e-9]
    if not reach:
        return None
    pareto = sorted(p for p in points if not any(q[0] >= p[0] and q[1] > p[1] for q in points if q != p))
    between = [p0 + (p1 - p0) * (s - s0) / (s1 - s0) for (s0, p0), (s1, p1) in zip(pareto, pareto[1:]) if s0 < s < s1]
    return max(reach + between)


def fronts(rows: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    out = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        pts = [(r["speedup"], r["psnr"]) for r in rows if r["method"] == method]
        out[method] = {f"{s:g}x": front(pts, s) for s in SPEEDUPS}
    return out


def evaluate(name: str, steps: int, only: list[str] | None = None) -> dict[str, Any]:
    m = setup(name)
    t0 = time.time()
    trajs = record(m, steps)
    has_sigmas = getattr(m["sched"], "sigmas", None) is not None
    refs = [m["decode"](run(m, NoCache(), lab, s, steps)[0]) for lab, s in m["evals"]]
    rows = []
    for method, setting, make in settings(trajs, steps):
        if (method == "ertacache" and (not has_sigmas or name == "gmm-ddim")) or (only and method not in only):
            continue
        ps, calls = [], []
        try:
            for (lab, s), ref in zip(m["evals"], refs):
                pol = make()
                img, n = run(m, pol, lab, s, steps)
                ps.extend(min(v, 100.0) for v in psnr(ref, m["decode"](img)))
                calls.append(n)
        except ValueError as e:
            print(f"  {method} {setting}: skipped ({e})", flush=True)
            continue
        row = {"method": method, "setting": setting, "calls": float(np.mean(calls)), "max_calls": int(max(calls)),
               "speedup": steps / float(np.mean(calls)), "psnr": float(np.mean(ps)), "psnr_min": float(np.min(ps))}
        rows.append(row)
        print(f"  {name:9s} {method:13s} {setting:16s} calls {row['calls']:5.1f} (max {row['max_calls']:2d}) "
              f"x{row['speedup']:.2f}  PSNR {row['psnr']:6.2f} dB (min {row['psnr_min']:6.2f})", flush=True)
    return {"model": name, "steps": steps, "rows": rows, "fronts": fronts(rows), "seconds": time.time() - t0}


def markdown(results: list[dict[str, Any]]) -> str:
    """The fronts and every measured point as Markdown tables."""
    lines = []
    for res in results:
        lines += [f"### {res['model']} ({res['steps']} steps)", "",
                  "Front PSNR (dB) at 2x-5x fewer calls: the best setting with at least that many times fewer calls, "
                  "or the line between two Pareto points around it if higher (n/a: no setting got there).", "",
                  "| method | " + " | ".join(f"{s:g}x" for s in SPEEDUPS) + " |", "|---|" + "---|" * len(SPEEDUPS)]
        for method, fr in fronts(res["rows"]).items():
            lines.append(f"| {method} | " + " | ".join("n/a" if v is None else f"{v:.1f}" for v in fr.values()) + " |")
        lines += ["", "| method | setting | calls (mean / max) | speedup | PSNR mean / min (dB) |", "|---|---|---|---|---|"]
        for r in res["rows"]:
            lines.append(f"| {r['method']} | {r['setting']} | {r['calls']:.1f} / {r['max_calls']} | {r['speedup']:.2f}x | "
                         f"{r['psnr']:.1f} / {r['psnr_min']:.1f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["digits", "gmm-flow", "gmm-ddim", "dataset-euler"])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="", help="folder for etc_plus_eval.json and etc_plus_eval.md")
    ap.add_argument("--from-json", default="", help="only rewrite the Markdown tables from a saved JSON")
    ap.add_argument("--only", nargs="*", default=None, help="run only these methods (e.g. etc-plus etc-plus-tol)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.from_json:
        with open(args.from_json) as f:
            print(markdown(json.load(f)))
        return
    results = []
    for name in args.models:
        res = evaluate(name, args.steps, args.only)
        results.append(res)
        print(f"\n{name}: front PSNR (dB) at fewer calls, interpolated ({res['seconds']:.0f} s)")
        print("  method         " + "  ".join(f"{s:>7g}x" for s in SPEEDUPS))
        for method, fr in res["fronts"].items():
            print(f"  {method:13s}  " + "  ".join(f"{v:8.2f}" if v is not None else "     n/a" for v in fr.values()))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "etc_plus_eval.json"), "w") as f:
            json.dump(results, f, indent=1)
        with open(os.path.join(args.out, "etc_plus_eval.md"), "w") as f:
            f.write(markdown(results))


if __name__ == "__main__":
    main()
