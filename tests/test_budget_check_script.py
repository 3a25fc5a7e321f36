"""scripts/etc_plus_budget_check.py: a profile's own plans beside what calibration measured for its budgets."""

import pytest
from repo_scripts import load_script


def test_the_budget_check_puts_the_profiles_plans_beside_what_calibration_measured():
    module = load_script("etc_plus_budget_check")
    rows = [{"prompt_index": k, "psnr": {"15": 50.0, "16": p16}, "log_error": {"15": -4.0, "16": l16}}
            for k, p16, l16 in ((0, 60.0, -5.0), (3, 49.0, -3.9), (4, 48.0, -3.7))]
    logs = {"15": [-4.2, -4.3], "16": [-4.4, -4.1]}  # calibration, held-out runs 3 and 4: one better, one worse
    got = module.changes(rows, [15, 16], logs, held=[3, 4])
    assert got == [{"from": 15, "to": 16, "runs": 2, "log_change": pytest.approx(0.2), "worse": 2,
                    "psnr_change": -1.5, "psnr_worse": 2, "calibration_log_change": pytest.approx(0.0),
                    "calibration_worse": 1}]  # run 0 was not held out: left out
