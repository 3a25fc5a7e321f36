"""The processes of a sweep: which one this is, and meeting the others, through a ``torch.distributed`` gloo group.

One process needs no launcher and no group. With several (``accelerate launch --multi_gpu`` or ``torchrun`` set
``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``), the processes meet through ``torch.distributed``'s
``env://`` rendezvous and form a gloo group of their own, used only to check that they all run the same sweep
and for the barrier before rank 0 merges. The group is deliberately not made the default process group
(``init_process_group``): a library that sees one (cache-dit all-reduces its cache decision across ranks) would
change its behaviour, and the processes run different (prompt, seed) pairs.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

#: How long the processes wait for each other unless told otherwise: long enough for the slowest share.
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
    """This process (``rank`` of ``world``, by default from the environment) and its gloo group; a context manager.

    ``timeout`` (seconds) bounds :meth:`wait_for_all`; None waits up to :data:`DEFAULT_TIMEOUT`.
    """

    def __init__(self, rank: int | None = None, world: int | None = None, timeout: float | None = None) -> None:
        self.timeout = DEFAULT_TIMEOUT if timeout is None else timedelta(seconds=timeout)
        self.rank, self.world = launch_rank() if rank is None or world is None else (rank, world)
        if not 0 <= self.rank < self.world:
            raise ValueError(f"bad process rank {self.rank} for {self.world} processes")
        self._group: Any = None
        if self.world > 1:
            missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v)]
            if missing:
                raise ValueError(f"{self.world} processes but {' and '.join(missing)} not set: launch with "
                                 "`accelerate launch --multi_gpu` or `torchrun`, or set MASTER_ADDR and MASTER_PORT")
            store, _, _ = next(dist.rendezvous("env://", rank=self.rank, world_size=self.world, timeout=DEFAULT_TIMEOUT))
            self._group = dist.ProcessGroupGloo(dist.PrefixStore("etcdiff-bench", store), self.rank, self.world,
                                                max(self.timeout, DEFAULT_TIMEOUT))

    def __enter__(self) -> "Processes":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._group = None  # closes the group's connections

    def same_everywhere(self, text: str) -> bool:
        """Whether every process passes the same ``text`` (an ASCII string of the same length on every process)."""
        if self._group is None:
            return True
        mine = torch.tensor(list(text.encode()), dtype=torch.uint8)
        everyone = [torch.empty_like(mine) for _ in range(self.world)]
        try:
            self._group.allgather([everyone], [mine]).wait()
        except RuntimeError as e:
            raise RuntimeError(f"another process of the sweep stopped before the sweep began (see its error): {e}") from e
        return all(torch.equal(t, mine) for t in everyone)

    def wait_for_all(self) -> str | None:
        """Wait until every process gets here (at most ``timeout``); None when all did, else why not (a process died
        or is still running)."""
        if self._group is None:
            return None
        try:
            self._group.monitored_barrier(self.timeout, True)
        except RuntimeError as e:
            return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return None
