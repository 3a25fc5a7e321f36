"""Recording a full sampling trajectory of a diffusers pipeline (for calibration and offline profiling)."""

from __future__ import annotations

import copy
from typing import Any, Callable

import torch

from ...policies.scheduler_family import scheduler_signature
from ...policies.trajectory import Trajectory
from .loop_tracker import LoopTracker
from ..step_tracker import StepTracker

__all__ = ["Trajectory", "call_kwargs", "fresh_copy", "record_pipeline"]


def fresh_copy(scheduler: Any) -> Any:
    """A copy of ``scheduler`` as it stands (timesteps set, no step taken yet), without etcdiff's wrappers: the
    copy's ``step`` is the class's own. ``None`` where the scheduler cannot be copied."""
    try:
        copied = copy.deepcopy(scheduler)
    except Exception:  # noqa: BLE001 - a scheduler holding something uncopyable: no replays for this run
        return None
    for name in [k for k, v in vars(copied).items() if callable(v) and hasattr(type(copied), k)]:
        del vars(copied)[name]  # an instance-level wrapper (the trackers' step, set_timesteps, ...)
    return copied


class _Recorder:
    """Listens to a :class:`LoopTracker` (steps by denoiser rounds, as the step policies count them) or, for a
    pipeline without a denoiser etcdiff knows, to a :class:`StepTracker` (one step per ``scheduler.step``)."""

    in_call = True  # the pipeline call around the loop ends the last step (record_pipeline calls finish)

    def __init__(self, on_step: Callable[[int], None] | None, by_rounds: bool) -> None:
        self.tracker = LoopTracker(self) if by_rounds else StepTracker(self)
        self.trajectory = Trajectory()
        self.on_step = on_step

    def begin(self, num_steps: int) -> None:
        self.trajectory = Trajectory()
        sch = self.tracker.scheduler
        self.trajectory.timesteps = torch.as_tensor(sch.timesteps).detach().cpu().clone()
        sigmas = getattr(sch, "sigmas", None)
        self.trajectory.sigmas = torch.as_tensor(sigmas).detach().cpu().clone() if sigmas is not None else None
        self.trajectory.scheduler = scheduler_signature(sch)
        self.trajectory.solver = fresh_copy(sch)

    def end_step(self, step: int, model_output: Any) -> None:
        tracker = self.tracker
        x_t = tracker.current_input() if isinstance(tracker, LoopTracker) else tracker.latents
        if not isinstance(model_output, torch.Tensor) or x_t is None:
            raise TypeError("etcdiff: cannot record this pipeline: scheduler.step did not receive tensors.")
        self.trajectory.input_dtype, self.trajectory.output_dtype = x_t.dtype, model_output.dtype
        self.trajectory.outputs.append(model_output.detach().float().cpu().clone())
        self.trajectory.inputs.append(x_t.detach().float().cpu().clone())
        if self.on_step is not None:
            self.on_step(step)

    def finish(self, steps_done: int) -> None:
        pass


@torch.no_grad()
def record_pipeline(pipe: Any, on_step: Callable[[int], None] | None = None, **call_kwargs: Any) -> tuple[Trajectory, Any]:
    """Run ``pipe(**call_kwargs)`` once at full steps and return its trajectory and the pipeline's result;
    ``on_step(step)`` is called as each step is recorded (for progress).

    Steps are counted as the step policies count them (:mod:`etcdiff.integration.step.loop_tracker`: one per
    round of denoiser calls, so Heun's two evaluations or Cosmos' two ``scheduler.step`` calls make one step,
    and a loop that stops early records the steps it ran). Nothing of the pipeline is modified: the scheduler
    wrappers and the plain torch pre-hooks on the denoisers are gone when this returns (also on error).
    """
    from .hook import hooked_modules

    scheduler = getattr(pipe, "scheduler", None)
    if scheduler is None:
        raise TypeError(f"etcdiff: {type(pipe).__name__} has no `scheduler`; a diffusers pipeline is expected.")
    try:
        modules = hooked_modules(pipe)
    except TypeError:
        modules = {}
    rec = _Recorder(on_step, by_rounds=bool(modules))
    rec.tracker.wrap(scheduler)

    def on_call(module: torch.nn.Module, args: Any) -> None:  # returns None: the call's arguments stay as they are
        rec.tracker.round()

    handles = [m.register_forward_pre_hook(on_call) for m in modules.values()]
    try:
        result = pipe(**call_kwargs)
        if isinstance(rec.tracker, LoopTracker):
            rec.tracker.finish()
    finally:
        for handle in handles:
            handle.remove()
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
