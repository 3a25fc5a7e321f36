"""Block rules: decide per denoiser call whether the transformer's block stack runs."""
