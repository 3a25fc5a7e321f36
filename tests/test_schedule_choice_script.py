"""scripts/schedule_choice_dev.py: what each rule for choosing a searched schedule picks, read off the benches."""

import pytest
from repo_scripts import load_script


def _check(plan, etc, linear, reuse, kept=None):
    return {"plan": plan, "etc": etc, "linear": linear, "reuse": reuse, "kept": kept}


def test_each_rule_picks_from_the_held_out_means_and_is_scored_on_the_development_images():
    module = load_script("schedule_choice_dev")
    dev = {(10, "plan"): 40.0, (10, "etc"): 44.0, (10, "linear"): 39.0, (10, "reuse"): 41.0,
           (5, "plan"): 30.0, (5, "etc"): 28.0, (5, "linear"): 27.0, (5, "reuse"): 29.0}
    checks = {"10": _check(-3.0, -3.1, -2.0, -2.5),  # etc lower on average, not kept: the plan serves
              "5": _check(-2.0, -1.0, -1.0, -2.2, kept="reuse")}  # reuse kept (by two standard errors)
    table = module.picks_table([("euler:20", dev, checks)])
    rows = [line for line in table.splitlines() if line.startswith("| euler:20")]
    # the bar, the lowest mean, the lowest mean with reuse held to the bar; then the best on the images
    assert rows[0].split(" | ")[1:] == ["10", "-3.00 / -3.10 / -2.00 / -2.50", "plan 40.0", "etc 44.0", "etc 44.0",
                                         "etc 44.0 |"]
    assert rows[1].split(" | ")[3:] == ["reuse 29.0", "reuse 29.0", "reuse 29.0", "plan 30.0 |"]
    unkept = module.picks_table([("euler:20", dev, {**checks, "5": {**checks["5"], "kept": None}})])
    assert [line for line in unkept.splitlines() if line.startswith("| euler:20")][1].split(" | ")[3:] == \
        ["plan 30.0", "reuse 29.0", "plan 30.0", "plan 30.0 |"]  # reuse lowest on average, not kept: the plan
    assert "- two standard errors (as calibrated): mean 34.50 dB over 2 budgets; against the calibrated rule " \
           "0 higher, 0 lower" in table
    assert "- lowest held-out mean: mean 36.50 dB over 2 budgets; against the calibrated rule 1 higher, " \
           "0 lower" in table
    assert "- lowest mean, reuse at two standard errors: mean 36.50 dB" in table


def test_an_unknown_case_is_refused_in_one_line(monkeypatch):
    module = load_script("schedule_choice_dev")
    monkeypatch.setattr("sys.argv", ["schedule_choice_dev.py", "--cases", "heun:28@9", "--rules"])
    with pytest.raises(SystemExit, match=r"unknown case 'heun:28@9'; the scenes cases: euler:20 unipc:20"):
        module.main()


def test_the_rules_are_scored_against_the_check_as_it_was_when_the_case_was_benched(monkeypatch, tmp_path):
    module = load_script("schedule_choice_dev")
    (tmp_path / "results.json").write_text("{}")
    (tmp_path / module.CHECK).write_text('{"10": {"plan": -3.0, "etc": -3.1, "linear": -2.0, "reuse": -2.5, '
                                         '"kept": "etc"}}')
    monkeypatch.setattr(module, "folder", lambda case, skip=0: tmp_path)
    monkeypatch.setattr(module, "development_psnr", lambda case, skip=0: {(10, "plan"): 40.0, (10, "etc"): 44.0,
                                                                          (10, "linear"): 39.0, (10, "reuse"): 41.0})
    monkeypatch.setattr(module, "twin_profile", lambda case: pytest.fail("read the twin profile, recalibrated since"))
    rows = [line for line in module.rules_table(["euler:20"]).splitlines() if line.startswith("| euler:20")]
    assert rows[0].split(" | ")[3] == "etc 44.0"  # kept as the snapshot says
