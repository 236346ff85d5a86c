"""The embedded benchmark: VOC layout, determinism, masks, and the WSSS properties it promises."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from ssenet.data.palette import IGNORE_INDEX, read_label_png, voc_palette
from ssenet.data.synthetic import (
    CLASS_BODIES,
    CLASS_NAMES,
    CLASS_PARTS,
    HUE_SPREAD,
    PART_COLOURS,
    BenchmarkSpec,
    class_names,
    make_benchmark,
    render_sample,
    write_benchmark,
)
from ssenet.errors import SsenetError

SAMPLE_SIZE = 96
SMALL = {"size": 64, "num_train": 24, "num_train_eval": 8, "num_val": 8}
LISTS = Path("ImageSets", "Segmentation")


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _ids(root: Path, name: str) -> list[str]:
    return (root / LISTS / f"{name}.txt").read_text().split()


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bench") / "out"
    make_benchmark(root, seed=0, num_workers=1, progress=False, **SMALL)
    return root


@pytest.fixture(scope="module")
def masks(bench: Path) -> dict[str, np.ndarray]:
    ids = _ids(bench, "train_aug") + _ids(bench, "val")
    return {i: read_label_png(bench / "SegmentationClass" / f"{i}.png") for i in ids}


@pytest.fixture(scope="module")
def samples() -> list:
    """A moderate sample rendered in memory (no files): 80 images at 96 px (at 64 px the parts
    of the smallest objects are 4 px wide, too few for their colour to survive the JPEG)."""
    spec = BenchmarkSpec(size=SAMPLE_SIZE)
    return [render_sample(spec, i) for i in range(80)]


def test_voc_layout_and_lists(bench: Path) -> None:
    train_aug, train, val = (_ids(bench, n) for n in ("train_aug", "train", "val"))
    assert (len(train_aug), len(train), len(val)) == (24, 8, 8)
    assert train == train_aug[:8]  # train lies inside train_aug, as in VOC
    assert len(set(train_aug + val)) == 32 and not set(train_aug) & set(val)
    stems = {p.stem for p in (bench / "JPEGImages").glob("*.jpg")}
    assert stems == set(train_aug + val)
    assert {p.stem for p in (bench / "SegmentationClass").glob("*.png")} == stems
    summary = json.loads((bench / "benchmark.json").read_text())
    assert summary["complete"] and summary["num_images"] == 32
    assert summary["spec"]["size"] == 64 and summary["spec"]["seed"] == 0
    assert summary["splits"] == {"train_aug": 24, "train": 8, "val": 8}


def test_class_names_file(bench: Path) -> None:
    names = (bench / "class_names.txt").read_text().splitlines()
    assert names == ["background", *CLASS_NAMES] == class_names()
    assert len(names) == 9 and len(set(names)) == 9


def test_files_are_voc_images_and_palette_masks(bench: Path) -> None:
    image_id = _ids(bench, "val")[0]
    with Image.open(bench / "JPEGImages" / f"{image_id}.jpg") as image:
        assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (64, 64))
    with Image.open(bench / "SegmentationClass" / f"{image_id}.png") as mask:
        assert (mask.format, mask.mode, mask.size) == ("PNG", "P", (64, 64))
        palette = np.array(mask.getpalette()[: 256 * 3], dtype=np.uint8).reshape(-1, 3)
    assert np.array_equal(palette, voc_palette())


def test_masks_hold_only_classes_and_void(masks: dict[str, np.ndarray]) -> None:
    values = set(np.unique(np.concatenate([m.ravel() for m in masks.values()])).tolist())
    assert values <= set(range(len(CLASS_NAMES) + 1)) | {IGNORE_INDEX}
    assert {0, IGNORE_INDEX} <= values


def test_void_band_separates_every_label_change(masks: dict[str, np.ndarray]) -> None:
    for image_id, mask in masks.items():
        for a, b in ((mask[1:], mask[:-1]), (mask[:, 1:], mask[:, :-1])):
            touching = (a != b) & (a != IGNORE_INDEX) & (b != IGNORE_INDEX)
            assert not touching.any(), f"{image_id}: two labels touch without a void band"
        objects = (mask > 0) & (mask != IGNORE_INDEX)
        assert objects.any() and (mask == IGNORE_INDEX).any()


def test_one_to_three_classes_per_image_and_every_class_occurs(
    bench: Path, masks: dict[str, np.ndarray]
) -> None:
    seen = set()
    for mask in masks.values():
        present = set(np.unique(mask).tolist()) - {0, IGNORE_INDEX}
        assert 1 <= len(present) <= 3
        seen |= present
    assert seen == set(range(1, len(CLASS_NAMES) + 1))
    counts = json.loads((bench / "benchmark.json").read_text())["class_image_counts"]
    expected = {name: 0 for name in CLASS_NAMES}
    for image_id in _ids(bench, "val"):
        for k in set(np.unique(masks[image_id]).tolist()) - {0, IGNORE_INDEX}:
            expected[CLASS_NAMES[k - 1]] += 1
    assert counts["val"] == expected


def test_object_sizes_spread_at_least_six_fold(samples: list) -> None:
    extents = []
    for sample in samples:
        for k in sample.info["classes"]:
            rows, cols = np.nonzero(sample.label == k)
            extents.append(max(np.ptp(rows), np.ptp(cols)) + 1)
    assert len(extents) > 100
    assert max(extents) / min(extents) >= 6
    drawn = [o["extent"] for s in samples for o in s.info["objects"]]
    assert 0.12 <= min(drawn) < 0.17 and 0.6 < max(drawn) <= 0.85


def test_labels_match_drawn_objects_and_parts(samples: list) -> None:
    spec = BenchmarkSpec(size=SAMPLE_SIZE)
    for sample in samples:
        present = set(np.unique(sample.label).tolist()) - {0, IGNORE_INDEX}
        assert present == set(sample.info["classes"])
        for k in present:
            region = sample.label == k
            assert region.sum() >= spec.min_visible * SAMPLE_SIZE**2
            # The class's part colour is drawn on the labelled object (its core or void rim).
            near = ndimage.binary_dilation(region, iterations=2)
            colour = np.array(PART_COLOURS[CLASS_PARTS[k - 1][0]]) * 255
            distance = np.abs(sample.image.astype(float) - colour).max(axis=2)
            assert (distance[near] < 70).sum() >= 3, f"class {k}: part colour not found"


def test_context_prefers_one_scene_per_class(samples: list) -> None:
    preferred = np.mean([s.info["preferred_scene"] for s in samples])
    assert 0.45 <= preferred <= 0.75  # spec: 0.6


def test_bodies_are_evidence_of_the_class_but_weaker_than_parts(samples: list) -> None:
    objects = [o for s in samples for o in s.info["objects"]]
    assert len(objects) > 100
    looks = {"family": [], "texture": [], "hue": []}
    for obj in objects:
        family, texture, hue = CLASS_BODIES[obj["class"] - 1]
        gap = abs((obj["body"]["hue"] - hue + 0.5) % 1.0 - 0.5)
        looks["family"].append(obj["body"]["family"] == family)
        looks["texture"].append(obj["body"]["texture"] == texture)
        looks["hue"].append(gap <= HUE_SPREAD)
    for attribute, hits in looks.items():
        share = float(np.mean(hits))
        # body_bias 0.7 plus chance (1/4 families, 1/6 textures, 0.2 of the hue circle): the
        # preferred look is common but far from certain, unlike the part, which never varies.
        assert 0.7 < share < 0.9, (attribute, share)
    # Neighbouring classes' hue ranges overlap: the hue alone cannot name the class.
    centres = sorted(hue for _, _, hue in CLASS_BODIES)
    assert 2 * HUE_SPREAD > centres[1] - centres[0]


def test_parts_need_colour_and_shape_together() -> None:
    colours = [c for c, _ in CLASS_PARTS]
    shapes = [s for _, s in CLASS_PARTS]
    assert len(set(CLASS_PARTS)) == len(CLASS_NAMES) >= 6
    assert all(colours.count(c) == 2 for c in colours)
    assert all(shapes.count(s) == 2 for s in shapes)


def test_same_seed_gives_identical_bytes_whatever_the_workers(bench: Path, tmp_path: Path) -> None:
    other = tmp_path / "two_workers"
    make_benchmark(other, seed=0, num_workers=2, progress=False, **SMALL)
    assert _files(other) == _files(bench)


def test_different_seed_differs(tmp_path: Path) -> None:
    small = {"size": 64, "num_train": 3, "num_train_eval": 1, "num_val": 1}
    make_benchmark(tmp_path / "a", seed=0, num_workers=1, progress=False, **small)
    make_benchmark(tmp_path / "b", seed=1, num_workers=1, progress=False, **small)
    for image_id in ["train_000000", "train_000001", "train_000002", "val_000000"]:
        name = Path("JPEGImages", f"{image_id}.jpg")
        assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "b" / name).read_bytes()


def test_rerun_on_complete_directory_is_a_no_op(bench: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in bench.rglob("*")}
    summary = make_benchmark(bench, seed=0, num_workers=1, progress=False, **SMALL)
    assert {p: p.stat().st_mtime_ns for p in bench.rglob("*")} == before
    assert summary == json.loads((bench / "benchmark.json").read_text())


def test_interrupted_run_is_completed_identically(bench: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(bench, copy)
    (copy / "JPEGImages" / "train_000003.jpg").unlink()
    (copy / "SegmentationClass" / "val_000002.png").unlink()
    (copy / LISTS / "val.txt").unlink()
    make_benchmark(copy, seed=0, num_workers=1, progress=False, **SMALL)
    assert _files(copy) == _files(bench)


def test_different_spec_in_existing_directory_is_an_error(bench: Path) -> None:
    with pytest.raises(SsenetError, match=r"benchmark\.json.*size=64.*size=72"):
        make_benchmark(bench, seed=0, num_workers=1, progress=False, **{**SMALL, "size": 72})
    with pytest.raises(SsenetError, match="seed"):
        make_benchmark(bench, seed=3, num_workers=1, progress=False, **SMALL)
    spec = BenchmarkSpec(seed=0, context_prob=0.9, **SMALL)
    with pytest.raises(SsenetError, match="context_prob"):
        write_benchmark(bench, spec, num_workers=1, progress=False)


def test_foreign_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "JPEGImages").mkdir()
    with pytest.raises(SsenetError, match="not an ssenet benchmark"):
        make_benchmark(tmp_path, num_workers=1, progress=False, **SMALL)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"size": 16}, "size"),
        ({"num_train_eval": 30}, "num_train_eval"),
        ({"seed": -1}, "seed"),
        ({"num_workers": 0}, "num_workers"),
    ],
)
def test_bad_arguments_are_reported(tmp_path: Path, kwargs: dict, key: str) -> None:
    args = {**SMALL, "num_workers": 1, "progress": False, **kwargs}
    with pytest.raises(SsenetError, match=key):
        make_benchmark(tmp_path / "out", **args)
    assert not (tmp_path / "out").exists()
