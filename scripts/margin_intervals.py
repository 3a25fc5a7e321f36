"""How far the margin table's pipeline cells can be trusted: a paired bootstrap over each case's images.

``scripts/etc_plus_margins.py`` gives ETC+'s front minus the best other step method's front at 2x, 3x and 4x, each
a mean over the case's images (16 on most scenes cases, 48 at 28 Euler steps, 10 on the UNet). This script draws
the case's (caption, seed) pairs with replacement, the same draw for every method of the case, recomputes every
setting's mean PSNR and call ratio as the bench's summary makes them (:func:`etcdiff.bench.merge.summarize`), the
fronts
with :func:`etcdiff.bench.front.front_at`, and ETC+'s margin over the best other front of that draw (the best
other is taken per draw, which favours the others). A cell reads **behind** where the margin's 95th percentile is
below 0, **ahead** where its 5th percentile is above 0, and **level** (within the images' spread) otherwise. The
solver grid (digits, gmm) keeps a record per evaluation case only in runs made since it does (``case_psnr`` and
``case_calls`` in ``scripts/etc_plus_solvers.py``'s rows); ``--grid JSON ...`` adds those cases, drawn the same way
over their evaluation cases, with the grid's fronts (ETC+'s budgets against every other method's, as the
grid's own margins take them); with ``--pipeline`` as well, the pipeline cases and the grid's go in one table, whose
last lines count the cells per model.

``--variant NAME`` takes ETC+'s front from the twin bench ``<bench folder>-NAME``, as ``etc_plus_margins.py`` does;
``--pool SUFFIX`` reads every pipeline bench with ``<its folder>-SUFFIX`` (more seeds, as there).

Usage: python scripts/margin_intervals.py [--variant schedules] [--pool SUFFIX] [--draws 2000] [--out docs/etc-plus]
       python scripts/margin_intervals.py --grid RUN.json [...] [--pipeline] [--draws 2000] [--out DIR --name NAME]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from statistics import quantiles

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import front_table  # noqa: E402
from bench_more_seeds import pooled  # noqa: E402
from etc_plus_margins import (BENCHES, OURS, SCHEDULER_CLASSES, SPEEDUPS, complete_rows,  # noqa: E402
                             extra_benches, in_grid_fronts, save_table, variant_folder)

Pair = tuple[str, int]


class Bench:
    """One ``results.json``: per setting it counts (those run on every image: a setting cut short averages other
    images), each image's PSNR, calls and reference calls, in the order of :attr:`pairs`. ``only``: read just this
    method's settings, or ``skip``: every method's but this one; ``pool``: with the bench's ``-<pool>`` folder."""

    def __init__(self, path: str, only: str | None = None, skip: str | None = None, pool: str = ""):
        data = pooled(path, pool)
        self.settings = [r for r in complete_rows(data["summary"])[0] if r["kind"] == "run"
                         and (only is None or r["method"] == only) and (skip is None or r["method"] != skip)]
        runs = {(r["method"], r["setting_label"], r["prompt"], int(r["seed"])): r for r in data["runs"]
                if r["kind"] == "run"}
        self.pairs: list[Pair] = sorted({(r["prompt"], int(r["seed"])) for r in data["runs"]})
        self.values = {}
        for s in self.settings:
            recs = [runs[(s["method"], s["setting_label"], *pair)] for pair in self.pairs]
            psnr = [r["psnr"] if r.get("psnr") is not None and math.isfinite(r["psnr"]) else math.nan for r in recs]
            calls = np.array([r["nfe"] for r in recs], float)
            self.values[(s["method"], s["setting_label"])] = (
                np.array(psnr), calls, np.array([r["ref_nfe"] for r in recs], float))

    def rows(self, counts: np.ndarray) -> list[dict]:
        """The settings' summary rows (mean PSNR over the finite ones, calls ratio of sums, as
        :func:`etcdiff.bench.merge.summarize` makes them) with image k counted ``counts[k]`` times."""
        out = []
        for s in self.settings:
            psnr, nfe, ref = self.values[(s["method"], s["setting_label"])]
            finite = ~np.isnan(psnr)
            weight = float(counts[finite].sum())
            out.append({**s, "psnr": float((counts[finite] * psnr[finite]).sum()) / weight if weight else None,
                        "speedup_nfe": float((counts * ref).sum() / (counts * nfe).sum())})
        return out


class GridCase:
    """One case of a solver-grid run (``scripts/etc_plus_solvers.py``) with a record per evaluation case: the same
    :attr:`pairs` and :meth:`rows` as :class:`Bench`, its rows the grid's (``speedup`` is steps over mean calls, as
    there), those the margin table reads (:func:`etc_plus_margins.in_grid_fronts`)."""

    def __init__(self, case: dict):
        self.settings = [r for r in case["rows"] if in_grid_fronts(r["method"])]
        missing = [f"{r['method']} {r['setting']}" for r in self.settings if "case_psnr" not in r]
        if missing or not self.settings:
            raise ValueError(f"{case['model']} {case['scheduler']} {case['steps']}: {len(missing)} of its rows keep no "
                             f"evaluation cases ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}; made "
                             "before etc_plus_solvers.py recorded them); run the case again")
        self.steps = int(case["steps"])
        self.values = [(r["method"], np.array(r["case_psnr"], float), np.array(r["case_calls"], float))
                       for r in self.settings]
        self.pairs = list(range(len(self.values[0][1])))

    def rows(self, counts: np.ndarray) -> list[dict]:
        """The grid's rows with evaluation case k counted ``counts[k]`` times."""
        total = counts.sum()
        return [{"kind": "run", "method": method, "psnr": float((counts * psnr).sum() / total),
                 "speedup_nfe": self.steps * float(total / (counts * calls).sum())}
                for method, psnr, calls in self.values]


def margins(benches: Sequence[Bench], counts: np.ndarray) -> list[float | None]:
    """ETC+'s margin over the best other method's front at :data:`SPEEDUPS`, image k counted ``counts[k]`` times
    (None: ETC+ or every other method misses that speedup)."""
    fronts = front_table.fronts([r for b in benches for r in b.rows(counts)], SPEEDUPS)
    out: list[float | None] = []
    for k in range(len(SPEEDUPS)):
        ours = fronts.get(OURS, [None] * len(SPEEDUPS))[k]
        best = front_table.best_other({m: f[k] for m, f in fronts.items()}, OURS)
        out.append(None if ours is None or best is None else ours - best[1])
    return out


def reading(point: float | None, draws: list[float]) -> str:
    """The cell: the margin, its 5th-95th percentile over the draws, and behind / level / ahead."""
    if point is None or len(draws) < 20:
        return "n/a"
    cuts = quantiles(draws, n=20, method="inclusive")
    low, high = cuts[0], cuts[-1]
    word = "behind" if high < 0 else "ahead" if low > 0 else "level"
    return f"{point:+.1f} [{low:+.1f}, {high:+.1f}] {word}"


def case_benches(path: str, model: str, sched: str, steps: int, variant: str, pool: str = "") -> list[Bench] | None:
    """The benches a case's fronts are read from (with ``variant``, ETC+'s from its twin bench; None where the
    twin was not benched; ``pool``: each with its ``-<pool>`` folder)."""
    extra = extra_benches(model, sched, steps, path)
    if not variant:
        return [Bench(p, pool=pool) for p in (path, *extra)]
    twin = os.path.join(variant_folder(path, variant), "results.json")
    if not os.path.exists(twin):
        return None
    return [*(Bench(p, skip=OURS, pool=pool) for p in (path, *extra)), Bench(twin, only=OURS, pool=pool)]


def interval_cells(benches: Sequence[Bench | GridCase], draws: int, seed: int) -> list[str]:
    """A case's cell per speedup (:func:`reading`): the margin on every image, and over ``draws`` paired draws."""
    pairs = benches[0].pairs
    point = margins(benches, np.ones(len(pairs)))
    rng = np.random.default_rng(seed)
    got: list[list[float]] = [[] for _ in SPEEDUPS]
    for _ in range(draws):
        counts = np.bincount(rng.integers(0, len(pairs), len(pairs)), minlength=len(pairs)).astype(float)
        for k, m in enumerate(margins(benches, counts)):
            if m is not None:
                got[k].append(m)
    return [reading(p, g) for p, g in zip(point, got)]


def interval_rows(variant: str = "", draws: int = 2000, seed: int = 0, pool: str = "") -> list[list[str]]:
    """One row per pipeline case of :data:`BENCHES`: model, scheduler, steps, a cell per speedup, images."""
    table = []
    for model, sched, steps, path in BENCHES:
        name = SCHEDULER_CLASSES[sched]
        benches = case_benches(path, model, sched, steps, variant, pool) if os.path.exists(path) else None
        if benches is None:
            table.append([model, name, str(steps), *["not measured"] * len(SPEEDUPS), ""])
            continue
        pairs = benches[0].pairs
        if any(b.pairs != pairs for b in benches):
            raise ValueError(f"{path}: the benches of this case were not run on the same images")
        table.append([model, name, str(steps), *interval_cells(benches, draws, seed), str(len(pairs))])
    return sorted(table, key=lambda r: (r[0], r[1], int(r[2])))


def grid_rows(paths: Sequence[str], draws: int = 2000, seed: int = 0) -> list[list[str]]:
    """One row per case of the solver-grid runs ``paths``: model, scheduler, steps, a cell per speedup, images."""
    table = []
    for path in paths:
        for case in json.load(open(path)):
            grid = GridCase(case)
            table.append([case["model"], case["scheduler_class"], str(case["steps"]),
                          *interval_cells([grid], draws, seed), str(len(grid.pairs))])
    return sorted(table, key=lambda r: (r[0], r[1], int(r[2])))


WORDS = ("behind", "level", "ahead")


def counted(table: list[list[str]]) -> str:
    """``"B behind, L level, A ahead of C cells"`` over the rows' speedup cells."""
    counts = {w: sum(c.endswith(w) for r in table for c in r[3:6]) for w in WORDS}
    return ", ".join(f"{n} {w}" for w, n in counts.items()) + f" of {sum(counts.values())} cells"


def markdown(table: list[list[str]]) -> str:
    """The table, the cells counted, and (where it has more than one model) counted per model."""
    head = ("| model | scheduler | steps | 2x margin [5 %, 95 %] | 3x | 4x | images |\n"
            "|---|---|---|---|---|---|---|\n")
    tail = "\n" + counted(table) + ".\n"
    models = sorted({r[0] for r in table})
    if len(models) > 1:
        tail += "\n" + "".join(f"- {m}: {counted([r for r in table if r[0] == m])}\n" for m in models)
    return head + "".join("| " + " | ".join(r) + " |\n" for r in table) + tail


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="", help="ETC+'s front from <bench folder>-VARIANT")
    ap.add_argument("--draws", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--grid", nargs="+", default=[], help="solver-grid runs (JSON) instead of the pipeline benches")
    ap.add_argument("--pipeline", action="store_true", help="with --grid: the pipeline benches too, in one table")
    ap.add_argument("--pool", default="", help="read each pipeline bench with <bench folder>-POOL (more seeds)")
    ap.add_argument("--out", default="", help="folder for etc_plus_margin_intervals[_VARIANT].md")
    ap.add_argument("--name", default="", help="the file's name without .md (default as above)")
    args = ap.parse_args()
    if args.grid and args.variant:
        ap.error("--grid reads ETC+ from the grid's own rows; --variant is for the pipeline benches")
    if args.pipeline and not args.grid:
        ap.error("--pipeline adds the pipeline benches to --grid's runs; without --grid they are the default")
    if args.pool and args.grid and not args.pipeline:
        ap.error("--pool pools the pipeline benches; with --grid alone there are none (add --pipeline)")
    rows = grid_rows(args.grid, args.draws, args.seed) if args.grid else []
    if args.pipeline or not args.grid:
        rows = sorted(rows + interval_rows(args.variant, args.draws, args.seed, args.pool),
                      key=lambda r: (r[0], r[1], int(r[2])))
    text = markdown(rows)
    print(text)
    if args.out:
        what = ("ETC+'s front minus the best other step method's front (dB) with its 5th-95th percentile over "
                f"{args.draws} paired bootstrap draws of the case's images")
        if args.name:
            save_table(args.out, args.name, "", "", what, text)
        else:
            save_table(args.out, "etc_plus_margin_intervals", args.variant, args.pool, what, text)


if __name__ == "__main__":
    main()
