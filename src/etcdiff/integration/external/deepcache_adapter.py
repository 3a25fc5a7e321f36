"""DeepCache (Ma et al., CVPR 2024) on UNet pipelines, through the ``deepcache`` package's ``DeepCacheSDHelper``.

The helper (Apache-2.0, PyPI ``deepcache``, imported as ``DeepCache``) wraps the ``forward`` of the UNet and of
its down, mid and up blocks: every ``cache_interval`` steps the whole UNet runs and every block's output is
stored; on the other steps only the shallow skip branch ``cache_branch_id`` runs (the blocks above it) and the
deep blocks return their stored outputs. It finds the step from the UNet's positional timestep in
``pipe.scheduler.timesteps``, and all calls of a step (batched CFG) share one state.

It runs on ``UNet2DConditionModel`` denoisers (SD 1.5, SDXL and their img2img, inpaint and ControlNet
pipelines). Only the helper is used: the package's own pipeline copies (``DeepCache.sd``, ``DeepCache.sdxl``) fail to
import with diffusers 0.42 (``PositionNet`` is no longer in ``diffusers.models.embeddings``). Ours: the helper's step origin and stored outputs are reset at
the start of every generation (the helper keeps them from the first generation, so a later one whose first step
has another index, e.g. img2img at another strength, would start from stale outputs); the removal is the
helper's ``disable`` followed by etcdiff's snapshot restore (the helper leaves bound methods as instance
attributes).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

import torch

DEEPCACHE_HINT = "pip install 'etcdiff[peers]' (or pip install deepcache)"


@dataclass
class DeepCacheSettings:
    """``DeepCacheSDHelper.set_params``: the full UNet runs every ``cache_interval`` steps; on the others only
    the skip branch ``cache_branch_id`` (0 = the shallowest) runs. Defaults: the README's SD 1.5 setting."""

    cache_interval: int = 3
    cache_branch_id: int = 0
    skip_mode: str = "uniform"

    def __post_init__(self) -> None:
        if int(self.cache_interval) != self.cache_interval or self.cache_interval < 1:
            raise ValueError(f"deepcache: cache_interval must be a positive integer, got {self.cache_interval!r}.")
        if int(self.cache_branch_id) != self.cache_branch_id or self.cache_branch_id < 0:
            raise ValueError(f"deepcache: cache_branch_id must be a non-negative integer, got {self.cache_branch_id!r}.")
        if self.skip_mode != "uniform":
            raise ValueError(f"deepcache: skip_mode must be 'uniform' (the helper's only schedule that refreshes its "
                             f"cache), got {self.skip_mode!r}.")


def deepcache_status() -> str | None:
    """``None`` when the ``deepcache`` package imports here, else why not (naming the extra)."""
    if importlib.util.find_spec("DeepCache") is None:
        return f"the deepcache package is not installed ({DEEPCACHE_HINT})"
    try:
        from DeepCache import DeepCacheSDHelper  # noqa: F401
    except Exception as e:  # pragma: no cover - depends on the environment
        return f"deepcache is installed but does not import here: {type(e).__name__}: {e}"
    return None


def deepcache_why_not(model: torch.nn.Module) -> str | None:
    status = deepcache_status()
    if status is not None:
        return status
    from diffusers import UNet2DConditionModel

    if not isinstance(model, UNet2DConditionModel):
        return "DeepCache's helper handles UNet2DConditionModel denoisers only (SD 1.5, SDXL and their variants)"
    return None


def enable_deepcache(session: Any, pipe: Any, kwargs: dict[str, Any]) -> None:
    from DeepCache import DeepCacheSDHelper

    settings = DeepCacheSettings(**kwargs)
    unet = session.models["unet"]
    branches = 3 * len(unet.down_blocks)
    if settings.cache_branch_id >= branches:
        raise ValueError(f"deepcache: cache_branch_id must be below {branches} for this UNet "
                         f"({len(unet.down_blocks)} down blocks), got {settings.cache_branch_id}.")
    helper = DeepCacheSDHelper(pipe=pipe)
    helper.set_params(cache_interval=settings.cache_interval, cache_branch_id=settings.cache_branch_id,
                      skip_mode=settings.skip_mode)
    helper.enable()
    session.target = helper
    session.config = settings


def reset_deepcache(session: Any) -> None:
    """A new generation: the helper's step origin and stored block outputs start afresh."""
    helper = session.target
    if helper is not None:
        helper.start_timestep = None
        helper.cached_output = {}


def remove_deepcache(session: Any) -> None:
    helper = session.target
    if helper is not None and getattr(helper, "function_dict", None):
        helper.disable()
    session.target = None
