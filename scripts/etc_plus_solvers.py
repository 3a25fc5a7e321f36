"""ETC+ where users sample: multistep solvers (UniPC, DPM-Solver++ 2M) and Euler/DDIM at 20, 28 and 50 steps.

For each model x scheduler x step count: calibrate once per calibrated method through ``etcdiff.calibrate_policy``
on the calibration noises of ``scripts/etc_plus_eval.py`` (seeds 100-101, 20 noises; labels 0-9 on the
class-conditional models), evaluate on its evaluation cases (disjoint seeds), and compare fronts (PSNR of the decoded
final image against the full-step output of the same noise) at 2x, 3x and 4x fewer calls.

Methods: ``etc-plus`` (this branch: corrections and probes chosen jointly on held-out calibration runs, budgets
ranked by measured error, the calibrated tolerance scale), ``etc-plus-old`` (the etc-plus of before: probes
chosen with ``corrections="auto"``, the new profile keys removed), ``ertacache`` (thresholds 0.1/0.2/0.3/0.5),
``fixed`` (interval 2-5), ``meancache`` (flow-matching Euler only; budgets N/2, N/3, N/4), ``peers`` (every other
step method at the settings of ``scripts/peer_grid.py``: reference ETC, LeMiCa, SenCache, linear extrapolation,
EasyCache, LazyCache, PreciseCache, AdaptiveDiffusion, SADA). Also: etc-plus's
tolerance mode (fraction of images within the target) and the budget ladder (PSNR at every calls from N/5 to N/2:
the largest drop when one more call is given).

Usage: python scripts/etc_plus_solvers.py [--models gmm-flow gmm-ddim digits] [--schedulers euler unipc dpm]
       [--steps 20 28 50] [--out docs/etc-plus] [--tag NAME]
       python scripts/etc_plus_solvers.py --merge A.json B.json run.log --out docs/etc-plus --tag etc_plus_solvers
           [--previous docs/etc-plus/etc_plus_solvers_previous.json]   (an earlier run's etc-plus as "old";
           a case that comes twice keeps the later run's methods and the earlier one's others)
       python scripts/etc_plus_solvers.py --models gmm-flow --schedulers euler unipc --serve-from 20 --steps 28 50
           (one calibration at 20 steps serving 28 and 50; --native-json compares with a main run's JSON)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import etc_plus_eval as ev  # noqa: E402
import peer_grid  # noqa: E402
from peer_grid import budgets  # noqa: E402
from solver_grid_report import (combined, fronts, from_log, markdown, served_markdown, with_previous,  # noqa: E402
                                write)

import etcdiff  # noqa: E402
from etcdiff.metrics import psnr  # noqa: E402
from etcdiff.policies import ETCPlus, FixedInterval, NoCache, StepPolicy  # noqa: E402
from etcdiff.policies.flow_solvers import flow_solver_problem  # noqa: E402

FLOW_SHIFT = {"digits": 1.0, "gmm-flow": 3.0}
SCHEDULERS = ("euler", "unipc", "dpm")  # euler: each model's own first-order solver (DDIM on the epsilon models)
NEW_KEYS = ("budget_errors", "budget_errors_last", "budget_logs", "budget_logs_last", "tolerance_scale")  # what etc-plus-old does without
BUDGET_KEYS = NEW_KEYS[:4]  # the measured budget ranking: what ranked_plan reads
REPLAYS = False  # --replays: etc-plus calibrates with replays=True (held-out runs replayed, one run probed for real)
REPLAY_OFFSETS = False  # --replay-offsets: and replay_offsets=True (each fitted-gains setting's replays shifted)
TREND_CAPS = False  # --trend-caps: etc-plus calibrates with trend_caps=True (a trend cap chosen per budget)
FINAL_PLANS = False  # --final-plans: etc-plus calibrates with final_plans=True (budgets ranked on its own plans)
SEARCHED = False  # --searched-schedules: etc-plus calibrates with searched_schedules=True (a schedule per budget)
ADAPT_TREND = False  # --adapt-trend: etc-plus also runs with adapt_trend=True on the same profile ("etc-plus-adapt")
CHOOSE_ADAPT = False  # --choose-adapt-trend: etc-plus calibrates with adapt_trend=True (kept per plan where it wins);
# its rows run what calibration chose, "etc-plus-off" the same profile with adapt_trend=False
SPIKE_OFF = False  # --spike-off: etc-plus also runs with its spike rule off on the same profile ("etc-plus-nospike")
NEVER = 1e9  # a spike ratio no run reaches: the rule never forces a step
CALIBRATION_SEEDS: list[int] = []  # --calibration-seeds: only these of the calibration seeds (10 noises each)
SERVE_RECORDED = False  # --serve-recorded: the served step counts drawn from real full runs there (serve_recorded)
RAW_LADDER = False  # --raw-ladder: also every budget's plans unranked (raw_ladder) and the profile's budget logs


def scheduler(model: str, kind: str) -> Any:
    """The scheduler ``kind`` (euler: the model's own first-order one, unipc, dpm) for ``model``."""
    from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

    if kind not in SCHEDULERS:  # anything else fell through to DPM-Solver++ unnoticed
        raise ValueError(f"unknown scheduler {kind!r}: euler (the model's own first-order solver), unipc or dpm")
    if model in FLOW_SHIFT:
        shift = FLOW_SHIFT[model]
        if kind == "euler":
            from diffusers import FlowMatchEulerDiscreteScheduler

            return FlowMatchEulerDiscreteScheduler(shift=shift)
        flow = {"prediction_type": "flow_prediction", "use_flow_sigmas": True, "flow_shift": shift}
        if kind == "unipc":
            return UniPCMultistepScheduler(**flow)
        return DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2, **flow)
    betas = {"num_train_timesteps": 1000, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
    if kind == "euler":
        return ev.setup(model)["sched"]  # DDIM: the first-order solver of an eps model
    if kind == "unipc":
        return UniPCMultistepScheduler(**betas)
    return DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2, **betas)


def _replay_settings() -> dict[str, Any]:
    """etc-plus's calibration settings of --replays and --replay-offsets."""
    return ({"replays": True, **({"replay_offsets": True} if REPLAY_OFFSETS else {})} if REPLAYS else {})


def ladder(steps: int) -> list[int]:
    return list(range(max(2, -(-steps // 5)), steps // 2 + 1))


def evaluate_policy(m: dict[str, Any], policy: StepPolicy, refs: list[torch.Tensor], steps: int,
                    latent_refs: list[torch.Tensor] | None = None) -> dict[str, Any]:
    ps, calls, errs, per_case = [], [], [], []
    for (lab, s), ref, lref in zip(m["evals"], refs, latent_refs or [None] * len(refs)):
        out, n = ev.run(m, policy, lab, s, steps)
        case_ps = [min(v, 100.0) for v in psnr(ref, m["decode"](out))]
        ps.extend(case_ps)
        per_case.append(round(float(np.mean(case_ps)), 4))
        calls.append(n)
        if lref is not None:
            errs.append(float((out.double() - lref.double()).pow(2).mean().sqrt()))
    row = {"calls": float(np.mean(calls)), "max_calls": int(max(calls)), "speedup": steps / float(np.mean(calls)),
           "psnr": float(np.mean(ps)), "psnr_min": float(np.min(ps)),
           "case_psnr": per_case, "case_calls": [int(c) for c in calls]}  # per evaluation case, for intervals
    if errs:
        row["latent_errors"] = errs
    return row


def setup(model: str) -> dict[str, Any]:
    """``etc_plus_eval.setup``, its calibration cases cut to :data:`CALIBRATION_SEEDS` where given."""
    m = ev.setup(model)
    if CALIBRATION_SEEDS:
        m["calib"] = [(labels, seed) for labels, seed in m["calib"] if seed in CALIBRATION_SEEDS]
        if not m["calib"]:
            raise SystemExit(f"--calibration-seeds {CALIBRATION_SEEDS}: {model} calibrates on seeds "
                             f"{[seed for _, seed in ev.setup(model)['calib']]}; choose among them.")
    return m


def case(model: str, kind: str, steps: int, methods: list[str], do_ladder: bool) -> dict[str, Any]:
    m = setup(model)
    m["sched"] = scheduler(model, kind)
    t0 = time.time()
    full = [ev.run(m, NoCache(), lab, s, steps)[0] for lab, s in m["evals"]]
    refs = [m["decode"](x) for x in full]
    cal_model, noises = ev.calibration_set(m, steps)
    rows: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}

    def add(method: str, setting: str, policy: StepPolicy, latent: bool = False) -> dict[str, Any]:
        row = {"method": method, "setting": setting,
               **evaluate_policy(m, policy, refs, steps, full if latent else None)}
        rows.append(row)
        print(f"  {model:8s} {kind:5s} {steps:2d} {method:13s} {setting:18s} calls {row['calls']:5.1f} "
              f"(max {row['max_calls']:2d}) x{row['speedup']:.2f} PSNR {row['psnr']:6.2f} (min {row['psnr_min']:6.2f})",
              flush=True)
        return row

    for method in methods:
        if method in ("etc-plus", "etc-plus-old"):
            ours = method == "etc-plus"  # the variants and opt-in calibrations apply to the current ETC+ only
            kw = {"corrections": "auto"} if method == "etc-plus-old" else _replay_settings()
            if TREND_CAPS and ours:
                kw["trend_caps"] = True
            if CHOOSE_ADAPT and ours:
                kw["adapt_trend"] = True
            if FINAL_PLANS and ours:
                kw["final_plans"] = True
            if SEARCHED and ours:
                kw["searched_schedules"] = True
            t1 = time.time()
            pol = etcdiff.calibrate_policy("etc-plus", cal_model, m["sched"], noises, steps, decode=m["decode"],
                                           calls=budgets(steps)[0], **kw)
            profile = dict(pol.calibrated)  # as calibrated (pol.profile is the fit of its own budget)
            if method == "etc-plus-old":
                for key in NEW_KEYS:
                    profile.pop(key, None)
            replay = {k: v for k, v in (profile.get("replay") or {}).items() if k != "curve"} or None
            extra[method] = {"calibration_seconds": time.time() - t1, "selection": profile.get("selection"),
                             "cost": profile.get("cost"), "replay": replay,
                             "tolerance_scale": profile.get("tolerance_scale"),
                             "tolerance_check": profile.get("tolerance_check"),
                             **({"schedule_check": profile.get("schedule_check"),
                                 "budget_schedules": profile.get("budget_schedules")} if SEARCHED and ours else {})}
            variants = [(method, {})]
            variants += [(method + "-adapt", {"adapt_trend": True})] if ADAPT_TREND and ours else []
            variants += [(method + "-off", {"adapt_trend": False})] if CHOOSE_ADAPT and ours else []
            variants += [(method + "-nospike", {"spike": NEVER})] if SPIKE_OFF and ours else []
            if CHOOSE_ADAPT and ours:
                extra[method]["adapt_trend_kept"] = profile.get("budget_adapt_trend")
            for name, opts in variants:
                for b in budgets(steps):
                    add(name, f"calls={b}", ETCPlus(profile, calls=b, **opts))
                tol = add(name + "-tol", "tolerance (default)", ETCPlus(profile, **opts), latent=True)
                target = float(profile["tolerance"])
                errs = tol.pop("latent_errors")
                tol["target"] = target
                tol["within"] = float(np.mean([e <= target for e in errs]))
                tol["achieved_p90"] = float(np.quantile(errs, 0.9))
                print(f"    tolerance target {target:.4g}: within {100 * tol['within']:.0f}%, p90 error "
                      f"{tol['achieved_p90']:.4g}", flush=True)
                if do_ladder:
                    lad = {b: evaluate_policy(m, ETCPlus(profile, calls=b, **opts), refs, steps)["psnr"]
                           for b in ladder(steps)}
                    drops = [lad[b] - lad[b + 1] for b in lad if b + 1 in lad]
                    extra.setdefault(name, {})["ladder"] = lad
                    extra[name]["worst_drop"] = max(drops) if drops else None
                    print(f"    ladder {' '.join(f'{b}:{v:.1f}' for b, v in lad.items())}; worst drop when one "
                          f"more call is given: {extra[name]['worst_drop']:.2f} dB", flush=True)
            if RAW_LADDER:  # every budget's own plans, unranked, to judge ranking rules offline
                extra[method]["raw_ladder"] = raw_ladder(m, profile, refs, steps)
                extra[method]["budget_logs"] = {k: profile.get(k) for k in BUDGET_KEYS}
        elif method == "ertacache":
            if getattr(m["sched"], "sigmas", None) is None:
                continue
            for thr in (0.1, 0.2, 0.3, 0.5):
                try:
                    pol = etcdiff.calibrate_policy("ertacache", cal_model, m["sched"], noises, steps, threshold=thr)
                    add(method, f"threshold={thr:g}", pol)
                except ValueError as e:  # a scheduler it refuses (a multistep solver on epsilon prediction)
                    print(f"  ertacache skipped: {e}", flush=True)
                    break
        elif method == "peers":  # every other step method of the registry (scripts/peer_grid.py)
            for name, setting, pol in peer_grid.policies(cal_model, m["sched"], noises, steps, m["decode"]):
                if isinstance(pol, str):
                    print(f"  {name} skipped: {pol}", flush=True)
                else:
                    add(name, setting, pol)
        elif method == "fixed":
            for n in (2, 3, 4, 5):
                add(method, f"interval={n}", FixedInterval(interval=n))
        elif method == "meancache":
            if flow_solver_problem(m["sched"]) is not None:
                continue
            for b in (round(steps / 2), round(steps / 3), round(steps / 4)):
                try:
                    pol = etcdiff.calibrate_policy("meancache", cal_model, m["sched"], noises, steps, calls=b)
                except ValueError as e:  # a multistep scheduler that passes the class check but not the fit's
                    print(f"  meancache skipped: {e}", flush=True)
                    break
                add(method, f"calls={b}", pol)
    fr = fronts(rows)
    return {"model": model, "scheduler": kind, "scheduler_class": type(m["sched"]).__name__, "steps": steps,
            "rows": rows, "fronts": fr, "extra": extra, "seconds": time.time() - t0,
            "calibration_seeds": [seed for _, seed in m["calib"]]}


def raw_ladder(m: dict[str, Any], profile: dict[str, Any], refs: list[torch.Tensor], steps: int) -> dict[str, float]:
    """Mean PSNR of each budget's free plan (``"B"``) and of its plan computing the last step (``"BL"``), run
    without the measured ranking (what :func:`~etcdiff.policies.step.etc_plus.budgets.ranked_plan` chooses from)."""
    raw = {k: v for k, v in profile.items() if k not in BUDGET_KEYS}
    out = {}
    for b in ladder(steps):
        for last in (False, True):
            try:
                out[f"{b}{'L' if last else ''}"] = evaluate_policy(m, ETCPlus(raw, calls=b, last_step=last), refs,
                                                                    steps)["psnr"]
            except ValueError:  # no plan of this budget computes the last step
                pass
    return out


def served(model: str, kind: str, source: int, steps_list: list[int]) -> list[dict[str, Any]]:
    """One etc-plus calibration at ``source`` steps serving every step count of ``steps_list``: calibrated again
    there on the surrogate of its recorded runs (``serve_steps``), and, for comparison, the same profile without
    them (resampled on the sigma axis). At ``source`` itself, the profile as fitted."""
    import warnings

    m = setup(model)
    m["sched"] = scheduler(model, kind)
    cal_model, noises = ev.calibration_set(m, source)
    t0 = time.time()
    kw = _replay_settings()
    if SERVE_RECORDED:
        kw["serve_recorded"] = True
    profile = etcdiff.calibrate_policy("etc-plus", cal_model, m["sched"], noises, source, decode=m["decode"],
                                       calls=budgets(source)[0], serve_steps=[s for s in steps_list if s != source],
                                       **kw).calibrated
    seconds = time.time() - t0
    resampled = {k: v for k, v in profile.items() if k != "served_steps"}
    out = []
    for steps in steps_list:
        refs = [m["decode"](ev.run(m, NoCache(), lab, s, steps)[0]) for lab, s in m["evals"]]
        rows = []
        for name, prof in ((f"etc-plus-from-{source}", profile), (f"etc-plus-resampled-from-{source}", resampled)):
            if prof is resampled and steps == source:
                continue
            for b in budgets(steps):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    try:
                        row = evaluate_policy(m, ETCPlus(prof, calls=b), refs, steps)
                    except ValueError as e:  # no plan of b calls within the resampled windows
                        print(f"  {model} {kind} {steps} from {source}: calls={b} not possible ({e})", flush=True)
                        continue
                rows.append({"method": name, "setting": f"calls={b}", **row})
                print(f"  {model:8s} {kind:5s} {steps:2d} {name} calls={b:<3d} x{row['speedup']:.2f} "
                      f"PSNR {row['psnr']:6.2f}", flush=True)
        one = (profile.get("served_steps") or {}).get(str(steps), {})
        choice = {k: (one.get("selection") or {}).get(k) for k in ("chosen", "per_budget", "mean_log_rel_error")}
        out.append({"model": model, "scheduler": kind, "steps": steps, "source_steps": source, "rows": rows,
                    "fronts": fronts(rows), "calibration_seconds": seconds, "cost": profile.get("cost"),
                    "served_cost": one.get("cost"), "served_selection": choice,
                    "served_budget_errors": one.get("budget_errors")})
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["gmm-flow", "gmm-ddim", "digits"])
    ap.add_argument("--schedulers", nargs="+", default=list(SCHEDULERS), choices=SCHEDULERS,
                    help="euler: each model's own first-order solver (DDIM on the epsilon models)")
    ap.add_argument("--steps", nargs="+", type=int, default=[20, 28, 50])
    ap.add_argument("--methods", nargs="+", default=["etc-plus", "etc-plus-old", "ertacache", "fixed", "meancache"])
    ap.add_argument("--no-ladder", action="store_true")
    ap.add_argument("--replays", action="store_true", help="calibrate etc-plus with replays=True")
    ap.add_argument("--replay-offsets", action="store_true", help="with --replays: and replay_offsets=True")
    ap.add_argument("--trend-caps", action="store_true", help="calibrate etc-plus with trend_caps=True")
    ap.add_argument("--final-plans", action="store_true", help="calibrate etc-plus with final_plans=True")
    ap.add_argument("--searched-schedules", action="store_true",
                    help="calibrate etc-plus with searched_schedules=True")
    ap.add_argument("--choose-adapt-trend", action="store_true",
                    help="calibrate etc-plus with adapt_trend=True (its choice per plan); rows etc-plus-off without")
    ap.add_argument("--adapt-trend", action="store_true",
                    help="also run etc-plus with adapt_trend=True on the same profile (rows etc-plus-adapt)")
    ap.add_argument("--spike-off", action="store_true",
                    help="also run etc-plus with its spike rule off on the same profile (rows etc-plus-nospike)")
    ap.add_argument("--raw-ladder", action="store_true",
                    help="also run every budget's free and last-step plans unranked, and keep the budget logs")
    ap.add_argument("--calibration-seeds", nargs="+", type=int, default=[],
                    help="calibrate on these calibration seeds only (10 noises each; default: all, 20 noises)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="")
    ap.add_argument("--tag", default="etc_plus_solvers")
    ap.add_argument("--serve-from", type=int, default=0,
                    help="calibrate etc-plus once at this step count and serve every --steps from it")
    ap.add_argument("--serve-recorded", action="store_true",
                    help="with --serve-from: serve_recorded=True (real full runs at each served step count)")
    ap.add_argument("--native-json", default="", help="with --serve-from: the main run's JSON to compare with")
    ap.add_argument("--previous", default="",
                    help="with --merge: a JSON of an earlier run whose etc-plus fills the 'old' columns")
    ap.add_argument("--merge", nargs="*", default=None,
                    help="only merge these saved JSON files (cases run one at a time; a .log: the rows a run "
                         "printed) into --out/--tag")
    args = ap.parse_args()
    global REPLAYS, RAW_LADDER, TREND_CAPS, ADAPT_TREND, CHOOSE_ADAPT, CALIBRATION_SEEDS, SERVE_RECORDED, REPLAY_OFFSETS
    global FINAL_PLANS, SEARCHED, SPIKE_OFF
    REPLAYS, TREND_CAPS, ADAPT_TREND, FINAL_PLANS = args.replays, args.trend_caps, args.adapt_trend, args.final_plans
    SEARCHED = args.searched_schedules
    SPIKE_OFF = args.spike_off
    REPLAY_OFFSETS = args.replay_offsets
    CALIBRATION_SEEDS = args.calibration_seeds
    CHOOSE_ADAPT = args.choose_adapt_trend
    RAW_LADDER = args.raw_ladder
    SERVE_RECORDED = args.serve_recorded
    torch.set_num_threads(args.threads)
    if args.merge is not None:
        results = []
        for path in args.merge:
            if path.endswith(".log"):
                results += from_log(path)
                continue
            with open(path) as f:
                results += json.load(f)
        results = combined(results)
        order = {k: i for i, k in enumerate(SCHEDULERS)}
        results.sort(key=lambda r: (r["model"], order.get(r["scheduler"], 9), r["steps"]))
        if args.previous:
            with open(args.previous) as f:
                with_previous(results, json.load(f))
        if args.out:
            write(args.out, args.tag, results)
        print(markdown(results))
        return
    if args.serve_from:
        results = [r for model in args.models for kind in args.schedulers
                   for r in served(model, kind, args.serve_from, args.steps)]
        native = []
        for path in args.native_json.split(",") if args.native_json else []:
            with open(path) as f:
                native += json.load(f)
        text = served_markdown(results, native)
        print(text)
        if args.out:
            os.makedirs(args.out, exist_ok=True)
            with open(os.path.join(args.out, f"{args.tag}.json"), "w") as f:
                json.dump(results, f, indent=1, default=str)
            with open(os.path.join(args.out, f"{args.tag}.md"), "w") as f:
                f.write(text + "\n")
        return
    results = []
    for model in args.models:
        for kind in args.schedulers:
            for steps in args.steps:
                res = case(model, kind, steps, args.methods, not args.no_ladder)
                results.append(res)
                print(markdown([res]).split("\n\nFronts")[0], flush=True)
                if args.out:
                    write(args.out, args.tag, results)
    print(markdown(results))


if __name__ == "__main__":
    main()
