"""ETC+'s opt-in searched schedules: a budget served by a lexicographic-minimax schedule with its own predictor."""

import math

import pytest
import torch

import etcdiff
from etcdiff import closed_form as hm
from etcdiff.calibration.etc_plus.schedules import BARS, measure_schedules, schedule_choice
from etcdiff.calibration.runs import record_denoiser_runs
from etcdiff.calibration.selection import HeldOut
from etcdiff.policies.step.etc_plus import ETCPlus, fit_etc_plus
from etcdiff.policies.step.etc_plus.schedules import (SCHEDULE_PREDICTORS, SCHEDULES, budget_schedule, gaps,
                                                      schedule_entry)
from etcdiff.policies.step.lemica import LeMiCa, fit_lemica

STEPS = 20
SCHEDULE = [0, 1, 3, 8, 14, 19]  # six calls, a gap of 5 (longer than the profile's max_window of 4)


@pytest.fixture(scope="module")
def flow():
    model, sched, _ = hm.gmm_flow()
    noises = [torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(s)) for s in (100, 101, 102)]
    kwargs = [{"labels": [0, 1]}, {"labels": [2, 3]}, {"labels": [4, 5]}]
    runs = record_denoiser_runs(model, sched, noises, STEPS, kwargs)
    return model, sched, runs, fit_etc_plus(runs, max_window=4)


def _served(profile, predictor, calls=6):
    return {**profile, SCHEDULES: schedule_entry(STEPS, {calls: (SCHEDULE, predictor)})}


@pytest.mark.parametrize("predictor", ["etc", "linear", "reuse"])
def test_a_served_budget_runs_the_schedule_exactly_as_lemica_does(flow, predictor):
    model, sched, _, prof = flow
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(5))
    policy = ETCPlus(_served(prof, predictor), calls=6)
    assert policy.planned_steps(STEPS) == SCHEDULE
    got = etcdiff.sample(model, sched, x, STEPS, policy, labels=[2, 7])
    assert list(policy.report().computed_steps) == SCHEDULE
    same = etcdiff.sample(model, sched, x, STEPS, LeMiCa(predictor=predictor, computed=SCHEDULE), labels=[2, 7])
    assert torch.equal(got, same)
    own = etcdiff.sample(model, sched, x, STEPS, ETCPlus(prof, calls=6), labels=[2, 7])
    assert not torch.equal(got, own)  # the schedule, not ETC+'s plan, ran


def test_the_schedule_serves_only_its_budget_step_count_and_the_plan_it_replaced(flow):
    model, sched, _, prof = flow
    served = _served(prof, "etc")
    own = ETCPlus(prof, calls=7).planned_steps(STEPS)
    assert ETCPlus(served, calls=7).planned_steps(STEPS) == own  # another budget: ETC+'s plan
    assert ETCPlus(served, calls=6, last_step=True).planned_steps(STEPS) == \
        ETCPlus(prof, calls=6, last_step=True).planned_steps(STEPS)  # the plan forced to compute the last step
    for setting in ({"tolerance": 0.05}, {"spike": 3.0}, {"trend_cap": 0.5}, {"adapt_trend": True}):
        policy = ETCPlus(served, calls=6, **setting)  # a setting of ETC+'s own plan runs that plan, and says so
        with pytest.warns(UserWarning, match=f"serves calls=6 with a searched schedule, but {next(iter(setting))} "
                                             "is a setting of ETC\\+'s own plan"):
            policy.begin(STEPS)
        assert policy.schedule is None, setting
    x = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(6))
    policy = ETCPlus(_served(prof, "etc", calls=8), calls=8)
    assert policy.planned_steps(STEPS) == SCHEDULE
    with pytest.warns(UserWarning, match="resampled"):  # 28 steps: the 20-step schedule does not apply
        etcdiff.sample(model, sched, x, 28, policy, labels=[1])
    assert policy.schedule is None and len(policy.report().computed_steps) == 8


def test_a_bigger_budget_replaces_a_kept_schedule_where_its_plan_measured_closer_on_average(flow):
    from etcdiff.policies.step.etc_plus.budgets import ranked_plan

    _, _, _, prof = flow
    logs = {"5": [-3.0, -3.1, -2.9, -3.0], "6": [-3.6, -3.5, -3.7, -3.6],  # 6 (the schedule): clearly below 5
            "7": [-3.8, -3.5, -3.9, -3.5], "8": [-3.5, -3.8, -3.6, -3.7]}  # 7 and 8: lower on average, not clearly
    means = {k: sum(v) / len(v) for k, v in logs.items()}
    plain = {**prof, "budget_errors": means, "budget_logs": logs}
    served = {**_served(prof, "etc"), "budget_errors": means, "budget_logs": logs}
    # ETC+'s own plans: the walk keeps the 6-call plan, which 7 and 8 do not clearly beat
    assert [ranked_plan(plain, b)[0] for b in (5, 6, 7, 8)] == [5, 6, 6, 6]
    # a schedule at 6 won its budget on these runs among several predictors: 7's plan, lower on average, replaces
    # it, and 8 must then clearly beat 7 (it does not)
    assert [ranked_plan(served, b)[0] for b in (5, 6, 7, 8)] == [5, 6, 7, 7]
    assert ETCPlus(served, calls=8).calls == 7 and ETCPlus(served, calls=6).planned_steps(STEPS) == SCHEDULE
    above = {**logs, "7": [-3.4, -3.5, -3.5, -3.4], "8": [-3.5, -3.4, -3.6, -3.5]}  # above the schedule on average
    kept = {**served, "budget_errors": {k: sum(v) / 4 for k, v in above.items()}, "budget_logs": above}
    assert [ranked_plan(kept, b)[0] for b in (6, 7, 8)] == [6, 6, 6]


def test_a_malformed_schedule_is_refused_in_one_line(flow):
    prof = flow[3]
    for steps, predictor, match in (([1, 5, 19], "etc", "increasing steps from 0"),
                                    ([0, 5, 5, 19], "etc", "increasing steps from 0"),
                                    ([0, 5, 20], "etc", "increasing steps from 0"),
                                    ([0, 5, 19], "nearest", "unknown predictor")):
        with pytest.raises(ValueError, match=match):
            budget_schedule({SCHEDULES: schedule_entry(STEPS, {3: (steps, predictor)})}, 3, False, STEPS)
    with pytest.raises(ValueError, match="within 20 steps and 2 calls"):
        ETCPlus({**prof, SCHEDULES: schedule_entry(STEPS, {2: ([0, 9, 19], "etc")})}, calls=2).begin(STEPS)
    assert gaps([0, 3, 4], 7) == [0, 2, 2, 0, 0, 2, 2]


def _held_out(runs, prof, lower_with_schedule):
    """A HeldOut over the recorded runs whose 'runner' puts a searched schedule's runs 5x closer than ETC+'s plan
    (``lower_with_schedule``) or 1.6x farther."""
    refs = {i: torch.ones(1, 4) for i in range(len(runs))}

    def run(policy, i):  # only the schedules run here: ETC+'s plans were measured before (``free``, ``last``)
        policy.begin(STEPS)
        assert policy.schedule is not None
        return refs[i] + (0.01 if lower_with_schedule else 0.08) * (1 + 0.1 * i)

    fits = [{"profile": prof}] * 3
    return HeldOut([[0], [1], [2]], refs, run, lambda fit, calls: ETCPlus(fit["profile"], calls=calls), fits,
                   records=runs)


@pytest.mark.parametrize("wins", [True, False])
def test_calibration_keeps_a_schedule_only_where_it_is_clearly_closer(flow, wins):
    _, _, runs, prof = flow
    fitted = {"profile": dict(prof)}
    plan = [math.log(0.05 * (1 + 0.1 * i)) for i in range(3)]
    free, last = {"6": list(plan), "7": list(plan)}, {"7": list(plan)}
    check = measure_schedules(fitted, _held_out(runs, prof, wins), free, last)
    assert set(check) == {"6", "7"}
    if wins:
        whole = fit_lemica(runs, ["etc"])
        plans = fitted["profile"][SCHEDULES]["plans"]
        assert {c: p["steps"] for c, p in plans.items()} == {"6": whole.schedule(6, "etc"),
                                                              "7": whole.schedule(7, "etc")}
        assert check["6"]["kept"] == "etc" and free["6"] != plan and "7" not in last
    else:
        assert SCHEDULES not in fitted["profile"] and free["6"] == plan and last["7"] == plan
        assert check["6"]["kept"] is None and check["6"]["etc"] > check["6"]["plan"]
    logs = check["6"]["logs"]  # the per-run errors behind each mean, paired run by run
    assert set(logs) == {"plan", "etc", "linear", "reuse"} and all(len(v) == 3 for v in logs.values())
    assert logs["plan"] == [round(x, 4) for x in plan]
    assert all(abs(sum(v) / 3 - check["6"][k]) < 1e-3 for k, v in logs.items())


def test_an_extrapolating_schedule_serves_where_closer_on_average_reuse_only_where_clearly_closer():
    assert set(BARS) == set(SCHEDULE_PREDICTORS)
    base = [-3.0, -3.0, -3.0, -3.0]
    noisy = [-3.6, -2.8, -3.5, -2.9]  # 0.2 lower on average, within two standard errors of the paired differences
    clear = [-3.3, -3.35, -3.3, -3.35]  # 0.325 lower in every run
    far = [-2.0] * 4
    assert schedule_choice({"etc": noisy, "linear": far, "reuse": far}, base) == "etc"
    assert schedule_choice({"etc": far, "linear": noisy, "reuse": far}, base) == "linear"
    assert schedule_choice({"etc": far, "linear": far, "reuse": noisy}, base) is None  # reuse: not by 2 SE
    assert schedule_choice({"etc": far, "linear": far, "reuse": clear}, base) == "reuse"
    assert schedule_choice({"etc": noisy, "linear": far, "reuse": clear}, base) == "reuse"  # the lower mean
    assert schedule_choice({"etc": [x - 0.2 for x in noisy], "linear": far, "reuse": clear}, base) == "etc"
    assert schedule_choice({"etc": base, "linear": far, "reuse": far}, base) is None  # level: the plan stays
    assert schedule_choice({"etc": noisy[:2], "linear": far[:2], "reuse": far[:2]}, base[:2]) is None  # < 3 runs


def test_searched_schedules_is_a_checked_fit_setting_and_is_counted(flow):
    from etcdiff.catalog import _probe_runs

    runs = flow[2]
    assert fit_etc_plus(runs, searched_schedules=True)["searched_schedules"] is True
    assert "searched_schedules" not in fit_etc_plus(runs)
    with pytest.raises(ValueError, match="searched_schedules must be true or false"):
        fit_etc_plus(runs, searched_schedules="yes")
    more = _probe_runs(10, 28, searched_schedules=True) - _probe_runs(10, 28)
    assert more == 7 * 9 * 3  # 7 held-out runs x budgets 6..14 x three predictors


def test_the_cli_says_which_budgets_a_schedule_serves():
    from etcdiff.cli.calibrate import _schedules_kept

    profile = {SCHEDULES: schedule_entry(28, {9: ([0, 3], "etc"), 10: ([0, 3], "etc"), 14: ([0, 3], "linear"),
                                              16: ([0, 3], "reuse")}),
               "schedule_check": {"9": {"plan": -3.84, "etc": -4.31, "linear": -4.0, "kept": "etc"}}}
    said = _schedules_kept(profile)
    assert "calls 9-10 with ETC's trend; calls 14 with the linear predictor; calls 16 with the last output reused" \
        in said and "-3.84" in said
    none = _schedules_kept({"schedule_check": {"9": {"kept": None}}})
    assert none.startswith("none kept") and "of the 1 measured" in none
