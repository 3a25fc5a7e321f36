"""ETC on scripted output sequences: the exact schedule, worked out by hand from spec ETC.md."""

import math

import pytest
import torch

import etcdiff
from etcdiff.policies import ETC, FixedInterval, NoCache, etc_preset


def drive(policy, outputs):
    """Run a policy over a scripted sequence of real outputs (the 'model' returns outputs[t] at step t)."""
    policy.begin(len(outputs))
    used = []
    for t, value in enumerate(outputs):
        computed = policy.should_compute(t)
        out = None if computed else policy.predict(t)
        if out is None:
            computed, out = True, torch.tensor([float(value)])
        policy.observe(t, out, computed)
        used.append(out.item())
    return policy.report(), used


def test_schedule_on_a_ramp_worked_by_hand():
    # eps_t = t, alpha 0.5, warm-up 2, tau 0.5, N = 10.
    # t0: pre=0. t1: d=1, pre=1. t2 real: d=.5*1+.5*(2-1)=1, err=|2-1-1|=0<.5 -> k=1, g=1.
    # t3 est 3. t4 real: d=.5+.5*(4-3)=1, err=0 -> k=2, g=.5. t5 est 4.5, t6 est 5.
    # t7 real: d=.5*1+.5*(7-5)=1.5, err=|7-5-1.5|=.5, not < .5 -> k=1, g=1.5. t8 est 8.5. t9 last: real.
    report, used = drive(ETC(threshold=0.5, warmup=2, alpha=0.5), range(10))
    assert report.computed_steps == [0, 1, 2, 4, 7, 9]
    assert used == [0, 1, 2, 3, 4, 4.5, 5, 7, 8.5, 9]
    assert report.err == [None, None, 0.0, None, 0.0, None, None, 0.5, None, None]
    assert report.window == [0, 0, 1, 1, 2, 2, 2, 1, 1, 1]
    assert report.num_steps == 10 and report.step_speedup == pytest.approx(10 / 6)


def test_window_shrinks_to_zero_on_a_jump():
    # Constant 0 until a jump to 10 at t=4. warm-up 2, tau 1.
    # t2: d=0, err 0 -> k=1. t3 est 0. t4 real 10: d=.5*0+.5*10=5, err=|10-0-5|=5 -> k=0.
    # t5 real (k=0) 10: d=.5*5+.5*0=2.5, err=|10-10-2.5|=2.5 -> k stays 0. t6 real 10: d=1.25, err 1.25 -> 0.
    # t7 real: d=.625, err .625 < 1 -> k=1, g=.625. t8 est 10.625. t9 last real.
    seq = [0, 0, 0, 0, 10, 10, 10, 10, 10, 10]
    report, used = drive(ETC(threshold=1.0, warmup=2), seq)
    assert report.computed_steps == [0, 1, 2, 4, 5, 6, 7, 9]
    assert report.window[2:8] == [1, 1, 0, 0, 0, 1]
    assert used[8] == pytest.approx(10.625)


def test_warmup_and_last_step_always_real_even_with_infinite_tolerance():
    report, _ = drive(ETC(threshold=1e9, warmup=3), range(12))
    # k grows by one after each real step: real 3, skip 1, real 5, skip 2, real 8, skip 3 would pass 11: last real.
    assert report.computed_steps == [0, 1, 2, 3, 5, 8, 11]


def test_zero_tolerance_never_skips():
    report, _ = drive(ETC(threshold=0.0, warmup=2), [1.0] * 8)
    assert report.computed_steps == list(range(8))


def test_consecutive_generations_start_clean():
    policy = ETC(threshold=0.5, warmup=2)
    first, _ = drive(policy, range(10))
    drive(policy, [0, 0, 0, 0, 10, 10, 10, 10, 10, 10, 3, 3])
    again, used = drive(policy, range(10))
    assert again.computed_steps == first.computed_steps == [0, 1, 2, 4, 7, 9]
    assert again is not first


def test_fixed_interval_and_no_cache_schedules():
    report, used = drive(FixedInterval(interval=3, warmup=2), range(10))
    assert report.computed_steps == [0, 1, 2, 5, 8, 9]
    assert used == [0, 1, 2, 2, 2, 5, 5, 5, 8, 9]
    assert drive(NoCache(), range(5))[0].computed_steps == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"threshold": -0.1}, "threshold"),
        ({"threshold": float("nan")}, "threshold"),
        ({"threshold": float("inf")}, "threshold"),
        ({"threshold": "0.1"}, "threshold"),
        ({"threshold": 0.1, "alpha": 0.0}, "alpha"),
        ({"threshold": 0.1, "alpha": 1.5}, "alpha"),
        ({"threshold": 0.1, "warmup": 1}, "warmup"),
        ({"threshold": 0.1, "warmup": 2.5}, "warmup"),
    ],
)
def test_bad_parameters_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ETC(**kwargs)


def test_warmup_not_below_step_count_is_an_error():
    policy = ETC(threshold=0.1, warmup=6)
    with pytest.raises(ValueError, match=r"warmup \(6\) must be smaller than the number of steps \(6\)"):
        policy.begin(6)


def test_nan_model_output_stops_estimation_with_a_warning():
    # real steps with tau = 1e9: 0, 1, 2, (3 estimated), 4 -> the model returns NaN at step 4
    seq = [0, 1, 2, 3, float("nan"), 5, 6, 7, 8, 9]
    policy = ETC(threshold=1e9, warmup=2)
    with pytest.warns(RuntimeWarning, match="step 4 has NaN or Inf"):
        report, used = drive(policy, seq)
    # after the NaN every step runs the model: nothing is estimated from a poisoned trend
    assert report.computed_steps == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    assert all(math.isfinite(v) for i, v in enumerate(used) if i != 4)


def test_non_finite_estimate_falls_back_to_the_model():
    policy = ETC(threshold=1e9, warmup=2)
    big = torch.finfo(torch.float32).max
    report, used = drive(policy, [0.0, big, big, big, big, big])
    # the trend overflows to inf: predict() refuses and the model runs instead
    assert all(math.isfinite(v) for v in used)


def test_steps_out_of_order_are_refused():
    policy = ETC(threshold=0.1, warmup=2)
    policy.begin(5)
    with pytest.raises(RuntimeError, match="in order"):
        policy.observe(1, torch.zeros(1), True)


def test_presets_by_name_and_unknown_name():
    flux = etc_preset("flux")
    assert (flux.threshold, flux.warmup) == (0.1269, 6)
    assert ETC.preset("Open-Sora 1.2").warmup == 4
    with pytest.raises(KeyError, match="etcdiff calibrate"):
        etc_preset("my-model")


def test_make_policy_errors():
    with pytest.raises(ValueError, match="unknown method 'tea'"):
        etcdiff.make_policy("tea")
    with pytest.raises(ValueError, match="unknown setting 'threshold' for method 'fixed'"):
        etcdiff.make_policy("fixed", threshold=1)


def test_branch_estimates_combine_into_the_estimate_on_the_guided_output():
    # Separate cond/uncond calls (Wan, Flux true CFG): each branch keeps its own trend and follows the
    # decisions ETC makes on the guided output u + s (c - u); with the guidance linear, the guided
    # combination of the branch estimates is ETC's own estimate of the guided output.
    g = torch.Generator().manual_seed(0)
    steps, scale = 30, 4.0
    base = torch.randn(8, generator=g)
    cond = [base * (1 + 0.05 * t) + 0.01 * torch.randn(8, generator=g) for t in range(steps)]
    uncond = [0.5 * base * (1 - 0.02 * t) + 0.01 * torch.randn(8, generator=g) for t in range(steps)]
    policy = ETC(threshold=0.5, warmup=3)
    policy.begin(steps)
    s_cond, s_uncond = policy.new_stream(), policy.new_stream()
    estimated = 0
    for t in range(steps):
        if policy.should_compute(t):
            s_cond.record(t, cond[t])
            s_uncond.record(t, uncond[t])
            guided, computed = uncond[t] + scale * (cond[t] - uncond[t]), True
        else:
            c_hat, u_hat = s_cond.predict(t), s_uncond.predict(t)
            s_cond.use(t, c_hat)  # the integration hands the estimates on: they become the streams' last output
            s_uncond.use(t, u_hat)
            guided, computed = u_hat + scale * (c_hat - u_hat), False
            torch.testing.assert_close(guided, policy.predict(t), rtol=1e-5, atol=1e-5)
            estimated += 1
        policy.observe(t, guided, computed)
    assert estimated > 5


def test_opt_in_faster_window_growth_worked_by_hand():
    # eps_t = t, tau 0.5, warm-up 2, max_growth 3 (not the paper's rule; the default max_growth=1 is).
    # t2: err 0 -> feasible window 1*sqrt(0.5/~0) is huge -> grow by the cap 3 -> k=3, estimates 2+j/3.
    # t6 real 6 (pre 3): d=.5*1+.5*3=2, err=|6-3-2|=1 -> k=2, g=1 -> t7 7, t8 8.
    # t9 real 9 (pre 8): d=.5*2+.5*1=1.5, err=.5 not < .5 -> k=1, g=1.5 -> t10 10.5.
    # t11 real 11: d=.5*1.5+.5*.5=1, err=|11-10.5-1|=.5 -> k=0. t12 real 12: d=1, err 0 -> k=3.
    # t16 real 16 (pre 13): d=2, err=1 -> k=2 -> t17, t18 estimated; t19 last.
    report, used = drive(ETC(threshold=0.5, warmup=2, max_growth=3), range(20))
    assert report.computed_steps == [0, 1, 2, 6, 9, 11, 12, 16, 19]
    assert report.window[2] == 3 and report.window[12] == 3
    assert used[3:6] == pytest.approx([2 + 1 / 3, 2 + 2 / 3, 3])
    assert ETC(0.5).params() == {"threshold": 0.5, "warmup": 6, "alpha": 0.5}  # the reference reports no extra


def test_growth_is_bounded_by_the_feasible_window():
    policy = ETC(threshold=1.0, warmup=2, max_growth=10)
    policy.k = 2
    assert policy._growth(0.25) == 2  # feasible 2*sqrt(4) = 4: grow by 2, not by the cap
    assert policy._growth(0.9) == 1  # feasible 2*sqrt(1.11) = 2.1: at least 1
    with pytest.raises(ValueError, match="max_growth"):
        ETC(0.1, max_growth=0)
