"""A run setting's effect, read from benches that ran every setting with and without it on the same images.

``python scripts/paired_settings.py BENCH_FOLDER ... --key spike`` pairs, in each bench, the rows of one method
whose settings are the same but for ``--key`` (present in one, absent in the other), and prints per pair the mean
PSNR, calls and share of requested objects read right without and with it; then the mean PSNR change over all
pairs and at how many it is higher and lower (by more than 0.005 dB). Used for development checks, where a rule
written down before the runs reads that last line.

``--grid RUN.json ... --variant NAME`` reads runs of ``scripts/etc_plus_solvers.py`` instead, where the variant ran
on the same profile under its own method name (e.g. ``etc-plus-nospike`` with ``--spike-off``): per case, the
variant's front minus ETC+'s at 2x, 3x and 4x, and the same summary per model.

Usage: python scripts/paired_settings.py FOLDER [...] --key KEY [--method etc-plus] [--out FILE.md]
       python scripts/paired_settings.py --grid RUN.json [...] --variant etc-plus-nospike [--out FILE.md]
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

TIE = 0.005  # dB: a change smaller than this counts as neither higher nor lower


def pairs(path: str, key: str, method: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """``(without, with)`` summary rows of ``method`` in the bench ``path`` whose settings differ only by ``key``."""
    rows = [r for r in json.load(open(path))["summary"] if r["kind"] == "run" and r["method"] == method]
    base = {tuple(sorted(r["setting"].items())): r for r in rows if key not in r["setting"]}
    out = []
    for r in rows:
        if key in r["setting"]:
            rest = tuple(sorted((k, v) for k, v in r["setting"].items() if k != key))
            if rest in base:
                out.append((base[rest], r))
    return out


def _cell(row: dict[str, Any]) -> str:
    match = row.get("classifier_prompt_match")
    return f"{row['psnr']:.2f} dB, {row['nfe']:.1f} NFE" + ("" if match is None else f", {100 * match:.1f} %")


def table(folders: list[str], key: str, method: str) -> str:
    """The Markdown table of every pair and the summary line."""
    lines, changes, values = [], [], set()
    for folder in folders:
        for without, with_ in pairs(os.path.join(folder, "results.json"), key, method):
            change = with_["psnr"] - without["psnr"]
            changes.append(change)
            values.add(json.dumps(with_["setting"][key]))
            label = " ".join(f"{k}={v}" for k, v in without["setting"].items() if k != "profile")
            lines.append(f"| {folder.rstrip('/')} | {label} | {_cell(without)} | {_cell(with_)} | {change:+.2f} |")
    if not changes:
        raise SystemExit(f"no {method} settings with and without {key} in {', '.join(folders)}")
    given = f"{key}={values.pop()}" if len(values) == 1 else f"{key} set"
    summary = _summary(changes, given) + "."
    head = [f"| bench | setting | without {key} | {given} | change (dB) |", "|---|---|---|---|---|"]
    return "\n".join(head + lines) + "\n\n" + summary + "\n"


def _summary(changes: list[float], given: str) -> str:
    higher, lower = sum(c > TIE for c in changes), sum(c < -TIE for c in changes)
    return (f"{len(changes)} pairs: mean change {sum(changes) / len(changes):+.2f} dB with {given}, higher at "
            f"{higher}, lower at {lower}")


def grid_table(paths: list[str], variant: str, method: str = "etc-plus") -> str:
    """Per solver-grid case, ``variant``'s front minus ``method``'s at each speedup, and the summary per model."""
    lines = [f"| model | scheduler | steps | {method} 2x / 3x / 4x (dB) | {variant} | change |",
             "|---|---|---|---|---|---|"]
    by_model: dict[str, list[float]] = {}
    for path in paths:
        for case in json.load(open(path)):
            ours, other = case["fronts"].get(method, {}), case["fronts"].get(variant)
            if other is None:
                raise SystemExit(f"{path}: {case['model']} {case['scheduler']} {case['steps']} has no {variant} rows")
            keys = [k for k in ("2x", "3x", "4x") if ours.get(k) is not None and other.get(k) is not None]
            change = [other[k] - ours[k] for k in keys]
            by_model.setdefault(case["model"], []).extend(change)
            lines.append(f"| {case['model']} | {case['scheduler']} | {case['steps']} | "
                         + " / ".join(f"{ours[k]:.1f}" for k in keys) + " | "
                         + " / ".join(f"{other[k]:.1f}" for k in keys) + " | "
                         + " / ".join(f"{c:+.1f}" for c in change) + " |")
    summary = "".join(f"- {m}: {_summary(c, variant)}; worst {min(c):+.1f}\n" for m, c in sorted(by_model.items()))
    return "\n".join(lines) + "\n\n" + summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="*", help="bench folders (each with its results.json)")
    ap.add_argument("--key", default="", help="the setting whose effect is read")
    ap.add_argument("--method", default="etc-plus")
    ap.add_argument("--grid", nargs="+", default=[], help="solver-grid runs (JSON) instead of bench folders")
    ap.add_argument("--variant", default="", help="with --grid: the variant's method name in those runs")
    ap.add_argument("--out", default="", help="also write the table to this Markdown file")
    args = ap.parse_args()
    if bool(args.grid) == bool(args.folders) or (args.grid and not args.variant) or (args.folders and not args.key):
        ap.error("give bench folders with --key, or --grid runs with --variant")
    text = (grid_table(args.grid, args.variant, args.method) if args.grid
            else table(args.folders, args.key, args.method))
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
