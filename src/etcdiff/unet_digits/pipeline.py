"""``UNetDigitsPipeline``: a diffusers pipeline around the held-out UNet digits model (DDIM or DPM-Solver++)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from diffusers import DDIMScheduler, DiffusionPipeline, DPMSolverMultistepScheduler, UNet2DConditionModel
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from ..digits.pipeline import parse_prompt
from .model import NOISE_SCHEDULE, NULL_CLASS, SAMPLE_SIZE, LabelTokens, load_models

OUTPUT_TYPES = ("pil", "np", "pt", "latent")
PIL_SIZE = 64
#: the samplers it ships with, by the name ``from_embedded`` takes
SOLVERS = ("ddim", "dpm")


def make_scheduler(solver: str) -> DDIMScheduler | DPMSolverMultistepScheduler:
    """The model's sampler with Stable Diffusion's settings on its own noise schedule: ``"ddim"`` (DDIM, eta 0,
    leading spacing, steps offset 1, no clipping) or ``"dpm"`` (DPM-Solver++ 2M, multistep, second order)."""
    if solver == "ddim":
        return DDIMScheduler(**NOISE_SCHEDULE, prediction_type="epsilon", clip_sample=False, set_alpha_to_one=False,
                             steps_offset=1, timestep_spacing="leading")
    if solver == "dpm":
        return DPMSolverMultistepScheduler(**NOISE_SCHEDULE, prediction_type="epsilon", algorithm_type="dpmsolver++",
                                           solver_order=2)
    raise ValueError(f"unknown solver {solver!r} for the UNet digits model; use one of {', '.join(SOLVERS)}.")


class UNetDigitsPipeline(DiffusionPipeline):
    """Class-conditional epsilon-prediction UNet sampler for 16x16 digits, with batched classifier-free guidance.

    Any diffusers scheduler that takes epsilon predictions on the model's DDPM schedule can be swapped in
    (``pipe.scheduler = ...``); :meth:`from_embedded` ships DDIM and DPM-Solver++.
    """

    model_cpu_offload_seq = "label_encoder->unet"
    etcdiff_identity = "unet-digits"
    etcdiff_calibration_prompts = tuple(str(i) for i in range(10))
    etcdiff_demo_prompts = etcdiff_calibration_prompts
    etcdiff_guidance = 2.0
    etcdiff_description = "the held-out UNet digits model (epsilon prediction, 16x16, class-conditional, DDIM)"
    #: the bench scores its images with the shipped digit classifier
    etcdiff_digit_classes = True

    def __init__(self, unet: UNet2DConditionModel, label_encoder: LabelTokens,
                 scheduler: DDIMScheduler | DPMSolverMultistepScheduler):
        super().__init__()
        self.register_modules(unet=unet, label_encoder=label_encoder, scheduler=scheduler)

    @classmethod
    def from_embedded(cls, solver: str = "ddim", device: str | torch.device = "cpu") -> "UNetDigitsPipeline":
        """Load the weights shipped inside the package (no network), with the ``solver`` of :data:`SOLVERS`.

        Each solver has its own identity (``unet-digits``, ``unet-digits-dpm``) so that calibration profiles,
        which are fitted for one scheduler, are saved and found apart."""
        scheduler = make_scheduler(solver)
        unet, labels = load_models()
        pipe = cls(unet=unet, label_encoder=labels, scheduler=scheduler).to(device)
        if solver != "ddim":
            pipe.etcdiff_identity = f"unet-digits-{solver}"
            pipe.etcdiff_description = pipe.etcdiff_description.replace("DDIM", "DPM-Solver++ 2M")
        return pipe

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
        """Sample one 16x16 digit per prompt entry ("0".."9" or 0..9).

        Returns ``ImagePipelineOutput(images=...)`` (or a 1-tuple): a list of 64x64 PIL images for "pil", a float32
        array [B, 16, 16, 1] in [0, 1] for "np", a tensor [B, 1, 16, 16] in [0, 1] for "pt", raw latents for "latent".
        """
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"Invalid output_type {output_type!r}; expected one of {OUTPUT_TYPES}.")
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be a positive integer, got {num_inference_steps!r}.")
        labels_list = parse_prompt(prompt)
        batch = len(labels_list)
        device = self._execution_device
        dtype = self.unet.dtype
        self._guidance_scale = guidance_scale
        self._current_timestep = None
        self._interrupt = False

        labels = torch.tensor(labels_list, device=device, dtype=torch.long)
        if self.do_classifier_free_guidance:
            labels = torch.cat([labels, torch.full_like(labels, NULL_CLASS)])
        tokens = self.label_encoder(labels).to(dtype)

        shape = (batch, self.unet.config.in_channels, SAMPLE_SIZE, SAMPLE_SIZE)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        else:
            if tuple(latents.shape) != shape:
                raise ValueError(f"latents must have shape {shape}, got {tuple(latents.shape)}.")
            latents = latents.to(device=device, dtype=dtype)

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        self._num_timesteps = len(timesteps)
        latents = latents * self.scheduler.init_noise_sigma

        with self.progress_bar(total=num_inference_steps) as progress_bar:
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    continue
                self._current_timestep = t
                latent_in = torch.cat([latents, latents]) if self.do_classifier_free_guidance else latents
                latent_in = self.scheduler.scale_model_input(latent_in, t)
                noise_pred = self.unet(latent_in, t, encoder_hidden_states=tokens, return_dict=False)[0]
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
