"""scripts/bench_more_seeds.py: a committed bench's grid run again on more seeds, and the two read as one bench."""

import json
from pathlib import Path

import pytest

from etcdiff.bench.merge import summarize
from etcdiff.bench.sweep import build_grid
from repo_scripts import load_script

ROOT = Path(__file__).resolve().parents[1]


def _bench(folder, seeds, settings=(("fixed", "interval=2", 10), ("lemica", "calls=6", 6))):
    """A results.json of two prompts at ``seeds``: PSNR 40 + seed + setting index, its summary the bench's own."""
    grid = [{"method": m, "label": label, "setting": {label.split("=")[0]: int(label.split("=")[1])}}
            for m, label, _ in settings]
    runs = [{"kind": "reference", "method": "none", "setting_label": "reference", "prompt": p, "seed": s,
             "psnr": None, "nfe": 20, "ref_nfe": 20} for p in ("a", "b") for s in seeds]
    runs += [{"kind": "run", "method": m, "setting_label": label, "prompt": p, "seed": s, "psnr": 40.0 + s + k,
              "nfe": calls, "ref_nfe": 20} for k, (m, label, calls) in enumerate(settings)
             for p in ("a", "b") for s in seeds]
    folder.mkdir(parents=True, exist_ok=True)
    config = {"model": "demo", "grid": grid, "prompts": ["a", "b"], "seeds": list(seeds), "steps": 20,
              "guidance": None, "scheduler": "unipc"}
    (folder / "results.json").write_text(json.dumps({"config": config, "runs": runs,
                                                     "summary": summarize(runs, grid)}))
    return str(folder / "results.json")


def test_the_settings_given_again_make_the_committed_grids():
    module = load_script("bench_more_seeds")
    benches = sorted(ROOT.glob("docs/scenes/bench/solvers-*/*/results.json"))
    assert len(benches) >= 27
    for path in benches:
        grid = json.loads(path.read_text())["config"]["grid"]
        again = [g.as_dict() for g in build_grid(None, module.settings_arg(grid))]
        assert [(g["method"], g["label"]) for g in again] == [(g["method"], g["label"]) for g in grid], path


def test_the_new_folder_is_named_by_its_seeds_and_the_command_runs_the_bench_as_it_ran(tmp_path):
    module = load_script("bench_more_seeds")
    assert module.suffix_of([2, 3, 4, 5]) == "seeds-2-5"
    assert module.suffix_of([2, 4, 7]) == "seeds-2-4-7" and module.suffix_of([3]) == "seeds-3"
    bench = _bench(tmp_path / "case-peers", [0, 1])
    (tmp_path / "case-peers" / "profiles").mkdir()
    out = str(tmp_path / "case-peers-seeds-2-5")
    cmd, env = module.command(bench, [2, 3, 4, 5], out, 1)
    assert cmd[cmd.index("--seeds") + 1] == "2,3,4,5" and cmd[cmd.index("--scheduler") + 1] == "unipc"
    assert cmd[cmd.index("--repeats") + 1] == "0" and cmd[cmd.index("--out") + 1] == out
    assert cmd[cmd.index("--settings") + 1] == "fixed:interval=2;lemica:calls=6"
    assert (tmp_path / "case-peers-seeds-2-5" / "prompts.txt").read_text() == "a\nb\n"
    assert env["ETCDIFF_PROFILE_DIR"] == str(tmp_path / "case-peers" / "profiles")
    with pytest.raises(ValueError, match="cannot be given to --settings again"):
        module.settings_arg([{"method": "fixed", "setting": {"profile": "a b.json"}, "label": "profile=a b.json"}])


def test_a_pooled_bench_is_the_summary_of_every_image_and_refuses_what_does_not_pool(tmp_path):
    module = load_script("bench_more_seeds")
    bench = _bench(tmp_path / "case", [0, 1])
    assert module.pooled(bench, "seeds-2-5") == json.loads(Path(bench).read_text())  # nothing beside it yet
    _bench(tmp_path / "case-seeds-2-5", [2, 3, 4, 5])
    data = module.pooled(bench, "seeds-2-5")
    rows = {r["method"]: r for r in data["summary"]}
    assert rows["fixed"]["pairs"] == 12 and rows["fixed"]["psnr"] == pytest.approx(40 + (0 + 1 + 2 + 3 + 4 + 5) / 6)
    assert data["config"]["seeds"] == [0, 1, 2, 3, 4, 5]
    _bench(tmp_path / "case-seeds-1-2", [1, 2])
    with pytest.raises(ValueError, match="runs images that .* ran already"):
        module.pooled(bench, "seeds-1-2")
    _bench(tmp_path / "case-seeds-6-7", [6, 7], settings=(("fixed", "interval=3", 7),))
    with pytest.raises(ValueError, match="its settings are not those of"):
        module.pooled(bench, "seeds-6-7")


def test_the_margin_table_reads_the_pooled_benches_and_refuses_benches_of_other_images(tmp_path, monkeypatch):
    margins = load_script("etc_plus_margins")
    intervals = load_script("margin_intervals")
    bench = _bench(tmp_path / "case", [0, 1], settings=(("etc-plus", "calls=10", 10), ("lemica", "calls=10", 10)))
    peers = _bench(tmp_path / "case-peers", [0, 1], settings=(("fixed", "interval=2", 10),))
    _bench(tmp_path / "case-seeds-2-5", [2, 3, 4, 5], settings=(("etc-plus", "calls=10", 10),
                                                                 ("lemica", "calls=10", 10)))
    assert margins.bench_fronts(bench, [peers])["etc-plus"]["2x"] == pytest.approx(40.5)
    with pytest.raises(ValueError, match="cover other images"):
        margins.bench_fronts(bench, [peers], pool="seeds-2-5")  # the peers have no seeds 2-5
    _bench(tmp_path / "case-peers-seeds-2-5", [2, 3, 4, 5], settings=(("fixed", "interval=2", 10),))
    assert margins.bench_fronts(bench, [peers], pool="seeds-2-5")["etc-plus"]["2x"] == pytest.approx(42.5)
    monkeypatch.setattr(intervals, "BENCHES", [("scenes", "unipc", 20, bench)])
    row = intervals.interval_rows(draws=50, pool="seeds-2-5")[0]
    assert row[-1] == "12" and row[3].startswith("-1.0 [")


def test_seeds_the_bench_ran_and_an_image_that_comes_out_otherwise_are_refused_in_one_line(tmp_path, monkeypatch):
    module = load_script("bench_more_seeds")
    bench = _bench(tmp_path / "case", [0, 1])
    monkeypatch.setattr("sys.argv", ["bench_more_seeds.py", str(tmp_path / "case"), "--seeds", "1,2", "--dry-run"])
    with pytest.raises(SystemExit, match=r"ran seeds \[1\] already; give seeds it has not run"):
        module.main()

    off = {"lemica": 0.0}

    def bench_run(cmd, **kwargs):  # the bench made again on its first image, lemica ``off`` dB away
        out = Path(cmd[cmd.index("--out") + 1])
        assert (out / "prompts.txt").read_text() == "a\n"
        runs = [{**r, "psnr": r["psnr"] + off.get(r["method"], 0.0)}
                for r in json.loads(Path(bench).read_text())["runs"]
                if r["kind"] == "run" and r["prompt"] == "a" and r["seed"] == 0]
        (out / "results.json").write_text(json.dumps({"runs": runs}))
    monkeypatch.setattr(module.subprocess, "run", bench_run)
    module.check(bench, 1)  # the same image: no refusal
    off["lemica"] = 0.5
    with pytest.raises(SystemExit, match=r"lemica calls=6 gives 41.5 dB at 6 calls on its first image, the committed "
                                         r"run 41.0 dB at 6 calls; bench it again from scratch"):
        module.check(bench, 1)
