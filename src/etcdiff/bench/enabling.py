"""The bench's one contact with the method lookup: put a (method, setting) on a pipeline and take it off again."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from .. import disable, enable, last_report
from .schedule import REFERENCE_METHOD, MethodSetting


@dataclass(frozen=True)
class EnabledMethod:
    """A method on a pipeline: its policy (or cache object), and the report of the pipeline's last call."""

    pipe: Any
    policy: Any

    def report(self) -> Any:
        return last_report(self.pipe)


@contextmanager
def enabled(pipe: Any, ms: MethodSetting | None) -> Iterator[EnabledMethod]:
    """``pipe`` with the method and setting of ``ms`` on it (``None``: the full-step reference) inside the block.

    The method is taken off on leaving the block, and also when enabling it fails half-way.
    """
    try:
        policy = enable(pipe, REFERENCE_METHOD if ms is None else ms.method, **({} if ms is None else ms.kwargs))
        yield EnabledMethod(pipe, policy)
    finally:
        disable(pipe)
