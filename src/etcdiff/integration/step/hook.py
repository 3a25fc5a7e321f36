"""Step policies on unmodified diffusers pipelines: ``enable_step_policy(pipe, policy)``.

Where the loop is comes from :mod:`etcdiff.integration.step.loop_tracker`: a step is a round of denoiser calls
ended by ``scheduler.step``, whose input is the tensor the scheduler consumes, ETC's eps_t after
classifier-free guidance is combined: the policy measures its error and decides its window on that tensor.
A generation ends when the pipeline call returns or raises (:mod:`etcdiff.integration.step.pipeline_call`), so a
stopped generation leaves nothing behind, and the report covers every pass of a multi-pass call.

The denoisers (``transformer``, ``transformer_2``, ``unet``) get a diffusers ``ModelHook`` that, on a
skipped step, returns the policy's estimate instead of running ``forward`` at all. Each denoiser call inside
a step (a CFG branch, told apart by its ``cache_context`` name where the pipeline sets one, and by its order
within the step) has its own :class:`~etcdiff.policies.step.base.OutputStream`; the stream belongs to the branch,
not to the module, so Wan 2.2's second expert continues the trend of the first. Helper networks that a
pipeline runs every step only to feed the denoiser (``controlnet``) are skipped with it: on a skipped step
they return their last output, which the skipped denoiser never reads. For ETC every branch keeps its
own trend; with CFG combined linearly (``u + s·(c - u)``) the branch estimates combine into exactly the
estimate ETC makes on the combined output, while the error that drives the window is the paper's, measured
on the combined output. That keeps one decision per step for all branches (no branch runs on a skipped
step) and needs no knowledge of the guidance scale or of how a pipeline lays out its branches. A denoiser
called outside a generation runs untouched.
"""

from __future__ import annotations

import copy
import pickle
import threading
import weakref
from typing import Any, Callable

import torch

from ...policies.step.base import OutputStream, RunReport, StepPolicy
from .distributed import agree
from .loop_tracker import LoopTracker
from .pipeline_call import install, uninstall
from ..denoiser_owners import refuse_other_kind
from ..denoisers import find_denoisers, split_output
from ..session_hook import Registration, SessionRegistry, register

HOOK_NAME = "etcdiff_step_policy"
HELPER_NAMES = ("controlnet",)  # networks run every step whose output only feeds the denoiser
_SESSIONS = SessionRegistry("step", "step policy")
_LOCK = threading.Lock()


class _Branch:
    __slots__ = ("stream", "rebuild")

    def __init__(self, stream: OutputStream) -> None:
        self.stream = stream
        self.rebuild: Callable[[torch.Tensor], Any] | None = None


def merge_reports(reports: list[RunReport]) -> RunReport:
    """One report for the passes of one pipeline call, their steps numbered one after the other."""
    if len(reports) == 1:
        return reports[0]
    first = reports[0]
    out = RunReport(method=first.method, num_steps=0, params=first.params, model_calls=0, passes=len(reports))
    for rep in reports:
        out.computed_steps += [out.num_steps + s for s in rep.computed_steps]
        out.err += rep.err
        out.window += rep.window
        out.num_steps += rep.num_steps
        out.model_calls += rep.model_calls or 0
    return out


class Session:
    """The per-pipeline state: the policy, the hooked modules, where the loop is, one stream per branch."""

    def __init__(self, pipe: Any, policy: StepPolicy) -> None:
        self.pipe_ref = weakref.ref(pipe)
        self.policy = policy  # the configuration, shared freely
        self.run: StepPolicy = policy  # the generation in progress (a fresh copy from begin)
        self.tracker = LoopTracker(self)
        self.modules: dict[str, torch.nn.Module] = {}
        self.registered: dict[str, Registration] = {}
        self.last_report: RunReport | None = None
        self.in_call = False
        self.call_thread: int | None = None
        self.passes: list[RunReport] = []
        self.branches: dict[tuple, _Branch] = {}
        self.helper_outputs: dict[tuple, Any] = {}
        self._clear()

    def _clear(self) -> None:
        self.decided_step = -1
        self.compute_now = True
        self.latents_missing = False
        self.stash: dict[tuple, torch.Tensor] = {}
        self.calls_this_step: dict[tuple, int] = {}
        self.keys_this_step: list[tuple] = []
        self.last_keys: list[tuple] = []
        self.ran_this_step = 0
        self.estimated_this_step = 0
        self.model_calls = 0

    # -- wiring ----------------------------------------------------------------------------------------------
    def attach(self, pipe: Any) -> None:
        """Wrap the scheduler, hook the denoisers and helpers, watch the pipeline's calls."""
        self.tracker.wrap(pipe.scheduler)
        try:
            self.sync_modules(pipe)
            install(pipe, self)
        except BaseException:
            self.detach(pipe)
            raise

    def detach(self, pipe: Any) -> None:
        """Undo :meth:`attach` exactly; the session (policy, last report) stays usable for a new attach."""
        uninstall(pipe)
        self.tracker.unwrap()
        for reg in self.registered.values():
            reg.remove()
        self.registered, self.modules = {}, {}

    def sync_modules(self, pipe: Any) -> None:
        """Hook the pipeline's current denoisers and helpers; a replaced one (``pipe.transformer = ...``) moves over."""
        found = hooked_modules(pipe)
        for name in [n for n in self.modules if found.get(n) is not self.modules[n]]:
            self.registered.pop(name).remove()
            del self.modules[name]
        for name, module in found.items():
            if name not in self.modules and all(module is not m for m in self.modules.values()):
                registry = getattr(module, "_diffusers_hook", None)
                if registry is not None and registry.get_hook(HOOK_NAME) is not None:
                    raise RuntimeError(
                        f"etcdiff: pipe.{name} is shared with another pipeline that has a step policy enabled; "
                        "disable that pipeline first (etcdiff.disable), or give each pipeline its own module."
                    )
                self.registered[name] = register(module, self, name, HOOK_NAME)
                self.modules[name] = module

    # -- CallWatcher: the pipeline call around the denoising loop(s) ----------------------------------------
    def call_started(self) -> None:
        me = threading.get_ident()
        with _LOCK:
            if self.call_thread is not None:
                if self.call_thread == me:
                    raise RuntimeError(
                        "etcdiff: the pipeline was called again from inside its own generation (a callback?); "
                        "a pipeline with etcdiff enabled runs one generation at a time."
                    )
                raise RuntimeError(
                    "etcdiff: this pipeline is already generating in another thread. diffusers pipelines are not "
                    "thread-safe: give each thread its own pipeline (and its own policy)."
                )
            self.call_thread = me
        self.in_call = True
        self.passes = []
        try:
            pipe = self.pipe_ref()
            if getattr(pipe, "scheduler", None) is not self.tracker.scheduler:
                self.tracker.switch(pipe.scheduler)  # pipe.scheduler = ... since the last call
            self.sync_modules(pipe)  # pipe.transformer = ... since the last call
        except BaseException:
            self._end_call()
            raise

    def call_ended(self, ok: bool) -> None:
        try:
            if ok:
                self.tracker.finish()
                if self.passes:
                    self.last_report = merge_reports(self.passes)
            else:  # the generation did not finish: no report rather than a stale one, and no policy call
                self.tracker.abandon()  # that could raise over the pipeline's own exception
                self.last_report = None
                self.policy.finished(self.run)  # policy.report() shows how far the stopped generation got
        finally:
            self._end_call()

    def _end_call(self) -> None:
        self.in_call = False
        self.passes, self.branches, self.helper_outputs, self.stash = [], {}, {}, {}
        with _LOCK:
            self.call_thread = None

    def progress(self, total: Any) -> None:
        self.tracker.progress(total)

    def copy_pipeline(self, pipe: Any, memo: dict) -> Any:
        """``copy.deepcopy(pipe)``: an independent pipeline with a copy of the policy enabled on it."""
        self._refuse_in_call("copied")
        self.detach(pipe)
        try:
            plain = copy.deepcopy(pipe, memo)
        finally:
            self.attach(pipe)
        enable_step_policy(plain, copy.deepcopy(self.policy, memo))
        return plain

    def reduce_pipeline(self, pipe: Any, protocol: int) -> Any:
        """``pickle.dumps(pipe)``: the plain pipeline's pickle and the policy; loading enables it again."""
        self._refuse_in_call("pickled")
        self.detach(pipe)
        try:
            data = pickle.dumps(pipe, protocol=max(int(protocol), 2))
        finally:
            self.attach(pipe)
        return _load_enabled, (data, self.policy)

    def _refuse_in_call(self, what: str) -> None:
        if self.in_call:
            raise RuntimeError(f"etcdiff: a pipeline cannot be {what} in the middle of its own generation.")

    # -- LoopListener: called by the tracker -----------------------------------------------------------------
    def begin(self, num_steps: int) -> None:
        self._clear()
        self.branches, self.helper_outputs = {}, {}
        self.policy.prepare(num_steps)  # a saved calibration's settings for this step count, and its plan
        self.run = self.policy.for_generation()  # the policy is the configuration; the run holds the state
        self.run.use_schedule(self.tracker.schedule_sigmas())  # this run's schedule first: begin checks it
        self.run.begin(num_steps)  # raises a clear error for settings the step count cannot take
        self.run.check_scheduler(self.tracker.scheduler)

    def end_step(self, step: int, model_output: Any) -> None:
        if self.decided_step != step:  # a step with no denoiser call through us
            self.decide(step)
        elif self.latents_missing and isinstance(self.tracker.current_input(), torch.Tensor):
            # x_0 is known only once scheduler.step has it; tracker.latents already holds x_1 here
            self.run.late_input(step, self.tracker.current_input())
        computed = self.compute_now or (self.ran_this_step > 0 and self.estimated_this_step == 0)
        if isinstance(model_output, torch.Tensor):
            self.run.observe(step, model_output, computed)
        self.last_keys, self.keys_this_step = self.keys_this_step, []
        self.ran_this_step = self.estimated_this_step = 0
        self.calls_this_step, self.stash = {}, {}

    def finish(self, steps_done: int) -> None:
        report = self.run.report()
        report.num_steps = min(report.num_steps, steps_done)  # a loop stopped early: only the steps it ran
        report.model_calls = self.model_calls
        self.policy.finished(self.run)
        self.branches, self.helper_outputs = {}, {}
        if self.in_call:
            self.passes.append(report)
        else:  # a loop written by hand, without the pipeline call around it
            self.last_report = report

    def release(self) -> None:
        """diffusers resets hooks at the end of a pipeline call; :meth:`call_ended` has the state to free."""

    # -- denoiser side ---------------------------------------------------------------------------------------
    @torch.compiler.disable
    def decide(self, step: int) -> None:
        """The one decision of a step, made at its first call, for every branch and helper of the step.

        On a skip, every branch of the previous step is asked for its estimate first: if any has none, the step
        runs after all, so that a helper network is only skipped when the denoiser is. Split ranks agree.
        """
        self.decided_step = step
        self.latents_missing = self.tracker.latents is None
        compute = self.run.should_compute(step, self.tracker.latents)
        self.stash = {}
        if not compute:
            for key in self.last_keys:
                branch = self.branches.get(key)
                est = branch.stream.predict(step) if branch is not None and branch.rebuild is not None else None
                if est is None:
                    self.run.forced_call(step)  # a method with a call budget refuses to break it
                    compute = True
                    break
                self.stash[key] = est
        self.compute_now = agree(compute)
        if self.compute_now:
            self.stash = {}

    def forward(self, module_name: str, context: Any, original: Callable, args: tuple, kwargs: dict) -> Any:
        if not self.tracker.active and not self.in_call:
            self.tracker.follow_replacement(self.pipe_ref())  # a hand-written loop after pipe.scheduler = ...
        step = self.tracker.round()
        if step is None:
            return original(*args, **kwargs)
        if self.decided_step != step:
            self.decide(step)
        helper = module_name in HELPER_NAMES
        base = (module_name if helper else "denoiser", getattr(context, "name", None))
        ordinal = self.calls_this_step.get(base, 0)
        self.calls_this_step[base] = ordinal + 1
        key = (*base, ordinal)
        if helper:  # on a skipped step its output only feeds estimated denoiser calls: hand back the last one
            cached = self.helper_outputs.get(key)
            if not self.compute_now and cached is not None:
                return cached
            out = original(*args, **kwargs)
            self.model_calls += 1
            self.helper_outputs[key] = out
            return out
        self.keys_this_step.append(key)
        branch = self.branches.get(key)
        if branch is None:
            branch = self.branches[key] = _Branch(self.run.new_stream())
        if not self.compute_now and branch.rebuild is not None:
            est = self.stash.pop(key, None)
            if est is None:
                est = branch.stream.predict(step)
            if est is not None:
                branch.stream.use(step, est)
                self.estimated_this_step += 1
                return branch.rebuild(est)
        out = original(*args, **kwargs)
        self.model_calls += 1
        self.ran_this_step += 1
        tensor, branch.rebuild = split_output(out)
        branch.stream.record(step, tensor)
        return out


def hooked_modules(pipe: Any) -> dict[str, torch.nn.Module]:
    """The denoisers and the per-step helper networks of ``pipe`` (see :data:`HELPER_NAMES`)."""
    helpers = {n: getattr(pipe, n) for n in HELPER_NAMES if isinstance(getattr(pipe, n, None), torch.nn.Module)}
    return {**find_denoisers(pipe), **helpers}


def _load_enabled(data: bytes, policy: StepPolicy) -> Any:
    """Unpickle a pipeline pickled with a step policy enabled, and enable the policy on it again."""
    pipe = pickle.loads(data)
    enable_step_policy(pipe, policy)
    return pipe


def enable_step_policy(pipe: Any, policy: StepPolicy) -> StepPolicy:
    """Put a step policy on an unmodified diffusers pipeline; returns the policy. Enabling again replaces it.

    Most users call :func:`etcdiff.enable`, which also takes method names and the block-level and external peers.
    """
    if not isinstance(policy, StepPolicy):
        raise TypeError(f"etcdiff: expected a StepPolicy, got {type(policy).__name__}.")
    find_denoisers(pipe)
    refuse_other_kind(pipe, "step")
    if getattr(pipe, "scheduler", None) is None:
        raise TypeError(f"etcdiff.enable: {type(pipe).__name__} has no `scheduler`; a diffusers pipeline is expected.")
    if pipe in _SESSIONS:
        disable_step_policy(pipe)
    session = Session(pipe, policy)
    session.attach(pipe)
    _SESSIONS[pipe] = session
    return policy


def disable_step_policy(pipe: Any) -> None:
    """Remove what :func:`enable_step_policy` added; the pipeline, its denoisers and scheduler are as before."""
    session = _SESSIONS.pop(pipe, None)
    if session is not None:
        session.detach(pipe)


def step_policy_report(pipe: Any) -> RunReport:
    """What the policy did in the pipeline's last finished generation (steps computed, err, window, calls)."""
    return _SESSIONS.report(pipe)


def is_step_policy_enabled(pipe: Any) -> bool:
    return pipe in _SESSIONS
