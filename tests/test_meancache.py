"""MeanCache: the schedule DP on synthetic costs, the average-velocity estimate and the edge costs worked out by
hand, exactly B calls on the demo (etcdiff.sample and etcdiff.enable), clear errors."""

import itertools
import json
import math

import pytest
import torch
from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler

import etcdiff
from etcdiff.integration.step.recording import Trajectory, record_pipeline
from etcdiff.policies.step.meancache import MeanCache, MeanCacheProfile, MeanCacheSchedule, fit_meancache, search_schedule


# -- the schedule search --------------------------------------------------------------------------------------

def brute_force(cost, budget, gamma):
    n = len(cost)
    best = None
    for mid in itertools.combinations(range(1, n - 1), budget - 2):
        path = [0, *mid, n - 1]
        c = sum(cost[a][b] ** gamma for a, b in zip(path, path[1:]))
        if best is None or c < best[0]:
            best = (c, path)
    return best[1]


def test_dp_finds_the_known_optimum_of_a_synthetic_cost_matrix():
    # Edge cost = (gap - 1)^2 / 10, except a cheap long edge 1 -> 5 and an expensive 5 -> 6.
    n = 8
    cost = [[((b - a - 1) ** 2) / 10 if b > a else math.inf for b in range(n)] for a in range(n)]
    cost[1][5] = 0.05
    cost[5][6] = 2.0
    # Budget 4: 0 -> 1 (0) -> 5 (.05) -> 7 (.1): sum of squares .0125, the optimum.
    assert search_schedule(cost, 4, gamma=2.0) == [0, 1, 5, 7]
    for budget in range(2, n + 1):
        path = search_schedule(cost, budget, gamma=2.0)
        assert len(path) == budget and path[0] == 0 and path[-1] == n - 1
        assert path == brute_force(cost, budget, 2.0)
    assert search_schedule(cost, n, 2.0) == list(range(n))


def test_gamma_above_one_suppresses_the_single_large_edge():
    # Two 3-node paths: 0-1-4 with edge costs (3, 0) and 0-2-4 with (2, 2). gamma 1: 3 < 4; gamma 2: 9 > 8.
    inf = math.inf
    cost = [[inf, 3, 2, inf, inf], [inf] * 4 + [0], [inf] * 4 + [2], [inf] * 5, [inf] * 5]
    assert search_schedule(cost, 3, gamma=1.0) == [0, 1, 4]
    assert search_schedule(cost, 3, gamma=2.0) == [0, 2, 4]


@pytest.mark.parametrize("budget, gamma, message", [
    (1, 2.0, "budget must be an integer from 2 to 5"), (6, 2.0, "from 2 to 5"), (2.5, 2.0, "budget"),
    (3, 0.0, "gamma must be a finite number > 0"), (3, float("nan"), "gamma"),
])
def test_search_rejects_bad_settings(budget, gamma, message):
    with pytest.raises(ValueError, match=message):
        search_schedule([[1.0] * 5 for _ in range(5)], budget, gamma)


def test_search_says_when_no_finite_path_exists():
    inf = math.inf
    with pytest.raises(ValueError, match="no path from step 0 to step 2"):
        search_schedule([[inf] * 3 for _ in range(3)], 2)


# -- the estimate, by hand ------------------------------------------------------------------------------------

SIGMAS = [1.0, 0.8, 0.6, 0.4, 0.3, 0.1, 0.0]


def drive(policy, outputs, sigmas=SIGMAS, x0=0.0):
    """A scalar Euler loop x_{i+1} = x_i + (s_{i+1} - s_i)·v_i where the model returns outputs[i]."""
    policy.begin(len(outputs))
    policy.use_schedule(torch.tensor(sigmas))
    x, used = torch.tensor([x0]), []
    for i, value in enumerate(outputs):
        computed = policy.should_compute(i, x)
        out = None if computed else policy.predict(i)
        if out is None:
            computed, out = True, torch.tensor([float(value)])
        policy.observe(i, out, computed)
        used.append(out.item())
        x = x + (sigmas[i + 1] - sigmas[i]) * out
    return policy.report(), used


def test_estimate_on_skipped_steps_worked_by_hand():
    # x: 0, -.2, -.6, -1.4 after v = 1, 2, 4. Step 3 (K=2): u = (x3 - x1)/(s3 - s1) = -1.2/-.4 = 3;
    # J = (v1 - u)/(s3 - s1) = (2 - 3)/-.4 = 2.5; v3 = v2 - (s4 - s3)·J = 4 + .1·2.5 = 4.25; x4 = -1.4 - .1·4.25 = -1.825.
    # Step 4 (K=2): u = (x4 - x2)/(s4 - s2) = -1.225/-.3 = 4.08333; J = (v2 - u)/(s4 - s2) = .27778;
    # v4 = v3 - (s5 - s4)·J = 4.25 + .2·.27778 = 4.30556.
    policy = MeanCache(schedule=MeanCacheSchedule(6, [0, 1, 2, 5], [1, 1, 2]))
    report, used = drive(policy, [1, 2, 4, 99, 99, 5])
    assert report.computed_steps == [0, 1, 2, 5]
    assert used == pytest.approx([1, 2, 4, 4.25, 4.25 + 0.2 * (4 - 1.225 / 0.3) / -0.3, 5], abs=1e-6)
    assert used[4] == pytest.approx(4.305556, abs=1e-5)
    assert report.window == [None, None, None, 2, 2, None]


def test_span_one_is_plain_reuse():
    policy = MeanCache(schedule=MeanCacheSchedule(6, [0, 1, 5], [1, 1]))
    report, used = drive(policy, [1, 2, 9, 9, 9, 5])
    assert used == [1, 2, 2, 2, 2, 5] and report.num_computed == 3


def test_branch_streams_combine_into_the_estimate_on_the_guided_velocity():
    # CFG g = u + s·(c - u) is affine with weights summing to 1, so the branch estimates combine exactly.
    policy = MeanCache(schedule=MeanCacheSchedule(6, [0, 2, 5], [1, 2]))
    policy.begin(6)
    policy.use_schedule(torch.tensor(SIGMAS))
    cond, uncond = policy.new_stream(), policy.new_stream()
    g = torch.Generator().manual_seed(0)
    x, scale = torch.randn(3, generator=g), 3.0
    for i in range(6):
        computed = policy.should_compute(i, x)
        if computed:
            c, u = torch.randn(3, generator=g), torch.randn(3, generator=g)
            cond.record(i, c)
            uncond.record(i, u)
            out = u + scale * (c - u)
        else:
            c, u, out = cond.predict(i), uncond.predict(i), policy.predict(i)
            cond.use(i, c)  # the hook commits each branch's estimate once the step is decided
            uncond.use(i, u)
            assert torch.allclose(u + scale * (c - u), out, atol=1e-5)
        policy.observe(i, out, computed)
        x = x + (SIGMAS[i + 1] - SIGMAS[i]) * out


# -- the fit, by hand ---------------------------------------------------------------------------------------

def hand_trajectory():
    # sigmas 1, .75, .5, .25, 0; v = 1, 2, 3, 4; x_{t+1} = x_t - .25·v_t.
    xs = [0.0, -0.25, -0.75, -1.5]
    return Trajectory(outputs=[torch.tensor([v]) for v in (1.0, 2.0, 3.0, 4.0)], inputs=[torch.tensor([x]) for x in xs],
                      final=torch.tensor([-2.5]), sigmas=torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))


def test_edge_costs_and_spans_worked_by_hand():
    # 0->2 (skip 1, K=1 only): |2 - 1| = 1. 0->3 (skip 1, 2, K=1): (|2-1| + |3-1|)/2 = 1.5.
    # 1->3 (skip 2): K=1: |3 - 2| = 1; K=2: u = mean(v0, v1) = 1.5, J = (1 - 1.5)/-.5 = 1, v2 = 2 + .25 = 2.25,
    # |3 - 2.25| = .75 -> K=2. Budget 3: 0-1-3 costs .75^2 < 0-2-3's 1^2.
    profile = fit_meancache([hand_trajectory()] * 2, budgets=[2, 3, 4])
    assert profile.cost[0][2] == pytest.approx(1.0) and profile.span[0][2] == 1
    assert profile.cost[0][3] == pytest.approx(1.5) and profile.span[0][3] == 1
    assert profile.cost[1][3] == pytest.approx(0.75) and profile.span[1][3] == 2
    assert profile.cost[0][1] == profile.cost[2][3] == 0.0 and profile.cost[3][0] is None
    assert profile.schedules[3].computed == [0, 1, 3] and profile.schedules[3].spans == [1, 2]
    assert profile.schedules[3].cost == pytest.approx(0.5625)
    assert profile.schedules[2].computed == [0, 3] and profile.schedules[4].computed == [0, 1, 2, 3]
    again = MeanCacheProfile.from_dict(json.loads(json.dumps(profile.to_dict())))
    assert again.to_dict() == profile.to_dict()
    policy = MeanCache(3, profile=again.to_dict())
    assert policy.schedule.computed == [0, 1, 3]


def test_fit_refuses_trajectories_that_are_not_euler_flow_steps():
    tr = hand_trajectory()
    tr.inputs[2] = torch.tensor([5.0])
    with pytest.raises(ValueError, match="velocity-output flow-matching Euler"):
        fit_meancache([tr], [3])
    tr = hand_trajectory()
    tr.sigmas = torch.tensor([14.6, 3.0, 1.0, 0.5, 0.0])
    with pytest.raises(ValueError, match="the run's sigmas do not fall from <= 1 to 0"):
        fit_meancache([tr], [3])
    with pytest.raises(ValueError, match="each budget"):
        fit_meancache([hand_trajectory()], [5])


# -- settings and schedulers ------------------------------------------------------------------------------------

@pytest.mark.parametrize("make, message", [
    (lambda: MeanCache(10), "give either profile="),
    (lambda: MeanCache(3, schedule=MeanCacheSchedule(4, [0, 1, 3], [1, 2]), profile={}), "not both"),
    (lambda: MeanCache(0, schedule=MeanCacheSchedule(4, [0, 1, 3], [1, 2])), "calls must be a positive integer"),
    (lambda: MeanCache(4, schedule=MeanCacheSchedule(4, [0, 1, 3], [1, 2])), "calls=4 but the schedule has 3"),
    (lambda: MeanCacheSchedule(4, [1, 3], [1]), "from 0 to 3"),
    (lambda: MeanCacheSchedule(4, [0, 2, 3], [1]), "one span per gap"),
    (lambda: MeanCacheSchedule(5, [0, 2, 4], [2, 1]), "span 2 but step 1 has only 1 steps before it"),
    (lambda: MeanCacheSchedule(5, [0, 4], [0]), "span of gap 0->4 must be an integer >= 1"),
    (lambda: MeanCache(3, profile="/nonexistent/mc.json"), "profile file not found"),
])
def test_bad_settings_raise_clear_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_another_step_count_is_refused():
    policy = MeanCache(schedule=MeanCacheSchedule(6, [0, 1, 5], [1, 1]))
    with pytest.raises(ValueError, match="searched for 6 steps but the run has 8; calibrate at 8 steps: `etcdiff calibrate --method meancache --steps 8"):
        policy.begin(8)


def test_non_flow_scheduler_gets_a_clear_error_naming_what_runs_there():
    policy = MeanCache(schedule=MeanCacheSchedule(10, [0, 4, 9], [1, 1]))
    model = lambda x, t: -x  # noqa: E731
    with pytest.raises(ValueError, match=r"meancache runs only on .*DDIMScheduler.* use another step method "
                                         r"\(etc, etc-plus and ertacache run on any scheduler\)\."):
        etcdiff.sample(model, DDIMScheduler(), torch.zeros(1, 2), 10, policy)
    out = etcdiff.sample(model, FlowMatchEulerDiscreteScheduler(), torch.ones(1, 2), 10, policy)
    assert torch.isfinite(out).all() and policy.report().num_computed == 3


# -- exactly B calls on the demo ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def demo():
    from etcdiff.digits.pipeline import DigitsPipeline

    torch.set_num_threads(1)
    pipe = DigitsPipeline.from_embedded()
    pipe.set_progress_bar_config(disable=True)
    traj = record_pipeline(pipe, prompt="3", num_inference_steps=50, generator=torch.Generator().manual_seed(100),
                           output_type="latent")[0]
    return pipe, fit_meancache([traj], budgets=[10, 13, 17, 25])


def demo_model(pipe, label, counter, guidance_scale=2.0):
    from etcdiff.digits.model import NULL_CLASS

    labels = torch.tensor([label, NULL_CLASS])

    def model(x, t):
        counter.append(1)
        out = pipe.transformer(torch.cat([x, x]), timestep=t.expand(2), class_labels=labels, return_dict=False)[0]
        c, u = out.chunk(2)
        return u + guidance_scale * (c - u)

    return model


@pytest.mark.parametrize("budget", [10, 13, 17, 25])
def test_exactly_b_calls_through_sample_and_enable_with_the_same_image(demo, budget):
    pipe, profile = demo
    latents = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    calls: list[int] = []
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
    via_sample = etcdiff.sample(demo_model(pipe, 5, calls), scheduler, latents, 50, MeanCache(budget, profile=profile))
    assert len(calls) == budget
    policy = etcdiff.enable(pipe, "meancache", calls=budget, profile=profile)
    try:
        via_hook = pipe(prompt="5", num_inference_steps=50, latents=latents, output_type="latent").images
        report = etcdiff.last_report(pipe)
    finally:
        etcdiff.disable(pipe)
    assert isinstance(policy, MeanCache)
    assert report.model_calls == budget and report.computed_steps == profile.schedules[budget].computed
    # one batched CFG call a step; the branch estimates combine into the guided one, so both paths agree
    assert torch.allclose(via_sample, via_hook, atol=1e-4)


def test_bare_denoiser_calibration_and_sample():
    from etcdiff.calibration import record_denoiser_runs as record_denoiser
    from test_sampler import SmallConvDenoiser

    model, calls = SmallConvDenoiser(), []
    counted = lambda x, t: calls.append(1) or model(x, t)  # noqa: E731
    scheduler = FlowMatchEulerDiscreteScheduler()
    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    trajs = record_denoiser(counted, scheduler, noise, 20)
    assert len(trajs) == 2 and trajs[0].num_steps == 20 and len(calls) == 40
    assert torch.allclose(trajs[1].inputs[0], noise[1:2]) and trajs[1].final.shape == (1, 3, 8, 8)
    profile = fit_meancache(trajs, budgets=[6, 9])
    for budget in (6, 9, 12):  # 12 was not asked for: searched from the stored edge costs
        calls.clear()
        out = etcdiff.sample(counted, scheduler, noise[:1], 20, MeanCache(budget, profile=profile))
        assert len(calls) == budget and torch.isfinite(out).all()


def test_separate_cfg_calls_on_a_tiny_flux_make_exactly_b_calls_per_branch():
    from tiny_pipelines import FACTORIES

    tp = FACTORIES["flux_true_cfg"]()
    traj = record_pipeline(tp.pipe, **{**tp.call_kwargs, "num_inference_steps": 12, "generator": torch.Generator().manual_seed(1),
                                       "output_type": "latent"})[0]
    profile = fit_meancache([traj], budgets=[5])
    etcdiff.enable(tp.pipe, "meancache", calls=5, profile=profile)
    try:
        out = tp.run(12)
        report = etcdiff.last_report(tp.pipe)
    finally:
        etcdiff.disable(tp.pipe)
    assert torch.isfinite(out).all()
    assert report.model_calls == 2 * 5 and report.computed_steps == profile.schedules[5].computed


def test_enable_on_a_non_flow_pipeline_says_what_runs_there():
    from tiny_pipelines import FACTORIES

    tp = FACTORIES["sdxl"]()
    etcdiff.enable(tp.pipe, MeanCache(schedule=MeanCacheSchedule(6, [0, 3, 5], [1, 1])))
    try:
        with pytest.raises(ValueError, match="EulerDiscreteScheduler is not a flow-matching scheduler.*etc, etc-plus and ertacache"):
            tp.run(6)
    finally:
        etcdiff.disable(tp.pipe)
