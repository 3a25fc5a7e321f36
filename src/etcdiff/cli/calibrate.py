"""``etcdiff calibrate``: search a model's ETC tolerance tau, save the profile and draw it."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from .common import add_scheduler_argument, add_threads_argument, guidance_value, key_value, prepare_output_dir


def _calibrated_names() -> list[str]:
    from etcdiff import METHODS

    return [n for n, m in METHODS.items() if m.calibrated]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate",
        help="Find ETC's error tolerance tau for a model (saves a profile and a plot)",
        description=(
            "Model-specific error tolerance search (ETC paper §3.3): full runs over calibration prompts at a fixed "
            "seed, the per-step output differences used as perturbations of the final latent, the SSIM of the "
            "decoded results, and the change point of the SSIM curve that gives tau. The profile is saved as JSON "
            "(default folder: $ETCDIFF_PROFILE_DIR or ~/.cache/etcdiff/profiles) with a PNG of the curves."
        ),
    )
    p.add_argument("--method", default="etc",
                   help="what to calibrate: ETC's tau (default), or another calibrated method's settings: "
                        + ", ".join(_calibrated_names()))
    p.add_argument("--threshold", type=float, default=None,
                   help="ertacache: the reuse threshold its schedule is fitted for (default 0.2)")
    p.add_argument("--set", dest="options", action="append", type=key_value, default=[], metavar="KEY=VALUE",
                   help="a setting of the method's calibration, e.g. --set calls=17 for meancache (repeatable)")
    p.add_argument("--model", default="demo", help="'demo' (embedded, offline) or a diffusers hub id / local path")
    add_scheduler_argument(p)
    p.add_argument("--prompts", type=Path, default=None, metavar="FILE",
                   help="calibration prompts, one per line (# comments and blank lines ignored); default: the demo's "
                        "ten classes, or etcdiff's prompts for the model's modality")
    p.add_argument("--steps", type=int, default=50, help="sampling steps to calibrate for (default 50)")
    p.add_argument("--seed", type=int, default=42,
                   help="seed of the calibration runs (default 42; a method that holds runs out, etc-plus, seeds "
                        "prompt k with SEED+k)")
    p.add_argument("--warmup", type=int, default=6, help="ETC warm-up n recorded in the profile (default 6)")
    p.add_argument("--alpha", type=float, default=0.5, help="ETC trend weight alpha recorded in the profile (default 0.5)")
    p.add_argument("--guidance", type=guidance_value, default=None, help="guidance scale (default: the pipeline's)")
    p.add_argument("--jump", type=int, default=5,
                   help="change-point grid of ruptures BottomUp (default 5, ruptures' own and the reference; 1 = every step)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    add_threads_argument(p)
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="folder (or .json file) for the profile (default $ETCDIFF_PROFILE_DIR or ~/.cache/etcdiff/profiles)")
    p.add_argument("--no-plot", action="store_true", help="do not draw the PNG of the curves")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _out_for(args: argparse.Namespace, identity: str, method: str) -> Path | None:
    """Where the profile goes: ``--out`` as given, except that a calibration with ``--scheduler`` gets that
    scheduler in its file name (``<model>_<N>steps_unipc_<method>.json``) inside the folder, so that it does not
    overwrite the calibration made for another scheduler."""
    if args.scheduler is None or (args.out is not None and args.out.suffix.lower() == ".json"):
        return args.out
    from etcdiff.calibration.profile import profile_dir
    from etcdiff.calibration.profile_store import filename

    return (args.out if args.out is not None else profile_dir()) / filename(identity, method, args.steps,
                                                                            args.scheduler)


def run(args: argparse.Namespace) -> int:
    from etcdiff.calibration import calibrate_pipeline, load_prompts, min_steps, plot_profile, save_profile
    from etcdiff.models import load_pipeline

    need = min_steps(args.jump) if args.jump >= 1 else 0
    if args.steps < need:
        raise ValueError(f"--steps {args.steps} is too few: the change point needs at least {need} steps "
                         f"(curves of {need - 1} points with --jump {args.jump}).")
    from etcdiff.calibrate import calibrated_method

    calibrated_method(args.method)  # an unknown or uncalibrated name fails before the model loads
    from etcdiff.calibration.profile import ENV_DIR, profile_dir

    # the folder is checked before any calibration work, so that a finished calibration is never lost
    if args.out is not None:
        _check_writable(prepare_output_dir(args.out.parent if args.out.suffix.lower() == ".json" else args.out))
    else:
        import os

        _check_writable(prepare_output_dir(profile_dir(), flag=f"${ENV_DIR}" if os.environ.get(ENV_DIR) else "--out"))
    prompts = load_prompts(str(args.prompts)) if args.prompts is not None else None
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    pipe = load_pipeline(args.model, device=args.device, scheduler=args.scheduler)
    if args.method != "etc":
        return _run_peer(args, pipe, prompts)
    t0 = time.perf_counter()
    profile = calibrate_pipeline(
        pipe, prompts, steps=args.steps, seed=args.seed, warmup=args.warmup, alpha=args.alpha,
        guidance_scale=args.guidance, jump=args.jump, progress=not args.quiet,
    )
    elapsed = time.perf_counter() - t0
    path = save_profile(profile, _out_for(args, profile.identity, "etc"))
    png = None if args.no_plot else plot_profile(profile, paper_flux=_is_flux(pipe))
    r = profile.change_point
    print(
        f"{profile.identity}: tau = {profile.tau:.6g} at change point r = {r} (between steps {r} and {r + 1} of "
        f"{profile.steps}); {len(profile.prompts)} prompts x {profile.steps} steps in {elapsed:.1f} s"
    )
    print(f"profile: {path}" + (f"\nplot:    {png}" if png else ""))
    if r + 1 < profile.warmup:
        print(f"note: the change point (step {r + 1}) falls inside the warm-up of {profile.warmup} steps, so the "
              f"warm-up already covers the planning phase; with --steps {profile.steps} consider --warmup {max(r + 1, 2)}")
    print(f"use: --method etc (found by the CLI and etcdiff.enable), or --threshold {profile.tau:.6g}")
    return 0


def _check_writable(folder: Path) -> None:
    import tempfile

    from .common import CLIError

    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise CLIError(f"cannot write a profile into {folder} ({e.strerror}); give --out DIR or set "
                       "ETCDIFF_PROFILE_DIR to a folder you can write to.") from None


def _is_flux(pipe: object) -> bool:
    """A FLUX-family pipeline (the scenes model included): its search is drawn beside the paper's FLUX one."""
    return any(cls.__name__.startswith("Flux") for cls in type(pipe).__mro__)


def _run_peer(args: argparse.Namespace, pipe: object, prompts: list[str] | None) -> int:
    from tqdm.auto import tqdm

    from etcdiff.calibrate import calibrate_method
    from etcdiff.calibration import guess_modality, profile_identity
    from etcdiff.calibration.peer_profiles import save_peer_profile
    from etcdiff.calibration.plot import plot_fitted
    from etcdiff.calibration.profile import search_dirs
    from etcdiff.calibration.prompts import prompts_for

    if prompts is None:
        prompts = prompts_for(pipe, guess_modality(pipe))
    settings = dict(args.options)
    if args.threshold is not None:
        settings["threshold"] = args.threshold
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)  # one overall bar below instead of one per prompt
    from etcdiff.registry import get_method

    extra = get_method(args.method).extra_runs
    runs = len(prompts) + (extra(len(prompts), args.steps, **settings) if extra is not None else 0)
    t0 = time.perf_counter()
    with tqdm(total=runs * args.steps, desc=f"calibrate {args.method}", unit="step",
              disable=args.quiet) as bar:
        fitted = calibrate_method(pipe, args.method, prompts, args.steps, args.seed, args.guidance,
                                  on_step=lambda _s: bar.update(1), **settings)
        bar.total = bar.n  # the total was an upper bound (runs a calibration found it could reuse are not made)
        bar.refresh()
    elapsed = time.perf_counter() - t0
    identity = profile_identity(pipe)
    method = get_method(args.method)
    fit_only = set(method.fit_settings)
    sched = getattr(pipe, "scheduler", None)
    path = save_peer_profile(identity, args.method, args.steps, fitted, _out_for(args, identity, args.method),
                             scheduler=None if sched is None else type(sched).__name__,
                             run_settings={k: v for k, v in settings.items() if k not in fit_only},
                             fit_settings={k: v for k, v in settings.items() if k in fit_only},
                             prompts=prompts, seed=args.seed, seconds=round(elapsed, 2))
    png = None if args.no_plot else plot_fitted(fitted, path.with_suffix(".png"),
                                                f"{args.method} on {identity}, {args.steps} steps")
    print(f"{identity}: {args.method} calibrated on {len(prompts)} prompts x {args.steps} steps in {elapsed:.1f} s")
    print(f"profile: {path}" + (f"\nplot:    {png}" if png else ""))
    profile = fitted.get("profile")
    chosen = profile.get("selection") if isinstance(profile, dict) else None
    if chosen:
        folds = len(chosen.get("folds", [chosen["held_out_runs"]]))
        print(f"chose {chosen['setting']}={chosen['chosen']} on held-out calibration runs "
              f"{chosen['held_out_runs']} ({folds} fold{'s' * (folds != 1)}; mean log relative error: "
              f"{chosen['mean_log_rel_error']})")
        if chosen.get("note"):
            print(f"note: {chosen['note']}")
        serve = (profile.get("budget_fits") or {}).get("serve")
        if serve:
            from ..policies.step.etc_plus.budgets import budgets_served

            print(f"per budget: {budgets_served(serve)} (clearly closer there on the held-out runs)")
        if profile.get("trend_caps"):
            caps = profile.get("budget_trend_caps") or {}
            kept = ", ".join(f"calls {k} at {caps[k]}" for k in sorted(caps, key=int))
            none = "none kept (no plan came out as close on average and closer in its worst runs)"
            print(f"trend caps: {kept or none}")
        if profile.get("adapt_trend"):
            print(f"adapt_trend: {_adapt_kept(profile.get('budget_adapt_trend') or {})}")
        if profile.get("searched_schedules"):
            print(f"searched schedules: {_schedules_kept(profile)}")
    if isinstance(profile, dict) and profile.get("budget_errors"):
        print(_ladder_line(profile))
    from ..calibration.etc_plus.tolerance import held_tolerance

    held = held_tolerance(profile) if isinstance(profile, dict) else None  # None: no check, or none held
    if held:
        print(held)
    cost = profile.get("cost") if isinstance(profile, dict) else None
    if isinstance(cost, dict) and "generations" in cost:  # a calibration that counts its generations (etc-plus)
        replayed = (profile.get("replay") or {}).get("used")
        how = "held-out runs; the others were replays" if replayed else "held-out checks"
        print(f"cost: {cost['generations']} generations ({cost['recorded']} full runs, {cost['probes']} probe runs, "
              f"{cost['real_runs']} real {how}) in {cost['seconds']:.1f} s")
        replay = profile.get("replay") or {}
        if replayed and replay.get("rms_log_miss") is not None:
            from ..calibration.etc_plus.replay import TRUSTED_MISS

            chosen = replay.get("chosen_miss")
            mine = f"; the chosen plans' real runs by {chosen:.2f}" if chosen is not None else ""
            offsets = replay.get("offsets") or {}
            if offsets and "rms_log_miss_offset" in replay:
                each = ", ".join(f"{k} {v:+.2f}" for k, v in offsets.items())
                mine = (f", {replay['rms_log_miss_offset']:.2f} once each candidate's are shifted by its offset "
                        f"({each}){mine}")
            print(f"replays: the model's pull ({replay['feedback']}) fitted on {replay['runs']} real runs, which the "
                  f"replays miss by {replay['rms_log_miss']:.2f} in log error{mine} (rms; above {TRUSTED_MISS:g} they "
                  "are not trusted)")
    served = profile.get("served_steps") if isinstance(profile, dict) else None
    if served:
        runs = sum(int(one["cost"]["surrogate_runs"] or 0) for one in served.values())
        real = sum(int(one["cost"].get("generations") or 0) for one in served.values())
        counts = ", ".join(sorted(served, key=int))
        if profile.get("served_recorded"):
            print(f"also serves {counts} steps: calibrated again on a surrogate of real full runs at each ({real} "
                  "generations there, in the cost above: a full run per prompt, one run's probes and the runs that "
                  f"fit the model's pull there; {runs} surrogate runs)")
        else:
            calls = f"{real} full run(s) there for the pipeline's schedule" if real else "no model call"
            print(f"also serves {counts} steps: calibrated again on a surrogate of the recorded runs ({runs} "
                  f"surrogate runs, {calls})")
    found = path.parent.resolve() in [d.resolve() for d in search_dirs()]
    print(f"use: --method {args.method}" + ("  (found by etcdiff.enable and the CLI)" if found else
          f" after copying it into {search_dirs()[0]} (or set ETCDIFF_PROFILE_DIR)"))
    return 0


def _ladder_line(profile: dict[str, Any]) -> str:
    """The budgets that run a plan of fewer calls, in words (``ETCPlus(calls=B)`` never runs more than B)."""
    from ..policies.step.etc_plus.budgets import budgets_served, smaller_plans

    own = "the profile's own plans" if profile.get("final_plans") else "the fold fits' plans"
    smaller = smaller_plans(profile)
    spans = budgets_served({str(b): f"the {k}-call plan" for b, k in smaller.items()})
    runs = f"{spans} (no plan with more calls came out clearly closer)" if spans else "every budget its own plan"
    return f"budget ladder (measured on {own}): {runs}"


def _schedules_kept(profile: dict[str, Any]) -> str:
    """The budgets a searched schedule serves (``budget_schedules``), in words, with the held-out check behind
    them: e.g. ``serve calls 9-14 with ETC's trend (the plan's mean log error -3.84, the schedule's -4.31 at 9)``."""
    from ..policies.step.etc_plus.budgets import budgets_served

    plans = (profile.get("budget_schedules") or {}).get("plans") or {}
    names = {"etc": "ETC's trend", "linear": "the linear predictor", "reuse": "the last output reused"}
    spans = budgets_served({k: names.get(v["predictor"], v["predictor"]) for k, v in plans.items()})
    check = profile.get("schedule_check") or {}
    if not spans:
        return (f"none kept: at no budget of the {len(check)} measured did one come out closer than ETC+'s plan on "
                "the held-out runs (reuse: clearly closer; the profile's schedule_check has the figures)")
    first = check.get(min(plans, key=int)) or {}
    kept = first.get("kept")
    figures = (f" (at {min(plans, key=int)} calls, mean log error {first['plan']:+.2f} with ETC+'s plan, "
               f"{first[kept]:+.2f} with the schedule)") if kept in first else ""
    return f"serve {spans}{figures}; ETC+'s plan serves the other budgets"


def _adapt_kept(chosen: dict[str, dict[str, bool]]) -> str:
    """The plans that kept ``adapt_trend`` at calibration (``budget_adapt_trend``), in words: e.g. ``kept for calls
    6-11 with the plan as it chooses; calls 6-9 with the plan computing the last step``."""
    from ..policies.step.etc_plus.budgets import budgets_served

    kinds = {"free": "the plan as it chooses", "last": "the plan computing the last step"}
    spans = [budgets_served({k: label for k, on in (chosen.get(kind) or {}).items() if on})
             for kind, label in kinds.items()]
    kept = "; ".join(span for span in spans if span)
    none = "no plan (none came out as close on average and closer in its worst runs)"
    return f"kept for {kept or none}"
