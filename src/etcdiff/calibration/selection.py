"""Choosing a fit's variant on held-out calibration runs.

Some choices of a fit cannot be judged from the recorded runs alone. ETC+'s is whether its plan should weigh each
step by the reach that the probe runs measured (the model's own dynamics) or by the solver alone: the probes
help a model that pulls its samples together and can mislead on one that does not, and which one a model is
shows only when the plans are run. So the choice is made the empirical way, on calibration data only:

1. split the calibration runs that carry no probes into folds of at most three (cross-validation: every such run
   is held out once, so the choice does not rest on whichever few runs came last);
2. for each fold, fit each candidate value on the other runs;
3. run each candidate's policy on the fold's runs at 2x, 3x, 4x and 5x fewer calls than steps;
4. keep the value whose results lie closest to the held-out full runs (geometric mean of the RMS error over
   runs and budgets; the first candidate wins a tie), and fit it on all runs.

The choice and its scores are stored in the profile (``"selection"``), so a saved calibration says what it chose.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

from ..policies.step.base import StepPolicy
from ..policies.step.baselines import NoCache
from ..policies.step.etc_plus_fit import item_rms
from .policy_runs import PolicyRunner

VALIDATION_RUNS = 3  # the most calibration runs held out at once (one fold)
SPEEDUPS = (2, 3, 4, 5)  # the budgets the candidates are compared at: steps / speedup calls

Fit = Callable[..., dict[str, Any]]  # fit(records, **{setting: value}) -> fitted settings
Build = Callable[[dict[str, Any], int], StepPolicy]  # build(fitted, calls) -> a fresh policy


def held_out_runs(records: Sequence[Any], runs: int = VALIDATION_RUNS) -> list[list[int]]:
    """Folds of the records without probes: each a list of at most ``runs`` indices, as many as leave at least two
    records to fit on, together covering every unprobed record once (none when fewer than three records)."""
    size = min(runs, len(records) - 2)
    free = [i for i, r in enumerate(records) if not getattr(r, "probes", None)]
    if size <= 0 or not free:
        return []
    folds = -(-len(free) // size)
    return [free[len(free) * f // folds: len(free) * (f + 1) // folds] for f in range(folds)]


def validation_budgets(num_steps: int) -> list[int]:
    """The call budgets of the comparison: ``num_steps / k`` for k in :data:`SPEEDUPS`, at least 2 calls."""
    return sorted({max(2, round(num_steps / k)) for k in SPEEDUPS})


def validation_generations(prompts: int, probed: int, values: int, steps: int) -> int:
    """Generations a choice among ``values`` candidates costs (for progress bars): references and candidates."""
    held = max(0, prompts - probed) if prompts > 2 else 0
    if values < 2:
        return 0
    return held * (1 + values * len(validation_budgets(steps)))


def choose_fit(records: Sequence[Any], fit: Fit, build: Build, run: PolicyRunner, setting: str,
               values: Sequence[Any]) -> dict[str, Any]:
    """Fit with the value of ``setting`` among ``values`` whose policies come closest to the full runs on the
    held-out calibration runs (every fold of :func:`held_out_runs`); the first value when there are too few runs
    to hold any out."""
    folds = held_out_runs(records)
    if len(values) < 2 or not folds:
        return fit(list(records), **{setting: values[0]})
    budgets = validation_budgets(records[0].num_steps)
    references = {i: run(NoCache(), i).detach().double() for fold in folds for i in fold}
    logs: dict[Any, list[float]] = {value: [] for value in values}
    for fold in folds:
        rest = [r for i, r in enumerate(records) if i not in fold]
        for value in values:
            fitted = fit(rest, **{setting: value})
            for calls in budgets:
                for i in fold:
                    error = item_rms(run(build(fitted, calls), i).detach().double() - references[i])
                    scale = item_rms(references[i]).clamp_min(1e-12)
                    logs[value].extend(math.log(max(float(e / s), 1e-12)) for e, s in zip(error, scale))
    scores = {value: sum(v) / len(v) for value, v in logs.items()}
    best = min(values, key=lambda v: scores[v])  # min keeps the first of equal scores
    fitted = fit(list(records), **{setting: best})
    profile = fitted.get("profile")
    if isinstance(profile, dict):
        profile["selection"] = {"setting": setting, "chosen": best, "budgets": budgets,
                                "held_out_runs": [i for fold in folds for i in fold], "folds": folds,
                                "mean_log_rel_error": {str(v): round(s, 4) for v, s in scores.items()}}
    return fitted


__all__ = ["SPEEDUPS", "VALIDATION_RUNS", "choose_fit", "held_out_runs", "validation_budgets",
           "validation_generations"]
