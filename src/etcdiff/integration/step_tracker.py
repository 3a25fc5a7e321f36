"""Knowing where a diffusers pipeline's denoising loop is, without copying any pipeline code.

Every diffusers pipeline calls ``scheduler.set_timesteps(...)`` once before its denoising loop and
``scheduler.step(model_output, t, sample)`` once per entry of ``scheduler.timesteps``. A
:class:`StepTracker` wraps these two methods (and ``set_begin_index``, which img2img pipelines use to start
part-way) on the pipeline's scheduler *instance*; the class and its code are untouched, and ``unwrap``
removes the wrappers.

* ``set_timesteps`` opens a generation: the step count N is ``len(scheduler.timesteps)`` less the begin
  index, and the listener drops every piece of state from an earlier call, including one that raised halfway.
* The step index is the number of ``scheduler.step`` calls since then; every denoiser call between two of
  them belongs to the same step. ``scheduler.step`` hands over the tensor the scheduler consumes (after
  classifier-free guidance is combined: ETC's eps_t) before the scheduler runs.

The step policies use :class:`~etcdiff.integration.step.loop_tracker.LoopTracker`, a subclass that counts denoiser
rounds instead, for the loops that call ``scheduler.step`` more than once per step or stop early.
"""

from __future__ import annotations

import functools
from typing import Any, Protocol

import torch

_METHODS = ("set_timesteps", "step", "set_begin_index")


class StepListener(Protocol):
    def begin(self, num_steps: int) -> None: ...

    def end_step(self, step: int, model_output: Any) -> None: ...


class StepTracker:
    """Follows one scheduler instance; tells a listener when a generation starts and when each step ends."""

    def __init__(self, listener: StepListener) -> None:
        self.listener = listener
        self.scheduler: Any = None
        self.reset(0)

    def reset(self, num_steps: int) -> None:
        self.num_steps = num_steps
        self.step_index = 0
        self.active = num_steps > 0
        # x_t of the current step (None before the first scheduler step); the final latents once it is over
        self.latents: torch.Tensor | None = None

    def wrap(self, scheduler: Any) -> None:
        for name in ("set_timesteps", "step"):
            if not callable(getattr(scheduler, name, None)):
                raise TypeError(
                    f"etcdiff: the pipeline's scheduler ({type(scheduler).__name__}) has no `{name}` method; "
                    "a diffusers scheduler is needed to know where the denoising loop is."
                )
        if any(name in vars(scheduler) for name in _METHODS):
            raise RuntimeError(
                "etcdiff: this scheduler instance is already wrapped (is it shared with another pipeline that has "
                "etcdiff enabled?). Give each pipeline its own scheduler, or disable the other one first."
            )
        orig = {name: getattr(scheduler, name) for name in _METHODS if hasattr(scheduler, name)}

        @functools.wraps(orig["set_timesteps"])  # pipelines inspect the signature (sigmas=, eta=, generator=)
        def set_timesteps(*args: Any, **kwargs: Any) -> Any:
            result = orig["set_timesteps"](*args, **kwargs)
            self._on_set_timesteps(scheduler)
            return result

        @functools.wraps(orig["step"])
        def step(model_output: Any, timestep: Any, sample: Any, *args: Any, **kwargs: Any) -> Any:
            tracking = self._before_step(model_output, sample)
            result = orig["step"](model_output, timestep, sample, *args, **kwargs)
            if tracking:
                self._after_step(result)
            return result

        def set_begin_index(begin_index: int = 0) -> Any:
            result = orig["set_begin_index"](begin_index)
            self._on_set_begin_index(scheduler, begin_index)
            return result

        scheduler.set_timesteps = set_timesteps
        scheduler.step = step
        if "set_begin_index" in orig:
            scheduler.set_begin_index = functools.update_wrapper(set_begin_index, orig["set_begin_index"])
        self.scheduler = scheduler

    def unwrap(self) -> None:
        if self.scheduler is not None:
            for name in _METHODS:
                vars(self.scheduler).pop(name, None)
            self.scheduler = None

    def follow_replacement(self, pipe: Any) -> None:
        """Follow ``pipe.scheduler`` if the user replaced the tracked one after set-up (see :meth:`follow`)."""
        current = getattr(pipe, "scheduler", None) if pipe is not None else None
        if current is not None and current is not self.scheduler:
            self.follow(current)

    def follow(self, scheduler: Any) -> None:
        """Switch to a scheduler that replaced the tracked one after set-up (``pipe.scheduler = ...``).

        Its ``set_timesteps`` already ran, so the generation starts from its current timesteps.
        """
        self.unwrap()
        self.wrap(scheduler)
        timesteps = getattr(scheduler, "timesteps", None)
        if timesteps is None:
            raise RuntimeError(
                "etcdiff: pipe.scheduler was replaced and has no timesteps yet; call etcdiff.enable(pipe, ...) "
                "again after setting the scheduler."
            )
        self._begin(len(timesteps) - (getattr(scheduler, "begin_index", None) or 0))

    # -- scheduler events (subclasses count steps differently) -------------------------------------------------
    def _on_set_timesteps(self, scheduler: Any) -> None:
        self._begin(len(scheduler.timesteps))

    def _on_set_begin_index(self, scheduler: Any, begin_index: int) -> None:
        if self.active and self.step_index == 0:
            self._begin(len(scheduler.timesteps) - int(begin_index))

    def _before_step(self, model_output: Any, sample: Any) -> bool:
        """Called before ``scheduler.step`` runs; returns whether :meth:`_after_step` wants its result."""
        if not self.active:
            return False
        self.latents = sample if isinstance(sample, torch.Tensor) else None
        self._end_step(model_output)
        return True

    def _after_step(self, result: Any) -> None:
        """x_{t+1}: the next step's input, or the final latents after the last step."""
        prev = result[0] if isinstance(result, tuple) else getattr(result, "prev_sample", None)
        self.latents = prev if isinstance(prev, torch.Tensor) else None

    @torch.compiler.disable
    def _begin(self, num_steps: int) -> None:
        self.reset(num_steps)
        if num_steps > 0:
            try:
                self.listener.begin(num_steps)
            except Exception:
                self.active = False
                raise

    @torch.compiler.disable
    def _end_step(self, model_output: Any) -> None:
        step = self.step_index
        self.step_index += 1
        if self.step_index >= self.num_steps:
            self.active = False
        self.listener.end_step(step, model_output)
