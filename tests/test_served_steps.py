"""One ETC+ calibration for other step counts: the calibration made again on a surrogate of the recorded runs
(etcdiff.calibration.etc_plus.surrogate, the profile's ``served_steps``)."""

import copy
import warnings

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

import etcdiff
from etcdiff.calibration.etc_plus.replay import noise_scales
from etcdiff.calibration.etc_plus.surrogate import SurrogateDenoiser, preset_scheduler
from etcdiff.calibration.runs import record_denoiser_runs
from etcdiff.integration.step.recording import fresh_copy
from etcdiff.policies import ETCPlus, NoCache


def _smooth(x, t):
    """An output smooth in time that also follows the latents a little."""
    s = float(t) / 1000
    return torch.sin(torch.full_like(x, 3 * s)) + s * s * torch.linspace(-1, 1, x.numel()).reshape(x.shape) - 0.1 * x


def _gaussian_flow(mean: float = 0.3, var: float = 0.05):
    def model(x, t):  # the exact flow-matching velocity for data N(mean, var)
        s = max(float(t) / 1000, 1e-4)
        x0 = mean + (1 - s) * var / ((1 - s) ** 2 * var + s * s) * (x - (1 - s) * mean)
        return (x - x0) / s - x0

    return model


def _noises(count, seed=0):
    return torch.randn(count, 1, 4, 4, generator=torch.Generator().manual_seed(seed))


def test_the_surrogate_answers_the_recorded_outputs_and_its_full_run_lands_on_the_recorded_result():
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    noises = _noises(3)
    records = record_denoiser_runs(_smooth, sched, noises, 12)
    model = SurrogateDenoiser(records, [0.0] * 12, noise_scales(records))
    for k, t in enumerate(records[0].solver.timesteps):
        assert torch.allclose(model(records[1].inputs[k], t), records[1].outputs[k], atol=1e-5)
    for i in range(3):  # each sample is answered from its own run
        final = etcdiff.sample(model, sched, noises[i:i + 1], 12, NoCache())
        assert torch.allclose(final, records[i].final, atol=1e-5)


@pytest.mark.parametrize("steps", [17, 28])
def test_at_another_step_count_the_surrogate_run_follows_the_real_one(steps):
    """With the model's own response to a stray (``_smooth`` moves its output by -0.1 per unit of latent, a pull
    of ``-0.1·s_t``) the surrogate's run at another step count lands on the real one; blind to strays, it does not."""
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    noises = _noises(2, seed=1)
    records = record_denoiser_runs(_smooth, sched, noises, 50)
    scales = noise_scales(records)
    real = etcdiff.sample(_smooth, sched, noises[1:], steps, NoCache())

    def miss(feedback):
        got = etcdiff.sample(SurrogateDenoiser(records, feedback, scales), sched, noises[1:], steps, NoCache())
        return float((got - real).norm() / real.norm())

    assert miss([-0.1 * s for s in scales]) < 1e-3
    assert miss([0.0] * 50) > 3 * miss([-0.1 * s for s in scales])


def test_between_recorded_steps_the_surrogate_is_the_cubic_spline_of_the_runs_and_holds_one_copy_of_them():
    """The spline as weights over the recorded steps: the same values as scipy's spline of the data itself, in
    the runs' own precision, with no per-value coefficients (which took 8x the runs)."""
    import numpy as np
    from scipy.interpolate import CubicSpline

    from etcdiff.calibration.etc_plus.surrogate import SPLINE_ENDS

    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    noises = _noises(3, seed=2)
    records = record_denoiser_runs(_smooth, sched, noises, 20)
    model = SurrogateDenoiser(records, [0.0] * 20, noise_scales(records))
    times = np.array([float(t) for t in records[0].solver.timesteps][::-1])
    data = torch.stack([torch.cat([r.outputs[k] for r in records]) for k in range(20)][::-1]).double()
    direct = CubicSpline(times, data.reshape(20, -1).numpy(), axis=0, bc_type=SPLINE_ENDS)
    for t in (times[0] + 0.3, 333.3, 512.0, times[-1] - 0.7):
        _, out = model._recorded(float(t))
        expected = torch.from_numpy(direct(t))
        assert torch.allclose(out.reshape(3, -1), expected.reshape(3, -1), rtol=1e-5, atol=1e-6)
    held = [v for v in vars(model).values() if isinstance(v, torch.Tensor)]
    assert sum(v.numel() for v in held) == 2 * 20 * noises.numel()  # inputs and outputs, once
    assert all(v.dtype == records[0].outputs[0].dtype for v in held)


def test_a_preset_scheduler_keeps_the_schedule_it_was_set_to():
    sched = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
    sched.set_timesteps(9, mu=1.1)  # a pipeline's schedule, which a bare set_timesteps(9) cannot make
    preset = preset_scheduler(sched)
    assert type(preset).__name__ == "FlowMatchEulerDiscreteScheduler" and isinstance(preset, type(sched))
    preset.set_timesteps(30)
    assert torch.equal(preset.sigmas, sched.sigmas)
    again = fresh_copy(copy.deepcopy(preset))
    again.set_timesteps(4)
    assert torch.equal(again.timesteps, sched.timesteps)


def test_a_calibration_serves_the_step_counts_asked_for_from_its_surrogate():
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    noises = _noises(8, seed=2)
    policy = etcdiff.calibrate_policy("etc-plus", _gaussian_flow(), sched, noises, 24, serve_steps="12,16")
    profile = policy.calibrated
    served = profile["served_steps"]
    assert sorted(served) == ["12", "16"] and [served[k]["num_steps"] for k in ("12", "16")] == [12, 16]
    for one in served.values():
        assert one["cost"]["generations"] == 0 and one["cost"]["surrogate_runs"] > 8
        assert "served_steps" not in one
    assert profile["cost"]["real_runs"] >= 12  # the surrogate's feedback, fitted on real runs at 24 steps
    assert len(profile["served_feedback"]) == 24
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # served: no resampling warning
        planned = ETCPlus(profile, calls=6).planned_steps(16)
    assert planned == ETCPlus(served["16"], calls=6).planned_steps(16)
    calls = []

    def counted(x, t):
        calls.append(float(t))
        return _gaussian_flow()(x, t)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        etcdiff.sample(counted, sched, noises[:1], 16, ETCPlus(profile, calls=6))
    assert len(calls) == len(planned)
    with pytest.warns(UserWarning, match="resampled on the sigma axis"):  # a step count not served
        etcdiff.sample(counted, sched, noises[:1], 20, ETCPlus(profile, calls=6))
    assert ETCPlus(profile, calls=8).planned_steps(24) == ETCPlus(
        {k: v for k, v in profile.items() if k != "served_steps"}, calls=8).planned_steps(24)


def test_serve_recorded_draws_each_served_surrogate_from_real_full_runs_at_that_step_count():
    """With ``serve_recorded``, each served step count costs one real full run per noise, one run's probes and the
    real runs that fit its feedback there (none at the calibration's step count), counted in the profile's cost
    and the method's bound on it; the served calibration is made on those runs."""
    from etcdiff.calibration.etc_plus.propagation import PROBES, probe_steps
    from etcdiff.catalog import _probe_runs

    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    noises = _noises(6, seed=5)
    seen = []

    def model(x, t):
        seen.append(float(t))
        return _gaussian_flow()(x, t)

    served_at = copy.deepcopy(sched)
    served_at.set_timesteps(8)
    eight = {float(t) for t in served_at.timesteps}
    plain = etcdiff.calibrate_policy("etc-plus", _gaussian_flow(), sched, noises, 12, serve_steps=[8]).calibrated
    alone = etcdiff.calibrate_policy("etc-plus", _gaussian_flow(), sched, noises, 12).calibrated
    seen.clear()
    profile = etcdiff.calibrate_policy("etc-plus", model, sched, noises, 12, serve_steps=[8],
                                       serve_recorded=True).calibrated
    one = profile["served_steps"]["8"]
    probes = len(probe_steps(8, PROBES))
    assert profile["served_recorded"] is True and "served_recorded" not in plain
    pull = one["served_feedback"]
    assert pull["runs"] > 0 and len(pull["curve"]) == 8 and "served_feedback" not in profile
    assert one["cost"]["generations"] == len(noises) + probes + pull["runs"]
    assert profile["cost"]["generations"] == alone["cost"]["generations"] + one["cost"]["generations"]
    assert plain["cost"]["generations"] > alone["cost"]["generations"]  # its feedback, fitted at 12 steps
    assert sum(t in eight for t in seen) >= len(noises) * 8  # the model itself ran the 8-step schedule
    assert profile["cost"]["generations"] - len(noises) <= _probe_runs(len(noises), 12, serve_steps=[8],
                                                                       serve_recorded=True)
    assert one["num_steps"] == 8 and one["cost"]["surrogate_runs"] > 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # served: no resampling warning
        assert ETCPlus(profile, calls=4).planned_steps(8) == ETCPlus(one, calls=4).planned_steps(8)


def test_serve_recorded_without_step_counts_to_serve_is_refused_in_one_line():
    with pytest.raises(ValueError, match=r"serve_recorded=true records the step counts of serve_steps.*"
                                         r"--set serve_steps=") as err:
        etcdiff.calibrate_policy("etc-plus", _gaussian_flow(), FlowMatchEulerDiscreteScheduler(), _noises(4), 10,
                                 serve_recorded=True)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="serve_recorded must be true or false"):
        etcdiff.calibrate_policy("etc-plus", _gaussian_flow(), FlowMatchEulerDiscreteScheduler(), _noises(4), 10,
                                 serve_steps=[8], serve_recorded="yes")


def test_a_replayed_calibration_serves_with_the_feedback_it_fitted():
    sched = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    policy = etcdiff.calibrate_policy("etc-plus", _gaussian_flow(), sched, _noises(6, seed=3), 14, replays=True,
                                      serve_steps=[10])
    profile = policy.calibrated
    assert profile["served_feedback"] == profile["replay"]["curve"]
    assert profile["served_steps"]["10"]["scheduler"]["class"] == "UniPCMultistepScheduler"


@pytest.mark.parametrize("value", [[2], "abc", [True], 3.5, []])
def test_serve_steps_that_are_not_step_counts_are_refused_in_one_line(value):
    if value == []:  # nothing to serve: the calibration as usual
        policy = etcdiff.calibrate_policy("etc-plus", _gaussian_flow(), FlowMatchEulerDiscreteScheduler(), _noises(4),
                                          10, serve_steps=value)
        assert "served_steps" not in policy.calibrated
        return
    with pytest.raises(ValueError, match=r"serve_steps must be step counts of at least 3") as err:
        etcdiff.calibrate_policy("etc-plus", _gaussian_flow(), FlowMatchEulerDiscreteScheduler(), _noises(4), 10,
                                 serve_steps=value)
    assert "\n" not in str(err.value)


def test_only_etc_plus_takes_serve_steps():
    with pytest.raises(ValueError, match="serve_steps"):
        etcdiff.calibrate_policy("ertacache", _gaussian_flow(), FlowMatchEulerDiscreteScheduler(), _noises(4), 10,
                                 serve_steps=[8])


def test_serving_more_steps_than_calibrated_warns_that_the_surrogate_extrapolates():
    with pytest.warns(UserWarning, match=r"serve_steps 12 above the calibration's 10 steps: the surrogate extrapolates"):
        policy = etcdiff.calibrate_policy("etc-plus", _gaussian_flow(), FlowMatchEulerDiscreteScheduler(shift=3.0),
                                          _noises(5, seed=4), 10, serve_steps=[8, 12])
    assert sorted(policy.calibrated["served_steps"]) == ["12", "8"]


def test_runs_that_cannot_be_replayed_are_refused_before_the_fit(monkeypatch):
    import etcdiff.calibration.etc_plus.replay as replay_module
    import etcdiff.calibrate as calibrate_module

    monkeypatch.setattr(replay_module, "replayable", lambda records: False)
    monkeypatch.setattr(calibrate_module, "_fit", lambda *a, **k: pytest.fail("fitted before refusing"))
    with pytest.raises(ValueError, match="serve_steps needs runs that a copy of the scheduler can replay") as err:
        etcdiff.calibrate_policy("etc-plus", _gaussian_flow(), FlowMatchEulerDiscreteScheduler(), _noises(4), 10,
                                 serve_steps=[8])
    assert "\n" not in str(err.value)


def test_etcdiff_calibrate_serves_a_pipeline_at_other_step_counts(tmp_path, capsys):
    """Through the CLI on the digits pipeline: the profile serves 6 steps from its own calibration (one real run
    at 6 steps gave the schedule), and a generation at 6 steps plans from it without the resampling warning."""
    import json

    from etcdiff.cli import main
    from etcdiff.models import load_pipeline

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("0\n1\n2\n3\n4\n")
    assert main(["calibrate", "--model", "digits", "--method", "etc-plus", "--steps", "8", "--prompts", str(prompts),
                 "--quiet", "--no-plot", "--out", str(tmp_path), "--set", "serve_steps=6"]) == 0
    out = capsys.readouterr().out
    assert "also serves 6 steps: calibrated again on a surrogate of the recorded runs" in out
    assert "1 full run(s) there for the pipeline's schedule)" in out  # the one real run that gave the schedule
    path = next(tmp_path.glob("*etc-plus.json"))
    profile = json.loads(path.read_text())["settings"]["profile"]
    served = profile["served_steps"]["6"]
    assert served["num_steps"] == 6 and served["scheduler"]["class"] == profile["scheduler"]["class"]
    pipe = load_pipeline("digits")
    pipe.set_progress_bar_config(disable=True)
    etcdiff.enable(pipe, "etc-plus", profile=str(path), calls=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        pipe([3], num_inference_steps=6, generator=torch.Generator().manual_seed(0))
    ran = etcdiff.summary(pipe)["computed_steps"]
    assert ran == len(ETCPlus(served, calls=3).planned_steps(6))


def test_etcdiff_calibrate_serves_a_pipeline_from_real_runs_at_the_served_step_count(tmp_path, capsys):
    """``--set serve_recorded=true`` on the digits pipeline: every calibration prompt is run for real at the served
    step count and one of them probed; the CLI says so, and the cost counts them."""
    import json

    from etcdiff.calibration.etc_plus.propagation import PROBES, probe_steps
    from etcdiff.cli import main

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("0\n1\n2\n3\n4\n")
    assert main(["calibrate", "--model", "digits", "--method", "etc-plus", "--steps", "8", "--prompts", str(prompts),
                 "--quiet", "--no-plot", "--out", str(tmp_path), "--set", "serve_steps=6",
                 "--set", "serve_recorded=true"]) == 0
    out = capsys.readouterr().out
    profile = json.loads(next(tmp_path.glob("*etc-plus.json")).read_text())["settings"]["profile"]
    served = profile["served_steps"]["6"]
    real = 5 + len(probe_steps(6, PROBES)) + served["served_feedback"]["runs"]
    assert f"also serves 6 steps: calibrated again on a surrogate of real full runs at each ({real} generations" in out
    assert profile["served_recorded"] is True and served["num_steps"] == 6
    assert served["cost"]["generations"] == real and served["served_feedback"]["runs"] > 0
    assert served["scheduler"]["class"] == profile["scheduler"]["class"]


def test_the_memory_script_compares_the_surrogate_with_a_spline_of_the_data(tmp_path, monkeypatch):
    """scripts/surrogate_memory.py at a tiny size, both sides in this process: the same final latents."""
    import argparse

    from repo_scripts import load_script

    script = load_script("surrogate_memory")
    args = argparse.Namespace(shape=[1, 4, 4], runs=3, steps=12, at=8, repeats=1)
    rows = [script.measure(kind, args, str(tmp_path / f"{kind}.pt")) for kind in ("weights", "data")]
    assert all(r["recorded_mb"] > 0 and r["build_s"] >= 0 for r in rows)
    a, b = (torch.load(tmp_path / f"{kind}.pt") for kind in ("weights", "data"))
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-6) and not torch.equal(a, torch.zeros_like(a))


def test_serving_the_calibrations_own_step_count_is_said_not_dropped_in_silence():
    with pytest.warns(UserWarning, match=r"serve_steps 10 is the calibration's own step count.*nothing is served"):
        profile = etcdiff.calibrate_policy("etc-plus", _gaussian_flow(), FlowMatchEulerDiscreteScheduler(shift=3.0),
                                           _noises(4), 10, serve_steps=[10, 8]).calibrated
    assert sorted(profile["served_steps"]) == ["8"]
