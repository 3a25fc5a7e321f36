"""The command line on the embedded model: outputs written, figures consistent, clear errors."""

import json

import pytest

from etcdiff.cli import main


def test_demo_writes_png_and_json(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--model", "digits", "--steps", "20", "--repeats", "1", "--threshold", "0.05", "--warmup", "4", "--out", str(out)]) == 0
    result = json.loads((out / "demo.json").read_text())
    assert (out / "demo.png").stat().st_size > 1000
    assert result["model_calls"]["full"] == 20
    assert result["model_calls"]["etc"] == len(result["computed_steps"]) < 20
    assert 0 < result["ssim"]["mean"] <= 1 and result["psnr_db"]["mean"] > 0
    text = capsys.readouterr().out
    assert "model calls" in text and "PSNR" in text


def test_generate_writes_an_image(tmp_path, capsys):
    path = tmp_path / "seven.png"
    assert main(["generate", "--model", "digits", "--prompt", "7", "--method", "etc", "--threshold", "0.05",
                 "--warmup", "4", "--steps", "12", "--out", str(path)]) == 0
    assert path.is_file()
    assert "model calls" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["generate", "--model", "digits", "--prompt", "x", "--steps", "4", "--method", "none"], "Invalid prompt 'x'"),
        (["generate", "--model", "digits", "--prompt", "1", "--method", "nope"], "unknown method 'nope'"),
        (["generate", "--model", "digits", "--prompt", "1", "--threshold", "-1"], "threshold must be a finite number >= 0"),
        (["generate", "--model", "digits", "--prompt", "1", "--model", "/no/such/dir"], "cannot load model '/no/such/dir'"),
        (["demo", "--model", "digits", "--steps", "1"], "--steps must be at least 2"),
    ],
)
def test_bad_arguments_are_one_line_errors(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
