"""Items 2 and 3 of issue 25 pooled over several draws of the noise: the bench folders of one ETC+ profile run at
different seeds (``SEEDS=2,3 bash docs/etc-plus/ladder-tolerance/run.sh`` beside the seeds 0-1 folders).

On both pipeline models every image of one seed starts from the same noise, so the images of a seed are not
independent draws: a plan can gain several dB on every caption at one seed and lose as much at the next. The
standard error over the images (``etc_plus_ladder_tolerance.py``) then understates how much of a drop the draw of
the noise can make. Here each drop for one more call is the mean over all images of the folders given, with its
standard error over the seeds (each seed's mean drop over its images taken as one draw), and the drop at every seed.

- **Ladder:** read from each folder's ``results.json`` (the per-run records the bench kept, committed), so the
  pooled table is made again from the repository alone. PSNR against the full-step image; identical images count
  as 100 dB.
- **Tolerance:** the share within the target pooled over the folders, from the per-folder tables of
  ``etc_plus_ladder_tolerance.py`` (``--tables``; each folder's row gives its share and image count: the
  final-latent errors need the full-step latents, which are not committed).

Usage: python scripts/etc_plus_ladder_seeds.py FOLDER ... --tables JSON [JSON ...] [--out docs/etc-plus] [--name NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from etc_plus_ladder_tolerance import CAP_DB, MAX_DROP_DB, MIN_WITHIN, paired_drops  # noqa: E402


def ladder_runs(folder: Path) -> tuple[tuple[str, str, int], dict[int, dict[tuple[str, int], float]]]:
    """``(model, profile, steps)`` of the folder's bench and its ladder: budget -> (prompt, seed) -> PSNR."""
    results = json.loads((folder / "results.json").read_text())
    ladder: dict[int, dict[tuple[str, int], float]] = defaultdict(dict)
    profiles = set()
    for r in results["runs"]:
        if r.get("kind") != "run" or r.get("method") != "etc-plus":
            continue
        profiles.add(r["setting"].get("profile"))
        if r["setting"].get("calls") is not None:
            ladder[int(r["setting"]["calls"])][(str(r["prompt"]), int(r["seed"]))] = min(float(r["psnr"]), CAP_DB)
    if len(profiles) != 1:
        raise SystemExit(f"{folder}: expected one ETC+ profile, found {sorted(map(str, profiles))}.")
    return (results["config"]["model"], str(profiles.pop()), int(results["config"]["steps"])), ladder


def pooled(ladders: list[dict[int, dict[tuple[str, int], float]]]) -> dict[str, Any]:
    """The worst mean drop for one more call over every image of ``ladders`` (paired image by image), with its
    standard error over the seeds and each seed's own drop there."""
    ladder: dict[int, dict[tuple[str, int], float]] = defaultdict(dict)
    for one in ladders:
        for budget, images in one.items():
            overlap = ladder[budget].keys() & images.keys()
            if overlap:
                raise SystemExit(f"images {sorted(overlap)[:3]} are in two folders: pool folders of other seeds.")
            ladder[budget].update(images)
    pairs = paired_drops(dict(ladder))
    drops = {b: statistics.mean(d.values()) for b, d in pairs.items() if d}
    worst = max(drops, key=lambda b: drops[b])
    by_seed: dict[int, list[float]] = defaultdict(list)
    for (_, seed), drop in pairs[worst].items():
        by_seed[seed].append(drop)
    seed_drops = {s: statistics.mean(v) for s, v in sorted(by_seed.items())}
    se = statistics.stdev(seed_drops.values()) / len(seed_drops) ** 0.5 if len(seed_drops) >= 2 else None
    return {"images": len({k for v in ladder.values() for k in v}), "seeds": sorted(seed_drops),
            "ladder_psnr": {str(b): round(statistics.mean(v.values()), 2) for b, v in sorted(ladder.items())},
            "worst_drop": round(drops[worst], 2), "worst_drop_at": worst,
            "worst_drop_se_seeds": None if se is None else round(se, 2),
            "worst_drop_by_seed": {str(s): round(v, 2) for s, v in seed_drops.items()},
            "over_1db": sorted(b for b, d in drops.items() if d > MAX_DROP_DB)}


def tolerance(folders: list[Path], rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The share of images within the target over ``folders``, from their rows of the per-folder tables."""
    within = images = 0
    for folder in folders:
        row = rows.get(str(folder).rstrip("/"))
        if row is None or row.get("within") is None:
            raise SystemExit(f"{folder}: no row in the --tables (make it with scripts/etc_plus_ladder_tolerance.py).")
        within += round(row["within"] * row["images"])
        images += row["images"]
    return {"within": within / images, "within_images": within, "tolerance_images": images}


def markdown(cases: list[dict[str, Any]]) -> str:
    lines = ["| model | scheduler | steps | seeds | images | worst drop +1 call (at calls) ± standard error over the "
             "seeds | that drop at each seed | budgets over 1 dB | within target | PSNR from N/5 to N/2 calls |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for c in cases:
        se = "" if c["worst_drop_se_seeds"] is None else f" ± {c['worst_drop_se_seeds']:.2f}"
        flag = " (over 1 dB)" if c["worst_drop"] > MAX_DROP_DB else ""
        seeds = " / ".join(f"{v:+.2f}" for v in c["worst_drop_by_seed"].values())
        over = ", ".join(f"{b} -> {b + 1}" for b in c["over_1db"]) or "none"
        within = f"{100 * c['within']:.0f} % ({c['within_images']} of {c['tolerance_images']})"
        ladder = " ".join(f"{b}:{v:.1f}" for b, v in c["ladder_psnr"].items())
        lines.append(f"| {c['model']} | {c['scheduler']} | {c['steps']} | {','.join(map(str, c['seeds']))} | "
                     f"{c['images']} | {c['worst_drop']:.2f}{se} dB ({c['worst_drop_at']} -> {c['worst_drop_at'] + 1})"
                     f"{flag} | {seeds} | {over} | {within} | {ladder} |")
    over = sum(c["worst_drop"] > MAX_DROP_DB for c in cases)
    held = sum(c["within"] >= MIN_WITHIN for c in cases)
    lines += ["", f"Tolerance held (at least 90 % within) in {held} of {len(cases)} cases; one more call cost over "
              f"1 dB on average in {over} of {len(cases)}. A drop's standard error over the seeds takes each seed's "
              "mean drop as one draw (on both pipeline models the images of one seed start from the same noise)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+", type=Path, help="bench output folders, several seeds of each profile")
    ap.add_argument("--tables", nargs="+", type=Path, required=True,
                    help="JSONs of scripts/etc_plus_ladder_tolerance.py with a row for every folder")
    ap.add_argument("--out", default="", help="folder for etc_plus_ladder_seeds.json/.md (default: print only)")
    ap.add_argument("--name", default="etc_plus_ladder_seeds", help="the file names written into --out (e.g. "
                    "etc_plus_ladder_seeds_schedules for the searched-schedules twin profiles)")
    args = ap.parse_args()
    rows = {str(r["folder"]).rstrip("/"): r for t in args.tables for r in json.loads(t.read_text())}
    groups: dict[tuple[str, str, int], list[tuple[Path, dict]]] = defaultdict(list)
    for folder in args.folders:
        case, ladder = ladder_runs(folder)
        groups[case].append((folder, ladder))
    cases = []
    for (model, profile_path, steps), members in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][2])):
        scheduler = (json.loads(Path(profile_path).read_text())["settings"]["profile"].get("scheduler") or {})
        cases.append({"model": model, "scheduler": scheduler.get("class"), "steps": steps, "profile": profile_path,
                      "folders": [str(f) for f, _ in members], **pooled([ladder for _, ladder in members]),
                      **tolerance([f for f, _ in members], rows)})
    publish(cases, args.name, args.out, "ETC+'s budget ladder and tolerance mode on the pipeline "
            "models' held-out images, pooled over the seeds of several bench folders", markdown)


def publish(cases: list[dict[str, Any]], name: str, out: str, what: str,
            markdown: Callable[[list[dict[str, Any]]], str]) -> None:
    """Sort ``cases`` by model, scheduler and steps, print their table and, with ``out``, write ``name``.json and
    .md there, the table headed by ``what`` and the command that made it (the script that runs, as invoked)."""
    cases.sort(key=lambda c: (c["model"], str(c["scheduler"]), c["steps"]))
    text = markdown(cases)
    print(text)
    if out:
        Path(out, f"{name}.json").write_text(json.dumps(cases, indent=1) + "\n")
        made = " ".join(["python", f"scripts/{Path(sys.argv[0]).name}", *sys.argv[1:]])
        Path(out, f"{name}.md").write_text(f"{what}; made by `{made}`.\n\n" + text)


if __name__ == "__main__":
    main()
