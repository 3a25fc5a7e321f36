"""The scenes caption grammar: vocabulary, seeded scene sampling, captions and strict prompt parsing.

A prompt names 1 to 3 objects joined by " and "; each object is ``"a" SIZE COLOR SHAPE WHERE``, for example
``"a large red circle at the top left and a small blue square in the center"``. Every object sits in its own
cell of a 3x3 grid. Anything outside this grammar is rejected with a ``ValueError`` that names the offending
word and lists the vocabulary.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

SIZES: tuple[str, ...] = ("small", "large")
COLORS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange", "cyan", "white")
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "ring", "cross")
# phrase -> (row, col) of the 3x3 grid, row 0 at the top
WHERE: dict[str, tuple[int, int]] = {
    "at the top left": (0, 0), "at the top": (0, 1), "at the top right": (0, 2),
    "at the left": (1, 0), "in the center": (1, 1), "at the right": (1, 2),
    "at the bottom left": (2, 0), "at the bottom": (2, 1), "at the bottom right": (2, 2),
}
CELL_PHRASE: dict[tuple[int, int], str] = {cell: phrase for phrase, cell in WHERE.items()}
MAX_OBJECTS = 3

_PLACE_WORDS = ("at", "in", "the", "top", "bottom", "left", "right", "center")
WORDS: tuple[str, ...] = ("a", "and", *SIZES, *COLORS, *SHAPES, *_PLACE_WORDS)


@dataclass(frozen=True)
class SceneObject:
    """One requested object: its size, colour, shape and grid cell (row, col)."""

    size: str
    color: str
    shape: str
    cell: tuple[int, int]

    def phrase(self) -> str:
        return f"a {self.size} {self.color} {self.shape} {CELL_PHRASE[self.cell]}"


@dataclass(frozen=True)
class Background:
    """Background colour (RGB in [0, 1]) and soft texture parameters (0 amplitude = plain)."""

    rgb: tuple[float, float, float]
    texture_amp: float
    texture_freq: tuple[float, float]
    texture_phase: float


@dataclass(frozen=True)
class Scene:
    """A full scene: objects (in caption order), background and per-object render jitter (pixels)."""

    objects: tuple[SceneObject, ...]
    background: Background
    jitter: tuple[tuple[float, float], ...]

    @property
    def caption(self) -> str:
        return caption(self.objects)


def vocabulary_text() -> str:
    """The grammar in one line, for error messages."""
    return (
        f"prompt := object (' and ' object){{0,{MAX_OBJECTS - 1}}}; object := 'a' SIZE COLOR SHAPE WHERE; "
        f"SIZE in {list(SIZES)}; COLOR in {list(COLORS)}; SHAPE in {list(SHAPES)}; WHERE in {list(WHERE)}"
    )


def caption(objects: tuple[SceneObject, ...] | list[SceneObject]) -> str:
    """The exact caption of a list of objects, in the given order."""
    return " and ".join(o.phrase() for o in objects)


def _fail(msg: str) -> ValueError:
    return ValueError(f"{msg}. The scenes grammar is: {vocabulary_text()}")


def _parse_where(words: list[str], i: int, prompt: str) -> tuple[tuple[int, int], int]:
    """Longest WHERE phrase starting at ``words[i]``; returns (cell, next index)."""
    for n in (4, 3):
        chunk = words[i : i + n]
        if len(chunk) == n and " ".join(chunk) in WHERE:
            return WHERE[" ".join(chunk)], i + n
    got = " ".join(words[i : i + 4]) or "<end of prompt>"
    raise _fail(f"expected a position (WHERE) at {got!r} in prompt {prompt!r}")


def parse_prompt(prompt: str) -> list[SceneObject]:
    """Parse a prompt of the grammar into its objects; raise ``ValueError`` naming the problem otherwise."""
    if not isinstance(prompt, str):
        raise TypeError(f"a scenes prompt must be a str, got {type(prompt).__name__}")
    words = prompt.lower().replace(",", " ").split()
    if not words:
        raise _fail("empty prompt: name at least one object, e.g. 'a small red circle in the center'")
    for w in words:
        if w not in WORDS:
            raise _fail(f"unknown word {w!r} in prompt {prompt!r}")
    objects: list[SceneObject] = []
    i = 0
    while True:
        slots = words[i : i + 4]
        want = (("a",), SIZES, COLORS, SHAPES)
        names = ("'a'", "SIZE", "COLOR", "SHAPE")
        for k, (options, name) in enumerate(zip(want, names)):
            got = slots[k] if k < len(slots) else "<end of prompt>"
            if got not in options:
                raise _fail(f"expected {name} but got {got!r} (word {i + k + 1}) in prompt {prompt!r}")
        cell, i = _parse_where(words, i + 4, prompt)
        if any(o.cell == cell for o in objects):
            raise _fail(f"two objects in the same cell {CELL_PHRASE[cell]!r} in prompt {prompt!r}; each needs its own")
        objects.append(SceneObject(slots[1], slots[2], slots[3], cell))
        if i == len(words):
            break
        if words[i] != "and":
            raise _fail(f"expected 'and' or the end of the prompt but got {words[i]!r} in prompt {prompt!r}")
        i += 1
        if len(objects) == MAX_OBJECTS:
            raise _fail(f"too many objects in prompt {prompt!r}: at most {MAX_OBJECTS}")
    return objects


def sample_objects(rng: random.Random, n: int | None = None) -> tuple[SceneObject, ...]:
    """Draw 1..3 (or ``n``) objects with distinct cells and uniform attributes."""
    n = rng.randint(1, MAX_OBJECTS) if n is None else n
    if not 1 <= n <= MAX_OBJECTS:
        raise ValueError(f"a scene holds 1..{MAX_OBJECTS} objects, got n={n}")
    cells = rng.sample(sorted(CELL_PHRASE), n)
    return tuple(SceneObject(rng.choice(SIZES), rng.choice(COLORS), rng.choice(SHAPES), c) for c in cells)


def sample_background(rng: random.Random) -> Background:
    """A dark, low-saturation background; half the time plain, otherwise with a soft sinusoidal texture."""
    value = rng.uniform(0.06, 0.32)
    tint = [rng.uniform(-0.05, 0.05) for _ in range(3)]
    rgb = tuple(min(1.0, max(0.0, value + t)) for t in tint)
    textured = rng.random() < 0.5
    return Background(
        rgb=rgb,  # type: ignore[arg-type]
        texture_amp=rng.uniform(0.02, 0.06) if textured else 0.0,
        texture_freq=(rng.uniform(0.5, 2.5), rng.uniform(0.5, 2.5)),
        texture_phase=rng.uniform(0.0, 6.2832),
    )


def sample_scene(rng: random.Random, n: int | None = None) -> Scene:
    """A random scene: objects, background and a small position jitter per object (up to +-2 px)."""
    objects = sample_objects(rng, n)
    jitter = tuple((rng.uniform(-2.0, 2.0), rng.uniform(-2.0, 2.0)) for _ in objects)
    return Scene(objects, sample_background(rng), jitter)


def scene_from_prompt(prompt: str, rng: random.Random | None = None) -> Scene:
    """The ground-truth scene for a prompt (plain mid-dark background, no jitter unless ``rng`` is given)."""
    objects = tuple(parse_prompt(prompt))
    if rng is None:
        return Scene(objects, Background((0.15, 0.15, 0.17), 0.0, (1.0, 1.0), 0.0), tuple((0.0, 0.0) for _ in objects))
    jitter = tuple((rng.uniform(-2.0, 2.0), rng.uniform(-2.0, 2.0)) for _ in objects)
    return Scene(objects, sample_background(rng), jitter)


def sample_prompts(n: int, seed: int) -> list[str]:
    """``n`` seeded random prompts of the grammar (distinct seeds give the held-out and calibration sets)."""
    rng = random.Random(seed)
    return [caption(sample_objects(rng)) for _ in range(n)]


EVAL_SEED = 20261122
CALIBRATION_SEED = 777


def held_out_prompts(n: int = 200, seed: int = EVAL_SEED) -> list[str]:
    """The held-out evaluation prompts."""
    return sample_prompts(n, seed)


def calibration_prompts(n: int = 10, seed: int = CALIBRATION_SEED) -> list[str]:
    """Prompts for calibration: another seed than the held-out set, and none of the held-out prompts."""
    held_out = set(held_out_prompts())
    return [p for p in sample_prompts(n + 10, seed) if p not in held_out][:n]
