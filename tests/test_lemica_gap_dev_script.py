"""scripts/lemica_gap_dev.py: the profile variants it runs and the effects it reads back."""

import json

from repo_scripts import load_script


def _saved():
    return {"settings": {"profile": {"segments": [[-1, 0, 2, 0.1], [0, 2, 4, 0.2]], "budget_errors": {"4": -3.0},
                                     "budget_logs": {"4": [-3.0]}, "budget_fits": {"fits": {}}}}}


def test_a_variant_drops_the_budget_records_and_leaves_the_saved_profile_as_it_was():
    module = load_script("lemica_gap_dev")
    saved = _saved()
    plain = module.variant(saved)["settings"]["profile"]
    assert "budget_errors" not in plain and "budget_logs" not in plain and "budget_fits" not in plain
    assert plain["segments"] == saved["settings"]["profile"]["segments"]
    assert "budget_errors" in saved["settings"]["profile"]
    pinned = module.variant(saved, [0, 2, 4])["settings"]["profile"]
    assert pinned["pinned_steps"] == [0, 2, 4]
    powered = module.variant(saved, power=8.0)["settings"]["profile"]
    assert [round(s[3], 12) for s in powered["segments"]] == [round(0.1 ** 4, 12), round(0.2 ** 4, 12)]


def test_summary_reads_each_effect_over_the_budgets(tmp_path):
    module = load_script("lemica_gap_dev")
    psnr = {"A": 30.0, "A0": 31.0, "B": 33.0, "C": 32.0, "P8": 30.0}
    rows = [{"case": "dpm-20", "variant": v, "calls": calls, "prompt": "p", "seed": 6, "psnr": p + calls,
             "steps": []} for v, p in psnr.items() for calls in (5, 10)]
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = module.summary([str(path)])
    assert "(C - A): mean +2.00 dB over 2 budgets, higher at 2, lower at 0" in text
    assert "(B - A0): mean +2.00 dB over 2 budgets, higher at 2, lower at 0" in text
    assert "(C - B): mean -1.00 dB over 2 budgets, higher at 0, lower at 2" in text
    assert "to the power 8 (P - A0): mean -1.00 dB" in text
