"""H2-Cache (2510.27171): two first-block checks, one per half of the stack, on pooled thumbnails of residuals.

As in the authors' FLUX code (Apache-2.0, nunchaku), per CFG branch:

* **Stage 1** covers the double (MM-DiT) blocks. Its first block always runs; its residual ``r`` (output minus
  input) is pooled into a thumbnail and compared with the thumbnail of the first-block residual stored at the
  last *miss*: ``diff = mean|T(r_stored) - T(r)| / mean|T(r_stored)|``. A hit (``diff < threshold``) adds the
  stored residual of the remaining double blocks to the first block's output; a miss stores ``r``, runs the
  remaining blocks and stores their residual.
* **Stage 2** does the same over the single blocks with ``threshold_2``, comparing the residual of all streams
  (image and text tokens, as the single blocks see them concatenated). A stage-1 hit forces a stage-2 hit
  (its first block still runs), as in the released code.

Thumbnail ``T``: the residual ``[B, tokens, dim]`` seen as one ``[tokens, dim]`` image per sample, average-pooled
with a square kernel ``k = tokens // pool`` (``pool`` = 2048 for stage 1, 384 for stage 2, the released sizes;
``k`` is at least 1, where the released code would fail on short sequences). The batch shares one decision.

The released code returns an "adaptive" threshold (the observed diff) on a miss but never stores it, so it has
no effect; it is left out. No step is forced to run (the released code forces none).

**Single-stack families** (SD3, DiT, PixArt, Wan) have no double/single split: here the stack is cut at its
middle block (``L // 2``) and each half gets the same first-block check (ours). A half of one block has nothing
to skip, so models with fewer than four blocks skip at most one half.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from .base import Stage, Streams, same_shapes, streams_minus

#: The released thresholds (stage 1, stage 2) and thumbnail sizes in tokens.
H2_THRESHOLDS = (0.12, 0.09)
H2_POOL_TOKENS = (2048, 384)


def thumbnail(residual: torch.Tensor, pool_tokens: int) -> torch.Tensor:
    """Average-pooled thumbnail of a ``[B, tokens, dim]`` residual (other layouts are flattened to it)."""
    r = residual.detach().float()
    r = r.reshape(r.shape[0], 1, r.shape[1] if r.dim() >= 3 else 1, -1)
    k = max(1, r.shape[2] // max(1, pool_tokens))
    k = min(k, r.shape[2], r.shape[3])
    return F.avg_pool2d(r, kernel_size=k, stride=k)


def _compared(stage: int, start: Streams, probe: Streams) -> torch.Tensor:
    """The first-block residual a stage compares: image tokens (stage 1); all streams' tokens (stage 2)."""
    res = streams_minus(probe, start)
    if stage == 0 or len(res) == 1:
        return res["hidden_states"]
    parts = [res[n] for n in ("encoder_hidden_states", "hidden_states") if n in res]
    if len({(p.dim(), p.shape[0], p.shape[-1]) for p in parts}) == 1 and parts[0].dim() == 3:
        return torch.cat(parts, dim=1)
    return res["hidden_states"]


@dataclass
class H2CacheState:
    """One branch: per stage, the stored first-block thumbnail and the remaining blocks' residual."""

    first: dict[int, torch.Tensor] = field(default_factory=dict)
    rest: dict[int, Streams] = field(default_factory=dict)
    stage1_hit: bool = False
    last_err: float | None = None


class H2Cache:
    """The H2-Cache rule for the block machinery (a :class:`~etcdiff.policies.block.base.StagedBlockRule`).

    ``threshold``: stage 1 (double blocks); ``threshold_2``: stage 2 (single blocks), by default
    ``threshold * 0.09 / 0.12``, the released ratio (0.12 and 0.09).
    """

    name = "h2cache"
    needs_signal = False

    def __init__(self, threshold: float = H2_THRESHOLDS[0], threshold_2: float | None = None,
                 pool_tokens: int = H2_POOL_TOKENS[0], pool_tokens_2: int = H2_POOL_TOKENS[1]) -> None:
        threshold = float(threshold)
        threshold_2 = threshold * H2_THRESHOLDS[1] / H2_THRESHOLDS[0] if threshold_2 is None else float(threshold_2)
        for name, v in (("threshold", threshold), ("threshold_2", threshold_2)):
            if not v >= 0.0:
                raise ValueError(f"h2cache: {name} must be >= 0, got {v!r}.")
        for name, v in (("pool_tokens", pool_tokens), ("pool_tokens_2", pool_tokens_2)):
            if int(v) != v or v < 1:
                raise ValueError(f"h2cache: {name} must be a positive integer, got {v!r}.")
        self.threshold, self.threshold_2 = threshold, threshold_2
        self.pool = (int(pool_tokens), int(pool_tokens_2))
        self.num_steps = 0

    def begin(self, num_steps: int) -> None:
        if not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"h2cache: the number of steps must be a positive integer, got {num_steps!r}.")
        self.num_steps = num_steps

    def new_state(self) -> H2CacheState:
        return H2CacheState()

    def stages(self, list_lengths: Sequence[int]) -> list[Stage]:
        lengths = [n for n in list_lengths if n > 0]
        total = sum(lengths)
        if total < 1:
            raise ValueError("h2cache: the model has no blocks.")
        split = lengths[0] if len(lengths) >= 2 else total // 2
        if split <= 0:
            return [Stage(0, 1, total)]
        return [Stage(0, 1, split), Stage(split, split + 1, total)]

    def decide_stage(self, state: H2CacheState, stage: int, step: int, start: Streams, probe: Streams) -> bool:
        residual = _compared(stage, start, probe)
        thumb = thumbnail(residual, self.pool[min(stage, 1)])
        stored = state.first.get(stage)
        state.last_err = None
        usable = stored is not None and stored.shape == thumb.shape and same_shapes(state.rest.get(stage), probe)
        if stage > 0 and state.stage1_hit and usable:
            return False  # forced by the stage-1 hit; the stored first-block residual is kept
        hit = False
        if usable:
            diff = float((stored - thumb).abs().mean() / stored.abs().mean())
            state.last_err = diff
            hit = diff < (self.threshold if stage == 0 else self.threshold_2)  # NaN: a miss
        if stage == 0:
            state.stage1_hit = hit
        if not hit:
            state.first[stage] = thumb
        return not hit

    def reuse(self, state: H2CacheState, stage: int, start: Streams, probe: Streams) -> Streams:
        rest = state.rest[stage]
        return {n: t + rest[n] if n in rest else t for n, t in probe.items()}

    def record(self, state: H2CacheState, stage: int, start: Streams, probe: Streams, end: Streams) -> None:
        state.rest[stage] = streams_minus(end, probe)

    def params(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "threshold_2": self.threshold_2, "pool_tokens": self.pool[0],
                "pool_tokens_2": self.pool[1]}

    def __repr__(self) -> str:
        return f"H2Cache(threshold={self.threshold!r}, threshold_2={self.threshold_2!r})"
