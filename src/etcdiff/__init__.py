"""etcdiff: training-free acceleration of diffusion sampling by predicting the outputs of skipped steps."""

from __future__ import annotations

from ._version import __version__
from .api import disable, enable, enabled, is_enabled, last_report, make_policy, summary
from .calibration.profile import etc_from_profile
from .integration.sampler import sample
from .policies import ETC, ETC_PRESETS, SADA, AdaptiveDiffusion, ERTACache, FixedInterval, NoCache, RunReport, StepPolicy
from .policies.magcache import MagCache
from .policies.teacache import TeaCache
from .registry import METHODS, Method, get_method, register, unregister


__all__ = [
    "METHODS", "Method", "SADA", "AdaptiveDiffusion", "ERTACache", "MagCache", "TeaCache",
    "ETC", "ETC_PRESETS", "FixedInterval", "NoCache", "RunReport", "StepPolicy", "disable", "enable", "enabled",
    "etc_from_profile", "get_method", "is_enabled", "last_report", "make_policy", "register", "sample", "summary",
    "unregister", "__version__",
]
