"""The bench's one contact with the method lookup: put a (method, setting) on a pipeline and take it off again."""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .. import disable, enable, last_report
from .schedule import REFERENCE_METHOD, MethodSetting


@dataclass(frozen=True)
class EnabledMethod:
    """A method on a pipeline: its policy (or cache object), and the report of the pipeline's last call."""

    pipe: Any
    policy: Any

    def report(self) -> Any:
        return last_report(self.pipe)


@contextmanager
def enabled(pipe: Any, ms: MethodSetting | None) -> Iterator[EnabledMethod]:
    """``pipe`` with the method and setting of ``ms`` on it (``None``: the full-step reference) inside the block.

    The method is taken off on leaving the block, and also when enabling it fails half-way.
    """
    try:
        policy = enable(pipe, REFERENCE_METHOD if ms is None else ms.method, **({} if ms is None else ms.kwargs))
        yield EnabledMethod(pipe, policy)
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


def setting_inputs(pipe: Any, ms: MethodSetting, steps: int | None = None) -> str | None:
    """What a (method, setting) will actually run with, as a digest for its run key: the settings after saved
    calibrations are filled in, profile files by their contents, and the built policy's parameters.

    A re-calibrated profile at the same path (or found in the profile folder, the one made for ``steps``) then
    makes new runs instead of resuming the old ones. ``None`` when the setting cannot be resolved (its runs fail and say why).
    """
    from ..api import resolve
    from ..registry import get_method

    try:
        thing, used = resolve(get_method(ms.method), pipe, dict(ms.kwargs))
    except Exception:  # noqa: BLE001 - the run itself reports the error
        return None
    params = getattr(thing, "params", None)
    doc = {"used": {k: _file_digest(v) for k, v in used.items()},
           "params": params() if callable(params) else None}
    try:
        at_steps = _for_run(thing, steps)
    except Exception:  # noqa: BLE001 - the run itself reports the error
        return None
    if at_steps:  # only then, so that the keys of runs that use no saved calibration stay as they were
        doc["at_steps"] = at_steps
    return hashlib.sha1(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]
