"""The micro world: coloured shapes moving over a plain background, its captions, and how to read its frames.

The built-in micro models (`builtin:micro-text2video`, `builtin:micro-sd`) are trained on clips from
`make_clip`; the quality tests read generated frames back with `read_object` and `motion_direction`.
Everything is deterministic: a clip is a function of its attributes and a `numpy` random generator.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64
FRAMES = 8
BACKGROUND = (40, 40, 48)
COLOURS = {"red": (220, 45, 40), "green": (40, 190, 70), "blue": (45, 95, 235), "yellow": (235, 205, 40)}
SHAPES = ("circle", "square", "triangle")
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
HELD_OUT = (("blue", "triangle", "up"), ("yellow", "square", "left"))
"""Combinations never shown in training (nor used by the tests): the model must compose them from the parts."""

_SUPERSAMPLE = 4
OBJECT_DISTANCE = 60.0  # how far (RGB, 0..255) a pixel must be from the background to count as the object


def caption(colour: str | None, shape: str | None, direction: str | None) -> str:
    """'a red circle moving left'; a missing attribute is left out ('a circle moving left', 'a red shape')."""
    words = ["a"]
    if colour:
        words.append(colour)
    words.append(shape or "shape")
    if direction:
        words += ["moving", direction]
    return " ".join(words)


def vocabulary() -> list[str]:
    """Every word a caption can contain."""
    return sorted({"a", "shape", "moving", *COLOURS, *SHAPES, *DIRECTIONS})


def training_combinations() -> list[tuple[str, str, str]]:
    return [(c, s, d) for c in COLOURS for s in SHAPES for d in DIRECTIONS if (c, s, d) not in HELD_OUT]


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, centre: tuple[float, float], half: float, fill) -> None:
    x, y = (v * _SUPERSAMPLE for v in centre)
    h = half * _SUPERSAMPLE
    if shape == "circle":
        draw.ellipse((x - h, y - h, x + h, y + h), fill=fill)
    elif shape == "square":
        side = h * 0.9  # a square of the circle's area would look bigger than the circle
        draw.rectangle((x - side, y - side, x + side, y + side), fill=fill)
    else:  # an upright triangle whose bounding box is centred on the point
        draw.polygon(((x, y - h), (x + h * 1.1, y + h * 0.9), (x - h * 1.1, y + h * 0.9)), fill=fill)


def render_frame(shape: str, rgb: tuple[int, int, int], centre: tuple[float, float], half: float) -> np.ndarray:
    """One `[SIZE, SIZE, 3]` uint8 frame, anti-aliased by supersampling."""
    big = Image.new("RGB", (SIZE * _SUPERSAMPLE,) * 2, BACKGROUND)
    _draw_shape(ImageDraw.Draw(big), shape, centre, half, rgb)
    return np.asarray(big.resize((SIZE, SIZE), Image.BOX))


@dataclasses.dataclass(frozen=True)
class Clip:
    frames: np.ndarray  # [FRAMES, SIZE, SIZE, 3] uint8
    colour: str
    shape: str
    direction: str
    centres: tuple[tuple[float, float], ...]


def make_clip(colour: str, shape: str, direction: str, rng: np.random.Generator, frames: int = FRAMES) -> Clip:
    """A clip of one shape moving in a straight line at a random speed from a random start, fully in view."""
    half = rng.uniform(8.5, 10.5)
    speed = rng.uniform(2.6, 3.6)
    jitter = rng.integers(-12, 13, size=3)
    rgb = tuple(int(v) for v in np.clip(np.array(COLOURS[colour]) + jitter, 0, 255))
    dx, dy = DIRECTIONS[direction]
    lo, hi = half + 2.0, SIZE - half - 2.0
    travel = speed * (frames - 1)
    start = []
    for step in (dx, dy):
        if step > 0:
            start.append(rng.uniform(lo, hi - travel))
        elif step < 0:
            start.append(rng.uniform(lo + travel, hi))
        else:
            start.append(rng.uniform(lo, hi))
    centres = tuple((start[0] + dx * speed * i, start[1] + dy * speed * i) for i in range(frames))
    video = np.stack([render_frame(shape, rgb, c, half) for c in centres])
    return Clip(video, colour, shape, direction, centres)


@dataclasses.dataclass(frozen=True)
class ObjectReading:
    """What a viewer would say about one frame: is there an object, where, and which colour."""

    area: float  # fraction of the frame covered by the object
    centroid: tuple[float, float] | None  # (x, y) in pixels
    mean_rgb: tuple[float, float, float] | None
    colour: str | None  # the nearest palette colour


def read_object(frame: np.ndarray) -> ObjectReading:
    """Read a frame (`[H, W, 3]`, uint8 or float in 0..1): the pixels far from the background are the object."""
    pixels = frame.astype(np.float64) * (255.0 if frame.dtype != np.uint8 else 1.0)
    mask = np.linalg.norm(pixels - np.array(BACKGROUND), axis=-1) > OBJECT_DISTANCE
    area = float(mask.mean())
    if not mask.any():
        return ObjectReading(area, None, None, None)
    ys, xs = np.nonzero(mask)
    mean = pixels[mask].mean(axis=0)
    nearest = min(COLOURS, key=lambda name: np.linalg.norm(mean - np.array(COLOURS[name])))
    return ObjectReading(area, (float(xs.mean()), float(ys.mean())), tuple(float(v) for v in mean), nearest)


def motion_direction(readings: list[ObjectReading]) -> tuple[str | None, float]:
    """The direction the object's centroid travelled from the first to the last frame it is seen in, and how
    many pixels it travelled."""
    seen = [r.centroid for r in readings if r.centroid is not None]
    if len(seen) < 2:
        return None, 0.0
    dx, dy = seen[-1][0] - seen[0][0], seen[-1][1] - seen[0][1]
    if abs(dx) >= abs(dy):
        return ("right" if dx > 0 else "left"), abs(dx)
    return ("down" if dy > 0 else "up"), abs(dy)
