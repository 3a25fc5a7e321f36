"""``UNetDigitsPipeline``: a diffusers pipeline around the held-out UNet digits model (DDIM or DPM-Solver++)."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, UNet2DConditionModel

from ..digits.pipeline_base import DigitsPipelineBase
from .model import NOISE_SCHEDULE, LabelTokens, load_models

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


class UNetDigitsPipeline(DigitsPipelineBase):
    """Class-conditional epsilon-prediction UNet sampler for 16x16 digits, with batched classifier-free guidance.

    Any diffusers scheduler that takes epsilon predictions on the model's DDPM schedule can be swapped in
    (``pipe.scheduler = ...``); :meth:`from_embedded` ships DDIM and DPM-Solver++.
    """

    model_cpu_offload_seq = "label_encoder->unet"
    etcdiff_identity = "unet-digits"
    etcdiff_description = "the held-out UNet digits model (epsilon prediction, 16x16, class-conditional, DDIM)"

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
    def denoiser(self) -> torch.nn.Module:
        return self.unet

    def condition(self, labels: torch.Tensor) -> torch.Tensor:
        """The label tokens the UNet reads through cross-attention."""
        return self.label_encoder(labels).to(self.unet.dtype)

    def predict(self, latent_in: torch.Tensor, t: torch.Tensor, step: int, cond: Any) -> torch.Tensor:
        """The UNet's noise prediction on the scheduler-scaled input."""
        latent_in = self.scheduler.scale_model_input(latent_in, t)
        return self.unet(latent_in, t, encoder_hidden_states=cond, return_dict=False)[0]
