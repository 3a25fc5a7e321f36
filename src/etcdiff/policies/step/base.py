"""The policy interface shared by ETC and its peers: pure tensor math, no diffusers import.

A *step policy* decides, step by step, whether the denoiser runs, and predicts the denoiser's output on the
steps it skips. It sees the output the sampler actually consumed at each step (``observe``), so the same
policy drives the generic sampler (``etcdiff.sample``) and the diffusers hook (``etcdiff.enable``).

Where one sampling step is made of several denoiser calls (separate conditional and unconditional calls for
classifier-free guidance), each call gets an :class:`OutputStream` from :meth:`StepPolicy.new_stream`: the
stream predicts that call's own output following the policy's decisions, so that on a skipped step no
denoiser call runs for any branch.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ..._numbers import as_int
from ..for_steps import adopt_for_steps


@dataclass
class RunReport:
    """What a policy did during one generation.

    ``computed_steps`` are the step indices where the denoiser ran; ``err`` and ``window`` hold, for every
    step, the policy's error signal and window (``None`` where the policy did not measure one).
    ``model_calls`` counts real forwards of the denoiser and of the helper networks a pipeline runs with it
    every step (ControlNet); it exceeds the computed steps when a step makes several calls (separate CFG
    branches); integrations fill it in.
    """

    method: str
    num_steps: int
    computed_steps: list[int] = field(default_factory=list)
    err: list[float | None] = field(default_factory=list)
    window: list[int | None] = field(default_factory=list)
    model_calls: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    passes: int = 1  # denoising loops in one pipeline call (FreeInit-style re-runs), numbered steps one after the other

    @property
    def num_computed(self) -> int:
        return len(self.computed_steps)

    @property
    def skipped_steps(self) -> list[int]:
        done = set(self.computed_steps)
        return [i for i in range(self.num_steps) if i not in done]

    @property
    def step_speedup(self) -> float:
        """Steps over computed steps: the reduction in model calls against the full run."""
        return self.num_steps / max(self.num_computed, 1)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["num_computed"] = self.num_computed
        out["step_speedup"] = self.step_speedup
        return out


class OutputStream(ABC):
    """Predicts one denoiser call's output on skipped steps (one per CFG branch)."""

    @abstractmethod
    def record(self, step: int, output: torch.Tensor) -> None:
        """Take the real output of this call at ``step``."""

    @abstractmethod
    def predict(self, step: int) -> torch.Tensor | None:
        """The estimate for ``step``; ``None`` when no safe estimate exists (then the model must run).

        Asking changes nothing: an integration may ask every branch first and run the model after all."""

    def use(self, step: int, estimate: torch.Tensor) -> None:
        """The estimate from :meth:`predict` was handed on in place of the model's output at ``step``."""


class ReuseStream(OutputStream):
    """Returns the last real output unchanged (the rule of the plain caching peers)."""

    def __init__(self) -> None:
        self.last: torch.Tensor | None = None

    def record(self, step: int, output: torch.Tensor) -> None:
        self.last = output

    def predict(self, step: int) -> torch.Tensor | None:
        return self.last


def is_finite(x: torch.Tensor) -> bool:
    return bool(torch.isfinite(x).all())


class StepPolicy(ABC):
    """Base class of the step-level methods.

    The object a user builds is the method's configuration: its settings and what is derived from them alone
    (a fitted profile, ETC+'s plan). The integrations never run a generation on it: each generation runs on
    :meth:`for_generation`, a copy with fresh per-generation state, so that one policy object can serve any
    number of pipelines and loops, even at once. ``report()`` on the configuration gives the last finished
    generation's report, whichever pipeline ran it.

    Life cycle of a generation object: ``use_schedule(sigmas)``, ``begin(N)``, ``check_scheduler(scheduler)``,
    then for every step t in order: ``should_compute(t, x_t)``; if it says no, ``predict(t)`` (a ``None`` answer
    means: run the model anyway); then ``observe(t, output, computed)`` with the output the sampler consumed.
    ``report()`` any time after.
    """

    name = "policy"

    def __init__(self) -> None:
        self.num_steps = 0
        self._report: RunReport | None = None
        self.main_stream: OutputStream = ReuseStream()

    #: ``steps -> policy``: set by ``etcdiff.enable`` on a policy built from a saved calibration, so that each
    #: generation uses the calibration made at its own step count (see :meth:`prepare`)
    for_steps: Any = None
    #: whether a saved calibration fits only the step count it was made at (``for_steps`` then refuses the
    #: others); a method whose calibration spans the time axis (SenCache's tables) keeps it at any step count
    profile_per_step_count = False

    def for_generation(self) -> "StepPolicy":
        """A policy with these settings and no per-generation state yet, for one generation (:meth:`begin`
        sets the state up). What derives from the settings alone is shared with this object, not copied."""
        run = copy.copy(self)
        run._report = None
        run.main_stream = ReuseStream()
        return run

    def finished(self, run: "StepPolicy") -> None:
        """``run`` (from :meth:`for_generation`) finished a generation: its report becomes this one's."""
        self._report = run._report
        self.num_steps = run.num_steps

    # -- life cycle ---------------------------------------------------------------------------------------
    def prepare(self, num_steps: int) -> None:
        """Ready this configuration for runs of ``num_steps`` steps: a policy with ``for_steps`` takes on the
        settings of the calibration made at ``num_steps`` (``for_steps`` raises a one-line ValueError naming the
        step counts that exist when there is none), and a method derives, once, what depends only on its settings
        and the step count (ETC+'s plan), so that a generation only creates fresh state. Called by the
        integrations before every generation and by the bench once per setting, before its timed runs."""
        adopt_for_steps(self, num_steps)

    def begin(self, num_steps: int) -> None:
        """Reset all per-generation state for a run of ``num_steps`` steps."""
        num_steps = num_steps if as_int(num_steps) is None else as_int(num_steps)
        if not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"{self.name}: the number of steps must be a positive integer, got {num_steps!r}.")
        self.num_steps = num_steps
        self._report = RunReport(method=self.name, num_steps=num_steps, params=self.params())
        self.main_stream = self.new_stream()
        self.reset_state()

    def reset_state(self) -> None:
        """Clear the method's own per-generation state (called by :meth:`begin`)."""

    def use_schedule(self, sigmas: torch.Tensor | None) -> None:
        """Called by the integrations just before :meth:`begin` with the scheduler's sigmas for the run's steps
        (``None`` where the scheduler has none), so that ``begin`` can check them against the step count.
        Methods that need the solver's time axis override it."""

    def check_scheduler(self, scheduler: Any) -> None:
        """Called by the integrations once per generation, after :meth:`use_schedule`, with the scheduler
        instance. Methods that only run on some schedulers raise a one-line ``ValueError`` here; methods that
        need more of the solver's time axis read it here. Default: nothing."""

    def late_input(self, step: int, latents: torch.Tensor) -> None:
        """The sampler's input x_t at ``step`` where :meth:`should_compute` got ``None`` because the integration
        learns it only later (the diffusers hook at step 0, before the first scheduler step). Called before
        :meth:`observe` of that step. Default: nothing."""

    def forced_call(self, step: int) -> None:
        """Called by the integrations when the model must run at a ``step`` this policy skipped, because no
        finite estimate exists there (NaN or Inf in the outputs or latents). A method with a call budget that
        this call would break raises a one-line ValueError (:meth:`budget_refusal`); others let it run."""
        why = self.budget_refusal(step)
        if why is not None:
            raise ValueError(f"{self.name}: {why} There is no finite estimate for step {step} (the model's outputs "
                             "or the latents hold NaN or Inf), and running the model there would break the budget; "
                             "this generation is stopped instead. Check the inputs and the model for NaN.")

    def budget_refusal(self, step: int) -> str | None:
        """Why one more model call at ``step`` would break this policy's call budget, else ``None`` (no budget)."""
        return None

    @abstractmethod
    def should_compute(self, step: int, latents: torch.Tensor | None = None) -> bool:
        """Whether the denoiser runs at ``step`` (``latents`` is the sampler's input x_t there)."""

    def predict(self, step: int) -> torch.Tensor | None:
        """The estimated output at a skipped ``step`` (single-stream use, e.g. ``etcdiff.sample``)."""
        return self.main_stream.predict(step)

    def observe(self, step: int, output: torch.Tensor, computed: bool) -> None:
        """Take the output the sampler consumed at ``step`` (real or estimated)."""
        self._log(step, computed)
        if computed:
            self.main_stream.record(step, output)

    def new_stream(self) -> OutputStream:
        """A predictor for one denoiser call that follows this policy's decisions."""
        return ReuseStream()

    def params(self) -> dict[str, Any]:
        return {}

    # -- reporting ------------------------------------------------------------------------------------------
    def report(self) -> RunReport:
        if self._report is None:
            raise RuntimeError(f"{self.name}: no generation has run with this policy yet.")
        return self._report

    def _log(self, step: int, computed: bool, err: float | None = None, window: int | None = None) -> None:
        rep = self.report()
        if step != len(rep.err):
            raise RuntimeError(
                f"{self.name}: steps must be observed in order; expected step {len(rep.err)}, got {step}. "
                "Call begin(num_steps) at the start of every generation."
            )
        if computed:
            rep.computed_steps.append(step)
        rep.err.append(None if err is None or math.isnan(err) else err)
        rep.window.append(window)

    def _check_step(self, step: int) -> None:
        if self._report is None:
            raise RuntimeError(f"{self.name}: call begin(num_steps) before the first step.")
        if not 0 <= step < self.num_steps:
            raise IndexError(f"{self.name}: step {step} is outside 0..{self.num_steps - 1}.")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"
