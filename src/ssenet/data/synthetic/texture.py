"""Textures and colours: value noise and blends, body fills in muted colours, the saturated part."""

from __future__ import annotations

import colorsys
import math
from typing import Any

import numpy as np
from PIL import Image

from ssenet.data.synthetic.shapes import pixel_grid
from ssenet.data.synthetic.spec import PART_COLOURS

# The near-black of part outlines and patterns, the same for every class.
DARK = np.array([0.06, 0.06, 0.07], dtype=np.float32)


def paint_object(rng: np.random.Generator, canvas: np.ndarray, obj: dict) -> None:
    """Paint a placed object: its textured body, then its part's outline, colour and pattern."""
    paint_body(rng, canvas, obj["body"], obj["body_mask"][obj["body"]["window"]])
    colour = np.clip(np.asarray(PART_COLOURS[obj["colour"]]) + rng.normal(0, 0.03, 3), 0, 1)
    canvas[obj["outline_mask"]] = DARK
    canvas[obj["part_mask"]] = colour.astype(np.float32)
    canvas[obj["pattern_mask"]] = DARK


def paint_body(rng: np.random.Generator, canvas: np.ndarray, body: dict, local: np.ndarray) -> None:
    """Fill the body's pixels (`local`: its mask inside its window) with a pool texture."""
    window = body["window"]
    yy, xx = (g[window] for g in pixel_grid(canvas.shape[0]))
    canvas[window][local] = _body_texture(rng, yy, xx, body)[local]


def _body_texture(
    rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, body: dict
) -> np.ndarray:
    """The body's texture in two shades of its hue, scaled to the body and lit from one side."""
    (cx, cy), extent = body["centre"], body["extent"]
    a = rng.uniform(0, 2 * np.pi)
    u = ((xx - cx) * math.cos(a) + (yy - cy) * math.sin(a)) / extent
    v = ((yy - cy) * math.cos(a) - (xx - cx) * math.sin(a)) / extent
    period = rng.uniform(0.12, 0.3)
    kind = body["texture"]
    if kind == "stripes":
        t = (np.sin(2 * np.pi * u / period) > 0).astype(np.float32)
    elif kind == "checker":
        t = ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    elif kind == "dots":
        fu, fv = u / period % 1 - 0.5, v / period % 1 - 0.5
        t = (np.hypot(fu, fv) < 0.3).astype(np.float32)
    elif kind == "mottled":
        t = smoothstep(0.35, 0.65, value_noise(rng, u.shape, 4))
    elif kind == "gradient":
        t = np.clip(u + 0.5, 0, 1)
    else:
        t = np.zeros_like(u)
    second_hue = (body["hue"] + rng.normal(0, 0.03)) % 1.0
    texture = lerp(body_colour(rng, body["hue"]), body_colour(rng, second_hue), t)
    light = rng.uniform(0, 2 * np.pi)
    across = ((xx - cx) * math.cos(light) + (yy - cy) * math.sin(light)) / extent
    shade = np.clip(1.0 - rng.uniform(0.2, 0.5) * across, 0.6, 1.3)
    return texture * shade[..., None]


def body_colour(rng: np.random.Generator, hue: float | None = None) -> np.ndarray:
    """A muted colour of `hue` (random if None): the saturated ones belong to the parts."""
    hue = rng.random() if hue is None else hue
    rgb = colorsys.hsv_to_rgb(hue, rng.uniform(0.2, 0.6), rng.uniform(0.3, 0.9))
    return np.asarray(rgb, dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# Noise and colour blends, also used by the scenes


def value_noise(
    rng: np.random.Generator,
    shape: int | tuple[int, int],
    cells: int | tuple[int, int],
    octaves: int = 3,
) -> np.ndarray:
    """Band-limited (fractal value) noise in about [0, 1]: photo-like texture at little cost."""
    height, width = (shape, shape) if isinstance(shape, int) else shape
    ny, nx = (cells, cells) if isinstance(cells, int) else cells
    total = np.zeros((height, width), dtype=np.float32)
    weight = 0.0
    for octave in range(octaves):
        grid = rng.random((ny * 2**octave + 1, nx * 2**octave + 1), dtype=np.float32)
        layer = Image.fromarray(grid).resize((width, height), Image.Resampling.BICUBIC)
        total += 0.5**octave * np.asarray(layer)
        weight += 0.5**octave
    return total / weight


def smoothstep(low: float, high: float, t: np.ndarray) -> np.ndarray:
    """0 below `low`, 1 above `high`, a smooth S between."""
    t = np.clip((t - low) / (high - low), 0, 1)
    return t * t * (3 - 2 * t)


def lerp(a: Any, b: Any, t: np.ndarray) -> np.ndarray:
    """Blend colours `a` and `b` per pixel by the map `t` (float32, with a colour axis)."""
    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    return (a + (b - a) * np.asarray(t, dtype=np.float32)[..., None]).astype(np.float32)


def jitter(rng: np.random.Generator, colour: tuple[float, ...], spread: float = 0.04) -> np.ndarray:
    """`colour` with Gaussian noise per channel, so no two images share an exact shade."""
    return np.clip(np.asarray(colour) + rng.normal(0, spread, 3), 0, 1).astype(np.float32)
