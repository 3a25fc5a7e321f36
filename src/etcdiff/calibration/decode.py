"""Decoding final latents for the perturbation test of the tolerance search (its step 4).

A *decoder* maps a batch of the sampler's final latents (as the scheduler left them) to what a user sees:

* ``"image"``: a float tensor ``[B, C, H, W]`` with values in ``[0, 1]``;
* ``"video"``: a float tensor ``[B, C, F, H, W]`` with values in ``[0, 1]``;
* ``"audio"``: a waveform ``[B, samples]`` or ``[B, channels, samples]``.

:func:`pipeline_decoder` finds the decoder of a diffusers pipeline the way the pipeline itself decodes after
its denoising loop: ``pipe.decode`` where the pipeline has one (the embedded demo), otherwise its VAE with the
pipeline's own latent de-normalisation (SD/SDXL/SD3/Flux scaling and shift, SDXL-style and Wan-style
``latents_mean``/``latents_std``, Flux's unpacking of packed latents). Pixel-space pipelines decode with the
identity (``x / 2 + 0.5``). Anything else needs ``decode=`` from the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

Decode = Callable[[torch.Tensor], torch.Tensor]
MODALITIES = ("image", "video", "audio")

#: diffusers pipelines whose denoiser works directly on pixels: decoding is ``x / 2 + 0.5``.
PIXEL_SPACE_PIPELINES = (
    "DDPMPipeline", "DDIMPipeline", "PNDMPipeline", "ScoreSdeVePipeline", "KarrasVePipeline",
    "ConsistencyModelPipeline", "IFPipeline", "IFSuperResolutionPipeline",
)

_VIDEO_HINTS = ("video", "wan", "i2v", "t2v", "cogvideo", "hunyuanvideo", "mochi", "ltx", "animatediff", "allegro")
_AUDIO_HINTS = ("audio", "music", "tango", "speech")


@dataclass
class PipelineDecoder:
    """A decoder for one pipeline: ``decode(latents)`` and the modality it produces."""

    decode: Decode
    modality: str
    description: str

    def __call__(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decode(latents)


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """``[-1, 1]`` model output to ``[0, 1]`` (as diffusers' image processors do), in float32 on the CPU."""
    return (x.detach().float().cpu() / 2 + 0.5).clamp(0.0, 1.0)


def guess_modality(pipe: Any) -> str:
    """``"video"``, ``"audio"`` or ``"image"`` from the pipeline's class name (and its VAE's)."""
    names = type(pipe).__name__.lower() + " " + type(getattr(pipe, "vae", None)).__name__.lower()
    if any(h in names for h in _AUDIO_HINTS) or getattr(pipe, "vocoder", None) is not None:
        return "audio"
    if any(h in names for h in _VIDEO_HINTS):
        return "video"
    return "image"


def denormalize_latents(pipe: Any, latents: torch.Tensor) -> torch.Tensor:
    """Undo the pipeline's latent normalisation before ``vae.decode``, as the pipelines do after their loop.

    * VAEs with ``latents_mean``/``latents_std`` in their config: Wan-style (5-D video latents,
      ``x * std + mean``) or SDXL-style (``x * std / scaling_factor + mean``);
    * otherwise ``x / scaling_factor + shift_factor`` (SD, SDXL, SD3, Flux; a missing shift is 0).
    """
    cfg = pipe.vae.config
    mean = getattr(cfg, "latents_mean", None)
    std = getattr(cfg, "latents_std", None)
    scaling = getattr(cfg, "scaling_factor", None) or 1.0
    if mean is not None and std is not None:
        shape = (1, len(mean)) + (1,) * (latents.ndim - 2)
        mean_t = torch.tensor(mean, dtype=latents.dtype, device=latents.device).view(shape)
        std_t = torch.tensor(std, dtype=latents.dtype, device=latents.device).view(shape)
        if latents.ndim == 5:  # Wan: latents / (1 / std) + mean, no scaling factor
            return latents * std_t + mean_t
        return latents * std_t / scaling + mean_t
    shift = getattr(cfg, "shift_factor", None) or 0.0
    return latents / scaling + shift


def _vae_decoder(pipe: Any, modality: str, height: int | None, width: int | None) -> PipelineDecoder:
    vae = pipe.vae
    unpack = getattr(pipe, "_unpack_latents", None)
    steps = []

    def decode(latents: torch.Tensor) -> torch.Tensor:
        x = latents
        if x.ndim == 3 and callable(unpack):  # Flux: [B, (H/2)(W/2), C*4] packed tokens
            scale = getattr(pipe, "vae_scale_factor", 8)
            h = height or getattr(pipe, "default_sample_size", 128) * scale
            w = width or getattr(pipe, "default_sample_size", 128) * scale
            x = unpack(x, h, w, scale)
        x = x.to(device=vae.device, dtype=vae.dtype)
        x = denormalize_latents(pipe, x)
        upcast = vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False)
        with torch.no_grad():
            if upcast:  # as SDXL's pipeline does: the fp16 VAE overflows
                vae.to(torch.float32)
                try:
                    out = vae.decode(x.float(), return_dict=False)[0]
                finally:
                    vae.to(torch.float16)
            else:
                out = vae.decode(x, return_dict=False)[0]
        return to_unit(out)

    if callable(unpack):
        steps.append("unpack")
    steps.append("de-normalise")
    return PipelineDecoder(decode, modality, f"{type(vae).__name__}.decode ({', '.join(steps)})")


def pipeline_decoder(
    pipe: Any,
    modality: str | None = None,
    *,
    height: int | None = None,
    width: int | None = None,
) -> PipelineDecoder:
    """The decoder that turns ``pipe``'s final latents into images (or video frames), see the module docs.

    ``height``/``width`` are the generation's size in pixels, needed to unpack Flux's packed latents (default:
    the pipeline's default size). Raises ``ValueError`` naming the fix (``decode=``) when the pipeline has no
    decoder this module knows.
    """
    modality = modality or guess_modality(pipe)
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; choose one of {', '.join(MODALITIES)}.")
    own = getattr(pipe, "decode", None)
    if callable(own):
        return PipelineDecoder(lambda x: own(x).detach().float().cpu(), modality, f"{type(pipe).__name__}.decode")
    name = type(pipe).__name__
    if modality == "audio":
        raise ValueError(
            f"{name}: decoding audio latents to a waveform is pipeline specific; pass decode=callable(latents) -> "
            "waveform [B, samples] (and sample_rate=...) to calibrate_pipeline, e.g. the pipeline's VAE and vocoder."
        )
    if getattr(pipe, "vae", None) is not None:
        return _vae_decoder(pipe, modality, height, width)
    if name in PIXEL_SPACE_PIPELINES:
        return PipelineDecoder(to_unit, modality, "identity (pixel space, x / 2 + 0.5)")
    raise ValueError(
        f"{name} has no `vae` and no `decode` method, so the perturbation test cannot decode its latents. "
        "Pass decode=callable(latents) -> images [B, C, H, W] in [0, 1] to calibrate_pipeline "
        "(for a pixel-space model: decode=lambda x: (x / 2 + 0.5).clamp(0, 1))."
    )
