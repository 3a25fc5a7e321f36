"""Prompts and guidance are checked in one line, in Python and in the CLI; a closed pipe ends the CLI quietly."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from etcdiff.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def scenes():
    from etcdiff.scenes.pipeline import ScenesPipeline

    p = ScenesPipeline.from_embedded()
    p.set_progress_bar_config(disable=True)
    return p


@pytest.mark.parametrize("prompt, match", [
    ("", "empty or blank"), ("   ", "empty or blank"), (None, "must be a string"), (3, "must be a string"),
    ([], "prompt list is empty"), (["a red circle", ""], "empty or blank"),
])
def test_scenes_prompts_are_checked(scenes, prompt, match):
    with pytest.raises(ValueError, match=rf"^ScenesPipeline: .*{match}"):
        scenes(prompt, num_inference_steps=2)


@pytest.mark.parametrize("guidance", [math.nan, -3.0, math.inf])
def test_guidance_is_checked_in_both_pipelines(scenes, pipe, guidance):
    with pytest.raises(ValueError, match=r"^ScenesPipeline: guidance_scale must be a finite number >= 0"):
        scenes("a red circle", guidance_scale=guidance, num_inference_steps=2)
    with pytest.raises(ValueError, match=r"^DigitsPipeline: guidance_scale must be a finite number >= 0"):
        pipe([3], guidance_scale=guidance, num_inference_steps=2)


@pytest.mark.parametrize("value", ["nan", "-3", "inf"])
def test_cli_guidance_is_one_usage_line(value, capsys):
    with pytest.raises(SystemExit) as e:
        main(["generate", "--model", "digits", "--guidance", value, "--prompt", "3"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--guidance: must be a finite number >= 0" in err and "Traceback" not in err


def test_cli_prompt_checked_in_one_line(capsys, tmp_path):
    code = main(["generate", "--model", "demo", "--steps", "2", "--out", str(tmp_path / "x.png"), "--prompt", "   "])
    err = capsys.readouterr().err
    assert code == 2 and "empty or blank" in err and len(err.strip().splitlines()) == 1


def test_a_closed_pipe_ends_quietly(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("0\n1\n2\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "etcdiff", "calibrate", "--model", "digits", "--method", "ertacache", "--steps", "8",
           "--prompts", str(prompts), "--out", str(tmp_path / "out"), "--quiet", "--no-plot"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # the reader is gone before the first line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 141
    assert err.strip() == "", err


@pytest.mark.parametrize("model", ["digits", "unet-digits"])
@pytest.mark.parametrize("steps", [0, -3, 2.5, True])
def test_the_digits_pipelines_check_the_step_count_in_one_line(model, steps):
    from etcdiff.models import load_pipeline

    pipe = load_pipeline(model)
    with pytest.raises(ValueError, match=rf"^num_inference_steps must be a positive integer, got {steps!r}\.$"):
        pipe("3", num_inference_steps=steps)


def test_the_unet_digits_pipeline_checks_guidance_too():
    from etcdiff.models import load_pipeline

    pipe = load_pipeline("unet-digits")
    with pytest.raises(ValueError, match=r"^UNetDigitsPipeline: guidance_scale must be a finite number >= 0"):
        pipe("3", guidance_scale=math.nan, num_inference_steps=2)
