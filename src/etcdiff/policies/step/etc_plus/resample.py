"""One ETC+ calibration for several step counts: a profile resampled on the sigma axis.

A window's calibrated error is the RMS of ``sum_t w_t·(eps_t - estimate_t)`` over its skipped steps, where ``w_t``
(the solver's reach of step t, probes included) is about the step's length on the solver's time axis. The sum is
then a quadrature of one integral, the estimate's deviation over the stretch of that axis the window skips, and
the integral does not depend on how finely the stretch was cut into steps. So a run at another step count is
planned from the same profile by mapping every step to its position on the calibration's grid through the
sigmas (``u(t)``, fractional), and reading a window ``(c', c, m)`` of the new grid as the calibration's window
from ``u(c)`` (its previous real step ``u(c) - u(c')`` before): the calibrated windows give the estimate's
deviation per unit of axis at each distance past the last real step (how much a window grows when it skips one
more step, over that step's weight), interpolated in the base step, the previous step's distance and the
distance; the new window's error is the sum over its skipped steps of their weight times that deviation (the
errors of one window share a direction, so they add along it).

What does not carry over and is left out: fitted gains (the resampled profile estimates with the plain trend on
the resampled axis, from the windows' errors under the plain trend that the fit also keeps, ``plain_segments``,
and so measures no per-sample hardness) and the budget errors measured at the calibration's
own step count. Windows longer than the calibration's longest window are not offered. Pure tensor math.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch


def grid_positions(source: Sequence[float], target: Sequence[float]) -> torch.Tensor:
    """Fractional positions on the source grid (steps 0..n, the end at n) of the target's steps and end.

    ``source``/``target``: the sigmas of the steps (n and n' values, decreasing); both runs end at sigma 0."""
    src = torch.tensor(list(source) + [0.0], dtype=torch.float64)
    tgt = torch.tensor(list(target) + [0.0], dtype=torch.float64)
    if bool((src[1:] > src[:-1]).any()) or bool((tgt[1:] > tgt[:-1]).any()):
        raise ValueError("etc-plus: resampling needs decreasing sigmas on both schedules.")
    idx = torch.arange(len(src), dtype=torch.float64)
    xs, ys = src.flip(0), idx.flip(0)  # increasing sigma for the interpolation
    pos = torch.empty_like(tgt)
    for i, s in enumerate(tgt.tolist()):
        s = min(max(s, float(xs[0])), float(xs[-1]))
        k = int(torch.searchsorted(xs, torch.tensor(s, dtype=torch.float64)).clamp(1, len(xs) - 1))
        x0, x1 = float(xs[k - 1]), float(xs[k])
        f = 0.0 if x1 == x0 else (s - x0) / (x1 - x0)
        pos[i] = ys[k - 1] + f * (ys[k] - ys[k - 1])
    return pos


def _interp(values: Sequence[float], at: torch.Tensor) -> torch.Tensor:
    """``values`` (on 0..len-1) at the fractional positions ``at``, linearly, clamped at the ends."""
    v = torch.tensor(list(values), dtype=torch.float64)
    at = at.clamp(0, len(v) - 1)
    lo = at.floor().long().clamp(max=len(v) - 1)
    hi = (lo + 1).clamp(max=len(v) - 1)
    return v[lo] + (at - lo) * (v[hi] - v[lo])


def _window_table(profile: dict[str, Any]) -> torch.Tensor:
    """``table[c, j, d]``: the calibrated error (not squared) of the window from c (previous real step c - j,
    j = 0: none) to c + d; 0 at d <= 1, NaN where the calibration has none. A previous step further back than the
    run's start takes the nearest there is."""
    n, w = int(profile["num_steps"]), int(profile["max_window"])
    table = torch.full((n + 1, w + 1, w + 1), math.nan, dtype=torch.float64)
    table[:, :, :2] = 0.0
    for cp, c, m, err in profile.get("plain_segments") or profile["segments"]:
        c, d = int(c), int(m) - int(c)
        j = c - int(cp) if cp >= 0 else 0
        if c < n and j <= w and 1 < d <= w:
            table[c, j, d] = err
    for c in range(min(n, w)):
        table[c, c + 1:] = table[c, c if c > 0 else 0]
    return table


class _Deviation:
    """The estimate's deviation per unit of axis at a distance ``delta`` past the last real step, read off the
    calibrated windows: the step a window grows by adds its weight times the deviation there."""

    def __init__(self, profile: dict[str, Any]) -> None:
        self.table = _window_table(profile)
        self.axis = profile["axis"]
        self.weights = profile["weights"]
        self.n, self.w = int(profile["num_steps"]), int(profile["max_window"])
        self.rows: dict[tuple[int, int], tuple[list[float], list[float]]] = {}

    def _row(self, c: int, j: int) -> tuple[list[float], list[float]]:
        """(distances, deviations) of the base step c with its previous step j back, at k = 1..w-1 steps past c."""
        if (c, j) not in self.rows:
            dist, dev = [], []
            for k in range(1, self.w):
                if c + k >= self.n or math.isnan(float(self.table[c, j, k + 1])):
                    break
                grow = float(self.table[c, j, k + 1] - self.table[c, j, k])
                dist.append(self.axis[c + k] - self.axis[c])
                dev.append(max(grow, 0.0) / max(self.weights[c + k], 1e-30))
            self.rows[(c, j)] = (dist, dev)
        return self.rows[(c, j)]

    def at(self, c: float, j: float, delta: float) -> float:
        """The deviation at fractional base c, previous step j back (0: none), ``delta`` past it; NaN beyond the
        calibrated windows. Below the first calibrated distance it falls as ``delta`` (j = 0: the output is reused)
        or ``delta²`` (a linear trend misses by the curvature)."""
        total = 0.0
        for cc, fc in _corners(c, self.n - 1):
            for jj, fj in ([(0, 1.0)] if j == 0 else _corners(min(max(j, 1.0), self.w), self.w)):
                dist, dev = self._row(cc, jj)
                if not dist or delta > dist[-1] * (1 + 1e-9):
                    return math.nan
                if delta <= dist[0]:
                    value = dev[0] * (delta / dist[0]) ** (1 if jj == 0 else 2) if dist[0] > 0 else 0.0
                else:
                    k = next(i for i in range(1, len(dist)) if delta <= dist[i])
                    f = (delta - dist[k - 1]) / max(dist[k] - dist[k - 1], 1e-30)
                    value = dev[k - 1] + f * (dev[k] - dev[k - 1])
                total += fc * fj * value
        return total


def _corners(x: float, top: int) -> list[tuple[int, float]]:
    lo = min(int(math.floor(x)), top)
    f = x - lo
    return [(lo, 1.0 - f), (min(lo + 1, top), f)] if f > 1e-12 else [(lo, 1.0)]


def resample_profile(profile: dict[str, Any], sigmas: Sequence[float]) -> dict[str, Any]:
    """``profile`` (from :func:`~etcdiff.policies.step.etc_plus.fit.fit_etc_plus`, with ``sigmas``) for a run whose
    steps have ``sigmas`` (one per step); module docstring."""
    src = profile.get("sigmas")
    if not src or profile.get("segments") is None:
        raise ValueError("etc-plus: this profile has no sigmas or window errors, so it serves only the step count "
                         f"it was fitted at ({profile['num_steps']}); calibrate at this step count.")
    n, w = int(profile["num_steps"]), int(profile["max_window"])
    m = len(sigmas)
    u = grid_positions(src, sigmas)  # m + 1 positions, u[m] = n
    axis = _interp(profile["axis"], u)
    raw = [profile["axis"][t + 1] - profile["axis"][t] for t in range(n)]
    factor = [wt / r if r > 0 else 1.0 for wt, r in zip(profile["weights"], raw)]
    weights = ((axis[1:] - axis[:-1]) * _interp(factor, u[:-1])).tolist()
    deviation = _Deviation(profile)
    reach = max(2, min(m, int(math.ceil(w * m / n * 2))))  # the longest new window worth trying
    segments = []
    for c in range(m - 1):
        for cp in [-1] + list(range(max(0, c - reach), c)):
            j = 0.0 if cp < 0 else float(u[c] - u[cp])
            if j > w:
                continue
            err = 0.0
            for t in range(c + 1, min(c + reach, m)):  # the window to t + 1 skips t
                err += weights[t] * deviation.at(float(u[c]), j, float(axis[t] - axis[c]))
                if not math.isfinite(err):
                    break
                segments.append([cp, c, t + 1, err])
    keep = ("method", "version", "ridge", "final_rms", "tolerance", "spike", "num_trajectories", "propagation",
            "scheduler", "selection", "tolerance_scale", "cost", "corrections")
    out = {k: profile[k] for k in keep if k in profile}
    out.update({"num_steps": m, "max_window": reach, "weights": weights, "axis": axis.tolist(),
                "output_rms": _interp(profile["output_rms"], u[:-1]).tolist(), "sigmas": [float(s) for s in sigmas],
                "triplets": [], "segments": segments, "resampled_from": n})
    return out


__all__ = ["grid_positions", "resample_profile"]
