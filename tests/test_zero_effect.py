"""A step method that reused nothing says so, with the setting to raise: in the summary, the CLI and the bench."""

from __future__ import annotations

import torch

import etcdiff
from etcdiff.bench import BenchConfig, build_grid, run_bench
from etcdiff.cli import main


def test_summary_says_when_nothing_was_reused(pipe):
    etcdiff.enable(pipe, "sencache", eps_main=0.0)
    pipe([3], num_inference_steps=12, generator=torch.Generator().manual_seed(0))
    note = etcdiff.summary(pipe)["note"]
    assert note.startswith("sencache reused nothing: all 12 steps ran the model") and "raise eps_main (now 0.0)" in note
    etcdiff.enable(pipe, "etc", threshold=0.5)
    pipe([3], num_inference_steps=12, generator=torch.Generator().manual_seed(0))
    assert "note" not in etcdiff.summary(pipe)  # it skipped steps: nothing to say


def test_cli_prints_the_note(tmp_path, capsys):
    assert main(["generate", "--model", "digits", "--method", "etc", "--threshold", "0", "--steps", "10",
                 "--prompt", "3", "--out", str(tmp_path / "x.png")]) == 0
    out = capsys.readouterr().out
    assert "note: etc reused nothing: all 10 steps ran the model" in out and "raise threshold (now 0" in out


def test_bench_report_names_settings_that_reused_nothing(tmp_path, pipe):
    cfg = BenchConfig(model="digits", grid=build_grid(["etc"], "etc:threshold=0,0.5"), prompts=["4"], steps=10,
                      repeats=1, out=tmp_path)
    run_bench(cfg, pipe=pipe, rank=0, world=1, progress=False)
    report = (tmp_path / "report.md").read_text()
    assert "Settings that reused nothing" in report
    assert "- etc threshold=0: etc reused nothing: all 10 steps ran the model" in report
    assert "threshold=0.5: etc reused nothing" not in report


def test_summary_says_when_fewer_calls_ran_than_the_ceiling_allowed(pipe, tmp_path):
    import json
    from pathlib import Path

    shipped = Path(etcdiff.__file__).parent / "data" / "profiles" / "digits_50steps_etc-plus.json"
    saved = json.loads(shipped.read_text(encoding="utf-8"))
    # the 11-call plan measured no closer than the 10-call one on the held-out runs: calls=11 runs 10
    saved["settings"]["profile"].update(budget_errors={"10": -3.0, "11": -3.0},
                                        budget_logs={"10": [-3.0, -3.1, -2.9], "11": [-2.9, -3.1, -3.0]})
    path = tmp_path / "p.json"
    path.write_text(json.dumps(saved), encoding="utf-8")
    etcdiff.enable(pipe, "etc-plus", profile=str(path), calls=11)
    pipe([3], num_inference_steps=50, generator=torch.Generator().manual_seed(0))
    out = etcdiff.summary(pipe)
    assert out["computed_steps"] == 10
    assert out["note"].startswith("etc-plus ran 10 of the 11 calls allowed: calls is a ceiling")
    etcdiff.enable(pipe, "etc-plus", profile=str(path), calls=10)
    pipe([3], num_inference_steps=50, generator=torch.Generator().manual_seed(0))
    assert "note" not in etcdiff.summary(pipe)  # the asked budget ran
