"""Choosing a fit's variant on held-out calibration runs.

Some choices of a fit cannot be judged from the recorded runs alone. ETC+ has two: whether its plan should weigh
each step by the reach that the probe runs measured (the model's own dynamics) or by the solver alone, and whether
its estimates use fitted gains (``corrections``: everywhere, only where they held out of sample, or nowhere). The
probes help a model that pulls its samples together and can mislead on one that does not; the fitted gains help
under Euler and cost 9-14 dB at 3x-4x under multistep solvers (UniPC, DPM-Solver++) on the digits model, whose
history re-uses every estimate, yet on the scenes model with DPM-Solver++ at 20 steps gains everywhere did best.
Which case a model and scheduler are shows only when the plans are run, so the choice is made the empirical way,
on calibration data only, for the settings jointly (every combination is a candidate) and with the scheduler the
calibration runs with:

1. split the calibration runs that carry no probe runs into folds of at most three (cross-validation: every such run
   is held out once, so the choice does not rest on whichever few runs came last);
2. for each fold, fit each candidate value on the other runs;
3. run each candidate's policy on the fold's runs at 2x, 3x, 4x and 5x fewer calls than steps;
4. score each value by how close its results lie to the held-out full runs (geometric mean of the RMS error over
   runs and budgets), and keep the first value (the default) unless another is :func:`clearly_lower` on the same
   runs (each run's log error averaged over the budgets, paired run by run); of several such, the lowest score.
   With fewer than three held-out runs, too few to weigh against their noise, the lowest score. A choice won by
   less than the held-out runs' noise does not move off the default: on gmm-flow with DPM-Solver++ at 20 steps a
   candidate that won by 0.007 in log error missed the tolerance's share (73 %);
5. fit the kept value on all runs;
6. where the method asks for it (``per_budget``, ETC+), keep per budget a candidate that beats the kept value at
   that budget alone by a wider margin (:func:`budget_choice`), fitted on all runs too: the fit that serves a
   budget can differ from the one that serves the others. On the scenes model with Euler at 20 steps, gains
   everywhere won over all budgets, while at 10 calls (2x) the default gains were 4.0 dB closer on the held-out
   runs (7 standard errors).

Where the held-out runs are replays (``replays=True``) that miss the real runs the model's pull was fitted on by
more than they are trusted with (:data:`~etcdiff.calibration.etc_plus.replay.TRUSTED_MISS`), their noise is not the
doubt: they are nearly deterministic, and what they miss is how the model answers a strayed sample. Then the choice
starts from the candidate the method names as the one replays judge best (``Method.replay_default``; ETC+: no
probes, gains only where they held out of sample), and a candidate must beat it, overall and per budget, by its
noise plus ``slack``, that miss (rms log error). On the scenes pipeline under Euler the replays ranked gains on
every step first by 0.25 in log error while missing real runs by 0.55; the real held-out runs ranked them last.

The choice and its scores are stored in the profile (``"selection"``), so a saved calibration says what it chose,
with each candidate's log error per held-out run averaged over the budgets (``"run_log_rel_error"``) and per budget
(``"budget_run_log_rel_error"``): a rule that chooses per budget can be judged from the profile alone.
A method may check more on the same held-out runs after the choice (``refine``: ETC+'s budgets and tolerance,
:mod:`etcdiff.calibration.etc_plus.refine`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from ..policies.step.base import StepPolicy
from ..policies.step.baselines import NoCache
from ..policies.step.etc_plus.budgets import BUDGET_FITS, clearly_lower
from ..policies.step.etc_plus.fit import item_rms
from .policy_runs import PolicyRunner

VALIDATION_RUNS = 3  # the most calibration runs held out at once (one fold)
BUDGET_MARGIN = 2.0  # standard errors by which a candidate must beat the chosen one at one budget to serve it
SPEEDUPS = (2, 3, 4, 5)  # the budgets the candidates are compared at: steps / speedup calls

Fit = Callable[..., dict[str, Any]]  # fit(records, **{setting: value}) -> fitted settings
Build = Callable[[dict[str, Any], int], StepPolicy]  # build(fitted, calls) -> a fresh policy


def held_out_runs(records: Sequence[Any], runs: int = VALIDATION_RUNS) -> list[list[int]]:
    """Folds of the records without probe runs: each a list of at most ``runs`` indices, as many as leave at least
    two records to fit on, together covering every unprobed record once (none when fewer than three records)."""
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


def candidate_settings(names: Sequence[str], value: Any) -> dict[str, Any]:
    """A candidate as keyword settings: ``{name: value}`` (one setting) or one entry per name (several)."""
    return {names[0]: value} if len(names) == 1 else dict(zip(names, value))


def one_setting_apart(names: Sequence[str], values: Sequence[Any], setting: str | None) -> dict[str, dict[str, Any]]:
    """The candidates that differ from the last one (the one that needs no probes) in ``setting`` alone, the last
    one included, as keyword settings by their value of ``setting`` (``str``); empty where ``setting`` is not left
    open or there is one candidate."""
    if setting not in names or len(values) < 2:
        return {}
    last = candidate_settings(names, values[-1])
    group = [candidate_settings(names, v) for v in values]
    return {str(c[setting]): c for c in group if all(n == setting or c[n] == last[n] for n in names)}


def offsets_by_value(names: Sequence[str], values: Sequence[Any], setting: str | None,
                     offsets: dict[str, float] | None) -> dict[Any, float] | None:
    """Each candidate's offset (``offsets``: by its value of ``setting``, as :func:`one_setting_apart` labels
    them; 0 where it has none), or None where none were measured."""
    if not offsets or setting not in names:
        return None
    return {v: float(offsets.get(str(candidate_settings(names, v)[setting]), 0.0)) for v in values}


def candidate_label(names: Sequence[str], value: Any) -> str:
    """How a candidate is named in the selection record: its value (one setting) or ``a=x,b=y`` (several)."""
    if len(names) == 1:
        return str(value)
    return ",".join(f"{n}={v}" for n, v in zip(names, value))


def log_rel_errors(result: torch.Tensor, reference: torch.Tensor) -> list[float]:
    """Per sample: log of RMS(result - reference) / RMS(reference) (floored at 1e-12)."""
    error = item_rms(result.detach().double() - reference)
    scale = item_rms(reference).clamp_min(1e-12)
    return [math.log(max(float(e / s), 1e-12)) for e, s in zip(error, scale)]


def fold_log_errors(run: PolicyRunner, policy: StepPolicy, fold: Sequence[int],
                    references: dict[int, torch.Tensor], offset: float = 0.0) -> list[float]:
    """:func:`log_rel_errors` of ``policy`` on each held-out run of ``fold``, in order (paired across policies),
    plus ``offset`` (a candidate's replays shifted by their measured miss: :func:`choose_fit`'s ``offsets``)."""
    return [v + offset for i in fold for v in log_rel_errors(run(policy, i), references[i])]


@dataclass
class RealRuns:
    """Where the held-out runs are replays: a runner that generates for real, and the runs it may check with their
    full-step results (a check a replay cannot be trusted with, such as a tolerance's share)."""

    run: PolicyRunner
    references: dict[int, torch.Tensor]


@dataclass
class HeldOut:
    """What a choice measured, for a method's own checks after it (:data:`Refine`): the folds, the full runs'
    results, the runner and builder, the chosen candidate's fits without each fold, and its log errors per budget."""

    folds: list[list[int]]
    references: dict[int, torch.Tensor]
    run: PolicyRunner
    build: Build
    fold_fits: list[dict[str, Any]]
    logs: dict[int, list[float]] = field(default_factory=dict)
    real: RealRuns | None = None
    variant_logs: dict[int, list[float]] = field(default_factory=dict)  # the same with ``variant`` (choose_fit)
    label: str | None = None  # the candidate these fits are of, where another budget serves another one
    by_budget: dict[int, "HeldOut"] = field(default_factory=dict)  # compared budget -> the candidate chosen there
    offset: float = 0.0  # added to every log error of a held-out run that is a replay (choose_fit's ``offsets``)
    probed: Callable[[], "HeldOut | None"] | None = None  # the runs the folds leave out (:func:`probed_held_out`)
    records: Sequence[Any] = ()  # the calibration runs (a fold's fit is on those its fold leaves out)

    def fold_records(self) -> list[list[Any]]:
        """Per fold, the calibration runs its fits were made on (every run but the fold's)."""
        return [[r for i, r in enumerate(self.records) if i not in fold] for fold in self.folds]

    def for_calls(self, calls: int) -> "HeldOut":
        """What serves a plan of ``calls`` calls: the candidate chosen per budget at the compared budget nearest
        ``calls`` (in log calls; the larger of two as near), or these fits where none was chosen there."""
        if not self.by_budget:
            return self
        nearest = min(self.by_budget, key=lambda c: (abs(math.log(c / calls)), -c))
        return self.by_budget[nearest]

    def measure(self, calls: int | None, fitted_for: Callable[[dict[str, Any]], dict[str, Any]] = lambda f: f,
                real: bool = False, counted: list[int] | None = None) -> list[tuple[int, float]]:
        """``(run, RMS error)`` of the fold fits' policies at ``calls`` (``None``: the policy's own tolerance
        mode) on every held-out run; ``fitted_for`` may adjust each fold fit first. ``real``: where the held-out
        runs are replays, on the runs of :attr:`real` only, run for real. ``counted`` gets each run's calls."""
        checked = self.real if real and self.real is not None else None
        out = []
        for fold, fitted in zip(self.folds, self.fold_fits):
            runs = [i for i in fold if checked is None or i in checked.references]
            if not runs:
                continue
            policy = self.build(fitted_for(fitted), calls)
            run, references = (self.run, self.references) if checked is None else (checked.run, checked.references)
            shift = math.exp(self.offset) if checked is None else 1.0
            for i in runs:
                error = item_rms(run(policy, i).detach().double() - references[i].double()).max()
                out.append((i, shift * float(error)))
                if counted is not None:
                    counted.append(len(policy.report().computed_steps))
        return out

    def log_errors(self, policies: Sequence[StepPolicy]) -> list[float]:
        """The log relative errors of each fold's policy on the fold's held-out runs (with :attr:`offset`)."""
        return [v for fold, policy in zip(self.folds, policies)
                for v in fold_log_errors(self.run, policy, fold, self.references, self.offset)]


Refine = Callable[[dict[str, Any], HeldOut], None]  # refine(fitted on all runs, what the choice measured)


def choose_fit(records: Sequence[Any], fit: Fit, build: Build, run: PolicyRunner, setting: str | Sequence[str],
               values: Sequence[Any], refine: Refine | None = None, real: RealRuns | None = None,
               variant: dict[str, Any] | None = None, per_budget: bool = False, slack: float = 0.0,
               offsets: dict[Any, float] | None = None) -> dict[str, Any]:
    """Fit with the value of ``setting`` among ``values`` whose policies come closest to the full runs on the
    held-out calibration runs (every fold of :func:`held_out_runs`); the first value when there are too few runs
    to hold any out. ``setting`` may name several settings at once: then each value is a tuple, one entry per
    name, and the combinations are judged together. ``variant``: run-time settings the policy may pick per budget
    from what calibration measured (ETC+'s ``last_step``); each candidate is also run with them, and judged per
    budget by the variant where it is :func:`clearly_lower` (a run whose ``planned_steps`` do not change is not run
    again). ``per_budget``: at each compared budget, a candidate clearly lower than the chosen one there by
    :data:`BUDGET_MARGIN` standard errors serves that budget (:func:`budget_choice`). ``slack``: a log error by
    which a candidate must also beat the first value (and, per budget, the chosen one), where the held-out runs are
    replays: how far they miss real runs (:func:`~etcdiff.calibration.etc_plus.replay.fit_feedback`).
    ``offsets``: value -> log error added to each of its held-out runs, where they are replays that miss that
    candidate's real runs by a known amount (:func:`~etcdiff.calibration.etc_plus.replay.candidate_offsets`).
    ``refine``, when given, runs after the choice with what it measured (a method's own checks on the same
    held-out runs)."""
    names = (setting,) if isinstance(setting, str) else tuple(setting)
    kwargs = (lambda v: candidate_settings(names, v))  # noqa: E731
    folds = held_out_runs(records)
    if not folds or (len(values) < 2 and refine is None):
        return fit(list(records), **kwargs(values[0]))
    budgets = validation_budgets(records[0].num_steps)
    references = {i: run(NoCache(), i).detach().double() for fold in folds for i in fold}
    logs: dict[Any, dict[int, list[float]]] = {value: {calls: [] for calls in budgets} for value in values}
    alt: dict[Any, dict[int, list[float]]] = {value: {calls: [] for calls in budgets} for value in values}
    fold_fits: dict[Any, list[dict[str, Any]]] = {value: [] for value in values}
    steps, infeasible, shift = records[0].num_steps, set(), offsets or {}
    for fold in folds:
        rest = [r for i, r in enumerate(records) if i not in fold]
        for value in values:
            fitted = fit(rest, **kwargs(value))
            fold_fits[value].append(fitted)
            for calls in budgets if len(values) > 1 else ():
                policy = build(fitted, calls)
                got = fold_log_errors(run, policy, fold, references, shift.get(value, 0.0))
                logs[value][calls].extend(got)
                if variant and (value, calls) not in infeasible:
                    try:
                        other = build({**fitted, **variant}, calls)
                        planned = _plan(other, steps)
                    except ValueError:  # the variant cannot plan this budget
                        infeasible.add((value, calls))
                        continue
                    same = planned is not None and planned == _plan(policy, steps)
                    alt[value][calls].extend(got if same else fold_log_errors(run, other, fold, references,
                                                                              shift.get(value, 0.0)))
    for value, calls in infeasible:
        alt[value][calls] = []
    judged = {value: [alt[value][c] if clearly_lower(alt[value][c], logs[value][c]) else logs[value][c]
                      for c in budgets] for value in values}
    scores = {value: _mean([_mean(got) for got in judged[value]]) for value in values}
    per_run = {value: _per_run(judged[value]) for value in values}
    best = _kept_choice(list(values), scores, per_run, slack)
    fitted = fit(list(records), **kwargs(best))
    profile = fitted.get("profile")
    if isinstance(profile, dict) and len(values) > 1:
        profile["selection"] = {"setting": names[0] if len(names) == 1 else list(names),
                                "chosen": best if len(names) == 1 else list(best), "budgets": budgets,
                                "held_out_runs": [i for fold in folds for i in fold], "folds": folds,
                                "mean_log_rel_error": {candidate_label(names, v): round(s, 4)
                                                       for v, s in scores.items()},
                                "run_log_rel_error": {candidate_label(names, v): [round(e, 4) for e in got]
                                                      for v, got in per_run.items()},
                                "budget_run_log_rel_error": {
                                    candidate_label(names, v): {str(c): [round(e, 4) for e in got]
                                                                for c, got in zip(budgets, judged[v])}
                                    for v in values}}
        if slack:
            profile["selection"]["slack"] = round(slack, 4)
        if shift:
            profile["selection"]["offsets"] = {candidate_label(names, v): round(shift.get(v, 0.0), 4) for v in values}
        note = _kept_note(list(values), best, scores, per_run, names, slack)
        if note:
            profile["selection"]["note"] = note
    served = budget_choice(best, budgets, judged, slack=slack) if per_budget and isinstance(profile, dict) else {}
    if served:
        others = {v: fit(list(records), **kwargs(v)).get("profile") or {} for v in set(served.values())}
        profile[BUDGET_FITS] = {
            "fits": {candidate_label(names, v): {k: x for k, x in got.items()
                                                 if k != "selection" and x != profile.get(k)}
                     for v, got in others.items()},
            "serve": {str(c): candidate_label(names, v) for c, v in sorted(served.items())}}
        profile["selection"]["per_budget"] = dict(profile[BUDGET_FITS]["serve"])
    if refine is not None:
        def view(value: Any) -> HeldOut:
            return HeldOut(folds, references, run, build, fold_fits[value], logs[value] if len(values) > 1 else {},
                           real, {c: v for c, v in alt[value].items() if v} if len(values) > 1 else {},
                           candidate_label(names, value), offset=shift.get(value, 0.0), records=list(records))

        held = view(best)
        held.by_budget = {c: view(served.get(c, best)) for c in budgets} if served else {}
        held.probed = lambda: probed_held_out(records, folds, lambda rest: fit(rest, **kwargs(best)), build, run)
        refine(fitted, held)
    return fitted


def probed_held_out(records: Sequence[Any], folds: list[list[int]], fit: Callable[[list[Any]], dict[str, Any]],
                    build: Build, run: PolicyRunner) -> HeldOut | None:
    """The calibration runs that ``folds`` leave out (the probed ones), each held out alone with ``fit`` on the
    other runs, where another run keeps probes for that fit; None where there is none. The choice leaves them out
    (its fits need their probes), but a share of runs within a target needs every run it can get: on the UNet
    model at 28 DDIM steps the 2 unprobed runs of its 5 ended within the tolerance and 2 of the 3 probed ones at
    2.3-3.2 times it, as 6 of 10 evaluation images did. Each costs a full run for its reference."""
    inside = {i for fold in folds for i in fold}
    probed = [i for i, r in enumerate(records) if i not in inside
              and any(getattr(o, "probes", None) for j, o in enumerate(records) if j != i)]
    if not probed:
        return None
    fits = [fit([r for j, r in enumerate(records) if j != i]) for i in probed]
    references = {i: run(NoCache(), i).detach().double() for i in probed}
    return HeldOut([[i] for i in probed], references, run, build, fits)


def budget_choice(best: Any, budgets: Sequence[int], judged: dict[Any, list[list[float]]],
                  margin: float = BUDGET_MARGIN, slack: float = 0.0) -> dict[int, Any]:
    """Per compared budget, the candidate that serves it in place of ``best``: the lowest-scored of those
    :func:`clearly_lower` than ``best`` there, run by run, by ``margin`` standard errors (by default
    :data:`BUDGET_MARGIN`, a stricter bar than the overall choice's: each budget is judged on its own runs, and a
    candidate compared at four budgets gets four chances to look lower by chance). ``judged[value][i]``: the log
    errors of ``value`` at ``budgets[i]``, per held-out run; ``slack`` as :func:`choose_fit`'s. Budgets where none
    is are left out."""
    served = {}
    for i, calls in enumerate(budgets):
        base = judged[best][i]
        beaters = [v for v in judged if v != best and clearly_lower(judged[v][i], base, margin, slack)]
        if beaters:
            served[calls] = min(beaters, key=lambda v: _mean(judged[v][i]))
    return served


def _per_run(judged: list[list[float]]) -> list[float]:
    """Each held-out run's log error averaged over the budgets (empty when the budgets ran different runs)."""
    if not judged or len({len(got) for got in judged}) != 1:
        return []
    return [sum(got[i] for got in judged) / len(judged) for i in range(len(judged[0]))]


def _kept_choice(values: list[Any], scores: dict[Any, float], per_run: dict[Any, list[float]],
                 slack: float = 0.0) -> Any:
    """The first value, unless others are :func:`clearly_lower` than it run by run: then the best-scored of those.
    With fewer than three held-out runs, too few to weigh a difference against their noise, the best-scored value
    (the first of equal ones), as :func:`~etcdiff.policies.step.etc_plus.budgets.ranked_plan` does without them."""
    first = values[0]
    if len(per_run[first]) < 3:
        return min(values, key=lambda v: scores[v])
    beaters = [v for v in values[1:] if clearly_lower(per_run[v], per_run[first], slack=slack)]
    return min(beaters, key=lambda v: scores[v]) if beaters else first


def _kept_note(values: list[Any], best: Any, scores: dict[Any, float], per_run: dict[Any, list[float]],
               names: Sequence[str], slack: float = 0.0) -> str | None:
    """Why the default was kept although another candidate scored lower (None when none did)."""
    runs = len(per_run[best])
    if runs < 3 and len(values) > 1:
        return (f"chosen by the lowest mean error alone: {runs} held-out run{'s' * (runs != 1)} are too few to weigh "
                "a difference against their noise (at least 3; calibrate on more prompts)")
    lower = [v for v in values[1:] if scores[v] < scores[best]]
    if best != values[0] or not lower:
        return None
    other = candidate_label(names, min(lower, key=lambda v: scores[v]))
    beyond = f" and the replays' miss of real runs ({slack:.2f})" if slack else ""
    return f"kept the default: {other} scored lower, but not beyond the held-out runs' noise{beyond}"


def _plan(policy: StepPolicy, steps: int) -> list[int] | None:
    """The policy's planned real steps, where it can say them before running (``planned_steps``)."""
    planned = getattr(policy, "planned_steps", None)
    return planned(steps) if callable(planned) else None


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.inf


__all__ = ["BUDGET_MARGIN", "SPEEDUPS", "VALIDATION_RUNS", "HeldOut", "RealRuns", "Refine", "budget_choice",
           "candidate_label", "candidate_settings", "choose_fit", "clearly_lower", "fold_log_errors", "held_out_runs",
           "log_rel_errors", "offsets_by_value", "one_setting_apart", "probed_held_out", "validation_budgets",
           "validation_generations"]
