"""Evaluate etc-plus against reference ETC, ERTACache, MeanCache, SenCache, fixed interval and linear
extrapolation on bare denoisers.

Models: ``digits`` (the embedded demo DiT with CFG 2.0, FlowMatch Euler; evaluation seeds 0-1, every digit), and
two HELD-OUT closed-form denoisers from ``etcdiff.closed_form``: ``gmm-flow`` (class-conditional
Gaussian-mixture flow with CFG, FlowMatch shift 3; evaluation: 10 classes x seeds 0-2) and ``gmm-ddim`` (epsilon
prediction, DDIM; evaluation seeds 0-29). Each generation is one sample (batch 1). Every calibrated method is
fitted through ``etcdiff.calibrate_policy`` on 20 calibration noises drawn from seeds 100-101 (10 each, with
labels 0-9 on the class-conditional models), disjoint from the evaluation seeds. Fidelity: PSNR of the decoded
final image against the full-step output of the same noise; calls: real steps per generation.

MeanCache runs only on flow-matching schedulers and ERTACache needs scheduler sigmas: on gmm-ddim both are
skipped, and the output says so.

Usage: python scripts/etc_plus_eval.py [--models digits gmm-flow gmm-ddim] [--steps 50] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any, Callable

import numpy as np
import torch


import etcdiff  # noqa: E402
from etcdiff.bench.front import front_at  # noqa: E402
from etcdiff.metrics import psnr  # noqa: E402
from etcdiff.policies import ETC, FixedInterval, LinearExtrapolation, NoCache, StepPolicy  # noqa: E402
from etcdiff.policies.flow_solvers import flow_solver_problem  # noqa: E402
from peer_grid import ETC_TAUS, SENCACHE  # noqa: E402  (eps_start, eps_main, K)

SPEEDUPS = (2.0, 3.0, 4.0, 5.0)
BUDGETS = (25, 17, 13, 11, 10, 9)  # etc-plus calls=B
MEANCACHE_BUDGETS = (25, 17, 13, 10, 8)


def digits_model() -> tuple[Callable, Any, Callable]:
    from diffusers import FlowMatchEulerDiscreteScheduler

    from etcdiff.digits.model import NULL_CLASS, load_transformer

    tr = load_transformer()

    def model(x: torch.Tensor, t: torch.Tensor, labels: list[int]) -> torch.Tensor:
        lab = torch.tensor(list(labels) + [NULL_CLASS] * len(labels))
        out = tr(torch.cat([x, x]), timestep=t.expand(2 * x.shape[0]), class_labels=lab, return_dict=False)[0]
        cond, uncond = out.chunk(2)
        return uncond + 2.0 * (cond - uncond)

    return model, FlowMatchEulerDiscreteScheduler(shift=1.0), lambda z: ((z.float() + 1) / 2).clamp(0, 1)


def setup(name: str) -> dict[str, Any]:
    """Model, scheduler, decode, and the calibration and evaluation cases (labels, seed) of one model."""
    from etcdiff import closed_form as hm

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


def calibration_set(m: dict[str, Any], steps: int) -> tuple[Callable, torch.Tensor]:
    """The calibration noises (N, ...) for ``calibrate_policy`` and a ``model(x, t)`` that conditions each of them on
    its own label. ``calibrate_policy`` samples the noises one at a time and passes no labels, so the model finds
    the run's noise on the first timestep (the latent is that noise, or one step from it for SenCache's extra
    forward) and keeps its label for the rest of the run."""
    m["sched"].set_timesteps(steps)
    labels = [lab for labs, _ in m["calib"] for lab in labs]
    noises = torch.cat([noise(labs, s) for labs, s in m["calib"]]) * getattr(m["sched"], "init_noise_sigma", 1.0)
    flat, first = noises.reshape(len(noises), -1), float(m["sched"].timesteps[0])
    current = {"label": labels[0]}

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if abs(float(t) - first) < 1e-6:
            current["label"] = labels[int((flat - x.reshape(1, -1).float()).norm(dim=1).argmin())]
        return m["model"](x, t, labels=[current["label"]] * x.shape[0])

    return model, noises


def settings(m: dict[str, Any], steps: int) -> tuple[list[tuple[str, str, Callable[[], StepPolicy]]], dict[str, str]]:
    """(method, setting, build) for every row, calibrated ones through ``etcdiff.calibrate_policy``, and the
    methods skipped on this model with the reason."""
    model, noises = calibration_set(m, steps)

    def fitted(method: str, **kw: Any) -> Callable[[], StepPolicy]:
        return lambda: etcdiff.calibrate_policy(method, model, m["sched"], noises, steps, decode=m["decode"], **kw)

    out: list[tuple[str, str, Callable[[], StepPolicy]]] = []
    skipped: dict[str, str] = {}
    out += [("etc-plus", f"calls={b}", fitted("etc-plus", calls=b)) for b in BUDGETS]
    out.append(("etc-plus-tol", "tolerance (default)", fitted("etc-plus")))
    out.append(("etc", "tau calibrated", fitted("etc")))
    out += [("etc", f"tau={tau:g}", lambda tau=tau: ETC(tau)) for tau in ETC_TAUS]
    m["sched"].set_timesteps(steps)
    if getattr(m["sched"], "sigmas", None) is None:
        skipped["ertacache"] = f"{type(m['sched']).__name__} has no sigmas (its timestep correction needs them)"
    else:
        out += [("ertacache", f"threshold={thr:g}", fitted("ertacache", threshold=thr)) for thr in (0.1, 0.2, 0.5)]
    problem = flow_solver_problem(m["sched"])
    if problem is not None:
        skipped["meancache"] = f"flow-matching schedulers only; {problem}"
    else:
        out += [("meancache", f"calls={b}", fitted("meancache", calls=b)) for b in MEANCACHE_BUDGETS]
    out += [("sencache", f"eps={a:g}/{b:g} K={k}", fitted("sencache", eps_start=a, eps_main=b, max_reuse=k))
            for a, b, k in SENCACHE]
    for n in (2, 3, 4, 5):
        out.append(("fixed", f"interval={n}", lambda n=n: FixedInterval(interval=n)))
        out.append(("linear", f"interval={n}", lambda n=n: LinearExtrapolation(interval=n)))
    return out, skipped


def fronts(rows: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    out = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        pts = [(r["speedup"], r["psnr"]) for r in rows if r["method"] == method]
        out[method] = {f"{s:g}x": front_at(pts, s) for s in SPEEDUPS}
    return out


def margins(fr: dict[str, dict[str, float | None]]) -> dict[str, dict[str, Any]]:
    """Per speedup: the winner over every method, and etc-plus's margin over the best method that is not etc-plus."""
    out = {}
    for key in (f"{s:g}x" for s in SPEEDUPS):
        vals = {m: v[key] for m, v in fr.items() if v[key] is not None}
        ours = vals.get("etc-plus")
        others = {m: v for m, v in vals.items() if not m.startswith("etc-plus")}
        best = max(others, key=others.get) if others else None
        out[key] = {"winner": max(vals, key=vals.get) if vals else None, "best_other": best,
                    "margin": None if ours is None or best is None else ours - others[best]}
    return out


def evaluate(name: str, steps: int, only: list[str] | None = None) -> dict[str, Any]:
    m = setup(name)
    t0 = time.time()
    refs = [m["decode"](run(m, NoCache(), lab, s, steps)[0]) for lab, s in m["evals"]]
    rows = []
    rows_settings, skipped = settings(m, steps)
    for method, why in skipped.items():
        print(f"  {name:9s} {method:13s} skipped: {why}", flush=True)
    for method, setting, make in rows_settings:
        if only and method not in only:
            continue
        ps, calls = [], []
        try:
            pol = make()  # calibrated once per setting; begin() resets it for every generation
            for (lab, s), ref in zip(m["evals"], refs):
                img, n = run(m, pol, lab, s, steps)
                ps.extend(min(v, 100.0) for v in psnr(ref, m["decode"](img)))
                calls.append(n)
        except ValueError as e:
            print(f"  {method} {setting}: skipped ({e})", flush=True)
            skipped[f"{method} {setting}"] = str(e)
            continue
        row = {"method": method, "setting": setting, "calls": float(np.mean(calls)), "max_calls": int(max(calls)),
               "speedup": steps / float(np.mean(calls)), "psnr": float(np.mean(ps)), "psnr_min": float(np.min(ps)),
               "params": {k: v for k, v in pol.params().items() if isinstance(v, (int, float, str, type(None)))}}
        rows.append(row)
        print(f"  {name:9s} {method:13s} {setting:20s} calls {row['calls']:5.1f} (max {row['max_calls']:2d}) "
              f"x{row['speedup']:.2f}  PSNR {row['psnr']:6.2f} dB (min {row['psnr_min']:6.2f})", flush=True)
    fr = fronts(rows)
    return {"model": name, "steps": steps, "rows": rows, "fronts": fr, "margins": margins(fr), "skipped": skipped,
            "seconds": time.time() - t0}


def _db(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f}"


def markdown(results: list[dict[str, Any]]) -> str:
    """The fronts, the winner per speedup and every measured point as Markdown tables."""
    lines = []
    for res in results:
        fr = fronts(res["rows"])
        lines += [f"### {res['model']} ({res['steps']} steps)", "",
                  "Front PSNR (dB) at 2x-5x fewer calls: the best setting with at least that many times fewer calls, "
                  "or the line between two Pareto points around it if higher (n/a: no setting got there).", "",
                  "| method | " + " | ".join(f"{s:g}x" for s in SPEEDUPS) + " |", "|---|" + "---|" * len(SPEEDUPS)]
        lines += [f"| {method} | " + " | ".join(_db(v) for v in f.values()) + " |" for method, f in fr.items()]
        mg = margins(fr)
        lines += ["", "| | " + " | ".join(mg) + " |", "|---|" + "---|" * len(mg),
                  "| winner | " + " | ".join(str(v["winner"]) for v in mg.values()) + " |",
                  "| etc-plus vs best other | " + " | ".join(
                      "n/a" if v["margin"] is None else f"{v['margin']:+.1f} dB (vs {v['best_other']})"
                      for v in mg.values()) + " |"]
        for method, why in res.get("skipped", {}).items():
            lines.append(f"\n{method}: not run ({why}).")
        lines += ["", "| method | setting | calls (mean / max) | speedup | PSNR mean / min (dB) |", "|---|---|---|---|---|"]
        for r in res["rows"]:
            lines.append(f"| {r['method']} | {r['setting']} | {r['calls']:.1f} / {r['max_calls']} | {r['speedup']:.2f}x | "
                         f"{r['psnr']:.1f} / {r['psnr_min']:.1f} |")
        lines.append("")
    return "\n".join(lines)


def merged(path: str, results: list[dict[str, Any]], only: list[str]) -> list[dict[str, Any]]:
    """The saved results at ``path`` with the rows of the methods ``only`` replaced by the new ``results``
    (other methods' rows kept as saved; models not saved before are added)."""
    if not os.path.exists(path):
        return results
    with open(path) as f:
        saved = {res["model"]: res for res in json.load(f)}
    for res in results:
        old = saved.get(res["model"])
        if old is None or old["steps"] != res["steps"]:
            saved[res["model"]] = res
            continue
        rows, placed = [], set()
        for r in old["rows"]:  # the saved order; a re-run method's new rows where its first old row was
            if r["method"] not in only:
                rows.append(r)
            elif r["method"] not in placed:
                placed.add(r["method"])
                rows += [n for n in res["rows"] if n["method"] == r["method"]]
        rows += [n for n in res["rows"] if n["method"] in only and n["method"] not in placed]  # new to the file
        fr = fronts(rows)
        saved[res["model"]] = {**old, "rows": rows, "fronts": fr, "margins": margins(fr)}
    return list(saved.values())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["digits", "gmm-flow", "gmm-ddim"])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="", help="folder for etc_plus_eval.json and etc_plus_eval.md")
    ap.add_argument("--from-json", default="", help="only rewrite the Markdown tables from a saved JSON")
    ap.add_argument("--only", nargs="*", default=None,
                    help="run only these methods (e.g. etc-plus sencache); with --out, their rows replace the saved ones")
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
        if args.only:
            results = merged(os.path.join(args.out, "etc_plus_eval.json"), results, args.only)
        with open(os.path.join(args.out, "etc_plus_eval.json"), "w") as f:
            json.dump(results, f, indent=1)
        with open(os.path.join(args.out, "etc_plus_eval.md"), "w") as f:
            f.write(markdown(results))


if __name__ == "__main__":
    main()
