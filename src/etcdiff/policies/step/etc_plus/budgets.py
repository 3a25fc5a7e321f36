"""Which plan a call budget runs: the budgets and final-step rules that calibration measured on held-out runs.

ETC+'s plan ranks its options by predicted errors, and those can be wrong in order: a plan with one more call can
come out worse than the one before it, and on some models and solvers a plan that estimates the last step loses
several dB to one that computes it (the model's last call corrects what earlier estimates left; the planned
costs, measured with every later step real, cannot see that), while on others computing it costs as much. Where
calibration ran the plans (:mod:`etcdiff.calibration.etc_plus.refine`), the profile keeps the mean log relative
error of each budget's plan: ``budget_errors`` (the plan as it chooses) and ``budget_errors_last`` (the plan
that computes the last step). ``ETCPlus(calls=B)`` runs the one that came closest among those of at most B calls.
"""

from __future__ import annotations

from typing import Any

FREE, LAST = "budget_errors", "budget_errors_last"


def ranked_plan(profile: dict[str, Any], calls: int | None, last_step: bool | None = None) -> tuple[int | None, bool]:
    """``(budget, compute_last)`` to plan with under ``calls``: among the measured plans of at most ``calls`` calls
    (only the free plans with ``last_step=False``, only those computing the last step with ``True``, both with
    ``None``), the one with the least measured error (the larger budget of equal ones, then the free plan);
    ``calls`` itself, unmeasured, when ``calls`` was not measured."""
    kinds = {False: (FREE,), True: (LAST,), None: (FREE, LAST)}[last_step]
    forced = bool(last_step)
    if calls is None:
        return None, forced
    measured = [(float(v), -int(k), kind == LAST) for kind in kinds for k, v in (profile.get(kind) or {}).items()
                if int(k) <= calls]
    if not any(-k == calls for _, k, _ in measured):
        return calls, forced
    error, k, last = min(measured)
    return -k, last


__all__ = ["FREE", "LAST", "ranked_plan"]
