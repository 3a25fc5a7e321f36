"""Replays (etcdiff.calibration.etc_plus.replay): exact for the solver, first order for the model."""

import math
import warnings

import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

import etcdiff
from etcdiff.calibration.etc_plus.propagation import probe_steps
from etcdiff.calibration.etc_plus.replay import Replay, noise_scales, replayable
from etcdiff.calibration.runs import record_denoiser_runs
from etcdiff.policies import FixedInterval, NoCache, SkipSteps


def _blind_model(x, t):
    """An output that depends on the step only: a replay at feedback 0 is then exact, skips included."""
    s = float(t) / 1000
    return torch.sin(torch.full_like(x, 3 * s)) + s * torch.arange(x.numel(), dtype=x.dtype).reshape(x.shape) / x.numel()


@pytest.mark.parametrize("make", [lambda: UniPCMultistepScheduler(prediction_type="flow_prediction",
                                                                  use_flow_sigmas=True, flow_shift=3.0),
                                  lambda: DPMSolverMultistepScheduler(algorithm_type="dpmsolver++")])
def test_a_replay_at_no_feedback_is_the_real_run_of_a_model_blind_to_the_latents(make):
    sched = make()
    noises = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    records = record_denoiser_runs(_blind_model, sched, noises, 12)
    assert replayable(records)
    replay = Replay(records, 0.0)
    assert torch.allclose(replay(NoCache(), 1), records[1].final, atol=1e-6)
    for policy in (SkipSteps({3, 4, 9}), FixedInterval(interval=3)):
        real = etcdiff.sample(_blind_model, sched, noises[2:3], 12, policy)
        assert torch.allclose(replay(policy, 2), real, atol=1e-5)


def test_feedback_pulls_a_strayed_replay_back_and_the_noise_scale_follows_sigma():
    sched = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=1.0)

    def pulled(x, t):  # v = (x - x0) / sigma with x0 = 0.5: a model that snaps every sample to one point
        sigma = max(float(t) / 1000, 1e-3)
        return (x - 0.5) / sigma

    noises = torch.randn(4, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    records = record_denoiser_runs(pulled, sched, noises, 10)
    scales = noise_scales(records)
    assert scales == sorted(scales, reverse=True)  # noise falls along the run
    skip = SkipSteps({2, 3})
    errors = {lam: float((Replay(records, lam)(skip, 0) - records[0].final).abs().max()) for lam in (0.0, 0.9)}
    assert errors[0.9] < errors[0.0]  # the model's pull shrinks what the skipped steps left


def test_a_half_precision_run_replays_in_its_own_precision():
    """Records are kept in float32; a bf16 run rounds its latents at every step, and its replay must too (a float32
    replay of this run misses the recorded result by more than the 2 % the replay check allows)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    def model(x, t):  # depends on x, so every rounding of the latents reaches the next output
        return (torch.tanh(3 * x.float()) * (1 + float(t) / 1000) - 0.2 * x.float()).to(x.dtype)

    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    noises = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    records = record_denoiser_runs(model, sched, noises, 50)
    assert records[0].input_dtype == records[0].output_dtype == torch.bfloat16
    assert records[0].final.dtype == torch.float32 and replayable(records)
    assert torch.equal(Replay(records, 0.0)(NoCache(), 0), records[0].final)
    blind = lambda x, t: _blind_model(x.float(), t).to(x.dtype)  # noqa: E731 - its skips replay exactly too
    records = record_denoiser_runs(blind, sched, noises, 50)
    real = etcdiff.sample(blind, sched, noises[1:], 50, SkipSteps({5, 6, 20}))
    assert torch.equal(Replay(records, 0.0)(SkipSteps({5, 6, 20}), 1), real.float())


def test_a_recording_whose_latents_outputs_and_result_are_collinear_gets_unit_scales_on_any_machine():
    """A model that answers 0.7·x keeps every latent, output and result along the starting noise: the split of x_t
    into signal and noise is then undetermined, and the solve returned rounding noise; it now falls back to 1."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from etcdiff.calibration.etc_plus.replay import noise_fit

    noises = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    records = record_denoiser_runs(lambda x, t: 0.7 * x, FlowMatchEulerDiscreteScheduler(shift=3.0), noises, 8)
    assert noise_fit(records) == ([1.0] * 8, [1.0] * 8)


def test_runs_without_a_solver_or_with_another_step_count_are_not_replayable():
    sched = UniPCMultistepScheduler()
    records = record_denoiser_runs(_blind_model, sched, torch.randn(2, 1, 4, 4), 6)
    assert replayable(records)
    records[0].solver = None
    assert not replayable(records)
    assert not replayable([])


def test_replays_fall_back_to_real_runs_and_real_probes_where_the_runs_cannot_be_replayed(monkeypatch):
    import etcdiff.calibration.etc_plus.replay as replay_module

    monkeypatch.setattr(replay_module, "replayable", lambda records: False)
    sched = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    noises = torch.randn(5, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    with pytest.warns(UserWarning, match="replays=True was not used: the runs cannot be replayed"):
        policy = etcdiff.calibrate_policy("etc-plus", _blind_model, sched, noises, 10, replays=True)
    replay = policy.profile["replay"]
    assert replay["used"] is False and "cannot be replayed" in replay["why"]
    cost = policy.profile["cost"]
    assert cost["probes"] == 3 * len(probe_steps(10))  # probed after recording, each probe one generation
    assert cost["generations"] == 5 + cost["probes"] + cost["real_runs"]
    assert cost["real_runs"] > 3 * len(replay_module.FEEDBACK_SPEEDUPS)  # the held-out runs were real too


def test_a_replayed_calibration_probes_one_run_for_real_and_makes_at_most_30_generations_with_10_prompts():
    """At 50 steps with the CLI's 10 prompts: 10 full runs, one run's probes (10), the feedback's 2 runs at 3
    budgets and at most 2 real tolerance checks on them: 30 at most, as the progress bar's bound says."""
    from etcdiff.catalog import _probe_runs

    sched = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    noises = torch.randn(10, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    policy = etcdiff.calibrate_policy("etc-plus", _gaussian_flow(), sched, noises, 50, replays=True,
                                      propagation=True, corrections="auto")  # no choice to replay: a quicker test
    cost, replay = policy.profile["cost"], policy.profile["replay"]
    assert replay["used"] and replay["held_out_runs"] == [8, 9] and replay["runs"] == 2 * 3
    real, replayed = replay["real_log_errors"], replay["replayed_log_errors"]  # what the miss is measured on
    assert len(real) == len(replayed) == 6 and replay["rms_log_miss"] == pytest.approx(
        (sum((a - b) ** 2 for a, b in zip(real, replayed)) / 6) ** 0.5, abs=1e-3)
    assert cost["recorded"] == 10 and cost["probes"] == len(probe_steps(50)) == 10
    assert cost["generations"] == 10 + cost["probes"] + cost["real_runs"] <= 10 + _probe_runs(10, 50, replays=True) == 30


def test_real_probes_measure_against_the_recorded_result_without_a_full_run_of_their_own():
    from etcdiff.calibration.etc_plus.propagation import probe_runs
    from etcdiff.calibration.policy_runs import denoiser_runner

    sched = DPMSolverMultistepScheduler(algorithm_type="dpmsolver++")
    noises = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(4))
    records = record_denoiser_runs(_gaussian_flow(), sched, noises, 12)
    inner, made = denoiser_runner(_gaussian_flow(), sched, noises, 12), []

    def run(policy, i):
        made.append(type(policy).__name__)
        return inner(policy, i)

    probe_runs(records[1:], lambda policy, i: run(policy, i + 1), [2, 7, 10])
    assert made == ["SkipSteps"] * 3  # no NoCache run for the reference
    for t in (2, 7, 10):
        moved = (records[1].outputs[t] - records[1].outputs[t - 1]).double().pow(2).mean().sqrt()
        reached = (inner(SkipSteps({t}), 1).double() - inner(NoCache(), 1).double()).pow(2).mean().sqrt()
        assert records[1].probes[t] == pytest.approx([float(reached / moved)], rel=1e-4)


def _gaussian_flow(mean: float = 0.3, var: float = 0.05):
    """The exact flow-matching velocity for data N(mean, var) per element: the denoised estimate follows a strayed
    sample by ``(1-s)·var / ((1-s)²·var + s²)``, fully at low noise and not at all at high noise."""
    def model(x, t):
        s = max(float(t) / 1000, 1e-4)
        x0 = mean + (1 - s) * var / ((1 - s) ** 2 * var + s * s) * (x - (1 - s) * mean)
        return (x - x0) / s - x0  # eps - x0, with eps = (x - (1-s)·x0) / s

    return model


def test_the_fitted_feedback_fades_with_the_noise_where_the_model_does():
    """On a model whose pull fades as the noise falls, the feedback that fades with the signal-to-noise ratio
    reproduces the real runs' errors more closely than any constant pull, and calibration picks it."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from etcdiff.calibration.etc_plus.replay import feedback_candidates, noise_fit

    noises = torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(5))
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    policy = etcdiff.calibrate_policy("etc-plus", _gaussian_flow(), sched, noises, 16, replays=True)
    replay = policy.profile["replay"]
    assert "snr" in replay["feedback"]
    assert replay["rms_log_miss"] < min(replay["rms_log_miss_constant"].values())
    signal, noise = noise_fit(record_denoiser_runs(_gaussian_flow(), sched, noises[:3], 16))
    fading = feedback_candidates(signal, noise)[replay["feedback"]]
    assert fading == sorted(fading, reverse=True) and fading[-1] < 0.1 * fading[0]  # the pull fades as noise falls


def _saturating_model(x, t):
    """An output that saturates in x (``3·tanh(5x)``): a first-order replay cannot follow how it answers a stray."""
    return 3 * torch.tanh(5 * x) + float(t) / 1000


def test_replays_that_miss_the_real_runs_by_far_are_said_and_close_ones_are_not():
    from etcdiff.calibration.etc_plus.replay import TRUSTED_MISS, untrusted
    from diffusers import FlowMatchEulerDiscreteScheduler

    assert untrusted({"rms_log_miss": TRUSTED_MISS}, "x") is None and untrusted({"runs": 0}, "x") is None
    assert untrusted({"rms_log_miss": 0.7}, "the replays").startswith(
        "the replays missed the real runs' errors by 0.70 in log error (rms: 2.0 times the error)")
    noises = torch.randn(6, 1, 4, 4, generator=torch.Generator().manual_seed(3))

    def calibrate(model, **extra):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            policy = etcdiff.calibrate_policy("etc-plus", model, FlowMatchEulerDiscreteScheduler(), noises, 12,
                                              propagation=True, corrections="auto", **extra)
        return policy, [str(w.message) for w in seen if "missed the real runs" in str(w.message)]

    policy, said = calibrate(_saturating_model, replays=True)
    assert policy.profile["replay"]["rms_log_miss"] > TRUSTED_MISS
    assert len(said) == 1 and said[0].startswith("etc-plus: the replays missed") and said[0].endswith(
        "calibrate without replays=true to choose on real held-out runs.")
    policy, said = calibrate(_gaussian_flow(), replays=True)
    assert policy.profile["replay"]["rms_log_miss"] < TRUSTED_MISS and said == []
    # a served step count's surrogate is judged the same way, and the fix named is a calibration at that count
    policy, said = calibrate(_saturating_model, serve_steps=[8])
    assert len(said) == 1 and said[0].startswith("etc-plus: the surrogate of the recorded runs missed")
    assert said[0].endswith("calibrate at 8 steps instead (--steps N) for a profile chosen on real runs there.")
    policy, said = calibrate(_saturating_model, serve_steps=[8], serve_recorded=True)
    assert len(said) == 1 and said[0].startswith("etc-plus: the surrogate of the real runs at 8 steps missed")


def test_replays_that_miss_the_chosen_plans_real_runs_are_said_where_the_pull_fitted_well():
    """The pull is fitted on one candidate's real runs; the tolerance check runs the chosen fit's own plans for real.
    Where those miss their replays beyond the bar while the pull did not, calibration says so; the record keeps the
    chosen plans' miss either way, and a pull that missed already is said once (by its own warning)."""
    from etcdiff.calibration.etc_plus.replay import keep_chosen_miss

    def said(chosen, pull):
        record = {"used": True, "runs": 6, "rms_log_miss": pull}
        note = keep_chosen_miss(record, {"met": True, "replay_miss": chosen})
        assert record["chosen_miss"] == chosen
        return note

    assert said(0.3, 0.1) is None and said(0.4, 0.1) is None and said(1.27, 0.5) is None
    assert said(1.27, 0.12) == ("the replays missed the real runs of the chosen plans by 1.27 in log error (rms: 3.6 "
                                "times the error), more than 0.4 (the pull, fitted on other plans' runs, "
                                "missed those by 0.12): the plans chosen on them may not be this model's")
    record = {"used": True, "runs": 6, "rms_log_miss": 0.1}
    assert keep_chosen_miss(record, {"met": True}) is None and keep_chosen_miss(record, None) is None
    assert "chosen_miss" not in record  # no real pass: nothing to say or keep


def test_calibration_warns_once_where_the_chosen_plans_replays_miss_their_real_runs(monkeypatch):
    """End to end: with the bar lowered under what the chosen plans miss by (the exact Gaussian flow's pull fits),
    calibration warns in one line with the fix; with it at its value, not."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    from etcdiff.calibration.etc_plus import replay

    noises = torch.randn(6, 1, 4, 4, generator=torch.Generator().manual_seed(3))

    def warned():
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            policy = etcdiff.calibrate_policy("etc-plus", _gaussian_flow(), FlowMatchEulerDiscreteScheduler(), noises,
                                              12, propagation=True, corrections="auto", replays=True)
        return policy.profile["replay"], [str(w.message) for w in seen if "chosen plans" in str(w.message)]

    record, said = warned()  # here the pull misses by 0.025, the chosen plans by 0.039
    assert said == [] and record["rms_log_miss"] < record["chosen_miss"] <= replay.TRUSTED_MISS
    monkeypatch.setattr(replay, "TRUSTED_MISS", (record["rms_log_miss"] + record["chosen_miss"]) / 2)
    again, said = warned()  # a bar between the two: only the chosen plans' miss is said
    assert again["chosen_miss"] == record["chosen_miss"] and len(said) == 1
    assert said[0].startswith("etc-plus: the replays missed the real runs of the chosen plans")
    assert said[0].endswith("calibrate without replays=true to choose on real held-out runs.")


def test_a_model_that_pushes_a_stray_further_is_fitted_a_push():
    """A flow model whose velocity grows against the sample (``-x``) drives a strayed sample further at each Euler
    step: the fitted feedback is a push (below 0), and it replays the real runs far closer than no pull."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    def pushing(x, t):
        return torch.sin(torch.full_like(x, 3 * float(t) / 1000)) - x

    noises = torch.randn(6, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        policy = etcdiff.calibrate_policy("etc-plus", pushing, FlowMatchEulerDiscreteScheduler(), noises, 12,
                                          replays=True, propagation=True, corrections="auto")
    replay = policy.profile["replay"]
    assert float(replay["feedback"]) < 0
    assert replay["rms_log_miss"] < 0.5 * replay["rms_log_miss_constant"]["0"]


def test_untrusted_replays_choose_from_the_replay_default_and_trusted_ones_as_real_runs_do(monkeypatch):
    """Replays that miss their real runs by more than ``TRUSTED_MISS`` start the choice from the method's replay
    default (no probes, gains only where they held out) and leave it only beyond that miss; trusted ones choose
    in the order and by the bar of a choice on real runs."""
    import etcdiff.calibration.etc_plus.replay as replay_module

    sched = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    noises = torch.randn(7, 1, 4, 4, generator=torch.Generator().manual_seed(5))

    def selection(bar, **offsets):
        monkeypatch.setattr(replay_module, "TRUSTED_MISS", bar)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the untrusted warning (its own test)
            policy = etcdiff.calibrate_policy("etc-plus", _gaussian_flow(), sched, noises, 10, replays=True, **offsets)
        return policy.profile["selection"], policy.profile["replay"]

    sel, replay = selection(-1.0)  # every miss untrusted
    assert replay["rms_log_miss"] > 0
    assert list(sel["mean_log_rel_error"])[0] == "propagation=False,corrections=auto"
    assert sel["slack"] == pytest.approx(replay["rms_log_miss"], abs=1e-4)
    sel, replay = selection(-1.0, replay_offsets=True)
    assert sel["slack"] == pytest.approx(replay["rms_log_miss_offset"], abs=1e-4)  # the miss once shifted
    sel, replay = selection(1e9)  # every miss trusted
    assert list(sel["mean_log_rel_error"])[0] == "propagation=True,corrections=auto" and "slack" not in sel


def test_several_candidates_share_the_pulls_real_runs_and_each_keeps_its_offset():
    """With several candidates the pull's real runs are spread over them, each on the same runs at the same
    budgets (paired), no more runs than with one; each keeps the mean of real minus replayed log error, and the
    miss left is what the other runs' offset leaves of each run."""
    from etcdiff.calibration.etc_plus.replay import _cells, candidate_offsets

    assert _cells(["x"], [2, 3, 4], [8, 9]) == [("x", 0, 2, [8, 9]), ("x", 1, 3, [8, 9]), ("x", 2, 4, [8, 9])]
    cells = _cells(["a", "b", "c"], [2, 3, 4], [8, 9])
    assert cells == [("a", 0, 2, [8]), ("a", 2, 4, [9]), ("b", 0, 2, [8]), ("b", 2, 4, [9]),
                     ("c", 0, 2, [8]), ("c", 2, 4, [9])]
    assert sum(len(runs) for *_, runs in cells) == 6  # as many as one candidate at three budgets on two runs
    got = candidate_offsets(["a", "a", "b", "b"], [-3.0, -4.0, -2.0, -2.5], [-3.5, -4.1, -3.0, -3.0])
    assert got["offsets"] == {"a": pytest.approx(0.3), "b": pytest.approx(0.75)}
    # a: gaps 0.5, 0.1 -> each misses the other's by 0.4; b: 1.0, 0.5 -> by 0.5
    assert got["rms_log_miss_offset"] == pytest.approx(math.sqrt((2 * 0.4 ** 2 + 2 * 0.5 ** 2) / 4), abs=1e-4)
    assert "rms_log_miss_offset" not in candidate_offsets(["a", "b"], [0.0, 0.0], [1.0, 2.0])  # one run each
