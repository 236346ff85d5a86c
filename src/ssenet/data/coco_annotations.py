"""A COCO instance-annotation file: read and checked (every problem named with the file and the
entry), indexed with pycocotools, and rasterised into one image's semantic mask the way
alicranck/coco2voc does (see `ssenet.data.coco` for the conventions and their sources)."""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from ssenet.data.datasets import PathLike
from ssenet.data.palette import IGNORE_INDEX, MAX_IMAGE_PIXELS
from ssenet.errors import SsenetError
from ssenet.fileio import read_json


def image_labels(anns: list[dict], class_of: dict[int, int]) -> list[int]:
    return sorted({class_of[ann["category_id"]] for ann in anns})


def load_annotations(path: Path) -> dict:
    data = read_json(path, "annotation file")
    if not isinstance(data, dict):
        raise SsenetError(f"{path}: not a COCO annotation file (the top level is not an object)")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise SsenetError(f"{path}: not a COCO instances file: no {key!r} list")
    check_categories(data["categories"], path)
    check_images(data["images"], path)
    check_annotations(data, path)
    return data


def entry_problem(entry: object, fields: dict[str, type | tuple[type, ...]]) -> str | None:
    if not isinstance(entry, dict):
        return "is not an object"
    for name, kind in fields.items():
        value = entry.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"has no valid {name!r}"
    return None


def check_categories(categories: list, path: Path) -> None:
    seen: set[int] = set()
    for n, category in enumerate(categories):
        problem = entry_problem(category, {"id": int, "name": str})
        if problem:
            raise SsenetError(f"{path}: category {n} {problem}")
        if category["id"] in seen:
            raise SsenetError(f"{path}: category id {category['id']} appears twice")
        seen.add(category["id"])
    if not 1 <= len(categories) < IGNORE_INDEX:
        raise SsenetError(f"{path}: {len(categories)} categories (1 to 254 fit a label PNG)")


def check_images(images: list, path: Path) -> None:
    ids: set[int] = set()
    stems: set[str] = set()
    fields = {"id": int, "file_name": str, "height": int, "width": int}
    for n, image in enumerate(images):
        problem = entry_problem(image, fields)
        if problem:
            raise SsenetError(f"{path}: image {n} {problem}")
        name = image["file_name"]
        stem = Path(name).stem
        if Path(name).name != name or "\\" in name or not stem or stem.startswith("."):
            raise SsenetError(
                f"{path}: image id {image['id']}: file_name {name!r} is not a file name"
            )
        height, width = image["height"], image["width"]
        if height < 1 or width < 1 or height * width > MAX_IMAGE_PIXELS:
            raise SsenetError(
                f"{path}: image id {image['id']} ({name}): height x width {height} x {width} is "
                f"not a size ssenet reads (1 to {MAX_IMAGE_PIXELS:,} pixels)"
            )
        if image["id"] in ids or stem in stems:
            raise SsenetError(f"{path}: image id {image['id']} ({name}) appears twice")
        ids.add(image["id"])
        stems.add(stem)


def check_annotations(data: dict, path: Path) -> None:
    images = {image["id"]: image for image in data["images"]}
    categories = {category["id"] for category in data["categories"]}
    for n, ann in enumerate(data["annotations"]):
        problem = entry_problem(ann, {"image_id": int, "category_id": int})
        name = f"annotation {ann.get('id', n) if isinstance(ann, dict) else n}"
        if problem:
            raise SsenetError(f"{path}: {name} {problem}")
        if ann["image_id"] not in images:
            raise SsenetError(
                f"{path}: {name} refers to image id {ann['image_id']}, which is not in 'images'"
            )
        if ann["category_id"] not in categories:
            raise SsenetError(
                f"{path}: {name} has category id {ann['category_id']}, not one of the file's "
                f"categories ({', '.join(str(c) for c in sorted(categories))})"
            )
        problem = segmentation_problem(ann.get("segmentation"), images[ann["image_id"]])
        if problem:
            raise SsenetError(f"{path}: {name} (image id {ann['image_id']}): {problem}")


def segmentation_problem(segm: object, image: dict) -> str | None:
    """Why pycocotools cannot rasterise `segm` for this image, or None."""
    if isinstance(segm, list):
        numbers = all(
            isinstance(p, list) and len(p) % 2 == 0 and p
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in p)
            for p in segm
        )  # fmt: skip
        return None if numbers else "a polygon is not an even, non-empty list of coordinates"
    if not isinstance(segm, dict) or "counts" not in segm:
        return "no segmentation (a list of polygons or an RLE object)"
    size = [image["height"], image["width"]]
    if segm.get("size") != size:
        return f"RLE size {segm.get('size')} differs from the image's {size} (height, width)"
    counts = segm["counts"]
    if isinstance(counts, list):
        valid = all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts)
        if not valid or sum(counts) != size[0] * size[1]:
            return "uncompressed RLE counts are not non-negative integers summing to height x width"
        return None
    return None if isinstance(counts, str) else "RLE counts are neither a list nor a string"


def coco_index(data: dict) -> COCO:
    """pycocotools' index of an already loaded and checked file (its prints silenced)."""
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def semantic_mask(
    coco: COCO, image: dict, anns: Sequence[dict], class_of: dict[int, int], source: PathLike
) -> np.ndarray:
    """(H, W) uint8 mask of one image: 0 background, the smallest object on top (coco2voc)."""
    label = np.zeros((image["height"], image["width"]), np.uint8)
    if not anns:
        return label
    rles = [rle(coco, ann, source) for ann in anns]
    areas = [area(ann, rle) for ann, rle in zip(anns, rles, strict=True)]
    with warnings.catch_warnings():  # pycocotools' decode trips a numpy 2 DeprecationWarning
        warnings.simplefilter("ignore", DeprecationWarning)
        pixels = mask_utils.decode(rles)  # (H, W, N)
    for k in sorted(range(len(anns)), key=areas.__getitem__):  # stable: file order on ties
        free = (pixels[:, :, k] > 0) & (label == 0)
        label[free] = class_of[anns[k]["category_id"]]
    return label


def area(ann: dict, rle: dict) -> float:
    """The annotation's `area` (what coco2voc sorts by), else its mask's pixel count."""
    area = ann.get("area")
    if isinstance(area, int | float) and not isinstance(area, bool):
        return float(area)
    return float(mask_utils.area(rle))


def rle(coco: COCO, ann: dict, source: PathLike) -> dict:
    if ann["segmentation"] == []:
        height, width = coco.imgs[ann["image_id"]]["height"], coco.imgs[ann["image_id"]]["width"]
        return mask_utils.encode(np.zeros((height, width), np.uint8, order="F"))
    try:
        return coco.annToRLE(ann)
    except Exception as err:  # pycocotools raises bare Exception on input it cannot read
        raise SsenetError(
            f"{source}: annotation {ann.get('id', '?')} (image id {ann['image_id']}): "
            f"pycocotools cannot rasterise its segmentation ({err})"
        ) from err
