"""Recording a full sampling trajectory of a diffusers pipeline (for calibration and offline profiling)."""

from __future__ import annotations

from typing import Any, Callable

import torch

from ..policies.trajectory import Trajectory
from .step_tracker import StepTracker

__all__ = ["Trajectory", "call_kwargs", "record_pipeline"]


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


def call_kwargs(pipe: Any, prompt: str, steps: int, seed: int, guidance_scale: float | None = None) -> dict[str, Any]:
    """Keyword arguments for one deterministic call of ``pipe`` on ``prompt``."""
    device = getattr(pipe, "device", torch.device("cpu"))
    kwargs: dict[str, Any] = {
        "prompt": prompt,
        "num_inference_steps": steps,
        "generator": torch.Generator(device="cpu" if getattr(device, "type", "cpu") == "mps" else device).manual_seed(seed),
    }
    if guidance_scale is not None:
        kwargs["guidance_scale"] = guidance_scale
    return kwargs
