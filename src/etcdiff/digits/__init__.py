"""Embedded offline demo: a tiny class-conditional flow-matching DiT on 16x16 digits."""

from .model import build_transformer, load_transformer
from .pipeline import DigitsPipeline

__all__ = ["DigitsPipeline", "build_transformer", "load_transformer"]
