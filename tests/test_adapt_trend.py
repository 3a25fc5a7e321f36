"""ETC+'s opt-in ``adapt_trend``: the trend of the estimates weighed by the share of it the real outputs carried."""

import warnings

import pytest
import torch

import etcdiff
from etcdiff import closed_form as hm
from etcdiff.integration.step.recording import Trajectory
from etcdiff.policies.step.etc_plus import ETCPlus, fit_etc_plus
from etcdiff.policies.step.etc_plus.stream import ETCPlusStream
from test_etc_plus import record

SIGMAS = [1.0, 0.9, 0.7, 0.4, 0.2, 0.0]


def scripted(values):
    """A trajectory with eps_t = values[t] * ones (latents follow Euler on SIGMAS)."""
    outs = [torch.full((1, 2), float(v)) for v in values]
    xs = [torch.tensor([[1.0, -1.0]])]
    for t, o in enumerate(outs):
        xs.append(xs[-1] + (SIGMAS[t + 1] - SIGMAS[t]) * o)
    return Trajectory(outputs=outs, inputs=xs[:-1], final=xs[-1])


@pytest.fixture(scope="module")
def linear():
    """Outputs linear in sigma: the plain trend (k = 5 for step 3 from real steps 0, 1) is exact."""
    trajs = [scripted([3.0 + 2.0 * s * a for s in SIGMAS[:-1]]) for a in (1.0, -0.5, 2.0)]
    return fit_etc_plus(trajs, max_window=3, corrections=True, ridge=0.0)


class _Policy:
    def __init__(self):
        self.last_real = None


def test_the_trend_share_is_the_least_squares_coefficient_of_the_trend_in_the_real_output_least_over_the_batch():
    stream = ETCPlusStream(_Policy())
    assert stream.trend_share(0.0, 2.0, torch.ones(2, 3)) is None  # no real output yet
    stream.record(0, torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]))
    assert stream.trend_share(0.0, 2.0, torch.ones(2, 3)) is None  # one real output: no trend
    stream.record(1, torch.tensor([[2.0, 1.0, 1.0], [0.0, 1.0, 0.0]]))
    last, prev = stream.last, stream.prev
    g, k = 0.1, 2.0
    shares = torch.tensor([[0.75], [-0.5]])
    out = (1 + g) * last + shares * k * (last - prev)
    assert stream.trend_share(g, k, out) == pytest.approx(-0.5)  # the least over the batch
    assert stream.trend_share(g, k, out[:1]) is None  # another shape than the stream's outputs
    assert stream.trend_share(g, 0.0, out) is None  # no trend to weigh
    noisy = out + torch.tensor([[0.0, 3.0, -3.0], [5.0, 0.0, 5.0]])  # orthogonal to each sample's trend
    assert stream.trend_share(g, k, noisy) == pytest.approx(-0.5)
    assert stream.trend_share(g, k, torch.full_like(out, float("nan"))) is None


def test_a_sample_that_follows_its_trend_keeps_it_and_one_that_spikes_away_from_it_drops_towards_reuse(linear):
    def run(values, adapt, spike=None):
        policy = ETCPlus(linear, calls=5, adapt_trend=adapt, spike=spike)
        policy.begin(5)
        policy.observe(0, torch.full((1, 2), values[0]), True)
        policy.observe(1, torch.full((1, 2), values[1]), True)
        policy.observe(2, torch.full((1, 2), values[2]), True)
        return policy, policy.predict(4)

    follows = [1.0, 2.0, 4.0]  # on the line eps = 11 - 10·sigma, which the fitted trend extrapolates exactly
    kept, est = run(follows, True)
    plain, want = run(follows, False)
    assert kept.trend_weight == pytest.approx(1.0) and torch.allclose(est, want)
    turns = [1.0, 2.0, 3.0]  # the trend said 4 at step 2: the output carried half of it
    dropped, est = run(turns, True)
    assert dropped.trend_weight == pytest.approx(0.75, abs=1e-5)  # averaged with the weight before (1)
    g, k = dropped.fitted_gains(1, 2, 4)
    assert torch.allclose(est, torch.full((1, 2), 3.0 * (1 + g) + 0.75 * k * (3.0 - 2.0)), atol=1e-5)
    assert not torch.allclose(est, run(turns, False)[1])
    assert dropped.params()["adapt_trend"] is True and plain.params()["adapt_trend"] is False
    assert ETCPlus(linear, calls=5).params()["adapt_trend"] is None and not ETCPlus(linear, calls=5).adapt_trend
    dropped.begin(5)  # a new generation starts from the full trend
    assert dropped.trend_weight == 1.0
    calm, est = run(turns, True, spike=1e9)  # the same miss, within what the sample may miss: no spike, no weighing
    assert calm.trend_weight == 1.0 and torch.equal(est, run(turns, False, spike=1e9)[1])


def test_adapt_trend_refuses_anything_but_true_or_false_and_says_when_it_has_nothing_to_weigh(linear):
    with pytest.raises(ValueError, match="adapt_trend must be true, false or unset"):
        ETCPlus(linear, adapt_trend="yes")
    with pytest.warns(RuntimeWarning, match="adapt_trend has nothing to weigh"):
        ETCPlus(linear, calls=5, adapt_trend=True, trend_cap=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ETCPlus(linear, calls=5, adapt_trend=True, trend_cap=0.5)
        ETCPlus(linear, calls=5, trend_cap=0.0)


def test_adapt_trend_keeps_the_budget_and_the_plan_and_runs_through_the_generic_loop():
    model, sched, _ = hm.gmm_flow()
    prof = fit_etc_plus(record(model, sched, 20, [100, 101]), max_window=5)
    x = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(7))
    plain, adapt = ETCPlus(prof, calls=8), ETCPlus(prof, calls=8, adapt_trend=True)
    out_plain = etcdiff.sample(model, sched, x, 20, plain)
    out_adapt = etcdiff.sample(model, sched, x, 20, adapt)
    assert adapt.report().num_computed <= 8 and plain.report().num_computed <= 8
    assert adapt.planned_steps(20) == plain.planned_steps(20)
    assert torch.isfinite(out_adapt).all() and out_adapt.shape == out_plain.shape
    assert 0.0 <= adapt.trend_weight <= 1.0


def test_unset_adapt_trend_follows_what_calibration_kept_for_the_plan_and_a_given_one_overrides_it(linear):
    chosen = {**linear, "budget_adapt_trend": {"free": {"4": True, "5": False}, "last": {"4": False}}}
    assert ETCPlus(chosen, calls=4, last_step=False).adapt_trend is True
    assert ETCPlus(chosen, calls=4, last_step=True).adapt_trend is False  # the plan computing the last step
    assert ETCPlus(chosen, calls=5, last_step=False).adapt_trend is False
    assert ETCPlus(chosen, calls=3, last_step=False).adapt_trend is False  # not measured: off
    assert ETCPlus(chosen).adapt_trend is False  # tolerance mode: no budget was measured
    assert ETCPlus(chosen, calls=4, last_step=False, adapt_trend=False).adapt_trend is False
    assert ETCPlus(chosen, calls=5, last_step=False, adapt_trend=True).adapt_trend is True
    with warnings.catch_warnings():  # a cap of 0 with a chosen (not given) adapt_trend is calibration's to avoid
        warnings.simplefilter("error")
        ETCPlus({**chosen, "budget_trend_caps": {"4": 0.0}}, calls=4, last_step=False)


def test_a_served_step_count_whose_cap_is_0_says_that_a_given_adapt_trend_has_nothing_to_weigh(linear):
    trajs = [scripted([3.0 + 2.0 * s * a for s in SIGMAS[:-1]]) for a in (1.0, -0.5, 2.0)]
    other = fit_etc_plus([Trajectory(outputs=t.outputs[:4], inputs=t.inputs[:4], final=t.final) for t in trajs],
                         max_window=3, corrections=True, ridge=0.0)
    served = {**linear, "served_steps": {"4": {**other, "budget_trend_caps": {"3": 0.0}}}}
    policy = ETCPlus(served, calls=3, adapt_trend=True)
    with pytest.warns(RuntimeWarning, match=r"nothing to weigh: the trend cap in force is 0 \(at 4 steps\)"):
        policy.begin(4)
    assert policy.trend_cap == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        policy.begin(5)  # back at the fitted step count: no cap


def test_the_calibration_choice_keeps_adapt_trend_per_plan_where_the_held_out_runs_say_so(linear, monkeypatch):
    """``measured_budgets(adapt=True)``: each plan also runs with adapt_trend; kept where it lands as close on average
    and closer in the worst runs; off on ties; the kept option's errors become the plan's."""
    from etcdiff.calibration.etc_plus import refine
    from etcdiff.calibration.selection import HeldOut

    plain = [-2.5, -2.5, -1.0]

    def logs(held, policies):
        p = policies[0]
        if p.adapt_trend and p.calls == 4 and not p.compute_last:
            return [-2.0, -2.0, -1.6]  # about as close on average, closer in the worst run
        if p.adapt_trend and p.calls == 5 and not p.compute_last:
            return [-1.0, -1.0, -1.0]  # clearly further on average
        if p.compute_last:
            return [-2.0, -2.0, -2.0]
        return plain  # the plan without it, and adapt_trend on calls 3: the same runs, a tie

    class Scripted(HeldOut):
        def log_errors(self, policies):
            return logs(self, policies)

    monkeypatch.setattr(refine, "budget_ladder", lambda n: [3, 4, 5])
    built = []

    def build(fit, calls):
        built.append({k: v for k, v in fit.items() if k != "profile"})
        return ETCPlus(fit["profile"], calls=calls, **{k: v for k, v in fit.items() if k != "profile"})

    held = Scripted(folds=[[0, 1, 2]], references={}, run=None, build=build, fold_fits=[{"profile": linear}])
    free, last, _, adapted = refine.measured_budgets(held, 5, adapt=True)
    assert adapted["free"] == {"3": False, "4": True, "5": False}
    assert free["4"] == [-2.0, -2.0, -1.6] and free["5"] == plain
    assert set(adapted["last"]) <= {"3", "4", "5"} and all(isinstance(v, bool) for v in adapted["last"].values())
    assert {"adapt_trend": True} in built and {"last_step": True, "adapt_trend": True} in built
    free_off, _, _, off = refine.measured_budgets(held, 5)
    assert off == {"free": {}, "last": {}} and free_off["4"] == plain
