"""A committed ``etcdiff bench`` made again with the code as it is now, on its own images, and what changed.

``python scripts/bench_again.py FOLDER ... --only METHOD`` runs each bench's grid again (its ``results.json``:
model, scheduler, steps, guidance, prompts, seeds, settings, repeats and threads, the profiles named there) into a
temporary folder, compares every run with the committed one (PSNR within 0.01 dB and the same real steps), prints
per method how many runs changed and by how much, and then puts the new bench files in the folder, with its
``runs/`` and ``reference/`` (which git ignores). A folder with a ``profiles/`` of its own is run with
``ETCDIFF_PROFILE_DIR`` set to it; a bench that read saved profiles from elsewhere needs that variable set as when it
was made. A run of another method than ``--only`` that changed refuses the bench in one line and leaves its folder
as it was: a change of one method's defaults must leave every other method's images as they were.

Usage: python scripts/bench_again.py FOLDER [...] --only etc-plus [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_more_seeds import command, same_psnr  # noqa: E402

BENCH_FILES = ("results.json", "results.csv", "report.md", "sweep.json", "pareto.png")
RECORD_DIRS = ("runs", "reference")  # the per-run records and full-step references, kept out of git


def changes(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Per method, the PSNR change of every run that changed (PSNR beyond :func:`bench_more_seeds.same_psnr` or
    other real steps), matched by setting, prompt and seed; a run on one side only counts as changed (``nan``)."""
    def runs(rows: list[dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
        return {(r["method"], r["setting_label"], r["prompt"], int(r["seed"])): r for r in rows if r["kind"] == "run"}
    before, after = runs(old), runs(new)
    out: dict[str, list[float]] = defaultdict(list)
    for key in before.keys() | after.keys():
        a, b = before.get(key), after.get(key)
        if a is None or b is None:
            out[key[0]].append(float("nan"))
        elif a["computed_steps"] != b["computed_steps"] or not same_psnr(a["psnr"], b["psnr"]):
            out[key[0]].append(b["psnr"] - a["psnr"])
    return dict(out)


def rerun_command(bench: str, out: str, write: bool = True) -> tuple[list[str], dict[str, str]]:
    """The ``etcdiff bench`` command that makes ``bench`` again into ``out``: its seeds, threads and repeats."""
    config = json.load(open(bench))["config"]
    cmd, env = command(bench, [int(s) for s in config["seeds"]], out, int(config.get("threads") or 1), write=write)
    cmd[cmd.index("--repeats") + 1] = str(config.get("repeats", 0))
    return cmd, env


def again(folder: str, only: str) -> str:
    """Bench ``folder`` again; return one line of what changed, or exit where another method than ``only`` did."""
    bench = os.path.join(folder, "results.json")
    data = json.load(open(bench))
    config = data["config"]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "bench")
        cmd, env = rerun_command(bench, out)
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
        new = json.load(open(os.path.join(out, "results.json")))
        changed = changes(data["runs"], new["runs"])
        others = sorted(m for m in changed if m != only)
        if others:
            raise SystemExit(f"{folder}: runs of {', '.join(others)} changed too, not only {only}'s; the folder is "
                             "left as it was (another profile or another code than the committed bench's?)")
        for name in ("results.json", "sweep.json"):  # where the bench was made, as committed
            path = os.path.join(out, name)
            text = open(path).read().replace(json.dumps(out), json.dumps(config["out"]))
            with open(path, "w") as f:
                f.write(text)
        for name in BENCH_FILES:
            if os.path.exists(os.path.join(out, name)):
                shutil.copy(os.path.join(out, name), os.path.join(folder, name))
        for name in RECORD_DIRS:  # not committed, but read by the scripts that check a bench's images
            shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
            if os.path.isdir(os.path.join(out, name)):
                shutil.copytree(os.path.join(out, name), os.path.join(folder, name))
    mine = changed.get(only, [])
    total = sum(1 for r in new["runs"] if r["kind"] == "run" and r["method"] == only)
    mean = sum(mine) / len(mine) if mine else 0.0
    return f"{folder}: {len(mine)} of {total} {only} runs changed (mean PSNR change {mean:+.2f} dB); no other run did"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", help="bench folders (each with its results.json)")
    ap.add_argument("--only", required=True, help="the one method whose runs may change")
    ap.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = ap.parse_args()
    for folder in args.folders:
        if args.dry_run:
            cmd, _ = rerun_command(os.path.join(folder, "results.json"), "OUT", write=False)
            print(" ".join(cmd[:-1]), repr(cmd[-1]))
            continue
        print(again(folder.rstrip("/"), args.only), flush=True)


if __name__ == "__main__":
    main()
