"""scripts/compare_calibrations.py: two calibrations of one grid side by side (front differences, cost, checks)."""

import json

from repo_scripts import load_script


def _case(steps, fronts, generations, within=None, drop=None):
    rows = [] if within is None else [{"method": "etc-plus-tol", "within": within}]
    return {"model": "m", "scheduler": "euler", "steps": steps, "rows": rows,
            "fronts": {"etc-plus": fronts, "fixed": {"2x": 1.0}},
            "extra": {"etc-plus": {"cost": {"generations": generations}, "worst_drop": drop}}}


def _compare(tmp_path, capsys, first, second, *options):
    """What the script prints for the two grids ``first`` and ``second`` (written as JSON files)."""
    paths = []
    for name, data in (("a", first), ("b", second)):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(data))
    load_script("compare_calibrations").main([str(p) for p in paths] + list(options))
    return capsys.readouterr().out


def test_the_table_gives_the_second_front_and_its_difference_on_the_cases_both_hold(tmp_path, capsys):
    first = [_case(20, {"2x": 80.0, "3x": 70.0, "4x": None}, 900), _case(28, {"2x": 90.0}, 950)]
    second = [_case(20, {"2x": 79.0, "3x": 70.4, "4x": 60.0}, 35, within=0.93, drop=1.25)]
    out = _compare(tmp_path, capsys, first, second)
    assert "| m, euler, 20 | 900 -> 35 | 79.0 (-1.0) | 70.4 (+0.4) | n/a | 93 % | 1.2 dB |" in out
    assert "28" not in out.split("\n\n")[0].split("\n", 2)[2]  # a case only one file holds is left out
    assert "2 points: 1 within 0.5 dB or above, 2 within 1 dB; mean -0.30 dB" in out


def test_the_summary_counts_the_checks_each_side_misses_and_steps_selects_cases(tmp_path, capsys):
    first = [_case(20, {"2x": 80.0}, 900, within=0.85, drop=0.2), _case(50, {"2x": 90.0}, 950, within=1.0, drop=0.0)]
    second = [_case(20, {"2x": 81.0}, 30, within=0.95, drop=1.5), _case(50, {"2x": 89.0}, 28, within=0.8, drop=2.0)]
    out = _compare(tmp_path, capsys, first, second)
    assert ("first: tolerance under 90 % in 1 of 2 cases, one more call costing over 1 dB in 0 of 2; "
            "second: tolerance under 90 % in 1 of 2 cases, one more call costing over 1 dB in 2 of 2") in out
    out = _compare(tmp_path, capsys, first, second, "--steps", "50")
    assert "| m, euler, 50 |" in out and "| m, euler, 20 |" not in out and "1 points:" in out
