"""A recorded full-step run: what the offline-fitted methods learn from (pure data, no diffusers)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Trajectory:
    """One full-step run: ``outputs[t]`` is eps_t as the scheduler consumed it (after CFG), ``inputs[t]`` is
    x_t, ``final`` the clean latents after the last step; ``timesteps``/``sigmas`` are the scheduler's."""

    outputs: list[torch.Tensor] = field(default_factory=list)
    inputs: list[torch.Tensor] = field(default_factory=list)
    final: torch.Tensor | None = None
    timesteps: torch.Tensor | None = None
    sigmas: torch.Tensor | None = None

    @property
    def num_steps(self) -> int:
        return len(self.outputs)
