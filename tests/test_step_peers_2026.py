"""The step-level peers of 2025-26 (EasyCache, LazyCache, LeMiCa, the PreciseCache reconstruction): decision rules
on scripted traces worked out by hand, LeMiCa's search against brute force and its budget over seeds, batch sizes
and guidance layouts, and the methods by name through enable, sample, generate and calibrate."""

import itertools
import random

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

import etcdiff
from etcdiff.cli import main
from etcdiff.integration.step.recording import Trajectory, record_pipeline
from etcdiff.policies.step.easycache import EasyCache
from etcdiff.policies.step.lazycache import LazyCache
from etcdiff.policies.step.lemica import LeMiCa, LeMiCaProfile, fit_lemica, search_leximax
from etcdiff.policies.step.precisecache import PreciseCache, low_pass
from test_peer_policies import drive_latents


# -- EasyCache and LazyCache ------------------------------------------------------------------------------------

LATENTS = [0, 1, 2, 3, 4, 5, 6, 7]
MODEL = [6, 8, 100, 12, 32, 100, 100, 40]  # what the 'model' returns when it runs


def test_easycache_rule_worked_by_hand():
    # threshold .6, warmup 2, N = 8, x_t = t. t0, t1 warm-up: k = |8-6| / |1-0| = 2, out_c = 8, x_c = 1.
    # t2: acc = k·|x2-x1|/|out_c| = 2/8 = .25 < .6 -> reuse x2 + (8 - 1) = 9. t3: acc .5 -> reuse 3 + 7 = 10.
    # t4: acc .75 -> run (32), acc 0; k = |32-8| / |4-1| = 8. t5: 8/32 = .25 -> reuse 5 + 28 = 33. t6: .5 -> 34.
    # t7: the last step runs.
    report, used = drive_latents(EasyCache(0.6, warmup=2), LATENTS, MODEL)
    assert report.computed_steps == [0, 1, 4, 7]
    assert used == [6, 8, 9, 10, 32, 33, 34, 40]
    assert report.err == [None, None, 0.25, 0.5, 0.75, 0.25, 0.5, None]
    report, used = drive_latents(EasyCache(0.6, warmup=2, reuse="output"), LATENTS, MODEL)
    assert report.computed_steps == [0, 1, 4, 7] and used == [6, 8, 8, 8, 32, 32, 32, 40]


def test_easycache_defaults_are_the_official_ones():
    assert EasyCache().params() == {"threshold": 0.05, "warmup": 10, "reuse": "residual"}
    report, _ = drive_latents(EasyCache(), list(range(12)), [1.0] * 12)
    assert report.computed_steps[:10] == list(range(10))  # ret_steps = 10


def test_lazycache_measures_the_change_since_the_last_computed_step():
    # Same trace, start 0, end 1, subsample 1, threshold .6. t0 runs. t1: |x1-x0| = 1 but no k yet -> run;
    # k = |8-6|/1 = 2. t2: |x2-x1| = 1, acc .25 -> reuse 2 + 7 = 9. t3: |x3-x1| = 2 (against the last computed
    # input, not x2): acc .75 -> run (12); k = |12-8|/2 = 2. t4: 2·1/12 -> reuse 4 + 9 = 13. t5: + 2·2/12 = .5 ->
    # reuse 14. t6: + 2·3/12 -> 1.0 -> run (100). t7: the last step runs.
    report, used = drive_latents(LazyCache(0.6, start_percent=0.0, end_percent=1.0, subsample=1), LATENTS, MODEL)
    assert report.computed_steps == [0, 1, 3, 6, 7]
    assert used == [6, 8, 9, 12, 13, 14, 100, 40]
    assert report.err[2] == 0.25 and report.err[3] == 0.75 and report.err[5] == pytest.approx(0.5)


def test_lazycache_caches_only_inside_its_range():
    # N = 20, start .3, end .8: steps 0-5 and 16-19 run; step 6 has no k yet (measured only inside the range).
    policy = LazyCache(10.0, start_percent=0.3, end_percent=0.8, subsample=1)
    report, _ = drive_latents(policy, list(range(20)), [float(t) for t in range(20)])
    assert report.computed_steps == [0, 1, 2, 3, 4, 5, 6, 16, 17, 18, 19]
    assert LazyCache().params() == {"threshold": 0.2, "start_percent": 0.15, "end_percent": 0.95, "subsample": 8,
                                    "reuse": "residual"}


def test_residual_reuse_with_batched_guidance_combines_into_the_guided_estimate():
    # The denoiser sees cat([x, x]); each branch reuses its own residual, and u + s·(c - u) of the branch
    # estimates equals x_t + (guided_c - x_c).
    policy = EasyCache(0.5, warmup=1)
    policy.begin(3)
    stream = policy.new_stream()
    x0 = torch.tensor([[1.0, 2.0]])
    policy.should_compute(0, x0)
    branches = torch.tensor([[3.0, 1.0], [5.0, -1.0]])  # cond, uncond
    stream.record(0, branches)
    x1 = torch.tensor([[1.5, 2.5]])
    policy.inputs[1] = x1
    est = stream.predict(1)
    assert torch.equal(est, torch.cat([x1, x1]) + branches - torch.cat([x0, x0]))
    c, u = est.chunk(2)
    gc, gu = branches.chunk(2)
    assert torch.allclose(u + 2 * (c - u), x1 + (gu + 2 * (gc - gu)) - x0)


@pytest.mark.parametrize("make, message", [
    (lambda: EasyCache(-1.0), "threshold must be a finite number >= 0"),
    (lambda: EasyCache(warmup=0), "warmup must be an integer >= 1"),
    (lambda: EasyCache(reuse="x"), "reuse must be one of residual, output"),
    (lambda: LazyCache(start_percent=0.9, end_percent=0.5), "end_percent"),
    (lambda: LazyCache(subsample=0), "subsample must be an integer >= 1"),
    (lambda: PreciseCache(downsample=0), "downsample must be an integer >= 1"),
    (lambda: LeMiCa(10), "give either profile="),
    (lambda: LeMiCa(computed=[1, 3]), "starting at 0"),
    (lambda: LeMiCa(predictor="quadratic", computed=[0, 3]), "predictor must be one of reuse, linear, etc"),
])
def test_bad_settings_raise_one_line_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# -- PreciseCache (reconstruction) ------------------------------------------------------------------------------

def test_precisecache_rule_worked_by_hand():
    # threshold .1, warmup 2, max_skip 3, scalar latents (no pooling). LFD = |x_t - x_c| / |x_c|.
    # t0, t1 warm-up (x_c = 10). t2: 0 -> reuse. t3: .5/10 = .05 -> reuse. t4: 1/10 = .1, not < .1 -> run, x_c = 11.
    # t5, t6: 1/11 -> reuse. t7: the last step runs.
    latents = [10, 10, 10, 10.5, 11, 12, 12, 12]
    report, used = drive_latents(PreciseCache(0.1, warmup=2, max_skip=3), latents, [float(t) for t in range(8)])
    assert report.computed_steps == [0, 1, 4, 7]
    assert used == [0, 1, 1, 1, 4, 4, 4, 7]
    assert report.err[3] == 0.05 and report.err[4] == 0.1
    report, _ = drive_latents(PreciseCache(0.1, warmup=2, max_skip=1), latents, [0.0] * 8)
    assert report.computed_steps == [0, 1, 3, 5, 7]  # after each single reuse the next step is forced


def test_precisecache_sees_only_the_low_frequencies():
    base = torch.ones(1, 1, 4, 4)
    checker = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(2, 2).reshape(1, 1, 4, 4)
    assert torch.equal(low_pass(base + checker, 2), torch.ones(1, 1, 2, 2))  # a 2x2 checkerboard averages out
    policy = PreciseCache(0.01, warmup=1)
    policy.begin(4)
    for t, x in enumerate([base, base + 0.5 * checker, base * 1.5]):
        computed = policy.should_compute(t, x)
        policy.observe(t, torch.zeros(1), computed)
    assert policy.report().computed_steps == [0, 2]  # high-frequency change: reused; a uniform shift: computed
    assert policy.report().err[1] == 0.0 and policy.report().err[2] == 0.5


# -- LeMiCa -----------------------------------------------------------------------------------------------------

def brute_leximax(cost, budget):
    n = len(cost)
    paths = ([0, *mid, n - 1] for mid in itertools.combinations(range(1, n - 1), budget - 2))
    return min(paths, key=lambda p: sorted((cost[a][b] for a, b in zip(p, p[1:])), reverse=True))


def test_leximax_prefers_the_smaller_worst_gap_to_the_smaller_sum():
    inf = None
    cost = [[inf, 0.0, 3.0, 9.0], [inf, inf, 0.0, 5.0], [inf, inf, inf, 3.0], [inf] * 4]
    assert search_leximax(cost, 3) == [0, 2, 3]  # worst gap 3 (sum 6), not [0, 1, 3]: worst 5 (sum 5)
    # equal worst gaps: the second largest decides, (4, 1) before (4, 2)
    cost = [[inf, 1.0, 2.0, 9.0], [inf, inf, 0.0, 4.0], [inf, inf, inf, 4.0], [inf] * 4]
    assert search_leximax(cost, 3) == brute_leximax(cost, 3) == [0, 1, 3]


def test_leximax_search_matches_brute_force_on_random_costs():
    rng = random.Random(3)
    for n in (5, 7, 9):
        cost = [[rng.random() if b > a else None for b in range(n)] for a in range(n)]
        for budget in range(2, n + 1):
            assert search_leximax(cost, budget) == brute_leximax(cost, budget)


def euler_trajectory(outputs, h=-0.1):
    xs = [torch.zeros(1, 2)]
    for v in outputs[:-1]:
        xs.append(xs[-1] + h * v)
    final = xs[-1] + h * outputs[-1]
    return Trajectory(outputs=list(outputs), inputs=xs, final=final)


def test_edge_weights_worked_by_hand():
    # Euler x_{t+1} = x_t - 0.1·v_t with v_t = (1 + t, 2 - t): the solver weight of every step is 0.1, the final
    # latents are x_5. Reuse over 0 -> 2 misses v_1 by (1, -1): carried 0.1·(1, -1), RMS 0.1, over RMS(x_5).
    # Linear extrapolation is exact on a linear trajectory once it has two outputs, so its edges from i >= 1 cost 0.
    outputs = [torch.tensor([[1.0 + t, 2.0 - t]]) for t in range(5)]
    tr = euler_trajectory(outputs)
    profile = fit_lemica([tr, tr])
    final_rms = float(tr.final.pow(2).mean().sqrt())
    reuse, linear = profile.costs["reuse"], profile.costs["linear"]
    assert reuse[0][1] == 0.0 and reuse[1][0] is None
    assert reuse[0][2] == pytest.approx(0.1 / final_rms, rel=1e-3)
    assert reuse[0][3] == pytest.approx(0.1 * 3 / final_rms, rel=1e-3)  # misses (1,-1) then (2,-2), summed
    assert all(linear[i][j] == pytest.approx(0.0, abs=1e-9) for i in range(1, 4) for j in range(i + 1, 5))
    assert linear[0][2] == reuse[0][2]  # at step 0 linear has one output and falls back to reuse
    restored = LeMiCaProfile.from_dict(profile.to_dict())  # saved to 6 significant digits
    assert restored.costs["reuse"][0][3] == pytest.approx(reuse[0][3], rel=1e-5)
    assert all(restored.schedule(b, p) == profile.schedule(b, p) for b in (2, 3, 4) for p in ("reuse", "linear", "etc"))


@pytest.fixture(scope="module")
def digits():
    from etcdiff.digits.pipeline import DigitsPipeline

    torch.set_num_threads(1)
    pipe = DigitsPipeline.from_embedded()
    pipe.set_progress_bar_config(disable=True)
    traj = record_pipeline(pipe, prompt=["3", "8"], num_inference_steps=20, generator=torch.Generator().manual_seed(100),
                           output_type="latent")[0]
    return pipe, fit_lemica([traj])


@pytest.mark.parametrize("predictor", ["reuse", "linear", "etc"])
def test_lemica_never_exceeds_its_budget_over_seeds_and_batch_sizes(digits, predictor):
    pipe, profile = digits
    for calls in (4, 7, 11):
        schedule = profile.schedule(calls, predictor)
        assert len(schedule) == calls and schedule[0] == 0 and schedule[-1] == 19
        for seed, batch in ((0, 1), (1, 2), (2, 3)):
            etcdiff.enable(pipe, "lemica", calls=calls, predictor=predictor, profile=profile)
            try:
                out = pipe(prompt=["5"] * batch, num_inference_steps=20, output_type="latent",
                           generator=torch.Generator().manual_seed(seed)).images
                report = etcdiff.last_report(pipe)
            finally:
                etcdiff.disable(pipe)
            assert torch.isfinite(out).all() and out.shape[0] == batch
            assert report.model_calls == calls and report.computed_steps == schedule


@pytest.mark.parametrize("layout", ["flux_true_cfg", "wan", "sd3", "pixart"])
def test_lemica_budget_holds_for_separate_and_batched_guidance(layout):
    from tiny_pipelines import FACTORIES

    torch.set_num_threads(1)
    tp = FACTORIES[layout]()
    traj = record_pipeline(tp.pipe, **{**tp.call_kwargs, "num_inference_steps": 10,
                                       "generator": torch.Generator().manual_seed(1), "output_type": "latent"})[0]
    profile = fit_lemica([traj])
    for predictor in ("reuse", "etc"):
        etcdiff.enable(tp.pipe, "lemica", calls=4, predictor=predictor, profile=profile)
        try:
            out = tp.run(10)
            report = etcdiff.last_report(tp.pipe)
        finally:
            etcdiff.disable(tp.pipe)
        assert torch.isfinite(out).all()
        assert report.num_computed == 4 and report.model_calls == 4 * tp.calls_per_step


def test_lemica_through_calibrate_policy_and_sample():
    from test_sampler import SmallConvDenoiser

    model, calls = SmallConvDenoiser(), []
    counted = lambda x, t: calls.append(1) or model(x, t)  # noqa: E731
    scheduler = FlowMatchEulerDiscreteScheduler()
    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    policy = etcdiff.calibrate_policy("lemica", counted, scheduler, noise, 12, calls=5, predictor="linear")
    assert isinstance(policy, LeMiCa) and policy.calls == 5 and policy.predictor == "linear"
    calls.clear()
    out = etcdiff.sample(counted, scheduler, noise[:1], 12, policy)
    assert len(calls) == 5 and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="schedule is for 12 steps but the run has 10"):
        etcdiff.sample(counted, scheduler, noise[:1], 10, policy)


def test_an_explicit_schedule_needs_no_calibration():
    policy = LeMiCa(computed=[0, 1, 3, 7, 9])
    report, used = drive_latents(policy, [0.0] * 10, [float(t) for t in range(10)])
    assert report.computed_steps == [0, 1, 3, 7, 9] and used == [0, 1, 1, 3, 3, 3, 3, 7, 7, 9]
    report, used = drive_latents(LeMiCa(computed=[0, 1, 3, 6], predictor="linear"), [0.0] * 7, [2.0 * t for t in range(7)])
    assert used == [0, 2, 4, 6, 8, 10, 12]  # linear outputs are extrapolated exactly
    # t^2: step 2 from (0, 0), (1, 1): 2; steps 4, 5 from the real (1, 1), (3, 9), slope 4 a step: 13, 17 (the
    # estimate at step 2 does not enter the line)
    report, used = drive_latents(LeMiCa(computed=[0, 1, 3, 6], predictor="linear"), [0.0] * 7, [t * t for t in range(7)])
    assert used == [0, 1, 2, 9, 13, 17, 36]


def test_methods_by_name_on_the_digits_model(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ETCDIFF_PROFILE_DIR", str(tmp_path))
    pipe = etcdiff_digits()
    assert etcdiff.enable(pipe, "lemica").calls == 17  # the shipped profile (calibrated at calls=17)
    etcdiff.disable(pipe)
    assert main(["calibrate", "--model", "digits", "--method", "lemica", "--set", "calls=6", "--steps", "12",
                 "--prompts", str(prompt_file(tmp_path)), "--quiet", "--out", str(tmp_path)]) == 0
    for method, extra in (("lemica", []), ("lemica", ["--set", "predictor=etc"]), ("easycache", []),
                          ("lazycache", []), ("precisecache", [])):
        out = tmp_path / f"{method}.png"
        assert main(["generate", "--model", "digits", "--prompt", "4", "--method", method, "--steps", "12",
                     "--out", str(out), *extra]) == 0
        text = capsys.readouterr().out
        assert out.is_file() and f"{method}(" in text
        if method == "lemica":  # the profile just calibrated (the user's folder) comes before the shipped one
            assert "model calls: 6 " in text


def etcdiff_digits():
    from etcdiff.digits.pipeline import DigitsPipeline

    return DigitsPipeline.from_embedded()


def prompt_file(folder):
    path = folder / "prompts.txt"
    path.write_text("1\n2\n")
    return path
