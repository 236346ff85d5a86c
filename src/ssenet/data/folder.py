"""A user's own data: a folder of images plus a `<image> <class> [<class> ...]` label file, or
a folder of images alone, to predict."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from ssenet.data.datasets import (
    LabelLine,
    PathLike,
    SegmentationDataset,
    check_id,
    class_indices,
    load_class_names,
    read_label_file,
)
from ssenet.data.palette import VOC_CLASSES
from ssenet.errors import SsenetError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def open_folder(
    image_dir: PathLike,
    label_file: PathLike,
    class_names: Sequence[str] | PathLike | None = None,
    mask_dir: PathLike | None = None,
) -> SegmentationDataset:
    """Open a folder of images with an image-level label file.

    Each label line names an image by file name (`cat.jpg`) or id (`cat`), then its classes,
    separated by whitespace or commas. `label_file` may also be given relative to `image_dir`.
    `class_names`: a sequence or a text file (background first), or None for "background" plus
    the sorted names the label file uses. Masks, optional, are `<mask_dir>/<id>.png`, with
    `mask_dir` relative to `image_dir` or absolute.
    """
    root = Path(image_dir)
    if not root.is_dir():
        raise SsenetError(f"{root}: image folder not found")
    label_path = _label_path(root, label_file)
    entries = read_label_file(label_path)
    if not entries:
        raise SsenetError(f"{label_path}: the label file lists no images")
    names = load_class_names(class_names, _collected_names(entries))
    image_paths = _resolve_images(root, entries, label_path)
    ids = list(image_paths)
    by_name = class_indices(entries, names, label_path)
    labels = {image_id: by_name[entry.name] for image_id, entry in zip(ids, entries, strict=True)}
    masks = None
    if mask_dir is not None:
        directory = root / mask_dir
        if not directory.is_dir():
            raise SsenetError(f"{directory}: mask directory not found")
        masks = {image_id: directory / f"{image_id}.png" for image_id in ids}
    return SegmentationDataset(root, ids, names, image_paths, labels, masks)


def open_images(
    image_dir: PathLike, class_names: Sequence[str] | PathLike | None = None
) -> SegmentationDataset:
    """Every image of a folder (not its subfolders), in name order, with no labels or masks:
    images to predict. Ids are the file names without suffix; `class_names` (background
    first, default the 21 VOC names) are those of the network that predicts."""
    root = Path(image_dir)
    if not root.is_dir():
        raise SsenetError(f"{root}: image folder not found")
    by_stem = _images_by_stem(root)
    if not by_stem:
        raise SsenetError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) in the folder")
    repeated = next((names for names in by_stem.values() if len(names) > 1), None)
    if repeated:
        raise SsenetError(
            f"{root}: images {', '.join(repeated)} would write one prediction; rename one"
        )
    paths = {stem: root / names[0] for stem, names in by_stem.items()}
    names = load_class_names(class_names, VOC_CLASSES)
    return SegmentationDataset(root, list(paths), names, paths, dict.fromkeys(paths, ()))


def held_out_split(
    ids: Sequence[str], fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """(train, held out) ids, each in the given order: `fraction` of them held out (rounded,
    at least one and at most all but one when 0 < fraction < 1 and there are two ids or more).

    Each id is ranked by a hash of (seed, id), so the split depends on neither the file order
    nor the machine, and adding images to the label file leaves the others where they were
    unless the held-out count changes.
    """
    if fraction <= 0 or len(ids) < 2:
        return list(ids), []
    count = min(max(round(fraction * len(ids)), 1), len(ids) - 1)
    rank = {i: hashlib.sha256(f"{seed}:{i}".encode()).hexdigest() for i in ids}
    held = set(sorted(ids, key=lambda i: (rank[i], i))[:count])
    return [i for i in ids if i not in held], [i for i in ids if i in held]


def _images_by_stem(root: Path) -> dict[str, list[str]]:
    """File stem -> the image files of `root` with that stem, in name order."""
    by_stem: dict[str, list[str]] = {}
    for name in sorted(os.listdir(root)):
        if Path(name).suffix.lower() in IMAGE_SUFFIXES and (root / name).is_file():
            by_stem.setdefault(Path(name).stem, []).append(name)
    return by_stem


def _label_path(root: Path, label_file: PathLike | None) -> Path:
    if label_file is None:
        raise SsenetError(f"{root}: folder data need a label file (data.label_file)")
    path = Path(label_file)
    if not path.is_file() and (root / path).is_file():
        path = root / path
    if not path.is_file():
        raise SsenetError(f"{path}: label file not found")
    return path


def _collected_names(entries: Sequence[LabelLine]) -> list[str]:
    found = sorted({name for entry in entries for name in entry.classes} - {"background"})
    return ["background", *found]


def _resolve_images(root: Path, entries: Sequence[LabelLine], label_path: Path) -> dict[str, Path]:
    """Id -> image file for each label line, in file order."""
    by_stem = _images_by_stem(root)  # one listing instead of a stat per line and suffix
    files = {name for names in by_stem.values() for name in names}
    paths: dict[str, Path] = {}
    first_line: dict[str, int] = {}
    for entry in entries:
        where = f"{label_path}, line {entry.line_no}"
        token = check_id(entry.name, label_path, entry.line_no)
        if Path(token).suffix.lower() in IMAGE_SUFFIXES:
            if token not in files:
                raise SsenetError(f"{where}: image {root / token} not found")
            image_id, file_name = Path(token).stem, token
        else:
            candidates = by_stem.get(token, [])
            if not candidates:
                raise SsenetError(
                    f"{where}: no image {token}.<{'|'.join(s[1:] for s in IMAGE_SUFFIXES)}> "
                    f"in {root}"
                )
            if len(candidates) > 1:
                raise SsenetError(
                    f"{where}: {token!r} matches several images ({', '.join(candidates)}); "
                    "give the file name"
                )
            image_id, file_name = token, candidates[0]
        if image_id in paths:
            raise SsenetError(
                f"{where}: duplicate image id {image_id!r} (first on line {first_line[image_id]})"
            )
        paths[image_id] = root / file_name
        first_line[image_id] = entry.line_no
    return paths
