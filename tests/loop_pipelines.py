"""A tiny diffusers pipeline whose denoising loop takes the shapes real pipelines have, for the robustness tests.

:class:`LoopPipeline` is a real ``DiffusionPipeline`` (components, ``progress_bar``, ``_interrupt``, step-end
callback) with a small deterministic denoiser. ``loop`` selects the loop shape of a pipeline family:

* ``"plain"``: one ``scheduler.step`` per timestep (Flux, SD3, ...), separate cond/uncond calls with ``cfg``;
* ``"cosmos"``: Cosmos 1.0 text-to-world (always with CFG): ``scheduler.step`` once on the doubled batch for
  x0, ``_step_index -= 1``, guidance on x0, then ``scheduler.step`` again;
* ``transformer_2`` with ``boundary``: Wan 2.2's second expert for the timesteps below the boundary;
* ``controlnet``: a helper network called before the denoiser on every step, its output fed to it;
* ``denoising_end`` (a fraction): the loop stops part-way through the scheduler's timesteps, as SDXL's does;
* ``begin_at``: img2img, the loop starts at that index (``set_begin_index``);
* ``passes``: FreeInit-style, the whole loop runs that many times in one call.

Every module counts its real forwards in ``runs`` (below any hook).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler


class TinyDenoiser(torch.nn.Module):
    """A smooth, deterministic function of (x, t, cond); ``shift`` tells two experts apart."""

    def __init__(self, channels: int = 4, seed: int = 0, shift: float = 0.0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = torch.nn.Parameter(torch.randn(channels, channels, generator=g) * 0.3)
        self.shift = shift
        self.runs = 0

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: float = 1.0, residual: Any = None) -> torch.Tensor:
        self.runs += 1
        s = float(t) / 1000.0
        out = torch.einsum("ij,bj...->bi...", self.weight, x) * cond + math.sin(3 * s + self.shift) + x * s
        if residual is not None:
            out = out + 0.1 * residual[0]
        return out


class TinyControlNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(0.5))
        self.runs = 0

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self.runs += 1
        return (torch.tanh(x) * self.scale + float(t) / 1000.0,)


class LoopPipeline(DiffusionPipeline):
    def __init__(self, transformer: torch.nn.Module, scheduler: Any, transformer_2: Any = None, controlnet: Any = None):
        super().__init__()
        self.register_modules(transformer=transformer, scheduler=scheduler, transformer_2=transformer_2,
                              controlnet=controlnet)

    @property
    def interrupt(self) -> bool:
        return getattr(self, "_interrupt", False)

    def _denoise(self, x: torch.Tensor, t: torch.Tensor, cfg: bool, boundary: float | None,
                 combine: bool = True) -> Any:
        model = self.transformer
        if boundary is not None and self.transformer_2 is not None and float(t) < boundary:
            model = self.transformer_2
        residual = self.controlnet(x, t) if self.controlnet is not None else None
        cond = model(x, t, cond=1.0, residual=residual)
        if not cfg:
            return cond
        uncond = model(x, t, cond=0.5, residual=residual)
        return uncond + 3.0 * (cond - uncond) if combine else (cond, uncond)

    @torch.no_grad()
    def __call__(self, num_inference_steps: int = 10, loop: str = "plain", cfg: bool = False,
                 boundary: float | None = None, denoising_end: float | None = None, begin_at: int = 0,
                 passes: int = 1, seed: int = 0,
                 callback_on_step_end: Callable[[Any, int, Any, dict], dict] | None = None) -> torch.Tensor:
        self._interrupt = False
        for _ in range(passes):
            latents = torch.randn(1, 4, 2, 2, generator=torch.Generator().manual_seed(seed))
            self.scheduler.set_timesteps(num_inference_steps)
            timesteps = self.scheduler.timesteps
            if begin_at:
                timesteps = timesteps[begin_at:]
                self.scheduler.set_begin_index(begin_at)
            if denoising_end is not None:
                cutoff = self.scheduler.config.num_train_timesteps * (1 - denoising_end)
                timesteps = timesteps[: int(sum(float(t) >= cutoff for t in timesteps))]
            latents = latents * getattr(self.scheduler, "init_noise_sigma", 1.0)
            with self.progress_bar(total=len(timesteps)) as bar:
                for i, t in enumerate(timesteps):
                    if self.interrupt:
                        continue
                    x_in = self.scheduler.scale_model_input(latents, t) if hasattr(self.scheduler, "scale_model_input") else latents
                    if loop == "cosmos":  # x0 of both branches from one doubled-batch step, guided, then the step
                        cond, uncond = self._denoise(x_in, t, True, boundary, combine=False)
                        x0 = self.scheduler.step(torch.cat([uncond, cond]), t, torch.cat([latents, latents]),
                                                 return_dict=False)[1]
                        self.scheduler._step_index -= 1
                        x0_uncond, x0_cond = x0.chunk(2)
                        x0 = x0_cond + 3.0 * (x0_cond - x0_uncond)
                        latents = self.scheduler.step(x0, t, latents, return_dict=False, pred_original_sample=x0)[0]
                    else:
                        eps = self._denoise(x_in, t, cfg, boundary)
                        latents = self.scheduler.step(eps, t, latents, return_dict=False)[0]
                    if callback_on_step_end is not None:
                        callback_on_step_end(self, i, t, {})
                    bar.update()
        self.maybe_free_model_hooks()
        return latents


def make_loop_pipeline(scheduler: Any = None, two_experts: bool = False, controlnet: bool = False) -> LoopPipeline:
    pipe = LoopPipeline(
        transformer=TinyDenoiser(), scheduler=scheduler if scheduler is not None else FlowMatchEulerDiscreteScheduler(),
        transformer_2=TinyDenoiser(seed=1, shift=0.3) if two_experts else None,
        controlnet=TinyControlNet() if controlnet else None,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
