"""A recorded full-step run: what the offline-fitted methods learn from (pure data, no diffusers)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Trajectory:
    """One full-step run: ``outputs[t]`` is eps_t as the scheduler consumed it (after CFG), ``inputs[t]`` is
    x_t, ``final`` the clean latents after the last step; ``timesteps``/``sigmas`` are the scheduler's.

    ``probes`` (optional, :mod:`etcdiff.calibration.etc_plus.propagation`): for some steps t, per sample, the RMS change of
    the final result over the RMS change of eps_t when step t alone reuses step t-1's output: how an output error
    at t really reaches the end, contraction of the model's own dynamics included. ``solver``: a fresh copy of the
    run's scheduler with its timesteps set, where the recorder could take one (:mod:`etcdiff.calibration.etc_plus.replay`
    replays the run through it)."""

    outputs: list[torch.Tensor] = field(default_factory=list)
    inputs: list[torch.Tensor] = field(default_factory=list)
    final: torch.Tensor | None = None
    timesteps: torch.Tensor | None = None
    sigmas: torch.Tensor | None = None
    probes: dict[int, list[float]] | None = None
    scheduler: dict[str, Any] | None = None  # policies.scheduler_family.scheduler_signature of the run's scheduler
    solver: Any = None  # a fresh copy of the run's scheduler, its timesteps set, for replays (never saved)
    # the run's own dtypes (x_t, eps_t): stored in float32, a replay rounds to them as the run did (bf16 at 50 steps
    # drifts past the replay's 2 % check otherwise)
    input_dtype: torch.dtype | None = None
    output_dtype: torch.dtype | None = None

    @property
    def num_steps(self) -> int:
        return len(self.outputs)


def check_step_count(tr: Trajectory, index: int, n: int, caller: str) -> None:
    """Raise a ValueError naming ``caller`` unless trajectory ``index`` has ``n`` outputs and ``n`` inputs."""
    if tr.num_steps != n or len(tr.inputs) != n:
        raise ValueError(
            f"{caller}: trajectory {index} has {tr.num_steps} outputs and {len(tr.inputs)} inputs; every trajectory "
            f"must have {n} of each (record all calibration runs with the same num_inference_steps)."
        )
