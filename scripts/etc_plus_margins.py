"""One table of ETC+'s margin over the best other step method at 2x, 3x and 4x fewer calls, on every model,
scheduler and step count measured: the solver grid of ``scripts/etc_plus_solvers.py`` (digits, gmm-flow, gmm-ddim)
and the ``etcdiff bench`` runs of the scenes model and of the held-out UNet model.

Fronts are PSNR (dB) against the full-step output of the same noise, interpolated between Pareto points
(:func:`etcdiff.bench.front.front_at`). Beside them, items 2 and 3 of issue 25: the share of held-out images whose
tolerance-mode run ends within the profile's target (at least 90 %), and the most PSNR a budget loses when given one
more call (at most 1 dB; 0: the ladder kept the smaller plan; negative: every extra call gained), from the grid and,
for the pipeline models, from ``scripts/etc_plus_ladder_seeds.py`` (pooled over every seed benched; ``--ladder``:
another JSON of it or of ``scripts/etc_plus_ladder_tolerance.py``). A source that is not there is listed as not
measured, never left out.

``--variant NAME`` reads ETC+'s front of each pipeline case from ``<bench folder>-NAME`` instead (a twin profile
benched on the same images, e.g. ``docs/scenes/bench/schedules.sh`` for ``schedules``; the other methods' fronts
stay the case's) and writes ``etc_plus_margins_NAME.md``; a case without that bench is listed as not measured. The
pipeline cases' items 2 and 3 come from the twin profiles' own ladder pooled over its seeds
(``etc_plus_ladder_seeds_NAME.json``: ``TWIN=NAME [SEEDS=2,3] bash docs/etc-plus/ladder-tolerance/run.sh``, then
``scripts/etc_plus_ladder_tolerance.py`` and ``scripts/etc_plus_ladder_seeds.py --name``), not measured where there
is none. A grid case counts only where
its ETC+ was calibrated with the variant (:data:`VARIANT_MARKS`; give ``--grid`` a grid merged with such runs).

``--pool SUFFIX`` reads every pipeline bench together with ``<its folder>-SUFFIX`` where that exists (the same
settings on more seeds, ``scripts/bench_more_seeds.py``; e.g. ``seeds-2-5``) and writes
``etc_plus_margins[_NAME]_with_SUFFIX.md``. The benches of one case must cover the same images, pooled or not.

Usage: python scripts/etc_plus_margins.py [--grid docs/etc-plus/etc_plus_solvers.json] [--ladder JSON] [--out DIR]
       [--variant NAME] [--pool SUFFIX]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import front_table  # noqa: E402
from bench_more_seeds import pooled  # noqa: E402

SPEEDUPS = (2.0, 3.0, 4.0)
OURS = "etc-plus"
LADDER = "docs/etc-plus/etc_plus_ladder_seeds.json"  # items 2 and 3 on the pipeline models, every seed benched

#: the ``etcdiff bench`` runs: model, scheduler, steps, results.json
BENCHES = [("scenes", "euler", 28, "docs/scenes/bench/adherence-28/results.json"),
           ("scenes", "unipc", 28, "docs/scenes/bench/solvers-28/unipc/results.json"),
           ("scenes", "dpm", 28, "docs/scenes/bench/solvers-28/dpm/results.json"),
           ("scenes", "unipc", 20, "docs/scenes/bench/solvers-20/unipc/results.json"),
           ("scenes", "dpm", 20, "docs/scenes/bench/solvers-20/dpm/results.json"),
           ("scenes", "euler", 20, "docs/scenes/bench/solvers-20/euler/results.json"),
           ("scenes", "unipc", 50, "docs/scenes/bench/solvers-50/unipc/results.json"),
           ("scenes", "dpm", 50, "docs/scenes/bench/solvers-50/dpm/results.json"),
           ("scenes", "euler", 50, "docs/scenes/bench/solvers-50/euler/results.json")]
BENCHES += [("unet-digits", solver, steps, f"docs/unet-digits/{solver}-{steps}steps/results.json")
            for solver in ("ddim", "dpm", "unipc") for steps in (20, 28, 50)]
#: benches of more settings of the other methods on a case's images, read with its bench
MORE = {("scenes", sched, 50): [f"docs/scenes/bench/solvers-50/{sched}-ertacache-dense/results.json"]
        for sched in ("euler", "unipc", "dpm")}


def variant_folder(bench: str, variant: str) -> str:
    """A folder beside a case's bench folder (``<bench folder>-<variant>``): its peers' bench, or a twin profile of
    ETC+ benched on the case's images."""
    return os.path.dirname(bench).rstrip("/") + f"-{variant}"


def peers_folder(bench: str) -> str:
    """Where ``scripts/etc_plus_peer_benches.py`` benches the other step methods of a case (``-peers``)."""
    return variant_folder(bench, "peers")


def extra_benches(model: str, sched: str, steps: int, bench: str) -> list[str]:
    """The other benches read with a case's bench, those that exist: :data:`MORE`'s, and the other step methods of
    :func:`peers_folder`."""
    peers = os.path.join(peers_folder(bench), "results.json")
    return [p for p in (*MORE.get((model, sched, steps), []), peers) if os.path.exists(p)]


#: the scheduler class behind each short name of :data:`BENCHES`, and the model name a bench records for each
SCHEDULER_CLASSES = {"euler": "FlowMatchEulerDiscreteScheduler", "unipc": "UniPCMultistepScheduler",
                     "dpm": "DPMSolverMultistepScheduler", "ddim": "DDIMScheduler"}
MODELS = {"demo": "scenes", "unet-digits-dpm": "unet-digits"}


def complete_rows(summary: Sequence[dict]) -> tuple[list[dict], int]:
    """A bench summary's rows run on every image of the bench, and that count of images: a setting measured on fewer
    (a bench cut short) averages other images, so no comparison reads it."""
    most = max((r.get("pairs", 0) for r in summary), default=0)
    return [r for r in summary if r.get("pairs", most) == most], most


def bench_fronts(path: str, more: Sequence[str] = (), keep: Callable[[dict], bool] = lambda row: True,
                 pool: str = "") -> dict[str, dict[str, float | None]]:
    """Each method's front at :data:`SPEEDUPS` from a bench's ``results.json`` and the ``more`` benches of other
    settings on the same images (:func:`front_table.fronts`), of the rows ``keep`` keeps; a setting measured on fewer
    images than its bench's most (a bench cut short) is left out, since its mean is of other images. ``pool``: each
    bench with its ``-<pool>`` folder (:func:`bench_more_seeds.pooled`)."""
    rows, images = [], {}
    for p in (path, *more):
        data = pooled(p, pool)
        if "runs" in data:  # a summary alone (a hand-made table) has no images to compare
            images[p] = {(r["prompt"], int(r["seed"])) for r in data["runs"]}
        rows += [r for r in complete_rows(data["summary"])[0] if keep(r)]
    if len({frozenset(v) for v in images.values()}) > 1:
        raise ValueError(f"{path}: the benches read with it ({', '.join(more)}) cover other images "
                         f"({', '.join(f'{len(v)}' for v in images.values())}); bench them on the same seeds")
    table = front_table.fronts(rows, SPEEDUPS)
    return {m: {f"{s:g}x": v for s, v in zip(SPEEDUPS, values)} for m, values in table.items()}


def margins(fronts: dict[str, dict[str, float | None]]) -> list[str]:
    """Per speedup: ETC+'s margin over the best other method and that method's name, or why there is none."""
    out = []
    for s in SPEEDUPS:
        key = f"{s:g}x"
        ours = fronts.get(OURS, {}).get(key)
        best = front_table.best_other({m: f.get(key) for m, f in fronts.items()}, OURS)
        if ours is None:
            out.append("etc-plus does not reach it")
        elif best is None:
            out.append(f"{ours:.1f} dB (no other method reaches it)")
        else:
            out.append(f"{ours - best[1]:+.1f} ({best[0]})")
    return out


def checks(within: float | None, drop: float | None) -> list[str]:
    """Items 2 and 3: the share of held-out images within the tolerance target, the worst drop with one more call."""
    return ["not measured" if within is None else f"{100 * within:.0f} %",
            "not measured" if drop is None else f"{drop:.1f} dB"]


def in_grid_fronts(method: str) -> bool:
    """Whether a solver-grid method's front enters a margin: ETC+'s budgets and every other method; ETC+'s tolerance
    mode and its calibration of before (``etc-plus-tol``, ``etc-plus-old``, ...) are not other methods."""
    return method == OURS or not method.startswith(OURS)


def ladder_of(variant: str) -> str:
    """Items 2 and 3 of the pipeline models' profiles that a table reads: the default profiles' pooled over every
    seed benched, or a variant's twin profiles' own ladder."""
    return f"docs/etc-plus/etc_plus_ladder_seeds_{variant}.json" if variant else LADDER


def pipeline_checks(path: str) -> dict[tuple[str, str, int], list[str]]:
    """(model, scheduler class, steps) -> :func:`checks` from a JSON of ``scripts/etc_plus_ladder_seeds.py`` or
    ``scripts/etc_plus_ladder_tolerance.py``."""
    if not os.path.exists(path):
        return {}
    return {(MODELS.get(c["model"], c["model"]), c["scheduler"], c["steps"]): checks(c["within"], c["worst_drop"])
            for c in json.load(open(path))}


#: per variant, the key that a grid case's ETC+ record (``extra["etc-plus"]``) carries when its profile was
#: calibrated with it (``scripts/etc_plus_solvers.py --searched-schedules``)
VARIANT_MARKS = {"schedules": "schedule_check"}


def with_variant(fronts: dict[str, dict[str, float | None]], bench: str, variant: str,
                 pool: str = "") -> tuple[dict[str, dict[str, float | None]] | None, str]:
    """``fronts`` with ETC+'s front read from the ``variant`` bench of ``bench`` (``None`` where it is missing),
    and that bench's path."""
    path = os.path.join(variant_folder(bench, variant), "results.json")
    if not os.path.exists(path):
        return None, path
    ours = bench_fronts(path, pool=pool).get(OURS)
    return {**{m: f for m, f in fronts.items() if m != OURS}, **({OURS: ours} if ours else {})}, path


def rows(grid: str, ladder: str = LADDER, variant: str = "", pool: str = "") -> list[list[str]]:
    """The table's rows: the grid's cases, then the pipeline benches (``ladder``: items 2 and 3 of the profiles whose
    fronts are read, the variant's where there is one; ``pool``: each bench with its ``-<pool>`` folder)."""
    table = []
    for case in json.load(open(grid)) if os.path.exists(grid) else []:
        fronts = {m: f for m, f in case["fronts"].items() if in_grid_fronts(m)}
        tol = next((r for r in case["rows"] if r["method"] == "etc-plus-tol"), {})
        if variant and VARIANT_MARKS.get(variant, variant) not in case["extra"].get(OURS, {}):
            table.append([case["model"], case["scheduler_class"], str(case["steps"]), f"not measured with {variant}",
                          "", "", *checks(None, None), f"{os.path.basename(grid)} (ETC+ not calibrated with it)"])
            continue
        table.append([case["model"], case["scheduler_class"], str(case["steps"]), *margins(fronts),
                      *checks(tol.get("within"), case["extra"].get(OURS, {}).get("worst_drop")),
                      os.path.basename(grid)])
    measured = pipeline_checks(ladder)
    for model, sched, steps, path in BENCHES:
        name = SCHEDULER_CLASSES[sched]
        more = measured.get((model, name, steps), checks(None, None))
        if os.path.exists(path):
            extra = extra_benches(model, sched, steps, path)
            fronts: dict[str, dict[str, float | None]] | None = bench_fronts(path, extra, pool=pool)
            if variant:
                fronts, ours = with_variant(fronts, path, variant, pool)
                if fronts is None:
                    table.append([model, name, str(steps), f"not measured with {variant}", "", "", *more,
                                  f"{ours} (missing)"])
                    continue
                extra = [*extra, ours]
            table.append([model, name, str(steps), *margins(fronts), *more, " + ".join([path, *extra])])
        else:
            table.append([model, name, str(steps), "not measured", "", "", *more, f"{path} (missing)"])
    return sorted(table, key=lambda r: (r[0], r[1], int(r[2])))


def save_table(out: str, stem: str, variant: str, pool: str, what: str, text: str) -> None:
    """Write ``text`` to ``out/<stem>[_<variant>][_with_<pool>].md`` under a line saying ``what`` it is and the
    command that made it (this process's)."""
    name = stem + (f"_{variant}" if variant else "") + (f"_with_{pool}" if pool else "") + ".md"
    command = " ".join(["python", f"scripts/{os.path.basename(sys.argv[0])}", *sys.argv[1:]])
    with open(os.path.join(out, name), "w") as f:
        f.write(f"{what}; made by `{command}`.\n\n" + text)


def markdown(table: list[list[str]]) -> str:
    head = ("| model | scheduler | steps | 2x margin (best other) | 3x | 4x | tolerance: images within target | "
            "worst drop +1 call | source |\n|---|---|---|---|---|---|---|---|---|\n")
    return head + "".join("| " + " | ".join(r) + " |\n" for r in table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", default="docs/etc-plus/etc_plus_solvers.json")
    ap.add_argument("--ladder", default=None, help="items 2 and 3 on the pipeline models (default: "
                    f"{LADDER}, or {ladder_of('VARIANT')} with --variant)")
    ap.add_argument("--out", default="", help="folder for etc_plus_margins.md (default: print only)")
    ap.add_argument("--variant", default="", help="read ETC+'s pipeline fronts from <bench folder>-VARIANT")
    ap.add_argument("--pool", default="", help="read each pipeline bench with <bench folder>-POOL (more seeds)")
    args = ap.parse_args()
    text = markdown(rows(args.grid, args.ladder or ladder_of(args.variant), args.variant, args.pool))
    print(text)
    if args.out:
        save_table(args.out, "etc_plus_margins", args.variant, args.pool,
                   "ETC+'s front minus the best other step method's front (dB) at the same speedup", text)


if __name__ == "__main__":
    main()
