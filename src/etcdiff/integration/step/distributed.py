"""One skip decision for every rank when the denoiser runs split over several processes.

Under context or tensor parallelism every rank runs its part of the same denoiser call, and the ranks meet
in collectives inside it. Each rank's policy sees a slightly different output (its own shard, its own
rounding), so left alone the ranks could disagree about a step, and the ranks that run the model would wait
forever for those that skip it. :func:`agree` makes the decision common: the model runs on a step when any
rank wants it to (a max over the default process group), which keeps the safer choice.
"""

from __future__ import annotations

import torch


def agree(compute: bool) -> bool:
    """``compute`` of this rank, made the same on every rank: true if it is true on any rank.

    Without an initialized ``torch.distributed`` process group of more than one rank, returns ``compute``.
    """
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return compute
    device = torch.device("cpu")
    if "nccl" in str(dist.get_backend()).lower():
        device = torch.device("cuda", torch.cuda.current_device())
    flag = torch.tensor([1 if compute else 0], dtype=torch.int32, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())
