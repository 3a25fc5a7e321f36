"""One external peer's session on a pipeline: step tracking, the counts of denoiser forwards and of real block
runs, and the report.

The report counts transformer forwards and, with a forward pre-hook on the first linear layer of the attention
of the middle block of the stack (:func:`probe_layer`), the forwards in which that block's attention really
ran (``stack_runs``): a skipped stack (FBC, MagCache, DBCache) or a predicted attention (TaylorSeer) does not
run it.
"""

from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass, field
from typing import Any

import torch

from .support import block_stack
from .snapshot import Snapshot
from ..step_tracker import StepTracker


@dataclass
class ExternalReport:
    """Counts for one generation with an external peer.

    ``model_calls``: denoiser forwards. ``stack_runs``: forwards in which the probed block (the middle block
    of the stack, ``probe``) really ran its attention; ``per_step_calls`` / ``per_step_stack_runs`` per step.
    ``stats``: the peer's own statistics where it keeps some (cache-dit's summary).
    """

    method: str
    num_steps: int
    model_calls: int = 0
    stack_runs: int = 0
    per_step_calls: list[int] = field(default_factory=list)
    per_step_stack_runs: list[int] = field(default_factory=list)
    probe: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    stats: Any = None

    @property
    def stack_skips(self) -> int:
        return self.model_calls - self.stack_runs

    @property
    def stack_speedup(self) -> float:
        return self.model_calls / max(self.stack_runs, 1)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        out = asdict(self)
        out["stats"] = None if self.stats is None else repr(self.stats)
        out["stack_skips"] = self.stack_skips
        out["stack_speedup"] = self.stack_speedup
        return out


class ExternalSession:
    """One external peer on one pipeline: its denoisers (``transformer`` and, for two-expert models,
    ``transformer_2``), what enabling added, and the counts of the current generation."""

    def __init__(self, pipe: Any, peer: str, models: dict[str, torch.nn.Module], params: dict[str, Any]) -> None:
        self.pipe_ref = weakref.ref(pipe)
        self.peer = peer
        self.models = models
        self.model = next(iter(models.values()))
        self.params = params
        self.tracker = StepTracker(self)
        self.handles: list[Any] = []
        self.config: Any = None
        self.base_ratios: torch.Tensor | None = None
        self.ratios_warned: set[int] = set()  # step counts whose ratio mismatch diffusers-magcache has said
        self.target: Any = None
        self.snapshot: Snapshot | None = None
        self.state_managers: list[Any] = []
        self.needs_reset = False
        self.probe = ""
        self.last_report: ExternalReport | None = None
        self._clear(0)

    def _clear(self, num_steps: int) -> None:
        self.num_steps = num_steps
        self.calls = [0] * num_steps
        self.runs = [0] * num_steps
        self.calls_this_step = 0
        self.outside_calls = 0

    # -- StepListener
    def begin(self, num_steps: int) -> None:
        self._clear(num_steps)
        if self.peer == "deepcache":
            from .deepcache_adapter import reset_deepcache

            reset_deepcache(self)
        if self.peer == "diffusers-magcache":
            self._set_magcache_steps(num_steps)
        if self.needs_reset:
            from diffusers.hooks import HookRegistry

            for model in self.models.values():
                HookRegistry.check_if_exists_or_initialize(model).reset_stateful_hooks(recurse=True)

    def end_step(self, step: int, model_output: Any) -> None:
        self.calls_this_step = 0
        if not self.tracker.active:
            self.last_report = ExternalReport(
                method=self.peer, num_steps=self.num_steps, model_calls=sum(self.calls), stack_runs=sum(self.runs),
                per_step_calls=list(self.calls), per_step_stack_runs=list(self.runs), probe=self.probe,
                params=dict(self.params), stats=self._stats(),
            )

    def _stats(self) -> Any:
        if self.peer != "cache-dit":
            return None
        import cache_dit

        try:
            return cache_dit.summary(self.target, logging=False)
        except Exception:  # pragma: no cover - statistics are optional
            return None

    def _set_magcache_steps(self, num_steps: int) -> None:
        from diffusers.hooks.mag_cache import nearest_interp

        cfg = self.config
        cfg.num_inference_steps = num_steps
        if not cfg.calibrate and self.base_ratios is not None:
            ratios = self.base_ratios
            cfg.mag_ratios = ratios if len(ratios) == num_steps else nearest_interp(ratios, num_steps)
            made_for = int(ratios.shape[-1]) if torch.is_tensor(ratios) else len(ratios)
            if 1 < made_for != num_steps and num_steps not in self.ratios_warned:  # diffusers says nothing
                self.ratios_warned.add(num_steps)
                warnings.warn(
                    f"diffusers-magcache: the mag_ratios are for {made_for} steps and this run has {num_steps}; "
                    "diffusers takes the nearest ratio of each step. For ratios measured at this step count: "
                    f"`etcdiff calibrate --model <id or path> --method magcache --steps {num_steps}` (etcdiff's "
                    "magcache resamples on the residual's magnitude curve instead).", UserWarning, stacklevel=2)

    def _step(self) -> int | None:
        if not self.tracker.active:
            pipe = self.pipe_ref()
            current = getattr(pipe, "scheduler", None) if pipe is not None else None
            if current is not None and current is not self.tracker.scheduler:
                self.tracker.follow(current)
        return self.tracker.step_index if self.tracker.active else None

    # -- counting hooks
    def on_call(self, module: Any, args: Any) -> None:
        step = self._step()
        if step is None:
            self.outside_calls += 1
        else:
            self.calls[step] += 1
            if self.peer == "diffusers-fastercache" and sum(self.calls) == 1:
                from .diffusers_more_caches import check_fastercache_start

                check_fastercache_start(self)

    def on_block_run(self, module: Any, args: Any) -> None:
        step = self._step()
        if step is not None:
            self.runs[step] += 1

    # -- cache context for diffusers' hooks where the pipeline sets none
    def context_name(self) -> str | None:
        if any(sm._context is not None for sm in self.state_managers):
            return None  # the pipeline set one (cache_context)
        step = self._step()
        if step is None:
            return "default"
        name = f"call{self.calls_this_step}"
        self.calls_this_step += 1
        return name


def _first_linear(module: torch.nn.Module) -> tuple[str, torch.nn.Module] | None:
    for name, m in module.named_modules():
        if isinstance(m, torch.nn.Linear):
            return name, m
    return None


def probe_layer(model: torch.nn.Module) -> tuple[str, torch.nn.Module] | None:
    stack = block_stack(model)
    if not stack:
        mid = getattr(model, "mid_block", None)  # UNets: the mid block (DeepCache's deep branch)
        found = _first_linear(mid) if isinstance(mid, torch.nn.Module) else None
        return (f"mid_block.{found[0]}", found[1]) if found is not None else None
    name, block = stack[len(stack) // 2]
    for sub_name, sub in block.named_children():
        if sub_name.startswith("attn"):
            found = _first_linear(sub)
            if found is not None:
                return f"{name}.{sub_name}.{found[0]}", found[1]
    found = _first_linear(block)
    return (f"{name}.{found[0]}", found[1]) if found is not None else None
