"""Every rank of a split denoiser makes the same skip decision (two CPU processes on gloo).

The model's output is a straight line in t on rank 0 (ETC's correction is ~0: it would skip) and the same line
plus a little noise on rank 1 (its correction is over the tolerance: it would run every step). Left alone the
ranks would disagree, and under context or tensor parallelism the ranks that run would wait for the others.
"""

from __future__ import annotations

import json
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from diffusers import FlowMatchEulerDiscreteScheduler

import etcdiff
from loop_pipelines import make_loop_pipeline

STEPS = 12


class RankDenoiser(torch.nn.Module):
    def __init__(self, rank: int) -> None:
        super().__init__()
        self.rank = rank
        self.run_steps: list[float] = []

    def forward(self, x, t, cond: float = 1.0, residual=None):
        self.run_steps.append(float(t))
        out = torch.full_like(x, float(t) / 1000.0)
        if self.rank == 1:
            g = torch.Generator().manual_seed(int(t))
            out = out + 1e-2 * torch.randn(x.shape, generator=g)
        return out


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        result = {}
        model = RankDenoiser(rank)
        policy = etcdiff.ETC(threshold=1e-4, warmup=2)
        etcdiff.sample(model, FlowMatchEulerDiscreteScheduler(), torch.zeros(1, 4), STEPS, policy)
        result["sample"] = {"computed": policy.report().computed_steps, "runs": len(model.run_steps)}

        pipe = make_loop_pipeline()
        pipe.transformer = RankDenoiser(rank)
        etcdiff.enable(pipe, etcdiff.ETC(threshold=1e-4, warmup=2))
        pipe(STEPS)
        report = etcdiff.last_report(pipe)
        result["hook"] = {"computed": report.computed_steps, "runs": len(pipe.transformer.run_steps)}
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(result, f)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ranks_agree_on_every_skip(tmp_path) -> None:
    # fork: the children start with etcdiff and diffusers already imported (spawn re-imports them, ~20 s each)
    mp.start_processes(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True, start_method="fork")
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    for path in ("sample", "hook"):
        assert r0[path] == r1[path]
        # rank 1's correction is always over the tolerance: with one decision, both run every step
        assert r0[path]["computed"] == list(range(STEPS)) and r0[path]["runs"] == STEPS


def test_a_single_process_skips_as_before() -> None:
    model = RankDenoiser(0)
    policy = etcdiff.ETC(threshold=1e-4, warmup=2)
    etcdiff.sample(model, FlowMatchEulerDiscreteScheduler(), torch.zeros(1, 4), STEPS, policy)
    # alone, rank 0's line is followed by the trend: step 3 is estimated (so agreement above is what runs it)
    computed = policy.report().computed_steps
    assert computed[:4] == [0, 1, 2, 4] and len(computed) < STEPS
