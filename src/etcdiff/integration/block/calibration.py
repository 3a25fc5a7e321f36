"""Calibration runs for the block caches: full (uncached) generations that record TeaCache's signal pairs
and MagCache's residual magnitude ratios.

``record_block_signals`` enables the block cache in record mode (nothing is skipped) and runs the prompts;
TeaCache's coefficients are the degree-4 fit of the output change against the modulated input's change
(:func:`calibrate_teacache`), MagCache's ratio table the element-wise mean of the per-run
gamma_t = mean over tokens of ||R_t|| / ||R_{t-1}|| (:func:`calibrate_magcache`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ...policies.block.magcache import fit_magcache_ratios
from ...policies.block.teacache import fit_teacache_coefficients
from .cache import disable_block_cache, enable_block_cache, is_block_cache_enabled, session_of
from .session import BlockRecording


@dataclass
class TeaCacheCalibration:
    coefficients: list[float]
    input_changes: list[float]
    output_changes: list[float]


@dataclass
class MagCacheCalibration:
    ratios: list[float]
    sequences: list[list[float]]  # one gamma sequence per run and branch


def _call_kwargs(prompt: Any, steps: int, seed: int, call_kwargs: dict[str, Any]) -> dict[str, Any]:
    kw = {"output_type": "latent", **call_kwargs, "num_inference_steps": steps,
          "generator": torch.Generator().manual_seed(seed)}
    if isinstance(prompt, dict):
        kw.update(prompt)
    elif prompt is not None:
        kw["prompt"] = prompt
    return kw


@torch.no_grad()
def record_block_signals(pipe: Any, prompts: Sequence[Any], steps: int, seed: int = 0,
                         **call_kwargs: Any) -> BlockRecording:
    """Run full (uncached) generations and record TeaCache's input/output changes and MagCache's gammas.

    ``prompts``: strings (passed as ``prompt=``) or dicts of call arguments (e.g. precomputed embeddings);
    every run uses ``num_inference_steps=steps`` and ``torch.Generator().manual_seed(seed)``; ``call_kwargs``
    go to every call (``output_type`` defaults to ``"latent"``).
    """
    if not prompts:
        raise ValueError("etcdiff calibration: give at least one prompt.")
    if is_block_cache_enabled(pipe):
        raise RuntimeError("etcdiff calibration: a block cache is enabled on this pipeline; disable it first.")
    enable_block_cache(pipe, record=True)
    try:
        session = session_of(pipe)
        for prompt in prompts:
            pipe(**_call_kwargs(prompt, steps, seed, call_kwargs))
        return session.recording
    finally:
        disable_block_cache(pipe)


def calibrate_teacache(pipe: Any, prompts: Sequence[Any], steps: int, seed: int = 0,
                       **call_kwargs: Any) -> TeaCacheCalibration:
    """Fit TeaCache's poly4 from full runs: rel change of the first block's modulated input -> rel change of
    the model output, pooled over steps, branches, samples and prompts (``np.polyfit`` degree 4)."""
    rec = record_block_signals(pipe, prompts, steps, seed, **call_kwargs)
    coeffs = fit_teacache_coefficients(rec.input_changes, rec.output_changes)
    return TeaCacheCalibration(coeffs, rec.input_changes, rec.output_changes)


def calibrate_magcache(pipe: Any, prompts: Sequence[Any], steps: int, seed: int = 0,
                       **call_kwargs: Any) -> MagCacheCalibration:
    """MagCache's ratio table from full runs: gamma_t per run and branch, averaged element-wise."""
    rec = record_block_signals(pipe, prompts, steps, seed, **call_kwargs)
    return MagCacheCalibration(fit_magcache_ratios(rec.gamma_sequences), rec.gamma_sequences)
