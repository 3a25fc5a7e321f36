"""Numbers of every real type, overflowing errors, and the checks of ``etcdiff.sample``'s arguments."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

import etcdiff


@pytest.mark.parametrize("threshold", [np.float32(0.5), np.float64(0.5), torch.tensor(0.5), np.int64(1), 0.5])
def test_etc_takes_any_real_threshold(threshold) -> None:
    policy = etcdiff.ETC(threshold, warmup=np.int64(3), alpha=torch.tensor(0.5), max_growth=np.int32(2))
    assert isinstance(policy.threshold, float) and policy.threshold == pytest.approx(float(threshold))
    assert policy.warmup == 3 and type(policy.warmup) is int
    assert policy.max_growth == 2 and type(policy.max_growth) is int


def test_other_policies_take_numpy_and_tensor_numbers() -> None:
    assert etcdiff.FixedInterval(np.int64(3), warmup=torch.tensor(2)).params() == {"interval": 3, "warmup": 2}
    assert etcdiff.AdaptiveDiffusion(np.float32(0.25), max_skip_steps=np.int64(2)).max_skip_steps == 2
    assert etcdiff.SADA(max_interval=np.int16(3)).max_interval == 3
    policy = etcdiff.NoCache()
    policy.begin(np.int64(4))
    assert policy.num_steps == 4


@pytest.mark.parametrize("bad", [True, "0.1", torch.tensor([0.1, 0.2]), float("nan"), np.float32("inf"), None])
def test_non_numbers_are_still_refused(bad) -> None:
    with pytest.raises(ValueError, match="threshold must be a finite number"):
        etcdiff.ETC(bad)


def test_fractional_integers_are_refused() -> None:
    with pytest.raises(ValueError, match="warmup must be an integer"):
        etcdiff.ETC(0.1, warmup=np.float32(3.0))


def _run(policy: etcdiff.ETC, outputs: list[torch.Tensor]) -> etcdiff.RunReport:
    policy.begin(len(outputs))
    for t, out in enumerate(outputs):
        computed = policy.should_compute(t)
        policy.observe(t, out if computed else policy.predict(t), computed)
    return policy.report()


def test_growth_with_a_tolerance_that_overflows() -> None:
    # A straight line: after warm-up every residual is exactly 0, so tau / err is 1e300 / 1e-12 = inf.
    outputs = [torch.full((4,), float(t)) for t in range(12)]
    report = _run(etcdiff.ETC(1e300, warmup=2, max_growth=3), outputs)
    # step 2 real: k 0 -> 3 (the most allowed), steps 3-5 estimated; step 6 real: k -> 6, 7-10 estimated, 11 last
    assert report.computed_steps == [0, 1, 2, 6, 11]
    assert report.window[2] == 3 and report.window[6] == 6


def test_error_that_overflows_to_nan_in_fp16_counts_as_over_the_tolerance() -> None:
    # +-60000 in fp16: the one-step difference overflows to inf, and the residual inf - inf is NaN.
    outputs = [torch.full((4,), 60000.0 if t % 2 else -60000.0, dtype=torch.float16) for t in range(8)]
    report = _run(etcdiff.ETC(0.1, warmup=2, max_growth=4), outputs)
    assert report.computed_steps == list(range(8))  # the window never opens
    assert report.err[2] is None and report.window[2] == 0


def _model(x, t):
    return 0.1 * x


@pytest.mark.parametrize(
    "policy, message",
    [("etc", r"policy must be a StepPolicy object, got str 'etc'; pass etcdiff.make_policy\('etc', ...\)"),
     (None, "policy must be a StepPolicy object, got None"),
     (etcdiff.ETC, r"got the class ETC; pass an instance such as ETC\(...\)")],
)
def test_sample_names_a_bad_policy(policy, message) -> None:
    with pytest.raises(TypeError, match=message):
        etcdiff.sample(_model, FlowMatchEulerDiscreteScheduler(), torch.zeros(1, 2), 4, policy)


@pytest.mark.parametrize(
    "scheduler, message",
    [(None, "scheduler must be a diffusers scheduler .* got None"),
     (FlowMatchEulerDiscreteScheduler, r"got the class FlowMatchEulerDiscreteScheduler; pass FlowMatchEulerDiscreteScheduler\(\)")],
)
def test_sample_names_a_bad_scheduler(scheduler, message) -> None:
    with pytest.raises(TypeError, match=message):
        etcdiff.sample(_model, scheduler, torch.zeros(1, 2), 4, etcdiff.NoCache())


def test_sample_takes_a_numpy_step_count() -> None:
    out = etcdiff.sample(_model, FlowMatchEulerDiscreteScheduler(), torch.ones(1, 2), np.int64(4), etcdiff.NoCache())
    want = etcdiff.sample(_model, FlowMatchEulerDiscreteScheduler(), torch.ones(1, 2), 4, etcdiff.NoCache())
    assert torch.equal(out, want)
