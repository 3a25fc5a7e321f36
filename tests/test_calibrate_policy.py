"""One call calibrates every calibrated step method on a bare denoiser, and ``etcdiff.sample`` runs the result."""

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

import etcdiff
import etcdiff.policies


class Flow(torch.nn.Module):
    """A small, smooth velocity field: enough structure for the fits, unseen by any method's tuning."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(7)
        self.a = torch.nn.Parameter(torch.randn(4, 4, generator=g) * 0.3, requires_grad=False)

    def forward(self, x, t):
        s = float(t) / 1000.0
        return torch.tanh(torch.einsum("ij,bjhw->bihw", self.a, x)) * (1 + s) - x * s


def decode(x):
    return torch.sigmoid(x[:, :3])


@pytest.fixture()
def setup():
    torch.manual_seed(0)
    return Flow(), FlowMatchEulerDiscreteScheduler(), torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("method, settings, cls", [
    ("etc", {"warmup": 4}, etcdiff.ETC),
    ("ertacache", {"threshold": 0.3}, etcdiff.ERTACache),
    ("meancache", {"calls": 8}, "MeanCache"),
    ("sencache", {"eps_start": 0.05, "eps_main": 0.3, "max_reuse": 3}, "SenCache"),
])
@pytest.mark.filterwarnings("ignore:the similarity curve falls")  # the toy denoiser has no volatile phase to find
def test_calibrate_policy_runs_in_sample(setup, method, settings, cls):
    model, scheduler, latents = setup
    policy = etcdiff.calibrate_policy(method, model, scheduler, latents, 20, decode=decode, **settings)
    assert isinstance(policy, cls if isinstance(cls, type) else getattr(etcdiff.policies, cls))
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(99))  # not a calibration noise
    out = etcdiff.sample(model, scheduler, x, 20, policy)
    assert torch.isfinite(out).all()
    assert policy.report().num_computed < 20
    if method == "etc":
        assert policy.warmup == 4 and policy.threshold > 0
    if method == "meancache":
        assert policy.report().model_calls in (None, 8) and policy.report().num_computed == 8  # exactly B
    if method == "sencache":
        tables = policy.tables
        assert all(v > 0 for v in tables.j_x + tables.j_t)


def test_calibrate_policy_errors(setup):
    model, scheduler, latents = setup
    with pytest.raises(ValueError, match="'fixed' has no calibration"):
        etcdiff.calibrate_policy("fixed", model, scheduler, latents, 20)
    with pytest.raises(ValueError, match="block-level method"):
        etcdiff.calibrate_policy("teacache", model, scheduler, latents, 20)
    with pytest.raises(TypeError, match="latents must be a tensor"):
        etcdiff.calibrate_policy("etc", model, scheduler, [latents], 20)
    with pytest.raises(ValueError, match="unknown setting 'warmpu' for method 'etc'"):
        etcdiff.calibrate_policy("etc", model, scheduler, latents, 20, warmpu=3)
