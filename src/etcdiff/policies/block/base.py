"""The block-rule interface shared by TeaCache, MagCache and the other block-level methods: pure math, no
diffusers import.

A *block rule* decides, for each denoiser call, whether the transformer's block stack runs or its cached
residual is reused. The rule object is the method's configuration (its settings and calibrated coefficients);
the state of one guidance branch in one generation lives in the object :meth:`BlockRule.new_state` returns, so
one rule serves every branch and pipeline (the block machinery in ``etcdiff.integration.block`` owns those).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class BlockRule(Protocol):
    """What the block machinery calls on a rule.

    ``name``: the method's registry name; ``needs_signal``: whether :meth:`decide` reads the first block's
    change (the machinery then runs the probe it needs).
    """

    name: str
    needs_signal: bool

    def begin(self, num_steps: int) -> None:
        """A generation of ``num_steps`` steps starts (rules that depend on the step count check it here)."""

    def new_state(self) -> Any:
        """Fresh per-branch state for one generation."""

    def decide(self, state: Any, step: int, change: Any = None, can_skip: bool = True) -> bool:
        """Whether the block stack runs at ``step`` (``change``: the signal, when ``needs_signal``)."""

    def params(self) -> dict[str, Any]:
        """The rule's settings, for reports."""
