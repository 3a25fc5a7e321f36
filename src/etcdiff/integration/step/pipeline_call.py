"""Knowing when a pipeline call starts and ends, on the pipeline instance only.

``pipe(...)`` looks ``__call__`` up on the class, so an instance attribute cannot wrap it. :func:`install`
gives the one pipeline object a subclass of its own class (same name, same module, same behaviour) whose
``__call__`` tells a :class:`CallWatcher` when a call starts and when it returns or raises, and whose
``progress_bar`` reports the loop length the pipeline announces. :func:`uninstall` puts the original class
back, so the instance is exactly as before. Copies go through the watcher too: ``copy.deepcopy`` and
``pickle`` of a watched pipeline give a pipeline that is watched by a session of its own.
"""

from __future__ import annotations

import weakref
from typing import Any, Protocol


class CallWatcher(Protocol):
    def call_started(self) -> None: ...

    def call_ended(self, ok: bool) -> None: ...

    def progress(self, total: Any) -> None: ...

    def copy_pipeline(self, pipe: Any, memo: dict) -> Any: ...

    def reduce_pipeline(self, pipe: Any, protocol: int) -> Any: ...


_WATCHERS: "weakref.WeakKeyDictionary[Any, CallWatcher]" = weakref.WeakKeyDictionary()
_SUBCLASSES: "weakref.WeakKeyDictionary[type, type]" = weakref.WeakKeyDictionary()


def _watched_class(base: type) -> type:
    sub = _SUBCLASSES.get(base)
    if sub is not None:
        return sub

    def __call__(self: Any, *args: Any, **kwargs: Any) -> Any:
        watcher = _WATCHERS.get(self)
        if watcher is None:
            return base.__call__(self, *args, **kwargs)
        watcher.call_started()
        try:
            result = base.__call__(self, *args, **kwargs)
        except BaseException:
            watcher.call_ended(ok=False)
            raise
        watcher.call_ended(ok=True)
        return result

    def progress_bar(self: Any, iterable: Any = None, total: Any = None) -> Any:
        watcher = _WATCHERS.get(self)
        if watcher is not None:
            n = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
            watcher.progress(n)
        return base.progress_bar(self, iterable=iterable, total=total)

    def __deepcopy__(self: Any, memo: dict) -> Any:
        watcher = _WATCHERS.get(self)
        if watcher is None:
            raise RuntimeError("etcdiff: this pipeline lost its etcdiff session; call etcdiff.disable(pipe) first.")
        return watcher.copy_pipeline(self, memo)

    def __reduce_ex__(self: Any, protocol: Any) -> Any:
        watcher = _WATCHERS.get(self)
        if watcher is None:
            raise RuntimeError("etcdiff: this pipeline lost its etcdiff session; call etcdiff.disable(pipe) first.")
        return watcher.reduce_pipeline(self, protocol)

    namespace: dict[str, Any] = {
        "__deepcopy__": __deepcopy__, "__reduce_ex__": __reduce_ex__, "__module__": base.__module__,
        "__qualname__": base.__qualname__, "__doc__": base.__doc__, "_etcdiff_base_class": base,
    }
    for fn in (__call__, progress_bar):  # only what the class has (a stand-in pipeline may lack a progress bar)
        original = getattr(base, fn.__name__, None)
        if callable(original):
            fn.__doc__, fn.__wrapped__ = original.__doc__, original  # type: ignore[attr-defined]
            namespace[fn.__name__] = fn
    sub = type(base.__name__, (base,), namespace)
    _SUBCLASSES[base] = sub
    return sub


def install(pipe: Any, watcher: CallWatcher) -> None:
    """Watch ``pipe``'s calls with ``watcher`` (its class becomes a same-named subclass)."""
    base = type(pipe)
    if "_etcdiff_base_class" in vars(base):
        raise RuntimeError("etcdiff: this pipeline's calls are already watched; call etcdiff.disable(pipe) first.")
    pipe.__class__ = _watched_class(base)
    _WATCHERS[pipe] = watcher


def uninstall(pipe: Any) -> None:
    """Stop watching ``pipe``: its class is the original one again."""
    _WATCHERS.pop(pipe, None)
    base = vars(type(pipe)).get("_etcdiff_base_class")
    if base is not None:
        pipe.__class__ = base
