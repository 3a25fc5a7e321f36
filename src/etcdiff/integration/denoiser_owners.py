"""Who holds a denoiser: one method on one pipeline per module at a time, and one kind per pipeline.

Two pipelines can share a denoiser (``Pipe2(**pipe1.components)``). A block cache or an external peer keeps
its state on the module (hooks, residuals, cache-dit's patched forward), so enabling a method on the second
pipeline while the first holds the module would stack two methods on one model (diffusers: "Hook with name ...
already exists"; cache-dit: silently shared caches). :func:`claim` refuses that with a clear error.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch

from .session_hook import enabled_kind

_OWNERS: "weakref.WeakKeyDictionary[torch.nn.Module, weakref.ref]" = weakref.WeakKeyDictionary()


_OTHER_PIPE = ("Call etcdiff.disable() on the other pipeline first, or give this pipeline its own copy of the "
               "denoiser (pipelines that share a denoiser module can run one method at a time).")


def _held_elsewhere(pipe: Any, module: torch.nn.Module) -> str | None:
    """Who else holds ``module`` and what to do about it, or ``None``."""
    owner = _OWNERS.get(module)
    holder = owner() if owner is not None else None
    if holder is pipe:  # block caches and external peers replace their own kind; this is the other kind
        return "another method enabled on this pipeline. Call etcdiff.disable(pipe) first."
    if holder is not None:
        return f"a method enabled on another pipeline ({type(holder).__name__}). {_OTHER_PIPE}"
    registry = getattr(module, "_diffusers_hook", None)
    hooks = [n for n in getattr(registry, "_hook_order", []) if n.startswith("etcdiff")]
    if hooks:
        return f"an etcdiff method enabled on another pipeline (hook {hooks[0]!r}). {_OTHER_PIPE}"
    if getattr(module, "_is_cached", False):
        return f"cache-dit, enabled on another pipeline. {_OTHER_PIPE}"
    if getattr(module, "_cache_config", None) is not None:
        return "a diffusers cache enabled on it directly. Call its disable_cache() first."
    return None


def claim(pipe: Any, models: dict[str, torch.nn.Module]) -> None:
    """Mark ``models`` as held by ``pipe``, or raise a ``RuntimeError`` naming the holder and the fix."""
    for name, module in models.items():
        holder = _held_elsewhere(pipe, module)
        if holder is not None:
            raise RuntimeError(
                f"etcdiff: {type(pipe).__name__}.{name} ({type(module).__name__}) is already used by {holder}"
            )
    for module in models.values():
        _OWNERS[module] = weakref.ref(pipe)


def release(pipe: Any, models: dict[str, torch.nn.Module]) -> None:
    """Forget that ``pipe`` holds ``models``."""
    for module in models.values():
        owner = _OWNERS.get(module)
        if owner is not None and owner() in (pipe, None):
            del _OWNERS[module]


def refuse_other_kind(pipe: Any, kind: str) -> None:
    """A ``RuntimeError`` when a method of another kind than ``kind`` is enabled on ``pipe``."""
    holder = enabled_kind(pipe)
    if holder is not None and holder.kind != kind:
        article = "an" if holder.label[0] in "aeiou" else "a"
        raise RuntimeError(f"etcdiff: {article} {holder.label} is enabled on this pipeline; "
                           "call etcdiff.disable(pipe) first.")


class CannotRun(NotImplementedError):
    """A method cannot run on this pipeline's model; ``etcdiff.enable`` adds the methods that can."""
