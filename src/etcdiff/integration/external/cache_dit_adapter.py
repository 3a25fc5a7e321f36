"""cache-dit's DBCache put on a pipeline as it ships.

Pipelines that cache-dit does not know by class name but whose transformer it supports (e.g. the embedded
``DigitsPipeline`` around a DiT) get cache-dit's own registered ``BlockAdapter`` for that transformer.
cache-dit patches the pipeline *class*'s ``__call__`` while enabled (its design), and treats separate
cond/uncond calls as consecutive steps unless ``enable_separate_cfg=True`` is passed (its registry sets that
for Wan and a few others). Its default ``Fn_compute_blocks`` is scaled down, with a warning, on models with
fewer blocks, and a setting larger than the shortest block list is refused here instead of deep in the first
forward.

cache-dit's patch of the pipeline class (``cls.__call__`` wrapped, ``_original_call`` and ``_is_cached`` set) is
made per instance here: its wrapper for each pipeline is kept in a :class:`ClassPatch`, the class itself holds
one dispatching ``__call__`` while any of its instances has cache-dit on (instances without it run the
original), and the class's dict is put back exactly when the last one is disabled, in any order.
"""

from __future__ import annotations

import contextlib
import functools
import io
import warnings
import weakref
from typing import TYPE_CHECKING, Any

from .support import cache_dit_block_lists, cache_dit_factory

if TYPE_CHECKING:
    from .session import ExternalSession


class ClassPatch:
    """cache-dit's ``__call__`` wrappers of the enabled instances of one pipeline class, and the class's own dict."""

    def __init__(self, cls: type) -> None:
        self.cls = cls
        self.original = dict(vars(cls))
        self.calls: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()

    def restore_class(self) -> None:
        """Put the class's dict back as it was before cache-dit touched it."""
        cls = self.cls
        for name in set(vars(cls)) - set(self.original):
            delattr(cls, name)
        for name, value in self.original.items():
            if name not in ("__dict__", "__weakref__", "__doc__") and vars(cls).get(name) is not value:
                setattr(cls, name, value)

    def install(self) -> None:
        """The class's ``__call__`` hands each enabled instance to its cache-dit wrapper, the others to the original."""
        self.restore_class()
        if not self.calls:
            return
        original, calls = self.cls.__call__, self.calls

        @functools.wraps(original)
        def __call__(pipe: Any, *args: Any, **kwargs: Any) -> Any:
            return calls.get(pipe, original)(pipe, *args, **kwargs)

        self.cls.__call__ = __call__


_CLASS_PATCHES: dict[type, ClassPatch] = {}


def _check_blocks(session: "ExternalSession", kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with cache-dit's default front blocks scaled to a small model; a clear error where the
    front/back blocks exceed the shortest block list (cache-dit asserts that deep inside the first forward)."""
    import cache_dit

    lists = [(n, b) for model in session.models.values() for n, b in cache_dit_block_lists(model)]
    shortest = min((len(lst) for _, lst in lists), default=0)
    defaults = cache_dit.DBCacheConfig()
    name = type(session.model).__name__
    if lists and "Fn_compute_blocks" not in kwargs and "Bn_compute_blocks" not in kwargs and \
            max(int(defaults.Fn_compute_blocks), int(defaults.Bn_compute_blocks)) > shortest:
        # a small model: scale cache-dit's default front/back blocks down to it, and say so
        kwargs = {**kwargs, "Fn_compute_blocks": max(1, shortest // 4), "Bn_compute_blocks": 0}
        warnings.warn(
            f"etcdiff: cache-dit's default Fn_compute_blocks={defaults.Fn_compute_blocks} exceeds the {shortest} "
            f"blocks of {name}; using Fn_compute_blocks={kwargs['Fn_compute_blocks']}, Bn_compute_blocks=0 (pass "
            "them to choose).", UserWarning, stacklevel=5)
    fn, bn = int(kwargs.get("Fn_compute_blocks", defaults.Fn_compute_blocks)), \
        int(kwargs.get("Bn_compute_blocks", defaults.Bn_compute_blocks))
    if lists and max(fn, bn) > shortest:
        raise ValueError(
            f"etcdiff: cache-dit's Fn_compute_blocks={fn} / Bn_compute_blocks={bn} exceed the {shortest} blocks of "
            f"{name}'s shortest block list ({', '.join(f'{n}: {len(b)}' for n, b in lists)}); pass smaller "
            "Fn_compute_blocks / Bn_compute_blocks."
        )
    return kwargs


def enable_cache_dit(session: "ExternalSession", pipe: Any, kwargs: dict[str, Any]) -> None:
    """``cache_dit.enable_cache`` on the pipeline (or cache-dit's adapter for its transformer), with the class
    patch made per instance (:class:`ClassPatch`)."""
    import cache_dit

    config = cache_dit.DBCacheConfig(**_check_blocks(session, kwargs))
    factory = cache_dit_factory(pipe)
    cls = type(pipe)
    patch = _CLASS_PATCHES.get(cls) or ClassPatch(cls)
    patch.restore_class()  # cache-dit wraps the class's own __call__, not another instance's dispatcher
    try:
        target = pipe if factory == "pipe" else factory(pipe)
        session.config = config
        session.target = cache_dit.enable_cache(target, cache_config=config)
        if session.target is None:
            session.target = target
        wrapper = vars(cls).get("__call__")
        if wrapper is not None and wrapper is not patch.original.get("__call__"):
            patch.calls[pipe] = wrapper
    finally:
        patch.install()
        if patch.calls:
            _CLASS_PATCHES[cls] = patch


def remove_cache_dit(session: "ExternalSession") -> None:
    """cache-dit's own ``disable_cache`` (its log lines go to a buffer), then this instance's class patch."""
    pipe = session.pipe_ref()
    if session.target is not None:
        import cache_dit

        with contextlib.redirect_stderr(io.StringIO()):
            cache_dit.disable_cache(session.target)
    patch = _CLASS_PATCHES.get(type(pipe)) if pipe is not None else None
    if patch is not None:
        patch.calls.pop(pipe, None)
        patch.install()
        if not patch.calls:
            del _CLASS_PATCHES[patch.cls]
