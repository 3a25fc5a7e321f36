"""The methods etcdiff ships, each declared once (see :mod:`etcdiff.registry`).

A new method is one policy module plus one ``register(Method(...))`` here (or in a plug-in of your own).
"""

from __future__ import annotations

from typing import Any

from .registry import METHODS, Method, get_method, register, unregister

__all__ = ["METHODS", "Method", "get_method", "register", "unregister"]


# -- the settings classes, imported when first needed -------------------------------------------------------
def _policy(name: str) -> Any:
    def schema() -> type:
        from . import policies

        return getattr(policies, name)

    return schema


def _block_rule(name: str) -> Any:
    def schema() -> type:
        from .integration.block.cache import BLOCK_RULES

        return {cls.__name__: cls for cls in BLOCK_RULES.values()}[name]

    return schema


def _diffusers_config(name: str) -> Any:
    def schema() -> type:
        import diffusers.hooks

        if name == "SeaCacheConfig":
            from .integration.external.diffusers_more_caches import seacache_status

            why = seacache_status()
            if why is not None:
                raise ImportError(f"etcdiff: diffusers-seacache cannot run: {why}.")
        return getattr(diffusers.hooks, name)

    return schema


def _deepcache_settings() -> type:
    from .integration.external.deepcache_adapter import DeepCacheSettings, deepcache_status

    why = deepcache_status()
    if why is not None:
        raise ImportError(f"etcdiff: deepcache cannot run: {why}.")
    return DeepCacheSettings


def _cache_dit_config() -> type:
    from .integration.external.support import cache_dit_status

    why = cache_dit_status()
    if why is not None:
        hint = "" if "etcdiff[peers]" in why else "; it is in etcdiff's peers extra: pip install 'etcdiff[peers]'"
        raise ImportError(f"{why}{hint}.")
    import cache_dit

    return cache_dit.DBCacheConfig


# -- calibrations -------------------------------------------------------------------------------------------
def _fit_ertacache(trajectories: list[Any], threshold: float = 0.2, decode: Any = None) -> dict[str, Any]:
    from .policies.step.ertacache import fit_ertacache

    return {"profile": fit_ertacache(trajectories, threshold).to_dict()}


def _fit_etc(trajectories: list[Any], decode: Any = None, **settings: Any) -> dict[str, Any]:
    from .calibration.search import etc_fit

    return etc_fit(trajectories, decode, **settings)


def _fit_meancache(trajectories: list[Any], decode: Any = None, calls: int = 17, gamma: float = 2.0,
                   max_span: int = 6) -> dict[str, Any]:
    from .policies.step.meancache import fit_meancache

    profile = fit_meancache(trajectories, budgets=[calls], gamma=gamma, max_span=max_span)
    return {"profile": profile.to_dict(), "calls": calls}


def _flow_recorders() -> tuple[Any, Any]:
    """The plain full-step recorders, after MeanCache's scheduler rule (the run time's): a scheduler it refuses is
    refused in one line before any run is recorded (the sigmas, set per run, are checked by the fit)."""
    from .calibration.runs import record_denoiser_runs, record_pipeline_runs
    from .policies.flow_solvers import flow_solver_problem
    from .policies.step.meancache import scheduler_refusal

    def check(scheduler: Any) -> None:
        problem = flow_solver_problem(scheduler)
        if problem is not None:
            raise ValueError(scheduler_refusal(problem, "calibrates"))

    def on_denoiser(model: Any, scheduler: Any, latents: Any, steps: int) -> list[Any]:
        check(scheduler)
        return record_denoiser_runs(model, scheduler, latents, steps)

    def on_pipeline(pipe: Any, prompts: list[Any], steps: int, seed: int, guidance_scale: float | None,
                    on_step: Any = None) -> list[Any]:
        check(getattr(pipe, "scheduler", None))
        return record_pipeline_runs(pipe, prompts, steps, seed, guidance_scale, on_step)

    return on_denoiser, on_pipeline


def _fit_lemica(trajectories: list[Any], decode: Any = None, calls: int = 17) -> dict[str, Any]:
    from .policies.step.lemica import fit_lemica

    return {"profile": fit_lemica(trajectories).to_dict(), "calls": calls}


def _fit_etc_plus(trajectories: list[Any], decode: Any = None, **settings: Any) -> dict[str, Any]:
    from .calibration.etc_plus.reach import solver_reach
    from .policies.step.etc_plus.fit import fit_etc_plus

    if "reach" not in settings and trajectories:  # the scheduler's exact reach, where the runs carry a copy of it
        settings["reach"] = solver_reach(trajectories[0])
    return {"profile": fit_etc_plus(trajectories, **settings)}


def _probe_recorders() -> tuple[Any, Any]:
    from .calibration.etc_plus.propagation import record_probed_denoiser_runs, record_probed_pipeline_runs

    return record_probed_denoiser_runs, record_probed_pipeline_runs


# (propagation, corrections); fitted gains everywhere (True) joined the candidates when they won the held-out choice
# by 0.25 in log error on the scenes model with DPM-Solver++ at 20 steps, where "auto" trailed ERTACache at 3x-4x
ETC_PLUS_CHOICES = ((True, "auto"), (True, False), (True, True), (False, "auto"), (False, False), (False, True))


def _probe_runs(prompts: int, steps: int, replays: Any = False, trend_caps: Any = False, serve_steps: Any = None,
                adapt_trend: Any = False, serve_recorded: Any = False, final_plans: Any = False,
                searched_schedules: Any = False, **_: Any) -> int:
    """Generations beyond one per prompt (at most): the probes, the joint choice and the checks after it; with
    ``replays``, one run's probes and the real runs that fit the feedback and check the tolerance instead (20
    with 10 prompts at 50 steps); the capped plans of ``trend_caps``; the plans of ``adapt_trend`` (free and
    computing the last step); the compared budgets run again on the profile's own plans with ``final_plans``; each
    budget's searched schedules with ``searched_schedules``; and
    for ``serve_steps``, the real runs that fit the surrogate's feedback and, on a
    pipeline, one full run per step count served, or with ``serve_recorded`` a full run per prompt, one run's
    probes and the feedback's runs per step count served (the settings as ``--set`` gives them: booleans, or
    "20,28")."""
    from .calibration.etc_plus.propagation import PROBE_RUNS, probe_steps
    from .calibration.etc_plus.refine import TREND_CAP_CANDIDATES, budget_ladder, refine_generations
    from .calibration.etc_plus.tolerance import REAL_ROUNDS
    from .calibration.etc_plus.replay import (FEEDBACK_RUNS, FEEDBACK_SPEEDUPS, REPLAY_FEEDBACK_RUNS,
                                              REPLAY_FEEDBACK_SPEEDUPS, REPLAY_PROBE_RUNS)
    from .calibration.etc_plus.surrogate import serve_step_counts
    from .calibration.selection import validation_budgets, validation_generations
    from .policies.step.etc_plus.schedules import SCHEDULE_PREDICTORS

    feedback = FEEDBACK_RUNS * len(FEEDBACK_SPEEDUPS)
    probed = min(prompts, PROBE_RUNS)
    held = max(0, prompts - probed) if prompts > 2 else 0
    if replays is True:  # the feedback's runs (the last prompts but two at most), the tolerance checked on them for
        held_back = max(0, min(REPLAY_FEEDBACK_RUNS, prompts - 2))  # real at most twice, and one run's probes
        runs = held_back * (len(REPLAY_FEEDBACK_SPEEDUPS) + REAL_ROUNDS) + (
            REPLAY_PROBE_RUNS * len(probe_steps(steps)) if held_back else 0)
    else:
        choice = validation_generations(prompts, probed, 2 * len(ETC_PLUS_CHOICES), steps)  # each also computing
        alone = probed if held and probed > 1 else 0  # the probed runs the tolerance check holds out one by one
        runs = (probed * len(probe_steps(steps)) + choice  # the last step
                + refine_generations(held, steps, len(validation_budgets(steps)), alone))
    if trend_caps is True and replays is not True:
        runs += held * len(budget_ladder(steps)) * len(TREND_CAP_CANDIDATES)
    if adapt_trend is True and replays is not True:
        runs += held * len(budget_ladder(steps)) * 2
    if final_plans is True and replays is not True:  # the choice's runs reused only where the plans are the same
        runs += held * 2 * len(validation_budgets(steps))
    if searched_schedules is True and replays is not True:
        runs += held * len(budget_ladder(steps)) * len(SCHEDULE_PREDICTORS)
    served = sorted(set(serve_step_counts(serve_steps) or []) - {steps})  # as calibration keeps them
    if served and serve_recorded is True:  # each: its full runs, one run's probes, the runs that fit its feedback
        runs += sum(prompts + REPLAY_PROBE_RUNS * len(probe_steps(n)) + feedback for n in served)
    elif served:  # the feedback's runs once (none where replays fitted it), and one full run per step count
        runs += (0 if replays is True else feedback) + len(served)
    return runs


def _etc_plus_refine() -> Any:
    from .calibration.etc_plus.refine import refine_etc_plus

    return refine_etc_plus


def _fit_sencache(records: list[Any], decode: Any = None) -> dict[str, Any]:
    from .policies.step.sencache import fit_sencache

    return {"tables": fit_sencache(records).to_dict()}


def _sensitivity_recorders() -> tuple[Any, Any]:
    from .integration.step.recording import call_kwargs
    from .integration.step.sensitivity import record_sensitivity, record_sensitivity_pipeline

    def on_pipeline(pipe: Any, prompts: list[Any], steps: int, seed: int, guidance_scale: float | None,
                    on_step: Any = None) -> list[Any]:
        records = []
        for prompt in prompts:
            records += record_sensitivity_pipeline(pipe, **call_kwargs(pipe, prompt, steps, seed, guidance_scale),
                                                   output_type="latent")
            if on_step is not None:
                for s in range(steps):
                    on_step(s)
        return records

    return record_sensitivity, on_pipeline


def _teacache_pipeline(pipe: Any, prompts: list[Any], steps: int, seed: int, **call_kwargs: Any) -> dict[str, Any]:
    from .integration.block.calibration import calibrate_teacache

    return {"coefficients": list(calibrate_teacache(pipe, prompts, steps, seed, **call_kwargs).coefficients)}


def _magcache_pipeline(pipe: Any, prompts: list[Any], steps: int, seed: int, **call_kwargs: Any) -> dict[str, Any]:
    from .integration.block.calibration import calibrate_magcache

    return {"ratios": list(calibrate_magcache(pipe, prompts, steps, seed, **call_kwargs).ratios)}


def _prompttea_pipeline(pipe: Any, prompts: list[Any], steps: int, seed: int, **call_kwargs: Any) -> dict[str, Any]:
    from .integration.block.prompttea_calibration import calibrate_prompttea

    return calibrate_prompttea(pipe, prompts, steps, seed, **call_kwargs).settings()


def _resolve_etc(pipe: Any, settings: dict[str, Any]) -> Any:
    """ETC with no threshold takes, in order: the pipeline's calibration profile (the user's folder, then the
    profiles shipped with etcdiff), the published preset of a known model, or fails saying how to calibrate."""
    from .calibration.profile import etc_from_profile, model_identity, profile_identity
    from .calibration.profile_store import TauForSteps, find_profile
    from .policies import ETC, find_preset
    from .saved_calibration import pipeline_scheduler

    if "threshold" in settings:
        return ETC(**settings)
    ident = profile_identity(pipe) if pipe is not None else None
    sched = pipeline_scheduler(pipe)
    profile = find_profile(ident, scheduler=sched) if ident else None
    if profile is not None:  # each run then takes the tau searched at its own step count (TauForSteps)
        policy = etc_from_profile(profile, profile.steps)
        return ETC(**{**policy.params(), **settings}, threshold_for_steps=TauForSteps(ident, sched))
    preset = find_preset(model_identity(pipe) or "") if pipe is not None else None
    if preset is None:
        raise ValueError(
            f"no ETC threshold given, no calibration profile and no published preset for {ident or 'this model'!r}. "
            "Give a threshold, or calibrate this model once with `etcdiff calibrate --model <id or path>`."
        )
    return ETC(**{"threshold": preset.threshold, "warmup": preset.warmup, **settings})


# -- the declarations ---------------------------------------------------------------------------------------
for _m in (
    Method("etc", "step", "ETC, Error-aware Trend Consistency (this project's reference method)",
           "whole output, predicted by a consistent trend over a dynamic window",
           "tau per model: `etcdiff calibrate`, or a published preset",
           schema=_policy("ETC"), resolve=_resolve_etc, fit=_fit_etc, fit_reads=("warmup", "alpha")),
    Method("etc-plus", "step", "ETC+, this project's extension of ETC (not the paper's method)",
           "whole output: a sigma-axis trend, a window planned from calibrated per-step errors, online checks",
           "yes: per-step errors and gains, `etcdiff calibrate --method etc-plus`",
           schema=_policy("ETCPlus"), saved={"profile": "profile"}, saved_required=True, threshold="tolerance",
           fit=_fit_etc_plus, fit_settings=("max_window", "corrections", "ridge", "rel_tolerance", "spread",
                                             "propagation", "replays", "replay_offsets", "trend_caps",
                                             "adapt_trend", "serve_steps", "serve_recorded", "final_plans",
                                             "searched_schedules"),
           recorders=_probe_recorders, extra_runs=_probe_runs, replays=True, replay_default=(False, "auto"),
           replay_offsets="corrections", choose=(("propagation", "corrections"), ETC_PLUS_CHOICES),
           refine=_etc_plus_refine, plan_variant={"last_step": True}, per_budget=True),
    Method("none", "step", "full-step reference", "nothing", "no", schema=_policy("NoCache"), threshold=None),
    Method("fixed", "step", "fixed-interval reuse (baseline)", "whole output, unchanged", "no",
           schema=_policy("FixedInterval"), threshold=None),
    Method("linear", "step", "naive linear extrapolation (baseline)",
           "whole output, extrapolated as 2·eps_last − eps_prev on skipped steps", "no",
           schema=_policy("LinearExtrapolation"), threshold=None),
    Method("adaptive", "step", "AdaptiveDiffusion (Ye et al. 2024)",
           "whole output, unchanged; skips by a third-order latent difference", "no (threshold 0.01)",
           schema=_policy("AdaptiveDiffusion")),
    Method("sada", "step", "SADA (Jiang et al. 2025), step-wise part",
           "whole output with x0 extrapolation; skips by drift stability", "no", schema=_policy("SADA"),
           threshold=None),
    Method("ertacache", "step", "ERTACache (reconstruction of its three named parts)",
           "whole output with timestep and residual-linearization corrections",
           "yes: offline profile, `etcdiff calibrate --method ertacache`",
           schema=_policy("ERTACache"), saved={"profile": "profile"}, saved_required=True, threshold=None,
           fit=_fit_ertacache, fit_settings=("threshold",)),
    Method("meancache", "step", "MeanCache (Gao et al. 2026); its schedule search is ours (not released)",
           "whole output: average-velocity estimate on a fixed schedule of B calls (flow-matching schedulers)",
           "yes: a schedule per model and budget, `etcdiff calibrate --method meancache --set calls=B`",
           schema=_policy("MeanCache"), saved={"profile": "profile", "calls": "calls"}, saved_required=True,
           saved_unless=("schedule",), threshold=None, fit=_fit_meancache, fit_settings=("gamma", "max_span"),
           fit_reads=("calls",), recorders=_flow_recorders),
    Method("sencache", "step", "SenCache (Haghighi & Alahi 2026), step-level",
           "whole output, unchanged; reuses while a first-order sensitivity bound stays under eps",
           "yes: J_x, J_t tables, `etcdiff calibrate --method sencache`",
           schema=_policy("SenCache"), saved={"tables": "tables"}, saved_required=True, threshold="eps_main",
           fit=_fit_sencache, recorders=_sensitivity_recorders),
    Method("easycache", "step", "EasyCache (Zhou et al. 2025), official rule and defaults",
           "transformation (output minus input) of the last computed step; skips while k·|dx|/|out| sums under 0.05",
           "no (threshold 0.05, 10 warm-up steps)", schema=_policy("EasyCache")),
    Method("lazycache", "step", "LazyCache, ComfyUI's lighter EasyCache variant",
           "transformation of the last computed step; change since it, on a subsampled grid, 15-95 % of the run",
           "no (threshold 0.2)", schema=_policy("LazyCache")),
    Method("lemica", "step", "LeMiCa (NeurIPS 2025); its edge weights are ours (search code not released)",
           "whole output (reuse, or linear / ETC trend) on a lexicographic-minimax schedule of B calls",
           "yes: edge weights per model, `etcdiff calibrate --method lemica --set calls=B`",
           schema=_policy("LeMiCa"), saved={"profile": "profile", "calls": "calls"}, saved_required=True,
           saved_unless=("computed",), threshold=None, fit=_fit_lemica, fit_reads=("calls",)),
    Method("precisecache", "step", "PreciseCache's LFCache (ICLR 2026): a reconstruction, no code released",
           "whole output, unchanged; skips while the input's low-frequency change stays small (our proxy)",
           "no (threshold 0.1, ours)", schema=_policy("PreciseCache")),
    Method("teacache", "block", "TeaCache (Liu et al. 2025)",
           "residual of the transformer blocks; skips by the modulated input's change",
           "coefficients per model (published for FLUX, Wan); `etcdiff calibrate --method teacache`",
           schema=_block_rule("TeaCache"), saved={"coefficients": "coefficients"},
           calibrate_pipeline=_teacache_pipeline),
    Method("magcache", "block", "MagCache (Ma et al. 2025)",
           "residual of the transformer blocks; skips by accumulated magnitude-ratio error",
           "ratios per model (published for FLUX); `etcdiff calibrate --method magcache`",
           schema=_block_rule("MagCache"), saved={"ratios": "ratios"}, calibrate_pipeline=_magcache_pipeline),
    Method("dicache", "block", "DiCache (Bu et al. 2026), re-implemented from the paper (its code has no licence)",
           "residual of the transformer blocks, extrapolated from the last two by the probe's change; a shallow "
           "probe decides", "no (threshold 0.4, probe 1 block)", schema=_block_rule("DiCache")),
    Method("h2cache", "block", "H2-Cache (2510.27171), two first-block checks",
           "residual of each half of the blocks (FLUX: double, single) when its first block's pooled residual "
           "barely changes", "no (thresholds 0.12, 0.09)", schema=_block_rule("H2Cache")),
    Method("prompttea", "block", "PromptTea (2507.06739): TeaCache, threshold set by prompt complexity",
           "residual of the transformer blocks; TeaCache's rule with a per-prompt threshold",
           "yes: coefficients and two reference embeddings, `etcdiff calibrate --method prompttea`",
           schema=_block_rule("PromptTea"), saved={"coefficients": "coefficients",
                                                   "simple_reference": "simple_reference",
                                                   "complex_reference": "complex_reference"},
           saved_required=True, calibrate_pipeline=_prompttea_pipeline),
    Method("diffusers-fbc", "external", "diffusers FirstBlockCache, as shipped",
           "residual of blocks 2..L when block 1's residual barely changes", "no (threshold 0.05)",
           schema=_diffusers_config("FirstBlockCacheConfig")),
    Method("diffusers-magcache", "external", "diffusers MagCache, as shipped", "residual of the transformer blocks",
           "ratios (FLUX built in; else etcdiff's `magcache` calibration)",
           schema=_diffusers_config("MagCacheConfig"), saved={"mag_ratios": "ratios"}, saved_from="magcache"),
    Method("diffusers-taylorseer", "external", "diffusers TaylorSeer cache, as shipped",
           "attention outputs, Taylor-extrapolated", "no (interval 5, order 1)",
           schema=_diffusers_config("TaylorSeerCacheConfig"), threshold=None),
    Method("diffusers-seacache", "external", "diffusers SeaCache (CVPR 2026), as shipped",
           "residual of the transformer blocks, linearly extrapolated; skips by a spectrally filtered input's change",
           "no (threshold 0.25); diffusers >= 0.42.1, Wan text-to-video", schema=_diffusers_config("SeaCacheConfig")),
    Method("diffusers-fastercache", "external", "diffusers FasterCache (ICLR 2025), as shipped",
           "attention outputs, extrapolated from the last two (CFG part off by default)", "no (every 2nd call)",
           schema=_diffusers_config("FasterCacheConfig"), threshold=None),
    Method("diffusers-pab", "external", "diffusers Pyramid Attention Broadcast, as shipped",
           "attention outputs in a timestep range", "no (every 2nd call, timesteps 100-800)",
           schema=_diffusers_config("PyramidAttentionBroadcastConfig"), threshold=None),
    Method("deepcache", "external", "DeepCache (Ma et al. 2024), the deepcache package, as shipped",
           "deep UNet blocks' outputs; only the shallow skip branch runs between refreshes",
           "no (interval 3, branch 0); UNet pipelines", schema=_deepcache_settings, threshold=None),
    Method("cache-dit", "external", "cache-dit DBCache, as shipped",
           "residual of the middle blocks (first Fn blocks always run)", "no",
           schema=_cache_dit_config, threshold="residual_diff_threshold"),
):
    register(_m)
