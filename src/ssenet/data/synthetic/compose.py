"""Scene composition: one image and its label map from (seed, index).

The classes and the scene are drawn first, then the background, then each object where it
leaves earlier ones visible; the label map is the majority owner of each output pixel, with
VOC's void band at label changes and too-small classes voided.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from ssenet.data.palette import IGNORE_INDEX
from ssenet.data.synthetic.background import paint_background
from ssenet.data.synthetic.shapes import (
    body_polygon,
    embed,
    log_uniform,
    part_geometry,
    part_masks,
    polygon_mask,
)
from ssenet.data.synthetic.spec import CLASS_NAMES, SCENES, BenchmarkSpec, body_style
from ssenet.data.synthetic.texture import paint_object
from ssenet.errors import SsenetError

_MAX_REDRAWS = 50


@dataclass
class Sample:
    """One rendered image: RGB pixels, the VOC-style label map and what was drawn.

    `info`: `classes` (visible class ids, 1-based), `scene`, `preferred_scene` (the scene is the
    one the first object's class prefers), `objects` (per placed object: `class`, drawn
    `extent` and bounding-box `visible_extent` as fractions of the side, `visible_pixels`,
    `voided`, `body`: its family, texture and hue), `distractors` and `pixels` (label counts:
    background, each class, void).
    """

    image: np.ndarray  # (size, size, 3) uint8
    label: np.ndarray  # (size, size) uint8: 0 background, 1..K classes, 255 void
    info: dict[str, Any] = field(default_factory=dict)


def render_sample(spec: BenchmarkSpec, index: int) -> Sample:
    """Render image `index` of the benchmark `spec` (a pure function of the seed and index)."""
    rng = np.random.default_rng([spec.seed, index])
    for _ in range(_MAX_REDRAWS):  # rare: every object was hidden or voided; draw anew
        sample = _render(spec, rng)
        if sample.info["classes"]:
            return sample
    raise SsenetError(
        f"benchmark spec: image {index} shows no object after {_MAX_REDRAWS} attempts; "
        "min_visible, extent_range or max_*_cover are too strict"
    )


def _render(spec: BenchmarkSpec, rng: np.random.Generator) -> Sample:
    """One attempt: classes, scene (the first class's with P(`context_prob`)), objects, labels."""
    n_objects = 1 + int(rng.choice(len(spec.object_count_probs), p=spec.object_count_probs))
    classes = [int(k) for k in rng.choice(len(CLASS_NAMES), n_objects, replace=False)]
    preferred = bool(rng.random() < spec.context_prob)
    scene = classes[0] if preferred else _other(rng, len(SCENES), classes[0])
    canvas, n_distractors = paint_background(rng, spec, SCENES[scene])
    placed: list[dict] = []
    for k in classes:
        obj = _place_object(rng, spec, placed, k)
        if obj is not None:
            paint_object(rng, canvas, obj)
            placed.append(obj)
    image = _finish_image(rng, canvas, spec)
    label, objects = _label_map(spec, placed)
    info = {
        "classes": sorted({o["class"] for o in objects if not o["voided"]}),
        "scene": SCENES[scene],
        "preferred_scene": preferred,
        "objects": objects,
        "distractors": n_distractors,
        # background, classes 1..K, void
        "pixels": np.bincount(label.ravel(), minlength=256)[: len(CLASS_NAMES) + 1].tolist()
        + [int((label == IGNORE_INDEX).sum())],
    }
    return Sample(image=image, label=label, info=info)


def _other(rng: np.random.Generator, n: int, avoid: int) -> int:
    """A uniform choice from 0..n-1 without `avoid`."""
    choice = int(rng.integers(n - 1))
    return choice + (choice >= avoid)


def _finish_image(rng: np.random.Generator, canvas: np.ndarray, spec: BenchmarkSpec) -> np.ndarray:
    """Box-downsample the canvas to the output size, add sensor noise and quantise."""
    f = spec.supersample
    small = canvas.reshape(spec.size, f, spec.size, f, 3).mean(axis=(1, 3))
    small += spec.noise_std * rng.standard_normal(small.shape, dtype=np.float32)
    return (np.clip(small, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _label_map(spec: BenchmarkSpec, placed: list[dict]) -> tuple[np.ndarray, list[dict]]:
    """Downsample object ownership by majority, void thin boundary bands and too-small classes."""
    label = _majority_labels(spec, placed)
    _void_band(label, spec)
    min_pixels = spec.min_visible * spec.size * spec.size
    objects = []
    for obj in placed:
        region = label == obj["class"] + 1
        voided = bool(region.sum() < min_pixels)
        if voided:
            label[region] = IGNORE_INDEX
        objects.append(_object_record(obj, region, voided, spec.size))
    return label, objects


def _majority_labels(spec: BenchmarkSpec, placed: list[dict]) -> np.ndarray:
    """Each output pixel's label: whoever owns most of its supersampled pixels."""
    f, size = spec.supersample, spec.size
    owner = np.full((size * f, size * f), -1, dtype=np.int8)
    for j, obj in enumerate(placed):  # later objects lie on top
        owner[obj["mask"]] = j
    votes = [(owner == -1)] + [(owner == j) for j in range(len(placed))]
    counts = np.stack([v.reshape(size, f, size, f).sum(axis=(1, 3)) for v in votes])
    winner = counts.argmax(axis=0)
    ids = np.array([0] + [obj["class"] + 1 for obj in placed], dtype=np.uint8)
    return ids[winner]


def _void_band(label: np.ndarray, spec: BenchmarkSpec) -> None:
    """VOC's void band, in place: every pixel within `radius` of a change of label."""
    size = spec.size
    radius = max(1, round(spec.void_radius * size / 128)) if spec.void_radius else 0
    if radius:
        window = 2 * radius + 1
        band = ndimage.maximum_filter(label, window) != ndimage.minimum_filter(label, window)
        label[band] = IGNORE_INDEX


def _object_record(obj: dict, region: np.ndarray, voided: bool, size: int) -> dict:
    """What `Sample.info` says of one placed object; `region`: its visible label pixels."""
    return {
        "class": obj["class"] + 1,
        "extent": round(obj["extent"] / size, 4),
        "visible_pixels": int(region.sum()),
        "visible_extent": round(_bbox_extent(region) / size, 4),
        "voided": voided,
        "body": {key: obj["body"][key] for key in ("family", "texture", "hue")},
    }


def _bbox_extent(region: np.ndarray) -> int:
    """The longer side of the region's bounding box in pixels (0 when it is empty)."""
    rows, cols = np.nonzero(region)
    if rows.size == 0:
        return 0
    return int(max(rows.max() - rows.min(), cols.max() - cols.min()) + 1)


def _place_object(
    rng: np.random.Generator, spec: BenchmarkSpec, placed: list[dict], k: int
) -> dict | None:
    """Find a position where the part is inside the image and earlier objects stay visible."""
    f, side = spec.supersample, spec.size * spec.supersample
    extent = log_uniform(rng, *spec.extent_range) * spec.size  # in output pixels
    frac = rng.uniform(*spec.part_fraction)
    part_extent = min(max(frac * extent, spec.min_part * spec.size), 0.5 * extent) * f
    for _ in range(12):
        body = body_polygon(rng, extent * f, side, body_style(rng, k, spec.body_bias))
        part = part_geometry(rng, spec, body, part_extent, side, k)
        if part is None:
            continue
        body_mask = embed(polygon_mask(body["points"], body["window"]), body["window"], side)
        part_mask, outline_mask, pattern_mask = part_masks(part, side)
        mask = body_mask | part_mask | outline_mask
        if _hides_earlier(mask, placed, spec):
            continue
        return {
            "class": k,
            "extent": extent,
            "body": body,
            "mask": mask,
            "body_mask": body_mask,
            "part_mask": part_mask,
            "outline_mask": outline_mask,
            "pattern_mask": pattern_mask,
            "part_area": part_mask | outline_mask,
            "colour": part["colour"],
        }
    return None


def _hides_earlier(mask: np.ndarray, placed: list[dict], spec: BenchmarkSpec) -> bool:
    """Would `mask` cover too much of an earlier object's part or of the object itself?"""
    for obj in placed:
        part = obj["part_area"]
        if (mask & part).sum() > spec.max_part_cover * part.sum():
            return True
        if (mask & obj["mask"]).sum() > spec.max_body_cover * obj["mask"].sum():
            return True
    return False
