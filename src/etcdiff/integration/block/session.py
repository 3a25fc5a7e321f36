"""One block-cache generation's state: branches, per-call decisions, residuals, the report.

A :class:`BlockCacheSession` belongs to one pipeline. Steps come from a
:class:`~etcdiff.integration.step_tracker.StepTracker` on the pipeline's scheduler (step index and count:
TeaCache's first/last step, MagCache's retention steps). Each denoiser call inside a step is its own *branch*
(told apart by diffusers' ``cache_context`` name where the pipeline sets one, else by its order within the
step, and by the batch shape): branches never share signals, residuals or accumulators, so the cond and
uncond calls of classifier-free guidance have separate caches. Within a batched call every sample keeps its
own TeaCache accumulator; the call skips only when all samples would.

On a *computed* call every block runs exactly as without the cache, and the residual of the stack is stored
for every stream the blocks carry (blocks' output minus the stack's input). On a *skipped* call no block runs:
the proxies of :mod:`~etcdiff.integration.block.proxy` return the stack's input plus the stored residual.
Calls with ControlNet residuals or SD3 ``skip_layers`` run uncached (counted in the report).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ...policies.block.base import is_staged, prepare_rule
from ...policies.step.base import RunReport
from .conditions import condition_embedding
from .families import Family, first_block_signal
from ..denoisers import split_output
from ..step_tracker import StepTracker


def per_sample_rel(current: torch.Tensor, previous: torch.Tensor, batch: int) -> list[float]:
    """rel(a, b) = mean|a - b| / mean|b| per sample (one value when the tensor is not laid out by ``batch``)."""
    a, b = current.detach().float(), previous.detach().float()
    n = batch if a.dim() > 0 and a.shape[0] == batch and batch > 0 else 1
    a, b = a.reshape(n, -1), b.reshape(n, -1)
    return ((a - b).abs().mean(dim=1) / b.abs().mean(dim=1)).tolist()


def residual_norm_ratio(current: torch.Tensor, previous: torch.Tensor) -> float:
    """MagCache's gamma: mean over tokens (and batch) of ||R_t|| / ||R_{t-1}||, norms over the last dimension."""
    cur = torch.linalg.norm(current.detach().float(), dim=-1)
    prev = torch.linalg.norm(previous.detach().float(), dim=-1)
    return float((cur / (prev + 1e-8)).mean())



@dataclass
class BlockCacheReport(RunReport):
    """What a block cache did in one generation.

    ``computed_steps``: steps where at least one branch ran the block stack. ``model_calls``: denoiser
    forwards (the head and tail layers run in all of them). ``stack_runs`` / ``stack_skips``: calls that ran /
    skipped the block stack. ``branches``: per branch label, the steps it ran and skipped the stack.
    ``err``: per step, the rule's accumulator (TeaCache: acc before its reset; MagCache: acc_err), max over
    branches. ``uncached_calls``: calls that ran without the cache (ControlNet, SD3 skip_layers).
    """

    stack_runs: int = 0
    stack_skips: int = 0
    uncached_calls: int = 0
    branches: dict[str, dict[str, list[int]]] = field(default_factory=dict)

    @property
    def stack_speedup(self) -> float:
        """Block-stack executions without the cache over executions with it."""
        return (self.stack_runs + self.stack_skips) / max(self.stack_runs, 1)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["stack_speedup"] = self.stack_speedup
        return out



class _Branch:
    def __init__(self, label: str, state: Any) -> None:
        self.label = label
        self.state = state
        self.prev_signal: torch.Tensor | None = None
        self.residual: dict[str, torch.Tensor] | None = None
        self.computed: list[int] = []
        self.skipped: list[int] = []
        # record mode
        self.prev_output: torch.Tensor | None = None
        self.prev_hs_residual: torch.Tensor | None = None
        self.gammas: list[float] = []


class _Call:
    __slots__ = ("module_name", "key", "step", "branch", "compute", "inputs", "change", "time_embedding", "staged")

    def __init__(self, module_name: str, key: tuple, step: int) -> None:
        self.module_name = module_name
        self.key = key
        self.step = step
        self.branch: _Branch | None = None
        self.compute: bool | None = None
        self.inputs: dict[str, torch.Tensor] = {}
        self.change: list[float] | None = None
        self.time_embedding: torch.Tensor | None = None
        self.staged: Any = None


@dataclass
class BlockRecording:
    """What record mode saw: TeaCache (input change, output change) pairs and MagCache gamma sequences."""

    input_changes: list[float] = field(default_factory=list)
    output_changes: list[float] = field(default_factory=list)
    gamma_sequences: list[list[float]] = field(default_factory=list)


class BlockCacheSession:
    """Per-pipeline state: the step tracker, the rule, one branch per denoiser call."""

    def __init__(self, pipe: Any, rule: Any, denoisers: dict[str, tuple[torch.nn.Module, Family]],
                 record: bool) -> None:
        self.pipe_ref = weakref.ref(pipe)
        self.rule = rule
        self.record = record
        self.denoisers = denoisers
        self.tracker = StepTracker(self)
        self.proxies: dict[str, dict[str, torch.nn.ModuleList]] = {}
        self.last_report: BlockCacheReport | None = None
        self.recording = BlockRecording()
        self.registered: list[tuple[torch.nn.Module, bool, bool]] = []
        self.handles: list[Any] = []
        self._current: _Call | None = None
        self.stages = None if rule is None or not is_staged(rule) else {
            name: rule.stages([len(getattr(model, n)) for n in fam.block_lists]) for name, (model, fam) in denoisers.items()}
        self._clear()

    def _clear(self) -> None:
        self.branches: dict[tuple, _Branch] = {}
        self.calls_this_step: dict[tuple, int] = {}
        self.model_calls = 0
        self.uncached_calls = 0
        self.step_err: dict[int, float] = {}

    # -- StepListener ------------------------------------------------------------------------------------------
    def begin(self, num_steps: int) -> None:
        self._clear()
        if self.rule is not None:
            prepare_rule(self.rule, num_steps)  # a saved calibration's settings for this step count
            self.rule.begin(num_steps)

    def end_step(self, step: int, model_output: Any) -> None:
        self.calls_this_step = {}
        if not self.tracker.active:
            self._finish()

    def _finish(self) -> None:
        n = self.tracker.num_steps
        name = "record" if self.rule is None else self.rule.name
        params = {} if self.rule is None else self.rule.params()
        computed: set[int] = set()
        runs = skips = 0
        branches = {}
        for br in self.branches.values():
            computed.update(br.computed)
            runs += len(br.computed)
            skips += len(br.skipped)
            branches[br.label] = {"computed": list(br.computed), "skipped": list(br.skipped)}
            for k, steps in sorted(getattr(br, "stage_skips", {}).items() if self._multi_stage() else ()):
                branches[br.label][f"stage{k}_skipped"] = list(steps)
            if self.record and br.gammas:
                self.recording.gamma_sequences.append(list(br.gammas))
        self.last_report = BlockCacheReport(
            method=name, num_steps=n, computed_steps=sorted(computed),
            err=[self.step_err.get(i) for i in range(n)], window=[None] * n, model_calls=self.model_calls,
            params=params, stack_runs=runs, stack_skips=skips, uncached_calls=self.uncached_calls, branches=branches,
        )
        self.branches = {}

    def _multi_stage(self) -> bool:
        return bool(self.stages) and max(len(v) for v in self.stages.values()) > 1

    def release(self) -> None:
        """Free the stored residuals (diffusers resets hooks after every pipeline call); keep the report."""
        self.branches = {}

    # -- denoiser side -------------------------------------------------------------------------------------------
    def forward(self, module_name: str, context: Any, original: Callable, args: tuple, kwargs: dict) -> Any:
        if not self.tracker.active:
            self.tracker.follow_replacement(self.pipe_ref())
            if not self.tracker.active:
                return original(*args, **kwargs)
        model, fam = self.denoisers[module_name]
        self.model_calls += 1
        if any(kwargs.get(k) is not None for k in fam.uncached_kwargs):
            self.uncached_calls += 1
            return original(*args, **kwargs)
        ctx = getattr(context, "name", None)
        base = (module_name, ctx)
        ordinal = self.calls_this_step.get(base, 0)
        self.calls_this_step[base] = ordinal + 1
        call = _Call(module_name, (*base, ordinal), self.tracker.step_index)
        outer, self._current = self._current, call
        swapped = []
        try:
            for list_name, proxies in self.proxies[module_name].items():
                swapped.append((list_name, model._modules[list_name]))
                model._modules[list_name] = proxies
            out = original(*args, **kwargs)
        finally:
            for list_name, original_list in swapped:
                model._modules[list_name] = original_list
            self._current = outer
        self._after_call(call, out)
        return out

    @torch.compiler.disable
    def _after_call(self, call: _Call, out: Any) -> None:
        br = call.branch
        if br is None or call.compute is None:
            return
        (br.computed if call.compute else br.skipped).append(call.step)
        if self.record:
            tensor = split_output(out)[0].detach()
            if br.prev_output is not None and call.change is not None and br.prev_output.shape == tensor.shape:
                out_change = per_sample_rel(tensor, br.prev_output, tensor.shape[0])
                if len(out_change) == len(call.change):
                    self.recording.input_changes.extend(call.change)
                    self.recording.output_changes.extend(out_change)
            br.prev_output = tensor

    def _branch(self, call: _Call, hs: torch.Tensor) -> _Branch:
        key = (*call.key, tuple(hs.shape))
        br = self.branches.get(key)
        if br is None:
            module_name, ctx, ordinal = call.key
            label = ctx if ctx is not None else f"call{ordinal}"
            if ctx is not None and ordinal:
                label = f"{ctx}#{ordinal}"
            if module_name != "transformer":
                label = f"{module_name}/{label}"
            if any(k[:3] == call.key for k in self.branches):
                label = f"{label}@{'x'.join(map(str, hs.shape))}"
            state = None if self.rule is None else self.rule.new_state()
            br = self.branches[key] = _Branch(label, state)
        return br

    @torch.compiler.disable
    def decide(self, fam: Family, block: torch.nn.Module, bound: dict[str, Any]) -> _Call:
        call = self._current
        hs = bound["hidden_states"]
        br = call.branch = self._branch(call, hs)
        call.inputs = {n: bound.get(n) for n in fam.streams if isinstance(bound.get(n), torch.Tensor)}
        if getattr(self.rule, "needs_condition", False) and getattr(br.state, "thresholds", None) is None:
            self.rule.set_condition(br.state, condition_embedding(block, bound), call.key[1])
        needs_signal = self.record or (self.rule is not None and self.rule.needs_signal)
        if needs_signal:
            with torch.no_grad():
                sig = first_block_signal(fam, block, bound, call.time_embedding)
            if sig is not None:
                sig = sig.detach()
                if br.prev_signal is not None and br.prev_signal.shape == sig.shape:
                    call.change = per_sample_rel(sig, br.prev_signal, hs.shape[0])
                br.prev_signal = sig
        res = br.residual
        can_skip = res is not None and all(
            n not in res or res[n].shape == t.shape for n, t in call.inputs.items()
        ) and "hidden_states" in res
        if self.rule is None:
            call.compute = True
        else:
            call.compute = bool(self.rule.decide(br.state, call.step, call.change, can_skip)) or not can_skip
            err = getattr(br.state, "last_acc", None)
            if err is None:
                err = getattr(br.state, "last_err", None)
            if err is not None:
                self.step_err[call.step] = max(err, self.step_err.get(call.step, float("-inf")))
        return call

    @torch.compiler.disable
    def store_residual(self, fam: Family, call: _Call, out: Any) -> None:
        outs = fam.unpack(out)
        residual = {}
        for n, t_in in call.inputs.items():
            t_out = outs.get(n)
            if isinstance(t_out, torch.Tensor) and t_out.shape == t_in.shape:
                residual[n] = (t_out - t_in).detach()
        br = call.branch
        if self.record and "hidden_states" in residual:
            r = residual["hidden_states"]
            prev = br.prev_hs_residual
            br.gammas.append(1.0 if prev is None or prev.shape != r.shape else residual_norm_ratio(r, prev))
            br.prev_hs_residual = r
        br.residual = residual

