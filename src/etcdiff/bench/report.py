"""The outputs of a merged sweep besides ``results.json``: ``results.csv``, the ``report.md`` table and ``pareto.png``."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from .flops import flops_unit
from .records import json_default

CSV_FIELDS = [
    "key", "kind", "method", "setting_label", "setting", "prompt_index", "prompt", "seed", "steps", "guidance", "repeats",
    "nfe", "ref_nfe", "speedup_nfe", "flops", "ref_flops", "speedup_flops", "flops_method",
    "latency_s", "ref_latency_s", "speedup_latency", "ssim", "psnr", "lpips", "clip_score",
    "classifier_agreement", "classifier_prompt_match", "latent_rel_l2", "computed_steps", "policy", "rank", "host",
    "torch_threads", "fingerprint", "model", "device",
]


def write_csv(path: Path, records: list[dict[str, Any]]) -> None:
    """One row per run, the columns of ``CSV_FIELDS``."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for rec in records:
            row = dict(rec)
            for k in ("setting", "computed_steps"):
                row[k] = json.dumps(rec.get(k), default=json_default)
            w.writerow(row)


# -- Markdown ------------------------------------------------------------------------------------------------------
def _f(v: Any, fmt: str = "{:.3f}", na: str = "n/a") -> str:
    if v is None:
        return na
    if isinstance(v, float) and math.isinf(v):
        return "∞"
    return fmt.format(v)


def done_pairs(results: dict[str, Any]) -> tuple[int, int]:
    """(pairs with every run done, pairs in the sweep)."""
    c = results["config"]
    total = len(c["prompts"]) * len(c["seeds"])
    if results.get("complete"):
        return total, total
    per_pair: dict[tuple[str, int], int] = {}
    for rec in results.get("runs", []):
        if rec.get("kind") == "run":
            pair = (str(rec.get("prompt")), int(rec.get("seed", 0)))
            per_pair[pair] = per_pair.get(pair, 0) + 1
    return sum(n >= len(c["grid"]) for n in per_pair.values()), total


def _latency_cell(r: dict[str, Any]) -> str:
    """The wall-clock speedup with its spread over the pairs, and † where it exceeds the reduction in work by
    more than 10 % (the machine's load changed between runs: not trustworthy)."""
    if r.get("speedup_latency") is None:
        return "n/a"
    cell = f"{r['speedup_latency']:.2f}×"
    iqr = r.get("speedup_latency_iqr")
    if iqr and r["kind"] != "reference":
        cell += f" ({iqr[0]:.2f}–{iqr[1]:.2f})"
    work = max([x for x in (r.get("speedup_nfe"), r.get("speedup_flops")) if x] or [0.0])
    if work and r["speedup_latency"] > 1.1 * work:
        cell += " †"
    return cell


def title(results: dict[str, Any]) -> str:
    """``model: N steps, P prompts x S seeds``, and ``PARTIAL`` with the count done when runs are missing."""
    c = results["config"]
    text = f"{c['model']}: {c['steps']} steps, {len(c['prompts'])} prompts x {len(c['seeds'])} seeds"
    if not results.get("complete"):
        done, total = done_pairs(results)
        text += f" (PARTIAL: {len(results.get('missing_keys', []))} runs missing, {done} of {total} pairs complete)"
    return text


def markdown(results: dict[str, Any]) -> str:
    """``report.md``: how the sweep was run, then one table row per method x setting."""
    c = results["config"]
    rows = results["summary"]
    unit = flops_unit(r["flops"] for r in rows)
    scale = {"T": 1e12, "G": 1e9, "M": 1e6}[unit]
    has_clip = any(r["clip_score"] is not None for r in rows)
    has_match = any(r["classifier_prompt_match"] is not None for r in rows)
    has_agreement = any(r["classifier_agreement"] is not None for r in rows)
    header = ["Method", "setting", "NFE", "speedup (NFE)", f"FLOPs ({unit})", "speedup (FLOPs)", "latency (s)",
              "speedup (latency)", "SSIM ↑", "PSNR ↑", "LPIPS ↓"] + (["classifier agreement ↑"] if has_agreement else []) \
        + (["prompt match ↑"] if has_match else []) + (["CLIP score ↑"] if has_clip else [])
    lines = [f"# etcdiff bench: {title(results)}", ""]
    guidance = c["guidance"] if c["guidance"] is not None else "pipeline default"
    lines += [
        f"- model: `{c['model']}` (weights fingerprint `{results.get('model_fingerprint')}`), device {c['device']}, "
        f"guidance {guidance}, steps {c['steps']}",
        f"- prompts: {len(c['prompts'])} ({', '.join(repr(p) for p in c['prompts'][:10])}{' ...' if len(c['prompts']) > 10 else ''}); "
        f"seeds: {', '.join(map(str, c['seeds']))}",
        (f"- latency: per run, the median of {c['repeats']} timed repeats after an untimed run, interleaved with as "
         "many repeats of the reference; in the table, the median over the pairs of the latencies and of the per-pair "
         "speedups. " if c["repeats"] else "- latency: not measured (--repeats 0: each run made once, untimed). ")
        + "NFE and FLOPs speedups: total reference cost over total method cost across the pairs",
        f"- FLOPs: denoiser only, torch FlopCounterMode ({c['flops']}: "
        + ("one forward counted per input shape, times the model calls made" if c["flops"] == "per-call" else "every call counted")
        + "; block-level methods are always counted call by call)",
        f"- processes: {results.get('world_size')}; " + ", ".join(
            f"{p['host']} rank {p['rank']} ({p['torch_threads']} threads)" for p in results.get("processes", [])),
    ]
    versions = results.get("versions") or {}
    lines.append("- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    m = results.get("machine") or {}
    lines.append(f"- machine: {m.get('processor')}, {m.get('cpu_count')} CPUs, {m.get('platform')}" + (f", {m['cuda']}" if m.get("cuda") else ""))
    if results.get("elapsed_s") is not None:
        lines.append(f"- wall time of the sweep (this invocation): {results['elapsed_s']:.0f} s")
    lines += ["", "| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|"]
    last_method = None
    for r in rows:
        name = "full steps (reference)" if r["kind"] == "reference" else r["method"]
        show = name if name != last_method else ""
        last_method = name
        psnr = _f(r["psnr"], "{:.2f}")
        if r["psnr_identical"] and r["psnr"] is not None and math.isfinite(r["psnr"]):
            psnr += f" ({r['psnr_identical']} identical)"
        cells = [show, "–" if r["kind"] == "reference" else r["setting_label"], _f(r["nfe"], "{:.1f}"),
                 _f(r["speedup_nfe"], "{:.2f}×"), _f(None if r["flops"] is None else r["flops"] / scale, "{:.3g}"),
                 _f(r["speedup_flops"], "{:.2f}×"), _f(r["latency_s"], "{:.3f}"), _latency_cell(r),
                 _f(r["ssim"], "{:.4f}"), psnr, _f(r["lpips"], "{:.4f}")]
        if has_agreement:
            cells.append(_f(r["classifier_agreement"], "{:.3f}"))
        if has_match:
            cells.append(_f(r["classifier_prompt_match"], "{:.1%}"))
        if has_clip:
            cells.append(_f(r["clip_score"], "{:.2f}"))
        lines.append("| " + " | ".join(cells) + " |")
    done, total = done_pairs(results)
    over = f"{total} (prompt, seed) pairs" if done == total else \
        f"the pairs done so far (each row's own count; {done} of {total} pairs complete for every setting)"
    lines += ["", f"Averaged over {over}; n/a: not measured (see below).", ""]
    if c["repeats"]:
        lines.append("Wall-clock speedups: median over the pairs (interquartile range); † marks one that exceeds the "
                     "reduction in calls or FLOPs by more than 10 %, which no method can cause: the machine's load "
                     "changed between runs, so that figure is not trustworthy.")
    lines += ["", "Metrics:"]
    for k, v in (results.get("metrics") or {}).items():
        lines.append(f"- {k}: {v}")
    if has_match:
        lines += ["", "Prompt match: digits, the classifier reads the prompted digit; scenes, the requested objects "
                  "read back right (colour, shape and cell)."]
    idle = [r for r in rows if r["kind"] == "run" and r["nfe"] is not None and r["speedup_nfe"] is not None
            and r["speedup_nfe"] <= 1.0]
    notes = [(r, _no_reuse(r, c["steps"])) for r in idle]
    if any(n for _, n in notes):
        lines += ["", "Settings that reused nothing (every step ran the model):"]
        lines += [f"- {r['method']} {r['setting_label']}: {n}" for r, n in notes if n]
    if results.get("errors"):
        lines += ["", "Runs that raised (they run again on the next sweep over this folder):"]
        seen = set()
        for e in results["errors"]:
            what = (e["method"], e["setting_label"], e["error"])
            if what not in seen:
                seen.add(what)
                n = sum((x["method"], x["setting_label"], x["error"]) == what for x in results["errors"])
                lines.append(f"- {e['method']} {e['setting_label']} ({n} of the pairs): {e['error']}")
    if not results.get("complete"):
        lines += ["", f"**Incomplete:** {len(results.get('missing_keys', []))} runs missing; run the same command again to finish "
                  "(finished runs are kept), or `etcdiff bench --merge DIR` once other processes are done."]
    return "\n".join(lines) + "\n"


def _no_reuse(row: dict[str, Any], steps: int) -> str | None:
    """The note of a row whose method made as many calls as the reference (it skipped no step)."""
    from ..registry import no_reuse_note

    return no_reuse_note(row["method"], row.get("setting") or {}, steps, steps)


# -- the plot ------------------------------------------------------------------------------------------------------
def _short(label: str) -> str:
    """``threshold=0.05`` -> ``0.05``; a path value -> its file stem."""
    value = label.split("=", 1)[-1]
    return Path(value).stem if "/" in value else value


def plot_pareto(rows: list[dict[str, Any]], path: Path, title: str = "") -> None:
    """Speedup (NFE and wall-clock) against PSNR and SSIM: one line per method over its settings."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 7.5))
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2, squeeze=False)
    runs = [r for r in rows if r["kind"] == "run"]
    methods = list(dict.fromkeys(r["method"] for r in runs))
    palette = [c for i, c in enumerate(matplotlib.colormaps["tab20"].colors) if i % 2 == 0] + \
        [c for i, c in enumerate(matplotlib.colormaps["tab20"].colors) if i % 2 == 1]
    style = {m: {"color": "black", "lw": 2.2, "zorder": 5} if m == "etc" else {"color": palette[i % len(palette)], "lw": 1.2}
             for i, m in enumerate(methods)}
    for col, (xkey, xlabel) in enumerate((("speedup_nfe", "speedup (NFE)"), ("speedup_latency", "speedup (wall-clock)"))):
        for row_i, (ykey, ylabel) in enumerate((("psnr", "PSNR (dB) ↑"), ("ssim", "SSIM ↑"))):
            ax = axes[row_i][col]
            for method in methods:
                pts = [(r[xkey], r[ykey], r["setting_label"]) for r in runs if r["method"] == method
                       and r[xkey] is not None and r[ykey] is not None and math.isfinite(r[ykey])]
                pts.sort()
                if not pts:
                    continue
                xs, ys, labels = zip(*pts)
                ax.plot(xs, ys, marker="o", ms=4, label=method, **style[method])
                if method == "etc":  # the settings of our own line; the table has every other one
                    for x, y, lab in pts:
                        ax.annotate(_short(lab), (x, y), textcoords="offset points", xytext=(4, 3), fontsize=6)
            if xkey == "speedup_latency" and all(r[xkey] is None for r in runs):
                ax.text(0.5, 0.5, "wall-clock not measured\n(--repeats 0)", ha="center", va="center",
                        transform=ax.transAxes, color="gray")
            ax.axvline(1.0, color="gray", lw=0.8, ls=":")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
    if methods:
        legend: dict[str, Any] = {}
        for ax in (a for row in axes for a in row):  # a method with no finite PSNR still has an SSIM line
            for handle, label in zip(*ax.get_legend_handles_labels()):
                legend.setdefault(label, handle)
        fig.legend(list(legend.values()), list(legend), loc="center right", fontsize=8, frameon=False)
    fig.subplots_adjust(right=0.84)
    fig.suptitle(f"etcdiff bench — {title}" if title else "etcdiff bench", fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    fig.savefig(path, dpi=110)
