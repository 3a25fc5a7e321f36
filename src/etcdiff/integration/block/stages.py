"""The block proxies' path for staged rules (DiCache, H2-Cache: :class:`~etcdiff.policies.block.base.StagedBlockRule`).

Inside one cached forward, for each stage ``[start, probe_end, end)`` of the rule: the stage's input streams are
kept at block ``start``; blocks ``start .. probe_end - 1`` (the probe) run as usual; right after the last probe
block the rule decides from the stage input and the probe output. On a skip that block returns the rule's
reused stage output and the remaining blocks of the stage hand their inputs through without running; otherwise
they run and, after the stage's last block, the rule records the stage. A stage with nothing after its probe
still asks the rule (H2-Cache's stage-1 hit forces stage 2) but always runs. Blocks are the model's own, called
with their own arguments, so a call where every stage runs is bit for bit the plain forward.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ...policies.block.base import Stage

if TYPE_CHECKING:
    from .session import BlockCacheSession, _Call


class StagedCall:
    """Where one denoiser call is in the rule's stages."""

    __slots__ = ("stage", "start", "probe", "skipping")

    def __init__(self) -> None:
        self.stage = -1
        self.start: dict[str, torch.Tensor] = {}
        self.probe: dict[str, torch.Tensor] = {}
        self.skipping = False


def stage_index(stages: list[Stage], i: int) -> int:
    for k, st in enumerate(stages):
        if st.start <= i < st.end:
            return k
    raise IndexError(f"block {i} is in no stage of {stages}")  # pragma: no cover - stages cover the stack


def _bind(names: list[str], args: tuple, kwargs: dict) -> dict[str, Any]:
    return {**dict(zip(names, args)), **kwargs}


def _tensors(streams: dict[str, Any]) -> dict[str, torch.Tensor]:
    return {n: t for n, t in streams.items() if isinstance(t, torch.Tensor)}


@torch.compiler.disable
def staged_forward(session: "BlockCacheSession", call: "_Call", proxy: Any, args: tuple, kwargs: dict) -> Any:
    """One block's forward inside a cached call of a staged rule (``proxy``: the block's ``BlockProxy``)."""
    fam, block, i = proxy._fam, proxy._block, proxy._index
    stages = session.stages[call.module_name]
    k = stage_index(stages, i)
    st = stages[k]
    sc = call.staged
    if sc is None or i == 0:
        sc = call.staged = StagedCall()
    if sc.skipping and sc.stage == k:  # the rest of a reused stage: hand the inputs through
        bound = _bind(proxy._names, args, kwargs)
        return fam.pack({n: bound.get(n) for n in fam.streams})
    if i == st.start:
        bound = _bind(proxy._names, args, kwargs)
        if call.branch is None:
            call.branch = session._branch(call, bound["hidden_states"])
            call.compute = True
        sc.stage, sc.skipping, sc.probe = k, False, {}
        sc.start = _tensors({n: bound.get(n) for n in fam.streams})
    out = block(*args, **kwargs)
    state = call.branch.state
    if i == st.probe_end - 1:
        sc.probe = _tensors(fam.unpack(out))
        compute = bool(session.rule.decide_stage(state, k, call.step, sc.start, sc.probe))
        err = getattr(state, "last_err", None)
        if err is not None:
            session.step_err[call.step] = max(err, session.step_err.get(call.step, float("-inf")))
        if st.skippable and not compute:
            sc.skipping = True
            call.compute = False
            skips = call.branch.__dict__.setdefault("stage_skips", {})
            skips.setdefault(k, []).append(call.step)
            reused = session.rule.reuse(state, k, sc.start, sc.probe)
            return fam.pack({n: reused.get(n, sc.probe.get(n)) for n in fam.streams})
    if i == st.end - 1:
        session.rule.record(state, k, sc.start, sc.probe, _tensors(fam.unpack(out)))
    return out
