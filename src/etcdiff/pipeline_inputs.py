"""Checks of what a user hands the embedded pipelines: one line naming the problem and the fix, before any
sampling (never the empty caption in place of a mistyped prompt, never a NaN guidance scale)."""

from __future__ import annotations

import math
from typing import Any


def check_guidance(value: Any, who: str) -> float:
    """``value`` as a finite guidance scale >= 0, or a ValueError saying so."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)) or value < 0:
        raise ValueError(f"{who}: guidance_scale must be a finite number >= 0 (1 = no guidance), got {value!r}.")
    return float(value)


def check_text_prompt(prompt: Any, who: str) -> None:
    """A text prompt: a non-blank string or a non-empty list of them (ValueError otherwise). The empty caption
    is the unconditional branch's input, never a prompt to draw."""
    items = prompt if isinstance(prompt, (list, tuple)) else [prompt]
    if isinstance(prompt, (list, tuple)) and not prompt:
        raise ValueError(f"{who}: the prompt list is empty; give at least one prompt.")
    for p in items:
        if not isinstance(p, str):
            raise ValueError(f"{who}: a prompt must be a string (or a list of strings), got {type(p).__name__} "
                             f"{p!r}.")
        if not p.strip():
            raise ValueError(f"{who}: a prompt is empty or blank ({p!r}); describe the image to draw (the empty "
                             "caption is only the unconditional branch's input).")
