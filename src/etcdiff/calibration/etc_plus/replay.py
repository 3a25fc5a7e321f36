"""Replays: a policy run over a recorded calibration run, through a copy of its scheduler, with no model call.

A calibration that judges plans on held-out runs pays one generation per plan and run. A replay pays none. It runs
the policy through the real sampling loop (:func:`~etcdiff.integration.step.sampler.denoise_loop`) on a fresh copy
of the run's scheduler. On the steps the policy computes, the "model" answers with the recorded output, corrected
for how far the replayed latents have strayed from the recorded ones::

    eps(x) = eps_t + lam_t * (x - x_t) / s_t

- ``s_t`` is the noise scale of step t, fitted on the recorded runs as ``x_t ~ a_t * x_final + s_t * eps_t``.
- ``lam_t`` (the *feedback*) says how strongly the model pulls a strayed sample back at step t. 0 means not at
  all (only the solver acts). 1 means the model's denoised estimate does not move with x. Below 0 the model
  pushes the stray further (the scenes pipeline, under classifier-free guidance, fits -0.1).

A replay is exact for the solver: multistep history, predictor-corrector, shifted sigmas, the last step. It is
first order for the model. The feedback is one curve per model and scheduler, chosen by :func:`fit_feedback`
among :func:`feedback_candidates` (a constant pull, or one that fades as the signal-to-noise ratio grows, as a
denoiser's does: at high noise its estimate ignores a stray, at low noise it follows it) so that replays
reproduce the errors of a few real held-out runs (a replayed calibration's: :data:`REPLAY_FEEDBACK_RUNS` runs at
each budget of :data:`REPLAY_FEEDBACK_SPEEDUPS`; the surrogate of ``serve_steps``: :data:`FEEDBACK_RUNS` at
:data:`FEEDBACK_SPEEDUPS`). On gmm-flow with Euler at 20 steps the fading pull reproduces those runs' log errors
within 0.03 (rms), the best constant within 0.13.

Replays do not stand in for probe runs (how an output error at step t reaches the end): a replay's pull is the same
in every direction, a model's is not, and replayed probes cost the front most of what replays lost. A replayed
calibration probes :data:`REPLAY_PROBE_RUNS` recorded run for real instead.

The pull's miss also depends on the plan (on the scenes pipeline replays flatter fitted gains on every step). With
``replay_offsets=True`` the pull's real runs are spread over the fitted-gains settings and each one's replays are
shifted by how far they missed its runs (:func:`candidate_offsets`).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch

from ...integration.step.sampler import denoise_loop
from ...policies.step.base import StepPolicy
from ...policies.step.baselines import NoCache
from ...policies.step.etc_plus.fit import flat_items, item_rms, solve_pair
from ..policy_runs import PolicyRunner

FEEDBACK_RUNS = 3  # held-out runs the feedback is fitted on (the surrogate's of serve_steps)
FEEDBACK_SPEEDUPS = (2, 3, 4, 5)  # their budgets: steps / speedup calls (the ladder of budgets spans 2x-5x)
REPLAY_FEEDBACK_RUNS = 2  # a replayed calibration's: fewer, so that it makes at most 30 generations with 10
REPLAY_FEEDBACK_SPEEDUPS = (2, 3, 4)  # prompts at 50 steps, its probes on one run made for real
REPLAY_PROBE_RUNS = 1  # recorded runs a replayed calibration probes for real
FEEDBACK_GRID = tuple(round(0.1 * k, 1) for k in range(10))  # lam in 0.0 .. 0.9
FEEDBACK_PUSH = (-0.05, -0.1, -0.2, -0.3)  # a model that pushes a stray further (after the pulls: 0 wins a tie)
FEEDBACK_VARIANCES = tuple(10.0 ** (k / 4) for k in range(-16, 9))  # v in 1e-4 .. 1e2
FEEDBACK_TOPS = (0.6, 0.8, 1.0)
EXACT = 2e-2  # a replay of the recorded outputs must land this close to the recorded final latents (relative)
TRUSTED_MISS = 0.4  # rms log miss of the fitted feedback above which replays are said not to stand for the model


def noise_fit(records: Sequence[Any]) -> tuple[list[float], list[float]]:
    """``(a_t, s_t)`` per step: x_t fitted as ``a·x_final + s·eps_t`` over every item (``s`` floored at 1e-3 of
    the largest, so a last step at sigma near 0 does not blow the feedback up)."""
    n = records[0].num_steps
    final = torch.cat([flat_items(r.final).double() for r in records]).flatten()
    signal, noise = [], []
    for t in range(n):
        x = torch.cat([flat_items(r.inputs[t]).double() for r in records]).flatten()
        e = torch.cat([flat_items(r.outputs[t]).double() for r in records]).flatten()
        gram = torch.tensor([[final @ final, final @ e], [final @ e, e @ e]], dtype=torch.float64)
        rhs = torch.tensor([final @ x, e @ x], dtype=torch.float64)
        a, s = solve_pair(gram, rhs) or (1.0, 1.0)  # collinear: no separate noise direction
        signal.append(abs(a))
        noise.append(abs(s))
    top = max(noise) if noise and max(noise) > 0 else 1.0
    return signal, [max(s, 1e-3 * top) for s in noise]


def noise_scales(records: Sequence[Any]) -> list[float]:
    """``s_t`` per step of :func:`noise_fit`."""
    return noise_fit(records)[1]


def feedback_candidates(signal: Sequence[float], noise: Sequence[float]) -> dict[str, list[float]]:
    """The per-step feedbacks :func:`fit_feedback` chooses among, by name: a constant pull ``lam`` at every step
    (:data:`FEEDBACK_GRID`) or push (:data:`FEEDBACK_PUSH`), and a pull that fades with the signal-to-noise ratio,
    ``lam_t = top · s_t² / (s_t² + v·a_t²)``: a model whose denoised estimate does not follow a strayed sample
    at high noise (full pull) and does at low noise (none), as a Gaussian of variance ``v`` would."""
    out = {f"{lam:g}": [lam] * len(noise) for lam in FEEDBACK_GRID + FEEDBACK_PUSH}
    for v in FEEDBACK_VARIANCES:
        for top in FEEDBACK_TOPS:
            out[f"{top:g}*snr:{v:g}"] = [top * s * s / (s * s + v * a * a) for a, s in zip(signal, noise)]
    return out


class Replay:
    """A :data:`~etcdiff.calibration.policy_runs.PolicyRunner` over recorded runs: ``replay(policy, i)`` is the
    final latents of ``policy`` on run i, replayed (module docstring) with feedback ``lam``."""

    def __init__(self, records: Sequence[Any], feedback: float | Sequence[float] = 0.0,
                 scales: Sequence[float] | None = None) -> None:
        self.records = list(records)
        n = self.records[0].num_steps if self.records else 0
        self.feedback = [float(feedback)] * n if isinstance(feedback, (int, float)) else [float(v) for v in feedback]
        self.scales = list(scales) if scales is not None else noise_scales(self.records)

    def __call__(self, policy: StepPolicy, i: int) -> torch.Tensor:
        rec = self.records[i]
        solver = _cpu_copy(rec.solver)
        index = {float(t): k for k, t in enumerate(solver.timesteps)}
        lam, scales = self.feedback, self.scales
        scale_input = hasattr(solver, "scale_model_input")
        x_dtype = getattr(rec, "input_dtype", None) or rec.inputs[0].dtype  # the run's own precision
        out_dtype = getattr(rec, "output_dtype", None) or rec.outputs[0].dtype

        def model(x_in: torch.Tensor, t: Any) -> torch.Tensor:
            k = index[float(t)]
            out = rec.outputs[k]
            if lam[k] == 0.0:
                return out.to(out_dtype)
            x_rec = rec.inputs[k]
            rec_in = solver.scale_model_input(x_rec, t) if scale_input else x_rec
            c = float((rec_in * x_rec).sum() / (x_rec * x_rec).sum().clamp_min(1e-30))  # the input's scaling
            return (out + lam[k] * (x_in.float() - rec_in) / (max(abs(c), 1e-12) * scales[k])).to(out_dtype)

        return denoise_loop(model, solver, rec.inputs[0].to(x_dtype, copy=True), policy).float()


def _cpu_copy(solver: Any) -> Any:
    """A fresh copy of a recorded solver with its tensors on the CPU (the recorded outputs are there)."""
    import copy

    out = copy.deepcopy(solver)
    for name, value in list(vars(out).items()):
        if isinstance(value, torch.Tensor):
            setattr(out, name, value.cpu())
    return out


def replayable(records: Sequence[Any]) -> bool:
    """Whether the runs can be replayed: each carries a solver with one timestep per recorded step, and a replay
    of the first run's recorded outputs lands on its final latents (a pipeline that changes the latents between
    steps, such as inpainting, does not)."""
    if not records or any(getattr(r, "solver", None) is None or r.final is None for r in records):
        return False
    if any(len(r.solver.timesteps) != r.num_steps for r in records):
        return False
    try:
        final = Replay(records[:1], 0.0, [1.0] * records[0].num_steps)(NoCache(), 0).double()
    except Exception:  # noqa: BLE001 - a scheduler the replay cannot drive: calibrate with real runs
        return False
    ref = records[0].final.double()
    return bool(final.shape == ref.shape) and float(item_rms(final - ref).max()) <= EXACT * float(item_rms(ref).max())


def untrusted_miss(record: dict[str, Any] | None) -> float:
    """The fitted feedback's rms log miss of the real runs (``record``, :func:`fit_feedback`'s; once shifted by
    the candidates' offsets where it has them) where it is above :data:`TRUSTED_MISS`, else 0 (also where no real
    run was made, or the replays were not used): how far the replays are known not to stand for the model."""
    if not record or record.get("used") is False or not record.get("runs", 1):
        return 0.0
    miss = record.get("rms_log_miss_offset", record.get("rms_log_miss"))
    return float(miss) if miss is not None and miss > TRUSTED_MISS else 0.0


def untrusted(record: dict[str, Any], what: str) -> str | None:
    """A sentence for the user where a fitted feedback's replays missed the real runs' log errors by more than
    :data:`TRUSTED_MISS` (rms; about 1.5 times the error), else None. Measured at 50 steps: 0.05-0.29 on the gmm
    models and digits (replayed calibrations within 0.6 dB of the default's front on average there) and 0.10-0.16
    in the UNet's served pulls; on the scenes pipeline 0.43 and 0.55 under DPM-Solver++ and Euler, where the
    replayed front came out 2.1 and 2.9 dB below the default's, and 0.35 under UniPC, where it is level. A bar
    for a replay model that does not fit, not for every loss. ``what``: the runs' subject, for the sentence."""
    miss = untrusted_miss(record)
    if not miss:
        return None
    shifted = " once shifted by each candidate's offset" if "rms_log_miss_offset" in record else ""
    return (f"{what} missed the real runs' errors by {miss:.2f} in log error{shifted} (rms: {math.exp(miss):.1f} "
            f"times the error), more than {TRUSTED_MISS:g}: the model does not answer a strayed sample as a replay "
            "assumes, so the plans chosen on them may not be this model's")


def keep_chosen_miss(record: dict[str, Any], check: dict[str, Any] | None) -> str | None:
    """Keep in ``record`` (:func:`fit_feedback`'s) how far the replays missed the real runs of the chosen fit's own
    plans (``"chosen_miss"``: the tolerance check's ``"replay_miss"``, where it ran them for real), and return a
    sentence for the user where that is above :data:`TRUSTED_MISS` while the pull's own miss is not (that one is
    said by :func:`untrusted`), else None. The pull is fitted on another candidate's runs: it can fit them and
    still not stand for the plans chosen (on the UNet model 0.02-0.20 against 0.27-1.54)."""
    miss = (check or {}).get("replay_miss")
    if miss is None:
        return None
    record["chosen_miss"] = miss
    if miss <= TRUSTED_MISS or untrusted_miss(record):
        return None
    pull = record.get("rms_log_miss_offset", record["rms_log_miss"])
    return (f"the replays missed the real runs of the chosen plans by {miss:.2f} in log error (rms: "
            f"{math.exp(miss):.1f} times the error), more than {TRUSTED_MISS:g} (the pull, fitted on other plans' "
            f"runs, missed those by {pull:.2f}): the plans chosen on them may not be this model's")


def log_error(result: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean over samples of log(RMS(result - reference) / RMS(reference))."""
    error = item_rms(result.detach().double() - reference.double())
    scale = item_rms(reference.double()).clamp_min(1e-12)
    return sum(math.log(max(float(e / s), 1e-12)) for e, s in zip(error, scale)) / len(error)


def fit_feedback(records: Sequence[Any], run: PolicyRunner, fit: Callable[[list[Any]], dict[str, Any]],
                 build: Callable[[dict[str, Any], int | None], StepPolicy],
                 scales: Sequence[float] | None = None, runs: int = FEEDBACK_RUNS,
                 speedups: Sequence[int] = FEEDBACK_SPEEDUPS,
                 fits: dict[str, Callable[[list[Any]], dict[str, Any]]] | None = None
                 ) -> tuple[list[float], dict[str, Any], dict[int, torch.Tensor]]:
    """The per-step feedback for :class:`Replay`: fit on all but the last ``runs`` runs, run the
    policies at the budgets of ``speedups`` on those for real (``run``; at every other budget a
    plan that computes the last step, where the policy has that setting) and in replays under every candidate of
    :func:`feedback_candidates`; the one whose log errors come closest (least squares). Returns it, a
    record (``"feedback"`` names it; ``"real_log_errors"`` and ``"replayed_log_errors"``, budget by budget and run
    by run, and their ``"rms_log_miss"``: see :func:`untrusted`), and the real full-step results of those runs
    (the recorded final latents, or a real full run where ``run`` returns something else, such as a pipeline's
    decoded output). ``scales``: the runs' :func:`noise_scales` where the caller has them.

    ``fits`` (label -> fit, several candidates of a choice): the same number of real runs is spread over them
    instead (:func:`_cells`), and the record also keeps each one's offset (:func:`candidate_offsets`)."""
    n = records[0].num_steps
    held = list(range(max(2, len(records) - runs), len(records)))
    if not held or len(records) - len(held) < 2:
        return [0.0] * n, {"feedback": "0", "runs": 0}, {}
    rest = [r for i, r in enumerate(records) if i not in held]
    fitted = {label: one(rest) for label, one in (fits or {None: fit}).items()}
    budgets = sorted({max(2, round(n / k)) for k in speedups})
    signal, noise = noise_fit(records)
    scales = noise if scales is None else scales
    candidates = feedback_candidates(signal, scales)
    references = {i: Replay(records, 0.0, scales)(NoCache(), i) for i in held}
    finals: dict[int, torch.Tensor] = {}
    policies, real, labels = [], [], []
    for label, k, calls, runs_at in _cells(list(fitted), budgets, held):
        policy = build(fitted[label], calls)
        if k % 2 and "last_step" in getattr(policy, "params", lambda: {})():  # every other budget computes the last
            try:  # step, so that the fit also sees the plans the ladder may choose there
                forced = build({**fitted[label], "last_step": True}, calls)
                forced.planned_steps(n)
                policy = forced
            except ValueError:  # no plan of this budget can compute the last step
                pass
        for i in runs_at:
            result = run(policy, i)
            if i not in finals:
                same = result.shape == records[i].final.shape
                finals[i] = records[i].final if same else run(NoCache(), i)
            real.append(log_error(result, finals[i]))
            policies.append((policy, i))
            labels.append(label)

    replayed: dict[str, list[float]] = {}

    def miss(name: str) -> float:
        replay = Replay(records, candidates[name], scales)
        got = replayed[name] = [log_error(replay(policy, i), references[i]) for policy, i in policies]
        return sum((a - b) ** 2 for a, b in zip(real, got)) / len(real)

    misses = {name: miss(name) for name in candidates}
    best = min(candidates, key=lambda name: misses[name])  # min keeps the first of equal misses
    constant = {name: m for name, m in misses.items() if "snr" not in name}
    record = {"feedback": best, "runs": len(real), "budgets": budgets, "held_out_runs": held,
              "real_log_errors": [round(v, 4) for v in real],  # run by run within each budget
              "replayed_log_errors": [round(v, 4) for v in replayed[best]],
              "rms_log_miss": round(math.sqrt(misses[best]), 4),
              "rms_log_miss_constant": {k: round(math.sqrt(v), 4) for k, v in constant.items()}}
    if fits:
        record.update(candidate_offsets(labels, real, replayed[best]))
    return candidates[best], record, finals


def _cells(labels: list[Any], budgets: list[int], held: list[int]) -> list[tuple[Any, int, int, list[int]]]:
    """``(label, budget index, budget, runs)`` to run for real: one candidate on every held-out run at every
    budget; several share ``len(held)`` cells instead (held-out run ``j`` at the ``j``-th of ``budgets`` spread from
    the smallest to the largest), so that each candidate runs on the same runs at the same budgets (their real runs
    are paired) and, with no more candidates than budgets, no more runs are made than for one."""
    if len(labels) == 1:
        return [(labels[0], k, calls, held) for k, calls in enumerate(budgets)]
    picks = [round(j * (len(budgets) - 1) / max(1, len(held) - 1)) for j in range(len(held))]
    return [(label, k, budgets[k], [i]) for label in labels for i, k in zip(held, picks)]


def candidate_offsets(labels: Sequence[Any], real: Sequence[float], replayed: Sequence[float]) -> dict[str, Any]:
    """How far the replays miss each candidate's real runs on average (``"offsets"``: label -> mean of real minus
    replayed log error; a replayed choice adds it to that candidate's replayed log errors), and the rms miss left
    once each run is shifted by the offset its candidate's other runs give (``"rms_log_miss_offset"``: how far the
    shifted replays would miss a run they were not shifted on; :func:`untrusted_miss` reads it). The pull is one
    curve for every plan, and its miss depends on the plan: on the scenes pipeline replays judged gains on every
    step 0.33-0.41 closer than the real runs did, and the other candidates 0.12-0.38 further."""
    gaps: dict[str, list[float]] = {}
    for label, a, b in zip(labels, real, replayed):
        gaps.setdefault(str(label), []).append(a - b)
    left = [v - (sum(got) - v) / (len(got) - 1) for got in gaps.values() if len(got) > 1 for v in got]
    out: dict[str, Any] = {"offsets": {k: round(sum(v) / len(v), 4) for k, v in gaps.items()}}
    if left:
        out["rms_log_miss_offset"] = round(math.sqrt(sum(v * v for v in left) / len(left)), 4)
    return out


__all__ = ["EXACT", "FEEDBACK_GRID", "FEEDBACK_PUSH", "FEEDBACK_RUNS", "FEEDBACK_SPEEDUPS", "FEEDBACK_TOPS",
           "FEEDBACK_VARIANCES", "Replay", "feedback_candidates", "fit_feedback", "log_error", "noise_fit",
           "noise_scales", "REPLAY_FEEDBACK_RUNS", "REPLAY_FEEDBACK_SPEEDUPS", "REPLAY_PROBE_RUNS", "TRUSTED_MISS",
           "candidate_offsets", "keep_chosen_miss", "replayable", "untrusted", "untrusted_miss"]
