"""``DigitsPipeline``: a diffusers pipeline around the embedded class-conditional digits DiT."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from diffusers import DiTTransformer2DModel, FlowMatchEulerDiscreteScheduler

from .model import load_transformer
from .pipeline_base import DigitsPipelineBase

class DigitsPipeline(DigitsPipelineBase):
    """Class-conditional flow-matching sampler for 16x16 digits, with batched classifier-free guidance."""

    model_cpu_offload_seq = "transformer"
    #: the name its calibration profiles are saved and found under (see ``calibration.profile_identity``)
    etcdiff_identity = "digits"
    etcdiff_description = "the embedded digits DiT (flow matching, 16x16, class-conditional)"

    def __init__(self, transformer: DiTTransformer2DModel, scheduler: FlowMatchEulerDiscreteScheduler):
        super().__init__()
        self.register_modules(transformer=transformer, scheduler=scheduler)

    @classmethod
    def from_embedded(cls, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> "DigitsPipeline":
        """Load the weights shipped inside the package (no network)."""
        return cls(transformer=load_transformer(dtype), scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0)).to(device)

    @property
    def denoiser(self) -> torch.nn.Module:
        return self.transformer

    def set_schedule(self, num_inference_steps: int) -> torch.Tensor:
        timesteps = super().set_schedule(num_inference_steps)
        self.scheduler.set_begin_index(0)
        return timesteps

    def predict(self, latent_in: torch.Tensor, t: torch.Tensor, step: int, cond: Any) -> torch.Tensor:
        """The DiT's velocity, inside diffusers' ``cache_context`` (its branch name) where the model has one."""
        timestep = t.expand(latent_in.shape[0]).to(self.transformer.dtype)  # FlowMatch timesteps are sigma * 1000
        ctx = (
            self.transformer.cache_context(
                "cond_uncond" if self.do_classifier_free_guidance else "cond",
                step_index=step,
                num_inference_steps=self._num_timesteps,
                timestep=t,
                sigma=float(self.scheduler.sigmas[step]),
            )
            if hasattr(self.transformer, "cache_context")
            else contextlib.nullcontext()
        )
        with ctx:
            return self.transformer(latent_in, timestep=timestep, class_labels=cond, return_dict=False)[0]
