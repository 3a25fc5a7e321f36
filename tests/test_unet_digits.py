"""The held-out UNet digits model: it loads offline, samples finite digits with DDIM and DPM-Solver++, step
methods run on it through etcdiff.enable, its digits are the ones asked for, and the CLI finds it by name."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

import etcdiff
from etcdiff.bench.classifier import load_classifier
from etcdiff.models import demo_prompts, load_pipeline
from etcdiff.unet_digits import UNetDigitsPipeline, load_models
from etcdiff.unet_digits.model import NULL_CLASS, WEIGHTS_PATH
from etcdiff.unet_digits.pipeline import make_scheduler

STEPS = 20


@pytest.fixture(scope="module", params=["ddim", "dpm"])
def pipe(request) -> UNetDigitsPipeline:
    p = UNetDigitsPipeline.from_embedded(request.param)
    p.set_progress_bar_config(disable=True)
    return p


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


def test_ships_small_weights_and_loads_offline() -> None:
    assert WEIGHTS_PATH.is_file() and WEIGHTS_PATH.stat().st_size < 10 * 1024 * 1024
    unet, labels = load_models()
    assert not unet.training and not labels.training
    assert sum(p.numel() for p in unet.parameters()) + sum(p.numel() for p in labels.parameters()) < 2_000_000
    assert unet.config.cross_attention_dim == labels.config.dim
    assert labels.embedding.num_embeddings == NULL_CLASS + 1
    with pytest.raises(FileNotFoundError, match="etcdiff.unet_digits.train"):
        load_models(WEIGHTS_PATH.parent / "missing.safetensors")


def test_registry_names_pick_the_solver() -> None:
    ddim, dpm = load_pipeline("unet-digits"), load_pipeline("unet-digits-dpm")
    assert isinstance(ddim.scheduler, DDIMScheduler) and isinstance(dpm.scheduler, DPMSolverMultistepScheduler)
    assert ddim.scheduler.config.prediction_type == dpm.scheduler.config.prediction_type == "epsilon"
    assert dpm.scheduler.config.algorithm_type == "dpmsolver++"
    assert (ddim.etcdiff_identity, dpm.etcdiff_identity) == ("unet-digits", "unet-digits-dpm")  # profiles apart
    assert demo_prompts("unet-digits-dpm") == [str(i) for i in range(10)]
    with pytest.raises(ValueError, match="unknown solver"):
        make_scheduler("euler")


def test_samples_are_finite_images_of_the_right_shape(pipe) -> None:
    out = pipe(["3", 7], num_inference_steps=STEPS, generator=_gen(), output_type="np").images
    assert out.shape == (2, 16, 16, 1) and out.dtype == np.float32 and np.isfinite(out).all()
    assert 0.0 <= out.min() and out.max() <= 1.0 and out.std() > 0.1  # a drawing, not a flat field
    pt = pipe("3", num_inference_steps=STEPS, generator=_gen(), output_type="pt").images
    assert pt.shape == (1, 1, 16, 16)
    assert torch.allclose(pt[0, 0], torch.from_numpy(out[0, :, :, 0]), atol=1e-5)  # batching changes nothing
    with pytest.raises(ValueError, match="single digits"):
        pipe("12", num_inference_steps=STEPS)


def test_the_digit_asked_for_is_the_one_drawn(pipe) -> None:
    """The shipped digit classifier reads the prompted digit in most samples (16 of the 20 at seeds 0 and 1)."""
    classifier, right = load_classifier(), 0
    for seed in (0, 1):
        images = pipe(list(range(10)), num_inference_steps=STEPS, generator=_gen(seed), output_type="np").images
        right += int((classifier.predict(images) == np.arange(10)).sum())
    assert right >= 16


def test_step_methods_run_on_it(pipe) -> None:
    def run() -> tuple[np.ndarray, object]:
        images = pipe("5", num_inference_steps=STEPS, generator=_gen(), output_type="np").images
        return images, etcdiff.last_report(pipe)

    with etcdiff.enabled(pipe, "none"):
        full, report = run()
    assert report.model_calls == STEPS
    with etcdiff.enabled(pipe, "fixed", interval=2):
        fixed, report = run()
    assert report.computed_steps == [0, 1, *range(3, STEPS, 2)]  # reuse every other step after the first two
    assert np.isfinite(fixed).all() and 0 < np.abs(fixed - full).max() < 0.5
    with etcdiff.enabled(pipe, "etc", threshold=0.06, warmup=4):
        etc, report = run()
    assert report.computed_steps[:4] == [0, 1, 2, 3] and report.model_calls < STEPS
    assert np.isfinite(etc).all()
    etcdiff.disable(pipe)
    again = pipe("5", num_inference_steps=STEPS, generator=_gen(), output_type="np").images
    np.testing.assert_array_equal(again, full)  # disabled: exactly the full run again


def test_the_cli_finds_it_by_name(tmp_path, capsys) -> None:
    from etcdiff.cli import main

    path = tmp_path / "three.png"
    assert main(["generate", "--model", "unet-digits-dpm", "--prompt", "3", "--method", "fixed", "--set", "interval=2",
                 "--steps", "12", "--out", str(path)]) == 0
    assert path.is_file() and "model calls" in capsys.readouterr().out
    out = tmp_path / "demo"
    assert main(["demo", "--model", "unet-digits", "--steps", "12", "--repeats", "1", "--threshold", "0.05",
                 "--warmup", "4", "--out", str(out)]) == 0
    assert (out / "demo.png").is_file()


@pytest.mark.parametrize("name", ["unet-digits", "unet-digits-dpm"])
def test_etc_finds_its_shipped_profile(name, tmp_path, monkeypatch) -> None:
    """`etcdiff demo --model unet-digits` needs ETC's tolerance: one ships per solver, fitted at 50 steps by
    docs/unet-digits/run.sh on the calibration digits 0-4."""
    from etcdiff.calibration.profile import SHIPPED_DIR, load_profile

    monkeypatch.setenv("ETCDIFF_PROFILE_DIR", str(tmp_path))  # no user profile in the way
    shipped = load_profile(SHIPPED_DIR / f"{name}_50steps.json")
    assert shipped.identity == name and shipped.scheduler_class == type(load_pipeline(name).scheduler).__name__
    pipe = load_pipeline(name)
    assert etcdiff.enable(pipe, "etc").threshold == shipped.tau
    etcdiff.disable(pipe)
