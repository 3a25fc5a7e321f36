"""ETC+ (``etc-plus``): etcdiff's own step-wise method, ETC's three parts made calibrated, planned and budgeted.

What differs from reference ETC in one sentence: the trend is extrapolated on the solver's own time axis (sigma)
from the last two real outputs, and the windows are planned from calibrated per-step errors for a tolerance or a
call budget by dynamic programming, then re-planned online from each sample's own measured error.

The three parts of ETC, and what each becomes here:

1. **Trend predictor.** On a skipped step t with the last two real outputs eps_c, eps_c' (c' < c < t):
   ``eps_t ≈ eps_c + g·eps_c + k·(eps_c - eps_c')``; the plain trend is ``g = 0``, ``k = (s_t - s_c)/(s_c - s_c')``,
   linear in the solver's time ``s`` (sigma on flow schedules). Per ``(c', c, t)``, gains fitted offline by ridge
   least squares (like ERTACache's per-step corrections) replace it everywhere (``corrections=True``), nowhere
   (``False``) or only where they halve its error on calibration samples they were not fitted on (``"auto"``);
   calibration keeps whichever lands closest on held-out calibration runs (always-fitted gains cost up to 5 dB at
   2x on the digits model, and won on the scenes model under the multistep solvers).
2. **Error-aware window.** Every step's solver is fitted as ``x_{t+1} = A_t·x_t + B_t·eps_t`` (exact for Euler flow
   and DDIM), so an output error at t reaches the final latents scaled by ``w_t = |B_t|·prod_{u>t}|A_u|``; the
   cumulative ``w`` is the time axis ``s`` (sigma for flow, sqrt((1-a)/a) for DDIM: no sigmas needed). Skipping
   the window c+1..m-1 after real steps (c', c) costs the square of its calibrated error: the RMS of
   ``sum_t w_t·(eps_t - estimate_t)``, the errors of one window summed as vectors (they extrapolate the same two
   outputs, so they share a direction; separate windows add like independent errors). A backward dynamic
   programme over (last two real steps, calls left) gives the best next real step for any budget: calls go
   where skipping would cost most (the window is sized from the error budget). Where the
   calibration ran probes (:mod:`etcdiff.calibration.etc_plus.propagation`), ``w_t`` is scaled by the measured reach of
   an error at t, which the solver cannot see: a contracting flow damps early errors (calibration keeps the
   probes only where they do better on held-out calibration runs: :mod:`etcdiff.calibration.selection`).
3. **Model-specific tolerance.** The tolerance bounds the square root of the summed cost, an estimate of the final
   latents' RMS error; the calibrated default is 2 % of the calibration runs' final RMS (chosen on the digits
   model: about 4.3x fewer calls at 48 dB there).

Calibration through the registry (``etcdiff calibrate --method etc-plus``, ``calibrate_policy``) chooses the probes
and the corrections jointly on held-out calibration runs with the user's scheduler (recorded in the profile: a
scheduler of another family is refused), then measures every budget's plan and the tolerance mode on the same runs
(:mod:`etcdiff.calibration.etc_plus.refine`).

Online adaptivity: at each real step n the policy measures what its estimate for n would have missed (max over
the batch of the per-sample RMS) against the calibrated error ``e(c', c, n)``. Its running mean (the sample's
hardness) scales the plan ahead (tolerance mode: a hard sample gets more calls, an easy one fewer); a ratio above ``spike``
forces the next step to run. With ``calls=B`` no generation makes more than B real steps, and the plan runs as
planned unless a ``spike`` level is given (or ``adapt_trend`` is in force): a spike there prices the window ahead by
how much more the sample misses now than its hardness so far, and runs the next step only where that costs less
than the rest of the plan with one call fewer (:meth:`ETCPlus._spike_next`). Under a budget the plan as planned came
out closer on images and noises no choice saw (docs/etc-plus, "The plan as planned under a budget, by default").
Every estimate is linear in the outputs, so each CFG branch (``new_stream``) applies the same coefficients to its own
outputs and the branches combine exactly.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any

import torch

from ..base import OutputStream, StepPolicy, is_finite
from ..lemica import ScheduleStream
from .fit import check_number, fit_etc_plus, item_rms, load_etc_plus_profile
from .budgets import asked_budget, budget_adapt_trend, budget_profile, budget_trend_cap, ranked_plan
from .plan import INF, PINNED, pinned_costs, plan_table, window_costs
from .schedules import budget_schedule, gaps
from .stream import ETCPlusStream
from .step_counts import profile_for_steps
from ...scheduler_family import scheduler_mismatch

NOISE_FLOOR = 1e-3  # measured errors under this fraction of the output's RMS count as this fraction
MAX_RATIO = 8.0  # one measurement moves the sample's hardness by at most this factor

__all__ = ["ETCPlus", "ETCPlusStream", "fit_etc_plus", "load_etc_plus_profile"]


class ETCPlus(StepPolicy):
    """ETC+, the calibrated, planned and budgeted successor of ETC (module docstring).

    Args:
        profile: what :func:`fit_etc_plus` returned (or its JSON path). A run at another step count is planned
            from it resampled on the sigma axis (:mod:`etcdiff.policies.step.etc_plus.resample`, with a warning).
        calls: a call budget B: at most B real steps per generation (each runs every CFG branch once). Where
            calibration measured the budgets on held-out runs (``budget_errors``), the measured plan of <= B
            calls that came clearly closest runs (:func:`~etcdiff.policies.step.etc_plus.budgets.ranked_plan`),
            with the fit calibration chose for that budget where it chose one (``budget_fits``), or the searched
            schedule it kept for that budget (``budget_schedules``, :mod:`.schedules`; only where ``tolerance``,
            ``spike``, ``trend_cap`` and ``adapt_trend`` are left unset, which set ETC+'s own plan).
        tolerance: the quality target, a bound on the final latents' RMS error (the profile's calibrated
            default when neither ``calls`` nor ``tolerance`` is given; planned with the calibrated
            ``tolerance_scale``, or, where calibration found no scale that held it and a budget that did, run as
            that budget: ``tolerance_calls``). With both, both hold.
        spike: a sample whose measured error exceeds ``spike`` times the calibrated one forces the next step to
            run. ``None`` (default): the calibration's level (the profile's ``spike``, from its spread) in the
            tolerance mode and where ``adapt_trend`` is in force; none under a call budget alone, where the plan
            runs as planned (give the profile's level to turn it on).
        last_step: ``True``: every generation computes the last step; ``False``: the plan decides; ``None``
            (default): with ``calls``, whichever calibration measured closer for this budget
            (:mod:`~etcdiff.policies.step.etc_plus.budgets`), else the plan decides.
        trend_cap: opt-in, experimental: the most an estimate may extend the last real difference (the trend
            coefficient ``k`` of every estimate is clipped to ``[-trend_cap, trend_cap]``); 0 reuses the last real
            output times its fitted gain. The plan still prices windows with the calibrated errors of the
            unclipped estimates. ``None`` (default): the cap calibration chose for this budget where it was
            asked to (``trend_caps=True``; the profile's ``budget_trend_caps``), else none.
        adapt_trend: after a spike, the trend of the estimates ahead is weighed by the share of it the real
            output carried (:meth:`_weigh_trend`); samples without spikes run exactly as without it. ``None``
            (default): what calibration chose for this budget's plan where it was asked to (``adapt_trend=True``
            at calibration; the profile's ``budget_adapt_trend``), else off.

    Attributes: ``calibrated``, the profile as given (the one to save, or to build a policy with other ``calls``
    from); ``profile``, what this policy plans from: the fit calibration chose for its budget, or the profile
    resampled for a run at another step count.
    """

    name = "etc-plus"
    #: its calibration is made for one step count: a run at another needs one made there
    profile_per_step_count = False  # a profile serves other step counts, resampled on the sigma axis

    def __init__(self, profile: dict[str, Any] | str | os.PathLike, calls: int | None = None,
                 tolerance: float | None = None, spike: float | None = None,
                 last_step: bool | None = None, trend_cap: float | None = None,
                 adapt_trend: bool | None = None) -> None:
        super().__init__()
        self.profile = load_etc_plus_profile(profile)
        if calls is not None and (isinstance(calls, bool) or not isinstance(calls, int) or calls < 1):
            raise ValueError(f"etc-plus: calls must be a positive integer (the most real steps per generation), got {calls!r}.")
        if last_step is not None and not isinstance(last_step, bool):
            raise ValueError(f"etc-plus: last_step must be true, false or unset, got {last_step!r}.")
        self.requested_calls, self.last_step = calls, last_step
        self.tolerance = check_number("tolerance", tolerance, 0.0)
        # the measured-best plan within the budget (<= calls), and whether it computes the last step
        self.calls, self.compute_last = ranked_plan(self.profile, asked_budget(self.profile, calls, self.tolerance),
                                                    last_step)
        self.calibrated = self.profile  # as calibration made it: the one to save or to build other budgets from
        self.profile = budget_profile(self.profile, self.calls)  # the fit calibration chose for this budget
        self.requested_trend_cap = check_number("trend_cap", trend_cap, 0.0)
        if adapt_trend is not None and not isinstance(adapt_trend, bool):
            raise ValueError(f"etc-plus: adapt_trend must be true, false or unset, got {adapt_trend!r}.")
        self.requested_adapt_trend, self.trend_weight = adapt_trend, 1.0
        self._trend_settings(self.profile)
        self.requested_spike = check_number("spike", spike, 1.0)
        self._profile_spike = float(self.profile["spike"])
        self.max_window = int(self.profile["max_window"])
        self._gains: dict[tuple[int, int, int], tuple[float, float, float]] = {
            (int(cp), int(c), int(t)): (float(g), float(k), float(e)) for cp, c, t, g, k, e in self.profile["triplets"]
        }
        self._plan: tuple[torch.Tensor, torch.Tensor] | None = None
        self._fitted = self.profile  # the profile as fitted; self.profile may be it resampled for this run
        self._other_steps: dict[tuple, dict[str, Any]] = {}  # served or resampled profiles, by step count
        self._run_sigmas: list[float] | None = None
        self._kept: dict[int, tuple] = {}
        self.schedule: tuple[list[int], str] | None = None  # (steps, predictor) where a searched schedule serves

    @property
    def spike(self) -> float:
        """The spike level in force: the one given; else the profile's in the tolerance mode and where
        ``adapt_trend`` weighs the trend after spikes; else none (``inf``) under a call budget."""
        if self.requested_spike is not None:
            return self.requested_spike
        if self.requested_calls is None or self.tolerance is not None or self.adapt_trend:
            return self._profile_spike
        return math.inf

    def params(self) -> dict[str, Any]:
        spike = None if math.isinf(self.spike) else self.spike  # None: no spike rule (a budget alone)
        return {"calls": self.requested_calls, "tolerance": self.tolerance if self.tolerance is not None
                else (None if self.requested_calls is not None else self.profile["tolerance"]), "spike": spike,
                "last_step": self.last_step, "trend_cap": self.requested_trend_cap,
                "adapt_trend": self.requested_adapt_trend}

    def _trend_settings(self, profile: dict[str, Any]) -> None:
        """The trend cap and ``adapt_trend`` in force for this budget's plan: the user's, else what calibration
        chose in ``profile`` (a resampled profile keeps neither: they were measured at one step count)."""
        cap = self.requested_trend_cap
        self.trend_cap = budget_trend_cap(profile, self.calls, self.compute_last) if cap is None else cap
        chosen = budget_adapt_trend(profile, self.calls, self.compute_last)
        self.adapt_trend = bool(chosen) if self.requested_adapt_trend is None else self.requested_adapt_trend
        if self.requested_adapt_trend and self.trend_cap == 0:  # a setting that does nothing is said
            warnings.warn("etc-plus: adapt_trend has nothing to weigh: the trend cap in force is 0 (at "
                          f"{profile['num_steps']} steps).", RuntimeWarning, 3)

    # -- the plan ------------------------------------------------------------------------------------------
    def gains(self, cp: int, c: int, t: int) -> tuple[float, float]:
        """(g, k) for step t from real steps (c', c), the trend weighed by this sample's (``adapt_trend``)."""
        g, k = self.fitted_gains(cp, c, t)
        return g, k * self.trend_weight

    def fitted_gains(self, cp: int, c: int, t: int) -> tuple[float, float]:
        """(g, k) for step t from real steps (c', c); the plain trend on the solver's axis outside the fit."""
        hit = self._gains.get((cp, c, t))
        if hit is not None:
            g, k = hit[0], hit[1]
        elif cp < 0:
            return 0.0, 0.0
        else:
            ax = self.profile["axis"]
            g, k = 0.0, (ax[t] - ax[c]) / max(ax[c] - ax[cp], 1e-30)
        cap = self.trend_cap
        return (g, k) if cap is None else (g, min(max(k, -cap), cap))

    def _build_plan(self) -> None:
        """The plan of this profile and budget rule (:func:`~etcdiff.policies.step.etc_plus.plan.plan_table`)."""
        self._seg = window_costs(self.profile, self._gains, self.num_steps, self.max_window, self.compute_last)
        pinned = self.profile.get(PINNED)  # calibration's fold fits, made to run the final fit's plan
        on_path = pinned is not None and int(self.profile["num_steps"]) == self.num_steps
        self._plan = plan_table(pinned_costs(self._seg, list(pinned)) if on_path else self._seg)

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

    def planned_steps(self, num_steps: int) -> list[int]:
        """The real steps of this budget's plan for a ``num_steps`` run, before any online change."""
        if self.calls is None:
            raise ValueError("etc-plus: planned_steps needs a call budget (calls=...); a tolerance plans online.")
        self.begin(num_steps)
        if self.schedule is not None:
            return list(self.schedule[0])
        steps, state, left = [0], (-1, 0), self.calls - 1
        while left > 0 and state[1] + 1 < num_steps:
            m = self._next(left, state) if self._value(left, state) < INF else state[1] + 1
            if m >= num_steps:
                break
            steps, state, left = steps + [m], (state[1], m), left - 1
        return steps

    def begin(self, num_steps: int) -> None:
        if isinstance(num_steps, int) and not isinstance(num_steps, bool):
            self._switch(profile_for_steps(self.calibrated, self._fitted, num_steps, self._run_sigmas,
                                           self.requested_calls, self.last_step, self._other_steps, self.tolerance))
            own = {"tolerance": self.tolerance, "trend_cap": self.requested_trend_cap,
                   "adapt_trend": self.requested_adapt_trend, "spike": self.requested_spike}
            given = [k for k, v in own.items() if v is not None]
            self.schedule = budget_schedule(self.profile, self.calls, self.compute_last, num_steps)
            if self.schedule is not None and given:  # settings of ETC+'s own plan run that plan
                warnings.warn(f"etc-plus: the profile serves calls={self.calls} with a searched schedule, but "
                              f"{', '.join(given)} is a setting of ETC+'s own plan, which runs instead; leave it "
                              "unset to run the schedule.", UserWarning, stacklevel=2)
                self.schedule = None
        super().begin(num_steps)
        if self._plan is None:
            self._build_plan()
            self._kept[id(self.profile)] = (self._gains, self._plan, self._seg)  # for this configuration's next runs
        if self.schedule is None and self.calls is not None and self._value(self.calls - 1, (-1, 0)) == INF:
            least = next((k + 1 for k in range(len(self._plan[0])) if self._value(k, (-1, 0)) < INF), num_steps)
            raise ValueError(
                f"etc-plus: calls={self.calls} cannot cover {num_steps} steps with windows of at most "
                f"{self.max_window} steps; give calls >= {least} or calibrate with a larger max_window."
            )

    def prepare(self, num_steps: int) -> None:
        """The calibration for ``num_steps`` (see :meth:`StepPolicy.prepare`) and, at its fitted step count, its
        plan, built once on this configuration. A resampled profile's plan is built by the first generation that
        needs it and kept (``_kept``, shared with the generations) for the next ones."""
        super().prepare(num_steps)
        if self.profile is self._fitted and int(self._fitted["num_steps"]) == num_steps and self._plan is None:
            self.num_steps = num_steps
            self._build_plan()

    def _switch(self, profile: dict[str, Any]) -> None:
        """Plan from ``profile`` (fitted, served or resampled); each keeps its own gains and plan."""
        if profile is self.profile:
            return
        self._kept[id(self.profile)] = (self._gains, self._plan, getattr(self, "_seg", None))
        self.profile = profile
        self.max_window = int(profile["max_window"])
        self.calls, self.compute_last = ranked_plan(profile, asked_budget(profile, self.requested_calls,
                                                                          self.tolerance), self.last_step)
        self._trend_settings(profile)
        kept = self._kept.get(id(profile))
        if kept is not None:
            self._gains, self._plan, self._seg = kept
            return
        self._gains = {(int(cp), int(c), int(t)): (float(g), float(k), float(e))
                       for cp, c, t, g, k, e in profile["triplets"]}
        self._plan = None

    def use_schedule(self, sigmas: torch.Tensor | None) -> None:
        self._run_sigmas = None if sigmas is None else [float(v) for v in torch.as_tensor(sigmas).flatten()]
        ref = self._fitted.get("sigmas")
        if sigmas is None or ref is None or len(self._run_sigmas) not in (len(ref), len(ref) + 1):
            return  # no schedule to compare, or another step count (planned from the resampled profile)
        got = [float(v) for v in torch.as_tensor(sigmas).flatten()[: len(ref)]]
        if len(got) == len(ref) and max(abs(a - b) for a, b in zip(got, ref)) > 1e-4:
            warnings.warn("etc-plus: the scheduler's sigmas differ from the calibration's (another shift or "
                          "scheduler?); the fitted gains and plan may not fit this run. Calibrate on this schedule.",
                          RuntimeWarning, stacklevel=3)

    def check_scheduler(self, scheduler: Any) -> None:
        """Refuse a scheduler of another family than the calibration's; warn on another order or prediction."""
        wrong = scheduler_mismatch(self.profile.get("scheduler"), scheduler)
        if wrong is None:
            return
        if wrong[0] == "family":
            raise ValueError(f"etc-plus: the profile was calibrated with {wrong[1]}: its plan does not carry over to "
                             "another solver. Calibrate etc-plus with the scheduler you sample with.")
        warnings.warn(f"etc-plus: the scheduler differs from the calibration's ({wrong[1]}); the plan may not fit "
                      "this run. Calibrate with this scheduler.", RuntimeWarning, stacklevel=3)

    # -- the run --------------------------------------------------------------------------------------------
    def new_stream(self) -> OutputStream:
        if self.schedule is not None:  # a searched schedule's predictor (:mod:`.schedules`)
            return ScheduleStream(self.schedule[1], lambda step: self._gaps[step])
        return ETCPlusStream(self)

    def reset_state(self) -> None:
        self.last_real: int | None = None
        self.real_count = 0
        self.next_real = 0
        self.spent = 0.0
        self.hardness = self._plan_hardness = 1.0
        self.trend_weight = 1.0  # adapt_trend: how much of the trend this sample's estimates carry
        self._poisoned = False
        self._state = (-1, 0)
        if self.schedule is not None:
            self._scheduled, self._gaps = set(self.schedule[0]), gaps(self.schedule[0], self.num_steps)

    def budget_refusal(self, step: int) -> str | None:
        if self.calls is not None and self.real_count >= self.calls:
            return f"calls={self.calls} are all spent."
        return None

    def _calls_left(self) -> int:
        return self.num_steps if self.calls is None else self.calls - self.real_count

    def should_compute(self, step: int, latents: torch.Tensor | None = None) -> bool:
        self._check_step(step)
        if self.real_count == 0:
            return True
        if self._calls_left() <= 0:
            return False
        if self.schedule is not None:
            return step in self._scheduled
        return step >= self.next_real or self._poisoned

    def predict(self, step: int) -> torch.Tensor | None:
        est = self.main_stream.predict(step) if self.schedule is not None else self.main_stream.estimate(step)
        return est if est is not None and is_finite(est) else None

    def observe(self, step: int, output: torch.Tensor, computed: bool) -> None:
        if self.schedule is not None:  # the searched schedule runs as searched: no online change
            self._log(step, computed, window=None if computed else self._gaps[step])
            self.real_count += int(computed)
            (self.main_stream.record if computed else self.main_stream.use)(step, output)
            return
        if not computed:
            self._log(step, False, window=step - (self.last_real or 0))
            return
        ratio = self._measure(step, output) if self.last_real is not None else None
        if self.adapt_trend and self.last_real is not None:
            self._weigh_trend(step, output, ratio)
        self.main_stream.record(step, output)
        prev_state = self._state
        self._state = (-1 if self.last_real is None else self.last_real, step)
        self.last_real = step
        self.real_count += 1
        if not is_finite(output) and not self._poisoned:
            self._poisoned = True  # every later step runs the model (within the budget): there is no trend to trust
            warnings.warn(f"etc-plus: the model output at step {step} has NaN or Inf values; etc-plus stops estimating "
                          "for the rest of this generation (the NaN comes from the model).", RuntimeWarning, stacklevel=3)
        prior_hardness = self.hardness
        if ratio is not None:
            r = min(max(ratio, 1.0 / MAX_RATIO), MAX_RATIO)
            self.hardness = 0.5 * self.hardness + 0.5 * r
        if prev_state[1] != step:  # the cost of the window just run, as estimated when it was planned
            self.spent += self._plan_hardness ** 2 * self._segment(prev_state, step)
        self.next_real = self._plan_next(step, ratio, prior_hardness)
        self._log(step, True, err=ratio, window=self.next_real - step - 1)

    def _weigh_trend(self, step: int, output: torch.Tensor, ratio: float | None) -> None:
        """After a spike, move the trend's weight halfway to the share the output carried; else halfway back to 1."""
        share = 1.0
        if ratio is not None and ratio > self.spike:
            share = self.main_stream.trend_share(*self.fitted_gains(*self._state, step), output)
            if share is None:
                return
        self.trend_weight = 0.5 * self.trend_weight + 0.5 * min(max(share, 0.0), 1.0)

    def _measure(self, step: int, output: torch.Tensor) -> float | None:
        """The sample's own error at a real step: max over the batch of RMS(real - estimate), over the calibrated."""
        hit = self._gains.get((*self._state, step))  # the state (c', c) the estimate for ``step`` was made from
        est = self.main_stream.estimate(step)
        if hit is None or est is None or est.shape != output.shape:
            return None
        floor = NOISE_FLOOR * self.profile["output_rms"][step]  # errors this small are noise, not a signal
        return float(item_rms(output - est).max()) / max(hit[2], floor, 1e-30)

    def _plan_next(self, step: int, ratio: float | None, prior_hardness: float = 1.0) -> int:
        n, state = self.num_steps, self._state
        if step + 1 >= n:
            return n
        left = self._calls_left()
        if left <= 0:
            return n
        budget = left - 1  # real steps after the next one
        if ratio is not None and ratio > self.spike:
            if self.calls is not None:  # a forced call comes out of the budget: spend it only where it pays
                return self._spike_next(step, ratio, budget, prior_hardness)
            if self._value(budget, (step, step + 1)) < INF:
                return step + 1  # online: this sample's error spiked, run the next step
        k_max = min(budget + 1, n)
        k = k_max
        if self.calls is None or self.tolerance is not None:
            tol = self.tolerance if self.tolerance is not None else float(self.profile["tolerance"])
            tol *= float(self.profile.get("tolerance_scale", 1.0))  # calibrated on held-out runs (etc_plus_refine)
            room = tol * tol - self.spent
            self._plan_hardness = self.hardness
            cp, c = state  # the fewest calls whose planned cost fits the room (costs fall as calls rise)
            fits = (self.hardness ** 2 * self._plan[0][: k_max + 1, c, c - cp if cp >= 0 else 0] <= room).nonzero()
            k = int(fits[0]) if len(fits) else k_max
        return self._next(k, state) if self._value(k, state) < INF else min(step + 1, n)

    def _spike_next(self, step: int, ratio: float, budget: int, prior_hardness: float) -> int:
        """The next real step after a spike under a call budget: one step of the plan, with the window ahead
        priced ``(ratio / prior_hardness)²`` times its calibrated cost (the sample's hardness before this
        measurement, at least 1).

        A sample that stays hard makes every later window cost more alike, which leaves the plan as it is; only how
        much more its estimates miss now than they did on average is a reason to shorten the next window. Forcing
        the next step on every spike spent the budget on consecutive calls where a sample stayed hard and left the
        run's last steps, which count most, to one long window (docs/etc-plus, "Spikes under a budget").
        """
        n, w = self.num_steps, self.max_window
        cp, c = self._state
        ms = torch.arange(step + 1, min(step + w, n) + 1)
        excess = min(ratio, MAX_RATIO) / max(prior_hardness, 1.0)
        first = self._seg[c, c - cp if cp >= 0 else 0, ms - c] * excess ** 2
        value = self._plan[0][min(budget, len(self._plan[0]) - 1)]
        inner = ms < n
        rest = torch.zeros_like(first)  # m = n: the window ends the run, nothing after it
        rest[inner] = value[ms[inner], (ms - c)[inner]]
        cost = first + rest
        best = int(cost.argmin())  # the earliest of equal costs
        return int(ms[best]) if bool(torch.isfinite(cost[best])) else min(step + 1, n)
