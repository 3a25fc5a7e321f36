"""The mistakes a newcomer makes end in one line that names the problem and the fix, with exit status 2 and no
traceback; a bad output path fails before any sampling."""

import time

import numpy as np
import pytest
import torch

import etcdiff
from etcdiff.cli import main


def run_cli(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.err


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("etcdiff: warning")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("argv, expected", [
    (["generate", "--model", "digits", "--prompt", "1", "--set", "treshold=0.1"], "Did you mean 'threshold'"),
    (["generate", "--model", "digits", "--prompt", "1", "--method", "diffusers-taylorseer", "--threshold", "0.1"],
     "has no tolerance setting"),
    (["generate", "--model", "digits", "--prompt", "1", "--method", "ertacache", "--warmup", "3"], "unknown setting 'warmup' for method 'ertacache'"),
    (["generate", "--model", "digits", "--prompt", "1", "--method", "etc", "--set", "alpha=2"], "alpha must be in (0, 1]"),
    (["generate", "--model", "digits", "--prompt", "1", "--method", "ertacach"], "Did you mean 'ertacache'"),
])
def test_bad_settings_name_the_real_ones(argv, expected, capsys):
    code, err = run_cli(argv, capsys)
    assert code == 2
    assert expected in one_line(err)


def test_threshold_says_which_setting_it_maps_to(tmp_path, capsys):
    code = main(["generate", "--model", "digits", "--prompt", "1", "--method", "cache-dit", "--threshold", "0.1", "--steps", "4",
                 "--out", str(tmp_path / "x.png")])
    out = capsys.readouterr().out
    assert code == 0
    assert "--threshold sets cache-dit's residual_diff_threshold" in out
    assert "block-stack executions" in out and "model calls" not in out


@pytest.mark.parametrize("command", ["generate", "demo"])
def test_an_out_path_under_a_file_fails_at_once(tmp_path, capsys, command):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    out = blocker / "sub" / ("x.png" if command == "generate" else "dir")
    argv = [command, "--model", "digits", "--out", str(out)] + (["--prompt", "1"] if command == "generate" else [])
    t0 = time.perf_counter()
    code, err = run_cli(argv, capsys)
    assert time.perf_counter() - t0 < 5  # nothing was sampled
    assert code == 2 and "is a file, not a folder" in one_line(err)


def test_an_out_file_that_is_a_folder(tmp_path, capsys):
    code, err = run_cli(["generate", "--model", "digits", "--prompt", "1", "--out", str(tmp_path)], capsys)
    assert code == 2 and "is a folder; give a file name" in one_line(err)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_cpu_only_torch(capsys):
    code, err = run_cli(["generate", "--model", "digits", "--prompt", "1", "--device", "cuda"], capsys)
    assert code == 2 and "sees no CUDA GPU; use --device cpu" in one_line(err)


def test_a_missing_cache_dit_names_the_extra(monkeypatch, capsys):
    import etcdiff.integration.external.support as external

    monkeypatch.setattr(external, "cache_dit_status", lambda: "cache-dit is not installed")
    code, err = run_cli(["generate", "--model", "digits", "--prompt", "1", "--method", "cache-dit"], capsys)
    assert code == 2 and "pip install 'etcdiff[peers]'" in one_line(err)


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["generate", "--no-such-flag"])
    assert e.value.code == 2


def test_unexpected_failures_are_one_line_too(monkeypatch, capsys):
    import etcdiff.cli.generate as generate

    def boom(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(generate, "run", boom)  # register() reads it when main builds the parser
    monkeypatch.delenv("ETCDIFF_DEBUG", raising=False)
    code, err = run_cli(["generate", "--model", "digits", "--prompt", "1"], capsys)
    assert code == 1
    assert "ZeroDivisionError: division by zero" in one_line(err) and "ETCDIFF_DEBUG=1" in err


def test_python_settings_are_checked_like_the_cli(pipe):
    with pytest.raises(ValueError, match="unknown setting 'treshold' for method 'etc'. Did you mean 'threshold'"):
        etcdiff.enable(pipe, "etc", treshold=0.1)
    with pytest.raises(ValueError, match="unknown setting 'threshold' for method 'diffusers-taylorseer'"):
        etcdiff.enable(pipe, "diffusers-taylorseer", threshold=0.1)


@pytest.mark.parametrize("number", [np.float32(0.05), np.float64(0.05), torch.tensor(0.05), np.array(0.05)])
def test_every_real_number_type_is_a_setting(pipe, number):
    policy = etcdiff.enable(pipe, "etc", threshold=number, warmup=np.int64(4))
    assert policy.threshold == pytest.approx(0.05) and policy.warmup == 4 and type(policy.warmup) is int


def test_summary_and_the_report_outlive_the_context(pipe):
    with etcdiff.enabled(pipe, "etc", threshold=0.05, warmup=4):
        pipe(prompt="3", num_inference_steps=12, generator=torch.Generator().manual_seed(0), output_type="np")
    report = etcdiff.last_report(pipe)
    s = etcdiff.summary(pipe)
    assert s["method"] == "etc" and s["settings"]["threshold"] == 0.05
    assert s["steps"] == 12 and s["computed_steps"] == report.num_computed < 12
    assert s["model_calls"] == report.model_calls
    assert s["speedup"] == pytest.approx(12 / report.num_computed)


def test_help_and_the_registry_import_no_torch():
    """`etcdiff --help` stays quick: building the parser (which lists the registry's methods) imports no torch."""
    import subprocess
    import sys

    code = ("import sys, etcdiff, etcdiff.cli; etcdiff.cli.build_parser(); assert len(etcdiff.METHODS) > 10; "
            "print('torch' in sys.modules, 'diffusers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_demo_names_the_embedded_models(capsys):
    code, err = run_cli(["demo", "--model", "./my-flux"], capsys)
    assert code == 2 and "--model './my-flux': demo runs an embedded model: scenes, digits, unet-digits, unet-digits-dpm, demo." in one_line(err)


@pytest.mark.parametrize("device, expected", [("gpu", "is not a torch device; use cpu, cuda"),
                                              ("cuda:7", "CUDA")])
def test_bad_devices(device, expected, capsys):
    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("a machine with 8 GPUs")
    code, err = run_cli(["generate", "--model", "digits", "--prompt", "1", "--device", device], capsys)
    assert code == 2 and expected in one_line(err)


def test_calibrate_says_when_the_change_point_falls_inside_the_warmup(tmp_path, capsys):
    assert main(["calibrate", "--model", "digits", "--steps", "12", "--warmup", "11", "--quiet", "--no-plot",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "falls inside the warm-up of 11 steps" in out and "consider --warmup" in out


def test_calibrate_runs_on_the_threads_it_is_given(tmp_path, capsys):
    assert torch.get_num_threads() == 1  # the tests' own setting, so that 2 below is the flag's
    # ETC's calibration: the flag is the CLI's, whatever the method (ETC+'s calibration runs in other tests)
    assert main(["calibrate", "--model", "digits", "--method", "etc", "--steps", "12", "--quiet", "--no-plot",
                 "--threads", "2", "--out", str(tmp_path)]) == 0
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("command", ["calibrate", "bench"])
@pytest.mark.parametrize("value, expected", [("0", "must be at least 1, got '0'"),
                                             ("two", "expected a whole number of threads, got 'two'")])
def test_bad_thread_counts_are_usage_errors(command, value, expected, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--model", "digits", "--threads", value])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --threads: {expected}" in err and "Traceback" not in err


def test_registry_errors():
    with pytest.raises(TypeError, match="register takes a Method, got str"):
        etcdiff.register("etc")
    with pytest.raises(ValueError, match="kind must be one of step, block, external, got 'layer'"):
        etcdiff.Method("x", "layer", "", "", "", schema=lambda: object)
    with pytest.raises(ValueError, match="unknown setting 'intervall' for method 'fixed'. Did you mean 'interval'"):
        etcdiff.get_method("fixed").check_settings({"intervall": 2})


def test_a_warning_during_a_progress_bar_gets_its_own_line():
    """The CLI prints warnings as one line; one raised while a bar is drawing (a generation's first step) starts
    its own line instead of being glued after the bar's text."""
    import io

    from tqdm import tqdm

    from etcdiff.cli import _one_line_warning

    out = io.StringIO()
    with tqdm(total=3, file=out) as bar:
        bar.update(1)
        _one_line_warning(UserWarning("the profile was resampled"), UserWarning, "x.py", 1, file=out)
        bar.update(2)
    shown = [line.split("\r")[-1] for line in out.getvalue().split("\n")]
    assert "etcdiff: warning: the profile was resampled" in shown
