"""Merging the per-process records of a sweep: the latest record of each expected run, one summary row per
method x setting, and the outputs written once (``results.json`` here; the table, CSV and plot by :mod:`.report`).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from .._files import atomic_write_text
from .records import SWEEP_FILE, read_errors, read_records, write_json_atomic
from .report import markdown, plot_pareto, title, write_csv


def _mean(values: list[Any]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _median(values: list[Any]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return float(np.median(vals)) if vals else None


def _ratio_of_sums(num: list[Any], den: list[Any]) -> float | None:
    pairs = [(a, b) for a, b in zip(num, den) if a is not None and b is not None]
    if not pairs or sum(b for _, b in pairs) == 0:
        return None
    return float(sum(a for a, _ in pairs) / sum(b for _, b in pairs))


def _quartiles(values: list[Any]) -> list[float] | None:
    """[first, third] quartile of the numbers among ``values`` (the spread of a wall-clock figure)."""
    import statistics

    nums = sorted(float(v) for v in values if v is not None)
    if len(nums) < 2:
        return [nums[0], nums[0]] if nums else None
    q1, _, q3 = statistics.quantiles(nums, n=4, method="inclusive")
    return [q1, q3]


def summarize(records: list[dict[str, Any]], grid: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per method x setting (reference first), averaged over the (prompt, seed) pairs.

    NFE and FLOPs speedups are ratios of sums over the pairs (total reference cost / total method cost). Wall-clock
    numbers are medians over the pairs, robust to a pair timed while the machine was busy: ``latency_s`` is the
    median of the runs' median latencies, ``speedup_latency`` the median of the per-pair speedups (each against
    the reference timed interleaved with that run); ``speedup_latency_total`` is the ratio of sums, for reference.
    PSNR is the mean over pairs with a finite PSNR; the pairs whose image equals the reference (PSNR inf) are
    counted in ``psnr_identical``.
    """
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    order = [("reference", "none", "reference")] + [("run", g["method"], g["label"]) for g in grid]
    for rec in records:
        groups.setdefault((rec["kind"], rec["method"], rec["setting_label"]), []).append(rec)
    rows = []
    for kind, method, label in order:
        recs = groups.get((kind, method, label))
        if not recs:
            continue
        psnrs = [r.get("psnr") for r in recs if r.get("psnr") is not None]
        finite = [p for p in psnrs if math.isfinite(p)]
        setting = next((g["setting"] for g in grid if g["method"] == method and g["label"] == label), {})
        rows.append({
            "kind": kind, "method": method, "setting_label": label, "setting": setting, "pairs": len(recs),
            "nfe": _mean([r.get("nfe") for r in recs]),
            "speedup_nfe": _ratio_of_sums([r.get("ref_nfe") for r in recs], [r.get("nfe") for r in recs]),
            "flops": _mean([r.get("flops") for r in recs]),
            "speedup_flops": _ratio_of_sums([r.get("ref_flops") for r in recs], [r.get("flops") for r in recs]),
            "latency_s": _median([r.get("latency_s") for r in recs]),
            "ref_latency_s": _median([r.get("ref_latency_s") for r in recs]),
            "speedup_latency": _median([r.get("speedup_latency") for r in recs]),
            "speedup_latency_iqr": _quartiles([r.get("speedup_latency") for r in recs]),
            "speedup_latency_total": _ratio_of_sums([r.get("ref_latency_s") for r in recs], [r.get("latency_s") for r in recs]),
            "ssim": _mean([r.get("ssim") for r in recs]),
            "psnr": _mean(finite) if finite else (math.inf if psnrs else None),
            "psnr_identical": len(psnrs) - len(finite),
            "lpips": _mean([r.get("lpips") for r in recs]),
            "clip_score": _mean([r.get("clip_score") for r in recs]),
            "classifier_agreement": _mean([r.get("classifier_agreement") for r in recs]),
            "classifier_prompt_match": _mean([r.get("classifier_prompt_match") for r in recs]),
            "latent_rel_l2": _mean([r.get("latent_rel_l2") for r in recs]),
            "flops_method": sorted({str(r.get("flops_method")) for r in recs}),
        })
    return rows


_SAME_REFERENCE = ("model", "fingerprint", "steps", "guidance", "device")


def _earlier_runs(records: list[dict[str, Any]], sweep: dict[str, Any],
                  latest: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The completed runs of earlier sweeps on this folder (same model, weights, steps, guidance and device) that
    the latest sweep does not run again: the newest record of each (kind, method, setting, prompt, seed)."""
    config = sweep["config"]
    now = {"model": config.get("model"), "fingerprint": sweep.get("fingerprint"), "steps": config.get("steps"),
           "guidance": config.get("guidance"), "device": config.get("device")}
    grid = {(g["method"], g["label"]) for g in config["grid"]}
    pairs = {(p, s) for p in config.get("prompts", []) for s in config.get("seeds", [])}
    covered = lambda r: (r["prompt"], r["seed"]) in pairs and (  # noqa: E731 - the latest sweep runs it
        r["kind"] == "reference" or (r["method"], r["setting_label"]) in grid)
    newest: dict[tuple[Any, ...], dict[str, Any]] = {}
    for rec in records:
        if rec["key"] in latest or any(rec.get(k) != v for k, v in now.items()) or covered(rec):
            continue
        ident = (rec["kind"], rec["method"], rec["setting_label"], rec["prompt"], rec["seed"])
        if ident not in newest or rec.get("finished", 0) >= newest[ident].get("finished", 0):
            newest[ident] = rec
    return list(newest.values())


def merge(out: Path) -> dict[str, Any]:
    """Read ``out/sweep.json`` and every JSONL shard of ``out/runs``; write the four outputs; return results.json's content."""
    out = Path(out)
    sweep_path = out / SWEEP_FILE
    if not sweep_path.is_file():
        raise FileNotFoundError(f"{sweep_path} not found: is {out} the --out folder of an `etcdiff bench` sweep?")
    sweep = json.loads(sweep_path.read_text())
    expected = list(sweep.get("expected_keys", []))
    wanted = set(expected)
    latest: dict[str, dict[str, Any]] = {}
    all_records = read_records(out)
    for rec in all_records:
        if rec["key"] in wanted and (rec["key"] not in latest or rec.get("finished", 0) >= latest[rec["key"]].get("finished", 0)):
            latest[rec["key"]] = rec
    grid = list(sweep["config"]["grid"])
    earlier = _earlier_runs(all_records, sweep, latest)
    for rec in earlier:
        if not any(g["method"] == rec["method"] and g["label"] == rec["setting_label"] for g in grid) \
                and rec["kind"] == "run":
            grid.append({"method": rec["method"], "setting": rec.get("setting") or {}, "label": rec["setting_label"]})
    order = {k: i for i, k in enumerate(expected)}
    latest.update({rec["key"]: rec for rec in earlier})
    records = sorted(latest.values(), key=lambda r: (r["prompt_index"], r["seed"], r["kind"] != "reference",
                                                     order.get(r["key"], len(order)), r["method"], r["setting_label"]))
    rows = summarize(records, grid)
    per_call: dict[str, int] = {}
    for rec in records:
        per_call.update(rec.get("per_call_flops") or {})
    errors: dict[str, dict[str, Any]] = {}
    for err in read_errors(out):
        if err.get("key") in wanted and err["key"] not in latest:
            errors[err["key"]] = err
    hosts = sorted({(r.get("host"), r.get("rank"), r.get("torch_threads")) for r in records}, key=str)
    results = {
        "config": sweep["config"], "sweep": sweep.get("sweep"), "model_fingerprint": sweep.get("fingerprint"),
        "world_size": sweep.get("world_size"), "versions": sweep.get("versions"), "machine": sweep.get("machine"),
        "processes": [{"host": h, "rank": r, "torch_threads": t} for h, r, t in hosts],
        "metrics": sweep.get("metrics"), "per_call_flops": per_call,
        "started": sweep.get("started"), "merged": time.time(),
        "elapsed_s": (time.time() - sweep["started"]) if sweep.get("started") else None,
        "complete": all(k in latest for k in expected), "missing_keys": [k for k in expected if k not in latest],
        "earlier_runs": len(earlier),
        "errors": [{k: e.get(k) for k in ("key", "method", "setting_label", "prompt", "seed", "error")} for e in errors.values()],
        "summary": rows, "runs": records,
    }
    write_json_atomic(out / "results.json", results)
    write_csv(out / "results.csv", records)
    atomic_write_text(out / "report.md", markdown(results))
    plot_pareto(rows, out / "pareto.png", title=title(results))
    return results
