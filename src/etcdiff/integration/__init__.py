"""Integration layer: one wing per kind of method over a shared floor.

- :mod:`.step`: the step hook on diffusers pipelines and :func:`etcdiff.sample`, the generic loop;
- :mod:`.block`: the block caches that reuse a transformer's block residual;
- :mod:`.external`: diffusers' cache hooks and cache-dit, as they ship.

The floor (:mod:`.denoisers`, :mod:`.denoiser_owners`, :mod:`.session_hook`, :mod:`.step_tracker`) is what
the wings share; a wing never imports another wing.
"""
