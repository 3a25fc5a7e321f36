"""scripts/etc_plus_final_plans.py: a final_plans profile's ladder read off the benches of the profile beside it."""

import json

import pytest
import torch
from repo_scripts import load_script

from etcdiff import closed_form as hm
from etcdiff.calibration.runs import record_denoiser_runs
from etcdiff.policies.step.etc_plus import ETCPlus, fit_etc_plus


@pytest.fixture(scope="module")
def fitted():
    model, sched, _ = hm.gmm_flow()
    noises = [torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(s)) for s in (100, 101)]
    kwargs = [{"labels": [0, 1]}, {"labels": [2, 3]}]
    return fit_etc_plus(record_denoiser_runs(model, sched, noises, 20, kwargs), max_window=5)


def _save(path, profile):
    path.write_text(json.dumps({"settings": {"profile": profile}}))
    return path


def _bench(path, profile_path, seeds, budgets=range(5, 9), shift=0.0):
    """A bench folder of ``profile_path``: PSNR 40 + calls (+ ``shift``), + 0.5 at seed 1."""
    path.mkdir()
    runs = [{"kind": "run", "method": "etc-plus", "setting": {"profile": str(profile_path), "calls": c},
             "prompt": p, "seed": s, "psnr": 40.0 + c + shift + 0.5 * s} for c in budgets for p in "xy" for s in seeds]
    (path / "results.json").write_text(json.dumps({"config": {"model": "m", "steps": 20}, "runs": runs}))
    return path


def test_a_budget_that_runs_a_smaller_plan_is_read_off_the_budget_that_ran_it(tmp_path, fitted):
    module = load_script("etc_plus_final_plans")
    old = _save(tmp_path / "old.json", {**fitted, "selection": {"chosen": [True, "auto"]}})
    logs = {"5": [-3.0, -3.1, -2.9], "6": [-4.0, -4.1, -3.9], "7": [-4.0, -4.1, -3.9], "8": [-5.0, -5.1, -4.9]}
    new_profile = {**fitted, "selection": {"chosen": [True, "auto"]}, "budget_errors": {k: -1.0 for k in logs},
                   "budget_logs": logs, "budget_trend_caps": {"8": 0.0}}
    assert ETCPlus(new_profile, calls=7).calls == 6  # not clearly closer than 6: runs its plan
    new = _save(tmp_path / "new.json", new_profile)
    folders = [_bench(tmp_path / "a", old, [0, 1]), _bench(tmp_path / "b", old, [2, 3])]
    case = module.read_off(new, folders)
    assert case["model"] == "m" and case["steps"] == 20 and case["benched_profile"] == str(old)
    assert {b: p["benched_as"] for b, p in case["plans"].items()} == {"5": 5, "6": 6, "7": 6, "8": None}
    assert case["changed"] == [7] and case["unbenched"] == [8]  # 8 runs with a trend cap no bench ran
    assert case["new"]["ladder_psnr"] == {"5": 45.75, "6": 46.75, "7": 46.75}
    assert case["old"]["ladder_psnr"]["7"] == 47.75 and case["new"]["worst_drop"] == 0.0
    text = module.markdown([case])
    assert "| 7 -> 6 |" in text and "| 8 |" in text and "47.75" not in text and "7:46.8 (47.8)" in text
    # a bench of the new profile itself on the same images fills budget 8 and checks what was read off at 6
    anew = _bench(tmp_path / "c", new, [0, 1, 2, 3], budgets=(6, 8), shift=0.25)
    filled = module.read_off(new, folders + [anew])
    assert filled["plans"]["8"]["benched_as"] == "own" and filled["unbenched"] == [] and filled["benched_new"] == [6, 8]
    assert filled["new"]["ladder_psnr"]["8"] == 48.75 + 0.25 and filled["new"]["ladder_psnr"]["6"] == 46.75
    assert filled["read_off_gap_db"] == {"images": 8, "mean": 0.25, "max": 0.25}
    assert filled["plans"]["8"]["images"] == [8, 8]
    part = module.read_off(new, folders + [_bench(tmp_path / "d", new, [0, 1], budgets=(8,))])
    assert part["plans"]["8"]["images"] == [4, 8] and "benched anew: 8 (4 of 8 images)" in module.markdown([part])
    assert "benched anew: 8" in module.markdown([filled]) and "mean |difference| 0.25 dB" in module.markdown([filled])


def test_profiles_of_different_fits_are_not_read_off(tmp_path, fitted):
    module = load_script("etc_plus_final_plans")
    old = _save(tmp_path / "old.json", {**fitted, "selection": {"chosen": [True, "auto"]}})
    new = _save(tmp_path / "new.json", {**fitted, "selection": {"chosen": [False, "auto"]}})
    case = module.read_off(new, [_bench(tmp_path / "a", old, [0, 1])])
    assert case["fits_differ"].startswith("another candidate chosen") and "new" not in case
    moved = [[*s[:3], s[3] * 1.05] for s in fitted["segments"]]
    other = _save(tmp_path / "other.json", {**fitted, "segments": moved, "selection": {"chosen": [True, "auto"]}})
    assert "5.0 % apart" in module.read_off(other, [tmp_path / "a"])["fits_differ"]
    assert "not read off" in module.markdown([case])


def test_a_case_without_folders_or_with_two_benched_profiles_is_refused(tmp_path, fitted, monkeypatch):
    module = load_script("etc_plus_final_plans")
    one = _save(tmp_path / "one.json", {**fitted, "selection": {"chosen": [True, "auto"]}})
    two = _save(tmp_path / "two.json", {**fitted, "selection": {"chosen": [True, "auto"]}})
    new = _save(tmp_path / "new.json", {**fitted, "selection": {"chosen": [True, "auto"]}})
    with pytest.raises(SystemExit, match="benches of one other profile at one step count"):
        module.read_off(new, [_bench(tmp_path / "a", one, [0]), _bench(tmp_path / "b", two, [1])])
    monkeypatch.setattr("sys.argv", ["etc_plus_final_plans.py", "--case", str(new)])
    with pytest.raises(SystemExit, match="give the bench folders of the profile it stands beside"):
        module.main()
