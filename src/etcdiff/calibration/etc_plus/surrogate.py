"""A surrogate denoiser drawn from recorded full runs, so that one calibration serves other step counts.

A calibration records full runs at one step count. A run at another step count passes the same noise levels
in other places, along nearly the same path, so the recorded model outputs and latents are interpolated on the
timestep axis (a cubic spline through the recorded steps, which keeps the curvature a trend estimate misses; a
straight line between steps would hide it). Its ends are "not-a-knot": a natural spline's straight ends made
the last steps look easy to estimate, and on gmm-ddim with DDIM served plans then estimated steps they should
have computed (from 50 steps: -13.0 dB at 20 steps and 2x, against -5.0 with these ends). The spline on the log
of the timestep follows the model 2.5-50 times closer between recorded steps (``scripts/surrogate_accuracy.py``),
and served no better (16 of the 36 gmm points within 1 dB of a native calibration, against 18): what the
surrogate misses is how the model answers a sample that strays, not the path between steps.

Where a policy's latents stray from the recorded ones the surrogate answers as a replay does
(:mod:`etcdiff.calibration.etc_plus.replay`)::

    eps(x, t) = eps(t) + lam(t) * (x - x(t)) / (c(t) * s(t))

with the replay's feedback ``lam`` and noise scale ``s`` (interpolated linearly) and ``c`` the scheduler's input
scaling. Each sample of a batch is answered from the recorded run whose latents are nearest. The whole
calibration is then run again at the other step count on the surrogate: full runs, probes, the choice, the
budget ladder and the tolerance passes, each a surrogate run that makes no model call. With ``serve_recorded``
the surrogate is drawn instead from real full runs at the served step count (one of them probed for real), so it
is exact on that step count's own path, and its feedback is fitted on real runs there: a pull is fitted to how
replays of one step count's plans miss the real runs, and one read from the calibration's step count judged the
served plans wrongly (on the held-out UNet, 7 of 18 points within 1 dB of native calibrations against 12 with
their own).

A cubic spline is linear in the values it passes through, so the surrogate keeps the recorded runs once, in
their own precision, and the spline of the unit vectors: at each timestep, one weight per recorded step. (A
spline of the data itself holds four float64 coefficients per recorded value, 8 times the runs, and took 17
times them while being built: about 17 GB for ten FLUX-sized runs of 50 steps; ``scripts/surrogate_memory.py``.)
The values at a timestep are kept for the next run at the same step count.

:func:`preset_scheduler` gives a copy of a scheduler that keeps the timesteps it was set to (a pipeline's
scheduler, set with arguments such as FLUX's ``mu`` that a bare ``set_timesteps(n)`` does not know).
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import numpy as np
import torch
from scipy.interpolate import CubicSpline

SPLINE_ENDS = "not-a-knot"  # the splines' end conditions (scipy's bc_type): the end intervals keep their curvature
WEIGHT_FLOOR = 1e-9  # recorded steps whose spline weight is below this share of the largest are left out


class SurrogateDenoiser:
    """``model(x, t)`` over recorded runs (:class:`~etcdiff.policies.trajectory.Trajectory`, all of one step
    count, each with its ``solver``), with the per-step ``feedback`` and noise ``scales`` of their replays."""

    def __init__(self, records: Sequence[Any], feedback: Sequence[float], scales: Sequence[float]) -> None:
        records = list(records)
        if not records or any(getattr(r, "solver", None) is None for r in records):
            raise ValueError("etc-plus: serving other step counts needs recorded runs with a copy of their scheduler.")
        solver = copy.deepcopy(records[0].solver)
        times = [float(t) for t in solver.timesteps]
        n = len(times)
        if n < 3 or any(b >= a for a, b in zip(times, times[1:])):
            raise ValueError("etc-plus: serving other step counts needs at least 3 recorded steps with decreasing "
                             "timesteps.")
        scale_input = hasattr(solver, "scale_model_input")
        dtype = records[0].outputs[0].dtype  # kept in the runs' own precision: one copy of them, no more
        size = sum(r.outputs[0].numel() for r in records)
        # by increasing timestep, as the splines run
        self._inputs, self._outputs = (torch.empty(n, size, dtype=dtype) for _ in range(2))
        factors = []
        for k, t in enumerate(solver.timesteps):
            x = torch.cat([r.inputs[k].double() for r in records])
            x_in = solver.scale_model_input(x, t).double() if scale_input else x
            self._inputs[n - 1 - k] = x_in.reshape(-1)
            self._outputs[n - 1 - k] = torch.cat([r.outputs[k].reshape(-1) for r in records])
            factors.append(float((x_in * x).sum() / (x * x).sum().clamp_min(1e-30)))
        self.shape = tuple(x_in.shape)
        order = self._times = np.array(times[::-1])
        # a cubic spline is linear in the values it passes through: the spline of the unit vectors gives, at any t,
        # the weights of the recorded steps (held once; the spline of the data itself would hold four float64
        # coefficients per recorded value, 8x the runs)
        self._weights = CubicSpline(self._axis(order), np.eye(n), axis=0, bc_type=SPLINE_ENDS)
        self._pull = np.array([float(f) for f in feedback][::-1])
        self._scale = np.array([abs(c) * float(s) for c, s in zip(factors, scales)][::-1])
        self._cache: dict[float, tuple[torch.Tensor, torch.Tensor]] = {}
        self.calls = 0

    def _axis(self, t: Any) -> Any:
        """The splines' axis: the timestep itself (module docstring: its log interpolates better, and served no
        better)."""
        return np.asarray(t, dtype=np.float64)

    def _at(self, values: torch.Tensor, weights: np.ndarray) -> torch.Tensor:
        """The spline of ``values`` (one row per recorded step) at the time of ``weights``, in float64, summed over
        the steps whose weight is not negligible (a spline's weights fall off about 4x per step away from t)."""
        top = float(np.abs(weights).max())
        total = torch.zeros(values.shape[1], dtype=torch.float64)
        for k in np.flatnonzero(np.abs(weights) > WEIGHT_FLOOR * top):
            total.add_(values[int(k)].double(), alpha=float(weights[k]))
        return total.reshape(self.shape)

    def _recorded(self, t: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The interpolated recorded inputs and outputs at ``t``, kept in the runs' precision for the next run at the
        same step count (a calibration makes hundreds of runs over the same timesteps)."""
        if t not in self._cache:
            weights = self._weights(self._axis(t))
            self._cache[t] = (self._at(self._inputs, weights).to(self._inputs.dtype),
                              self._at(self._outputs, weights).to(self._outputs.dtype))
        recorded_in, out = self._cache[t]
        return recorded_in.double(), out.double()

    def __call__(self, x: torch.Tensor, t: Any, **_: Any) -> torch.Tensor:
        self.calls += 1
        t = float(t)
        recorded_in, out = self._recorded(t)
        flat = x.detach().double().reshape(x.shape[0], -1).cpu()
        nearest = torch.cdist(flat, recorded_in.reshape(self.shape[0], -1)).argmin(dim=1)
        pull = float(np.interp(t, self._times, self._pull))
        result = out[nearest]
        if pull != 0.0:
            scale = max(float(np.interp(t, self._times, self._scale)), 1e-12)
            result = result + pull * (x.detach().double().cpu() - recorded_in[nearest]) / scale
        return result.to(dtype=x.dtype, device=x.device)


def serve_step_counts(value: Any) -> list[int] | None:
    """The step counts of a ``serve_steps`` setting as given (an int, a list, or ``--set``'s "20,28"), in order;
    ``[]`` for none, ``None`` where it is not a list of whole numbers (the caller says what it needs)."""
    if value in (None, (), [], ""):
        return []
    values = [value] if isinstance(value, int) else value
    if isinstance(values, str):
        try:
            values = [int(v) for v in values.split(",") if v.strip()]
        except ValueError:
            return None
    if not isinstance(values, (list, tuple)) or any(isinstance(v, bool) or not isinstance(v, int) for v in values):
        return None
    return list(values)


def preset_scheduler(solver: Any) -> Any:
    """A copy of ``solver`` (timesteps already set) whose ``set_timesteps`` puts it back as it is now, whatever
    it is asked: the loops that call ``set_timesteps(n)`` then run the step count and schedule it was set to."""
    pristine = copy.deepcopy(vars(solver))
    base = type(solver)

    def set_timesteps(self: Any, *args: Any, **kwargs: Any) -> None:
        vars(self).update(copy.deepcopy(pristine))

    preset = copy.deepcopy(solver)
    preset.__class__ = type(base.__name__, (base,), {"set_timesteps": set_timesteps, "__module__": base.__module__})
    return preset


__all__ = ["SurrogateDenoiser", "preset_scheduler", "serve_step_counts"]
