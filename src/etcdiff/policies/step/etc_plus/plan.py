"""ETC+'s plan as pure tensor math: the calibrated cost of every window, and the backward dynamic programme over
(last two real steps, calls left) that gives the best next real step for any budget.

A state ``(c, j)`` is the last real step c with the one before it at c - j (j = 0: none). ``seg[c, j, d]`` is the
calibrated squared error of skipping the steps c+1..c+d-1 (``d = 1``: nothing skipped, cost 0); windows add as
independent errors.
"""

from __future__ import annotations

import math
from typing import Any

import torch

INF = math.inf
PINNED = "pinned_steps"  # profile key (calibration's, never saved): the real steps a plan of this fit must run


def window_costs(profile: dict[str, Any], gains: dict[tuple[int, int, int], tuple[float, float, float]],
                 num_steps: int, max_window: int, compute_last: bool = False) -> torch.Tensor:
    """``seg[c, j, d]`` from ``profile`` (``num_steps`` steps, windows of at most ``max_window``).

    Within a window the profile's ``segments`` (the weighted errors summed as vectors) give the cost; profiles
    from before them (version 1) sum the steps' squared errors from ``gains`` (``(c', c, t) -> (g, k, error)``).
    With ``compute_last``, no window may end the run."""
    n, w = num_steps, max_window
    seg = torch.full((n, w + 1, w + 1), INF, dtype=torch.float64)
    seg[:, :, 1] = 0.0
    windows = profile.get("segments")
    if windows is not None:
        cp, c, m, err = torch.tensor(windows, dtype=torch.float64).reshape(-1, 4).unbind(1)
        c, d = c.long(), (m - c).long()
        j = torch.where(cp >= 0, c - cp.long(), torch.zeros_like(c))
        keep = (c < n) & (j <= w) & (d > 1) & (d <= w)
        seg[c[keep], j[keep], d[keep]] = err[keep] ** 2
    else:
        weights = profile["weights"]
        for (cp, c, t), (_, _, e) in gains.items():
            j, d = (c - cp if cp >= 0 else 0), t - c
            if c < n and j <= w and 0 < d < w:
                seg[c, j, d + 1] = (weights[t] * e) ** 2
        seg[:, :, 2:] = torch.cumsum(seg[:, :, 2:], dim=2)
    if compute_last:
        cs = torch.arange(max(0, n - w), n - 1)
        seg[cs, :, n - cs] = INF
    return seg


def pinned_costs(seg: torch.Tensor, steps: list[int]) -> torch.Tensor:
    """``seg`` where each state on the path of ``steps`` (real steps from 0, ascending) may only take the window to
    its next real step (or to the run's end), so that the plan of ``len(steps)`` calls runs those steps; states off
    the path are as they were (what a spike's forced step plans from). A window longer than ``seg`` allows is left
    free (the plan then leaves the path there)."""
    n, w = seg.shape[0], seg.shape[1] - 1
    if not steps or steps[0] != 0 or any(b <= a for a, b in zip(steps, steps[1:])) or steps[-1] >= n:
        raise ValueError(f"pinned steps must ascend from 0 within {n} steps, got {steps!r}")
    seg = seg.clone()
    ends = list(steps) + ([n] if steps[-1] < n - 1 else [])
    for i, (c, m) in enumerate(zip(ends, ends[1:])):
        j = c - steps[i - 1] if i > 0 else 0
        if m - c <= w and j <= w:
            kept = float(seg[c, j, m - c])
            seg[c, j, 1:] = INF
            seg[c, j, m - c] = kept
    return seg


def plan_table(seg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(value, nxt)`` over ``seg`` (``[n, w + 1, w + 1]``): ``value[k, c, j]``, the least cost of the rest of the
    run with at most k more real steps, and ``nxt[k, c, j]``, the next real step (``n``: none)."""
    n, w = seg.shape[0], seg.shape[1] - 1
    cs = torch.arange(n)
    end_d = n - cs  # the window that ends the run
    value = torch.full((n + w + 1, w + 1), INF, dtype=torch.float64)  # rows >= n: no such state
    ok = end_d <= w
    value[:n][ok] = seg[cs[ok], :, end_d[ok]]
    nxt = torch.full((n, w + 1), n, dtype=torch.long)
    values, nxts = [value[:n].clone()], [nxt.clone()]
    ds = torch.arange(1, w + 1)
    dest = cs.unsqueeze(1) + ds  # [c, d]: the next real step c + d
    step_cost = seg[:, :, 1:].clone()  # [c, j, d - 1]
    step_cost[(dest >= n).unsqueeze(1).expand_as(step_cost)] = INF  # the run's end is in value[0]
    for _ in range(1, n):
        cand = step_cost + value[dest, ds].unsqueeze(1)  # [c, j, d - 1]
        best, arg = cand.min(dim=2)
        better = best < value[:n]
        if not bool(better.any()):
            break
        value[:n] = torch.where(better, best, value[:n])
        nxt = torch.where(better, dest.gather(1, arg), nxt)
        values.append(value[:n].clone())
        nxts.append(nxt.clone())
    return torch.stack(values), torch.stack(nxts)


__all__ = ["INF", "PINNED", "pinned_costs", "plan_table", "window_costs"]
