"""The bench's one contact with the method lookup: each (method, setting) of a sweep is resolved once (saved
calibrations read, the policy or rule built, ETC+'s plan made), then put on the pipeline and taken off again for
every run, so that a timed run only creates a generation's fresh state."""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .. import disable, enable, last_report
from ..policies import StepPolicy
from .sweep import REFERENCE_METHOD, MethodSetting


@dataclass(frozen=True)
class ResolvedSetting:
    """A (method, setting) ready to enable: the built object (``None`` for an external peer, which is enabled by
    name), the settings it runs with, a digest of both for the run keys, or the error that resolving raised."""

    method: str
    thing: Any = None
    used: dict[str, Any] | None = None
    digest: str | None = None
    error: Exception | None = None

    def enable_on(self, pipe: Any) -> Any:
        if self.error is not None:
            raise self.error
        if self.thing is None:
            return enable(pipe, self.method, **(self.used or {}))
        return enable(pipe, self.thing)


def resolve_setting(pipe: Any, ms: MethodSetting | None, steps: int) -> ResolvedSetting:
    """Resolve ``ms`` (``None``: the full-step reference) on ``pipe`` once: saved calibrations filled in, the policy
    or rule built and, for a step policy, prepared for ``steps`` (ETC+'s plan)."""
    from ..api import resolve
    from ..registry import get_method

    name = REFERENCE_METHOD if ms is None else ms.method
    try:
        method = get_method(name)
        thing, used = resolve(method, pipe, {} if ms is None else dict(ms.kwargs))
        params = getattr(thing, "params", None)
        doc = {"used": {k: _file_digest(v) for k, v in used.items()},
               "params": params() if callable(params) else None}
        at_steps = _for_run(thing, steps)
        if at_steps:  # only then, so that the keys of runs that use no saved calibration stay as they were
            doc["at_steps"] = at_steps
        if isinstance(thing, StepPolicy):
            thing.prepare(steps)
    except Exception as e:  # noqa: BLE001 - kept, and raised where the setting is enabled
        return ResolvedSetting(name, error=e)
    digest = hashlib.sha1(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return ResolvedSetting(name, thing, used, digest)


@dataclass(frozen=True)
class EnabledMethod:
    """A method on a pipeline: its policy (or cache object), and the report of the pipeline's last call."""

    pipe: Any
    policy: Any

    def report(self) -> Any:
        return last_report(self.pipe)


@contextmanager
def enabled(pipe: Any, setting: ResolvedSetting) -> Iterator[EnabledMethod]:
    """``pipe`` with the resolved ``setting`` on it inside the block; taken off on leaving the block, and also
    when enabling it fails half-way."""
    try:
        yield EnabledMethod(pipe, setting.enable_on(pipe))
    finally:
        disable(pipe)


def _file_digest(value: Any) -> Any:
    """A setting value that names an existing file, as the digest of its contents (else the value itself)."""
    if isinstance(value, (str, os.PathLike)) and str(value).endswith(".json"):
        path = Path(value).expanduser()
        if path.is_file():
            return {"file": str(value), "sha1": hashlib.sha1(path.read_bytes()).hexdigest()}
    return value


def _for_run(thing: Any, steps: int | None) -> dict[str, Any]:
    """What a policy enabled from saved calibrations takes at ``steps`` where it differs from what ``enable``
    built it from (the keys of the common case, one profile, stay as they were): the profile file made for that
    step count (by contents), and ETC's tau there."""
    if steps is None:
        return {}
    out: dict[str, Any] = {}
    source = getattr(thing, "for_steps", None)
    if source is not None:
        source(steps)  # raises when there is none: the runs fail and say why
        path = getattr(source, "paths", {}).get(steps)
        if path is not None and path != getattr(source, "built_path", None):
            out["profile"] = _file_digest(str(path))
    tau_for = getattr(thing, "threshold_for_steps", None)
    if tau_for is not None and tau_for(steps) != getattr(thing, "threshold", None):
        out["tau"] = tau_for(steps)
    return out
