"""ETC through the diffusers hook on the embedded demo pipeline against the spec's reference loop."""

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

import etcdiff
from etc_reference import reference_etc_loop
from etcdiff.digits import DigitsPipeline
from etcdiff.digits.model import NULL_CLASS

GUIDANCE = 2.0


@pytest.fixture(scope="module")
def pipe():
    p = DigitsPipeline.from_embedded()
    p.set_progress_bar_config(disable=True)
    return p


def guided_model(pipe, labels):
    """The demo pipeline's per-step computation as a plain ``model(x, t)``: batched CFG, combined."""
    cond_uncond = torch.cat([labels, torch.full_like(labels, NULL_CLASS)])

    @torch.no_grad()
    def model(x, t):
        x_in = torch.cat([x, x])
        out = pipe.transformer(x_in, timestep=t.expand(len(x_in)).to(x.dtype), class_labels=cond_uncond, return_dict=False)[0]
        cond, uncond = out.chunk(2)
        return uncond + GUIDANCE * (cond - uncond)

    return model


@pytest.mark.parametrize("tau, warmup, steps", [(0.05, 6, 50), (0.3, 4, 30)])
def test_hook_on_demo_pipeline_reproduces_reference_loop(pipe, tau, warmup, steps):
    labels = torch.arange(10)
    x = torch.randn(10, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    ref, ref_steps = reference_etc_loop(guided_model(pipe, labels), FlowMatchEulerDiscreteScheduler(), x.clone(), steps, tau, n=warmup)
    with etcdiff.enabled(pipe, etcdiff.ETC(tau, warmup=warmup)):
        out = pipe(prompt=list(range(10)), num_inference_steps=steps, guidance_scale=GUIDANCE, latents=x.clone(), output_type="latent").images
        report = etcdiff.last_report(pipe)
    assert report.computed_steps == ref_steps
    assert len(ref_steps) < steps
    assert report.model_calls == len(ref_steps)  # batched CFG: one forward per computed step
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


def test_sample_on_demo_denoiser_reproduces_reference_loop(pipe):
    labels = torch.tensor([3, 7])
    model = guided_model(pipe, labels)
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    ref, ref_steps = reference_etc_loop(model, FlowMatchEulerDiscreteScheduler(), x.clone(), 50, 0.05, n=6)
    policy = etcdiff.ETC(0.05)
    out = etcdiff.sample(model, FlowMatchEulerDiscreteScheduler(), x.clone(), 50, policy)
    assert policy.report().computed_steps == ref_steps
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
