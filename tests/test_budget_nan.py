"""Non-finite latents or outputs never make a budgeted step method exceed its budget: it refuses in one line."""

from __future__ import annotations

import warnings

import pytest
import torch

import etcdiff
from etcdiff.policies.step.meancache import MeanCache, MeanCacheSchedule


def _nan_latents() -> torch.Tensor:
    lat = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    lat[0, 0, 3, 3] = float("nan")
    return lat


@pytest.mark.parametrize("method, budget", [("meancache", 17), ("etc-plus", 12)])
def test_nan_latents_are_refused_not_paid_for_with_extra_calls(pipe, method, budget):
    policy = etcdiff.enable(pipe, method, calls=budget)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # etc-plus's own NaN warning
        with pytest.raises(ValueError, match=rf"^{method}: calls={budget} .*no finite estimate for step \d+ .*NaN"):
            pipe([3], num_inference_steps=50, latents=_nan_latents())
    assert policy.report().num_computed <= budget


def test_the_generic_sampler_refuses_too():
    policy = MeanCache(schedule=MeanCacheSchedule(10, [0, 1, 2, 6, 9], [1, 1, 2, 2]))
    from diffusers import FlowMatchEulerDiscreteScheduler

    def model(x, t):
        return torch.full_like(x, float("nan"))

    with pytest.raises(ValueError, match=r"meancache: calls=5 .*no finite estimate"):
        etcdiff.sample(model, FlowMatchEulerDiscreteScheduler(), torch.zeros(1, 2), 10, policy)
    assert policy.report().num_computed <= 5


def test_a_finite_run_keeps_its_budget(pipe):
    etcdiff.enable(pipe, "meancache", calls=17)
    pipe([3], num_inference_steps=50, generator=torch.Generator().manual_seed(0))
    assert etcdiff.last_report(pipe).num_computed == 17
