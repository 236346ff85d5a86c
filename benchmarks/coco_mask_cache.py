"""Cost of the COCO mask cache: building it, reopening it, and what it saves.

Writes a synthetic COCO 2014 train split (`--images` images of `--width` x `--height` with the 80
COCO categories; per image two polygons, one compressed RLE object and, for a third of the
images, an uncompressed-RLE crowd region, overlapping), then times, in seconds per 1,000 images:

- build: the first `open_coco` (read and check the JSON, rasterise every image with pycocotools,
  write the palette PNGs and the index); `json` is the reading and checking part of it;
- reopen: a later `open_coco` (the index and one listing of the folders);
- read cached: decoding every cached mask PNG (what evaluation and training pay per pass);
- rasterise: making every mask again in memory from the loaded annotations, without writing
  (what a reader without a cache would pay per pass, on top of loading the JSON once).

The image files are empty placeholders: the reader only checks that they exist, it never decodes
them, so no time here is spent on images. Wall-clock, one process, best of `--repeats` for the
cheap steps (the build runs once).

    python benchmarks/coco_mask_cache.py                  # 1,000 images of 640 x 480
    python benchmarks/coco_mask_cache.py --images 200 --out /tmp/coco_bench
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from ssenet.data import coco
from ssenet.data.palette import read_label_png


def polygon(rng: np.random.Generator, width: int, height: int) -> list[float]:
    """A random star-shaped polygon of 6 to 12 corners inside the image."""
    cx, cy = rng.uniform(0.2, 0.8) * width, rng.uniform(0.2, 0.8) * height
    radius = rng.uniform(0.05, 0.3) * min(width, height)
    angles = np.sort(rng.uniform(0, 2 * math.pi, rng.integers(6, 13)))
    scale = rng.uniform(0.5, 1.0, angles.size) * radius
    xs = np.clip(cx + scale * np.cos(angles), 0, width - 1)
    ys = np.clip(cy + scale * np.sin(angles), 0, height - 1)
    return np.stack([xs, ys], 1).ravel().round(2).tolist()


def ellipse(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    rows, cols = np.ogrid[:height, :width]
    cy, cx = rng.uniform(0, height), rng.uniform(0, width)
    ry, rx = rng.uniform(0.05, 0.25) * height, rng.uniform(0.05, 0.25) * width
    return ((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 <= 1


def uncompressed_rle(mask: np.ndarray) -> list[int]:
    """Column-major run lengths starting with a run of zeros, as COCO's crowd annotations."""
    flat = np.asfortranarray(mask).ravel(order="F").astype(np.int8)
    edges = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], edges, [flat.size]])
    runs = np.diff(bounds).tolist()
    return runs if flat[0] == 0 else [0, *runs]


def annotations(rng: np.random.Generator, number: int, width: int, height: int, first_id: int):
    """The annotations of one image: two polygons, a compressed RLE, sometimes a crowd."""
    objects = []
    for _ in range(2):
        segm = [polygon(rng, width, height)]
        area = float(mask_utils.area(mask_utils.merge(mask_utils.frPyObjects(segm, height, width))))
        objects.append((segm, area, 0))
    rle = mask_utils.encode(np.asfortranarray(ellipse(rng, width, height).astype(np.uint8)))
    objects.append(
        ({"size": rle["size"], "counts": rle["counts"].decode()}, float(mask_utils.area(rle)), 0)
    )
    if rng.random() < 1 / 3:
        crowd = ellipse(rng, width, height)
        objects.append(
            ({"size": [height, width], "counts": uncompressed_rle(crowd)}, float(crowd.sum()), 1)
        )
    categories = [c for c, _ in coco.COCO_CATEGORIES]
    return [
        {"id": first_id + k, "image_id": number, "category_id": int(rng.choice(categories)),
         "segmentation": segm, "area": area, "iscrowd": crowd, "bbox": [0, 0, 1, 1]}
        for k, (segm, area, crowd) in enumerate(objects)
    ]  # fmt: skip


def write_dataset(root: Path, count: int, width: int, height: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    images, anns = [], []
    (root / "train2014").mkdir(parents=True)
    for number in range(1, count + 1):
        name = f"COCO_train2014_{number:012d}.jpg"
        (root / "train2014" / name).touch()  # never decoded by the reader
        images.append({"id": number, "file_name": name, "height": height, "width": width})
        anns += annotations(rng, number, width, height, len(anns) + 1)
    categories = [{"id": i, "name": n, "supercategory": ""} for i, n in coco.COCO_CATEGORIES]
    data = {"images": images, "annotations": anns, "categories": categories}
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_train2014.json").write_text(json.dumps(data))


def best(repeats: int, step) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return min(times)


def rasteriser(root: Path):
    """A function making every mask in memory from annotations loaded (and indexed) beforehand."""
    path = root / "annotations" / "instances_train2014.json"
    data = json.loads(path.read_text())
    index = coco.coco_index(data)
    ids = sorted(c["id"] for c in data["categories"])
    class_of = {cat_id: k for k, cat_id in enumerate(ids, start=1)}

    def run() -> None:
        for info in data["images"]:
            anns = index.imgToAnns.get(info["id"], [])
            coco.semantic_mask(index, info, anns, class_of, path)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", help="folder for the synthetic data (default: a temporary one)")
    args = parser.parse_args()
    root = Path(args.out or tempfile.mkdtemp(prefix="coco_bench_")) / "coco"
    if root.exists():
        shutil.rmtree(root)
    write_dataset(root, args.images, args.width, args.height, args.seed)
    annotation = root / "annotations" / "instances_train2014.json"
    per_k = 1000 / args.images
    json_time = best(args.repeats, lambda: coco.load_annotations(annotation))
    start = time.perf_counter()
    dataset = coco.open_coco(root, "train2014")
    build = time.perf_counter() - start
    reopen = best(args.repeats, lambda: coco.open_coco(root, "train2014"))
    read = best(args.repeats, lambda: [read_label_png(dataset.mask_path(i)) for i in dataset.ids])
    rasterise = best(args.repeats, rasteriser(root))
    size = sum(p.stat().st_size for p in (root / "ssenet_masks").glob("*.png"))
    print(
        f"{args.images} images of {args.width} x {args.height}, "
        f"{len(json.loads(annotation.read_text())['annotations'])} annotations, "
        f"JSON {annotation.stat().st_size / 2**20:.1f} MiB, masks {size / 2**20:.1f} MiB"
    )
    print("seconds per 1,000 images:")
    rows = {
        "build (first open)": build,
        "  of which JSON read + checks": json_time,
        "reopen (index only)": reopen,
        "read cached masks": read,
        "rasterise in memory, no cache": rasterise,
    }
    for name, seconds in rows.items():
        print(f"  {name:<32} {seconds * per_k:8.3f}")
    print(f"rasterising again costs {rasterise / read:.1f}x reading the cached PNGs")


if __name__ == "__main__":
    main()
