"""``DigitsPipeline``: a diffusers pipeline around the embedded class-conditional digits DiT."""

from __future__ import annotations

import contextlib
from numbers import Integral
from typing import Any

import numpy as np
import torch
from diffusers import DiffusionPipeline, DiTTransformer2DModel, FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from .model import NULL_CLASS, NUM_CLASSES, SAMPLE_SIZE, load_transformer

OUTPUT_TYPES = ("pil", "np", "pt", "latent")
PIL_SIZE = 64


def parse_prompt(prompt: Any) -> list[int]:
    """Turn a digit prompt ("0".."9", 0..9, or a list of them) into class labels."""
    items = prompt if isinstance(prompt, (list, tuple)) else [prompt]
    labels = []
    for p in items:
        if isinstance(p, str) and p.strip().isdigit() and len(p.strip()) == 1:
            labels.append(int(p.strip()))
        elif isinstance(p, Integral) and not isinstance(p, bool) and 0 <= int(p) < NUM_CLASSES:
            labels.append(int(p))
        else:
            raise ValueError(
                f"Invalid prompt {p!r}: DigitsPipeline only draws single digits. Valid prompts are the strings "
                f"'0'..'9' or the integers 0..9, or a non-empty list of them."
            )
    if not labels:
        raise ValueError("Empty prompt list: pass at least one digit ('0'..'9' or 0..9).")
    return labels


class DigitsPipeline(DiffusionPipeline):
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

    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self._guidance_scale > 1.0

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    @property
    def current_timestep(self) -> torch.Tensor | None:
        return self._current_timestep

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    @staticmethod
    def decode(latents: torch.Tensor) -> torch.Tensor:
        """Map latents (pixel space, [-1, 1]) to images in [0, 1]; the "VAE" is the identity."""
        return ((latents.float() + 1.0) / 2.0).clamp(0.0, 1.0)

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
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"Invalid output_type {output_type!r}; expected one of {OUTPUT_TYPES}.")
        from ..pipeline_inputs import check_guidance

        check_guidance(guidance_scale, "DigitsPipeline")
        labels_list = parse_prompt(prompt)
        batch = len(labels_list)
        device = self._execution_device
        dtype = self.transformer.dtype
        self._guidance_scale = guidance_scale
        self._current_timestep = None
        self._interrupt = False

        labels = torch.tensor(labels_list, device=device, dtype=torch.long)
        if self.do_classifier_free_guidance:
            labels = torch.cat([labels, torch.full_like(labels, NULL_CLASS)])

        shape = (batch, self.transformer.config.in_channels, SAMPLE_SIZE, SAMPLE_SIZE)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        else:
            if tuple(latents.shape) != shape:
                raise ValueError(f"latents must have shape {shape}, got {tuple(latents.shape)}.")
            latents = latents.to(device=device, dtype=dtype)

        self.scheduler.set_timesteps(num_inference_steps, device=device)
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

        self._current_timestep = None
        self.maybe_free_model_hooks()

        if output_type == "latent":
            images: Any = latents
        else:
            images = self.decode(latents)
            if output_type == "np":
                images = images.permute(0, 2, 3, 1).cpu().numpy().astype(np.float32)
            elif output_type == "pil":
                arr = (images[:, 0].cpu().numpy() * 255).round().astype(np.uint8)
                images = [Image.fromarray(a).resize((PIL_SIZE, PIL_SIZE), Image.NEAREST) for a in arr]
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)
