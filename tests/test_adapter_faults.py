"""The block caches and external peers where they used to go wrong (issue 9): two-expert models, two pipelines
of one class, a shared denoiser, saving an enabled pipeline, models a peer cannot run on.

Work is counted independently of etcdiff's reports with plain torch forward pre-hooks on the first attention
projection of the middle block of each expert.
"""

from __future__ import annotations

import logging
import tempfile
from typing import Any

import pytest
import torch

import etcdiff
from etcdiff.integration.external.peers import disable_external, enable_external, external_report
from test_block_peers import build, module_state
from tiny_matrix_pipelines import make_flux2, make_sd15_ddim, make_wan22

STEPS = 6
CACHE_DIT = dict(Fn_compute_blocks=1, Bn_compute_blocks=0, residual_diff_threshold=10.0, max_warmup_steps=1)


@pytest.fixture(autouse=True)
def _quiet_cache_dit():
    logging.disable(logging.WARNING)  # cache-dit logs every enable at INFO/WARNING
    yield
    logging.disable(logging.NOTSET)


class ExpertCounts:
    """Per step: the calls of each expert, and the real runs of its middle block."""

    def __init__(self, pipe: Any, num_steps: int) -> None:
        self.calls = {n: [0] * num_steps for n in ("transformer", "transformer_2")}
        self.runs = {n: [0] * num_steps for n in ("transformer", "transformer_2")}
        self.step = 0
        self.handles = []
        for name in self.calls:
            model = getattr(pipe, name)
            self.handles.append(model.register_forward_pre_hook(self._inc(self.calls[name])))
            # a layer inside the block: a skipped block's own pre-hooks may still fire (diffusers' hooks replace
            # its forward), the layers inside it do not run
            self.handles.append(model.blocks[1].attn1.to_q.register_forward_pre_hook(self._inc(self.runs[name])))

    def _inc(self, counts: list[int]) -> Any:
        def hook(module: Any, args: Any) -> None:
            counts[self.step] += 1
        return hook

    def on_step_end(self, pipe: Any, i: int, t: Any, kwargs: dict) -> dict:
        self.step = i + 1
        return kwargs

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _run_counted(tp: Any) -> tuple[torch.Tensor, ExpertCounts]:
    counts = ExpertCounts(tp.pipe, STEPS + 1)
    try:
        out = tp.run(STEPS, callback_on_step_end=counts.on_step_end)
    finally:
        counts.remove()
    return out, counts


# -- item 4: both experts of Wan 2.2 --------------------------------------------------------------------------------
@pytest.mark.parametrize("peer,kwargs", [("diffusers-fbc", {"threshold": 10.0}), ("cache-dit", CACHE_DIT)])
def test_external_peer_on_both_wan22_experts(peer: str, kwargs: dict) -> None:
    if peer == "cache-dit":
        pytest.importorskip("cache_dit")
    tp = make_wan22()
    plain, bare = _run_counted(tp)
    switch = bare.calls["transformer_2"].index(2)  # the first low-noise step
    assert 0 < switch < STEPS and bare.calls["transformer"][:switch] == [2] * switch
    experts = {n: getattr(tp.pipe, n) for n in ("transformer", "transformer_2")}
    before = {n: module_state(m) for n, m in experts.items()}

    enable_external(tp.pipe, peer, **kwargs)
    _, counts = _run_counted(tp)
    # a huge threshold: each expert runs its stack on its first step (cond and uncond) and skips it afterwards;
    # before the fix transformer_2 had no cache and ran every call
    assert counts.runs["transformer"][:STEPS] == [2] + [0] * (STEPS - 1)
    assert counts.runs["transformer_2"][:STEPS] == [0] * switch + [2] + [0] * (STEPS - switch - 1)
    report = external_report(tp.pipe)
    assert report.per_step_calls == [2] * STEPS  # both experts' forwards are counted
    both = [a + b for a, b in zip(counts.runs["transformer"], counts.runs["transformer_2"])]
    assert report.per_step_stack_runs == both[:STEPS]

    disable_external(tp.pipe)
    assert {n: module_state(m) for n, m in experts.items()} == before
    assert "forward" not in vars(experts["transformer_2"])
    assert torch.equal(tp.run(STEPS), plain)


def test_block_cache_on_both_wan22_experts() -> None:
    # TeaCache, poly(x) = x, a huge threshold: each expert's branches (cond, uncond) compute on their first call
    # (no residual yet: the other expert's residual is not reused) and on the last step, and skip the rest
    tp = make_wan22()
    plain, bare = _run_counted(tp)
    switch = bare.calls["transformer_2"].index(2)
    etcdiff.enable(tp.pipe, "teacache", threshold=1e9, coefficients=[0.0, 0.0, 0.0, 1.0, 0.0])
    _, counts = _run_counted(tp)
    assert counts.runs["transformer"][:STEPS] == [2] + [0] * (STEPS - 1)
    assert counts.runs["transformer_2"][:STEPS] == [0] * switch + [2] + [0] * (STEPS - switch - 2) + [2]
    assert etcdiff.last_report(tp.pipe).computed_steps == [0, switch, STEPS - 1]
    etcdiff.disable(tp.pipe)
    assert torch.equal(tp.run(STEPS), plain)


# -- item 6: cache-dit on two pipelines of one class ----------------------------------------------------------------
def test_cache_dit_on_two_pipelines_of_one_class() -> None:
    pytest.importorskip("cache_dit")
    a, _, run_a, *_ = build("dit")
    b, _, run_b, *_ = build("dit")
    cls = type(a)
    cls_before = dict(vars(cls))
    plain = run_a(5)
    assert torch.equal(run_b(5), plain)  # same seeded weights

    enable_external(a, "cache-dit", **CACHE_DIT)
    enable_external(b, "cache-dit", **CACHE_DIT)
    cached_b = run_b(5)
    assert not torch.equal(cached_b, plain)
    assert torch.equal(run_a(5), cached_b)
    disable_external(a)  # must not touch b's cache-dit
    assert torch.equal(run_a(5), plain)
    assert torch.equal(run_b(5), cached_b)
    assert external_report(b).per_step_stack_runs == [1, 0, 0, 0, 0]
    disable_external(b)
    assert dict(vars(cls)) == cls_before and torch.equal(run_b(5), plain)

    # disabling in enable order leaves the class exactly as before
    enable_external(a, "cache-dit", **CACHE_DIT)
    enable_external(b, "cache-dit", **CACHE_DIT)
    disable_external(a)
    disable_external(b)
    assert dict(vars(cls)) == cls_before
    assert torch.equal(run_a(5), plain) and torch.equal(run_b(5), plain)


# -- traceback 2: a second pipeline that shares the denoiser --------------------------------------------------------
@pytest.mark.parametrize("first,second", [("teacache", "teacache"), ("diffusers-fbc", "magcache"),
                                          ("cache-dit", "cache-dit"), ("etc", "teacache")])
@pytest.mark.filterwarnings("ignore:.*cache-dit's default Fn_compute_blocks")  # tested in its own test
def test_second_pipeline_sharing_the_denoiser(first: str, second: str) -> None:
    if "cache-dit" in (first, second):
        pytest.importorskip("cache_dit")
    from etcdiff.digits import DigitsPipeline

    a, kw, run_a, *_ = build("dit")
    other = DigitsPipeline(transformer=a.transformer, scheduler=type(a.scheduler).from_config(a.scheduler.config))
    settings = {"teacache": {"threshold": 0.1}, "magcache": {"ratios": [1.0] * 5},
                "etc": {"threshold": 0.1, "warmup": 2}}
    etcdiff.enable(a, first, **settings.get(first, {}))
    ref = run_a(5)
    with pytest.raises(RuntimeError, match=r"DigitsPipeline.transformer \(DiTTransformer2DModel\) is already used "
                                           r"by .*another pipeline.*etcdiff.disable\(\) on the other pipeline"):
        etcdiff.enable(other, second, **settings.get(second, {}))
    assert not etcdiff.is_enabled(other)
    assert torch.equal(run_a(5), ref)  # the first pipeline's method is untouched
    etcdiff.disable(a)
    etcdiff.enable(other, second, **settings.get(second, {}))  # free again
    etcdiff.disable(other)


def test_a_block_cache_over_an_external_peer_on_one_pipeline() -> None:
    from etcdiff.integration.block.cache import enable_block_cache

    pipe, _, run, *_ = build("dit")
    enable_external(pipe, "diffusers-fbc", threshold=10.0)
    with pytest.raises(RuntimeError, match=r"an external peer is enabled on this pipeline; "
                                           r"call etcdiff\.disable\(pipe\) first"):
        enable_block_cache(pipe, "teacache", threshold=0.1)
    run(5)
    assert external_report(pipe).per_step_stack_runs == [1, 0, 0, 0, 0]  # the peer alone, as enabled
    disable_external(pipe)


# -- traceback 7: save_pretrained while cache-dit is on -------------------------------------------------------------
def test_save_pretrained_with_cache_dit_on_the_digits_dit() -> None:
    pytest.importorskip("cache_dit")
    from safetensors.torch import load_file

    pipe, _, run, *_ = build("dit")
    keys = set(pipe.transformer.state_dict())
    enable_external(pipe, "cache-dit", **CACHE_DIT)
    run(3)
    with tempfile.TemporaryDirectory() as d:
        pipe.transformer.save_pretrained(d)  # cache-dit's `_norm1_emb` alias used to be saved twice
        saved = load_file(f"{d}/diffusion_pytorch_model.safetensors")
    assert set(saved) == keys
    assert all(torch.equal(saved[k], v) for k, v in pipe.transformer.state_dict().items())
    disable_external(pipe)


# -- traceback 8: FirstBlockCache on Flux2; cache-dit's block count on HiDream -------------------------------------
@pytest.mark.parametrize("klein", [False, True])
def test_first_block_cache_refused_on_flux2(klein: bool) -> None:
    tp = make_flux2(klein=klein)
    with pytest.raises(NotImplementedError, match=r"diffusers-fbc cannot run on Flux2Transformer2DModel: its first "
                                                  r"block \(Flux2TransformerBlock\) and last block .*Methods that run "
                                                  r"on it: etc, .*"):
        etcdiff.enable(tp.pipe, "diffusers-fbc")
    assert not etcdiff.is_enabled(tp.pipe) and "forward" not in vars(tp.model)


def test_cache_dit_block_count_check_on_hidream_block_lists() -> None:
    pytest.importorskip("cache_dit")
    from diffusers import FlowMatchEulerDiscreteScheduler, HiDreamImagePipeline, HiDreamImageTransformer2DModel

    torch.manual_seed(0)
    transformer = HiDreamImageTransformer2DModel(
        patch_size=2, in_channels=4, out_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=8,
        num_attention_heads=2, caption_channels=[8, 4], text_emb_dim=16, num_routed_experts=2,
        num_activated_experts=1, axes_dims_rope=(4, 4), max_resolution=(16, 16), llama_layers=[0, 1],
    )
    encoders = {f"{kind}{i}": None for kind in ("text_encoder", "tokenizer") for i in ("", "_2", "_3", "_4")}
    pipe = HiDreamImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=None, transformer=transformer,
                                **encoders)
    cls_before = dict(vars(type(pipe)))
    with pytest.raises(ValueError, match=r"Fn_compute_blocks=8 .* exceed the 1 blocks .*"
                                         r"\(double_stream_blocks: 1, single_stream_blocks: 1\)"):
        enable_external(pipe, "cache-dit", Fn_compute_blocks=8, Bn_compute_blocks=0)
    assert not etcdiff.is_enabled(pipe) and dict(vars(type(pipe))) == cls_before


# -- unsupported pairs: the error names the methods that do run -----------------------------------------------------
STEP_METHODS = ", ".join(n for n, m in etcdiff.METHODS.items() if m.kind == "step" and n != "none")


@pytest.mark.parametrize("method", ["teacache", "magcache", "diffusers-fbc", "diffusers-taylorseer", "cache-dit"])
def test_unsupported_method_on_a_unet_names_the_step_methods(method: str) -> None:
    if method == "cache-dit":
        pytest.importorskip("cache_dit")
    tp = make_sd15_ddim()
    with pytest.raises(NotImplementedError, match=rf"{method if '-' in method else 'block cache'}.*UNet2DCondition"
                                                  rf"Model.*Methods that run on it: {STEP_METHODS}\b"):
        etcdiff.enable(tp.pipe, method, **({"threshold": 0.1} if method == "teacache" else {}))
    assert not etcdiff.is_enabled(tp.pipe)
