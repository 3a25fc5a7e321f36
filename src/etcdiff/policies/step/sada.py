"""SADA (Jiang et al., ICML 2025), a step-wise peer of ETC (docs/methods.md, "SADA"), step-wise part only.

Pure tensor math. SADA's stability criterion as this policy runs it at step t, where it sees x_t and holds the
last three *real* outputs f_a, f_b, f_c (oldest first) at their positions s_a, s_b, s_c on the solver's time axis:

* an Adams–Bashforth predictor of the current latents, ``x_pred = x_{t-1} + integral over [s_{t-1}, s_t] of the
  quadratic through the three drifts`` (on equal steps with all three steps real: x_{t-1} + h·(23 f_{t-1}
  - 16 f_{t-2} + 5 f_{t-3}) / 12, classical AB3);
* ``momentum = mean((x_t - x_pred) · (f_c - 2 f_b + f_a))`` (the SADA paper);
* step t reuses the last real output when ``momentum <= 0`` inside the acceleration range, at most
  ``max_interval`` steps in a row, never on the last step; on a skip the clean-sample estimate is extrapolated,
  ``x0 = x_pred - sigma_t · eps`` (the SADA paper), which for the output the sampler consumes (x0 = x_t - sigma_t·out)
  is ``out = eps + (x_t - x_pred) / sigma_t``.

Simplifications against the published method, labelled as such:

1. Drift. The output is taken as the ODE drift in the solver's own time sigma (dx/dsigma): exact for flow
   matching (the output is the velocity) and for Karras/EDM-style Euler on eps-prediction (x = x0 + sigma·eps);
   for VP-scaled schedulers (DDIM, DPM++ on eps) it is an approximation. The release builds f from the
   scheduler's betas and alphas inside a patched ``scheduler.step``.
2. Time axis. With :meth:`SADA.set_sigmas` (or ``sigmas=``) s_t = sigma_t. Without them it is derived from
   consecutive latents and outputs: s_t = s_{t-1} + h_{t-1}, with h_{t-1} = <x_t - x_{t-1}, f> / <f, f> the
   least-squares step of the realized update along the output f consumed at t-1 (estimates included): exact
   for any first-order solver x_t = x_{t-1} + h·f. The x0 extrapolation needs sigma_t itself, so without
   sigmas a skip reuses the last real output unchanged. A step without latents (the diffusers hook has none at
   step 0) starts the axis afresh.
3. Predictor and history. Classical variable-step AB3 over the last three real outputs; an estimate is not
   evidence of the drift, so skipped steps do not enter the history (after skips the quadratic is integrated
   further out). A public port of the release's scheduler patch uses the weights (0.625, 0.75, -0.375) on a
   VP drift; with a first-order solver in the drift's own time those weights make the residual exactly
   proportional to the second difference, so the sign test could never change. With AB3 and sigma decreasing,
   on equal real steps with the drift-change ratio rho = Δf_{t-1} / Δf_{t-2}, the test skips iff
   5/11 <= rho <= 1: while the drift's change shrinks smoothly. Consequence: where the step-to-step changes of
   the drift are jitter (successive changes nearly uncorrelated), the |Δ²f|² term dominates and every step
   is computed; that is the case on the embedded demo model, where the port's weights would instead skip
   unconditionally (max_interval skips, one computed step, repeated).
4. Left out: the token-wise pruning of computed steps (it lives inside the model's attention, not in a step
   policy) and the Lagrange-interpolation mode over recent x0 estimates (``lagrange_*`` options). The decision
   is one for the batch (the mean over all elements), as in the release.

Defaults from the authors' README and demos: ``acc_range=(10, 47)`` of 50 steps (here as fractions of N:
0.2, 0.94) and ``max_interval=4``. As in the release, the decision made at step s (s in ``range(start, end)``)
concerns step s + 1, so the steps that may be skipped are start+1 .. end.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from .base import OutputStream, StepPolicy, is_finite
from ..._numbers import as_int

_GAUSS = (0.5 - 0.5 / math.sqrt(3.0), 0.5 + 0.5 / math.sqrt(3.0))  # 2-point Gauss–Legendre nodes on [0, 1]


def ab_weights(nodes: Sequence[float], a: float, b: float) -> list[float]:
    """Adams–Bashforth weights: the integrals over [a, b] of the Lagrange basis on three distinct ``nodes``.

    ``sum_j w_j f_j`` integrates the quadratic through (nodes[j], f_j) from a to b (2-point Gauss–Legendre, exact
    for quadratics). On equal steps, nodes (0, 1, 2) and [a, b] = [2, 3] give (5/12, -16/12, 23/12), AB3.
    """
    weights = []
    for j in range(3):
        total = 0.0
        for g in _GAUSS:
            s = a + g * (b - a)
            basis = 1.0
            for k in range(3):
                if k != j:
                    basis *= (s - nodes[k]) / (nodes[j] - nodes[k])
            total += basis
        weights.append(total * (b - a) / 2)
    return weights


class SADAStream(OutputStream):
    """One denoiser call's last real output; on a skip it adds the policy's x0-extrapolation term.

    The term is the same for every branch, so with classifier-free guidance combined linearly the branch
    estimates combine into exactly the estimate of the combined output.
    """

    def __init__(self, policy: "SADA") -> None:
        self.policy = policy
        self.last: torch.Tensor | None = None
        self.last_real: int | None = None

    def record(self, step: int, output: torch.Tensor) -> None:
        self.last, self.last_real = output, step

    def predict(self, step: int) -> torch.Tensor | None:
        if self.last is None or self.last_real != self.policy.last_real:
            return None
        corr = self.policy.correction
        if corr is None:
            return self.last
        if corr.shape != self.last.shape:  # batched CFG ([cond; uncond] in one call): the same term per half
            reps = self.last.shape[0] // corr.shape[0] if corr.dim() == self.last.dim() and corr.dim() > 0 else 0
            if reps < 1 or (reps * corr.shape[0], *corr.shape[1:]) != tuple(self.last.shape):
                return self.last  # unknown layout: plain reuse
            corr = corr.repeat(reps, *([1] * (corr.dim() - 1)))
        est = self.last + corr.to(self.last.dtype)
        return est if is_finite(est) else None


class SADA(StepPolicy):
    """SADA's step-wise stability criterion (simplifications in the module docstring).

    Args:
        acc_range: the acceleration range as fractions of N (default (0.2, 0.94): steps 10..47 of 50).
        max_interval: at most this many skipped steps in a row (the authors' ``max_interval``, 4).
        x0_extrapolation: on a skip, extrapolate the clean-sample estimate (needs sigmas); else plain reuse.
        sigmas: the scheduler's sigmas for the run (N or N+1 values, a trailing 0 is assumed when N); can also
            be set per run with :meth:`set_sigmas`. Without them the step sizes come from the latents.
    """

    name = "sada"

    def __init__(
        self,
        acc_range: tuple[float, float] = (0.2, 0.94),
        max_interval: int = 4,
        x0_extrapolation: bool = True,
        sigmas: Sequence[float] | torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        try:
            lo, hi = (float(v) for v in acc_range)
        except (TypeError, ValueError):
            raise ValueError(f"SADA: acc_range must be a pair of fractions of the step count, got {acc_range!r}.") from None
        if not (0.0 <= lo < hi <= 1.0):
            raise ValueError(
                f"SADA: acc_range must satisfy 0 <= start < end <= 1 (fractions of the step count, e.g. (0.2, 0.94) "
                f"for steps 10..47 of 50), got {acc_range!r}."
            )
        max_interval = max_interval if as_int(max_interval) is None else as_int(max_interval)
        if isinstance(max_interval, bool) or not isinstance(max_interval, int) or max_interval < 1:
            raise ValueError(f"SADA: max_interval must be an integer >= 1 (the authors use 4), got {max_interval!r}.")
        self.acc_range = (lo, hi)
        self.max_interval = max_interval
        self.x0_extrapolation = bool(x0_extrapolation)
        self.sigmas: list[float] | None = None
        if sigmas is not None:
            self.set_sigmas(sigmas)

    def set_sigmas(self, sigmas: Sequence[float] | torch.Tensor | None) -> None:
        """The scheduler's sigmas for the next runs (``scheduler.sigmas`` after ``set_timesteps``); None clears."""
        if sigmas is None:
            self.sigmas = None
            return
        values = torch.as_tensor(sigmas, dtype=torch.float64).detach().cpu().flatten()
        if values.numel() < 2 or not bool(torch.isfinite(values).all()):
            raise ValueError(f"SADA: sigmas must be at least two finite numbers, got {values.numel()} value(s).")
        self.sigmas = values.tolist()

    def use_schedule(self, sigmas: torch.Tensor | None) -> None:
        if sigmas is not None:
            self.set_sigmas(sigmas)

    def params(self) -> dict[str, Any]:
        return {
            "acc_range": list(self.acc_range), "max_interval": self.max_interval,
            "x0_extrapolation": self.x0_extrapolation,
        }

    def begin(self, num_steps: int) -> None:
        if self.sigmas is not None and len(self.sigmas) not in (num_steps, num_steps + 1):
            raise ValueError(
                f"SADA: {len(self.sigmas)} sigmas were set but the run has {num_steps} steps; call set_sigmas with the "
                "scheduler's sigmas for this step count (N or N+1 values), or set_sigmas(None)."
            )
        super().begin(num_steps)

    def new_stream(self) -> SADAStream:
        return SADAStream(self)

    def reset_state(self) -> None:
        n = self.num_steps
        self._start, self._end = round(self.acc_range[0] * n), round(self.acc_range[1] * n)
        self._real: list[tuple[float, torch.Tensor]] = []  # (position, output) of the last three real steps
        self._x_prev: torch.Tensor | None = None  # x_{t-1}, its position and the output consumed there
        self._s_prev: float | None = None
        self._f_prev: torch.Tensor | None = None
        self._x_now: torch.Tensor | None = None
        self._s_now: float | None = None
        self._skips = 0
        self._err: float | None = None
        self.last_real: int | None = None
        self.correction: torch.Tensor | None = None  # the x0-extrapolation term of the current skipped step

    def _position(self, step: int, latents: torch.Tensor | None) -> float | None:
        """s_step, the position of the step in the solver's time: sigma_step, else the previous position plus
        h_{step-1} = <x_step - x_{step-1}, f_{step-1}> / <f_{step-1}, f_{step-1}> (None when it cannot be derived)."""
        if self.sigmas is not None:
            return self.sigmas[step] if step < len(self.sigmas) else 0.0
        if latents is None or self._x_prev is None or self._f_prev is None or self._s_prev is None:
            return None
        f, dx = self._f_prev.double(), latents.double() - self._x_prev.double()
        ff = float((f * f).sum()) if f.shape == dx.shape else 0.0
        return self._s_prev + float((dx * f).sum()) / ff if ff > 0 else None

    def should_compute(self, step: int, latents: torch.Tensor | None = None) -> bool:
        self._check_step(step)
        self._err, self.correction = None, None
        x = latents.detach() if latents is not None else None
        pos = self._position(step, x)
        if pos is None:  # the time axis is broken here: older drifts cannot be placed on it, start afresh
            self._real.clear()
            pos = 0.0 if x is not None else None
        x_pred = None
        ready = x is not None and self._x_prev is not None and self._s_prev is not None and len(self._real) == 3
        if pos is not None and ready:
            nodes = [s for s, _ in self._real]
            if len(set(nodes)) == 3 and all(f.shape == x.shape for _, f in self._real):
                w = ab_weights(nodes, self._s_prev, pos)
                x_pred = self._x_prev.double() + sum(wj * f.double() for wj, (_, f) in zip(w, self._real))
                f3, f2, f1 = (f.double() for _, f in self._real)
                self._err = float(((x.double() - x_pred) * (f1 - 2 * f2 + f3)).mean())
        self._x_now, self._s_now = x, pos
        skip = (
            self._err is not None
            and self._err <= 0
            and self._start < step <= self._end
            and step != self.num_steps - 1
            and self._skips < self.max_interval
        )
        if skip and self.x0_extrapolation and self.sigmas is not None and x_pred is not None and pos > 0:
            self.correction = ((x.double() - x_pred) / pos).to(x.dtype)  # pos is sigma_t here
        return not skip

    def observe(self, step: int, output: torch.Tensor, computed: bool) -> None:
        self._x_prev, self._s_prev, self._f_prev = self._x_now, self._s_now, output.detach()
        self._skips = 0 if computed else self._skips + 1
        if computed:
            self.last_real = step
            self.main_stream.record(step, output)
            if self._s_now is not None:
                self._real = [*self._real[-2:], (self._s_now, output.detach())]
        self._log(step, computed, err=self._err, window=self._skips)
