"""ETC+ (``etc-plus``): etcdiff's own step-wise method, ETC's three parts made calibrated, planned and budgeted.

What differs from reference ETC in one sentence: the trend is extrapolated on the solver's own time axis (sigma)
from the last two real outputs, and the windows are planned from calibrated per-step errors for a tolerance or a
call budget by dynamic programming, then re-planned online from each sample's own measured error.

The three parts of ETC, and what each becomes here:

1. **Trend predictor.** On a skipped step t with the last two real outputs eps_c, eps_c' (c' < c < t):
   ``eps_t ≈ eps_c + g·eps_c + k·(eps_c - eps_c')`` with ``g = 0`` and ``k = (s_t - s_c)/(s_c - s_c')``, a linear
   trend in the solver's time ``s`` (sigma on flow schedules). Opt-in (``fit_etc_plus(corrections=True)``),
   ``(g, k)`` are fitted per ``(c', c, t)`` by ridge least squares, like ERTACache's per-step corrections; on the
   digits model they cost up to 5 dB at 2x against the plain trend, so they are off by default.
2. **Error-aware window.** Every step's solver is fitted as ``x_{t+1} = A_t·x_t + B_t·eps_t`` (exact for Euler flow
   and DDIM), so an output error at t reaches the final latents scaled by ``w_t = |B_t|·prod_{u>t}|A_u|``; the
   cumulative ``w`` is the time axis ``s`` (sigma for flow, sqrt((1-a)/a) for DDIM: no sigmas needed). Skipping t
   after real steps (c', c) costs ``(w_t·e(c', c, t))²``, with ``e`` the calibrated RMS error of the estimate, and
   a backward dynamic programme over (last two real steps, calls left) gives the best next real step for any
   budget: calls go where skipping would cost most (the window is sized from the error budget).
3. **Model-specific tolerance.** The tolerance bounds the square root of the summed cost, an estimate of the final
   latents' RMS error; the calibrated default is 2 % of the calibration runs' final RMS.

Online adaptivity: at each real step n the policy measures what its estimate for n would have missed (max over
the batch of the per-sample RMS) against the calibrated error ``e(c', c, n)``. That ratio scales the error spent
and the plan ahead (tolerance mode: a hard sample gets more calls, an easy one fewer), and a ratio above ``spike``
forces the next step to run. With ``calls=B`` no generation makes more than B real steps: forced calls come out of
the same budget and the plan re-optimises the rest. Every estimate is linear in the outputs, so each CFG branch
(``new_stream``) applies the same coefficients to its own outputs and the branches combine exactly.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch

from .base import OutputStream, StepPolicy, is_finite

if TYPE_CHECKING:
    from ..integration.recording import Trajectory

INF = math.inf
DEFAULT_REL_TOLERANCE = 0.02
NOISE_FLOOR = 1e-3  # measured errors under this fraction of the output's RMS count as this fraction
MAX_RATIO = 8.0  # one measurement moves the error spent and the hardness by at most this factor


def _items(x: torch.Tensor) -> torch.Tensor:
    """``x`` as [items, features] (dim 0 is the batch)."""
    return x.reshape(x.shape[0], -1) if x.dim() > 1 else x.reshape(1, -1)


def item_rms(x: torch.Tensor) -> torch.Tensor:
    """Per-sample root mean square over all but the batch dimension."""
    return _items(x).float().pow(2).mean(1).sqrt()


def _check_number(name: str, value: Any, low: float, allow_none: bool = True) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < low:
        raise ValueError(f"etc-plus: {name} must be a finite number >= {low}, got {value!r}.")
    return float(value)


# -- calibration ------------------------------------------------------------------------------------------------
def _solver_weights(inputs: torch.Tensor, outputs: torch.Tensor, finals: torch.Tensor) -> list[float]:
    """``w_t``: how an output error at step t scales into the final latents (module docstring, part 2)."""
    n = outputs.shape[0]
    coef = []
    for t in range(n):
        x, e = inputs[t].flatten(), outputs[t].flatten()
        y = (inputs[t + 1] if t + 1 < n else finals).flatten()
        gram = torch.tensor([[x @ x, x @ e], [x @ e, e @ e]], dtype=torch.float64)
        rhs = torch.tensor([x @ y, e @ y], dtype=torch.float64)
        try:
            a, b = torch.linalg.solve(gram, rhs).tolist()
        except RuntimeError:  # x and eps collinear: treat the step as y = x + b·eps
            a, b = 1.0, float((e @ (y - x)) / max(float(e @ e), 1e-30))
        coef.append((abs(a), abs(b)))
    weights, carry = [0.0] * n, 1.0
    for t in reversed(range(n)):
        weights[t] = coef[t][1] * carry
        carry *= coef[t][0]
    return weights


def fit_etc_plus(trajectories: Sequence["Trajectory"], max_window: int = 8, corrections: bool = False,
                 ridge: float = 0.01,
                 rel_tolerance: float = DEFAULT_REL_TOLERANCE, spread: float | None = None) -> dict[str, Any]:
    """Calibrate ETC+ on recorded full-step trajectories (``record_pipeline``; ``.outputs``, ``.inputs``,
    ``.final``); returns a JSON-serialisable profile for :class:`ETCPlus`.

    ``max_window``: the longest gap between two real steps the plan may use; ``corrections``: fit the gains
    ``(g, k)`` per step (off: the plain trend); ``ridge``: their pull towards the plain trend; ``rel_tolerance``:
    the default tolerance as a fraction of the final RMS; ``spread``: when set, an error at noise level sigma is
    damped by ``spread / hypot(spread, sigma)`` (relative units; the pull of a flow towards its data, which the
    solver fit alone cannot see; off by default, see the report of ``scripts/etc_plus_eval.py``).
    """
    if not isinstance(trajectories, (list, tuple)) or not trajectories:
        raise ValueError("fit_etc_plus: give a non-empty list of recorded full-step trajectories (record_pipeline).")
    if isinstance(max_window, bool) or not isinstance(max_window, int) or max_window < 2:
        raise ValueError(f"fit_etc_plus: max_window must be an integer >= 2, got {max_window!r}.")
    _check_number("ridge", ridge, 0.0, allow_none=False)
    _check_number("rel_tolerance", rel_tolerance, 0.0, allow_none=False)
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
    outs = torch.stack([torch.cat([_items(o).double() for o in [tr.outputs[t] for tr in trajectories]]) for t in range(n)])
    ins = torch.stack([torch.cat([_items(x).double() for x in [tr.inputs[t] for tr in trajectories]]) for t in range(n)])
    finals = torch.cat([_items(tr.final).double() for tr in trajectories])
    weights = _solver_weights(ins, outs, finals)
    axis = [0.0]
    for w in weights:
        axis.append(axis[-1] + w)
    if spread is not None:  # the flow contracts towards the data: an early error is damped by about s / sigma
        s_abs = spread * axis[-1]
        weights = [w * s_abs / math.hypot(s_abs, axis[-1] - axis[t + 1]) for t, w in enumerate(weights)]
    gram = torch.einsum("iad,jad->ija", outs, outs)  # per-item <eps_i, eps_j>: [n, n, items]
    dim = outs.shape[2]
    triplets, ratios = [], []
    for c in range(n - 1):
        for cp in [-1] + list(range(max(0, c - max_window), c)):
            for t in range(c + 1, min(c + max_window, n - 1) + 1):
                g, k, e_items = _fit_triplet(gram, axis, cp, c, t, ridge if corrections else None, dim)
                e_mean = float(e_items.mean())
                triplets.append([cp, c, t, g, k, e_mean])
                if e_mean > 0:
                    ratios.append(e_items / e_mean)
    ratio = torch.cat(ratios) if ratios else torch.ones(1)
    spike = max(2.0, 1.5 * float(torch.quantile(ratio.float(), 0.99)))
    final_rms = float(finals.pow(2).mean().sqrt())
    out_rms = [float(o.pow(2).mean().sqrt()) for o in outs]
    sig = getattr(trajectories[0], "sigmas", None)
    return {
        "method": "etc-plus", "version": 1, "num_steps": n, "max_window": max_window, "ridge": float(ridge),
        "weights": weights, "axis": axis, "final_rms": final_rms, "output_rms": out_rms,
        "tolerance": float(rel_tolerance) * final_rms, "spike": spike,
        "sigmas": None if sig is None else [float(v) for v in torch.as_tensor(sig).flatten()[:n]],
        "triplets": triplets, "num_trajectories": len(trajectories),
    }


def _fit_triplet(gram: torch.Tensor, axis: list[float], cp: int, c: int, t: int, ridge: float | None,
                 dim: int) -> tuple[float, float, torch.Tensor]:
    """Gains (g, k) for step t from real steps (c', c), and the per-item RMS error they leave."""
    G = lambda i, j: gram[i, j]  # noqa: E731
    f11 = G(c, c)
    y1 = G(t, c) - G(c, c)
    yy = G(t, t) - 2 * G(t, c) + G(c, c)
    k0 = 0.0 if cp < 0 else (axis[t] - axis[c]) / max(axis[c] - axis[cp], 1e-30)
    f12 = G(c, c) - G(c, cp) if cp >= 0 else torch.zeros_like(f11)
    f22 = G(c, c) - 2 * G(c, cp) + G(cp, cp) if cp >= 0 else torch.zeros_like(f11)
    y2 = G(t, c) - G(t, cp) - G(c, c) + G(c, cp) if cp >= 0 else torch.zeros_like(f11)
    s11, s12, s22 = float(f11.sum()), float(f12.sum()), float(f22.sum())
    g, k = 0.0, k0
    if ridge is not None and s11 > 0:  # ridge least squares towards (0, k0); k only where the trend is not flat
        if cp < 0 or s22 <= 1e-12 * s11:
            g = float(y1.sum()) / (s11 * (1 + ridge))
        else:
            mat = torch.tensor([[s11 * (1 + ridge), s12], [s12, s22 * (1 + ridge)]], dtype=torch.float64)
            rhs = torch.tensor([float(y1.sum()), float(y2.sum()) + ridge * s22 * k0], dtype=torch.float64)
            g, k = torch.linalg.solve(mat, rhs).tolist()
    res = yy - 2 * g * y1 - 2 * k * y2 + g * g * f11 + 2 * g * k * f12 + k * k * f22
    return float(g), float(k), (res.clamp_min(0) / dim).sqrt()


def load_etc_plus_profile(profile: dict[str, Any] | str | os.PathLike) -> dict[str, Any]:
    """A profile from :func:`fit_etc_plus`, given as the dict or a JSON file (bare, or under ``settings.profile``)."""
    if isinstance(profile, (str, os.PathLike)):
        p = Path(profile).expanduser()
        if not p.is_file():
            raise ValueError(f"etc-plus: profile file not found: {p}. Make one with fit_etc_plus on recorded trajectories.")
        try:
            profile = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"etc-plus: {p} is not valid JSON: {e}") from None
        if isinstance(profile, dict) and "settings" in profile:
            profile = profile["settings"].get("profile", profile["settings"])
    keys = ("num_steps", "max_window", "weights", "axis", "triplets", "tolerance", "spike", "output_rms")
    if not isinstance(profile, dict) or profile.get("method") != "etc-plus" or any(k not in profile for k in keys):
        raise ValueError("etc-plus: profile must be the dict that fit_etc_plus returns (or its JSON file).")
    return profile


# -- run time -----------------------------------------------------------------------------------------------------
class ETCPlusStream(OutputStream):
    """One denoiser call's last two real outputs; estimates with the policy's gains for (c', c, t)."""

    def __init__(self, policy: "ETCPlus") -> None:
        self.policy = policy
        self.last: torch.Tensor | None = None
        self.prev: torch.Tensor | None = None
        self.last_real: int | None = None
        self.prev_real = -1

    def record(self, step: int, output: torch.Tensor) -> None:
        if self.last_real == step:  # a second record of the same step (pipelines that re-run a branch)
            self.last = output
            return
        self.prev, self.prev_real = self.last, (-1 if self.last_real is None else self.last_real)
        self.last, self.last_real = output, step

    def estimate(self, step: int) -> torch.Tensor | None:
        if self.last is None or self.last_real is None:
            return None
        g, k = self.policy.gains(self.prev_real if self.prev is not None else -1, self.last_real, step)
        est = self.last if g == 0.0 else self.last * (1.0 + g)
        if k != 0.0 and self.prev is not None:
            est = est + k * (self.last - self.prev)
        return est

    def predict(self, step: int) -> torch.Tensor | None:
        if self.last_real != self.policy.last_real:
            return None  # a branch that missed the policy's last real step must run
        est = self.estimate(step)
        return est if est is not None and is_finite(est) else None


class ETCPlus(StepPolicy):
    """ETC+, the calibrated, planned and budgeted successor of ETC (module docstring).

    Args:
        profile: what :func:`fit_etc_plus` returned (or its JSON path), fitted at the run's step count.
        calls: a call budget B: at most B real steps per generation (each runs every CFG branch once).
        tolerance: the quality target, a bound on the final latents' RMS error (the profile's calibrated
            default when neither ``calls`` nor ``tolerance`` is given). With both, both hold.
        spike: a sample whose measured error exceeds ``spike`` times the calibrated one forces the next step to
            run (default from the calibration's spread).
    """

    name = "etc-plus"

    def __init__(self, profile: dict[str, Any] | str | os.PathLike, calls: int | None = None,
                 tolerance: float | None = None, spike: float | None = None) -> None:
        super().__init__()
        self.profile = load_etc_plus_profile(profile)
        if calls is not None and (isinstance(calls, bool) or not isinstance(calls, int) or calls < 1):
            raise ValueError(f"etc-plus: calls must be a positive integer (the most real steps per generation), got {calls!r}.")
        self.calls = calls
        self.tolerance = _check_number("tolerance", tolerance, 0.0)
        self.spike = _check_number("spike", spike, 1.0) or float(self.profile["spike"])
        self.max_window = int(self.profile["max_window"])
        self._gains: dict[tuple[int, int, int], tuple[float, float, float]] = {
            (int(cp), int(c), int(t)): (float(g), float(k), float(e)) for cp, c, t, g, k, e in self.profile["triplets"]
        }
        self._plan: tuple[torch.Tensor, torch.Tensor] | None = None

    def params(self) -> dict[str, Any]:
        return {"calls": self.calls, "tolerance": self.tolerance if self.tolerance is not None
                else (None if self.calls is not None else self.profile["tolerance"]), "spike": self.spike}

    # -- the plan ------------------------------------------------------------------------------------------
    def gains(self, cp: int, c: int, t: int) -> tuple[float, float]:
        """(g, k) for step t from real steps (c', c); the plain trend on the solver's axis outside the fit."""
        hit = self._gains.get((cp, c, t))
        if hit is not None:
            return hit[0], hit[1]
        if cp < 0:
            return 0.0, 0.0
        ax = self.profile["axis"]
        return 0.0, (ax[t] - ax[c]) / max(ax[c] - ax[cp], 1e-30)

    def _build_plan(self) -> None:
        """Backward DP over states (c, j): last real step c, the one before at c - j (j = 0: none).

        ``value[k, c, j]`` is the least cost of the rest of the run with at most k more real steps, ``nxt[k, c, j]``
        the next real step (``num_steps``: none); ``seg[c, j, d]`` the cost of skipping c+1..c+d-1.
        """
        n, w = self.num_steps, self.max_window
        f64 = torch.float64
        table = [[[INF] * (w + 1) for _ in range(w + 1)] for _ in range(n)]  # [c][j][t - c]
        weights = self.profile["weights"]
        for (cp, c, t), (_, _, e) in self._gains.items():
            j = c - cp if cp >= 0 else 0
            if c < n and j <= w and 0 < t - c <= w:
                table[c][j][t - c] = (weights[t] * e) ** 2  # errors of different steps add like independent ones
        cost = torch.tensor(table, dtype=f64)
        seg = torch.zeros(n, w + 1, w + 1, dtype=f64)
        seg[:, :, 2:] = torch.cumsum(cost[:, :, 1:w], dim=2)
        seg[:, :, 0] = INF
        cs = torch.arange(n)
        end_d = n - cs  # the window that ends the run
        value = torch.full((n + w + 1, w + 1), INF, dtype=f64)  # rows >= n: no such state
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
        self._seg = seg
        self._plan = (torch.stack(values), torch.stack(nxts))

    def _segment(self, state: tuple[int, int], m: int) -> float:
        """Calibrated cost of skipping the steps between real steps c (state (c', c)) and m."""
        cp, c = state
        d = m - c
        return float(self._seg[c, c - cp if cp >= 0 else 0, d]) if 0 < d <= self.max_window else INF

    def _value(self, k: int, state: tuple[int, int]) -> float:
        cp, c = state
        value = self._plan[0]
        return float(value[min(max(k, 0), len(value) - 1), c, c - cp if cp >= 0 else 0])

    def _next(self, k: int, state: tuple[int, int]) -> int:
        cp, c = state
        nxt = self._plan[1]
        return int(nxt[min(max(k, 0), len(nxt) - 1), c, c - cp if cp >= 0 else 0])

    def begin(self, num_steps: int) -> None:
        prof_n = int(self.profile["num_steps"])
        if isinstance(num_steps, int) and not isinstance(num_steps, bool) and num_steps != prof_n:
            raise ValueError(
                f"etc-plus: the profile was fitted for {prof_n} steps but the run has {num_steps}; calibrate with "
                "fit_etc_plus on trajectories recorded at this step count."
            )
        super().begin(num_steps)
        if self._plan is None:
            self._build_plan()
        if self.calls is not None and self._value(self.calls - 1, (-1, 0)) == INF:
            least = next((k + 1 for k in range(len(self._plan[0])) if self._value(k, (-1, 0)) < INF), num_steps)
            raise ValueError(
                f"etc-plus: calls={self.calls} cannot cover {num_steps} steps with windows of at most "
                f"{self.max_window} steps; give calls >= {least} or calibrate with a larger max_window."
            )

    def use_schedule(self, sigmas: torch.Tensor | None) -> None:
        ref = self.profile.get("sigmas")
        if sigmas is None or ref is None:
            return
        got = [float(v) for v in torch.as_tensor(sigmas).flatten()[: len(ref)]]
        if len(got) == len(ref) and max(abs(a - b) for a, b in zip(got, ref)) > 1e-4:
            warnings.warn("etc-plus: the scheduler's sigmas differ from the calibration's (another shift or "
                          "scheduler?); the fitted gains and plan may not fit this run. Calibrate on this schedule.",
                          RuntimeWarning, stacklevel=3)

    # -- the run --------------------------------------------------------------------------------------------
    def new_stream(self) -> ETCPlusStream:
        return ETCPlusStream(self)

    def reset_state(self) -> None:
        self.last_real: int | None = None
        self.real_count = 0
        self.next_real = 0
        self.spent = 0.0
        self.hardness = 1.0
        self._poisoned = False
        self._state = (-1, 0)

    def _calls_left(self) -> int:
        return self.num_steps if self.calls is None else self.calls - self.real_count

    def should_compute(self, step: int, latents: torch.Tensor | None = None) -> bool:
        self._check_step(step)
        if self.real_count == 0:
            return True
        if self._calls_left() <= 0:
            return False
        return step >= self.next_real or self._poisoned

    def predict(self, step: int) -> torch.Tensor | None:
        est = self.main_stream.estimate(step)
        return est if est is not None and is_finite(est) else None

    def observe(self, step: int, output: torch.Tensor, computed: bool) -> None:
        if not computed:
            self._log(step, False, window=step - (self.last_real or 0))
            return
        ratio = self._measure(step, output) if self.last_real is not None else None
        self.main_stream.record(step, output)
        prev_state = self._state
        self._state = (-1 if self.last_real is None else self.last_real, step)
        self.last_real = step
        self.real_count += 1
        if not is_finite(output):
            self._poisoned = True
        if ratio is not None:
            r = min(max(ratio, 1.0 / MAX_RATIO), MAX_RATIO)
            self.hardness = 0.5 * self.hardness + 0.5 * r
            self.spent += r * r * self._segment(prev_state, step)
        self.next_real = self._plan_next(step, ratio)
        self._log(step, True, err=ratio, window=self.next_real - step - 1)

    def _measure(self, step: int, output: torch.Tensor) -> float | None:
        """The sample's own error at a real step: max over the batch of RMS(real - estimate), over the calibrated."""
        hit = self._gains.get((*self._state, step))  # the state (c', c) the estimate for ``step`` was made from
        est = self.main_stream.estimate(step)
        if hit is None or est is None or est.shape != output.shape:
            return None
        floor = NOISE_FLOOR * self.profile["output_rms"][step]  # errors this small are noise, not a signal
        return float(item_rms(output - est).max()) / max(hit[2], floor, 1e-30)

    def _plan_next(self, step: int, ratio: float | None) -> int:
        n, state = self.num_steps, self._state
        if step + 1 >= n:
            return n
        left = self._calls_left()
        if left <= 0:
            return n
        budget = left - 1  # real steps after the next one
        if ratio is not None and ratio > self.spike and self._value(budget, (step, step + 1)) < INF:
            return step + 1  # online: this sample's error spiked, run the next step
        k_max = min(budget + 1, n)
        k = k_max
        if self.calls is None or self.tolerance is not None:
            tol = self.tolerance if self.tolerance is not None else float(self.profile["tolerance"])
            room = tol * tol - self.spent
            k = next((j for j in range(k_max + 1) if self.hardness ** 2 * self._value(j, state) <= room), k_max)
        return self._next(k, state) if self._value(k, state) < INF else min(step + 1, n)
