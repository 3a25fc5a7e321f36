"""Choosing a fit's variant on held-out calibration runs.

Some choices of a fit cannot be judged from the recorded runs alone. ETC+'s is whether its plan should weigh each
step by the reach that the probe runs measured (the model's own dynamics) or by the solver alone: the probes
help a model that pulls its samples together and can mislead on one that does not, and which one a model is
shows only when the plans are run. So the choice is made the empirical way, on calibration data only:

1. hold out the last few calibration runs that carry no probes;
2. fit each candidate value on the other runs;
3. run each candidate's policy on the held-out runs at 2x, 3x, 4x and 5x fewer calls than steps;
4. keep the value whose results lie closest to the held-out full runs (geometric mean of the RMS error over
   runs and budgets; the first candidate wins a tie), and fit it on all runs.

The choice and its scores are stored in the profile (``"selection"``), so a saved calibration says what it chose.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

from ..policies.base import StepPolicy
from ..policies.baselines import NoCache
from ..policies.etc_plus_fit import item_rms
from .policy_runs import Run

VALIDATION_RUNS = 3  # held-out calibration runs
SPEEDUPS = (2, 3, 4, 5)  # the budgets the candidates are compared at: steps / speedup calls

Fit = Callable[..., dict[str, Any]]  # fit(records, **{setting: value}) -> fitted settings
Build = Callable[[dict[str, Any], int], StepPolicy]  # build(fitted, calls) -> a fresh policy


def held_out_runs(records: Sequence[Any], runs: int = VALIDATION_RUNS) -> list[int]:
    """Indices of the last ``runs`` records without probes, as many as leave at least two records to fit on."""
    k = min(runs, len(records) - 2)
    return [i for i, r in enumerate(records) if not getattr(r, "probes", None)][-k:] if k > 0 else []


def validation_budgets(num_steps: int) -> list[int]:
    """The call budgets of the comparison: ``num_steps / k`` for k in :data:`SPEEDUPS`, at least 2 calls."""
    return sorted({max(2, round(num_steps / k)) for k in SPEEDUPS})


def validation_generations(prompts: int, probed: int, values: int, steps: int) -> int:
    """Generations a choice among ``values`` candidates costs (for progress bars): references and candidates."""
    held = max(0, min(VALIDATION_RUNS, prompts - 2, prompts - probed))
    if values < 2:
        return 0
    return held * (1 + values * len(validation_budgets(steps)))


def choose_fit(records: Sequence[Any], fit: Fit, build: Build, run: Run, setting: str,
               values: Sequence[Any]) -> dict[str, Any]:
    """Fit with the value of ``setting`` among ``values`` whose policies come closest to the full runs on the
    held-out calibration runs; the first value when there are too few runs to hold any out."""
    held = held_out_runs(records)
    if len(values) < 2 or not held:
        return fit(list(records), **{setting: values[0]})
    rest = [r for i, r in enumerate(records) if i not in held]
    budgets = validation_budgets(records[0].num_steps)
    references = {i: run(NoCache(), i).detach().double() for i in held}
    scores: dict[Any, float] = {}
    for value in values:
        fitted = fit(rest, **{setting: value})
        logs = []
        for calls in budgets:
            for i in held:
                error = item_rms(run(build(fitted, calls), i).detach().double() - references[i])
                scale = item_rms(references[i]).clamp_min(1e-12)
                logs.extend(math.log(max(float(e / s), 1e-12)) for e, s in zip(error, scale))
        scores[value] = sum(logs) / len(logs)
    best = min(values, key=lambda v: scores[v])  # min keeps the first of equal scores
    fitted = fit(list(records), **{setting: best})
    profile = fitted.get("profile")
    if isinstance(profile, dict):
        profile["selection"] = {"setting": setting, "chosen": best, "budgets": budgets, "held_out_runs": held,
                                "mean_log_rel_error": {str(v): round(s, 4) for v, s in scores.items()}}
    return fitted


__all__ = ["SPEEDUPS", "VALIDATION_RUNS", "choose_fit", "held_out_runs", "validation_budgets",
           "validation_generations"]
