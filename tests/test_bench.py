"""``etcdiff bench``: metrics, FLOP counting, resume, sharding over two processes, the CLI end to end.

The demo model is used when its weights are shipped; before that an untrained demo DiT (same size, seeded)
stands in, so these tests never need a download.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from etcdiff.bench import BenchConfig, build_grid, parse_settings, read_prompts, run_bench
from etcdiff.bench.fidelity import psnr_ssim
from etcdiff.bench.flops import DenoiserCalls, PerCallFlops, count_flops
from etcdiff.bench.measure import Measurer
from etcdiff.bench.records import read_records, runs_dir

SRC = Path(__file__).resolve().parents[1] / "src"


def tiny_pipe():
    from diffusers import FlowMatchEulerDiscreteScheduler

    from etcdiff.digits import DigitsPipeline, build_transformer

    torch.manual_seed(0)
    pipe = DigitsPipeline(transformer=build_transformer().eval(), scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def demo_or_tiny(*args, **kwargs):
    """The shipped demo pipeline, or the untrained stand-in while its weights are not there."""
    from etcdiff.digits.model import WEIGHTS_PATH

    if WEIGHTS_PATH.is_file():
        from etcdiff.models import load_pipeline

        return load_pipeline("digits")
    return tiny_pipe()


# -- metrics ---------------------------------------------------------------------------------------------------
def test_identical_images_give_ssim_one_and_psnr_inf():
    rng = np.random.default_rng(0)
    img = rng.random((2, 16, 16, 1))
    m = psnr_ssim(img, img.copy())
    assert m["ssim"] == pytest.approx(1.0)
    assert math.isinf(m["psnr"]) and m["identical"]


@pytest.mark.parametrize("sigma", [0.01, 0.05])
def test_psnr_of_gaussian_noise_matches_its_sigma(sigma):
    rng = np.random.default_rng(1)
    ref = np.full((4, 64, 64, 1), 0.5)
    noisy = ref + rng.normal(0.0, sigma, ref.shape)  # |noise| << 0.5: no clipping, MSE ~ sigma^2
    m = psnr_ssim(ref, noisy)
    assert m["psnr"] == pytest.approx(20 * math.log10(1 / sigma), abs=0.15)
    assert m["ssim"] < 1.0 and not m["identical"]


# -- FLOPs ---------------------------------------------------------------------------------------------------------
def test_flops_per_call_times_calls_equals_counting_every_call():
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    x = torch.randn(3, 8)
    per_call, _ = count_flops(model, x)
    assert per_call == 2 * 3 * (8 * 32 + 32 * 4)  # two matmuls, 2 FLOPs per multiply-add
    with DenoiserCalls({"m": model}, direct=True) as calls:
        for _ in range(5):
            model(x)
    assert sum(calls.calls.values()) == 5 and len(calls.keys) == 1
    cache = PerCallFlops()
    cache.measure_all({"m": model}, calls)
    assert calls.direct_flops == cache.total(calls.keys, 5) == 5 * per_call


def test_fused_attention_is_counted_on_cpu():
    q, k = torch.randn(2, 4, 64, 32), torch.randn(2, 4, 77, 32)
    flops, _ = count_flops(torch.nn.functional.scaled_dot_product_attention, q, k, k)
    assert flops == 2 * (2 * 2 * 4 * 64 * 77 * 32)  # QK^T and PV, 2 FLOPs per multiply-add


@pytest.mark.filterwarnings("ignore:.*cache-dit's default Fn_compute_blocks")  # a 4-block model
def test_flops_are_counted_on_a_model_a_peer_patched_into_a_module_cycle():
    # cache-dit makes the transformer's module graph cyclic; torch's module tracker would recurse forever
    pytest.importorskip("cache_dit")
    import etcdiff

    pipe = tiny_pipe()
    etcdiff.enable(pipe, "cache-dit", residual_diff_threshold=0.08)
    try:
        with DenoiserCalls({"transformer": pipe.transformer}, direct=True) as calls:
            pipe(prompt="3", num_inference_steps=8, generator=torch.Generator().manual_seed(0), output_type="pt")
    finally:
        etcdiff.disable(pipe)
    assert sum(calls.calls.values()) == 8 and calls.direct_flops > 0


@pytest.mark.parametrize("method,setting", [("fixed", {"interval": 3}), ("etc", {"threshold": 0.1, "warmup": 2})])
def test_pipeline_flops_per_call_equal_direct_count(tmp_path, method, setting):
    pipe = tiny_pipe()
    grid = build_grid([method], {method: [setting]})
    results = {}
    for mode in ("per-call", "direct"):
        cfg = BenchConfig(model="digits", grid=grid, prompts=["3"], steps=8, repeats=1, out=tmp_path / mode, flops=mode)
        measurer = Measurer(cfg, pipe)
        results[mode] = measurer.untimed(grid[0], "3", 0)
        if mode == "per-call":
            (per_call,) = measurer.per_call.cache.values()
    assert results["per-call"]["flops_method"] == "per-call" and results["direct"]["flops_method"] == "direct"
    nfe = results["per-call"]["nfe"]
    assert nfe == results["direct"]["nfe"] < 8  # some steps skipped, so the multiplication is not trivial
    assert results["per-call"]["flops"] == nfe * per_call == results["direct"]["flops"]
    assert results["direct"]["denoiser_calls"] == 8  # the hook sees every call; skipped ones cost no FLOPs


# -- settings ------------------------------------------------------------------------------------------------------
def test_settings_grid_and_prompts():
    assert read_prompts("demo", "digits") == [str(i) for i in range(10)]
    assert read_prompts("demo", "scenes")[0].startswith("a ")
    with pytest.raises(ValueError, match="give --prompts FILE"):
        read_prompts("demo", "some/model")
    grid = parse_settings("etc:threshold=0.05,0.1 warmup=3;fixed:interval=2,3; etc:threshold=0.3")
    assert grid == {"etc": [{"threshold": 0.05, "warmup": 3}, {"threshold": 0.1, "warmup": 3}, {"threshold": 0.3}],
                    "fixed": [{"interval": 2}, {"interval": 3}]}
    runs = build_grid(["etc", "fixed", "none"], "etc:threshold=0.1;fixed:interval=2")
    assert [(r.method, r.label) for r in runs] == [("etc", "threshold=0.1"), ("fixed", "interval=2"), ("none", "default")]
    with pytest.raises(ValueError, match="not in --methods"):
        build_grid(["etc"], "fixed:interval=2")
    with pytest.raises(ValueError):
        parse_settings("etc:threshold")


def test_bad_setting_fails_before_the_sweep(tmp_path):
    cfg = BenchConfig(model="digits", grid=build_grid(["fixed"], "fixed:interval=0"), prompts=["1"], steps=4, repeats=1, out=tmp_path)
    pipe = tiny_pipe()
    with pytest.raises(ValueError, match="cannot enable fixed"):
        run_bench(cfg, pipe=pipe, rank=0, world=1, progress=False)
    assert not read_records(tmp_path)
    import etcdiff

    assert not etcdiff.is_enabled(pipe)  # the reference check before it left nothing on the pipeline either


# -- resume --------------------------------------------------------------------------------------------------------
def test_resume_runs_only_what_is_missing(tmp_path):
    pipe = tiny_pipe()
    cfg = BenchConfig(model="digits", grid=build_grid(["etc", "fixed"], "etc:threshold=0.1 warmup=2;fixed:interval=2,3"), prompts=["2", "5"],
                      steps=6, repeats=1, out=tmp_path)
    first = run_bench(cfg, pipe=pipe, rank=0, world=1, progress=False)
    assert len(first.executed) == 2 * 4 and first.references_generated == 2 and first.merged["complete"]
    shard = runs_dir(tmp_path) / "rank0.jsonl"
    lines = shard.read_text().splitlines()
    # an interruption: the last two runs never finished, and the one before was cut mid-line
    shard.write_text("\n".join(lines[:-3]) + "\n" + lines[-3][: len(lines[-3]) // 2])
    lost = [json.loads(ln)["key"] for ln in lines[-3:]]

    with pytest.warns(UserWarning, match=r"skipping line \d+ of .*rank0\.jsonl: not a complete JSON record"):
        second = run_bench(cfg, pipe=pipe, rank=0, world=1, progress=False)
    assert sorted(second.executed) == sorted(lost)
    assert len(second.skipped) == 5
    assert second.references_generated == 0 and second.references_loaded == 1  # only pair "5" had work left
    assert second.merged["complete"] and len(second.merged["runs"]) == 8
    with pytest.warns(UserWarning, match="skipping line"):  # the cut line stays in the shard, named each time
        third = run_bench(cfg, pipe=pipe, rank=0, world=1, progress=False)
    assert third.executed == [] and len(third.skipped) == 8


def test_a_recalibrated_profile_at_the_same_path_is_run_again(tmp_path):
    from etcdiff.calibration.runs import record_pipeline_runs
    from etcdiff.policies.step.ertacache import fit_ertacache

    pipe = tiny_pipe()
    trajs = record_pipeline_runs(pipe, ["1", "3"], 6, 0)
    profile = tmp_path / "erta.json"
    profile.write_text(json.dumps(fit_ertacache(trajs, 0.2).to_dict()))
    cfg = BenchConfig(model="digits", grid=build_grid(["ertacache", "fixed"], f"ertacache:profile={profile};fixed:interval=2"),
                      prompts=["2"], steps=6, repeats=1, out=tmp_path / "bench")
    first = run_bench(cfg, pipe=pipe, rank=0, world=1, progress=False)
    assert len(first.executed) == 3
    same = run_bench(cfg, pipe=pipe, rank=0, world=1, progress=False)
    assert same.executed == [] and len(same.skipped) == 3
    # the same path, other contents: ERTACache runs again, the reference and the fixed interval do not
    profile.write_text(json.dumps(fit_ertacache(trajs, 0.6).to_dict()))
    again = run_bench(cfg, pipe=pipe, rank=0, world=1, progress=False)
    assert len(again.executed) == 1 and len(again.skipped) == 2
    assert again.merged["complete"] and len(again.merged["runs"]) == 3
    erta = [r for r in again.merged["runs"] if r["method"] == "ertacache"]
    assert len(erta) == 1 and erta[0]["key"] == again.executed[0]


def test_a_timed_run_reads_no_profile_and_builds_no_plan(tmp_path, monkeypatch):
    """Each setting is resolved once per sweep (profile read, policy built, ETC+'s plan made); a timed run only
    creates a generation's fresh state."""
    import builtins

    import etcdiff
    from etcdiff.policies.step.etc_plus import ETCPlus

    pipe = demo_or_tiny()
    profile = SRC / "etcdiff" / "data" / "profiles" / "digits_50steps_etc-plus.json"
    cfg = BenchConfig(model="digits", grid=build_grid(["etc-plus", "ertacache"], f"etc-plus:profile={profile} calls=12,20;"
                      f"ertacache:profile={SRC / 'etcdiff' / 'data' / 'profiles' / 'digits_50steps_ertacache.json'}"),
                      prompts=["2"], steps=50, repeats=1, out=tmp_path)
    measurer = Measurer(cfg, pipe)
    measurer.validate_methods()
    plans, opened = [], []
    real_build, real_open, real_read = ETCPlus._build_plan, builtins.open, Path.read_text
    monkeypatch.setattr(ETCPlus, "_build_plan", lambda self: plans.append(self) or real_build(self))
    monkeypatch.setattr(builtins, "open", lambda f, *a, **k: opened.append(str(f)) or real_open(f, *a, **k))
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: opened.append(str(self)) or real_read(self, *a, **k))
    computed = {}
    for ms in cfg.grid:
        measurer.timed(ms, "2", 0)
        computed[ms.label] = etcdiff.last_report(pipe).num_computed
    assert plans == []
    assert not [f for f in opened if f.endswith(".json")], opened
    budgets = {label: int(label.split("calls=")[1].split()[0]) for label in computed if "calls=" in label}
    assert len(budgets) == 2 and all(computed[label] <= b for label, b in budgets.items())


def test_repeats_zero_times_nothing_and_scores_the_same(tmp_path, monkeypatch):
    """--repeats 0: every setting runs once, nothing is timed, and calls, FLOPs and fidelity are those of a timed
    sweep; the report and the plot say the wall-clock was not measured."""
    pipe = tiny_pipe()
    grid = build_grid(["fixed"], "fixed:interval=2,3")
    timed = run_bench(BenchConfig(model="digits", grid=grid, prompts=["4"], steps=6, repeats=1, out=tmp_path / "t"),
                      pipe=pipe, rank=0, world=1, progress=False).merged
    generations = []
    real = Measurer.timed
    monkeypatch.setattr(Measurer, "timed", lambda self, *a: generations.append(a) or real(self, *a))
    untimed = run_bench(BenchConfig(model="digits", grid=grid, prompts=["4"], steps=6, repeats=0, out=tmp_path / "u"),
                        pipe=pipe, rank=0, world=1, progress=False).merged
    assert generations == [] and untimed["complete"]
    for a, b in zip(timed["runs"], untimed["runs"], strict=True):
        same = ("setting_label", "nfe", "flops", "psnr")
        assert [a[k] for k in same] == [b[k] for k in same]
        assert b["latency_s"] is None and b["speedup_latency"] is None and b["latency_repeats"] == []
    assert all(r["speedup_latency"] is None and r["speedup_nfe"] for r in untimed["summary"] if r["kind"] == "run")
    report = (tmp_path / "u" / "report.md").read_text()
    assert "latency: not measured (--repeats 0" in report and "timed repeats" not in report
    assert "Wall-clock speedups" not in report and "Wall-clock speedups" in (tmp_path / "t" / "report.md").read_text()
    assert (tmp_path / "u" / "pareto.png").stat().st_size > 0


def test_interrupted_sweep_keeps_finished_runs_and_resumes(tmp_path, monkeypatch):
    pipe = tiny_pipe()
    cfg = BenchConfig(model="digits", grid=build_grid(["fixed"], "fixed:interval=2,3"), prompts=["4"], steps=6, repeats=1, out=tmp_path)
    real = Measurer.method_record
    calls = []

    def interrupt_second(self, *args, **kwargs):
        calls.append(args[1].label)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Measurer, "method_record", interrupt_second)
    with pytest.raises(KeyboardInterrupt):
        run_bench(cfg, pipe=pipe, rank=0, world=1, progress=False)
    kept = read_records(tmp_path)
    assert [(r["kind"], r["setting_label"]) for r in kept] == [("reference", "reference"), ("run", "interval=2")]
    partial = json.loads((tmp_path / "results.json").read_text())  # what finished is reported, marked incomplete
    assert not partial["complete"] and len(partial["missing_keys"]) == 1
    report = (tmp_path / "report.md").read_text()
    assert "Incomplete" in report
    assert "PARTIAL: 1 runs missing, 0 of 1 pairs complete" in report.splitlines()[0]  # the title says so
    assert "Averaged over the pairs done so far" in report and "Averaged over 1 (prompt, seed) pairs" not in report
    monkeypatch.setattr(Measurer, "method_record", real)
    again = run_bench(cfg, pipe=pipe, rank=0, world=1, progress=False)
    assert len(again.executed) == 1 and again.references_loaded == 1 and again.merged["complete"]


def test_another_step_count_on_the_same_out_is_refused(tmp_path):
    pipe = tiny_pipe()
    cfg = BenchConfig(model="digits", grid=build_grid(["fixed"], "fixed:interval=2"), prompts=["4"], steps=6, repeats=1, out=tmp_path)
    run_bench(cfg, pipe=pipe, rank=0, world=1, progress=False)
    other = BenchConfig(model="digits", grid=cfg.grid, prompts=["4"], steps=8, repeats=1, out=tmp_path)
    with pytest.raises(ValueError, match=r"holds a sweep with other reference settings \(steps 6 -> 8\)"):
        run_bench(other, pipe=pipe, rank=0, world=1, progress=False)
    more = BenchConfig(model="digits", grid=build_grid(["fixed"], "fixed:interval=2,3"), prompts=["4"], steps=6, repeats=1, out=tmp_path)
    assert len(run_bench(more, pipe=pipe, rank=0, world=1, progress=False).executed) == 1  # more settings join


# -- two processes -------------------------------------------------------------------------------------------------
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_processes_split_pairs_round_robin_and_one_process_needs_no_group(monkeypatch):
    from etcdiff.bench.processes import Processes

    cfg = BenchConfig(model="digits", grid=build_grid(["fixed"], None), prompts=["a", "b", "c"], seeds=[0, 1])
    assert cfg.shard(0, 2) == [(0, "a", 0), (1, "b", 0), (2, "c", 0)]
    assert cfg.shard(1, 2) == [(0, "a", 1), (1, "b", 1), (2, "c", 1)]
    for name in ("RANK", "WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE"):
        monkeypatch.delenv(name, raising=False)
    with Processes() as one:
        assert (one.rank, one.world) == (0, 1) and one.same_everywhere("x") and one.wait_for_all() is None
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="RANK=2 with WORLD_SIZE=2"):
        Processes()
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.setenv("MASTER_PORT", "29500")
    with pytest.raises(ValueError, match="MASTER_ADDR not set: launch with `accelerate launch"):
        Processes(rank=0, world=2)


def test_rank0_stops_waiting_for_a_process_that_died(monkeypatch):
    """The other process joins, passes the start-up check, then dies instead of reaching the barrier. The group is
    not torch's default process group (libraries such as cache-dit change behaviour when there is one)."""
    import torch.distributed as dist

    from etcdiff.bench.processes import Processes

    master = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    for name, value in master.items():
        monkeypatch.setenv(name, value)
    code = ("import os, sys; sys.path.insert(0, {src!r}); from etcdiff.bench.processes import Processes; "
            "p = Processes(rank=1, world=2); assert p.same_everywhere('sweep'); os._exit(3)").format(src=str(SRC))
    child = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, **master})
    try:
        with Processes(rank=0, world=2, timeout=60) as procs:
            assert procs.same_everywhere("sweep") and not dist.is_initialized()
            assert child.wait(timeout=60) == 3
            assert procs.wait_for_all() is not None  # not a hang, and not a traceback
    finally:
        child.kill()


CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    import etcdiff.bench.runner as runner
    from test_bench import demo_or_tiny
    runner.load_pipeline = demo_or_tiny
    from etcdiff.cli.bench import main
    sys.exit(main(sys.argv[1:]))
    """
)


def test_two_processes_shard_and_merge(tmp_path, monkeypatch):
    """Rank 1 runs the CLI in a subprocess (RANK/WORLD_SIZE/MASTER_* in its environment, as a launcher sets them);
    rank 0 runs here, at the same time, in the same gloo group, waits for rank 1 at its barrier and merges. (Only
    one subprocess: importing torch and diffusers is most of its cost.)"""
    from etcdiff.cli.bench import config_from_args

    master = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    for name, value in master.items():
        monkeypatch.setenv(name, value)

    out = tmp_path / "bench"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("3\n# a comment\n\n8\n")
    args = ["--model", "digits", "--methods", "fixed", "--settings", "fixed:interval=2", "--prompts", str(prompts),
            "--seeds", "0", "--steps", "6", "--repeats", "1", "--out", str(out), "--no-progress", "--threads", "1"]
    env = {**os.environ, **master, "RANK": "1", "WORLD_SIZE": "2", "PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(tests=str(Path(__file__).parent)), *args], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        from etcdiff.cli.bench import add_arguments

        parser = argparse.ArgumentParser()
        add_arguments(parser)
        config = config_from_args(parser.parse_args(args))
        mine = run_bench(config, pipe=demo_or_tiny(), rank=0, world=2, progress=False, wait_timeout=150)
        so, se = child.communicate(timeout=150)
    finally:
        child.kill()
    assert child.returncode == 0, se
    assert so == "" and "rank 1/2: 2 runs done" in se  # rank 1 does not merge
    assert len(mine.executed) == 2 and mine.merged is not None
    assert sorted(x.name for x in runs_dir(out).glob("*.jsonl")) == ["rank0.jsonl", "rank1.jsonl"]
    by_rank = {r: [json.loads(ln) for ln in (runs_dir(out) / f"rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)}
    assert {rec["prompt"] for rec in by_rank[0]} == {"3"} and {rec["prompt"] for rec in by_rank[1]} == {"8"}
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] and results["world_size"] == 2 and len(results["runs"]) == 4
    assert {p["rank"] for p in results["processes"]} == {0, 1}
    assert "| fixed | interval=2 | 4.0 | 1.50× |" in (out / "report.md").read_text()
    # a separate merge (`etcdiff bench --merge DIR`) gives the same runs
    from etcdiff.bench import merge

    again = merge(out)
    assert [r["key"] for r in again["runs"]] == [r["key"] for r in results["runs"]]


# -- the CLI end to end --------------------------------------------------------------------------------------------
def test_cli_end_to_end_writes_all_outputs(tmp_path, monkeypatch, capsys):
    import etcdiff.bench.runner as runner
    from etcdiff.cli import bench as bench_cli

    monkeypatch.setattr(runner, "load_pipeline", demo_or_tiny)
    parser = argparse.ArgumentParser(prog="etcdiff")
    bench_cli.register(parser.add_subparsers(dest="command"))
    out = tmp_path / "out"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("0\n7\n")
    args = parser.parse_args(["bench", "--model", "digits", "--methods", "etc,fixed,none", "--settings",
                              "etc:threshold=0.1 warmup=2;fixed:interval=2", "--prompts", str(prompts), "--seeds", "0",
                              "--steps", "6", "--repeats", "1", "--threads", "1", "--out", str(out), "--no-progress"])
    assert args.func(args) == 0
    for name in ("results.json", "results.csv", "report.md", "pareto.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] and len(results["runs"]) == 2 * 4
    assert results["versions"]["torch"] == torch.__version__ and results["machine"]["cpu_count"]
    assert results["config"]["steps"] == 6 and results["config"]["prompts"] == ["0", "7"]
    assert results["metrics"]["lpips"].startswith("not available")
    rows = {(r["method"], r["setting_label"]): r for r in results["summary"]}
    assert rows[("none", "reference")]["speedup_nfe"] == 1.0
    assert rows[("fixed", "interval=2")]["nfe"] == 4 and rows[("fixed", "interval=2")]["speedup_nfe"] == pytest.approx(1.5)
    assert rows[("none", "default")]["psnr"] == math.inf and rows[("none", "default")]["classifier_agreement"] == 1.0
    for rec in results["runs"]:
        assert rec["flops"] == rec["nfe"] * next(iter(rec["per_call_flops"].values()))
        assert rec["latency_s"] > 0 and rec["ref_latency_s"] > 0 and rec["speedup_latency"] > 0
    report = (out / "report.md").read_text()
    assert "| Method | setting | NFE | speedup (NFE) | FLOPs (G) |" in report and "| fixed | interval=2 | 4.0 | 1.50× |" in report
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert {"nfe", "flops", "latency_s", "ssim", "psnr", "lpips", "classifier_agreement"} <= set(header)
    assert "report.md" in capsys.readouterr().out


# -- the digit classifier ------------------------------------------------------------------------------------------
def test_shipped_classifier_recognises_sklearn_digits():
    pytest.importorskip("sklearn")
    from etcdiff.bench.classifier import classifier_metadata, load_classifier
    from etcdiff.bench.train_classifier import load_split

    model = load_classifier()
    assert model is not None, "run python -m etcdiff.bench.train_classifier"
    assert float(classifier_metadata()["test_accuracy"]) >= 0.97
    _, _, x_test, y_test = load_split(seed=0)
    x01 = ((x_test + 1) / 2)[:200]
    assert (model.predict(x01) == y_test[:200].numpy()).mean() >= 0.95
    as_np = x01.permute(0, 2, 3, 1).numpy()  # the demo pipeline's output_type="np" layout
    assert (model.predict(as_np) == model.predict(x01)).all()


def test_a_wall_clock_speedup_above_the_work_saved_is_flagged():
    from etcdiff.bench.report import _latency_cell

    row = {"kind": "run", "speedup_latency": 3.2, "speedup_latency_iqr": [2.9, 3.8], "speedup_nfe": 3.0,
           "speedup_flops": 3.0}
    assert _latency_cell(row) == "3.20× (2.90–3.80)"  # within 10 % of the calls saved: fine
    assert _latency_cell({**row, "speedup_latency": 5.56}).endswith("†")  # 5.56x for 3x fewer calls: noise


# -- issue 23: every completed run, one sweep per folder at a time, bad lines and files named ------------------------
def test_the_report_holds_every_completed_run_across_sweeps(tmp_path):
    pipe = demo_or_tiny()
    first = BenchConfig(model="digits", grid=build_grid(["fixed"], "fixed:interval=2"), prompts=["4"], steps=6,
                        repeats=1, out=tmp_path)
    run_bench(first, pipe=pipe, rank=0, world=1, progress=False)
    second = BenchConfig(model="digits", grid=build_grid(["fixed"], "fixed:interval=3"), prompts=["4"], steps=6,
                         repeats=1, out=tmp_path)
    merged = run_bench(second, pipe=pipe, rank=0, world=1, progress=False).merged
    labels = {(r["method"], r["setting_label"]) for r in merged["summary"] if r["kind"] == "run"}
    assert labels == {("fixed", "interval=2"), ("fixed", "interval=3")}
    assert len(json.loads((tmp_path / "results.json").read_text())["runs"]) == 3  # reference + both settings
    assert "interval=2" in (tmp_path / "report.md").read_text() and "interval=2" in (tmp_path / "results.csv").read_text()


def test_a_second_sweep_on_a_busy_out_is_refused(tmp_path):
    from etcdiff.bench.out_lock import OutFolderBusy, OutLock

    cfg = BenchConfig(model="digits", grid=build_grid(["fixed"], "fixed:interval=2"), prompts=["4"], steps=6,
                      repeats=1, out=tmp_path)
    with OutLock(tmp_path, 0):
        with pytest.raises(OutFolderBusy, match=r"is in use by another etcdiff bench \(pid \d+"):
            run_bench(cfg, pipe=demo_or_tiny(), rank=0, world=1, progress=False)
        with OutLock(tmp_path, 1):  # another rank of the same sweep shares the folder
            pass
    assert run_bench(cfg, pipe=demo_or_tiny(), rank=0, world=1, progress=False).executed  # free again


def test_a_run_recorded_by_other_etcdiff_code_is_run_again_not_resumed(tmp_path, monkeypatch):
    from etcdiff.bench import sweep

    pipe = demo_or_tiny()
    cfg = BenchConfig(model="digits", grid=build_grid(["fixed"], "fixed:interval=2"), prompts=["4"], steps=6,
                      repeats=1, out=tmp_path)
    first = run_bench(cfg, pipe=pipe, rank=0, world=1, progress=False)
    assert len(first.executed) == 2 and not run_bench(cfg, pipe=pipe, rank=0, world=1, progress=False).executed
    monkeypatch.setattr(sweep, "code_digest", lambda: "other code")
    again = run_bench(cfg, pipe=pipe, rank=0, world=1, progress=False)
    assert len(again.executed) == 1 and len(again.skipped) == 1  # the method's run again; the reference resumed
    assert again.merged["complete"] and len(again.merged["runs"]) == 2


def test_the_code_digest_follows_the_source_files(tmp_path):
    from etcdiff.bench.sweep import code_digest

    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "a.py").write_text("x = 1\n")
    before = code_digest(tmp_path)
    (tmp_path / "notes.txt").write_text("not code")
    assert code_digest.__wrapped__(tmp_path) == before
    (tmp_path / "policies" / "a.py").write_text("x = 2\n")
    assert code_digest.__wrapped__(tmp_path) != before


def test_a_bad_record_line_is_skipped_with_a_warning_naming_file_and_line(tmp_path):
    pipe = demo_or_tiny()
    cfg = BenchConfig(model="digits", grid=build_grid(["fixed"], "fixed:interval=2"), prompts=["4"], steps=6,
                      repeats=1, out=tmp_path)
    run_bench(cfg, pipe=pipe, rank=0, world=1, progress=False)
    shard = next((tmp_path / "runs").glob("*.jsonl"))
    with open(shard, "ab") as f:
        f.write(b'{"key": "\xff\xfe broken\n')
    with pytest.warns(UserWarning, match=rf"skipping line 3 of {re.escape(str(shard))}"):
        again = run_bench(cfg, pipe=pipe, rank=0, world=1, progress=False)
    assert not again.executed and again.merged["complete"]


def test_runs_being_a_file_names_the_path_and_the_fix(tmp_path):
    (tmp_path / "runs").write_text("not a folder")
    cfg = BenchConfig(model="digits", grid=build_grid(["fixed"], "fixed:interval=2"), prompts=["4"], steps=6,
                      repeats=1, out=tmp_path)
    with pytest.raises(NotADirectoryError, match=rf"{re.escape(str(tmp_path / 'runs'))} is a file, not a folder; "
                                                 "move it away or choose another --out"):
        run_bench(cfg, pipe=demo_or_tiny(), rank=0, world=1, progress=False)


def test_run_keys_follow_the_profile_made_for_the_sweeps_step_count(tmp_path, monkeypatch):
    """A 20-step profile in the user's folder is found first at enable; a 50-step sweep runs the shipped 50-step
    one, so its key must change when that one changes, and not when the 20-step one does."""
    import shutil

    from etcdiff.bench.enabling import resolve_setting
    from etcdiff.bench.sweep import MethodSetting
    from etcdiff.calibrate import calibrate_method
    from etcdiff.calibration.peer_profiles import save_peer_profile
    from etcdiff.calibration.profile import SHIPPED_DIR

    pipe = demo_or_tiny()
    user = tmp_path / "user"
    monkeypatch.setenv("ETCDIFF_PROFILE_DIR", str(user))
    save_peer_profile("digits", "ertacache", 20, calibrate_method(pipe, "ertacache", [0, 1], 20), user)
    ms = MethodSetting("ertacache")
    shipped = tmp_path / "shipped"
    shutil.copytree(SHIPPED_DIR, shipped)
    monkeypatch.setattr("etcdiff.calibration.profile.SHIPPED_DIR", shipped)
    before = resolve_setting(pipe, ms, 50).digest
    assert before is not None and resolve_setting(pipe, ms, 50).digest == before
    doc = json.loads((shipped / "digits_50steps_ertacache.json").read_text())
    doc["settings"]["profile"]["threshold"] = 0.5  # the shipped 50-step profile re-calibrated
    (shipped / "digits_50steps_ertacache.json").write_text(json.dumps(doc))
    assert resolve_setting(pipe, ms, 50).digest != before


def test_prompt_match_is_a_column_of_the_table(tmp_path):
    from etcdiff.bench.report import markdown

    rows = [{"kind": "reference", "method": "none", "setting_label": "reference", "nfe": 50, "speedup_nfe": 1.0,
             "flops": 1e9, "speedup_flops": 1.0, "latency_s": 1.0, "speedup_latency": 1.0, "speedup_latency_iqr": None,
             "ssim": 1.0, "psnr": math.inf, "psnr_identical": 1, "lpips": None, "classifier_agreement": None,
             "classifier_prompt_match": 0.875, "clip_score": None, "pairs": 1},
            {"kind": "run", "method": "etc", "setting_label": "threshold=0.1", "setting": {"threshold": 0.1}, "nfe": 20,
             "speedup_nfe": 2.5, "flops": 4e8, "speedup_flops": 2.5, "latency_s": 0.5, "speedup_latency": 2.0,
             "speedup_latency_iqr": None, "ssim": 0.99, "psnr": 40.0, "psnr_identical": 0, "lpips": None,
             "classifier_agreement": None, "classifier_prompt_match": 0.75, "clip_score": None, "pairs": 1}]
    results = {"config": {"model": "scenes", "steps": 50, "guidance": None, "prompts": ["p"], "seeds": [0],
                          "repeats": 1, "flops": "per-call", "device": "cpu", "grid": []},
               "summary": rows, "runs": [], "complete": True}
    table = [line for line in markdown(results).splitlines() if line.startswith("|")]
    assert "prompt match ↑" in table[0] and "classifier agreement" not in table[0]  # scenes: no classifier
    assert table[2].rstrip(" |").endswith("87.5%") and table[3].rstrip(" |").endswith("75.0%")
