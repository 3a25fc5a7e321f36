"""The solver grid's merge: a later run of some methods replaces only those methods' rows in a case."""

import importlib
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def _row(method, calls, psnr):
    return {"method": method, "setting": f"calls={calls}", "calls": float(calls), "max_calls": calls,
            "speedup": 20 / calls, "psnr": psnr, "psnr_min": psnr - 1}


def test_a_later_run_of_some_methods_replaces_their_rows_and_keeps_the_others(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    sys.modules.pop("etc_plus_solvers", None)
    grid = importlib.import_module("etc_plus_solvers")
    tol = {**_row("etc-plus-tol", 9, 40.0), "within": 0.5}
    old_front = {"2x": 25.0, "3x": None, "4x": None}  # an earlier run's etc-plus: a front with no rows
    first = {"model": "m", "scheduler": "euler", "steps": 20, "scheduler_class": "S",
             "fronts": {"etc-plus-old": old_front},
             "rows": [_row("etc-plus", 10, 30.0), tol, _row("ertacache", 10, 35.0)],
             "extra": {"etc-plus": {"worst_drop": 3.0}, "ertacache": {}}}
    later = {"model": "m", "scheduler": "euler", "steps": 20, "scheduler_class": "S", "fronts": {},
             "rows": [_row("etc-plus", 10, 40.0), {**tol, "within": 1.0}], "extra": {"etc-plus": {"worst_drop": 0.0}}}
    other = {**later, "scheduler": "unipc"}
    merged = grid.combined([first, later, other])
    assert len(merged) == 2
    case = merged[0]
    assert sorted((r["method"], r["psnr"]) for r in case["rows"]) == [
        ("ertacache", 35.0), ("etc-plus", 40.0), ("etc-plus-tol", 40.0)]
    assert next(r for r in case["rows"] if r["method"] == "etc-plus-tol")["within"] == 1.0
    assert case["extra"] == {"ertacache": {}, "etc-plus": {"worst_drop": 0.0}}
    assert case["fronts"]["etc-plus"]["2x"] == 40.0 and case["fronts"]["ertacache"]["2x"] == 35.0
    assert case["fronts"]["etc-plus-old"] == old_front


def test_calibration_seeds_keep_one_seeds_noises_and_an_unknown_seed_is_refused(monkeypatch):
    import pytest

    monkeypatch.syspath_prepend(str(SCRIPTS))
    sys.modules.pop("etc_plus_solvers", None)
    grid = importlib.import_module("etc_plus_solvers")
    monkeypatch.setattr(grid, "CALIBRATION_SEEDS", [101])
    assert [seed for _, seed in grid.setup("gmm-flow")["calib"]] == [101]
    monkeypatch.setattr(grid, "CALIBRATION_SEEDS", [7])
    with pytest.raises(SystemExit, match=r"--calibration-seeds \[7\]: gmm-flow calibrates on seeds \[100, 101\]"):
        grid.setup("gmm-flow")
