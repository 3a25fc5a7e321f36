"""Bad input gets an error that names the problem (and, where there is one, the fix)."""

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

import etcdiff
from etcdiff.cli import main
from etcdiff.digits import DigitsPipeline
from etcdiff.integration.denoisers import split_output
from etcdiff.integration.step.hook import enable_step_policy
from etcdiff.metrics import psnr, ssim


class NoScheduler:
    def __init__(self):
        self.transformer = torch.nn.Linear(2, 2)


def test_a_pipeline_without_a_scheduler():
    with pytest.raises(TypeError, match="has no `scheduler`; a diffusers pipeline is expected"):
        etcdiff.enable(NoScheduler(), etcdiff.ETC(0.1))


def test_enable_step_policy_needs_a_policy_object(pipe):
    with pytest.raises(TypeError, match="expected a StepPolicy, got str"):
        enable_step_policy(pipe, "etc")


def test_two_pipelines_sharing_one_scheduler(pipe):
    other = DigitsPipeline(transformer=pipe.transformer.__class__(**pipe.transformer.config), scheduler=pipe.scheduler)
    etcdiff.enable(pipe, etcdiff.ETC(0.1))
    with pytest.raises(RuntimeError, match="already wrapped.*Give each pipeline its own scheduler"):
        etcdiff.enable(other, etcdiff.ETC(0.1))


def test_a_replaced_scheduler_that_was_never_set_up(pipe):
    etcdiff.enable(pipe, etcdiff.ETC(0.1))
    fresh = FlowMatchEulerDiscreteScheduler()
    fresh.timesteps = None  # a scheduler with no timesteps until set_timesteps runs: nothing to follow
    pipe.scheduler = fresh
    x = torch.zeros(1, 1, 16, 16)
    with pytest.raises(RuntimeError, match="was replaced and has no timesteps yet; call etcdiff.enable"):
        pipe.transformer(x, timestep=torch.tensor([500.0]), class_labels=torch.tensor([3]))


def test_an_unreadable_denoiser_output():
    with pytest.raises(TypeError, match="cannot find the output tensor in a denoiser output of type object"):
        split_output(object())


def test_policy_life_cycle_errors():
    policy = etcdiff.ETC(0.1, warmup=2)
    with pytest.raises(RuntimeError, match=r"call begin\(num_steps\) before the first step"):
        policy.should_compute(0)
    with pytest.raises(ValueError, match="the number of steps must be a positive integer, got 0"):
        policy.begin(0)
    policy.begin(5)
    with pytest.raises(IndexError, match=r"step 5 is outside 0..4"):
        policy.should_compute(5)


def test_sample_needs_tensor_latents():
    with pytest.raises(TypeError, match="latents must be a torch.Tensor, got list"):
        etcdiff.sample(lambda x, t: x, FlowMatchEulerDiscreteScheduler(), [0.0], 4, etcdiff.NoCache())


def test_metrics_reject_mismatched_or_non_image_input():
    with pytest.raises(ValueError, match=r"cannot compare images of shapes \(1, 4, 4, 1\) and \(1, 5, 5, 1\)"):
        psnr(np.zeros((1, 4, 4)), np.zeros((1, 5, 5)))
    with pytest.raises(ValueError, match=r"expected a batch of images \[B, H, W, C\], got shape \(4, 4\)"):
        ssim(np.zeros((4, 4)), np.zeros((4, 4)))


def test_peer_calibration_errors(pipe):
    from etcdiff.calibrate import calibrate_method

    with pytest.raises(ValueError, match="'fixed' has no calibration; methods with one: etc, etc-plus, ertacache, meancache"):
        calibrate_method(pipe, "fixed", ["1"], 10, 0)
    with pytest.raises(ValueError, match="no calibration prompts given"):
        calibrate_method(pipe, "ertacache", [], 10, 0)
    with pytest.raises(ValueError, match="ETC's search saves a profile with its curves"):
        calibrate_method(pipe, "etc", ["1"], 10, 0)


def test_ertacache_without_a_saved_profile_says_how_to_make_one():
    from tiny_pipelines import FACTORIES

    tiny = FACTORIES["flux"]().pipe
    with pytest.raises(ValueError, match="ertacache needs an offline calibration.*etcdiff calibrate --model"):
        etcdiff.enable(tiny, "ertacache")


def test_bench_repeats_must_not_be_negative(capsys):
    assert main(["bench", "--model", "digits", "--settings", "etc:threshold=0.1", "--repeats", "-1"]) == 2
    assert "--repeats must be 0 (no timing: quality, calls and FLOPs only) or more, got -1" in capsys.readouterr().err
