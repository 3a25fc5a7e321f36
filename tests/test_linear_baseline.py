"""The naive linear-extrapolation baseline: its schedule and its estimate, worked by hand."""

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

import etcdiff
from etcdiff.policies import LinearExtrapolation


def test_schedule_and_estimates_by_hand():
    calls = []

    def model(x, t):
        calls.append(float(t))
        return torch.full_like(x, float(len(calls)) ** 2)  # real outputs 1, 4, 9, ... in call order

    policy = LinearExtrapolation(interval=2, warmup=2)
    consumed = []
    sched = FlowMatchEulerDiscreteScheduler()
    orig_step = sched.step

    def step(out, t, x, **kw):
        consumed.append(float(out.flatten()[0]))
        return orig_step(out, t, x, **kw)

    sched.step = step
    etcdiff.sample(model, sched, torch.zeros(1, 2), 7, policy)
    assert policy.report().computed_steps == [0, 1, 2, 4, 6]
    # real 1, 4, 9; step 3 = 2*9 - 4 = 14; real 16 at step 4; step 5 = 2*16 - 14 = 18; real 25 at the last step
    assert consumed == [1, 4, 9, 14, 16, 18, 25]


def test_bad_settings():
    with pytest.raises(ValueError, match="warmup must be >= 2"):
        LinearExtrapolation(warmup=1)
    with pytest.raises(ValueError, match="interval must be an integer >= 1"):
        LinearExtrapolation(interval=0)
