"""PromptTea's calibration: its rescaling polynomial and its simple/complex reference embeddings, from full runs.

The released PromptTea ships these as per-model files without the scripts that made them; here they are fitted
from uncached generations of the calibration prompts (block cache in record mode, nothing skipped):

* the rescaling polynomial is TeaCache's degree-4 fit (:func:`~etcdiff.integration.block.calibration.calibrate_teacache`);
* every (prompt, call of the step, sample) is one trajectory, with the prompt embedding its first block received
  (:func:`~etcdiff.integration.block.conditions.condition_embedding`) and its mean relative output change per
  step; the references are the mean embeddings of the calmer and the busier half
  (:func:`~etcdiff.policies.block.prompttea.fit_prompt_references`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ...policies.block.prompttea import fit_prompt_references
from ...policies.block.teacache import fit_teacache_coefficients
from .calibration import record_block_signals
from .proxy import _bind, _signature
from .conditions import condition_embedding
from .session import per_sample_rel
from ..denoisers import split_output


@dataclass
class PromptTeaCalibration:
    coefficients: list[float]
    simple_reference: list[float]
    complex_reference: list[float]
    embeddings: list[list[float]]  # one per trajectory
    output_changes: list[float]  # mean relative output change per step, one per trajectory

    def settings(self) -> dict[str, Any]:
        return {"coefficients": self.coefficients, "simple_reference": self.simple_reference,
                "complex_reference": self.complex_reference}


class _CallRecorder:
    """Per denoiser call of one generation (into ``calls``, shared by the experts of a two-expert model): the
    first block's prompt embedding and the model output."""

    def __init__(self, model: torch.nn.Module, first_block: torch.nn.Module, calls: list[dict[str, Any]]) -> None:
        self.calls = calls
        names = _signature(first_block)

        def on_block(module: Any, args: tuple, kwargs: dict) -> None:
            if self.calls and self.calls[-1].get("embedding") is None:
                emb = condition_embedding(first_block, _bind(names, args, kwargs))
                self.calls[-1]["embedding"] = emb

        self.handles = [
            model.register_forward_pre_hook(lambda m, a: self.calls.append({})),
            first_block.register_forward_pre_hook(on_block, with_kwargs=True),
            model.register_forward_hook(lambda m, a, out: self.calls[-1].__setitem__(
                "output", split_output(out)[0].detach().float())),
        ]

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _trajectories(calls: list[dict[str, Any]], steps: int) -> tuple[list[list[float]], list[float]]:
    if not calls or len(calls) % steps:
        raise ValueError(f"etcdiff prompttea calibration: {len(calls)} denoiser calls in {steps} steps; the "
                         "pipeline must make the same number of calls every step.")
    per_step = len(calls) // steps
    embeddings, changes = [], []
    for j in range(per_step):
        seq = [calls[s * per_step + j] for s in range(steps)]
        emb = seq[0].get("embedding")
        outs = [c["output"] for c in seq]
        batch = outs[0].shape[0]
        rels = [per_sample_rel(b, a, batch) for a, b in zip(outs, outs[1:]) if a.shape == b.shape]
        for i in range(batch if emb is not None and emb.shape[0] == batch else 0):
            embeddings.append(emb[i].tolist())
            changes.append(sum(r[i] for r in rels) / max(len(rels), 1))
    return embeddings, changes


@torch.no_grad()
def calibrate_prompttea(pipe: Any, prompts: Sequence[Any], steps: int, seed: int = 0,
                        **call_kwargs: Any) -> PromptTeaCalibration:
    """Fit PromptTea's parts from full runs of ``prompts`` (strings or dicts of call arguments); the references
    need at least two trajectories (two prompts, or one prompt with classifier-free guidance)."""
    from .cache import find_block_denoisers

    if not prompts:
        raise ValueError("etcdiff prompttea calibration: give at least one prompt.")
    denoisers = find_block_denoisers(pipe)
    calls: list[dict[str, Any]] = []
    recorders = [_CallRecorder(model, fam.blocks(model)[0], calls) for model, fam in denoisers.values()]
    embeddings: list[list[float]] = []
    changes: list[float] = []
    input_changes: list[float] = []
    output_changes: list[float] = []
    try:
        for prompt in prompts:
            calls.clear()
            rec = record_block_signals(pipe, [prompt], steps, seed, **call_kwargs)
            input_changes += rec.input_changes
            output_changes += rec.output_changes
            e, c = _trajectories(calls, steps)
            embeddings += e
            changes += c
    finally:
        for r in recorders:
            r.remove()
    if not embeddings:
        raise ValueError("etcdiff prompttea calibration: the model's blocks received no prompt embedding "
                         "(no encoder_hidden_states or class_labels); PromptTea needs a conditioned model.")
    simple, complex_ = fit_prompt_references(embeddings, changes)
    coefficients = fit_teacache_coefficients(input_changes, output_changes)
    return PromptTeaCalibration(coefficients, simple, complex_, embeddings, changes)
