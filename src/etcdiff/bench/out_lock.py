"""One sweep process per rank on an ``--out`` folder at a time: a lock file per rank.

The ranks of one ``accelerate``/``torchrun`` sweep hold different locks and share the folder; a second sweep
started on the same folder (whose rank 0 asks for the lock that the first one's rank 0 holds) is refused with
one line, so that two sweeps never run the same runs twice or time each other's load.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any


class OutFolderBusy(RuntimeError):
    """Another bench process holds this rank's lock on the folder."""


class OutLock:
    """``with OutLock(out, rank):`` holds ``out/.bench-rank<R>.lock`` (an OS lock, freed when the process ends,
    even on a crash), or raises :class:`OutFolderBusy` naming the process that holds it."""

    def __init__(self, out: Path, rank: int = 0) -> None:
        self.path = Path(out) / f".bench-rank{rank}.lock"
        self._file: Any = None

    def __enter__(self) -> "OutLock":
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not a POSIX system: no lock
            return self
        f = open(self.path, "a+")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise OutFolderBusy(f"--out {self.path.parent} is in use by another etcdiff bench ({holder}); wait "
                                "for it to finish, or give this sweep another --out.") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        f.flush()
        self._file = f
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._file is not None:
            self._file.close()  # closing frees the lock
            self._file = None
