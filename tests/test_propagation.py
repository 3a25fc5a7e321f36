"""Probe runs (etcdiff.calibration.etc_plus.propagation) and how etc-plus's fit uses them."""


import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

import etcdiff
from etcdiff.calibration.etc_plus.propagation import probe_steps, record_probed_denoiser_runs
from etcdiff.policies import ETCPlus, SkipSteps
from etcdiff.policies.step.etc_plus.fit import fit_etc_plus, propagation_factors
from etcdiff.policies.trajectory import Trajectory

STEPS = 20


def test_skip_steps_reuses_only_the_named_steps():
    sched = FlowMatchEulerDiscreteScheduler(shift=1.0)
    calls = []

    def model(x, t):
        calls.append(float(t))
        return x * 0.0 + float(t) / 1000

    etcdiff.sample(model, sched, torch.zeros(1, 3), STEPS, policy := SkipSteps({3, 7}))
    assert policy.report().skipped_steps == [3, 7] and len(calls) == STEPS - 2
    with pytest.raises(ValueError, match="step indices >= 1"):
        SkipSteps({0})


def test_probe_steps_cover_the_run_and_look_closer_at_the_end():
    assert probe_steps(50, 8) == [1, 8, 15, 22, 28, 35, 42, 47, 48, 49]
    assert probe_steps(2) == [] and probe_steps(50, 0) == []


def _contracting(c):
    """v(x) = c·x + a drift in t on an Euler flow: affine in x, so an error's reach is exact (below)."""
    return lambda x, t: c * x + torch.sin(torch.full_like(x, 3 * float(t) / 1000))


def _exact_reach(sched, c, t):
    """How an output error at step t reaches the end: the step's dt times prod over later steps of (1 + dt·c)."""
    sig = sched.sigmas.double()
    reach = abs(float(sig[t + 1] - sig[t]))
    for u in range(t + 1, STEPS):
        reach *= 1 + float(sig[u + 1] - sig[u]) * c
    return reach


@pytest.mark.parametrize("c", [0.0, 3.0])
def test_probes_measure_the_true_reach_of_an_error(c):
    sched = FlowMatchEulerDiscreteScheduler(shift=1.0)
    start = torch.randn(4, 2, 8, generator=torch.Generator().manual_seed(0)) + 1.0
    trajs = record_probed_denoiser_runs(_contracting(c), sched, start, STEPS, count=4, runs=2)
    assert [tr.probes is not None for tr in trajs] == [True, True, False, False]
    for t, ratios in trajs[0].probes.items():
        assert len(ratios) == 1
        assert ratios[0] == pytest.approx(_exact_reach(sched, c, t), rel=2e-3)


def test_fit_scales_the_solver_weights_by_the_measured_contraction():
    sched = FlowMatchEulerDiscreteScheduler(shift=1.0)
    start = torch.randn(4, 2, 8, generator=torch.Generator().manual_seed(0)) + 1.0
    trajs = record_probed_denoiser_runs(_contracting(3.0), sched, start, STEPS, count=STEPS, runs=2)
    plain = fit_etc_plus(trajs, propagation=False, corrections=False)
    probed = fit_etc_plus(trajs, corrections=False)
    assert plain["propagation"] is None and probed["propagation"][-1] == pytest.approx(1.0)
    for t in (1, 5, 10, 15):
        want = _exact_reach(sched, 3.0, t) / _exact_reach(sched, 3.0, STEPS - 1) * abs(
            float(sched.sigmas[STEPS] - sched.sigmas[STEPS - 1])) / abs(float(sched.sigmas[t + 1] - sched.sigmas[t]))
        assert probed["weights"][t] / plain["weights"][t] == pytest.approx(want, rel=2e-3)
        assert probed["weights"][t] < plain["weights"][t]  # early errors are damped by the contraction
    assert probed["axis"] == plain["axis"]  # the trend's time axis stays the solver's


def test_factors_interpolate_between_probes_and_need_the_last_step():
    weights = [1.0] * 10
    tr = Trajectory(probes={1: [4.0], 5: [1.0], 9: [1.0]})
    f = propagation_factors([tr], weights)
    assert f[0] == pytest.approx(4.0) and f[1] == pytest.approx(4.0) and f[3] == pytest.approx(2.0)
    assert f[5:] == pytest.approx([1.0] * 5)
    assert propagation_factors([Trajectory(probes={1: [4.0], 5: [1.0]})], weights) is None
    assert propagation_factors([Trajectory()], weights) is None


def test_calibrate_policy_probes_etc_plus_and_the_plan_moves_calls_late():
    sched = FlowMatchEulerDiscreteScheduler(shift=1.0)
    noises = torch.randn(6, 2, 8, generator=torch.Generator().manual_seed(1)) + 1.0

    def model(x, t):  # contracts strongly towards the data (here: 0) on top of a time-varying drift
        s = float(t) / 1000
        return 4.0 * x + torch.sin(torch.full_like(x, 3 * s))

    probed = etcdiff.calibrate_policy("etc-plus", model, sched, noises, STEPS, calls=8, propagation=True)
    plain = etcdiff.calibrate_policy("etc-plus", model, sched, noises, STEPS, calls=8, propagation=False)
    assert probed.profile["propagation"] is not None and plain.profile["propagation"] is None
    reports = []
    for pol in (probed, plain):
        etcdiff.sample(model, sched, noises[:1], STEPS, pol)
        assert len(pol.report().computed_steps) <= 8
        # the plans themselves, apart from the measured budget ranking and last-step choice made on top of them
        bare = {k: v for k, v in pol.profile.items() if not k.startswith("budget_errors")}
        reports.append(ETCPlus(bare, calls=8, last_step=False).planned_steps(STEPS))
    late = lambda steps: sum(1 for s in steps if s >= STEPS // 2)  # noqa: E731
    assert late(reports[0]) > late(reports[1])


def test_propagation_setting_must_be_a_bool():
    tr = Trajectory(outputs=[torch.ones(1, 2)] * 4, inputs=[torch.ones(1, 2)] * 4, final=torch.ones(1, 2))
    with pytest.raises(ValueError, match="propagation must be true or false"):
        fit_etc_plus([tr], propagation="False")


def test_a_probe_whose_result_has_another_batch_says_so():
    from etcdiff.calibration.etc_plus.propagation import _ratios

    tr = Trajectory(outputs=[torch.zeros(1, 4), torch.ones(1, 4)], inputs=[torch.zeros(1, 4)] * 2, final=torch.zeros(1, 4))
    with pytest.raises(RuntimeError, match="probes need one image per prompt"):
        _ratios(tr, 1, torch.zeros(2, 4), torch.ones(2, 4))
