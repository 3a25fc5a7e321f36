"""scripts/etc_plus_ladder_tolerance.py: items 2 and 3 of a benched ETC+ profile, from the bench's per-run records."""

import json

import pytest
from repo_scripts import load_script


def _check(tmp_path, monkeypatch, psnr):
    """The script's check of a folder whose ladder ran ``psnr[calls][image]`` (an image left out: its run failed),
    and whose tolerance mode ran every image at half the target."""
    module = load_script("etc_plus_ladder_tolerance")
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps({"settings": {"profile": {"tolerance": 0.02, "tolerance_scale": 0.5}}}))
    (tmp_path / "results.json").write_text(json.dumps({"config": {"model": "m", "steps": 10}}))
    images = sorted({k for v in psnr.values() for k in v})

    def run(calls, image, db, error=0.0):
        return {"kind": "run", "method": "etc-plus", "setting": {"profile": str(profile), "calls": calls},
                "prompt": image, "seed": 0, "psnr": db, "report": {"num_computed": calls or 5},
                "latent_rel_l2": error}

    records = [run(c, k, db) for c, row in psnr.items() for k, db in row.items()]
    records += [run(None, k, 50.0, 0.01) for k in images]
    monkeypatch.setattr(module, "_records", lambda folder: records)
    monkeypatch.setattr(module, "_reference_rms", lambda folder: {(k, 0): 1.0 for k in images})
    return module.check(tmp_path)


def test_the_worst_drop_for_one_more_call_is_paired_image_by_image(tmp_path, monkeypatch):
    got = _check(tmp_path, monkeypatch, {2: {"a": 30.0, "b": 34.0}, 3: {"a": 33.0, "b": 31.0}, 4: {"a": 36.0,
                                                                                                   "b": 36.0}})
    assert got["worst_drop"] == pytest.approx(0.0) and got["worst_drop_at"] == 2  # 32 -> 32 dB, the mean's drop
    assert got["worst_drop_se"] == pytest.approx(3.0)  # differences -3 and +3 dB
    assert got["incomplete_budgets"] == [] and got["within"] == 1.0 and got["tolerance_calls"] == 5


def test_a_budget_an_image_did_not_run_at_is_said_and_its_drops_are_taken_over_the_images_both_ran(
        tmp_path, monkeypatch, capsys):
    got = _check(tmp_path, monkeypatch, {2: {"a": 30.0, "b": 34.0, "c": 40.0}, 3: {"a": 29.0, "b": 33.0},
                                         4: {"a": 36.0, "b": 36.0, "c": 40.0}})
    assert got["incomplete_budgets"] == [3]  # image c failed at 3 calls
    assert got["worst_drop"] == pytest.approx(1.0) and got["worst_drop_at"] == 2  # over a and b: 32 -> 31 dB
    assert "budgets [3] lack some of the 3 images" in capsys.readouterr().err


def test_the_table_says_the_seeds_the_benches_ran_at(tmp_path, monkeypatch):
    module = load_script("etc_plus_ladder_tolerance")
    folder = tmp_path / "case"
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps({"config": {"seeds": [2, 3]}}))
    row = {"model": "m", "scheduler": "s", "steps": 10, "within": 1.0, "worst_drop": 0.0}
    monkeypatch.setattr(module, "check", lambda f: {**row, "seeds": json.loads((f / "results.json").read_text())[
        "config"]["seeds"]})  # as check reads them from the bench's config
    monkeypatch.setattr(module, "markdown", lambda cases: "table\n")
    monkeypatch.setattr("sys.argv", ["x", str(folder), "--out", str(tmp_path), "--name", "t23"])
    module.main()
    assert "made by `SEEDS=2,3 bash docs/etc-plus/ladder-tolerance/run.sh`" in (tmp_path / "t23.md").read_text()
    (folder / "results.json").write_text(json.dumps({"config": {"seeds": [0, 1]}}))
    module.main()
    assert "made by `bash docs/etc-plus/ladder-tolerance/run.sh`" in (tmp_path / "t23.md").read_text()
