"""What lies behind the objects: a scene, small clutter shapes and part-less distractor bodies.

Each class prefers one of the eight scenes; the distractors often take some class's body look.
"""

from __future__ import annotations

import colorsys
import math

import numpy as np

from ssenet.data.synthetic.shapes import (
    body_polygon,
    body_radius,
    crop_window,
    log_uniform,
    pixel_grid,
    polygon_mask,
)
from ssenet.data.synthetic.spec import CLASS_NAMES, BenchmarkSpec, body_style
from ssenet.data.synthetic.texture import (
    DARK,
    body_colour,
    jitter,
    lerp,
    paint_body,
    smoothstep,
    value_noise,
)


def paint_background(
    rng: np.random.Generator, spec: BenchmarkSpec, scene: str
) -> tuple[np.ndarray, int]:
    """The supersampled canvas with scene, clutter and part-less distractor bodies."""
    # Scenes are smooth, so they are painted at the output size (a quarter of the work) and
    # repeated; nearest upsampling followed by the box downsampling gives them back exactly.
    canvas = paint_scene(rng, scene, spec.size)
    canvas = canvas.repeat(spec.supersample, axis=0).repeat(spec.supersample, axis=1)
    draw_clutter(rng, canvas, spec)
    n_distractors = int(rng.choice(len(spec.distractor_probs), p=spec.distractor_probs))
    for _ in range(n_distractors):
        draw_distractor(rng, canvas, spec)
    return canvas, n_distractors


def draw_distractor(rng: np.random.Generator, canvas: np.ndarray, spec: BenchmarkSpec) -> None:
    """A body without a part, often in some class's look: background that looks like an object."""
    side = canvas.shape[0]
    style = body_style(rng, int(rng.integers(len(CLASS_NAMES))), spec.distractor_bias)
    body = body_polygon(rng, log_uniform(rng, *spec.distractor_extent) * side, side, style)
    paint_body(rng, canvas, body, polygon_mask(body["points"], body["window"]))


def draw_clutter(rng: np.random.Generator, canvas: np.ndarray, spec: BenchmarkSpec) -> None:
    """Small shapes on the background; drawn in local windows because there are many."""
    side = canvas.shape[0]
    low, high = spec.clutter_range
    for _ in range(int(rng.integers(low, high + 1))):
        x, y = rng.uniform(0, side, 2)
        r = side * rng.uniform(0.015, 0.09)
        points, width = _clutter_outline(rng, x, y, r)
        window = crop_window(points.min(axis=0) - width, points.max(axis=0) + width, side)
        mask = polygon_mask(points, window, width)
        alpha = rng.uniform(0.5, 1.0)
        colour = _clutter_colour(rng, canvas, x, y)
        patch = canvas[window]
        patch[mask] = (1 - alpha) * patch[mask] + alpha * colour


def _clutter_outline(
    rng: np.random.Generator, x: float, y: float, r: float
) -> tuple[np.ndarray, int]:
    """The points of one clutter shape of radius about `r` at (x, y), and its line width.

    An ellipse, a rounded box, a line (the only one drawn with a width) or a random polygon.
    """
    kind = int(rng.integers(4))
    if kind == 0:
        ry = r * rng.uniform(0.3, 1)
        turn = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        return np.stack([x + r * np.cos(turn), y + ry * np.sin(turn)], axis=1), 0
    if kind == 1:
        turn = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        box = body_radius(rng, "rounded", turn)
        turn = turn + rng.uniform(0, 2 * np.pi)
        return np.stack([x + r * box * np.cos(turn), y + r * box * np.sin(turn)], axis=1), 0
    if kind == 2:
        points = np.array([[x, y], [x + rng.normal(0, 3 * r), y + rng.normal(0, 3 * r)]])
        return points, max(1, int(r * rng.uniform(0.1, 0.4)))
    return rng.normal(0, r, (int(rng.integers(3, 7)), 2)) + (x, y), 0


def _clutter_colour(rng: np.random.Generator, canvas: np.ndarray, x: float, y: float) -> np.ndarray:
    """A shade of the scene under (x, y), a body colour or, rarely, a saturated colour."""
    choice = rng.random()
    if choice < 0.5:  # a lighter or darker shade of the scene under it
        side = canvas.shape[0]
        under = canvas[min(int(y), side - 1), min(int(x), side - 1)]
        return np.clip(under * rng.uniform(0.6, 1.4), 0, 1)
    if choice < 0.85:
        return body_colour(rng)
    rgb = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.7, 1.0), rng.uniform(0.7, 1.0))
    return np.asarray(rgb, dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# The eight scenes


def paint_scene(rng: np.random.Generator, name: str, side: int) -> np.ndarray:
    """A background of one scene family: gradients, band-limited noise and a typical pattern."""
    yy, xx = pixel_grid(side)
    y, x = yy / side, xx / side
    low = value_noise(rng, side, 3)
    fine = value_noise(rng, side, 24, octaves=2)
    image = _SCENE_PAINTERS[name](rng, x, y, low, fine)
    lighting = rng.uniform(0.85, 1.1) * (1 + 0.2 * (low - 0.5))
    image = image * lighting[..., None] + 0.06 * (fine - 0.5)[..., None]
    return np.clip(image, 0, 1).astype(np.float32)


# Scene painters: (rng, x, y, low-frequency noise, fine noise) -> (H, W, 3) image; x, y in [0, 1].
def _water(rng, x, y, low, fine):
    base = lerp(jitter(rng, (0.16, 0.38, 0.55)), jitter(rng, (0.04, 0.18, 0.33)), y)
    phase = y * rng.uniform(10, 20) + 1.5 * low + 0.3 * x
    waves = (0.5 + 0.5 * np.sin(2 * np.pi * phase)) ** 6
    return lerp(base, (0.75, 0.88, 0.95), 0.35 * waves)


def _meadow(rng, x, y, low, fine):
    grass = lerp(jitter(rng, (0.28, 0.52, 0.16)), jitter(rng, (0.5, 0.62, 0.22)), low)
    blades = value_noise(rng, x.shape[0], (4, 48))  # tall cells: vertical streaks
    return lerp(grass, (0.1, 0.25, 0.06), 0.6 * smoothstep(0.45, 0.8, blades))


def _desert(rng, x, y, low, fine):
    sand, dune = jitter(rng, (0.86, 0.72, 0.47)), jitter(rng, (0.72, 0.52, 0.3))
    a = rng.uniform(-0.5, 0.5)
    ripple = 0.5 + 0.5 * np.sin(
        2 * np.pi * (x * math.sin(a) + y * math.cos(a)) * rng.uniform(6, 12) + 4 * low
    )
    return lerp(lerp(sand, dune, low), dune * 0.8, 0.3 * ripple)


def _sky(rng, x, y, low, fine):
    cloud = smoothstep(0.5, 0.72, value_noise(rng, x.shape[0], 4, octaves=4))
    sky = lerp(jitter(rng, (0.3, 0.52, 0.85)), jitter(rng, (0.72, 0.84, 0.96)), y)
    return lerp(sky, (0.97, 0.97, 0.98), 0.85 * cloud)


def _room(rng, x, y, low, fine):
    wall, floor = jitter(rng, (0.78, 0.72, 0.62), 0.08), jitter(rng, (0.45, 0.3, 0.18))
    horizon = rng.uniform(0.55, 0.8)
    grain = 0.5 + 0.5 * np.sin(
        2 * np.pi * y * rng.uniform(20, 40) + 6 * value_noise(rng, x.shape[0], (2, 8))
    )
    floor_image = lerp(floor, floor * 0.7, grain)
    wall_image = lerp(wall, wall * 0.85, np.clip(y / horizon, 0, 1))
    image = np.where((y < horizon)[..., None], wall_image, floor_image)
    image[np.abs(y - horizon) < 0.012] = DARK * 2  # skirting board
    return image


def _forest(rng, x, y, low, fine):
    image = lerp(jitter(rng, (0.1, 0.22, 0.08)), jitter(rng, (0.25, 0.38, 0.14)), (low + fine) / 2)
    trunk = jitter(rng, (0.28, 0.19, 0.11))
    for _ in range(int(rng.integers(3, 8))):
        centre, width = rng.uniform(0, 1), rng.uniform(0.02, 0.08)
        stem = np.abs(x - centre - 0.05 * (low - 0.5)) < width / 2
        image[stem] = (trunk * (0.7 + 0.5 * fine[stem])[:, None]).astype(np.float32)
    return image


def _snow(rng, x, y, low, fine):
    image = lerp(jitter(rng, (0.93, 0.95, 0.98), 0.02), jitter(rng, (0.74, 0.8, 0.9)), low)
    return image + 0.15 * smoothstep(0.7, 0.9, fine)[..., None]


def _brick(rng, x, y, low, fine):
    height = rng.uniform(0.06, 0.1)
    row = np.floor(y / height).astype(int)
    shifted = x + (row % 2) * height
    col = np.floor(shifted / (2 * height)).astype(int)
    tint = rng.uniform(-0.08, 0.08, (row.max() + 1, col.max() + 1)).astype(np.float32)
    brick = np.asarray(jitter(rng, (0.62, 0.27, 0.18))) + tint[row, col][..., None]
    brick = brick * (0.85 + 0.3 * fine)[..., None]
    mortar = (y / height % 1 < 0.12) | (shifted / (2 * height) % 1 < 0.06)
    return np.where(mortar[..., None], jitter(rng, (0.78, 0.76, 0.7)), brick)


_SCENE_PAINTERS = {
    "water": _water, "meadow": _meadow, "desert": _desert, "sky": _sky,
    "room": _room, "forest": _forest, "snow": _snow, "brick": _brick,
}  # fmt: skip
