"""MeanCache's run and its calibration accept the same schedulers (one rule, etcdiff.policies.flow_solvers): a
multistep flow solver calibrates and runs, a scheduler either refuses is refused by both in one line naming it,
and a calibration refuses before it records a run."""

from __future__ import annotations

import pytest
import torch
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler,
                       UniPCMultistepScheduler)

import etcdiff
from etcdiff.policies.step.meancache import MeanCache, MeanCacheSchedule


class Flow(torch.nn.Module):
    """A small smooth velocity field that counts its calls."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.randn(4, 4, generator=torch.Generator().manual_seed(7)) * 0.3
        self.calls = 0

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        s = float(t) / 1000.0
        return torch.tanh(torch.einsum("ij,bjhw->bihw", self.a, x)) * (1 + s) - x * s


def unipc_flow():
    return UniPCMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction")


def dpm_flow():
    return DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction")


NOISE = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("make", [unipc_flow, dpm_flow])
def test_a_multistep_flow_solver_calibrates_and_runs_with_exactly_its_budget(make):
    model = Flow()
    policy = etcdiff.calibrate_policy("meancache", model, make(), NOISE, 12, calls=6)
    model.calls = 0
    out = etcdiff.sample(model, make(), NOISE[:1], 12, policy)
    assert model.calls == 6 and policy.report().num_computed == 6 and bool(torch.isfinite(out).all())


def _refusal(call) -> str | None:
    try:
        call()
    except ValueError as e:
        return str(e)
    return None


@pytest.mark.parametrize("make, accepted", [
    (FlowMatchEulerDiscreteScheduler, True), (unipc_flow, True), (dpm_flow, True),
    (UniPCMultistepScheduler, False),  # epsilon prediction on VP sigmas
    (lambda: UniPCMultistepScheduler(prediction_type="flow_prediction"), False),  # velocity, but sigmas above 1
    (DDIMScheduler, False),
    (lambda: FlowMatchEulerDiscreteScheduler(stochastic_sampling=True), False),
])
def test_run_and_calibration_accept_and_refuse_the_same_schedulers(make, accepted):
    name = type(make()).__name__
    model = Flow()
    run = _refusal(lambda: etcdiff.sample(model, make(), NOISE[:1], 8,
                                          MeanCache(schedule=MeanCacheSchedule(8, [0, 3, 7], [1, 1]))))
    fit = _refusal(lambda: etcdiff.calibrate_policy("meancache", Flow(), make(), NOISE, 8, calls=4))
    if accepted:
        assert run is None and fit is None
        return
    for message in (run, fit):
        assert message is not None and "\n" not in message and name in message
        assert "set one of those as the scheduler" in message and "use_flow_sigmas=True" in message
    assert run.startswith("meancache runs only on") and fit.startswith("meancache calibrates only on")


def test_calibration_refuses_a_scheduler_before_recording_any_run():
    model = Flow()
    with pytest.raises(ValueError, match="meancache calibrates only on flow-matching schedulers .* DDIMScheduler"):
        etcdiff.calibrate_policy("meancache", model, DDIMScheduler(), NOISE, 8, calls=4)
    assert model.calls == 0
