"""The processes of a sweep: which one this is, and meeting the others, through a ``torch.distributed`` gloo group.

One process needs no launcher and no group. With several (``accelerate launch --multi_gpu`` or ``torchrun`` set
``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``), each joins a gloo process group on the CPU; the
group only checks that every process runs the same sweep and lets rank 0 wait for the others before it merges.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import torch.distributed as dist

#: How long a collective may wait unless told otherwise: long enough for the slowest share of a sweep.
DEFAULT_TIMEOUT = timedelta(days=7)

_ENV_PAIRS = (("RANK", "WORLD_SIZE"), ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"), ("PMI_RANK", "PMI_SIZE"))


def launch_rank() -> tuple[int, int]:
    """``(rank, world size)`` from the environment (torchrun/accelerate, or MPI); ``(0, 1)`` if unset."""
    for r, w in _ENV_PAIRS:
        if os.environ.get(w):
            rank, world = int(os.environ.get(r, "0")), int(os.environ[w])
            if not 0 <= rank < world:
                raise ValueError(f"bad process rank: {r}={rank} with {w}={world}")
            return rank, world
    return 0, 1


class Processes:
    """This process (``rank`` of ``world``) and, when ``world > 1``, the gloo group it joined; a context manager.

    ``rank``/``world`` default to the environment's. An already initialised ``torch.distributed`` group is used as
    it is (and left open); otherwise the group is created from ``MASTER_ADDR``/``MASTER_PORT`` and destroyed on exit.
    ``timeout`` (seconds) bounds :meth:`wait_for_all`; None waits up to :data:`DEFAULT_TIMEOUT`.
    """

    def __init__(self, rank: int | None = None, world: int | None = None, timeout: float | None = None) -> None:
        self.timeout = DEFAULT_TIMEOUT if timeout is None else timedelta(seconds=timeout)
        self._own = False
        if dist.is_available() and dist.is_initialized():
            self.rank, self.world = dist.get_rank(), dist.get_world_size()
            if (rank, world) not in ((None, None), (self.rank, self.world)):
                raise ValueError(f"rank {rank} of {world} asked, but torch.distributed is already set up as rank "
                                 f"{self.rank} of {self.world}: leave rank and world out")
            return
        self.rank, self.world = launch_rank() if rank is None or world is None else (rank, world)
        if not 0 <= self.rank < self.world:
            raise ValueError(f"bad process rank {self.rank} for {self.world} processes")
        if self.world > 1:
            missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v)]
            if missing:
                raise ValueError(f"{self.world} processes but {' and '.join(missing)} not set: launch with "
                                 "`accelerate launch --multi_gpu` or `torchrun`, or set MASTER_ADDR and MASTER_PORT")
            dist.init_process_group("gloo", init_method="env://", rank=self.rank, world_size=self.world,
                                    timeout=max(self.timeout, DEFAULT_TIMEOUT))
            self._own = True

    def __enter__(self) -> "Processes":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._own and dist.is_initialized():
            dist.destroy_process_group()
        self._own = False

    def all_gather(self, obj: Any) -> list[Any]:
        """``obj`` of every process, by rank."""
        if self.world == 1:
            return [obj]
        gathered: list[Any] = [None] * self.world
        try:
            dist.all_gather_object(gathered, obj)
        except RuntimeError as e:
            raise RuntimeError(f"another process of the sweep stopped before the sweep began (see its error): {e}") from e
        return gathered

    def wait_for_all(self) -> str | None:
        """Wait until every process gets here (at most ``timeout``); None when all did, else why not."""
        if self.world == 1:
            return None
        try:
            dist.monitored_barrier(timeout=self.timeout, wait_all_ranks=True)
        except RuntimeError as e:  # a process died or is still running
            return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return None
