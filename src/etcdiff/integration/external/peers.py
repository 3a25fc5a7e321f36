"""The real peers, run as they ship: diffusers' cache hooks and cache-dit's DBCache.

``enable_external(pipe, name, **kwargs)`` / ``disable_external(pipe)`` with ``name`` one of
:data:`EXTERNAL_PEERS`:

* ``"diffusers-fbc"``: ``FirstBlockCacheConfig(**kwargs)`` (threshold 0.05 by default);
* ``"diffusers-magcache"``: ``MagCacheConfig(**kwargs)``; it needs ``mag_ratios`` or ``calibrate=True``
  (FLUX's ship with diffusers). With ``calibrate=True`` nothing is skipped and diffusers prints the ratios at
  the end of the run: :func:`diffusers_magcache_ratios` runs that and returns them;
* ``"diffusers-taylorseer"``: ``TaylorSeerCacheConfig(**kwargs)``;
* ``"diffusers-seacache"``, ``"diffusers-fastercache"``, ``"diffusers-pab"``: ``SeaCacheConfig``,
  ``FasterCacheConfig``, ``PyramidAttentionBroadcastConfig`` (:mod:`~etcdiff.integration.external.diffusers_more_caches`);
* ``"cache-dit"``: ``cache_dit.enable_cache(pipe, cache_config=DBCacheConfig(**kwargs))``;
* ``"deepcache"``: the ``deepcache`` package's ``DeepCacheSDHelper`` on UNet pipelines
  (:mod:`~etcdiff.integration.external.deepcache_adapter`).

Two-expert pipelines (Wan 2.2: ``transformer`` and ``transformer_2``) get the peer on both experts, and both
are restored by ``disable_external``. A denoiser module shared with another pipeline that has a method on it is
refused (:mod:`~etcdiff.integration.denoiser_owners`).

How each is put on: :mod:`~etcdiff.integration.external.diffusers_adapter`,
:mod:`~etcdiff.integration.external.cache_dit_adapter`. Where a peer cannot run on a model, :func:`enable_external`
raises a ``NotImplementedError`` naming the model class and the peers that do run on it
(:mod:`~etcdiff.integration.external.support`). ``disable_external`` removes the peer with its own disable
function, then removes what those leave behind (:mod:`~etcdiff.integration.external.snapshot`), so that the
modules and the pipeline class are exactly as before. The counts are in
:mod:`~etcdiff.integration.external.session`.
"""

from __future__ import annotations

import ast
import contextlib
import io
from typing import Any

import torch

from .cache_dit_adapter import enable_cache_dit, remove_cache_dit
from .deepcache_adapter import enable_deepcache, remove_deepcache
from .diffusers_adapter import enable_diffusers_cache, remove_diffusers_cache
from .session import ExternalReport, ExternalSession, probe_layer
from ..denoiser_owners import claim, refuse_other_kind, release
from .support import (EXTERNAL_PEERS, check_external, find_denoisers,  # noqa: F401 (public names)
                               supported_external_peers)
from .snapshot import Snapshot, hide_added_submodules
from ..session_hook import SessionRegistry

_SESSIONS = SessionRegistry("external", "external peer")


def enable_external(pipe: Any, name: str, **kwargs: Any) -> Any:
    """Run an external peer on ``pipe`` as it ships; returns its config (or cache-dit's adapted object).

    ``kwargs`` go to the peer's config (``FirstBlockCacheConfig``, ``MagCacheConfig``, ``TaylorSeerCacheConfig``,
    ``cache_dit.DBCacheConfig``). Enabling again replaces the previous peer.
    """
    check_external(pipe, name)
    refuse_other_kind(pipe, "external")
    if pipe in _SESSIONS:
        disable_external(pipe)
    models = find_denoisers(pipe)
    scheduler = getattr(pipe, "scheduler", None)
    if scheduler is None:
        raise TypeError(f"etcdiff: {type(pipe).__name__} has no `scheduler`; a diffusers pipeline is expected.")
    claim(pipe, models)
    session = ExternalSession(pipe, name, models, dict(kwargs))
    session.snapshot = Snapshot(pipe, models.values())
    try:
        session.tracker.wrap(scheduler)
        if name == "cache-dit":
            enable_cache_dit(session, pipe, kwargs)
        elif name == "deepcache":
            enable_deepcache(session, pipe, kwargs)
        else:
            enable_diffusers_cache(session, name, kwargs)
        session.snapshot.mark()
        probes = []
        for model_name, model in models.items():
            session.handles.append(model.register_forward_pre_hook(session.on_call))
            added = session.snapshot.added_submodules(model)
            if added:
                session.handles.append(hide_added_submodules(model, added))
            probe = probe_layer(model)
            if probe is not None:
                probes.append(probe[0] if len(models) == 1 else f"{model_name}.{probe[0]}")
                session.handles.append(probe[1].register_forward_pre_hook(session.on_block_run))
        session.probe = ", ".join(probes)
    except Exception:
        session.snapshot.mark()
        _teardown(session, pipe)
        raise
    _SESSIONS[pipe] = session
    return session.target if name in ("cache-dit", "deepcache") else session.config


def _teardown(session: ExternalSession, pipe: Any) -> None:
    session.tracker.unwrap()
    for h in session.handles:
        h.remove()
    session.handles = []
    try:
        if session.peer == "cache-dit":
            remove_cache_dit(session)
        elif session.peer == "deepcache":
            remove_deepcache(session)
        else:
            remove_diffusers_cache(session)
    finally:
        if session.snapshot is not None:
            session.snapshot.restore()
        release(pipe, session.models)


def disable_external(pipe: Any) -> None:
    """Remove the external peer; the denoiser, the scheduler and the pipeline (and its class) are as before."""
    session = _SESSIONS.pop(pipe, None)
    if session is not None:
        _teardown(session, pipe)


def external_report(pipe: Any) -> ExternalReport:
    """Counts of the pipeline's last finished generation with the external peer."""
    return _SESSIONS.report(pipe)


def is_external_enabled(pipe: Any) -> bool:
    return pipe in _SESSIONS


@torch.no_grad()
def diffusers_magcache_ratios(pipe: Any, **call_kwargs: Any) -> list[list[float]]:
    """diffusers' own MagCache calibration: one ``MagCacheConfig(calibrate=True)`` run of ``pipe(**call_kwargs)``.

    diffusers prints the ratios (one list per cache context, e.g. cond and uncond) at the end of the run;
    they are captured and returned. Pass them as ``enable_external(pipe, "diffusers-magcache", mag_ratios=...)``.
    """
    if pipe in _SESSIONS:
        raise RuntimeError("etcdiff: an external peer is enabled on this pipeline; disable it first.")
    enable_external(pipe, "diffusers-magcache", calibrate=True)
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            pipe(**call_kwargs)
    finally:
        disable_external(pipe)
    lists = []
    lines = buf.getvalue().splitlines()
    for i, line in enumerate(lines):
        if "[MagCache] Calibration Complete" in line and i + 1 < len(lines):
            lists.append([float(v) for v in ast.literal_eval(lines[i + 1].strip())])
    if not lists:
        raise RuntimeError("etcdiff: diffusers' MagCache calibration printed no ratios (did the run finish?).")
    return lists
