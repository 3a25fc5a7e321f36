"""etc-plus: fitted gains, the planned windows, the call budget, online adaptivity, CFG branches and errors."""

import json
import math
import warnings
from types import SimpleNamespace

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

import etcdiff
from etcdiff.integration.step.recording import Trajectory
from etcdiff import make_policy
from etcdiff.policies import NoCache
from etcdiff.policies.step.etc_plus import ETCPlus, fit_etc_plus

from etcdiff import closed_form as hm


class Recorder(NoCache):
    def reset_state(self):
        self.inputs, self.outputs = [], []

    def should_compute(self, step, latents=None):
        self.inputs.append(latents.clone())
        return True

    def observe(self, step, output, computed):
        self.outputs.append(output.clone())
        super().observe(step, output, computed)


def record(model, scheduler, steps, seeds, batch=4, **kw):
    trajs = []
    for s in seeds:
        rec = Recorder()
        x = torch.randn(batch, 1, 16, 16, generator=torch.Generator().manual_seed(s))
        final = etcdiff.sample(model, scheduler, x, steps, rec, **kw)
        trajs.append(Trajectory(outputs=rec.outputs, inputs=rec.inputs, final=final, sigmas=getattr(scheduler, "sigmas", None)))
    return trajs


@pytest.fixture(scope="module")
def flow():
    model, sched, _ = hm.gmm_flow()
    return model, sched, fit_etc_plus(record(model, sched, 20, [100, 101]), max_window=5)


def scripted(values, sigmas):
    """A trajectory with eps_t = values[t] * ones (latents follow Euler on ``sigmas``)."""
    outs = [torch.full((1, 2), float(v)) for v in values]
    xs = [torch.tensor([[1.0, -1.0]])]
    for t, o in enumerate(outs):
        xs.append(xs[-1] + (sigmas[t + 1] - sigmas[t]) * o)
    return Trajectory(outputs=outs, inputs=xs[:-1], final=xs[-1])


def test_trend_cap_clips_the_trend_of_every_estimate_and_zero_reuses_the_last_output():
    sigmas = [1.0, 0.9, 0.7, 0.4, 0.2, 0.0]
    trajs = [scripted([3.0 + 2.0 * s * a for s in sigmas[:-1]], sigmas) for a in (1.0, -0.5, 2.0)]
    prof = fit_etc_plus(trajs, max_window=3, corrections=True, ridge=0.0)
    for cap, want in ((None, 7.0), (1.5, 3.5), (0.0, 2.0)):  # 2 + min(5, cap) * (2 - 1)
        policy = ETCPlus(prof, calls=5, trend_cap=cap)
        policy.begin(5)
        policy.observe(0, torch.full((1, 2), 1.0), True)
        policy.observe(1, torch.full((1, 2), 2.0), True)
        assert torch.allclose(policy.predict(3), torch.full((1, 2), want)) and policy.params()["trend_cap"] == cap
    assert ETCPlus(prof, calls=5, trend_cap=0).planned_steps(5) == ETCPlus(prof, calls=5).planned_steps(5)
    with pytest.raises(ValueError, match="trend_cap must be a finite number >= 0.0"):
        ETCPlus(prof, trend_cap=-1.0)


def test_fit_recovers_the_sigma_trend_and_the_hand_worked_estimate():
    # eps linear in sigma: the fit keeps g = 0 and k = (s_t - s_c) / (s_c - s_c'), and leaves no error.
    sigmas = [1.0, 0.9, 0.7, 0.4, 0.2, 0.0]
    trajs = [scripted([3.0 + 2.0 * s * a for s in sigmas[:-1]], sigmas) for a in (1.0, -0.5, 2.0)]
    prof = fit_etc_plus(trajs, max_window=3, corrections=True, ridge=0.0)
    assert prof["weights"] == pytest.approx([0.1, 0.2, 0.3, 0.2, 0.2], rel=1e-6)
    gains = {(cp, c, t): (g, k, e) for cp, c, t, g, k, e in prof["triplets"]}
    g, k, e = gains[(0, 1, 3)]  # axis s = 1 - sigma: (0.6 - 0.1) / (0.1 - 0) = 5
    assert g == pytest.approx(0.0, abs=1e-6) and k == pytest.approx(5.0, rel=1e-6) and e == pytest.approx(0.0, abs=1e-6)
    # Hand-worked estimate on a scripted run: real 0 (eps 1), real 1 (eps 2); step 3 = 2 + 5 * (2 - 1) = 7.
    policy = ETCPlus(prof, calls=5)
    policy.begin(5)
    policy.observe(0, torch.full((1, 2), 1.0), True)
    policy.observe(1, torch.full((1, 2), 2.0), True)
    assert torch.allclose(policy.predict(3), torch.full((1, 2), 7.0))
    assert policy.gains(0, 1, 3) == pytest.approx((0.0, 5.0), abs=1e-6)


def test_solver_weights_of_a_recording_whose_latents_and_outputs_are_collinear_are_the_euler_steps():
    """x_t and eps_t along one direction (every output a multiple of one vector): the 2x2 fit of
    x_{t+1} = a·x_t + b·eps_t is singular up to rounding, which differs by CPU; the fit then takes a = 1 and
    b from eps alone, so the weights are the Euler steps exactly, on any machine."""
    from etcdiff.policies.step.etc_plus.fit import solver_weights

    sigmas = [1.0, 0.8, 0.6, 0.4, 0.2, 0.0]
    a = torch.rand(6, 3, generator=torch.Generator().manual_seed(0)) + 0.5
    outs = [a * s * s for s in sigmas[:-1]]
    xs = [a * 0.0]
    for t, o in enumerate(outs):
        xs.append(xs[-1] + (sigmas[t + 1] - sigmas[t]) * o)
    weights = solver_weights(torch.stack(xs[:-1]).double(), torch.stack(outs).double(), xs[-1].double())
    assert weights == pytest.approx([0.2] * 5, abs=1e-6)


def test_auto_corrections_keep_fitted_gains_only_where_they_hold_out_of_sample():
    # eps_t = a·sigma_t² per sample (a differs): a curved trend the plain linear one misses and one gain pair per
    # (c', c, t) predicts exactly for every sample, so the cross-validated fit keeps it. Where the outputs are
    # linear in sigma up to noise, a fit only learns the noise, and "auto" keeps the plain trend.
    sigmas = [1.0, 0.8, 0.6, 0.4, 0.2, 0.0]
    gen = torch.Generator().manual_seed(0)

    def traj(outs):
        xs = [torch.zeros_like(outs[0])]
        for t, o in enumerate(outs):
            xs.append(xs[-1] + (sigmas[t + 1] - sigmas[t]) * o)
        return Trajectory(outputs=outs, inputs=xs[:-1], final=xs[-1])

    a = torch.rand(6, 3, generator=gen) + 0.5
    curved = fit_etc_plus([traj([a * s * s for s in sigmas[:-1]])], max_window=3)
    gains = {(cp, c, t): (g, k, e) for cp, c, t, g, k, e in curved["triplets"]}
    g, k, e = gains[(0, 1, 3)]
    plain_k = (0.6 - 0.2) / (0.2 - 0.0)
    trend = fit_etc_plus([traj([a * s * s for s in sigmas[:-1]])], max_window=3, corrections=False)
    plain_e = {(cp, c, t): e for cp, c, t, _, _, e in trend["triplets"]}[(0, 1, 3)]
    # nearly exact, well below the plain trend's error (not 0: the ridge pulls the gains towards the trend)
    assert e < 0.01 * plain_e and (g, k) != pytest.approx((0.0, plain_k))
    b = torch.randn(6, 3, generator=gen)
    linear = [a * s + b + 1e-3 * torch.randn(6, 3, generator=gen) for s in sigmas[:-1]]
    fit = fit_etc_plus([traj(linear)], max_window=3)
    ax = fit["axis"]
    assert all(g == 0.0 and k == pytest.approx((ax[t] - ax[c]) / (ax[c] - ax[cp]))
               for cp, c, t, g, k, e in fit["triplets"] if cp >= 0)


def test_plan_spends_calls_where_skipping_costs_most():
    # Flat outputs with a jump at step 4: skipping the jump costs, and so does extrapolating it from (0, 4) into
    # steps 5-7 (trend 3/4 of the jump), while after two real steps on the new level the trend is flat again. With
    # three calls the plan runs 0, 4 and 5; with two it must choose and takes the jump itself.
    sigmas = [1 - i / 8 for i in range(9)]
    trajs = [scripted([a] * 4 + [b] * 4, sigmas) for a, b in ((1.0, 5.0), (2.0, 3.0), (-1.0, 1.0))]
    prof = fit_etc_plus(trajs, max_window=4)
    err = {(cp, c, t): e for cp, c, t, g, k, e in prof["triplets"]}
    assert err[(-1, 0, 3)] == 0.0 and err[(4, 5, 7)] == 0.0
    assert err[(-1, 0, 4)] > 0.5 and err[(0, 4, 7)] > 0.5

    def steps_run(calls):
        policy = ETCPlus(prof, calls=calls)
        policy.begin(8)
        for t in range(8):
            computed = policy.should_compute(t)
            out = torch.full((1, 2), 1.0 if t < 4 else 5.0) if computed else policy.predict(t)
            policy.observe(t, out, computed)
        return policy.report().computed_steps

    assert steps_run(3) == [0, 4, 5]
    assert steps_run(2) == [0, 4]


def test_errors_within_a_window_add_as_vectors():
    # eps_t = a·sigma_t²: the plain trend from (0, 1) misses steps 2 and 3 in the same direction, so the window's
    # cost is the norm of the weighted sum of its errors (checked by hand here), more than the independent sum.
    sigmas = [1.0, 0.8, 0.6, 0.4, 0.2, 0.0]
    trajs = [scripted([a * s * s for s in sigmas[:-1]], sigmas) for a in (1.0, -0.5, 2.0)]
    prof = fit_etc_plus(trajs, max_window=4, corrections=False)
    w, ax = prof["weights"], prof["axis"]
    by_hand = []
    for tr in trajs:
        eps = [o[0, 0].item() for o in tr.outputs]
        total = sum(w[t] * (eps[t] - eps[1] - (ax[t] - ax[1]) / (ax[1] - ax[0]) * (eps[1] - eps[0])) for t in (2, 3))
        by_hand.append(abs(total))
    window = {(cp, c, m): err for cp, c, m, err in prof["segments"]}
    assert window[(0, 1, 4)] == pytest.approx(sum(by_hand) / 3, rel=1e-9)
    step_err = {(cp, c, t): e for cp, c, t, g, k, e in prof["triplets"]}
    independent = (sum((w[t] * step_err[(0, 1, t)]) ** 2 for t in (2, 3))) ** 0.5
    assert window[(0, 1, 4)] > 1.2 * independent
    # Profiles saved before the window errors (version 1) still plan, on the summed squared step errors.
    old = {k: v for k, v in prof.items() if k != "segments"}
    policy = ETCPlus(old, calls=3)
    policy.begin(5)
    cost = policy._segment((0, 1), 4)
    assert cost == pytest.approx(independent ** 2, rel=1e-9)


@pytest.mark.parametrize("batch", [1, 3])
def test_budget_is_never_exceeded_over_seeds_and_budgets(flow, batch):
    model, sched, prof = flow
    for calls in (5, 7, 10):
        for seed in range(6):
            policy = ETCPlus(prof, calls=calls, spike=1.0)  # spike=1: the spike rule picks nearly every next step
            x = torch.randn(batch, 1, 16, 16, generator=torch.Generator().manual_seed(seed))
            out = etcdiff.sample(model, sched, x, 20, policy, labels=[(seed + i) % 10 for i in range(batch)])
            assert torch.isfinite(out).all()
            assert policy.report().num_computed <= calls


def test_tolerance_mode_trades_calls_for_error(flow):
    model, sched, prof = flow
    x = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(7))
    full = etcdiff.sample(model, sched, x, 20, NoCache(), labels=[3])
    calls, errs = [], []
    for tol in (0.1, 1.0, 10.0):
        policy = ETCPlus(prof, tolerance=tol * prof["tolerance"])
        out = etcdiff.sample(model, sched, x, 20, policy, labels=[3])
        calls.append(policy.report().num_computed)
        errs.append((out - full).pow(2).mean().sqrt().item())
    assert calls[0] >= calls[1] >= calls[2] and calls[0] > calls[2]
    assert errs[0] <= errs[2]


def test_a_spike_in_a_samples_output_forces_a_real_call():
    sched = FlowMatchEulerDiscreteScheduler(shift=1.0)
    base = torch.linspace(-1, 1, 256).reshape(1, 1, 16, 16)

    def smooth(x, t):
        s = float(t) / 1000
        return base * (1 + s * s) + 0.1 * x

    trajs = record(smooth, sched, 20, [1, 2], batch=2)
    prof = fit_etc_plus(trajs, max_window=6)
    x = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(5))
    plain = ETCPlus(prof, calls=10)
    etcdiff.sample(smooth, sched, x, 20, plain)
    steps = plain.report().computed_steps
    c = next(s for s in steps[2:] if s + 1 not in steps and s + 1 < 20)
    spike_t = sched.timesteps[c].item()

    def spiky(x, t):
        return smooth(x, t) + (5.0 if abs(float(t) - spike_t) < 1e-3 else 0.0)

    adaptive = ETCPlus(prof, calls=10, spike=prof["spike"])  # under a budget the rule runs where a level is given
    etcdiff.sample(spiky, sched, x, 20, adaptive)
    rep = adaptive.report()
    assert c in rep.computed_steps and c + 1 in rep.computed_steps
    assert rep.err[c] > adaptive.spike
    assert rep.num_computed <= 10
    assert adaptive.params()["spike"] == prof["spike"]


def test_under_a_budget_alone_the_plan_runs_as_planned_through_a_spike():
    sched = FlowMatchEulerDiscreteScheduler(shift=1.0)
    base = torch.linspace(-1, 1, 256).reshape(1, 1, 16, 16)

    def smooth(x, t):
        return base * (1 + (float(t) / 1000) ** 2) + 0.1 * x

    prof = fit_etc_plus(record(smooth, sched, 20, [1, 2], batch=2), max_window=6)
    x = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(5))
    planned = ETCPlus(prof, calls=10).planned_steps(20)
    c = next(s for s in planned[2:] if s + 1 not in planned and s + 1 < 20)
    spike_t = sched.timesteps[c].item()

    def spiky(x, t):
        return smooth(x, t) + (5.0 if abs(float(t) - spike_t) < 1e-3 else 0.0)

    policy = ETCPlus(prof, calls=10)
    etcdiff.sample(spiky, sched, x, 20, policy)
    rep = policy.report()
    assert rep.err[c] > prof["spike"]  # the sample spiked past the calibrated level ...
    assert list(rep.computed_steps) == planned  # ... and the plan ran as planned
    assert math.isinf(policy.spike) and policy.params()["spike"] is None
    # the tolerance mode, a tolerance with the budget, and adapt_trend (which acts after spikes) keep the level
    for kept in (ETCPlus(prof), ETCPlus(prof, calls=10, tolerance=prof["tolerance"]),
                 ETCPlus(prof, calls=10, adapt_trend=True)):
        assert kept.spike == prof["spike"]


def test_under_a_budget_a_sample_that_stays_hard_keeps_its_calls_for_the_end():
    # From mid-run on the model wobbles in a direction the calibrated trend cannot follow, so every estimate
    # spikes. Forcing the next step on each spike ran steps back to back (9, 10, 11, 12 at calls=10) and left the
    # end to long windows; the spike now shortens the next window only by how much the sample misses more than
    # on its running average, so the budget still reaches the end.
    sched = FlowMatchEulerDiscreteScheduler(shift=1.0)
    base = torch.linspace(-1, 1, 256).reshape(1, 1, 16, 16)
    other = torch.cos(torch.linspace(0, 9, 256)).reshape(1, 1, 16, 16)

    def smooth(x, t):
        s = float(t) / 1000
        return base * (1 + s * s) + 0.1 * x

    def wobbly(x, t):
        s = float(t) / 1000
        return smooth(x, t) + (0.3 * math.sin(40 * s) * other if s < 0.6 else 0.0)

    prof = fit_etc_plus(record(smooth, sched, 20, [1, 2], batch=2), max_window=6)
    x = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(5))
    full = etcdiff.sample(wobbly, sched, x, 20, NoCache())
    for calls in (6, 8, 10):
        policy = ETCPlus(prof, calls=calls, spike=prof["spike"])
        out = etcdiff.sample(wobbly, sched, x, 20, policy)
        rep = policy.report()
        steps = rep.computed_steps
        assert max(rep.err[s] for s in steps[2:]) > policy.spike  # the wobble does spike
        runs = [b - a for a, b in zip(steps[2:], steps[3:])]
        assert all(r > 1 or q > 1 for q, r in zip(runs, runs[1:]))  # never three real steps in a row
        assert (out - full).pow(2).mean().sqrt() < 0.06  # forcing on every spike: 0.31, 0.031, 0.128


def test_a_persistent_hardness_leaves_the_budget_plan_as_it_is(flow):
    # Only the spike's excess over the sample's running hardness prices the window ahead: with no excess the
    # next real step is the plan's own, whatever the ratio.
    _, _, prof = flow
    policy = ETCPlus(prof, calls=8, spike=prof["spike"])
    policy.begin(20)
    for state, left in (((0, 2), 6), ((2, 5), 4), ((-1, 0), 7)):
        policy._state = state
        for ratio in (3.0, 7.0):
            assert policy._spike_next(state[1], ratio, left - 1, ratio) == policy._next(left, state)
    policy._state = (2, 5)
    assert policy._spike_next(5, 8.0, 3, 1.0) == 6  # a fresh spike of 8x the calibrated error: run the next step


def test_cfg_branch_streams_combine_into_the_guided_estimate(flow):
    _, _, prof = flow
    policy = ETCPlus(prof, calls=8)
    policy.begin(20)
    cond, uncond = policy.new_stream(), policy.new_stream()
    gen = torch.Generator().manual_seed(0)
    for t in range(2):
        c, u = torch.randn(2, 4, generator=gen), torch.randn(2, 4, generator=gen)
        cond.record(t, c)
        uncond.record(t, u)
        policy.observe(t, u + 3.0 * (c - u), True)
    combined = uncond.predict(3) + 3.0 * (cond.predict(3) - uncond.predict(3))
    assert torch.allclose(combined, policy.predict(3), atol=1e-5)


def test_profile_survives_json(flow):
    model, sched, prof = flow
    again = json.loads(json.dumps(prof))
    x = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    a, b = ETCPlus(prof, calls=7), ETCPlus(again, calls=7)
    out_a = etcdiff.sample(model, sched, x, 20, a, labels=[1])
    out_b = etcdiff.sample(model, sched, x, 20, b, labels=[1])
    assert a.report().computed_steps == b.report().computed_steps and torch.equal(out_a, out_b)


def test_ddim_eps_prediction_without_sigmas():
    model, sched, _ = hm.gmm_ddim()
    trajs = record(model, sched, 20, [100, 101], batch=3)
    prof = fit_etc_plus(trajs, max_window=5)
    assert all(w > 0 for w in prof["weights"])
    x = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    full = etcdiff.sample(model, sched, x, 20, NoCache())
    policy = ETCPlus(prof, calls=8)
    out = etcdiff.sample(model, sched, x, 20, policy)
    assert policy.report().num_computed <= 8
    assert (out - full).abs().max().item() < 0.05


@pytest.mark.parametrize("kwargs, message", [
    ({"calls": 0}, "calls must be a positive integer"),
    ({"calls": 2.5}, "calls must be a positive integer"),
    ({"calls": True}, "calls must be a positive integer"),
    ({"tolerance": -1.0}, "tolerance must be a finite number"),
    ({"tolerance": float("nan")}, "tolerance must be a finite number"),
    ({"spike": 0.5}, "spike must be a finite number >= 1"),
])
def test_bad_settings_raise_one_clear_line(flow, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ETCPlus(flow[2], **kwargs)


def test_bad_profiles_step_counts_and_budgets(flow, tmp_path):
    prof = flow[2]
    with pytest.raises(ValueError, match="profile must be the dict that fit_etc_plus returns"):
        ETCPlus({"method": "etc"})
    with pytest.raises(ValueError, match="profile file not found"):
        ETCPlus(tmp_path / "missing.json")
    path = tmp_path / "p.json"
    path.write_text(json.dumps(prof))
    ETCPlus(path).begin(20)
    with pytest.raises(ValueError, match="fitted for 20 steps but the run has 30"):
        ETCPlus(prof).begin(30)
    with pytest.raises(ValueError, match=r"calls=2 cannot cover 20 steps .* give calls >= 4"):
        ETCPlus(prof, calls=2).begin(20)
    with pytest.raises(ValueError, match="non-empty list"):
        fit_etc_plus([])
    with pytest.raises(ValueError, match="max_window must be an integer >= 2"):
        fit_etc_plus(record(*flow[:2], 20, [1], batch=1), max_window=1)
    short = scripted([1.0, 2.0, 3.0], [1.0, 0.5, 0.2, 0.0])
    longer = scripted([1.0, 2.0, 3.0, 4.0], [1.0, 0.7, 0.5, 0.2, 0.0])
    with pytest.raises(ValueError, match="trajectory 1 has 4 outputs"):
        fit_etc_plus([short, longer])


def _budget_through_the_hook(tiny, calls_per_step, budget):
    from etcdiff.integration.step.recording import record_pipeline

    trajs = [record_pipeline(tiny.pipe, **{**tiny.call_kwargs, "num_inference_steps": 10, "output_type": "latent",
                                           "generator": torch.Generator().manual_seed(s)})[0] for s in (11, 12)]
    prof = fit_etc_plus(trajs, max_window=4)
    full = tiny.run(10)
    for batch in (1, 2):
        extra = tiny.batch_kwargs(batch) if batch > 1 else {}
        with etcdiff.enabled(tiny.pipe, ETCPlus(prof, calls=budget, spike=1.0)):
            out = tiny.run(10, **extra)
            rep = etcdiff.last_report(tiny.pipe)
        assert torch.isfinite(out).all()
        assert rep.num_computed <= budget and rep.model_calls <= calls_per_step * budget
        if batch == 1:
            assert (out - full).abs().mean() < (full.abs().mean() * 0.5)


@pytest.mark.parametrize("name", ["flux_true_cfg", "sd3"])
def test_budget_through_the_hook_on_cfg_layouts(name):
    from tiny_pipelines import FACTORIES

    tiny = FACTORIES[name]()
    _budget_through_the_hook(tiny, tiny.calls_per_step, budget=5)


def test_budget_through_the_hook_on_the_digits_pipeline():
    from etcdiff.digits import DigitsPipeline
    from etcdiff.integration.step.recording import record_pipeline

    pipe = DigitsPipeline.from_embedded()
    pipe.set_progress_bar_config(disable=True)
    kw = dict(num_inference_steps=12, guidance_scale=2.0, output_type="pt")
    trajs = [record_pipeline(pipe, prompt=list("0123"), generator=torch.Generator().manual_seed(s), **kw)[0] for s in (40, 41)]
    prof = fit_etc_plus(trajs, max_window=4)
    with etcdiff.enabled(pipe, make_policy("etc-plus", profile=prof, calls=5)):
        for prompt in ("3", ["1", "7"], list("0123456789")):
            for seed in range(3):
                out = pipe(prompt=prompt, generator=torch.Generator().manual_seed(seed), **kw).images
                rep = etcdiff.last_report(pipe)
                assert torch.isfinite(out).all() and rep.num_computed <= 5 and rep.model_calls <= 5


def _run_steps(policy, model, sched, seed=5, label=2):
    x = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(seed))
    etcdiff.sample(model, sched, x, 20, policy, labels=[label])
    return list(policy.report().computed_steps)


def test_a_budget_runs_the_measured_best_plan_within_it_and_never_more_calls(flow):
    from etcdiff.policies.step.etc_plus.budgets import ranked_plan

    model, sched, prof = flow
    errors = {"4": -3.0, "5": -2.5, "6": -3.5, "7": -3.4, "8": -3.5}
    ranked = {**prof, "budget_errors": errors}
    # the lowest measured error among the budgets <= calls (the larger of a tie); an unmeasured budget as given
    assert [ranked_plan(ranked, b)[0] for b in (3, 4, 5, 6, 7, 8, 9, None)] == [3, 4, 4, 6, 6, 8, 9, None]
    policy = ETCPlus(ranked, calls=7)
    assert policy.params()["calls"] == 7 and policy.calls == 6
    assert _run_steps(policy, model, sched) == _run_steps(ETCPlus(prof, calls=6), model, sched)
    for calls in range(4, 10):
        assert ETCPlus(ranked, calls=calls, spike=1.0).calls <= calls
        policy = ETCPlus(ranked, calls=calls, spike=1.0)
        assert len(_run_steps(policy, model, sched, seed=calls)) <= calls


def test_a_budget_runs_the_measured_closer_of_the_free_plan_and_the_one_computing_the_last_step(flow):
    from etcdiff.policies.step.etc_plus.budgets import ranked_plan

    model, sched, prof = flow
    free = _run_steps(ETCPlus(prof, calls=5), model, sched)
    assert free[-1] != 19  # on this model the free 5-call plan estimates the last step
    last = _run_steps(ETCPlus(prof, calls=5, last_step=True), model, sched)
    assert len(last) == 5 and last[0] == 0 and last[-1] == 19
    measured = {**prof, "budget_errors": {"4": -3.0, "5": -3.2}, "budget_errors_last": {"4": -3.1, "5": -4.0}}
    assert ranked_plan(measured, 5) == (5, True) and ranked_plan(measured, 4) == (4, True)
    assert ranked_plan(measured, 5, last_step=False) == (5, False) and ranked_plan(measured, 6) == (6, False)
    assert _run_steps(ETCPlus(measured, calls=5), model, sched) == last
    assert _run_steps(ETCPlus(measured, calls=5, last_step=False), model, sched) == free
    assert ETCPlus(measured, calls=5).params()["last_step"] is None
    with pytest.raises(ValueError, match="last_step must be"):
        ETCPlus(prof, calls=5, last_step="yes")


def test_a_bigger_budget_replaces_a_smaller_plan_only_where_the_held_out_runs_clearly_prefer_it(flow):
    from etcdiff.policies.step.etc_plus.budgets import ranked_plan

    _, _, prof = flow
    logs = {"4": [-3.0, -3.2, -2.8, -3.0], "5": [-3.1, -3.0, -3.0, -3.1],  # 5: lower on average, within the noise
            "6": [-3.6, -3.5, -3.4, -3.7], "7": [-3.5, -3.6, -3.6, -3.5]}  # 6: clearly lower than 4; 7: not than 6
    means = {k: sum(v) / len(v) for k, v in logs.items()}
    measured = {**prof, "budget_errors": means, "budget_logs": logs}
    assert [ranked_plan(measured, b) for b in (4, 5, 6, 7)] == [(4, False), (4, False), (6, False), (6, False)]
    last = {"5": [-3.4, -3.4, -3.3, -3.4]}  # clearly lower than the 4-call plan: kept from 5 calls on
    both = {**measured, "budget_errors_last": {"5": -3.375}, "budget_logs_last": last}
    assert [ranked_plan(both, b) for b in (4, 5, 6, 7)] == [(4, False), (5, True), (6, False), (6, False)]
    # without the per-run errors (an older profile, or too few held-out runs) the least mean error
    assert ranked_plan({**prof, "budget_errors": means}, 5) == (5, False)
    # a stricter margin (standard errors of the paired differences) keeps the smaller plan where the lead is thin
    thin = {"4": [-3.0] * 4, "5": [-3.2, -3.0, -3.1, -2.95]}  # 5 ahead by 1.1 standard errors, not by 2
    thin_profile = {**prof, "budget_errors": {k: sum(v) / 4 for k, v in thin.items()}, "budget_logs": thin}
    assert ranked_plan(thin_profile, 5) == (5, False) and ranked_plan(thin_profile, 5, margin=2.0) == (4, False)


def test_a_budget_runs_the_candidate_fit_calibration_chose_for_it(flow):
    from etcdiff.policies.step.etc_plus.budgets import budgets_served

    model, sched, prof = flow
    other = fit_etc_plus(record(model, sched, 20, [100, 101]), max_window=5, corrections=False)
    assert prof["corrections"] == "auto"
    diff = {k: v for k, v in other.items() if v != prof[k]}
    served = {**prof, "budget_fits": {"fits": {"plain": diff}, "serve": {"6": "plain", "7": "plain"}}}
    for calls, want in ((5, prof), (6, other), (7, other), (8, prof), (None, prof)):
        policy, alone = ETCPlus(served, calls=calls), ETCPlus(want, calls=calls)
        assert policy.profile["corrections"] == want["corrections"] and policy._gains == alone._gains
        assert _run_steps(policy, model, sched) == _run_steps(alone, model, sched)
    # the profile as calibrated stays at hand (to save, or to build other budgets from), apart from the budget's fit
    policy = ETCPlus(served, calls=6)
    assert policy.calibrated is served and policy.profile["corrections"] is False
    assert ETCPlus(policy.calibrated, calls=5).profile["corrections"] == "auto"
    # a ceiling the measured ranking lowers runs the fit of the budget it lowers to
    ranked = {**served, "budget_errors": {"5": -3.0, "6": -3.5, "7": -3.4}}
    assert ETCPlus(ranked, calls=7).calls == 6 and ETCPlus(ranked, calls=7).profile["corrections"] is False
    # another step count plans from the fit chosen over all budgets, resampled (the per-budget choice was made
    # at the calibration's step count)
    def at_15(policy):
        x = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(3))
        with pytest.warns(UserWarning, match="fitted at 20 steps"):
            etcdiff.sample(model, sched, x, 15, policy, labels=[2])
        return policy.profile["resampled_from"], policy.profile["corrections"], list(policy.report().computed_steps)

    overall = at_15(ETCPlus(prof, calls=6))
    assert at_15(ETCPlus(served, calls=6)) == overall and overall[:2] == (20, "auto")
    assert budgets_served({"6": "plain", "7": "plain", "9": "plain", "10": "x"}) == (
        "calls 6-7 with plain; calls 9 with plain; calls 10 with x")


def test_the_calibrated_tolerance_scale_tightens_the_planned_tolerance(flow):
    model, sched, prof = flow
    scaled = ETCPlus({**prof, "tolerance_scale": 0.25}, tolerance=prof["tolerance"])
    assert _run_steps(scaled, model, sched) == _run_steps(ETCPlus(prof, tolerance=0.25 * prof["tolerance"]), model, sched)
    assert len(_run_steps(scaled, model, sched)) > len(_run_steps(ETCPlus(prof), model, sched))


def test_a_profile_refuses_another_solver_family_and_warns_on_another_order():
    from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

    from etcdiff.calibration.runs import record_denoiser_runs

    model, euler, _ = hm.gmm_flow()
    noises = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    prof = fit_etc_plus(record_denoiser_runs(model, euler, noises, 12), max_window=4)
    assert prof["scheduler"] == {"class": "FlowMatchEulerDiscreteScheduler", "family": "euler"}
    flow_kw = {"prediction_type": "flow_prediction", "use_flow_sigmas": True, "flow_shift": 3.0}
    with pytest.raises(ValueError, match=r"calibrated with FlowMatchEulerDiscreteScheduler \(euler\) and now "
                                         r"UniPCMultistepScheduler \(unipc\).*Calibrate etc-plus with the scheduler"):
        etcdiff.sample(model, UniPCMultistepScheduler(**flow_kw), noises[:1], 12, ETCPlus(prof, calls=6))
    dpm2 = DPMSolverMultistepScheduler(solver_order=2, **flow_kw)
    prof = fit_etc_plus(record_denoiser_runs(model, dpm2, noises, 12), max_window=4)
    assert prof["scheduler"]["family"] == "dpm-solver-multistep" and prof["scheduler"]["solver_order"] == 2
    with warnings.catch_warnings():  # the calibration's own scheduler: no warning
        warnings.simplefilter("error", RuntimeWarning)
        etcdiff.sample(model, dpm2, noises[:1], 12, ETCPlus(prof, calls=6))
    with pytest.warns(RuntimeWarning, match="solver_order 2 -> 3"):
        etcdiff.sample(model, DPMSolverMultistepScheduler(solver_order=3, **flow_kw), noises[:1], 12,
                       ETCPlus(prof, calls=6))


class _Off(NoCache):
    def __init__(self, error, last=19):
        super().__init__()
        self.error, self.last = error, last

    def planned_steps(self, num_steps):
        return [0, self.last]

    def report(self):  # the steps a run computed: its plan
        return SimpleNamespace(computed_steps=self.planned_steps(None))


def test_refine_measures_every_budget_and_scales_the_tolerance_until_it_holds():
    from etcdiff.calibration.etc_plus.refine import budget_ladder, measured_budgets
    from etcdiff.calibration.etc_plus.tolerance import tolerance_scale
    from etcdiff.calibration.selection import HeldOut

    assert budget_ladder(20) == [4, 5, 6, 7, 8, 9, 10] and budget_ladder(28) == list(range(6, 15))

    def build(fitted, calls):  # tolerance mode lands at twice its planned tolerance; budgets below 5 cannot plan
        if calls is None:
            return _Off(2.0 * fitted["profile"]["tolerance"] * fitted["profile"].get("tolerance_scale", 1.0))
        if calls < 5:
            raise ValueError("too few calls")
        if fitted.get("last_step"):  # computing the last step halves the error
            return _Off(0.05 / calls)
        return _Off(0.1 / calls, last=19 if calls >= 8 else 17)  # the free plans below 8 calls estimate it

    fits = [{"profile": {"tolerance": 0.5}}, {"profile": {"tolerance": 1.0}}]
    refs = {i: torch.ones(1, 4) for i in range(4)}
    runs = []
    held = HeldOut([[0, 1], [2, 3]], refs, lambda p, i: runs.append(i) or refs[i] + p.error, build, fits,
                   {10: [-9.0, -9.0, -9.0, -9.0]})
    logs, last_logs, caps, _ = measured_budgets(held, 20)
    assert caps == {}  # not asked for
    errors = {k: sum(v) / len(v) for k, v in logs.items()}
    last = {k: sum(v) / len(v) for k, v in last_logs.items()}
    assert list(errors) == list(last) == ["5", "6", "7", "8", "9", "10"] and errors["10"] == last["10"] == -9.0
    assert logs["5"] == pytest.approx([math.log(0.1 / 5)] * 4, abs=1e-4)  # one per held-out run, paired
    assert errors["5"] == pytest.approx(math.log(0.1 / 5), abs=1e-4)
    assert last["5"] == pytest.approx(math.log(0.05 / 5), abs=1e-4)  # measured: the free plan skips the last step
    assert last["8"] == errors["8"]  # reused: every free plan computes it
    assert len(runs) == 4 * (5 + 3)  # the free plans at 5-9 calls, the forced ones at 5-7
    scale, record = tolerance_scale(held)
    assert scale == pytest.approx(0.45) and record["met"]  # the loosest scale that held
    assert [{k: p[k] for k in ("scale", "within", "edge")} for p in record["passes"]] == [
        {"scale": 1.0, "within": 0.0, "edge": 2.0},  # 2x the target at 1
        {"scale": 0.45, "within": 1.0, "edge": 0.9},
        {"scale": 0.67082, "within": 0.0, "edge": 1.3416},  # halfway: > 0.5
        {"scale": 0.54943, "within": 0.0, "edge": 1.0989}]
    assert record["passes"][0]["over"] == [[i, 2.0] for i in range(4)]  # every run beyond, at its ratio
    assert "over" not in record["passes"][1] and "probed" not in record  # none beyond; no probed runs
    assert "replay_miss" not in record  # no real runs beside replays: nothing to compare


def _scaled_tolerance_mode(ratio):
    """Held-out runs whose tolerance mode ends at ``ratio(scale)`` times the target (1.0) under a planning scale."""
    from etcdiff.calibration.selection import HeldOut

    refs = {i: torch.ones(1, 4) for i in range(4)}
    build = lambda fitted, calls: _Off(ratio(fitted["profile"].get("tolerance_scale", 1.0)))  # noqa: E731
    return HeldOut([[0, 1], [2, 3]], refs, lambda p, i: refs[i] + p.error, build, [{"profile": {"tolerance": 1.0}}] * 2)


def test_once_a_tolerance_scale_holds_the_passes_left_try_looser_ones_halfway_to_the_one_that_failed():
    """The first scale that holds (0.9 over the ratio at the share's edge) can be tighter than needed; the passes
    left bisect (geometrically) towards the scale that failed and keep the loosest that held. Here the tolerance
    mode ends at half the target up to a scale of 0.8, and at twice it above."""
    from etcdiff.calibration.etc_plus.tolerance import tolerance_scale

    scale, record = tolerance_scale(_scaled_tolerance_mode(lambda s: 0.5 if s <= 0.8 else 2.0))
    assert [p["scale"] for p in record["passes"]] == [1.0, 0.45, 0.67082, 0.81904]
    assert [p["edge"] for p in record["passes"]] == [2.0, 0.5, 0.5, 2.0]
    assert scale == pytest.approx(math.sqrt(0.45)) and record["met"]


def test_a_looser_tolerance_scale_is_kept_only_with_the_margin_the_search_aims_for():
    """A halfway scale under which the runs end just within the target is not kept: the search aims the run at
    the share's edge at 0.9 of it, and on a few runs one that ends at 0.98 says little of the next images. Here the
    tolerance mode ends at 1.25 times its planned tolerance: 0.72 holds at 0.9, 0.78 at 0.98 is not kept."""
    from etcdiff.calibration.etc_plus.tolerance import tolerance_scale

    scale, record = tolerance_scale(_scaled_tolerance_mode(lambda s: 1.25 * s))
    assert [p["scale"] for p in record["passes"]] == [1.0, 0.72, 0.84853, 0.78163]
    assert [p["within"] for p in record["passes"]] == [0.0, 1.0, 0.0, 1.0]  # the last within the target, ...
    assert record["passes"][-1]["edge"] == pytest.approx(0.977, abs=1e-3)  # ... but not by the margin
    assert scale == pytest.approx(0.72) and record["met"]


def test_a_tolerance_pass_that_moved_nothing_doubles_the_next_step():
    """Where tightening the scale changes no plan at the share's edge (here the tolerance mode ends at 1.2 times
    the target for every scale above 0.3), the edge's ratio says nothing of how far to go: each pass that moved
    nothing doubles the last step in log scale, so the fourth pass reaches a scale that holds (stepping by the
    ratio alone: 1, 0.75, 0.5625, 0.4219, none held). An edge that moved at all, even a little, keeps the
    ratio's step."""
    from etcdiff.calibration.etc_plus.tolerance import tolerance_scale

    scale, record = tolerance_scale(_scaled_tolerance_mode(lambda s: 0.5 if s <= 0.3 else 1.2))
    assert [p["scale"] for p in record["passes"]] == pytest.approx([1.0, 0.75, 0.75 ** 3, 0.75 ** 7], abs=1e-5)
    assert [p["within"] for p in record["passes"]] == [0.0, 0.0, 0.0, 1.0]
    assert scale == pytest.approx(0.75 ** 7) and record["met"]
    scale, record = tolerance_scale(_scaled_tolerance_mode(lambda s: 0.5 if s <= 0.3 else 1.2 + 0.01 * s))
    second = 0.9 / 1.21  # the first edge: 1.21
    third = second * 0.9 / (1.2 + 0.01 * second)
    assert [p["scale"] for p in record["passes"]][:3] == pytest.approx([1.0, second, third], abs=1e-5)


def test_the_tolerance_check_of_replays_measures_how_far_they_miss_the_chosen_plans_real_runs():
    """Where the held-out runs are replays, the real runs of the tolerance check are compared run by run with
    their replays: ``replay_miss`` is the rms log ratio of the real to the replayed error (here 3 times)."""
    from etcdiff.calibration.etc_plus.tolerance import tolerance_scale
    from etcdiff.calibration.selection import HeldOut, RealRuns

    def build(fitted, calls):  # the tolerance mode lands at a tenth of the target in replays
        return _Off(0.1 * fitted["profile"]["tolerance"] * fitted["profile"].get("tolerance_scale", 1.0))

    fits = [{"profile": {"tolerance": 1.0}}, {"profile": {"tolerance": 1.0}}]
    refs = {i: torch.ones(1, 4) for i in range(4)}
    replay = lambda p, i: refs[i] + p.error  # noqa: E731
    real_runs = []
    real = RealRuns(lambda p, i: real_runs.append(i) or refs[i] + 3.0 * p.error, {3: refs[3]})
    held = HeldOut([[0, 1], [2, 3]], refs, replay, build, fits, {}, real=real)
    scale, record = tolerance_scale(held)
    assert scale == 1.0 and record["met"] and real_runs == [3]  # only the run held for real, once
    assert record["passes"] == [{"scale": 1.0, "within": 1.0, "within_real": 1.0, "edge": 0.3,
                                 "calls": 2.0}]  # the real runs'
    assert record["replay_miss"] == pytest.approx(math.log(3.0), abs=1e-4)


def test_runs_that_computed_every_step_do_not_count_as_a_replay_that_matched():
    """A plan that computes every step replays exactly, so those runs say nothing of how far replays miss: with
    only such runs there is no ``replay_miss`` (a 0.00 read as a perfect match before); beside one that skipped,
    only that one counts."""
    from etcdiff.calibration.etc_plus.tolerance import tolerance_scale
    from etcdiff.calibration.selection import HeldOut, RealRuns

    refs = {i: torch.ones(1, 4) for i in range(4)}
    fits = [{"profile": {"tolerance": 1.0}}, {"profile": {"tolerance": 1.0}}]

    def check(errors):  # the tolerance mode's error on each run, replayed; for real 3 times that
        build = lambda fitted, calls: _Off(0.0)  # noqa: E731
        replay = lambda p, i: refs[i] + errors[i]  # noqa: E731
        real = RealRuns(lambda p, i: refs[i] + 3.0 * errors[i], {2: refs[2], 3: refs[3]})
        return tolerance_scale(HeldOut([[0, 1], [2, 3]], refs, replay, build, fits, {}, real=real))[1]

    everything = check({0: 0.0, 1: 0.0, 2: 0.0, 3: 0.0})
    assert everything["met"] and everything["passes"][0]["within_real"] == 1.0
    assert "replay_miss" not in everything
    one = check({0: 0.0, 1: 0.0, 2: 0.0, 3: 0.1})
    assert one["replay_miss"] == pytest.approx(math.log(3.0), abs=1e-4)


def test_the_tolerance_check_also_holds_out_the_probed_runs_one_by_one():
    """The choice's folds leave the probed runs out; the tolerance's share is checked on them too, each with a fit
    on the other runs (here run 2 lands at 3 times the target at the first scale, so the scale comes down)."""
    from types import SimpleNamespace

    from etcdiff.calibration.etc_plus.tolerance import tolerance_scale
    from etcdiff.calibration.selection import HeldOut, probed_held_out

    records = [SimpleNamespace(index=i, probes={1: [1.0]} if i < 3 else None) for i in range(5)]
    fitted_on = []

    def fit(runs):
        fitted_on.append([r.index for r in runs])
        return {"profile": {"tolerance": 1.0}}

    def build(fitted, calls):
        return _Off(fitted["profile"]["tolerance"] * fitted["profile"].get("tolerance_scale", 1.0))

    refs = {i: torch.ones(1, 4) for i in range(5)}
    made = []
    run = lambda p, i: made.append(i) or refs[i] + getattr(p, "error", 0.0) * (3.0 if i == 2 else 0.5)  # noqa: E731
    probed = probed_held_out(records, [[3, 4]], fit, build, run)
    assert probed.folds == [[0], [1], [2]] and fitted_on == [[1, 2, 3, 4], [0, 2, 3, 4], [0, 1, 3, 4]]
    assert made == [0, 1, 2]  # one full run each, for its reference
    held = HeldOut([[3, 4]], refs, run, build, [{"profile": {"tolerance": 1.0}}], probed=lambda: probed)
    scale, record = tolerance_scale(held)
    assert record["runs"] == 5 and record["met"]
    assert record["passes"][0] == {"scale": 1.0, "within": 0.8, "edge": 3.0, "calls": 2.0, "over": [[2, 3.0]]}
    assert scale == pytest.approx(0.3) and record["probed"] == [0, 1, 2]  # the run beyond is a probed one
    alone = [SimpleNamespace(index=i, probes={1: [1.0]} if i == 0 else None) for i in range(5)]
    assert probed_held_out(alone, [[1, 2], [3, 4]], fit, build, run) is None  # its fit would have no probes left
    assert tolerance_scale(HeldOut([[3, 4]], refs, run, build, [{"profile": {"tolerance": 1.0}}]))[1]["runs"] == 2


def test_a_tolerance_share_that_never_held_is_said():
    from etcdiff.calibration.etc_plus.tolerance import tolerance_scale, unmet_tolerance
    from etcdiff.calibration.selection import HeldOut

    def build(fitted, calls):  # run 1 ends at 5 times the target whatever the scale
        return _Off(fitted["profile"].get("tolerance_scale", 1.0))

    refs = {i: torch.ones(1, 4) for i in range(2)}
    run = lambda p, i: refs[i] + (5.0 if i == 1 else 0.5 * getattr(p, "error", 0.0))  # noqa: E731
    scale, check = tolerance_scale(HeldOut([[0, 1]], refs, run, build, [{"profile": {"tolerance": 1.0}}]))
    assert not check["met"] and len(check["passes"]) == 4 and check["runs"] == 2
    note = unmet_tolerance(check)
    assert note.startswith("the tolerance mode ended within its target on 50 % of the 2 held-out calibration runs")
    assert "calibrate on more prompts" in note
    assert unmet_tolerance({"share": 0.95, "passes": [{"scale": 1.0, "within": 1.0}], "met": True}) is None
    replays = {"share": 0.95, "passes": [{"scale": 0.5, "within": 1.0}], "met": False}  # real runs not checked there
    assert "which no real run checked" in unmet_tolerance(replays)


def test_a_trend_cap_is_kept_where_it_is_as_close_on_average_and_closer_in_the_worst_runs():
    from etcdiff.calibration.etc_plus.refine import measured_budgets, robust_choice
    from etcdiff.calibration.selection import HeldOut

    # equal means (the noise of 4 runs hides the 0.1 gap): the option without the outlier run wins; a clearly
    # higher mean is never kept, however even its runs; ties keep the first key (the uncapped plan)
    steady, spiky, high = [-3.0, -3.0, -3.0, -3.0], [-3.6, -3.6, -3.6, -1.0], [-2.0, -2.0, -2.0, -2.0]
    assert robust_choice({None: spiky, 0.5: steady}) == 0.5
    assert robust_choice({None: [-4.0, -4.1, -3.9, -4.0], 0.0: high}) is None
    assert robust_choice({None: steady, 0.5: list(steady)}) is None

    def build(fitted, calls):  # the cap halves the error of the plans of 8 or more calls, and changes nothing below
        if calls < 5:
            raise ValueError("too few calls")
        capped = fitted.get("trend_cap") is not None and calls >= 8
        return _Off((0.05 if capped else 0.1) / calls)

    refs = {i: torch.ones(1, 4) for i in range(4)}
    held = HeldOut([[0, 1], [2, 3]], refs, lambda p, i: refs[i] + p.error, build, [{"profile": {}}] * 2, {})
    logs, _, caps, _ = measured_budgets(held, 20, (0.5, 0.0))
    assert caps == {"8": 0.5, "9": 0.5, "10": 0.5}  # the first of equal caps; none where capping changes nothing
    assert logs["8"] == pytest.approx([math.log(0.05 / 8)] * 4, abs=1e-4)  # the budget's errors are the kept plan's
    assert logs["7"] == pytest.approx([math.log(0.1 / 7)] * 4, abs=1e-4)


def test_the_policy_runs_the_trend_cap_calibration_chose_for_its_budget(flow):
    model, sched, prof = flow
    capped = {**prof, "budget_trend_caps": {"6": 0.0}}
    assert ETCPlus(capped, calls=6).trend_cap == 0.0 and ETCPlus(capped, calls=7).trend_cap is None
    assert ETCPlus(capped, calls=6, trend_cap=0.5).trend_cap == 0.5  # the user's cap wins
    assert ETCPlus(capped, calls=6, last_step=True).trend_cap is None  # the last-step plans were measured uncapped
    assert ETCPlus(capped, calls=6).params()["trend_cap"] is None  # params keep what was asked for
    assert _run_steps(ETCPlus(capped, calls=6), model, sched) == _run_steps(ETCPlus(prof, calls=6), model, sched)
    x = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    a = etcdiff.sample(model, sched, x, 20, ETCPlus(capped, calls=6), labels=[2])
    b = etcdiff.sample(model, sched, x, 20, ETCPlus(prof, calls=6, trend_cap=0.0), labels=[2])
    assert torch.equal(a, b) and not torch.equal(a, etcdiff.sample(model, sched, x, 20, ETCPlus(prof, calls=6),
                                                                   labels=[2]))


def test_grid_positions_map_steps_through_the_sigmas():
    from etcdiff.policies.step.etc_plus.resample import grid_positions

    pos = grid_positions([1.0, 0.75, 0.5, 0.25], [1.0, 0.5, 0.375])
    assert pos.tolist() == pytest.approx([0.0, 2.0, 2.5, 4.0])
    with pytest.raises(ValueError, match="decreasing sigmas"):
        grid_positions([1.0, 0.5], [0.5, 1.0])


def test_resampling_onto_the_calibration_grid_gives_back_its_window_errors():
    from etcdiff.calibration.runs import record_denoiser_runs
    from etcdiff.policies.step.etc_plus.resample import resample_profile

    model, sched, _ = hm.gmm_flow()
    noises = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    prof = fit_etc_plus(record_denoiser_runs(model, sched, noises, 12), max_window=4, corrections=False)
    same = resample_profile(prof, prof["sigmas"])
    assert same["num_steps"] == 12 and same["axis"] == pytest.approx(prof["axis"])
    assert same["weights"] == pytest.approx(prof["weights"]) and same["triplets"] == []
    fitted = {(cp, c, m): e for cp, c, m, e in prof["segments"]}
    again = {(cp, c, m): e for cp, c, m, e in same["segments"]}
    checked = 0
    for (cp, c, m), e in fitted.items():  # the sum over a window telescopes back to it where errors grow with it
        rows = [fitted[(cp, c, k)] for k in range(c + 2, m + 1)]
        if all(b >= a for a, b in zip(rows, rows[1:])) and (cp < 0 or cp >= c - 4):
            assert again[(cp, c, m)] == pytest.approx(e, rel=1e-9, abs=1e-12)
            checked += 1
    assert checked > len(fitted) // 2
    # a fit with gains keeps the windows' errors under the plain trend too: what a resampled run estimates with
    trajs = record_denoiser_runs(model, sched, noises, 12)
    with_gains = fit_etc_plus(trajs, max_window=4, corrections=True)
    assert prof["plain_segments"] is None and with_gains["segments"] != prof["segments"]
    flat = lambda rows: [v for row in rows for v in row]  # noqa: E731
    assert flat(with_gains["plain_segments"]) == pytest.approx(flat(prof["segments"]), rel=1e-9, abs=1e-12)


def test_a_profile_serves_another_step_count_on_the_sigma_axis_and_refuses_without_sigmas(flow):
    model, sched, prof = flow  # fitted at 20 steps
    policy = ETCPlus(prof, calls=10)
    x = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(4))
    full = etcdiff.sample(model, sched, x, 30, NoCache(), labels=[1])
    with pytest.warns(UserWarning, match="fitted at 20 steps; this 30-step run is planned from its window errors"):
        out = etcdiff.sample(model, sched, x, 30, policy, labels=[1])
    assert policy.report().num_computed == 10 and policy.profile["resampled_from"] == 20
    assert (out - full).pow(2).mean().sqrt() < 0.1 * full.pow(2).mean().sqrt()
    etcdiff.sample(model, sched, x, 20, policy, labels=[1])  # back at its own step count: the fitted profile
    assert policy.profile is prof and policy.report().num_computed == 10
    ddim_model, ddim, _ = hm.gmm_ddim()
    ddim_prof = fit_etc_plus(record(ddim_model, ddim, 10, [1], batch=2), max_window=4)
    with pytest.raises(ValueError, match=r"fitted for 10 steps but the run has 12.*where both schedules have sigmas"
                                         r".*`--set serve_steps=12`"):
        etcdiff.sample(ddim_model, ddim, torch.randn(1, 1, 16, 16), 12, ETCPlus(ddim_prof))
