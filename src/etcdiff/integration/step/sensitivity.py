"""Recording SenCache's sensitivities (calibration only: two extra denoiser forwards per step).

Along a full run, at every step t that has a next timestep: J_x = ||f(x', t) - f(x_t, t)|| / ||x' - x_t|| with x' the
scheduler's next latent, and J_t = ||f(x_t, t_next) - f(x_t, t)|| / |t_next - t|, per sample; t is the scheduler's
timestep. :func:`~etcdiff.policies.step.sencache.fit_sencache` averages them per timestep into the tables.

* :func:`record_sensitivity`: a bare denoiser ``model(x, t, **kwargs)`` (what the scheduler consumes, guidance
  inside) with a diffusers scheduler, every calibration latent sampled on its own. f is the model as the sampler
  calls it: its input is ``scheduler.scale_model_input(x, t)``; for J_t only the timestep argument changes.
* :func:`record_sensitivity_pipeline`: an unmodified diffusers pipeline. A forward hook on the denoiser keeps each
  call's inputs; once the scheduler has made x', every call of the step is run again with the latent input
  swapped for x' and, separately, with the timestep input moved to t_next. This measures the denoiser's raw output,
  before guidance combines the branches: per sample, the output change is the mean over the branches (batched
  halves or separate calls). The latent input must be the latents times a scalar (``scale_model_input``),
  possibly repeated along the batch for batched guidance; the timestep input must be the scheduler's timestep
  times a constant (e.g. ``t / 1000``). Anything else gets a clear error.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from ...policies.step.sencache import SensitivityRecord
from ..denoisers import find_denoisers, split_output
from ..step_tracker import StepTracker


def _norms(x: torch.Tensor) -> torch.Tensor:
    """Per-sample L2 norms over all but the batch dimension."""
    return x.detach().double().reshape(x.shape[0], -1).norm(dim=1)


def _scalar_scale(scaled: torch.Tensor, x: torch.Tensor) -> float:
    """c with scaled = c·x (``scale_model_input`` is a scalar scaling in diffusers), checked."""
    if scaled is x:
        return 1.0
    a, b = scaled.detach().double(), x.detach().double()
    den = float((b * b).sum())
    c = float((a * b).sum()) / den if den > 0 else 1.0
    if float((a - c * b).norm()) > 1e-4 * float(a.norm()) + 1e-12:
        raise ValueError(
            "record_sensitivity: the denoiser's input is not the latents times a scalar; record with a model "
            "function that takes the latents as they are."
        )
    return c


@torch.no_grad()
def record_sensitivity(model: Callable[..., torch.Tensor], scheduler: Any, latents: torch.Tensor,
                       num_inference_steps: int, **model_kwargs: Any) -> list[SensitivityRecord]:
    """One :class:`SensitivityRecord` per calibration latent (``latents`` is (N, ...), each sampled on its own)."""
    if not callable(model):
        raise TypeError(f"record_sensitivity: model must be callable as model(latents, timestep), got {type(model).__name__}.")
    if not isinstance(latents, torch.Tensor) or latents.dim() < 2:
        raise TypeError("record_sensitivity: latents must be a tensor (N, ...) of calibration noises, one per run.")
    if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 2:
        raise ValueError(f"record_sensitivity: num_inference_steps must be an integer >= 2, got {num_inference_steps!r}.")
    scale = getattr(scheduler, "scale_model_input", None)
    records = []
    for n in range(latents.shape[0]):
        scheduler.set_timesteps(num_inference_steps, device=latents.device)
        timesteps = scheduler.timesteps
        x = latents[n : n + 1]
        rec = SensitivityRecord([], [], [], [], [])
        for i, t in enumerate(timesteps):
            x_in = scale(x, t) if scale is not None else x
            c = _scalar_scale(x_in, x)
            f = model(x_in, t, **model_kwargs)
            x_next = scheduler.step(f, t, x, return_dict=False)[0]
            if i + 1 < len(timesteps):
                t_next = timesteps[i + 1]
                f_x = model(c * x_next, t, **model_kwargs)
                f_t = model(x_in, t_next, **model_kwargs)
                rec.timesteps.append(float(t))
                rec.dx.append(float(_norms(x_next - x)[0]))
                rec.dfx.append(float(_norms(f_x - f)[0]))
                rec.dt.append(abs(float(t_next) - float(t)))
                rec.dft.append(float(_norms(f_t - f)[0]))
            x = x_next
        records.append(rec)
    return records


_LATENT_KEYS = ("hidden_states", "sample", "x")


class _SensitivityRecorder:
    """StepTracker listener plus a forward hook on the denoisers; see the module docstring."""

    def __init__(self, pipe: Any) -> None:
        self.denoisers = find_denoisers(pipe)
        self.tracker = StepTracker(self)
        self.calls: dict[int, list[tuple[torch.nn.Module, tuple, dict, torch.Tensor]]] = {}
        self.latents: dict[int, torch.Tensor] = {}
        self.replaying = False
        self.records: list[SensitivityRecord] = []

    # StepTracker listener
    def begin(self, num_steps: int) -> None:
        self.calls, self.latents = {}, {}
        self.timesteps = [float(v) for v in self.tracker.scheduler.timesteps][-num_steps:]
        self.records = []

    def end_step(self, step: int, model_output: Any) -> None:
        x = self.tracker.latents
        if not isinstance(x, torch.Tensor):
            raise TypeError("record_sensitivity_pipeline: scheduler.step did not receive a latents tensor.")
        self.latents[step] = x.detach()
        if step >= 1:
            self._measure(step - 1, x.detach())
        self.calls.pop(step - 1, None)
        self.latents.pop(step - 1, None)

    def hook(self, module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        if self.replaying or not self.tracker.active:
            return
        tensor, _ = split_output(output)
        self.calls.setdefault(self.tracker.step_index, []).append((module, args, kwargs, tensor.detach()))

    # the measurement
    def _swap(self, args: tuple, kwargs: dict, key: str | int, value: Any) -> tuple[tuple, dict]:
        if isinstance(key, str):
            return args, {**kwargs, key: value}
        return (*args[:key], value, *args[key + 1 :]), kwargs

    def _find(self, args: tuple, kwargs: dict, names: tuple[str, ...], pos: int) -> tuple[str | int, Any]:
        for name in names:
            if name in kwargs:
                return name, kwargs[name]
        if len(args) > pos:
            return pos, args[pos]
        raise ValueError(f"record_sensitivity_pipeline: cannot find the denoiser's {names[0]} argument.")

    def _measure(self, step: int, x_next: torch.Tensor) -> None:
        x, calls = self.latents[step], self.calls.get(step, [])
        batch = x.shape[0]
        t, t_next = self.timesteps[step], self.timesteps[step + 1]
        if not calls or t == 0:
            raise ValueError(f"record_sensitivity_pipeline: no usable denoiser call at step {step} (timestep {t}).")
        dfx = torch.zeros(batch, dtype=torch.float64)
        dft = torch.zeros(batch, dtype=torch.float64)
        self.replaying = True
        try:
            for module, args, kwargs, out in calls:
                lkey, h = self._find(args, kwargs, _LATENT_KEYS, 0)
                k = h.shape[0] // batch if isinstance(h, torch.Tensor) and h.shape[0] % batch == 0 else 0
                if k == 0 or h.shape[1:] != x.shape[1:]:
                    raise ValueError(
                        f"record_sensitivity_pipeline: the denoiser's latent input has shape {tuple(h.shape)}, the "
                        f"latents {tuple(x.shape)}; use record_sensitivity with your own model function."
                    )
                c = _scalar_scale(h, torch.cat([x] * k))
                tkey, tau = self._find(args, kwargs, ("timestep", "t"), 1)
                tau_next = tau * (t_next / t)
                a2, k2 = self._swap(args, kwargs, lkey, (c * torch.cat([x_next] * k)).to(h.dtype))
                f_x, _ = split_output(module(*a2, **k2))
                a3, k3 = self._swap(args, kwargs, tkey, tau_next)
                f_t, _ = split_output(module(*a3, **k3))
                dfx += _norms(f_x - out).reshape(k, batch).mean(0).cpu()
                dft += _norms(f_t - out).reshape(k, batch).mean(0).cpu()
        finally:
            self.replaying = False
        dfx, dft, dx = dfx / len(calls), dft / len(calls), _norms(x_next - x).cpu()
        if not self.records:
            self.records = [SensitivityRecord([], [], [], [], []) for _ in range(batch)]
        for b, rec in enumerate(self.records):
            rec.timesteps.append(t)
            rec.dx.append(float(dx[b]))
            rec.dfx.append(float(dfx[b]))
            rec.dt.append(abs(t_next - t))
            rec.dft.append(float(dft[b]))


@torch.no_grad()
def record_sensitivity_pipeline(pipe: Any, **call_kwargs: Any) -> list[SensitivityRecord]:
    """Run ``pipe(**call_kwargs)`` once at full steps, with the extra forwards; one record per sample in the batch.

    Nothing of the pipeline is modified once this returns (also on error).
    """
    scheduler = getattr(pipe, "scheduler", None)
    if scheduler is None:
        raise TypeError(f"record_sensitivity_pipeline: {type(pipe).__name__} has no `scheduler`; a diffusers pipeline is expected.")
    rec = _SensitivityRecorder(pipe)
    rec.tracker.wrap(scheduler)
    handles = []
    try:
        handles = [m.register_forward_hook(rec.hook, with_kwargs=True) for m in rec.denoisers.values()]
        pipe(**call_kwargs)
    finally:
        for h in handles:
            h.remove()
        rec.tracker.unwrap()
    if not rec.records:
        raise RuntimeError(f"record_sensitivity_pipeline: {type(pipe).__name__} made fewer than 2 steps; nothing was measured.")
    return rec.records
