"""ETC+'s opt-in ``final_plans``: the budget ladder measured on the plans the profile itself makes."""

import math

import pytest
import torch

import etcdiff
from etcdiff import closed_form as hm
from etcdiff.calibration.runs import record_denoiser_runs
from etcdiff.policies import NoCache
from etcdiff.policies.step.etc_plus import ETCPlus, fit_etc_plus
from etcdiff.policies.step.etc_plus.plan import PINNED, pinned_costs


@pytest.fixture(scope="module")
def flow():
    model, sched, _ = hm.gmm_flow()
    noises = [torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(s)) for s in (100, 101)]
    kwargs = [{"labels": [0, 1]}, {"labels": [2, 3]}]
    return model, sched, fit_etc_plus(record_denoiser_runs(model, sched, noises, 20, kwargs), max_window=5)


def test_a_pinned_profile_plans_exactly_the_pinned_steps_and_runs_them(flow):
    model, sched, prof = flow
    free = ETCPlus(prof, calls=6).planned_steps(20)
    pinned = [0, 2, 6, 10, 14, 18]  # six calls, windows within max_window 5, not the free plan
    assert pinned != free
    policy = ETCPlus({**prof, PINNED: pinned}, calls=6)
    assert policy.planned_steps(20) == pinned
    x = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(5))
    etcdiff.sample(model, sched, x, 20, policy, labels=[2])
    assert list(policy.report().computed_steps) == pinned  # no spike on this sample: the plan as pinned
    assert ETCPlus({**prof, PINNED: free}, calls=6).planned_steps(20) == free
    # another step count plans from the resampled profile: the pins (of 20 steps) do not apply there
    runs = []
    for profile in ({**prof, PINNED: pinned}, prof):
        policy = ETCPlus(profile, calls=6)
        with pytest.warns(UserWarning, match="resampled"):
            etcdiff.sample(model, sched, x, 28, policy, labels=[2])
        runs.append(list(policy.report().computed_steps))
    assert runs[0] == runs[1] and len(runs[0]) <= 6


def test_pinned_costs_leave_the_states_off_the_path_alone_and_refuse_a_bad_path():
    seg = torch.rand(10, 6, 6, dtype=torch.float64)  # 10 steps, windows of at most 5
    kept = seg.clone()
    out = pinned_costs(seg, [0, 3, 5])
    assert torch.isinf(out[0, 0, [1, 2, 4, 5]]).all() and out[0, 0, 3] == seg[0, 0, 3]
    assert torch.isinf(out[3, 3, [1, 3, 4, 5]]).all() and out[3, 3, 2] == seg[3, 3, 2]
    assert torch.isinf(out[5, 2, 1:5]).all() and out[5, 2, 5] == seg[5, 2, 5]  # from 5, only the run's end
    assert torch.equal(out[1:3], seg[1:3]) and torch.equal(out[3, :3], seg[3, :3])  # off the path: as it was
    assert torch.equal(out[6:], seg[6:]) and torch.equal(seg, kept)  # the input is not changed
    assert torch.equal(pinned_costs(seg, [0, 3, 9])[3, 3], seg[3, 3])  # a window of 6 > 5: left free
    for bad in ([], [1, 3], [0, 3, 3], [0, 10]):
        with pytest.raises(ValueError, match="pinned steps"):
            pinned_costs(seg, bad)


class _Planned(NoCache):
    """A policy whose plan is its profile's pinned steps, else the fold's own; its error depends on the plan."""

    def __init__(self, steps):
        super().__init__()
        self.steps = steps
        self.error = 0.01 * (1 + sum(steps) % 7)

    def planned_steps(self, num_steps):
        return list(self.steps)


def test_final_plans_measure_each_budget_on_the_final_fits_own_plan():
    from etcdiff.calibration.etc_plus.refine import measured_budgets
    from etcdiff.calibration.selection import HeldOut

    def own_plan(profile, calls, last):  # the fold's (or the final fit's) own plan of ``calls`` calls
        shift = profile["shift"]
        steps = [0] + [min(19, 2 * i + shift) for i in range(1, calls)]
        return steps[:-1] + [19] if last else steps

    def build(fitted, calls):
        if calls < 5:
            raise ValueError("too few calls")
        profile = fitted["profile"]
        return _Planned(profile.get(PINNED) or own_plan(profile, calls, bool(fitted.get("last_step"))))

    refs = {i: torch.ones(1, 4) for i in range(4)}
    runs = []
    folds = [{"profile": {"shift": 1}}, {"profile": {"shift": 2}}]
    final = {"profile": {"shift": 3}}
    choice = {5: [-9.0] * 4}  # what the choice measured at 5 calls, on the folds' own plans
    held = HeldOut([[0, 1], [2, 3]], refs, lambda p, i: runs.append(p.steps) or refs[i] + p.error, build, folds,
                   choice)
    free, last, _, _ = measured_budgets(held, 20, final=final)
    for calls in range(5, 11):
        steps = own_plan(final["profile"], calls, False)
        assert free[str(calls)] == pytest.approx([math.log(_Planned(steps).error)] * 4, abs=1e-6)
    assert all(steps in [own_plan(final["profile"], c, lf) for c in range(5, 11) for lf in (False, True)]
               for steps in runs)  # every run made ran one of the final fit's plans, none a fold's own
    assert free["5"] != choice[5]  # the choice's runs were of other plans: measured again
    runs.clear()
    same = HeldOut([[0, 1], [2, 3]], refs, lambda p, i: runs.append(p.steps) or refs[i] + p.error, build,
                   [final, final], choice)
    assert measured_budgets(same, 20, final=final)[0]["5"] == choice[5]  # the same plans: the choice's runs reused
    assert measured_budgets(held, 20)[0]["5"] == choice[5]  # without final_plans: as before
    assert last.keys() <= free.keys()


def test_final_plans_is_a_fit_setting_the_profile_keeps_and_checks(flow):
    model, sched, _ = flow
    noises = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(7))
    runs = record_denoiser_runs(model, sched, [noises], 12, [{"labels": [0, 1]}])
    assert fit_etc_plus(runs, final_plans=True)["final_plans"] is True
    assert "final_plans" not in fit_etc_plus(runs)
    with pytest.raises(ValueError, match="final_plans must be true or false"):
        fit_etc_plus(runs, final_plans="yes")


def test_calibration_says_which_budgets_run_a_smaller_plan(flow):
    from etcdiff.cli.calibrate import _ladder_line
    from etcdiff.policies.step.etc_plus.budgets import smaller_plans

    _, _, prof = flow
    logs = {"5": [-3.0, -3.1, -2.9], "6": [-4.0, -4.1, -3.9], "7": [-4.0, -4.1, -3.9], "8": [-4.0, -4.0, -4.0],
            "9": [-5.0, -5.1, -4.9]}
    ladder = {**prof, "budget_errors": {k: sum(v) / 3 for k, v in logs.items()}, "budget_logs": logs}
    assert smaller_plans(ladder) == {7: 6, 8: 6}
    assert ETCPlus(ladder, calls=8).calls == 6 and ETCPlus(ladder, calls=9).calls == 9
    line = _ladder_line(ladder)
    assert "calls 7-8 with the 6-call plan" in line and "fold fits' plans" in line
    assert "profile's own plans" in _ladder_line({**ladder, "final_plans": True})
    steady = {k: [v[0] - int(k), v[1] - int(k), v[2] - int(k)] for k, v in logs.items()}
    assert smaller_plans({**prof, "budget_errors": {k: -1.0 for k in logs}, "budget_logs": steady}) == {}
    assert "every budget its own plan" in _ladder_line({**prof, "budget_errors": {"5": -1.0}, "budget_logs": {}})
