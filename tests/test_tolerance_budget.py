"""ETC+'s tolerance mode served by a budget where calibration found no tolerance scale that held."""

from types import SimpleNamespace

import pytest
import torch

import etcdiff
from etcdiff import closed_form as hm
from etcdiff.calibration.etc_plus.tolerance import check_tolerance, held_tolerance, tolerance_budget, unmet_tolerance
from etcdiff.calibration.runs import record_denoiser_runs
from etcdiff.calibration.selection import HeldOut
from etcdiff.policies import NoCache
from etcdiff.policies.step.etc_plus import ETCPlus, fit_etc_plus
from etcdiff.policies.step.etc_plus.budgets import TOLERANCE_CALLS, asked_budget

STEPS = 20


class _Ends(NoCache):
    """A policy whose run ends ``error`` away from the full run (RMS), having made ``calls`` calls."""

    def __init__(self, error, calls=None):
        super().__init__()
        self.error, self.calls = error, calls

    def report(self):
        return SimpleNamespace(computed_steps=list(range(self.calls or 0)))


def _held(error_at, mode_calls=None):
    """Held-out runs where a plan of ``calls`` calls ends ``error_at(calls)`` from the full run (target 1.0); the
    tolerance mode (``calls=None``) makes ``mode_calls`` calls."""
    refs = {i: torch.ones(1, 4) for i in range(4)}
    build = lambda fitted, calls: _Ends(error_at(calls), mode_calls if calls is None else calls)  # noqa: E731
    return HeldOut([[0, 1], [2, 3]], refs, lambda p, i: refs[i] + p.error, build,
                   [{"profile": {"tolerance": 1.0}}] * 2)


def test_the_fewest_calls_that_hold_the_target_are_found_by_bisection_from_the_largest_budget():
    calls, tried = tolerance_budget(_held(lambda c: 8.0 / c), [4, 5, 6, 7, 8, 9, 10], {})
    assert calls == 8  # 8 / 8 is within the target, 8 / 7 beyond it
    assert [t["calls"] for t in tried] == [10, 7, 9, 8] and tried[0]["runs"] == [10, False]
    assert [t["within"] for t in tried] == [1.0, 0.0, 1.0, 1.0]
    assert tried[1]["edge"] == pytest.approx(8 / 7, abs=1e-4)
    none, tried = tolerance_budget(_held(lambda c: 2.0), [4, 5, 6], {})
    assert none is None and [t["calls"] for t in tried] == [6]  # the largest budget misses: nothing to serve


def test_each_budget_is_checked_with_the_plan_it_runs():
    """A budget whose ranked plan is a smaller one's (the ladder measured it closer) is checked with that plan."""
    made = []
    profile = {"budget_errors": {"7": -5.0, "8": -4.0, "9": -4.5, "10": -6.0}}  # 8 and 9 calls run the 7-call plan
    calls, tried = tolerance_budget(_held(lambda c: made.append(c) or 8.0 / c), [7, 8, 9, 10], profile)
    assert calls == 10 and [(t["calls"], t["runs"]) for t in tried] == [(10, [10, False]), (8, [7, False]),
                                                                        (9, [7, False])]
    assert made == [10, 10, 7, 7]  # two folds each; the 7-call plan measured once


def test_where_a_scale_held_the_tolerance_mode_plans_online_even_where_a_cheaper_budget_held():
    """Serving a budget of fewer calls that also held on the calibration runs failed on the held-out UNet, so a
    scale that held keeps the tolerance mode: no budget is tried. Each pass records the calls its runs made."""
    profile = {"tolerance": 1.0, "num_steps": 20}
    held = _held(lambda c: 0.5 if c is None else 3.0 / c, mode_calls=10)  # 6-10 calls would hold too
    assert check_tolerance(profile, held, list(range(4, 11))) is None
    check = profile["tolerance_check"]
    assert check["met"] and profile["tolerance_scale"] == 1.0 and check["passes"][0]["calls"] == 10
    assert "tolerance_calls" not in profile and "budgets" not in check
    assert held_tolerance(profile).startswith("tolerance mode: planned at 1 times the tolerance")
    # no scale held: the fewest calls that hold serve it
    unmet = {"tolerance": 1.0, "num_steps": 20}
    note = check_tolerance(unmet, _held(lambda c: 2.0 if c is None else 3.0 / c, mode_calls=10), list(range(4, 11)))
    assert unmet["tolerance_calls"] == 4 and "so it runs the 4-call plan instead" in note


def test_the_note_says_which_budget_serves_the_tolerance_mode():
    check = {"share": 0.95, "runs": 20, "met": False, "passes": [{"scale": 0.05, "within": 0.9, "edge": 1.03}],
             "budgets": [{"calls": 10, "within": 1.0, "edge": 0.2}, {"calls": 5, "within": 0.95, "edge": 0.9}]}
    note = unmet_tolerance(check, 5)
    assert note.startswith("the tolerance mode ended within its target on 90 % of the 20 held-out calibration runs")
    assert "so it runs the 5-call plan instead, under which 95 % ended within the target" in note
    assert "calibrate on more prompts" in unmet_tolerance(check)  # no budget held either
    assert held_tolerance({"tolerance_check": check, "tolerance_calls": 5, "tolerance": 0.0099}) == (
        "tolerance mode: runs the 5-call plan, under which 95 % of 20 held-out calibration runs ended within the "
        "target (RMS 0.0099; no planning scale held it)")
    assert held_tolerance({"tolerance_check": check, "tolerance": 0.0099, "tolerance_scale": 0.05}) is None


@pytest.fixture(scope="module")
def flow():
    model, sched, _ = hm.gmm_flow()
    noises = [torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(s)) for s in (100, 101, 102)]
    runs = record_denoiser_runs(model, sched, noises, STEPS, [{"labels": [0, 1]}, {"labels": [2, 3]},
                                                                {"labels": [4, 5]}])
    return model, sched, fit_etc_plus(runs)


def test_the_default_tolerance_runs_the_budget_calibration_found_to_hold_it(flow):
    model, sched, prof = flow
    served = {**prof, TOLERANCE_CALLS: 6}
    assert asked_budget(served, None, None) == 6 and asked_budget(prof, None, None) is None
    policy = ETCPlus(served)
    assert policy.calls == 6 and policy.params()["tolerance"] == prof["tolerance"] and policy.params()["calls"] is None
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(7))
    got = etcdiff.sample(model, sched, x, STEPS, policy, labels=[2, 7])
    assert torch.equal(got, etcdiff.sample(model, sched, x, STEPS, ETCPlus(prof, calls=6), labels=[2, 7]))
    assert len(policy.report().computed_steps) <= 6
    assert ETCPlus(served, tolerance=0.01).calls is None  # the user's own tolerance: the tolerance mode
    assert ETCPlus(served, calls=9).calls == 9  # the user's budget
    own = ETCPlus(prof)
    assert own.calls is None  # a profile whose tolerance scale held plans online
    for bad in (0, 2.5, "6", True):
        with pytest.raises(ValueError, match=rf"the profile's tolerance_calls must be a positive number of calls, "
                                             rf"got {bad!r}; calibrate again"):
            ETCPlus({**prof, TOLERANCE_CALLS: bad})


def test_at_another_step_count_the_tolerance_mode_plans_online(flow):
    """The budget was checked at the profile's step count only: a run at another one is planned from the profile
    resampled there, in tolerance mode."""
    model, sched, prof = flow
    policy = ETCPlus({**prof, TOLERANCE_CALLS: 6})
    x = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(8))
    with pytest.warns(UserWarning, match="resampled on the sigma axis"):
        etcdiff.sample(model, sched, x, 28, policy, labels=[3])
    assert policy.calls is None
    etcdiff.sample(model, sched, x, STEPS, policy, labels=[3])
    assert policy.calls == 6  # back at its own step count: the budget


def test_a_served_step_count_runs_its_tolerance_budget_with_the_fit_chosen_for_that_budget(flow):
    """A calibration served at another step count (``served_steps``) whose tolerance mode runs a budget
    (``tolerance_calls``) plans that budget from the candidate fit chosen for it, as ``calls=B`` does."""
    model, sched, prof = flow
    noises = [torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(s)) for s in (100, 101, 102)]
    runs = record_denoiser_runs(model, sched, noises, 15, [{"labels": [0, 1]}, {"labels": [2, 3]},
                                                           {"labels": [4, 5]}])
    own, plain = fit_etc_plus(runs), fit_etc_plus(runs, corrections=False)
    assert own["corrections"] == "auto"
    served = {**own, "budget_fits": {"fits": {"plain": {k: v for k, v in plain.items() if v != own[k]}},
                                     "serve": {"6": "plain"}}, TOLERANCE_CALLS: 6}
    x = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(9))

    def at_15(policy):
        got = etcdiff.sample(model, sched, x, 15, policy, labels=[3])
        return got, policy.calls, policy.profile["corrections"]

    got, calls, corrections = at_15(ETCPlus({**prof, "served_steps": {"15": served}}))
    want = at_15(ETCPlus(served, calls=6))
    assert (calls, corrections) == (6, False) == want[1:] and torch.equal(got, want[0])
    # the user's tolerance plans online with the served calibration's own fit
    assert at_15(ETCPlus({**prof, "served_steps": {"15": served}}, tolerance=0.01))[1:] == (None, "auto")
