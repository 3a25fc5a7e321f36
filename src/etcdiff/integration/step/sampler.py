"""A generic sampling loop for any denoiser and any diffusers scheduler, in the style of k-diffusion."""

from __future__ import annotations

from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from ...policies.step.base import StepPolicy
from ..._numbers import as_int
from .distributed import agree

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
    steps = as_int(num_inference_steps)
    if steps is None or steps < 1:
        raise ValueError(f"sample: num_inference_steps must be a positive integer, got {num_inference_steps!r}.")
    _check_policy(policy)
    _check_scheduler(scheduler)
    scheduler.set_timesteps(steps, device=latents.device)
    return denoise_loop(model, scheduler, latents, policy, progress=progress, **model_kwargs)


@torch.no_grad()
def denoise_loop(model: Denoiser, scheduler: Any, latents: torch.Tensor, policy: StepPolicy, *,
                 progress: bool = False, **model_kwargs: Any) -> torch.Tensor:
    """The loop of :func:`sample` over the timesteps ``scheduler`` already has (no ``set_timesteps``): a
    scheduler prepared by someone else, such as a copy of a pipeline's (calibration's replays)."""
    timesteps = scheduler.timesteps
    policy.prepare(len(timesteps))  # a saved calibration's settings for this step count
    policy.use_schedule(getattr(scheduler, "sigmas", None))  # this run's schedule first: begin checks it
    policy.begin(len(timesteps))
    policy.check_scheduler(scheduler)
    scale_input = hasattr(scheduler, "scale_model_input")
    for i, t in enumerate(tqdm(timesteps, disable=not progress, desc=policy.name)):
        out = None
        computed = policy.should_compute(i, latents)
        if not computed:
            out = policy.predict(i)
            computed = out is None
            if computed:
                policy.forced_call(i)  # a method with a call budget refuses to break it
        computed = agree(computed)  # every rank of a split denoiser runs it on the same steps
        if computed:
            x_in = scheduler.scale_model_input(latents, t) if scale_input else latents
            out = model(x_in, t, **model_kwargs)
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"sample: model must return a torch.Tensor, got {type(out).__name__}.")
        policy.observe(i, out, computed)
        latents = scheduler.step(out, t, latents, return_dict=False)[0]
    return latents


def _check_policy(policy: Any) -> None:
    if isinstance(policy, StepPolicy):
        return
    if isinstance(policy, str):
        hint = f"etcdiff.make_policy({policy!r}, ...)"
    elif isinstance(policy, type) and issubclass(policy, StepPolicy):
        hint = f"an instance such as {policy.__name__}(...)"
    else:
        hint = "etcdiff.ETC(threshold=...) or etcdiff.make_policy(name, ...)"
    raise TypeError(f"sample: policy must be a StepPolicy object, got {_describe(policy)}; pass {hint}.")


def _check_scheduler(scheduler: Any) -> None:
    if isinstance(scheduler, type):
        raise TypeError(
            f"sample: scheduler must be a scheduler instance, got the class {scheduler.__name__}; "
            f"pass {scheduler.__name__}() or {scheduler.__name__}.from_config(...)."
        )
    missing = [n for n in ("set_timesteps", "step") if not callable(getattr(scheduler, n, None))]
    if missing:
        raise TypeError(
            f"sample: scheduler must be a diffusers scheduler (with set_timesteps and step), got {_describe(scheduler)}."
        )


def _describe(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, type):
        return f"the class {value.__name__}"
    return f"{type(value).__name__} {value!r}" if isinstance(value, str) else type(value).__name__
