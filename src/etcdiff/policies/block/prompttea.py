"""PromptTea (2507.06739): TeaCache with its threshold set per prompt by the prompt's complexity.

From the paper and its released Wan 2.1 script (Apache-2.0): with ``e`` the prompt's text embedding averaged
over tokens and ``s``, ``c`` stored embeddings of a *simple* and a *complex* reference,

    r = cos(e, c) / (cos(e, s) + cos(e, c)),   w = sigmoid(sharpness * (r - 0.5)),
    threshold(e) = w * threshold_complex + (1 - w) * threshold_simple

(released: sharpness 50, 0.09 for complex prompts, 0.23 for simple ones), and the TeaCache rule
(:mod:`etcdiff.policies.block.teacache`) runs with that threshold. Here ``threshold`` is the simple-prompt end and
``complex_ratio`` the complex end relative to it (0.09 / 0.23 by default), so that one number scales both.

What is ours: the released artifacts (reference embeddings, a pickled regression of the output change on the
input change and the step, fixed to 50 steps) come without fitting scripts, so :func:`fit_prompt_references`
fits the references from calibration runs (prompts whose outputs change most form the complex reference) and the
rescaling is TeaCache's degree-4 polynomial fitted on the same runs. The embedding is the one the transformer's
blocks receive (the projected text stream; DiT: the class embedding). As in PromptTea, the positive prompt's
threshold serves both CFG branches (per-branch thresholds let them drift apart, and the guided difference of a
fresh and a stale output costs accuracy): the call diffusers names ``"cond"``, else the second half of an even
batch (diffusers batches CFG as ``[negative, positive]``), else the whole batch; with several positive prompts,
the lowest threshold. Cosines below 0 count as 0 (``r = 0.5`` when both are 0). The released CFG-skipping part (DynCFGCache) is not reproduced.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from .teacache import TeaCache, TeaCacheState

#: The released settings: simple-prompt threshold, complex-prompt threshold, sigmoid sharpness.
PROMPTTEA_RELEASED = {"threshold_simple": 0.23, "threshold_complex": 0.09, "sharpness": 50.0}


@dataclass
class PromptTeaState(TeaCacheState):
    """TeaCache's accumulators plus one threshold per sample (set at the branch's first call)."""

    thresholds: list[float] | None = None
    weights: list[float] = field(default_factory=list)


def complexity_weight(embedding: torch.Tensor, simple: torch.Tensor, complex_: torch.Tensor,
                      sharpness: float) -> float:
    """w = sigmoid(sharpness * (r - 0.5)), r = cos_c / (cos_s + cos_c) with negative cosines counted as 0."""
    e = embedding.detach().float().flatten()
    cs = max(0.0, float(torch.nn.functional.cosine_similarity(e, simple.float().flatten(), dim=0)))
    cc = max(0.0, float(torch.nn.functional.cosine_similarity(e, complex_.float().flatten(), dim=0)))
    r = 0.5 if cs + cc == 0.0 else cc / (cs + cc)
    return 1.0 / (1.0 + math.exp(-sharpness * (r - 0.5)))


class PromptTea(TeaCache):
    """TeaCache whose threshold follows the prompt's complexity (needs the fitted references)."""

    name = "prompttea"
    needs_condition = True

    def __init__(self, threshold: float = PROMPTTEA_RELEASED["threshold_simple"],
                 complex_ratio: float = PROMPTTEA_RELEASED["threshold_complex"] / PROMPTTEA_RELEASED["threshold_simple"],
                 sharpness: float = PROMPTTEA_RELEASED["sharpness"], coefficients: Sequence[float] | None = None,
                 simple_reference: Sequence[float] | None = None,
                 complex_reference: Sequence[float] | None = None) -> None:
        super().__init__(threshold, coefficients)
        if not 0.0 <= float(complex_ratio) <= 1.0:
            raise ValueError(f"prompttea: complex_ratio must be in [0, 1], got {complex_ratio!r}.")
        if not float(sharpness) > 0.0:
            raise ValueError(f"prompttea: sharpness must be > 0, got {sharpness!r}.")
        if (simple_reference is None) != (complex_reference is None):
            raise ValueError("prompttea: give both simple_reference and complex_reference, or neither.")
        self.complex_ratio = float(complex_ratio)
        self.sharpness = float(sharpness)
        self.simple_reference = None if simple_reference is None else [float(v) for v in simple_reference]
        self.complex_reference = None if complex_reference is None else [float(v) for v in complex_reference]
        if self.simple_reference is not None and len(self.simple_reference) != len(self.complex_reference):
            raise ValueError("prompttea: the two references must have the same length.")

    def new_state(self) -> PromptTeaState:
        return PromptTeaState()

    def threshold_for(self, embedding: torch.Tensor | None) -> tuple[float, float]:
        """(threshold, w) for one sample's mean text embedding."""
        if self.simple_reference is None:
            raise RuntimeError(
                "prompttea: no reference embeddings; calibrate with `etcdiff calibrate --method prompttea` or pass "
                "simple_reference= and complex_reference=.")
        if embedding is None:
            w = 0.5
        else:
            if embedding.numel() != len(self.simple_reference):
                raise ValueError(
                    f"prompttea: the references have {len(self.simple_reference)} values but this model's text "
                    f"embedding has {embedding.numel()}; calibrate prompttea on this model.")
            w = complexity_weight(embedding, torch.tensor(self.simple_reference),
                                  torch.tensor(self.complex_reference), self.sharpness)
        return self.threshold * (w * self.complex_ratio + (1.0 - w)), w

    def begin(self, num_steps: int) -> None:
        super().begin(num_steps)
        self.generation_thresholds: list[float] = []

    def set_condition(self, state: PromptTeaState, embeddings: torch.Tensor | None, context: str | None = None) -> None:
        """The thresholds of the samples of ``embeddings`` ``[B, D]`` (``None``: no prompt, w = 0.5), at a branch's
        first call. The positive prompts' join the generation's: the whole call where diffusers names it
        ``"cond"``, none where it is ``"uncond"``, else the second half of an even batch (diffusers batches CFG as
        ``[negative, positive]``) or the whole batch."""
        rows = [None] if embeddings is None else list(embeddings)
        pairs = [self.threshold_for(e) for e in rows]
        state.thresholds = [t for t, _ in pairs]
        state.weights = [w for _, w in pairs]
        n = len(state.thresholds)
        if context == "uncond":
            positive = []
        elif context != "cond" and n >= 2 and n % 2 == 0:
            positive = state.thresholds[n // 2:]
        else:
            positive = state.thresholds
        self.generation_thresholds = getattr(self, "generation_thresholds", []) + positive

    def thresholds_for(self, state: TeaCacheState, n: int) -> list[float]:
        """One threshold for every branch and sample: the lowest of the generation's positive prompts, so that the
        conditional and unconditional branches keep skipping the same steps."""
        got = getattr(self, "generation_thresholds", None) or getattr(state, "thresholds", None)
        if not got:
            return super().thresholds_for(state, n)
        return [min(got)] * n

    def params(self) -> dict[str, Any]:
        return {**super().params(), "complex_ratio": self.complex_ratio, "sharpness": self.sharpness,
                "simple_reference": self.simple_reference, "complex_reference": self.complex_reference}

    def __repr__(self) -> str:
        return (f"PromptTea(threshold={self.threshold!r}, complex_ratio={self.complex_ratio!r}, "
                f"sharpness={self.sharpness!r})")


def fit_prompt_references(embeddings: Sequence[Sequence[float]], output_changes: Sequence[float]
                          ) -> tuple[list[float], list[float]]:
    """The simple and complex references: the mean embeddings of the lower and upper halves of the calibration
    trajectories ranked by their mean output change (one embedding and one change per trajectory)."""
    if len(embeddings) != len(output_changes):
        raise ValueError("fit_prompt_references: one output change per embedding is needed.")
    ok = [i for i, c in enumerate(output_changes) if math.isfinite(float(c))]
    if len(ok) < 2:
        raise ValueError("fit_prompt_references: at least two calibration trajectories are needed; give more "
                         "prompts.")
    order = sorted(ok, key=lambda i: float(output_changes[i]))
    half = len(order) // 2
    rows = torch.tensor([[float(v) for v in embeddings[i]] for i in order])
    simple = rows[:half].mean(dim=0) if len(order) % 2 == 0 else rows[:half + 1].mean(dim=0)
    complex_ = rows[half:].mean(dim=0)
    return simple.tolist(), complex_.tolist()
