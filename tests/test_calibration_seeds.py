"""Calibration seeds: a method that holds calibration runs out gives each prompt its own noise, and every run of a
prompt (recorded, probed, held out) uses that prompt's seed; other methods keep one seed for all prompts."""

import pytest

from etcdiff.calibrate import calibrate_method, held_out_seeds
from etcdiff.calibration.runs import prompt_seed


def _spy(monkeypatch):
    import etcdiff.calibration.etc_plus.propagation as propagation
    import etcdiff.calibration.policy_runs as policy_runs
    import etcdiff.calibration.runs as runs

    seen = []
    real = runs.call_kwargs

    def call_kwargs(pipe, prompt, steps, seed, guidance_scale=None):
        seen.append((prompt, seed))
        return real(pipe, prompt, steps, seed, guidance_scale)

    for module in (runs, policy_runs, propagation):
        monkeypatch.setattr(module, "call_kwargs", call_kwargs)
    return seen


def test_the_seed_of_each_calibration_prompt():
    assert held_out_seeds(42, 3) == [42, 43, 44]
    assert prompt_seed(7, 2) == 7 and prompt_seed([5, 6, 7], 2) == 7


@pytest.mark.parametrize("method, seeds", [("etc-plus", {0: 42, 1: 43, 2: 44, 3: 45, 4: 46}),
                                           ("ertacache", {0: 42, 1: 42, 2: 42, 3: 42, 4: 42})])
def test_held_out_runs_start_from_noise_the_fit_did_not_see(pipe, monkeypatch, method, seeds):
    seen = _spy(monkeypatch)
    calibrate_method(pipe, method, [0, 1, 2, 3, 4], 8, 42)
    assert {prompt for prompt, _ in seen} == set(seeds)
    assert {(prompt, seed) for prompt, seed in seen} == set(seeds.items())  # every run of a prompt: its own seed
    if method == "etc-plus":
        assert len(seen) > 5  # probes and held-out runs went through the same seeds
