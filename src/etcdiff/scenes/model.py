"""The scenes denoiser: diffusers ``FluxTransformer2DModel`` in a small configuration, and weight loading.

Guidance: **true classifier-free guidance** (``guidance_embeds=False``), with the empty caption as the negative
prompt; training drops captions to the empty one 10 % of the time. FLUX.1-dev's guidance embedding is *distilled*
from a CFG teacher, and we have no teacher to distil from; training a guidance embedding without one would not
teach the model what a guidance scale means. True CFG also makes every step two transformer calls on two
branches ("cond", "uncond" cache contexts in diffusers' FluxPipeline loop), which is the more demanding case
for a caching method's per-branch bookkeeping.

Token layout: the 4x16x16 latent is packed into 2x2 patches (FLUX's packing), giving 64 image tokens of 16
features; the text gives 28 tokens (``<cls>`` and three per grid cell, see ``text_encoder``). Rotary position ids are
(0, row, col) for image tokens, and the cell's centre for a cell's text tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, FluxTransformer2DModel

from .text_encoder import ScenesTextEncoder
from .vae import VAE_CONFIG, build_vae

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
TEXT_DIM = 128

TRANSFORMER_CONFIG: dict = dict(
    patch_size=1,
    in_channels=16,  # 4 latent channels x 2x2 packing
    num_layers=2,
    num_single_layers=3,
    attention_head_dim=32,
    num_attention_heads=4,
    joint_attention_dim=TEXT_DIM,
    pooled_projection_dim=TEXT_DIM,
    guidance_embeds=False,
    axes_dims_rope=(8, 12, 12),
)
TEXT_CONFIG: dict = dict(dim=TEXT_DIM, num_layers=2, num_heads=4, layout="cells")


def build_transformer(config: dict | None = None) -> FluxTransformer2DModel:
    """The (randomly initialised) scenes FLUX transformer."""
    return FluxTransformer2DModel(**(config or TRANSFORMER_CONFIG))


def build_text_encoder(config: dict | None = None) -> ScenesTextEncoder:
    """The (randomly initialised) scenes text encoder."""
    return ScenesTextEncoder(**(config or TEXT_CONFIG))


def _load(module: torch.nn.Module, path: Path) -> torch.nn.Module:
    from safetensors.torch import load_file

    state = {k: v.float() for k, v in load_file(str(path)).items()}
    module.load_state_dict(state, strict=True)
    return module.eval().requires_grad_(False)


def load_components(weights_dir: str | Path | None = None) -> tuple[AutoencoderKL, ScenesTextEncoder, FluxTransformer2DModel]:
    """Load the shipped VAE, text encoder and transformer (offline) from ``weights_dir``, in eval mode."""
    d = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    names = ("vae.safetensors", "text_encoder.safetensors", "transformer.safetensors", "recipe.json")
    missing = [n for n in names if not (d / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"scenes model weights missing in {d}: {missing}. Regenerate them with "
            f"`python -m etcdiff.scenes.train --out {d}`."
        )
    recipe = json.loads((d / "recipe.json").read_text())
    vae = build_vae()
    vae.register_to_config(scaling_factor=recipe["vae"]["scaling_factor"], shift_factor=recipe["vae"]["shift_factor"])
    text = build_text_encoder({"layout": "words", **recipe["text_config"]} if "text_config" in recipe else None)
    transformer = build_transformer(recipe.get("transformer_config"))
    return _load(vae, d / names[0]), _load(text, d / names[1]), _load(transformer, d / names[2])


__all__ = ["TRANSFORMER_CONFIG", "TEXT_CONFIG", "VAE_CONFIG", "WEIGHTS_DIR", "build_transformer",
           "build_text_encoder", "build_vae", "load_components"]
