"""The three kinds of method, each with one integration that puts it on a pipeline, takes it off and reports.

- ``step``: :mod:`etcdiff.integration.diffusers_hook` (the denoiser call is skipped, its output predicted);
- ``block``: :mod:`etcdiff.integration.block_cache` (the transformer blocks' residual is reused);
- ``external``: :mod:`etcdiff.integration.external` (diffusers' cache hooks and cache-dit, as they ship).

The integration modules are imported on first use, so that reading the registry costs no diffusers import.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from .registry import Method


@dataclass(frozen=True)
class Kind:
    """The integration functions of one kind: ``module.enable(pipe, thing)``, ``disable(pipe)``,
    ``report(pipe)``, ``is_enabled(pipe)``, by their names in that module."""

    name: str
    module: str
    enable_fn: str
    disable_fn: str
    report_fn: str
    is_enabled_fn: str

    def _fn(self, attr: str) -> Any:
        return getattr(importlib.import_module(self.module, __package__), attr)

    def enable(self, pipe: Any, method: Method | None, thing: Any, settings: dict[str, Any]) -> Any:
        """Put ``thing`` (a built policy or rule; for external peers, the method with ``settings``) on ``pipe``."""
        if self.name == "external":
            assert method is not None
            return self._fn(self.enable_fn)(pipe, method.name, **settings)
        return self._fn(self.enable_fn)(pipe, thing)

    def disable(self, pipe: Any) -> None:
        self._fn(self.disable_fn)(pipe)

    def report(self, pipe: Any) -> Any:
        return self._fn(self.report_fn)(pipe)

    def is_enabled(self, pipe: Any) -> bool:
        return bool(self._fn(self.is_enabled_fn)(pipe))


KINDS: dict[str, Kind] = {
    "step": Kind("step", ".integration.diffusers_hook", "enable_step_policy", "disable_step_policy",
                 "step_policy_report", "is_step_policy_enabled"),
    "block": Kind("block", ".integration.block_cache", "enable_block_cache", "disable_block_cache",
                  "block_cache_report", "is_block_cache_enabled"),
    "external": Kind("external", ".integration.external", "enable_external", "disable_external",
                     "external_report", "is_external_enabled"),
}
