"""``--scheduler``: running a pipeline with another sampler, and profiles found per scheduler."""

import json

import pytest
import torch

from etcdiff.bench.sweep import BenchConfig, pair_key, sweep_id
from etcdiff.models import SCHEDULERS, load_pipeline, use_scheduler


@pytest.mark.parametrize("name, cls, flow", [("unipc", "UniPCMultistepScheduler", True),
                                             ("dpm", "DPMSolverMultistepScheduler", True),
                                             ("euler", "FlowMatchEulerDiscreteScheduler", False)])
def test_a_flow_pipeline_takes_the_multistep_solvers_on_flow_sigmas(name, cls, flow):
    pipe = load_pipeline("digits", scheduler=name)
    assert type(pipe.scheduler).__name__ == cls
    if flow:
        assert pipe.scheduler.config.prediction_type == "flow_prediction" and pipe.scheduler.config.use_flow_sigmas
    if name == "dpm":
        assert pipe.scheduler.config.algorithm_type == "dpmsolver++" and pipe.scheduler.config.solver_order == 2
    out = pipe([3], num_inference_steps=6, generator=torch.Generator().manual_seed(0), output_type="latent").images
    reference = load_pipeline("digits")([3], num_inference_steps=40, generator=torch.Generator().manual_seed(0),
                                        output_type="latent").images
    assert float((out - reference).pow(2).mean().sqrt()) < 0.5 * float(reference.pow(2).mean().sqrt())  # same image


@pytest.mark.parametrize("name", ["unipc", "dpm"])
def test_a_swapped_scheduler_keeps_the_pipelines_dynamic_shifting(name):
    """The scenes pipeline (FLUX) shifts its sigmas by the image size (``mu``); the multistep solvers take that
    setting, and DPM-Solver++ refuses ``mu`` without it, so it must survive the swap."""
    pipe = load_pipeline("demo", scheduler=name)
    assert pipe.scheduler.config.use_dynamic_shifting and pipe.scheduler.config.time_shift_type == "exponential"
    out = pipe("a small green ring at the right", num_inference_steps=4, generator=torch.Generator().manual_seed(0),
               output_type="latent").images
    assert torch.isfinite(out).all()


def test_the_cli_offers_the_schedulers_the_loader_knows():
    from etcdiff.calibration.profile_store import SCHEDULER_FLAGS, SCHEDULER_TAGS
    from etcdiff.cli.common import SCHEDULER_CHOICES

    assert SCHEDULER_CHOICES == SCHEDULERS == SCHEDULER_TAGS and set(SCHEDULER_FLAGS.values()) == set(SCHEDULERS)


def test_an_epsilon_pipeline_takes_every_scheduler_and_bad_names_fail_in_one_line():
    pipe = load_pipeline("unet-digits")
    for name, cls in (("unipc", "UniPCMultistepScheduler"), ("dpm", "DPMSolverMultistepScheduler"),
                      ("euler", "EulerDiscreteScheduler"), ("ddim", "DDIMScheduler")):
        use_scheduler(pipe, name)
        assert type(pipe.scheduler).__name__ == cls and pipe.scheduler.config.prediction_type == "epsilon"
    with pytest.raises(ValueError, match="ddim samples epsilon models.*use euler, unipc or dpm"):
        load_pipeline("digits", scheduler="ddim")
    with pytest.raises(ValueError, match="unknown scheduler 'heun'; use one of " + ", ".join(SCHEDULERS)):
        load_pipeline("digits", scheduler="heun")


def test_a_bench_on_another_scheduler_has_its_own_references_and_an_unchanged_one_keeps_its_keys():
    own, other = BenchConfig(), BenchConfig(scheduler="unipc")
    assert "scheduler" not in own.to_json() and other.to_json()["scheduler"] == "unipc"
    assert pair_key(own, "f", "p", 0) != pair_key(other, "f", "p", 0)
    assert sweep_id(own, "f") != sweep_id(other, "f")


def test_a_profile_made_with_another_scheduler_is_refused_with_the_command_for_this_one(tmp_path, monkeypatch):
    """The shipped profiles were made with the pipelines' own FlowMatch Euler: a UniPC run does not take them in
    silence, and the message names the flag that calibrates for it."""
    import etcdiff

    monkeypatch.setenv("ETCDIFF_PROFILE_DIR", str(tmp_path))
    from pathlib import Path

    shipped = Path(etcdiff.__file__).parent / "data" / "profiles" / "digits_50steps_etc-plus.json"
    assert json.loads(shipped.read_text())["scheduler"] == "FlowMatchEulerDiscreteScheduler"
    pipe = load_pipeline("digits", scheduler="unipc")
    with pytest.raises(ValueError, match=r"calibrated with FlowMatchEulerDiscreteScheduler only, and this pipeline "
                                         r"runs UniPCMultistepScheduler.*--method etc-plus --scheduler unipc"):
        etcdiff.enable(pipe, "etc-plus")
    assert type(pipe.scheduler).__name__ == "UniPCMultistepScheduler"  # the pipeline is left as it was
    own = load_pipeline("digits")
    assert etcdiff.enable(own, "etc-plus") is not None  # on its own scheduler the shipped profile is found
    etcdiff.disable(own)


def test_calibrate_with_a_scheduler_saves_a_profile_that_runs_with_that_scheduler_only(tmp_path, monkeypatch, capsys):
    import etcdiff
    from etcdiff.cli import main

    monkeypatch.setenv("ETCDIFF_PROFILE_DIR", str(tmp_path))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("0\n1\n2\n3\n4\n")
    assert main(["calibrate", "--model", "digits", "--scheduler", "dpm", "--method", "etc-plus", "--steps", "8",
                 "--prompts", str(prompts), "--quiet", "--no-plot"]) == 0
    saved = json.loads(next(tmp_path.glob("*etc-plus.json")).read_text())
    assert saved["scheduler"] == "DPMSolverMultistepScheduler" and saved["steps"] == 8
    assert not saved["settings"]["profile"]["tolerance_check"]["met"]  # 8 steps, 5 prompts: no scale held, and
    assert "etc-plus: the tolerance mode ended within its target on" in capsys.readouterr().err  # the CLI says so
    pipe = load_pipeline("digits", scheduler="dpm")
    etcdiff.enable(pipe, "etc-plus", calls=5)  # a budget: at 8 steps on 5 prompts the tolerance's share may not
    pipe([3], num_inference_steps=8, generator=torch.Generator().manual_seed(0), output_type="latent")  # hold
    assert etcdiff.last_report(pipe).num_computed == 5  # it ran the DPM-Solver++ profile and skipped steps
    etcdiff.disable(pipe)
    with pytest.raises(ValueError, match="DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler only.*"
                                         "--scheduler unipc"):  # no profile for UniPC at any step count
        etcdiff.enable(load_pipeline("digits", scheduler="unipc"), "etc-plus")


def test_calibrations_for_two_schedulers_at_one_step_count_are_both_kept_and_found(tmp_path, monkeypatch):
    from etcdiff.calibration.profile_store import find_for_run
    from etcdiff.cli import main

    monkeypatch.setenv("ETCDIFF_PROFILE_DIR", str(tmp_path))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("0\n1\n2\n")
    for name in ("euler", "unipc"):
        assert main(["calibrate", "--model", "digits", "--scheduler", name, "--method", "ertacache", "--steps", "8",
                     "--prompts", str(prompts), "--quiet", "--no-plot"]) == 0
    files = sorted(p.name for p in tmp_path.glob("digits_8steps_*ertacache.json"))
    assert files == ["digits_8steps_euler_ertacache.json", "digits_8steps_unipc_ertacache.json"]
    for cls in ("FlowMatchEulerDiscreteScheduler", "UniPCMultistepScheduler"):
        found = find_for_run("digits", "ertacache", 8, cls)
        assert found is not None and found.scheduler == cls and found.path.parent == tmp_path


def test_a_pipeline_without_a_diffusers_scheduler_and_an_unknown_tag_are_refused_in_one_line():
    from etcdiff.calibration.profile_store import filename

    with pytest.raises(ValueError,
                       match="this pipeline has no diffusers scheduler to swap for 'unipc'; drop --scheduler"):
        use_scheduler(object(), "unipc")
    assert filename("digits", "etc-plus", 28, "unipc") == "digits_28steps_unipc_etc-plus.json"
    with pytest.raises(ValueError, match="unknown scheduler tag 'heun'; use one of euler, unipc, dpm, ddim"):
        filename("digits", "etc-plus", 28, "heun")
