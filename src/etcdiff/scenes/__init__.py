"""A small text-to-image latent FLUX over procedural scenes: grammar, renderer, VAE, text encoder, pipeline."""

from .grammar import parse_prompt, sample_prompts, sample_scene
from .pipeline import ScenesPipeline

__all__ = ["ScenesPipeline", "parse_prompt", "sample_prompts", "sample_scene"]
