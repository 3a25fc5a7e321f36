"""Items 2 and 3 of issue 25 on a pipeline model, from ``etcdiff bench`` folders (``docs/etc-plus/ladder-tolerance/
run.sh``): each folder benched one ETC+ profile at every budget from N/5 to N/2 calls and in tolerance mode.

- **Budget ladder:** mean PSNR (dB, against the full-step image; identical images count as 100 dB) at each budget,
  and the worst drop when a budget is given one more call (item 2: at most 1 dB), with its standard error over the
  images (paired image by image: how much of the drop the images' own spread could make). Each drop is taken
  over the images both budgets ran; budgets that lack some image (a failed run) are said and recorded.
- **Tolerance:** each image's final-latent error, RMS of (accelerated - full-step latents), against the profile's
  target (``profile["tolerance"]``, an RMS in the same units); the share within it (item 3: at least 90 %), the
  90th percentile of the errors, the calls made and the PSNR. The bench keeps each run's relative latent error
  (``latent_rel_l2``) and the full-step latents (``reference/``), whose RMS turns it into that error. Beside them,
  how many calibration runs the profile's tolerance check saw (``tolerance_check["runs"]``; "held-out only" for a
  profile made before the probed runs were checked too) and the scale it kept.

Writes ``etc_plus_ladder_tolerance.json`` and ``.md`` (other names: ``--name``) into ``--out`` (default: print
only). With ``--previous JSON`` (a table this script wrote), the cases no folder measured again are carried from it
and marked so (the bench's per-run records are not committed, so a table made again from some folders keeps the
others this way).

Usage: python scripts/etc_plus_ladder_tolerance.py [--out docs/etc-plus] [--previous JSON] FOLDER ...
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from etcdiff.bench.records import load_reference, read_records, reference_path, runs_dir

MAX_DROP_DB = 1.0  # item 2
MIN_WITHIN = 0.9  # item 3
CAP_DB = 100.0  # PSNR of an identical image, as scripts/etc_plus_solvers.py counts it


def _records(folder: Path) -> list[dict[str, Any]]:
    """The bench's per-run records (:func:`etcdiff.bench.records.read_records`)."""
    if not runs_dir(folder).is_dir():
        raise SystemExit(f"{folder}: no runs/ folder (the bench's per-run records): run the bench there first.")
    return read_records(folder)


def _reference_rms(folder: Path) -> dict[tuple[str, int], float]:
    """(prompt, seed) -> RMS of the full-step final latents (:func:`etcdiff.bench.records.load_reference`)."""
    out = {}
    for path in sorted(reference_path(folder, "*").parent.glob("*.npz")):
        ref = load_reference(folder, path.stem)
        if ref is not None and ref["latents"] is not None:
            out[(str(ref["prompt"]), int(ref["seed"]))] = float(ref["latents"].double().pow(2).mean().sqrt())
    if not out:
        raise SystemExit(f"{folder}: no full-step latents under reference/: run the bench there first.")
    return out


def paired_drops(ladder: dict[int, dict[Any, float]]) -> dict[int, dict[Any, float]]:
    """budget -> image -> PSNR lost when that budget gets one more call, over the images both budgets ran."""
    return {b: {k: v - ladder[b + 1][k] for k, v in images.items() if k in ladder.get(b + 1, {})}
            for b, images in ladder.items()}


def check(folder: Path) -> dict[str, Any]:
    """The ladder and the tolerance of the one ETC+ profile benched in ``folder``."""
    config = json.loads((folder / "results.json").read_text())["config"]
    runs = [r for r in _records(folder) if r.get("kind") == "run" and r.get("method") == "etc-plus"]
    profiles = {r["setting"].get("profile") for r in runs}
    if len(profiles) != 1:
        raise SystemExit(f"{folder}: expected one ETC+ profile, found {sorted(map(str, profiles))}.")
    profile_path = profiles.pop()
    profile = json.loads(Path(profile_path).read_text())["settings"]["profile"]
    ladder: dict[int, dict[tuple[str, int], float]] = defaultdict(dict)  # budget -> (prompt, seed) -> PSNR
    made: dict[int, list[int]] = defaultdict(list)
    tol = []
    for r in runs:
        calls = r["setting"].get("calls")
        if calls is None:
            tol.append(r)
        else:
            ladder[int(calls)][(str(r["prompt"]), int(r["seed"]))] = min(float(r["psnr"]), CAP_DB)
            made[int(calls)].append(int(r["report"]["num_computed"]))
    psnr = {b: statistics.mean(v.values()) for b, v in sorted(ladder.items())}
    images = {k for v in ladder.values() for k in v}
    incomplete = sorted(b for b, v in ladder.items() if v.keys() != images)  # a run failed or is still missing
    if incomplete:
        print(f"{folder}: budgets {incomplete} lack some of the {len(images)} images; each drop for one more call "
              "is taken over the images both budgets ran", file=sys.stderr)
    pairs = paired_drops(dict(ladder))
    drops = {b: statistics.mean(d.values()) for b, d in pairs.items() if d}  # psnr[b] - psnr[b + 1] when complete
    worst = max(drops, key=lambda b: drops[b]) if drops else None
    paired = [] if worst is None else list(pairs[worst].values())
    rms = _reference_rms(folder)
    target = float(profile["tolerance"])
    errors = [float(r["latent_rel_l2"]) * rms[(str(r["prompt"]), int(r["seed"]))] for r in tol]
    return {
        "folder": str(folder), "seeds": sorted(int(x) for x in config.get("seeds", [])),
        "model": config["model"], "scheduler": (profile.get("scheduler") or {}).get("class"),
        "steps": int(config["steps"]), "profile": profile_path, "images": len(tol),
        "ladder_psnr": {str(b): round(v, 2) for b, v in psnr.items()},
        "ladder_calls_made": {str(b): round(statistics.mean(made[b]), 2) for b in psnr},
        "worst_drop": None if worst is None else round(drops[worst], 2),
        "worst_drop_at": worst,
        "incomplete_budgets": incomplete,
        # the standard error of that drop over the images, paired image by image (the images' own spread)
        "worst_drop_se": round(statistics.stdev(paired) / len(paired) ** 0.5, 2) if len(paired) >= 2 else None,
        "tolerance_target": target,
        "check_runs": (profile.get("tolerance_check") or {}).get("runs"),  # absent: a profile of before the probed
        "tolerance_scale": profile.get("tolerance_scale"),  # runs were checked (the choice's held-out runs only)
        "tolerance_target_relative": (round(target / float(profile["final_rms"]), 4) if profile.get("final_rms")
                                      else None),
        "within": sum(e <= target for e in errors) / len(errors) if errors else None,
        "achieved_p90": float(np.quantile(errors, 0.9)) if errors else None,
        "achieved_median": float(np.median(errors)) if errors else None,
        "tolerance_calls": statistics.mean(int(r["report"]["num_computed"]) for r in tol) if tol else None,
        "tolerance_psnr": statistics.mean(min(float(r["psnr"]), CAP_DB) for r in tol) if tol else None,
    }


def _case(c: dict[str, Any]) -> tuple[str, str, int]:
    """A table row's key: model, scheduler, steps."""
    return c["model"], str(c["scheduler"]), int(c["steps"])


def markdown(cases: list[dict[str, Any]]) -> str:
    lines = ["| model | scheduler | steps | images | calibration's check: runs, scale | tolerance: target / p90 "
             "achieved (RMS) | within target | calls, PSNR in tolerance mode | worst drop +1 call ± its standard "
             "error over the images (at calls) | PSNR from N/5 to N/2 calls |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for c in cases:
        carried = " (carried)" if c.get("carried") else ""
        within = "n/a" if c["within"] is None else f"{100 * c['within']:.0f} %"
        flag = "" if c["within"] is None or c["within"] >= MIN_WITHIN else " (under 90 %)"
        se = "" if c.get("worst_drop_se") is None else f" ± {c['worst_drop_se']:.2f}"
        drop = "n/a" if c["worst_drop"] is None else f"{c['worst_drop']:.2f}{se} dB ({c['worst_drop_at']} -> " \
            f"{c['worst_drop_at'] + 1})" + (" (over 1 dB)" if c["worst_drop"] > MAX_DROP_DB else "")
        ladder = " ".join(f"{b}:{v:.1f}" for b, v in c["ladder_psnr"].items())
        runs = "held-out only" if c.get("check_runs") is None else f"{c['check_runs']}"
        scale = "" if c.get("tolerance_scale") is None else f", {c['tolerance_scale']:.2f}"
        lines.append(f"| {c['model']} | {c['scheduler']} | {c['steps']}{carried} | {c['images']} | {runs}{scale} | "
                     f"{c['tolerance_target']:.4g}"
                     f" / {c['achieved_p90']:.4g} | {within}{flag} | {c['tolerance_calls']:.1f}, "
                     f"{c['tolerance_psnr']:.1f} dB | {drop} | {ladder} |")
    held = [c for c in cases if c["within"] is not None]
    dropped = [c for c in cases if c["worst_drop"] is not None]
    over = sum(c["worst_drop"] > MAX_DROP_DB for c in dropped)
    lines += ["", f"Tolerance held (at least 90 % within) in {sum(c['within'] >= MIN_WITHIN for c in held)} of "
              f"{len(held)} cases; one more call cost over 1 dB in {over} of {len(dropped)}."]
    if any(c.get("carried") for c in cases):
        lines += ["", "(carried): not measured again here; the row of the previous table, made from its own bench "
                  "folder and profile."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+", type=Path, help="bench output folders (one ETC+ profile each)")
    ap.add_argument("--out", default="", help="folder for etc_plus_ladder_tolerance.json/.md (default: print only)")
    ap.add_argument("--previous", type=Path, help="a JSON this script wrote: carry the cases not measured again")
    ap.add_argument("--name", default="etc_plus_ladder_tolerance", help="the file names written into --out")
    args = ap.parse_args()
    cases = [check(f) for f in args.folders]
    if args.previous:
        measured = {_case(c) for c in cases}
        cases += [{**c, "carried": True} for c in json.loads(args.previous.read_text()) if _case(c) not in measured]
    cases.sort(key=_case)
    text = markdown(cases)
    print(text)
    if args.out:
        Path(args.out, f"{args.name}.json").write_text(json.dumps(cases, indent=1) + "\n")
        made = " ".join(["python", "scripts/etc_plus_ladder_tolerance.py", *sys.argv[1:]])
        seeds = sorted({x for c in cases if not c.get("carried") for x in c.get("seeds", [])})
        env = "" if seeds in ([], [0, 1]) else f"SEEDS={','.join(map(str, seeds))} "  # run.sh's default: 0,1
        head = ("ETC+'s budget ladder and tolerance mode on the pipeline models' held-out images; made by "
                f"`{env}bash docs/etc-plus/ladder-tolerance/run.sh` and `{made}`.\n\n")
        Path(args.out, f"{args.name}.md").write_text(head + text)


if __name__ == "__main__":
    main()
