"""The dataset contract every reader returns, the list and label-file rules, and torch datasets.

A `SegmentationDataset` is a plain, picklable description of images, optional masks and
image-level labels; `CamTrainDataset` and `ImageListDataset` adapt it to `torch.utils.data`.
"""

from __future__ import annotations

import copy
import os
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath

import numpy as np
import torch
from PIL import UnidentifiedImageError

from ssenet.data.palette import IGNORE_INDEX, open_image, read_label_png, read_rgb
from ssenet.errors import SsenetError

PathLike = str | os.PathLike
# Lists, label and class-name files: UTF-8, with the byte-order mark some Windows editors write
# dropped (else it would glue itself to the first id).
TEXT_ENCODING = "utf-8-sig"

# ---------------------------------------------------------------------------------------------
# Ids, class names and label files
# ---------------------------------------------------------------------------------------------


def check_id(image_id: str, source: PathLike, line_no: int) -> str:
    """Return `image_id` when it names a file inside the root, else raise naming the list line.

    Ids become file names under the root, so anything that could walk out of it (a separator,
    `..`, a drive letter) is rejected rather than normalised.
    """
    seps = {"/", "\\", os.sep} | ({os.altsep} if os.altsep else set())
    escapes = (
        not image_id
        or image_id == "."
        or ".." in image_id
        or any(sep in image_id for sep in seps)
        or "\0" in image_id
        or PureWindowsPath(image_id).drive
    )
    if escapes:
        raise SsenetError(
            f"{source}, line {line_no}: invalid id {image_id!r} (ids must be plain file names "
            "without path separators or '..')"
        )
    return image_id


def load_class_names(
    spec: Sequence[str] | PathLike | None, default: Sequence[str]
) -> tuple[str, ...]:
    """Class names, background first, from a sequence, a text file (one per line) or `default`."""
    source: str = "class_names"
    if spec is None:
        names = list(default)
    elif isinstance(spec, (str, os.PathLike)):
        path = Path(spec)
        if not path.is_file():
            raise SsenetError(f"{path}: class name file not found")
        source = str(path)
        try:
            text = path.read_text(encoding=TEXT_ENCODING)
        except (OSError, UnicodeDecodeError) as err:
            raise SsenetError(f"{path}: cannot read class name file ({err})") from err
        names = [line.split("#", 1)[0].strip() for line in text.splitlines()]
        names = [name for name in names if name]
    else:
        names = [str(name) for name in spec]
    return _validated_class_names(names, source)


def _validated_class_names(names: list[str], source: str) -> tuple[str, ...]:
    if len(names) < 2:
        raise SsenetError(f"{source}: need background plus at least one class, got {names}")
    # Label files separate names by whitespace or commas, so a name may contain neither.
    bad = [name for name in names if not name or re.search(r"[\s,#]", name)]
    if bad:
        raise SsenetError(f"{source}: class names may not contain spaces, commas or '#': {bad}")
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        raise SsenetError(f"{source}: duplicate class names {duplicates}")
    if "background" in names[1:]:
        raise SsenetError(f"{source}: 'background' must be the first class name")
    return tuple(names)


@dataclass(frozen=True)
class LabelLine:
    """One line of an image-level label file: `<name> <class> [<class> ...]`."""

    line_no: int
    name: str
    classes: tuple[str, ...]


def read_label_file(path: PathLike) -> list[LabelLine]:
    """Parse `<image> <class> [<class> ...]` lines (whitespace or commas; `#` comments)."""
    path = Path(path)
    if not path.is_file():
        raise SsenetError(f"{path}: label file not found")
    try:
        text = path.read_text(encoding=TEXT_ENCODING)
    except (OSError, UnicodeDecodeError) as err:
        raise SsenetError(f"{path}: cannot read label file ({err})") from err
    lines = []
    for line_no, raw in enumerate(text.splitlines(), start=1):
        tokens = [t for t in re.split(r"[\s,]+", raw.split("#", 1)[0]) if t]
        if not tokens:
            continue
        if len(tokens) == 1:
            raise SsenetError(f"{path}, line {line_no}: {tokens[0]!r} has no class names")
        classes = tuple(dict.fromkeys(tokens[1:]))  # a class named twice is still one label
        lines.append(LabelLine(line_no, tokens[0], classes))
    return lines


def class_indices(
    entries: Sequence[LabelLine], class_names: Sequence[str], path: PathLike
) -> dict[str, tuple[int, ...]]:
    """Map each entry's name to its sorted foreground class indices (1..K)."""
    index = {name: i for i, name in enumerate(class_names)}
    result = {}
    for entry in entries:
        unknown = [c for c in entry.classes if c not in index]
        if unknown:
            raise SsenetError(
                f"{path}, line {entry.line_no}: unknown class name(s) {unknown} "
                f"(known: {', '.join(class_names[1:])})"
            )
        if class_names[0] in entry.classes:
            raise SsenetError(
                f"{path}, line {entry.line_no}: {class_names[0]!r} is the background class and "
                "cannot be an image-level label"
            )
        result[entry.name] = tuple(sorted(index[c] for c in entry.classes))
    return result


# ---------------------------------------------------------------------------------------------
# Masks
# ---------------------------------------------------------------------------------------------


def image_size(path: PathLike) -> tuple[int, int]:
    """(H, W) of an image file, read from its header only."""
    path = Path(path)
    if not path.is_file():
        raise SsenetError(f"{path}: image file not found")
    try:
        with open_image(path) as image:
            return image.height, image.width
    except (UnidentifiedImageError, OSError) as err:
        raise SsenetError(f"{path}: cannot read image ({err})") from err


def mask_classes(mask: np.ndarray, num_foreground: int, path: PathLike) -> tuple[int, ...]:
    """Foreground classes (1..K) present in a mask; SsenetError on any other value but 255."""
    counts = np.bincount(mask.ravel(), minlength=256)
    counts[IGNORE_INDEX] = 0
    bad = np.flatnonzero(counts[num_foreground + 1 :]) + num_foreground + 1
    if bad.size:
        raise SsenetError(
            f"{path}: mask holds value(s) {bad.tolist()} that are neither a class index "
            f"(0..{num_foreground}) nor {IGNORE_INDEX}"
        )
    return tuple(int(c) for c in np.flatnonzero(counts[1 : num_foreground + 1]) + 1)


def read_checked_mask(
    mask_path: PathLike, image_path: PathLike, num_foreground: int
) -> tuple[np.ndarray, tuple[int, ...]]:
    """Read a mask, check its size against the image and its values; return it and its classes."""
    mask = read_label_png(mask_path)
    size = image_size(image_path)
    if mask.shape != size:
        raise SsenetError(
            f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image {image_path} "
            f"is {size[1]}x{size[0]} (width x height)"
        )
    return mask, mask_classes(mask, num_foreground, mask_path)


# ---------------------------------------------------------------------------------------------
# The contract
# ---------------------------------------------------------------------------------------------


class SegmentationDataset:
    """Images with image-level labels and, optionally, ground-truth masks.

    `labels` maps each id to its foreground class indices (1..K); `mask_paths` is None when the
    data has no masks. Readers (`open_voc`, `open_folder`) build it; it never touches the disk
    until an image or mask is read.
    """

    def __init__(
        self,
        root: PathLike,
        ids: Sequence[str],
        class_names: Sequence[str],
        image_paths: Mapping[str, Path],
        labels: Mapping[str, Sequence[int]],
        mask_paths: Mapping[str, Path] | None = None,
    ):
        self.root = Path(root)
        self.ids: tuple[str, ...] = tuple(ids)
        self.class_names: tuple[str, ...] = tuple(class_names)
        self._image_paths = dict(image_paths)
        self._labels = {key: tuple(value) for key, value in labels.items()}
        self._mask_paths = None if mask_paths is None else dict(mask_paths)
        missing = [i for i in self.ids if i not in self._image_paths or i not in self._labels]
        if missing:
            raise SsenetError(f"{self.root}: no image or labels for ids {missing[:5]}")

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, images={len(self.ids)}, "
            f"classes={self.num_classes}, masks={self.has_masks})"
        )

    @property
    def num_classes(self) -> int:
        """Number of classes including background."""
        return len(self.class_names)

    @property
    def num_foreground(self) -> int:
        """K: the number of foreground classes (the length of a label vector)."""
        return len(self.class_names) - 1

    @property
    def has_masks(self) -> bool:
        """Whether the data come with ground-truth masks."""
        return self._mask_paths is not None

    def _known(self, image_id: str) -> str:
        if image_id not in self._image_paths:
            raise SsenetError(f"{self.root}: image id {image_id!r} is not in this dataset")
        return image_id

    def image_path(self, image_id: str) -> Path:
        """The image file of `image_id`."""
        return self._image_paths[self._known(image_id)]

    def mask_path(self, image_id: str) -> Path | None:
        """The mask file of `image_id`, or None when the data have no masks."""
        self._known(image_id)
        return None if self._mask_paths is None else self._mask_paths[image_id]

    def mask_source(self, image_id: str) -> str:
        """The directory the mask of `image_id` comes from: relative to the root when inside it.

        For VOC this is "SegmentationClass" or SBD's "SegmentationClassAug"; evaluation uses it
        to refuse to score against the wrong ground truth.
        """
        path = self.mask_path(image_id)
        if path is None:
            raise SsenetError(f"{self.root}: this dataset has no masks")
        try:
            return path.parent.relative_to(self.root).as_posix()
        except ValueError:
            return str(path.parent)

    def read_image(self, image_id: str) -> np.ndarray:
        """The image as an (H, W, 3) uint8 RGB array."""
        return read_rgb(self.image_path(image_id))

    def read_mask(self, image_id: str) -> np.ndarray:
        """The ground-truth mask as an (H, W) uint8 array (0 background, 1..K, 255 void)."""
        path = self.mask_path(image_id)
        if path is None:
            raise SsenetError(f"{self.root}: this dataset has no masks (image {image_id!r})")
        if not path.is_file():
            raise SsenetError(f"{path}: mask not found for image {image_id!r}")
        mask, _ = read_checked_mask(path, self.image_path(image_id), self.num_foreground)
        return mask

    def labels(self, image_id: str) -> np.ndarray:
        """Multi-hot (K,) float32 image-level labels (index k is mask class k + 1)."""
        vector = np.zeros(self.num_foreground, dtype=np.float32)
        classes = self._labels[self._known(image_id)]
        vector[np.asarray(classes, dtype=np.int64) - 1] = 1.0
        return vector

    def subset(self, ids: Sequence[str]) -> SegmentationDataset:
        """The same data restricted to `ids`, in the given order."""
        ids = tuple(ids)
        unknown = [i for i in ids if i not in self._image_paths]
        if unknown:
            raise SsenetError(f"{self.root}: ids not in this dataset: {', '.join(unknown[:5])}")
        subset = copy.copy(self)
        subset.ids = ids
        return subset


# ---------------------------------------------------------------------------------------------
# torch datasets
# ---------------------------------------------------------------------------------------------


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 63-bit seed that depends on (seed, epoch, index) only."""
    entropy = [seed & 0xFFFFFFFFFFFFFFFF, epoch, index]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> np.uint64(1))


class SeededAugmentation(torch.utils.data.Dataset):
    """A training dataset whose item augmentations are seeded from (seed, epoch, index).

    So a run is reproducible whatever the number of workers; the trainer calls `set_epoch`
    before each epoch (workers created afterwards see it; persistent workers would not).
    """

    def __init__(self, dataset: SegmentationDataset, transform: Callable, seed: int = 0):
        self.dataset = dataset
        self.transform = transform
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentations `__getitem__` draws."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def generator(self, index: int) -> int:
        """The seed of this item's augmentation in the current epoch."""
        return item_seed(self.seed, self.epoch, index)


class CamTrainDataset(SeededAugmentation):
    """Augmented images and image-level labels for CAM training: `(image, labels (K,), index)`."""

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        image_id = self.dataset.ids[index]
        image = self.transform(
            self.dataset.read_image(image_id), generator=self.generator(index)
        )
        return image, torch.from_numpy(self.dataset.labels(image_id)), index


class ImageListDataset(torch.utils.data.Dataset):
    """Unaugmented images for inference: `(uint8 image (H, W, 3), labels (K,), index)`.

    Images keep their own size; batch them with `collate_images`.
    """

    def __init__(self, dataset: SegmentationDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        image_id = self.dataset.ids[index]
        image = torch.from_numpy(self.dataset.read_image(image_id))
        return image, torch.from_numpy(self.dataset.labels(image_id)), index

    @staticmethod
    def collate(
        items: Sequence[tuple[torch.Tensor, torch.Tensor, int]],
    ) -> tuple[list[torch.Tensor], torch.Tensor, list[int]]:
        """Batch items of different sizes: (list of images, stacked labels (B, K), indices)."""
        return collate_images(items)


def collate_images(
    items: Sequence[tuple[torch.Tensor, torch.Tensor, int]],
) -> tuple[list[torch.Tensor], torch.Tensor, list[int]]:
    """Batch items of different sizes: (list of images, stacked labels (B, K), indices).

    A module-level function so DataLoader workers can pickle it.
    """
    images, labels, indices = zip(*items, strict=True)
    return list(images), torch.stack(labels), list(indices)
