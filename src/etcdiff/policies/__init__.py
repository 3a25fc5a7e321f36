"""Policy layer: one small module per method, pure tensor math, no diffusers import."""

from __future__ import annotations

from typing import Any, Callable

from .step.adaptive import AdaptiveDiffusion
from .step.base import OutputStream, ReuseStream, RunReport, StepPolicy
from .step.baselines import FixedInterval, LinearExtrapolation, NoCache, SkipSteps
from .step.ertacache import ERTACache, ERTACacheProfile, fit_ertacache
from .step.etc import ETC, TrendState, etc_preset
from .step.easycache import EasyCache
from .step.etc_plus import ETCPlus, fit_etc_plus
from .step.lazycache import LazyCache
from .step.lemica import LeMiCa, LeMiCaProfile, fit_lemica, search_leximax
from .step.meancache import MeanCache, MeanCacheProfile, MeanCacheSchedule, fit_meancache, search_schedule
from .step.precisecache import PreciseCache
from .step.etc_presets import ETC_PRESETS, find_preset
from .step.sada import SADA
from .step.sencache import SenCache, SenCacheTables, SensitivityRecord, fit_sencache
from .trajectory import Trajectory


def build(factories: dict[str, Callable[..., Any]], kind: str, name: str, **kwargs: Any) -> Any:
    """``factories[name](**kwargs)`` with one-line errors naming the choices (block rules by name)."""
    try:
        factory = factories[name]
    except KeyError:
        raise ValueError(f"Unknown {kind} {name!r}; choose one of: {', '.join(sorted(factories))}.") from None
    try:
        return factory(**kwargs)
    except TypeError as e:
        raise ValueError(f"Bad arguments for {kind} {name!r}: {e}") from None


__all__ = [
    "AdaptiveDiffusion", "ERTACache", "ERTACacheProfile", "SADA", "fit_ertacache",
    "MeanCache", "MeanCacheProfile", "MeanCacheSchedule", "SenCache", "SenCacheTables", "SensitivityRecord",
    "fit_meancache", "fit_sencache", "search_schedule", "ETC", "ETCPlus", "fit_etc_plus", "ETC_PRESETS", "FixedInterval", "LinearExtrapolation", "NoCache", "SkipSteps", "OutputStream", "ReuseStream", "RunReport",
    "StepPolicy", "Trajectory", "TrendState", "etc_preset", "find_preset",
    "EasyCache", "LazyCache", "LeMiCa", "LeMiCaProfile", "PreciseCache", "fit_lemica", "search_leximax",
]
