"""Policy layer: one small module per method, pure tensor math, no diffusers import."""

from __future__ import annotations

from typing import Any, Callable

from .adaptive import AdaptiveDiffusion
from .base import OutputStream, ReuseStream, RunReport, StepPolicy
from .baselines import FixedInterval, NoCache
from .ertacache import ERTACache, ERTACacheProfile, fit_ertacache
from .etc import ETC, TrendState
from .meancache import MeanCache, MeanCacheProfile, MeanCacheSchedule, fit_meancache, search_schedule
from .presets import ETC_PRESETS, etc_preset, find_preset
from .sada import SADA
from .sencache import SenCache, SenCacheTables, SensitivityRecord, fit_sencache

#: Step-level methods by the name the CLI and ``etcdiff.enable(pipe, "name", ...)`` use.
STEP_POLICIES: dict[str, Callable[..., StepPolicy]] = {
    "etc": ETC,
    "none": NoCache,
    "fixed": FixedInterval,
    "adaptive": AdaptiveDiffusion,
    "sada": SADA,
    "ertacache": ERTACache,
    "meancache": MeanCache,
    "sencache": SenCache,
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
    "AdaptiveDiffusion", "ERTACache", "ERTACacheProfile", "SADA", "fit_ertacache",
    "MeanCache", "MeanCacheProfile", "MeanCacheSchedule", "SenCache", "SenCacheTables", "SensitivityRecord",
    "fit_meancache", "fit_sencache", "search_schedule",
    "ETC", "ETC_PRESETS", "FixedInterval", "NoCache", "OutputStream", "ReuseStream", "RunReport",
    "STEP_POLICIES", "StepPolicy", "TrendState", "etc_preset", "find_preset", "make_policy",
]
