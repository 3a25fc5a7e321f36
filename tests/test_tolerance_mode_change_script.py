"""scripts/tolerance_mode_change.py: the tolerance mode before and after a change, case by case."""

from repo_scripts import load_script


def _case(steps, within, calls, psnr, extra=None):
    return {"model": "gmm-flow", "scheduler_class": "UniPCMultistepScheduler", "steps": steps,
            "rows": [{"method": "etc-plus", "calls": 5.0, "psnr": 60.0},
                     {"method": "etc-plus-tol", "within": within, "calls": calls, "psnr": psnr}],
            "extra": {"etc-plus": extra or {}}}


def test_each_case_shows_the_tolerance_mode_before_and_after_and_what_calibration_checked():
    module = load_script("tolerance_mode_change")
    check = {"met": True, "passes": [{"scale": 1.0, "calls": 7.5, "edge": 1.2, "within": 0.8},
                                     {"scale": 0.15, "calls": 5.15, "edge": 0.5, "within": 1.0}],
             "budgets": [{"calls": 5, "within": 1.0, "edge": 0.18}, {"calls": 4, "within": 0.95, "edge": 0.161}]}
    after = [_case(20, 1.0, 4.0, 66.5, {"tolerance_check": check, "tolerance_scale": 0.15}), _case(28, 0.9, 5.0, 50.0)]
    table = module.rows([_case(20, 0.9, 4.9, 56.3)], after)
    assert table[0][3:] == ["90 % / 4.90 / 56.3", "100 % / 4.00 / 66.5",
                            "5.15 calls at 0.15; budgets 5: 100 % / 0.18, 4: 95 % / 0.16"]
    assert table[1][3:] == ["not measured", "90 % / 5.00 / 50.0", "not recorded"]  # not in the first grid
    unmet = {"met": False, "passes": [{"scale": 0.05, "edge": 1.1, "within": 0.9}], "budgets": []}
    assert module.checked(_case(20, 1.0, 4.0, 66.0, {"tolerance_check": unmet, "tolerance_scale": 0.05})) == (
        "no scale held (1 pass); budgets none tried")
    assert "| gmm-flow | UniPCMultistepScheduler | 20 | 90 % / 4.90 / 56.3 |" in module.markdown(table)
