"""One calibration for every calibrated method, on a pipeline or on a bare denoiser.

Both paths record full-step runs once (``calibration.runs``: a :class:`~etcdiff.policies.trajectory.Trajectory`
per prompt or per calibration noise) and hand them to the method's ``fit`` from the registry; ETC's fit is the
tolerance search over the same recorded runs. A method whose calibration needs extra forwards declares its own
recorder (``Method.recorders``).

- :func:`calibrate_policy` (a bare ``model(latents, timestep)`` and a scheduler) returns a ready policy for
  :func:`etcdiff.sample`;
- :func:`calibrate_method` (a diffusers pipeline) returns the settings that ``etcdiff calibrate --method`` saves
  and ``etcdiff.enable`` finds.
"""

from __future__ import annotations

import copy
import time
import warnings
from typing import Any, Callable, Sequence

import torch

from .api import resolve_policy
from .calibration.decode import Decode
from .calibration.etc_plus.surrogate import preset_scheduler, serve_step_counts
from .calibration.runs import record_denoiser_runs, record_pipeline_runs
from .calibration.policy_runs import PolicyRunner, denoiser_runner, pipeline_runner
from .calibration.selection import RealRuns, candidate_settings, choose_fit, offsets_by_value, one_setting_apart
from .policies.step.base import StepPolicy
from .registry import Method, get_method

def calibrated_method(name: str) -> Method:
    method = get_method(name)
    if not method.calibrated:
        from .registry import METHODS

        with_fit = [n for n, m in METHODS.items() if m.calibrated]
        raise ValueError(f"{name!r} has no calibration; methods with one: {', '.join(with_fit)}.")
    return method


def _split(method: Method, settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``settings`` as (what the fit takes, what the policy takes)."""
    fit = {k: v for k, v in settings.items() if k in method.fit_settings}
    run = method.check_settings({k: v for k, v in settings.items() if k not in method.fit_settings})
    return fit, run


def calibrate_policy(method: str, model: Callable[..., torch.Tensor], scheduler: Any, latents: torch.Tensor,
                     num_inference_steps: int, decode: Decode | None = None, **settings: Any) -> StepPolicy:
    """Calibrate a step method on a bare denoiser and return its policy, ready for :func:`etcdiff.sample`.

    ``model(latents, timestep)`` returns what ``scheduler`` consumes (guidance applied inside); ``latents`` is a
    tensor ``(N, ...)`` of calibration noises, each sampled on its own for ``num_inference_steps`` steps;
    ``decode`` maps latents to images in [0, 1] (ETC's search compares decoded images; identity when ``None``).
    ``settings`` are the method's own (``warmup`` for ETC, ``calls`` for MeanCache, ...) and its fit's
    (``threshold`` for ERTACache's schedule).
    """
    info = calibrated_method(method)
    if info.kind != "step":
        raise ValueError(f"{method!r} is a {info.kind}-level method: it calibrates on a pipeline "
                         f"(`etcdiff calibrate --method {method}`), not on a bare denoiser.")
    if not isinstance(latents, torch.Tensor) or latents.dim() < 2:
        raise TypeError("calibrate_policy: latents must be a tensor (N, ...) of calibration noises, one run each.")
    fitted, run_args = _calibrate_denoiser(info, model, scheduler, latents, num_inference_steps, decode, settings)
    return resolve_policy(method, None, **{**fitted, **run_args})


def _calibrate_denoiser(info: Method, model: Callable[..., torch.Tensor], scheduler: Any, latents: torch.Tensor,
                        steps: int, decode: Decode | None, settings: dict[str, Any],
                        records: list[Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """:func:`calibrate_policy`'s work: the fitted settings and the run settings; ``records`` are full runs
    already recorded on ``model`` (a served step count's, with their probes), else they are recorded here."""
    fit_args, run_args = _split(info, settings)
    replays = _flag(info, fit_args, "replays")
    serve, serve_recorded = _serve_steps(info, fit_args, steps)
    start = time.perf_counter()
    if records is None:
        records = _record_denoiser(info, model, scheduler, latents, steps, replays)
    if serve:
        _check_servable(info, records)
    probes = _probe_count(records)
    run = _Counted(denoiser_runner(model, scheduler, latents, steps))
    fitted = _fit(info, records, decode, fit_args, run_args, run, replays)
    if serve:
        def record_at(n: int) -> tuple[list[Any], PolicyRunner]:  # real full runs at n steps, and a runner there
            run.count += len(latents)
            return (record_denoiser_runs(model, copy.deepcopy(scheduler), latents, n),
                    _Counted(denoiser_runner(model, copy.deepcopy(scheduler), latents, n), run))

        _serve(info, fitted, records, serve, lambda n: copy.deepcopy(scheduler), decode, fit_args, run_args, run,
               record_at if serve_recorded else None)
    return _with_cost(info, fitted, records, probes, run, start), run_args


def calibrate_method(pipe: Any, method: str, prompts: Sequence[Any], steps: int, seed: int = 42,
                     guidance_scale: float | None = None, on_step: Callable[[int], None] | None = None,
                     **settings: Any) -> dict[str, Any]:
    """Calibrate ``method`` on a pipeline: the settings that ``etcdiff.enable(pipe, method)`` then finds once
    saved (``calibration.peer_profiles.save_peer_profile``). ETC's own search, with its curves and plot, is
    :func:`etcdiff.calibration.calibrate_pipeline`."""
    info = calibrated_method(method)
    prompts = list(prompts)
    if not prompts:
        raise ValueError("no calibration prompts given.")
    fit_args, run_args = _split(info, settings)
    replays = _flag(info, fit_args, "replays")
    serve, serve_recorded = _serve_steps(info, fit_args, steps)
    if info.calibrate_pipeline is not None:
        extra = {} if guidance_scale is None else {"guidance_scale": guidance_scale}
        return info.calibrate_pipeline(pipe, prompts, steps, seed, **extra)
    if info.name == "etc":
        raise ValueError("ETC's search saves a profile with its curves: use etcdiff.calibration.calibrate_pipeline.")
    start = time.perf_counter()
    if info.choose is not None or info.refine is not None:  # runs held out: each prompt its own noise (held_out_seeds)
        seed = held_out_seeds(seed, len(prompts))
    records = _record_pipeline(info, pipe, prompts, steps, seed, guidance_scale, on_step, replays)
    if serve:
        _check_servable(info, records)
    probes = _probe_count(records)
    run = _Counted(pipeline_runner(pipe, prompts, steps, seed, guidance_scale, on_step))
    fitted = _fit(info, records, None, fit_args, run_args, run, replays)
    if serve:
        def solver_at(n: int) -> Any:  # one real full run at n steps: the pipeline's own schedule for it
            run.count += 1
            return preset_scheduler(record_pipeline_runs(pipe, prompts[:1], n, seed[:1], guidance_scale,
                                                         on_step)[0].solver)

        def record_at(n: int) -> tuple[list[Any], PolicyRunner]:  # every prompt's full run at n steps, for real
            run.count += len(prompts)
            return (record_pipeline_runs(pipe, prompts, n, seed, guidance_scale, on_step),
                    _Counted(pipeline_runner(pipe, prompts, n, seed, guidance_scale, on_step), run))

        _serve(info, fitted, records, serve, solver_at, None, fit_args, run_args, run,
               record_at if serve_recorded else None)
    return _with_cost(info, fitted, records, probes, run, start)


def held_out_seeds(seed: int, count: int) -> list[int]:
    """``seed + k`` for calibration prompt ``k``, for a method that holds some of its calibration runs out to
    choose or check on: runs that all start from one noise share what a fit can learn from that noise, so the held-out
    runs flattered fits that learn more of it (on the scenes model at 28 Euler steps, corrections on every step won
    the held-out choice with one seed for all prompts and lost 3-6 dB at 2x-3x on other seeds; with a seed per
    prompt the choice kept the corrections that hold out of sample)."""
    return [int(seed) + k for k in range(count)]


class _Counted:
    """A :data:`PolicyRunner` that counts the generations it makes (and adds them to ``parent``'s count)."""

    def __init__(self, run: PolicyRunner, parent: "_Counted | None" = None) -> None:
        self.inner, self.count, self.parent = run, 0, parent

    def __call__(self, policy: StepPolicy, i: int) -> torch.Tensor:
        self.count += 1
        if self.parent is not None:
            self.parent.count += 1
        return self.inner(policy, i)


def _flag(info: Method, fit_args: dict[str, Any], name: str) -> bool:
    """A calibration-only switch (``replays``, ``serve_recorded``), taken out of ``fit_args`` and checked."""
    value = fit_args.pop(name, False)
    if not isinstance(value, bool):
        raise ValueError(f"{info.name}: {name} must be true or false, got {value!r}.")
    return value


def _serve_steps(info: Method, fit_args: dict[str, Any], steps: int) -> tuple[list[int], bool]:
    """The calibration-only ``serve_steps`` setting (other step counts to calibrate for on a surrogate of the
    recorded runs) and ``serve_recorded`` (draw each one's surrogate from real full runs at it), taken out of
    ``fit_args`` and checked."""
    recorded = _flag(info, fit_args, "serve_recorded")
    value = fit_args.pop("serve_steps", None)
    if value in (None, (), [], ""):
        if recorded:
            raise ValueError(f"{info.name}: serve_recorded=true records the step counts of serve_steps, and none "
                             "were given: add --set serve_steps=20,28 (the step counts to serve).")
        return [], False
    values = serve_step_counts(value)
    if not values or any(v < 3 for v in values):
        raise ValueError(f"{info.name}: serve_steps must be step counts of at least 3 (such as 20,28), got {value!r}.")
    if int(steps) in values:  # said, not dropped in silence
        warnings.warn(f"{info.name}: serve_steps {steps} is the calibration's own step count, which the profile "
                      "plans from its own fit: nothing is served there.", UserWarning, stacklevel=3)
    above = sorted(v for v in set(values) if v > steps)
    if above and not recorded:
        listed = ", ".join(map(str, above))
        warnings.warn(f"{info.name}: serve_steps {listed} above the calibration's {steps} steps: the "
                      "surrogate extrapolates past its last recorded step there; calibrate at the largest step count "
                      "you serve (or add --set serve_recorded=true).", UserWarning, stacklevel=3)
    return sorted({int(v) for v in values} - {int(steps)}), recorded


def _check_servable(info: Method, records: list[Any]) -> None:
    """Refuse ``serve_steps`` before the fit where the recorded runs cannot stand for the model (no scheduler copy,
    or a pipeline that changes the latents between steps)."""
    from .calibration.etc_plus.replay import replayable

    if not replayable(records):
        raise ValueError(f"{info.name}: serve_steps needs runs that a copy of the scheduler can replay, and these "
                         "cannot (no copyable scheduler, or a pipeline that changes the latents between steps); "
                         "calibrate at each step count instead (--steps N).")


def _serve(info: Method, fitted: dict[str, Any], records: list[Any], serve: list[int],
           solver_at: Callable[[int], Any], decode: Decode | None, fit_args: dict[str, Any],
           run_args: dict[str, Any], run: _Counted,
           record_at: Callable[[int], tuple[list[Any], PolicyRunner]] | None = None) -> None:
    """The calibration made again at each step count of ``serve`` on a surrogate of the recorded runs
    (:mod:`etcdiff.calibration.etc_plus.surrogate`), kept in the profile as ``served_steps``. The surrogate's
    feedback is the replays' where the calibration replayed, else fitted on a few real runs (``run``). With
    ``record_at`` (``serve_recorded``), each step count's surrogate is drawn from real full runs at that step count
    instead, one of them probed for real, and its feedback is fitted on a few real runs there."""
    from .calibration.etc_plus.replay import fit_feedback, noise_scales
    from .calibration.etc_plus.surrogate import SurrogateDenoiser

    profile = fitted["profile"]
    replay = profile.get("replay") or {}
    _, build, plain = _fitters(info, decode, fit_args, run_args)
    model, feedback = None, None
    if record_at is None:  # one surrogate, of the recorded runs
        scales = noise_scales(records)
        if replay.get("used") and "curve" in replay:  # the replays' (said already where they missed)
            feedback = replay["curve"]
        else:
            feedback, pull, _ = fit_feedback(records, run, plain, build, scales)
            _say_untrusted(info, pull, "the surrogate of the recorded runs", _served_fix(serve))
        model = SurrogateDenoiser(records, feedback, scales)
    latents = torch.cat([r.inputs[0] for r in records])
    served = {}
    for n in serve:
        start, before = time.perf_counter(), run.count
        target, own, pull = model, None, None
        if record_at is not None:  # of real runs at n steps instead, with the pull measured there
            own, runner = record_at(n)
            _probe_one(own, runner)
            scales = noise_scales(own)
            curve, pull, _ = fit_feedback(own, runner, plain, build, scales)
            _say_untrusted(info, pull, f"the surrogate of the real runs at {n} steps", _served_fix([n]))
            pull = {"curve": [round(float(v), 6) for v in curve], **pull}
            target = SurrogateDenoiser(own, curve, scales)
        calls = target.calls
        solver = solver_at(n) if own is None else preset_scheduler(own[0].solver)
        fitted_n, run_n = _calibrate_denoiser(info, target, solver, latents, n, decode, {**fit_args, **run_args}, own)
        one = resolve_policy(info.name, None, **{**fitted_n, **run_n}).calibrated
        surrogate_runs = one.get("cost", {}).get("generations")
        if own is not None and surrogate_runs is not None:  # the real runs it was given are counted above
            surrogate_runs -= len(own) + _probe_count(own)
        one["cost"] = {"generations": run.count - before, "surrogate_runs": surrogate_runs,
                       "surrogate_calls": target.calls - calls, "seconds": round(time.perf_counter() - start, 2)}
        if pull is not None:
            one["served_feedback"] = pull
        served[str(n)] = one
    profile["served_steps"] = served
    if record_at is not None:
        profile["served_recorded"] = True
    else:
        profile["served_feedback"] = [round(float(v), 6) for v in feedback]


def _say_untrusted(info: Method, record: dict[str, Any], what: str, fix: str) -> None:
    """Warn where a fitted pull (``record``, :func:`~etcdiff.calibration.etc_plus.replay.fit_feedback`'s) left the
    replays or a surrogate further from the real runs than they can be trusted with, naming ``fix``."""
    from .calibration.etc_plus.replay import untrusted

    note = untrusted(record, what)
    if note:
        warnings.warn(f"{info.name}: {note}; {fix}.", UserWarning, stacklevel=4)


def _served_fix(steps: Sequence[int]) -> str:
    """What to do where a served step count's surrogate cannot be trusted: calibrate at that step count."""
    counts = ", ".join(map(str, steps))
    return f"calibrate at {counts} steps instead (--steps N) for a profile chosen on real runs there"


def _probe_one(records: list[Any], run: PolicyRunner) -> None:
    """Probe the first of ``records`` for real (a replayed calibration's and a recorded served step count's
    probes)."""
    from .calibration.etc_plus.propagation import PROBES, probe_runs, probe_steps
    from .calibration.etc_plus.replay import REPLAY_PROBE_RUNS

    probe_runs(records[:REPLAY_PROBE_RUNS], run, probe_steps(records[0].num_steps, PROBES))


def _probe_count(records: list[Any]) -> int:
    """Probe runs the records hold (each one generation)."""
    return sum(len(getattr(r, "probes", None) or {}) for r in records)


def _with_cost(info: Method, fitted: dict[str, Any], records: list[Any], probes: int, run: _Counted,
               start: float) -> dict[str, Any]:
    """``fitted`` with what the calibration cost in its profile (when the method's profile is a dict of its own):
    generations (full recorded runs, probe runs, and the other real runs made to choose and check) and seconds.
    ``probes`` were made while recording; those made later (a replayed calibration's) went through ``run``."""
    profile = fitted.get("profile")
    if isinstance(profile, dict) and profile.get("method") == info.name:
        later = _probe_count(records) - probes
        profile["cost"] = {"generations": len(records) + probes + run.count, "recorded": len(records),
                           "probes": probes + later, "real_runs": run.count - later,
                           "seconds": round(time.perf_counter() - start, 2)}
    return fitted


def _fitters(info: Method, decode: Decode | None, fit_args: dict[str, Any], run_args: dict[str, Any]
             ) -> tuple[Callable[..., dict[str, Any]], Callable[[dict[str, Any], int | None], StepPolicy],
                        Callable[[list[Any]], dict[str, Any]]]:
    """``fit(runs, **extra)`` (the method's fit with the user's settings), ``build(fitted, calls)`` (its policy) and
    ``plain(runs)`` (the fit of the last open candidate: the one that needs no probes)."""
    context = _fit_context(info, run_args)
    names, values = open_choice(info, fit_args)

    def fit(runs: list[Any], **extra: Any) -> dict[str, Any]:
        return info.fit(runs, decode=decode, **{**fit_args, **extra}, **context)

    def build(fitted: dict[str, Any], calls: int | None) -> StepPolicy:
        return resolve_policy(info.name, None, **{**fitted, **run_args, "calls": calls})

    def plain(runs: list[Any]) -> dict[str, Any]:
        return fit(runs, **(candidate_settings(names, values[-1]) if names else {}))

    return fit, build, plain


def _fit(info: Method, records: list[Any], decode: Decode | None, fit_args: dict[str, Any],
         run_args: dict[str, Any], run: PolicyRunner, replays: bool = False) -> dict[str, Any]:
    """The method's fit; where it declares a choice (``Method.choose``) the user left open, the choice made on
    held-out calibration runs (:func:`~etcdiff.calibration.selection.choose_fit`): replayed where the method
    replays (``replays``, ``Method.replays``) and the runs allow it, else run for real. Where the replays miss the
    real runs by more than they are trusted with, the choice starts from ``Method.replay_default`` and leaves it
    only beyond that miss (``slack``)."""
    offsets = _flag(info, fit_args, "replay_offsets")  # opt-in: the replays shifted per candidate (replay.py)
    if offsets and not replays:
        raise ValueError(f"{info.name}: replay_offsets=true shifts the replays of replays=true, which was not "
                         "given: add --set replays=true.")
    fit, build, plain = _fitters(info, decode, fit_args, run_args)
    names, values = open_choice(info, fit_args)
    refine = info.refine() if info.refine is not None else None
    if not names and refine is None:
        return fit(records)
    held, replayed, real = _held_out_runner(info, records, fit, plain, build, run, replays, names if offsets else (),
                                            values)
    from .calibration.etc_plus.replay import keep_chosen_miss, untrusted_miss

    slack = untrusted_miss(replayed)
    if slack:
        values = _replay_first(info, names, values)
    if not names:  # every choice given by the user: only the method's own checks
        fitted = choose_fit(records, lambda runs, **_: fit(runs), build, held, "_", (None,), refine, real)
    else:
        shifts = offsets_by_value(names, values, info.replay_offsets, (replayed or {}).get("offsets"))
        fitted = choose_fit(records, fit, build, held, names[0] if len(names) == 1 else names, values, refine, real,
                            info.plan_variant, info.per_budget, slack, shifts)
    if replayed is not None and isinstance(fitted.get("profile"), dict):
        fitted["profile"]["replay"] = replayed
        note = keep_chosen_miss(replayed, fitted["profile"].get("tolerance_check"))
        if note:
            warnings.warn(f"{info.name}: {note}; calibrate without replays=true to choose on real held-out runs.",
                          UserWarning, stacklevel=3)
    return fitted


def _held_out_runner(info: Method, records: list[Any], fit: Callable[..., dict[str, Any]],
                     plain: Callable[[list[Any]], dict[str, Any]],
                     build: Callable[[dict[str, Any], int | None], StepPolicy], run: PolicyRunner,
                     replays: bool, names: tuple[str, ...] = (), values: Sequence[Any] = ()
                     ) -> tuple[PolicyRunner, dict[str, Any] | None, RealRuns | None]:
    """What judges the candidates on held-out runs, a record of it, and the real runs a method's checks may use:
    replays with a fitted feedback (:mod:`etcdiff.calibration.etc_plus.replay`) and the runs the feedback was
    fitted on, where asked (``replays``) and the runs can be replayed, with real probes on one recorded run; else
    real runs (without ``replays``, the method's recorders probed the runs while recording; where the runs cannot
    be replayed, they are probed here, for real). The feedback's real runs are spread over the candidates of
    ``Method.replay_offsets`` left open (``names``, ``values``), each kept with its offset."""
    if not (info.replays and replays):
        return run, None, None
    from .calibration.etc_plus.propagation import PROBE_RUNS, PROBES, probe_runs, probe_steps
    from .calibration.etc_plus.replay import (REPLAY_FEEDBACK_RUNS, REPLAY_FEEDBACK_SPEEDUPS, Replay, fit_feedback,
                                              noise_scales, replayable)

    if not replayable(records):
        why = ("the runs cannot be replayed (no copyable scheduler, a pipeline that changes the latents between "
               "steps, or a replay that misses the recorded result): held-out runs and probes were run for real")
        warnings.warn(f"{info.name}: replays=True was not used: {why}; the calibration costs its usual generations.",
                      stacklevel=3)
        probe_runs(records[:PROBE_RUNS], run, probe_steps(records[0].num_steps, PROBES))
        return run, {"used": False, "why": why}, None
    scales = noise_scales(records)
    group = one_setting_apart(names, values, info.replay_offsets)
    fits = {label: (lambda runs, v=settings: fit(runs, **v)) for label, settings in group.items()}
    feedback, record, finals = fit_feedback(records, run, plain, build, scales, REPLAY_FEEDBACK_RUNS,
                                            REPLAY_FEEDBACK_SPEEDUPS, fits if len(fits) > 1 else None)
    if record.get("runs"):  # runs held out: one recorded run probed for real (so no longer held out: held_out_runs)
        _probe_one(records, run)
    _say_untrusted(info, record, "the replays", "calibrate without replays=true to choose on real held-out runs")
    curve = [round(float(v), 6) for v in feedback]
    return Replay(records, feedback, scales), {"used": True, **record, "curve": curve}, RealRuns(run, finals)


def _replay_first(info: Method, names: tuple[str, ...], values: list[Any]) -> list[Any]:
    """``values`` with the method's replay default (``Method.replay_default``, restricted to the settings left
    open) first: the candidate a replayed choice keeps unless another clearly beats it."""
    if info.replay_default is None or info.choose is None:
        return values
    setting = info.choose[0]
    every = (setting,) if isinstance(setting, str) else tuple(setting)
    default = dict(zip(every, (info.replay_default,) if isinstance(setting, str) else info.replay_default))
    first = default[names[0]] if len(names) == 1 else tuple(default[n] for n in names)
    return [first] + [v for v in values if v != first] if first in values else values


def open_choice(info: Method, fit_args: dict[str, Any]) -> tuple[tuple[str, ...], list[Any]]:
    """The settings of ``info.choose`` that the user left open, and their distinct candidate values (a tuple per
    candidate when several settings are chosen jointly)."""
    if info.choose is None:
        return (), []
    setting, values = info.choose
    names = (setting,) if isinstance(setting, str) else tuple(setting)
    rows = [(v,) if isinstance(setting, str) else tuple(v) for v in values]
    keep = [k for k, n in enumerate(names) if n not in fit_args]
    open_values = list(dict.fromkeys(tuple(row[k] for k in keep) for row in rows))
    if not keep:
        return (), []
    if len(keep) == 1:
        return (names[keep[0]],), [v[0] for v in open_values]
    return tuple(names[k] for k in keep), open_values


def _fit_context(info: Method, run_args: dict[str, Any]) -> dict[str, Any]:
    """Run-time settings that the fit also reads (MeanCache's budget picks the schedule to search)."""
    return {k: run_args[k] for k in info.fit_reads if k in run_args}


def _record_denoiser(info: Method, model: Callable[..., torch.Tensor], scheduler: Any, latents: torch.Tensor,
                     steps: int, replays: bool = False) -> list[Any]:
    """The full-step runs, with the method's own recorder (none when its probes will be replayed)."""
    if info.recorders is not None and not replays:
        return info.recorders()[0](model, scheduler, latents, steps)
    return record_denoiser_runs(model, scheduler, latents, steps)


def _record_pipeline(info: Method, pipe: Any, prompts: list[Any], steps: int, seed: int,
                     guidance_scale: float | None, on_step: Callable[[int], None] | None,
                     replays: bool = False) -> list[Any]:
    """The full-step runs, with the method's own recorder (none when its probes will be replayed)."""
    if info.recorders is not None and not replays:
        return info.recorders()[1](pipe, prompts, steps, seed, guidance_scale, on_step)
    return record_pipeline_runs(pipe, prompts, steps, seed, guidance_scale, on_step)
