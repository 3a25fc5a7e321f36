"""Which step of the user's denoising loop a denoiser call belongs to, on every loop shape diffusers has.

:class:`~etcdiff.integration.step_tracker.StepTracker` counts one step per ``scheduler.step`` call. That is
wrong for loops that call ``scheduler.step`` more than once per step (Cosmos 1.0 asks for x0 first, then
steps), for multi-evaluation schedulers (Heun, KDPM2: two denoiser rounds per step), and it cannot know that a
loop stopped early (SDXL's ``denoising_end``, a ``pipe._interrupt``, an exception). :class:`LoopTracker`
counts *denoiser rounds* instead:

* ``set_timesteps`` opens a pass (a generation, or one pass of a multi-pass loop such as FreeInit);
* a step starts with the first denoiser call after a ``scheduler.step`` (or the first of the pass), and all
  calls before the next ``scheduler.step`` belong to it: CFG branches, a ControlNet, both ``scheduler.step``
  calls of Cosmos. A round that a multi-evaluation scheduler needs to finish its current step (its
  ``state_in_first_order`` is false: Heun's and KDPM2's second evaluation) stays in that step;
* the tensor that ends a step is the model output of its last ``scheduler.step`` call (after guidance);
* the step count N is only fixed at the first round, once the pipeline has set everything up: the
  scheduler's timesteps less its begin index (img2img), counted in pairs for multi-evaluation schedulers, and
  capped by the ``total`` of the pipeline's progress bar where a loop covers fewer timesteps than the
  scheduler holds (``denoising_end``, img2img on schedulers without a begin index);
* the owner calls :meth:`finish` when the pipeline call returns or raises; outside a pipeline call (a loop
  written by hand) the pass ends after the N-th step's ``scheduler.step``.
"""

from __future__ import annotations

import warnings
from typing import Any, Protocol

import torch

from ..step_tracker import StepTracker


class LoopListener(Protocol):
    in_call: bool

    def begin(self, num_steps: int) -> None: ...

    def end_step(self, step: int, model_output: Any) -> None: ...

    def finish(self, steps_done: int) -> None: ...


def is_multi_evaluation(scheduler: Any) -> bool:
    """Heun-style schedulers, which evaluate the model twice per step and expose ``state_in_first_order``."""
    return hasattr(type(scheduler), "state_in_first_order")


class LoopTracker(StepTracker):
    """Counts the steps of a denoising loop by denoiser rounds (see the module docstring)."""

    def reset(self, num_steps: int) -> None:
        super().reset(num_steps)
        self.step_index = -1  # no round yet
        self.begun = False
        self.stepped = False  # a scheduler.step ran since the current round began
        self.pending: Any = None  # the model output of the current step's last scheduler.step
        self.step_input: torch.Tensor | None = None  # x_t at the start of the current step (None at step 0)
        self.step_samples: list[Any] = []  # the `sample` of each scheduler.step call of the current step
        self.progress_total: int | None = None
        self.warned_prk = getattr(self, "warned_prk", False)

    # -- scheduler side ------------------------------------------------------------------------------------
    def _on_set_timesteps(self, scheduler: Any) -> None:
        self.finish()  # a new pass: the previous one (if any) is over
        self.reset(0)
        self.active = True

    def _on_set_begin_index(self, scheduler: Any, begin_index: int) -> None:
        pass  # read when the first round fixes N

    def _before_step(self, model_output: Any, sample: Any) -> bool:
        if not self.active:
            return False
        if not self.begun:
            self.round()  # a loop that reached scheduler.step without a denoiser call through us
            if not self.active:
                return False
        self.stepped = True
        self.pending = model_output
        self.step_samples.append(sample)
        return True

    def _after_step(self, result: Any) -> None:
        super()._after_step(result)
        if not self.listener.in_call and self.step_index >= self.num_steps - 1:
            self.finish()  # a hand-written loop: nothing else tells us it is over

    def switch(self, scheduler: Any) -> None:
        """Follow a scheduler that replaced the tracked one before a pipeline call (its set_timesteps opens the pass)."""
        self.finish()
        self.unwrap()
        self.wrap(scheduler)
        self.reset(0)

    def follow(self, scheduler: Any) -> None:
        """Follow a scheduler that replaced the tracked one in a loop written by hand: its set_timesteps already
        ran, so a pass is open from its current timesteps."""
        self.switch(scheduler)
        if getattr(scheduler, "timesteps", None) is None:
            raise RuntimeError(
                "etcdiff: pipe.scheduler was replaced and has no timesteps yet; call etcdiff.enable(pipe, ...) "
                "again after setting the scheduler."
            )
        self.active = True

    # -- pipeline side -------------------------------------------------------------------------------------
    def progress(self, total: Any) -> None:
        """The pipeline opened a progress bar of ``total`` steps (its loop's length) before its first round."""
        if self.active and not self.begun and isinstance(total, int) and not isinstance(total, bool):
            self.progress_total = total

    @torch.compiler.disable
    def round(self) -> int | None:
        """The step of the denoiser call being made now; ``None`` outside a pass (the call runs untouched)."""
        if not self.active:
            return None
        if not self.begun:
            self._begin_pass()
            return self.step_index
        if self.stepped and getattr(self.scheduler, "state_in_first_order", True):
            self.listener.end_step(self.step_index, self.pending)
            self.step_index += 1
            self.stepped, self.pending, self.step_samples = False, None, []
            self.step_input = self.latents
            if self.step_index >= self.num_steps:  # more rounds than the loop was said to have
                self._close(self.num_steps)
                return None
        return self.step_index

    def finish(self) -> None:
        """The pass is over (the pipeline call returned or raised, or a new pass starts): close its last step."""
        if not self.active:
            return
        done = self.step_index + 1 if self.begun and self.stepped else max(self.step_index, 0)
        if self.begun and self.stepped:
            self.listener.end_step(self.step_index, self.pending)
        self._close(done)

    def abandon(self) -> None:
        """The pass failed (the pipeline call raised): close it without telling the listener anything more."""
        self.active, self.begun, self.stepped, self.pending = False, False, False, None

    def current_input(self) -> torch.Tensor | None:
        """x_t of the current step: the previous step's result, or at step 0 the first ``sample`` that
        ``scheduler.step`` received with the shape of the latents (Cosmos first passes a doubled batch)."""
        if self.step_input is not None:
            return self.step_input
        shape = self.latents.shape if isinstance(self.latents, torch.Tensor) else None
        for sample in self.step_samples:
            if isinstance(sample, torch.Tensor) and (shape is None or sample.shape == shape):
                return sample
        return None

    def _close(self, steps_done: int) -> None:
        begun = self.begun
        self.active, self.begun, self.stepped, self.pending = False, False, False, None
        if begun:
            self.listener.finish(steps_done)

    def _begin_pass(self) -> None:
        n = self.loop_length()
        self.num_steps, self.step_index, self.begun = n, 0, True
        try:
            self.listener.begin(n)
        except BaseException:
            self.active = self.begun = False
            raise

    def loop_length(self) -> int:
        """N for the pass: see the module docstring."""
        sch = self.scheduler
        begin = getattr(sch, "begin_index", None)
        n = len(sch.timesteps) - (int(begin) if begin is not None else 0)
        if is_multi_evaluation(sch):
            return (n + 1) // 2  # the first step has one evaluation, every later one two (Heun, KDPM2)
        if getattr(getattr(sch, "config", None), "skip_prk_steps", True) is False:
            if not self.warned_prk:
                warnings.warn(
                    "etcdiff: PNDM with Runge-Kutta warm-up steps (skip_prk_steps=False) calls the model four times "
                    "in each of its first steps; etcdiff counts every call as a step there, so the report has more "
                    "steps than requested. Set skip_prk_steps=True for one call per step.",
                    UserWarning, stacklevel=4,
                )
                self.warned_prk = True
            return n
        total = self.progress_total
        return total if total is not None and 0 < total < n else n

    def schedule_sigmas(self) -> torch.Tensor | None:
        """The scheduler's sigmas for this pass's N steps (N + 1 values), or ``None`` where they do not map."""
        sch = self.scheduler
        sigmas = getattr(sch, "sigmas", None)
        if not isinstance(sigmas, torch.Tensor):
            return None
        if is_multi_evaluation(sch):
            sigmas = torch.unique_consecutive(sigmas)  # Heun repeats every inner sigma once
            return sigmas if len(sigmas) == self.num_steps + 1 else None
        begin = int(getattr(sch, "begin_index", None) or 0)
        return sigmas[begin:begin + self.num_steps + 1]
