"""What the two digits pipelines share (the flow-matching DiT and the held-out epsilon UNet): the prompt as
class labels with their classifier-free-guidance copy, the starting latents, the pipeline state that diffusers'
callbacks read, and the conversion of the final latents to the requested output."""

from __future__ import annotations

from numbers import Integral
from typing import Any

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from .model import NULL_CLASS, NUM_CLASSES, SAMPLE_SIZE

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


class DigitsPipelineBase(DiffusionPipeline):
    """The pipeline state and the input/output handling of a class-conditional 16x16 digits sampler."""

    #: the prompts ``etcdiff calibrate`` uses by default (its ten classes), and what ``etcdiff demo`` samples
    #: with this guidance scale
    etcdiff_calibration_prompts = tuple(str(i) for i in range(10))
    etcdiff_demo_prompts = etcdiff_calibration_prompts
    etcdiff_guidance = 2.0
    #: the bench scores its images with the shipped digit classifier
    etcdiff_digit_classes = True

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

    # -- what a model fills in ---------------------------------------------------------------------------
    @property
    def denoiser(self) -> torch.nn.Module:
        """The network that predicts the scheduler's model output."""
        raise NotImplementedError

    def condition(self, labels: torch.Tensor) -> Any:
        """What the denoiser is conditioned on, from the labels (default: the labels)."""
        return labels

    def set_schedule(self, num_inference_steps: int) -> torch.Tensor:
        """Set the scheduler up for the run; returns its timesteps."""
        self.scheduler.set_timesteps(num_inference_steps, device=self._execution_device)
        return self.scheduler.timesteps

    def predict(self, latent_in: torch.Tensor, t: torch.Tensor, step: int, cond: Any) -> torch.Tensor:
        """The denoiser's output for the (CFG-doubled) ``latent_in`` at timestep ``t``."""
        raise NotImplementedError

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
        """Sample one 16x16 digit per prompt entry ("0".."9" or 0..9).

        Returns ``ImagePipelineOutput(images=...)`` (or a 1-tuple): a list of 64x64 PIL images for "pil", a float32
        array [B, 16, 16, 1] in [0, 1] for "np", a tensor [B, 1, 16, 16] in [0, 1] for "pt", raw latents for "latent".
        """
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be a positive integer, got {num_inference_steps!r}.")
        model = self.denoiser
        _, labels, latents = self.start(prompt, guidance_scale, output_type, model.config.in_channels, model.dtype,
                                        generator, latents)
        cond = self.condition(labels)
        timesteps = self.set_schedule(num_inference_steps)
        self._num_timesteps = len(timesteps)
        latents = latents * getattr(self.scheduler, "init_noise_sigma", 1.0)
        with self.progress_bar(total=num_inference_steps) as progress_bar:
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    continue
                self._current_timestep = t
                latent_in = torch.cat([latents, latents]) if self.do_classifier_free_guidance else latents
                noise_pred = self.predict(latent_in, t, i, cond)
                if self.do_classifier_free_guidance:
                    cond_out, uncond_out = noise_pred.chunk(2)
                    noise_pred = uncond_out + guidance_scale * (cond_out - uncond_out)
                latents = self.scheduler.step(noise_pred, t, latents, return_dict=False)[0]
                progress_bar.update()
        return self.finish(latents, output_type, return_dict)

    # -- the parts of a call ------------------------------------------------------------------------------
    def start(self, prompt: Any, guidance_scale: float, output_type: str, channels: int, dtype: torch.dtype,
              generator: Any, latents: torch.Tensor | None) -> tuple[int, torch.Tensor, torch.Tensor]:
        """Check the inputs and set the state of a new call; returns the batch size, the labels (with the
        unconditional copy under guidance) and the starting latents."""
        from ..pipeline_inputs import check_guidance

        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"Invalid output_type {output_type!r}; expected one of {OUTPUT_TYPES}.")
        check_guidance(guidance_scale, type(self).__name__)
        labels_list = parse_prompt(prompt)
        batch, device = len(labels_list), self._execution_device
        self._guidance_scale = guidance_scale
        self._current_timestep = None
        self._interrupt = False
        labels = torch.tensor(labels_list, device=device, dtype=torch.long)
        if self.do_classifier_free_guidance:
            labels = torch.cat([labels, torch.full_like(labels, NULL_CLASS)])
        shape = (batch, channels, SAMPLE_SIZE, SAMPLE_SIZE)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        else:
            if tuple(latents.shape) != shape:
                raise ValueError(f"latents must have shape {shape}, got {tuple(latents.shape)}.")
            latents = latents.to(device=device, dtype=dtype)
        return batch, labels, latents

    def finish(self, latents: torch.Tensor, output_type: str, return_dict: bool) -> ImagePipelineOutput | tuple:
        """The final latents as ``output_type``: 64x64 PIL images, a float32 array [B, 16, 16, 1] in [0, 1] ("np"),
        a tensor [B, 1, 16, 16] in [0, 1] ("pt") or the raw latents ("latent")."""
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
