"""scripts/margin_intervals.py: the margin table's pipeline cells with a paired bootstrap over the case's images."""

import json
import math

import numpy as np
import pytest

from etcdiff.bench.merge import summarize
from repo_scripts import load_script

PAIRS = [(f"caption {k}", seed) for seed in (0, 1) for k in range(4)]


def _results(path, settings):
    """A results.json whose runs are ``settings``: (method, label, calls, per-image PSNRs), 20 steps, and its
    summary made by the bench's own :func:`summarize`."""
    grid = [{"method": m, "label": label, "setting": {"calls": calls}} for m, label, calls, _ in settings]
    runs = [{"kind": "reference", "method": "none", "setting_label": "reference", "prompt": p, "seed": s,
             "psnr": None, "nfe": 20, "ref_nfe": 20} for p, s in PAIRS]
    runs += [{"kind": "run", "method": m, "setting_label": label, "prompt": p, "seed": s, "psnr": v,
              "nfe": calls + (k % 2), "ref_nfe": 20}
             for m, label, calls, psnrs in settings for k, ((p, s), v) in enumerate(zip(PAIRS, psnrs))]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"config": {"grid": grid}, "runs": runs, "summary": summarize(runs, grid)}))
    return str(path)


def test_the_means_of_a_draw_are_the_bench_summary_of_the_images_drawn(tmp_path):
    module = load_script("margin_intervals")
    path = _results(tmp_path / "r.json", [("etc-plus", "calls=8", 8, [40, 41, 42, math.inf, 44, 45, 46, 47]),
                                          ("lemica", "calls=8", 8, [39, 38, 37, 36, 35, 34, 33, 32])])
    bench = module.Bench(path)
    counts = np.array([3, 0, 1, 0, 2, 1, 1, 0], float)
    drawn = [pair for pair, n in zip(bench.pairs, counts) for _ in range(int(n))]
    data = json.load(open(path))
    records = [r for pair in drawn for r in data["runs"] if (r["prompt"], r["seed"]) == pair]
    expected = {r["method"]: r for r in summarize(records, data["config"]["grid"]) if r["kind"] == "run"}
    for row in bench.rows(counts):
        assert row["psnr"] == pytest.approx(expected[row["method"]]["psnr"])
        assert row["speedup_nfe"] == pytest.approx(expected[row["method"]]["speedup_nfe"])


def test_a_lead_on_every_image_reads_ahead_and_a_split_one_level(tmp_path, monkeypatch):
    module = load_script("margin_intervals")
    ahead = _results(tmp_path / "a" / "bench" / "results.json", [
        ("etc-plus", "calls=8", 8, [50 + k for k in range(8)]),
        ("lemica", "calls=8", 8, [45 + k for k in range(8)])])
    split = _results(tmp_path / "b" / "bench" / "results.json", [
        ("etc-plus", "calls=8", 8, [50, 50, 50, 50, 40, 40, 40, 40]),
        ("lemica", "calls=8", 8, [44, 44, 44, 44, 45, 45, 45, 45])])
    monkeypatch.setattr(module, "BENCHES", [("scenes", "euler", 20, ahead), ("scenes", "unipc", 20, split),
                                            ("scenes", "dpm", 20, str(tmp_path / "missing.json"))])
    rows = {r[1]: r for r in module.interval_rows(draws=400)}
    cell = rows["FlowMatchEulerDiscreteScheduler"][3]
    assert cell.startswith("+5.0 [") and cell.endswith("ahead")
    assert rows["UniPCMultistepScheduler"][3].startswith("+0.5 [")
    assert rows["UniPCMultistepScheduler"][3].endswith("level")
    assert rows["DPMSolverMultistepScheduler"][3] == "not measured"
    assert "1 ahead" in module.markdown(list(rows.values())).splitlines()[-1]


def test_the_variant_takes_etc_plus_from_the_twin_bench_only(tmp_path, monkeypatch):
    module = load_script("margin_intervals")
    bench = _results(tmp_path / "case" / "results.json", [
        ("etc-plus", "calls=8", 8, [30] * 8), ("lemica", "calls=8", 8, [40] * 8)])
    _results(tmp_path / "case-schedules" / "results.json", [
        ("etc-plus", "calls=8", 8, [42] * 8), ("lemica", "calls=8", 8, [60] * 8)])
    monkeypatch.setattr(module, "BENCHES", [("scenes", "euler", 20, bench)])
    assert module.interval_rows(draws=50)[0][3].startswith("-10.0 [")
    assert module.interval_rows("schedules", draws=50)[0][3].startswith("+2.0 [")
    monkeypatch.setattr(module, "BENCHES", [("scenes", "euler", 20, str(tmp_path / "case" / "results.json"))])
    assert module.interval_rows("other", draws=50)[0][3] == "not measured"


def _grid_case(rows, steps=20):
    """A solver-grid case as scripts/etc_plus_solvers.py writes it: rows with a PSNR and calls per evaluation case,
    their means, and the fronts made from them by the grid's own code."""
    full = [{"method": m, "setting": s, "case_psnr": ps, "case_calls": cs, "psnr": float(np.mean(ps)),
             "calls": float(np.mean(cs)), "speedup": steps / float(np.mean(cs))} for m, s, ps, cs in rows]
    fronts = load_script("etc_plus_eval").fronts(full)
    return {"model": "digits", "scheduler": "unipc", "scheduler_class": "UniPCMultistepScheduler", "steps": steps,
            "rows": full, "fronts": fronts, "extra": {}}


def test_a_grid_case_reads_the_margin_the_margin_table_reads_and_its_interval(tmp_path):
    module = load_script("margin_intervals")
    margins = load_script("etc_plus_margins")
    case = _grid_case([("etc-plus", "calls=10", [50.0 + k % 3 for k in range(20)], [10] * 20),
                       ("etc-plus", "calls=6", [40.0 + k % 5 for k in range(20)], [6] * 20),
                       ("etc-plus-old", "calls=10", [90.0] * 20, [10] * 20),  # ETC+'s own: no other method
                       ("etc-plus-tol", "tolerance (default)", [90.0] * 20, [9] * 20),
                       ("lemica", "calls=10", [48.0 + k % 4 for k in range(20)], [10] * 20),
                       ("lemica", "calls=6", [41.0] * 10 + [37.0] * 10, [6] * 20),
                       ("fixed", "interval=2", [47.0] * 20, [10] * 10 + [11] * 10)])
    path = tmp_path / "grid.json"
    path.write_text(json.dumps([case]))
    row = module.grid_rows([str(path)], draws=300)[0]
    table = margins.margins({m: f for m, f in case["fronts"].items() if m == "etc-plus" or "etc-plus" not in m})
    for cell, expected in zip(row[3:5], table[:2]):
        assert cell.split(" [")[0] == expected.split(" (")[0]
    assert row[3].endswith("ahead") and row[-1] == "20"
    merged = {**case, "rows": [*case["rows"], {k: v for k, v in case["rows"][-1].items() if not k.startswith("case_")}
                               | {"setting": "interval=3"}]}  # one row of an older run among new ones
    path.write_text(json.dumps([merged]))
    with pytest.raises(ValueError, match=r"digits unipc 20: 1 of its rows keep no evaluation cases \(fixed interval=3"):
        module.grid_rows([str(path)], draws=10)


def test_grid_and_variant_together_are_refused_in_one_line(monkeypatch, capsys):
    module = load_script("margin_intervals")
    monkeypatch.setattr("sys.argv", ["margin_intervals.py", "--grid", "g.json", "--variant", "schedules"])
    with pytest.raises(SystemExit) as e:
        module.main()
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--grid reads ETC+ from the grid's own rows; --variant is for the pipeline benches" in err
    assert "Traceback" not in err


def test_pipeline_and_grid_cases_go_in_one_table_counted_per_model(tmp_path, monkeypatch, capsys):
    module = load_script("margin_intervals")
    bench = _results(tmp_path / "a" / "bench" / "results.json", [
        ("etc-plus", "calls=8", 8, [40 + k for k in range(8)]),
        ("lemica", "calls=8", 8, [45 + k for k in range(8)])])
    monkeypatch.setattr(module, "BENCHES", [("scenes", "euler", 20, bench)])
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps([_grid_case([("etc-plus", "calls=10", [50.0 + k % 3 for k in range(20)], [10] * 20),
                                            ("lemica", "calls=10", [45.0 + k % 4 for k in range(20)], [10] * 20)])]))
    monkeypatch.setattr("sys.argv", ["margin_intervals.py", "--grid", str(grid), "--pipeline", "--draws", "200",
                                     "--out", str(tmp_path), "--name", "all"])
    module.main()
    text = (tmp_path / "all.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| digits") or line.startswith("| scenes")]
    assert [r.split(" | ")[0] for r in rows] == ["| digits", "| scenes"]
    assert rows[0].split(" | ")[3].endswith("ahead") and rows[1].split(" | ")[3].endswith("behind")
    assert "- digits: 0 behind, 0 level, 1 ahead of 1 cells" in text
    assert "- scenes: 1 behind, 0 level, 0 ahead of 1 cells" in text
    assert "1 behind, 0 level, 1 ahead of 2 cells." in text
    monkeypatch.setattr("sys.argv", ["margin_intervals.py", "--pipeline"])
    with pytest.raises(SystemExit) as e:
        module.main()
    assert e.value.code == 2
    assert "--pipeline adds the pipeline benches to --grid's runs" in capsys.readouterr().err
    monkeypatch.setattr("sys.argv", ["margin_intervals.py", "--grid", str(grid), "--pool", "seeds-2-5"])
    with pytest.raises(SystemExit) as e:
        module.main()
    assert e.value.code == 2
    assert "--pool pools the pipeline benches; with --grid alone there are none" in capsys.readouterr().err
