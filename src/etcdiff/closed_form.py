"""Held-out denoisers for evaluating step methods: exact, closed-form models that no method is tuned on.

The first two denoise a Gaussian mixture of "images" in [-1, 1] (K smooth random 16x16 patterns, isotropic spread), so the
exact model output is known in closed form:

- :func:`gmm_flow` gives a rectified-flow velocity ``v = E[noise - x0 | x_t]`` for ``x_t = (1-s)·x0 + s·noise``
  with diffusers' ``FlowMatchEulerDiscreteScheduler`` (shift 3, unlike the digits model's 1), optionally with
  classifier-free guidance between a class-conditional and the unconditional mixture;
- :func:`gmm_ddim` gives an epsilon prediction ``E[noise | x_t]`` for ``x_t = sqrt(a)·x0 + sqrt(1-a)·noise``
  under a DDPM schedule, sampled with ``DDIMScheduler``.

- :func:`dataset_euler` is the exact epsilon denoiser of a finite data set of 48 images on the Karras-sigma
  ``EulerDiscreteScheduler`` (added last and run only in the final evaluation, never looked at while designing).

Each returns ``(model, scheduler, latent_shape, decode)`` where ``model(x, t)`` is a bare denoiser for
``etcdiff.sample`` and ``decode`` maps latents to images in [0, 1].
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

SIDE = 16


def _patterns(k: int, seed: int) -> torch.Tensor:
    """K smooth patterns in [-1, 1]: upsampled 4x4 random fields, [K, 1, 16, 16]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(k, 1, 4, 4, generator=g) * 2 - 1
    return F.interpolate(coarse, size=(SIDE, SIDE), mode="bicubic", align_corners=False).clamp(-1, 1)


def _posterior(x: torch.Tensor, means: torch.Tensor, scale: float, spread: float, noise: float,
               log_w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For x = scale·x0 + noise·n with x0 ~ sum_k w_k N(mu_k, spread² I): E[x0 | x], E[n | x]."""
    var = (scale * spread) ** 2 + noise ** 2
    flat = x.reshape(x.shape[0], 1, -1)
    mu = means.reshape(1, means.shape[0], -1)
    diff = flat - scale * mu  # [B, K, D]
    logits = log_w.reshape(1, -1) - diff.pow(2).sum(-1) / (2 * var)
    resp = torch.softmax(logits, dim=1).unsqueeze(-1)  # [B, K, 1]
    x0 = (resp * (mu + scale * spread ** 2 / var * diff)).sum(1)
    n = (resp * (noise / var * diff)).sum(1)
    return x0.reshape(x.shape), n.reshape(x.shape)


def decode(latents: torch.Tensor) -> torch.Tensor:
    return ((latents.float() + 1) / 2).clamp(0, 1)


def gmm_flow(k: int = 10, spread: float = 0.08, guidance: float = 2.0, seed: int = 1234) -> tuple:
    """A class-conditional GMM flow (class = mixture component, CFG against the whole mixture); ``labels`` (a list,
    one per sample, default 0..B-1 mod K) pick the classes. Returns ``(model, scheduler, decode)``."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    means = _patterns(k, seed).double()
    uniform = torch.full((k,), -math.log(k), dtype=torch.float64)

    def model(x: torch.Tensor, t: torch.Tensor, labels: list[int] | None = None) -> torch.Tensor:
        s = float(t) / 1000.0
        xd = x.double()
        labels = torch.arange(x.shape[0]) % k if labels is None else torch.as_tensor(labels) % k
        x0_u, n_u = _posterior(xd, means, 1 - s, spread, s, uniform)
        v_u = n_u - x0_u
        v_c = torch.empty_like(xd)
        for i, lab in enumerate(labels.tolist()):  # conditional: one component
            x0_c, n_c = _posterior(xd[i:i + 1], means[lab:lab + 1], 1 - s, spread, s, torch.zeros(1, dtype=torch.float64))
            v_c[i] = (n_c - x0_c)[0]
        return (v_u + guidance * (v_c - v_u)).float()

    return model, FlowMatchEulerDiscreteScheduler(shift=3.0), decode


def gmm_ddim(k: int = 12, spread: float = 0.1, seed: int = 4321) -> tuple:
    """An unconditional GMM with exact epsilon prediction under the default DDPM schedule, sampled with DDIM.
    Returns ``(model, scheduler, decode)``."""
    from diffusers import DDIMScheduler

    means = _patterns(k, seed).double()
    log_w = torch.full((k,), -math.log(k), dtype=torch.float64)
    sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                          beta_end=0.012, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    abar = sched.alphas_cumprod.double()

    def model(x: torch.Tensor, t: torch.Tensor, labels: list[int] | None = None) -> torch.Tensor:
        a = abar[int(t)]
        _, n = _posterior(x.double(), means, float(a.sqrt()), spread, float((1 - a).sqrt()), log_w)
        return n.float()

    return model, sched, decode


def dataset_euler(n: int = 48, seed: int = 777) -> tuple:
    """An unconditional empirical data set of ``n`` images (the exact denoiser of a finite training set, a
    mixture with zero spread), epsilon prediction on the Karras-sigma ``EulerDiscreteScheduler`` (input scaled by
    ``scale_model_input``, as k-diffusion samplers do). Returns ``(model, scheduler, decode)``."""
    from diffusers import EulerDiscreteScheduler

    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 1, 8, 8, generator=g) * 2 - 1
    data = F.interpolate(coarse, size=(SIDE, SIDE), mode="bilinear", align_corners=False).double()
    log_w = torch.full((n,), -math.log(n), dtype=torch.float64)
    sched = EulerDiscreteScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                                   beta_end=0.012, use_karras_sigmas=True)
    train_sigmas = ((1 - sched.alphas_cumprod) / sched.alphas_cumprod).sqrt().double()

    def model(x: torch.Tensor, t: torch.Tensor, labels: list[int] | None = None) -> torch.Tensor:
        # the scheduler passes x / sqrt(1 + sigma^2); t is a (fractional) training timestep
        tt = float(t)
        lo, frac = int(math.floor(tt)), tt - math.floor(tt)
        sigma = train_sigmas[lo] * (1 - frac) + train_sigmas[min(lo + 1, 999)] * frac
        c = 1 / math.sqrt(1 + float(sigma) ** 2)  # x_in = c·(x0 + sigma·n) = c·x0 + c·sigma·n
        _, eps = _posterior(x.double(), data, c, 0.0, c * float(sigma), log_w)
        return eps.float()

    return model, sched, decode


def noise(batch: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, 1, SIDE, SIDE, generator=torch.Generator().manual_seed(seed))


MODELS: dict[str, Callable[[], tuple]] = {"gmm-flow": gmm_flow, "gmm-ddim": gmm_ddim, "dataset-euler": dataset_euler}
