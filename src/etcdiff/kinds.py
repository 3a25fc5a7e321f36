"""The three kinds of method, each with one integration wing that puts it on a pipeline, takes it off and reports.

- ``step``: :mod:`etcdiff.integration.step.hook` (the denoiser call is skipped, its output predicted);
- ``block``: :mod:`etcdiff.integration.block.cache` (the transformer blocks' residual is reused);
- ``external``: :mod:`etcdiff.integration.external.peers` (diffusers' cache hooks and cache-dit, as they ship).

Each wing is imported inside the functions that use it, so that reading the registry costs no diffusers import.
"""

from __future__ import annotations

from typing import Any

from .registry import Method


class Kind:
    """The integration of one kind of method: enable, disable, report, and which of its methods run on a pipeline."""

    name = ""

    def enable(self, pipe: Any, method: Method | None, thing: Any, settings: dict[str, Any]) -> Any:
        """Put ``thing`` (a built policy or rule; for external peers, the method with ``settings``) on ``pipe``."""
        raise NotImplementedError

    def disable(self, pipe: Any) -> None:
        raise NotImplementedError

    def report(self, pipe: Any) -> Any:
        raise NotImplementedError

    def runs_on(self, pipe: Any, names: list[str]) -> list[str]:
        """Those of ``names`` (this kind's registered methods) that can run on ``pipe``'s model."""
        raise NotImplementedError

    def check(self, pipe: Any) -> None:
        """A ``CannotRun`` error when no method of this kind can run on ``pipe``'s model. Default: nothing."""


class StepKind(Kind):
    name = "step"

    def enable(self, pipe: Any, method: Method | None, thing: Any, settings: dict[str, Any]) -> Any:
        from .integration.step.hook import enable_step_policy

        return enable_step_policy(pipe, thing)

    def disable(self, pipe: Any) -> None:
        from .integration.step.hook import disable_step_policy

        disable_step_policy(pipe)

    def report(self, pipe: Any) -> Any:
        from .integration.step.hook import step_policy_report

        return step_policy_report(pipe)

    def runs_on(self, pipe: Any, names: list[str]) -> list[str]:
        return [n for n in names if n != "none"]  # any denoiser; the full-step reference is no acceleration


class BlockKind(Kind):
    name = "block"

    def enable(self, pipe: Any, method: Method | None, thing: Any, settings: dict[str, Any]) -> Any:
        from .integration.block.cache import enable_block_cache

        return enable_block_cache(pipe, thing)

    def disable(self, pipe: Any) -> None:
        from .integration.block.cache import disable_block_cache

        disable_block_cache(pipe)

    def report(self, pipe: Any) -> Any:
        from .integration.block.cache import block_cache_report

        return block_cache_report(pipe)

    def check(self, pipe: Any) -> None:
        from .integration.block.cache import find_block_denoisers

        find_block_denoisers(pipe)

    def runs_on(self, pipe: Any, names: list[str]) -> list[str]:
        try:
            self.check(pipe)
        except (NotImplementedError, TypeError):
            return []
        return names


class ExternalKind(Kind):
    name = "external"

    def enable(self, pipe: Any, method: Method | None, thing: Any, settings: dict[str, Any]) -> Any:
        from .integration.external.peers import enable_external

        assert method is not None
        return enable_external(pipe, method.name, **settings)

    def disable(self, pipe: Any) -> None:
        from .integration.external.peers import disable_external

        disable_external(pipe)

    def report(self, pipe: Any) -> Any:
        from .integration.external.peers import external_report

        return external_report(pipe)

    def runs_on(self, pipe: Any, names: list[str]) -> list[str]:
        from .integration.external.support import supported_external_peers

        here = set(supported_external_peers(pipe))
        return [n for n in names if n in here]


KINDS: dict[str, Kind] = {k.name: k for k in (StepKind(), BlockKind(), ExternalKind())}


def enabled_kind(pipe: Any) -> str | None:
    """The kind of the method enabled on ``pipe``, or ``None`` (one kind at a time)."""
    from .integration.session_hook import enabled_kind as holder

    registry = holder(pipe)
    return None if registry is None else registry.kind
