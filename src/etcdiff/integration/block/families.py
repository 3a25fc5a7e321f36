"""How each supported transformer lays out its block stack, and what the block caches read from it.

The *block stack* is the sequence of transformer blocks of a model (Flux: ``transformer_blocks`` then
``single_transformer_blocks``; SD3, DiT, PixArt: ``transformer_blocks``; Wan: ``blocks``). A :class:`Family`
names those lists, the tensors (*streams*) the blocks carry and where the blocks return them.

TeaCache's signal is the first block's timestep-modulated input (Flux/SD3: block 0's ``norm1`` AdaLN output;
DiT/PixArt: block 0's AdaLN-modulated ``norm1`` output; Wan: the time embedding, diffusers'
``condition_embedder.time_embedder`` output, as TeaCache4Wan2.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..denoiser_owners import CannotRun

from ...policies.block.teacache import TEACACHE_COEFFICIENTS


@dataclass(frozen=True)
class Family:
    """How one transformer family lays out its block stack."""

    name: str
    class_name: str
    block_lists: tuple[str, ...]
    streams: tuple[str, ...]  # the tensors the blocks carry, by argument name; "hidden_states" first
    output_index: dict[str, int] | None  # where the blocks return each stream (None: a single tensor)
    uncached_kwargs: tuple[str, ...] = ()  # transformer kwargs that, when not None, make a call run uncached

    def blocks(self, model: torch.nn.Module) -> list[torch.nn.Module]:
        """The block stack of ``model``, in execution order."""
        return [b for name in self.block_lists for b in getattr(model, name)]

    def unpack(self, out: Any) -> dict[str, Any]:
        """A block's output as ``{stream: tensor}``."""
        if self.output_index is None:
            return {"hidden_states": out}
        return {n: out[i] for n, i in self.output_index.items()}

    def pack(self, streams: dict[str, Any]) -> Any:
        """``{stream: tensor}`` laid out as a block returns it."""
        if self.output_index is None:
            return streams["hidden_states"]
        out: list[Any] = [None] * (max(self.output_index.values()) + 1)
        for n, i in self.output_index.items():
            out[i] = streams.get(n)
        return tuple(out)


FAMILIES: tuple[Family, ...] = (
    Family("flux", "FluxTransformer2DModel", ("transformer_blocks", "single_transformer_blocks"),
           ("hidden_states", "encoder_hidden_states"), {"encoder_hidden_states": 0, "hidden_states": 1},
           ("controlnet_block_samples", "controlnet_single_block_samples")),
    Family("sd3", "SD3Transformer2DModel", ("transformer_blocks",), ("hidden_states", "encoder_hidden_states"),
           {"encoder_hidden_states": 0, "hidden_states": 1}, ("block_controlnet_hidden_states", "skip_layers")),
    Family("dit", "DiTTransformer2DModel", ("transformer_blocks",), ("hidden_states",), None),
    Family("pixart", "PixArtTransformer2DModel", ("transformer_blocks",), ("hidden_states",), None),
    Family("wan", "WanTransformer3DModel", ("blocks",), ("hidden_states",), None),
)
SUPPORTED_MODELS = tuple(f.class_name for f in FAMILIES)


def find_family(model: torch.nn.Module) -> Family:
    """The family of a transformer, or a ``NotImplementedError`` naming the supported ones and the methods
    that run on any model."""
    import diffusers

    for fam in FAMILIES:
        cls = getattr(diffusers, fam.class_name, None)
        if cls is not None and isinstance(model, cls):
            for name in fam.block_lists:
                if not isinstance(getattr(model, name, None), torch.nn.ModuleList):
                    raise NotImplementedError(
                        f"etcdiff block cache: {type(model).__name__} has no `{name}` block list; this version of "
                        "diffusers lays the model out differently than etcdiff expects."
                    )
            return fam
    raise CannotRun(
        f"etcdiff block cache (TeaCache/MagCache): {type(model).__name__} is not supported. Supported transformers: "
        f"{', '.join(SUPPORTED_MODELS)}."
    )


def default_teacache_coefficients(model: torch.nn.Module, fam: Family | None = None) -> tuple[list[float], str, bool]:
    """Published TeaCache coefficients for this model: (coefficients, source, published?)."""
    fam = fam or find_family(model)
    key = None
    if fam.name == "flux":
        key = "flux"
    elif fam.name == "wan":
        cfg = model.config
        dim = int(cfg.num_attention_heads) * int(cfg.attention_head_dim)
        i2v = int(cfg.in_channels) == 36
        if dim == 1536 and not i2v:
            key = "wan2.1-t2v-1.3b"
        elif dim == 5120:
            key = "wan2.1-i2v-14b-480p" if i2v else "wan2.1-t2v-14b"
    if key is None:
        coeffs, source = TEACACHE_COEFFICIENTS["identity"]
        return list(coeffs), source, False
    coeffs, source = TEACACHE_COEFFICIENTS[key]
    return list(coeffs), f"{key}: {source}", True


def first_block_signal(fam: Family, block: torch.nn.Module, bound: dict[str, Any],
                       time_embedding: torch.Tensor | None) -> torch.Tensor | None:
    """TeaCache's signal: the first block's timestep-modulated input (Wan: the time embedding).

    ``bound``: the first block's call arguments by name.
    """
    hs = bound["hidden_states"]
    if fam.name in ("flux", "sd3"):
        return block.norm1(hs, emb=bound["temb"])[0]
    if fam.name == "wan":
        return time_embedding
    # DiT / PixArt: BasicTransformerBlock
    norm_type = getattr(block, "norm_type", None)
    timestep = bound.get("timestep")
    if norm_type == "ada_norm_zero":
        return block.norm1(hs, timestep, bound.get("class_labels"), hidden_dtype=hs.dtype)[0]
    if norm_type == "ada_norm":
        return block.norm1(hs, timestep)
    if norm_type == "ada_norm_single":
        shift, scale = (block.scale_shift_table[None] + timestep.reshape(hs.shape[0], 6, -1)).chunk(6, dim=1)[:2]
        return block.norm1(hs) * (1 + scale) + shift
    return block.norm1(hs)  # not timestep-modulated: the plain normalised input
