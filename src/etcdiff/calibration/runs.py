"""Full-step calibration runs, recorded as :class:`~etcdiff.integration.step.recording.Trajectory` objects.

One trajectory per calibration input (a prompt for a diffusers pipeline, an initial latent for a bare
denoiser), with the same fields whatever the source: ``outputs`` (eps_t as the scheduler consumed it),
``inputs`` (x_t), ``final``, ``timesteps`` and ``sigmas``. The tolerance search and the fits of other
calibrated methods (ERTACache, ...) read the same recorded runs.

:func:`pipeline_runs` / :func:`denoiser_runs` check their arguments at once and return :class:`Runs`, which
record lazily, one run per iteration step (a search keeps only the curves of each run);
:func:`record_pipeline_runs` / :func:`record_denoiser_runs` record them all into a list.
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Any, Callable, Iterator, Sequence

import torch

from ..integration.step.recording import Trajectory, call_kwargs, fresh_copy, record_pipeline
from ..integration.step.sampler import sample
from ..policies.step.baselines import NoCache
from ..policies.scheduler_family import scheduler_signature

OnStep = Callable[[int], None]


class RecordingPolicy(NoCache):
    """Runs the model on every step and keeps each x_t and each output the sampler consumed (for
    :func:`etcdiff.sample`)."""

    name = "record"

    def __init__(self, on_step: OnStep | None = None) -> None:
        super().__init__()
        self.outputs: list[torch.Tensor] = []
        self.inputs: list[torch.Tensor] = []
        self.input_dtype: torch.dtype | None = None  # the run's own x_t and eps_t dtypes (both stored in float32)
        self.output_dtype: torch.dtype | None = None
        self.on_step = on_step

    def reset_state(self) -> None:
        self.outputs = []
        self.inputs = []
        self.input_dtype = self.output_dtype = None

    def should_compute(self, step: int, latents: torch.Tensor | None = None) -> bool:
        if latents is not None:
            self.input_dtype = latents.dtype
            self.inputs.append(latents.detach().float().cpu().clone())
        return super().should_compute(step, latents)

    def observe(self, step: int, output: torch.Tensor, computed: bool) -> None:
        super().observe(step, output, computed)
        self.output_dtype = output.dtype
        self.outputs.append(output.detach().float().cpu().clone())
        if self.on_step is not None:
            self.on_step(step)


class Runs:
    """Calibration runs named by ``labels`` (``len`` counts them), recorded one at a time as they are iterated;
    :meth:`iter` also calls ``on_step(step)`` as each step is recorded (for progress)."""

    def __init__(self, labels: Sequence[str], record: Callable[[int, OnStep | None], Trajectory]) -> None:
        self.labels = [str(x) for x in labels]
        self._record = record

    def __len__(self) -> int:
        return len(self.labels)

    def __iter__(self) -> Iterator[Trajectory]:
        return self.iter()

    def iter(self, on_step: OnStep | None = None) -> Iterator[Trajectory]:
        return (self._record(k, on_step) for k in range(len(self.labels)))


def accepts_argument(pipe: Any, name: str) -> bool:
    try:
        params = inspect.signature(pipe.__call__).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


Seeds = int | Sequence[int]  # one seed for every calibration prompt, or one per prompt


def prompt_seed(seed: Seeds, k: int) -> int:
    """The seed of calibration prompt ``k``: ``seed`` itself, or its ``k``-th entry when it lists one per prompt."""
    return int(seed) if isinstance(seed, int) else int(seed[k])


def pipeline_runs(pipe: Any, prompts: Sequence[str], steps: int, seed: Seeds, guidance_scale: float | None = None, *,
                  pipe_kwargs: dict[str, Any] | None = None) -> Runs:
    """One full ``steps``-step run of ``pipe`` per prompt, with the generator seeded by ``seed`` (one per prompt where
    it is a list; plus
    ``guidance_scale`` and ``pipe_kwargs`` when given; latents out where the pipeline takes ``output_type``)."""
    prompts = list(prompts)
    if not prompts:
        raise ValueError("no calibration prompts: give at least one (the paper uses about 10).")
    extra = dict(pipe_kwargs or {})
    if "output_type" not in extra and accepts_argument(pipe, "output_type"):
        extra["output_type"] = "latent"

    def record(k: int, on_step: OnStep | None) -> Trajectory:
        kwargs = {**call_kwargs(pipe, prompts[k], steps, prompt_seed(seed, k), guidance_scale), **extra}
        traj, _ = record_pipeline(pipe, on_step=on_step, **kwargs)
        if traj.final is None:
            raise RuntimeError(f"etcdiff: no final latents were recorded for prompt {prompts[k]!r}.")
        return traj

    return Runs(prompts, record)


def denoiser_runs(model: Callable[..., torch.Tensor], scheduler: Any, latents: torch.Tensor | Sequence[torch.Tensor],
                  steps: int, model_kwargs_list: Sequence[dict[str, Any]] | None = None) -> Runs:
    """One full ``steps``-step run of :func:`etcdiff.sample` per initial latent: a tensor ``[P, ...]`` gives P
    runs of batch 1, a list one run per entry; run k calls ``model(x, t, **model_kwargs_list[k])``."""
    starts = [x.unsqueeze(0) for x in latents.unbind(0)] if isinstance(latents, torch.Tensor) else list(latents)
    kwargs_list = list(model_kwargs_list) if model_kwargs_list is not None else [{} for _ in starts]
    if len(kwargs_list) != len(starts):
        raise ValueError(f"model_kwargs_list has {len(kwargs_list)} entries for {len(starts)} initial latents; "
                         "give one dict per prompt.")
    if not starts:
        raise ValueError("no calibration prompts: give at least one initial latent (the paper uses about 10).")

    def record(k: int, on_step: OnStep | None) -> Trajectory:
        policy = RecordingPolicy(on_step)
        final = sample(model, scheduler, starts[k], steps, policy, **kwargs_list[k])
        sigmas = getattr(scheduler, "sigmas", None)
        return Trajectory(
            outputs=policy.outputs, inputs=policy.inputs, final=final.detach().float().cpu().clone(),
            timesteps=torch.as_tensor(scheduler.timesteps).detach().cpu().clone(),
            sigmas=torch.as_tensor(sigmas).detach().cpu().clone() if sigmas is not None else None,
            scheduler=scheduler_signature(scheduler), solver=_solver(scheduler, steps),
            input_dtype=policy.input_dtype, output_dtype=policy.output_dtype,
        )

    return Runs([f"latents[{i}]" for i in range(len(starts))], record)


def _solver(scheduler: Any, steps: int) -> Any:
    """A fresh copy of ``scheduler`` with the timesteps :func:`etcdiff.sample` sets, for replays."""
    copied = fresh_copy(scheduler)
    if copied is not None:
        copied.set_timesteps(steps, device=getattr(scheduler.timesteps, "device", None))
    return copied


def record_pipeline_runs(pipe: Any, prompts: Sequence[str], steps: int, seed: Seeds,
                         guidance_scale: float | None = None, on_step: OnStep | None = None, *,
                         pipe_kwargs: dict[str, Any] | None = None) -> list[Trajectory]:
    """The trajectories of :func:`pipeline_runs`, all recorded."""
    return list(pipeline_runs(pipe, prompts, steps, seed, guidance_scale, pipe_kwargs=pipe_kwargs).iter(on_step))


def record_denoiser_runs(model: Callable[..., torch.Tensor], scheduler: Any,
                         latents: torch.Tensor | Sequence[torch.Tensor], steps: int,
                         model_kwargs_list: Sequence[dict[str, Any]] | None = None,
                         on_step: OnStep | None = None) -> list[Trajectory]:
    """The trajectories of :func:`denoiser_runs`, all recorded."""
    return list(denoiser_runs(model, scheduler, latents, steps, model_kwargs_list).iter(on_step))


@contextlib.contextmanager
def quiet_progress(pipe: Any) -> Iterator[None]:
    """Silence a diffusers pipeline's own progress bar for a while (a caller that shows one bar of its own)."""
    if not hasattr(pipe, "set_progress_bar_config"):
        yield
        return
    had = "_progress_bar_config" in vars(pipe)
    saved = dict(pipe._progress_bar_config) if had else None
    pipe.set_progress_bar_config(**{**(saved or {}), "disable": True})
    try:
        yield
    finally:
        if had:
            pipe._progress_bar_config = saved
        else:
            vars(pipe).pop("_progress_bar_config", None)
