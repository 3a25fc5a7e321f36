"""The solver grid's results as tables: fronts per method, margins over the best other step method, the served
profiles beside native ones, and the merges of several runs (``scripts/etc_plus_solvers.py`` writes and reads them).
"""

from __future__ import annotations

import json
import os
from typing import Any

from etcdiff.bench.front import front_at

SPEEDUPS = (2.0, 3.0, 4.0)


def served_markdown(results: list[dict[str, Any]], native: list[dict[str, Any]]) -> str:
    """Served fronts (the surrogate's calibration, then the resampled profile) beside the native calibration's
    (etc-plus rows of ``native``, the main table's JSON)."""
    nat = {(r["model"], r["scheduler"], r["steps"]): r["fronts"].get("etc-plus", {}) for r in native}
    lines = ["| model | scheduler | steps | profile fitted at | " + " | ".join(
        f"{s:g}x served / resampled / native (served - native)" for s in SPEEDUPS) + " |",
        "|---|---|---|---|" + "---|" * len(SPEEDUPS)]
    for res in results:
        src = res["source_steps"]
        mine = res["fronts"].get(f"etc-plus-from-{src}", {})
        old = res["fronts"].get(f"etc-plus-resampled-from-{src}", {})
        ref = nat.get((res["model"], res["scheduler"], res["steps"]), {})
        cells = []
        for s in SPEEDUPS:
            a, o, b = (d.get(f"{s:g}x") for d in (mine, old, ref))
            text = " / ".join("n/a" if v is None else f"{v:.1f}" for v in (a, o, b))
            cells.append(text + ("" if a is None or b is None else f" ({a - b:+.1f})"))
        lines.append(f"| {res['model']} | {res['scheduler']} | {res['steps']} | {src} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def fronts(rows: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    out = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        if method.endswith("-tol"):
            continue
        pts = [(r["speedup"], r["psnr"]) for r in rows if r["method"] == method]
        out[method] = {f"{s:g}x": front_at(pts, s) for s in SPEEDUPS}
    return out


def margin(fr: dict[str, dict[str, float | None]], ours: str, key: str) -> tuple[float | None, str | None]:
    others = {m: v[key] for m, v in fr.items() if not m.startswith("etc-plus") and v[key] is not None}
    mine = fr.get(ours, {}).get(key)
    if mine is None or not others:
        return None, None
    best = max(others, key=others.get)
    return mine - others[best], best


def markdown(results: list[dict[str, Any]]) -> str:
    lines = ["| model | scheduler | steps | " + " | ".join(f"{s:g}x new / old (vs best other)" for s in SPEEDUPS)
             + " | tolerance: within target (new / old / adapt / off, those run) | worst drop +1 call (same order) |",
             "|---|---|---|" + "---|" * len(SPEEDUPS) + "---|---|"]
    for res in results:
        fr = res["fronts"]
        cells = []
        for s in SPEEDUPS:
            key = f"{s:g}x"
            new, best = margin(fr, "etc-plus", key)
            old, _ = margin(fr, "etc-plus-old", key)
            cells.append("n/a" if new is None else f"{new:+.1f} / {'n/a' if old is None else f'{old:+.1f}'} ({best})")
        tol = {r["method"]: r for r in res["rows"] if r["method"].endswith("-tol")}
        kinds = ("etc-plus", "etc-plus-old", "etc-plus-adapt", "etc-plus-off")
        tcell = " / ".join(f"{100 * tol[k + '-tol']['within']:.0f}%" for k in kinds if k + "-tol" in tol)
        ex = res.get("extra", {})
        dcell = " / ".join("n/a" if ex.get(k, {}).get("worst_drop") is None else f"{ex[k]['worst_drop']:.1f} dB"
                           for k in kinds if k in ex)
        lines.append(f"| {res['model']} | {res['scheduler']} | {res['steps']} | " + " | ".join(cells)
                     + f" | {tcell} | {dcell or 'n/a'} |")
    lines += ["", "Fronts (dB):", ""]
    for res in results:
        lines += [f"**{res['model']}, {res['scheduler_class']}, {res['steps']} steps**", "",
                  "| method | " + " | ".join(f"{s:g}x" for s in SPEEDUPS) + " |", "|---|" + "---|" * len(SPEEDUPS)]
        lines += [f"| {m} | " + " | ".join("n/a" if v is None else f"{v:.1f}" for v in f.values()) + " |"
                  for m, f in res["fronts"].items()]
        lines.append("")
    return "\n".join(lines)


def with_previous(results: list[dict[str, Any]], previous: list[dict[str, Any]]) -> None:
    """Each case's etc-plus of an earlier run (same model, scheduler, steps) as its ``etc-plus-old``: front,
    tolerance row and ladder, in place of any the case had."""
    earlier = {(r["model"], r["scheduler"], r["steps"]): r for r in previous}
    for res in results:
        prev = earlier.get((res["model"], res["scheduler"], res["steps"]))
        res["rows"] = [r for r in res["rows"] if not r["method"].startswith("etc-plus-old")]
        res["fronts"].pop("etc-plus-old", None)
        res.get("extra", {}).pop("etc-plus-old", None)
        if prev is None or "etc-plus" not in prev["fronts"]:
            continue
        res["fronts"]["etc-plus-old"] = prev["fronts"]["etc-plus"]
        res["rows"] += [{**r, "method": "etc-plus-old-tol"} for r in prev["rows"] if r["method"] == "etc-plus-tol"]
        if "etc-plus" in prev.get("extra", {}):
            res.setdefault("extra", {})["etc-plus-old"] = prev["extra"]["etc-plus"]


def combined(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One case per (model, scheduler, steps): where a case comes twice (a later run of some methods only), the
    later one's methods replace the earlier one's rows, ladder and calibration record, and the rest is kept, with
    the fronts of methods that have no rows (an earlier run's etc-plus as ``etc-plus-old``: :func:`with_previous`)."""
    cases: dict[tuple, dict[str, Any]] = {}
    for res in results:
        key = (res["model"], res["scheduler"], res["steps"])
        if key not in cases:
            cases[key] = res
            continue
        old = cases[key]
        methods = {r["method"].removesuffix("-tol") for r in res["rows"]}
        rows = [r for r in old["rows"] if r["method"].removesuffix("-tol") not in methods] + res["rows"]
        extra = {**{k: v for k, v in old.get("extra", {}).items() if k not in methods}, **res.get("extra", {})}
        cases[key] = {**old, **res, "rows": rows, "extra": extra, "fronts": {**old.get("fronts", {}), **fronts(rows)}}
    return list(cases.values())


def from_log(path: str) -> list[dict[str, Any]]:
    """The cases of a run's printed rows (for a run that stopped before writing its JSON): rows, tolerance and
    ladder lines as :func:`case` prints them."""
    import re

    row_re = re.compile(r"^  (\S+)\s+(\S+)\s+(\d+) (\S+)\s+(.+?)\s+calls\s+([\d.]+) \(max\s+(\d+)\) x([\d.]+)\s+"
                        r"PSNR\s+([\d.]+) \(min\s+([\d.]+)\)")
    cases: dict[tuple, dict[str, Any]] = {}
    last = None
    with open(path) as f:
        for line in f:
            hit = row_re.match(line)
            if hit:
                model, kind, steps, method, setting = hit.group(1, 2, 3, 4, 5)
                res = cases.setdefault((model, kind, int(steps)), {
                    "model": model, "scheduler": kind, "scheduler_class": kind, "steps": int(steps), "rows": [],
                    "extra": {}, "from_log": path})
                last = {"method": method, "setting": setting.strip(), "calls": float(hit.group(6)),
                        "max_calls": int(hit.group(7)), "speedup": float(hit.group(8)), "psnr": float(hit.group(9)),
                        "psnr_min": float(hit.group(10))}
                res["rows"].append(last)
                continue
            tol = re.match(r"^    tolerance target ([\d.e-]+): within (\d+)%, p90 error ([\d.e-]+)", line)
            if tol and last is not None:
                last.update(target=float(tol.group(1)), within=float(tol.group(2)) / 100,
                            achieved_p90=float(tol.group(3)))
                continue
            lad = re.match(r"^    ladder (.+); worst drop when one more call is given: (-?[\d.]+) dB", line)
            if lad and last is not None:
                method = last["method"].removesuffix("-tol")
                res["extra"][method] = {"ladder": {int(a): float(b) for a, b in
                                                   (x.split(":") for x in lad.group(1).split())},
                                        "worst_drop": float(lad.group(2))}
    for res in cases.values():
        res["fronts"] = fronts(res["rows"])
    return list(cases.values())


def write(out: str, tag: str, results: list[dict[str, Any]]) -> None:
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"{tag}.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)
    with open(os.path.join(out, f"{tag}.md"), "w") as f:
        f.write(markdown(results) + "\n")


__all__ = ["SPEEDUPS", "combined", "fronts", "from_log", "margin", "markdown", "served_markdown",
           "with_previous", "write"]
