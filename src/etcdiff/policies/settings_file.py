"""Reading a calibrated method's settings from JSON: the file ``etcdiff calibrate --method NAME`` writes (a
:class:`~etcdiff.policies.method_profile.MethodProfile`, checked on load: format, method, finite numbers), or a
bare ``to_dict()`` dump (checked for finite numbers)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .method_profile import non_finite_at, read_method_profile


def read_settings_file(path: str | os.PathLike, key: str, method: str) -> dict[str, Any]:
    """The ``key`` entry of a calibration file's settings, or the whole document when it is a bare dump."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ValueError(f"{method}: {key} file not found: {p}. Make one with `etcdiff calibrate --method {method}`.")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{method}: {p} is not valid JSON: {e}") from None
    except OSError as e:
        raise ValueError(f"{method}: {p} cannot be read ({e.strerror}).") from None
    if isinstance(doc, dict) and "settings" in doc:
        settings = read_method_profile(p, method).settings
        if key not in settings:
            raise ValueError(f"{method}: {p} holds no {key!r} (is it another method's calibration file?).")
        return settings[key]
    bad = non_finite_at(doc)
    if bad is not None:
        raise ValueError(f"{method}: {p}: {bad} is not a finite number; the calibration is broken.")
    return doc


def fitted(value: Any, cls: type, key: str, method: str, label: str, what: str) -> Any:
    """``value`` as a ``cls`` (a fitted calibration object): a JSON path (read with :func:`read_settings_file`), a
    ``to_dict()`` or the object itself; anything else is a ``ValueError`` saying what ``label`` takes."""
    if isinstance(value, (str, os.PathLike)):
        value = read_settings_file(value, key, method)
    if isinstance(value, dict):
        value = cls.from_dict(value)
    if not isinstance(value, cls):
        raise ValueError(f"{label}: {key} must be {what}, its to_dict() or a JSON path, got {type(value).__name__}.")
    return value
