"""A snapshot of what enabling a peer may add to modules, a pipeline and the pipeline's class, to take it back."""

from __future__ import annotations

from typing import Any

import torch


class Snapshot:
    """What enabling a peer added to the modules, the pipeline and the pipeline's class, to take it back.

    Taken before enabling; :meth:`mark` (after enabling) notes the pipeline attributes that enabling added;
    :meth:`restore` removes them and every attribute and submodule added to the model's modules since the
    snapshot, puts the submodules back in their order, and puts the class's dict back.
    """

    def __init__(self, pipe: Any, model: torch.nn.Module) -> None:
        self.modules = [(m, set(vars(m)), list(m._modules)) for m in model.modules()]
        self.pipe = (pipe, set(vars(pipe)))
        self.cls = (type(pipe), dict(vars(type(pipe))))
        self.added: list[tuple[Any, set[str]]] = []

    def mark(self) -> None:
        pipe, attrs = self.pipe
        self.added = [(pipe, set(vars(pipe)) - attrs)]

    def restore(self) -> None:
        # modules: everything added since enabling (peers also add statistics attributes while running);
        # the pipeline: only what enabling added (its calls set their own state, e.g. _guidance_scale)
        for m, attrs, order in self.modules:
            for name in set(vars(m)) - attrs:
                vars(m).pop(name, None)
            if list(m._modules) != order:  # added submodules, or reordered (cache-dit's mock.patch re-adds lists last)
                subs = dict(m._modules)
                m._modules.clear()
                m._modules.update((name, subs[name]) for name in order if name in subs)
        for obj, attrs in self.added:
            for name in attrs:
                vars(obj).pop(name, None)
        cls, before = self.cls
        for name in set(vars(cls)) - set(before):
            delattr(cls, name)
        for name, value in before.items():
            if name not in ("__dict__", "__weakref__", "__doc__") and vars(cls).get(name) is not value:
                setattr(cls, name, value)
