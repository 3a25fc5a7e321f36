"""Settings from a saved calibration, for the run's step count: what ``etcdiff.enable`` fills in when the user
gives a calibrated method no explicit settings.

At ``enable`` the step count of the coming generations is not known yet, so the policy is built from the
first profile on the search path (the user's folder first, newest first), and every generation
first asks :class:`StepsSource` for the profile made at its own step count (``StepPolicy.prepare``): it wins
wherever it is on the search path; when there is none, the generation is refused with the step counts that
exist and the command that makes the missing one.
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path
from typing import Any

from .calibration.profile import normalize_identity, profile_identity
from .calibration.profile_store import find_for_run, load_any, missing_message, scan
from .policies.method_profile import MethodProfile
from .registry import Method, get_method


def pipeline_scheduler(pipe: Any) -> str | None:
    """The class name of the pipeline's scheduler (part of a profile's key), or ``None``."""
    sched = getattr(pipe, "scheduler", None)
    return None if sched is None else type(sched).__name__


def filled(method: Method, profile: MethodProfile, given: dict[str, Any]) -> dict[str, Any]:
    """``given`` with what ``profile`` supplies: the saved keys (``Method.saved``), then the settings given to
    the calibration (``--set``) that the method takes; what the user gives always wins."""
    out = {s: profile.settings[key] for s, key in method.saved.items() if key in profile.settings}
    names = set(method.settings_names())
    out.update({k: v for k, v in profile.run_settings.items() if k in names and k not in out})
    out.update(given)
    return out


def saved_for_enable(pipe: Any, method: Method) -> MethodProfile | None:
    """The profile ``enable`` builds from: the first on the search path (the user's folder first, newest first).
    A step policy then takes the one made at each run's step count (:class:`StepsSource`)."""
    ident = profile_identity(pipe) if pipe is not None else None
    if not ident:
        return None
    prof = find_for_run(ident, method.saved_from or method.name, None, pipeline_scheduler(pipe))
    return prof if isinstance(prof, MethodProfile) else None


class StepsSource:
    """``steps -> policy`` (or block rule) built from the calibration made at that step count (cached per step
    count); when there is none, a ValueError naming the step counts that exist for a method calibrated per step
    count (``profile_per_step_count``), else the object ``enable`` built, with a warning naming the step count it
    was calibrated at where the method gives a ``steps_fallback_note`` (one that resamples says so itself).
    Set as the object's ``for_steps``."""

    def __init__(self, method: str, identity: str, scheduler: str | None, given: dict[str, Any],
                 built: Any, built_from: MethodProfile) -> None:
        self.method, self.identity, self.scheduler, self.given = method, identity, scheduler, dict(given)
        self.built, self.built_path = copy.copy(built), built_from.path  # the state enable built, before any run
        self.built_steps = built_from.steps
        self.cache: dict[int, Any] = {}
        self.paths: dict[int, Path | None] = {}  # the profile file each step count uses (bench run keys)

    def __call__(self, steps: int) -> Any:
        if steps not in self.cache:
            method = get_method(self.method)
            name = method.saved_from or method.name
            found = scan(self.identity, name)
            prof = find_for_run(self.identity, name, steps, self.scheduler, scanned=found)
            if not isinstance(prof, MethodProfile):
                if not getattr(self.built, "profile_per_step_count", False):
                    self.paths[steps] = self.built_path
                    self.cache[steps] = self.built  # its calibration carries over: keep the one enabled
                    note = getattr(self.built, "steps_fallback_note", None)
                    if note:
                        warnings.warn(f"{name}: {self.identity!r} has no calibration at {steps} steps; this run "
                                      f"uses the one made at {self.built_steps} steps ({self.built_path}). {note} "
                                      f"For one made at {steps} steps: `etcdiff calibrate --model <id or path> "
                                      f"--method {name} --steps {steps}`.", UserWarning, stacklevel=2)
                    return self.built
                raise ValueError(missing_message(self.identity, name, steps, self.scheduler, found))
            same = prof.path is not None and prof.path == self.built_path
            self.paths[steps] = prof.path
            self.cache[steps] = self.built if same else method.build(filled(method, prof, self.given))
        return self.cache[steps]


def check_explicit_profiles(pipe: Any, method: Method, settings: dict[str, Any]) -> MethodProfile | None:
    """A calibration file given by path is checked (format, method, finite numbers) and, when it was made for
    another model than ``pipe``'s, a warning names both. Returns the (last) saved profile given so, whose other
    saved settings then fill in what the user left out (not another file's: a MeanCache schedule given by path
    ran with the call count of the newest saved profile)."""
    given = None
    ident = profile_identity(pipe) if pipe is not None else None
    name = method.saved_from or method.name
    for setting in method.saved:
        value = settings.get(setting)
        if not isinstance(value, (str, os.PathLike)) or Path(value).expanduser().suffix.lower() != ".json":
            continue
        if not Path(value).expanduser().is_file():
            continue  # the policy says "not found" with the command that makes one
        try:
            prof = load_any(value, name)
        except ValueError as e:
            if "missing" in str(e):  # a bare fit dump, not a saved profile: the policy reads it
                continue
            raise
        given = prof
        if ident and normalize_identity(prof.identity) != normalize_identity(ident):
            warnings.warn(f"etcdiff: {name} profile {value} was calibrated on {prof.identity!r}, not on this "
                          f"pipeline's model {ident!r}; its settings may not fit. Calibrate this model with "
                          f"`etcdiff calibrate --method {name} --steps {prof.steps}`.", UserWarning, stacklevel=4)
    return given
