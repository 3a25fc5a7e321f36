"""The one diffusers hook etcdiff's sessions put on a denoiser, and its exact removal.

A session (step policy or block cache) implements ``forward(module_name, context, original, args, kwargs)``
and ``release()``; :class:`SessionHook` hands every denoiser call to it, with the ``cache_context`` that
diffusers' pipelines set (the hook is "stateful" only so that diffusers delivers that context to it).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import BaseState, StateManager


class HookSession(Protocol):
    def forward(self, module_name: str, context: Any, original: Any, args: tuple, kwargs: dict) -> Any: ...

    def release(self) -> None: ...


class _NoState(BaseState):
    def reset(self, *args: Any, **kwargs: Any) -> None:
        pass


class SessionHook(ModelHook):
    """Hands each call of one denoiser to its session."""

    _is_stateful = True  # so that diffusers' cache_context tells us the branch name

    def __init__(self, session: HookSession, module_name: str) -> None:
        super().__init__()
        self.session = session
        self.module_name = module_name
        self.state_manager = StateManager(_NoState)

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        return self.session.forward(self.module_name, self.state_manager._context, self.fn_ref.original_forward,
                                    args, kwargs)

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        # diffusers calls this at the end of every pipeline call: free the per-branch tensors, keep the report
        self.session.release()
        return module


@dataclass
class Registration:
    """What a module looked like before the hook, so that removal restores it exactly."""

    module: torch.nn.Module
    name: str
    had_registry: bool
    had_forward: bool

    def remove(self) -> None:
        registry = getattr(self.module, "_diffusers_hook", None)
        if registry is None:
            return
        registry.remove_hook(self.name, recurse=False)
        if not registry._hook_order:
            if not self.had_forward:
                vars(self.module).pop("forward", None)  # back to the class's forward, exactly as before
            if not self.had_registry:
                del self.module._diffusers_hook


def register(module: torch.nn.Module, session: HookSession, module_name: str, hook_name: str) -> Registration:
    """Put a :class:`SessionHook` on ``module`` under ``hook_name``; the result's ``remove()`` undoes it."""
    reg = Registration(module, hook_name, hasattr(module, "_diffusers_hook"), "forward" in vars(module))
    HookRegistry.check_if_exists_or_initialize(module).register_hook(SessionHook(session, module_name), hook_name)
    return reg


#: the registry of each kind that has been loaded, by kind name
_REGISTRIES: "dict[str, SessionRegistry]" = {}


def enabled_kind(pipe: Any) -> "SessionRegistry | None":
    """The registry whose session is on ``pipe`` (one kind at a time), or ``None``."""
    return next((r for r in _REGISTRIES.values() if pipe in r), None)


class SessionRegistry:
    """The sessions of one kind, by pipeline (weakly: a pipeline that goes away takes its session along).

    ``kind`` is the method kind (``"step"``, ``"block"``, ``"external"``) and ``label`` what errors call it."""

    def __init__(self, kind: str, label: str) -> None:
        self.kind = kind
        self.label = label
        self._sessions: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()
        _REGISTRIES[kind] = self

    def __contains__(self, pipe: Any) -> bool:
        return pipe in self._sessions

    def __setitem__(self, pipe: Any, session: Any) -> None:
        self._sessions[pipe] = session

    def __getitem__(self, pipe: Any) -> Any:
        return self._sessions[pipe]

    def get(self, pipe: Any) -> Any:
        return self._sessions.get(pipe)

    def pop(self, pipe: Any, default: Any = None) -> Any:
        return self._sessions.pop(pipe, default)

    def report(self, pipe: Any) -> Any:
        """The last finished generation's report, or an error that says what is missing."""
        session = self._sessions.get(pipe)
        if session is None:
            raise RuntimeError(f"etcdiff: no {self.label} is enabled on this pipeline; call etcdiff.enable first.")
        if session.last_report is None:
            raise RuntimeError(f"etcdiff: no generation has finished since the {self.label} was enabled.")
        return session.last_report
