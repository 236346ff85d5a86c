"""The embedded benchmark: a synthetic weakly supervised segmentation problem in the VOC layout.

Every object is a large *body* plus a small class-specific *part* (a saturated colour on a
distinctive shape). As in VOC, where a dog's body still looks like a dog but less distinctively
than its head, the body is evidence and the part the strongest evidence: each class prefers one
body shape family, one texture and a hue range that overlaps its neighbours', but every attribute
also comes from the shared pool with probability `1 - body_bias`, and part-less distractor bodies
in the background often take some class's preferred look. A classifier that only reads parts
covers the part rather than the object; one that also learns bodies can activate them. Object
sizes are log-uniform over about 7x, so CAMs of small objects
spill into the background while CAMs of large objects shrink to the part: the scale
inconsistency that SSENet's scale-equivariant regularisation targets. Each class prefers one
background scene, so context is partly predictive, as boats are on water in VOC.

Every image is a pure function of (seed, index), so the output does not depend on the number of
worker processes, and a directory holds exactly one spec (recorded in `benchmark.json`).
"""

from __future__ import annotations

import colorsys
import functools
import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage
from tqdm import tqdm

from ssenet.data.palette import IGNORE_INDEX, colorize, write_label_png
from ssenet.errors import SsenetError
from ssenet.fileio import atomic_path, write_text_atomic

GENERATOR_VERSION = 2
IMAGE_DIR = "JPEGImages"
MASK_DIR = "SegmentationClass"
LIST_DIR = Path("ImageSets", "Segmentation")
SUMMARY_FILE = "benchmark.json"
CLASS_NAMES_FILE = "class_names.txt"

CLASS_NAMES: tuple[str, ...] = (
    "axolite", "bramblet", "corvane", "dunmoth", "elkwire", "fennock", "glowper", "hexlet",
)  # fmt: skip

PART_COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.93, 0.08, 0.10),
    "yellow": (1.00, 0.86, 0.02),
    "blue": (0.08, 0.32, 0.98),
    "magenta": (0.92, 0.10, 0.86),
}
PART_SHAPES: tuple[str, ...] = ("ring", "star", "stripes", "cross")
# Each colour and each shape serves two classes (a cycle through the 4 x 4 grid), so neither the
# colour nor the shape of the part names the class on its own: only the combination does.
CLASS_PARTS: tuple[tuple[str, str], ...] = tuple(
    (list(PART_COLOURS)[k // 2], PART_SHAPES[((k + 1) // 2) % len(PART_SHAPES)])
    for k in range(len(CLASS_NAMES))
)
# Class k prefers scene k (context co-occurrence, like boats on water).
SCENES: tuple[str, ...] = (
    "water", "meadow", "desert", "sky", "room", "forest", "snow", "brick",
)  # fmt: skip
BODY_FAMILIES: tuple[str, ...] = ("ellipse", "blob", "rounded", "polygon")
BODY_TEXTURES: tuple[str, ...] = ("solid", "stripes", "checker", "dots", "mottled", "gradient")
# The body look class k prefers: a shape family and a texture (each shared with one or two other
# classes, in other combinations) and a hue centre; hues are drawn within +-HUE_SPREAD of it, wider
# than the 1/8 spacing of the centres, so neighbouring classes' body colours overlap. The centres
# are turned half a circle from the part colours (classes 2j, 2j+1 share a part colour), so a
# body never hides its own part.
CLASS_BODIES: tuple[tuple[str, str, float], ...] = tuple(
    (BODY_FAMILIES[k % len(BODY_FAMILIES)], BODY_TEXTURES[k % len(BODY_TEXTURES)],
     ((k + 0.5) / len(CLASS_NAMES) + 0.5) % 1.0)
    for k in range(len(CLASS_NAMES))
)  # fmt: skip
HUE_SPREAD = 0.1
_MAX_REDRAWS = 50
_DARK = np.array([0.06, 0.06, 0.07], dtype=np.float32)


@dataclass(frozen=True)
class BenchmarkSpec:
    """Every knob of the generator. Fractions are of the image side unless stated otherwise."""

    seed: int = 0
    size: int = 128  # image side in pixels
    num_train: int = 1000  # train_aug
    num_train_eval: int = 200  # train: the first train_aug images, where pseudo labels are scored
    num_val: int = 200  # val: held out
    object_count_probs: tuple[float, ...] = (0.5, 0.35, 0.15)  # P(1), P(2), P(3) objects
    extent_range: tuple[float, float] = (0.12, 0.85)  # longest body extent, log-uniform
    part_fraction: tuple[float, float] = (0.15, 0.30)  # part extent / body extent
    min_part: float = 0.07  # smallest part extent, so that the part stays recognisable
    edge_part_prob: float = 0.4  # part on the body's edge (else on the body)
    body_bias: float = 0.7  # P(a body attribute is the class's preferred one), else the pool's
    distractor_bias: float = 0.5  # the same for a distractor, towards a random class's look
    context_prob: float = 0.6  # P(scene = preferred scene of the first object's class)
    distractor_probs: tuple[float, ...] = (0.35, 0.4, 0.25)  # P(0), P(1), P(2) part-less bodies
    distractor_extent: tuple[float, float] = (0.12, 0.6)
    clutter_range: tuple[int, int] = (4, 12)  # small background shapes per image
    min_visible: float = 0.003  # visible area of a class (about 50 px at 128 px), else voided
    max_part_cover: float = 0.3  # a later object may hide at most this much of an earlier part
    max_body_cover: float = 0.65  # ... and at most this much of an earlier object
    void_radius: int = 1  # void band half-width in pixels at 128 px (scaled with the size)
    supersample: int = 2  # draw at this factor and box-downsample: anti-aliased edges
    noise_std: float = 0.015  # sensor noise on [0, 1] intensities
    jpeg_quality: int = 90


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


# ---------------------------------------------------------------------------------------------
# Public entry points


def make_benchmark(
    out_dir: str | os.PathLike,
    seed: int = 0,
    size: int = 128,
    num_train: int = 1000,
    num_train_eval: int = 200,
    num_val: int = 200,
    num_workers: int = 2,
    progress: bool = True,
) -> dict:
    """Write the benchmark to `out_dir` and return its summary (also saved as benchmark.json).

    A rerun with the same spec on a complete directory does nothing; an interrupted run is
    completed; a directory made with a different spec is an error.
    """
    spec = BenchmarkSpec(
        seed=seed, size=size, num_train=num_train, num_train_eval=num_train_eval, num_val=num_val
    )
    return write_benchmark(out_dir, spec, num_workers=num_workers, progress=progress)


def write_benchmark(
    out_dir: str | os.PathLike, spec: BenchmarkSpec, num_workers: int = 2, progress: bool = True
) -> dict:
    """`make_benchmark` for a full `BenchmarkSpec`."""
    check_spec(spec)
    if not isinstance(num_workers, int) or num_workers < 1:
        raise SsenetError(f"num_workers must be a positive integer, got {num_workers!r}")
    out = Path(out_dir)
    wanted = _spec_record(spec)
    existing = _existing_summary(out, wanted)
    ids = split_ids(spec)
    if existing is not None and existing.get("complete") and _files_complete(out, ids):
        return existing
    if existing is None:  # record the spec first, so an interrupted run is recognised later
        _write_json(out / SUMMARY_FILE, {**wanted, "complete": False})
    tasks = [(str(out), spec, index, image_id) for index, image_id in enumerate(_all_ids(ids))]
    records = _run(tasks, num_workers, progress)
    for name, split in ids.items():
        write_text_atomic(out / LIST_DIR / f"{name}.txt", "".join(f"{i}\n" for i in split))
    write_text_atomic(out / CLASS_NAMES_FILE, "".join(f"{n}\n" for n in class_names()))
    summary = {**wanted, "complete": True, "seed": spec.seed, **_statistics(spec, ids, records)}
    _write_json(out / SUMMARY_FILE, summary)
    return summary


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


def write_preview(
    path: str | os.PathLike, spec: BenchmarkSpec, count: int = 8, columns: int = 4
) -> Path:
    """A PNG grid of the first `count` images of `spec`, each above its mask (VOC palette)."""
    check_spec(spec)
    if count < 1 or columns < 1:
        raise SsenetError(f"preview: count and columns must be positive, got {count}, {columns}")
    samples = [render_sample(spec, i) for i in range(count)]
    gap, side = 4, spec.size
    rows = -(-count // columns)
    grid = np.full((rows * (2 * side + 3 * gap), columns * (side + gap) + gap, 3), 255, np.uint8)
    for i, sample in enumerate(samples):
        top = (i // columns) * (2 * side + 3 * gap) + gap
        left = (i % columns) * (side + gap) + gap
        grid[top : top + side, left : left + side] = sample.image
        grid[top + side + gap : top + 2 * side + gap, left : left + side] = colorize(sample.label)
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")
    return path


def class_names() -> list[str]:
    """The benchmark's class names, background first."""
    return ["background", *CLASS_NAMES]


def split_ids(spec: BenchmarkSpec) -> dict[str, list[str]]:
    """Image ids of the three lists; `train` is the first `num_train_eval` ids of `train_aug`."""
    train_aug = [f"train_{i:06d}" for i in range(spec.num_train)]
    val = [f"val_{i:06d}" for i in range(spec.num_val)]
    return {"train_aug": train_aug, "train": train_aug[: spec.num_train_eval], "val": val}


# Integer knobs and their (lowest, highest) allowed values; None: no upper bound.
_INT_RANGES = {
    "seed": (0, None), "size": (32, None), "num_train": (1, None), "num_val": (0, None),
    "supersample": (1, None), "jpeg_quality": (1, 100), "void_radius": (0, None),
}  # fmt: skip
_FRACTIONS = ("min_part", "edge_part_prob", "context_prob", "min_visible", "noise_std",
              "max_part_cover", "max_body_cover", "body_bias", "distractor_bias")  # fmt: skip


def check_spec(spec: BenchmarkSpec) -> None:
    """Raise `SsenetError` naming the first knob of `spec` that is out of range."""
    checks = [
        (key, _is_int(getattr(spec, key), low, high), _int_range_text(low, high))
        for key, (low, high) in _INT_RANGES.items()
    ]
    checks += [
        (
            "num_train_eval",
            _is_int(spec.num_train_eval, 0, spec.num_train),
            f"an integer in 0..num_train ({spec.num_train})",
        ),
        ("object_count_probs", _is_probs(spec.object_count_probs, 3), "1-3 probabilities"),
        ("distractor_probs", _is_probs(spec.distractor_probs, 10), "probabilities summing to 1"),
        ("extent_range", _is_range(spec.extent_range), "0 < low <= high <= 1"),
        ("distractor_extent", _is_range(spec.distractor_extent), "0 < low <= high <= 1"),
        ("part_fraction", _is_range(spec.part_fraction), "0 < low <= high <= 1"),
        ("clutter_range", _is_count_range(spec.clutter_range), "0 <= low <= high integers"),
    ]
    checks += [(k, _is_fraction(getattr(spec, k)), "a number in [0, 1]") for k in _FRACTIONS]
    for key, ok, what in checks:
        if not ok:
            raise SsenetError(f"benchmark spec: {key} must be {what}, got {getattr(spec, key)!r}")


def _int_range_text(low: int, high: int | None) -> str:
    return f"an integer >= {low}" if high is None else f"an integer in {low}..{high}"


def _is_int(value: Any, low: int, high: int | None) -> bool:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
    return ok and (high is None or value <= high)


def _is_fraction(value: Any) -> bool:
    return isinstance(value, (int, float)) and 0 <= value <= 1


def _is_probs(values: Any, max_len: int) -> bool:
    try:
        probs = [float(v) for v in values]
    except (TypeError, ValueError):
        return False
    return 1 <= len(probs) <= max_len and min(probs) >= 0 and abs(sum(probs) - 1) < 1e-6


def _is_range(values: Any) -> bool:
    try:
        low, high = (float(v) for v in values)
    except (TypeError, ValueError):
        return False
    return 0 < low <= high <= 1


def _is_count_range(values: Any) -> bool:
    try:
        low, high = values
    except (TypeError, ValueError):
        return False
    return isinstance(low, int) and isinstance(high, int) and 0 <= low <= high


# ---------------------------------------------------------------------------------------------
# Directory bookkeeping


def _spec_record(spec: BenchmarkSpec) -> dict:
    # A JSON round trip turns tuples into lists, so stored and requested specs compare equal.
    return json.loads(
        json.dumps({"generator_version": GENERATOR_VERSION, "spec": asdict(spec)}, sort_keys=True)
    )


def _existing_summary(out: Path, wanted: dict) -> dict | None:
    """The stored summary when `out` holds this benchmark; None when `out` is new or empty."""
    path = out / SUMMARY_FILE
    if not path.is_file():
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise SsenetError(
                f"{out}: exists and is not an ssenet benchmark (no {SUMMARY_FILE}); "
                "choose a new or empty directory"
            )
        return None
    try:
        stored = json.loads(path.read_text())
        have = {"generator_version": stored["generator_version"], "spec": stored["spec"]}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise SsenetError(f"{path}: unreadable benchmark summary ({err})") from err
    if have != wanted:
        raise SsenetError(f"{path}: {_spec_difference(have, wanted)}; use another directory")
    return stored


def _spec_difference(have: dict, wanted: dict) -> str:
    if have["generator_version"] != wanted["generator_version"]:
        return (
            f"made by generator version {have['generator_version']}, "
            f"this is version {wanted['generator_version']}"
        )
    keys = sorted(set(have["spec"]) | set(wanted["spec"]))
    diff = [k for k in keys if have["spec"].get(k) != wanted["spec"].get(k)]
    stored = ", ".join(f"{k}={have['spec'].get(k)}" for k in diff)
    asked = ", ".join(f"{k}={wanted['spec'].get(k)}" for k in diff)
    return f"holds a benchmark with {stored}, but {asked} was asked for"


def _all_ids(ids: dict[str, list[str]]) -> list[str]:
    return ids["train_aug"] + ids["val"]


def _files_complete(out: Path, ids: dict[str, list[str]]) -> bool:
    names = [out / CLASS_NAMES_FILE] + [out / LIST_DIR / f"{n}.txt" for n in ids]
    for image_id in _all_ids(ids):
        names += [out / IMAGE_DIR / f"{image_id}.jpg", out / MASK_DIR / f"{image_id}.png"]
    return all(p.is_file() for p in names)


def _write_json(path: Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def _run(tasks: list[tuple], num_workers: int, progress: bool) -> list[dict]:
    bar = tqdm(total=len(tasks), desc="benchmark", unit="img", disable=not progress)
    records = []
    with bar:
        if num_workers == 1:
            for task in tasks:
                records.append(_make_one(task))
                bar.update()
        else:
            # spawn, not fork: the caller may hold threads (torch) that fork would copy mid-state.
            context = get_context("spawn")
            with ProcessPoolExecutor(num_workers, mp_context=context) as pool:
                for record in pool.map(_make_one, tasks, chunksize=8):
                    records.append(record)
                    bar.update()
    return records


def _make_one(task: tuple) -> dict:
    """Render one image and write whichever of its two files is missing; return its record."""
    out, spec, index, image_id = task
    sample = render_sample(spec, index)
    image_path = Path(out, IMAGE_DIR, f"{image_id}.jpg")
    if not image_path.is_file():
        with atomic_path(image_path) as tmp:
            # 4:4:4 chroma keeps the colour of parts a few pixels wide intact.
            Image.fromarray(sample.image).save(
                tmp, format="JPEG", quality=spec.jpeg_quality, subsampling=0
            )
    mask_path = Path(out, MASK_DIR, f"{image_id}.png")
    if not mask_path.is_file():
        write_label_png(mask_path, sample.label)
    return {"id": image_id, **sample.info}


# ---------------------------------------------------------------------------------------------
# Statistics for benchmark.json


def _statistics(spec: BenchmarkSpec, ids: dict[str, list[str]], records: list[dict]) -> dict:
    by_id = {r["id"]: r for r in records}
    names = class_names()
    counts = {}
    for split, split_ids_ in ids.items():
        per_class = np.zeros(len(CLASS_NAMES), dtype=int)
        for image_id in split_ids_:
            for k in by_id[image_id]["classes"]:
                per_class[k - 1] += 1
        counts[split] = {names[k + 1]: int(c) for k, c in enumerate(per_class)}
    objects = [o for r in records for o in r["objects"]]
    kept = [o for o in objects if not o["voided"]]
    pixels = np.zeros(len(names) + 1, dtype=np.int64)  # background, classes, void
    for r in records:
        pixels += np.asarray(r["pixels"], dtype=np.int64)
    low, high = spec.extent_range
    edges = np.geomspace(low, high, 7)
    drawn = np.array([o["extent"] for o in kept])
    visible = np.array([o["visible_extent"] for o in kept])
    return {
        "class_names": names,
        "class_parts": {n: f"{c} {s}" for n, (c, s) in zip(CLASS_NAMES, CLASS_PARTS, strict=True)},
        "preferred_scenes": dict(zip(CLASS_NAMES, SCENES, strict=True)),
        "preferred_bodies": {
            n: f"{family} {texture} hue {hue:.3f}+-{HUE_SPREAD}"
            for n, (family, texture, hue) in zip(CLASS_NAMES, CLASS_BODIES, strict=True)
        },
        "num_images": len(records),
        "splits": {split: len(v) for split, v in ids.items()},
        "class_image_counts": counts,
        "classes_per_image": _histogram([len(r["classes"]) for r in records]),
        "objects_per_image": _histogram([len(r["objects"]) for r in records]),
        "pixel_share": {
            name: round(float(p) / max(1, int(pixels.sum())), 4)
            for name, p in zip([*names, "void"], pixels, strict=True)
        },
        "objects": {
            "drawn": len(objects),
            "voided_too_small": len(objects) - len(kept),
            "extent_quantiles": _quantiles(drawn),
            "visible_extent_quantiles": _quantiles(visible),
            "extent_histogram": {
                "edges": [round(float(e), 4) for e in edges],
                "counts": np.histogram(np.clip(drawn, low, high), edges)[0].tolist(),
            },
            "extent_max_over_min": round(float(drawn.max() / drawn.min()), 2) if kept else None,
        },
        "scene_is_preferred": round(float(np.mean([r["preferred_scene"] for r in records])), 4),
    }


def _histogram(values: list[int]) -> dict[str, int]:
    keys = sorted(set(values))
    return {str(k): int(sum(v == k for v in values)) for k in keys}


def _quantiles(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {}
    qs = {"min": 0.0, "p05": 0.05, "p25": 0.25, "median": 0.5, "p75": 0.75, "p95": 0.95}
    out = {k: round(float(np.quantile(values, q)), 4) for k, q in qs.items()}
    out["max"] = round(float(values.max()), 4)
    return out


# ---------------------------------------------------------------------------------------------
# Rendering one image


def _render(spec: BenchmarkSpec, rng: np.random.Generator) -> Sample:
    n_objects = 1 + int(rng.choice(len(spec.object_count_probs), p=spec.object_count_probs))
    classes = [int(k) for k in rng.choice(len(CLASS_NAMES), n_objects, replace=False)]
    preferred = bool(rng.random() < spec.context_prob)
    scene = classes[0] if preferred else _other(rng, len(SCENES), classes[0])
    canvas, n_distractors = _background(rng, spec, SCENES[scene])
    placed: list[dict] = []
    for k in classes:
        obj = _place_object(rng, spec, placed, k)
        if obj is not None:
            _paint_object(rng, canvas, obj)
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


def _background(
    rng: np.random.Generator, spec: BenchmarkSpec, scene: str
) -> tuple[np.ndarray, int]:
    """The supersampled canvas with scene, clutter and part-less distractor bodies."""
    # Scenes are smooth, so they are painted at the output size (a quarter of the work) and
    # repeated; nearest upsampling followed by the box downsampling gives them back exactly.
    canvas = _scene(rng, scene, spec.size)
    canvas = canvas.repeat(spec.supersample, axis=0).repeat(spec.supersample, axis=1)
    _draw_clutter(rng, canvas, spec)
    n_distractors = int(rng.choice(len(spec.distractor_probs), p=spec.distractor_probs))
    for _ in range(n_distractors):
        _draw_distractor(rng, canvas, spec)
    return canvas, n_distractors


def _other(rng: np.random.Generator, n: int, avoid: int) -> int:
    choice = int(rng.integers(n - 1))
    return choice + (choice >= avoid)


def _finish_image(rng: np.random.Generator, canvas: np.ndarray, spec: BenchmarkSpec) -> np.ndarray:
    f = spec.supersample
    small = canvas.reshape(spec.size, f, spec.size, f, 3).mean(axis=(1, 3))
    small += spec.noise_std * rng.standard_normal(small.shape, dtype=np.float32)
    return (np.clip(small, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _label_map(spec: BenchmarkSpec, placed: list[dict]) -> tuple[np.ndarray, list[dict]]:
    """Downsample object ownership by majority, void thin boundary bands and too-small classes."""
    f, size = spec.supersample, spec.size
    owner = np.full((size * f, size * f), -1, dtype=np.int8)
    for j, obj in enumerate(placed):  # later objects lie on top
        owner[obj["mask"]] = j
    votes = [(owner == -1)] + [(owner == j) for j in range(len(placed))]
    counts = np.stack([v.reshape(size, f, size, f).sum(axis=(1, 3)) for v in votes])
    winner = counts.argmax(axis=0)
    ids = np.array([0] + [obj["class"] + 1 for obj in placed], dtype=np.uint8)
    label = ids[winner]
    # VOC's void band: every pixel within `radius` of a change of label.
    radius = max(1, round(spec.void_radius * size / 128)) if spec.void_radius else 0
    if radius:
        window = 2 * radius + 1
        band = ndimage.maximum_filter(label, window) != ndimage.minimum_filter(label, window)
        label[band] = IGNORE_INDEX
    min_pixels = spec.min_visible * size * size
    objects = []
    for obj in placed:
        region = label == obj["class"] + 1
        voided = bool(region.sum() < min_pixels)
        if voided:
            label[region] = IGNORE_INDEX
        objects.append(
            {
                "class": obj["class"] + 1,
                "extent": round(obj["extent"] / size, 4),
                "visible_pixels": int(region.sum()),
                "visible_extent": round(_bbox_extent(region) / size, 4),
                "voided": voided,
                "body": {key: obj["body"][key] for key in ("family", "texture", "hue")},
            }
        )
    return label, objects


def _bbox_extent(region: np.ndarray) -> int:
    rows, cols = np.nonzero(region)
    if rows.size == 0:
        return 0
    return int(max(rows.max() - rows.min(), cols.max() - cols.min()) + 1)


# ---------------------------------------------------------------------------------------------
# Objects: a body from the shared pool plus the class's part


def _place_object(
    rng: np.random.Generator, spec: BenchmarkSpec, placed: list[dict], k: int
) -> dict | None:
    """Find a position where the part is inside the image and earlier objects stay visible."""
    f, side = spec.supersample, spec.size * spec.supersample
    extent = _log_uniform(rng, *spec.extent_range) * spec.size  # in output pixels
    frac = rng.uniform(*spec.part_fraction)
    part_extent = min(max(frac * extent, spec.min_part * spec.size), 0.5 * extent) * f
    for _ in range(12):
        body = _body_polygon(rng, extent * f, side, _body_style(rng, k, spec.body_bias))
        part = _part_geometry(rng, spec, body, part_extent, side, k)
        if part is None:
            continue
        body_mask = _embed(_polygon_mask(body["points"], body["window"]), body["window"], side)
        part_mask, outline_mask, pattern_mask = _part_masks(part, side)
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
    for obj in placed:
        part = obj["part_area"]
        if (mask & part).sum() > spec.max_part_cover * part.sum():
            return True
        if (mask & obj["mask"]).sum() > spec.max_body_cover * obj["mask"].sum():
            return True
    return False


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def _body_style(rng: np.random.Generator, k: int, bias: float) -> dict:
    """Shape family, texture and hue of a body: each class k's preference with P(`bias`)."""
    family, texture, hue = CLASS_BODIES[k]
    if rng.random() >= bias:
        family = BODY_FAMILIES[int(rng.integers(len(BODY_FAMILIES)))]
    if rng.random() >= bias:
        texture = BODY_TEXTURES[int(rng.integers(len(BODY_TEXTURES)))]
    if rng.random() < bias:
        hue = (hue + rng.uniform(-HUE_SPREAD, HUE_SPREAD)) % 1.0
    else:
        hue = rng.random()
    return {"family": family, "texture": texture, "hue": hue}


def _body_polygon(rng: np.random.Generator, extent: float, side: int, style: dict) -> dict:
    """A star-shaped outline (so any point between its origin and the rim lies inside)."""
    family = style["family"]
    theta = np.linspace(0.0, 2.0 * np.pi, 72, endpoint=False)
    radius = _body_radius(rng, family, theta)
    turn = rng.uniform(0.0, 2.0 * np.pi)
    points = np.stack([radius * np.cos(theta + turn), radius * np.sin(theta + turn)], axis=1)
    points *= extent / max(np.ptp(points[:, 0]), np.ptp(points[:, 1]))
    middle = (points.max(axis=0) + points.min(axis=0)) / 2
    # The centre may sit near the border: VOC objects are often cut by the frame.
    margin = min(0.3 * extent, 0.5 * side)
    centre = rng.uniform(margin, side - margin, size=2)
    origin = centre - middle
    points = points + origin
    window = _window(points.min(axis=0), points.max(axis=0), side)
    return {"points": points, "origin": origin, "centre": centre, "extent": extent,
            "window": window, **style}  # fmt: skip


def _body_radius(rng: np.random.Generator, family: str, theta: np.ndarray) -> np.ndarray:
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


def _part_geometry(
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
                    "window": _window(centre - reach, centre + reach, side)}  # fmt: skip
    return None


def _part_masks(part: dict, side: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(shape, dark outline, dark pattern inside the shape) masks of one part, full size.

    The outline, shared by every class, keeps the part readable on bodies of any colour.
    """
    window = part["window"]
    yy, xx = (g[window] for g in _grid(side))
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
        shape = _polygon_mask(_star(r, 0.45 * r, a) + part["centre"], window)
        outline = _polygon_mask(_star(r + o, 0.45 * r + o, a) + part["centre"], window) & ~shape
    return tuple(_embed(m, window, side) for m in (shape, outline, pattern))


def _star(outer: float, inner: float, angle: float) -> np.ndarray:
    theta = angle + np.arange(10) * np.pi / 5
    radius = np.where(np.arange(10) % 2 == 0, outer, inner)
    return np.stack([radius * np.cos(theta), radius * np.sin(theta)], axis=1)


def _paint_object(rng: np.random.Generator, canvas: np.ndarray, obj: dict) -> None:
    _paint_body(rng, canvas, obj["body"], obj["body_mask"][obj["body"]["window"]])
    colour = np.clip(np.asarray(PART_COLOURS[obj["colour"]]) + rng.normal(0, 0.03, 3), 0, 1)
    canvas[obj["outline_mask"]] = _DARK
    canvas[obj["part_mask"]] = colour.astype(np.float32)
    canvas[obj["pattern_mask"]] = _DARK


def _paint_body(
    rng: np.random.Generator, canvas: np.ndarray, body: dict, local: np.ndarray
) -> None:
    """Fill the body's pixels (`local`: its mask inside its window) with a pool texture."""
    window = body["window"]
    yy, xx = (g[window] for g in _grid(canvas.shape[0]))
    canvas[window][local] = _body_texture(rng, yy, xx, body)[local]


# ---------------------------------------------------------------------------------------------
# Shared appearance pool: body textures, distractors, clutter and scenes


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
        t = _smoothstep(0.35, 0.65, _noise(rng, u.shape, 4))
    elif kind == "gradient":
        t = np.clip(u + 0.5, 0, 1)
    else:
        t = np.zeros_like(u)
    second_hue = (body["hue"] + rng.normal(0, 0.03)) % 1.0
    texture = _lerp(_body_colour(rng, body["hue"]), _body_colour(rng, second_hue), t)
    light = rng.uniform(0, 2 * np.pi)
    across = ((xx - cx) * math.cos(light) + (yy - cy) * math.sin(light)) / extent
    shade = np.clip(1.0 - rng.uniform(0.2, 0.5) * across, 0.6, 1.3)
    return texture * shade[..., None]


def _body_colour(rng: np.random.Generator, hue: float | None = None) -> np.ndarray:
    # Muted colours: the saturated ones belong to the parts.
    hue = rng.random() if hue is None else hue
    rgb = colorsys.hsv_to_rgb(hue, rng.uniform(0.2, 0.6), rng.uniform(0.3, 0.9))
    return np.asarray(rgb, dtype=np.float32)


def _draw_distractor(rng: np.random.Generator, canvas: np.ndarray, spec: BenchmarkSpec) -> None:
    """A body without a part, often in some class's look: background that looks like an object."""
    side = canvas.shape[0]
    style = _body_style(rng, int(rng.integers(len(CLASS_NAMES))), spec.distractor_bias)
    body = _body_polygon(rng, _log_uniform(rng, *spec.distractor_extent) * side, side, style)
    _paint_body(rng, canvas, body, _polygon_mask(body["points"], body["window"]))


def _draw_clutter(rng: np.random.Generator, canvas: np.ndarray, spec: BenchmarkSpec) -> None:
    """Small shapes on the background; drawn in local windows because there are many."""
    side = canvas.shape[0]
    low, high = spec.clutter_range
    for _ in range(int(rng.integers(low, high + 1))):
        x, y = rng.uniform(0, side, 2)
        r = side * rng.uniform(0.015, 0.09)
        kind = int(rng.integers(4))
        width = 0
        if kind == 0:
            ry = r * rng.uniform(0.3, 1)
            turn = np.linspace(0, 2 * np.pi, 24, endpoint=False)
            points = np.stack([x + r * np.cos(turn), y + ry * np.sin(turn)], axis=1)
        elif kind == 1:
            turn = np.linspace(0, 2 * np.pi, 24, endpoint=False)
            box = _body_radius(rng, "rounded", turn)
            turn = turn + rng.uniform(0, 2 * np.pi)
            points = np.stack([x + r * box * np.cos(turn), y + r * box * np.sin(turn)], axis=1)
        elif kind == 2:
            points = np.array([[x, y], [x + rng.normal(0, 3 * r), y + rng.normal(0, 3 * r)]])
            width = max(1, int(r * rng.uniform(0.1, 0.4)))
        else:
            points = rng.normal(0, r, (int(rng.integers(3, 7)), 2)) + (x, y)
        window = _window(points.min(axis=0) - width, points.max(axis=0) + width, side)
        mask = _polygon_mask(points, window, width)
        alpha = rng.uniform(0.5, 1.0)
        colour = _clutter_colour(rng, canvas, x, y)
        patch = canvas[window]
        patch[mask] = (1 - alpha) * patch[mask] + alpha * colour


def _clutter_colour(rng: np.random.Generator, canvas: np.ndarray, x: float, y: float) -> np.ndarray:
    choice = rng.random()
    if choice < 0.5:  # a lighter or darker shade of the scene under it
        side = canvas.shape[0]
        under = canvas[min(int(y), side - 1), min(int(x), side - 1)]
        return np.clip(under * rng.uniform(0.6, 1.4), 0, 1)
    if choice < 0.85:
        return _body_colour(rng)
    rgb = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.7, 1.0), rng.uniform(0.7, 1.0))
    return np.asarray(rgb, dtype=np.float32)


def _scene(rng: np.random.Generator, name: str, side: int) -> np.ndarray:
    """A background of one scene family: gradients, band-limited noise and a typical pattern."""
    yy, xx = _grid(side)
    y, x = yy / side, xx / side
    low = _noise(rng, side, 3)
    fine = _noise(rng, side, 24, octaves=2)
    image = _SCENE_PAINTERS[name](rng, x, y, low, fine)
    lighting = rng.uniform(0.85, 1.1) * (1 + 0.2 * (low - 0.5))
    image = image * lighting[..., None] + 0.06 * (fine - 0.5)[..., None]
    return np.clip(image, 0, 1).astype(np.float32)


# Scene painters: (rng, x, y, low-frequency noise, fine noise) -> (H, W, 3) image; x, y in [0, 1].
def _water(rng, x, y, low, fine):
    base = _lerp(_jit(rng, (0.16, 0.38, 0.55)), _jit(rng, (0.04, 0.18, 0.33)), y)
    phase = y * rng.uniform(10, 20) + 1.5 * low + 0.3 * x
    waves = (0.5 + 0.5 * np.sin(2 * np.pi * phase)) ** 6
    return _lerp(base, (0.75, 0.88, 0.95), 0.35 * waves)


def _meadow(rng, x, y, low, fine):
    grass = _lerp(_jit(rng, (0.28, 0.52, 0.16)), _jit(rng, (0.5, 0.62, 0.22)), low)
    blades = _noise(rng, x.shape[0], (4, 48))  # tall cells: vertical streaks
    return _lerp(grass, (0.1, 0.25, 0.06), 0.6 * _smoothstep(0.45, 0.8, blades))


def _desert(rng, x, y, low, fine):
    sand, dune = _jit(rng, (0.86, 0.72, 0.47)), _jit(rng, (0.72, 0.52, 0.3))
    a = rng.uniform(-0.5, 0.5)
    ripple = 0.5 + 0.5 * np.sin(
        2 * np.pi * (x * math.sin(a) + y * math.cos(a)) * rng.uniform(6, 12) + 4 * low
    )
    return _lerp(_lerp(sand, dune, low), dune * 0.8, 0.3 * ripple)


def _sky(rng, x, y, low, fine):
    cloud = _smoothstep(0.5, 0.72, _noise(rng, x.shape[0], 4, octaves=4))
    sky = _lerp(_jit(rng, (0.3, 0.52, 0.85)), _jit(rng, (0.72, 0.84, 0.96)), y)
    return _lerp(sky, (0.97, 0.97, 0.98), 0.85 * cloud)


def _room(rng, x, y, low, fine):
    wall, floor = _jit(rng, (0.78, 0.72, 0.62), 0.08), _jit(rng, (0.45, 0.3, 0.18))
    horizon = rng.uniform(0.55, 0.8)
    grain = 0.5 + 0.5 * np.sin(
        2 * np.pi * y * rng.uniform(20, 40) + 6 * _noise(rng, x.shape[0], (2, 8))
    )
    floor_image = _lerp(floor, floor * 0.7, grain)
    wall_image = _lerp(wall, wall * 0.85, np.clip(y / horizon, 0, 1))
    image = np.where((y < horizon)[..., None], wall_image, floor_image)
    image[np.abs(y - horizon) < 0.012] = _DARK * 2  # skirting board
    return image


def _forest(rng, x, y, low, fine):
    image = _lerp(_jit(rng, (0.1, 0.22, 0.08)), _jit(rng, (0.25, 0.38, 0.14)), (low + fine) / 2)
    trunk = _jit(rng, (0.28, 0.19, 0.11))
    for _ in range(int(rng.integers(3, 8))):
        centre, width = rng.uniform(0, 1), rng.uniform(0.02, 0.08)
        stem = np.abs(x - centre - 0.05 * (low - 0.5)) < width / 2
        image[stem] = (trunk * (0.7 + 0.5 * fine[stem])[:, None]).astype(np.float32)
    return image


def _snow(rng, x, y, low, fine):
    image = _lerp(_jit(rng, (0.93, 0.95, 0.98), 0.02), _jit(rng, (0.74, 0.8, 0.9)), low)
    return image + 0.15 * _smoothstep(0.7, 0.9, fine)[..., None]


def _brick(rng, x, y, low, fine):
    height = rng.uniform(0.06, 0.1)
    row = np.floor(y / height).astype(int)
    shifted = x + (row % 2) * height
    col = np.floor(shifted / (2 * height)).astype(int)
    tint = rng.uniform(-0.08, 0.08, (row.max() + 1, col.max() + 1)).astype(np.float32)
    brick = np.asarray(_jit(rng, (0.62, 0.27, 0.18))) + tint[row, col][..., None]
    brick = brick * (0.85 + 0.3 * fine)[..., None]
    mortar = (y / height % 1 < 0.12) | (shifted / (2 * height) % 1 < 0.06)
    return np.where(mortar[..., None], _jit(rng, (0.78, 0.76, 0.7)), brick)


_SCENE_PAINTERS = {
    "water": _water, "meadow": _meadow, "desert": _desert, "sky": _sky,
    "room": _room, "forest": _forest, "snow": _snow, "brick": _brick,
}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Small numeric helpers


@functools.lru_cache(maxsize=8)
def _grid(side: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (y, x) of a square canvas, shared read-only."""
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) + 0.5
    yy.flags.writeable = False
    xx.flags.writeable = False
    return yy, xx


def _noise(
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


def _smoothstep(low: float, high: float, t: np.ndarray) -> np.ndarray:
    t = np.clip((t - low) / (high - low), 0, 1)
    return t * t * (3 - 2 * t)


def _lerp(a: Any, b: Any, t: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    return (a + (b - a) * np.asarray(t, dtype=np.float32)[..., None]).astype(np.float32)


def _jit(rng: np.random.Generator, colour: tuple[float, ...], spread: float = 0.04) -> np.ndarray:
    return np.clip(np.asarray(colour) + rng.normal(0, spread, 3), 0, 1).astype(np.float32)


def _window(low: np.ndarray, high: np.ndarray, side: int) -> tuple[slice, slice]:
    """The (rows, columns) slices of the canvas covering the box low..high (x, y), clipped."""
    x0, y0 = (max(0, min(side - 1, int(math.floor(c)))) for c in low)
    x1, y1 = (max(1, min(side, int(math.ceil(c)) + 1)) for c in high)
    return slice(y0, max(y0 + 1, y1)), slice(x0, max(x0 + 1, x1))


def _polygon_mask(points: np.ndarray, window: tuple[slice, slice], width: int = 0) -> np.ndarray:
    """Rasterise a polygon (or, with `width`, a polyline) into a mask of the window's shape."""
    rows, cols = window
    image = Image.new("L", (cols.stop - cols.start, rows.stop - rows.start), 0)
    local = [tuple(p) for p in (points - (cols.start, rows.start)).tolist()]
    if width:
        ImageDraw.Draw(image).line(local, fill=255, width=width)
    else:
        ImageDraw.Draw(image).polygon(local, fill=255)
    return np.asarray(image) > 127


def _embed(local: np.ndarray, window: tuple[slice, slice], side: int) -> np.ndarray:
    full = np.zeros((side, side), dtype=bool)
    full[window] = local
    return full
