"""The embedded demo model: a tiny class-conditional DiT trained with flow matching on sklearn's digits.

Samples are 1x16x16 images in [-1, 1] (the 8x8 ``load_digits`` images upsampled bilinearly). The "latent"
space is pixel space, so no VAE is needed.

Note on conditioning: diffusers' DiT builds a ``CombinedTimestepLabelEmbeddings`` in *every* block (plus the
output layer reuses block 0's). Its ``LabelEmbedding`` was created with ``class_dropout_prob=0.1`` (hard-coded
in ``AdaLayerNormZero``), so the embedding table has ``num_embeds_ada_norm + 1`` rows and index
``NULL_CLASS == 10`` is the unconditional class used for classifier-free guidance. In ``train()`` mode the
embedding would also randomly drop labels on its own, independently per block, so the model is always put
in ``eval()`` for inference and the training script disables that internal dropout in favour of its own.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import DiTTransformer2DModel

NUM_CLASSES = 10
NULL_CLASS = 10  # extra row of DiT's label-embedding table, used as the unconditional label
SAMPLE_SIZE = 16
WEIGHTS_PATH = Path(__file__).resolve().parent / "weights" / "digits_dit.safetensors"

CONFIG: dict = dict(
    num_attention_heads=4,
    attention_head_dim=32,
    in_channels=1,
    out_channels=1,
    num_layers=4,
    sample_size=SAMPLE_SIZE,
    patch_size=2,
    num_embeds_ada_norm=NUM_CLASSES,
    norm_type="ada_norm_zero",
)


def build_transformer() -> DiTTransformer2DModel:
    """Build the (randomly initialised) demo DiT with the fixed config."""
    return DiTTransformer2DModel(**CONFIG)


def load_transformer(dtype: torch.dtype = torch.float32, path: str | Path | None = None) -> DiTTransformer2DModel:
    """Build the demo DiT and load the shipped safetensors weights (offline), in eval mode."""
    from safetensors.torch import load_file

    path = Path(path) if path is not None else WEIGHTS_PATH
    if not path.is_file():
        raise FileNotFoundError(
            f"Demo model weights not found at {path}. They ship with etcdiff; "
            "regenerate them with `python -m etcdiff.digits.train`."
        )
    model = build_transformer()
    state = {k: v.float() for k, v in load_file(str(path)).items()}
    model.load_state_dict(state, strict=True)
    if dtype != torch.float32:
        model = model.to(dtype)
    return model.eval().requires_grad_(False)
