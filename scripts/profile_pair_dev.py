"""Two ETC+ profiles of one scenes case on its development captions: the check a profile calibrated again must pass
before it replaces the committed one (never the evaluation captions).

Each case's captions and scheduler are its development bench's (``docs/scenes/bench/dev-schedules/CASE``: 8
captions that are neither calibration nor evaluation captions); every budget N/2, N/3 and N/4 runs with both profiles
on the same noises, PSNR against the full-step image. ``--summary`` reads the records back: per case and budget
each profile's mean PSNR and calls, and the mean change over all budgets with how many went up and down.

Usage: PYTHONPATH=src python scripts/profile_pair_dev.py CASE OLD.json NEW.json --seeds 6,7,8,9 --out RECORDS.jsonl
       PYTHONPATH=src python scripts/profile_pair_dev.py --summary RECORDS.jsonl [...]
(the old profile of a committed one: ``git show REV:PATH > old.json``)
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from statistics import mean
from typing import Any, Callable

DEV = Path(__file__).resolve().parent.parent / "docs" / "scenes" / "bench" / "dev-schedules"


def dev_runner(case: str) -> tuple[dict[str, Any], int, Callable[..., tuple]]:
    """``(config, steps, generate)`` for a case's development bench: ``generate(prompt, seed, method="none",
    **settings)`` gives the image and the real steps (``None`` for the full run) on one thread."""
    import torch

    import etcdiff
    from etcdiff.models import call_kwargs, load_pipeline

    config = json.loads((DEV / case / "sweep.json").read_text())["config"]
    steps = int(config["steps"])
    torch.set_num_threads(1)
    pipe = load_pipeline("demo", scheduler=config.get("scheduler"))
    pipe.set_progress_bar_config(disable=True)

    def generate(prompt: str, seed: int, method: str = "none", **settings: Any) -> tuple:
        with etcdiff.enabled(pipe, method, **settings) as policy:
            image = pipe(**call_kwargs(pipe, prompt, steps, seed), output_type="np").images
        report = getattr(policy, "report", None)
        return image, (list(report().computed_steps) if report is not None else None)

    return config, steps, generate


def change_line(changes: list[float]) -> str:
    """The mean of per-budget changes (dB) and at how many budgets they were above and below zero."""
    return (f"mean {mean(changes):+.2f} dB over {len(changes)} budgets, higher at {sum(c > 0.01 for c in changes)}, "
            f"lower at {sum(c < -0.01 for c in changes)}")


def measure(case: str, old: str, new: str, seeds: list[int], out: str) -> None:
    """Write one record per (caption, seed, profile, budget) to ``out`` (JSON lines)."""
    import numpy as np

    from etcdiff.metrics import psnr

    config, steps, generate = dev_runner(case)
    with open(out, "w") as fh:
        for seed in seeds:
            for prompt in config["prompts"]:
                ref, _ = generate(prompt, seed)
                for calls in (steps // 2, steps // 3, steps // 4):
                    for tag, profile in (("old", old), ("new", new)):
                        image, real = generate(prompt, seed, "etc-plus", profile=profile, calls=calls)
                        fh.write(json.dumps({"case": case, "profile": tag, "calls": calls, "prompt": prompt,
                                             "seed": seed, "psnr": float(np.mean(psnr(ref, image))),
                                             "real_calls": len(real)}) + "\n")


def summary(paths: list[str]) -> str:
    """Per case and budget, each profile's mean PSNR and real calls; then the mean change over the budgets."""
    groups: dict[tuple, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for path in paths:
        for line in Path(path).read_text().splitlines():
            row = json.loads(line)
            groups[(row["case"], row["calls"])][row["profile"]].append(row)
    lines = ["| case | calls | images | old: PSNR (real calls) | new | change |", "|---|---:|---:|---|---|---:|"]
    changes = []
    for (case, calls), runs in sorted(groups.items()):
        old, new = (mean(r["psnr"] for r in runs[k]) for k in ("old", "new"))
        real = [mean(r["real_calls"] for r in runs[k]) for k in ("old", "new")]
        changes.append(new - old)
        lines.append(f"| {case} | {calls} | {len(runs['old'])} | {old:.2f} ({real[0]:.1f}) | "
                     f"{new:.2f} ({real[1]:.1f}) | {new - old:+.2f} |")
    lines.append(f"\nChange: {change_line(changes)}.")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("args", nargs="+", help="CASE OLD NEW, or the records with --summary")
    ap.add_argument("--seeds", default="6,7,8,9")
    ap.add_argument("--out", default="", help="records (JSON lines)")
    ap.add_argument("--summary", action="store_true", help="summarise records instead of measuring")
    a = ap.parse_args()
    if a.summary:
        print(summary(a.args))
        return
    if len(a.args) != 3 or not a.out:
        ap.error("give CASE OLD.json NEW.json and --out RECORDS.jsonl")
    measure(*a.args, [int(s) for s in a.seeds.split(",")], a.out)


if __name__ == "__main__":
    main()
