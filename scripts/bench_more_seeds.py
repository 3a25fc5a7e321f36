"""A committed ``etcdiff bench`` run again on more seeds of the same prompts, and the two read as one.

``python scripts/bench_more_seeds.py BENCH_FOLDER ... --seeds 2,3,4,5`` runs every setting of each bench's grid
(its ``results.json``: model, scheduler, steps, guidance, prompts and settings, the profiles named there) on the
new seeds into ``<bench folder>-seeds-2-5`` (``--repeats 0``: quality, calls and FLOPs; nothing is timed). A
folder with a ``profiles/`` of its own (a ``-peers`` bench) is run with ``ETCDIFF_PROFILE_DIR`` set to it, as it
was benched. ``--check`` first runs the bench's first prompt at its first seed and refuses, in one line, a setting
whose PSNR (by more than 0.01 dB) or calls differ from the committed run's (another profile, another code).

:func:`pooled` reads a bench together with such a folder: the runs of both, and the summary the bench makes of
them (:func:`etcdiff.bench.merge.summarize`), refused where the two grids or their images differ.

Usage: python scripts/bench_more_seeds.py FOLDER [...] --seeds 2,3,4,5 [--check] [--threads 1] [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import tempfile
from typing import Any

from etcdiff.bench.merge import summarize

TOLERANCE_DB = 0.01  # a committed image counts as made again within this much PSNR (float sums differ by ~1e-4)


def suffix_of(seeds: list[int]) -> str:
    """The folder suffix of a seed list: ``seeds-2-5`` for 2,3,4,5, ``seeds-2-4-7`` where they are not a range."""
    if seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 1:
        return f"seeds-{seeds[0]}-{seeds[-1]}"
    return "seeds-" + "-".join(str(s) for s in seeds)


def settings_arg(grid: list[dict[str, Any]]) -> str:
    """``--settings`` that makes ``grid`` again: one group per setting, in its order."""
    def value(v: Any) -> str:
        text = json.dumps(v) if isinstance(v, bool) or v is None else str(v)
        if any(c in text for c in " ,;") or not text:
            raise ValueError(f"setting value {text!r} cannot be given to --settings again (a space, comma or "
                             "semicolon); bench it again from scratch")
        return text
    return ";".join(f"{g['method']}:" + " ".join(f"{k}={value(v)}" for k, v in g["setting"].items()) for g in grid)


def command(bench: str, seeds: list[int], out: str, threads: int,
            write: bool = True) -> tuple[list[str], dict[str, str]]:
    """The ``etcdiff bench`` command that runs ``bench``'s grid on ``seeds`` into ``out``, and its environment;
    ``write``: put the bench's prompts in ``out/prompts.txt``, which the command reads."""
    folder = os.path.dirname(bench)
    config = json.load(open(bench))["config"]
    prompts = os.path.join(out, "prompts.txt")
    if write:
        os.makedirs(out, exist_ok=True)
        with open(prompts, "w") as f:
            f.write("".join(p + "\n" for p in config["prompts"]))
    cmd = ["etcdiff", "bench", "--model", config["model"], "--prompts", prompts,
           "--seeds", ",".join(str(s) for s in seeds), "--steps", str(config["steps"]), "--repeats", "0",
           "--threads", str(threads), "--no-progress", "--out", out, "--settings", settings_arg(config["grid"])]
    if config.get("scheduler"):
        cmd[4:4] = ["--scheduler", config["scheduler"]]
    if config.get("guidance") is not None:
        cmd[4:4] = ["--guidance", str(config["guidance"])]
    env = dict(os.environ)
    if os.path.isdir(os.path.join(folder, "profiles")):
        env["ETCDIFF_PROFILE_DIR"] = os.path.join(folder, "profiles")
    return cmd, env


def same_psnr(a: float | None, b: float | None) -> bool:
    """Whether two runs' PSNR agree within :data:`TOLERANCE_DB` (an identical image's inf, or a missing value, only
    with itself)."""
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
        return a == b
    return abs(a - b) <= TOLERANCE_DB


def check(bench: str, threads: int) -> None:
    """Run ``bench``'s first prompt at its first seed and exit with one line where a setting's PSNR or calls
    differ from the committed run of that image."""
    data = json.load(open(bench))
    config = data["config"]
    prompt, seed = config["prompts"][0], int(config["seeds"][0])
    with tempfile.TemporaryDirectory() as tmp:
        cmd, env = command(bench, [seed], tmp, threads, write=False)  # its first prompt only, written here
        with open(os.path.join(tmp, "prompts.txt"), "w") as f:
            f.write(prompt + "\n")
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
        new = json.load(open(os.path.join(tmp, "results.json")))["runs"]
    old = {(r["method"], r["setting_label"]): r for r in data["runs"]
           if r["kind"] == "run" and r["prompt"] == prompt and int(r["seed"]) == seed}
    for r in (r for r in new if r["kind"] == "run"):
        was = old.get((r["method"], r["setting_label"]))
        if was is None or r["nfe"] != was["nfe"] or not same_psnr(r["psnr"], was["psnr"]):
            got = "missing" if was is None else f"{was['psnr']} dB at {was['nfe']} calls"
            raise SystemExit(f"{bench}: {r['method']} {r['setting_label']} gives {r['psnr']} dB at {r['nfe']} calls "
                             f"on its first image, the committed run {got}; bench it again from scratch instead.")
    print(f"{bench}: {len(old)} settings give the committed image", flush=True)


def pooled(bench: str, suffix: str) -> dict[str, Any]:
    """``bench``'s results with those of ``<its folder>-<suffix>`` where that exists: the runs of both and their
    summary, as one bench over every image."""
    data = json.load(open(bench))
    more = os.path.join(os.path.dirname(bench).rstrip("/") + f"-{suffix}", "results.json")
    if not suffix or not os.path.exists(more):
        return data
    other = json.load(open(more))
    grid = data["config"]["grid"]
    if [(g["method"], g["label"]) for g in grid] != [(g["method"], g["label"]) for g in other["config"]["grid"]]:
        raise ValueError(f"{more}: its settings are not those of {bench}; run it again with bench_more_seeds.py")
    images = {(r["prompt"], int(r["seed"])) for r in data["runs"]}
    if images & {(r["prompt"], int(r["seed"])) for r in other["runs"]}:
        raise ValueError(f"{more}: it runs images that {bench} ran already; pool disjoint seeds only")
    runs = data["runs"] + other["runs"]
    return {**data, "runs": runs, "summary": summarize(runs, grid),
            "config": {**data["config"], "seeds": [*data["config"]["seeds"], *other["config"]["seeds"]]}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", help="bench folders (each with its results.json)")
    ap.add_argument("--seeds", required=True, help="comma-separated seeds the bench has not run")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--check", action="store_true", help="first check one committed image per bench")
    ap.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    for folder in args.folders:
        bench = os.path.join(folder, "results.json")
        ran = set(json.load(open(bench))["config"]["seeds"])
        if ran & set(seeds):
            raise SystemExit(f"{bench} ran seeds {sorted(ran & set(seeds))} already; give seeds it has not run")
        if args.check and not args.dry_run:
            check(bench, args.threads)
        cmd, env = command(bench, seeds, folder.rstrip("/") + "-" + suffix_of(seeds), args.threads,
                           write=not args.dry_run)
        print(" ".join(cmd[:-1]), repr(cmd[-1]), flush=True)
        if not args.dry_run:
            subprocess.run(cmd, check=True, env=env)


if __name__ == "__main__":
    main()
