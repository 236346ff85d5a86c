"""MS COCO 2014 instance annotations as a `SegmentationDataset` with 81-class semantic masks.

Layout (the official one): `<root>/train2014/`, `<root>/val2014/` and
`<root>/annotations/instances_{train,val}2014.json`. Image ids are the file stems
(`COCO_train2014_000000000009`).

Lists: `train2014` (aliases `train`, `train_aug`) and `val2014` (alias `val`) hold the images of
the split with at least one annotation: coco2voc writes no mask for the others, and the lists of
COCO WSSS repos leave them out (L2G's `data/coco14/val.txt` has 40,137 of the 40,504 val2014
images; MCTformer's lists keep all). An id file (one id a line, like a VOC list) may name any
image of either split, unannotated ones too (no labels, a background mask).

Image-level labels: the categories of all the image's annotations, crowd ones included, as the
label vectors of ReCAM's `mscoco/dataloader.py` (every annotation `CocoDetection` returns).

Masks follow the conversion of alicranck/coco2voc (`coco2voc_aux.py`), which ToCo and DuPL point
to for their COCO ground truth and whose `class_labels` output PMM reads: background 0; the
categories numbered 1..K in ascending category id (ReCAM's `category_map`: 1..80 for COCO's ids
1..90, where coco2voc writes the raw ids); a pixel covered by several objects takes the one with
the smallest `area` (the earlier in the file on ties); crowd regions are drawn as their class like
any object, as coco2voc does (ReCAM's `mscoco/annToMask.py` leaves them background; neither marks
them 255), so the masks hold no 255. They are written once per split as palette PNGs under
`<root>/ssenet_masks/` (or `data.mask_dir`), both splits in one folder (ids never collide), with an
index of ids and labels stamped with the annotation file's size and mtime: a changed annotation
file rebuilds them, and later opens read the index, not the 300 MB JSON.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

from ssenet.data.coco_annotations import (
    coco_index,
    image_labels,
    load_annotations,
    semantic_mask,
)
from ssenet.data.datasets import PathLike, SegmentationDataset, load_class_names
from ssenet.data.palette import write_label_png
from ssenet.data.voc import read_id_list
from ssenet.errors import SsenetError
from ssenet.fileio import write_text_atomic
from ssenet.progress import progress_bar
from ssenet.provenance import is_current, stamp

SPLITS = ("train2014", "val2014")
LIST_ALIASES = {
    "train2014": "train2014", "train": "train2014", "train_aug": "train2014",
    "val2014": "val2014", "val": "val2014",
}  # fmt: skip
ANNOTATION_DIR = "annotations"
MASK_DIR = "ssenet_masks"
CLASS_NAMES_FILE = "class_names.txt"
_FORMAT = 1  # the conversion's version: a new one rebuilds every cache
_ID = re.compile(r"^COCO_(?P<split>train2014|val2014)_\d+$")

# The 80 categories of instances_{train,val}2014.json (id, name); names with spaces get "_"
# because ssenet's label files separate names by whitespace.
COCO_CATEGORIES: tuple[tuple[int, str], ...] = (
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"), (6, "bus"),
    (7, "train"), (8, "truck"), (9, "boat"), (10, "traffic light"), (11, "fire hydrant"),
    (13, "stop sign"), (14, "parking meter"), (15, "bench"), (16, "bird"), (17, "cat"),
    (18, "dog"), (19, "horse"), (20, "sheep"), (21, "cow"), (22, "elephant"), (23, "bear"),
    (24, "zebra"), (25, "giraffe"), (27, "backpack"), (28, "umbrella"), (31, "handbag"),
    (32, "tie"), (33, "suitcase"), (34, "frisbee"), (35, "skis"), (36, "snowboard"),
    (37, "sports ball"), (38, "kite"), (39, "baseball bat"), (40, "baseball glove"),
    (41, "skateboard"), (42, "surfboard"), (43, "tennis racket"), (44, "bottle"),
    (46, "wine glass"), (47, "cup"), (48, "fork"), (49, "knife"), (50, "spoon"), (51, "bowl"),
    (52, "banana"), (53, "apple"), (54, "sandwich"), (55, "orange"), (56, "broccoli"),
    (57, "carrot"), (58, "hot dog"), (59, "pizza"), (60, "donut"), (61, "cake"), (62, "chair"),
    (63, "couch"), (64, "potted plant"), (65, "bed"), (67, "dining table"), (70, "toilet"),
    (72, "tv"), (73, "laptop"), (74, "mouse"), (75, "remote"), (76, "keyboard"),
    (77, "cell phone"), (78, "microwave"), (79, "oven"), (80, "toaster"), (81, "sink"),
    (82, "refrigerator"), (84, "book"), (85, "clock"), (86, "vase"), (87, "scissors"),
    (88, "teddy bear"), (89, "hair drier"), (90, "toothbrush"),
)  # fmt: skip


def class_name(name: str) -> str:
    """A COCO category name as an ssenet class name: blanks become underscores."""
    return "_".join(name.split())


COCO_CLASSES: tuple[str, ...] = ("background", *(class_name(n) for _, n in COCO_CATEGORIES))


def open_coco(
    root: PathLike,
    list_name: str = "train2014",
    class_names: Sequence[str] | PathLike | None = None,
    mask_dir: PathLike | None = None,
) -> SegmentationDataset:
    """Open a split (`train2014`, `val2014` or an alias) or an id file of a COCO 2014 root.

    The first open of a split writes its masks and index under `mask_dir` (relative to the
    root, or absolute; default `ssenet_masks`); later opens read the index only. `class_names`
    (background first) renames the file's categories; their number must match.
    """
    root = Path(root)
    if not root.is_dir():
        raise SsenetError(
            f"{root}: COCO root not found (expected train2014/, val2014/ and {ANNOTATION_DIR}/)"
        )
    wanted = _resolve_list(list_name)
    masks = coco_mask_dir(root, mask_dir)
    splits = dict.fromkeys(split or _split_of(i) for i, split in wanted.items())
    indexes = {split: _split_index(root, split, masks) for split in splits}
    names = _class_names(class_names, root, indexes)
    members = _members(wanted, indexes)
    image_paths = _image_paths(root, members, indexes)
    ids = [image_id for image_id, _ in members]
    labels = {i: tuple(indexes[split]["images"][i][1]) for i, split in members}
    mask_paths = {image_id: masks / f"{image_id}.png" for image_id in ids}
    return SegmentationDataset(root, ids, names, image_paths, labels, mask_paths)


def coco_mask_dir(root: PathLike, mask_dir: PathLike | None = None) -> Path:
    """Where the masks of a COCO root are cached: `mask_dir` under the root (or absolute)."""
    return Path(root) / (mask_dir or MASK_DIR)


def list_splits(list_name: str) -> set[str]:
    """The splits a list covers ({"train2014"}, {"val2014"}, or what an id file's ids name); an
    unreadable id file gives the empty set (opening it names the problem)."""
    try:
        wanted = _resolve_list(list_name)
    except SsenetError:
        return set()
    return {split or _split_of(image_id) for image_id, split in wanted.items()}


# ---------------------------------------------------------------------------------------------
# Lists
# ---------------------------------------------------------------------------------------------


def _resolve_list(list_name: str) -> dict[str, str | None]:
    """{"": split} for a split name (all its annotated images), else {id: None} of an id file."""
    if list_name in LIST_ALIASES:
        return {"": LIST_ALIASES[list_name]}
    path = Path(list_name)
    if not path.is_file():
        names = ", ".join(LIST_ALIASES)
        raise SsenetError(f"{path}: image list not found (COCO lists: {names}, or an id file)")
    lines = read_id_list(path)
    for image_id, line_no in lines:
        if not _ID.match(image_id):
            raise SsenetError(
                f"{path}, line {line_no}: {image_id!r} is not a COCO 2014 id "
                "(COCO_train2014_<12 digits> or COCO_val2014_<12 digits>)"
            )
    return {image_id: None for image_id, _ in lines}


def _split_of(image_id: str) -> str:
    return _ID.match(image_id)["split"]


def _members(wanted: dict[str, str | None], indexes: dict[str, dict]) -> list[tuple[str, str]]:
    """(id, split) of the list: a split's annotated images in id order, or the id file's ids."""
    if "" in wanted:
        split = wanted[""]
        images = indexes[split]["images"]
        return [(i, split) for i in sorted(images) if images[i][2]]
    members = []
    for image_id in wanted:
        split = _split_of(image_id)
        if image_id not in indexes[split]["images"]:
            raise SsenetError(f"{image_id}: not an image of {indexes[split]['annotation'][0]}")
        members.append((image_id, split))
    return members


def _class_names(
    spec: Sequence[str] | PathLike | None, root: Path, indexes: dict[str, dict]
) -> tuple[str, ...]:
    """Background plus the categories, renamed by `spec`; the opened splits must agree (one
    network serves both)."""
    found = {split: [tuple(c) for c in index["categories"]] for split, index in indexes.items()}
    first, *others = found
    for split in others:
        if found[split] != found[first]:
            raise SsenetError(
                f"{_annotation_path(root, split)}: its categories differ from those of "
                f"{_annotation_path(root, first)}"
            )
    default = ("background", *(class_name(name) for _, name in found[first]))
    names = load_class_names(spec, default)
    if len(names) != len(default):
        raise SsenetError(
            f"class_names: {len(names) - 1} foreground names for the {len(default) - 1} "
            f"categories of {_annotation_path(root, first)}"
        )
    return names


def _image_paths(
    root: Path, members: list[tuple[str, str]], indexes: dict[str, dict]
) -> dict[str, Path]:
    """Each id's image file, all present (one listing per image folder, not a stat per image)."""
    listed: dict[str, set[str]] = {}
    paths = {}
    for image_id, split in members:
        folder = root / split
        if split not in listed:
            if not folder.is_dir():
                raise SsenetError(
                    f"{folder}: image folder not found (COCO 2014 layout: train2014/, val2014/, "
                    f"{ANNOTATION_DIR}/instances_<split>.json)"
                )
            listed[split] = set(os.listdir(folder))
        file_name = indexes[split]["images"][image_id][0]
        if file_name not in listed[split]:
            raise SsenetError(f"{folder / file_name}: image not found (image {image_id!r})")
        paths[image_id] = folder / file_name
    return paths


# ---------------------------------------------------------------------------------------------
# The per-split cache: masks plus an index of ids, file names and labels
# ---------------------------------------------------------------------------------------------


def _annotation_path(root: Path, split: str) -> Path:
    return root / ANNOTATION_DIR / f"instances_{split}.json"


def _index_path(masks: Path, split: str) -> Path:
    return masks / f"coco-{split}-index.json"


def annotation_stamp(path: Path) -> list:
    """What identifies an annotation file: its path, size and mtime (hashing 300 MB would cost
    more than reading it)."""
    stat = path.stat()
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]


def _split_index(root: Path, split: str, masks: Path) -> dict:
    """The split's index, rebuilt with its masks when missing, stale or unreadable."""
    path = _annotation_path(root, split)
    if not path.is_file():
        raise SsenetError(
            f"{path}: annotation file not found (COCO 2014 layout: train2014/, val2014/, "
            f"{ANNOTATION_DIR}/instances_{{train,val}}2014.json)"
        )
    key = [_FORMAT, annotation_stamp(path)]
    index = _read_index(_index_path(masks, split), key)
    if index is not None and _masks_present(masks, index):
        return index
    return _build_split(path, split, masks, key)


def _read_index(path: Path, key: list) -> dict | None:
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(index, dict) or index.get("key") != key:
        return None
    return index


def _masks_present(masks: Path, index: dict) -> bool:
    if not masks.is_dir():
        return False
    present = set(os.listdir(masks))
    return all(f"{image_id}.png" in present for image_id in index["images"])


def _build_split(path: Path, split: str, masks: Path, key: list) -> dict:
    """Read and check the annotation file, write every image's mask, then the index."""
    data = load_annotations(path)
    coco = coco_index(data)
    categories = sorted((c["id"], c["name"]) for c in data["categories"])
    class_of = {cat_id: k for k, (cat_id, _) in enumerate(categories, start=1)}
    made_from = stamp(*key)
    images = {}
    try:
        for info in progress_bar(data["images"], desc=f"COCO masks {split}"):
            image_id = Path(info["file_name"]).stem
            anns = coco.imgToAnns.get(info["id"], [])
            images[image_id] = [info["file_name"], image_labels(anns, class_of), len(anns)]
            target = masks / f"{image_id}.png"
            if not is_current(target, made_from):  # a killed build resumes where it stopped
                mask = semantic_mask(coco, info, anns, class_of, path)
                write_label_png(target, mask, made_from)
        index = {"key": key, "annotation": [str(path)], "categories": categories,
                 "images": images}  # fmt: skip
        write_text_atomic(_index_path(masks, split), json.dumps(index, separators=(",", ":")))
        names = ["background", *(class_name(n) for _, n in categories)]
        write_text_atomic(masks / CLASS_NAMES_FILE, "\n".join(names) + "\n")
    except OSError as err:
        raise SsenetError(
            f"{masks}: cannot write the COCO mask cache ({err.strerror or err}); set data.mask_dir "
            "to a writable folder"
        ) from err
    return json.loads(json.dumps(index))  # the same types as an index read back from disk


# ---------------------------------------------------------------------------------------------
# Reading and checking the annotation file
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Rasterising
# ---------------------------------------------------------------------------------------------


