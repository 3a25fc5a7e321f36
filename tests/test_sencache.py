"""SenCache: skip decisions on scripted trajectories worked out by hand (K limit, eps_start/eps_main, the shared
batch decision), the fit of the tables, the sensitivity recorders on the demo, the hook path, clear errors."""

import json

import pytest
import torch
from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler

import etcdiff
from etcdiff.integration.step.sensitivity import record_sensitivity, record_sensitivity_pipeline
from etcdiff.policies.step.sencache import SenCache, SenCacheTables, SensitivityRecord, fit_sencache

TABLES = SenCacheTables(timesteps=[1000.0, 500.0], j_x=[1.0, 2.0], j_t=[0.001, 0.0])
TIMESTEPS = [1000.0 - 100 * i for i in range(10)]


def drive(policy, latents, timesteps=TIMESTEPS, hide_first=False):
    """Show scripted latents; the 'model' returns 10·step. Returns the report and the outputs used."""
    policy.begin(len(latents))
    policy.use_timesteps(timesteps)
    used = []
    for i, x in enumerate(latents):
        x = torch.as_tensor(x, dtype=torch.float32)
        computed = policy.should_compute(i, None if hide_first and i == 0 else x)
        if hide_first and i == 0:
            policy.late_input(0, x)
        out = None if computed else policy.predict(i)
        if out is None:
            computed, out = True, torch.full_like(x, 10.0 * i)
        policy.observe(i, out, computed)
        used.append(out.flatten()[0].item())
    return policy.report(), used


SCALARS = [[v] for v in (0.0, 0.01, 0.02, 0.1, 0.2, 0.3, 0.35, 0.36, 0.37, 0.9)]


def test_decisions_worked_by_hand():
    # D = 1, so the tolerance is eps. eps_start .05 on steps < round(.2·10) = 2, eps_main .5 after; K = 2.
    # 0: no anchor -> run; anchor x .0, t 1000, J = (1, .001).
    # 1: S = .01 + .001·100 = .11 >= .05 -> run; anchor .01, t 900 (nearest 1000: J = (1, .001)).
    # 2: S = .01 + .1 = .11 < .5 -> reuse. 3: S = .09 + .2 = .29 -> reuse. 4: 2 reuses in a row -> run;
    # anchor .2, t 600 (nearest 500: J = (2, 0)). 5: S = 2·.1 = .2 -> reuse. 6: S = .3 -> reuse. 7: K -> run,
    # anchor .36, t 300. 8: S = .02 -> reuse. 9: S = 2·.54 = 1.08 -> run.
    report, used = drive(SenCache(TABLES, eps_start=0.05, eps_main=0.5, max_reuse=2), SCALARS)
    assert report.computed_steps == [0, 1, 4, 7, 9]
    assert used == [0, 10, 10, 10, 40, 40, 40, 70, 70, 90]  # the whole cached output is reused
    assert report.err == pytest.approx([None, 0.11, 0.11, 0.29, None, 0.2, 0.3, None, 0.02, 1.08])
    assert report.window == [0, 0, 1, 2, 0, 1, 2, 0, 1, 0]


def test_eps_start_governs_only_the_first_fifth_of_the_steps():
    # The same trace with eps_start = eps_main = .5: step 1 (S = .11) is now reused, 2 (S = .22) too, 3 runs by
    # the K limit (anchor .1, t 700, nearest 500: J = (2, 0)); 4 (S = .2), 5 (.4) reused; 6 runs (K); 7, 8 reused.
    report, _ = drive(SenCache(TABLES, eps_start=0.5, eps_main=0.5, max_reuse=2), SCALARS)
    assert report.computed_steps == [0, 3, 6, 9]
    # eps_main tiny: every step after the first fifth runs, while step 1 may still be reused under eps_start.
    report, _ = drive(SenCache(TABLES, eps_start=0.5, eps_main=1e-9, max_reuse=5), SCALARS)
    assert report.computed_steps == [0, 2, 3, 4, 5, 6, 7, 8, 9]


def test_k_zero_never_reuses_and_huge_eps_reuses_k_in_a_row():
    assert drive(SenCache(TABLES, max_reuse=0), SCALARS)[0].computed_steps == list(range(10))
    report, _ = drive(SenCache(TABLES, eps_start=1e9, eps_main=1e9, max_reuse=3), SCALARS)
    assert report.computed_steps == [0, 4, 8]


def test_per_sample_scores_with_a_shared_compute_decision():
    # Batch of 2, D = 4 elements a sample, so the tolerance is eps·2 = .2 with J_x = 1, J_t = 0.
    tables = SenCacheTables([1000.0], [1.0], [0.0])
    z = torch.zeros(4)
    step = lambda a, b: torch.stack([z + a, z + b])  # noqa: E731  per-sample norm = 2·|offset|
    latents = [step(0, 0), step(0, 0.05), step(0.125, 0), step(0.125, 0.05), step(0.05, 0.05)]
    # 1: S = (0, .1) -> reuse. 2: S = (.25, 0): sample 0 alone exceeds .2 -> the batch runs (a mean over samples,
    # .125, would have reused); both re-anchor at step 2. 3: S = (0, .1) -> reuse. 4: S = (.15, .1) -> reuse.
    report, _ = drive(SenCache(tables, eps_start=0.1, eps_main=0.1, max_reuse=10), latents, TIMESTEPS[:5])
    assert report.computed_steps == [0, 2]
    assert report.err == pytest.approx([None, 0.05, 0.125, 0.05, 0.075])  # max over samples of S / sqrt(D)


def test_hook_path_without_x0_at_the_decision_anchors_late():
    # The diffusers hook shows no latents at step 0 and hands x_0 over with late_input: step 1 can be reused.
    report, _ = drive(SenCache(TABLES, eps_start=1e9, eps_main=1e9, max_reuse=3), SCALARS, hide_first=True)
    assert report.computed_steps == [0, 4, 8]


def test_fit_averages_ratios_per_timestep():
    a = SensitivityRecord([900.0, 800.0], dx=[1.0, 2.0], dfx=[2.0, 2.0], dt=[100.0, 100.0], dft=[10.0, 20.0])
    b = SensitivityRecord([900.0, 800.0], dx=[2.0, 0.0], dfx=[8.0, 5.0], dt=[100.0, 100.0], dft=[30.0, 0.0])
    tables = fit_sencache([a, b])
    assert tables.j_x == [3.0, 1.0]  # (2/1 + 8/2)/2; step 2: b's dx = 0 is left out
    assert tables.j_t == [0.2, 0.1]
    assert tables.lookup(860) == (3.0, 0.2) and tables.lookup(849) == (1.0, 0.1)
    assert SenCacheTables.from_dict(json.loads(json.dumps(tables.to_dict()))) == tables
    with pytest.raises(ValueError, match="other timesteps"):
        fit_sencache([a, SensitivityRecord([1.0, 2.0], [1, 1], [1, 1], [1, 1], [1, 1])])
    with pytest.raises(ValueError, match="non-empty list"):
        fit_sencache([])


@pytest.mark.parametrize("make, message", [
    (lambda: SenCache(TABLES, eps_start=-1), "eps_start must be a finite number >= 0"),
    (lambda: SenCache(TABLES, eps_main=float("inf")), "eps_main"),
    (lambda: SenCache(TABLES, max_reuse=1.5), "max_reuse"),
    (lambda: SenCache({"timesteps": [1.0]}), "not SenCache tables"),
    (lambda: SenCache(42), "tables must be SenCacheTables"),
    (lambda: SenCacheTables([1.0], [float("nan")], [0.0]), "finite numbers >= 0"),
    (lambda: SenCache("/nonexistent/t.json"), "tables file not found"),
])
def test_bad_settings_raise_clear_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_runs_on_any_scheduler_through_sample():
    model = lambda x, t: -0.1 * x  # noqa: E731
    for scheduler in (DDIMScheduler(), FlowMatchEulerDiscreteScheduler()):
        policy = SenCache(SenCacheTables([999.0, 0.0], [1.0, 1.0], [1e-4, 1e-4]), eps_start=1.0, eps_main=1.0, max_reuse=2)
        out = etcdiff.sample(model, scheduler, torch.ones(1, 4), 12, policy)
        assert torch.isfinite(out).all() and 4 <= policy.report().num_computed < 12


# -- the recorders on the demo -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pipe():
    from etcdiff.digits.pipeline import DigitsPipeline

    torch.set_num_threads(1)
    p = DigitsPipeline.from_embedded()
    p.set_progress_bar_config(disable=True)
    return p


def test_tables_from_the_pipeline_recorder_are_positive_and_finite(pipe):
    records = record_sensitivity_pipeline(pipe, prompt=["1", "7"], num_inference_steps=12,
                                          generator=torch.Generator().manual_seed(100), output_type="latent")
    assert len(records) == 2 and len(records[0].timesteps) == 11  # one per sample; every step with a next one
    tables = fit_sencache(records)
    assert all(v > 0 and v < float("inf") for v in (*tables.j_x, *tables.j_t))
    assert tables.timesteps == [float(t) for t in pipe.scheduler.timesteps[:11]]
    assert not hasattr(pipe.transformer, "_forward_hooks") or not pipe.transformer._forward_hooks
    assert "step" not in vars(pipe.scheduler)  # the pipeline is as it was


def test_bare_recorder_matches_a_hand_measurement_and_drives_sample(pipe):
    from test_meancache import demo_model

    calls: list[int] = []
    model = demo_model(pipe, 4, calls)
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
    latents = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    records = record_sensitivity(model, scheduler, latents, 8)
    assert len(records) == 2 and len(calls) == 2 * (8 + 2 * 7)  # one forward a step plus two extra
    # step 0 of sample 1 by hand: J_x = ||f(x1, t0) - f(x0, t0)|| / ||x1 - x0||
    scheduler.set_timesteps(8)
    t0, t1 = scheduler.timesteps[:2]
    x0 = latents[1:2]
    f0 = model(x0, t0)
    x1 = x0 + (scheduler.sigmas[1] - scheduler.sigmas[0]) * f0
    assert records[1].dfx[0] / records[1].dx[0] == pytest.approx(((model(x1, t0) - f0).norm() / (x1 - x0).norm()).item(), rel=1e-4)
    assert records[1].dft[0] == pytest.approx((model(x0, t1) - f0).norm().item(), rel=1e-4)
    tables = fit_sencache(records)
    assert all(v > 0 for v in (*tables.j_x, *tables.j_t))
    calls.clear()
    policy = SenCache(tables, eps_start=5.0, eps_main=5.0, max_reuse=3)
    etcdiff.sample(model, scheduler, latents[:1], 8, policy)
    assert len(calls) == policy.report().num_computed < 8


def test_enable_and_sample_make_the_same_decisions_on_the_demo(pipe):
    from test_meancache import demo_model

    records = record_sensitivity_pipeline(pipe, prompt="2", num_inference_steps=20,
                                          generator=torch.Generator().manual_seed(100), output_type="latent")
    tables = fit_sencache(records)
    latents = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    settings = dict(eps_start=0.02, eps_main=0.3, max_reuse=3)
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
    policy = SenCache(tables, **settings)
    via_sample = etcdiff.sample(demo_model(pipe, 6, []), scheduler, latents, 20, policy)
    etcdiff.enable(pipe, "sencache", tables=tables.to_dict(), **settings)
    try:
        via_hook = pipe(prompt="6", num_inference_steps=20, latents=latents, output_type="latent").images
        report = etcdiff.last_report(pipe)
    finally:
        etcdiff.disable(pipe)
    assert 2 < report.model_calls < 20
    assert report.computed_steps == policy.report().computed_steps
    assert torch.allclose(via_sample, via_hook, atol=1e-4)


@pytest.mark.parametrize("name", ["flux_true_cfg", "sdxl"])
def test_pipeline_recorder_on_separate_cfg_calls_and_scaled_inputs(name):
    # Flux with true CFG: two calls a step, packed latents, timestep t/1000. SDXL: batched CFG, Euler's input
    # scaling, the UNet's positional (sample, timestep).
    from tiny_pipelines import FACTORIES

    tp = FACTORIES[name]()
    records = record_sensitivity_pipeline(tp.pipe, **{**tp.call_kwargs, "num_inference_steps": 6,
                                                      "generator": torch.Generator().manual_seed(1), "output_type": "latent"})
    tables = fit_sencache(records)
    assert len(tables.timesteps) == 5 and all(0 < v < float("inf") for v in (*tables.j_x, *tables.j_t))
    assert not getattr(tp.model, "_forward_hooks", None) and "step" not in vars(tp.pipe.scheduler)
