"""Loading a pipeline by name for the CLI and tools: ``demo`` (the embedded model) or a diffusers id/path."""

from __future__ import annotations

import os
from typing import Any

import torch

DEMO = "demo"
SCENES = "scenes"  # the embedded text-to-image latent FLUX (etcdiff.scenes)


def load_pipeline(model: str, device: str = "cpu", dtype: torch.dtype | None = None) -> Any:
    """``"demo"`` gives the embedded digits pipeline, ``"scenes"`` the embedded scenes FLUX; anything else goes to ``DiffusionPipeline.from_pretrained``.

    Hub ids load only from the local Hugging Face cache when the machine is offline (``HF_HUB_OFFLINE=1``).
    """
    if model == DEMO:
        from .demo import DigitsPipeline

        return DigitsPipeline.from_embedded(device=device)
    if model == SCENES:
        from .scenes import ScenesPipeline

        return ScenesPipeline.from_embedded(device=device)
    from diffusers import DiffusionPipeline

    kwargs: dict[str, Any] = {}
    if dtype is not None:
        kwargs["torch_dtype"] = dtype
    try:
        pipe = DiffusionPipeline.from_pretrained(model, **kwargs)
    except Exception as e:  # diffusers/hub raise many kinds; the user needs the cause and the way out
        where = "local directory" if os.path.isdir(model) else "hub id (needs the network or a local cache)"
        raise ValueError(
            f"cannot load model {model!r} as a {where}: {type(e).__name__}: {e}. "
            f"Use --model {DEMO} for the embedded offline model, or a local diffusers pipeline folder."
        ) from None
    return pipe.to(device)


def call_kwargs(pipe: Any, prompt: str, steps: int, seed: int, guidance_scale: float | None = None) -> dict[str, Any]:
    """Keyword arguments for one deterministic call of ``pipe`` on ``prompt``."""
    device = getattr(pipe, "device", torch.device("cpu"))
    kwargs: dict[str, Any] = {
        "prompt": prompt,
        "num_inference_steps": steps,
        "generator": torch.Generator(device="cpu" if getattr(device, "type", "cpu") == "mps" else device).manual_seed(seed),
    }
    if guidance_scale is not None:
        kwargs["guidance_scale"] = guidance_scale
    return kwargs


def demo_prompts() -> list[str]:
    """The demo model's prompts: its ten classes."""
    return [str(i) for i in range(10)]
