"""cache-dit's DBCache put on a pipeline as it ships.

Pipelines that cache-dit does not know by class name but whose transformer it supports (e.g. the embedded
``DigitsPipeline`` around a DiT) get cache-dit's own registered ``BlockAdapter`` for that transformer.
cache-dit patches the pipeline *class*'s ``__call__`` while enabled (its design), and treats separate
cond/uncond calls as consecutive steps unless ``enable_separate_cfg=True`` is passed (its registry sets that
for Wan and a few others). Its default ``Fn_compute_blocks`` is scaled down, with a warning, on models with
fewer blocks, and a setting larger than the shortest block list is refused here instead of deep in the first
forward.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from typing import TYPE_CHECKING, Any

from .external_support import block_lists, cache_dit_factory

if TYPE_CHECKING:
    from .external_session import ExternalSession


def enable_cache_dit(session: "ExternalSession", pipe: Any, kwargs: dict[str, Any]) -> None:
    import cache_dit

    lists = block_lists(session.model)
    shortest = min((len(lst) for _, lst in lists), default=0)
    defaults = cache_dit.DBCacheConfig()
    if lists and "Fn_compute_blocks" not in kwargs and "Bn_compute_blocks" not in kwargs and \
            max(int(defaults.Fn_compute_blocks), int(defaults.Bn_compute_blocks)) > shortest:
        # a small model: scale cache-dit's default front/back blocks down to it, and say so
        kwargs = {**kwargs, "Fn_compute_blocks": max(1, shortest // 4), "Bn_compute_blocks": 0}
        warnings.warn(
            f"etcdiff: cache-dit's default Fn_compute_blocks={defaults.Fn_compute_blocks} exceeds the {shortest} blocks "
            f"of {type(session.model).__name__}; using Fn_compute_blocks={kwargs['Fn_compute_blocks']}, "
            "Bn_compute_blocks=0 (pass them to choose).", UserWarning, stacklevel=4)
    config = cache_dit.DBCacheConfig(**kwargs)
    # cache-dit asserts this deep inside the first forward; say it here instead
    fn, bn = int(config.Fn_compute_blocks), int(config.Bn_compute_blocks)
    if lists and max(fn, bn) > shortest:
        raise ValueError(
            f"etcdiff: cache-dit's Fn_compute_blocks={fn} / Bn_compute_blocks={bn} exceed the {shortest} blocks of "
            f"{type(session.model).__name__}'s shortest block list ({', '.join(f'{n}: {len(b)}' for n, b in lists)}); "
            "pass smaller Fn_compute_blocks / Bn_compute_blocks."
        )
    factory = cache_dit_factory(pipe)
    target = pipe if factory == "pipe" else factory(pipe)
    session.config = config
    session.target = cache_dit.enable_cache(target, cache_config=config)
    if session.target is None:
        session.target = target



def remove_cache_dit(session: "ExternalSession") -> None:
    """cache-dit's own ``disable_cache`` (its log lines go to a buffer)."""
    if session.target is not None:
        import cache_dit

        with contextlib.redirect_stderr(io.StringIO()):
            cache_dit.disable_cache(session.target)
