"""The block wing: block caches that run a transformer's head and tail and reuse its block residual."""
