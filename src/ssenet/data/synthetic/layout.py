"""The files on disk: the VOC layout and lists, and `benchmark.json` (spec record, statistics).

A directory holds exactly one spec: the record is written before any image, so an interrupted
run is recognised and completed, and a different spec is refused.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ssenet.data.synthetic.spec import (
    CLASS_BODIES,
    CLASS_NAMES,
    CLASS_PARTS,
    HUE_SPREAD,
    SCENES,
    BenchmarkSpec,
    class_names,
)
from ssenet.errors import SsenetError
from ssenet.fileio import write_text_atomic

# Recorded with the spec: a change to the drawing that changes the bytes needs a new version,
# so that a directory made by the old code is not taken for the new one.
GENERATOR_VERSION = 2
IMAGE_DIR = "JPEGImages"
MASK_DIR = "SegmentationClass"
LIST_DIR = Path("ImageSets", "Segmentation")
SUMMARY_FILE = "benchmark.json"
CLASS_NAMES_FILE = "class_names.txt"


def split_ids(spec: BenchmarkSpec) -> dict[str, list[str]]:
    """Image ids of the three lists; `train` is the first `num_train_eval` ids of `train_aug`."""
    train_aug = [f"train_{i:06d}" for i in range(spec.num_train)]
    val = [f"val_{i:06d}" for i in range(spec.num_val)]
    return {"train_aug": train_aug, "train": train_aug[: spec.num_train_eval], "val": val}


def spec_record(spec: BenchmarkSpec) -> dict:
    """The generator version and spec as `benchmark.json` stores them."""
    # A JSON round trip turns tuples into lists, so stored and requested specs compare equal.
    return json.loads(
        json.dumps({"generator_version": GENERATOR_VERSION, "spec": asdict(spec)}, sort_keys=True)
    )


def existing_summary(out: Path, wanted: dict) -> dict | None:
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
    """Which version or knobs differ between the stored and the requested record."""
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


def all_ids(ids: dict[str, list[str]]) -> list[str]:
    """Every image id once (`train` lies inside `train_aug`), in rendering order."""
    return ids["train_aug"] + ids["val"]


def files_complete(out: Path, ids: dict[str, list[str]]) -> bool:
    """Does `out` hold every image, mask and list file of `ids`?"""
    names = [out / CLASS_NAMES_FILE] + [out / LIST_DIR / f"{n}.txt" for n in ids]
    for image_id in all_ids(ids):
        names += [out / IMAGE_DIR / f"{image_id}.jpg", out / MASK_DIR / f"{image_id}.png"]
    return all(p.is_file() for p in names)


def write_json(path: Path, data: dict) -> None:
    """Write `data` atomically as indented JSON with sorted keys (stable bytes)."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_lists(out: Path, ids: dict[str, list[str]]) -> None:
    """The image lists under `ImageSets/Segmentation` and the class names file."""
    for name, split in ids.items():
        write_text_atomic(out / LIST_DIR / f"{name}.txt", "".join(f"{i}\n" for i in split))
    write_text_atomic(out / CLASS_NAMES_FILE, "".join(f"{n}\n" for n in class_names()))


# ---------------------------------------------------------------------------------------------
# Statistics for benchmark.json


def summary_statistics(spec: BenchmarkSpec, ids: dict[str, list[str]], records: list[dict]) -> dict:
    """The summary of the rendered images' `records` (their `Sample.info` with an `id`)."""
    return {
        **_class_design(),
        "num_images": len(records),
        "splits": {split: len(v) for split, v in ids.items()},
        "class_image_counts": _class_image_counts(ids, records),
        "classes_per_image": _histogram([len(r["classes"]) for r in records]),
        "objects_per_image": _histogram([len(r["objects"]) for r in records]),
        "pixel_share": _pixel_share(records),
        "objects": _object_statistics(spec, records),
        "scene_is_preferred": round(float(np.mean([r["preferred_scene"] for r in records])), 4),
    }


def _class_design() -> dict:
    return {
        "class_names": class_names(),
        "class_parts": {n: f"{c} {s}" for n, (c, s) in zip(CLASS_NAMES, CLASS_PARTS, strict=True)},
        "preferred_scenes": dict(zip(CLASS_NAMES, SCENES, strict=True)),
        "preferred_bodies": {
            n: f"{family} {texture} hue {hue:.3f}+-{HUE_SPREAD}"
            for n, (family, texture, hue) in zip(CLASS_NAMES, CLASS_BODIES, strict=True)
        },
    }


def _class_image_counts(ids: dict[str, list[str]], records: list[dict]) -> dict:
    """Per list, how many of its images show each class."""
    by_id = {r["id"]: r for r in records}
    names = class_names()
    counts = {}
    for split, split_ids_ in ids.items():
        per_class = np.zeros(len(CLASS_NAMES), dtype=int)
        for image_id in split_ids_:
            for k in by_id[image_id]["classes"]:
                per_class[k - 1] += 1
        counts[split] = {names[k + 1]: int(c) for k, c in enumerate(per_class)}
    return counts


def _pixel_share(records: list[dict]) -> dict[str, float]:
    """The share of all label pixels that are background, each class and void."""
    names = class_names()
    pixels = np.zeros(len(names) + 1, dtype=np.int64)  # background, classes, void
    for r in records:
        pixels += np.asarray(r["pixels"], dtype=np.int64)
    return {
        name: round(float(p) / max(1, int(pixels.sum())), 4)
        for name, p in zip([*names, "void"], pixels, strict=True)
    }


def _object_statistics(spec: BenchmarkSpec, records: list[dict]) -> dict:
    """How many objects were drawn and voided, and how the sizes of the kept ones spread."""
    objects = [o for r in records for o in r["objects"]]
    kept = [o for o in objects if not o["voided"]]
    low, high = spec.extent_range
    edges = np.geomspace(low, high, 7)
    drawn = np.array([o["extent"] for o in kept])
    visible = np.array([o["visible_extent"] for o in kept])
    return {
        "drawn": len(objects),
        "voided_too_small": len(objects) - len(kept),
        "extent_quantiles": _quantiles(drawn),
        "visible_extent_quantiles": _quantiles(visible),
        "extent_histogram": {
            "edges": [round(float(e), 4) for e in edges],
            "counts": np.histogram(np.clip(drawn, low, high), edges)[0].tolist(),
        },
        "extent_max_over_min": round(float(drawn.max() / drawn.min()), 2) if kept else None,
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
