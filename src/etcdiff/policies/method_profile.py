"""A calibrated method's profile as a typed object: what ``etcdiff calibrate --method NAME`` saves and
``etcdiff.enable`` finds (ETC's own search, with its curves, is :class:`etcdiff.calibration.Profile`).

Format 2 (this one) adds to format 1 the scheduler the calibration ran with and the settings given to the
calibration (``--set``); a format-1 file reads as format 2 with those unknown (``scheduler`` ``None``: it
matches any scheduler). A file from a newer etcdiff (a higher format) is refused.

Every load is checked: the format, the method, the step count, and every number in the settings finite
(``NaN`` or ``Infinity`` in a profile is a broken calibration, never a setting).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

METHOD_PROFILE_FORMAT = 2
_NON_FINITE_WORDS = {"nan", "-nan", "inf", "-inf", "+inf", "infinity", "-infinity", "+infinity"}


def non_finite_at(value: Any, where: str = "") -> str | None:
    """The key path of the first non-finite number in ``value`` (nested dicts and lists), else ``None``.
    Strings that spell a non-finite number (how JSON writers often store them) count."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return None if math.isfinite(value) else where or "value"
    if isinstance(value, str):
        return where or "value" if value.strip().lower() in _NON_FINITE_WORDS else None
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return None
    for k, v in items:
        found = non_finite_at(v, f"{where}.{k}" if where else str(k))
        if found is not None:
            return found
    return None


@dataclass
class MethodProfile:
    """One calibration of a method on a model at a step count.

    ``settings`` are what the method's policy takes (``profile``, ``tables``, ``ratios``, ``coefficients``,
    MeanCache's ``calls``); ``run_settings`` the policy settings given to the calibration (``--set calls=12``),
    used as defaults when the profile is found; ``fit_settings`` what only the fit took (ERTACache's
    ``threshold``). ``seconds``, ``prompts`` and ``seed`` record what the calibration cost and ran on."""

    method: str
    identity: str
    steps: int
    settings: dict[str, Any]
    scheduler: str | None = None
    run_settings: dict[str, Any] = field(default_factory=dict)
    fit_settings: dict[str, Any] = field(default_factory=dict)
    prompts: list[Any] = field(default_factory=list)
    seed: int | None = None
    seconds: float = 0.0
    created: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    format: int = METHOD_PROFILE_FORMAT
    path: Path | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.validate()

    def where(self) -> str:
        return f"profile {self.path}" if self.path else f"{self.method} profile"

    def validate(self) -> None:
        where = self.where()
        if isinstance(self.format, bool) or not isinstance(self.format, int) or self.format < 1:
            raise ValueError(f"{where}: format must be a positive integer, got {self.format!r}.")
        if self.format > METHOD_PROFILE_FORMAT:
            raise ValueError(f"{where}: format {self.format} was written by a newer etcdiff (this one reads up to "
                             f"{METHOD_PROFILE_FORMAT}); upgrade etcdiff or calibrate again with this one.")
        if not isinstance(self.method, str) or not self.method:
            raise ValueError(f"{where}: no method name; is this an etcdiff calibration profile?")
        if not isinstance(self.identity, str) or not self.identity.strip():
            raise ValueError(f"{where}: no model identity; is this an etcdiff calibration profile?")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"{where}: steps must be a positive integer, got {self.steps!r}.")
        if self.scheduler is not None and not isinstance(self.scheduler, str):
            raise ValueError(f"{where}: scheduler must be a class name, got {self.scheduler!r}.")
        for name in ("settings", "run_settings", "fit_settings"):
            value = getattr(self, name)
            if not isinstance(value, dict):
                raise ValueError(f"{where}: {name} must be a JSON object, got {type(value).__name__}.")
            bad = non_finite_at(value)
            if bad is not None:
                raise ValueError(f"{where}: {name}.{bad} is not a finite number; the calibration is broken: "
                                 f"run `etcdiff calibrate --method {self.method} --steps {self.steps}` again.")
        if not isinstance(self.seconds, (int, float)) or isinstance(self.seconds, bool) \
                or not math.isfinite(self.seconds) or self.seconds < 0:
            raise ValueError(f"{where}: seconds must be a finite number >= 0, got {self.seconds!r}.")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("path")
        return out

    @classmethod
    def from_dict(cls, data: Any, path: Path | None = None) -> "MethodProfile":
        """A profile from its JSON object (format 1 or 2), checked; a ValueError names the file and the fix."""
        where = f"profile {path}" if path else "profile"
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(data).__name__}.")
        missing = [k for k in ("method", "identity", "steps", "settings") if k not in data]
        if missing:
            raise ValueError(f"{where}: missing {', '.join(missing)}; is this an etcdiff calibration profile?")
        known = {"method", "identity", "steps", "settings", "scheduler", "run_settings", "fit_settings", "prompts",
                 "seed", "seconds", "created", "versions", "format"}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs.setdefault("format", 1)
        try:
            return cls(**kwargs, path=path)
        except (TypeError, ValueError) as e:
            msg = str(e)
            raise ValueError(msg if msg.startswith(where) else f"{where}: {msg}") from None


def read_method_profile(path: str | os.PathLike, method: str | None = None) -> MethodProfile:
    """A profile file, checked; with ``method``, it must be that method's. One-line errors name the file."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise ValueError(f"profile {p} is a folder, not a file; remove it or give the profile's file.")
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"calibration profile not found: {p}") from None
    except OSError as e:
        raise ValueError(f"profile {p} cannot be read ({e.strerror}); fix its permissions or remove it.") from None
    except UnicodeDecodeError:
        raise ValueError(f"profile {p} is not UTF-8 text; remove it and calibrate again.") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"profile {p} is not valid JSON ({e.msg} at line {e.lineno}); it may have been cut "
                         "short: remove it and calibrate again.") from None
    prof = MethodProfile.from_dict(data, path=p)
    if method is not None and prof.method != method:
        raise ValueError(f"profile {p} is a {prof.method} calibration, not {method}'s.")
    return prof
