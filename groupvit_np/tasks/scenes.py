"""Procedural scenes for the demo checkpoint: coloured shapes on grey backgrounds, with captions and masks.

Everything is a pure function of an integer seed (a local `numpy.random.Generator`), so training, evaluation,
tests and notebooks can name a scene by its seed. Classes are colour x shape; id 0 is background and id
`1 + 4 * colour + shape` is "a {colour} {shape}". Seed ranges used by the tools are listed in `SEED_RANGES`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

COLOURS = ("red", "green", "blue", "yellow")
SHAPES = ("circle", "square", "triangle", "star")
CLASS_NAMES = tuple(f"{c} {s}" for c in COLOURS for s in SHAPES)  # class id k + 1 is CLASS_NAMES[k]
WORDS = ("a", "and", *COLOURS, *SHAPES)  # every word a caption can contain
PLACES = ("left", "right", "top", "bottom", "middle")  # the words of placed_caption (training captions only)
_RGB = {"red": (215, 45, 40), "green": (40, 170, 60), "blue": (45, 85, 215), "yellow": (225, 205, 40)}

# Disjoint seed ranges: training draws from [0, 10**7), held-out sets start above it.
SEED_RANGES = {
    "train": 0,
    "validation": 20_000_000,
    "test": 30_000_000,
    "classification": 40_000_000,
    "example": 50_000_000,
}
EXAMPLE_SEED = SEED_RANGES["example"] + 3  # the shipped example.png: a red circle, a blue star, a green square


@dataclass(frozen=True)
class Scene:
    image: np.ndarray  # [H, W, 3] uint8
    mask: np.ndarray  # [H, W] int64 class ids, 0 = background
    class_ids: tuple[int, ...]  # one per object, in caption order
    caption: str  # "a red circle and a blue star"

    @property
    def phrases(self) -> tuple[str, ...]:
        """The caption split into one noun phrase per object: ("a red circle", "a blue star")."""
        return tuple(class_prompt(k) for k in self.class_ids)


def class_prompt(class_id: int, place: str | None = None) -> str:
    """The text for one class id (1..16): 5 -> "a green circle"; with a position word (`PLACES`), 5, "left" ->
    "a left green circle"."""
    return f"a {CLASS_NAMES[class_id - 1]}" if place is None else f"a {place} {CLASS_NAMES[class_id - 1]}"


def class_colour(class_id: int) -> str:
    """The colour of one class id (1..16): 5 -> "green"."""
    return COLOURS[(class_id - 1) // len(SHAPES)]


def colour_repeats(class_ids) -> tuple[bool, ...]:
    """For each object, whether another object of the scene has its colour: (4, 9, 1) -> (True, False, True)."""
    colours = [class_colour(k) for k in class_ids]
    return tuple(colours.count(c) > 1 for c in colours)


def placed_words(scene: Scene) -> dict[int, str]:
    """Where each object whose colour repeats in the scene is among the objects of its colour: {class id: word}.

    The objects of one colour are ordered by their centres (mask centroids) along the axis on which they lie
    furthest apart: "left"/"right" across columns, "top"/"bottom" across rows, and of three the one between is
    "middle". The words are a caption a person would write about the picture; no mask reaches a loss through them.
    """
    words = {}
    for colour in {class_colour(k) for k in scene.class_ids}:
        same = [k for k in scene.class_ids if class_colour(k) == colour]
        if len(same) < 2:
            continue
        at = np.array([np.argwhere(scene.mask == k).mean(0) for k in same])  # [n, 2]: (row, column) centres
        axis = int(np.ptp(at[:, 1]) < np.ptp(at[:, 0]))  # 0: across columns, 1: across rows
        ends = ("left", "right") if axis == 0 else ("top", "bottom")
        order = np.argsort(at[:, 1 - axis], kind="stable")
        for rank, i in enumerate(order):
            words[same[i]] = ends[0] if rank == 0 else ends[1] if rank == len(same) - 1 else "middle"
    return words


def placed_phrases(scene: Scene) -> tuple[str, ...]:
    """The caption's phrases, each object whose colour repeats saying where it is (`placed_words`):
    ("a left yellow circle", "a red square", "a right yellow star")."""
    words = placed_words(scene)
    return tuple(class_prompt(k, words.get(k)) for k in scene.class_ids)


def placed_caption(scene: Scene) -> str:
    """The caption with where each same-coloured object is (`placed_phrases`): "a left yellow circle and ..."."""
    return " and ".join(placed_phrases(scene))


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Vertices of a square (circumradius r), triangle or 5-point star (inner radius 0.45 r), rotated by angle."""
    if shape == "square":
        radii, n = [r], 4
    elif shape == "triangle":
        radii, n = [r * 1.1], 3
    else:
        radii, n = [r * 1.1, r * 0.5], 10
    return [
        (
            cx + radii[i % len(radii)] * np.cos(angle + 2 * np.pi * i / n),
            cy + radii[i % len(radii)] * np.sin(angle + 2 * np.pi * i / n),
        )
        for i in range(n)
    ]


def _background(rng: np.random.Generator, size: int, texture: float) -> np.ndarray:
    """A grey [size, size] float image: a base level, a gentle gradient and (scaled by texture) stripes."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size  # [H, W] each, in [0, 1)
    base = rng.uniform(80, 175) + rng.uniform(-20, 20) * (xx - 0.5) + rng.uniform(-20, 20) * (yy - 0.5)
    theta, period = rng.uniform(0, np.pi), rng.uniform(3, 10) / size
    stripes = np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period + rng.uniform(0, 2 * np.pi))
    return base + texture * rng.uniform(8, 25) * stripes


def make_scene(
    seed: int,
    *,
    size: int = 64,
    objects: tuple[int, int] = (1, 3),
    radius: tuple[float, float] = (8.0, 14.0),
    texture: float = 1.0,
) -> Scene:
    """Draw scene `seed`: 1-3 distinct colour+shape objects that do not overlap, caption in random object order.

    `objects` is the inclusive range of the object count, `radius` the range of object radii in pixels and
    `texture` (0..1) the strength of the background stripes (0 = flat grey plus gradient and pixel noise).
    """
    rng = np.random.default_rng(seed)
    n = int(rng.integers(objects[0], objects[1] + 1))
    class_ids = [int(k) + 1 for k in rng.choice(len(CLASS_NAMES), size=n, replace=False)]
    placed: list[tuple[float, float, float]] = []  # (cx, cy, r)
    for _ in range(n):
        for _attempt in range(60):
            r = rng.uniform(*radius)
            cx, cy = rng.uniform(r, size - r, size=2)
            if all(np.hypot(cx - x, cy - y) > r + q + 2 for x, y, q in placed):
                placed.append((cx, cy, r))
                break
    class_ids = class_ids[: len(placed)]  # a crowded scene keeps the objects that fit

    label = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(label)
    for k, (cx, cy, r) in zip(class_ids, placed, strict=True):
        shape = SHAPES[(k - 1) % 4]
        if shape == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=k)
        else:
            draw.polygon(_polygon(shape, cx, cy, r, rng.uniform(0, 2 * np.pi)), fill=k)
    mask = np.asarray(label, dtype=np.int64)  # [H, W]

    rgb = np.repeat(_background(rng, size, texture)[..., None], 3, axis=-1)  # [H, W, 3]
    for k in class_ids:
        colour = np.asarray(_RGB[class_colour(k)], dtype=np.float64) + rng.normal(0, 12, size=3)
        rgb[mask == k] = colour
    rgb += rng.normal(0, 5, size=rgb.shape)  # sensor noise over everything
    image = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)

    order = rng.permutation(len(class_ids))
    ordered = tuple(class_ids[i] for i in order)
    caption = " and ".join(class_prompt(k) for k in ordered)
    return Scene(image=image, mask=mask, class_ids=ordered, caption=caption)


def make_scenes(seeds, **kwargs) -> tuple[np.ndarray, np.ndarray, list[Scene]]:
    """Scenes for many seeds: ([B, H, W, 3] uint8 images, [B, H, W] masks, the Scene objects)."""
    scenes = [make_scene(int(s), **kwargs) for s in seeds]
    return np.stack([s.image for s in scenes]), np.stack([s.mask for s in scenes]), scenes
