"""``DigitsPipeline``: a diffusers pipeline around the embedded class-conditional digits DiT."""

from __future__ import annotations

import contextlib

import torch
from diffusers import DiTTransformer2DModel, FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput

from .model import load_transformer
from .pipeline_base import DigitsPipelineBase

class DigitsPipeline(DigitsPipelineBase):
    """Class-conditional flow-matching sampler for 16x16 digits, with batched classifier-free guidance."""

    model_cpu_offload_seq = "transformer"
    #: the name its calibration profiles are saved and found under (see ``calibration.profile_identity``)
    etcdiff_identity = "digits"
    #: the prompts ``etcdiff calibrate`` uses for it by default: its ten classes
    etcdiff_calibration_prompts = tuple(str(i) for i in range(10))
    #: what ``etcdiff demo --model digits`` samples, with this guidance scale
    etcdiff_demo_prompts = etcdiff_calibration_prompts
    etcdiff_guidance = 2.0
    etcdiff_description = "the embedded digits DiT (flow matching, 16x16, class-conditional)"

    def __init__(self, transformer: DiTTransformer2DModel, scheduler: FlowMatchEulerDiscreteScheduler):
        super().__init__()
        self.register_modules(transformer=transformer, scheduler=scheduler)

    @classmethod
    def from_embedded(cls, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> "DigitsPipeline":
        """Load the weights shipped inside the package (no network)."""
        return cls(transformer=load_transformer(dtype), scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0)).to(device)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | int | list,
        num_inference_steps: int = 50,
        guidance_scale: float = 2.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        """Sample one 16x16 digit per prompt entry.

        Returns ``ImagePipelineOutput(images=...)`` (or a 1-tuple): a list of 64x64 PIL images for "pil", a float32
        array [B, 16, 16, 1] in [0, 1] for "np", a tensor [B, 1, 16, 16] in [0, 1] for "pt", raw latents for "latent".
        """
        dtype = self.transformer.dtype
        batch, labels, latents = self.start(prompt, guidance_scale, output_type, self.transformer.config.in_channels,
                                            dtype, generator, latents)

        self.scheduler.set_timesteps(num_inference_steps, device=self._execution_device)
        timesteps = self.scheduler.timesteps
        self._num_timesteps = len(timesteps)
        self.scheduler.set_begin_index(0)
        has_cache_context = hasattr(self.transformer, "cache_context")

        with self.progress_bar(total=num_inference_steps) as progress_bar:
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    continue
                self._current_timestep = t
                latent_in = torch.cat([latents, latents]) if self.do_classifier_free_guidance else latents
                timestep = t.expand(latent_in.shape[0]).to(dtype)  # FlowMatch timesteps are sigma * 1000
                ctx = (
                    self.transformer.cache_context(
                        "cond_uncond" if self.do_classifier_free_guidance else "cond",
                        step_index=i,
                        num_inference_steps=self._num_timesteps,
                        timestep=t,
                        sigma=float(self.scheduler.sigmas[i]),
                    )
                    if has_cache_context
                    else contextlib.nullcontext()
                )
                with ctx:
                    noise_pred = self.transformer(latent_in, timestep=timestep, class_labels=labels, return_dict=False)[0]
                if self.do_classifier_free_guidance:
                    cond, uncond = noise_pred.chunk(2)
                    noise_pred = uncond + guidance_scale * (cond - uncond)
                latents = self.scheduler.step(noise_pred, t, latents, return_dict=False)[0]
                progress_bar.update()

        return self.finish(latents, output_type, return_dict)
