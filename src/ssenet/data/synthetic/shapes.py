"""Shape drawing: body outlines (four families), the geometry of parts, and polygon masks.

Large canvases are drawn in windows (the slices around a shape), because most shapes are small.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from PIL import Image, ImageDraw

from ssenet.data.synthetic.spec import CLASS_PARTS, BenchmarkSpec


def body_polygon(rng: np.random.Generator, extent: float, side: int, style: dict) -> dict:
    """A star-shaped outline (so any point between its origin and the rim lies inside)."""
    family = style["family"]
    theta = np.linspace(0.0, 2.0 * np.pi, 72, endpoint=False)
    radius = body_radius(rng, family, theta)
    turn = rng.uniform(0.0, 2.0 * np.pi)
    points = np.stack([radius * np.cos(theta + turn), radius * np.sin(theta + turn)], axis=1)
    points *= extent / max(np.ptp(points[:, 0]), np.ptp(points[:, 1]))
    middle = (points.max(axis=0) + points.min(axis=0)) / 2
    # The centre may sit near the border: VOC objects are often cut by the frame.
    margin = min(0.3 * extent, 0.5 * side)
    centre = rng.uniform(margin, side - margin, size=2)
    origin = centre - middle
    points = points + origin
    window = crop_window(points.min(axis=0), points.max(axis=0), side)
    return {"points": points, "origin": origin, "centre": centre, "extent": extent,
            "window": window, **style}  # fmt: skip


def body_radius(rng: np.random.Generator, family: str, theta: np.ndarray) -> np.ndarray:
    """The rim's distance from the origin at the angles `theta`, before scaling."""
    cos, sin = np.cos(theta), np.sin(theta)
    if family == "ellipse":
        b = rng.uniform(0.5, 1.0)
        return b / np.sqrt((b * cos) ** 2 + sin**2)
    if family == "blob":
        radius = np.ones_like(theta)
        for k in range(2, 6):
            radius += rng.uniform(0.0, 0.3 / k) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
        return np.maximum(radius, 0.45)
    if family == "rounded":  # superellipse: a rounded rectangle
        n, b = rng.uniform(2.5, 6.0), rng.uniform(0.55, 1.0)
        return (np.abs(cos) ** n + np.abs(sin / b) ** n) ** (-1.0 / n)
    sides = int(rng.integers(3, 8))
    wedge = 2.0 * np.pi / sides
    return np.cos(np.pi / sides) / np.cos(np.mod(theta, wedge) - np.pi / sides)


def part_geometry(
    rng: np.random.Generator, spec: BenchmarkSpec, body: dict, extent: float, side: int, k: int
) -> dict | None:
    """Put the part on the body or on its rim, wholly inside the image; None if it cannot be."""
    outline = max(1.5, 0.1 * extent)
    reach = extent / 2 + outline + 1
    on_edge = bool(rng.random() < spec.edge_part_prob)
    for _ in range(24):
        rim = body["points"][int(rng.integers(len(body["points"])))]
        depth = rng.uniform(0.85, 1.0) if on_edge else rng.uniform(0.1, 0.65)
        centre = body["origin"] + depth * (rim - body["origin"])
        if np.all(centre >= reach) and np.all(centre <= side - reach):
            colour, shape = CLASS_PARTS[k]
            return {"centre": centre, "extent": extent, "outline": outline, "shape": shape,
                    "colour": colour, "angle": rng.uniform(0.0, 2.0 * np.pi),
                    "window": crop_window(centre - reach, centre + reach, side)}  # fmt: skip
    return None


def part_masks(part: dict, side: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(shape, dark outline, dark pattern inside the shape) masks of one part, full size.

    The outline, shared by every class, keeps the part readable on bodies of any colour.
    """
    window = part["window"]
    yy, xx = (g[window] for g in pixel_grid(side))
    (cx, cy), r, o, a = part["centre"], part["extent"] / 2, part["outline"], part["angle"]
    u = (xx - cx) * math.cos(a) + (yy - cy) * math.sin(a)
    v = (yy - cy) * math.cos(a) - (xx - cx) * math.sin(a)
    pattern = np.zeros(u.shape, dtype=bool)
    if part["shape"] == "ring":
        d = np.hypot(u, v)
        inner = 0.45 * r
        shape = (d >= inner) & (d <= r)
        outline = ((d > r) & (d <= r + o)) | ((d < inner) & (d >= inner - o))
    elif part["shape"] == "stripes":  # a square patch of three bands: colour, dark, colour
        half = 0.8 * r
        box = np.maximum(np.abs(u), np.abs(v))
        shape = box <= half
        outline = (box > half) & (box <= half + o)
        pattern = shape & (np.abs(u) < half / 3)
    elif part["shape"] == "cross":
        arm = 0.32 * r
        au, av = np.abs(u), np.abs(v)
        shape = ((au <= r) & (av <= arm)) | ((av <= r) & (au <= arm))
        grown = ((au <= r + o) & (av <= arm + o)) | ((av <= r + o) & (au <= arm + o))
        outline = grown & ~shape
    else:
        shape = polygon_mask(_star(r, 0.45 * r, a) + part["centre"], window)
        outline = polygon_mask(_star(r + o, 0.45 * r + o, a) + part["centre"], window) & ~shape
    return tuple(embed(m, window, side) for m in (shape, outline, pattern))


def _star(outer: float, inner: float, angle: float) -> np.ndarray:
    """The ten corners (x, y) of a five-pointed star around the origin."""
    theta = angle + np.arange(10) * np.pi / 5
    radius = np.where(np.arange(10) % 2 == 0, outer, inner)
    return np.stack([radius * np.cos(theta), radius * np.sin(theta)], axis=1)


# ---------------------------------------------------------------------------------------------
# Canvas helpers: pixel grids, windows and masks, and the log-uniform size draw


@functools.lru_cache(maxsize=8)
def pixel_grid(side: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (y, x) of a square canvas, shared read-only."""
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) + 0.5
    yy.flags.writeable = False
    xx.flags.writeable = False
    return yy, xx


def crop_window(low: np.ndarray, high: np.ndarray, side: int) -> tuple[slice, slice]:
    """The (rows, columns) slices of the canvas covering the box low..high (x, y), clipped."""
    x0, y0 = (max(0, min(side - 1, int(math.floor(c)))) for c in low)
    x1, y1 = (max(1, min(side, int(math.ceil(c)) + 1)) for c in high)
    return slice(y0, max(y0 + 1, y1)), slice(x0, max(x0 + 1, x1))


def polygon_mask(points: np.ndarray, window: tuple[slice, slice], width: int = 0) -> np.ndarray:
    """Rasterise a polygon (or, with `width`, a polyline) into a mask of the window's shape."""
    rows, cols = window
    image = Image.new("L", (cols.stop - cols.start, rows.stop - rows.start), 0)
    local = [tuple(p) for p in (points - (cols.start, rows.start)).tolist()]
    if width:
        ImageDraw.Draw(image).line(local, fill=255, width=width)
    else:
        ImageDraw.Draw(image).polygon(local, fill=255)
    return np.asarray(image) > 127


def embed(local: np.ndarray, window: tuple[slice, slice], side: int) -> np.ndarray:
    """A window's mask placed on a full-size canvas of `side` pixels."""
    full = np.zeros((side, side), dtype=bool)
    full[window] = local
    return full


def log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    """A draw whose logarithm is uniform: each doubling of size is as likely."""
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))
