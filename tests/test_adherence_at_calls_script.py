"""scripts/adherence_at_calls.py: item 6 of issue 25, ETC+'s prompt adherence against the other step methods at no
more calls, read from the scenes benches (pooled with more seeds where asked)."""

import json

from etcdiff.bench.merge import summarize
from repo_scripts import load_script


def _bench(folder, seeds, settings):
    """A 20-step results.json of two prompts at ``seeds``; ``settings``: (method, {setting}, calls, share of
    objects right)."""
    grid = [{"method": m, "setting": s, "label": " ".join(f"{k}={v}" for k, v in s.items())} for m, s, _, _ in settings]
    runs = [{"kind": "run", "method": g["method"], "setting_label": g["label"], "prompt": p, "seed": seed,
             "psnr": 30.0 + k, "nfe": calls, "ref_nfe": 20, "classifier_prompt_match": match}
            for k, (g, (_, _, calls, match)) in enumerate(zip(grid, settings)) for p in ("a", "b") for seed in seeds]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps({"config": {"grid": grid, "seeds": list(seeds)}, "runs": runs,
                                                     "summary": summarize(runs, grid)}))
    return str(folder / "results.json")


def test_etc_plus_is_set_against_each_method_at_no_more_calls(tmp_path, monkeypatch):
    module = load_script("adherence_at_calls")
    bench = _bench(tmp_path / "case", [0, 1], [("etc-plus", {"calls": 6}, 6, 0.9), ("etc-plus", {"calls": 5}, 4, 0.8),
                                              ("fixed", {"interval": 4}, 5, 0.85), ("fixed", {"interval": 3}, 7, 1.0)])
    _bench(tmp_path / "case-peers", [0, 1], [("lemica", {"calls": 6}, 6, 0.95), ("lemica", {"calls": 4}, 4, 0.7)])
    monkeypatch.setattr(module, "BENCHES", [("scenes", "unipc", 20, bench)])
    rows = module.table()
    three, four = rows
    # 3x: ETC+ 6 calls at 90 %; lemica's 6-call setting keeps 95 % (fixed's 7-call setting makes more calls)
    assert three[2] == "3x" and three[3].startswith("90.0 % (6.0 calls")
    assert three[4].startswith("95.0 % (lemica calls=6") and three[5] == "not met" and three[6] == "4"
    # 4x: calls=5 ran 4 calls; only lemica's 4-call setting makes no more, and keeps fewer objects
    assert four[3].startswith("80.0 % (4.0 calls") and four[4].startswith("70.0 % (lemica calls=4")
    assert four[5] == "met"
    assert module.markdown(rows).rstrip().endswith("met in 1 of 2 cells.")
    more = [("etc-plus", {"calls": 6}, 6, 1.0), ("etc-plus", {"calls": 5}, 4, 0.8), ("fixed", {"interval": 4}, 5, 0.85),
            ("fixed", {"interval": 3}, 7, 1.0)]
    _bench(tmp_path / "case-seeds-2-3", [2, 3], more)
    _bench(tmp_path / "case-peers-seeds-2-3", [2, 3], [("lemica", {"calls": 6}, 6, 0.95),
                                                       ("lemica", {"calls": 4}, 4, 0.7)])
    three = module.table(pool="seeds-2-3")[0]
    assert three[3].startswith("95.0 % (6.0 calls") and three[5] == "met" and three[6] == "8"
    assert module.table(variant="schedules")[0][3] == "not measured with schedules"
