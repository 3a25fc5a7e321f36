"""Rendering scenes to 64x64 RGB images (anti-aliased by 4x supersampling), and the shape/colour geometry.

The image is split into a 3x3 grid of cells (about 21 px each). An object is drawn around its cell's centre
(plus the scene's jitter): "small" objects have a 5 px radius, "large" ones 8.5 px. Colours are fixed RGB
values; the background is dark and unsaturated so that every object colour (white included) stands out.
"""

from __future__ import annotations

import numpy as np

from .grammar import Scene, SceneObject

IMAGE_SIZE = 64
SUPERSAMPLE = 4
CELL = IMAGE_SIZE / 3.0
RADIUS = {"small": 5.0, "large": 8.5}
RGB: dict[str, tuple[float, float, float]] = {
    "red": (0.92, 0.12, 0.10),
    "green": (0.12, 0.78, 0.22),
    "blue": (0.15, 0.30, 0.98),
    "yellow": (0.96, 0.90, 0.12),
    "purple": (0.62, 0.18, 0.85),
    "orange": (1.00, 0.55, 0.05),
    "cyan": (0.10, 0.88, 0.92),
    "white": (0.97, 0.97, 0.97),
}


def cell_center(cell: tuple[int, int]) -> tuple[float, float]:
    """Pixel coordinates (x, y) of a grid cell's centre."""
    row, col = cell
    return (col + 0.5) * CELL, (row + 0.5) * CELL


def shape_mask(shape: str, cx: float, cy: float, r: float, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Boolean mask of ``shape`` centred at (cx, cy) with radius ``r`` on the coordinate grids ``x``, ``y``."""
    dx, dy = x - cx, y - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "ring":
        d2 = dx * dx + dy * dy
        return (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)
    if shape == "square":
        h = 0.85 * r
        return (np.abs(dx) <= h) & (np.abs(dy) <= h)
    if shape == "cross":
        w = 0.32 * r
        return ((np.abs(dx) <= w) & (np.abs(dy) <= r)) | ((np.abs(dy) <= w) & (np.abs(dx) <= r))
    if shape == "triangle":  # pointing up, apex at -r, base at +0.75 r
        top, base = -r, 0.75 * r
        frac = (dy - top) / (base - top)
        return (dy >= top) & (dy <= base) & (np.abs(dx) <= frac * r)
    raise ValueError(f"unknown shape {shape!r}")


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    coords = (np.arange(size, dtype=np.float32) + 0.5) * (IMAGE_SIZE / size)
    return np.meshgrid(coords, coords, indexing="xy")


_HI = _grid(IMAGE_SIZE * SUPERSAMPLE)
_LO = _grid(IMAGE_SIZE)


def render_background(scene: Scene) -> np.ndarray:
    """The background alone, float32 [64, 64, 3] in [0, 1]."""
    bg = scene.background
    img = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.float32)
    img[:] = np.asarray(bg.rgb, dtype=np.float32)
    if bg.texture_amp > 0:
        x, y = _LO
        fx, fy = bg.texture_freq
        wave = np.sin(2 * np.pi * (fx * x + fy * y) / IMAGE_SIZE + bg.texture_phase)
        wave += 0.5 * np.sin(2 * np.pi * (fy * x - fx * y) / IMAGE_SIZE * 1.7 + 2 * bg.texture_phase)
        img += (bg.texture_amp * wave / 1.5)[..., None].astype(np.float32)
    return img


def object_coverage(obj: SceneObject, jitter: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of one object, float32 [64, 64]."""
    cx, cy = cell_center(obj.cell)
    hi = shape_mask(obj.shape, cx + jitter[0], cy + jitter[1], RADIUS[obj.size], *_HI).astype(np.float32)
    s = SUPERSAMPLE
    return hi.reshape(IMAGE_SIZE, s, IMAGE_SIZE, s).mean(axis=(1, 3))


def render(scene: Scene) -> np.ndarray:
    """Render a scene: float32 array [64, 64, 3] in [0, 1]."""
    img = render_background(scene)
    for obj, jit in zip(scene.objects, scene.jitter):
        a = object_coverage(obj, jit)[..., None]
        img = img * (1 - a) + a * np.asarray(RGB[obj.color], dtype=np.float32)
    return np.clip(img, 0.0, 1.0)


def render_uint8(scene: Scene) -> np.ndarray:
    """Render a scene as uint8 [64, 64, 3]."""
    return (render(scene) * 255.0 + 0.5).astype(np.uint8)
