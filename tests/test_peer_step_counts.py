"""Saved calibrations of the peers follow each run's step count: the profile made at that step count wherever it
is, and where there is none, a warning that names the one used (TeaCache, SenCache), MagCache's ratios resampled
on their magnitude curve with a warning, or a refusal in one line (LeMiCa)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import etcdiff
from etcdiff.calibration.peer_profiles import save_peer_profile
from etcdiff.policies.block.magcache import MagCache, resample_ratios
from tiny_pipelines import make_flux

FLUX = "FluxPipeline"  # the tiny FLUX pipeline's profile identity
EULER = "FlowMatchEulerDiscreteScheduler"


@pytest.fixture()
def user_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ETCDIFF_PROFILE_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture(scope="module")
def flux():
    return make_flux()


def _no_warning(run, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run(*args)


def test_resample_ratios_by_hand():
    # magnitudes 1, 2, 8 at calibrated steps 0, 1, 2 (log2: 0, 1, 3); 5 run steps sit at 0, .5, 1, 1.5, 2:
    # log2 m = 0, .5, 1, 2, 3, so the run's ratios are 1, 2^.5, 2^.5, 2, 2
    assert resample_ratios([1.0, 2.0, 4.0], 3) == [1.0, 2.0, 4.0]
    assert resample_ratios([1.0, 2.0, 4.0], 5) == pytest.approx([1.0, math.sqrt(2), math.sqrt(2), 2.0, 2.0])
    assert resample_ratios([1.0, 2.0, 4.0], 2) == pytest.approx([1.0, 8.0])  # one step spans both
    with pytest.raises(ValueError, match="finite and > 0"):
        resample_ratios([1.0, 0.0, 2.0], 4)


def test_magcache_says_when_it_resamples_its_ratios():
    rule = MagCache(ratios=[1.0, 2.0, 4.0])
    _no_warning(rule.begin, 3)
    with pytest.warns(UserWarning, match=r"magcache: the ratios are for 3 steps \(from the settings\) and this run has 5; "
                                         r"they are resampled .* `etcdiff calibrate --model <id or path> --method magcache --steps 5`"):
        rule.begin(5)
    assert rule.step_ratios == pytest.approx([1.0, math.sqrt(2), math.sqrt(2), 2.0, 2.0])
    _no_warning(rule.begin, 5)  # said once per step count


def _run(tp, steps: int):
    tp.call(tp.pipe, steps)
    return etcdiff.last_report(tp.pipe)


def test_teacache_takes_the_profile_of_the_runs_step_count(flux, user_dir):
    coefficients = {6: [0.0, 0.0, 0.0, 1.0, 0.0], 8: [0.0, 0.0, 0.0, 2.0, 0.0]}
    for steps, c in coefficients.items():
        save_peer_profile(FLUX, "teacache", steps, {"coefficients": c}, user_dir, scheduler=EULER)
    etcdiff.enable(flux.pipe, "teacache")
    try:
        for steps in (6, 8, 6):
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                assert _run(flux, steps).params["coefficients"] == coefficients[steps]
        with pytest.warns(UserWarning, match=r"teacache: 'FluxPipeline' has no calibration at 7 steps; this run uses "
                                             r"the one made at (\d) steps .* --method teacache --steps 7`") as got:
            used = _run(flux, 7).params["coefficients"]
        made_at = int(next(str(w.message) for w in got if "no calibration" in str(w.message)).split("made at ")[1][0])
        assert used == coefficients[made_at]
    finally:
        etcdiff.disable(flux.pipe)


def test_magcache_takes_the_ratios_of_the_runs_step_count_and_resamples_others(flux, user_dir):
    ratios = {6: [1.0, 1.2, 1.1, 1.0, 0.9, 0.8], 8: [1.0, 1.1, 1.05, 1.0, 1.0, 0.95, 0.9, 0.85]}
    for steps, r in ratios.items():
        save_peer_profile(FLUX, "magcache", steps, {"ratios": r}, user_dir, scheduler=EULER)
    rule = etcdiff.enable(flux.pipe, "magcache")
    try:
        for steps in (8, 6):
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                _run(flux, steps)
            assert rule.ratios == ratios[steps] and rule.step_ratios == ratios[steps]
        with pytest.warns(UserWarning, match=r"the ratios are for (6|8) steps .* and this run has 10; they are resampled"):
            _run(flux, 10)
        assert rule.step_ratios == pytest.approx(resample_ratios(rule.ratios, 10))
    finally:
        etcdiff.disable(flux.pipe)


def test_lemica_at_an_uncalibrated_step_count_names_the_ones_that_exist(pipe, user_dir):
    from etcdiff.calibrate import calibrate_method

    fitted = calibrate_method(pipe, "lemica", [0, 1], 20, calls=8)
    save_peer_profile("digits", "lemica", 20, fitted, user_dir, scheduler=type(pipe.scheduler).__name__,
                      run_settings={"calls": 8})
    etcdiff.enable(pipe, "lemica")  # the user's 20-step profile, and the shipped one at 50 steps
    pipe([3], num_inference_steps=20, generator=torch.Generator().manual_seed(0))
    assert etcdiff.summary(pipe)["model_calls"] == 8
    with pytest.raises(ValueError, match=r"^lemica: 'digits' is calibrated at 20, 50 steps, not at 28; .*"
                                         r"`etcdiff calibrate --model <id or path> --method lemica --scheduler euler --steps 28`\.$"):
        pipe([3], num_inference_steps=28, generator=torch.Generator().manual_seed(0))


def test_sencache_takes_the_tables_of_the_runs_step_count_and_names_the_ones_it_falls_back_to(pipe, user_dir):
    from etcdiff.policies.step.sencache import SenCacheTables

    tables = SenCacheTables([999.0, 500.0, 1.0], [0.5, 0.5, 0.5], [0.001, 0.001, 0.001], 1).to_dict()
    save_peer_profile("digits", "sencache", 20, {"tables": tables}, user_dir, scheduler=type(pipe.scheduler).__name__)
    policy = etcdiff.enable(pipe, "sencache", eps_main=0.5)  # the user's 20-step tables, the shipped 50-step ones
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for steps in (20, 50):
            pipe([3], num_inference_steps=steps, generator=torch.Generator().manual_seed(0))
            assert (policy.tables.to_dict() == tables) == (steps == 20)
    with pytest.warns(UserWarning, match=r"sencache: 'digits' has no calibration at 12 steps; this run uses the one "
                                         r"made at 20 steps .*J_t is a finite difference.* --steps 12`"):
        pipe([3], num_inference_steps=12, generator=torch.Generator().manual_seed(0))
    assert policy.tables.to_dict() == tables and etcdiff.last_report(pipe).num_steps == 12
