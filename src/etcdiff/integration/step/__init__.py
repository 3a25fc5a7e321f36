"""The step wing: the diffusers hook that skips denoiser calls, the generic sampler, run recording."""
