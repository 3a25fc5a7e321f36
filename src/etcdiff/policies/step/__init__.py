"""Step policies: decide per step whether the denoiser runs, and predict its output where it does not."""
