"""diffusers' SeaCache, FasterCache and Pyramid Attention Broadcast hooks: where they run, and their configs.

They are put on and taken off like the other diffusers hooks (:mod:`~etcdiff.integration.external.diffusers_adapter`);
this module says where each one runs and fills in what a config needs from the pipeline:

* ``diffusers-seacache``: ``SeaCacheConfig`` (diffusers 0.42.1 and newer). Its hooks find the current step and
  sigma in the ``cache_context`` the pipeline sets and the noisy latents through a model adapter; diffusers ships
  adapters for Wan text-to-video and Cosmos 3 only, and ``WanPipeline`` passes the step data. Elsewhere SeaCache
  would run "fail-open" (nothing cached), so it is refused there.
* ``diffusers-fastercache``: ``FasterCacheConfig``: attention outputs reused every ``spatial_attention_block_skip_range``
  calls, and (``is_guidance_distilled=False``) the unconditional half of a batched-CFG call rebuilt from the
  conditional half. Ours: ``is_guidance_distilled`` defaults to ``True`` (attention reuse only), since the CFG part
  assumes one call carrying ``[uncond, cond]``, which pipelines with separate cond/uncond calls or without CFG
  do not make; pass ``False`` on batched-CFG pipelines (SD3, PixArt, CogVideoX).
* ``diffusers-pab``: ``PyramidAttentionBroadcastConfig``: attention outputs broadcast for a range of timesteps;
  with no skip range given, the spatial one is 2 (diffusers' own fallback, here without its warning).

FasterCache's first call must not fall inside its spatial timestep range (diffusers would reuse an empty cache and
fail with a TypeError): :func:`check_fastercache_start` refuses such a generation with a clear error instead.
FasterCache and PAB need ``current_timestep_callback``: the session's current timestep (the pipeline's
``current_timestep`` where it keeps one, else ``scheduler.timesteps[step]``).
"""

from __future__ import annotations

import re
from typing import Any

import torch

MORE_DIFFUSERS_PEERS = ("diffusers-seacache", "diffusers-fastercache", "diffusers-pab")
HOOK_NAMES = {
    "diffusers-seacache": ("sea_cache_root", "sea_cache_leader_block", "sea_cache_block", "sea_cache_post_norm"),
    "diffusers-fastercache": ("faster_cache_denoiser", "faster_cache_block"),
    "diffusers-pab": ("pyramid_attention_broadcast",),
}
SEACACHE_MIN_VERSION = "0.42.1"


def seacache_status() -> str | None:
    """``None`` when the installed diffusers ships SeaCache, else why not (naming the version needed)."""
    import diffusers
    import diffusers.hooks

    if hasattr(diffusers.hooks, "SeaCacheConfig"):
        return None
    return (f"the installed diffusers {diffusers.__version__} has no SeaCacheConfig; it ships from diffusers "
            f"{SEACACHE_MIN_VERSION}: pip install -U 'diffusers>={SEACACHE_MIN_VERSION}'")


def _attentions(model: torch.nn.Module, patterns: tuple[str, ...], anchored: bool) -> list[str]:
    from diffusers.hooks._common import _ATTENTION_CLASSES

    match = re.match if anchored else re.search
    return [n for n, m in model.named_modules()
            if isinstance(m, _ATTENTION_CLASSES) and any(match(p, n) for p in patterns)]


def why_not_more(model: torch.nn.Module, peer: str) -> str | None:
    """``None`` if ``peer`` runs on ``model``, else the reason."""
    if peer == "diffusers-seacache":
        status = seacache_status()
        if status is not None:
            return status
        from diffusers import WanTransformer3DModel

        if isinstance(model, WanTransformer3DModel) and model.config.in_channels == model.config.out_channels:
            return None
        if type(model).__name__ == "Cosmos3OmniTransformer":
            return None
        return ("diffusers' SeaCache has model adapters only for Wan text-to-video and Cosmos 3 (elsewhere it needs "
                "a raw_vision_callback and step_index/sigma in the pipeline's cache_context, or it caches nothing)")
    if peer == "diffusers-fastercache":
        from diffusers.hooks.faster_cache import _SPATIAL_ATTENTION_BLOCK_IDENTIFIERS

        if _attentions(model, _SPATIAL_ATTENTION_BLOCK_IDENTIFIERS, anchored=True):
            return None
        return "no attention module inside a top-level block list matches FasterCache's patterns"
    if peer == "diffusers-pab":
        from diffusers.hooks._common import _SPATIAL_TRANSFORMER_BLOCK_IDENTIFIERS

        if _attentions(model, _SPATIAL_TRANSFORMER_BLOCK_IDENTIFIERS, anchored=False):
            return None
        return "no diffusers attention module inside a block list matches Pyramid Attention Broadcast's patterns"
    raise ValueError(peer)  # pragma: no cover - callers pass the names above


def current_timestep(session: Any) -> float:
    """The timestep of the step the session is in (FasterCache's and PAB's ``current_timestep_callback``)."""
    pipe = session.pipe_ref()
    t = getattr(pipe, "_current_timestep", None) if pipe is not None else None
    if t is None:
        step = session._step()
        scheduler = session.tracker.scheduler
        if step is None or scheduler is None:
            return -1.0
        t = scheduler.timesteps[min(step, len(scheduler.timesteps) - 1)]
    return float(t.flatten()[0]) if torch.is_tensor(t) else float(t)


def more_config(session: Any, name: str, kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """The peer's diffusers config from ``kwargs`` and its apply function."""
    from diffusers import hooks

    kwargs = dict(kwargs)
    if name == "diffusers-seacache":
        return hooks.SeaCacheConfig(**kwargs), hooks.apply_sea_cache
    kwargs.setdefault("current_timestep_callback", lambda: current_timestep(session))
    if name == "diffusers-fastercache":
        kwargs.setdefault("is_guidance_distilled", True)
        kwargs.setdefault("attention_weight_callback", lambda _: 0.5)  # diffusers' default, without its warning
        return hooks.FasterCacheConfig(**kwargs), hooks.apply_faster_cache
    ranges = ("spatial_attention_block_skip_range", "temporal_attention_block_skip_range",
              "cross_attention_block_skip_range")
    if all(kwargs.get(r) is None for r in ranges):
        kwargs["spatial_attention_block_skip_range"] = 2
    return hooks.PyramidAttentionBroadcastConfig(**kwargs), hooks.apply_pyramid_attention_broadcast


def check_fastercache_start(session: Any) -> None:
    """A clear error before diffusers' FasterCache reuses an empty cache: its attention hook reuses on the first
    call when that call's timestep is inside ``spatial_attention_timestep_skip_range`` (a TypeError in diffusers)."""
    lo, hi = session.config.spatial_attention_timestep_skip_range
    t = current_timestep(session)
    if lo < t < hi:
        raise ValueError(
            f"etcdiff: diffusers' FasterCache cannot start inside its reuse range: this generation's first timestep "
            f"{t:g} is inside spatial_attention_timestep_skip_range ({lo}, {hi}), so its first call would reuse an "
            f"empty cache. Pass a range that ends at or below {t:g}, or start the generation at a higher timestep.")
