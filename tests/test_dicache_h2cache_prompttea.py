"""DiCache, H2-Cache and PromptTea: the rules on scripted traces worked out by hand, and on tiny models end to end.

The tiny models are those of :mod:`test_block_peers` (random weights, offline); block runs are counted with plain
forward pre-hooks on the real blocks, independently of etcdiff's reports.
"""

from __future__ import annotations

import math

import pytest
import torch

import etcdiff
from etcdiff.integration.block.cache import block_cache_report, disable_block_cache, enable_block_cache
from etcdiff.integration.block.prompttea_calibration import calibrate_prompttea
from etcdiff.policies.block.base import Stage
from etcdiff.policies.block.dicache import DiCache
from etcdiff.policies.block.h2cache import H2Cache, thumbnail
from etcdiff.policies.block.prompttea import PromptTea, complexity_weight, fit_prompt_references
from etcdiff.policies.block.teacache import IDENTITY_COEFFICIENTS
from test_block_peers import BLOCK_LISTS, Counter, build, module_state

HUGE = 1e9


def _s(v: float) -> dict[str, torch.Tensor]:
    return {"hidden_states": torch.full((1, 2, 3), float(v))}


# ---------------------------------------------------------------------------------------------------------------
# Rules on scripted traces
# ---------------------------------------------------------------------------------------------------------------
def test_dicache_trace_by_hand():
    # N 8, retention 0.2 -> steps <= int(1.6) = 1 and the last step run; threshold 0.5; stack input x = 0, so the
    # probe residual is the probe output p and the stack residual the output e.
    # p: 1, 2, 2.4, 2.88, 3.6, 3.6, 3.6, 3.6 -> delta_y at s2 .4/2 = .2 (acc .2 skip), s3 .48/2.4 = .2 (acc .4 skip),
    # s4 .72/2.88 = .25 (acc .65 >= .5: compute, reset), s5 0 skip, s6 0 skip, s7 last step: compute.
    # Reuse: s2 gamma = |2.4 - 1| / |2 - 1| = 1.4 -> 10 + 1.4 * (12 - 10) = 12.8; s3 gamma 1.88 clipped to 1.5 -> 13;
    # after s4 (e 20) R = [12, 20], P = [2, 3.6]: s5 gamma = |3.6 - 2| / |3.6 - 2| = 1 -> 12 + 8 = 20.
    rule = DiCache(threshold=0.5, retention_ratio=0.2)
    assert rule.stages([2, 3]) == [Stage(0, 1, 5)]
    rule.begin(8)
    state = rule.new_state()
    probes, ends = [1, 2, 2.4, 2.88, 3.6, 3.6, 3.6, 3.6], {0: 10, 1: 12, 4: 20, 7: 30}
    computed, reused = [], {}
    for step, p in enumerate(probes):
        x = _s(0.0)
        if rule.decide_stage(state, 0, step, x, _s(p)):
            computed.append(step)
            rule.record(state, 0, x, _s(p), _s(ends[step]))
        else:
            reused[step] = float(rule.reuse(state, 0, x, _s(p))["hidden_states"][0, 0, 0])
    assert computed == [0, 1, 4, 7]
    assert reused == pytest.approx({2: 12.8, 3: 13.0, 5: 20.0, 6: 20.0})
    # threshold 0: nothing is ever below it
    rule0 = DiCache(threshold=0.0, retention_ratio=0.0)
    rule0.begin(5)
    st = rule0.new_state()
    assert all(rule0.decide_stage(st, 0, s, _s(0), _s(1 + s)) or rule0.record(st, 0, _s(0), _s(1 + s), _s(2)) is None
               for s in range(5))
    with pytest.raises(ValueError, match="probe_depth"):
        DiCache(probe_depth=0)


def test_h2cache_stages_thumbnail_and_trace_by_hand():
    rule = H2Cache(threshold=0.1, threshold_2=0.05, pool_tokens=4, pool_tokens_2=4)
    # FLUX (double, single lists): one stage per list; one list: cut at the middle block
    assert rule.stages([2, 3]) == [Stage(0, 1, 2), Stage(2, 3, 5)]
    assert rule.stages([4]) == [Stage(0, 1, 2), Stage(2, 3, 4)]
    assert rule.stages([1, 1]) == [Stage(0, 1, 1), Stage(1, 2, 2)]  # nothing after either probe
    # thumbnail of 8 tokens x 4 channels at 4 tokens: kernel 8 // 4 = 2, 2x2 means
    r = torch.arange(32.0).reshape(1, 8, 4)
    assert thumbnail(r, 4)[0, 0, 0].tolist() == [(0 + 1 + 4 + 5) / 4, (2 + 3 + 6 + 7) / 4]
    assert thumbnail(r, 100).shape == (1, 1, 8, 4)  # kernel at least 1
    # first-block residuals r (stage input 0, so r = probe output); stage 1 compares with the residual stored at
    # its last miss:
    # s0 stage 1: nothing stored -> miss (store 1.0) | stage 2: miss (store 1.0)
    # s1 stage 1: |1 - 1.05| / 1 = .05 < .1 hit | stage 2: forced by the stage-1 hit
    # s2 stage 1: .2 -> miss (store 1.2) | stage 2: |1 - 1.03| = .03 < .05 hit
    # s3 stage 1: |1.2 - 1.2| = 0 hit | stage 2: forced
    rule.begin(4)
    state = rule.new_state()
    runs = {0: [], 1: []}
    for step, (r1, r2) in enumerate([(1.0, 1.0), (1.05, 0.5), (1.2, 1.03), (1.2, 9.0)]):
        for k, r_k in ((0, r1), (1, r2)):
            if rule.decide_stage(state, k, step, _s(0), _s(r_k)):
                runs[k].append(step)
                rule.record(state, k, _s(0), _s(r_k), _s(r_k + 5))
            else:
                assert float(rule.reuse(state, k, _s(0), _s(r_k))["hidden_states"][0, 0, 0]) == pytest.approx(r_k + 5)
    assert runs == {0: [0, 2], 1: [0]}
    h = H2Cache(threshold=0.0)  # threshold 0: every check misses
    h.begin(3)
    st = h.new_state()
    for step in range(3):
        assert h.decide_stage(st, 0, step, _s(0), _s(1))
        h.record(st, 0, _s(0), _s(1), _s(2))


def test_prompttea_threshold_by_prompt_and_trace_by_hand():
    s, c = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    # r = cos_c / (cos_s + cos_c): 0 for the simple reference, 1 for the complex one, .5 halfway
    assert complexity_weight(s, s, c, 50.0) == pytest.approx(1 / (1 + math.exp(25)))
    assert complexity_weight(c, s, c, 50.0) == pytest.approx(1 / (1 + math.exp(-25)))
    assert complexity_weight(torch.tensor([1.0, 1.0]), s, c, 50.0) == pytest.approx(0.5)
    assert complexity_weight(-s - c, s, c, 50.0) == pytest.approx(0.5)  # both cosines negative: counted as 0
    rule = PromptTea(threshold=0.5, complex_ratio=0.4, coefficients=IDENTITY_COEFFICIENTS,
                     simple_reference=s.tolist(), complex_reference=c.tolist())
    rule.begin(6)
    # two prompts in a call named "cond", a simple and a complex one: thresholds ~.5 and ~.2; the generation uses
    # the lowest positive one for all samples and branches; change .15 per step, poly(x) = x:
    # s0 first step | s1 acc [.15, .15] skip | s2 [.3, .3]: .3 >= .2 compute, reset | s3 skip | s4 compute | s5 last
    state = rule.new_state()
    rule.set_condition(state, torch.stack([s, c]), "cond")
    assert state.thresholds == pytest.approx([0.5, 0.2])
    rule.set_condition(rule.new_state(), c[None], "uncond")  # a complex negative prompt changes nothing
    assert rule.generation_thresholds == pytest.approx([0.5, 0.2])
    assert [k for k in range(6) if rule.decide(state, k, None if k == 0 else [0.15, 0.15])] == [0, 2, 4, 5]
    # a generation of the simple prompt alone: acc .15 .3 .45 skip, .6 >= .5 compute at s4, s5 last
    rule.begin(6)
    state = rule.new_state()
    rule.set_condition(state, torch.stack([c, s]))  # batched CFG [negative, positive]: the positive is simple
    assert state.thresholds == pytest.approx([0.2, 0.5]) and rule.generation_thresholds == pytest.approx([0.5])
    assert [k for k in range(6) if rule.decide(state, k, None if k == 0 else [0.15, 0.15])] == [0, 4, 5]
    # references: mean embeddings of the calmer and the busier half of the trajectories
    simple, complex_ = fit_prompt_references([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0], [6.0, 7.0]], [0.4, 0.1, 0.3, 0.2])
    # calm: [2, 3] (.1) and [6, 7] (.2) -> [4, 5]; busy: [4, 5] (.3) and [0, 1] (.4) -> [2, 3]
    assert simple == [4.0, 5.0] and complex_ == [2.0, 3.0]
    with pytest.raises(RuntimeError, match="etcdiff calibrate --method prompttea"):
        PromptTea().threshold_for(torch.ones(2))
    with pytest.raises(ValueError, match="both"):
        PromptTea(simple_reference=[1.0])


# ---------------------------------------------------------------------------------------------------------------
# Tiny models end to end
# ---------------------------------------------------------------------------------------------------------------
def _end_to_end(family: str, make_rule, expected: dict[str, list[int]], block_runs: dict[int, int], steps: int = 6):
    """Threshold 0 is the plain output bit for bit; the huge threshold gives ``expected`` (computed steps per
    branch) and ``block_runs`` (real forwards per block); disable restores the model and the output."""
    pipe, kw, run, calls, head, tail, branches = build(family)
    model = pipe.transformer
    ref = run(steps)
    before = module_state(model)
    counter = Counter(model, head, tail, BLOCK_LISTS[family])
    enable_block_cache(pipe, make_rule(0.0))
    counter.reset()
    assert torch.equal(run(steps), ref)
    assert all(c == steps * calls for c in counter.counts.values())
    enable_block_cache(pipe, make_rule(HUGE))
    counter.reset()
    out = run(steps)
    rep = block_cache_report(pipe)
    assert {b: v["computed"] for b, v in rep.branches.items()} == expected
    assert {i: counter.counts[i] for i in block_runs} == block_runs
    assert counter.counts["head"] == counter.counts["tail"] == steps * calls
    assert not torch.equal(out, ref) and torch.isfinite(out).all()
    disable_block_cache(pipe)
    counter.remove()
    assert module_state(model) == before and torch.equal(run(steps), ref)


def test_dicache_on_flux_and_dit():
    # 6 steps, retention int(0.2 * 6) = 1: steps 0, 1 and 5 run the stack; the probe (block 0) runs every call
    _end_to_end("flux_cfg", lambda t: DiCache(t), {"cond": [0, 1, 5], "uncond": [0, 1, 5]}, {0: 12, 1: 6})
    _end_to_end("dit", lambda t: DiCache(t, probe_depth=2), {"call0": [0, 1, 5]}, {0: 6, 1: 6, 2: 3, 3: 3})


def test_h2cache_on_dit():
    # 4 blocks: stages [0, 1 | 2) and [2, 3 | 4); from step 1 on both checks hit (the second forced by the first):
    # blocks 0 and 2 (the first blocks) run every step, blocks 1 and 3 at step 0 only
    _end_to_end("dit", lambda t: H2Cache(t), {"call0": [0]}, {0: 6, 1: 1, 2: 6, 3: 1})
    pipe, kw, run, *_ = build("dit")
    enable_block_cache(pipe, H2Cache(HUGE))
    run(4)
    assert block_cache_report(pipe).branches["call0"]["stage1_skipped"] == [1, 2, 3]
    disable_block_cache(pipe)


def test_prompttea_calibrated_on_dit_then_by_name(tmp_path):
    pipe, kw, run, *_ = build("dit")
    cal = calibrate_prompttea(pipe, [{"prompt": ["3", "5"]}, {"prompt": ["7"]}], steps=5, seed=0, guidance_scale=2.0)
    # batched CFG: (2 + 2) + (1 + 1) samples, one trajectory each; a DiT label embedding of 128 values
    assert len(cal.embeddings) == len(cal.output_changes) == 6 and len(cal.simple_reference) == 128
    assert len(cal.coefficients) == 5 and all(math.isfinite(c) for c in cal.output_changes)
    _end_to_end("dit", lambda t: PromptTea(t, **cal.settings()), {"call0": [0, 5]}, {0: 2, 3: 2})
    with pytest.raises(ValueError, match="at least two calibration trajectories"):  # one prompt, no guidance
        calibrate_prompttea(pipe, [{"prompt": ["3"]}], steps=5, guidance_scale=1.0)


def test_block_rules_refuse_a_unet_naming_what_runs():
    from tiny_matrix_pipelines import make_sd15_ddim

    tp = make_sd15_ddim()
    for name in ("dicache", "h2cache"):
        with pytest.raises(NotImplementedError, match=r"UNet2DConditionModel.*Methods that run on it: etc.*deepcache"):
            etcdiff.enable(tp.pipe, name)


def test_every_block_rule_follows_the_protocol():
    from etcdiff.integration.block.cache import BLOCK_RULES
    from etcdiff.policies.block.base import BlockRule, StagedBlockRule, is_staged

    for name, cls in BLOCK_RULES.items():
        rule = cls()
        assert rule.name == name and isinstance(rule, StagedBlockRule if is_staged(rule) else BlockRule), name
    assert sorted(n for n, c in BLOCK_RULES.items() if is_staged(c())) == ["dicache", "h2cache"]
    with pytest.raises(TypeError, match="rule object .*DiCache.*or a name"):
        enable_block_cache(build("dit")[0], object())
