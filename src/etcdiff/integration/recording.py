"""Recording full sampling trajectories, of a diffusers pipeline or of a bare denoiser (for calibration and
offline profiling)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..policies.base import StepPolicy
from .step_tracker import StepTracker


@dataclass
class Trajectory:
    """One full-step run: ``outputs[t]`` is eps_t as the scheduler consumed it (after CFG), ``inputs[t]`` is
    x_t, ``final`` the clean latents after the last step; ``timesteps``/``sigmas`` are the scheduler's."""

    outputs: list[torch.Tensor] = field(default_factory=list)
    inputs: list[torch.Tensor] = field(default_factory=list)
    final: torch.Tensor | None = None
    timesteps: torch.Tensor | None = None
    sigmas: torch.Tensor | None = None

    @property
    def num_steps(self) -> int:
        return len(self.outputs)


class _Recorder:
    def __init__(self, on_step: Callable[[int], None] | None = None) -> None:
        self.tracker = StepTracker(self)
        self.trajectory = Trajectory()
        self.on_step = on_step

    def begin(self, num_steps: int) -> None:
        self.trajectory = Trajectory()
        sch = self.tracker.scheduler
        self.trajectory.timesteps = torch.as_tensor(sch.timesteps).detach().cpu().clone()
        sigmas = getattr(sch, "sigmas", None)
        self.trajectory.sigmas = torch.as_tensor(sigmas).detach().cpu().clone() if sigmas is not None else None

    def end_step(self, step: int, model_output: Any) -> None:
        if not isinstance(model_output, torch.Tensor) or self.tracker.latents is None:
            raise TypeError("etcdiff: cannot record this pipeline: scheduler.step did not receive tensors.")
        self.trajectory.outputs.append(model_output.detach().float().cpu().clone())
        self.trajectory.inputs.append(self.tracker.latents.detach().float().cpu().clone())
        if self.on_step is not None:
            self.on_step(step)


@torch.no_grad()
def record_pipeline(pipe: Any, on_step: Callable[[int], None] | None = None, **call_kwargs: Any) -> tuple[Trajectory, Any]:
    """Run ``pipe(**call_kwargs)`` once at full steps and return its trajectory and the pipeline's result;
    ``on_step(step)`` is called as each step is recorded (for progress).

    The scheduler is followed through :class:`~etcdiff.integration.step_tracker.StepTracker`; nothing of the
    pipeline is modified, and the wrappers are gone when this returns (also on error).
    """
    scheduler = getattr(pipe, "scheduler", None)
    if scheduler is None:
        raise TypeError(f"etcdiff: {type(pipe).__name__} has no `scheduler`; a diffusers pipeline is expected.")
    rec = _Recorder(on_step)
    rec.tracker.wrap(scheduler)
    try:
        result = pipe(**call_kwargs)
    finally:
        rec.tracker.unwrap()
    traj = rec.trajectory
    if traj.num_steps == 0:
        raise RuntimeError(f"etcdiff: {type(pipe).__name__} ran no scheduler step; nothing was recorded.")
    traj.final = rec.tracker.latents.detach().float().cpu().clone() if rec.tracker.latents is not None else None
    return traj, result


class _RecordAll(StepPolicy):
    """Runs the model on every step and keeps what the sampler fed it and consumed."""

    name = "record"

    def reset_state(self) -> None:
        self.trajectory = Trajectory()

    def should_compute(self, step: int, latents: torch.Tensor | None = None) -> bool:
        self.trajectory.inputs.append(latents.detach().float().cpu().clone())
        return True

    def observe(self, step: int, output: torch.Tensor, computed: bool) -> None:
        self._log(step, computed)
        self.trajectory.outputs.append(output.detach().float().cpu().clone())


@torch.no_grad()
def record_denoiser(model: Callable[..., torch.Tensor], scheduler: Any, latents: torch.Tensor,
                    num_inference_steps: int, **model_kwargs: Any) -> list[Trajectory]:
    """Full-step trajectories of a bare denoiser, one per row of ``latents`` (N, ...), each sampled on its own
    with :func:`etcdiff.sample` (``model(x, t, **model_kwargs)`` returns what the scheduler consumes)."""
    from .sampler import sample

    if not isinstance(latents, torch.Tensor) or latents.dim() < 2:
        raise TypeError("record_denoiser: latents must be a tensor (N, ...) of calibration noises, one per run.")
    out = []
    for n in range(latents.shape[0]):
        rec = _RecordAll()
        final = sample(model, scheduler, latents[n : n + 1], num_inference_steps, rec, **model_kwargs)
        traj = rec.trajectory
        traj.final = final.detach().float().cpu().clone()
        traj.timesteps = torch.as_tensor(scheduler.timesteps).detach().cpu().clone()
        sigmas = getattr(scheduler, "sigmas", None)
        traj.sigmas = torch.as_tensor(sigmas).detach().cpu().clone() if sigmas is not None else None
        out.append(traj)
    return out
