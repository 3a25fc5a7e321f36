"""MagCache (Ma et al. 2025): the decision rule, pure Python (no torch, no diffusers).

Calibration (one or more full runs) records, at every step t, the magnitude ratio of the block-stack residual
R_t = (blocks' output - blocks' input):

    gamma_t = mean over tokens of ||R_t|| / ||R_{t-1}||      (norm over the feature dimension; gamma_0 = 1)

At run time, per CFG branch: during the retention steps (the first ``int(retention_ratio * N + 0.5)`` steps,
as in MagCache4FLUX and diffusers' ``MagCacheConfig``) the stack always runs. After them, at every step

    acc_ratio *= gamma_t;   acc_steps += 1;   acc_err += |1 - acc_ratio|

and the stack is skipped (the stored residual reused) while ``acc_err <= threshold`` and
``acc_steps <= max_skip_steps`` (K); otherwise it runs and the three accumulators are reset
(acc_ratio = 1, acc_steps = 0, acc_err = 0).

Another step count than the ratios' own (L ratios for N != L steps) is resampled on the residual's magnitude
curve, with a warning: m_i = gamma_1·...·gamma_i is interpolated (log-linearly) at the run's steps i·(L-1)/(N-1)
and the run's ratios are its quotients. This departs from the reference code and diffusers' port, which pick
the nearest calibrated ratio (:func:`nearest_interp`): a ratio measures the change over one calibrated step, and
a run with fewer, longer steps changes more per step. Measured (``scripts/magcache_resample.py``): ratios
calibrated at 50 steps resampled to 20, against ratios calibrated at 20 steps, mean |log error| 0.006 (nearest
index 0.031; the ratios' own mean |log gamma| is 0.042) on the digits model, 0.011 (0.027; 0.055) on scenes.

The decision depends only on the step index and the ratios, so all samples of a batch share it.

Published FLUX.1-dev ratios (28 steps, leading 1.0): MagCache4FLUX,
https://github.com/Zehong-Ma/MagCache/blob/main/MagCache4FLUX/magcache_flux.py (the same values ship as
``diffusers.hooks.mag_cache.FLUX_MAG_RATIOS``). Presets there: threshold 0.24, K 5, retention 0.1.
MagCache4FLUX additionally forces a compute at reference step 11 of 28; that FLUX-specific exception is not
part of the method as described (nor of diffusers' port) and is not reproduced here.
Other models: calibrate with ``etcdiff.integration.block.calibration.calibrate_magcache`` and
:func:`fit_magcache_ratios`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

#: FLUX.1-dev magnitude ratios for 28 steps (MagCache4FLUX; diffusers.hooks.mag_cache.FLUX_MAG_RATIOS).
FLUX_MAG_RATIOS: list[float] = [1.0] + [
    1.21094, 1.11719, 1.07812, 1.0625, 1.03906, 1.03125, 1.03906, 1.02344, 1.03125, 1.02344, 0.98047,
    1.01562, 1.00781, 1.0, 1.00781, 1.0, 1.00781, 1.0, 1.0, 0.99609, 0.99609, 0.98047, 0.98828, 0.96484,
    0.95703, 0.93359, 0.89062,
]
FLUX_MAG_RATIOS_SOURCE = "https://github.com/Zehong-Ma/MagCache/blob/main/MagCache4FLUX/magcache_flux.py"

#: FLUX presets of MagCache4FLUX (28 steps).
FLUX_PRESET: dict[str, float] = {"threshold": 0.24, "max_skip_steps": 5, "retention_ratio": 0.1}


def nearest_interp(ratios: Sequence[float], num_steps: int) -> list[float]:
    """The ratios for ``num_steps`` steps by nearest-index interpolation (as MagCache's ``nearest_interp``)."""
    src = [float(r) for r in ratios]
    if not src:
        raise ValueError("magcache: the ratio list is empty.")
    if num_steps < 1:
        raise ValueError(f"magcache: num_steps must be >= 1, got {num_steps}.")
    if num_steps == 1:
        return [src[-1]]
    scale = (len(src) - 1) / (num_steps - 1)
    # round half to even, as numpy.round / torch.round do in the reference implementations
    return [src[int(round(i * scale))] for i in range(num_steps)]


def resample_ratios(ratios: Sequence[float], num_steps: int) -> list[float]:
    """The ratios for ``num_steps`` steps from the magnitude curve of ``ratios`` (module docstring); the same
    list where the lengths agree."""
    src = [float(r) for r in ratios]
    if not src or num_steps < 1:
        raise ValueError(f"magcache: need ratios and num_steps >= 1, got {len(src)} ratios and {num_steps!r}.")
    if len(src) == num_steps:
        return src
    if len(src) == 1 or num_steps == 1:
        return [1.0] * num_steps
    if not all(math.isfinite(r) and r > 0 for r in src[1:]):
        raise ValueError("magcache: the ratios must be finite and > 0 to be resampled to another step count.")
    log_m = [0.0]
    for r in src[1:]:
        log_m.append(log_m[-1] + math.log(r))
    scale = (len(src) - 1) / (num_steps - 1)

    def at(i: int) -> float:
        p = i * scale
        a = min(int(p), len(src) - 2)
        return log_m[a] + (p - a) * (log_m[a + 1] - log_m[a])

    curve = [at(i) for i in range(num_steps)]
    return [1.0] + [math.exp(b - a) for a, b in zip(curve, curve[1:])]


def fit_magcache_ratios(residual_norm_sequences: Sequence[Sequence[float]]) -> list[float]:
    """The ratio table from calibration runs: the element-wise mean of the per-run gamma sequences.

    Each sequence holds gamma_t for t = 0..N-1 of one full run (one prompt / one CFG branch), gamma_0 = 1.
    All sequences must have the same length N; the result has ``result[0] == 1.0``.
    """
    seqs = [[float(v) for v in s] for s in residual_norm_sequences]
    if not seqs:
        raise ValueError("fit_magcache_ratios: no calibration sequence given.")
    n = len(seqs[0])
    if n == 0 or any(len(s) != n for s in seqs):
        raise ValueError(f"fit_magcache_ratios: all sequences must be non-empty and equally long, got lengths "
                         f"{sorted({len(s) for s in seqs})}.")
    out = [sum(s[i] for s in seqs) / len(seqs) for i in range(n)]
    out[0] = 1.0
    return out


@dataclass
class MagCacheState:
    """One CFG branch's accumulators."""

    acc_ratio: float = 1.0
    acc_steps: int = 0
    acc_err: float = 0.0
    last_err: float | None = None  # acc_err at the last decision (for reports)


class MagCache:
    """The MagCache decision rule for the block-level hooks.

    ``ratios``: gamma_t of a calibration run (any length; interpolated to the step count), ``None`` to take
    the published default of the hooked model at enable time (FLUX only; other models need calibration).
    """

    name = "magcache"
    needs_signal = False

    def __init__(self, threshold: float = 0.24, max_skip_steps: int = 5, retention_ratio: float = 0.1,
                 ratios: Sequence[float] | None = None) -> None:
        threshold = float(threshold)
        if not threshold >= 0.0:
            raise ValueError(f"magcache: threshold must be >= 0, got {threshold!r}.")
        if int(max_skip_steps) != max_skip_steps or max_skip_steps < 0:
            raise ValueError(f"magcache: max_skip_steps must be a non-negative integer, got {max_skip_steps!r}.")
        if not 0.0 <= float(retention_ratio) <= 1.0:
            raise ValueError(f"magcache: retention_ratio must be in [0, 1], got {retention_ratio!r}.")
        self.threshold = threshold
        self.max_skip_steps = int(max_skip_steps)
        self.retention_ratio = float(retention_ratio)
        self.ratios: list[float] | None = None
        self.ratios_source: str | None = None
        if ratios is not None:
            self.set_ratios(ratios, "user")
        self.num_steps = 0
        self.step_ratios: list[float] = []
        self.retention_steps = 0

    @classmethod
    def flux(cls, **overrides: Any) -> "MagCache":
        """The MagCache4FLUX preset with the published FLUX.1-dev ratios."""
        rule = cls(**{**FLUX_PRESET, **overrides})
        if rule.ratios is None:
            rule.set_ratios(FLUX_MAG_RATIOS, FLUX_MAG_RATIOS_SOURCE)
        return rule

    def set_ratios(self, ratios: Sequence[float], source: str) -> None:
        ratios = [float(r) for r in ratios]
        if not ratios:
            raise ValueError("magcache: ratios must not be empty.")
        self.ratios = ratios
        self.ratios_source = source
        self._resampled: set[int] = set()  # step counts already warned about

    # -- per generation ---------------------------------------------------------------------------------------
    def begin(self, num_steps: int) -> None:
        if not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"magcache: the number of steps must be a positive integer, got {num_steps!r}.")
        if self.ratios is None:
            raise RuntimeError(
                "magcache: no magnitude ratios set. Pass ratios=... (e.g. from calibrate_magcache), or use "
                "MagCache.flux() on FLUX."
            )
        self.num_steps = num_steps
        self.step_ratios = resample_ratios(self.ratios, num_steps)
        if 1 < len(self.ratios) != num_steps and num_steps not in self._resampled:  # one ratio: a constant
            self._resampled.add(num_steps)
            warnings.warn(
                f"magcache: the ratios are for {len(self.ratios)} steps (from "
                f"{'the settings' if self.ratios_source == 'user' else self.ratios_source}) and this run has "
                f"{num_steps}; they are resampled on the residual's magnitude curve. For ratios measured at "
                f"{num_steps} steps: `etcdiff calibrate --model <id or path> --method magcache --steps {num_steps}`.",
                UserWarning, stacklevel=2)
        self.retention_steps = int(self.retention_ratio * num_steps + 0.5)

    def new_state(self) -> MagCacheState:
        return MagCacheState()

    def decide(self, state: MagCacheState, step: int, change: Any = None, can_skip: bool = True) -> bool:
        """Whether the block stack runs at ``step`` for this branch; updates ``state``.

        ``change`` is ignored (MagCache needs no run-time signal); ``can_skip`` is ``False`` when no residual
        is stored yet.
        """
        if step < self.retention_steps:
            state.last_err = None
            return True
        gamma = self.step_ratios[step] if step < len(self.step_ratios) else 1.0
        state.acc_ratio *= gamma
        state.acc_steps += 1
        state.acc_err += abs(1.0 - state.acc_ratio)
        state.last_err = state.acc_err
        if can_skip and state.acc_err <= self.threshold and state.acc_steps <= self.max_skip_steps:
            return False
        state.acc_ratio, state.acc_steps, state.acc_err = 1.0, 0, 0.0
        return True

    def params(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "max_skip_steps": self.max_skip_steps,
                "retention_ratio": self.retention_ratio, "ratios": self.ratios, "ratios_source": self.ratios_source}

    def __repr__(self) -> str:
        return (f"MagCache(threshold={self.threshold!r}, max_skip_steps={self.max_skip_steps!r}, "
                f"retention_ratio={self.retention_ratio!r}, ratios={'None' if self.ratios is None else '[...]'})")
