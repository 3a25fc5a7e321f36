"""Policy layer: one small module per method, pure tensor math, no diffusers import."""

from __future__ import annotations

from typing import Any, Callable

from .adaptive import AdaptiveDiffusion
from .base import OutputStream, ReuseStream, RunReport, StepPolicy
from .baselines import FixedInterval, NoCache
from .ertacache import ERTACache, ERTACacheProfile, fit_ertacache
from .etc import ETC, TrendState
from .etc_plus import ETCPlus, fit_etc_plus
from .presets import ETC_PRESETS, etc_preset, find_preset
from .sada import SADA

#: Step-level methods by the name the CLI and ``etcdiff.enable(pipe, "name", ...)`` use.
STEP_POLICIES: dict[str, Callable[..., StepPolicy]] = {
    "etc": ETC,
    "none": NoCache,
    "fixed": FixedInterval,
    "adaptive": AdaptiveDiffusion,
    "sada": SADA,
    "ertacache": ERTACache,
    "etc-plus": ETCPlus,
}


def build(factories: dict[str, Callable[..., Any]], kind: str, name: str, **kwargs: Any) -> Any:
    """``factories[name](**kwargs)`` with one-line errors naming the choices (for policies and block rules)."""
    try:
        factory = factories[name]
    except KeyError:
        raise ValueError(f"Unknown {kind} {name!r}; choose one of: {', '.join(sorted(factories))}.") from None
    try:
        return factory(**kwargs)
    except TypeError as e:
        raise ValueError(f"Bad arguments for {kind} {name!r}: {e}") from None


def make_policy(method: str, **kwargs: Any) -> StepPolicy:
    """Build a step policy by name, e.g. ``make_policy("etc", threshold=0.1)``."""
    return build(STEP_POLICIES, "method", method, **kwargs)


__all__ = [
    "AdaptiveDiffusion", "ERTACache", "ERTACacheProfile", "SADA", "fit_ertacache", "fit_etc_plus",
    "ETC", "ETCPlus", "ETC_PRESETS", "FixedInterval", "NoCache", "OutputStream", "ReuseStream", "RunReport",
    "STEP_POLICIES", "StepPolicy", "TrendState", "etc_preset", "find_preset", "make_policy",
]
