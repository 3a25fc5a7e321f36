"""The prompt's embedding as the first transformer block receives it (PromptTea's complexity signal).

FLUX, SD3, PixArt and Wan blocks get the (projected) text stream ``encoder_hidden_states`` ``[B, tokens, D]``:
its mean over tokens, per sample. DiT blocks get ``class_labels`` instead: the row of the label-embedding table.
``None`` where a call carries neither.
"""

from __future__ import annotations

from typing import Any

import torch


def condition_embedding(block: torch.nn.Module, bound: dict[str, Any]) -> torch.Tensor | None:
    """``[B, D]``: one mean prompt embedding per sample of the call, or ``None``."""
    text = bound.get("encoder_hidden_states")
    if isinstance(text, torch.Tensor):
        text = text.detach().float()
        return text.mean(dim=1) if text.dim() == 3 else text.reshape(text.shape[0], -1)
    labels = bound.get("class_labels")
    emb = getattr(getattr(getattr(block, "norm1", None), "emb", None), "class_embedder", None)
    if isinstance(labels, torch.Tensor) and emb is not None and hasattr(emb, "embedding_table"):
        return emb.embedding_table(labels.reshape(-1).long()).detach().float()
    return None
