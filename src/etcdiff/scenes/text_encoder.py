"""The scenes text encoder: a word-level tokenizer over the grammar's fixed vocabulary and a small transformer.

It plays the part of FLUX's two text encoders at once: ``encode`` returns per-token embeddings (T5's role,
fed to the joint attention) and a pooled vector (CLIP's role, fed to the timestep/AdaLN embedding). The pooled
vector is the output at a leading ``<cls>`` token, which is always present, so the empty caption (the
unconditional branch of classifier-free guidance) is a valid input. It is trained jointly with the denoiser.

Two token layouts:

* ``"cells"`` (the shipped model): the tokenizer parses the prompt and lays its content words out by where they
  go: after ``<cls>``, three slots (SIZE, COLOR, SHAPE) for each of the 3x3 cells in reading order, ``<pad>`` in
  the slots of empty cells. Every slot also gets the rotary position of its cell's centre in the image-token
  grid (``positions``), so in FLUX's joint attention an image token finds the words of its own cell by the same
  relative-position rule it uses between image tokens. The position words themselves become the layout.
* ``"words"``: the prompt's words in order, padded to 32, all at position zero (FLUX's own convention).
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .grammar import WORDS, parse_prompt
from .render import IMAGE_SIZE, cell_center

PAD, CLS = "<pad>", "<cls>"
TOKENS: tuple[str, ...] = (PAD, CLS, *WORDS)
WORDS_LENGTH = 32  # <cls> + at most 3 * 8 + 2 words = 27
CELLS_LENGTH = 1 + 9 * 3  # <cls> + (size, colour, shape) per cell
LAYOUTS = {"cells": CELLS_LENGTH, "words": WORDS_LENGTH}
IMAGE_TOKENS_PER_SIDE = 8  # 64 px / (VAE factor 4 x FLUX 2x2 packing)


def cell_position(row: int, col: int) -> tuple[float, float]:
    """A 3x3 cell's centre (the renderer's) in image-token coordinates (row, col): token k covers pixels
    k*s .. (k+1)*s of the image, s = IMAGE_SIZE / IMAGE_TOKENS_PER_SIDE."""
    x, y = cell_center((row, col))
    s = IMAGE_SIZE / IMAGE_TOKENS_PER_SIDE
    return y / s - 0.5, x / s - 0.5


class ScenesTokenizer:
    """Word-level tokenizer: validates a prompt against the grammar, then maps it to token ids in its layout."""

    def __init__(self, layout: str = "cells") -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"unknown token layout {layout!r}; use one of {sorted(LAYOUTS)}")
        self.layout = layout
        self.model_max_length = LAYOUTS[layout]
        self.index = {w: i for i, w in enumerate(TOKENS)}

    def __call__(self, prompts: str | list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids [B, L] and a padding mask [B, L] (True at padding). ``""`` is the empty caption."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        ids = torch.full((len(prompts), self.model_max_length), self.index[PAD], dtype=torch.long)
        ids[:, 0] = self.index[CLS]
        for b, p in enumerate(prompts):
            if not isinstance(p, str) or p.strip() == "":
                continue
            objects = parse_prompt(p)  # raises a ValueError naming the bad word and the vocabulary
            if self.layout == "words":
                words = p.lower().replace(",", " ").split()
                ids[b, 1 : 1 + len(words)] = torch.tensor([self.index[w] for w in words])
                continue
            for o in objects:
                slot = 1 + 3 * (3 * o.cell[0] + o.cell[1])
                ids[b, slot : slot + 3] = torch.tensor([self.index[o.size], self.index[o.color], self.index[o.shape]])
        return ids, ids == self.index[PAD]

    def positions(self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """FLUX rotary ids [L, 3] of the text tokens: zeros for ``words``; cell centres for ``cells``."""
        pos = torch.zeros(self.model_max_length, 3, dtype=torch.float64)
        if self.layout == "cells":
            pos[0, 1:] = (IMAGE_TOKENS_PER_SIDE - 1) / 2  # <cls> at the image centre
            for cell in range(9):
                pos[1 + 3 * cell : 4 + 3 * cell, 1:] = torch.tensor(cell_position(cell // 3, cell % 3))
        return pos.to(device=device, dtype=dtype)


class ScenesTextEncoder(ModelMixin, ConfigMixin):
    """A small pre-norm transformer encoder over the grammar's words; returns (tokens [B,L,D], pooled [B,D])."""

    @register_to_config
    def __init__(self, dim: int = 128, num_layers: int = 2, num_heads: int = 4, vocab_size: int = len(TOKENS),
                 max_length: int | None = None, layout: str = "cells"):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.pos = nn.Parameter(torch.randn(1, max_length or LAYOUTS[layout], dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, num_heads, 2 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def tokenizer(self) -> ScenesTokenizer:
        """The tokenizer whose layout this encoder was trained on."""
        return ScenesTokenizer(self.config.layout)

    def forward(self, ids: torch.Tensor, pad_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.embed(ids) + self.pos[:, : ids.shape[1]]
        h = self.norm(self.layers(h, src_key_padding_mask=pad_mask))
        return h, h[:, 0]
