"""The step-wise peers of PEERS.md (AdaptiveDiffusion, SADA, the ERTACache reconstruction): decision rules on
scripted traces worked out by hand, end-to-end runs with etcdiff.sample, ERTACache's closed-form fits."""

import json

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

import etcdiff
from etcdiff.integration.step.recording import Trajectory
from etcdiff.policies.step.adaptive import AdaptiveDiffusion
from etcdiff.policies.step.ertacache import ERTACache, ERTACacheProfile, fit_ertacache
from etcdiff.policies.step.sada import SADA, ab_weights
from test_sampler import SmallConvDenoiser


def t1(v):
    return torch.tensor([float(v)])


def drive_latents(policy, latents, outputs):
    """Show scripted latents x_t; the 'model' returns outputs[t]. Returns the report and the outputs used."""
    policy.begin(len(outputs))
    used = []
    for t, (x, value) in enumerate(zip(latents, outputs)):
        computed = policy.should_compute(t, None if x is None else t1(x))
        out = None if computed else policy.predict(t)
        if out is None:
            computed, out = True, t1(value)
        policy.observe(t, out, computed)
        used.append(out.item())
    return policy.report(), used


def drive_euler(policy, outputs, h=-0.1, x0=0.0, hide_first=False):
    """A scalar Euler sampler, x_{t+1} = x_t + h·out_t, where the 'model' returns outputs[t]; ``hide_first``
    shows no latents at step 0, as the diffusers hook does."""
    policy.begin(len(outputs))
    x, used = t1(x0), []
    for t, value in enumerate(outputs):
        computed = policy.should_compute(t, None if hide_first and t == 0 else x)
        out = None if computed else policy.predict(t)
        if out is None:
            computed, out = True, t1(value)
        policy.observe(t, out, computed)
        used.append(out.item())
        x = x + h * out
    return policy.report(), used


# -- AdaptiveDiffusion ------------------------------------------------------------------------------------------

LATENTS = [0, 1, 2, 3, 4, 5, 7, 9, 11, 13]  # D_1..D_5 = 1, D_6..D_9 = 2


def test_adaptive_rule_worked_by_hand():
    # threshold .1, max_skip_steps 2, warmup 3, N = 10; gap = |(D_t + D_{t-2})/2 - D_{t-1}|, skip if <= .1·D_{t-1}.
    # t0-2 warm-up (t2 has no D_0). t3: D=1,1,1 gap 0 -> skip. t4: gap 0 -> skip. t5: 2 skips in a row -> run.
    # t6: (2+1)/2-1 = .5 > .1 -> run, err .5. t7: |(2+1)/2-2| = .5 > .2 -> run, err .25. t8: 2,2,2 -> skip.
    # t9: last -> run (gap 0).
    report, used = drive_latents(AdaptiveDiffusion(0.1, max_skip_steps=2, warmup=3), LATENTS, [10 * t for t in range(10)])
    assert report.computed_steps == [0, 1, 2, 5, 6, 7, 9]
    assert report.err == [None, None, None, 0.0, 0.0, 0.0, 0.5, 0.25, 0.0, 0.0]
    assert report.window == [0, 0, 0, 1, 2, 0, 0, 0, 1, 0]
    assert used == [0, 10, 20, 20, 20, 50, 60, 70, 70, 90]  # a skip reuses the last real output


def test_adaptive_without_initial_latents_decides_one_step_later():
    # The diffusers hook has no x_0 at step 0: D_1 is missing, so t3 (needs D_1) runs; t4 is the first decision.
    report, _ = drive_latents(AdaptiveDiffusion(0.1, max_skip_steps=2), [None] + LATENTS[1:], [0.0] * 10)
    assert report.computed_steps == [0, 1, 2, 3, 6, 7, 9]  # t4, t5 skipped; t6 forced after 2 skips; t8 skipped


def test_adaptive_zero_threshold_skips_only_exactly_linear_latents():
    report, _ = drive_latents(AdaptiveDiffusion(0.0, max_skip_steps=4), [t * t for t in range(8)], [0.0] * 8)
    # D_t = 2t-1 is linear: the third-order difference is exactly 0, which passes "<= 0".
    assert report.computed_steps == [0, 1, 2, 7]
    report, _ = drive_latents(AdaptiveDiffusion(0.0), [t ** 3 for t in range(8)], [0.0] * 8)
    assert report.computed_steps == list(range(8))


# -- SADA -------------------------------------------------------------------------------------------------------

SADA_OUT = [1, 2, 2.5, 99, 2.9, 3.2, 3.3]  # step 3 is skipped, so 99 is never used
SADA_SIGMAS = [1.0 - 0.1 * t for t in range(8)]


def test_ab_weights_are_adams_bashforth_3_on_equal_steps():
    assert ab_weights([0, 1, 2], 2, 3) == pytest.approx([5 / 12, -16 / 12, 23 / 12])
    assert ab_weights([1.0, 0.9, 0.8], 0.8, 0.7) == pytest.approx([-0.5 / 12, 1.6 / 12, -2.3 / 12])


@pytest.mark.parametrize("with_sigmas", [True, False])
def test_sada_rule_worked_by_hand(with_sigmas):
    # Euler with h = -0.1 (sigma 1, .9, ...); momentum = mean((x_t - x_pred)·(f_c - 2 f_b + f_a)) over the last three
    # real outputs; constant shifts of f cancel, so think of f = 0, 1, 1.5, ., 1.9, 2.2, 2.3 on unit steps u.
    # t3: x_pred = x2 + h(23·1.5 - 16·1 + 0)/12 = x2 + h·1.541667; x3 = x2 + h·1.5 -> residual .0041667;
    #     second difference 1.5 - 2 + 0 = -.5 -> momentum -.00208333 <= 0: skip (reuse 2.5).
    # t4: the quadratic q(u) = u - .25u(u-1) through u = 0, 1, 2 integrated over u in [3, 4]: 1.291667;
    #     x4 = x3 + h·1.5 -> residual -.15 + .1291667 = -.0208333; momentum .0104167 > 0: run.
    # t5: real at u = 1, 2, 4 (f 1, 1.5, 1.9): q = .3 + .8u - .1u^2, integral over [4, 5] 1.866667;
    #     x5 = x4 + h·1.9 -> residual -.0033333; second difference 1.9 - 3 + 1 = -.1 -> momentum .00033333: run.
    # t6: last step runs; real at u = 2, 4, 5 (1.5, 1.9, 2.2): q = 1.366667 + u^2/30, integral over [5, 6] 2.377778;
    #     residual -.22 + .2377778 = .0177778 (4/225); second difference 2.2 - 3.8 + 1.5 = -.1 -> momentum -4/2250.
    policy = SADA(acc_range=(0.0, 1.0), max_interval=2, x0_extrapolation=False, sigmas=SADA_SIGMAS if with_sigmas else None)
    report, used = drive_euler(policy, SADA_OUT)
    assert report.computed_steps == [0, 1, 2, 4, 5, 6]
    assert report.err[:3] == [None, None, None]
    assert report.err[3:] == pytest.approx([-1 / 480, 1 / 96, 1 / 3000, -4 / 2250], abs=1e-7)  # float32 latents
    assert used[3] == 2.5
    # Without x_0 (as in the diffusers hook) the sigmas still place f_0; without sigmas the time axis starts at
    # step 1, so the first measurement waits for f_1..f_3 and x_3, x_4.
    hidden, _ = drive_euler(policy, SADA_OUT, hide_first=True)
    if with_sigmas:
        assert hidden.to_dict() == report.to_dict()
    else:
        assert hidden.err[3] is None and hidden.err[4] is not None and 3 in hidden.computed_steps


def test_sada_x0_extrapolation_and_acceleration_range():
    # x0 = x_pred - sigma_3·eps  <=>  out = eps + (x3 - x_pred) / sigma_3 = 2.5 + .0041667 / .7
    _, used = drive_euler(SADA(acc_range=(0.0, 1.0), sigmas=SADA_SIGMAS), SADA_OUT)
    assert used[3] == pytest.approx(2.5 + 0.00416667 / 0.7, abs=1e-6)
    # acc_range (0.5, 1.0) of 7 steps: start = round(3.5) = 4, so only steps 5..7 may be skipped: t3 runs.
    report, _ = drive_euler(SADA(acc_range=(0.5, 1.0), x0_extrapolation=False), SADA_OUT)
    assert 3 in report.computed_steps


def test_sada_never_skips_more_than_max_interval_in_a_row():
    # A drift that settles geometrically (change ratio .8 in [5/11, 1]) passes the test wherever it is measured.
    outs = [1 + sum(0.8 ** k for k in range(t)) for t in range(30)]
    report, _ = drive_euler(SADA(max_interval=3, x0_extrapolation=False), outs)
    assert max(report.window) == 3 and report.num_computed < 30
    assert all(t in report.computed_steps for t in range(round(0.2 * 30) + 1)) and 29 in report.computed_steps


# -- ERTACache ----------------------------------------------------------------------------------------------------


def scalar_trajectory(outputs, inputs, sigmas):
    return Trajectory(outputs=[t1(v) for v in outputs], inputs=[t1(v) for v in inputs], sigmas=torch.tensor(sigmas))


def test_ertacache_fit_worked_by_hand():
    # eps = 1, 1.1, 1.2, 2.0, 2.1, 2.2; threshold .25; rel(a, b) = |a - b| / |b| against the last computed step.
    # t1: .1 -> reuse (acc .1). t2: .2, acc .3 >= .25 -> compute. t3: |2 - 1.2| / 1.2 = .6667 -> compute.
    # t4: .05 -> reuse. t5: last -> compute.
    # k_1 = 0 (no earlier change to model it on); k_4: d = 2.0 - 1.2 = .8, e = 2.1 - 2.0 = .1 -> k = .125.
    # lambda_1: update x2 - x1 = -.22 against dt·reused = -.2·1.0 -> 1.1; lambda_4: -.252 against -.1·2.1 -> 1.2.
    sig = [1.0, 0.8, 0.6, 0.4, 0.2, 0.1, 0.0]
    xs = [0.0, -0.2, -0.42, -0.66, -1.06, -1.312]
    prof = fit_ertacache([scalar_trajectory([1, 1.1, 1.2, 2.0, 2.1, 2.2], xs, sig)], threshold=0.25)
    assert prof.compute == [True, False, True, True, False, True]
    assert prof.rel == pytest.approx([None, 0.1, 0.2, 0.8 / 1.2, 0.05, 0.1])
    assert prof.coeffs == pytest.approx([0, 0, 0, 0, 0.125, 0])
    assert prof.lambdas == pytest.approx([1, 1.1, 1, 1, 1.2, 1])
    # At run time: step 1 -> 1.1·1.0; step 4 -> 1.2·(2.0 + .125·(2.0 - 1.2)) = 2.52.
    report, used = drive_latents(ERTACache(prof), [None] * 6, [1, 1.1, 1.2, 2.0, 2.1, 2.2])
    assert report.computed_steps == [0, 2, 3, 5]
    assert used == pytest.approx([1, 1.1, 1.2, 2.0, 2.52, 2.2])


def synthetic_trajectories(num=3, shape=(2, 3, 4, 4), n=10, seed=0):
    """eps_t - eps_c = k_t·(eps_c - eps_c') exactly on reused steps, x_{t+1} - x_t = lambda_t·dt_t·eps_t."""
    g = torch.Generator().manual_seed(seed)
    compute = [True, True, False, False, True, False, True, False, False, True]
    k = {2: 0.03, 3: -0.05, 5: 0.02, 7: 0.04, 8: 0.01}
    lam = {2: 1.3, 3: 0.7, 5: 1.1, 7: 0.9, 8: 1.05}
    sig = torch.linspace(1.0, 0.0, n + 1, dtype=torch.float64)
    trajs = []
    for _ in range(num):
        eps, x = [], [torch.randn(shape, generator=g, dtype=torch.float64)]
        computed = []
        for t in range(n):
            if compute[t]:
                # a fresh output far from the last one, so that the schedule computes exactly here
                eps.append(torch.randn(shape, generator=g, dtype=torch.float64) + 5.0 * (t + 1))
                computed.append(t)
            else:
                c, cp = computed[-1], computed[-2]
                eps.append(eps[c] + k[t] * (eps[c] - eps[cp]))
            x.append(x[-1] + lam.get(t, 1.0) * (sig[t + 1] - sig[t]) * eps[-1])
        trajs.append(Trajectory(outputs=eps, inputs=x[:-1], final=x[-1], sigmas=sig))
    return trajs, compute, k, lam


def test_ertacache_recovers_known_coefficients_on_a_synthetic_linear_trajectory():
    trajs, compute, k, lam = synthetic_trajectories()
    prof = fit_ertacache(trajs, threshold=0.1)
    assert prof.compute == compute
    for t in range(10):
        assert prof.coeffs[t] == pytest.approx(k.get(t, 0.0), abs=1e-5)
        assert prof.lambdas[t] == pytest.approx(lam.get(t, 1.0), abs=1e-5)
    again = ERTACacheProfile.from_dict(json.loads(json.dumps(prof.to_dict())))
    assert again == prof


def test_ertacache_streams_combine_linearly_across_cfg_branches():
    trajs, *_ = synthetic_trajectories(num=2)
    policy = ERTACache(fit_ertacache(trajs, threshold=0.1))
    policy.begin(10)
    cond, uncond, s = policy.new_stream(), policy.new_stream(), 3.0
    for t in range(10):
        c_out, u_out = trajs[0].outputs[t], trajs[1].outputs[t]
        if policy.should_compute(t):
            cond.record(t, c_out)
            uncond.record(t, u_out)
            combined, computed = u_out + s * (c_out - u_out), True
        else:
            c_out, u_out = cond.predict(t), uncond.predict(t)
            combined, computed = u_out + s * (c_out - u_out), False
            torch.testing.assert_close(combined, policy.predict(t))
        policy.observe(t, combined, computed)


# -- every method end to end --------------------------------------------------------------------------------------


def record_sampler_trajectory(model, x, steps):
    sch = FlowMatchEulerDiscreteScheduler()
    sch.set_timesteps(steps)
    traj = Trajectory(timesteps=sch.timesteps.clone(), sigmas=sch.sigmas.clone())
    for t in sch.timesteps:
        out = model(x, t)
        traj.inputs.append(x.clone())
        traj.outputs.append(out.clone())
        x = sch.step(out, t, x, return_dict=False)[0]
    traj.final = x
    return traj


def make_policy(name, model=None):
    if name == "adaptive":
        return AdaptiveDiffusion()
    if name == "sada":
        return SADA()
    calib = [torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(10 + i)) for i in range(2)]
    return ERTACache(fit_ertacache([record_sampler_trajectory(model, x, 30) for x in calib], threshold=0.2))


@pytest.mark.parametrize("name", ["adaptive", "sada", "ertacache"])
def test_end_to_end_with_sample(name):
    model = SmallConvDenoiser()
    calls = []

    def counting(x, t):
        calls.append(float(t))
        return model(x, t)

    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    full = etcdiff.sample(model, FlowMatchEulerDiscreteScheduler(), x.clone(), 30, etcdiff.NoCache())
    policy = make_policy(name, model)
    out = etcdiff.sample(counting, FlowMatchEulerDiscreteScheduler(), x.clone(), 30, policy)
    assert torch.isfinite(out).all()
    assert len(calls) == policy.report().num_computed < 30
    assert ((out - full).abs().mean() / full.abs().mean()).item() < 0.1
    # state isolation: after a run on another input, the same policy object repeats the first run exactly
    steps = policy.report().computed_steps
    etcdiff.sample(model, FlowMatchEulerDiscreteScheduler(), torch.randn(2, 3, 8, 8), 30, policy)
    again = etcdiff.sample(model, FlowMatchEulerDiscreteScheduler(), x.clone(), 30, policy)
    assert torch.equal(again, out) and policy.report().computed_steps == steps


def test_state_is_isolated_between_begin_calls_on_scripted_traces():
    for policy, run in [
        (AdaptiveDiffusion(0.1, max_skip_steps=2), lambda p: drive_latents(p, LATENTS, [10 * t for t in range(10)])),
        (SADA(acc_range=(0.0, 1.0), max_interval=2, sigmas=SADA_SIGMAS), lambda p: drive_euler(p, SADA_OUT)),
    ]:
        first = run(policy)
        policy.begin(first[0].num_steps)  # a run on other values, aborted half-way
        for t in range(4):
            policy.should_compute(t, t1(5.0 * t * t))
            policy.observe(t, t1(-3.0 * t), True)
        second = run(policy)
        assert first[0].to_dict() == second[0].to_dict() and first[1] == second[1]


# -- bad parameters -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: AdaptiveDiffusion(threshold=-1), "threshold must be a finite number >= 0"),
        (lambda: AdaptiveDiffusion(threshold=float("nan")), "threshold must be a finite number >= 0"),
        (lambda: AdaptiveDiffusion(max_skip_steps=0), "max_skip_steps must be an integer >= 1"),
        (lambda: AdaptiveDiffusion(warmup=1.5), "warmup must be an integer >= 1"),
        (lambda: SADA(acc_range=(0.9, 0.2)), "acc_range must satisfy 0 <= start < end <= 1"),
        (lambda: SADA(acc_range=(10, 47)), "acc_range must satisfy 0 <= start < end <= 1"),
        (lambda: SADA(acc_range="early"), "acc_range must be a pair of fractions"),
        (lambda: SADA(max_interval=0), "max_interval must be an integer >= 1"),
        (lambda: SADA(sigmas=[float("inf"), 0.0]), "sigmas must be at least two finite numbers"),
        (lambda: SADA(sigmas=[1.0, 0.5]).begin(10), "2 sigmas were set but the run has 10 steps"),
        (lambda: ERTACache({"threshold": 0.1}), "not an ERTACache profile"),
        (lambda: ERTACache("no/such/profile.json"), "profile file not found"),
        (lambda: ERTACache(3), "profile must be an ERTACacheProfile"),
        (lambda: ERTACacheProfile(0.1, [False, True], [1, 1], [0, 0], [None, 0]), "step 0 must be computed"),
        (lambda: ERTACacheProfile(0.1, [True], [1, 1], [0], [None]), "same length"),
        (lambda: fit_ertacache([], 0.1), "non-empty list of recorded full-step trajectories"),
        (lambda: fit_ertacache(synthetic_trajectories(1)[0], -0.1), "threshold must be a finite number >= 0"),
        (lambda: fit_ertacache([Trajectory(outputs=[t1(1)] * 3, inputs=[t1(0)] * 3)], 0.1), "has no sigmas"),
        (lambda: fit_ertacache(synthetic_trajectories(1)[0] + [scalar_trajectory([1], [0], [1, 0])], 0.1),
         "must have 10 of each"),
    ],
)
def test_bad_parameters_raise_clear_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_ertacache_refuses_another_step_count():
    policy = ERTACache(fit_ertacache(synthetic_trajectories(1)[0], 0.1))
    with pytest.raises(ValueError, match="fitted for 10 steps but the run has 20"):
        policy.begin(20)


# -- on the embedded demo pipeline through the diffusers hook -------------------------------------------------------


def _demo_pipe():
    from etcdiff.digits import DigitsPipeline
    from etcdiff.digits.model import WEIGHTS_PATH

    if not WEIGHTS_PATH.exists():
        pytest.skip("the demo weights are not trained yet")
    pipe = DigitsPipeline.from_embedded()
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("name", ["adaptive", "sada", "ertacache"])
def test_each_method_through_the_hook_on_the_demo_pipeline(name):
    from etcdiff.integration.step.recording import record_pipeline

    pipe = _demo_pipe()
    kw = dict(num_inference_steps=20, guidance_scale=2.0, output_type="pt")
    full = pipe(prompt="3", generator=torch.Generator().manual_seed(0), **kw).images
    if name == "ertacache":
        trajs = [record_pipeline(pipe, prompt=d, generator=torch.Generator().manual_seed(42), **kw)[0] for d in "147"]
        policy = ERTACache(fit_ertacache(trajs, threshold=0.2))
    else:
        policy = AdaptiveDiffusion() if name == "adaptive" else SADA()
    with etcdiff.enabled(pipe, policy):
        out = pipe(prompt="3", generator=torch.Generator().manual_seed(0), **kw).images
        report = etcdiff.last_report(pipe)
    assert torch.isfinite(out).all() and report.model_calls == report.num_computed  # batched CFG: one call a step
    if name != "sada":  # SADA's criterion does not fire on this model (see the module docstring of sada.py)
        assert report.num_computed < 20
    assert (out - full).abs().mean().item() < 0.05


def test_ertacache_refuses_a_noise_predicting_multistep_solver():
    """Its timestep correction is a first-order step on sigmas: on DPM-Solver++ / UniPC with epsilon prediction the
    images came out broken (4.5 dB on the held-out UNet), so it refuses there and still runs with flow sigmas."""
    from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    from etcdiff.policies.step.ertacache import ERTACache, ERTACacheProfile

    policy = ERTACache(ERTACacheProfile(threshold=0.2, compute=[True, True, False, True], lambdas=[1.0] * 4,
                                        coeffs=[0.0] * 4, rel=[None] * 4))
    model = lambda x, t: -x  # noqa: E731
    for sched in (DPMSolverMultistepScheduler(), UniPCMultistepScheduler()):
        with pytest.raises(ValueError, match=r"ertacache: .* with epsilon prediction is a multistep solver"):
            etcdiff.sample(model, sched, torch.zeros(1, 2), 4, policy)
    flow = DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction")
    etcdiff.sample(model, flow, torch.ones(1, 2), 4, policy)
    etcdiff.sample(model, FlowMatchEulerDiscreteScheduler(), torch.ones(1, 2), 4, policy)
    assert policy.report().computed_steps == [0, 1, 3]


def test_ertacache_refuses_to_calibrate_for_a_scheduler_it_would_refuse_to_run_on():
    """A schedule fitted on DPM-Solver++ with epsilon prediction could never run: calibration says so at once."""
    from diffusers import DPMSolverMultistepScheduler

    sched = DPMSolverMultistepScheduler(algorithm_type="dpmsolver++")
    noises = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"ertacache: .* with epsilon prediction is a multistep solver"):
        etcdiff.calibrate_policy("ertacache", lambda x, t: 0.1 * x, sched, noises, 6, threshold=0.2)
