"""Choosing a fit's variant on held-out calibration runs (etcdiff.calibration.selection)."""

import math

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

import etcdiff
from etcdiff.calibration.selection import (budget_choice, choose_fit, clearly_lower, held_out_runs,
                                           validation_budgets, validation_generations)
from etcdiff.policies import ETCPlus, NoCache
from etcdiff.policies.trajectory import Trajectory


def _record(probed: bool) -> Trajectory:
    tr = Trajectory(outputs=[torch.zeros(1, 2)] * 10, inputs=[torch.zeros(1, 2)] * 10, final=torch.zeros(1, 2))
    tr.probes = {9: [1.0]} if probed else None
    return tr


def test_the_folds_cover_every_unprobed_run_once_and_leave_two_to_fit_on():
    records = [_record(i < 3) for i in range(10)]
    assert held_out_runs(records) == [[3, 4], [5, 6], [7, 8, 9]]
    assert held_out_runs(records[:5]) == [[3, 4]]
    assert held_out_runs(records[:3]) == [] and held_out_runs([_record(False)] * 3) == [[0], [1], [2]]
    assert held_out_runs([_record(False)] * 2) == []
    assert held_out_runs([_record(False)] * 4) == [[0, 1], [2, 3]]
    assert validation_budgets(50) == [10, 12, 17, 25] and validation_budgets(4) == [2]
    assert validation_generations(10, 3, 2, 50) == 7 * (1 + 2 * 4)
    assert validation_generations(3, 3, 2, 50) == 0 and validation_generations(10, 3, 1, 50) == 0


class _Policy(NoCache):
    def __init__(self, error: float) -> None:
        super().__init__()
        self.error = error


def test_choose_fit_keeps_the_value_whose_policies_land_closest_and_refits_it_on_all_runs():
    records = [_record(i < 3) for i in range(8)]
    fits = []

    def fit(runs, value):
        fits.append((len(runs), value))
        return {"profile": {"value": value}}

    errors = {"a": 0.5, "b": 0.1, "c": 0.3}

    def run(policy, i):
        return torch.full((1, 4), 1.0 + i) + (policy.error if isinstance(policy, _Policy) else 0.0)

    fitted = choose_fit(records, fit, lambda f, calls: _Policy(errors[f["profile"]["value"]]), run, "value",
                        ("a", "b", "c"))
    assert fitted["profile"]["value"] == "b"
    # two folds of the five unprobed runs, each candidate fitted without the fold, then the choice on all eight
    assert fits == [(6, "a"), (6, "b"), (6, "c"), (5, "a"), (5, "b"), (5, "c"), (8, "b")]
    sel = fitted["profile"]["selection"]
    assert sel["chosen"] == "b" and sel["folds"] == [[3, 4], [5, 6, 7]] and sel["budgets"] == [2, 3, 5]
    assert sel["held_out_runs"] == [3, 4, 5, 6, 7]
    assert sel["mean_log_rel_error"]["b"] < sel["mean_log_rel_error"]["c"] < sel["mean_log_rel_error"]["a"]
    # too few runs to hold any out: the first value, fitted on everything, without a selection record
    fits.clear()
    assert choose_fit(records[:3], fit, None, None, "value", ("a", "b")) == {"profile": {"value": "a"}}
    assert fits == [(3, "a")]


def test_every_fold_counts_in_the_choice():
    # "b" lands closer on the last fold's runs (the only ones an earlier rule held out), "a" on the first fold's by
    # more: over both folds "a" wins
    records = [_record(False) for _ in range(6)]

    def run(policy, i):
        if not isinstance(policy, _Policy):
            return torch.ones(1, 4)
        off = {("a", True): 0.01, ("b", True): 0.4, ("a", False): 0.2, ("b", False): 0.1}
        return torch.ones(1, 4) + off[(policy.error, i < 3)]

    fitted = choose_fit(records, lambda runs, v: {"profile": {"v": v}}, lambda f, calls: _Policy(f["profile"]["v"]),
                        run, "v", ("b", "a"))
    assert fitted["profile"]["selection"]["folds"] == [[0, 1, 2], [3, 4, 5]]
    assert fitted["profile"]["selection"]["chosen"] == "a"


def test_ties_keep_the_first_value():
    records = [_record(False) for _ in range(4)]
    fitted = choose_fit(records, lambda runs, v: {"profile": {"v": v}}, lambda f, calls: NoCache(),
                        lambda policy, i: torch.ones(1, 3), "v", (True, False))
    assert fitted["profile"]["selection"]["chosen"] is True


def test_a_lower_mean_within_the_held_out_runs_noise_keeps_the_default():
    # "b" is lower on average (one run far closer) but higher on four of the five: not beyond the noise
    records = [_record(False) for _ in range(5)]
    off = {"a": [0.1] * 5, "b": [0.001, 0.12, 0.12, 0.12, 0.12]}

    def run(policy, i):
        return torch.ones(1, 4) + (off[policy.error][i] if isinstance(policy, _Policy) else 0.0)

    def choose(values):
        return choose_fit(records, lambda runs, v: {"profile": {"v": v}}, lambda f, calls: _Policy(f["profile"]["v"]),
                          run, "v", values)["profile"]["selection"]

    sel = choose(("a", "b"))
    assert sel["mean_log_rel_error"]["b"] < sel["mean_log_rel_error"]["a"] and sel["chosen"] == "a"
    assert len(sel["run_log_rel_error"]["a"]) == 5
    assert sel["note"] == "kept the default: b scored lower, but not beyond the held-out runs' noise"
    # the same runs with "b" first: "a" is not clearly lower either, so "b" stays
    assert choose(("b", "a"))["chosen"] == "b"
    # clearly lower on every run: it replaces the default
    off["b"] = [0.05] * 5
    assert choose(("a", "b"))["chosen"] == "b" and "note" not in choose(("a", "b"))
    # two held-out runs are too few to weigh against their noise: the lowest mean, and the record says so
    records[:] = [_record(i < 3) for i in range(5)]  # three probed: runs 3 and 4 are held out
    off["b"] = [0.12, 0.12, 0.12, 0.001, 0.12]  # lower on average over runs 3 and 4, higher on run 4
    sel = choose(("a", "b"))
    assert sel["chosen"] == "b" and sel["note"].startswith("chosen by the lowest mean error alone: 2 held-out runs")


def _flow_model(x, t):
    s = float(t) / 1000
    return 4.0 * x + torch.sin(torch.full_like(x, 3 * s))


def test_calibrate_policy_chooses_probes_and_corrections_jointly_unless_they_are_given():
    sched = FlowMatchEulerDiscreteScheduler(shift=1.0)
    noises = torch.randn(6, 2, 8, generator=torch.Generator().manual_seed(1)) + 1.0
    chosen = etcdiff.calibrate_policy("etc-plus", _flow_model, sched, noises, 20)
    sel = chosen.profile["selection"]
    assert sel["setting"] == ["propagation", "corrections"] and sel["folds"] == [[3, 4, 5]]
    scores = sel["mean_log_rel_error"]
    assert list(scores) == ["propagation=True,corrections=auto", "propagation=True,corrections=False",
                            "propagation=True,corrections=True", "propagation=False,corrections=auto",
                            "propagation=False,corrections=False", "propagation=False,corrections=True"]
    label = "propagation={},corrections={}".format(*sel["chosen"])
    runs = sel["run_log_rel_error"]
    assert all(len(got) == 3 for got in runs.values())
    # per budget too: each run's average over the budgets is the per-run record
    by_budget = sel["budget_run_log_rel_error"]
    assert list(by_budget) == list(runs)
    assert all(list(b) == [str(c) for c in sel["budgets"]] for b in by_budget.values())
    for label_, per_budget in by_budget.items():
        averaged = [sum(col) / len(col) for col in zip(*per_budget.values())]
        assert averaged == pytest.approx(runs[label_], abs=1e-3)
    # the default unless another candidate is clearly lower run by run; then the best scored of those
    beaters = [k for k in list(runs)[1:] if clearly_lower(runs[k], runs[list(runs)[0]])]
    assert label == (min(beaters, key=scores.get) if beaters else list(runs)[0])
    propagation, corrections = sel["chosen"]
    assert (chosen.profile["propagation"] is not None) == propagation and chosen.profile["corrections"] == corrections
    assert chosen.profile["scheduler"]["class"] == "FlowMatchEulerDiscreteScheduler"
    # the kept plan is the chosen values' fit on all six runs
    given = etcdiff.calibrate_policy("etc-plus", _flow_model, sched, noises, 20, propagation=propagation,
                                     corrections=corrections)
    assert "selection" not in given.profile
    assert given.profile["weights"] == pytest.approx(chosen.profile["weights"])
    # one of the two given: the other is still chosen, among its own values only
    half = etcdiff.calibrate_policy("etc-plus", _flow_model, sched, noises, 20, corrections="auto")
    assert half.profile["selection"]["setting"] == "propagation"
    assert set(half.profile["selection"]["mean_log_rel_error"]) == {"True", "False"}


def test_open_choice_drops_the_given_settings_and_repeated_candidates():
    from etcdiff.calibrate import open_choice
    from etcdiff.registry import get_method

    info = get_method("etc-plus")
    assert open_choice(info, {}) == (("propagation", "corrections"),
                                     [(True, "auto"), (True, False), (True, True), (False, "auto"), (False, False),
                                      (False, True)])
    assert open_choice(info, {"corrections": True}) == (("propagation",), [True, False])
    assert open_choice(info, {"propagation": False}) == (("corrections",), ["auto", False, True])
    assert open_choice(info, {"propagation": False, "corrections": False}) == ((), [])


def test_joint_choice_judges_combinations_and_passes_the_winners_measurements_to_refine():
    records = [_record(False) for _ in range(6)]
    off = {(1, "x"): 0.3, (1, "y"): 0.05, (2, "x"): 0.1, (2, "y"): 0.2}  # no setting wins alone: (1, "y") does
    seen = {}

    def refine(fitted, held):
        seen["fits"] = [f["profile"]["v"] for f in held.fold_fits]
        seen["budgets"] = sorted(held.logs)
        seen["errors"] = held.measure(3)

    fitted = choose_fit(records, lambda runs, a, b: {"profile": {"v": (a, b)}},
                        lambda f, calls: _Policy(off[f["profile"]["v"]]),
                        lambda policy, i: torch.ones(1, 4) + (policy.error if isinstance(policy, _Policy) else 0.0),
                        ("a", "b"), ((1, "x"), (1, "y"), (2, "x"), (2, "y")), refine)
    sel = fitted["profile"]["selection"]
    assert fitted["profile"]["v"] == (1, "y") and sel["chosen"] == [1, "y"] and sel["setting"] == ["a", "b"]
    assert seen["fits"] == [(1, "y"), (1, "y")] and seen["budgets"] == validation_budgets(10)
    assert seen["errors"] == [(i, pytest.approx(0.05)) for i in range(6)]


def test_selection_runs_through_a_pipeline_calibration(tmp_path):
    from etcdiff.calibrate import calibrate_method
    from etcdiff.models import load_pipeline

    pipe = load_pipeline("digits")
    pipe.set_progress_bar_config(disable=True)
    steps = []
    fitted = calibrate_method(pipe, "etc-plus", ["0", "1", "2", "3", "4"], 8, seed=3, on_step=steps.append)
    sel = fitted["profile"]["selection"]
    assert sel["folds"] == [[3, 4]] and sel["budgets"] == [2, 3, 4]
    from etcdiff.registry import get_method

    from etcdiff.calibration.etc_plus.tolerance import TOLERANCE_ROUNDS

    # the progress bar's total counts every tolerance pass and every plan computing the last step; the passes stop
    # once the target holds on the held-out runs, and a plan that computes the last step anyway is not run again
    passes = len(fitted["profile"]["tolerance_check"]["passes"])
    assert len(steps) <= 8 * (5 + get_method("etc-plus").extra_runs(5, 8) - 2 * (TOLERANCE_ROUNDS - passes))
    # the plans computing the last step are kept only where they are the same plan or clearly closer
    assert set(fitted["profile"]["budget_errors_last"]) <= {"2", "3", "4"}
    assert sorted(fitted["profile"]["budget_errors"]) == ["2", "3", "4"]
    cost = fitted["profile"]["cost"]  # every generation of the calibration, as the progress bar counted them
    assert cost["generations"] * 8 == len(steps) and cost["recorded"] == 5 and cost["seconds"] > 0
    assert cost["generations"] == 5 + cost["probes"] + cost["real_runs"] and cost["probes"] == 3 * 7


def test_calibrate_says_under_which_scale_the_tolerance_held():
    from etcdiff.calibration.etc_plus.tolerance import held_tolerance as _tolerance_held

    check = {"share": 0.95, "runs": 10, "met": True, "passes": [
        {"scale": 1.0, "within": 0.3}, {"scale": 0.27285, "within": 1.0}, {"scale": 0.52234, "within": 0.9}]}
    profile = {"tolerance": 0.0211, "tolerance_scale": 0.27285, "tolerance_check": check}
    assert _tolerance_held(profile) == ("tolerance mode: planned at 0.27 times the tolerance, under which 100 % of "
                                        "10 held-out calibration runs ended within the target (RMS 0.021; 3 passes)")
    assert _tolerance_held({**profile, "tolerance_check": {**check, "met": False}}) is None  # warned instead
    replayed = {**check, "passes": [{"scale": 0.5, "within": 1.0, "within_real": 0.5}, {"scale": 0.3, "within": 1.0,
                                                                                         "within_real": 1.0}]}
    del replayed["runs"]
    assert "100 % of the held-out" in _tolerance_held({**profile, "tolerance_scale": 0.3, "tolerance_check": replayed})
    assert _tolerance_held({"tolerance": 0.1}) is None  # a profile of before the check
    one = {**check, "probed": [0, 1, 2], "passes": [
        {"scale": 1.0, "within": 0.4, "over": [[0, 2.9], [4, 1.3], [5, 1.3], [6, 1.7]]},
        {"scale": 0.31, "within": 0.9, "over": [[0, 1.64]]}, {"scale": 0.17, "within": 0.9, "over": [[0, 1.63]]},
        {"scale": 0.095, "within": 1.0}]}
    said = _tolerance_held({**profile, "tolerance_scale": 0.095, "tolerance_check": one})
    assert said.endswith("(RMS 0.021; 4 passes); one run alone (calibration prompt 1, a probed run held out with the "
                         "other probed runs' probes) held the scale below 0.17, where the other 9 ended within")
    unprobed = {**one, "probed": []}
    assert _tolerance_held({**profile, "tolerance_scale": 0.095, "tolerance_check": unprobed}).endswith(
        "one run alone (calibration prompt 1) held the scale below 0.17, where the other 9 ended within")
    two = {**one, "passes": [one["passes"][0], {"scale": 0.2, "within": 0.8, "over": [[0, 1.6], [3, 1.1]]},
                             one["passes"][-1]]}
    assert _tolerance_held({**profile, "tolerance_scale": 0.095, "tolerance_check": two}).endswith("3 passes)")


def test_etcdiff_calibrate_reports_the_calibrations_cost(tmp_path, capsys):
    import json

    from etcdiff.cli import main

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("0\n1\n2\n3\n4\n")
    assert main(["calibrate", "--model", "digits", "--method", "etc-plus", "--steps", "8", "--prompts", str(prompts),
                 "--quiet", "--no-plot", "--out", str(tmp_path)]) == 0
    saved = json.loads(next(tmp_path.glob("*etc-plus.json")).read_text())
    cost = saved["settings"]["profile"]["cost"]
    out = capsys.readouterr().out
    assert (f"cost: {cost['generations']} generations ({cost['recorded']} full runs, {cost['probes']} probe runs, "
            f"{cost['real_runs']} real held-out checks) in ") in out
    assert "trend caps:" not in out and "replays:" not in out  # not asked for
    check = saved["settings"]["profile"]["tolerance_check"]
    assert ("tolerance mode: planned at" in out) == check["met"]  # where none held, calibration warned instead
    for offsets in (False, True):
        assert main(["calibrate", "--model", "digits", "--method", "etc-plus", "--steps", "8", "--prompts",
                     str(prompts), "--quiet", "--no-plot", "--out", str(tmp_path), "--set", "replays=true",
                     "--set", f"replay_offsets={str(offsets).lower()}"]) == 0
        replay = json.loads(next(tmp_path.glob("*etc-plus.json")).read_text())["settings"]["profile"]["replay"]
        chosen = f"; the chosen plans' real runs by {replay['chosen_miss']:.2f}" if "chosen_miss" in replay else ""
        if offsets:
            each = ", ".join(f"{k} {v:+.2f}" for k, v in replay["offsets"].items())  # corrections auto, False, True
            chosen = (f", {replay['rms_log_miss_offset']:.2f} once each candidate's are shifted by its offset "
                      f"({each}){chosen}")
        assert (f"replays: the model's pull ({replay['feedback']}) fitted on {replay['runs']} real runs, which the "
                f"replays miss by {replay['rms_log_miss']:.2f} in log error{chosen} (rms; above 0.4 they are not "
                "trusted)") in capsys.readouterr().out
    assert main(["calibrate", "--model", "digits", "--method", "etc-plus", "--steps", "8", "--prompts", str(prompts),
                 "--quiet", "--no-plot", "--out", str(tmp_path), "--set", "trend_caps=true"]) == 0
    profile = json.loads(next(tmp_path.glob("*etc-plus.json")).read_text())["settings"]["profile"]
    caps = profile.get("budget_trend_caps") or {}
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("trend caps: "))
    assert all(f"calls {k} at {v}" in line for k, v in caps.items()) and (caps or "none kept" in line)
    assert main(["calibrate", "--model", "digits", "--method", "etc-plus", "--steps", "8", "--prompts", str(prompts),
                 "--quiet", "--no-plot", "--out", str(tmp_path), "--set", "adapt_trend=true"]) == 0
    kept = json.loads(next(tmp_path.glob("*etc-plus.json")).read_text())["settings"]["profile"]["budget_adapt_trend"]
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("adapt_trend: "))
    on = {kind: sorted(int(k) for k, v in kept[kind].items() if v) for kind in ("free", "last")}
    assert all(f"calls {calls[0]}" in line for calls in on.values() if calls)
    assert ("computing the last step" in line) == bool(on["last"])
    assert (on["free"] or on["last"]) or "kept for no plan" in line


def test_a_replayed_calibration_makes_few_real_runs_and_holds_every_run_out(tmp_path):
    """``replays=True``: the held-out runs are replays; real runs only probe one run, fit the feedback and check
    the tolerance, and every recorded run but the probed one is held out once."""
    from etcdiff.calibrate import calibrate_method
    from etcdiff.calibration.etc_plus.propagation import probe_steps
    from etcdiff.calibration.etc_plus.tolerance import REAL_ROUNDS, TOLERANCE_ROUNDS
    from etcdiff.models import load_pipeline

    pipe = load_pipeline("digits")
    pipe.set_progress_bar_config(disable=True)
    plain = calibrate_method(pipe, "etc-plus", ["0", "1", "2", "3", "4"], 8, seed=3, replays=True)["profile"]
    assert "offsets" not in plain["replay"] and "offsets" not in plain["selection"]  # one candidate's pull runs
    assert len(plain["replay"]["real_log_errors"]) == 2 * len(plain["replay"]["budgets"])
    fitted = calibrate_method(pipe, "etc-plus", ["0", "1", "2", "3", "4"], 8, seed=3, replays=True,
                              replay_offsets=True)
    profile = fitted["profile"]
    replay = profile["replay"]
    assert replay["used"] and isinstance(replay["feedback"], str) and replay["held_out_runs"] == [3, 4]
    assert profile["selection"]["folds"] == [[1, 2], [3, 4]]  # run 0 is probed
    passes = profile["tolerance_check"]["passes"]
    assert 1 <= len(passes) <= TOLERANCE_ROUNDS
    real_passes = sum("within_real" in p for p in passes)  # run for real only where the replays already hold
    assert real_passes == min(REAL_ROUNDS, sum(p["within"] >= 0.95 for p in passes))
    cost = profile["cost"]  # one run's probes, 2 runs per corrections candidate for the feedback, 2 per real pass
    assert cost["recorded"] == 5 and cost["probes"] == len(probe_steps(8))
    assert len(replay["real_log_errors"]) == 2 * 3 and set(replay["offsets"]) == {"auto", "False", "True"}
    assert cost["real_runs"] == 2 * 3 + 2 * real_passes
    # every candidate's replays are shifted by the offset of its corrections, probes or not
    shifts = profile["selection"]["offsets"]
    for label, shift in shifts.items():
        assert shift == replay["offsets"][label.split("corrections=")[1]]
    assert len(shifts) == 6
    assert cost["generations"] == 5 + cost["probes"] + cost["real_runs"]
    assert real_passes  # the chosen fit's own plans, replayed and run for real on the same runs: their miss kept
    assert replay["chosen_miss"] == profile["tolerance_check"]["replay_miss"] >= 0.0
    with pytest.raises(ValueError, match="replays must be true or false"):
        calibrate_method(pipe, "etc-plus", ["0", "1", "2"], 8, seed=3, replays="yes")
    with pytest.raises(ValueError, match="replay_offsets=true shifts the replays of replays=true, which was not given"):
        calibrate_method(pipe, "etc-plus", ["0", "1", "2"], 8, seed=3, replay_offsets=True)


def test_an_option_must_beat_the_default_by_more_than_the_runs_noise():
    from etcdiff.calibration.selection import clearly_lower

    assert clearly_lower([-3.0, -3.1, -2.9], [-2.0, -2.1, -1.9])  # lower on every run
    assert not clearly_lower([-3.0, -1.0, -3.0], [-2.0, -2.0, -2.0])  # lower on average, not beyond the noise
    assert not clearly_lower([-3.0, -3.0], [-2.0, -2.0])  # too few runs to tell
    assert not clearly_lower([-3.0, -3.0, -3.0], [-2.0, -2.0])  # not paired
    # replays: it must also beat the default by more than the replays miss real runs by
    assert clearly_lower([-3.0, -3.1, -2.9], [-2.0, -2.1, -1.9], slack=0.5)
    assert not clearly_lower([-3.0, -3.1, -2.9], [-2.0, -2.1, -1.9], slack=1.5)


def test_a_replayed_choice_moves_off_the_default_only_beyond_the_replays_miss():
    """With ``slack`` (a replayed choice: how far the replays miss real runs, in log error), a candidate lower than
    the default on every run by less than that keeps the default, overall and per budget, and the record says
    why."""
    records = [_record(False) for _ in range(5)]
    off = {"a": [0.1] * 5, "b": [0.08] * 5}  # b lower on every run by log(0.8) = -0.22

    def run(policy, i):
        return torch.ones(1, 4) + (off[policy.error][i] if isinstance(policy, _Policy) else 0.0)

    def choose(slack):
        return choose_fit(records, lambda runs, v: {"profile": {"v": v}}, lambda f, calls: _Policy(f["profile"]["v"]),
                          run, "v", ("a", "b"), per_budget=True, slack=slack)["profile"]

    assert choose(0.0)["selection"]["chosen"] == "b" and "slack" not in choose(0.0)["selection"]
    kept = choose(0.3)
    sel = kept["selection"]
    assert sel["chosen"] == "a" and sel["slack"] == 0.3 and "per_budget" not in sel
    assert sel["note"] == ("kept the default: b scored lower, but not beyond the held-out runs' noise and the "
                           "replays' miss of real runs (0.30)")
    assert choose(0.2)["selection"]["chosen"] == "b"  # beyond the miss: it moves
    judged = {"a": [[-2.0, -2.1, -1.9]], "b": [[-3.0, -3.1, -2.9]]}
    assert budget_choice("a", [10], judged) == {10: "b"}
    assert budget_choice("a", [10], judged, slack=1.5) == {}


def test_a_replayed_choice_shifts_each_candidates_replays_by_its_offset_in_the_choice_and_the_checks():
    """``offsets`` (how far replays miss each candidate's real runs) are added to its log errors: a candidate the
    replays flatter loses its lead, the record keeps them, and the chosen one's checks see the same shift."""
    from etcdiff.calibration.selection import HeldOut

    records = [_record(False) for _ in range(5)]
    off = {"a": [0.1] * 5, "b": [0.08] * 5}  # b lower on every run by log(0.8) = -0.22
    seen: list[HeldOut] = []

    def run(policy, i):
        return torch.ones(1, 4) + (off[policy.error][i] if isinstance(policy, _Policy) else 0.0)

    def choose(offsets):
        return choose_fit(records, lambda runs, v: {"profile": {"v": v}}, lambda f, calls: _Policy(f["profile"]["v"]),
                          run, "v", ("a", "b"), lambda fitted, held: seen.append(held), offsets=offsets)["profile"]

    assert choose(None)["selection"]["chosen"] == "b" and "offsets" not in choose(None)["selection"]
    sel = choose({"a": -0.1, "b": 0.3})["selection"]  # real runs: b's replays flatter it by 0.4 more than a's
    assert sel["chosen"] == "a" and sel["offsets"] == {"a": -0.1, "b": 0.3}
    assert sel["mean_log_rel_error"]["a"] == pytest.approx(math.log(0.1) - 0.1, abs=1e-4)
    held = seen[-1]
    assert held.offset == -0.1 and held.label == "a"
    plans = [_Policy("a")] * len(held.folds)
    assert held.log_errors(plans) == pytest.approx([math.log(0.1) - 0.1] * 5)
    assert [e for _, e in held.measure(2)] == pytest.approx([0.1 * math.exp(-0.1)] * 5)


def test_the_candidates_one_setting_apart_and_their_offsets():
    from etcdiff.calibrate import open_choice
    from etcdiff.calibration.selection import offsets_by_value, one_setting_apart
    from etcdiff.registry import get_method

    info = get_method("etc-plus")
    names, values = open_choice(info, {})
    group = one_setting_apart(names, values, "corrections")  # the last candidate is (no probes, gains everywhere)
    assert group == {v: {"propagation": False, "corrections": c} for v, c in
                     (("auto", "auto"), ("False", False), ("True", True))}
    shifts = offsets_by_value(names, values, "corrections", {"auto": -0.2, "True": 0.4})
    assert shifts[(True, "auto")] == shifts[(False, "auto")] == -0.2 and shifts[(True, True)] == 0.4
    assert shifts[(False, False)] == 0.0  # none measured: unshifted
    assert offsets_by_value(names, values, "corrections", None) is None
    names, values = open_choice(info, {"corrections": "auto"})  # corrections given: nothing to spread the runs over
    assert one_setting_apart(names, values, "corrections") == {}
    assert offsets_by_value(names, values, "corrections", {"auto": 0.3}) is None
    names, values = open_choice(info, {"propagation": False})
    assert list(one_setting_apart(names, values, "corrections")) == ["auto", "False", "True"]


def test_a_replayed_choice_starts_from_the_methods_replay_default_among_the_open_settings():
    from etcdiff.calibrate import _replay_first, open_choice
    from etcdiff.registry import get_method

    info = get_method("etc-plus")
    names, values = open_choice(info, {})
    assert _replay_first(info, names, values)[0] == (False, "auto") and len(_replay_first(info, names, values)) == 6
    names, values = open_choice(info, {"corrections": "auto"})
    assert names == ("propagation",) and _replay_first(info, names, values) == [False, True]
    names, values = open_choice(info, {"propagation": True})
    assert _replay_first(info, names, values)[0] == "auto"
    assert _replay_first(get_method("etc"), (), []) == []


def test_only_replays_that_miss_real_runs_beyond_the_trusted_bar_set_a_slack():
    from etcdiff.calibration.etc_plus.replay import TRUSTED_MISS, untrusted_miss

    assert untrusted_miss({"used": True, "runs": 6, "rms_log_miss": TRUSTED_MISS + 0.15}) == TRUSTED_MISS + 0.15
    assert untrusted_miss({"used": True, "runs": 6, "rms_log_miss": TRUSTED_MISS - 0.05}) == 0.0
    assert untrusted_miss({"used": True, "runs": 0, "rms_log_miss": 0.9}) == 0.0  # no real runs: nothing measured
    assert untrusted_miss({"used": False, "why": "..."}) == 0.0 and untrusted_miss(None) == 0.0
    # with candidates' offsets, the miss left once each run is shifted by its candidate's offset decides
    shifted = {"used": True, "runs": 6, "rms_log_miss": 0.9, "rms_log_miss_offset": TRUSTED_MISS - 0.1}
    assert untrusted_miss(shifted) == 0.0
    assert untrusted_miss({**shifted, "rms_log_miss": 0.1, "rms_log_miss_offset": 0.7}) == 0.7


def test_a_candidate_clearly_closer_at_one_budget_serves_that_budget_alone():
    # "a" is closer at 2 and 3 calls, "b" far closer at 5 calls (every run): "a" is chosen, "b" serves 5 calls
    records = [_record(False) for _ in range(6)]
    off = {("a", 2): 0.1, ("a", 3): 0.1, ("a", 5): 0.1, ("b", 2): 0.5, ("b", 3): 0.5, ("b", 5): 0.01}

    class Policy(_Policy):
        def __init__(self, value, calls):
            super().__init__(off[(value, calls)])

    def run(policy, i):
        if not isinstance(policy, _Policy):
            return torch.ones(1, 4)
        error = policy.error[i] if isinstance(policy.error, list) else policy.error
        return torch.ones(1, 4) + error * (1 + 0.1 * i)

    def choose(per_budget, refine=None):
        return choose_fit(records, lambda runs, v: {"profile": {"v": v, "fixed": 1}},
                          lambda f, calls: Policy(f["profile"]["v"], calls), run, "v", ("a", "b"), refine,
                          per_budget=per_budget)["profile"]

    seen = {}

    def refine(fitted, held):
        seen.update({c: held.for_calls(c).label for c in (2, 3, 4, 5)})

    profile = choose(True, refine)
    assert profile["v"] == "a" and profile["selection"]["per_budget"] == {"5": "b"}
    # only the settings that differ are kept, fitted on all runs
    assert profile["budget_fits"] == {"fits": {"b": {"v": "b"}}, "serve": {"5": "b"}}
    # a budget between the compared ones runs the candidate of the nearest (in log calls): 4 is nearer 5 than 3
    assert seen == {2: "a", 3: "a", 4: "b", 5: "b"}
    assert "budget_fits" not in choose(False)
    # a lead within twice the noise of one budget's runs does not count (though beyond once: the overall bar)
    off[("b", 5)] = [0.05, 0.12, 0.05, 0.12, 0.08, 0.09]
    profile = choose(True)
    by_budget = profile["selection"]["budget_run_log_rel_error"]
    assert clearly_lower(by_budget["b"]["5"], by_budget["a"]["5"])
    assert "budget_fits" not in profile and "per_budget" not in profile["selection"]


def test_the_held_out_runs_serve_each_budget_from_the_nearest_compared_one():
    from etcdiff.calibration.selection import HeldOut

    def view(label):
        return HeldOut([], {}, None, None, [], label=label)

    held = view("x")
    assert held.for_calls(7) is held  # no per-budget choice
    held.by_budget = {4: view("a"), 5: view("b"), 7: view("c"), 10: view("d")}
    assert [held.for_calls(c).label for c in range(4, 11)] == ["a", "b", "c", "c", "c", "d", "d"]


@pytest.fixture(scope="module")
def flow_calibration():
    """A scheduler, 6 calibration noises and the ETC+ calibration made on them with fixed candidates."""
    sched = FlowMatchEulerDiscreteScheduler(shift=1.0)
    noises = torch.randn(6, 2, 8, generator=torch.Generator().manual_seed(1)) + 1.0
    plain = etcdiff.calibrate_policy("etc-plus", _flow_model, sched, noises, 20, propagation=True, corrections="auto")
    return sched, noises, plain


def test_calibration_with_trend_caps_runs_every_budget_capped_and_records_what_it_kept(flow_calibration):
    from etcdiff.calibration.etc_plus.refine import TREND_CAP_CANDIDATES, budget_ladder

    sched, noises, plain = flow_calibration
    capped = etcdiff.calibrate_policy("etc-plus", _flow_model, sched, noises, 20, propagation=True, corrections="auto",
                                      trend_caps=True)
    assert plain.profile["trend_caps"] is False and "budget_trend_caps" not in plain.profile
    assert capped.profile["trend_caps"] is True
    kept = capped.profile.get("budget_trend_caps", {})
    assert set(kept) <= set(capped.profile["budget_errors"]) and set(kept.values()) <= set(TREND_CAP_CANDIDATES)
    # each measured budget of the ladder ran once more per cap, on each of the 3 held-out runs
    extra = capped.profile["cost"]["real_runs"] - plain.profile["cost"]["real_runs"]
    assert extra == 3 * len(TREND_CAP_CANDIDATES) * len(capped.profile["budget_errors"])
    assert len(capped.profile["budget_errors"]) <= len(budget_ladder(20))
    with pytest.raises(ValueError, match="trend_caps must be true or false"):
        etcdiff.calibrate_policy("etc-plus", _flow_model, sched, noises, 20, trend_caps="yes")


def test_calibration_with_adapt_trend_runs_every_plan_with_it_and_records_what_it_kept(flow_calibration):
    sched, noises, plain = flow_calibration
    chose = etcdiff.calibrate_policy("etc-plus", _flow_model, sched, noises, 20, propagation=True, corrections="auto",
                                     adapt_trend=True)
    assert plain.profile["adapt_trend"] is False and "budget_adapt_trend" not in plain.profile
    kept = chose.profile["budget_adapt_trend"]
    assert set(kept["free"]) == set(chose.profile["budget_errors"])  # every measured budget's free plan
    assert set(kept["last"]) >= set(chose.profile["budget_errors_last"])
    assert all(isinstance(v, bool) for kind in kept.values() for v in kind.values())
    # each free plan ran once more on each of the 3 held-out runs, and each plan computing the last step at most once
    extra = chose.profile["cost"]["real_runs"] - plain.profile["cost"]["real_runs"]
    assert extra % 3 == 0 and 3 * len(kept["free"]) <= extra <= 3 * (len(kept["free"]) + len(kept["last"]))
    for calls in (int(k) for k in kept["free"]):
        policy = ETCPlus(chose.calibrated, calls=calls)
        assert policy.adapt_trend is kept["last" if policy.compute_last else "free"].get(str(policy.calls), False)
    with pytest.raises(ValueError, match="adapt_trend must be true or false"):
        etcdiff.calibrate_policy("etc-plus", _flow_model, sched, noises, 20, adapt_trend="yes")


@pytest.mark.parametrize("settings", [{"serve_steps": [6]}, {"trend_caps": True}, {"adapt_trend": True}])
def test_the_progress_bar_counts_the_runs_the_settings_add(settings):
    """The bar's total (an upper bound) counts the runs serve_steps, trend_caps and adapt_trend make: each makes
    more than a calibration without them may."""
    from etcdiff.calibrate import calibrate_method
    from etcdiff.models import load_pipeline
    from etcdiff.registry import get_method

    pipe = load_pipeline("digits")
    pipe.set_progress_bar_config(disable=True)
    steps = []
    calibrate_method(pipe, "etc-plus", ["0", "1", "2", "3", "4"], 8, seed=3, on_step=steps.append, **settings)
    extra = get_method("etc-plus").extra_runs
    assert 8 * (5 + extra(5, 8)) < len(steps) <= 8 * (5 + extra(5, 8, **settings))
