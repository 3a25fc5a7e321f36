"""scripts/paired_settings.py: a run setting's effect, from benches that ran each setting with and without it."""

import json

import pytest

from repo_scripts import load_script


def _summary(folder, rows):
    folder.mkdir(parents=True, exist_ok=True)
    summary = [{"kind": "reference", "method": "none", "setting": {}, "psnr": None, "nfe": 40.0}]
    summary += [{"kind": "run", "method": m, "setting": s, "psnr": p, "nfe": n, "classifier_prompt_match": 0.9}
                for m, s, p, n in rows]
    (folder / "results.json").write_text(json.dumps({"summary": summary}))
    return str(folder)


def test_each_setting_is_paired_with_the_same_one_without_the_key(tmp_path):
    module = load_script("paired_settings")
    a = _summary(tmp_path / "a", [("etc-plus", {"profile": "p.json", "calls": 10}, 40.0, 20.0),
                                  ("etc-plus", {"profile": "p.json", "calls": 10, "spike": 1e9}, 41.0, 20.0),
                                  ("etc-plus", {"profile": "p.json", "calls": 5}, 30.0, 10.0),
                                  ("etc-plus", {"profile": "p.json", "calls": 5, "spike": 1e9}, 29.5, 10.0),
                                  ("etc-plus", {"profile": "p.json", "calls": 7, "spike": 1e9}, 99.0, 14.0),  # no pair
                                  ("lemica", {"calls": 10}, 50.0, 20.0)])
    b = _summary(tmp_path / "b", [("etc-plus", {"calls": 8}, 35.0, 16.0),
                                  ("etc-plus", {"calls": 8, "spike": 1e9}, 35.0, 16.0)])
    text = module.table([a, b], "spike", "etc-plus")
    assert "| without spike | spike=1000000000.0 |" in text
    assert "| calls=10 | 40.00 dB, 20.0 NFE, 90.0 % | 41.00 dB, 20.0 NFE, 90.0 % | +1.00 |" in text
    assert text.rstrip().endswith("3 pairs: mean change +0.17 dB with spike=1000000000.0, higher at 1, lower at 1.")
    with pytest.raises(SystemExit, match="no lemica settings with and without spike"):
        module.table([a], "spike", "lemica")


def test_a_grid_variant_is_read_as_its_front_minus_etc_plus_front_per_model(tmp_path, capsys, monkeypatch):
    module = load_script("paired_settings")
    cases = [{"model": "digits", "scheduler": "unipc", "steps": 20,
              "fronts": {"etc-plus": {"2x": 50.0, "3x": 40.0, "4x": None},
                         "etc-plus-nospike": {"2x": 51.0, "3x": 39.0, "4x": 30.0}}},
             {"model": "gmm-flow", "scheduler": "dpm", "steps": 28,
              "fronts": {"etc-plus": {"2x": 80.0, "3x": 70.0, "4x": 60.0},
                         "etc-plus-nospike": {"2x": 80.0, "3x": 70.0, "4x": 60.0}}}]
    path = tmp_path / "grid.json"
    path.write_text(json.dumps(cases))
    text = module.grid_table([str(path)], "etc-plus-nospike")
    assert "| digits | unipc | 20 | 50.0 / 40.0 | 51.0 / 39.0 | +1.0 / -1.0 |" in text
    assert "- digits: 2 pairs: mean change +0.00 dB with etc-plus-nospike, higher at 1, lower at 1; worst -1.0" in text
    assert "- gmm-flow: 3 pairs: mean change +0.00 dB with etc-plus-nospike, higher at 0, lower at 0" in text
    path.write_text(json.dumps([{**cases[0], "fronts": {"etc-plus": cases[0]["fronts"]["etc-plus"]}}]))
    with pytest.raises(SystemExit, match="digits unipc 20 has no etc-plus-nospike rows"):
        module.grid_table([str(path)], "etc-plus-nospike")
    monkeypatch.setattr("sys.argv", ["paired_settings.py", "--grid", str(path)])
    with pytest.raises(SystemExit) as e:
        module.main()
    assert e.value.code == 2
    assert "give bench folders with --key, or --grid runs with --variant" in capsys.readouterr().err
