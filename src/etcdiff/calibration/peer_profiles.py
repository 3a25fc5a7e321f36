"""Offline calibration of the peers that need one (``etcdiff calibrate --method ertacache|teacache|magcache``).

Each writes a small JSON next to ETC's profiles (same folders, see :mod:`etcdiff.calibration.profile`), named
``<slug>_<N>steps_<method>.json``: ERTACache's fitted schedule and coefficients, TeaCache's polynomial
coefficients, MagCache's magnitude ratios. ``etcdiff.enable(pipe, method)`` finds it when no explicit setting
is given.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from .profile import normalize_identity, now_iso, package_versions, profile_dir, profile_filename, search_dirs

PEER_METHODS = ("ertacache", "teacache", "magcache")
PEER_FORMAT = 1


def calibrate_peer(
    pipe: Any, method: str, prompts: Sequence[str], steps: int, seed: int, *,
    threshold: float = 0.2, guidance_scale: float | None = None,
) -> dict[str, Any]:
    """Full runs over ``prompts`` and the method's fit; returns the settings ``enable`` takes for it."""
    from ..models import call_kwargs

    if method not in PEER_METHODS:
        raise ValueError(f"no offline calibration for {method!r}; methods with one: {', '.join(PEER_METHODS)}.")
    if not prompts:
        raise ValueError("no calibration prompts given.")
    if method == "ertacache":
        from ..integration.recording import record_pipeline
        from ..policies.ertacache import fit_ertacache

        trajectories = [
            record_pipeline(pipe, **call_kwargs(pipe, p, steps, seed, guidance_scale), output_type="latent")[0]
            for p in prompts
        ]
        return {"profile": fit_ertacache(trajectories, threshold).to_dict()}
    from ..integration.block_calibration import calibrate_magcache, calibrate_teacache

    extra = {} if guidance_scale is None else {"guidance_scale": guidance_scale}
    if method == "teacache":
        return {"coefficients": list(calibrate_teacache(pipe, list(prompts), steps, seed, **extra).coefficients)}
    return {"ratios": list(calibrate_magcache(pipe, list(prompts), steps, seed, **extra).ratios)}


def save_peer_profile(identity: str, method: str, steps: int, settings: dict[str, Any],
                      out: str | os.PathLike | None = None, **meta: Any) -> Path:
    """Write the method's settings to ``out``: a ``.json`` file, or a folder (default :func:`profile_dir`) that
    gets ``<slug>_<N>steps_<method>.json``."""
    target = Path(out).expanduser() if out is not None else profile_dir()
    path = target if target.suffix.lower() == ".json" else target / profile_filename(identity, steps, suffix=f"_{method}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"format": PEER_FORMAT, "method": method, "identity": identity, "steps": steps, "settings": settings,
           "created": now_iso(), "versions": package_versions(), **meta}
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return path


def find_peer_profile(identity: str, method: str, steps: int | None = None,
                      directory: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """The saved settings document of ``method`` for the model ``identity`` (nearest step count), or ``None``."""
    want = normalize_identity(identity)
    for folder in search_dirs(directory):
        docs = []
        for f in sorted(folder.glob(f"*_{method}.json")) if folder.is_dir() else []:
            try:
                doc = json.loads(f.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(doc, dict) and doc.get("method") == method and normalize_identity(str(doc.get("identity"))) == want:
                docs.append(doc)
        if docs:
            docs.sort(key=lambda d: d.get("created", ""), reverse=True)
            return docs[0] if steps is None else min(docs, key=lambda d: abs(int(d["steps"]) - steps))
    return None
