"""Step policies on unmodified diffusers pipelines: ``enable_step_policy(pipe, policy)``.

The step index and the step count come from the pipeline's scheduler, see
:mod:`etcdiff.integration.step_tracker`: N is the length of ``scheduler.timesteps`` set by
``set_timesteps`` (less the begin index), the step index counts ``scheduler.step`` calls, and
``scheduler.step`` receives the tensor the scheduler consumes, the spec's eps_t after classifier-free
guidance is combined: the policy measures its error and decides its window on that tensor.

The denoisers (``transformer``, ``transformer_2``, ``unet``) get a diffusers ``ModelHook`` that, on a
skipped step, returns the policy's estimate instead of running ``forward`` at all. Each denoiser call inside
a step (a CFG branch, told apart by its ``cache_context`` name where the pipeline sets one, and by its order
within the step) has its own :class:`~etcdiff.policies.base.OutputStream`. For ETC every branch keeps its
own trend; with CFG combined linearly (``u + s·(c - u)``) the branch estimates combine into exactly the
estimate ETC makes on the combined output, while the error that drives the window is the spec's, measured
on the combined output. That keeps one decision per step for all branches (no branch runs on a skipped
step) and needs no knowledge of the guidance scale or of how a pipeline lays out its branches. A denoiser
called outside a generation runs untouched.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable

import torch

from ..policies.base import OutputStream, RunReport, StepPolicy
from .session_hook import Registration, SessionRegistry, register
from .step_tracker import StepTracker

HOOK_NAME = "etcdiff_step_policy"
DENOISER_NAMES = ("transformer", "transformer_2", "unet")
_SESSIONS = SessionRegistry("step policy")


def _split_output(out: Any) -> tuple[torch.Tensor, Callable[[torch.Tensor], Any]]:
    """The main tensor of a denoiser's output, and a function that rebuilds the same structure around another."""
    if isinstance(out, torch.Tensor):
        return out, lambda x: x
    if isinstance(out, tuple) and out and isinstance(out[0], torch.Tensor):
        rest = out[1:]
        return out[0], lambda x: (x, *rest)
    sample = getattr(out, "sample", None)
    if isinstance(sample, torch.Tensor) and hasattr(out, "keys"):
        fields = dict(out)
        return sample, lambda x: type(out)(**{**fields, "sample": x})
    raise TypeError(
        f"etcdiff: cannot find the output tensor in a denoiser output of type {type(out).__name__}; "
        "expected a tensor, a tuple starting with one, or an output object with `.sample`."
    )


class _Branch:
    __slots__ = ("stream", "rebuild")

    def __init__(self, stream: OutputStream) -> None:
        self.stream = stream
        self.rebuild: Callable[[torch.Tensor], Any] | None = None


class Session:
    """The per-pipeline state: which step the loop is at, the policy, one stream per denoiser call."""

    def __init__(self, pipe: Any, policy: StepPolicy, denoisers: dict[str, torch.nn.Module]) -> None:
        self.pipe_ref = weakref.ref(pipe)
        self.policy = policy
        self.denoisers = denoisers
        self.tracker = StepTracker(self)
        self.last_report: RunReport | None = None
        self._clear()

    def _clear(self) -> None:
        self.decided_step = -1
        self.compute_now = True
        self.latents_missing = False
        self.calls_this_step: dict[tuple, int] = {}
        self.ran_this_step = 0
        self.estimated_this_step = 0
        self.branches: dict[tuple, _Branch] = {}
        self.model_calls = 0

    def release(self) -> None:
        """Free the per-branch tensors (diffusers resets hooks after every pipeline call); keep the report."""
        self.branches = {}

    # -- StepListener: called by the scheduler wrappers ----------------------------------------------------
    def begin(self, num_steps: int) -> None:
        self._clear()
        self.policy.begin(num_steps)  # raises a clear error for settings the step count cannot take
        scheduler = self.tracker.scheduler
        sigmas = getattr(scheduler, "sigmas", None)
        offset = len(scheduler.timesteps) - num_steps  # the begin index of img2img pipelines
        self.policy.use_schedule(sigmas[offset:] if isinstance(sigmas, torch.Tensor) else None)
        self.policy.check_scheduler(scheduler)

    def end_step(self, step: int, model_output: Any) -> None:
        if self.decided_step != step:  # a step with no denoiser call through us
            self.compute_now = self.policy.should_compute(step, self.tracker.latents)
        elif self.latents_missing and isinstance(self.tracker.latents, torch.Tensor):
            self.policy.late_input(step, self.tracker.latents)  # x_0 is known only once scheduler.step has it
        computed = self.compute_now or (self.ran_this_step > 0 and self.estimated_this_step == 0)
        if isinstance(model_output, torch.Tensor):
            self.policy.observe(step, model_output, computed)
        self.ran_this_step = self.estimated_this_step = 0
        self.calls_this_step = {}
        if not self.tracker.active:
            report = self.policy.report()
            report.model_calls = self.model_calls
            self.last_report = report
            self.branches = {}

    # -- denoiser side -------------------------------------------------------------------------------------
    @torch.compiler.disable
    def decide(self, key: tuple) -> tuple[_Branch, bool]:
        """The branch of this call and whether it must run the model."""
        i = self.tracker.step_index
        if self.decided_step != i:
            self.decided_step = i
            self.latents_missing = self.tracker.latents is None
            self.compute_now = self.policy.should_compute(i, self.tracker.latents)
        ordinal = self.calls_this_step.get(key, 0)
        self.calls_this_step[key] = ordinal + 1
        branch_key = (*key, ordinal)
        branch = self.branches.get(branch_key)
        if branch is None:
            branch = self.branches[branch_key] = _Branch(self.policy.new_stream())
        return branch, self.compute_now

    def forward(self, module_name: str, context: Any, original: Callable, args: tuple, kwargs: dict) -> Any:
        if not self.tracker.active:
            self.tracker.follow_replacement(self.pipe_ref())
            if not self.tracker.active:
                return original(*args, **kwargs)
        name = getattr(context, "name", None)
        branch, compute = self.decide((module_name, name))
        i = self.tracker.step_index
        if not compute and branch.rebuild is not None:
            estimate = branch.stream.predict(i)
            if estimate is not None:
                self.estimated_this_step += 1
                return branch.rebuild(estimate)
        out = original(*args, **kwargs)
        self.model_calls += 1
        self.ran_this_step += 1
        tensor, branch.rebuild = _split_output(out)
        branch.stream.record(i, tensor)
        return out


def find_denoisers(pipe: Any) -> dict[str, torch.nn.Module]:
    found = {n: getattr(pipe, n) for n in DENOISER_NAMES if isinstance(getattr(pipe, n, None), torch.nn.Module)}
    if not found:
        raise TypeError(
            f"etcdiff.enable: {type(pipe).__name__} has no denoiser; expected a diffusers pipeline with a "
            f"`transformer` or `unet` component. For your own sampling loop use etcdiff.sample(model, scheduler, ...)."
        )
    return found


def enable_step_policy(pipe: Any, policy: StepPolicy) -> StepPolicy:
    """Put a step policy on an unmodified diffusers pipeline; returns the policy. Enabling again replaces it.

    Most users call :func:`etcdiff.enable`, which also takes method names and the block-level and external peers.
    """
    if not isinstance(policy, StepPolicy):
        raise TypeError(f"etcdiff: expected a StepPolicy, got {type(policy).__name__}.")
    denoisers = find_denoisers(pipe)
    scheduler = getattr(pipe, "scheduler", None)
    if scheduler is None:
        raise TypeError(f"etcdiff.enable: {type(pipe).__name__} has no `scheduler`; a diffusers pipeline is expected.")
    if pipe in _SESSIONS:
        disable_step_policy(pipe)
    session = Session(pipe, policy, denoisers)
    session.tracker.wrap(scheduler)
    registered: list[Registration] = []
    try:
        for name, module in denoisers.items():
            registered.append(register(module, session, name, HOOK_NAME))
    except Exception:
        session.tracker.unwrap()
        for reg in registered:
            reg.remove()
        raise
    session.registered = registered
    _SESSIONS[pipe] = session
    return policy


def disable_step_policy(pipe: Any) -> None:
    """Remove what :func:`enable_step_policy` added; the pipeline's denoisers and scheduler are as they were before."""
    session = _SESSIONS.pop(pipe, None)
    if session is None:
        return
    session.tracker.unwrap()
    for reg in session.registered:
        reg.remove()


def step_policy_report(pipe: Any) -> RunReport:
    """What the policy did in the pipeline's last finished generation (steps computed, err, window, calls)."""
    return _SESSIONS.report(pipe)


def is_step_policy_enabled(pipe: Any) -> bool:
    return pipe in _SESSIONS
