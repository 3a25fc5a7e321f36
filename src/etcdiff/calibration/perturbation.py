"""The curves of one recorded run: the step differences d_i and the perturbation test s_i.

* d_i = mean|eps_{i+1} - eps_i| for i = 0..N-2 (eps_t: the output the scheduler consumed, after guidance);
* z_i ~ N(0, I) (a seeded generator, a fresh draw per step as in the authors' release),
  b_i = z_i / mean|z_i| * d_i; decode x_final and x_final + b_i; s_i = the similarity of the two
  (see :mod:`etcdiff.calibration.similarity`).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..integration.step.recording import Trajectory
from .decode import Decode
from .similarity import similarity


def step_differences(outputs: Sequence[torch.Tensor]) -> np.ndarray:
    """d_i = mean|eps_{i+1} - eps_i| (float32 L1 mean), length N - 1."""
    return np.array(
        [(outputs[i + 1].float() - outputs[i].float()).abs().mean().item() for i in range(len(outputs) - 1)],
        dtype=np.float64,
    )


def perturbation_similarities(
    final: torch.Tensor,
    d: Sequence[float],
    decode: Decode,
    *,
    modality: str = "image",
    generator: torch.Generator | None = None,
    on_decode: Callable[[], None] | None = None,
    **similarity_kwargs: Any,
) -> np.ndarray:
    """s_i = similarity(decode(x_final), decode(x_final + z_i / mean|z_i| * d_i)) for every d_i."""
    final = final.detach().float().cpu()
    with torch.no_grad():
        original = decode(final)
    s = []
    for d_i in d:
        z = torch.randn(final.shape, generator=generator, dtype=torch.float32)
        with torch.no_grad():
            perturbed = decode(final + z / z.abs().mean() * float(d_i))
        s.append(similarity(original, perturbed, modality, **similarity_kwargs))
        if on_decode is not None:
            on_decode()
    return np.array(s, dtype=np.float64)


def trajectory_curves(trajectory: Trajectory, decode: Decode, *, seed: int, modality: str = "image",
                      **similarity_kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(d, s)`` of one recorded run; the perturbation noise is drawn from a generator seeded with ``seed``."""
    if trajectory.final is None:
        raise RuntimeError("etcdiff: the run recorded no final latents; the perturbation test needs them.")
    d = step_differences(trajectory.outputs)
    s = perturbation_similarities(trajectory.final, d, decode, modality=modality,
                                  generator=torch.Generator().manual_seed(seed), **similarity_kwargs)
    return d, s
