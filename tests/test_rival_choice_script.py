"""scripts/rival_choice_dev.py: LeMiCa's predictor per budget chosen on development images, then read on the
evaluation images."""

import json

from repo_scripts import load_script


def _row(method, psnr, calls, steps=20, **setting):
    return {"kind": "run", "method": method, "setting": {"calls": calls, **setting}, "pairs": 4,
            "speedup_nfe": steps / calls, "psnr": psnr}


def _write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"summary": rows}))


def test_each_budget_keeps_the_predictor_best_on_development_images_of_the_benched_profile(tmp_path, monkeypatch):
    module = load_script("rival_choice_dev")
    bench = tmp_path / "solvers-20" / "unipc" / "results.json"
    peers = tmp_path / "solvers-20" / "unipc-peers"
    profile = peers / "profiles" / "scenes_20steps_unipc_lemica.json"
    _write(profile, [])
    ours = [_row("etc-plus", 40.0, 10, profile="p.json"), _row("etc-plus", 30.0, 5, profile="p.json")]
    _write(bench, ours)
    # on the evaluation images, linear is best at 10 calls and reuse at 5
    evaluation = [_row("lemica", 45.0, 10, predictor="linear"), _row("lemica", 41.0, 10, predictor="etc"),
                  _row("lemica", 25.0, 5, predictor="linear"), _row("lemica", 28.0, 5, predictor="reuse")]
    _write(peers / "results.json", evaluation)
    # on the development images, etc is best at 10 calls and reuse at 5; another profile's rows are not read
    dev = tmp_path / "dev" / "unipc-20" / "results.json"
    _write(dev, [_row("lemica", 50.0, 10, predictor="etc", profile=str(profile)),
                 _row("lemica", 49.0, 10, predictor="linear", profile=str(profile)),
                 _row("lemica", 60.0, 10, predictor="linear", profile="other_lemica.json"),
                 _row("lemica", 30.0, 5, predictor="reuse", profile=str(profile)),
                 _row("lemica", 29.0, 5, predictor="linear", profile=str(profile))])
    assert module.dev_choice(str(dev), str(profile)) == {10: "etc", 5: "reuse"}
    monkeypatch.setattr(module, "DEV", str(tmp_path / "dev"))
    row = module.case_rows("scenes", "unipc", 20, str(bench), "")
    assert row[3] == "5: reuse, 10: etc"
    assert row[4].split(" / ")[0] == "-5.0 (lemica)"  # 2x: ETC+ 40 against LeMiCa's envelope, linear's 45
    assert row[5].split(" / ")[0] == "-1.0 (lemica)"  # against the development choice, etc's 41
    assert row[5].split(" / ")[2] == "+2.0 (lemica)"  # 4x: reuse's 28 in both
    assert row[4].split(" / ")[2] == "+2.0 (lemica)"


def test_a_case_without_a_development_bench_is_not_measured(tmp_path, monkeypatch):
    module = load_script("rival_choice_dev")
    bench = tmp_path / "solvers-20" / "unipc" / "results.json"
    _write(bench, [_row("etc-plus", 40.0, 10)])
    _write(tmp_path / "solvers-20" / "unipc-peers" / "results.json", [_row("lemica", 45.0, 10, predictor="etc")])
    monkeypatch.setattr(module, "DEV", str(tmp_path / "dev"))
    assert module.case_rows("scenes", "unipc", 20, str(bench), "") is None
