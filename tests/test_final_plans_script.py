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


def _runs(path, rows, steps=20):
    """A bench folder whose runs are ``(method, setting, prompt, seed, calls, psnr)``."""
    path.mkdir()
    runs = [{"kind": "run", "method": m, "setting": setting, "setting_label": json.dumps(setting), "prompt": p,
             "seed": s, "nfe": n, "ref_nfe": steps, "psnr": v} for m, setting, p, s, n, v in rows]
    (path / "results.json").write_text(json.dumps({"config": {"model": "m", "steps": steps}, "runs": runs}))
    return path


def test_the_final_plans_margins_read_both_ladders_and_the_other_methods_on_the_same_images(tmp_path, monkeypatch):
    """Each budget of the new profile is read where its plan ran (a smaller budget of the old profile, or a bench of
    its own); the other methods come from the case's bench, on the images it shares with the ladder folders."""
    module = load_script("etc_plus_final_plans_margins")
    old, new = str(tmp_path / "old.json"), str(tmp_path / "new.json")
    images = [(p, s) for p in "xy" for s in (0, 1)]
    ladder = _runs(tmp_path / "ladder", [("etc-plus", {"profile": old, "calls": c}, p, s, c, 20.0 + 2 * c)
                                         for c in range(5, 11) for p, s in images])
    own = _runs(tmp_path / "own", [("etc-plus", {"profile": new, "calls": 10}, p, s, 10, 45.0) for p, s in images])
    others = [("fixed", {"interval": i}, p, s, 20 // i, 45.0 - 5 * i) for i in (2, 4) for p, s in images]
    others += [("fixed", {"interval": 2}, "z", 0, 10, 0.0),
               ("etc-plus", {"profile": old, "calls": 10}, "x", 0, 10, 99.0)]
    bench = _runs(tmp_path / "bench", others)
    monkeypatch.setattr(module, "BENCHES", [("scenes", "unipc", 20, str(bench / "results.json"))])
    plans = {str(c): {"benched_as": c} for c in range(5, 10)}
    case = {"model": "demo", "scheduler": "UniPCMultistepScheduler", "steps": 20, "folders": [str(ladder), str(own)],
            "benched_profile": old, "profile": new,
            "plans": {**plans, "7": {"benched_as": 6}, "10": {"benched_as": "own"}}}
    got = module.case_margins(case)
    assert got["images"] == 4 and got["seeds"] == [0, 1]  # the bench's image "z" is not in the ladder folders
    assert got["old"]["2x"] == 40.0 and got["new"]["2x"] == 45.0  # 10 calls: the old bench, the new one's own
    assert got["old"]["4x"] == got["new"]["4x"] == 30.0
    assert got["best_other"]["2x"] == {"psnr": 35.0, "method": "fixed"}  # etc-plus rows of the bench left out
    assert got["best_other"]["4x"] == {"psnr": 25.0, "method": "fixed"} and got["missing"] == {"old": [], "new": []}
    assert module.cell(got, "2x") == "+5.0 / +10.0 (fixed; +5.0)"
    case["plans"]["8"] = {"benched_as": None}  # a plan no bench ran is left out and listed
    assert module.case_margins(case)["missing"] == {"old": [], "new": [8]}
    assert "new: 8" in module.markdown([module.case_margins(case)])
    monkeypatch.setattr(module, "BENCHES", [("scenes", "unipc", 20, str(tmp_path / "none" / "results.json"))])
    with pytest.raises(SystemExit, match="no bench"):
        module.case_margins(case)
