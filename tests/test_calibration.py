"""The model-specific error tolerance search (spec ETC.md, steps 1-6): change point, profiles, entry points, CLI."""

from __future__ import annotations

import argparse
import json
import warnings

import numpy as np
import pytest
import torch

from etcdiff import ETC
from etcdiff.calibration import (
    Profile,
    calibrate_denoiser,
    calibrate_pipeline,
    change_point,
    default_prompts,
    etc_from_profile,
    find_profile,
    load_profile,
    load_prompts,
    min_steps,
    pipeline_decoder,
    plot_profile,
    resample_curves,
    save_profile,
    similarity,
    tolerance_from_curves,
)
from etcdiff.calibration.profile import profile_filename, profile_slug


def _step_curves(n: int, transition: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """s: noisy low values up to ``transition`` (exclusive), then high and stable; d: decreasing."""
    rng = np.random.default_rng(seed)
    s = np.r_[0.4 + 0.15 * rng.random(transition), 0.95 + 0.005 * rng.random(n - transition)]
    d = np.linspace(0.5, 0.02, n)
    return d, s


# -- change point ---------------------------------------------------------------------------------------------
def test_change_point_is_the_last_index_of_the_volatile_segment():
    # ruptures returns the end (exclusive) of the first segment: 10 here; r is the last volatile index, 9
    s = np.r_[np.full(10, 0.3), np.full(20, 0.95)]
    assert change_point(s) == 9
    d = np.arange(30) / 100
    tau, r = tolerance_from_curves(d, s)
    assert r == 9 and tau == d[9]


@pytest.mark.parametrize("n, transition, jump", [(49, 10, 5), (49, 15, 5), (29, 13, 1), (40, 7, 1)])
def test_change_point_on_noisy_synthetic_curves(n, transition, jump):
    d, s = _step_curves(n, transition)
    tau, r = tolerance_from_curves(d, s, jump=jump)
    assert abs(r - (transition - 1)) <= 1
    assert tau == d[r]


def test_change_point_default_grid_is_rupture_jump_5():
    # with ruptures' default jump=5 a breakpoint can only fall on multiples of 5 (r = 4, 9, 14, ...)
    d, s = _step_curves(49, 13)
    assert (change_point(s) + 1) % 5 == 0
    assert abs(change_point(s, jump=1) - 12) <= 1  # BottomUp is approximate: within one step


def test_curve_too_short_for_a_change_point():
    with pytest.raises(ValueError, match=r"3 points, too short for a change point.*at least 7, i\.e\. at least 8 sampling steps"):
        change_point([0.2, 0.5, 0.9])
    with pytest.raises(ValueError, match=r"at least 4, i\.e\. at least 5 sampling steps"):
        change_point([0.2, 0.5, 0.9], jump=1)
    assert min_steps() == 8 and min_steps(jump=1) == 5
    with pytest.warns(UserWarning, match="single admissible change point"):
        change_point(np.linspace(0, 1, 8))


# -- profiles ---------------------------------------------------------------------------------------------------
def _profile(steps: int = 30, transition: int = 10, **kw) -> Profile:
    d, s = _step_curves(steps - 1, transition)
    tau, r = tolerance_from_curves(d, s)
    fields = dict(
        identity="org/some-model", model_class="SomePipeline", steps=steps, scheduler_class="FlowMatchEulerDiscreteScheduler",
        scheduler_config={"shift": 3.0, "num_train_timesteps": 1000}, tau=tau, warmup=4, alpha=0.4, d_bar=d.tolist(),
        s_bar=s.tolist(), change_point=r, prompts=["a cat", "a dog"], seed=42, detector={"jump": 5, "min_size": 2},
        versions={"etcdiff": "0.1.0"}, created="2025-01-01T00:00:00+00:00",
    )
    fields.update(kw)
    return Profile(**fields)


def test_profile_round_trip_and_etc(tmp_path):
    prof = _profile()
    path = save_profile(prof, tmp_path)
    assert path == tmp_path / "org--some-model_30steps.json" == tmp_path / profile_filename("org/some-model", 30)
    loaded = load_profile(path)
    assert loaded == prof and loaded.path == path
    data = json.loads(path.read_text())
    for key in ("identity", "model_class", "steps", "scheduler_class", "scheduler_config", "tau", "warmup", "alpha",
                "d_bar", "s_bar", "change_point", "prompts", "seed", "versions", "created"):
        assert key in data
    etc = etc_from_profile(path)
    assert isinstance(etc, ETC) and etc.params() == {"threshold": prof.tau, "warmup": 4, "alpha": 0.4}
    assert etc_from_profile(loaded, steps=30).threshold == prof.tau


def test_find_profile_by_identity_and_steps(tmp_path, monkeypatch):
    monkeypatch.setenv("ETCDIFF_PROFILE_DIR", str(tmp_path))
    save_profile(_profile(30))
    save_profile(_profile(50, transition=15))
    (tmp_path / "junk.json").write_text("{not json")
    assert find_profile("org/some-model", steps=50).steps == 50
    assert find_profile("org/some-model", steps=28).steps == 30  # nearest step count
    assert find_profile("org/other") is None
    assert find_profile("org/some-model").steps in (30, 50)
    assert profile_slug("Black-Forest-Labs/FLUX.1-dev") == "black-forest-labs--flux.1-dev"


def test_etc_from_profile_at_another_step_count_warns_and_varies_smoothly():
    prof = _profile(30, transition=10)
    with pytest.warns(UserWarning, match=r"searched at 30 steps; for 50 steps tau = .* carried over"):
        etc = etc_from_profile(prof, steps=50)
    d50, _ = resample_curves(prof, 50)
    assert d50.size == 49 and d50[0] == prof.d_bar[0] and d50[-1] == prof.d_bar[-1]
    assert etc.threshold == pytest.approx(prof.tau)  # the same point of the run: the searched tolerance
    assert (etc.warmup, etc.alpha) == (prof.warmup, prof.alpha)
    with pytest.warns(UserWarning):
        taus = [etc_from_profile(prof, steps=n).threshold for n in range(12, 80)]
    steps_between = np.abs(np.diff(taus))
    assert steps_between.max() <= 1e-9 + 0.02 * prof.tau  # no jumps between neighbouring step counts
    with pytest.raises(ValueError, match="give a step count >= 3"):
        etc_from_profile(prof, steps=2)


def test_load_profile_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"identity": "x"}))
    with pytest.raises(ValueError, match="missing fields"):
        load_profile(bad)
    with pytest.raises(FileNotFoundError, match="calibration profile not found"):
        load_profile(tmp_path / "nope.json")


# -- prompts -----------------------------------------------------------------------------------------------------
def test_default_prompts_and_prompt_files(tmp_path):
    for modality in ("image", "video", "audio"):
        prompts = default_prompts(modality)
        assert 8 <= len(prompts) <= 12 and not any(p.startswith("#") for p in prompts)
        lengths = [len(p) for p in prompts]
        if modality != "video":  # video: one prompt per evaluation dimension instead of length bins
            assert max(lengths) > 4 * min(lengths)  # short to long captions
    f = tmp_path / "p.txt"
    f.write_text("# comment\n\n a cat \n# another\na dog\n")
    assert load_prompts(str(f)) == ["a cat", "a dog"]
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n\n")
    with pytest.raises(ValueError, match=r"no prompts in .*empty\.txt: write one prompt per line"):
        load_prompts(str(empty))


# -- similarity ----------------------------------------------------------------------------------------------------
def test_similarity_per_modality():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 3, 5, 5, generator=g)  # smaller than skimage's default 7x7 window
    assert similarity(img, img) == pytest.approx(1.0)
    assert similarity(img, (img + 0.2 * torch.randn(img.shape, generator=g)).clamp(0, 1)) < 0.99
    video = torch.rand(1, 3, 4, 8, 8, generator=g)
    assert similarity(video, video, "video") == pytest.approx(1.0)
    wave = torch.sin(torch.linspace(0, 2000, 8000))[None] + 0.01 * torch.randn(1, 8000, generator=g)
    assert similarity(wave, wave, "audio") == pytest.approx(1.0)
    assert similarity(wave, wave + 0.3 * torch.randn(wave.shape, generator=g), "audio") < 0.9
    with pytest.raises(ValueError, match="too small for SSIM"):
        similarity(torch.rand(1, 1, 2, 2), torch.rand(1, 1, 2, 2))


# -- the demo pipeline, end to end through the CLI ---------------------------------------------------------------------
def _demo_pipeline():
    """The trained demo model once its weights exist, else the same pipeline with untrained weights."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from etcdiff.digits import DigitsPipeline, build_transformer
    from etcdiff.digits.model import WEIGHTS_PATH

    if WEIGHTS_PATH.is_file():
        return DigitsPipeline.from_embedded()
    torch.manual_seed(0)
    return DigitsPipeline(transformer=build_transformer().eval(), scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0))


@pytest.mark.filterwarnings("ignore:the similarity curve falls at its change point")
def test_calibrate_cli_on_the_demo(tmp_path, monkeypatch, capsys):
    import etcdiff.models
    from etcdiff.cli import calibrate

    pipe = _demo_pipeline()
    monkeypatch.setattr(etcdiff.models, "load_pipeline", lambda model, device="cpu", dtype=None, scheduler=None: pipe)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# two digits\n3\n8\n")
    parser = argparse.ArgumentParser()
    calibrate.register(parser.add_subparsers())
    args = parser.parse_args(["calibrate", "--model", "digits", "--prompts", str(prompts), "--steps", "16",
                              "--out", str(tmp_path / "profiles"), "--quiet"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    path = tmp_path / "profiles" / "digits_16steps.json"
    assert "tau = " in out and str(path) in out
    prof = load_profile(path)
    assert prof.identity == "digits" and prof.model_class == "DigitsPipeline" and prof.steps == 16
    assert prof.prompts == ["3", "8"] and prof.seed == 42 and (prof.warmup, prof.alpha) == (6, 0.5)
    assert prof.scheduler_class == "FlowMatchEulerDiscreteScheduler" and prof.scheduler_config["shift"] == 1.0
    assert len(prof.d_bar) == len(prof.s_bar) == 15 and prof.tau == prof.d_bar[prof.change_point]
    assert all(0 < s <= 1 for s in prof.s_bar) and all(d > 0 for d in prof.d_bar)
    assert {"etcdiff", "torch", "diffusers"} <= set(prof.versions)
    png = path.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the curves are the spec's: d_i from the recorded outputs of a full run with the profile's seed
    from etcdiff.integration.step.recording import record_pipeline
    from etcdiff.models import call_kwargs

    d = []
    for p in prof.prompts:
        traj, _ = record_pipeline(pipe, **call_kwargs(pipe, p, 16, 42), output_type="latent")
        d.append([(traj.outputs[i + 1] - traj.outputs[i]).abs().mean().item() for i in range(15)])
    np.testing.assert_allclose(prof.d_bar, np.mean(d, axis=0), rtol=1e-5)

    args = parser.parse_args(["calibrate", "--model", "digits", "--prompts", str(prompts), "--steps", "16",
                              "--out", str(tmp_path / "p2"), "--quiet", "--no-plot"])
    args.func(args)
    assert (tmp_path / "p2" / "digits_16steps.json").is_file() and not (tmp_path / "p2" / "digits_16steps.png").exists()


def test_calibrate_pipeline_errors(tmp_path):
    pipe = _demo_pipeline()
    with pytest.raises(ValueError, match="no calibration prompts"):
        calibrate_pipeline(pipe, [], steps=16, progress=False)
    with pytest.raises(ValueError, match=r"5 steps are too few.*at least 8 sampling steps"):
        calibrate_pipeline(pipe, ["1"], steps=5, progress=False)

    class LatentPipelineWithoutDecoder:  # a scheduler and latents, but no VAE and no decode
        scheduler = pipe.scheduler

        def __call__(self, **kwargs):  # pragma: no cover - the decoder is resolved before any run
            raise AssertionError("should not run")

    with pytest.raises(ValueError, match=r"LatentPipelineWithoutDecoder has no `vae` and no `decode`.*Pass decode="):
        calibrate_pipeline(LatentPipelineWithoutDecoder(), ["a"], steps=16, progress=False)


# -- a denoiser outside diffusers ---------------------------------------------------------------------------------------
class TinyConvDenoiser(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x, t, scale=1.0):
        return scale * self.conv(x) * (t / 1000.0) - x


@pytest.mark.filterwarnings("ignore:the similarity curve falls at its change point")
def test_calibrate_denoiser_with_a_custom_loop(tmp_path):
    from diffusers import FlowMatchEulerDiscreteScheduler

    model = TinyConvDenoiser().eval()
    scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0)
    latents = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    kwargs = [{"scale": 1.0}, {"scale": 0.5}]
    prof = calibrate_denoiser(model, scheduler, latents, 16, decode=lambda x: x, model_kwargs_list=kwargs,
                              prompts=["first", "second"], value_range=None, identity="tiny-conv")
    assert prof.identity == "tiny-conv" and prof.model_class == "TinyConvDenoiser" and prof.steps == 16
    assert prof.prompts == ["first", "second"] and len(prof.d_bar) == 15
    assert prof.tau == prof.d_bar[prof.change_point]

    # d_bar against a plain loop written out here
    ds = []
    with torch.no_grad():
        for x, kw in zip(latents.unbind(0), kwargs):
            x = x[None]
            scheduler.set_timesteps(16)
            outs = []
            for t in scheduler.timesteps:
                outs.append(model(x, t, **kw))
                x = scheduler.step(outs[-1], t, x, return_dict=False)[0]
            ds.append([(outs[i + 1] - outs[i]).abs().mean().item() for i in range(15)])
    np.testing.assert_allclose(prof.d_bar, np.mean(ds, axis=0), rtol=1e-5)
    assert plot_profile(prof, tmp_path / "tiny.png").is_file()


# -- decoders of latent pipelines ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["sd3", "sdxl", "wan", "flux"])
def test_pipeline_decoder_matches_the_pipelines_own_decoding(name):
    import tiny_pipelines as tp

    tiny = tp.FACTORIES[name]()
    if name in ("sd3", "flux"):  # these pipelines add the VAE's shift_factor; the tiny VAE has none, real ones do
        tiny.pipe.vae.register_to_config(shift_factor=0.1159, scaling_factor=0.3611)
    latents = tiny.run(3)
    kw = {**tiny.call_kwargs, "num_inference_steps": 3, "generator": torch.Generator().manual_seed(0)}
    with torch.no_grad():
        ref = torch.as_tensor(tiny.pipe(**kw, output_type="pt", return_dict=False)[0]).float()
    dec = pipeline_decoder(tiny.pipe, height=kw["height"], width=kw["width"])
    mine = dec(latents)
    if name == "wan":  # the pipeline returns frames [B, F, C, H, W]; decoders give [B, C, F, H, W]
        assert dec.modality == "video"
        ref = ref.permute(0, 2, 1, 3, 4)
    assert mine.shape == ref.shape
    torch.testing.assert_close(mine, ref, atol=1e-5, rtol=0)


def test_search_warns_when_the_similarity_curve_falls_at_its_change_point():
    from etcdiff.calibration.search import _average

    d = np.linspace(0.05, 0.4, 19)
    s_rising = np.r_[np.full(10, 0.5), np.full(9, 0.99)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = _average([d], [s_rising], 5, 2, 0.0, {})
    assert res.r == 9 and res.meta["s_mean_after"] > res.meta["s_mean_before"]
    with pytest.warns(UserWarning, match="falls at its change point"):
        _average([d], [s_rising[::-1].copy()], 5, 2, 0.0, {})


# -- recorded runs: one trajectory per input, whatever the source ---------------------------------------------------------
def test_record_denoiser_runs_keeps_inputs_outputs_final_and_schedule():
    from diffusers import FlowMatchEulerDiscreteScheduler

    from etcdiff.calibration import record_denoiser_runs

    model = TinyConvDenoiser().eval()
    scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0)
    latents = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    steps_seen = []
    trajs = record_denoiser_runs(model, scheduler, latents, 10, [{"scale": 1.0}, {"scale": 0.5}],
                                 on_step=steps_seen.append)
    assert len(trajs) == 2 and steps_seen == list(range(10)) * 2
    with torch.no_grad():  # the same run written out by hand
        x = latents[1:2]
        scheduler.set_timesteps(10)
        for i, t in enumerate(scheduler.timesteps):
            torch.testing.assert_close(trajs[1].inputs[i], x)
            out = model(x, t, scale=0.5)
            torch.testing.assert_close(trajs[1].outputs[i], out)
            x = scheduler.step(out, t, x, return_dict=False)[0]
    torch.testing.assert_close(trajs[1].final, x)
    torch.testing.assert_close(trajs[1].timesteps, scheduler.timesteps)
    torch.testing.assert_close(trajs[1].sigmas, scheduler.sigmas)
    assert trajs[1].num_steps == 10 and len(trajs[1].inputs) == 10
    from etcdiff.policies.step.ertacache import fit_ertacache  # the same runs fit another calibrated method

    assert fit_ertacache(trajs, 0.2).num_trajectories == 2

    with pytest.raises(ValueError, match="model_kwargs_list has 1 entries for 2 initial latents"):
        record_denoiser_runs(model, scheduler, latents, 10, [{}])


@pytest.mark.filterwarnings("ignore:the similarity curve falls at its change point")
def test_pipeline_runs_recorded_once_give_the_calibrated_tau():
    from etcdiff.calibration import record_pipeline_runs, search_trajectories

    pipe = _demo_pipeline()
    trajs = record_pipeline_runs(pipe, ["3", "8"], 16, 42)
    assert [t.num_steps for t in trajs] == [16, 16] and all(len(t.inputs) == 16 for t in trajs)
    assert trajs[0].final is not None and trajs[0].timesteps.numel() == 16
    result = search_trajectories(trajs, pipeline_decoder(pipe).decode, seed=42)
    prof = calibrate_pipeline(pipe, ["3", "8"], steps=16, seed=42, progress=False)
    assert (result.tau, result.r) == (prof.tau, prof.change_point)
    np.testing.assert_allclose(result.s_bar, prof.s_bar)
    from etcdiff.policies.step.ertacache import fit_ertacache  # record once, fit ETC and ERTACache

    assert len(fit_ertacache(trajs, 0.2).compute) == 16
    with pytest.raises(ValueError, match="no calibration prompts"):
        record_pipeline_runs(pipe, [], 16, 42)


def test_change_point_module_imports_nothing_from_etcdiff():
    import ast
    import inspect

    import etcdiff.calibration.change_point as cp

    tree = ast.parse(inspect.getsource(cp))
    found = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and (n.level or "etcdiff" in (n.module or ""))]
    found += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names if a.name.startswith("etcdiff")]
    assert found == []


def test_flux_profiles_are_drawn_beside_the_papers_printed_flux_search(tmp_path):
    from etcdiff.calibration.plot import PAPER_FLUX, plot_profile
    from etcdiff.calibration.profile import load_profile
    from etcdiff.cli.calibrate import _is_flux
    from etcdiff.scenes.pipeline import ScenesPipeline

    assert PAPER_FLUX["s"][0] == (0.0, 0.61) and PAPER_FLUX["d"][0] == (0.0, 0.443)
    assert _is_flux(ScenesPipeline.__new__(ScenesPipeline)) and not _is_flux(object())
    from importlib.resources import files

    profile = load_profile(str(files("etcdiff").joinpath("data/profiles/scenes_50steps.json")))
    plain, paper = plot_profile(profile, tmp_path / "a.png"), plot_profile(profile, tmp_path / "b.png", paper_flux=True)
    assert plain.read_bytes() != paper.read_bytes()
