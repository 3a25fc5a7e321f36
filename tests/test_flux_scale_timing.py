"""scripts/flux_scale_timing.py at a tiny size on the CPU: the output files' fields, and call counts that agree
with what each method reports (timings are written, never checked)."""

from __future__ import annotations

import json

import pytest
from repo_scripts import load_script


@pytest.fixture(scope="module")
def script():
    return load_script("flux_scale_timing")


@pytest.fixture(scope="module")
def output(script, tmp_path_factory):
    out = tmp_path_factory.mktemp("flux-scale")
    script.main(["--tiny", "--steps", "8", "--repeats", "1", "--out", str(out)])
    return json.loads((out / "flux_scale_timing.json").read_text()), (out / "flux_scale_timing.md").read_text()


def test_every_method_has_a_row_with_its_fields(output):
    result, md = output
    assert result["image_tokens"] == 16 and result["text_tokens"] == 8 and result["dtype"] == "fp32"
    assert result["config"]["num_layers"] == 1 and result["config"]["num_single_layers"] == 1
    rows = result["rows"]
    assert [r["method"] for r in rows] == ["none", "etc", "etc-plus", "etc-plus", "ertacache"]
    for r in rows:
        for field in ("steps", "seed", "settings", "model_calls", "reported_calls", "computed_steps", "call_reduction",
                      "wall_s_median", "wall_s_iqr", "wall_speedup", "speedup_over_call_reduction", "rel_l2_vs_none",
                      "peak_memory_bytes", "source", "finite"):
            assert field in r, field
        assert r["finite"] and r["wall_s_median"] > 0
        assert r["peak_memory_bytes"] is None  # CPU: no CUDA allocator to ask
        assert f"| 8 | {r['method']} |" in md
    calibrated = [r for r in rows if r["method"] != "none"]
    assert all(r["source"].startswith("calibrated inside this script") and r["generations"] >= 2 for r in calibrated)


def test_call_counts_agree_with_the_method_reports(output):
    rows = output[0]["rows"]
    for r in rows:
        assert r["model_calls"] == r["reported_calls"] == len(r["computed_steps"])
        assert r["call_reduction"] == pytest.approx(8 / r["model_calls"])
    none = rows[0]
    assert none["model_calls"] == 8 and none["rel_l2_vs_none"] == 0.0 and none["wall_speedup"] == 1.0
    plus = [r for r in rows if r["method"] == "etc-plus"]
    assert [r["settings"]["calls"] for r in plus] == [4, 3]  # 8 steps at 2x and 3x
    assert all(r["model_calls"] <= r["settings"]["calls"] for r in plus)
    assert plus[1]["generations"] == plus[0]["generations"] and "shared_with" in plus[1]  # one ETC+ fit per step count


def test_a_replayed_calibration_makes_only_its_two_full_runs(script, tmp_path):
    result = script.main(["--tiny", "--steps", "8", "--repeats", "1", "--warmups", "0", "--etc-plus-replays",
                          "--methods", "none,etc-plus", "--out", str(tmp_path)])
    plus = [r for r in result["rows"] if r["method"] == "etc-plus"]
    assert [r["generations"] for r in plus] == [2, 2] and all(r["replays"] and r["replay_used"] for r in plus)
    assert result["warmups"] == 0 and all(len(r["wall_s_all"]) == 1 for r in result["rows"])
    assert "replays=True" in (tmp_path / "flux_scale_timing.md").read_text()


def test_bad_sizes_are_refused(script, capsys):
    with pytest.raises(SystemExit):
        script.parse(["--tiny", "--resolution", "70"])
    with pytest.raises(SystemExit):
        script.parse(["--tiny", "--methods", "etc"])
    with pytest.raises(SystemExit):
        script.parse(["--tiny", "--warmups", "-1"])
    assert "--warmups at least 0" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="2"):
        script.parse(["--tiny", "--steps", "6"])  # too few for etc's change point: one line, not a traceback
    assert "--steps: etc's change-point search needs at least 8 steps" in capsys.readouterr().err
    assert script.parse(["--tiny", "--steps", "6", "--methods", "none,etc-plus"]).steps == [6]
