"""scripts/compare_calibrations.py: two calibrations of one grid side by side (front differences, cost, checks)."""

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "compare_calibrations.py"


def _script():
    spec = importlib.util.spec_from_file_location("compare_calibrations", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _case(steps, fronts, generations, within=None, drop=None):
    rows = [] if within is None else [{"method": "etc-plus-tol", "within": within}]
    return {"model": "m", "scheduler": "euler", "steps": steps, "rows": rows,
            "fronts": {"etc-plus": fronts, "fixed": {"2x": 1.0}},
            "extra": {"etc-plus": {"cost": {"generations": generations}, "worst_drop": drop}}}


def test_the_table_gives_the_second_front_and_its_difference_on_the_cases_both_hold(tmp_path, capsys):
    first = [_case(20, {"2x": 80.0, "3x": 70.0, "4x": None}, 900), _case(28, {"2x": 90.0}, 950)]
    second = [_case(20, {"2x": 79.0, "3x": 70.4, "4x": 60.0}, 35, within=0.93, drop=1.25)]
    paths = []
    for name, data in (("a", first), ("b", second)):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(data))
    _script().main([str(p) for p in paths])
    out = capsys.readouterr().out
    assert "| m, euler, 20 | 900 -> 35 | 79.0 (-1.0) | 70.4 (+0.4) | n/a | 93 % | 1.2 dB |" in out
    assert "28" not in out.split("\n\n")[0].split("\n", 2)[2]  # a case only one file holds is left out
    assert "2 points: 1 within 0.5 dB or above, 2 within 1 dB; mean -0.30 dB" in out
