"""The methods of issue 26 on every class of the tiny pipeline matrix (:mod:`tiny_matrix_pipelines`).

For each class, each method either runs or is refused with a line naming the methods that run there. Where it
runs: a setting that reuses nothing gives the plain output bit for bit, a setting that reuses as much as the
method allows gives the schedule worked out below (counted with plain forward pre-hooks, independently of
etcdiff's reports), and ``etcdiff.disable`` gives the plain output back.

Hand-worked schedules on N loop steps with C denoiser calls per step:

* ``dicache`` (threshold huge, retention 0.2): per branch the stack runs at steps ``<= int(0.2 N)`` and ``N - 1``;
  its probe (block 0) runs on every call.
* ``h2cache`` (threshold huge): both first-block checks hit from step 1 on; on these tiny models no stage has a
  block after its first one (FLUX 1 + 1 blocks, the others 2 blocks cut in two halves), so every block runs
  on every call: nothing to skip, as the method says (the skips are tested on a 4-block DiT elsewhere).
* ``prompttea`` (threshold huge): TeaCache's first and last steps only.
* ``diffusers-pab`` (every 2nd call, all timesteps): each hooked attention runs on calls 0, 2, 4, ... of the
  generation, whichever branch makes them.
* ``diffusers-fastercache`` (defaults): each hooked attention runs on call k unless the timestep is inside
  (-1, 681) and k is odd (k > 0); it is refused where the first timestep is already inside that range.
* ``diffusers-seacache`` (threshold huge; Wan text-to-video): step 0 runs, at most 2 cached steps in a row, the
  last step runs: steps 0, 3, 6, 7 of 8; per expert on Wan 2.2, whose second expert starts afresh.
* ``deepcache`` (interval 3): the deep branch (the mid block) runs at steps 0, 3, 6, ...
"""

from __future__ import annotations

import logging

import pytest
import torch

import etcdiff
from etcdiff.integration.block.conditions import condition_embedding
from etcdiff.integration.external.diffusers_more_caches import _attentions
from etcdiff.integration.external.support import EXTERNAL_PEERS, supported_external_peers
from tiny_matrix_pipelines import MATRIX_FACTORIES, TinyPipeline

STEPS = 8
BLOCK_FAMILIES = {"flux", "flux_img2img", "flux_kontext", "sd3", "sd3_img2img", "pixart", "wan", "wan22"}
NEW_PEERS = ("diffusers-seacache", "diffusers-fastercache", "diffusers-pab", "deepcache")
NO_REUSE = {"dicache": {"threshold": 0.0}, "h2cache": {"threshold": 0.0}, "prompttea": {"threshold": 0.0},
            "diffusers-pab": {"spatial_attention_block_skip_range": 1},
            "diffusers-fastercache": {"spatial_attention_timestep_skip_range": (0, 0)},
            "diffusers-seacache": {"threshold": 0.0}, "deepcache": {"cache_interval": 1}}
REUSE = {"dicache": {"threshold": 1e9}, "h2cache": {"threshold": 1e9}, "prompttea": {"threshold": 1e9},
         "diffusers-pab": {"spatial_attention_block_skip_range": 2, "spatial_attention_timestep_skip_range": (-2, 1e6)},
         "diffusers-fastercache": {}, "diffusers-seacache": {"threshold": 1e9}, "deepcache": {"cache_interval": 3}}
# Cosmos and Stable Audio (EDM) start near timestep 1 and Mochi at 0: inside FasterCache's (-1, 681), where its first call would
# reuse an empty cache
FASTERCACHE_REFUSED = {"cosmos", "mochi", "stable_audio"}
SEACACHE = {"wan": [0, 3, 6, 7], "wan22": [0, 3, 4, 7]}  # Wan 2.2: the second expert takes over at step 4


class Pre:
    """Forward pre-hook counts on a module, with the timestep of the step each call belongs to."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.n = 0
        self.handle = module.register_forward_pre_hook(self._hook)

    def _hook(self, *_: object) -> None:
        self.n += 1


def _denoisers(tp: TinyPipeline) -> list[torch.nn.Module]:
    names = ("transformer", "transformer_2") if getattr(tp.pipe, "transformer", None) is not None else ("unet",)
    return [getattr(tp.pipe, n) for n in names if isinstance(getattr(tp.pipe, n, None), torch.nn.Module)]


def _first_linear(module: torch.nn.Module) -> torch.nn.Module:
    return next(m for m in module.modules() if isinstance(m, torch.nn.Linear))


def _prompttea_refs(tp: TinyPipeline, steps: int) -> dict[str, list[float]]:
    """References around the model's own prompt embedding (the real calibration is tested on DiT)."""
    from etcdiff.integration.block.proxy import _bind, _signature

    block = _stack(_denoisers(tp)[0])[0][0]
    names, seen = _signature(block), []
    h = block.register_forward_pre_hook(lambda m, a, kw: seen.append(condition_embedding(m, _bind(names, a, kw))),
                                        with_kwargs=True)
    tp.run(steps)
    h.remove()
    e = seen[0][-1]
    return {"simple_reference": e.tolist(), "complex_reference": (-e).tolist()}


def _stack(model: torch.nn.Module) -> list[torch.nn.ModuleList]:
    return [getattr(model, n) for n in ("transformer_blocks", "single_transformer_blocks", "blocks")
            if isinstance(getattr(model, n, None), torch.nn.ModuleList)]


def _check_block_method(tp: TinyPipeline, method: str, plain: torch.Tensor, n: int) -> None:
    from etcdiff.integration.block.cache import BLOCK_RULES

    extra = {**_prompttea_refs(tp, STEPS), "coefficients": [1.0, 0.0]} if method == "prompttea" else {}
    models = _denoisers(tp)
    lengths = [len(lst) for lst in _stack(models[0])]
    rule = BLOCK_RULES[method]()
    skippable = not hasattr(rule, "stages") or any(st.skippable for st in rule.stages(lengths))
    first = Pre(_stack(models[0])[0][0])
    lasts = [Pre(_stack(m)[-1][-1]) for m in models]
    etcdiff.enable(tp.pipe, method, **NO_REUSE[method], **extra)
    assert torch.equal(tp.run(STEPS), plain)
    etcdiff.enable(tp.pipe, method, **REUSE[method], **extra)
    first.n = 0
    for p in lasts:
        p.n = 0
    out = tp.run(STEPS)
    rep = etcdiff.last_report(tp.pipe)
    expected = {"dicache": [s for s in range(n) if s <= int(0.2 * n) or s == n - 1],
                "h2cache": [0], "prompttea": [0, n - 1]}[method] if skippable else list(range(n))
    for name, br in rep.branches.items():
        if name.startswith("transformer_2/"):
            continue  # Wan 2.2's second expert starts part-way; its own schedule is not the one above
        assert br["computed"] == [s for s in expected if s in br["computed"] + br["skipped"]], name
    assert sum(p.n for p in lasts) == rep.stack_runs and torch.isfinite(out).all()
    if method == "dicache" and tp.name != "wan22":
        assert first.n == n * tp.calls_per_step  # the probe runs on every call
    etcdiff.disable(tp.pipe)
    for p in [first, *lasts]:
        p.handle.remove()


def _check_peer(tp: TinyPipeline, peer: str, plain: torch.Tensor, n: int) -> None:
    from diffusers.hooks._common import _SPATIAL_TRANSFORMER_BLOCK_IDENTIFIERS

    def probe(model: torch.nn.Module) -> torch.nn.Module:
        if peer == "deepcache":
            return model.mid_block.resnets[0]
        found = _attentions(model, _SPATIAL_TRANSFORMER_BLOCK_IDENTIFIERS, anchored=peer == "diffusers-fastercache")
        return _first_linear(model.get_submodule(found[0]))

    counts = [Pre(probe(m)) for m in _denoisers(tp)]
    calls_each = [Pre(m) for m in _denoisers(tp)]
    etcdiff.enable(tp.pipe, peer, **NO_REUSE[peer])
    assert torch.equal(tp.run(STEPS), plain)
    etcdiff.enable(tp.pipe, peer, **REUSE[peer])
    for p in counts + calls_each:
        p.n = 0
    if peer == "diffusers-fastercache" and tp.name in FASTERCACHE_REFUSED:
        with pytest.raises(ValueError, match="cannot start inside its reuse range"):
            tp.run(STEPS)
    else:
        out = tp.run(STEPS)
        c, runs, calls = tp.calls_per_step, [p.n for p in counts], [p.n for p in calls_each]
        if peer == "diffusers-pab":  # per attention module: calls 0, 2, 4, ... of its model
            assert runs == [(k + 1) // 2 for k in calls]
        elif peer == "deepcache":
            assert runs == [len(range(0, n, 3)) * c]
        elif peer == "diffusers-seacache":
            assert sum(runs) == len(SEACACHE[tp.name]) * c
        else:
            assert 0 < sum(runs) < sum(calls)
        assert torch.isfinite(out).all()
    etcdiff.disable(tp.pipe)
    for p in counts + calls_each:
        p.handle.remove()


@pytest.mark.parametrize("name", list(MATRIX_FACTORIES))
def test_new_methods_on_pipeline(name: str) -> None:
    logging.getLogger("diffusers").setLevel(logging.ERROR)
    tp = MATRIX_FACTORIES[name]()
    steps = 4 if name == "lcm" else STEPS
    assert steps == STEPS or name == "lcm"
    calls = Pre(_denoisers(tp)[0])
    plain = tp.run(STEPS)
    n = calls.n // tp.calls_per_step if name != "wan22" else STEPS
    calls.handle.remove()
    for method in ("dicache", "h2cache", "prompttea"):
        if name in BLOCK_FAMILIES:
            _check_block_method(tp, method, plain, n)
        else:
            with pytest.raises(NotImplementedError, match=r"Methods that run on it: etc, .*"):
                etcdiff.enable(tp.pipe, method, **NO_REUSE[method])
    runs = supported_external_peers(tp.pipe)
    for peer in NEW_PEERS:
        if peer in runs:
            _check_peer(tp, peer, plain, n)
        else:
            with pytest.raises(NotImplementedError, match=rf"{peer} cannot run on .*Methods that run on it: etc"):
                etcdiff.enable(tp.pipe, peer)
    assert torch.equal(tp.run(STEPS), plain)
    assert set(runs) <= set(EXTERNAL_PEERS)
