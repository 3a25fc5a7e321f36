"""``etcdiff.enable`` on real (tiny, random-weight, offline) diffusers pipelines of every family we target.

Denoiser work is counted independently of etcdiff's report, with two plain torch forward pre-hooks:

* one on the denoiser module itself: it fires on every call the pipeline makes, including the calls the
  etcdiff hook answers with an estimate (torch runs pre-hooks before ``module.forward``, which is where the
  diffusers hook sits), so call ``n`` (0-based) belongs to step ``n // calls_per_step``;
* one on a submodule that runs exactly once per real forward (``TinyPipeline.entry_module``): it fires only
  when the model actually runs, and is attributed to the step of the enclosing call.

Expected schedules are worked out by hand:

* ``FixedInterval(2)`` (warmup 1): steps ``< 1``, the last step, and every second step from step 1.
  8 steps: 0 1 3 5 7;  12 steps: 0 1 3 5 7 9 11.
* ``ETC(threshold=1e9, warmup=2)`` (spec ETC.md, "Consistent trend predictor"; every err passes the huge
  threshold, so k grows by one after each post-warm-up real step): steps 0, 1 are warm-up (1 sets the
  trend, k stays 0); step 2 is real (k = 0 at the end of warm-up), k -> 1: step 3 estimated; step 4 real,
  k -> 2: steps 5, 6 estimated; step 7 real, k -> 3: steps 8, 9, 10 estimated; step 11 is the last step,
  always real. 12 steps: 0 1 2 4 7 11.  8 steps: 0 1 2 4, then 5, 6 estimated and 7 real as the last step:
  0 1 2 4 7.
"""

from __future__ import annotations

import inspect
from collections import Counter

import pytest
import torch

import etcdiff
from tiny_pipelines import FACTORIES, TinyPipeline

FAMILIES = list(FACTORIES)
SCHEDULER_METHODS = ("set_timesteps", "step", "set_begin_index")

FIXED2 = {8: [0, 1, 3, 5, 7], 12: [0, 1, 3, 5, 7, 9, 11]}
ETC_HUGE = {8: [0, 1, 2, 4, 7], 12: [0, 1, 2, 4, 7, 11]}


def etc_huge() -> etcdiff.ETC:
    return etcdiff.ETC(threshold=1e9, warmup=2)


POLICIES = {
    "fixed2": (lambda: etcdiff.FixedInterval(2), FIXED2),
    "etc_huge": (etc_huge, ETC_HUGE),
}


class Boom(Exception):
    pass


@pytest.fixture(params=FAMILIES)
def family(request) -> str:
    return request.param


_BARE: dict[tuple, torch.Tensor] = {}


def bare(family: str, steps: int, **extra) -> torch.Tensor:
    """The output of a fresh pipeline with nothing enabled (the weights are seeded, so any instance gives it)."""
    key = (family, steps, tuple(sorted((k, tuple(v.shape) if isinstance(v, torch.Tensor) else v) for k, v in extra.items())))
    if key not in _BARE:
        _BARE[key] = FACTORIES[family]().run(steps, **extra)
    return _BARE[key]


class ForwardCounter:
    """Counts calls to the denoiser (all of them) and real forwards (by step), independently of etcdiff."""

    def __init__(self, tp: TinyPipeline) -> None:
        self.cps = tp.calls_per_step
        self.reset()
        self.handles = [
            tp.model.register_forward_pre_hook(self._on_call),
            tp.model.get_submodule(tp.entry_module).register_forward_pre_hook(self._on_forward),
        ]

    def _on_call(self, module, args) -> None:
        self.calls += 1

    def _on_forward(self, module, args) -> None:
        self.forward_steps.append((self.calls - 1) // self.cps)

    def reset(self) -> None:
        self.calls = 0
        self.forward_steps: list[int] = []

    @property
    def forwards(self) -> int:
        return len(self.forward_steps)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def check_run(counter: ForwardCounter, report: etcdiff.RunReport, steps: int, expected: list[int]) -> None:
    cps = counter.cps
    assert counter.calls == steps * cps  # every branch of every step goes through the denoiser module
    assert report.num_steps == steps
    assert report.computed_steps == expected
    # exactly calls-per-step real forwards on a computed step, none for any branch on a skipped one
    assert Counter(counter.forward_steps) == {s: cps for s in expected}
    assert counter.forwards == len(expected) * cps
    assert report.model_calls == counter.forwards


def scheduler_methods_in_instance(tp: TinyPipeline) -> set[str]:
    return {n for n in SCHEDULER_METHODS if n in vars(tp.pipe.scheduler)}


# -- the tiny pipelines themselves ---------------------------------------------------------------------------------
def test_bare_pipeline_calls_and_determinism(family: str) -> None:
    tp = FACTORIES[family]()
    counter = ForwardCounter(tp)
    out = tp.run(8)
    assert counter.calls == counter.forwards == 8 * tp.calls_per_step
    assert Counter(counter.forward_steps) == {s: tp.calls_per_step for s in range(8)}
    assert torch.isfinite(out).all()
    assert torch.equal(out, tp.run(8))
    assert torch.equal(out, bare(family, 8))  # a second instance is bitwise the same


# -- policies ------------------------------------------------------------------------------------------------------
def test_nocache_equals_bare(family: str) -> None:
    tp = FACTORIES[family]()
    counter = ForwardCounter(tp)
    etcdiff.enable(tp.pipe, etcdiff.NoCache())
    out = tp.run(8)
    check_run(counter, etcdiff.last_report(tp.pipe), 8, list(range(8)))
    assert torch.equal(out, bare(family, 8))


@pytest.mark.parametrize("policy_name", list(POLICIES))
def test_skipping_schedule(family: str, policy_name: str) -> None:
    make, schedules = POLICIES[policy_name]
    tp = FACTORIES[family]()
    counter = ForwardCounter(tp)
    etcdiff.enable(tp.pipe, make())
    out = tp.run(12)
    check_run(counter, etcdiff.last_report(tp.pipe), 12, schedules[12])
    ref = bare(family, 12)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    assert torch.isfinite(out).all()
    assert not torch.equal(out, ref)  # the estimates were used


# -- state isolation -----------------------------------------------------------------------------------------------
def test_consecutive_calls_with_different_step_counts(family: str) -> None:
    tp = FACTORIES[family]()
    counter = ForwardCounter(tp)
    etcdiff.enable(tp.pipe, etc_huge())
    outs = []
    for steps in (8, 12, 8):
        counter.reset()
        outs.append(tp.run(steps))
        check_run(counter, etcdiff.last_report(tp.pipe), steps, ETC_HUGE[steps])
    assert torch.equal(outs[0], outs[2])
    fresh = FACTORIES[family]()
    etcdiff.enable(fresh.pipe, etc_huge())
    assert torch.equal(outs[1], fresh.run(12))


def test_two_pipelines_enabled_at_once(family: str) -> None:
    # Each alone.
    a_alone, b_alone = FACTORIES[family](), FACTORIES[family]()
    etcdiff.enable(a_alone.pipe, etc_huge())
    etcdiff.enable(b_alone.pipe, etcdiff.FixedInterval(2))
    want_a, want_b = a_alone.run(12), b_alone.run(8)
    rep_a, rep_b = etcdiff.last_report(a_alone.pipe).to_dict(), etcdiff.last_report(b_alone.pipe).to_dict()

    # Both enabled; B runs before A, nested inside A's denoising loop (in the middle of A's step 4, between
    # its branches where it has several), and after A.
    a, b = FACTORIES[family](), FACTORIES[family]()
    etcdiff.enable(a.pipe, etc_huge())
    etcdiff.enable(b.pipe, etcdiff.FixedInterval(2))
    got_b = [b.run(8)]
    assert etcdiff.last_report(b.pipe).to_dict() == rep_b
    calls = [0]
    nest_at = 4 * a.calls_per_step + a.calls_per_step - 1  # the last denoiser call of step 4

    def nested(module, args) -> None:
        if calls[0] == nest_at:
            got_b.append(b.run(8))
        calls[0] += 1

    handle = a.model.register_forward_pre_hook(nested)
    got_a = a.run(12)
    handle.remove()
    assert len(got_b) == 2
    got_b.append(b.run(8))
    assert torch.equal(got_a, want_a)
    assert etcdiff.last_report(a.pipe).to_dict() == rep_a
    for out in got_b:
        assert torch.equal(out, want_b)
    assert etcdiff.last_report(b.pipe).to_dict() == rep_b


def test_batch_of_two(family: str) -> None:
    tp = FACTORIES[family]()
    two = tp.batch_kwargs(2)
    counter = ForwardCounter(tp)
    etcdiff.enable(tp.pipe, etcdiff.NoCache())
    out = tp.run(8, **two)
    check_run(counter, etcdiff.last_report(tp.pipe), 8, list(range(8)))
    ref = bare(family, 8, **two)
    assert out.shape[0] == 2 * bare(family, 8).shape[0]
    assert torch.equal(out, ref)

    etcdiff.enable(tp.pipe, etc_huge())
    counter.reset()
    out = tp.run(8, **two)
    check_run(counter, etcdiff.last_report(tp.pipe), 8, ETC_HUGE[8])
    assert out.shape == ref.shape and torch.isfinite(out).all()


@pytest.mark.parametrize("where", ["step_end_callback", "denoiser_mid_step"])
def test_call_that_raises_halfway_then_normal_call(family: str, where: str) -> None:
    ref = FACTORIES[family]()
    etcdiff.enable(ref.pipe, etc_huge())
    want = ref.run(12)
    want_report = etcdiff.last_report(ref.pipe).to_dict()

    tp = FACTORIES[family]()
    counter = ForwardCounter(tp)
    etcdiff.enable(tp.pipe, etc_huge())
    tp.run(8)  # a finished generation first, with another step count
    if where == "step_end_callback":
        def at_step_end(i: int) -> None:
            if i == 3:
                raise Boom

        with pytest.raises(Boom):
            tp.run(12, **tp.step_end_kwargs(at_step_end))
    else:
        calls = [0]
        raise_at = 4 * tp.calls_per_step + tp.calls_per_step - 1  # last branch of step 4, a computed step

        def raising(module, args) -> None:
            calls[0] += 1
            if calls[0] - 1 == raise_at:
                raise Boom

        handle = tp.model.register_forward_pre_hook(raising)
        with pytest.raises(Boom):
            tp.run(12)
        handle.remove()
    assert etcdiff.is_enabled(tp.pipe)

    counter.reset()
    out = tp.run(12)
    check_run(counter, etcdiff.last_report(tp.pipe), 12, ETC_HUGE[12])
    assert torch.equal(out, want)
    assert etcdiff.last_report(tp.pipe).to_dict() == want_report


# -- enable / disable ----------------------------------------------------------------------------------------------
def _snapshot(tp: TinyPipeline) -> dict:
    model, sched = tp.model, tp.pipe.scheduler
    registry = getattr(model, "_diffusers_hook", None)
    return {
        "model_attrs": set(vars(model)),
        "forward_in_instance": "forward" in vars(model),
        "has_registry": registry is not None,
        "registry_hooks": list(registry._hook_order) if registry is not None else None,
        "scheduler_attrs": set(vars(sched)),
        "scheduler_methods": scheduler_methods_in_instance(tp),
        "signatures": {n: inspect.signature(getattr(sched, n)) for n in SCHEDULER_METHODS if hasattr(sched, n)},
    }


def test_disable_restores_the_original(family: str) -> None:
    tp = FACTORIES[family]()
    fresh = _snapshot(tp)
    assert not fresh["forward_in_instance"] and not fresh["scheduler_methods"]

    etcdiff.enable(tp.pipe, etc_huge())
    assert "forward" in vars(tp.model)
    assert {"set_timesteps", "step"} <= scheduler_methods_in_instance(tp)
    etcdiff.disable(tp.pipe)
    assert _snapshot(tp) == fresh
    assert not fresh["has_registry"] and not hasattr(tp.model, "_diffusers_hook")

    # After a bare call (Flux and Wan pipelines create a hook registry themselves through cache_context) and
    # generations under two policies in a row (enabling again replaces the policy).
    assert torch.equal(tp.run(8), bare(family, 8))
    before = _snapshot(tp)
    etcdiff.enable(tp.pipe, etc_huge())
    tp.run(8)
    etcdiff.enable(tp.pipe, etcdiff.FixedInterval(2))
    tp.run(8)
    assert etcdiff.last_report(tp.pipe).computed_steps == FIXED2[8]
    etcdiff.disable(tp.pipe)
    assert _snapshot(tp) == before
    assert not etcdiff.is_enabled(tp.pipe)
    # the last report outlives disable (e.g. the end of `with etcdiff.enabled(...)`)
    assert etcdiff.last_report(tp.pipe).computed_steps == FIXED2[8]
    etcdiff.disable(tp.pipe)  # a second disable is a no-op
    assert etcdiff.last_report(tp.pipe).computed_steps == FIXED2[8]
    counter = ForwardCounter(tp)
    assert torch.equal(tp.run(8), bare(family, 8))
    assert counter.forwards == 8 * tp.calls_per_step


def test_enabled_context_manager(family: str) -> None:
    tp = FACTORIES[family]()
    tp.run(8)  # so that the scheduler has all the attributes a run sets
    before = _snapshot(tp)
    with etcdiff.enabled(tp.pipe, etcdiff.FixedInterval(2)) as policy:
        assert isinstance(policy, etcdiff.FixedInterval)
        assert etcdiff.is_enabled(tp.pipe)
        tp.run(8)
        assert etcdiff.last_report(tp.pipe).computed_steps == FIXED2[8]
    assert not etcdiff.is_enabled(tp.pipe)
    assert _snapshot(tp) == before
    assert "forward" not in vars(tp.model)

    def at_step_end(i: int) -> None:
        if i == 3:
            raise Boom

    with pytest.raises(Boom):
        with etcdiff.enabled(tp.pipe, etc_huge()):
            tp.run(8, **tp.step_end_kwargs(at_step_end))  # raises inside the generation
    assert not etcdiff.is_enabled(tp.pipe)
    assert _snapshot(tp) == before

    with pytest.raises(Boom):
        with etcdiff.enabled(tp.pipe, etc_huge()):
            tp.run(8)
            raise Boom  # raises in the body, between generations
    assert not etcdiff.is_enabled(tp.pipe)
    assert _snapshot(tp) == before
    assert torch.equal(tp.run(8), bare(family, 8))


def test_scheduler_signatures_are_kept(family: str) -> None:
    # Pipelines inspect them: retrieve_timesteps checks `sigmas`/`timesteps` in set_timesteps' parameters,
    # prepare_extra_step_kwargs checks `eta`/`generator` in step's.
    tp = FACTORIES[family]()
    sched = tp.pipe.scheduler
    want = {n: inspect.signature(getattr(sched, n)) for n in SCHEDULER_METHODS if hasattr(sched, n)}
    with etcdiff.enabled(tp.pipe, etcdiff.NoCache()):
        got = {n: inspect.signature(getattr(sched, n)) for n in want}
    assert got == want


@pytest.mark.parametrize(
    "family_name, scheduler_cls, extra",
    [("sdxl", "EulerAncestralDiscreteScheduler", {}), ("pixart", "DDIMScheduler", {"eta": 1.0})],
    ids=["sdxl-euler-ancestral-generator", "pixart-ddim-eta1"],
)
def test_stochastic_scheduler_nocache_equals_bare(family_name: str, scheduler_cls: str, extra: dict) -> None:
    # The pipeline passes `generator` / `eta` to scheduler.step only if step's signature names them.
    import diffusers

    def make() -> TinyPipeline:
        tp = FACTORIES[family_name]()
        tp.pipe.scheduler = getattr(diffusers, scheduler_cls).from_config(tp.pipe.scheduler.config)
        return tp

    want = make().run(8, **extra)
    tp = make()
    with etcdiff.enabled(tp.pipe, etcdiff.NoCache()):
        out = tp.run(8, **extra)
    assert torch.equal(out, want)


# -- errors --------------------------------------------------------------------------------------------------------
def test_enable_on_a_non_pipeline() -> None:
    with pytest.raises(TypeError, match="no denoiser"):
        etcdiff.enable(object(), etcdiff.ETC(0.1))


def test_warmup_longer_than_the_run(family: str) -> None:
    tp = FACTORIES[family]()
    counter = ForwardCounter(tp)
    etcdiff.enable(tp.pipe, etcdiff.ETC(0.1, warmup=10))
    with pytest.raises(ValueError, match="warmup"):
        tp.run(8)
    assert counter.forwards == 0
    assert etcdiff.is_enabled(tp.pipe)
    # The next call works normally: 12 steps, warm-up 0..9, step 10 real (k = 0), step 11 the last one.
    counter.reset()
    out = tp.run(12)
    check_run(counter, etcdiff.last_report(tp.pipe), 12, list(range(12)))
    assert torch.equal(out, bare(family, 12))
    etcdiff.disable(tp.pipe)
    assert torch.equal(tp.run(8), bare(family, 8))
