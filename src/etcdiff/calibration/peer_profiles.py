"""Where the calibrations of the methods other than ETC are kept (``etcdiff calibrate --method NAME``).

Each is a :class:`~etcdiff.policies.method_profile.MethodProfile` saved as a small JSON next to ETC's profiles
(same folders, see :mod:`etcdiff.calibration.profile_store`), named ``<slug>_<N>steps_<method>.json``:
ERTACache's fitted schedule and coefficients, TeaCache's polynomial coefficients, MagCache's magnitude
ratios, ... ``etcdiff.enable(pipe, method)`` finds the one for the run's step count.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..policies.method_profile import MethodProfile
from .profile import now_iso, package_versions
from .profile_store import find_for_run, save_method_profile


def save_peer_profile(identity: str, method: str, steps: int, settings: dict[str, Any],
                      out: str | os.PathLike | None = None, *, scheduler: str | None = None,
                      run_settings: dict[str, Any] | None = None, fit_settings: dict[str, Any] | None = None,
                      prompts: list[Any] | None = None, seed: int | None = None, seconds: float = 0.0) -> Path:
    """Write the method's fitted settings to ``out``: a ``.json`` file, or a folder (default
    :func:`~etcdiff.calibration.profile.profile_dir`) that gets ``<slug>_<N>steps_<method>.json``; atomic."""
    profile = MethodProfile(method=method, identity=identity, steps=steps, settings=settings, scheduler=scheduler,
                            run_settings=dict(run_settings or {}), fit_settings=dict(fit_settings or {}),
                            prompts=list(prompts or []), seed=seed, seconds=float(seconds), created=now_iso(),
                            versions=package_versions())
    return save_method_profile(profile, out)


def find_peer_profile(identity: str, method: str, steps: int | None = None,
                      directory: str | os.PathLike | None = None, scheduler: str | None = None) -> MethodProfile | None:
    """The saved profile of ``method`` for the model ``identity`` at ``steps`` steps (any step count when
    ``None``: the first on the search path), or ``None``."""
    found = find_for_run(identity, method, steps, scheduler, directory)
    return found if isinstance(found, MethodProfile) else None
