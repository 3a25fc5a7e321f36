"""One generation at a time per pipeline and per policy, shared modules, SADA's schedule (issue 9, tracebacks)."""

from __future__ import annotations

import threading

import pytest
import torch

import etcdiff
from loop_pipelines import make_loop_pipeline

ETC_HUGE_12 = [0, 1, 2, 4, 7, 11]


def etc_huge() -> etcdiff.ETC:
    return etcdiff.ETC(threshold=1e9, warmup=2)


# -- SADA after a change of step count and on img2img -------------------------------------------------------------
def test_sada_follows_the_step_count_and_the_begin_index() -> None:
    pipe = make_loop_pipeline()
    etcdiff.enable(pipe, etcdiff.SADA())
    for kwargs in ({"num_inference_steps": 20}, {"num_inference_steps": 12}, {"num_inference_steps": 20, "begin_at": 6}):
        pipe(**kwargs)
        report = etcdiff.last_report(pipe)
        assert report.num_steps == kwargs["num_inference_steps"] - kwargs.get("begin_at", 0)


def test_sada_in_sample_after_a_change_of_step_count() -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler

    policy = etcdiff.SADA()
    for steps in (20, 12):
        etcdiff.sample(lambda x, t: 0.1 * x, FlowMatchEulerDiscreteScheduler(), torch.ones(1, 2), steps, policy)
        assert policy.report().num_steps == steps


# -- a denoiser shared by two pipelines ------------------------------------------------------------------------
def test_enabling_a_second_pipeline_that_shares_the_denoiser() -> None:
    a = make_loop_pipeline()
    b = make_loop_pipeline()
    b.transformer = a.transformer
    etcdiff.enable(a, etc_huge())
    with pytest.raises(RuntimeError, match="pipe.transformer is shared with another pipeline"):
        etcdiff.enable(b, etc_huge())
    assert not etcdiff.is_enabled(b) and type(b).__name__ == "LoopPipeline"
    assert "_etcdiff_base_class" not in vars(type(b)) and "step" not in vars(b.scheduler)
    a(12)
    assert etcdiff.last_report(a).computed_steps == ETC_HUGE_12


# -- one policy object on two pipelines -----------------------------------------------------------------------
def test_one_policy_serves_two_pipelines_even_nested() -> None:
    """A policy object is a configuration: each generation runs on its own state, so a generation of one
    pipeline inside another's (from its callback) decides exactly as each would alone."""
    a, b = make_loop_pipeline(), make_loop_pipeline()
    alone_a, alone_b = make_loop_pipeline(), make_loop_pipeline()
    policy = etc_huge()
    etcdiff.enable(a, policy)
    etcdiff.enable(b, policy)
    etcdiff.enable(alone_a, etc_huge())
    etcdiff.enable(alone_b, etc_huge())
    inner = []

    def nested(pipe, i, t, kwargs):
        if i == 3:
            inner.append(b(12))
        return kwargs

    outer = a(12, callback_on_step_end=nested)
    assert torch.equal(outer, alone_a(12)) and torch.equal(inner[0], alone_b(12))
    assert etcdiff.last_report(a).computed_steps == etcdiff.last_report(b).computed_steps == ETC_HUGE_12
    assert policy.report().computed_steps == ETC_HUGE_12  # the configuration keeps the last finished report
    # one after the other is fine too, each with its own report
    want = make_loop_pipeline()(12)
    a(12)
    b(12)
    assert etcdiff.last_report(a).computed_steps == etcdiff.last_report(b).computed_steps == ETC_HUGE_12
    etcdiff.disable(a)
    assert not torch.equal(b(12), want)


def test_calling_the_same_pipeline_from_its_own_callback_is_refused() -> None:
    pipe = make_loop_pipeline()
    etcdiff.enable(pipe, etc_huge())

    def again(p, i, t, kwargs):
        p(12)

    with pytest.raises(RuntimeError, match="called again from inside its own generation"):
        pipe(12, callback_on_step_end=again)
    pipe(12)
    assert etcdiff.last_report(pipe).computed_steps == ETC_HUGE_12


# -- the same pipeline from two threads ------------------------------------------------------------------------
def test_the_same_pipeline_from_two_threads_is_refused() -> None:
    pipe = make_loop_pipeline()
    etcdiff.enable(pipe, etc_huge())
    inside, release = threading.Event(), threading.Event()
    results: dict = {}

    def hold(p, i, t, kwargs):
        if i == 2:
            inside.set()
            release.wait(timeout=30)
        return kwargs

    def first() -> None:
        results["first"] = pipe(12, callback_on_step_end=hold)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert inside.wait(timeout=30)
        with pytest.raises(RuntimeError, match="already generating in another thread"):
            pipe(12)
    finally:
        release.set()
        thread.join(timeout=60)
    assert torch.equal(results["first"], pipe(12))
    assert etcdiff.last_report(pipe).computed_steps == ETC_HUGE_12
