"""ETC's model-specific error tolerance search: from recorded full-step runs to tau.

For every calibration input, one full N-step run at a fixed seed is recorded (:mod:`etcdiff.calibration.runs`);
its curves are the step differences d_i and the perturbation similarities s_i
(:mod:`etcdiff.calibration.perturbation`). d_bar and s_bar, the averages over the runs, give the change point r
of s_bar and tau = d_bar[r] (:mod:`etcdiff.calibration.change_point`, which explains the choice of r).

:func:`search_trajectories` is the one loop over runs, whatever recorded them; :func:`calibrate_pipeline` and
:func:`calibrate_denoiser` feed it the runs of a diffusers pipeline or of a bare denoiser and turn its result
into a profile.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..integration.step.recording import Trajectory
from ..policies.step.etc import ETC
from .change_point import DEFAULT_JUMP, DEFAULT_MIN_SIZE, DETECTOR, check_steps, tolerance_from_curves
from .decode import MODALITIES, Decode, pipeline_decoder
from .perturbation import trajectory_curves
from .profile import Profile, jsonable, normalize_identity, now_iso, package_versions, profile_identity
from .prompts import prompts_for
from .runs import Runs, denoiser_runs, pipeline_runs, quiet_progress


@dataclass
class SearchResult:
    """The curves of every run, their averages, the change point r and tau = d_bar[r]."""

    d: list[np.ndarray]
    s: list[np.ndarray]
    d_bar: np.ndarray
    s_bar: np.ndarray
    r: int
    tau: float
    jump: int = DEFAULT_JUMP
    min_size: int = DEFAULT_MIN_SIZE
    seconds: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)


def _name(fn: Any) -> str:
    return getattr(fn, "__qualname__", type(fn).__name__)


def _check_modality(modality: str) -> None:
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; choose one of {', '.join(MODALITIES)}.")


def _average(d: list[np.ndarray], s: list[np.ndarray], jump: int, min_size: int, t0: float,
             meta: dict[str, Any], stacklevel: int = 2) -> SearchResult:
    lengths = {x.size for x in d} | {x.size for x in s}
    if len(lengths) != 1:
        raise RuntimeError(f"runs recorded different numbers of steps ({sorted(lengths)}); cannot average them.")
    d_bar = np.mean(np.stack(d), axis=0)
    s_bar = np.mean(np.stack(s), axis=0)
    tau, r = tolerance_from_curves(d_bar, s_bar, jump=jump, min_size=min_size)
    before, after = float(np.mean(s_bar[: r + 1])), float(np.mean(s_bar[r + 1 :]))
    meta.update(s_mean_before=before, s_mean_after=after)
    if after <= before:
        warnings.warn(
            f"the similarity curve falls at its change point (mean SSIM {before:.4f} up to index {r}, {after:.4f} "
            "after): it does not show the volatile-then-stable shape, so the transition found is not the "
            "end of semantic planning. tau = d_bar[r] as the reference computes it; check the plot of the curves.",
            UserWarning,
            stacklevel=stacklevel + 1,
        )
    return SearchResult(d, s, d_bar, s_bar, r, tau, jump, min_size, time.perf_counter() - t0, meta)


def search_trajectories(
    runs: Iterable[Trajectory],
    decode: Decode,
    *,
    seed: int = 42,
    modality: str = "image",
    sample_rate: int = 16000,
    quantize: bool = True,
    value_range: tuple[float, float] | None = (0.0, 1.0),
    jump: int = DEFAULT_JUMP,
    min_size: int = DEFAULT_MIN_SIZE,
    meta: dict[str, Any] | None = None,
    on_status: Callable[[int, str], None] | None = None,
    stacklevel: int = 1,
) -> SearchResult:
    """The search over recorded runs (a list of trajectories, or lazy :class:`~etcdiff.calibration.runs.Runs`):
    the curves of each run, their averages, r and tau. ``on_status(k, phase)`` hears when run k starts its
    ``"sampling"`` and its ``"perturbation test"``; ``stacklevel`` places the shape warning in the caller."""
    _check_modality(modality)
    if not callable(decode):
        raise ValueError("decode must be a callable: decode(latents) -> images [B, C, H, W] in [0, 1] "
                         "(video [B, C, F, H, W]; audio: a waveform [B, samples]).")
    t0 = time.perf_counter()
    status = on_status or (lambda _k, _phase: None)
    d_all: list[np.ndarray] = []
    s_all: list[np.ndarray] = []
    status(0, "sampling")
    for k, traj in enumerate(runs):
        status(k, "perturbation test")
        d, s = trajectory_curves(traj, decode, seed=seed, modality=modality, sample_rate=sample_rate,
                                 quantize=quantize, value_range=value_range)
        d_all.append(d)
        s_all.append(s)
        status(k + 1, "sampling")
    if not d_all:
        raise ValueError("no calibration runs: give at least one (the paper uses about 10).")
    meta = {**(meta or {}), "modality": modality, "seed": seed, "quantize": quantize, "value_range": value_range}
    return _average(d_all, s_all, jump, min_size, t0, meta, stacklevel=stacklevel + 1)


def etc_fit(trajectories: Sequence[Any], decode: Decode | None = None, *, warmup: int = 6, alpha: float = 0.5,
            seed: int = 42, **search: Any) -> dict[str, Any]:
    """ETC's tolerance search over recorded runs: tau at the change point of the perturbation-SSIM curve."""
    result = search_trajectories(trajectories, decode or (lambda x: x), seed=seed, stacklevel=3, **search)
    return {"threshold": float(result.tau), "warmup": warmup, "alpha": alpha}


def _search_runs(runs: Runs, steps: int, decode: Decode, progress: bool, **kwargs: Any) -> SearchResult:
    """:func:`search_trajectories` over ``runs`` with one progress bar of sampled steps."""
    n = len(runs)
    with tqdm(total=n * steps, desc="calibrate", unit="step", disable=not progress, dynamic_ncols=True) as bar:

        def status(k: int, phase: str) -> None:
            if k < n:
                bar.set_postfix_str(f"prompt {k + 1}/{n}: {phase}")

        # stacklevel 3: the shape warning names the caller of calibrate_* (< _search_runs < here)
        return search_trajectories(runs.iter(on_step=lambda _s: bar.update(1)), decode, on_status=status,
                                   stacklevel=3, **kwargs)


def _scheduler_info(scheduler: Any) -> tuple[str, dict[str, Any]]:
    config = getattr(scheduler, "config", None)
    cfg = {k: v for k, v in dict(config).items() if not str(k).startswith("_")} if config is not None else {}
    return type(scheduler).__name__, cfg


def _profile(result: SearchResult, *, identity: str, model_class: str, scheduler: Any, warmup: int, alpha: float,
             prompts: Sequence[str], settings: dict[str, Any]) -> Profile:
    sch_class, sch_config = _scheduler_info(scheduler)
    return Profile(
        identity=identity,
        model_class=model_class,
        steps=int(result.meta["steps"]),
        scheduler_class=sch_class,
        scheduler_config=jsonable(sch_config),
        tau=result.tau,
        warmup=warmup,
        alpha=float(alpha),
        d_bar=result.d_bar.tolist(),
        s_bar=result.s_bar.tolist(),
        change_point=result.r,
        prompts=[str(p) for p in prompts],
        seed=int(result.meta["seed"]),
        modality=result.meta["modality"],
        decoder=str(result.meta.get("decoder", "")),
        detector={"method": DETECTOR, "n_bkps": 1, "jump": result.jump, "min_size": result.min_size,
                  "breakpoint": result.r + 1, "rule": "r = breakpoint - 1 (last index of the volatile segment); tau = d_bar[r]",
                  "s_mean_before": result.meta["s_mean_before"], "s_mean_after": result.meta["s_mean_after"]},
        settings=jsonable(settings),
        versions=package_versions(),
        created=now_iso(),
        seconds=round(result.seconds, 3),
    )


def _check_etc_params(warmup: int, alpha: float, steps: int, jump: int, min_size: int) -> None:
    check_steps(steps, jump, min_size)  # the step count first: it is the likelier mistake
    ETC(threshold=0.0, warmup=warmup, alpha=alpha)  # raises ValueError on bad values
    if isinstance(steps, int) and warmup >= steps:
        raise ValueError(f"warmup ({warmup}) must be smaller than the number of steps ({steps}).")


def calibrate_pipeline(
    pipe: Any,
    prompts: Sequence[str] | None = None,
    steps: int = 50,
    seed: int = 42,
    *,
    warmup: int = 6,
    alpha: float = 0.5,
    guidance_scale: float | None = None,
    decode: Decode | None = None,
    modality: str | None = None,
    pipe_kwargs: dict[str, Any] | None = None,
    identity: str | None = None,
    sample_rate: int = 16000,
    quantize: bool = True,
    value_range: tuple[float, float] | None = (0.0, 1.0),
    jump: int = DEFAULT_JUMP,
    min_size: int = DEFAULT_MIN_SIZE,
    progress: bool = True,
) -> Profile:
    """Search the ETC tolerance of a diffusers pipeline; returns a :class:`~etcdiff.calibration.Profile`.

    Every prompt runs once at ``steps`` steps with the generator seeded by ``seed`` (plus ``guidance_scale``
    and ``pipe_kwargs``, e.g. ``height``/``width``, when given); the pipeline is not modified. ``prompts``
    default to the demo's ten classes for the demo, else to the shipped prompts of the ``modality`` (guessed
    from the pipeline). Decoding goes through ``pipe.decode`` or the pipeline's VAE (see
    :mod:`etcdiff.calibration.decode`) unless ``decode`` is given: ``decode(latents)`` must return images
    ``[B, C, H, W]`` (video ``[B, C, F, H, W]``) in ``value_range`` or, for audio, waveforms at ``sample_rate``.
    SSIM is computed on 8-bit images when ``quantize`` (what users see); ``value_range=None`` takes the
    original's own range without clamping. ``jump``/``min_size`` are ruptures' BottomUp grid (defaults:
    ruptures' own, the reference). ``warmup`` and ``alpha`` are recorded in the profile for ETC.
    """
    _check_etc_params(warmup, alpha, steps, jump, min_size)
    extra = dict(pipe_kwargs or {})
    if decode is None:
        dec = pipeline_decoder(pipe, modality, height=extra.get("height"), width=extra.get("width"))
        decode, modality, decoder_name = dec.decode, dec.modality, dec.description
    else:
        decoder_name, modality = _name(decode), modality or "image"
    _check_modality(modality)
    runs = pipeline_runs(pipe, prompts_for(pipe, modality) if prompts is None else list(prompts), steps, seed,
                         guidance_scale, pipe_kwargs=extra)
    meta = {"decoder": decoder_name, "prompts": runs.labels, "steps": steps, "guidance_scale": guidance_scale,
            "pipe_kwargs": {k: v for k, v in extra.items() if k != "output_type"}}
    with quiet_progress(pipe):
        result = _search_runs(runs, steps, decode, progress, seed=seed, modality=modality, sample_rate=sample_rate,
                              quantize=quantize, value_range=value_range, jump=jump, min_size=min_size, meta=meta)
    settings = {k: result.meta[k] for k in ("guidance_scale", "pipe_kwargs", "quantize", "value_range")}
    if result.meta["modality"] == "audio":
        settings["sample_rate"] = sample_rate
    return _profile(
        result, identity=normalize_identity(identity) if identity else profile_identity(pipe),
        model_class=type(pipe).__name__, scheduler=pipe.scheduler, warmup=warmup, alpha=alpha,
        prompts=result.meta["prompts"], settings=settings,
    )


def calibrate_denoiser(
    model: Callable[..., torch.Tensor],
    scheduler: Any,
    latents: torch.Tensor | Sequence[torch.Tensor],
    steps: int,
    decode: Decode,
    *,
    model_kwargs_list: Sequence[dict[str, Any]] | None = None,
    prompts: Sequence[str] | None = None,
    seed: int = 42,
    warmup: int = 6,
    alpha: float = 0.5,
    modality: str = "image",
    identity: str | None = None,
    sample_rate: int = 16000,
    quantize: bool = True,
    value_range: tuple[float, float] | None = (0.0, 1.0),
    jump: int = DEFAULT_JUMP,
    min_size: int = DEFAULT_MIN_SIZE,
    progress: bool = False,
) -> Profile:
    """Search the ETC tolerance of a denoiser outside diffusers; returns a :class:`~etcdiff.calibration.Profile`.

    ``model(x, t, **model_kwargs_list[k])`` returns the tensor ``scheduler.step`` consumes (guidance applied
    inside), as for :func:`etcdiff.sample`, which runs the sampling. ``latents``: the initial noise of every
    calibration prompt, a tensor ``[P, ...]`` (one batch-1 run per row) or a list of tensors (one run each).
    ``prompts`` only label the runs in the profile. ``seed`` seeds the perturbation noise. ``decode`` and the
    similarity options are as for :func:`calibrate_pipeline`.
    """
    _check_etc_params(warmup, alpha, steps, jump, min_size)
    runs = denoiser_runs(model, scheduler, latents, steps, model_kwargs_list)
    meta = {"decoder": _name(decode), "prompts": runs.labels, "steps": steps}
    result = _search_runs(runs, steps, decode, progress, seed=seed, modality=modality, sample_rate=sample_rate,
                          quantize=quantize, value_range=value_range, jump=jump, min_size=min_size, meta=meta)
    names = list(prompts) if prompts is not None else result.meta["prompts"]
    if len(names) != len(result.d):
        raise ValueError(f"{len(names)} prompt labels for {len(result.d)} runs; give one per initial latent.")
    model_class = type(model).__name__ if not isinstance(model, type(lambda: 0)) else getattr(model, "__qualname__", "function")
    settings = {"quantize": quantize, "value_range": value_range}
    if modality == "audio":
        settings["sample_rate"] = sample_rate
    return _profile(
        result, identity=normalize_identity(identity) if identity else model_class, model_class=model_class,
        scheduler=scheduler, warmup=warmup, alpha=alpha, prompts=names, settings=settings,
    )
