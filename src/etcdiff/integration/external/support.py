"""Which external peer runs on which model, found from the model itself, and the error when one cannot.

diffusers' FirstBlockCache and MagCache hooks need a block list they recognise and block metadata for every
block class; TaylorSeer needs attention modules its patterns match (its default patterns are matched with
``re.fullmatch`` and miss models whose attentions are named ``attn1``/``attn2``: DiT, PixArt, Wan, for which
:func:`attention_patterns` gives the config's ``cache_identifiers``); cache-dit needs to import here and to
have a ``BlockAdapter`` for the pipeline class or its transformer class. SeaCache, FasterCache and PAB:
:mod:`~etcdiff.integration.external.diffusers_more_caches`; DeepCache: :mod:`~etcdiff.integration.external.deepcache_adapter`.
"""

from __future__ import annotations

import importlib.util
import re
from typing import Any

import torch

from .deepcache_adapter import deepcache_status, deepcache_why_not
from .diffusers_more_caches import MORE_DIFFUSERS_PEERS, seacache_status, why_not_more
from ..denoiser_owners import CannotRun
from ..denoisers import find_denoisers

EXTERNAL_PEERS = ("diffusers-fbc", "diffusers-magcache", "diffusers-taylorseer", "diffusers-seacache",
                  "diffusers-fastercache", "diffusers-pab", "cache-dit", "deepcache")
_ATTN_PATTERNS = [r"^blocks\.\d+\.attn\d*$", r"^transformer_blocks\.\d+\.attn\d*$",
                  r"^single_transformer_blocks\.\d+\.attn\d*$", r"^temporal_transformer_blocks\.\d+\.attn\d*$"]


def block_lists(model: torch.nn.Module) -> list[tuple[str, torch.nn.ModuleList]]:
    """The block lists diffusers' FBC/MagCache hooks find (same identifiers, same order)."""
    from diffusers.hooks._common import _ALL_TRANSFORMER_BLOCK_IDENTIFIERS

    return [(n, m) for n, m in model.named_children()
            if n in _ALL_TRANSFORMER_BLOCK_IDENTIFIERS and isinstance(m, torch.nn.ModuleList)]


def block_stack(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    return [(f"{n}.{i}", b) for n, lst in block_lists(model) for i, b in enumerate(lst)]


def has_block_metadata(block: torch.nn.Module) -> bool:
    try:
        _block_metadata(block)
        return True
    except ValueError:
        return False


def taylorseer_default_matches(model: torch.nn.Module) -> bool:
    from diffusers.hooks.taylorseer_cache import _TRANSFORMER_BLOCK_IDENTIFIERS

    return any(re.fullmatch(p, n) for n, _ in model.named_modules() for p in _TRANSFORMER_BLOCK_IDENTIFIERS)


def attention_patterns(model: torch.nn.Module) -> list[str]:
    return [p for p in _ATTN_PATTERNS if any(re.fullmatch(p, n) for n, _ in model.named_modules())]


def cache_dit_status() -> str | None:
    """``None`` when cache-dit imports here, else why not."""
    if importlib.util.find_spec("cache_dit") is None:
        return "cache-dit is not installed (pip install 'etcdiff[peers]')"
    try:
        import cache_dit  # noqa: F401
    except Exception as e:  # pragma: no cover - depends on the environment
        return f"cache-dit is installed but does not import here: {type(e).__name__}: {e}"
    return None


def cache_dit_factory(pipe: Any) -> Any:
    """How cache-dit takes this pipeline: ``"pipe"`` (it knows the pipeline class), the adapter factory it
    registered for the transformer class, or ``None``. No side effect (building an adapter may patch the model)."""
    from cache_dit.caching.block_adapters import BlockAdapterRegister

    if BlockAdapterRegister.is_supported(pipe):
        return "pipe"
    model = getattr(pipe, "transformer", None)
    if model is not None:
        name = type(model).__name__
        for prefix, factory in BlockAdapterRegister._adapters.items():
            if name.startswith(prefix):
                return factory
    return None


def cache_dit_block_lists(model: torch.nn.Module) -> list[tuple[str, torch.nn.ModuleList]]:
    """The block lists cache-dit splits into its front/middle/back blocks: every non-empty ``ModuleList`` child
    whose name ends in ``blocks`` (``transformer_blocks``, ``blocks``, HiDream's ``double_stream_blocks`` /
    ``single_stream_blocks``, ...)."""
    return [(n, m) for n, m in model.named_children()
            if n.endswith("blocks") and isinstance(m, torch.nn.ModuleList) and len(m) > 0]


def _block_metadata(block: torch.nn.Module) -> Any:
    from diffusers.hooks._helpers import TransformerBlockRegistry

    return TransformerBlockRegistry.get(type(block))


def _fbc_why_not(stack: list[tuple[str, torch.nn.Module]]) -> str | None:
    if len(stack) < 2:
        return "FirstBlockCache needs at least two transformer blocks"
    if getattr(stack[-1][1], "context_pre_only", False):
        return ("its last block returns no encoder stream (context_pre_only), which FirstBlockCache's "
                "tail hook subtracts from (TypeError in diffusers)")
    head, tail = _block_metadata(stack[0][1]), _block_metadata(stack[-1][1])
    if (head.return_encoder_hidden_states_index is None) != (tail.return_encoder_hidden_states_index is None):
        return (f"its first block ({type(stack[0][1]).__name__}) and last block ({type(stack[-1][1]).__name__}) "
                "return different streams (one carries the text stream, the other not), which FirstBlockCache's "
                "tail hook cannot combine (TypeError in diffusers on the first forward)")
    return None


def _why_not_model(pipe: Any, model: torch.nn.Module, peer: str) -> str | None:
    stack = block_stack(model)
    if peer in ("diffusers-fbc", "diffusers-magcache"):
        if not stack:
            return "it has no transformer block list diffusers' hooks recognise (blocks / transformer_blocks / ...)"
        unknown = sorted({type(b).__name__ for _, b in stack if not has_block_metadata(b)})
        if unknown:
            return f"diffusers has no block metadata for {', '.join(unknown)}"
        return _fbc_why_not(stack) if peer == "diffusers-fbc" else None
    if peer == "diffusers-taylorseer":
        if taylorseer_default_matches(model) or attention_patterns(model):
            return None
        return "no attention module inside its transformer block lists matches TaylorSeer's patterns"
    if peer in MORE_DIFFUSERS_PEERS:
        return why_not_more(model, peer)
    if peer == "deepcache":
        return deepcache_why_not(model)
    if peer == "cache-dit":
        status = cache_dit_status()
        if status is not None:
            return status
        if cache_dit_factory(pipe) is None:
            return "cache-dit has no BlockAdapter for this pipeline or its transformer"
        return None
    raise ValueError(f"Unknown external peer {peer!r}; choose one of: {', '.join(EXTERNAL_PEERS)}.")


def why_not(pipe: Any, peer: str) -> str | None:
    """``None`` if ``peer`` runs on every denoiser of this pipeline, else the reason."""
    for model in find_denoisers(pipe).values():
        reason = _why_not_model(pipe, model, peer)
        if reason is not None:
            return reason
    return None


def supported_external_peers(pipe: Any) -> list[str]:
    """The external peers that run on this pipeline's denoiser(s)."""
    return [p for p in EXTERNAL_PEERS if why_not(pipe, p) is None]


def check_external(pipe: Any, peer: str) -> None:
    """Raise a clear error if ``peer`` cannot run on this pipeline, naming the peers that can
    (:class:`~etcdiff.integration.denoiser_owners.CannotRun`: ``etcdiff.enable`` adds the other methods)."""
    if peer not in EXTERNAL_PEERS:
        raise ValueError(f"Unknown external peer {peer!r}; choose one of: {', '.join(EXTERNAL_PEERS)}.")
    reason = why_not(pipe, peer)
    if reason is None:
        return
    others = [p for p in EXTERNAL_PEERS if p != peer and why_not(pipe, p) is None]
    runs = f"Peers that run on it: {', '.join(others)}." if others else "None of the external peers runs on it."
    if peer == "cache-dit" and cache_dit_status() is not None:
        raise RuntimeError(f"etcdiff: cache-dit cannot run here: {reason}. {runs}")
    if (peer == "deepcache" and deepcache_status() is not None) or (
            peer == "diffusers-seacache" and seacache_status() is not None):
        raise RuntimeError(f"etcdiff: {peer} cannot run here: {reason}. {runs}")
    names = ", ".join(type(m).__name__ for m in find_denoisers(pipe).values())
    raise CannotRun(f"etcdiff: {peer} cannot run on {names}: {reason}. {runs}")
