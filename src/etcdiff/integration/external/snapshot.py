"""A snapshot of what enabling a peer may add to the denoisers' modules and to the pipeline, to take it back.

The pipeline's class is not part of it: cache-dit's class patch is owned by
:mod:`~etcdiff.integration.external.cache_dit_adapter`, which shares it between the instances of a class.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch


class Snapshot:
    """What enabling a peer added to the modules and the pipeline, to take it back.

    Taken before enabling; :meth:`mark` (after enabling) notes the pipeline attributes that enabling added;
    :meth:`restore` removes them and every attribute and submodule added to the denoisers' modules since the
    snapshot, and puts the submodules back in their order.
    """

    def __init__(self, pipe: Any, models: Iterable[torch.nn.Module]) -> None:
        seen: set[int] = set()
        self.modules = []
        for model in models:
            for m in model.modules():
                if id(m) not in seen:
                    seen.add(id(m))
                    self.modules.append((m, set(vars(m)), list(m._modules)))
        self.pipe = (pipe, set(vars(pipe)))
        self.added: list[tuple[Any, set[str]]] = []

    def mark(self) -> None:
        pipe, attrs = self.pipe
        self.added = [(pipe, set(vars(pipe)) - attrs)]

    def added_submodules(self, model: torch.nn.Module) -> list[str]:
        """Qualified names (inside ``model``) of the submodules added since the snapshot."""
        before = {id(m): set(order) for m, _, order in self.modules}
        out = []
        for name, m in model.named_modules():
            if id(m) in before:
                prefix = f"{name}." if name else ""
                out += [f"{prefix}{child}" for child in m._modules if child not in before[id(m)]]
        return out

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


def hide_added_submodules(model: torch.nn.Module, names: list[str]) -> Any:
    """Keep submodules a peer added (aliases of existing ones, e.g. cache-dit's ``_norm1_emb`` on DiT) out of
    ``model.state_dict()``, so that ``save_pretrained`` writes the model's own tensors once; returns the handle."""
    prefixes = tuple(f"{n}." for n in names)

    def hook(module: torch.nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
        for key in [k for k in state_dict if k[len(prefix):].startswith(prefixes)]:
            del state_dict[key]

    return model.register_state_dict_post_hook(hook)
