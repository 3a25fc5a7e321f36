"""Saying so when a step method reused nothing: a setting that leaves every step to the model (SenCache's
default eps on a model it was not tuned on, a tolerance of 0) makes the method a slower full run, which a
user should not have to discover from the call count."""

from __future__ import annotations

from typing import Any

from .registry import METHODS


def no_reuse_note(name: str, settings: dict[str, Any], steps: int | None, computed: int | None) -> str | None:
    """One line when ``computed == steps`` for a step method that can skip, naming the setting to raise."""
    method = METHODS.get(name)
    if method is None or method.kind != "step" or name == "none" or not steps or computed is None or computed < steps:
        return None
    knob = method.threshold
    if knob is None:
        hint = f"see its settings ({', '.join(method.settings_names()) or 'none'})"
    else:
        now = settings.get(knob)
        hint = f"raise {knob}" + (f" (now {now})" if now is not None else "")
    return f"{name} reused nothing: all {steps} steps ran the model, so it only adds overhead; to skip steps, {hint}."
