"""Embedded held-out model: a tiny class-conditional epsilon-prediction UNet on 16x16 digits (DDIM, DPM-Solver++)."""

from .model import build_models, load_models
from .pipeline import UNetDigitsPipeline

__all__ = ["UNetDigitsPipeline", "build_models", "load_models"]
