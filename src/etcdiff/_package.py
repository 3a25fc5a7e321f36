"""Package plumbing importable from every layer: the version, and public names imported on first use."""

from __future__ import annotations

import importlib
from typing import Any, Callable

__version__ = "0.1.0"


def lazy_names(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A PEP 562 ``__getattr__`` for ``package`` that imports ``exports[name]`` (a module relative to the package)
    on first use and keeps the value, so that importing the package costs none of those modules."""
    namespace = importlib.import_module(package).__dict__

    def get(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value
        return value

    return get
