"""Calibration of etc-plus: the profile that :class:`~etcdiff.policies.step.etc_plus.ETCPlus` plans and estimates from.

From recorded full-step trajectories (eps_t as consumed, x_t, the final latents): the solver's error weights and
time axis, the calibrated RMS error of every estimate (c', c, t) up to ``max_window`` steps ahead, optionally the
fitted gains, the default tolerance and the spike level. Pure tensor math; the profile is a JSON-serialisable dict.
"""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

import torch

from ...settings_file import read_settings_file
from ...trajectory import Trajectory

DEFAULT_REL_TOLERANCE = 0.02  # chosen on the digits model (docs/etc-plus, "Tolerance mode")
CV_MARGIN = 0.5  # fitted gains replace the plain trend only where they halve its out-of-sample error


def flat_items(x: torch.Tensor) -> torch.Tensor:
    """``x`` as [items, features] (dim 0 is the batch)."""
    return x.reshape(x.shape[0], -1) if x.dim() > 1 else x.reshape(1, -1)


def item_rms(x: torch.Tensor) -> torch.Tensor:
    """Per-sample root mean square over all but the batch dimension."""
    return flat_items(x).float().pow(2).mean(1).sqrt()


def check_number(name: str, value: Any, low: float, allow_none: bool = True) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < low:
        raise ValueError(f"etc-plus: {name} must be a finite number >= {low}, got {value!r}.")
    return float(value)


# -- calibration ------------------------------------------------------------------------------------------------
COLLINEAR = 1e-10  # two vectors count as collinear where their Gram determinant is below this share of |u|²·|v|²


def solve_pair(gram: torch.Tensor, rhs: torch.Tensor) -> tuple[float, float] | None:
    """The least-squares coefficients of two vectors from their 2x2 Gram matrix and right-hand side; ``None`` where
    the vectors are collinear to rounding (:data:`COLLINEAR`), whose solve returns noise that differs by CPU."""
    det = float(gram[0, 0] * gram[1, 1] - gram[0, 1] ** 2)
    if det <= COLLINEAR * float(gram[0, 0] * gram[1, 1]):
        return None
    a, b = torch.linalg.solve(gram, rhs).tolist()
    return float(a), float(b)


def solver_weights(inputs: torch.Tensor, outputs: torch.Tensor, finals: torch.Tensor) -> list[float]:
    """``w_t``: how an output error at step t scales into the final latents (module docstring, part 2)."""
    n = outputs.shape[0]
    coef = []
    for t in range(n):
        x, e = inputs[t].flatten(), outputs[t].flatten()
        y = (inputs[t + 1] if t + 1 < n else finals).flatten()
        gram = torch.tensor([[x @ x, x @ e], [x @ e, e @ e]], dtype=torch.float64)
        rhs = torch.tensor([x @ y, e @ y], dtype=torch.float64)
        solved = solve_pair(gram, rhs)  # x and eps collinear: treat the step as y = x + b·eps
        a, b = solved if solved is not None else (1.0, float((e @ (y - x)) / max(float(e @ e), 1e-30)))
        coef.append((abs(a), abs(b)))
    weights, carry = [0.0] * n, 1.0
    for t in reversed(range(n)):
        weights[t] = coef[t][1] * carry
        carry *= coef[t][0]
    return weights


def fit_etc_plus(trajectories: Sequence["Trajectory"], max_window: int = 8, corrections: bool | str = "auto",
                 ridge: float = 0.01,
                 rel_tolerance: float = DEFAULT_REL_TOLERANCE, spread: float | None = None,
                 propagation: bool = True, reach: Sequence[float] | None = None,
                 trend_caps: bool = False, adapt_trend: bool = False, final_plans: bool = False,
                 searched_schedules: bool = False) -> dict[str, Any]:
    """Calibrate ETC+ on recorded full-step trajectories (``record_pipeline``; ``.outputs``, ``.inputs``,
    ``.final``); returns a JSON-serialisable profile for :class:`ETCPlus`.

    ``max_window``: the longest gap between two real steps the plan may use; ``corrections``: fit the gains
    ``(g, k)`` per step (True), keep the plain trend (False), or ``"auto"``: per (c', c, t), the fitted gains
    only where, fitted on one half of the calibration samples, they beat the plain trend on the other half by
    ``CV_MARGIN`` both ways round; ``ridge``: their pull towards the plain trend; ``rel_tolerance``:
    the default tolerance as a fraction of the final RMS; ``spread``: when set, an error at noise level sigma is
    damped by ``spread / hypot(spread, sigma)`` (relative units; the pull of a flow towards its data, which the
    solver fit alone cannot see; off by default, see the report of ``scripts/etc_plus_eval.py``);
    ``propagation``: where trajectories carry probes (``Trajectory.probes``, recorded by ``etcdiff calibrate
    --method etc-plus`` and ``calibrate_policy``), scale each step's solver weight by how much more or less an error
    there really reached the end (:func:`propagation_factors`); ``reach``: the solver's exact coefficient of each
    step's output in the final latents (signed; from a replay of the run's scheduler,
    :func:`etcdiff.calibration.etc_plus.reach.solver_reach`, which ``calibrate_policy`` passes where the runs carry
    their scheduler): the window errors use it instead of the one-step fit, which misses what multistep solvers carry
    through their history; the time axis stays the fit's. ``trend_caps`` (opt-in): calibration also runs each
    budget's plan with its trend capped and keeps a cap where it lands as close on average and closer in the worst
    runs (:mod:`etcdiff.calibration.etc_plus.refine`; the profile's ``budget_trend_caps``). ``adapt_trend``
    (opt-in): calibration also runs each budget's plans with ``ETCPlus(adapt_trend=True)`` and keeps it per plan
    where it lands as close on average and closer in the worst runs (the profile's ``budget_adapt_trend``).
    ``final_plans`` (opt-in): calibration measures each budget with the fold fits made to run this fit's own plan
    of it, so the budgets are ranked on the plans the profile runs (:func:`~etcdiff.calibration.etc_plus.refine.
    final_plans`). ``searched_schedules`` (opt-in): calibration also runs, per budget, a schedule searched by
    lexicographic minimax over the gaps' errors with its own predictor, and keeps it where it lands closer on
    average, a reuse schedule where it lands clearly closer (:mod:`etcdiff.policies.step.etc_plus.schedules`; the
    profile's ``budget_schedules``).
    """
    if not isinstance(trajectories, (list, tuple)) or not trajectories:
        raise ValueError("fit_etc_plus: give a non-empty list of recorded full-step trajectories (record_pipeline).")
    if corrections not in (True, False, "auto"):
        raise ValueError(f"fit_etc_plus: corrections must be True, False or 'auto', got {corrections!r}.")
    if isinstance(max_window, bool) or not isinstance(max_window, int) or max_window < 2:
        raise ValueError(f"fit_etc_plus: max_window must be an integer >= 2, got {max_window!r}.")
    if not isinstance(propagation, bool):
        raise ValueError(f"fit_etc_plus: propagation must be true or false, got {propagation!r}.")
    for name, value in (("trend_caps", trend_caps), ("adapt_trend", adapt_trend), ("final_plans", final_plans),
                        ("searched_schedules", searched_schedules)):
        if not isinstance(value, bool):
            raise ValueError(f"fit_etc_plus: {name} must be true or false, got {value!r}.")
    check_number("ridge", ridge, 0.0, allow_none=False)
    check_number("rel_tolerance", rel_tolerance, 0.0, allow_none=False)
    n = len(trajectories[0].outputs)
    for i, tr in enumerate(trajectories):
        if len(tr.outputs) != n or len(tr.inputs) != n or tr.final is None:
            raise ValueError(
                f"fit_etc_plus: trajectory {i} has {len(tr.outputs)} outputs, {len(tr.inputs)} inputs and "
                f"{'no' if tr.final is None else 'a'} final latent; every trajectory needs {n} of each and its final "
                "latents (record all calibration runs with the same num_inference_steps)."
            )
    if n < 3:
        raise ValueError(f"fit_etc_plus: the trajectories have {n} step(s); at least 3 are needed.")
    # [steps, items, features] in float64, items = every sample of every trajectory
    outs = torch.stack([torch.cat([flat_items(o).double() for o in [tr.outputs[t] for tr in trajectories]]) for t in range(n)])
    ins = torch.stack([torch.cat([flat_items(x).double() for x in [tr.inputs[t] for tr in trajectories]]) for t in range(n)])
    finals = torch.cat([flat_items(tr.final).double() for tr in trajectories])
    weights = solver_weights(ins, outs, finals)
    axis = [0.0]
    for w in weights:
        axis.append(axis[-1] + w)
    signs = [1.0] * n
    if reach is not None:
        if len(reach) != n or not all(isinstance(r, (int, float)) and math.isfinite(r) for r in reach):
            raise ValueError(f"fit_etc_plus: reach must list a finite number for each of the {n} steps.")
        weights = [abs(float(r)) for r in reach]
        signs = [-1.0 if r < 0 else 1.0 for r in reach]
    factors = propagation_factors(trajectories, weights) if propagation else None
    if factors is not None:
        weights = [w * f for w, f in zip(weights, factors)]
    if spread is not None:  # the flow contracts towards the data: an early error is damped by about s / sigma
        s_abs = spread * axis[-1]
        weights = [w * s_abs / math.hypot(s_abs, axis[-1] - axis[t + 1]) for t, w in enumerate(weights)]
    gram = torch.einsum("iad,jad->ija", outs, outs)  # per-item <eps_i, eps_j>: [n, n, items]
    dim = outs.shape[2]
    triplets, ratios = [], []
    for c in range(n - 1):
        for cp in [-1] + list(range(max(0, c - max_window), c)):
            for t in range(c + 1, min(c + max_window, n - 1) + 1):
                if corrections == "auto":
                    g, k, e_items = _cross_validated(gram, axis, cp, c, t, ridge, dim)
                else:
                    g, k, e_items = _fit_triplet(gram, axis, cp, c, t, ridge if corrections else None, dim)
                e_mean = float(e_items.mean())
                triplets.append([cp, c, t, g, k, e_mean])
                if e_mean > 0:
                    ratios.append(e_items / e_mean)
    signed = [w * s for w, s in zip(weights, signs)]
    segments = _window_errors(gram, signed, triplets, max_window, dim)
    plain = None  # the windows' errors under the plain trend, for a run at another step count (etc_plus.resample)
    if corrections is not False and axis[-1] > 0:
        trend = [[cp, c, t, 0.0, 0.0 if cp < 0 else (axis[t] - axis[c]) / max(axis[c] - axis[cp], 1e-30), 0.0]
                 for cp, c, t, *_ in triplets]
        plain = _window_errors(gram, signed, trend, max_window, dim)
    ratio = torch.cat(ratios) if ratios else torch.ones(1)
    spike = max(2.0, 1.5 * float(torch.quantile(ratio.float(), 0.99)))
    final_rms = float(finals.pow(2).mean().sqrt())
    out_rms = [float(o.pow(2).mean().sqrt()) for o in outs]
    sig = getattr(trajectories[0], "sigmas", None)
    return {
        "method": "etc-plus", "version": 2, "num_steps": n, "max_window": max_window, "ridge": float(ridge),
        "weights": weights, "axis": axis, "final_rms": final_rms, "output_rms": out_rms,
        "tolerance": float(rel_tolerance) * final_rms, "spike": spike,
        "sigmas": None if sig is None else [float(v) for v in torch.as_tensor(sig).flatten()[:n]],
        "triplets": triplets, "segments": segments, "num_trajectories": len(trajectories), "propagation": factors,
        "corrections": corrections, "scheduler": getattr(trajectories[0], "scheduler", None),
        "reach": "solver" if reach is not None else "one-step fit",
        "plain_segments": plain, "trend_caps": trend_caps, "adapt_trend": adapt_trend,
        **({"final_plans": True} if final_plans else {}),
        **({"searched_schedules": True} if searched_schedules else {}),
    }


def propagation_factors(trajectories: Sequence["Trajectory"], weights: list[float]) -> list[float] | None:
    """Per step, the measured reach of an output error over the solver's ``weights`` (``None`` without probes).

    At each probed step the median over samples of (probe ratio / solver weight), relative to the last step's
    (which only the solver carries, so the units of the probe's result cancel); in between, interpolated
    linearly in log; before the first probe, the first probe's.
    """
    n = len(weights)
    ratios: dict[int, list[float]] = {}
    for tr in trajectories:
        for t, values in (getattr(tr, "probes", None) or {}).items():
            if 0 < int(t) < n and weights[int(t)] > 0:
                ratios.setdefault(int(t), []).extend(v / weights[int(t)] for v in values if math.isfinite(v) and v > 0)
    steps = sorted(t for t, v in ratios.items() if v)
    if len(steps) < 2 or steps[-1] != n - 1:
        return None
    logs = torch.tensor([math.log(float(torch.tensor(ratios[t]).median())) for t in steps], dtype=torch.float64)
    logs = (logs - logs[-1]).clamp(-math.log(1e3), math.log(1e3))
    out = []
    for t in range(n):
        j = next((i for i, u in enumerate(steps) if u >= t), len(steps) - 1)
        if j == 0 or steps[j] == t:
            out.append(math.exp(float(logs[j])))
        else:
            a, b = steps[j - 1], steps[j]
            out.append(math.exp(float(logs[j - 1] + (logs[j] - logs[j - 1]) * (t - a) / (b - a))))
    return out


def _window_errors(gram: torch.Tensor, weights: list[float], triplets: list[list[float]], max_window: int,
                   dim: int) -> list[list[float]]:
    """Per window, ``[c', c, m, error]``: the mean over the calibration items of the RMS of
    ``sum_t w_t·(eps_t - estimate_t)`` over the skipped steps c < t < m, from the real steps (c', c).

    The estimates of one window extrapolate the same two outputs, so their errors share a direction and add as
    vectors (a window of d skipped steps costs about d² times one step's error, not d times); the norm of the
    weighted sum is exact for the calibration runs and needs only the Gram matrices of the outputs.
    """
    n = gram.shape[0]
    gains = {(int(cp), int(c), int(t)): (g, k) for cp, c, t, g, k, _ in triplets}
    out = []
    for c in range(n - 1):
        for cp in [-1] + list(range(max(0, c - max_window), c)):
            coef = torch.zeros(n, dtype=torch.float64)  # the weighted residual sum as a combination of outputs
            for m in range(c + 2, min(c + max_window, n) + 1):
                t = m - 1  # the window grows by the skipped step t
                g, k = gains[(cp, c, t)]
                coef[t] += weights[t]
                coef[c] -= weights[t] * (1 + g + k)
                if cp >= 0:
                    coef[cp] += weights[t] * k
                idx = coef.nonzero().flatten()
                sub = coef[idx]
                norm2 = torch.einsum("a,b,abi->i", sub, sub, gram[idx][:, idx]).clamp_min(0) / dim
                out.append([cp, c, m, float(norm2.sqrt().mean())])
    return out


def _cross_validated(gram: torch.Tensor, axis: list[float], cp: int, c: int, t: int, ridge: float,
                     dim: int) -> tuple[float, float, torch.Tensor]:
    """The fitted gains where they beat the plain trend out of sample (two folds of the items), else the trend."""
    plain = _fit_triplet(gram, axis, cp, c, t, None, dim)
    items = gram.shape[2]
    if items < 4:
        return plain
    folds = [torch.arange(items) % 2 == f for f in (0, 1)]
    for fit_on, test_on in (folds, folds[::-1]):
        g, k, _ = _fit_triplet(gram, axis, cp, c, t, ridge, dim, fit_on)
        test = _residual(gram, cp, c, t, g, k, dim)[test_on].pow(2).mean()
        if test > (1 - CV_MARGIN) ** 2 * plain[2][test_on].pow(2).mean():
            return plain
    return _fit_triplet(gram, axis, cp, c, t, ridge, dim)


def _residual(gram: torch.Tensor, cp: int, c: int, t: int, g: float, k: float, dim: int) -> torch.Tensor:
    """Per-item RMS of eps_t - (eps_c + g·eps_c + k·(eps_c - eps_c'))."""
    return _fit_triplet(gram, [0.0] * (t + 2), cp, c, t, None, dim, gains=(g, k))[2]


def _fit_triplet(gram: torch.Tensor, axis: list[float], cp: int, c: int, t: int, ridge: float | None,
                 dim: int, on: torch.Tensor | None = None,
                 gains: tuple[float, float] | None = None) -> tuple[float, float, torch.Tensor]:
    """Gains (g, k) for step t from real steps (c', c) (fitted on the items ``on``, default all; or ``gains``
    as given), and the per-item RMS error they leave."""
    G = lambda i, j: gram[i, j]  # noqa: E731
    f11 = G(c, c)
    y1 = G(t, c) - G(c, c)
    yy = G(t, t) - 2 * G(t, c) + G(c, c)
    k0 = 0.0 if cp < 0 else (axis[t] - axis[c]) / max(axis[c] - axis[cp], 1e-30)
    f12 = G(c, c) - G(c, cp) if cp >= 0 else torch.zeros_like(f11)
    f22 = G(c, c) - 2 * G(c, cp) + G(cp, cp) if cp >= 0 else torch.zeros_like(f11)
    y2 = G(t, c) - G(t, cp) - G(c, c) + G(c, cp) if cp >= 0 else torch.zeros_like(f11)
    sel = (lambda v: v[on]) if on is not None else (lambda v: v)  # noqa: E731
    s11, s12, s22 = float(sel(f11).sum()), float(sel(f12).sum()), float(sel(f22).sum())
    g, k = gains if gains is not None else (0.0, k0)
    if gains is None and ridge is not None and s11 > 0:  # ridge LS towards (0, k0); k only where the trend moves
        if cp < 0 or s22 <= 1e-12 * s11:
            g = float(sel(y1).sum()) / (s11 * (1 + ridge))
        else:
            mat = torch.tensor([[s11 * (1 + ridge), s12], [s12, s22 * (1 + ridge)]], dtype=torch.float64)
            rhs = torch.tensor([float(sel(y1).sum()), float(sel(y2).sum()) + ridge * s22 * k0], dtype=torch.float64)
            g, k = torch.linalg.solve(mat, rhs).tolist()
    res = yy - 2 * g * y1 - 2 * k * y2 + g * g * f11 + 2 * g * k * f12 + k * k * f22
    return float(g), float(k), (res.clamp_min(0) / dim).sqrt()


def load_etc_plus_profile(profile: dict[str, Any] | str | os.PathLike) -> dict[str, Any]:
    """A profile from :func:`fit_etc_plus`, given as the dict or a JSON file (bare, or under ``settings.profile``)."""
    if isinstance(profile, (str, os.PathLike)):
        profile = read_settings_file(profile, "profile", "etc-plus")
    keys = ("num_steps", "max_window", "weights", "axis", "triplets", "tolerance", "spike", "output_rms")
    if not isinstance(profile, dict) or profile.get("method") != "etc-plus" or any(k not in profile for k in keys):
        raise ValueError("etc-plus: profile must be the dict that fit_etc_plus returns (or its JSON file).")
    check_profile_numbers(profile)
    return profile


def check_profile_numbers(profile: dict[str, Any]) -> None:
    """Every number of a profile finite and in range; a ValueError naming the entry (a broken calibration)."""
    from ...method_profile import non_finite_at

    bad = non_finite_at(profile)
    if bad is not None:
        raise ValueError(f"etc-plus: profile entry {bad} is not a finite number; calibrate again "
                         "(`etcdiff calibrate --method etc-plus`).")
    n, w = profile["num_steps"], profile["max_window"]
    for name, value in (("num_steps", n), ("max_window", w)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"etc-plus: profile {name} must be an integer >= 1, got {value!r}.")
    check_number("profile tolerance", profile["tolerance"], 0.0, allow_none=False)
    check_number("profile spike", profile["spike"], 1.0, allow_none=False)
    for name in ("weights", "output_rms"):
        if not isinstance(profile[name], list) or len(profile[name]) < n:
            raise ValueError(f"etc-plus: profile {name} must list a value for each of the {n} steps.")
