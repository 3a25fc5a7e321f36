"""Light stand-ins for transformer blocks, swapped in for the duration of one cached forward.

A diffusers hook on the transformer swaps the block ``ModuleList`` entries for lists of :class:`BlockProxy`
only while its forward runs (see :meth:`BlockCacheSession.forward`). The proxies reach the real blocks'
attributes (e.g. DiT's ``transformer_blocks[0].norm1.emb``); parameters, ``state_dict`` and the class are never
touched and the forward is the model's own, so between steps the model is exactly the original. On a skipped
call the first proxy returns the stack's input plus the stored residual and the others hand their inputs
through, so no block runs. Staged rules (DiCache, H2-Cache) take :func:`~etcdiff.integration.block.stages.staged_forward`.
"""

from __future__ import annotations

import inspect
import weakref
from typing import TYPE_CHECKING, Any

import torch

from .families import Family
from .stages import staged_forward

if TYPE_CHECKING:
    from .session import BlockCacheSession


def _signature(block: torch.nn.Module) -> list[str]:
    params = list(inspect.signature(type(block).forward).parameters.values())[1:]
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _bind(names: list[str], args: tuple, kwargs: dict) -> dict[str, Any]:
    bound = dict(zip(names, args))
    bound.update(kwargs)
    return bound


class BlockProxy(torch.nn.Module):
    """Stands in for one block while a cached forward runs; other attribute reads reach the real block."""

    def __init__(self, session: "BlockCacheSession", fam: Family, block: torch.nn.Module, entry: bool,
                 exit_: bool, index: int = 0) -> None:
        super().__init__()
        object.__setattr__(self, "_block", block)  # not registered as a submodule
        object.__setattr__(self, "_session_ref", weakref.ref(session))
        object.__setattr__(self, "_fam", fam)
        object.__setattr__(self, "_names", _signature(block))
        object.__setattr__(self, "_entry", entry)
        object.__setattr__(self, "_exit", exit_)
        object.__setattr__(self, "_index", index)  # position in the stack (staged rules)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(object.__getattribute__(self, "_block"), name)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        session = self._session_ref()
        call = session._current if session is not None else None
        if call is None:
            return self._block(*args, **kwargs)
        if session.stages is not None:
            return staged_forward(session, call, self, args, kwargs)
        fam = self._fam
        if self._entry:
            bound = _bind(self._names, args, kwargs)
            call = session.decide(fam, self._block, bound)
            if not call.compute:
                res = call.branch.residual
                return fam.pack({n: t + res[n] if n in res else t for n, t in call.inputs.items()})
        if call.compute:
            out = self._block(*args, **kwargs)
            if self._exit:
                session.store_residual(fam, call, out)
            return out
        # skipped call: hand the inputs through
        bound = _bind(self._names, args, kwargs)
        return fam.pack({n: bound.get(n) for n in fam.streams})


def build_proxies(session: "BlockCacheSession", model: torch.nn.Module, fam: Family) -> dict[str, torch.nn.ModuleList]:
    """One proxy list per block list of ``model``; the first proxy of the stack decides, the last stores."""
    blocks = fam.blocks(model)
    if not blocks:
        raise NotImplementedError(f"etcdiff block cache: {type(model).__name__} has no transformer blocks.")
    proxies: dict[str, torch.nn.ModuleList] = {}
    i = 0
    for list_name in fam.block_lists:
        items = []
        for block in getattr(model, list_name):
            items.append(BlockProxy(session, fam, block, entry=i == 0, exit_=i == len(blocks) - 1, index=i))
            i += 1
        proxies[list_name] = torch.nn.ModuleList(items)
    return proxies
