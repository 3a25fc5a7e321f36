"""The scenes text encoder: a word-level tokenizer over the grammar's fixed vocabulary and a small transformer.

It plays the part of FLUX's two text encoders at once: ``encode`` returns per-token embeddings (T5's role,
fed to the joint attention) and a pooled vector (CLIP's role, fed to the timestep/AdaLN embedding). The pooled
vector is the output at a leading ``<cls>`` token, which is always present, so the empty caption (the
unconditional branch of classifier-free guidance) is a valid input. It is trained jointly with the denoiser.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .grammar import WORDS, parse_prompt

PAD, CLS = "<pad>", "<cls>"
TOKENS: tuple[str, ...] = (PAD, CLS, *WORDS)
MAX_LENGTH = 32  # <cls> + at most 3 * 8 + 2 words = 27


class ScenesTokenizer:
    """Word-level tokenizer: validates a prompt against the grammar, then maps words to ids, padded to 32."""

    model_max_length = MAX_LENGTH

    def __init__(self) -> None:
        self.index = {w: i for i, w in enumerate(TOKENS)}

    def __call__(self, prompts: str | list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids [B, 32] and a padding mask [B, 32] (True at padding). ``""`` is the empty caption."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        ids = torch.full((len(prompts), MAX_LENGTH), self.index[PAD], dtype=torch.long)
        for b, p in enumerate(prompts):
            words = [] if not isinstance(p, str) or p.strip() == "" else self._words(p)
            row = [self.index[CLS]] + [self.index[w] for w in words]
            ids[b, : len(row)] = torch.tensor(row)
        return ids, ids == self.index[PAD]

    @staticmethod
    def _words(prompt: str) -> list[str]:
        parse_prompt(prompt)  # raises a ValueError naming the bad word and the vocabulary
        return prompt.lower().replace(",", " ").split()


class ScenesTextEncoder(ModelMixin, ConfigMixin):
    """A small pre-norm transformer encoder over the grammar's words; returns (tokens [B,L,D], pooled [B,D])."""

    @register_to_config
    def __init__(self, dim: int = 128, num_layers: int = 2, num_heads: int = 4, vocab_size: int = len(TOKENS),
                 max_length: int = MAX_LENGTH):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.pos = nn.Parameter(torch.randn(1, max_length, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, num_heads, 2 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, ids: torch.Tensor, pad_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.embed(ids) + self.pos[:, : ids.shape[1]]
        h = self.norm(self.layers(h, src_key_padding_mask=pad_mask))
        return h, h[:, 0]
