"""scripts/bench_again.py: a committed bench made again, refused where another method's runs changed."""

import json
import os

import pytest

from repo_scripts import load_script


def _runs(psnr_plus=0.0, steps_plus=(), other_plus=0.0):
    """Runs of two methods on two images: etc-plus moved by ``psnr_plus`` dB, fixed by ``other_plus``."""
    runs = []
    for prompt in ("a", "b"):
        runs.append({"kind": "reference", "method": "none", "setting_label": "reference", "prompt": prompt,
                     "seed": 0, "psnr": None, "computed_steps": list(range(10))})
        runs.append({"kind": "run", "method": "etc-plus", "setting_label": "calls=5", "prompt": prompt, "seed": 0,
                     "psnr": 30.0 + psnr_plus, "computed_steps": [0, 2, 4, 6, 8, *steps_plus]})
        runs.append({"kind": "run", "method": "fixed", "setting_label": "interval=2", "prompt": prompt, "seed": 0,
                     "psnr": 28.0 + other_plus, "computed_steps": [0, 2, 4, 6, 8]})
    return runs


def test_changes_count_other_steps_or_psnr_beyond_the_tolerance_per_method():
    module = load_script("bench_again")
    assert module.changes(_runs(), _runs(psnr_plus=0.005)) == {}  # float sums differ by less than 0.01 dB
    assert module.changes(_runs(), _runs(psnr_plus=1.5)) == {"etc-plus": [1.5, 1.5]}
    assert module.changes(_runs(), _runs(steps_plus=(9,))) == {"etc-plus": [0.0, 0.0]}  # same PSNR, other steps
    same = [{**r, "psnr": float("inf")} for r in _runs()]  # identical images: inf dB on both sides
    assert module.changes(same, same) == {}
    unread = [{**r, "psnr": None} for r in _runs()]  # a run the bench could not score, on both sides
    assert module.changes(unread, unread) == {}
    assert module.changes(same, _runs()) == {"etc-plus": [-float("inf")] * 2, "fixed": [-float("inf")] * 2}
    missing = module.changes(_runs(), [r for r in _runs() if r["prompt"] == "a"])
    assert sorted(missing) == ["etc-plus", "fixed"] and all(v != v for v in missing["fixed"])  # nan: one side only


@pytest.mark.parametrize("other_plus", [0.0, 0.5])
def test_again_replaces_the_bench_only_where_no_other_method_changed(tmp_path, monkeypatch, other_plus):
    module = load_script("bench_again")
    folder = tmp_path / "bench"
    (folder / "runs").mkdir(parents=True)
    (folder / "runs" / "stale.jsonl").write_text("old\n")  # the folder's records of before go with its bench
    config = {"model": "demo", "grid": [{"method": "etc-plus", "setting": {"calls": 5}},
                                        {"method": "fixed", "setting": {"interval": 2}}],
              "prompts": ["a", "b"], "seeds": [0], "steps": 10, "repeats": 1, "threads": 1, "out": str(folder)}
    committed = json.dumps({"config": config, "runs": _runs()})
    (folder / "results.json").write_text(committed)

    def fake_run(cmd, **kwargs):  # the bench, made again: etc-plus 2 dB higher, fixed by other_plus
        out = cmd[cmd.index("--out") + 1]
        assert cmd[cmd.index("--repeats") + 1] == "1" and cmd[cmd.index("--seeds") + 1] == "0"
        new = {"config": {**config, "out": out}, "runs": _runs(psnr_plus=2.0, other_plus=other_plus)}
        with open(f"{out}/results.json", "w") as f:
            json.dump(new, f)
        with open(f"{out}/sweep.json", "w") as f:
            json.dump({"config": {"out": out}}, f)
        os.makedirs(f"{out}/runs", exist_ok=True)
        with open(f"{out}/runs/rank0.jsonl", "w") as f:
            f.write("{}\n")

    monkeypatch.setattr(module.subprocess, "run", fake_run)
    if other_plus:
        with pytest.raises(SystemExit, match="runs of fixed changed too, not only etc-plus's"):
            module.again(str(folder), "etc-plus")
        assert (folder / "results.json").read_text() == committed and not (folder / "sweep.json").exists()
        assert (folder / "runs" / "stale.jsonl").exists()
        return
    line = module.again(str(folder), "etc-plus")
    assert line.endswith("2 of 2 etc-plus runs changed (mean PSNR change +2.00 dB); no other run did")
    made = json.loads((folder / "results.json").read_text())
    assert made["config"]["out"] == str(folder) and made["runs"][1]["psnr"] == 32.0
    assert json.loads((folder / "sweep.json").read_text())["config"]["out"] == str(folder)
    assert sorted(p.name for p in (folder / "runs").iterdir()) == ["rank0.jsonl"]  # the new records, not the old
