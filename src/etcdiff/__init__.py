"""etcdiff: training-free acceleration of diffusion sampling by predicting the outputs of skipped steps.

Names are imported on first use (PEP 562), so that ``etcdiff --help`` and reading the method registry cost no
torch or diffusers import.
"""

from __future__ import annotations

from . import catalog  # noqa: F401  (the method registry: no torch import, and every name is known from the start)
from ._package import __version__, lazy_names

#: public name -> the module that defines it
_EXPORTS = {
    **dict.fromkeys(("disable", "enable", "enabled", "is_enabled", "last_report", "make_policy", "summary"), ".api"),
    **dict.fromkeys(("calibrate_policy",), ".calibrate"),
    **dict.fromkeys(("etc_from_profile",), ".calibration.profile"),
    **dict.fromkeys(("sample",), ".integration.step.sampler"),
    **dict.fromkeys(("ETC", "ETC_PRESETS", "SADA", "AdaptiveDiffusion", "ERTACache", "FixedInterval", "NoCache",
                     "RunReport", "StepPolicy"), ".policies"),
    "MagCache": ".policies.block.magcache",
    "TeaCache": ".policies.block.teacache",
    **dict.fromkeys(("METHODS", "Method", "get_method", "register", "unregister"), ".catalog"),
}

__all__ = sorted(_EXPORTS) + ["__version__"]


__getattr__ = lazy_names(__name__, _EXPORTS)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
