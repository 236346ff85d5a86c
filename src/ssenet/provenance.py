"""What each output was made from, stamped into the output itself.

Every per-image file a stage writes (CAMs, CRF scores, CAM / CRF / random-walk / segmentation
labels) carries a short `made_from` stamp: a hash of the config values that decide it and of the
stamps of what it was made from (the network's training digest, the image's CAM file). A stage
counts a file as done only when its stamp is the one it would write now, so a changed setting
remakes exactly the files it changes, a resumed run keeps the rest, shards of one list never
need to coordinate, and an old output is never reported as a new one. Cached evaluation files
(`eval/classifier.json`, the scale sweep) keep their stamps in `eval/stamps.json`.

Training has its own guard (the digest in train.json and in every checkpoint, see
`ssenet.trainer`): a network trained under other settings is moved aside, never deleted.

A location is not a setting: no digest or per-image stamp holds a path (`data.root`,
`data.label_file`, `data.class_names`, `model.weights`), so a moved dataset, or its path written
another way, keeps every trained network and output. What the data is counts instead: each
image's id, image-level labels and file size (`image_stamp`, `data_stamp`), and the content of
the files a setting names (`content_digest`). (`data.mask_dir`, which picks the ground truth of
the cached scale sweep, counts there as written.)
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from ssenet.fileio import write_text_atomic

if TYPE_CHECKING:  # the config imports this module for `content_digest`
    from ssenet.config import Config
    from ssenet.data.datasets import SegmentationDataset

STAMP_KEY = "made_from"  # the npz array / PNG text chunk holding a file's stamp
STAMPS_FILE = "stamps.json"  # beside cached JSON results: {file name: stamp}


def stamp(*parts: Any) -> str:
    """A short hash of JSON-able parts (config values, other stamps)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def config_values(cfg: Config, keys: str) -> dict[str, Any]:
    """{"rw.beta": 8.0, ...} of space-separated dotted config keys."""
    values = {}
    for key in keys.split():
        section, name = key.split(".")
        values[key] = getattr(getattr(cfg, section), name)
    return values


def content_digest(path: str | os.PathLike) -> str:
    """A hash of a file's bytes ("missing" when there is none): what a setting naming a file
    (class names, ImageNet weights) decides, wherever the file lies and however its path is
    written."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError:
        return "missing"
    return _hashed_file(str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)


@functools.lru_cache(maxsize=64)
def _hashed_file(path: str, size: int, mtime_ns: int, inode: int) -> str:
    """The hash of one version of a file (size, mtime and inode are the cache key only): a
    weights file of hundreds of MB is read once per process, not once per stage."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha1").hexdigest()[:16]


def image_stamp(path: str | os.PathLike) -> int | str:
    """What tells an input image from another wherever it lies: its size in bytes. A moved or
    copied image keeps it and another image almost never has it, while a content hash would
    read every image of a list at every check."""
    try:
        return os.stat(path).st_size
    except OSError:
        return "missing"


def data_stamp(dataset: SegmentationDataset) -> str:
    """What a list's images are, not where they lie: each id with its image-level labels and
    its image's `image_stamp` (an edited mask or a replaced image is other data)."""
    return stamp(*(
        (i, dataset.labels(i).tolist(), image_stamp(dataset.image_path(i))) for i in dataset.ids
    ))  # fmt: skip


def weights_stamp(path: str | os.PathLike) -> str:
    """What identifies trained weights: the training digest in the train.json beside them (so
    retraining under the same config keeps outputs valid), else the file's content."""
    path = Path(path)
    meta = path.parent / "train.json"
    if path.name == "model.pth" and meta.is_file():
        try:
            recorded = json.loads(meta.read_text())
        except (OSError, UnicodeDecodeError, ValueError):
            recorded = None
        digest = recorded.get("digest") if isinstance(recorded, dict) else None
        if isinstance(digest, str) and digest:
            return f"trained:{digest}"
    found = content_digest(path)
    return found if found == "missing" else f"file:{found}"


def read_stamp(path: str | os.PathLike) -> str | None:
    """The stamp an .npz or .png output was written with; None when it is missing, unreadable
    or has none (written by hand or by an older version): such a file is made again."""
    path = Path(path)
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                return str(data[STAMP_KEY]) if STAMP_KEY in data.files else None
        with Image.open(path) as image:
            return image.text.get(STAMP_KEY)
    except (OSError, ValueError, EOFError, KeyError, TypeError, AttributeError,
            zipfile.BadZipFile, UnidentifiedImageError, Image.DecompressionBombError):  # fmt: skip
        return None  # e.g. a single .npy array saved under an .npz name: not ours, made again


def is_current(path: str | os.PathLike, expected: str) -> bool:
    return read_stamp(path) == expected


def cached_json(path: Path, expected: str) -> dict | None:
    """A cached JSON result when it was written with the `expected` stamp, else None."""
    if not path.is_file() or read_json_stamps(path.parent).get(path.name) != expected:
        return None
    return json.loads(path.read_text())


def record_json_stamp(path: Path, made_from: str) -> None:
    """Record the stamp of a JSON result just written, in its folder's stamps file (written
    after the result, so a kill between the two leaves the result counted as stale)."""
    stamps = read_json_stamps(path.parent) | {path.name: made_from}
    write_text_atomic(path.parent / STAMPS_FILE, json.dumps(stamps, indent=2) + "\n")


def read_json_stamps(folder: Path) -> dict[str, str]:
    try:
        stamps = json.loads((folder / STAMPS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return stamps if isinstance(stamps, dict) else {}
