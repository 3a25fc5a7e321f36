"""The other step methods at the settings the margin table compares ETC+ with, declared once for the bare-denoiser
grid (``scripts/etc_plus_solvers.py --methods peers``) and for the pipeline benches
(``scripts/etc_plus_peer_benches.py``).

Every step method of the registry that ETC+'s margin table did not yet run: reference ETC (its calibrated tolerance
and two fixed ones), LeMiCa (its searched schedule at ETC+'s own budgets, driving each of its three predictors:
reuse as published, the line through the last two real outputs, ETC's trend), SenCache, the library's linear
extrapolation, EasyCache, LazyCache, the PreciseCache reconstruction, AdaptiveDiffusion and SADA, each at its
defaults and at the looser settings of the scenes model's 2025-26 peer bench. ERTACache, MeanCache and the fixed
interval are the grid's and the benches' own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

ETC_TAUS = (0.03, 0.1)  # reference ETC's fixed tolerances, beside its calibrated one
LEMICA_PREDICTORS = ("reuse", "linear", "etc")
SENCACHE = ((0.02, 0.1, 3), (0.05, 0.2, 4), (0.1, 0.5, 6), (0.2, 1.0, 8), (0.5, 2.0, 10))  # eps_start, eps_main, K
#: the methods that need no calibration, each with its settings ({} = its defaults)
UNCALIBRATED: tuple[tuple[str, dict[str, Any]], ...] = (
    *(("linear", {"interval": n}) for n in (2, 3, 4, 5)),
    ("easycache", {}), ("easycache", {"threshold": 0.1}), ("easycache", {"threshold": 0.2}),
    ("easycache", {"warmup": 5, "threshold": 0.2}), ("easycache", {"warmup": 5, "threshold": 0.4}),
    ("lazycache", {}), *(("lazycache", {"start_percent": 0.05, "threshold": t}) for t in (0.4, 0.8, 1.6)),
    ("precisecache", {}), ("precisecache", {"threshold": 0.2}), ("precisecache", {"threshold": 0.4}),
    ("precisecache", {"max_skip": 8, "threshold": 0.8}),
    ("adaptive", {}), ("adaptive", {"threshold": 0.05}),
    ("sada", {}),
)
CALIBRATED = ("etc", "lemica", "sencache")  # calibrated once per case on its calibration runs


def budgets(steps: int, speedups: tuple[float, ...] = (2.0, 2.5, 3.0, 3.5, 4.0, 4.5)) -> list[int]:
    """ETC+'s budgets in the grid: the calls of 2x, 2.5x, ..., 4.5x fewer (or of ``speedups``), largest first."""
    return sorted({max(2, round(steps / s)) for s in speedups}, reverse=True)


def label(settings: dict[str, Any]) -> str:
    """``k=v k2=v2``, the bench's way to write one setting (``default`` for none)."""
    return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in settings.items()) or "default"


def calibrated_settings(steps: int) -> list[tuple[str, dict[str, Any]]]:
    """The calibrated methods' run settings; ``etc`` with ``{}`` runs its calibrated tolerance."""
    out: list[tuple[str, dict[str, Any]]] = [("etc", {}), *(("etc", {"threshold": t}) for t in ETC_TAUS)]
    out += [("lemica", {"calls": b, "predictor": p}) for p in LEMICA_PREDICTORS for b in budgets(steps)]
    out += [("sencache", {"eps_start": a, "eps_main": b, "max_reuse": k}) for a, b, k in SENCACHE]
    return out


def all_settings(steps: int) -> list[tuple[str, dict[str, Any]]]:
    """Every (method, settings) of the peers at ``steps`` steps."""
    return [*calibrated_settings(steps), *UNCALIBRATED]


def pipeline_settings(steps: int) -> list[tuple[str, dict[str, Any]]]:
    """The peers benched on the pipeline models, where a generation costs far more than on the bare denoisers:
    the calibrated ones, LeMiCa at ETC+'s budgets of 2x, 3x and 4x only. On the bare-denoiser grid (27 cases) the
    best other method at 2x-4x was always ERTACache, MeanCache, the fixed interval or one of these, never
    EasyCache, LazyCache, PreciseCache, AdaptiveDiffusion, SADA or linear extrapolation, and on the scenes model
    at 50 Euler steps all five were below ERTACache (docs/scenes/bench/step-peers-2026)."""
    kept = budgets(steps, (2.0, 3.0, 4.0))
    return [(m, s) for m, s in calibrated_settings(steps) if m != "lemica" or s["calls"] in kept]


def bench_settings(settings: list[tuple[str, dict[str, Any]]]) -> str:
    """``settings`` as ``etcdiff bench --settings``: the calibrated methods find their profiles in
    ``ETCDIFF_PROFILE_DIR``."""
    return ";".join(f"{m}:{label(s)}" if s else f"{m}:" for m, s in settings)


def policies(model: Callable[..., torch.Tensor], scheduler: Any, noises: torch.Tensor, steps: int,
             decode: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[tuple[str, str, Any]]:
    """(method, label, policy) for every setting of :func:`all_settings` on a bare denoiser, the calibrated
    methods fitted once on ``noises`` through the library; where a method refuses the model or scheduler, its
    policy is the refusal's text instead (and its other settings are not tried)."""
    import copy

    import etcdiff
    from etcdiff.calibration.runs import record_denoiser_runs
    from etcdiff.policies.step.lemica import fit_lemica

    fits: dict[str, Any] = {}
    refused: dict[str, str] = {}
    for method, settings in all_settings(steps):
        if method in refused:
            continue
        try:
            if method == "etc" and not settings:
                pol = etcdiff.calibrate_policy("etc", model, scheduler, noises, steps, decode=decode)
                yield method, f"threshold={pol.params()['threshold']:.3g} (calibrated)", pol
                continue
            if method == "lemica" and "lemica" not in fits:
                runs = record_denoiser_runs(model, copy.deepcopy(scheduler), noises, steps)
                fits["lemica"] = {"profile": fit_lemica(runs).to_dict()}
            if method == "sencache" and "sencache" not in fits:
                fits["sencache"] = {"tables": etcdiff.calibrate_policy("sencache", model, scheduler, noises,
                                                                       steps).tables}
            pol = etcdiff.make_policy(method, **fits.get(method, {}), **settings)
        except ValueError as e:
            refused[method] = str(e)
            yield method, "refused", refused[method]
            continue
        yield method, label(settings), pol
