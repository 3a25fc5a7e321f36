"""The solver's reach (calibration/etc_plus/reach.py): exact for every scheduler, used by ETC+'s fit."""

from types import SimpleNamespace

import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

from etcdiff.calibration.etc_plus.reach import solver_reach
from etcdiff.integration.step.sampler import denoise_loop
from etcdiff.policies import NoCache

STEPS = 12


def _record(scheduler):
    scheduler.set_timesteps(STEPS)
    return SimpleNamespace(solver=scheduler, num_steps=STEPS, inputs=[torch.zeros(1, 2, 3)])


def _flow_unipc():
    return UniPCMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=3.0)


def test_first_order_flow_reach_is_the_sigma_step():
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    reach = solver_reach(_record(sched))
    sigmas = sched.sigmas.double()
    assert reach == pytest.approx((sigmas[1:] - sigmas[:-1]).tolist(), rel=1e-5)


@pytest.mark.parametrize("make", [_flow_unipc, lambda: DPMSolverMultistepScheduler(),
                                  lambda: UniPCMultistepScheduler()])
def test_the_final_latents_are_the_reach_weighted_sum_of_the_outputs_under_multistep_solvers(make):
    reach = solver_reach(_record(make()))
    assert reach is not None and len(reach) == STEPS
    gen = torch.Generator().manual_seed(0)
    outputs = [torch.randn(1, 2, 3, generator=gen, dtype=torch.float64) for _ in range(STEPS)]
    sched = make()
    sched.set_timesteps(STEPS)
    index = {float(t): k for k, t in enumerate(sched.timesteps)}
    final = denoise_loop(lambda x, t: outputs[index[float(t)]], sched, torch.zeros(1, 2, 3, dtype=torch.float64),
                         NoCache())
    assert final.double() == pytest.approx(sum(r * e for r, e in zip(reach, outputs)), rel=1e-5)
    # a multistep solver carries an output into later updates: the last steps' reach is not one step's coefficient
    assert reach[-2] != pytest.approx(reach[-1], rel=0.05)


def test_no_reach_without_a_scheduler_copy_or_with_other_timesteps():
    assert solver_reach(SimpleNamespace(solver=None, num_steps=STEPS, inputs=[torch.zeros(1, 2)])) is None
    record = _record(_flow_unipc())
    record.num_steps = STEPS + 1
    assert solver_reach(record) is None


def test_the_fit_weighs_windows_by_the_given_reach_and_keeps_its_own_time_axis():
    from etcdiff.policies.step.etc_plus.fit import fit_etc_plus
    from etcdiff.policies.trajectory import Trajectory

    sigmas = [1.0, 0.9, 0.7, 0.4, 0.2, 0.0]
    trajs = []
    for a in (1.0, -0.5, 2.0):  # eps_t = 3 + 2·a·sigma_t², latents by Euler on the sigmas
        outs = [torch.full((1, 2), 3.0 + 2.0 * a * s * s) for s in sigmas[:-1]]
        xs = [torch.tensor([[1.0, -1.0]])]
        for t, o in enumerate(outs):
            xs.append(xs[-1] + (sigmas[t + 1] - sigmas[t]) * o)
        trajs.append(Trajectory(outputs=outs, inputs=xs[:-1], final=xs[-1]))
    own = fit_etc_plus(trajs, max_window=3, corrections=False)
    reach = [-0.1, -0.2, -0.9, -0.2, -0.2]  # Euler: the sigma steps, but the third said to reach three times as far
    given = fit_etc_plus(trajs, max_window=3, corrections=False, reach=reach)
    assert own["reach"] == "one-step fit" and given["reach"] == "solver"
    assert given["weights"] == pytest.approx([0.1, 0.2, 0.9, 0.2, 0.2]) and given["axis"] == pytest.approx(own["axis"])
    cost = {(cp, c, m): e for cp, c, m, e in own["segments"]}
    scaled = {(cp, c, m): e for cp, c, m, e in given["segments"]}
    assert scaled[(0, 1, 3)] == pytest.approx(3 * cost[(0, 1, 3)])  # the window that skips only step 2
    assert scaled[(1, 2, 4)] == pytest.approx(cost[(1, 2, 4)]) and cost[(1, 2, 4)] > 0  # step 3: the same reach
    with pytest.raises(ValueError, match="reach must list a finite number for each of the 5 steps"):
        fit_etc_plus(trajs, reach=reach[:-1])
