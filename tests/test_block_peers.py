"""Block-level peers: TeaCache and MagCache rules, etcdiff's block hooks, and the external peers as they ship.

Rules are checked on scripted traces whose schedules are worked out by hand in the comments. The hooks run
on tiny random-weight models built offline here (text encoders ``None``, precomputed prompt embeddings), and
the work done is counted independently of etcdiff's reports with plain torch forward pre-hooks on every real
transformer block and on the first (head) and last (tail) layers of the model.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable

import pytest
import torch

from etcdiff.integration.block.cache import (
    SUPPORTED_MODELS, block_cache_report, disable_block_cache, enable_block_cache,
)
from etcdiff.integration.block.calibration import calibrate_magcache, calibrate_teacache
from etcdiff.integration.external.peers import (
    EXTERNAL_PEERS, check_external, diffusers_magcache_ratios, disable_external, enable_external, external_report,
    supported_external_peers,
)
from etcdiff.policies.block.magcache import FLUX_MAG_RATIOS, MagCache, fit_magcache_ratios, nearest_interp
from etcdiff.policies.block.teacache import (
    FLUX_COEFFICIENTS, IDENTITY_COEFFICIENTS, TeaCache, fit_teacache_coefficients, poly_eval,
)

ID = IDENTITY_COEFFICIENTS  # poly(x) = x
HUGE = 1e9


# ---------------------------------------------------------------------------------------------------------------
# Decision rules on scripted traces
# ---------------------------------------------------------------------------------------------------------------
def run_rule(rule: Any, num_steps: int, changes: list | None = None,
             can_skip: Callable[[int], bool] = lambda s: True) -> list[int]:
    rule.begin(num_steps)
    state = rule.new_state()
    changes = changes or [None] * num_steps
    return [s for s in range(num_steps) if rule.decide(state, s, changes[s], can_skip(s))]


def test_teacache_trace_by_hand():
    # poly(x) = x, threshold 0.5, 8 steps, changes rel(m_t, m_{t-1}):
    # s0 first step: compute (acc 0) | s1 acc 0.2 < 0.5 skip | s2 acc 0.4 skip | s3 acc 0.6 >= 0.5: compute, acc 0
    # s4 acc 0.1 skip | s5 acc 0.4 skip | s6 acc 0.7 compute, acc 0 | s7 last step: compute
    rule = TeaCache(0.5, coefficients=ID)
    assert run_rule(rule, 8, [None, 0.2, 0.2, 0.2, 0.1, 0.3, 0.3, 0.1]) == [0, 3, 6, 7]
    # no stored residual yet at s1 (can_skip False): computed, acc reset -> s2 acc 0.2, s3 0.4 skip,
    # s4 0.5 (not < 0.5) compute, acc 0 | s5 0.3 skip | s6 0.6 compute | s7 last step
    assert run_rule(rule, 8, [None, 0.2, 0.2, 0.2, 0.1, 0.3, 0.3, 0.1], lambda s: s != 1) == [0, 1, 4, 6, 7]
    # threshold 0: acc >= 0 is never < 0, every step computes
    assert run_rule(TeaCache(0.0, coefficients=ID), 6, [None] + [0.0] * 5) == list(range(6))


def test_teacache_flux_polynomial_and_batch():
    # FLUX poly at x = 0.1, term by term (highest power first):
    # 498.651651e-4 - 283.781631e-3 + 55.8554382e-2 - 3.82021401e-1 + 0.264230861
    # = 0.0498651651 - 0.283781631 + 0.558554382 - 0.382021401 + 0.264230861 = 0.2068473761
    assert poly_eval(FLUX_COEFFICIENTS, 0.1) == pytest.approx(0.2068473761, abs=1e-9)
    assert poly_eval(FLUX_COEFFICIENTS, 0.0) == pytest.approx(0.264230861)
    # two samples in one call, threshold 0.5, poly(x) = x:
    # s1 acc [0.1, 0.4]: both < 0.5 -> skip | s2 acc [0.2, 0.8]: sample 2 needs it -> compute, both reset
    # s3 acc [0.1, 0.4] skip | s4 last step
    rule = TeaCache(0.5, coefficients=ID)
    assert run_rule(rule, 5, [None] + [[0.1, 0.4]] * 4) == [0, 2, 4]


def test_fit_teacache_coefficients_recovers_a_quartic():
    true = [2.0, -1.0, 0.5, 3.0, 0.1]
    xs = [i / 40 for i in range(1, 41)]
    ys = [poly_eval(true, x) for x in xs]
    assert fit_teacache_coefficients(xs, ys) == pytest.approx(true, abs=1e-6)
    with pytest.raises(ValueError, match="at least 5 distinct"):
        fit_teacache_coefficients([0.1, 0.1, 0.2], [1, 2, 3])


def test_magcache_trace_by_hand():
    # N = 10, retention 0.2 -> int(0.2 * 10 + 0.5) = 2 retention steps; threshold 0.1, K = 2
    # s0, s1 retention: compute
    # s2 gamma 1.5: ratio 1.5, err 0.5 > 0.1 -> compute, reset
    # s3 1.02: ratio 1.02, n 1, err 0.02 -> skip
    # s4 1.02: ratio 1.0404, n 2, err 0.0604 -> skip
    # s5 0.97: ratio 1.009188, n 3 > K (err 0.069588 still <= 0.1) -> compute, reset
    # s6 1.0: n 1, err 0 -> skip | s7 1.0: n 2, err 0 -> skip
    # s8 0.9: n 3 > K -> compute, reset | s9 1.0: n 1, err 0 -> skip (MagCache forces no last step)
    ratios = [1.0, 1.0, 1.5, 1.02, 1.02, 0.97, 1.0, 1.0, 0.9, 1.0]
    rule = MagCache(threshold=0.1, max_skip_steps=2, retention_ratio=0.2, ratios=ratios)
    assert run_rule(rule, 10) == [0, 1, 2, 5, 8]
    # FLUX preset (28 ratios) at 10 steps: a run step spans 27 / 9 = 3 calibrated steps, so its ratio is the
    # product of those three (the magnitude curve at calibrated steps 0, 3, ..., 27; see resample_ratios):
    # 1.0 1.45853 1.13850 1.09665 1.01913 1.01568 1.00781 0.99220 0.93491 0.79575; retention int(1.5) = 1 step
    # s1 r 1.45853 err .45853 > .24 compute | s2 r 1.13850 err .13850 skip | s3 r 1.248536 err .387036 > .24 compute
    # s4 r 1.01913 err .01913 | s5 r 1.035107 err .054233 | s6 r 1.043191 err .097424 | s7 r 1.035049 err .132474
    # s8 r .967678 err .164796 (n 5 <= K 5): skip | s9 n 6 > 5: compute
    with pytest.warns(UserWarning, match=r"are for 28 steps \(from .*\) and this run has 10; they are resampled"):
        assert run_rule(MagCache.flux(), 10) == [0, 1, 3, 9]
    # K = 0: nothing is ever skipped
    assert run_rule(MagCache(threshold=1.0, max_skip_steps=0, retention_ratio=0.0, ratios=[1.0]), 6) == list(range(6))


def test_magcache_interpolation_and_fit():
    assert nearest_interp(FLUX_MAG_RATIOS, 10) == [1.0, 1.07812, 1.03125, 1.03125, 1.01562, 1.00781, 1.0, 0.99609,
                                                  0.96484, 0.89062]
    # 3 -> 4: i * 2/3 = 0, 0.67, 1.33, 2 -> indices 0, 1, 1, 2
    assert nearest_interp([1.0, 2.0, 3.0], 4) == [1.0, 2.0, 2.0, 3.0]
    assert nearest_interp([1.0, 2.0, 3.0], 1) == [3.0]
    assert fit_magcache_ratios([[1.0, 2.0, 4.0], [1.0, 4.0, 2.0]]) == [1.0, 3.0, 3.0]
    with pytest.raises(ValueError, match="equally long"):
        fit_magcache_ratios([[1.0, 2.0], [1.0]])


# ---------------------------------------------------------------------------------------------------------------
# Tiny models
# ---------------------------------------------------------------------------------------------------------------
def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=_gen(seed))


def _vae(latent_channels: int) -> Any:
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
        block_out_channels=(4,), layers_per_block=1, latent_channels=latent_channels, norm_num_groups=1, sample_size=32,
    ).eval()


def make_flux_cfg():
    """Flux with true CFG: a "cond" and an "uncond" transformer call per step; 1 double + 1 single block."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8],
    ).eval()
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=_vae(1), text_encoder=None, tokenizer=None,
                        text_encoder_2=None, tokenizer_2=None, transformer=transformer)
    kw = dict(prompt_embeds=_randn(1, 8, 32, seed=1), pooled_prompt_embeds=_randn(1, 32, seed=2),
              negative_prompt_embeds=_randn(1, 8, 32, seed=3), negative_pooled_prompt_embeds=_randn(1, 32, seed=4),
              true_cfg_scale=4.0, height=16, width=16)
    return pipe, kw, 2, "x_embedder", "proj_out", {"cond", "uncond"}


def make_sd3():
    """SD3, batched CFG (one call per step), 2 joint blocks (the last one context_pre_only)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=32, patch_size=1, in_channels=4, num_layers=2, attention_head_dim=8, num_attention_heads=4,
        caption_projection_dim=32, joint_attention_dim=32, pooled_projection_dim=64, out_channels=4,
    ).eval()
    pipe = StableDiffusion3Pipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=_vae(4), text_encoder=None, tokenizer=None,
        text_encoder_2=None, tokenizer_2=None, text_encoder_3=None, tokenizer_3=None, transformer=transformer,
    )
    kw = dict(prompt_embeds=_randn(1, 8, 32, seed=1), pooled_prompt_embeds=_randn(1, 64, seed=2),
              negative_prompt_embeds=_randn(1, 8, 32, seed=3), negative_pooled_prompt_embeds=_randn(1, 64, seed=4),
              height=16, width=16, guidance_scale=5.0)
    return pipe, kw, 1, "pos_embed", "proj_out", {"call0"}


def make_pixart():
    """PixArt-alpha (ada_norm_single blocks), batched CFG."""
    from diffusers import DDIMScheduler, PixArtAlphaPipeline, PixArtTransformer2DModel

    torch.manual_seed(0)
    transformer = PixArtTransformer2DModel(
        sample_size=8, num_layers=2, patch_size=2, attention_head_dim=8, num_attention_heads=3, caption_channels=32,
        in_channels=4, cross_attention_dim=24, out_channels=8, attention_bias=True, activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000, norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6,
    ).eval()
    pipe = PixArtAlphaPipeline(tokenizer=None, text_encoder=None, vae=_vae(4), transformer=transformer,
                               scheduler=DDIMScheduler())
    kw = dict(negative_prompt=None, prompt_embeds=_randn(1, 8, 32, seed=1),
              prompt_attention_mask=torch.ones(1, 8, dtype=torch.long), negative_prompt_embeds=_randn(1, 8, 32, seed=3),
              negative_prompt_attention_mask=torch.ones(1, 8, dtype=torch.long), height=8, width=8, guidance_scale=4.5,
              use_resolution_binning=False)
    return pipe, kw, 1, "pos_embed", "proj_out", {"call0"}


def make_wan():
    """Wan 2.1 text-to-video: "cond" and "uncond" calls per step, 2 blocks."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel

    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True]).eval()
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    ).eval()
    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
                       transformer=transformer)
    kw = dict(prompt_embeds=_randn(1, 8, 32, seed=1), negative_prompt_embeds=_randn(1, 8, 32, seed=3), height=16,
              width=16, num_frames=5, guidance_scale=5.0)
    return pipe, kw, 2, "patch_embedding", "proj_out", {"cond", "uncond"}


def make_dit():
    """The demo's DigitsPipeline around a randomly initialised DiT (4 blocks), batched CFG, two prompts."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from etcdiff.digits import DigitsPipeline, build_transformer

    torch.manual_seed(0)
    pipe = DigitsPipeline(transformer=build_transformer().eval(), scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0))
    return pipe, dict(prompt=["3", "5"], guidance_scale=2.0), 1, "pos_embed", "proj_out_2", {"call0"}


FACTORIES = {"flux_cfg": make_flux_cfg, "sd3": make_sd3, "pixart": make_pixart, "wan": make_wan, "dit": make_dit}


def build(name: str):
    pipe, kw, calls_per_step, head, tail, branches = FACTORIES[name]()
    pipe.set_progress_bar_config(disable=True)
    kw = {**kw, "output_type": "latent", "return_dict": False}

    def run(steps: int) -> torch.Tensor:
        with torch.no_grad():
            return pipe(**kw, num_inference_steps=steps, generator=_gen(0))[0]

    return pipe, kw, run, calls_per_step, head, tail, branches


class Counter:
    """Forward pre-hooks on every real block and on the head/tail layers of a transformer."""

    def __init__(self, model: torch.nn.Module, head: str, tail: str, block_lists: tuple[str, ...]) -> None:
        self.blocks = [b for name in block_lists for b in getattr(model, name)]
        self.counts = {"head": 0, "tail": 0, **{i: 0 for i in range(len(self.blocks))}}
        self.handles = [getattr(model, head).register_forward_pre_hook(self._inc("head")),
                        getattr(model, tail).register_forward_pre_hook(self._inc("tail"))]
        self.handles += [b.register_forward_pre_hook(self._inc(i)) for i, b in enumerate(self.blocks)]

    def _inc(self, key: Any) -> Callable:
        def hook(module: Any, args: Any) -> None:
            self.counts[key] += 1
        return hook

    def reset(self) -> None:
        self.counts = dict.fromkeys(self.counts, 0)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


BLOCK_LISTS = {"flux_cfg": ("transformer_blocks", "single_transformer_blocks"), "sd3": ("transformer_blocks",),
               "pixart": ("transformer_blocks",), "wan": ("blocks",), "dit": ("transformer_blocks",)}


def module_state(model: torch.nn.Module) -> dict[str, tuple]:
    return {n: (sorted(vars(m)), list(m._modules.items())) for n, m in model.named_modules(remove_duplicate=False)}


# ---------------------------------------------------------------------------------------------------------------
# etcdiff's block hooks end to end
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", list(FACTORIES))
def test_block_cache_end_to_end(family):
    steps = 5
    pipe, kw, run, calls, head, tail, branches = build(family)
    model, scheduler = pipe.transformer, pipe.scheduler
    ref = run(steps)
    before = module_state(model)
    counter = Counter(model, head, tail, BLOCK_LISTS[family])

    # threshold 0: nothing is skipped, the output equals the unhooked model's exactly
    enable_block_cache(pipe, TeaCache(0.0, coefficients=ID))
    counter.reset()
    assert torch.equal(run(steps), ref)
    rep = block_cache_report(pipe)
    assert rep.stack_skips == 0 and rep.stack_runs == steps * calls and rep.model_calls == steps * calls
    assert all(c == steps * calls for c in counter.counts.values())

    # huge threshold: only the first and last steps run the block stack; the head and tail run every call
    enable_block_cache(pipe, TeaCache(HUGE, coefficients=ID))
    counter.reset()
    out = run(steps)
    rep = block_cache_report(pipe)
    assert set(rep.branches) == branches
    for br in rep.branches.values():
        assert br == {"computed": [0, steps - 1], "skipped": [1, 2, 3]}
    assert rep.computed_steps == [0, steps - 1] and rep.stack_runs == 2 * calls and rep.stack_skips == 3 * calls
    assert counter.counts["head"] == counter.counts["tail"] == steps * calls
    assert all(counter.counts[i] == 2 * calls for i in range(len(counter.blocks)))
    assert not torch.equal(out, ref) and torch.isfinite(out).all()

    # disable restores the model exactly: class forward, original block lists, no hook registry left behind
    disable_block_cache(pipe)
    counter.remove()
    assert module_state(model) == before
    assert "forward" not in vars(model)
    assert not any(n in vars(scheduler) for n in ("set_timesteps", "step", "set_begin_index"))
    assert torch.equal(run(steps), ref)


def test_magcache_block_cache_flux_matches_rule():
    steps = 10
    pipe, kw, run, calls, head, tail, branches = build("flux_cfg")
    counter = Counter(pipe.transformer, head, tail, BLOCK_LISTS["flux_cfg"])
    rule = enable_block_cache(pipe, "magcache")  # FLUX: published ratios, threshold .24, K 5, retention .1
    assert rule.ratios == FLUX_MAG_RATIOS
    run(steps)
    rep = block_cache_report(pipe)
    # worked out in test_magcache_trace_by_hand: steps 0, 1, 3, 9 per branch
    assert rep.branches == {b: {"computed": [0, 1, 3, 9], "skipped": [2, 4, 5, 6, 7, 8]} for b in branches}
    assert counter.counts[0] == counter.counts[1] == 4 * calls and counter.counts["head"] == steps * calls
    disable_block_cache(pipe)
    counter.remove()


class Loop:
    """A sampling loop of our own: two DiT calls per step (labels 3 and the null class), no cache_context."""

    def __init__(self, transformer: torch.nn.Module, scheduler: Any) -> None:
        self.transformer, self.scheduler = transformer, scheduler

    @torch.no_grad()
    def __call__(self, steps: int, with_uncond: bool) -> list[torch.Tensor]:
        x = _randn(1, 1, 16, 16, seed=0)
        self.scheduler.set_timesteps(steps)
        cond_outputs = []
        for t in self.scheduler.timesteps:
            ts = t.expand(1)
            cond = self.transformer(x, timestep=ts, class_labels=torch.tensor([3]), return_dict=False)[0]
            if with_uncond:
                self.transformer(x, timestep=ts, class_labels=torch.tensor([10]), return_dict=False)
            cond_outputs.append(cond)
            x = self.scheduler.step(cond, t, x, return_dict=False)[0]
        return cond_outputs


def test_cond_and_uncond_keep_separate_caches():
    # The cond call's outputs must not depend on whether an uncond call (another branch) runs between them:
    # with a shared cache, a skipped cond call would add the uncond call's residual.
    from diffusers import FlowMatchEulerDiscreteScheduler

    from etcdiff.digits import build_transformer

    torch.manual_seed(0)
    loop = Loop(build_transformer().eval(), FlowMatchEulerDiscreteScheduler(shift=1.0))
    enable_block_cache(loop, TeaCache(HUGE, coefficients=ID))
    alone = loop(5, with_uncond=False)
    assert block_cache_report(loop).branches == {"call0": {"computed": [0, 4], "skipped": [1, 2, 3]}}
    both = loop(5, with_uncond=True)
    rep = block_cache_report(loop)
    assert set(rep.branches) == {"call0", "call1"} and rep.stack_runs == 4 and rep.stack_skips == 6
    assert all(torch.equal(a, b) for a, b in zip(alone, both))
    disable_block_cache(loop)


def test_calibration_helpers_on_dit():
    pipe, kw, run, *_ = build("dit")
    prompts = [{"prompt": ["3", "5"]}, {"prompt": ["7"]}]
    mag = calibrate_magcache(pipe, prompts, steps=6, seed=0, guidance_scale=2.0)
    assert len(mag.sequences) == 2 and all(len(s) == 6 for s in mag.sequences)
    assert mag.ratios[0] == 1.0 and len(mag.ratios) == 6 and all(math.isfinite(r) and r > 0 for r in mag.ratios)
    tea = calibrate_teacache(pipe, prompts, steps=6, seed=0, guidance_scale=2.0)
    # 5 step pairs per run; one change per sample of the batched call: (4 + 2) samples
    assert len(tea.input_changes) == len(tea.output_changes) == 5 * 6 and len(tea.coefficients) == 5
    assert "forward" not in vars(pipe.transformer)
    # the fitted ratios drive MagCache on the same model
    enable_block_cache(pipe, MagCache(threshold=0.3, max_skip_steps=2, retention_ratio=0.2, ratios=mag.ratios))
    run(6)
    assert block_cache_report(pipe).stack_skips > 0
    disable_block_cache(pipe)


def test_block_cache_defaults_and_errors():
    from diffusers import UNet2DConditionModel

    pipe, *_ = build("dit")
    with pytest.warns(UserWarning, match="no published coefficients for DiTTransformer2DModel"):
        rule = enable_block_cache(pipe, "teacache", threshold=0.1)
    assert rule.coefficients == ID
    with pytest.raises(ValueError, match="calibrate_magcache"):
        enable_block_cache(pipe, "magcache")
    disable_block_cache(pipe)

    class Other:
        def __init__(self, model):
            self.transformer, self.scheduler = model, pipe.scheduler

    supported = "Linear is not supported. Supported transformers: " + SUPPORTED_MODELS[0]
    with pytest.raises(NotImplementedError, match=supported):
        enable_block_cache(Other(torch.nn.Linear(2, 2)), TeaCache(0.1))
    unet_pipe = type("UNetPipe", (), {})()
    torch.manual_seed(0)
    unet_pipe.unet = UNet2DConditionModel(
        block_out_channels=(4, 8), norm_num_groups=4, cross_attention_dim=8, layers_per_block=1, sample_size=8,
        attention_head_dim=2, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    )
    unet_pipe.scheduler = pipe.scheduler
    with pytest.raises(NotImplementedError, match="UNet2DConditionModel.*Supported transformers"):
        enable_block_cache(unet_pipe, TeaCache(0.1))
    with pytest.raises(NotImplementedError, match="Peers that run on it: diffusers-pab, deepcache"):
        check_external(unet_pipe, "diffusers-fbc")
    assert supported_external_peers(unet_pipe) == ["diffusers-pab", "deepcache"]  # PAB's patterns match its attentions


# ---------------------------------------------------------------------------------------------------------------
# External peers as they ship
# ---------------------------------------------------------------------------------------------------------------
# Flux true CFG, 5 steps, 2 calls per step; probe: the attention of the middle block (the single block).
#  fbc threshold 10: step 0 has no cached residual and computes, then every head residual change is < 10.
#  magcache ratios 1.0, threshold 10, K 3, retention int(0.2 * 5 + 0.5) = 1: s0 computes; s1-s3 skip
#    (n 1..3); s4 n 4 > 3 computes.
#  taylorseer cache_interval 2, disable_cache_before_step 1: compute at step < 1 or (step - 2) % 2 == 0.
@pytest.mark.parametrize("peer, kwargs, runs", [
    ("diffusers-fbc", dict(threshold=10.0), [2, 0, 0, 0, 0]),
    ("diffusers-magcache", dict(mag_ratios=[1.0] * 5, threshold=10.0), [2, 0, 0, 0, 2]),
    ("diffusers-taylorseer", dict(cache_interval=2, disable_cache_before_step=1, taylor_factors_dtype=torch.float32),
     [2, 0, 2, 0, 2]),
])
def test_diffusers_peers_on_flux(peer, kwargs, runs):
    pipe, kw, run, *_ = build("flux_cfg")
    model = pipe.transformer
    ref = run(5)
    before, cls_before = module_state(model), dict(vars(type(model)))
    enable_external(pipe, peer, **kwargs)
    for _ in range(2):  # state is reset between generations
        out = run(5)
        rep = external_report(pipe)
        assert rep.per_step_calls == [2] * 5 and rep.per_step_stack_runs == runs
        assert rep.probe == "single_transformer_blocks.0.attn.to_q"
    assert not torch.equal(out, ref)
    disable_external(pipe)
    assert module_state(model) == before and dict(vars(type(model))) == cls_before
    assert torch.equal(run(5), ref)


def test_diffusers_magcache_says_when_its_ratios_are_for_another_step_count():
    pipe, kw, run, *_ = build("flux_cfg")
    enable_external(pipe, "diffusers-magcache", mag_ratios=[1.0] * 5, threshold=10.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run(5)  # the step count the ratios are for: no word
    with pytest.warns(UserWarning, match=r"mag_ratios are for 5 steps and this run has 4.*--method magcache --steps 4"):
        run(4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run(4)  # said once per step count
    disable_external(pipe)


def test_diffusers_magcache_calibration_and_dit_context():
    pipe, kw, run, *_ = build("flux_cfg")
    ratios = diffusers_magcache_ratios(pipe, **kw, num_inference_steps=4, generator=_gen(0))
    assert len(ratios) == 2 and all(len(r) == 4 and r[0] == 1.0 for r in ratios)  # cond and uncond
    # DiT has no CacheMixin and its pipeline sets no cache_context: the hooks are applied directly and each call
    # is named by its order in the step; without ratios MagCache asks for them
    dit, dkw, drun, *_ = build("dit")
    # all but SeaCache (Wan text-to-video only) and DeepCache (UNets only)
    assert supported_external_peers(dit) == [p for p in EXTERNAL_PEERS if p not in ("diffusers-seacache", "deepcache")]
    with pytest.raises(ValueError, match="mag_ratios"):
        enable_external(dit, "diffusers-magcache")
    ref = drun(5)
    enable_external(dit, "diffusers-fbc", threshold=10.0)
    drun(5)
    assert external_report(dit).per_step_stack_runs == [1, 0, 0, 0, 0]
    disable_external(dit)
    assert torch.equal(drun(5), ref)


def test_external_peer_errors():
    sd3, *_ = build("sd3")
    with pytest.raises(NotImplementedError, match=r"diffusers-fbc cannot run on SD3Transformer2DModel.*"
                                                  r"Peers that run on it: diffusers-magcache, diffusers-taylorseer"):
        enable_external(sd3, "diffusers-fbc")
    with pytest.raises(ValueError, match="Unknown external peer"):
        enable_external(sd3, "teacache")


@pytest.mark.parametrize("family", ["flux_cfg", "dit"])
def test_cache_dit(family):
    pytest.importorskip("cache_dit")
    pipe, kw, run, calls, *_ = build(family)
    ref = run(5)
    model, cls = pipe.transformer, type(pipe)
    before, cls_before = module_state(model), dict(vars(cls))
    enable_external(pipe, "cache-dit", Fn_compute_blocks=1, Bn_compute_blocks=0, residual_diff_threshold=10.0,
                    max_warmup_steps=1, enable_separate_cfg=calls > 1)
    out = run(5)
    rep = external_report(pipe)
    assert rep.per_step_calls == [calls] * 5 and rep.per_step_stack_runs == [calls, 0, 0, 0, 0]
    assert not torch.equal(out, ref)
    disable_external(pipe)
    # cache-dit patches the pipeline class's __call__ (and DiT's/Flux's forward); all of it is gone
    assert module_state(model) == before and dict(vars(cls)) == cls_before
    assert torch.equal(run(5), ref)
