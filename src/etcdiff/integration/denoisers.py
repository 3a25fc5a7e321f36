"""Where a pipeline keeps its denoiser, and what a denoiser returns: the lookup every kind of method shares.

A diffusers pipeline names its denoiser ``transformer`` (and ``transformer_2``, the second expert of two-expert
models such as Wan 2.2) or ``unet``. A denoiser returns a tensor, a tuple that starts with one, or an output
object with ``.sample``; :func:`split_output` finds the tensor and rebuilds the same structure around another.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

#: the attribute names of a pipeline's denoisers: the transformers first, then a UNet
TRANSFORMER_NAMES = ("transformer", "transformer_2")
DENOISER_NAMES = (*TRANSFORMER_NAMES, "unet")


def find_transformers(pipe: Any) -> dict[str, torch.nn.Module]:
    """The pipeline's transformer denoisers by attribute name (empty when it has none)."""
    return {n: getattr(pipe, n) for n in TRANSFORMER_NAMES if isinstance(getattr(pipe, n, None), torch.nn.Module)}


def find_denoisers(pipe: Any) -> dict[str, torch.nn.Module]:
    """The pipeline's denoisers by attribute name: ``transformer`` (and ``transformer_2``), else ``unet``; a
    ``TypeError`` naming the fix for an object that has none."""
    found = find_transformers(pipe)
    if not found and isinstance(getattr(pipe, "unet", None), torch.nn.Module):
        found = {"unet": pipe.unet}
    if not found:
        raise TypeError(
            f"etcdiff.enable: {type(pipe).__name__} has no denoiser; expected a diffusers pipeline with a "
            f"`transformer` or `unet` component. For your own sampling loop use etcdiff.sample(model, scheduler, ...)."
        )
    return found


def split_output(out: Any) -> tuple[torch.Tensor, Callable[[torch.Tensor], Any]]:
    """The main tensor of a denoiser's output, and a function that rebuilds the same structure around another."""
    if isinstance(out, torch.Tensor):
        return out, lambda x: x
    if isinstance(out, tuple) and out and isinstance(out[0], torch.Tensor):
        rest = out[1:]
        return out[0], lambda x: (x, *rest)
    sample = getattr(out, "sample", None)
    if isinstance(sample, torch.Tensor) and hasattr(out, "keys"):
        fields = dict(out)
        return sample, lambda x: type(out)(**{**fields, "sample": x})
    raise TypeError(
        f"etcdiff: cannot find the output tensor in a denoiser output of type {type(out).__name__}; "
        "expected a tensor, a tuple starting with one, or an output object with `.sample`."
    )
