"""A configuration built from a saved calibration takes on the calibration made at each run's step count.

``etcdiff.enable`` sets ``for_steps`` (``steps -> configuration``, :class:`etcdiff.saved_calibration.StepsSource`)
on the step policy or block rule it builds from a saved profile; before each generation the integrations call
:func:`adopt_for_steps`, which copies the settings of the one made at that step count onto the live object (once per
step count change), so that hooks and references to it stay valid.
"""

from __future__ import annotations

from typing import Any


def adopt_for_steps(target: Any, num_steps: Any) -> None:
    """``target`` with the settings of ``target.for_steps(num_steps)``; nothing without ``for_steps`` or for a
    step count that is not a positive integer."""
    source = getattr(target, "for_steps", None)
    if source is None or isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        return
    fresh = source(num_steps)
    if fresh is not target.__dict__.get("_built_from"):
        target.__dict__.update(fresh.__dict__)
        target.for_steps, target._built_from = source, fresh


__all__ = ["adopt_for_steps"]
