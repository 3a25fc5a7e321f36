"""Calibration prompts: a prompt file, the prompts shipped with etcdiff per modality, a pipeline's own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .decode import MODALITIES


def load_prompts(path: str) -> list[str]:
    """One prompt per line; blank lines and lines starting with ``#`` are ignored."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"prompt file not found: {path}")
    prompts = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()]
    prompts = [ln for ln in prompts if ln and not ln.startswith("#")]
    if not prompts:
        raise ValueError(f"no prompts in {path}: write one prompt per line (blank lines and # comments are ignored).")
    return prompts


def default_prompts(modality: str = "image") -> list[str]:
    """The calibration prompts shipped with etcdiff for ``modality`` (about 10, short to long captions)."""
    from importlib.resources import files

    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; choose one of {', '.join(MODALITIES)}.")
    text = (files("etcdiff") / "data" / f"prompts_{modality}.txt").read_text(encoding="utf-8")
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def prompts_for(pipe: Any, modality: str) -> list[str]:
    """The default calibration prompts of ``pipe``: the ``etcdiff_calibration_prompts`` its class declares (the
    embedded models do), else :func:`default_prompts` of ``modality``."""
    own = getattr(pipe, "etcdiff_calibration_prompts", None)
    return list(own) if own else default_prompts(modality)
