"""Loading a pipeline by name for the CLI and tools: an embedded model (``demo`` = ``scenes``, ``digits``) or a
diffusers id/path."""

from __future__ import annotations

import os
from typing import Any

import torch

from .calibration.profile_store import SCHEDULER_TAGS
from .integration.step.recording import call_kwargs

__all__ = ["DEMO", "EMBEDDED", "SCHEDULERS", "call_kwargs", "demo_prompts", "load_pipeline", "use_scheduler"]

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


#: what ``--scheduler`` takes: the sampler a pipeline runs with instead of its own (:func:`use_scheduler`); a
#: profile made so carries the name in its file name
SCHEDULERS = SCHEDULER_TAGS


def _is_flow(scheduler: Any) -> bool:
    """Whether a scheduler samples a flow-matching model (its outputs are velocities on sigmas from 1 to 0)."""
    config = getattr(scheduler, "config", {})
    return (type(scheduler).__name__.startswith("FlowMatch") or config.get("prediction_type") == "flow_prediction"
            or bool(config.get("use_flow_sigmas")))


def use_scheduler(pipe: Any, name: str) -> None:
    """Swap ``pipe.scheduler`` for the sampler ``name`` of :data:`SCHEDULERS`, built from the pipeline's own
    scheduler config, as a diffusers user would: ``euler`` (FlowMatch Euler on a flow model, Euler on an epsilon
    one), ``unipc`` (UniPC), ``dpm`` (DPM-Solver++ 2M), ``ddim`` (DDIM; epsilon models only). On a flow model the
    multistep solvers take flow sigmas with the pipeline's shift."""
    import diffusers

    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; use one of {', '.join(SCHEDULERS)}.")
    own = getattr(pipe, "scheduler", None)
    if own is None or not hasattr(own, "config"):
        raise ValueError(f"this pipeline has no diffusers scheduler to swap for {name!r}; drop --scheduler.")
    config, flow = dict(own.config), _is_flow(own)
    if flow and name == "ddim":
        raise ValueError("ddim samples epsilon models; this pipeline is a flow-matching one: use euler, unipc or dpm.")
    multistep = {"dpm": {"algorithm_type": "dpmsolver++", "solver_order": 2}, "unipc": {}}
    if name == "euler":
        cls = diffusers.FlowMatchEulerDiscreteScheduler if flow else diffusers.EulerDiscreteScheduler
        extra: dict[str, Any] = {}
    elif name == "ddim":
        cls, extra = diffusers.DDIMScheduler, {}
    else:
        cls = diffusers.UniPCMultistepScheduler if name == "unipc" else diffusers.DPMSolverMultistepScheduler
        extra = dict(multistep[name])
        if flow:
            extra.update(prediction_type="flow_prediction", use_flow_sigmas=True,
                         flow_shift=float(config.get("shift", config.get("flow_shift", 1.0)) or 1.0))
    if flow:  # keys a flow-matching config carries that the other classes do not take (shift, base_shift, ...)
        import inspect

        takes = inspect.signature(cls.__init__).parameters
        config = {k: v for k, v in config.items() if k in takes or k.startswith("_")}
    pipe.scheduler = cls.from_config(config, **extra)


def load_pipeline(model: str, device: str = "cpu", dtype: torch.dtype | None = None,
                  scheduler: str | None = None) -> Any:
    """An embedded model by name (:data:`EMBEDDED`: ``demo``, ``scenes``, ``digits``, ``unet-digits``,
    ``unet-digits-dpm``); anything else goes to
    ``DiffusionPipeline.from_pretrained``. ``scheduler``: a sampler of :data:`SCHEDULERS` to run with instead of
    the pipeline's own (:func:`use_scheduler`).

    Hub ids load only from the local Hugging Face cache when the machine is offline (``HF_HUB_OFFLINE=1``).
    """
    if scheduler is not None and scheduler not in SCHEDULERS:  # before the weights load
        raise ValueError(f"unknown scheduler {scheduler!r}; use one of {', '.join(SCHEDULERS)}.")
    pipe = _load(model, device, dtype)
    if scheduler is not None:
        use_scheduler(pipe, scheduler)
    return pipe


def _load(model: str, device: str, dtype: torch.dtype | None) -> Any:
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
