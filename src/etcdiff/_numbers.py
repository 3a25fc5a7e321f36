"""Plain Python numbers from any real-number type a user may pass: int, float, numpy scalars, 0-d tensors."""

from __future__ import annotations

import numbers
from typing import Any


def _scalar(value: Any) -> Any:
    """A 0-d tensor or array, or a one-element numpy scalar, as the Python number it holds; else unchanged."""
    if isinstance(value, bool):
        return value
    if hasattr(value, "ndim") and getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        return value.item()  # torch.tensor(0.1), np.float32(0.1), np.array(3)
    return value


def as_real(value: Any) -> float | None:
    """``value`` as a float when it is a real number (bools excluded), else ``None``."""
    value = _scalar(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def as_int(value: Any) -> int | None:
    """``value`` as an int when it is an integer (bools and floats excluded), else ``None``."""
    value = _scalar(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return None
    return int(value)
