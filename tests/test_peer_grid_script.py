"""scripts/peer_grid.py and etc_plus_peer_benches.py: every other step method at its declared settings, on a bare
denoiser and as the bench's settings, and the margin table reading a case's peers beside its bench."""

import json

import pytest
import torch
from repo_scripts import load_script

from etcdiff import closed_form as hm
from etcdiff.bench.sweep import build_grid
from etcdiff.registry import get_method, methods_of_kind

OWN = {"etc-plus", "none", "fixed", "ertacache", "meancache"}  # ETC+ itself and the methods every bench runs


def test_the_peers_are_every_other_step_method_of_the_registry_with_settings_it_takes():
    grid = load_script("peer_grid")
    declared = grid.all_settings(28)
    assert {m for m, _ in declared} == set(methods_of_kind("step")) - OWN
    for method, settings in declared:
        get_method(method).check_settings(settings)
    assert [s["calls"] for m, s in declared if m == "lemica" and s["predictor"] == "etc"] == [14, 11, 9, 8, 7, 6]
    runs = build_grid(None, grid.bench_settings(declared))
    assert [(r.method, dict(r.setting)) for r in runs] == declared
    piped = grid.pipeline_settings(50)
    assert {m for m, _ in piped} == {"etc", "lemica", "sencache"}
    assert sorted({s["calls"] for m, s in piped if m == "lemica"}) == [12, 17, 25]


def test_the_peers_run_on_a_bare_denoiser_and_a_refusal_is_said_not_dropped(monkeypatch):
    import etcdiff

    grid = load_script("peer_grid")
    model, sched, _ = hm.gmm_ddim()
    noises = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(100))
    make = etcdiff.make_policy

    def refuse(method, **settings):
        if method == "precisecache":
            raise ValueError("precisecache: not here")
        return make(method, **settings)

    monkeypatch.setattr(etcdiff, "make_policy", refuse)
    out = list(grid.policies(model, sched, noises, 12, lambda z: z))
    assert {m for m, _, _ in out} == {m for m, _ in grid.all_settings(12)}
    # one line for the method, and its other three settings not tried
    assert [(label, why) for m, label, why in out if m == "precisecache"] == [("refused", "precisecache: not here")]
    ran = [(m, label, pol) for m, label, pol in out if label != "refused"]
    assert len(ran) == len(grid.all_settings(12)) - 4
    lemica = [pol for m, _, pol in ran if m == "lemica"]
    assert [pol.calls for pol in lemica[:len(grid.budgets(12))]] == grid.budgets(12)
    etc = next(label for m, label, _ in ran if m == "etc")
    assert etc.endswith("(calibrated)")


def _write_bench(folder, rows):
    """A bench folder whose results.json summarises ``rows`` (method, setting, speedup, PSNR)."""
    folder.mkdir()
    summary = [{"kind": "run", "method": m, "setting_label": lab, "speedup_nfe": s, "psnr": p} for m, lab, s, p in rows]
    (folder / "results.json").write_text(json.dumps({"summary": summary}))


def _one_case(tmp_path, monkeypatch, rows):
    """The margin script with one pipeline case, scenes UniPC 20, whose bench (``tmp_path/unipc``) has ``rows``."""
    margins = load_script("etc_plus_margins")
    _write_bench(tmp_path / "unipc", rows)
    monkeypatch.setattr(margins, "BENCHES", [("scenes", "unipc", 20, str(tmp_path / "unipc" / "results.json"))])
    monkeypatch.setattr(margins, "MORE", {})
    return margins


def test_the_margin_table_reads_a_cases_peers_beside_its_bench(tmp_path, monkeypatch):
    margins = _one_case(tmp_path, monkeypatch, [("etc-plus", "calls=10", 2.0, 50.0), ("ertacache", "t=0.2", 2.0, 45.0)])
    peers = tmp_path / "unipc-peers"
    assert margins.rows(str(tmp_path / "no-grid.json"), str(tmp_path / "no-ladder.json"))[0][3] == "+5.0 (ertacache)"
    _write_bench(peers, [("lemica", "calls=10 predictor=etc", 2.0, 51.0)])
    row = margins.rows(str(tmp_path / "no-grid.json"), str(tmp_path / "no-ladder.json"))[0]
    assert row[3] == "-1.0 (lemica)"
    data = json.loads((peers / "results.json").read_text())  # a setting run on fewer images is left out
    data["summary"] = [{**data["summary"][0], "pairs": 16},
                       {**data["summary"][0], "setting_label": "calls=9", "psnr": 60.0, "pairs": 2}]
    (peers / "results.json").write_text(json.dumps(data))
    row = margins.rows(str(tmp_path / "no-grid.json"), str(tmp_path / "no-ladder.json"))[0]
    assert row[3] == "-1.0 (lemica)"
    assert row[-1].endswith(str(peers / "results.json"))


def test_the_peer_benches_run_on_the_benchs_own_images_and_refuse_others(tmp_path):
    script = load_script("etc_plus_peer_benches")
    bench = tmp_path / "ddim-20steps" / "results.json"
    bench.parent.mkdir()
    prompts = [line.strip() for line in open("docs/unet-digits/evaluation_prompts.txt") if line.strip()]
    bench.write_text(json.dumps({"config": {"prompts": prompts, "seeds": [0, 1], "steps": 20}}))
    cmds = script.commands("unet-digits", "ddim", 20, str(bench))
    assert [c[1] for c in cmds] == ["calibrate"] * 3 + ["bench"]
    assert cmds[-1][cmds[-1].index("--seeds") + 1] == "0,1"
    assert cmds[-1][cmds[-1].index("--out") + 1] == str(tmp_path / "ddim-20steps-peers")
    assert "--scheduler" not in cmds[-1]
    bench.write_text(json.dumps({"config": {"prompts": prompts[:2], "seeds": [0], "steps": 20}}))
    try:
        script.commands("unet-digits", "ddim", 20, str(bench))
    except SystemExit as e:
        assert "own images" in str(e)
    else:
        raise AssertionError("a bench on other prompts was not refused")


def test_an_unknown_case_is_refused_with_the_cases_there_are(monkeypatch):
    import pytest

    script = load_script("etc_plus_peer_benches")
    monkeypatch.setattr("sys.argv", ["etc_plus_peer_benches.py", "--cases", "scenes:euler:33", "--dry-run"])
    with pytest.raises(SystemExit, match=r"unknown case among \['scenes:euler:33'\]; the benches: .*scenes:euler:28"):
        script.main()


def test_the_margin_table_of_a_variant_reads_etc_plus_from_its_twin_bench(tmp_path, monkeypatch):
    margins = _one_case(tmp_path, monkeypatch, [("etc-plus", "calls=10", 2.0, 50.0), ("lemica", "calls=10", 2.0, 52.0)])
    twin = tmp_path / "unipc-schedules"
    args = (str(tmp_path / "no-grid.json"), str(tmp_path / "no-ladder.json"))
    missing = margins.rows(*args, variant="schedules")[0]
    assert missing[3] == "not measured with schedules"
    assert missing[-1].endswith("unipc-schedules/results.json (missing)")
    _write_bench(twin, [("etc-plus", "calls=10", 2.0, 53.5)])
    row = margins.rows(*args, variant="schedules")[0]
    assert row[3] == "+1.5 (lemica)" and row[-1].endswith(str(twin / "results.json"))
    assert row[6:8] == ["not measured", "not measured"]  # the ladder's checks are the benched profile's
    assert margins.rows(*args)[0][3] == "-2.0 (lemica)"  # without the variant: the case's own ETC+
    ladder = tmp_path / "twin-ladder.json"  # the twin profiles' own ladder, as etc_plus_ladder_seeds.py writes it
    ladder.write_text(json.dumps([{"model": "demo", "scheduler": "UniPCMultistepScheduler", "steps": 20,
                                   "within": 0.9375, "worst_drop": 1.23}]))
    assert margins.rows(args[0], str(ladder), variant="schedules")[0][6:8] == ["94 %", "1.2 dB"]
    assert margins.ladder_of("schedules").endswith("etc_plus_ladder_seeds_schedules.json")
    assert margins.ladder_of("") == margins.LADDER


def test_the_margin_table_of_a_variant_counts_only_grid_cases_calibrated_with_it(tmp_path, monkeypatch):
    margins = load_script("etc_plus_margins")
    monkeypatch.setattr(margins, "BENCHES", [])

    def case(steps, extra):
        rows = [{"method": "etc-plus-tol", "within": 1.0}]
        fronts = {"etc-plus": {"2x": 50.0, "3x": 40.0, "4x": 30.0}, "lemica": {"2x": 49.0, "3x": 41.0, "4x": None}}
        return {"model": "digits", "scheduler_class": "UniPCMultistepScheduler", "steps": steps, "rows": rows,
                "fronts": fronts, "extra": {"etc-plus": extra}}

    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps([case(20, {"worst_drop": 0.2, "schedule_check": {}}), case(28, {"worst_drop": 0.1})]))
    rows = margins.rows(str(grid), str(tmp_path / "no-ladder.json"), variant="schedules")
    assert rows[0][3:8] == ["+1.0 (lemica)", "-1.0 (lemica)", "30.0 dB (no other method reaches it)", "100 %", "0.2 dB"]
    assert rows[1][3] == "not measured with schedules" and rows[1][-1].endswith("(ETC+ not calibrated with it)")
    assert margins.rows(str(grid), str(tmp_path / "no-ladder.json"))[1][3] == "+1.0 (lemica)"


def test_the_grid_refuses_an_unknown_scheduler_in_one_line():
    solvers = load_script("etc_plus_solvers")
    with pytest.raises(ValueError, match="unknown scheduler 'ddim': euler .* unipc or dpm"):
        solvers.scheduler("gmm-ddim", "ddim")  # it ran DPM-Solver++ 2M before
