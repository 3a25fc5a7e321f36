"""diffusers' own cache hooks (FirstBlockCache, MagCache, TaylorSeer) put on a denoiser as they ship.

The hooks are installed with ``transformer.enable_cache(config)`` where the model has diffusers' ``CacheMixin``
(Flux, Wan); DiT, PixArt and SD3 lack it, so the same ``diffusers.hooks.apply_*`` functions are applied
directly. Those hooks keep their state per ``cache_context`` name; where the pipeline sets none (DiT, PixArt,
SD3 pipelines, custom loops) a context hook names each call by its order within the step (``call0``,
``call1``), and the session resets the hooks' state at the start of every generation (CacheMixin pipelines
reset it at their end; the others never do).

MagCache's ``num_inference_steps`` is set from the pipeline's actual step count at the start of every
generation (its ratios interpolated to it, as ``MagCacheConfig`` does), since diffusers' hooks count steps
themselves and would otherwise drift. On FLUX the ratios default to ``diffusers.hooks.mag_cache.FLUX_MAG_RATIOS``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from .diffusers_more_caches import HOOK_NAMES, MORE_DIFFUSERS_PEERS, more_config
from .support import attention_patterns, taylorseer_default_matches

if TYPE_CHECKING:
    from .session import ExternalSession

CONTEXT_HOOK = "etcdiff_external_context"
_DIFFUSERS_HOOK_NAMES = {
    "diffusers-fbc": ("fbc_leader_block_hook", "fbc_block_hook"),
    "diffusers-magcache": ("mag_cache_leader_block_hook", "mag_cache_block_hook"),
    "diffusers-taylorseer": ("taylorseer_cache",),
    **HOOK_NAMES,
}


def _context_hook_class() -> type:
    from diffusers.hooks import ModelHook

    class ContextHook(ModelHook):
        """Names each denoiser call for diffusers' stateful hooks where the pipeline sets no cache_context."""

        def __init__(self, session: "ExternalSession") -> None:
            super().__init__()
            self.session = session

        def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
            name = self.session.context_name()
            if name is None:
                return self.fn_ref.original_forward(*args, **kwargs)
            ctx = _make_context(name)
            for sm in self.session.state_managers:
                sm.set_context(ctx)
            try:
                return self.fn_ref.original_forward(*args, **kwargs)
            finally:
                for sm in self.session.state_managers:
                    sm.set_context(None)

    return ContextHook


def _make_context(name: str) -> Any:
    try:
        from diffusers.hooks.hooks import CacheContext
    except ImportError:  # older diffusers: contexts are plain names
        return name
    return CacheContext(name)


def _state_managers(model: torch.nn.Module) -> list[Any]:
    from diffusers.hooks.hooks import StateManager

    found = []
    for m in model.modules():
        registry = getattr(m, "_diffusers_hook", None)
        if registry is None:
            continue
        for hook in registry.hooks.values():
            if getattr(hook, "_is_stateful", False):
                found += [v for v in vars(hook).values() if isinstance(v, StateManager)]
    return found



def _config(session: "ExternalSession", model: torch.nn.Module, name: str, kwargs: dict[str, Any]) -> tuple:
    """The peer's diffusers config built from ``kwargs`` (with the model-dependent defaults) and its apply function."""
    from diffusers.hooks import (FirstBlockCacheConfig, MagCacheConfig, TaylorSeerCacheConfig, apply_first_block_cache,
                                 apply_mag_cache, apply_taylorseer_cache)

    if name == "diffusers-fbc":
        config, apply = FirstBlockCacheConfig(**kwargs), apply_first_block_cache
    elif name == "diffusers-magcache":
        kwargs = dict(kwargs)
        if kwargs.get("mag_ratios") is None and not kwargs.get("calibrate", False):
            from diffusers import FluxTransformer2DModel
            from diffusers.hooks.mag_cache import FLUX_MAG_RATIOS

            if not isinstance(model, FluxTransformer2DModel):
                raise ValueError(
                    f"etcdiff: diffusers-magcache needs mag_ratios for {type(model).__name__} (they are model-"
                    "dependent; only FLUX's ship with diffusers). Get them with diffusers_magcache_ratios(pipe, ...) "
                    "(diffusers' own calibrate=True run) or etcdiff's calibrate_magcache, or pass calibrate=True."
                )
            kwargs["mag_ratios"] = FLUX_MAG_RATIOS.clone()
            kwargs.setdefault("num_inference_steps", len(FLUX_MAG_RATIOS))
        config, apply = MagCacheConfig(**kwargs), apply_mag_cache
        if config.mag_ratios is not None:
            # keep the given table; begin() interpolates it to each generation's step count
            given = kwargs["mag_ratios"]
            session.base_ratios = given.clone() if torch.is_tensor(given) else torch.tensor(given)
    elif name == "diffusers-taylorseer":
        kwargs = dict(kwargs)
        if (kwargs.get("cache_identifiers") is None and kwargs.get("skip_predict_identifiers") is None
                and not kwargs.get("use_lite_mode", False) and not taylorseer_default_matches(model)):
            kwargs["cache_identifiers"] = attention_patterns(model)
            session.params["cache_identifiers"] = kwargs["cache_identifiers"]
        config, apply = TaylorSeerCacheConfig(**kwargs), apply_taylorseer_cache
    elif name in MORE_DIFFUSERS_PEERS:
        config, apply = more_config(session, name, kwargs)
    else:  # pragma: no cover - checked before
        raise ValueError(name)
    return config, apply


def enable_diffusers_cache(session: "ExternalSession", name: str, kwargs: dict[str, Any]) -> None:
    """Put the peer's hooks (and the context hook) on every denoiser of the session (both experts of a
    two-expert model), with one config."""
    from diffusers.hooks import HookRegistry

    config, apply = _config(session, session.model, name, kwargs)
    session.config = config
    for model in session.models.values():
        if hasattr(model, "enable_cache"):
            model.enable_cache(config)
        else:
            apply(model, config)
            HookRegistry.check_if_exists_or_initialize(model).invalidate_child_registries_cache()
        session.state_managers += _state_managers(model)
    session.needs_reset = True
    for model in session.models.values():
        HookRegistry.check_if_exists_or_initialize(model).register_hook(_context_hook_class()(session), CONTEXT_HOOK)


def remove_diffusers_cache(session: "ExternalSession") -> None:
    """Remove the context hook and the peer's hooks with diffusers' own functions, from every denoiser."""
    from diffusers.hooks import HookRegistry

    for model in session.models.values():
        registry = getattr(model, "_diffusers_hook", None)
        if registry is not None:
            registry.remove_hook(CONTEXT_HOOK, recurse=False)
        if getattr(model, "_cache_config", None) is not None and hasattr(model, "disable_cache"):
            model.disable_cache()
        elif registry is not None:
            for hook_name in _DIFFUSERS_HOOK_NAMES.get(session.peer, ()):
                registry.remove_hook(hook_name, recurse=True)
            HookRegistry.check_if_exists_or_initialize(model).invalidate_child_registries_cache()
