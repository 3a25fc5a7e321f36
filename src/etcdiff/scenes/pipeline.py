"""``ScenesPipeline``: diffusers' own ``FluxPipeline``, with only the text encoding supplied by us.

Sampling runs through ``FluxPipeline.__call__`` unchanged: latent packing, ``FlowMatchEulerDiscreteScheduler``
with FLUX's resolution-dependent shift (``mu`` from the image token count), the two-branch true-CFG loop and
the VAE decode. What this subclass changes:

* ``encode_prompt`` runs the grammar tokenizer and the small scenes text encoder instead of CLIP + T5;
* ``__call__`` only fills defaults: 64x64 output, the empty caption as negative prompt, and
  ``guidance_scale`` used as the true-CFG scale (the model has no guidance embedding, so FluxPipeline would
  otherwise ignore it).

The scheduler's shift parameters are FLUX's, rescaled to our token counts: FLUX maps 256..4096 image tokens
to mu 0.5..1.15; our 64x64 images are 64 tokens, which is "full resolution" here, so 16..64 tokens map to
0.5..1.15 and sampling uses FLUX's full-resolution shift exp(1.15) ~ 3.16.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

from .adherence import score as adherence_score
from .grammar import calibration_prompts
from .model import load_components
from .text_encoder import ScenesTextEncoder, ScenesTokenizer

DEFAULT_GUIDANCE = 3.0
SCHEDULER_CONFIG: dict = dict(
    num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=True,
    base_image_seq_len=16, max_image_seq_len=64, base_shift=0.5, max_shift=1.15,
)


def build_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """The FLUX-style shifted flow-matching Euler scheduler used by the scenes pipeline."""
    return FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG)


class ScenesPipeline(FluxPipeline):
    """FLUX text-to-image sampling of 64x64 scenes from prompts of the scenes grammar (true CFG)."""

    #: what etcdiff's calibration profiles of this model are saved and found under
    etcdiff_identity = "scenes"
    #: ``etcdiff calibrate``'s default prompts: ten from the grammar at the calibration seed, disjoint from the
    #: held-out evaluation prompts (``scenes.evaluate``)
    etcdiff_calibration_prompts = tuple(calibration_prompts())
    #: what ``etcdiff demo`` samples (not among the calibration prompts)
    etcdiff_demo_prompts = (
        "a large red circle at the top left and a small blue square in the center",
        "a small green ring at the right",
        "a large yellow triangle at the bottom and a small cyan cross at the top",
        "a small white square at the top right and a large purple ring at the bottom left",
    )
    #: the bench's prompt-adherence metric: fraction of requested objects read back right from an image
    etcdiff_adherence = staticmethod(adherence_score)
    etcdiff_guidance = DEFAULT_GUIDANCE
    etcdiff_description = "the embedded scenes FLUX (text-to-image, 64x64, true CFG)"

    def __init__(self, scheduler, vae, text_encoder: ScenesTextEncoder, tokenizer: ScenesTokenizer, transformer,
                 text_encoder_2=None, tokenizer_2=None, image_encoder=None, feature_extractor=None):
        super().__init__(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                         text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, transformer=transformer,
                         image_encoder=image_encoder, feature_extractor=feature_extractor)
        self.default_sample_size = 16  # x vae_scale_factor 4 = 64 px

    @classmethod
    def from_embedded(cls, device: str | torch.device = "cpu", weights_dir: Any = None) -> "ScenesPipeline":
        """Load the weights shipped inside the package (no network)."""
        vae, text, transformer = load_components(weights_dir)
        return cls(scheduler=build_scheduler(), vae=vae, text_encoder=text, tokenizer=text.tokenizer(),
                   transformer=transformer).to(device)

    def encode_prompt(self, prompt, prompt_2=None, device=None, num_images_per_prompt: int = 1, prompt_embeds=None,
                      pooled_prompt_embeds=None, max_sequence_length: int = 512, lora_scale=None):
        """(token embeddings [B,L,D], pooled [B,D], rotary text ids [L,3]) from the scenes text encoder."""
        device = device or self._execution_device
        if prompt_embeds is None:
            ids, pad = self.tokenizer(prompt)
            with torch.no_grad():
                prompt_embeds, pooled_prompt_embeds = self.text_encoder(ids.to(device), pad.to(device))
        dtype = self.transformer.dtype
        prompt_embeds = prompt_embeds.to(device=device, dtype=dtype).repeat_interleave(num_images_per_prompt, 0)
        pooled_prompt_embeds = pooled_prompt_embeds.to(device=device, dtype=dtype).repeat_interleave(num_images_per_prompt, 0)
        text_ids = self.tokenizer.positions(device, dtype)
        return prompt_embeds, pooled_prompt_embeds, text_ids

    def __call__(self, prompt: str | list[str] | None = None, guidance_scale: float = DEFAULT_GUIDANCE,
                 negative_prompt: str | list[str] | None = None, **kwargs: Any):
        """``FluxPipeline.__call__`` with scenes defaults; ``guidance_scale`` is the true-CFG scale (1 = off)."""
        from ..pipeline_inputs import check_guidance, check_text_prompt

        if kwargs.get("prompt_embeds") is None:
            check_text_prompt(prompt, "ScenesPipeline")
        check_guidance(guidance_scale, "ScenesPipeline")
        if negative_prompt is None and prompt is not None:
            negative_prompt = [""] * len(prompt) if isinstance(prompt, list) else ""
        kwargs.setdefault("true_cfg_scale", guidance_scale)
        kwargs.setdefault("max_sequence_length", self.tokenizer.model_max_length)
        return super().__call__(prompt=prompt, negative_prompt=negative_prompt, guidance_scale=guidance_scale,
                                **kwargs)
