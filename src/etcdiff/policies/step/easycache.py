"""EasyCache (Zhou et al. 2025, H-EmbodVis/EasyCache, Apache-2.0): runtime-adaptive reuse by the transformation rate.

Pure tensor math, no calibration. After a warm-up, every computed step t measures the *transformation rate*
k = mean|out_t - out_c| / mean|x_t - x_c| between it and the previous computed step c (output change over input
change). On the steps after it, the relative output change is estimated as k · mean|x_t - x_{t-1}| / mean|out_c|
and summed; while the sum stays under ``threshold`` the step reuses the cached *transformation*, the output minus
the input of the last computed step: the estimate is x_t + (out_c - x_c). Once the sum reaches the threshold the
model runs and the sum restarts at zero.

Faithful to the authors' Wan 2.1 script: the rule above, mean-absolute norms, the input change between
consecutive steps, k from the last two computed steps, the residual reuse (``reuse="residual"``), the defaults
(threshold 0.05, ret_steps 10 warm-up steps) and the last step always computed. Ours, from the step interface:
the signals are measured on the output the sampler consumes (after classifier-free guidance; the authors use the
conditional branch's raw output) and on the sampler's latents (the authors use the transformer's input, the same
tensor for flow-matching models such as Wan). Each guidance branch reuses its own residual, as theirs does; with
guidance weights summing to one the branch estimates combine into x_t + (guided_c - x_c) exactly.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .base import OutputStream, StepPolicy, is_finite
from ..._numbers import as_int, as_real

REUSE_MODES = ("residual", "output")


def mean_abs(x: torch.Tensor) -> float:
    return float(x.detach().float().abs().mean())


def check_real(owner: str, name: str, value: Any, low: float, high: float = math.inf) -> float:
    value = value if as_real(value) is None else as_real(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not low <= value <= high:
        bound = f"from {low} to {high}" if math.isfinite(high) else f">= {low}"
        raise ValueError(f"{owner}: {name} must be a finite number {bound}, got {value!r}.")
    return float(value)


def check_count(owner: str, name: str, value: Any, low: int) -> int:
    value = value if as_int(value) is None else as_int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{owner}: {name} must be an integer >= {low}, got {value!r}.")
    return value


def check_reuse(owner: str, reuse: Any) -> str:
    if reuse not in REUSE_MODES:
        raise ValueError(f"{owner}: reuse must be one of {', '.join(REUSE_MODES)}, got {reuse!r}.")
    return reuse


def like_output(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor | None:
    """The latents ``x`` in the layout of the denoiser output ``out`` (``cat([x] * k)`` for batched guidance),
    or ``None`` where the shapes do not line up (then the residual cannot be formed)."""
    if x.shape == out.shape:
        return x
    if x.dim() == out.dim() and x.dim() > 0 and x.shape[1:] == out.shape[1:] and x.shape[0] > 0 \
            and out.shape[0] % x.shape[0] == 0:
        return torch.cat([x] * (out.shape[0] // x.shape[0]))
    return None


class ResidualStream(OutputStream):
    """Reuses one denoiser call's last real output, or its transformation (output minus input) added to the new
    input. Where the output and latents shapes differ (extra output channels), it reuses the output as it is."""

    def __init__(self, policy: "EasyCache") -> None:
        self.policy = policy
        self.last: torch.Tensor | None = None
        self.residual: torch.Tensor | None = None

    def record(self, step: int, output: torch.Tensor) -> None:
        self.last, self.residual = output, None
        x = self.policy.inputs.get(step)
        if self.policy.reuse == "residual" and x is not None:
            x = like_output(x, output)
            self.residual = None if x is None else output - x.to(output.dtype)

    def predict(self, step: int) -> torch.Tensor | None:
        if self.last is None:
            return None
        x = self.policy.inputs.get(step)
        if self.residual is None or x is None:
            return self.last
        x = like_output(x, self.residual)
        est = self.last if x is None else x.to(self.residual.dtype) + self.residual
        return est if is_finite(est) else None


class EasyCache(StepPolicy):
    """EasyCache, the policy (module docstring).

    Args:
        threshold: the bound on the summed estimated relative output change (the authors: 0.05 on Wan 2.1,
            "0.1 for 2x, 0.2 for 3x"; 0.025 on HunyuanVideo).
        warmup: the first steps that always run (the authors' ret_steps: 10 on Wan 2.1, 5 on HunyuanVideo).
        reuse: ``"residual"`` (the authors' rule: x_t + out_c - x_c) or ``"output"`` (out_c unchanged).
    """

    name = "easycache"

    def __init__(self, threshold: float = 0.05, warmup: int = 10, reuse: str = "residual") -> None:
        super().__init__()
        self.threshold = check_real("EasyCache", "threshold", threshold, 0.0)
        self.warmup = check_count("EasyCache", "warmup", warmup, 1)
        self.reuse = check_reuse("EasyCache", reuse)

    def params(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "warmup": self.warmup, "reuse": self.reuse}

    def new_stream(self) -> ResidualStream:
        return ResidualStream(self)

    def reset_state(self) -> None:
        self.inputs: dict[int, torch.Tensor] = {}  # x_t of the current step and the step before
        self.rate: float | None = None  # k
        self.acc = 0.0  # the summed estimated relative output change since the last computed step
        self.last_out: torch.Tensor | None = None  # out_c
        self.last_x: torch.Tensor | None = None  # x_c
        self._err: float | None = None

    def late_input(self, step: int, latents: torch.Tensor) -> None:
        self.inputs[step] = latents.detach()
        for s in [s for s in self.inputs if s < step - 1]:
            del self.inputs[s]

    def in_warmup(self, step: int) -> bool:
        return step < self.warmup or step == self.num_steps - 1

    def input_change(self, step: int) -> float | None:
        """mean|x_t - x_{t-1}|: the input change the estimate is built on (consecutive steps)."""
        x, prev = self.inputs.get(step), self.inputs.get(step - 1)
        return None if x is None or prev is None or x.shape != prev.shape else mean_abs(x - prev)

    def should_compute(self, step: int, latents: torch.Tensor | None = None) -> bool:
        self._check_step(step)
        self._err = None
        if latents is not None:
            self.late_input(step, latents)
        if self.in_warmup(step):
            self.acc = 0.0
            return True
        return self.accumulate(self.input_change(step))

    def accumulate(self, dx: float | None) -> bool:
        """Add rate·dx/|last output| to the running estimate; whether the model runs (no estimate: it runs)."""
        norm = None if self.last_out is None else mean_abs(self.last_out)
        if self.rate is None or dx is None or not norm:
            return True
        self.acc += self.rate * dx / norm
        self._err = self.acc
        if self.acc < self.threshold:
            return False
        self.acc = 0.0
        return True

    def observe(self, step: int, output: torch.Tensor, computed: bool) -> None:
        self._log(step, computed, err=self._err)
        if not computed:
            return
        x = self.inputs.get(step)
        if self.last_out is not None and self.last_x is not None and x is not None and x.shape == self.last_x.shape \
                and output.shape == self.last_out.shape:
            dx = mean_abs(x - self.last_x)
            self.rate = mean_abs(output - self.last_out) / dx if dx > 0 else self.rate
        self.last_out, self.last_x = output.detach(), x
        self.main_stream.record(step, output)
