"""More tiny, random-weight, offline diffusers pipelines: one per pipeline class of the pipeline matrix.

Same conventions as :mod:`tiny_pipelines` (seeded weights, text encoders ``None``, random precomputed prompt
embeddings, latent output, one fixed generator); the factories there (Flux, SD3, SDXL, PixArt, Wan 2.1) are
reused as they are. Image-to-image pipelines get a fixed random image tensor in [0, 1].
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from tiny_pipelines import (SEED, TinyPipeline, _finish, _randn, _tiny_vae_kl, make_flux, make_pixart, make_sd3,
                            make_sdxl, make_wan)


def _seeded(cls: type, **config: Any) -> Any:
    """``cls(**config)`` in eval mode, its random weights drawn right after ``torch.manual_seed(SEED)``."""
    torch.manual_seed(SEED)
    return cls(**config).eval()


def _vae_shift(latent_channels: int) -> Any:
    """The tiny KL VAE with ``shift_factor`` set (the img2img pipelines of Flux and SD3 subtract it)."""
    vae = _tiny_vae_kl(latent_channels)
    vae.register_to_config(shift_factor=0.0)
    return vae


def _image(size: int = 16, seed: int = 7) -> torch.Tensor:
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


# -- Flux family --------------------------------------------------------------------------------------------------
def _flux_transformer() -> Any:
    from diffusers import FluxTransformer2DModel

    return _seeded(
        FluxTransformer2DModel, patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8],
        guidance_embeds=True,
    )


def _flux_like(cls_name: str, name: str, **extra: Any) -> TinyPipeline:
    import diffusers
    from diffusers import FlowMatchEulerDiscreteScheduler

    pipe = getattr(diffusers, cls_name)(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=_vae_shift(1), text_encoder=None, tokenizer=None,
        text_encoder_2=None, tokenizer_2=None, transformer=_flux_transformer(),
    )
    fixed = {"prompt_embeds": _randn(1, 8, 32, seed=1), "pooled_prompt_embeds": _randn(1, 32, seed=2),
             "height": 16, "width": 16, "guidance_scale": 3.5, **extra}
    return _finish(name, pipe, fixed, 1, "x_embedder")


def make_flux_img2img() -> TinyPipeline:
    return _flux_like("FluxImg2ImgPipeline", "flux_img2img", image=_image(), strength=0.8)


def make_flux_kontext() -> TinyPipeline:
    return _flux_like("FluxKontextPipeline", "flux_kontext", image=_image(), max_area=16 * 16,
                      _auto_resize=False)


def _flux2_transformer() -> Any:
    from diffusers import Flux2Transformer2DModel

    return _seeded(
        Flux2Transformer2DModel, patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
        attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32, timestep_guidance_channels=32,
        axes_dims_rope=(4, 4, 4, 4),
    )


def _flux2_vae() -> Any:
    from diffusers import AutoencoderKLFlux2

    return _seeded(
        AutoencoderKLFlux2, in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",), block_out_channels=(4,), layers_per_block=1, latent_channels=4,
        norm_num_groups=1, sample_size=32,
    )


def make_flux2(klein: bool = False) -> TinyPipeline:
    from diffusers import FlowMatchEulerDiscreteScheduler, Flux2KleinPipeline, Flux2Pipeline

    cls = Flux2KleinPipeline if klein else Flux2Pipeline
    pipe = cls(scheduler=FlowMatchEulerDiscreteScheduler(), vae=_flux2_vae(), text_encoder=None, tokenizer=None,
               transformer=_flux2_transformer())
    fixed = {"prompt_embeds": _randn(1, 8, 32, seed=1), "height": 16, "width": 16, "guidance_scale": 3.5}
    return _finish("flux2_klein" if klein else "flux2", pipe, fixed, 1, "x_embedder")


# -- SD3, SDXL, SD 1.5 --------------------------------------------------------------------------------------------
def make_sd3_img2img() -> TinyPipeline:
    from diffusers import StableDiffusion3Img2ImgPipeline

    base = make_sd3()
    pipe = StableDiffusion3Img2ImgPipeline(**{**base.pipe.components, "vae": _vae_shift(4)})
    return _finish("sd3_img2img", pipe, {**base.call_kwargs, "image": _image(), "strength": 0.8}, 1, "pos_embed",
                   batch_kwarg="")


def make_sdxl_denoising_end() -> TinyPipeline:
    base = make_sdxl()
    return _finish("sdxl_denoising_end", base.pipe, {**base.call_kwargs, "denoising_end": 0.6}, 1, "conv_in",
                   denoiser="unet")


def make_sdxl_img2img_denoising_start() -> TinyPipeline:
    from diffusers import StableDiffusionXLImg2ImgPipeline

    base = make_sdxl()
    components = {k: v for k, v in base.pipe.components.items() if k not in ("image_encoder", "feature_extractor")}
    pipe = StableDiffusionXLImg2ImgPipeline(**components, requires_aesthetics_score=False)
    fixed = {k: v for k, v in base.call_kwargs.items() if k not in ("height", "width")}
    fixed.update(image=_randn(1, 4, 2, 2, seed=8), denoising_start=0.4)
    return _finish("sdxl_img2img_start", pipe, fixed, 1, "conv_in", denoiser="unet")


def _sd15_unet() -> Any:
    from diffusers import UNet2DConditionModel

    return _seeded(
        UNet2DConditionModel, block_out_channels=(16, 32), layers_per_block=1, sample_size=8, in_channels=4,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4), cross_attention_dim=32,
        norm_num_groups=8,
    )


def _sd15_fixed() -> dict[str, Any]:
    return {"prompt_embeds": _randn(1, 8, 32, seed=1), "negative_prompt_embeds": _randn(1, 8, 32, seed=3),
            "height": 16, "width": 16, "guidance_scale": 5.0}


def make_sd15_ddim() -> TinyPipeline:
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline(vae=_tiny_vae_kl(4), text_encoder=None, tokenizer=None, unet=_sd15_unet(),
                                   scheduler=DDIMScheduler(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    return _finish("sd15_ddim", pipe, _sd15_fixed(), 1, "conv_in", denoiser="unet")


def make_controlnet() -> TinyPipeline:
    from diffusers import ControlNetModel, DDIMScheduler, StableDiffusionControlNetPipeline

    controlnet = _seeded(
        ControlNetModel, block_out_channels=(16, 32), layers_per_block=1, in_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), attention_head_dim=(2, 4), cross_attention_dim=32,
        norm_num_groups=8, conditioning_embedding_out_channels=(16,),
    )
    pipe = StableDiffusionControlNetPipeline(
        vae=_tiny_vae_kl(4), text_encoder=None, tokenizer=None, unet=_sd15_unet(), controlnet=controlnet,
        scheduler=DDIMScheduler(), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    fixed = {**_sd15_fixed(), "image": _image()}
    return _finish("controlnet", pipe, fixed, 1, "conv_in", denoiser="unet")


def make_lcm() -> TinyPipeline:
    from diffusers import LatentConsistencyModelPipeline, LCMScheduler, UNet2DConditionModel

    unet = _seeded(
        UNet2DConditionModel, block_out_channels=(16, 32), layers_per_block=1, sample_size=8, in_channels=4,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4), cross_attention_dim=32,
        norm_num_groups=8, time_cond_proj_dim=32,
    )
    pipe = LatentConsistencyModelPipeline(vae=_tiny_vae_kl(4), text_encoder=None, tokenizer=None, unet=unet,
                                          scheduler=LCMScheduler(), safety_checker=None, feature_extractor=None,
                                          requires_safety_checker=False)
    fixed = {"prompt_embeds": _randn(1, 8, 32, seed=1), "height": 16, "width": 16, "guidance_scale": 8.0}
    return _finish("lcm", pipe, fixed, 1, "conv_in", denoiser="unet")


# -- Wan 2.2: two experts -----------------------------------------------------------------------------------------
def make_wan22() -> TinyPipeline:
    """Wan 2.2 text-to-video: ``transformer`` on the high-noise steps, ``transformer_2`` on the low-noise ones
    (``boundary_ratio`` 0.9 of the 1000 training timesteps), cond and uncond calls on each."""
    from diffusers import WanPipeline

    base = make_wan()
    torch.manual_seed(SEED + 1)
    second = type(base.model)(**base.model.config).eval()
    components = dict(base.pipe.components)
    components.pop("transformer_2", None)
    pipe = WanPipeline(**components, transformer_2=second, boundary_ratio=0.9)
    return _finish("wan22", pipe, base.call_kwargs, 2, "patch_embedding", batch_kwarg="num_videos_per_prompt")


# -- other image DiTs ---------------------------------------------------------------------------------------------
def _mask(n: int = 8, dtype: torch.dtype = torch.long) -> torch.Tensor:
    return torch.ones(1, n, dtype=dtype)


def _embeds_with_masks(dim: int, mask_key: str = "prompt_attention_mask", n: int = 8,
                       dtype: torch.dtype = torch.long) -> dict[str, Any]:
    return {"prompt_embeds": _randn(1, n, dim, seed=1), mask_key: _mask(n, dtype),
            "negative_prompt_embeds": _randn(1, n, dim, seed=3), f"negative_{mask_key}": _mask(n, dtype)}


def make_sana() -> TinyPipeline:
    from diffusers import AutoencoderDC, FlowMatchEulerDiscreteScheduler, SanaPipeline, SanaTransformer2DModel

    vae = _seeded(
        AutoencoderDC, in_channels=3, latent_channels=4, attention_head_dim=2, encoder_block_types=("ResBlock",) * 3,
        decoder_block_types=("ResBlock",) * 3, encoder_block_out_channels=(8,) * 3,
        decoder_block_out_channels=(8,) * 3, encoder_layers_per_block=(1,) * 3, decoder_layers_per_block=(1,) * 3,
        encoder_qkv_multiscales=((),) * 3, decoder_qkv_multiscales=((),) * 3, decoder_norm_types="rms_norm",
        decoder_act_fns="silu",
    )
    transformer = _seeded(
        SanaTransformer2DModel, in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8,
        num_layers=2, num_cross_attention_heads=2, cross_attention_head_dim=8, cross_attention_dim=16,
        caption_channels=32, sample_size=16,
    )
    pipe = SanaPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=transformer,
                        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0))
    fixed = {**_embeds_with_masks(32), "negative_prompt": None, "height": 32, "width": 32, "guidance_scale": 4.5,
             "use_resolution_binning": False, "complex_human_instruction": None}
    return _finish("sana", pipe, fixed, 1, "patch_embed")


def make_auraflow() -> TinyPipeline:
    from diffusers import AuraFlowPipeline, AuraFlowTransformer2DModel, FlowMatchEulerDiscreteScheduler

    transformer = _seeded(
        AuraFlowTransformer2DModel, sample_size=16, patch_size=2, in_channels=4, num_mmdit_layers=1,
        num_single_dit_layers=1, attention_head_dim=8, num_attention_heads=2, joint_attention_dim=32,
        caption_projection_dim=16, out_channels=4, pos_embed_max_size=64,
    )
    pipe = AuraFlowPipeline(tokenizer=None, text_encoder=None, vae=_tiny_vae_kl(4), transformer=transformer,
                            scheduler=FlowMatchEulerDiscreteScheduler())
    fixed = {**_embeds_with_masks(32), "height": 16, "width": 16, "guidance_scale": 3.5}
    return _finish("auraflow", pipe, fixed, 1, "pos_embed")


def make_lumina2() -> TinyPipeline:
    from diffusers import FlowMatchEulerDiscreteScheduler, Lumina2Pipeline, Lumina2Transformer2DModel

    transformer = _seeded(
        Lumina2Transformer2DModel, sample_size=16, patch_size=2, in_channels=4, hidden_size=16, num_layers=1,
        num_refiner_layers=1, num_attention_heads=2, num_kv_heads=1, multiple_of=16, axes_dim_rope=(4, 2, 2),
        axes_lens=(32, 32, 32), cap_feat_dim=32,
    )
    pipe = Lumina2Pipeline(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(),
                           vae=_tiny_vae_kl(4), text_encoder=None, tokenizer=None)
    fixed = {**_embeds_with_masks(32), "height": 16, "width": 16, "guidance_scale": 4.0}
    return _finish("lumina2", pipe, fixed, 2, "x_embedder")


def make_chroma() -> TinyPipeline:
    from diffusers import ChromaPipeline, ChromaTransformer2DModel, FlowMatchEulerDiscreteScheduler

    transformer = _seeded(
        ChromaTransformer2DModel, patch_size=1, in_channels=4, num_layers=1, num_single_layers=1,
        attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32, axes_dims_rope=(4, 4, 8),
        approximator_num_channels=8, approximator_hidden_dim=16, approximator_layers=1,
    )
    pipe = ChromaPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=_tiny_vae_kl(1), text_encoder=None,
                          tokenizer=None, transformer=transformer)
    fixed = {**_embeds_with_masks(32, dtype=torch.float32), "height": 16, "width": 16, "guidance_scale": 4.0}
    return _finish("chroma", pipe, fixed, 2, "x_embedder")


def make_qwenimage() -> TinyPipeline:
    from diffusers import (AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImagePipeline,
                           QwenImageTransformer2DModel)

    vae = _seeded(AutoencoderKLQwenImage, base_dim=4, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                  temperal_downsample=[False, True, True], latents_mean=[0.0] * 4, latents_std=[1.0] * 4)
    transformer = _seeded(
        QwenImageTransformer2DModel, patch_size=2, in_channels=16, out_channels=4, num_layers=2,
        attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32, axes_dims_rope=(4, 6, 6),
    )
    pipe = QwenImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=None,
                             tokenizer=None, transformer=transformer)
    fixed = {**_embeds_with_masks(32, "prompt_embeds_mask"), "height": 16, "width": 16, "true_cfg_scale": 4.0}
    return _finish("qwenimage", pipe, fixed, 2, "img_in")


# -- video DiTs ---------------------------------------------------------------------------------------------------
def make_hunyuanvideo() -> TinyPipeline:
    from diffusers import (AutoencoderKLHunyuanVideo, FlowMatchEulerDiscreteScheduler, HunyuanVideoPipeline,
                           HunyuanVideoTransformer3DModel)

    vae = _seeded(
        AutoencoderKLHunyuanVideo, latent_channels=4, down_block_types=("HunyuanVideoDownBlock3D",) * 3,
        up_block_types=("HunyuanVideoUpBlock3D",) * 3, block_out_channels=(8, 8, 8), layers_per_block=1,
        norm_num_groups=4, spatial_compression_ratio=4, temporal_compression_ratio=4, mid_block_add_attention=False,
    )
    transformer = _seeded(
        HunyuanVideoTransformer3DModel, in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8,
        num_layers=1, num_single_layers=1, num_refiner_layers=1, patch_size=1, patch_size_t=1, text_embed_dim=32,
        pooled_projection_dim=16, rope_axes_dim=(2, 2, 4),
    )
    pipe = HunyuanVideoPipeline(text_encoder=None, tokenizer=None, transformer=transformer, vae=vae,
                                scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), text_encoder_2=None,
                                tokenizer_2=None)
    fixed = {"prompt_embeds": _randn(1, 8, 32, seed=1), "pooled_prompt_embeds": _randn(1, 16, seed=2),
             "prompt_attention_mask": _mask(), "height": 16, "width": 16, "num_frames": 5, "guidance_scale": 6.0}
    return _finish("hunyuanvideo", pipe, fixed, 1, "x_embedder", batch_kwarg="num_videos_per_prompt")


def make_ltx() -> TinyPipeline:
    from diffusers import (AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXPipeline,
                           LTXVideoTransformer3DModel)

    vae = _seeded(
        AutoencoderKLLTXVideo, latent_channels=4, block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1), spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False), decoder_inject_noise=(False,) * 5,
        upsample_residual=(False,) * 4, upsample_factor=(1,) * 4, patch_size=1, patch_size_t=1,
    )
    transformer = _seeded(
        LTXVideoTransformer3DModel, in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8,
        cross_attention_dim=16, num_layers=1, caption_channels=32,
    )
    pipe = LTXPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=None, tokenizer=None,
                       transformer=transformer)
    fixed = {**_embeds_with_masks(32), "height": 32, "width": 32, "num_frames": 9, "guidance_scale": 3.0}
    return _finish("ltx", pipe, fixed, 1, "proj_in", batch_kwarg="num_videos_per_prompt")


def make_cogvideox() -> TinyPipeline:
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXPipeline, CogVideoXTransformer3DModel

    vae = _seeded(
        AutoencoderKLCogVideoX, down_block_types=("CogVideoXDownBlock3D",) * 2,
        up_block_types=("CogVideoXUpBlock3D",) * 2, block_out_channels=(8, 8), latent_channels=4, layers_per_block=1,
        norm_num_groups=2, temporal_compression_ratio=4,
    )
    transformer = _seeded(
        CogVideoXTransformer3DModel, num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
        time_embed_dim=8, text_embed_dim=32, num_layers=1, sample_width=8, sample_height=8, sample_frames=9,
        patch_size=2, temporal_compression_ratio=4, max_text_seq_length=8,
    )
    pipe = CogVideoXPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=transformer,
                             scheduler=CogVideoXDDIMScheduler())
    fixed = {"prompt_embeds": _randn(1, 8, 32, seed=1), "negative_prompt_embeds": _randn(1, 8, 32, seed=3),
             "height": 16, "width": 16, "num_frames": 9, "guidance_scale": 6.0, "max_sequence_length": 8}
    return _finish("cogvideox", pipe, fixed, 1, "patch_embed", batch_kwarg="num_videos_per_prompt")


def make_mochi() -> TinyPipeline:
    from diffusers import AutoencoderKLMochi, FlowMatchEulerDiscreteScheduler, MochiPipeline, MochiTransformer3DModel

    vae = _seeded(
        AutoencoderKLMochi, latent_channels=4, encoder_block_out_channels=(32,) * 4,
        decoder_block_out_channels=(32,) * 4, layers_per_block=(1, 1, 1, 1, 1), add_attention_block=(False,) * 5,
        latents_mean=(0.0,) * 4, latents_std=(1.0,) * 4,
    )
    transformer = _seeded(
        MochiTransformer3DModel, patch_size=2, num_attention_heads=2, attention_head_dim=8, num_layers=2,
        pooled_projection_dim=16, in_channels=4, text_embed_dim=32, time_embed_dim=4, max_sequence_length=8,
    )
    pipe = MochiPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=None, tokenizer=None,
                         transformer=transformer)
    fixed = {**_embeds_with_masks(32), "height": 16, "width": 16, "num_frames": 7, "guidance_scale": 4.5}
    return _finish("mochi", pipe, fixed, 1, "patch_embed", batch_kwarg="num_videos_per_prompt")


class _NoSafetyCheck:
    """Stands in for Cosmos' guardrail (a separate package the pipeline refuses to run without): passes all."""

    def to(self, *args: Any, **kwargs: Any) -> "_NoSafetyCheck":
        return self

    def check_text_safety(self, prompt: str) -> bool:
        return True

    def check_video_safety(self, video: Any) -> Any:
        return video


def make_cosmos() -> TinyPipeline:
    """Cosmos 1.0 text-to-world (EDM Euler): it calls ``scheduler.step`` twice per loop step."""
    from diffusers import AutoencoderKLCosmos, CosmosTextToWorldPipeline, CosmosTransformer3DModel, EDMEulerScheduler

    vae = _seeded(
        AutoencoderKLCosmos, latent_channels=4, encoder_block_out_channels=(8, 8), decode_block_out_channels=(8, 8),
        attention_resolutions=(), resolution=16, num_layers=1, patch_size=1, patch_type="haar",
        spatial_compression_ratio=2, temporal_compression_ratio=2, latents_mean=None, latents_std=None,
    )
    transformer = _seeded(
        CosmosTransformer3DModel, in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=24,
        num_layers=1, mlp_ratio=2.0, text_embed_dim=32, adaln_lora_dim=4, max_size=(4, 16, 16), patch_size=(1, 2, 2),
        rope_scale=(1.0, 1.0, 1.0), concat_padding_mask=False, extra_pos_embed_type="learnable",
        # True needs torchvision,
    )
    scheduler = EDMEulerScheduler(sigma_min=0.002, sigma_max=80, sigma_data=0.5, sigma_schedule="karras",
                                  num_train_timesteps=1000, prediction_type="epsilon", rho=7.0,
                                  final_sigmas_type="sigma_min")
    pipe = CosmosTextToWorldPipeline(text_encoder=None, tokenizer=None, transformer=transformer, vae=vae,
                                     scheduler=scheduler, safety_checker=_NoSafetyCheck())
    fixed = {"prompt_embeds": _randn(1, 8, 32, seed=1), "negative_prompt_embeds": _randn(1, 8, 32, seed=3),
             "height": 16, "width": 16, "num_frames": 3, "guidance_scale": 7.0}
    return _finish("cosmos", pipe, fixed, 2, "patch_embed", batch_kwarg="num_videos_per_prompt")


def make_stable_audio() -> TinyPipeline:
    from diffusers import AutoencoderOobleck, EDMDPMSolverMultistepScheduler, StableAudioDiTModel, StableAudioPipeline
    from diffusers.pipelines.stable_audio import StableAudioProjectionModel

    vae = _seeded(AutoencoderOobleck, encoder_hidden_size=4, downsampling_ratios=[2, 2], channel_multiples=[1, 2],
                  decoder_channels=4, decoder_input_channels=4, audio_channels=2, sampling_rate=64)
    transformer = _seeded(
        StableAudioDiTModel, sample_size=8, in_channels=4, num_layers=2, attention_head_dim=4, num_attention_heads=2,
        num_key_value_attention_heads=1, out_channels=4, cross_attention_dim=8, time_proj_dim=8,
        global_states_input_dim=16, cross_attention_input_dim=8,
    )
    projection = _seeded(StableAudioProjectionModel, text_encoder_dim=32, conditioning_dim=8, min_value=0, max_value=64)
    pipe = StableAudioPipeline(vae=vae, text_encoder=None, projection_model=projection, tokenizer=None,
                               transformer=transformer, scheduler=EDMDPMSolverMultistepScheduler())
    fixed = {"prompt_embeds": _randn(1, 8, 32, seed=1), "negative_prompt_embeds": _randn(1, 8, 32, seed=3),
             "attention_mask": _mask(), "negative_attention_mask": _mask(), "audio_end_in_s": 0.5,
             "guidance_scale": 7.0}
    return _finish("stable_audio", pipe, fixed, 1, "preprocess_conv", batch_kwarg="num_waveforms_per_prompt",
                   old_style_callback=True)


MATRIX_FACTORIES: dict[str, Callable[[], TinyPipeline]] = {
    "flux": make_flux,
    "flux_img2img": make_flux_img2img,
    "flux_kontext": make_flux_kontext,
    "flux2": make_flux2,
    "sd3": make_sd3,
    "sd3_img2img": make_sd3_img2img,
    "sdxl": make_sdxl,
    "sdxl_denoising_end": make_sdxl_denoising_end,
    "sdxl_img2img_start": make_sdxl_img2img_denoising_start,
    "sd15_ddim": make_sd15_ddim,
    "controlnet": make_controlnet,
    "pixart": make_pixart,
    "wan": make_wan,
    "wan22": make_wan22,
    "lcm": make_lcm,
    "sana": make_sana,
    "auraflow": make_auraflow,
    "lumina2": make_lumina2,
    "chroma": make_chroma,
    "qwenimage": make_qwenimage,
    "hunyuanvideo": make_hunyuanvideo,
    "ltx": make_ltx,
    "cogvideox": make_cogvideox,
    "mochi": make_mochi,
    "cosmos": make_cosmos,
    "stable_audio": make_stable_audio,
}
