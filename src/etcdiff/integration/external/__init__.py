"""The external wing: diffusers' cache hooks and cache-dit, run as they ship."""
