"""One interface for every method: enable by name, profiles found, clear errors, the CLI for each method."""

import json

import pytest
import torch

import etcdiff
from etcdiff.calibration.profile import SHIPPED_DIR, load_profile, save_profile
from etcdiff.cli import main
from etcdiff import METHODS

SHIPPED_TAU = load_profile(SHIPPED_DIR / "digits_50steps.json").tau


def run(pipe, steps=50, prompt="3"):
    return pipe(prompt=prompt, num_inference_steps=steps, generator=torch.Generator().manual_seed(0), output_type="pt").images


def test_etc_without_threshold_uses_the_shipped_demo_profile(pipe):
    policy = etcdiff.enable(pipe, "etc")
    assert policy.threshold == SHIPPED_TAU
    run(pipe)
    assert etcdiff.last_report(pipe).params["threshold"] == SHIPPED_TAU


def test_profile_at_another_step_count_warns_and_rederives_tau(pipe):
    etcdiff.enable(pipe, "etc")
    with pytest.warns(UserWarning, match="searched at 50 steps"):
        run(pipe, steps=30)
    tau30 = etcdiff.last_report(pipe).params["threshold"]
    assert tau30 != SHIPPED_TAU
    run(pipe, steps=50)  # back at the searched count: the searched tau again
    assert etcdiff.last_report(pipe).params["threshold"] == SHIPPED_TAU


def test_a_users_profile_beats_the_shipped_one(pipe, tmp_path, monkeypatch):
    monkeypatch.setenv("ETCDIFF_PROFILE_DIR", str(tmp_path))
    mine = load_profile(SHIPPED_DIR / "digits_50steps.json")
    mine.tau = 0.01
    mine.created = "2100-01-01T00:00:00"
    save_profile(mine, tmp_path)
    assert etcdiff.enable(pipe, "etc").threshold == 0.01


def test_etc_without_threshold_profile_or_preset_says_how_to_calibrate():
    from tiny_pipelines import FACTORIES

    tiny = FACTORIES["flux"]().pipe
    with pytest.raises(ValueError, match="etcdiff calibrate"):
        etcdiff.enable(tiny, "etc")


def test_ertacache_by_name_finds_the_shipped_profile_and_by_path(pipe, tmp_path):
    policy = etcdiff.enable(pipe, "ertacache")
    run(pipe)
    assert etcdiff.last_report(pipe).num_computed < 50
    assert isinstance(policy, etcdiff.ERTACache)
    assert repr(etcdiff.ERTACache(str(SHIPPED_DIR / "digits_50steps_ertacache.json"))) == repr(policy)
    with pytest.raises(ValueError, match="profile file not found"):
        etcdiff.ERTACache(str(tmp_path / "missing.json"))


def test_peer_calibration_is_found_by_enable(pipe, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ETCDIFF_PROFILE_DIR", str(tmp_path))
    assert main(["calibrate", "--model", "digits", "--method", "magcache", "--steps", "20", "--quiet"]) == 0
    saved = json.loads(next(tmp_path.glob("digits_20steps_magcache.json")).read_text())
    rule = etcdiff.enable(pipe, "magcache")
    assert list(rule.ratios) == pytest.approx(saved["settings"]["ratios"])
    out = capsys.readouterr().out
    assert "found by etcdiff.enable and the CLI" in out
    assert next(tmp_path.glob("digits_20steps_magcache.png")).stat().st_size > 1000  # what was fitted, drawn


def test_enabling_another_kind_replaces_the_previous_method(pipe):
    etcdiff.enable(pipe, etcdiff.ETC(0.05))
    etcdiff.enable(pipe, "teacache", threshold=0.1)
    assert "forward" in vars(pipe.transformer)
    run(pipe, steps=20)
    assert hasattr(etcdiff.last_report(pipe), "stack_runs")
    etcdiff.disable(pipe)
    assert not etcdiff.is_enabled(pipe) and "forward" not in vars(pipe.transformer)


def test_unknown_method_and_bad_objects(pipe):
    with pytest.raises(ValueError, match="unknown method 'tea'.*teacache"):
        etcdiff.enable(pipe, "tea")
    with pytest.raises(TypeError, match="method must be a name"):
        etcdiff.enable(pipe, 3)
    with pytest.raises(ValueError, match="go with a method name"):
        etcdiff.enable(pipe, etcdiff.ETC(0.1), threshold=0.2)


NOT_ON_DIGITS = {"diffusers-seacache": "Wan text-to-video", "deepcache": "UNet2DConditionModel"}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_generate_runs_every_method_on_the_demo(method, tmp_path, capsys):
    out = tmp_path / "x.png"
    if method in NOT_ON_DIGITS:  # the demo is a DiT: a one-line refusal naming the methods that run on it
        assert main(["generate", "--model", "digits", "--prompt", "3", "--method", method, "--steps", "50",
                     "--out", str(out)]) != 0
        err = capsys.readouterr().err
        assert NOT_ON_DIGITS[method] in err and "Methods that run on it: etc" in err and "Traceback" not in err
        return
    assert main(["generate", "--model", "digits", "--prompt", "3", "--method", method, "--steps", "50", "--out", str(out)]) == 0
    assert out.is_file()
    text = capsys.readouterr().out
    assert f"{method}(" in text and "50 steps" in text
    if METHODS[method].kind == "step":
        assert "model calls:" in text and "block-stack" not in text
    else:  # the head and tail run every step: block-stack executions, not model calls
        assert "block-stack executions:" in text and "model calls" not in text


def test_a_scheduler_replaced_after_enable_is_followed(pipe):
    from diffusers import FlowMatchEulerDiscreteScheduler

    policy = etcdiff.ETC(0.05, warmup=4)
    etcdiff.enable(pipe, policy)
    expected = run(pipe, steps=30)
    expected_steps = etcdiff.last_report(pipe).computed_steps
    old = pipe.scheduler
    pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(old.config)
    assert torch.equal(run(pipe, steps=30), expected)
    assert etcdiff.last_report(pipe).computed_steps == expected_steps
    assert not {"step", "set_timesteps"} & set(vars(old))  # the old one is left as it was
    etcdiff.disable(pipe)
    assert not {"step", "set_timesteps", "set_begin_index"} & set(vars(pipe.scheduler))


def test_calibration_leaves_the_pipelines_progress_bar_config_as_it_was(pipe):
    from etcdiff.calibration import calibrate_pipeline

    pipe.set_progress_bar_config(leave=False)
    with pytest.warns(UserWarning):  # 10 steps: a short curve, the search says so
        calibrate_pipeline(pipe, ["1", "2"], steps=10, progress=False)
    assert pipe._progress_bar_config == {"leave": False}
    assert not etcdiff.is_enabled(pipe) and "step" not in vars(pipe.scheduler)


def test_etc_under_torch_compile_keeps_its_schedule_and_image(pipe):
    # Decisions run under torch.compiler.disable: a compiled denoiser gets the same steps and output.
    policy = etcdiff.ETC(0.05, warmup=4)
    etcdiff.enable(pipe, policy)
    ref = run(pipe, steps=20)
    steps = etcdiff.last_report(pipe).computed_steps
    pipe.transformer.compile(backend="eager")
    try:
        out = run(pipe, steps=20)
    finally:
        torch._dynamo.reset()
    assert etcdiff.last_report(pipe).computed_steps == steps and len(steps) < 20
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
