"""ETC: Error-aware Trend Consistency (the ETC paper, §3.2, Eqs. 4–7; docs/methods.md).

Pure tensor math: a recursive, exponentially weighted trend ``d`` of past outputs, spread over a window of
``k`` skipped steps (``g = d / k``), with ``k`` growing by one while the model's correction stays under the
tolerance ``threshold`` and shrinking by one otherwise.

This is the paper's method, kept exact; ``etc-plus`` (:mod:`.etc_plus`) differs in extrapolating the trend in sigma
and planning its windows from calibrated per-step errors for a tolerance or a call budget.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable

import torch

from .base import OutputStream, StepPolicy, is_finite
from ..._numbers import as_int, as_real
from .etc_presets import find_preset, unknown_preset_message


class TrendState:
    """The predictor's memory, Eqs. 4–5: the trend ``d`` and the last used output ``pre`` (O(1) tensors)."""

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha
        self.d: torch.Tensor | None = None
        self.pre: torch.Tensor | None = None

    def update(self, eps: torch.Tensor) -> torch.Tensor | None:
        """Fold a real output into the trend and return ``eps - pre - d`` (``None`` before a trend exists).

        ``pre`` is the last *used* output, an estimate inside a window: the model's correction against the
        estimates enters the trend (paper Appendix A.1.3–A.1.4). The first difference
        sets ``d`` directly (at t = 1, d = eps_1 - eps_0).
        """
        if self.pre is None:
            self.pre = eps
            return None
        delta = eps - self.pre
        self.d = delta if self.d is None else (1 - self.alpha) * self.d + self.alpha * delta
        self.pre = eps
        return delta - self.d

    def estimate(self, k: int) -> torch.Tensor:
        """``pre + d / k``: one step of the trend distributed over a window of ``k`` steps (g = d/k)."""
        assert self.pre is not None and self.d is not None and k > 0
        return self.pre + self.d / k


class ETCStream(OutputStream):
    """One denoiser call's trend (a CFG branch), following the decisions of its :class:`ETC` policy.

    With classifier-free guidance combined linearly, the branch estimates combine into exactly the ETC
    estimate of the combined output, because every operation of the predictor is linear.
    """

    def __init__(self, policy: "ETC") -> None:
        self.policy = policy
        self.trend = TrendState(policy.alpha)
        self.last_real: int | None = None

    def record(self, step: int, output: torch.Tensor) -> None:
        self.trend.update(output)
        self.last_real = step

    def predict(self, step: int) -> torch.Tensor | None:
        # A branch that missed the policy's last real step (a call the pipeline makes only now and then)
        # has a stale trend: it must run the model instead of guessing.
        p = self.policy
        if self.trend.d is None or p.k <= 0 or self.last_real != p.last_real:
            return None
        est = self.trend.estimate(p.k)
        return est if is_finite(est) else None

    def use(self, step: int, estimate: torch.Tensor) -> None:
        self.trend.pre = estimate  # inside a window the last used output is the estimate


def _real_or(value: Any) -> Any:
    real = as_real(value)
    return value if real is None else real


def _int_or(value: Any) -> Any:
    whole = as_int(value)
    return value if whole is None else whole


class ETC(StepPolicy):
    """Error-aware Trend Consistency, exactly as its paper describes it (docs/methods.md).

    Args:
        threshold: the error tolerance tau (paper Tables 1 and 3); find it with ``etcdiff calibrate`` or take a
            published preset with :meth:`ETC.preset`.
        warmup: n, the first steps that always run the model (at least 2, so that a trend exists).
        alpha: weight of the newest one-step trend in the recursive average, in (0, 1].
        max_growth: how many steps the window may grow by after one round under the tolerance. 1 (default) is
            the paper's ±1 rule, the reference behaviour; larger values are an opt-in extension (see ``_growth``).
        threshold_for_steps: optional ``steps -> tau``: the tolerance then follows each run's step count (a
            calibration profile searched at another count gives it; see ``etcdiff.etc_from_profile``).

    The window rule compares ``err = mean|eps - pre - d|`` with ``threshold`` on the output the sampler
    consumes (after classifier-free guidance is combined), as the paper defines eps_t.
    """

    name = "etc"

    def __init__(self, threshold: float, warmup: int = 6, alpha: float = 0.5, max_growth: int = 1,
                 threshold_for_steps: Callable[[int], float] | None = None) -> None:
        super().__init__()
        threshold, alpha = _real_or(threshold), _real_or(alpha)
        warmup, max_growth = _int_or(warmup), _int_or(max_growth)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold) or threshold < 0:
            raise ValueError(
                f"ETC: threshold must be a finite number >= 0, got {threshold!r}; a model's own is found by "
                "`etcdiff calibrate` (published ones: FLUX 0.1269, SDXL 0.0171, Wan 2.1 0.1181)."
            )
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not (0 < alpha <= 1):
            raise ValueError(f"ETC: alpha must be in (0, 1], got {alpha!r}; the paper uses 0.5.")
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 2:
            raise ValueError(
                f"ETC: warmup must be an integer >= 2 (two real outputs make the first trend), got {warmup!r}."
            )
        if isinstance(max_growth, bool) or not isinstance(max_growth, int) or max_growth < 1:
            raise ValueError(f"ETC: max_growth must be an integer >= 1 (1 is the paper's rule), got {max_growth!r}.")
        if threshold_for_steps is not None and not callable(threshold_for_steps):
            raise ValueError("ETC: threshold_for_steps must be a callable steps -> tau (etcdiff.etc_from_profile makes one).")
        self.threshold = float(threshold)
        self.warmup = warmup
        self.alpha = float(alpha)
        self.max_growth = max_growth
        self.threshold_for_steps = threshold_for_steps
        self._tau_for_steps: dict[int, float] = {}

    @classmethod
    def preset(cls, name: str) -> "ETC":
        """The paper's published tolerance for a model family, e.g. ``ETC.preset("flux")``."""
        return etc_preset(name)

    def params(self) -> dict[str, Any]:
        out = {"threshold": self.threshold, "warmup": self.warmup, "alpha": self.alpha}
        if self.max_growth != 1:
            out["max_growth"] = self.max_growth
        return out

    def begin(self, num_steps: int) -> None:
        if self.threshold_for_steps is not None and isinstance(num_steps, int) and num_steps > 0:
            if num_steps not in self._tau_for_steps:
                self._tau_for_steps[num_steps] = float(self.threshold_for_steps(num_steps))
            self.threshold = self._tau_for_steps[num_steps]
        super().begin(num_steps)
        if self.warmup >= num_steps:
            raise ValueError(
                f"ETC: warmup ({self.warmup}) must be smaller than the number of steps ({num_steps}); "
                f"lower warmup or sample with more steps."
            )

    def new_stream(self) -> ETCStream:
        return ETCStream(self)

    def reset_state(self) -> None:
        self.trend = TrendState(self.alpha)  # on the consumed (guidance-combined) output: the decisions
        self.k = 0  # window: estimated steps after the last real one
        self.left = 0  # estimated steps left in the current window
        self.last_real: int | None = None
        self._invalid_warned = False
        self._poisoned = False

    def _is_fixed_real(self, step: int) -> bool:
        return step < self.warmup or step == self.num_steps - 1

    def should_compute(self, step: int, latents: torch.Tensor | None = None) -> bool:
        self._check_step(step)
        return self._is_fixed_real(step) or self.left == 0 or self._poisoned

    def predict(self, step: int) -> torch.Tensor | None:
        if self.trend.d is None or self.k <= 0:
            return None
        est = self.trend.estimate(self.k)
        return est if is_finite(est) else None

    def observe(self, step: int, output: torch.Tensor, computed: bool) -> None:
        """Spec "Real step" / "Estimated step": update the trend, the error and the window."""
        if not computed:
            self.trend.pre = output
            self.left = max(self.left - 1, 0)
            self._log(step, False, window=self.k)
            return
        self.last_real = step
        if self._poisoned or not is_finite(output):
            self._drop_trend(step)
            self._log(step, True, window=self.k)
            return
        residual = self.trend.update(output)
        if self._is_fixed_real(step) or residual is None:
            self._log(step, True, window=self.k)
            return
        err = residual.abs().mean().item()  # Eq. 6: err = mean|eps - pre - d|
        if not err < self.threshold:  # NaN (an overflowed residual) counts as over the tolerance
            self.k = max(self.k - 1, 0)  # Eq. 7
        else:
            self.k += self._growth(err)  # Eq. 7: +1; more only with the opt-in max_growth > 1
        self.left = self.k
        self._log(step, True, err=err, window=self.k)

    def _growth(self, err: float) -> int:
        """How much the window grows after a correction ``err`` under the tolerance: 1 in the reference.

        Opt-in (``max_growth > 1``, not the paper's rule): the end-of-window error of a linear extrapolation
        grows about as the square of the window, so a window of ``k`` whose error is ``err`` could stretch to
        ``k·sqrt(tau / err)`` at the tolerance; the window grows towards that, by at least 1 and at most
        ``max_growth`` per round (the paper leaves the largest feasible window open).
        """
        if self.max_growth == 1:
            return 1
        feasible = max(self.k, 1) * math.sqrt(self.threshold / max(err, 1e-12))
        if not math.isfinite(feasible):  # tau / err overflowed (e.g. tau = 1e300): as far as allowed
            return self.max_growth
        return int(min(max(math.floor(feasible) - self.k, 1), self.max_growth))

    def _drop_trend(self, step: int) -> None:
        """A non-finite model output: forget the trend so that every following step runs the model."""
        if not self._invalid_warned:
            warnings.warn(
                f"ETC: the model output at step {step} has NaN or Inf values; ETC stops estimating and runs "
                "the model on every remaining step of this generation (the NaN comes from the model, not ETC).",
                RuntimeWarning,
                stacklevel=3,
            )
            self._invalid_warned = True
        self.trend = TrendState(self.alpha)
        self.k = self.left = 0
        self._poisoned = True


def etc_preset(name: str) -> ETC:
    """``ETC`` with the published tolerance and warm-up of ``name`` (a family name or a hub id)."""
    p = find_preset(name)
    if p is None:
        raise KeyError(unknown_preset_message(name))
    return ETC(threshold=p.threshold, warmup=p.warmup)
