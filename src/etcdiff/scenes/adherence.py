"""Prompt adherence for scenes images, our stand-in for a CLIP score; analytic, no weights.

For every object a prompt asks for, look at its grid cell and read what is drawn there:

1. Background: the image's median colour (objects cover at most ~15 % of the image). Pixels further than
   ``FG_DIST`` (RGB distance) from it are foreground.
2. Colour: the median of the cell's strongest foreground pixels, snapped to the nearest of the grammar's
   eight colours.
3. Shape and size: the cell's foreground mask is compared (IoU) with every shape x size template, rendered by
   the scene renderer's own geometry at half-pixel offsets covering the generator's +-2 px jitter; the best match wins.

An object counts as right when its cell holds at least ``MIN_PIXELS`` foreground pixels and the colour and
shape read there are the requested ones. ``score`` is the fraction of requested objects that are right.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from .grammar import COLORS, SHAPES, SIZES, SceneObject, parse_prompt
from .render import CELL, IMAGE_SIZE, RADIUS, RGB, SUPERSAMPLE, cell_center, shape_mask

FG_DIST = 0.25
MIN_PIXELS = 10
OFFSETS = np.arange(-3.0, 3.01, 0.5)
_PALETTE = np.array([RGB[c] for c in COLORS], dtype=np.float32)


@dataclass(frozen=True)
class ObjectReading:
    """What the checker read in one requested object's cell, and whether it matches the request."""

    requested: SceneObject
    pixels: int
    color: str | None
    shape: str | None
    size: str | None
    iou: float

    @property
    def correct(self) -> bool:
        return self.pixels >= MIN_PIXELS and self.color == self.requested.color and self.shape == self.requested.shape


def cell_slice(cell: tuple[int, int]) -> tuple[slice, slice]:
    """Pixel rows/cols of a grid cell (rounded outwards)."""
    r, c = cell
    return (slice(int(np.floor(r * CELL)), int(np.ceil((r + 1) * CELL))),
            slice(int(np.floor(c * CELL)), int(np.ceil((c + 1) * CELL))))


@lru_cache(maxsize=9)
def _templates(cell: tuple[int, int]) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Boolean templates [K, h, w] of every (shape, size) at every offset, cropped to ``cell``; and their labels.

    Each shape is drawn once, supersampled, on the cell grown by the largest offset; a half-pixel offset is then
    an exact shift by ``SUPERSAMPLE / 2`` fine pixels, so every offset is a crop of that one drawing.
    """
    rows, cols = cell_slice(cell)
    h, w, s = rows.stop - rows.start, cols.stop - cols.start, SUPERSAMPLE
    m = int(round(max(abs(OFFSETS)) * s))  # margin in fine pixels
    ys = rows.start + (np.arange(-m, h * s + m, dtype=np.float32) + 0.5) / s
    xs = cols.start + (np.arange(-m, w * s + m, dtype=np.float32) + 0.5) / s
    x, y = np.meshgrid(xs, ys, indexing="xy")
    cx, cy = cell_center(cell)
    shifts = [int(round(o * s)) for o in OFFSETS]
    masks, labels = [], []
    for shape in SHAPES:
        for size in SIZES:
            big = shape_mask(shape, cx, cy, RADIUS[size], x, y).astype(np.float32)
            crops = np.stack([big[m - dy : m - dy + h * s, m - dx : m - dx + w * s] for dy in shifts for dx in shifts])
            masks.append(crops.reshape(-1, h, s, w, s).mean(axis=(2, 4)) >= 0.5)
            labels += [(shape, size)] * len(crops)
    return np.concatenate(masks), labels


def to_array(image: Any) -> np.ndarray:
    """An image as float32 [64, 64, 3] in [0, 1], from a PIL image, a uint8/float array or a [3,H,W] tensor."""
    if hasattr(image, "convert"):  # PIL
        image = np.asarray(image.convert("RGB"))
    elif hasattr(image, "detach"):  # torch tensor [3, H, W] in [0, 1]
        image = image.detach().float().cpu().permute(1, 2, 0).numpy()
    arr = np.asarray(image)
    if arr.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise ValueError(f"adherence needs a {IMAGE_SIZE}x{IMAGE_SIZE} RGB image, got shape {arr.shape}")
    return arr.astype(np.float32) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float32)


def read_objects(image: Any, prompt: str) -> list[ObjectReading]:
    """Read colour, shape and size in the cell of every object ``prompt`` asks for."""
    img = to_array(image)
    bg = np.median(img.reshape(-1, 3), axis=0)
    dist = np.linalg.norm(img - bg, axis=-1)
    readings = []
    for obj in parse_prompt(prompt):
        rows, cols = cell_slice(obj.cell)
        d, px = dist[rows, cols], img[rows, cols]
        fg = d > FG_DIST
        n = int(fg.sum())
        if n < MIN_PIXELS:
            readings.append(ObjectReading(obj, n, None, None, None, 0.0))
            continue
        core = px[d >= 0.6 * d.max()]
        color = COLORS[int(np.argmin(np.linalg.norm(_PALETTE - np.median(core, axis=0), axis=1)))]
        templates, labels = _templates(obj.cell)
        inter = (templates & fg).sum(axis=(1, 2))
        union = (templates | fg).sum(axis=(1, 2))
        iou = inter / np.maximum(union, 1)
        best = int(np.argmax(iou))
        shape, size = labels[best]
        readings.append(ObjectReading(obj, n, color, shape, size, float(iou[best])))
    return readings


def score(image: Any, prompt: str) -> float:
    """Fraction of the prompt's objects drawn with the right colour and shape in the right cell."""
    readings = read_objects(image, prompt)
    return sum(r.correct for r in readings) / len(readings)


def score_many(images: list[Any], prompts: list[str]) -> tuple[float, int, int]:
    """Pooled adherence over many images: (fraction right, objects right, objects requested)."""
    if len(images) != len(prompts):
        raise ValueError(f"got {len(images)} images for {len(prompts)} prompts; pass one image per prompt")
    right = total = 0
    for im, p in zip(images, prompts):
        rs = read_objects(im, p)
        right += sum(r.correct for r in rs)
        total += len(rs)
    return right / max(total, 1), right, total
