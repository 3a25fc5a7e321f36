"""The scenes VAE: a small diffusers ``AutoencoderKL`` mapping 64x64x3 images to 4x16x16 latents.

Four latent channels: the scenes carry little information (flat colours, a few simple shapes on a smooth
background), so 4 channels at 16x16 (12x compression) reconstruct them almost exactly, and a low-dimensional
latent keeps the denoiser's task small enough to learn in a CPU budget. (FLUX uses 16 channels for photographs;
after FLUX's 2x2 packing our tokens still have 16 features.) ``scaling_factor`` and ``shift_factor`` are set
from the training set's latent mean and standard deviation, so scaled latents have zero mean, unit variance.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL

VAE_CONFIG: dict = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    block_out_channels=(32, 32, 64),
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=16,
    sample_size=64,
    scaling_factor=1.0,
    shift_factor=0.0,
)


def build_vae() -> AutoencoderKL:
    """The (randomly initialised) scenes VAE."""
    return AutoencoderKL(**VAE_CONFIG)


@torch.no_grad()
def encode_mean(vae: AutoencoderKL, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Posterior means of images in [-1, 1] [N,3,64,64] -> raw (unscaled) latents [N,4,16,16]."""
    out = [vae.encode(images[i : i + batch]).latent_dist.mean for i in range(0, len(images), batch)]
    return torch.cat(out)


def set_latent_stats(vae: AutoencoderKL, latents: torch.Tensor) -> tuple[float, float]:
    """Record shift (mean) and scaling (1/std) factors of raw latents in the VAE config; returns them."""
    shift = float(latents.mean())
    scale = float(1.0 / (latents - shift).std())
    vae.register_to_config(shift_factor=shift, scaling_factor=scale)
    return scale, shift
