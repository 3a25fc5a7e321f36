"""The change point of the averaged similarity curve, and the tolerance read off it (pure numpy + ruptures).

This module imports nothing else from etcdiff, so that any layer (profiles included) can use it.

The index r, precisely. The transition between the volatile semantic-planning phase and the stable refinement
phase is found with ``ruptures.BottomUp(model="l1")`` and one breakpoint; tau = d_bar[r].
``predict(n_bkps=1)`` returns ``[bkp, len(s_bar)]`` where ``bkp`` is the *end* (exclusive) of the first
segment: s_bar[:bkp] is the volatile phase, s_bar[bkp:] the stable one. The transition can be read as the last
volatile index (bkp - 1) or the first stable one (bkp). We take **r = bkp - 1** and tau = d_bar[r], the output
change of the last step whose perturbation the model still had to correct, because that reading reproduces the
published tolerances: on the d/s curves printed in the authors' release for Open-Sora 1.2 and FLUX.1-dev,
``BottomUp(model="l1")`` at ruptures' defaults gives bkp = 5 for both, and d_bar[4] is 0.1684 / 0.1270
(published: 0.1684 / 0.1269) while d_bar[5] is 0.1295 / 0.1027. The defaults matter: ``min_size=2`` and
``jump=5`` (breakpoints only at multiples of 5, so r is 4, 9, 14, ...). Both are parameters; the defaults
reproduce the reference, ``jump=1`` is a finer, opt-in search.
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np

#: ruptures' own defaults for BottomUp; with them the search reproduces the published tolerances.
DEFAULT_JUMP = 5
DEFAULT_MIN_SIZE = 2
DETECTOR = "ruptures.BottomUp(model='l1')"


def min_curve_length(jump: int = DEFAULT_JUMP, min_size: int = DEFAULT_MIN_SIZE) -> int:
    """The shortest curve on which ruptures can place one breakpoint: the first multiple of ``jump`` that is
    at least ``min_size``, plus ``min_size`` points after it (7 with the defaults, 4 with ``jump=1``)."""
    first = math.ceil(max(min_size, 1) / jump) * jump
    return first + min_size


def min_steps(jump: int = DEFAULT_JUMP, min_size: int = DEFAULT_MIN_SIZE) -> int:
    """The fewest sampling steps a search needs: the curves have N - 1 points (8 steps with the defaults)."""
    return min_curve_length(jump, min_size) + 1


def check_detector_args(jump: int, min_size: int) -> None:
    """Raise ``ValueError`` unless ``jump`` and ``min_size`` are integers >= 1."""
    for name, v in (("jump", jump), ("min_size", min_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"change point: {name} must be an integer >= 1, got {v!r}.")


def check_steps(steps: int, jump: int = DEFAULT_JUMP, min_size: int = DEFAULT_MIN_SIZE) -> None:
    """Raise ``ValueError`` unless ``steps`` sampling steps give curves long enough for a change point."""
    if isinstance(steps, bool) or not isinstance(steps, int):
        raise ValueError(f"steps must be an integer, got {steps!r}.")
    check_detector_args(jump, min_size)
    need = min_steps(jump, min_size)
    if steps < need:
        raise ValueError(
            f"{steps} steps are too few for the tolerance search: the change point needs curves of at least "
            f"{need - 1} points, i.e. at least {need} sampling steps (jump={jump}, min_size={min_size})."
        )


def change_point(s_bar: Sequence[float], *, jump: int = DEFAULT_JUMP, min_size: int = DEFAULT_MIN_SIZE) -> int:
    """r, the last index of the volatile first segment of ``s_bar`` (see the module docs): ruptures'
    ``BottomUp(model="l1", jump=jump, min_size=min_size).fit(s_bar).predict(n_bkps=1)[0] - 1``."""
    import ruptures as rpt

    check_detector_args(jump, min_size)
    signal = np.asarray(s_bar, dtype=float).reshape(-1)
    need = min_curve_length(jump, min_size)
    if signal.size < need:
        raise ValueError(
            f"the similarity curve has {signal.size} points, too short for a change point: ruptures BottomUp "
            f"(jump={jump}, min_size={min_size}) needs at least {need}, i.e. at least {need + 1} sampling steps "
            f"(the curves have one point per pair of consecutive steps)."
        )
    if not np.all(np.isfinite(signal)):
        raise ValueError("the similarity curve has NaN or Inf values; check the decoder and the model outputs.")
    candidates = [b for b in range(signal.size) if b % jump == 0 and b >= min_size and signal.size - b >= min_size]
    if len(candidates) == 1:
        warnings.warn(
            f"with {signal.size} curve points and jump={jump} there is a single admissible change point "
            f"(index {candidates[0]}): the search cannot choose. Calibrate with more steps or a smaller jump.",
            UserWarning,
            stacklevel=2,
        )
    bkp = rpt.BottomUp(model="l1", jump=jump, min_size=min_size).fit(signal).predict(n_bkps=1)[0]
    return int(bkp) - 1


def tolerance_from_curves(
    d_bar: Sequence[float], s_bar: Sequence[float], *, jump: int = DEFAULT_JUMP, min_size: int = DEFAULT_MIN_SIZE
) -> tuple[float, int]:
    """``(tau, r)`` from the averaged curves: r = :func:`change_point` of ``s_bar``, tau = ``d_bar[r]``."""
    d = np.asarray(d_bar, dtype=float).reshape(-1)
    s = np.asarray(s_bar, dtype=float).reshape(-1)
    if d.shape != s.shape:
        raise ValueError(f"d_bar and s_bar must have the same length, got {d.size} and {s.size}.")
    r = change_point(s, jump=jump, min_size=min_size)
    return float(d[r]), r
