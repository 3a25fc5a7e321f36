"""Running a policy on one calibration input: the same prompt and seed, or the same initial noise, as a recorded run.

Calibrations that compare a policy's result with the full run's (ETC+'s probes, the choice between fit variants)
take a ``run(policy, i)`` from :func:`denoiser_runner` or :func:`pipeline_runner`, so both paths share one loop.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..integration.step.hook import disable_step_policy, enable_step_policy
from ..integration.step.recording import call_kwargs
from ..integration.step.sampler import sample
from ..policies.step.base import StepPolicy
from .runs import Seeds, accepts_argument, prompt_seed

PolicyRunner = Callable[[StepPolicy, int], torch.Tensor]  # run(policy, index of a calibration input) -> its result


def result_tensor(result: Any) -> torch.Tensor:
    """The generated batch in a pipeline's result (latents with ``output_type="latent"``), as a tensor."""
    for name in ("images", "frames", "audios", "audio"):
        value = getattr(result, name, None)
        if value is not None:
            break
    else:
        value = result[0] if isinstance(result, (tuple, list)) else result
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (list, tuple)) and value and not isinstance(value[0], (np.ndarray, torch.Tensor)):
        value = [np.asarray(v, dtype=np.float32) for v in value]  # PIL images
    return torch.as_tensor(np.asarray(value, dtype=np.float32))


def denoiser_runner(model: Callable[..., torch.Tensor], scheduler: Any, latents: torch.Tensor, steps: int) -> PolicyRunner:
    """``run(policy, i)``: the final latents of calibration noise ``i`` sampled with ``policy``."""
    return lambda policy, i: sample(model, scheduler, latents[i : i + 1], steps, policy)


def pipeline_runner(pipe: Any, prompts: Sequence[Any], steps: int, seed: Seeds, guidance_scale: float | None = None,
                    on_step: Callable[[int], None] | None = None) -> PolicyRunner:
    """``run(policy, i)``: the pipeline's result (latents where it can return them) on calibration prompt ``i``
    (with its seed: :func:`~etcdiff.calibration.runs.prompt_seed`)."""
    extra = {"output_type": "latent"} if accepts_argument(pipe, "output_type") else {}

    def run(policy: StepPolicy, i: int) -> torch.Tensor:
        enable_step_policy(pipe, policy)
        try:
            result = pipe(**call_kwargs(pipe, prompts[i], steps, prompt_seed(seed, i), guidance_scale), **extra)
        finally:
            disable_step_policy(pipe)
        for s in range(steps if on_step is not None else 0):
            on_step(s)
        return result_tensor(result)

    return run


__all__ = ["PolicyRunner", "denoiser_runner", "pipeline_runner", "result_tensor"]
