"""scripts/profile_pair_dev.py: two profiles of a scenes case compared on development captions."""

import json

import pytest

from repo_scripts import load_script


def _records(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _row(case, profile, calls, seed, psnr, real):
    return {"case": case, "profile": profile, "calls": calls, "prompt": "p", "seed": seed, "psnr": psnr,
            "real_calls": real}


def test_summary_gives_each_budget_and_the_mean_change_over_budgets(tmp_path):
    module = load_script("profile_pair_dev")
    rows = [_row("dpm-20", "old", 6, s, 30.0, 5) for s in (0, 1)] + [_row("dpm-20", "new", 6, s, 32.0 + s, 6)
                                                                       for s in (0, 1)]
    rows += [_row("dpm-20", "old", 10, 0, 43.0, 10), _row("dpm-20", "new", 10, 0, 42.0, 9)]
    text = module.summary([_records(tmp_path / "a.jsonl", rows)])
    assert "| dpm-20 | 6 | 2 | 30.00 (5.0) | 32.50 (6.0) | +2.50 |" in text
    assert "| dpm-20 | 10 | 1 | 43.00 (10.0) | 42.00 (9.0) | -1.00 |" in text
    assert "Change: mean +0.75 dB over 2 budgets, higher at 1, lower at 1." in text


def test_measuring_needs_both_profiles_and_an_output(monkeypatch, capsys):
    module = load_script("profile_pair_dev")
    monkeypatch.setattr("sys.argv", ["profile_pair_dev.py", "dpm-20", "old.json"])
    with pytest.raises(SystemExit):
        module.main()
    assert "give CASE OLD.json NEW.json and --out RECORDS.jsonl" in capsys.readouterr().err
