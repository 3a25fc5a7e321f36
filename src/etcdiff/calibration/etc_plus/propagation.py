"""Probe runs: how an output error at step t really reaches the final result.

A solver step is ``x_{t+1} = A_t·x_t + B_t·eps_t``, so the solver alone says an error in eps_t reaches the end
scaled by ``|B_t|·prod_{u>t}|A_u|``. The model's own dynamics add to that: a flow that pulls its samples onto
tight modes damps early errors, one that spreads them grows them. Neither shows in a full-step recording. A probe
measures it: the same run again with step t alone reusing step t-1's output; per sample, the RMS change of the
final result over the RMS change of eps_t. Probing a few steps of a few calibration runs costs ``count·runs``
extra generations. The probes are stored on the trajectories (``Trajectory.probes``), for
:func:`etcdiff.policies.fit_etc_plus`.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

from ...integration.step.recording import Trajectory, call_kwargs, record_pipeline
from ...policies.step.baselines import NoCache, SkipSteps
from ...policies.step.etc_plus.fit import item_rms
from ..policy_runs import PolicyRunner, denoiser_runner, pipeline_runner, result_tensor
from ..runs import OnStep, Seeds, accepts_argument, prompt_seed, record_denoiser_runs

PROBES = 8  # probed steps per run
PROBE_RUNS = 3  # calibration runs that are probed


def probe_steps(num_steps: int, count: int = PROBES) -> list[int]:
    """``count`` steps spread evenly over 1..N-1, and the two before the last (the end, where a contracting
    model weighs errors most unlike its solver, gets a closer look). Step 0 has nothing to reuse. The last step's
    probe is the unit: its error reaches the end through the solver alone."""
    if num_steps < 3 or count < 1:
        return []
    late = {num_steps - 2, num_steps - 3} if num_steps > 4 else set()
    return sorted({int(round(v)) for v in np.linspace(1, num_steps - 1, count)} | late)


def _ratios(traj: Trajectory, step: int, reference: torch.Tensor, probed: torch.Tensor) -> list[float]:
    """Per sample: RMS(final change) / RMS(eps_step - eps_{step-1})."""
    moved = item_rms(traj.outputs[step].detach().cpu().double() - traj.outputs[step - 1].detach().cpu().double())
    reached = item_rms(probed.detach().cpu().double() - reference.detach().cpu().double())
    if reached.shape != moved.shape:
        raise RuntimeError(f"etcdiff: a probe's final result has {reached.numel()} samples, the recorded step "
                           f"{moved.numel()}; probes need one image per prompt.")
    return [float(r / m) if m > 0 else float("nan") for r, m in zip(reached, moved)]


def probe_runs(trajs: Sequence[Trajectory], run: PolicyRunner, steps: Sequence[int],
               references: Sequence[torch.Tensor] | None = None) -> None:
    """Probe the recorded runs ``trajs`` (runs 0.. of ``run``) at ``steps``, for real: one run per step, measured
    against ``references`` (each run's full-step result) where given, else against the recorded final latents (a
    full run for the reference only where ``run`` returns something else, such as decoded images)."""
    for k, traj in enumerate(trajs):
        probed = {t: run(SkipSteps({t}), k) for t in steps}
        if references is not None:
            reference = references[k]
        else:
            same = traj.final is not None and all(p.shape == traj.final.shape for p in probed.values())
            reference = traj.final if same else run(NoCache(), k)
        traj.probes = {t: _ratios(traj, t, reference, p) for t, p in probed.items()}


def record_probed_denoiser_runs(model: Callable[..., torch.Tensor], scheduler: Any, latents: torch.Tensor,
                                steps: int, count: int = PROBES, runs: int = PROBE_RUNS) -> list[Trajectory]:
    """:func:`~etcdiff.calibration.runs.record_denoiser_runs`, then probes on the first ``runs`` of them."""
    trajs = record_denoiser_runs(model, scheduler, latents, steps)
    probe_runs(trajs[:runs], denoiser_runner(model, scheduler, latents, steps),
               probe_steps(trajs[0].num_steps, count) if trajs else [], [tr.final for tr in trajs[:runs]])
    return trajs


def record_probed_pipeline_runs(pipe: Any, prompts: Sequence[str], steps: int, seed: Seeds,
                                guidance_scale: float | None = None, on_step: OnStep | None = None, *,
                                count: int = PROBES, runs: int = PROBE_RUNS) -> list[Trajectory]:
    """One full run of ``pipe`` per prompt (as :func:`~etcdiff.calibration.runs.record_pipeline_runs`), then
    probes on the first ``runs`` prompts: the same call with one step reusing the previous output."""
    trajs, references = [], []
    extra = {"output_type": "latent"} if accepts_argument(pipe, "output_type") else {}
    for k, prompt in enumerate(prompts):
        kwargs = call_kwargs(pipe, prompt, steps, prompt_seed(seed, k), guidance_scale)
        traj, result = record_pipeline(pipe, on_step=on_step, **kwargs, **extra)
        if traj.final is None:
            raise RuntimeError(f"etcdiff: no final latents were recorded for prompt {prompt!r}.")
        trajs.append(traj)
        if k < runs:
            references.append(result_tensor(result))
    probe_runs(trajs[:runs], pipeline_runner(pipe, prompts, steps, seed, guidance_scale, on_step),
               probe_steps(trajs[0].num_steps, count) if trajs else [], references)
    return trajs


__all__ = ["PROBES", "PROBE_RUNS", "probe_runs", "probe_steps", "record_probed_denoiser_runs", "record_probed_pipeline_runs"]
