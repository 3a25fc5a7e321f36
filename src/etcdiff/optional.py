"""Optional packages: a missing one is one line that names the extra that brings it, never a traceback."""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Callable, Sequence


class MissingExtra(ImportError):
    """An optional package is not installed; the message names the extra to install."""


def require(module: str, extra: str, purpose: str, dist: str | None = None) -> ModuleType:
    """``import module``, or :class:`MissingExtra` saying ``pip install 'etcdiff[extra]'``."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(f"{purpose} needs {dist or module}, which is not installed; it is in etcdiff's {extra} "
                           f"extra: pip install 'etcdiff[{extra}]'") from None


def run_script(main: Callable[[Sequence[str] | None], None], argv: Sequence[str] | None = None) -> None:
    """Run a script's ``main``; a missing optional package ends it with one line (exit status 2)."""
    try:
        main(argv)
    except MissingExtra as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
