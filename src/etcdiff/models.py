"""Loading a pipeline by name for the CLI and tools: an embedded model (``demo`` = ``scenes``, ``digits``) or a
diffusers id/path."""

from __future__ import annotations

import os
from typing import Any

import torch

from .integration.step.recording import call_kwargs

__all__ = ["DEMO", "EMBEDDED", "call_kwargs", "demo_prompts", "load_pipeline"]

DEMO = "demo"


def _digits(device: str) -> Any:
    from .digits import DigitsPipeline

    return DigitsPipeline.from_embedded(device=device)


def _scenes(device: str) -> Any:
    from .scenes import ScenesPipeline

    return ScenesPipeline.from_embedded(device=device)


def _unet_digits(device: str, solver: str = "ddim") -> Any:
    from .unet_digits import UNetDigitsPipeline

    return UNetDigitsPipeline.from_embedded(solver, device=device)


def _unet_digits_dpm(device: str) -> Any:
    return _unet_digits(device, "dpm")


#: the models shipped inside the package, by the name ``--model`` takes; ``unet-digits`` (DDIM) and
#: ``unet-digits-dpm`` (DPM-Solver++) are the held-out epsilon UNet that no method was tuned on
EMBEDDED = {"scenes": _scenes, "digits": _digits, "unet-digits": _unet_digits, "unet-digits-dpm": _unet_digits_dpm}
EMBEDDED[DEMO] = EMBEDDED["scenes"]  # the default of demo, generate, calibrate and bench (see docs/scenes)


def load_pipeline(model: str, device: str = "cpu", dtype: torch.dtype | None = None) -> Any:
    """An embedded model by name (:data:`EMBEDDED`: ``demo``, ``scenes``, ``digits``, ``unet-digits``,
    ``unet-digits-dpm``); anything else goes to
    ``DiffusionPipeline.from_pretrained``.

    Hub ids load only from the local Hugging Face cache when the machine is offline (``HF_HUB_OFFLINE=1``).
    """
    if model in EMBEDDED:
        return EMBEDDED[model](device)
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
            f"Use --model {DEMO} (or {', '.join(n for n in EMBEDDED if n != DEMO)}) for an embedded offline model, or a "
            "local diffusers pipeline folder."
        ) from None
    return pipe.to(device)


def demo_prompts(model: str = DEMO) -> list[str]:
    """What ``--prompts demo`` means for ``model``: an embedded model's own demo prompts (the scenes model's
    captions, the digits models' ten classes). Other models have none: give them a prompt file."""
    loader = EMBEDDED.get(model)
    if loader in (_digits, _unet_digits, _unet_digits_dpm):
        return [str(i) for i in range(10)]
    if loader is _scenes:
        from .scenes.pipeline import ScenesPipeline

        return list(ScenesPipeline.etcdiff_demo_prompts)
    raise ValueError(f"--prompts demo names the demo prompts of an embedded model ({', '.join(EMBEDDED)}); for "
                     f"{model!r} give --prompts FILE, one prompt per line, other than the prompts it was calibrated on.")
