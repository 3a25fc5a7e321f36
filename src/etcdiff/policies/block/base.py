"""What a block rule is: the interface the block-cache machinery (``etcdiff.integration.block.cache``) drives.

A *block rule* decides, per denoiser call, whether the transformer's block stack (or part of it) runs or is
replaced by a reuse of earlier calls' residuals. Two shapes exist, both pure tensor math:

* :class:`BlockRule` (TeaCache, MagCache, PromptTea): one decision *before* the stack, from a scalar signal
  (``change``: the first block's modulated-input change, when ``needs_signal``); the machinery stores the
  stack's residual and adds it back on a skipped call.
* :class:`StagedBlockRule` (DiCache, H2-Cache): the stack is cut into :class:`Stage` s; in each stage the first
  ``probe_end - start`` blocks (the *probe*) always run, then the rule decides from the stage's input and the
  probe's output whether the rest of the stage runs, and on a skip returns the stage's output itself
  (:meth:`StagedBlockRule.reuse`). Its state keeps whatever tensors it needs.

Streams are passed as ``{name: tensor}`` (``"hidden_states"`` always, plus ``"encoder_hidden_states"`` where the
blocks carry the text stream).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence, runtime_checkable

import torch

from ..for_steps import adopt_for_steps

Streams = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Stage:
    """Blocks ``[start, end)`` of the stack; ``[start, probe_end)`` always run, ``[probe_end, end)`` may be reused."""

    start: int
    probe_end: int
    end: int

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.probe_end <= self.end:
            raise ValueError(f"a stage needs 0 <= start < probe_end <= end, got {self}.")

    @property
    def skippable(self) -> bool:
        return self.probe_end < self.end


@runtime_checkable
class BlockRule(Protocol):
    """One decision per call, before the stack (the machinery stores and adds back the stack's residual)."""

    name: str
    needs_signal: bool

    def begin(self, num_steps: int) -> None: ...

    def new_state(self) -> Any: ...

    def decide(self, state: Any, step: int, change: Any = None, can_skip: bool = True) -> bool: ...

    def params(self) -> dict[str, Any]: ...


@runtime_checkable
class StagedBlockRule(Protocol):
    """Decisions after a probe inside each stage; the rule keeps its residuals and builds the reused output."""

    name: str

    def begin(self, num_steps: int) -> None: ...

    def new_state(self) -> Any: ...

    def stages(self, list_lengths: Sequence[int]) -> list[Stage]: ...

    def decide_stage(self, state: Any, stage: int, step: int, start: Streams, probe: Streams) -> bool: ...

    def reuse(self, state: Any, stage: int, start: Streams, probe: Streams) -> Streams: ...

    def record(self, state: Any, stage: int, start: Streams, probe: Streams, end: Streams) -> None: ...

    def params(self) -> dict[str, Any]: ...


def prepare_rule(rule: Any, num_steps: int) -> None:
    """A rule built from a saved calibration takes the settings of the one made at ``num_steps`` (its
    ``for_steps``, set by ``etcdiff.enable``; as :meth:`~etcdiff.policies.step.base.StepPolicy.prepare` does for
    step policies). Called before every generation; nothing for a rule without ``for_steps``."""
    adopt_for_steps(rule, num_steps)


def is_staged(rule: Any) -> bool:
    return hasattr(rule, "stages") and hasattr(rule, "decide_stage")


def rel_l1(current: torch.Tensor, previous: torch.Tensor) -> float:
    """mean|current - previous| / mean|previous| over the whole tensor (batch included), as a float."""
    a, b = current.detach().float(), previous.detach().float()
    return float((a - b).abs().mean() / b.abs().mean())


def same_shapes(stored: Streams | None, streams: Streams) -> bool:
    """Whether every stream of ``stored`` exists in ``streams`` with the same shape (and ``stored`` is set)."""
    return stored is not None and "hidden_states" in stored and all(
        n in streams and streams[n].shape == t.shape for n, t in stored.items())


def streams_minus(a: Streams, b: Streams) -> Streams:
    """``a - b`` for the streams both carry with the same shape (a block may return ``None`` for one)."""
    return {n: (t - b[n]).detach() for n, t in a.items()
            if isinstance(t, torch.Tensor) and isinstance(b.get(n), torch.Tensor) and t.shape == b[n].shape}
