"""Measuring one run: its images and final latents, model calls, FLOPs and latency, scored against the reference.

:class:`Measurer` generates on one pipeline. For each (prompt, seed) pair the full-step reference is generated
once and kept on disk (:mod:`.records`); each method x setting then runs once untimed (images, run report,
FLOPs) and ``repeats`` times timed, interleaved with as many timed runs of the reference (alternating which goes
first), so that the latency speedup compares runs made under the same machine load. With ``repeats=0`` nothing is
timed: each setting runs once, and the latency figures are ``None``.
"""

from __future__ import annotations

import socket
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..digits import DigitsPipeline
from ..integration.denoisers import find_denoisers
from ..models import call_kwargs
from ..policies.step.base import StepPolicy
from .enabling import ResolvedSetting, enabled, resolve_setting
from .environment import model_fingerprint
from .fidelity import FidelityScorer
from .flops import DenoiserCalls, PerCallFlops
from .records import load_reference, save_reference
from .sweep import REFERENCE_METHOD, BenchConfig, MethodSetting, pair_key

Generation = dict[str, Any]


class FinalLatents:
    """Keeps the output of the last ``scheduler.step`` of a generation (the final latents)."""

    def __init__(self, pipe: Any) -> None:
        self.scheduler = getattr(pipe, "scheduler", None)
        self.latents: torch.Tensor | None = None
        self._had = False
        self._old: Any = None

    def __enter__(self) -> "FinalLatents":
        sch = self.scheduler
        if sch is None or not callable(getattr(sch, "step", None)):
            return self
        self._had = "step" in vars(sch)
        self._old = vars(sch).get("step")
        inner = sch.step

        def step(*args: Any, **kwargs: Any) -> Any:
            result = inner(*args, **kwargs)
            prev = result[0] if isinstance(result, tuple) else getattr(result, "prev_sample", None)
            if isinstance(prev, torch.Tensor):
                self.latents = prev
            return result

        self._wrapper = step
        sch.step = step
        return self

    def __exit__(self, *exc: Any) -> None:
        sch = self.scheduler
        if sch is None or vars(sch).get("step") is not getattr(self, "_wrapper", None):
            return
        if self._had:
            sch.step = self._old
        else:
            del sch.step
        if self.latents is not None:
            self.latents = self.latents.detach().float().cpu().clone()


def pipeline_images(result: Any) -> np.ndarray:
    """The images of a pipeline's output as one float array ``[N, H, W, C]`` (video frames count as images)."""
    out = getattr(result, "images", None)
    if out is None:
        out = getattr(result, "frames", None)
    if out is None and isinstance(result, tuple):
        out = result[0]
    if isinstance(out, torch.Tensor):
        out = out.detach().float().cpu().numpy()
    if isinstance(out, list):
        out = np.stack([np.asarray(o, dtype=np.float32) / (255.0 if np.asarray(o).dtype == np.uint8 else 1.0) for o in out])
    arr = np.asarray(out, dtype=np.float32)
    if arr.ndim == 5:  # video [B, F, H, W, C]: every frame is an image
        arr = arr.reshape(-1, *arr.shape[2:])
    return arr


class Measurer:
    """Generates and measures runs on one pipeline for the sweep ``config``; process ``rank`` signs its records."""

    def __init__(self, config: BenchConfig, pipe: Any, rank: int = 0) -> None:
        self.config, self.pipe, self.rank = config, pipe, rank
        self.denoisers = find_denoisers(pipe)
        self.fingerprint = model_fingerprint(pipe)
        self.per_call = PerCallFlops()
        digits = isinstance(pipe, DigitsPipeline) or getattr(pipe, "etcdiff_digit_classes", False)  # the UNet one
        self.scorer = FidelityScorer(digits=digits, device=config.device,
                                     adherence=getattr(pipe, "etcdiff_adherence", None))
        self.out = Path(config.out)
        self.references_generated = 0
        self.references_loaded = 0
        self._warm = False
        self.resolved: dict[MethodSetting | None, ResolvedSetting] = {}

    def validate_methods(self) -> None:
        """Resolve every method x setting once for the whole sweep and enable it once (no generation), so that a
        bad setting fails before the sweep and no run reads a profile or builds a plan again."""
        for ms in [None, *self.config.grid]:
            self.resolved[ms] = resolve_setting(self.pipe, ms, self.config.steps)
            try:
                with enabled(self.pipe, self.resolved[ms]):
                    pass
            except (TypeError, ValueError, KeyError) as e:
                what = REFERENCE_METHOD if ms is None else f"{ms.method} ({ms.label})"
                raise ValueError(f"cannot enable {what}: {e.args[0] if e.args else e}") from None

    def setting(self, ms: MethodSetting | None) -> ResolvedSetting:
        """``ms`` as resolved for this sweep (resolved now if :meth:`validate_methods` has not run)."""
        if ms not in self.resolved:
            self.resolved[ms] = resolve_setting(self.pipe, ms, self.config.steps)
        return self.resolved[ms]

    # -- generation ----------------------------------------------------------------------------------------
    def _kwargs(self, prompt: str, seed: int) -> dict[str, Any]:
        kw = call_kwargs(self.pipe, prompt, self.config.steps, seed, self.config.guidance)
        kw["output_type"] = "np"
        return kw

    def untimed(self, ms: MethodSetting | None, prompt: str, seed: int) -> Generation:
        """One generation: images, final latents, the run report, NFE and FLOPs."""
        with enabled(self.pipe, self.setting(ms)) as on:
            direct = self.config.flops == "direct" or not isinstance(on.policy, StepPolicy)
            with DenoiserCalls(self.denoisers, direct=direct, keep_samples=not direct) as calls, \
                    FinalLatents(self.pipe) as fin:
                t0 = time.perf_counter()
                images = pipeline_images(self.pipe(**self._kwargs(prompt, seed)))
                first_latency = time.perf_counter() - t0
            report = on.report()
        nfe = effective_nfe(report)
        flops_mode = "direct" if direct else "per-call"
        if direct:
            flops = calls.direct_flops
        else:
            self.per_call.measure_all(self.denoisers, calls)  # the pipeline is plain again here
            flops = self.per_call.total(calls.keys, nfe or 0)
            if flops is None:  # several denoisers or input shapes: count every call instead
                flops, flops_mode = self._direct_flops(ms, prompt, seed), "direct"
        rep = report.to_dict() if hasattr(report, "to_dict") else dict(vars(report))
        return {"images": images, "latents": fin.latents, "nfe": nfe, "flops": flops, "flops_method": flops_mode,
                "report": rep, "policy": repr(on.policy), "first_latency_s": first_latency,
                "denoiser_calls": int(sum(calls.calls.values()))}

    def _direct_flops(self, ms: MethodSetting | None, prompt: str, seed: int) -> int:
        with enabled(self.pipe, self.setting(ms)), DenoiserCalls(self.denoisers, direct=True, keep_samples=False) as calls:
            self.pipe(**self._kwargs(prompt, seed))
        return calls.direct_flops

    def timed(self, ms: MethodSetting | None, prompt: str, seed: int) -> float:
        """The wall-clock seconds of one generation."""
        with enabled(self.pipe, self.setting(ms)):
            kw = self._kwargs(prompt, seed)
            t0 = time.perf_counter()
            self.pipe(**kw)
            return time.perf_counter() - t0

    def warm_up(self, prompt: str, seed: int) -> None:
        """One untimed reference generation before the first timing of this process (none when nothing is timed)."""
        if not self._warm and self.config.repeats > 0:
            self.timed(None, prompt, seed)
            self._warm = True

    # -- the reference ---------------------------------------------------------------------------------------
    def reference(self, prompt: str, seed: int) -> Generation:
        """The reference of a pair: from ``DIR/reference`` when there, else generated and saved."""
        key = pair_key(self.config, self.fingerprint, prompt, seed)
        ref = load_reference(self.out, key)
        if ref is not None:
            self.references_loaded += 1
            if ref.get("labels") is None and self.scorer.classifier is not None:
                ref["labels"] = self.scorer.labels(ref["images"])
            return ref
        run = self.untimed(None, prompt, seed)
        self.references_generated += 1
        meta = {"pair_key": key, "model": self.config.model, "fingerprint": self.fingerprint, "prompt": prompt,
                "seed": seed, "steps": self.config.steps, "guidance": self.config.guidance, "nfe": run["nfe"],
                "flops": run["flops"], "flops_method": run["flops_method"], "report": run["report"],
                "labels": self.scorer.labels(run["images"])}
        save_reference(self.out, key, meta, run["images"], run["latents"])
        return {**meta, "images": run["images"], "latents": run["latents"]}

    # -- records ---------------------------------------------------------------------------------------------
    def base_record(self, key: str, ms: MethodSetting | None, pidx: int, prompt: str, seed: int) -> dict[str, Any]:
        """What every record (and error record) of a run says about what ran, and where."""
        return {"key": key, "kind": "reference" if ms is None else "run",
                "method": REFERENCE_METHOD if ms is None else ms.method,
                "setting": {} if ms is None else ms.kwargs, "setting_label": "reference" if ms is None else ms.label,
                "prompt_index": pidx, "prompt": prompt, "seed": seed, "model": self.config.model,
                "fingerprint": self.fingerprint, "steps": self.config.steps, "guidance": self.config.guidance,
                "repeats": self.config.repeats, "device": self.config.device, "rank": self.rank,
                "host": socket.gethostname(), "torch_threads": torch.get_num_threads()}

    def reference_record(self, key: str, pidx: int, prompt: str, seed: int, ref: Generation) -> dict[str, Any]:
        """The reference's own record: its timings, and its fidelity to itself."""
        times = [self.timed(None, prompt, seed) for _ in range(self.config.repeats)]
        fid = self.scorer.score(ref, ref["images"], ref.get("latents"), prompt)
        run = {**ref, "policy": "NoCache()"}
        return self._record(key, None, pidx, prompt, seed, ref, run, times, times, fid)

    def method_record(self, key: str, ms: MethodSetting, pidx: int, prompt: str, seed: int, ref: Generation) -> dict[str, Any]:
        """One method x setting on one pair: an untimed run, then timed repeats interleaved with the reference's."""
        run = self.untimed(ms, prompt, seed)
        times: list[float] = []
        ref_times: list[float] = []
        for r in range(self.config.repeats):  # interleaved, alternating the order, to cancel machine drift
            if r % 2 == 0:
                ref_times.append(self.timed(None, prompt, seed))
                times.append(self.timed(ms, prompt, seed))
            else:
                times.append(self.timed(ms, prompt, seed))
                ref_times.append(self.timed(None, prompt, seed))
        fid = self.scorer.score(ref, run["images"], run["latents"], prompt)
        return self._record(key, ms, pidx, prompt, seed, ref, run, times, ref_times, fid)

    def _record(self, key: str, ms: MethodSetting | None, pidx: int, prompt: str, seed: int, ref: Generation, run: Generation,
                times: list[float], ref_times: list[float], fid: dict[str, Any]) -> dict[str, Any]:
        lat = statistics.median(times) if times else None
        ref_lat = statistics.median(ref_times) if ref_times else None
        rec = {**self.base_record(key, ms, pidx, prompt, seed), "policy": run["policy"], "nfe": run["nfe"],
               "ref_nfe": ref["nfe"], "flops": run["flops"], "ref_flops": ref["flops"], "flops_method": run["flops_method"],
               "latency_s": lat, "latency_repeats": times, "ref_latency_s": ref_lat, "ref_latency_repeats": ref_times,
               "latency_min_s": min(times, default=None), "ref_latency_min_s": min(ref_times, default=None),
               "speedup_nfe": _ratio(ref["nfe"], run["nfe"]), "speedup_flops": _ratio(ref["flops"], run["flops"]),
               "speedup_latency": _ratio(ref_lat, lat),
               "computed_steps": run["report"].get("computed_steps"), "num_steps": run["report"].get("num_steps")}
        if ms is None:  # the reference against itself: exactly 1, even where a cost is unknown
            rec.update(speedup_nfe=1.0, speedup_flops=1.0, speedup_latency=1.0 if times else None)
        else:
            rec.update(report=run["report"], denoiser_calls=run["denoiser_calls"])
        return {**rec, **fid, "finished": time.time()}


def effective_nfe(report: Any) -> int | None:
    """Denoiser evaluations a run really made: the block-stack runs of a block-level or external cache
    (``stack_runs``: a call that skips the stack is not an evaluation), else the denoiser forwards
    (``model_calls``), else the computed steps."""
    for name in ("stack_runs", "model_calls", "num_computed"):
        value = getattr(report, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return float(a) / float(b)
