"""Tiny, random-weight, fully offline diffusers pipelines for the hook tests.

Every factory seeds torch, builds the denoiser (and a tiny VAE where the pipeline needs one to know its scale
factor) from a small config, sets text encoders and tokenizers to ``None`` and draws random prompt embeddings
once. It returns a :class:`TinyPipeline`: ``pipe, call = make_flux()`` unpacks to the pipeline and a function
``call(pipe, num_inference_steps, **extra)`` that runs a deterministic generation (fixed generator, latent
output) and returns the output tensor. ``calls_per_step`` is the number of denoiser forwards the pipeline
makes per sampling step; ``denoiser`` the attribute name of the hooked model; ``entry_module`` the name (inside
the denoiser) of a submodule that runs exactly once per real denoiser forward, for counting forwards below any
hook put on the denoiser itself.

Run them with ``torch.set_num_threads(1)``: on a shared 2-core machine the default two intra-op threads make
these tiny convolutions and matmuls one to two orders of magnitude slower.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch

SEED = 0


@dataclass
class TinyPipeline:
    name: str
    pipe: Any
    call: Callable[..., torch.Tensor]
    calls_per_step: int
    denoiser: str = "transformer"
    entry_module: str = ""
    batch_kwarg: str = "num_images_per_prompt"  # "" : batch by repeating the prompt embeddings instead
    old_style_callback: bool = False
    call_kwargs: dict[str, Any] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Any]:
        yield self.pipe
        yield self.call

    def run(self, num_inference_steps: int, **extra: Any) -> torch.Tensor:
        return self.call(self.pipe, num_inference_steps, **extra)

    @property
    def model(self) -> torch.nn.Module:
        return getattr(self.pipe, self.denoiser)

    def batch_kwargs(self, n: int) -> dict[str, Any]:
        """Call kwargs for ``n`` outputs: ``n`` per prompt, or ``n`` prompts where the pipeline does not expand
        precomputed embeddings for ``num_images_per_prompt`` (SD3)."""
        if self.batch_kwarg:
            return {self.batch_kwarg: n}
        return {k: v.repeat(n, *[1] * (v.dim() - 1)) for k, v in self.call_kwargs.items()
                if isinstance(v, torch.Tensor) and ("embeds" in k or "mask" in k)}

    def step_end_kwargs(self, fn: Callable[[int], None]) -> dict[str, Any]:
        """Call kwargs that make the pipeline call ``fn(step_index)`` at the end of every denoising step."""
        if self.old_style_callback:
            return {"callback": lambda i, t, latents: fn(i), "callback_steps": 1}

        def on_step_end(pipe: Any, i: int, t: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
            fn(i)
            return callback_kwargs

        return {"callback_on_step_end": on_step_end}


def _gen(seed: int = SEED) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=_gen(seed))


def _make_call(fixed: dict[str, Any]) -> Callable[..., torch.Tensor]:
    def call(pipe: Any, num_inference_steps: int, **extra: Any) -> torch.Tensor:
        kwargs = {**fixed, "num_inference_steps": num_inference_steps, "generator": _gen(), "output_type": "latent",
                  "return_dict": False, **extra}
        with torch.no_grad():
            out = pipe(**kwargs)
        return out[0]

    return call


def _finish(name: str, pipe: Any, fixed: dict[str, Any], calls_per_step: int, entry_module: str, **more: Any) -> TinyPipeline:
    pipe.set_progress_bar_config(disable=True)
    return TinyPipeline(name, pipe, _make_call(fixed), calls_per_step, entry_module=entry_module, call_kwargs=fixed, **more)


def _tiny_vae_kl(latent_channels: int) -> Any:
    from diffusers import AutoencoderKL

    torch.manual_seed(SEED)
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
        block_out_channels=(4,), layers_per_block=1, latent_channels=latent_channels, norm_num_groups=1,
        sample_size=32,
    ).eval()


# -- Flux ---------------------------------------------------------------------------------------------------------
def _flux(true_cfg: bool) -> TinyPipeline:
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(SEED)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8], guidance_embeds=not true_cfg,
    ).eval()
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=_tiny_vae_kl(1), text_encoder=None, tokenizer=None,
        text_encoder_2=None, tokenizer_2=None, transformer=transformer,
    )
    fixed: dict[str, Any] = {
        "prompt_embeds": _randn(1, 8, 32, seed=1), "pooled_prompt_embeds": _randn(1, 32, seed=2),
        "height": 16, "width": 16, "guidance_scale": 3.5,
    }
    if true_cfg:
        fixed.update(negative_prompt_embeds=_randn(1, 8, 32, seed=3), negative_pooled_prompt_embeds=_randn(1, 32, seed=4),
                     true_cfg_scale=4.0)
    return _finish("flux_true_cfg" if true_cfg else "flux", pipe, fixed, 2 if true_cfg else 1, "x_embedder")


def make_flux() -> TinyPipeline:
    """Guidance-distilled Flux: one transformer call per step."""
    return _flux(true_cfg=False)


def make_flux_true_cfg() -> TinyPipeline:
    """Flux with true CFG (negative embeddings, ``true_cfg_scale > 1``): "cond" then "uncond" call per step."""
    return _flux(true_cfg=True)


# -- SD3 ----------------------------------------------------------------------------------------------------------
def make_sd3() -> TinyPipeline:
    """SD3: batched CFG, one transformer call with a doubled batch per step."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    torch.manual_seed(SEED)
    transformer = SD3Transformer2DModel(
        sample_size=32, patch_size=1, in_channels=4, num_layers=1, attention_head_dim=8, num_attention_heads=4,
        caption_projection_dim=32, joint_attention_dim=32, pooled_projection_dim=64, out_channels=4,
    ).eval()
    pipe = StableDiffusion3Pipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=_tiny_vae_kl(4), text_encoder=None, tokenizer=None,
        text_encoder_2=None, tokenizer_2=None, text_encoder_3=None, tokenizer_3=None, transformer=transformer,
    )
    fixed = {
        "prompt_embeds": _randn(1, 8, 32, seed=1), "pooled_prompt_embeds": _randn(1, 64, seed=2),
        "negative_prompt_embeds": _randn(1, 8, 32, seed=3), "negative_pooled_prompt_embeds": _randn(1, 64, seed=4),
        "height": 16, "width": 16, "guidance_scale": 5.0,
    }
    # SD3 does not repeat precomputed (pooled) embeddings for num_images_per_prompt: batch by prompts instead.
    return _finish("sd3", pipe, fixed, 1, "pos_embed", batch_kwarg="")


# -- SDXL ---------------------------------------------------------------------------------------------------------
def make_sdxl() -> TinyPipeline:
    """SDXL UNet ("text_time" added conditioning): batched CFG, one UNet call with a doubled batch per step."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    pooled_dim, time_dim = 32, 8
    torch.manual_seed(SEED)
    unet = UNet2DConditionModel(
        block_out_channels=(16, 32), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=time_dim, transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=time_dim * 6 + pooled_dim, cross_attention_dim=32, norm_num_groups=8,
    ).eval()
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="leading", steps_offset=1,
    )
    pipe = StableDiffusionXLPipeline(
        vae=_tiny_vae_kl(4), text_encoder=None, text_encoder_2=None, tokenizer=None, tokenizer_2=None, unet=unet,
        scheduler=scheduler,
    )
    fixed = {
        "prompt_embeds": _randn(1, 8, 32, seed=1), "pooled_prompt_embeds": _randn(1, pooled_dim, seed=2),
        "negative_prompt_embeds": _randn(1, 8, 32, seed=3), "negative_pooled_prompt_embeds": _randn(1, pooled_dim, seed=4),
        "height": 16, "width": 16, "guidance_scale": 5.0,
    }
    return _finish("sdxl", pipe, fixed, 1, "conv_in", denoiser="unet")


# -- PixArt-alpha -------------------------------------------------------------------------------------------------
def make_pixart() -> TinyPipeline:
    """PixArt-alpha: batched CFG, one transformer call with a doubled batch per step (learned sigma output)."""
    from diffusers import DDIMScheduler, PixArtAlphaPipeline, PixArtTransformer2DModel

    torch.manual_seed(SEED)
    transformer = PixArtTransformer2DModel(
        sample_size=8, num_layers=2, patch_size=2, attention_head_dim=8, num_attention_heads=3, caption_channels=32,
        in_channels=4, cross_attention_dim=24, out_channels=8, attention_bias=True, activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000, norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6,
    ).eval()
    pipe = PixArtAlphaPipeline(
        tokenizer=None, text_encoder=None, vae=_tiny_vae_kl(4), transformer=transformer, scheduler=DDIMScheduler(),
    )
    fixed = {
        "negative_prompt": None, "prompt_embeds": _randn(1, 8, 32, seed=1), "prompt_attention_mask": torch.ones(1, 8, dtype=torch.long),
        "negative_prompt_embeds": _randn(1, 8, 32, seed=3),
        "negative_prompt_attention_mask": torch.ones(1, 8, dtype=torch.long),
        "height": 8, "width": 8, "guidance_scale": 4.5, "use_resolution_binning": False,
    }
    return _finish("pixart", pipe, fixed, 1, "pos_embed", old_style_callback=True)


# -- Wan 2.1 ------------------------------------------------------------------------------------------------------
def make_wan() -> TinyPipeline:
    """Wan 2.1 text-to-video: separate "cond" and "uncond" transformer calls per step."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel

    torch.manual_seed(SEED)
    vae = AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True],
    ).eval()
    torch.manual_seed(SEED)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    ).eval()
    pipe = WanPipeline(
        tokenizer=None, text_encoder=None, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        transformer=transformer,
    )
    fixed = {
        "prompt_embeds": _randn(1, 8, 32, seed=1), "negative_prompt_embeds": _randn(1, 8, 32, seed=3),
        "height": 16, "width": 16, "num_frames": 5, "guidance_scale": 5.0,
    }
    return _finish("wan", pipe, fixed, 2, "patch_embedding", batch_kwarg="num_videos_per_prompt")


# -- SD 1.5 + ControlNet ------------------------------------------------------------------------------------------
def make_sd_controlnet() -> TinyPipeline:
    """SD 1.5 with a ControlNet (DDIM): batched CFG; the ControlNet runs before the UNet on every step.

    Not in :data:`FACTORIES`; ``entry_module`` counts the UNet's forwards, ``pipe.controlnet.conv_in`` the
    ControlNet's."""
    from diffusers import ControlNetModel, DDIMScheduler, StableDiffusionControlNetPipeline, UNet2DConditionModel

    torch.manual_seed(SEED)
    unet = UNet2DConditionModel(
        block_out_channels=(16, 32), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, norm_num_groups=8, attention_head_dim=(2, 4),
    ).eval()
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8,)).eval()
    pipe = StableDiffusionControlNetPipeline(
        vae=_tiny_vae_kl(4), text_encoder=None, tokenizer=None, unet=unet, controlnet=controlnet,
        scheduler=DDIMScheduler(), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    fixed = {
        "prompt_embeds": _randn(1, 8, 32, seed=1), "negative_prompt_embeds": _randn(1, 8, 32, seed=3),
        "image": torch.rand(1, 3, 16, 16, generator=_gen(5)), "height": 16, "width": 16, "guidance_scale": 5.0,
    }
    return _finish("sd_controlnet", pipe, fixed, 1, "conv_in", denoiser="unet")


FACTORIES: dict[str, Callable[[], TinyPipeline]] = {
    "flux": make_flux,
    "flux_true_cfg": make_flux_true_cfg,
    "sd3": make_sd3,
    "sdxl": make_sdxl,
    "pixart": make_pixart,
    "wan": make_wan,
}
