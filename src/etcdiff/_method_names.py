"""The names of the step-level methods, for errors that say which methods run where ("methods that run on it").

The method registry (a layer above) keeps this list current as methods are registered, so that a policy or an
integration can name them without importing the registry. No torch import here: the registry loads without it.
"""

from __future__ import annotations

#: every registered step method, in registration order (kept by ``etcdiff.registry.register``)
STEP_METHODS: list[str] = []
#: every registered block method (transformer block caches), likewise
BLOCK_METHODS: list[str] = []


def step_method_names() -> list[str]:
    """The step-level methods, which run on any denoiser (``none``, the full-step reference, left out)."""
    return [name for name in STEP_METHODS if name != "none"]


def block_method_names() -> list[str]:
    """The block-level methods, which run on the transformer families the block caches know."""
    return list(BLOCK_METHODS)
