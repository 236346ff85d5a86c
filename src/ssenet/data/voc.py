"""PASCAL VOC 2012 (optionally with SBD's SegmentationClassAug) as a `SegmentationDataset`.

Image-level labels come from `ImageSets/Segmentation/cls_labels.txt` when present, else from
the masks; mask-derived labels are cached in a JSON file so the masks are read once per list.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

from ssenet.data.datasets import (
    TEXT_ENCODING,
    PathLike,
    SegmentationDataset,
    check_id,
    class_indices,
    load_class_names,
    read_checked_mask,
    read_label_file,
)
from ssenet.data.palette import VOC_CLASSES
from ssenet.errors import SsenetError
from ssenet.fileio import write_text_atomic
from ssenet.progress import progress_bar

IMAGE_DIR = "JPEGImages"
VOC_MASK_DIR = "SegmentationClass"
SBD_MASK_DIR = "SegmentationClassAug"
LIST_DIR = Path("ImageSets", "Segmentation")
CLS_LABELS = "cls_labels.txt"
CLASS_NAMES = "class_names.txt"
CACHE_DIR = ".ssenet_cache"
_CACHE_VERSION = 2  # 2: keyed by the masks' stamps too


def open_voc(
    root: PathLike,
    split: str = "train_aug",
    class_names: Sequence[str] | PathLike | None = None,
    mask_dir: PathLike | None = None,
    label_cache: bool = True,
    image_labels: bool = True,
) -> SegmentationDataset:
    """Open the image list `ImageSets/Segmentation/<split>.txt` of a VOC-layout root.

    `class_names`: a sequence or a text file (background first); default `root/class_names.txt`
    when present, else the 21 VOC names. `mask_dir` (relative to the root, or absolute) forces
    one mask directory; by default each id takes SBD's `SegmentationClassAug` mask when there is
    one, else `SegmentationClass` (see `SegmentationDataset.mask_source`). `image_labels=False`
    reads no image-level labels (every image gets none), for lists that have neither masks nor
    labels, such as VOC 2012 `test`: enough to predict, not to train.
    """
    root = Path(root)
    if not root.is_dir():
        raise SsenetError(
            f"{root}: VOC root not found (expected {IMAGE_DIR}/, {VOC_MASK_DIR}/ and {LIST_DIR}/)"
        )
    names = voc_class_names(root, class_names)
    list_path = _list_path(root, split)
    lines = read_id_list(list_path)
    image_paths = _image_paths(root, lines, list_path)
    mask_paths = _mask_paths(root, [i for i, _ in lines], mask_dir)
    if image_labels:
        labels = _labels(root, lines, list_path, image_paths, mask_paths, names, label_cache)
    else:
        labels = {image_id: () for image_id, _ in lines}
    return SegmentationDataset(root, [i for i, _ in lines], names, image_paths, labels, mask_paths)


def voc_class_names(
    root: PathLike, class_names: Sequence[str] | PathLike | None = None
) -> tuple[str, ...]:
    """`class_names` when given, else `root/class_names.txt` when present, else the VOC names."""
    if class_names is None and (Path(root) / CLASS_NAMES).is_file():
        class_names = Path(root) / CLASS_NAMES
    return load_class_names(class_names, VOC_CLASSES)


def available_splits(root: PathLike) -> list[str]:
    """The image lists in `root/ImageSets/Segmentation` (cls_labels.txt is not one)."""
    list_dir = Path(root) / LIST_DIR
    if not list_dir.is_dir():
        return []
    return sorted(p.stem for p in list_dir.glob("*.txt") if p.name != CLS_LABELS)


def _list_path(root: Path, split: str) -> Path:
    if not split or any(c in split for c in "/\\") or ".." in split:
        raise SsenetError(f"split {split!r}: a split is a list name such as 'train' or 'val'")
    path = root / LIST_DIR / f"{split}.txt"
    if not path.is_file():
        splits = available_splits(root)
        found = ", ".join(splits) if splits else f"none: {root / LIST_DIR} has no .txt lists"
        raise SsenetError(f"{path}: image list not found (available splits: {found})")
    return path


def read_ids(path: PathLike) -> list[str]:
    """The ids of an image-list file (see `read_id_list`), naming the file when it is missing."""
    if not Path(path).is_file():
        raise SsenetError(f"{path}: id list not found")
    return [image_id for image_id, _ in read_id_list(path)]


def read_id_list(path: PathLike) -> list[tuple[str, int]]:
    """(id, line number) per non-blank line of a VOC image list.

    Also reads DeepLab-style lines `/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png`, as
    shipped with many train_aug lists: only the id is kept, never the path.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding=TEXT_ENCODING)
    except (OSError, UnicodeDecodeError) as err:
        raise SsenetError(f"{path}: cannot read image list ({err})") from err
    seen: dict[str, int] = {}
    for line_no, raw in enumerate(text.splitlines(), start=1):
        tokens = raw.split("#", 1)[0].split()
        if not tokens:
            continue
        token = tokens[0]
        stripped = token.lstrip("/")
        if stripped.startswith(f"{IMAGE_DIR}/") and stripped.endswith(".jpg"):
            token = stripped[len(IMAGE_DIR) + 1 : -len(".jpg")]
        image_id = check_id(token, path, line_no)
        if image_id in seen:
            raise SsenetError(
                f"{path}, line {line_no}: duplicate id {image_id!r} "
                f"(first on line {seen[image_id]})"
            )
        seen[image_id] = line_no
    if not seen:
        raise SsenetError(f"{path}: the image list is empty")
    return list(seen.items())


def _image_paths(root: Path, lines: list[tuple[str, int]], list_path: Path) -> dict[str, Path]:
    image_dir = root / IMAGE_DIR
    if not image_dir.is_dir():
        raise SsenetError(f"{image_dir}: image directory not found")
    present = set(os.listdir(image_dir))  # one listing instead of a stat per image
    for image_id, line_no in lines:
        if f"{image_id}.jpg" not in present:
            raise SsenetError(
                f"{image_dir / f'{image_id}.jpg'}: image not found (listed in {list_path}, "
                f"line {line_no})"
            )
    return {image_id: image_dir / f"{image_id}.jpg" for image_id, _ in lines}


def _mask_paths(root: Path, ids: list[str], mask_dir: PathLike | None) -> dict[str, Path] | None:
    """Per-id mask files, or None when the root has no mask directory at all."""
    if mask_dir is not None:
        directory = root / mask_dir
        if not directory.is_dir():
            raise SsenetError(f"{directory}: mask directory not found")
        return {image_id: directory / f"{image_id}.png" for image_id in ids}
    sbd, voc = root / SBD_MASK_DIR, root / VOC_MASK_DIR
    if not sbd.is_dir() and not voc.is_dir():
        return None
    in_sbd = set(os.listdir(sbd)) if sbd.is_dir() else set()
    return {i: (sbd if f"{i}.png" in in_sbd else voc) / f"{i}.png" for i in ids}


def _labels(
    root: Path,
    lines: list[tuple[str, int]],
    list_path: Path,
    image_paths: dict[str, Path],
    mask_paths: dict[str, Path] | None,
    names: tuple[str, ...],
    use_cache: bool,
) -> dict[str, tuple[int, ...]]:
    cls_path = root / LIST_DIR / CLS_LABELS
    if cls_path.is_file():
        return _labels_from_file(cls_path, lines, list_path, names)
    if mask_paths is None:
        raise SsenetError(
            f"{root}: neither {VOC_MASK_DIR}/, {SBD_MASK_DIR}/ nor {LIST_DIR / CLS_LABELS}: "
            "cannot derive image-level labels"
        )
    key = _cache_key(root, list_path, mask_paths, len(names) - 1)
    stamp = [*_list_stamp(list_path), _masks_stamp(mask_paths, lines)]
    if use_cache:
        cached = _read_cache(root, key, stamp, lines, len(names) - 1)
        if cached is not None:
            return cached
    labels = _labels_from_masks(lines, list_path, image_paths, mask_paths, len(names) - 1)
    if use_cache:
        _write_cache(root, key, list_path, stamp, labels, len(names) - 1)
    return labels


def _labels_from_file(
    cls_path: Path, lines: list[tuple[str, int]], list_path: Path, names: tuple[str, ...]
) -> dict[str, tuple[int, ...]]:
    entries = read_label_file(cls_path)
    first_line: dict[str, int] = {}
    for entry in entries:
        check_id(entry.name, cls_path, entry.line_no)
        if entry.name in first_line:
            raise SsenetError(
                f"{cls_path}, line {entry.line_no}: duplicate id {entry.name!r} "
                f"(first on line {first_line[entry.name]})"
            )
        first_line[entry.name] = entry.line_no
    labels = class_indices(entries, names, cls_path)
    missing = [(i, n) for i, n in lines if i not in labels]
    if missing:
        image_id, line_no = missing[0]
        raise SsenetError(
            f"{cls_path}: no labels for {len(missing)} id(s) of {list_path}, e.g. {image_id!r} "
            f"(line {line_no})"
        )
    return {image_id: labels[image_id] for image_id, _ in lines}


def _labels_from_masks(
    lines: list[tuple[str, int]],
    list_path: Path,
    image_paths: dict[str, Path],
    mask_paths: dict[str, Path],
    num_foreground: int,
) -> dict[str, tuple[int, ...]]:
    labels = {}
    for image_id, line_no in progress_bar(lines, desc="image labels from masks", enabled=None):
        path = mask_paths[image_id]
        if not path.is_file():
            raise SsenetError(
                f"{path}: mask not found for {image_id!r} ({list_path}, line {line_no}); "
                f"masks give the image-level labels unless {LIST_DIR / CLS_LABELS} exists"
            )
        _, labels[image_id] = read_checked_mask(path, image_paths[image_id], num_foreground)
    return labels


# ---------------------------------------------------------------------------------------------
# Label cache
# ---------------------------------------------------------------------------------------------


def user_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/ssenet`, else `~/.cache/ssenet`."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ssenet"


def _cache_dirs(root: Path) -> list[Path]:
    return [root / CACHE_DIR, user_cache_dir()]


def _cache_key(
    root: Path, list_path: Path, mask_paths: dict[str, Path], num_foreground: int
) -> str:
    """File name of the cache of one (root, list, mask directories, class count)."""
    mask_dirs = sorted({str(path.parent.resolve()) for path in mask_paths.values()})
    parts = [str(root.resolve()), str(list_path.resolve()), *mask_dirs, str(num_foreground)]
    digest = hashlib.sha1("\n".join(parts).encode()).hexdigest()[:16]
    return f"labels-{list_path.stem}-{digest}.json"


def _list_stamp(list_path: Path) -> list[int]:
    stat = list_path.stat()
    return [stat.st_mtime_ns, stat.st_size]


def _masks_stamp(mask_paths: dict[str, Path], lines: list[tuple[str, int]]) -> str:
    """A hash of every listed mask's mtime and size: an edited or replaced mask changes it."""
    sha = hashlib.sha1()
    for image_id, _ in lines:
        try:
            stat = mask_paths[image_id].stat()
            sha.update(f"{image_id} {stat.st_mtime_ns} {stat.st_size}\n".encode())
        except OSError:
            sha.update(f"{image_id} -\n".encode())
    return sha.hexdigest()[:16]


def _read_cache(
    root: Path, key: str, stamp: list, lines: list[tuple[str, int]], num_foreground: int
) -> dict[str, tuple[int, ...]] | None:
    """Cached labels when a cache file matches the list's and the masks' stamps, else None."""
    for directory in _cache_dirs(root):
        try:
            data = json.loads((directory / key).read_text())
        except (OSError, ValueError):
            continue
        if (
            not isinstance(data, dict)
            or data.get("version") != _CACHE_VERSION
            or data.get("stamp") != stamp
            or data.get("num_foreground") != num_foreground
        ):
            continue
        labels = data.get("labels")
        if not isinstance(labels, dict) or set(labels) != {i for i, _ in lines}:
            continue
        if not all(_valid_classes(classes, num_foreground) for classes in labels.values()):
            continue  # a cache in a shared root is anyone's file: checked, else made again
        return {image_id: tuple(labels[image_id]) for image_id, _ in lines}
    return None


def _valid_classes(classes: object, num_foreground: int) -> bool:
    """A cached label list as `_labels_from_masks` writes it: increasing class indices 1..K."""
    return (
        isinstance(classes, list)
        and all(type(c) is int and 1 <= c <= num_foreground for c in classes)
        and classes == sorted(set(classes))
    )


def _write_cache(
    root: Path,
    key: str,
    list_path: Path,
    stamp: list,
    labels: dict[str, tuple[int, ...]],
    num_foreground: int,
) -> None:
    """Write the cache under the root when writable, else under the user cache directory."""
    data = {
        "version": _CACHE_VERSION,
        "list": str(list_path.resolve()),
        "stamp": stamp,
        "num_foreground": num_foreground,
        "labels": {image_id: list(classes) for image_id, classes in labels.items()},
    }
    text = json.dumps(data, separators=(",", ":"))
    for directory in _cache_dirs(root):
        try:
            write_text_atomic(directory / key, text)
            return
        except OSError:
            continue
    # A missing cache only costs time, so it must not stop the run.
    warnings.warn(f"{root}: could not write the image-label cache anywhere", stacklevel=3)
