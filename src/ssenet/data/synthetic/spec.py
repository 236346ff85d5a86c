"""What the benchmark is: the classes' parts, bodies and scenes, and the generator's knobs.

Only the part names the class: its colour and its shape each serve two classes. The body and the
scene are weaker evidence, shared between classes and drawn from the pool with some probability.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ssenet.errors import SsenetError

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


def class_names() -> list[str]:
    """The benchmark's class names, background first."""
    return ["background", *CLASS_NAMES]


def body_style(rng: np.random.Generator, k: int, bias: float) -> dict:
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
