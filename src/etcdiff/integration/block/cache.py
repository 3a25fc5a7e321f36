"""Block-level caches (TeaCache, MagCache) on unmodified diffusers transformers: putting them on and off.

``enable_block_cache(pipe, rule)`` puts a block cache on the pipeline's transformer(s) (``transformer`` and,
for two-expert models such as Wan 2.2, ``transformer_2``); ``disable_block_cache`` removes everything it added.
The model layouts are in :mod:`~etcdiff.integration.block.families`, the per-generation state and the report
in :mod:`~etcdiff.integration.block.session`, the block stand-ins in :mod:`~etcdiff.integration.block.proxy`
and the calibration runs in :mod:`~etcdiff.integration.block.calibration`. The layers before the block stack
(patch/time/text embedders) and after it (output norm and projection) always run.
"""

from __future__ import annotations

import warnings
import weakref
from typing import Any, Callable

import torch

from ...policies import build
from ...policies.block.base import BlockRule, StagedBlockRule
from ...policies.block.dicache import DiCache
from ...policies.block.h2cache import H2Cache
from ...policies.block.magcache import FLUX_MAG_RATIOS, FLUX_MAG_RATIOS_SOURCE, MagCache
from ...policies.block.prompttea import PromptTea
from ...policies.block.teacache import TeaCache
from .families import SUPPORTED_MODELS, Family, default_teacache_coefficients, find_family
from .proxy import build_proxies
from .session import BlockCacheReport, BlockCacheSession
from ..denoiser_owners import CannotRun, claim, refuse_other_kind, release
from ..denoisers import find_transformers
from ..session_hook import SessionRegistry, register

HOOK_NAME = "etcdiff_block_cache"
BLOCK_RULES: dict[str, type] = {"teacache": TeaCache, "magcache": MagCache, "dicache": DiCache, "h2cache": H2Cache,
                                 "prompttea": PromptTea}

_SESSIONS = SessionRegistry("block", "block cache")


def find_block_denoisers(pipe: Any) -> dict[str, tuple[torch.nn.Module, Family]]:
    found = find_transformers(pipe)
    if not found:
        unet = getattr(pipe, "unet", None)
        what = f"a UNet ({type(unet).__name__})" if unet is not None else "no `transformer`"
        raise CannotRun(
            f"etcdiff block cache ({', '.join(BLOCK_RULES)}): {type(pipe).__name__} has {what}; block caches need "
            f"a transformer with a block stack. Supported transformers: {', '.join(SUPPORTED_MODELS)}."
        )
    return {n: (m, find_family(m)) for n, m in found.items()}


def make_block_rule(rule: Any, **kwargs: Any) -> Any:
    """A rule object from a rule or its name (``"teacache"``, ``"magcache"``, ...) with its arguments."""
    if isinstance(rule, (BlockRule, StagedBlockRule)) and not isinstance(rule, type):
        if kwargs:
            raise ValueError(f"etcdiff: arguments {sorted(kwargs)} go with a rule name, not with a rule object.")
        return rule
    if isinstance(rule, str):
        return build(BLOCK_RULES, "block cache", rule, **kwargs)
    names = ", ".join(cls.__name__ for cls in BLOCK_RULES.values())
    raise TypeError(f"etcdiff: a block cache rule must be a rule object ({names}) or a name, got {type(rule).__name__}.")


def _resolve_defaults(rule: Any, denoisers: dict[str, tuple[torch.nn.Module, Family]]) -> None:
    model, fam = next(iter(denoisers.values()))
    if isinstance(rule, TeaCache) and rule.coefficients is None:
        coeffs, source, published = default_teacache_coefficients(model, fam)
        if not published:
            warnings.warn(
                f"etcdiff TeaCache: no published coefficients for {type(model).__name__}; using poly(x) = x, so the "
                "threshold applies to the raw relative change. Calibrate with "
                "etcdiff.integration.block.calibration.calibrate_teacache(pipe, prompts, steps, seed).",
                stacklevel=3,
            )
        rule.set_coefficients(coeffs, source)
    if isinstance(rule, MagCache) and rule.ratios is None:
        if fam.name != "flux":
            raise ValueError(
                f"etcdiff MagCache: no published magnitude ratios for {type(model).__name__}. Record them with "
                "etcdiff.integration.block.calibration.calibrate_magcache(pipe, prompts, steps, seed) and pass "
                "MagCache(ratios=...)."
            )
        rule.set_ratios(FLUX_MAG_RATIOS, FLUX_MAG_RATIOS_SOURCE)


def enable_block_cache(pipe: Any, rule: Any = None, *, record: bool = False, **rule_kwargs: Any) -> Any:
    """Put a block cache on the pipeline's transformer(s); returns the rule.

    ``rule``: a :class:`~etcdiff.policies.block.teacache.TeaCache` or :class:`~etcdiff.policies.block.magcache.MagCache`,
    or its name with arguments (``enable_block_cache(pipe, "teacache", threshold=0.4)``). Coefficients or
    ratios left unset take the published defaults of the model. ``record=True`` (no rule) never skips and
    records calibration signals instead (see :func:`calibrate_teacache`). Enabling again replaces the cache.
    """
    refuse_other_kind(pipe, "block")
    denoisers = find_block_denoisers(pipe)
    scheduler = getattr(pipe, "scheduler", None)
    if scheduler is None:
        raise TypeError(f"etcdiff: {type(pipe).__name__} has no `scheduler`; a diffusers pipeline is expected.")
    if record:
        if rule is not None or rule_kwargs:
            raise ValueError("etcdiff: record mode takes no rule.")
    else:
        if rule is None:
            raise ValueError(
                "etcdiff: enable_block_cache needs a rule: TeaCache(...), MagCache(...), 'teacache' or 'magcache'."
            )
        rule = make_block_rule(rule, **rule_kwargs)
        _resolve_defaults(rule, denoisers)
    if pipe in _SESSIONS:
        disable_block_cache(pipe)
    claim(pipe, {name: model for name, (model, _) in denoisers.items()})
    session = BlockCacheSession(pipe, rule, denoisers, record)
    try:
        for name, (model, fam) in denoisers.items():
            session.proxies[name] = build_proxies(session, model, fam)
        session.tracker.wrap(scheduler)
        for name, (model, fam) in denoisers.items():
            if fam.name == "wan":
                session.handles.append(model.condition_embedder.time_embedder.register_forward_hook(
                    _time_embedding_hook(session)))
            session.registered.append(register(model, session, name, HOOK_NAME))
    except Exception:
        _teardown(session)
        raise
    _SESSIONS[pipe] = session
    return rule


def _time_embedding_hook(session: BlockCacheSession) -> Callable:
    ref = weakref.ref(session)

    def hook(module: torch.nn.Module, inputs: Any, output: Any) -> None:
        s = ref()
        if s is not None and s._current is not None and isinstance(output, torch.Tensor):
            s._current.time_embedding = output

    return hook


def _teardown(session: BlockCacheSession) -> None:
    release(session.pipe_ref(), {name: model for name, (model, _) in session.denoisers.items()})
    session.tracker.unwrap()
    for h in session.handles:
        h.remove()
    session.handles = []
    for reg in session.registered:
        reg.remove()
    session.registered = []


def disable_block_cache(pipe: Any) -> None:
    """Remove what :func:`enable_block_cache` added; the transformers and the scheduler are as before."""
    session = _SESSIONS.pop(pipe, None)
    if session is not None:
        _teardown(session)


def block_cache_report(pipe: Any) -> BlockCacheReport:
    """What the block cache did in the pipeline's last finished generation."""
    return _SESSIONS.report(pipe)


def is_block_cache_enabled(pipe: Any) -> bool:
    return pipe in _SESSIONS



def session_of(pipe: Any) -> BlockCacheSession:
    """The pipeline's block-cache session (for the calibration runs)."""
    return _SESSIONS[pipe]
