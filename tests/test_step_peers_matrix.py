"""The 2025-26 step peers on every pipeline of the matrix: with a threshold nothing reaches, EasyCache, LazyCache
and the PreciseCache reconstruction run the model on steps 0 and 1 (k needs two computed steps; PreciseCache's
warm-up is 2) and the last step only; LeMiCa runs exactly its given steps; on every layout of guidance branches,
helper networks and multi-call schedulers, and the estimates stay finite."""

from collections import Counter

import pytest
import torch

import etcdiff
from etcdiff.policies.step.easycache import EasyCache
from etcdiff.policies.step.lazycache import LazyCache
from etcdiff.policies.step.lemica import LeMiCa
from etcdiff.policies.step.precisecache import PreciseCache
from test_pipeline_matrix import LCM_STEPS, STEPS, Counts
from tiny_matrix_pipelines import MATRIX_FACTORIES


@pytest.mark.parametrize("name", list(MATRIX_FACTORIES))
def test_step_peers_on_pipeline(name: str) -> None:
    torch.set_num_threads(1)
    tp = MATRIX_FACTORIES[name]()
    steps = LCM_STEPS if name == "lcm" else STEPS
    counts = Counts(tp)
    plain = tp.run(steps)
    n = counts.calls // tp.calls_per_step
    policies = {
        "easycache": (EasyCache(1e9, warmup=2), [0, 1, n - 1]),
        "lazycache": (LazyCache(1e9, start_percent=0.0, end_percent=1.0), [0, 1, n - 1]),
        "precisecache": (PreciseCache(1e9, warmup=2, max_skip=100), [0, 1, n - 1]),
        "lemica": (LeMiCa(computed=[0, 2, n - 1], predictor="etc"), [0, 2, n - 1]),
    }
    try:
        for method, (policy, expected) in policies.items():
            etcdiff.enable(tp.pipe, policy)
            counts.reset()
            out = tp.run(steps)
            report = etcdiff.last_report(tp.pipe)
            assert report.computed_steps == expected, method
            assert Counter(counts.forward_steps) == {s: tp.calls_per_step for s in expected}, method
            assert out.shape == plain.shape and torch.isfinite(out).all(), method
    finally:
        etcdiff.disable(tp.pipe)
        counts.remove()


def test_the_hook_hands_late_input_the_first_latents_not_the_second():
    # At step 0 the hook learns x_0 only after scheduler.step has run; late_input must get x_0 (it once got x_1).
    from tiny_pipelines import FACTORIES

    torch.set_num_threads(1)
    tp = FACTORIES["flux"]()
    seen = {}

    class Recorder(EasyCache):
        def late_input(self, step, latents):
            seen.setdefault(step, latents.clone())
            super().late_input(step, latents)

    shown = {}

    class Shown(Recorder):
        def should_compute(self, step, latents=None):
            if latents is not None:
                shown[step] = latents.clone()
            return super().should_compute(step, latents)

    etcdiff.enable(tp.pipe, Shown(0.0, warmup=2))
    try:
        tp.run(4)
    finally:
        etcdiff.disable(tp.pipe)
    assert 0 in seen and 1 in shown
    assert not torch.equal(seen[0], shown[1])  # x_0, not x_1
