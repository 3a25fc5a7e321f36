"""scripts/etc_plus_ladder_seeds.py: items 2 and 3 pooled over bench folders of one profile run at other seeds."""

import json

import pytest
from repo_scripts import load_script


def _folder(path, profile, psnr, steps=10):
    """A bench folder whose ladder ran ``psnr[calls][(prompt, seed)]``, with a tolerance-mode run per image."""
    path.mkdir()
    images = sorted({k for row in psnr.values() for k in row})

    def run(calls, image, db):
        setting = {"profile": str(profile), **({} if calls is None else {"calls": calls})}
        return {"kind": "run", "method": "etc-plus", "setting": setting, "prompt": image[0], "seed": image[1],
                "psnr": db}

    runs = [{"kind": "reference", "method": "none", "setting": {}, "prompt": p, "seed": s, "psnr": float("inf")}
            for p, s in images]
    runs += [run(c, k, db) for c, row in psnr.items() for k, db in row.items()]
    runs += [run(None, k, 50.0) for k in images]
    (path / "results.json").write_text(json.dumps({"config": {"model": "m", "steps": steps}, "runs": runs}))
    return path


@pytest.fixture
def profile(tmp_path):
    path = tmp_path / "profile.json"
    path.write_text(json.dumps({"settings": {"profile": {"scheduler": {"class": "UniPCMultistepScheduler"}}}}))
    return path


def test_a_drop_is_pooled_over_the_seeds_with_its_standard_error_over_the_seeds(tmp_path, profile):
    module = load_script("etc_plus_ladder_seeds")
    # seeds 0 and 1: one more call loses 6 dB on both captions at seed 1 and gains 2 at seed 0
    first = _folder(tmp_path / "a", profile, {2: {("x", 0): 30.0, ("y", 0): 30.0, ("x", 1): 34.0, ("y", 1): 34.0},
                                              3: {("x", 0): 32.0, ("y", 0): 32.0, ("x", 1): 28.0, ("y", 1): 28.0}})
    # seeds 2 and 3: it gains 1 dB at both (identical images count as 100 dB)
    second = _folder(tmp_path / "b", profile, {2: {("x", 2): 99.0, ("y", 2): 99.0, ("x", 3): 31.0, ("y", 3): 31.0},
                                               3: {("x", 2): float("inf"), ("y", 2): 100.0, ("x", 3): 32.0,
                                                   ("y", 3): 32.0}})
    ladders = [module.ladder_runs(f) for f in (first, second)]
    assert ladders[0][0] == ladders[1][0] == ("m", str(profile), 10)
    got = module.pooled([ladder for _, ladder in ladders])
    assert got["images"] == 8 and got["seeds"] == [0, 1, 2, 3] and got["worst_drop_at"] == 2
    assert got["worst_drop"] == pytest.approx(0.5)  # (-2 + 6 - 1 - 1) / 4 seeds of two images each
    assert got["worst_drop_by_seed"] == {"0": -2.0, "1": 6.0, "2": -1.0, "3": -1.0}
    assert got["worst_drop_se_seeds"] == pytest.approx(1.85, abs=0.01)  # stdev(-2, 6, -1, -1) / sqrt(4 seeds)
    assert got["over_1db"] == []
    alone = module.pooled([ladders[0][1]])
    assert alone["worst_drop"] == pytest.approx(2.0) and alone["over_1db"] == [2]  # seeds 0-1 alone: over 1 dB


def test_the_tolerance_share_is_pooled_from_each_folders_row_and_a_missing_row_is_an_error(tmp_path, profile):
    module = load_script("etc_plus_ladder_seeds")
    rows = {"d/a": {"within": 1.0, "images": 16}, "d/b": {"within": 0.875, "images": 16}}
    got = module.tolerance([module.Path("d/a/"), module.Path("d/b")], rows)
    assert got == {"within": 30 / 32, "within_images": 30, "tolerance_images": 32}
    with pytest.raises(SystemExit, match="no row in the --tables"):
        module.tolerance([module.Path("d/c")], rows)


def test_the_same_image_in_two_folders_is_refused(tmp_path, profile):
    module = load_script("etc_plus_ladder_seeds")
    one = {2: {("x", 0): 30.0}, 3: {("x", 0): 31.0}}
    ladders = [module.ladder_runs(_folder(tmp_path / name, profile, one))[1] for name in ("a", "b")]
    with pytest.raises(SystemExit, match="in two folders"):
        module.pooled(ladders)


def test_the_table_is_written_with_every_case_and_its_verdicts(tmp_path, profile, monkeypatch, capsys):
    module = load_script("etc_plus_ladder_seeds")
    folder = _folder(tmp_path / "a", profile, {2: {("x", 0): 34.0, ("x", 1): 34.0}, 3: {("x", 0): 31.0,
                                                                                       ("x", 1): 32.0}})
    table = tmp_path / "table.json"
    table.write_text(json.dumps([{"folder": str(folder), "within": 0.5, "images": 2}]))
    monkeypatch.setattr("sys.argv", ["x", str(folder), "--tables", str(table), "--out", str(tmp_path)])
    module.main()
    text = (tmp_path / "etc_plus_ladder_seeds.md").read_text()
    assert "| m | UniPCMultistepScheduler | 10 | 0,1 | 2 | 2.50 ± 0.50 dB (2 -> 3) (over 1 dB) | +3.00 / +2.00 | " \
           "2 -> 3 | 50 % (1 of 2) |" in text
    assert "Tolerance held (at least 90 % within) in 0 of 1 cases; one more call cost over 1 dB on average in 1 of " \
           "1." in text
    assert json.loads((tmp_path / "etc_plus_ladder_seeds.json").read_text())[0]["worst_drop"] == 2.5

