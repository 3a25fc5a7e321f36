"""A generic sampling loop for any denoiser and any diffusers scheduler, in the style of k-diffusion."""

from __future__ import annotations

from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from ..policies.base import StepPolicy

Denoiser = Callable[..., torch.Tensor]


@torch.no_grad()
def sample(
    model: Denoiser,
    scheduler: Any,
    latents: torch.Tensor,
    num_inference_steps: int,
    policy: StepPolicy,
    *,
    progress: bool = False,
    **model_kwargs: Any,
) -> torch.Tensor:
    """Sample with ``policy`` deciding which steps call ``model``; returns the final latents.

    ``model(latents, timestep, **model_kwargs)`` must return the tensor that ``scheduler.step`` consumes
    (apply classifier-free guidance inside it). ``scheduler`` is any diffusers scheduler; it is used as it
    is, with one ``scheduler.step`` per entry of ``scheduler.timesteps``; the model's input goes through
    ``scheduler.scale_model_input`` where the scheduler has it, as in diffusers' pipelines. On a skipped step ``model`` is not
    called; when the policy has no safe estimate (no trend yet, or a non-finite one) the model runs instead.
    """
    if not callable(model):
        raise TypeError(f"sample: model must be callable as model(latents, timestep, **kwargs), got {type(model).__name__}.")
    if not isinstance(latents, torch.Tensor):
        raise TypeError(f"sample: latents must be a torch.Tensor, got {type(latents).__name__}.")
    if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1:
        raise ValueError(f"sample: num_inference_steps must be a positive integer, got {num_inference_steps!r}.")
    scheduler.set_timesteps(num_inference_steps, device=latents.device)
    timesteps = scheduler.timesteps
    policy.begin(len(timesteps))
    policy.use_schedule(getattr(scheduler, "sigmas", None))
    policy.check_scheduler(scheduler)
    scale_input = hasattr(scheduler, "scale_model_input")
    for i, t in enumerate(tqdm(timesteps, disable=not progress, desc=policy.name)):
        out = None
        computed = policy.should_compute(i, latents)
        if not computed:
            out = policy.predict(i)
            computed = out is None
        if computed:
            x_in = scheduler.scale_model_input(latents, t) if scale_input else latents
            out = model(x_in, t, **model_kwargs)
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"sample: model must return a torch.Tensor, got {type(out).__name__}.")
        policy.observe(i, out, computed)
        latents = scheduler.step(out, t, latents, return_dict=False)[0]
    return latents
