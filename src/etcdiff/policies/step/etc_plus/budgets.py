"""Which plan a call budget runs: the budgets and final-step rules that calibration measured on held-out runs.

ETC+'s plan ranks its options by predicted errors, and those can be wrong in order: a plan with one more call can
come out worse than the one before it, and on some models and solvers a plan that estimates the last step loses
several dB to one that computes it (the model's last call corrects what earlier estimates left; the planned
costs, measured with every later step real, cannot see that), while on others computing it costs as much. Where
calibration ran the plans (:mod:`etcdiff.calibration.etc_plus.refine`), the profile keeps the mean log relative
error of each budget's plan: ``budget_errors`` (the plan as it chooses) and ``budget_errors_last`` (the plan
that computes the last step), and the same per held-out run. ``ETCPlus(calls=B)`` runs, among the plans of at
most B calls, the one that came clearly closest (:func:`ranked_plan`).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

FREE, LAST = "budget_errors", "budget_errors_last"
LOGS = {FREE: "budget_logs", LAST: "budget_logs_last"}  # the same, per held-out run (paired across plans)


def clearly_lower(errors: Sequence[float], base: Sequence[float]) -> bool:
    """Whether ``errors`` (log errors, paired run by run with ``base``) are lower than ``base`` by more than one
    standard error of their paired differences (at least 3 runs): an option chosen on a few held-out runs must
    beat the one it replaces by more than their noise."""
    if len(errors) != len(base) or len(errors) < 3:
        return False
    diff = torch.tensor([a - b for a, b in zip(errors, base)], dtype=torch.float64)
    return bool(diff.mean() + diff.std() / math.sqrt(len(diff)) < 0)


def ranked_plan(profile: dict[str, Any], calls: int | None, last_step: bool | None = None) -> tuple[int | None, bool]:
    """``(budget, compute_last)`` to plan with under ``calls``, among the measured plans of at most ``calls``
    calls (only the free plans with ``last_step=False``, only those computing the last step with ``True``, both
    with ``None``); ``calls`` itself, unmeasured, when ``calls`` was not measured.

    Where the profile keeps each plan's errors per held-out run (``budget_logs``), the plans are walked from the
    fewest calls up and a plan replaces the one kept so far only where it is :func:`clearly_lower` on the same
    runs: a bigger budget whose plan measured about as close runs the smaller plan (fewer calls, and no drop the
    held-out runs cannot vouch for). Else the plan with the least mean error (the larger budget of equal ones,
    then the free plan)."""
    kinds = {False: (FREE,), True: (LAST,), None: (FREE, LAST)}[last_step]
    forced = bool(last_step)
    if calls is None:
        return None, forced
    options = sorted((int(k), kind == LAST, float(v), (profile.get(LOGS[kind]) or {}).get(k))
                     for kind in kinds for k, v in (profile.get(kind) or {}).items() if int(k) <= calls)
    if not any(k == calls for k, *_ in options):
        return calls, forced
    if all(logs is not None and len(logs) >= 3 for *_, logs in options):
        kept = options[0]
        for option in options[1:]:
            if clearly_lower(option[3], kept[3]):
                kept = option
        return kept[0], kept[1]
    k, last, _, _ = min(options, key=lambda o: (o[2], -o[0], o[1]))
    return k, last


__all__ = ["FREE", "LAST", "LOGS", "clearly_lower", "ranked_plan"]
