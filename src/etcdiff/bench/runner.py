"""The sweep of ``etcdiff bench``: every process runs its share of the (prompt, seed) pairs, then rank 0 merges.

For each pair of its share a process loads or generates the full-step reference, then runs every method x
setting (:mod:`.measure`), appending one record per run to ``DIR/runs/rank<R>.jsonl`` as soon as it is finished
(:mod:`.records`). A sweep started again on the same DIR skips every run whose key (:mod:`.schedule`) is already
in a record of DIR, so an interrupted sweep resumes where it stopped.

Several processes (:mod:`.processes`, e.g. ``accelerate launch --multi_gpu`` or ``torchrun``) take the pairs
round-robin; rank 0 waits for the others at a ``torch.distributed`` barrier and merges (:mod:`.merge`) once.
``etcdiff bench --merge DIR`` merges by hand, e.g. after a process died.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from ..models import load_pipeline, use_scheduler
from .environment import machine, versions
from .measure import Measurer
from .merge import merge as merge_dir
from .processes import Processes
from .out_lock import OutLock
from .records import SWEEP_FILE, append_record, check_out_folder, read_records, runs_dir, write_json_atomic
from .sweep import BenchConfig, MethodSetting, expected_keys, run_key, sweep_id


class Share:
    """One process's share of the sweep: the runs of its pairs that are not on disk yet."""

    def __init__(self, config: BenchConfig, measurer: Measurer, rank: int = 0, world: int = 1, progress: bool = True,
                 inputs: dict[MethodSetting, str | None] | None = None) -> None:
        self.config, self.measurer, self.rank, self.world, self.progress = config, measurer, rank, world, progress
        self.inputs = inputs
        self.shard_path = runs_dir(config.out) / f"rank{rank}.jsonl"
        self.errors_path = runs_dir(config.out) / f"rank{rank}.errors"
        self.executed: list[str] = []
        self.failed: list[str] = []
        self.skipped: list[str] = []

    def todo(self) -> list[tuple[tuple[int, str, int], list[tuple[str, MethodSetting | None]]]]:
        """The runs still to make, pair by pair (the reference first); the finished ones go to ``skipped``."""
        done = {rec["key"] for rec in read_records(self.config.out)}
        work = []
        for pidx, prompt, seed in self.config.shard(self.rank, self.world):
            runs = []
            for ms in [None, *self.config.grid]:
                key = run_key(self.config, self.measurer.fingerprint, prompt, seed, ms, self.inputs)
                if key in done:
                    self.skipped.append(key)
                else:
                    runs.append((key, ms))
            if runs:
                work.append(((pidx, prompt, seed), runs))
        return work

    def run(self) -> None:
        """Make the runs of :meth:`todo`, appending each record (or error) as soon as it is finished."""
        m = self.measurer
        work = self.todo()
        total = sum(len(runs) for _, runs in work)
        desc = "bench" if self.world == 1 else f"bench rank {self.rank}/{self.world}"
        with tqdm(total=total, desc=desc, unit="run", position=self.rank, disable=not self.progress or total == 0,
                  file=sys.stderr, dynamic_ncols=True) as bar:
            for (pidx, prompt, seed), runs in work:
                m.warm_up(prompt, seed)
                ref = m.reference(prompt, seed)
                for key, ms in runs:
                    bar.set_postfix_str(f"{'reference' if ms is None else ms.method + ' ' + ms.label} | {prompt[:20]!r} seed {seed}")
                    if ms is None:
                        rec = m.reference_record(key, pidx, prompt, seed, ref)
                    else:
                        try:
                            rec = m.method_record(key, ms, pidx, prompt, seed, ref)
                        except Exception as e:  # a setting this run cannot take (e.g. warm-up >= steps): go on
                            err = {**m.base_record(key, ms, pidx, prompt, seed), "error": f"{type(e).__name__}: {e}",
                                   "finished": time.time()}
                            append_record(self.errors_path, err)
                            self.failed.append(key)
                            bar.update()
                            continue
                    rec["per_call_flops"] = m.per_call.as_dict()
                    append_record(self.shard_path, rec)
                    self.executed.append(key)
                    bar.update()


@dataclass
class BenchResult:
    """What one process did: the run keys it executed, skipped (already on disk) and that raised; the merge (rank 0)."""

    out: Path
    rank: int
    world: int
    executed: list[str]
    skipped: list[str]
    failed: list[str]
    references_generated: int
    references_loaded: int
    merged: dict[str, Any] | None
    elapsed_s: float


def run_bench(config: BenchConfig, pipe: Any = None, rank: int | None = None, world: int | None = None,
              progress: bool = True, merge: bool = True, wait_timeout: float | None = None,
              pipe_factory: Callable[[BenchConfig], Any] | None = None) -> BenchResult:
    """Run this process's share of the sweep, then (rank 0) wait for the other processes and merge.

    ``rank``/``world`` default to the launcher's environment (one process without one). ``pipe`` (or
    ``pipe_factory(config)``) overrides loading ``config.model`` with :func:`etcdiff.models.load_pipeline`.
    ``wait_timeout``: seconds rank 0 waits for the others before it merges what is there (default: a week).
    """
    t_start = time.time()
    config.validate()
    with Processes(rank, world, timeout=wait_timeout) as procs:
        rank, world = procs.rank, procs.world
        if config.threads:
            torch.set_num_threads(config.threads)
        elif world > 1:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
        if pipe is None:
            pipe = (pipe_factory(config) if pipe_factory is not None
                    else load_pipeline(config.model, device=config.device, scheduler=config.scheduler))
        elif config.scheduler is not None:
            use_scheduler(pipe, config.scheduler)
        if hasattr(pipe, "set_progress_bar_config"):
            pipe.set_progress_bar_config(disable=True)
        out = Path(config.out)
        check_out_folder(out)
        out.mkdir(parents=True, exist_ok=True)
        with OutLock(out, rank):  # one sweep process per rank on this folder at a time
            measurer = Measurer(config, pipe, rank=rank)
            measurer.validate_methods()
            inputs = {ms: measurer.setting(ms).digest for ms in config.grid}  # profiles by content, in the run keys
            sweep = sweep_id(config, measurer.fingerprint)
            if not procs.same_everywhere(sweep):
                raise ValueError("the processes run different sweeps (other settings, prompts or weights): "
                                 "launch every process with the same command")
            _refuse_another_reference(out, config)
            if rank == 0:
                write_json_atomic(out / SWEEP_FILE, {
                    "sweep": sweep, "config": config.to_json(), "fingerprint": measurer.fingerprint, "world_size": world,
                    "expected_keys": expected_keys(config, measurer.fingerprint, inputs), "versions": versions(), "machine": machine(),
                    "metrics": measurer.scorer.status, "started": t_start,
                })
            share = Share(config, measurer, rank=rank, world=world, progress=progress, inputs=inputs)
            try:
                share.run()
            except BaseException:  # crash or Ctrl-C: the finished runs are in the shard; a lone process reports them
                if world == 1 and merge and share.executed:
                    _merge_after_stop(out, len(share.executed))
                raise
        not_all = procs.wait_for_all()
    merged = None
    if rank == 0 and merge:
        if not_all:
            print(f"etcdiff bench: not every process finished ({not_all}); merging what is there", file=sys.stderr)
        merged = merge_dir(out)
    return BenchResult(out, rank, world, share.executed, share.skipped, share.failed, measurer.references_generated,
                       measurer.references_loaded, merged, time.time() - t_start)


def _merge_after_stop(out: Path, executed: int) -> None:
    try:
        merge_dir(out)
    except Exception:  # the interruption is what the user needs to see, not a failed report
        return
    print(f"etcdiff bench: stopped; merged the {executed} runs finished in this invocation (and any earlier) into "
          f"{out}. Run the same command again to finish.", file=sys.stderr)


#: the settings that decide the full-step reference: another value makes another sweep, not more of this one
_REFERENCE_FIELDS = ("model", "steps", "guidance", "device")


def _refuse_another_reference(out: Path, config: BenchConfig) -> None:
    """A folder holds one sweep's reference: refuse a run whose model, steps, guidance or device differ (more
    settings, prompts or seeds may be added; their runs join the same report)."""
    import json

    path = out / SWEEP_FILE
    if not path.is_file():
        return
    try:
        before = json.loads(path.read_text())["config"]
    except (OSError, ValueError, KeyError):
        return
    now = config.to_json()
    changed = [f"{k} {before.get(k)!r} -> {now.get(k)!r}" for k in _REFERENCE_FIELDS if before.get(k) != now.get(k)]
    if changed:
        raise ValueError(f"--out {out} holds a sweep with other reference settings ({', '.join(changed)}); "
                         "use another --out for this one, or delete the folder to start over.")
