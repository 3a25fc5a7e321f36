"""One profile store for every method: lookup by model, method, step count and scheduler; every load checked;
broken files named; atomic writes; calibration settings kept (issue 23, items 2-6)."""

from __future__ import annotations

import json
import math
import shutil
import threading
import warnings
from pathlib import Path

import pytest
import torch

import etcdiff
from etcdiff.calibration import load_profile, save_profile
from etcdiff.calibration.peer_profiles import save_peer_profile
from etcdiff.calibration.profile import SHIPPED_DIR
from etcdiff.calibration.profile_store import find_profile, scan
from etcdiff.calibrate import calibrate_method
from etcdiff.policies.method_profile import MethodProfile, read_method_profile

SHIPPED_ETC = load_profile(SHIPPED_DIR / "digits_50steps.json")


@pytest.fixture()
def user_dir(tmp_path, monkeypatch):
    folder = tmp_path / "profiles"
    folder.mkdir()
    monkeypatch.setenv("ETCDIFF_PROFILE_DIR", str(folder))
    return folder


def _meancache_20(pipe, folder: Path, calls: int = 12) -> Path:
    fitted = calibrate_method(pipe, "meancache", [0, 1, 2], 20, seed=42, calls=calls)
    return save_peer_profile("digits", "meancache", 20, fitted, folder, scheduler=type(pipe.scheduler).__name__,
                             run_settings={"calls": calls})


def _run(pipe, steps: int) -> dict:
    pipe([3], num_inference_steps=steps, generator=torch.Generator().manual_seed(0))
    return etcdiff.summary(pipe)


def test_the_profile_for_the_runs_step_count_wins_wherever_it_is(pipe, user_dir):
    _meancache_20(pipe, user_dir)  # the user's folder: 20 steps only; the shipped one: 50 steps, calls=17
    etcdiff.enable(pipe, "meancache")
    assert _run(pipe, 50)["model_calls"] == 17
    assert _run(pipe, 20)["model_calls"] == 12
    assert _run(pipe, 50)["model_calls"] == 17  # and back


def test_other_step_counts_only_names_them_and_the_command_with_no_warning_first(pipe, user_dir):
    _meancache_20(pipe, user_dir)
    etcdiff.enable(pipe, "meancache")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"calibrated at 20, 50 steps, not at 28.*"
                                             r"etcdiff calibrate --model <id or path> --method meancache --scheduler euler --steps 28"):
            _run(pipe, 28)
    etcdiff.disable(pipe)
    etcdiff.enable(pipe, "etc-plus")  # shipped at 50 only: a profile with sigmas serves 28 steps, resampled, and says so
    with pytest.warns(UserWarning, match=r"fitted at 50 steps; this 28-step run is planned from its window errors "
                                         r"resampled on the sigma axis"):
        _run(pipe, 28)
    assert etcdiff.last_report(pipe).num_steps == 28


def test_etc_takes_the_tau_searched_at_the_runs_step_count(pipe, user_dir):
    fields = {**SHIPPED_ETC.to_dict(), "steps": 20, "d_bar": SHIPPED_ETC.d_bar[:19], "s_bar": SHIPPED_ETC.s_bar[:19],
              "change_point": 10, "created": "2099-01-01T00:00:00+00:00"}
    fields["tau"] = fields["d_bar"][10]
    save_profile(type(SHIPPED_ETC)(**fields))  # a newer 20-step profile in the user's folder
    policy = etcdiff.enable(pipe, "etc")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the 50-step tau is searched: no carried-over warning
        policy.begin(50)
    assert policy.threshold == SHIPPED_ETC.tau
    policy.begin(20)
    assert policy.threshold == fields["tau"]
    with pytest.warns(UserWarning, match="carried over"):
        policy.begin(30)  # only other step counts: ETC carries its tau over, and says so


@pytest.mark.parametrize("damage", ["cut", "nan", "future", "folder"])
def test_a_broken_user_profile_is_named_never_replaced_by_the_shipped_one(pipe, user_dir, damage):
    shipped = SHIPPED_DIR / "digits_50steps_meancache.json"
    target = user_dir / shipped.name
    text = shipped.read_text(encoding="utf-8")
    if damage == "cut":
        target.write_text(text[: len(text) // 2], encoding="utf-8")
    elif damage == "nan":
        doc = json.loads(text)
        doc["settings"]["profile"]["cost"][0][1] = math.nan
        target.write_text(json.dumps(doc), encoding="utf-8")
    elif damage == "future":
        target.write_text(json.dumps({**json.loads(text), "format": 99}), encoding="utf-8")
    else:
        target.mkdir()
    named = str(target).replace(".", r"\.")
    with pytest.warns(UserWarning, match=named):  # named as soon as it is enabled
        etcdiff.enable(pipe, "meancache")
    with pytest.raises(ValueError, match=named + r".*not replaced by another one"):  # never run in its place
        _run(pipe, 50)


def test_a_broken_profile_at_another_step_count_is_a_warning_naming_it(pipe, user_dir):
    (user_dir / "digits_20steps_meancache.json").write_text('{"method": "meancache", "ide', encoding="utf-8")
    with pytest.warns(UserWarning, match="digits_20steps_meancache.json"):
        etcdiff.enable(pipe, "meancache")
    with pytest.warns(UserWarning, match="digits_20steps_meancache.json"):  # named again at each look-up
        assert _run(pipe, 50)["model_calls"] == 17  # the shipped 50-step profile
    etcdiff.disable(pipe)
    (user_dir / "digits_50steps.json").write_text('{"identity": "digits"', encoding="utf-8")
    with pytest.warns(UserWarning, match="digits_50steps.json"):
        policy = etcdiff.enable(pipe, "etc")
    with pytest.raises(ValueError, match="digits_50steps.json"):
        policy.begin(50)


def test_method_profiles_are_typed_and_checked():
    prof = read_method_profile(SHIPPED_DIR / "digits_50steps_meancache.json", "meancache")
    assert isinstance(prof, MethodProfile) and prof.format == 1 and prof.steps == 50 and prof.scheduler == "FlowMatchEulerDiscreteScheduler"
    with pytest.raises(ValueError, match="is a meancache calibration, not sencache's"):
        read_method_profile(SHIPPED_DIR / "digits_50steps_meancache.json", "sencache")
    with pytest.raises(ValueError, match="format 99 was written by a newer etcdiff"):
        MethodProfile.from_dict({**prof.to_dict(), "format": 99})
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        MethodProfile.from_dict({**prof.to_dict(), "steps": 0})


def _etc_plus_profile() -> dict:
    return json.loads((SHIPPED_DIR / "digits_50steps_etc-plus.json").read_text(encoding="utf-8"))["settings"]["profile"]


@pytest.mark.parametrize("key, value, match", [
    ("tolerance", math.nan, "not a finite number"),
    ("tolerance", -1.0, "tolerance must be a finite number >= 0"),
    ("max_window", 0, "max_window must be an integer >= 1"),
    ("spike", math.inf, "not a finite number"),
])
def test_etc_plus_profile_numbers_are_checked(key, value, match):
    prof = _etc_plus_profile()
    prof[key] = value
    with pytest.raises(ValueError, match=match):
        etcdiff.make_policy("etc-plus", profile=prof, calls=12)


def test_etc_plus_non_finite_gains_are_refused():
    prof = _etc_plus_profile()
    prof["triplets"][3][3] = math.inf
    with pytest.raises(ValueError, match=r"triplets\.3\.3 is not a finite number"):
        etcdiff.make_policy("etc-plus", profile=prof, calls=12)


def test_another_models_profile_given_by_path_is_named(pipe):
    path = SHIPPED_DIR / "scenes_50steps_sencache.json"
    with pytest.warns(UserWarning, match="calibrated on 'scenes', not on this pipeline's model 'digits'"):
        etcdiff.enable(pipe, "sencache", tables=str(path))


def test_a_profile_for_another_scheduler_is_not_used(pipe, user_dir):
    from diffusers import FlowMatchEulerDiscreteScheduler

    _meancache_20(pipe, user_dir)

    class OtherScheduler(FlowMatchEulerDiscreteScheduler):
        pass

    pipe.scheduler = OtherScheduler.from_config(pipe.scheduler.config)
    with pytest.raises(ValueError, match="calibrated with FlowMatchEulerDiscreteScheduler only, and this pipeline runs "
                                         "OtherScheduler; calibrate with this scheduler"):
        etcdiff.enable(pipe, "meancache")  # the shipped profiles, too, say they were made with FlowMatch Euler
    assert not etcdiff.is_enabled(pipe)


def test_concurrent_saves_and_lookups_never_fail(user_dir):
    errors: list[BaseException] = []
    misses = [0]
    prof = load_profile(SHIPPED_DIR / "digits_50steps.json")
    meancache = read_method_profile(SHIPPED_DIR / "digits_50steps_meancache.json")

    def write() -> None:
        try:
            for _ in range(40):
                save_profile(load_profile(SHIPPED_DIR / "digits_50steps.json"))
                save_peer_profile("digits", "meancache", 50, meancache.settings, user_dir)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    def read() -> None:
        for _ in range(60):
            found = scan("digits", "meancache", user_dir)
            if not found.profiles or found.broken:
                misses[0] += 1

    save_profile(prof)
    save_peer_profile("digits", "meancache", 50, meancache.settings, user_dir)
    threads = [threading.Thread(target=write) for _ in range(4)] + [threading.Thread(target=read) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and misses[0] == 0
    assert not [p for p in user_dir.iterdir() if p.name.endswith(".tmp")]
    assert find_profile("digits", 50, user_dir).tau == prof.tau


def test_calibrate_checks_the_profile_folder_before_any_work(tmp_path, monkeypatch, capsys):
    from etcdiff import cli, models

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("ETCDIFF_PROFILE_DIR", str(blocker))

    def no_model(*a, **k):
        raise AssertionError("the model was loaded before the profile folder was checked")

    monkeypatch.setattr(models, "load_pipeline", no_model)
    assert cli.main(["calibrate", "--model", "digits", "--method", "ertacache", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "ETCDIFF_PROFILE_DIR" in err and "is a file, not a folder" in err


def test_calibrate_set_settings_are_saved_with_the_profile(tmp_path, capsys):
    from etcdiff import cli

    prompts = tmp_path / "p.txt"
    prompts.write_text("0\n1\n2\n")
    out = tmp_path / "out"
    assert cli.main(["calibrate", "--model", "digits", "--method", "meancache", "--set", "calls=12", "--steps", "20",
                     "--prompts", str(prompts), "--out", str(out), "--no-plot", "--quiet"]) == 0
    prof = read_method_profile(out / "digits_20steps_meancache.json", "meancache")
    assert prof.run_settings == {"calls": 12} and prof.scheduler == "FlowMatchEulerDiscreteScheduler"
    assert prof.format == 2 and prof.seconds > 0 and prof.prompts == ["0", "1", "2"]


def test_a_profile_given_by_path_brings_its_own_saved_settings_not_the_newest_files(pipe, user_dir):
    nine = _meancache_20(pipe, user_dir, calls=9)
    kept = user_dir / "meancache_9.json"
    shutil.move(nine, kept)
    _meancache_20(pipe, user_dir, calls=7)  # the newest saved meancache profile of this model
    etcdiff.enable(pipe, "meancache", profile=str(kept))
    assert _run(pipe, 20)["model_calls"] == 9
    etcdiff.disable(pipe)
    etcdiff.enable(pipe, "meancache")
    assert _run(pipe, 20)["model_calls"] == 7
    etcdiff.disable(pipe)
