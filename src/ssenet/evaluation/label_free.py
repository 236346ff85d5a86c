"""What a stage's labels say about themselves, with no mask to compare them with.

Per class, over the images of a list:
- `image_share`: the share of images whose labels give the class any pixel;
- `pixel_share`: the class's share of all labelled pixels (255 is not counted);
- `named_share`: the share of images whose image-level labels name the class (what the labels
  should roughly follow: a class named in 30% of the images but given pixels in 5% has been
  lost on the way);
- `kept`: of the images that name the class, the share whose labels give it pixels.
Over all classes: `kept` of every (image, named class) pair (`class_recall`), the foreground's
share of the pixels, and the share of images whose labels hold a class their image-level labels
do not name (pseudo labels made from CAMs never do; a segmentation network's predictions may).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ssenet.data.datasets import SegmentationDataset
from ssenet.data.palette import IGNORE_INDEX, read_label_png
from ssenet.errors import SsenetError


class ShareMeter:
    """Counts, image by image, what `label_shares` reports."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.images = 0
        self.present = np.zeros(num_classes, np.int64)  # images whose labels hold the class
        self.pixels = np.zeros(num_classes, np.int64)
        self.named = np.zeros(num_classes, np.int64)  # images whose image-level labels name it
        self.kept = np.zeros(num_classes, np.int64)  # ... and whose labels hold it
        self.unnamed = 0  # images whose labels hold a foreground class their labels do not name

    def update(self, label: np.ndarray, named: Sequence[int], path: str | Path = "label") -> None:
        """Count one image: its label map and its image-level classes (1..K)."""
        counts = np.bincount(label.ravel(), minlength=256)
        counts[IGNORE_INDEX] = 0
        if counts[self.num_classes :].any():
            bad = (np.flatnonzero(counts[self.num_classes :]) + self.num_classes).tolist()
            raise SsenetError(f"{path}: label values {bad} outside 0..{self.num_classes - 1}")
        counts = counts[: self.num_classes]
        present = counts > 0
        is_named = np.zeros(self.num_classes, bool)
        is_named[0] = True  # background is never an image-level label, always expected
        is_named[np.asarray(named, dtype=np.int64)] = True
        self.images += 1
        self.present += present
        self.pixels += counts
        self.named += is_named
        self.kept += is_named & present
        self.unnamed += bool((present & ~is_named)[1:].any())

    def metrics(self) -> dict:
        images, pixels = max(self.images, 1), max(int(self.pixels.sum()), 1)
        named_fg = int(self.named[1:].sum())
        kept = np.divide(self.kept, self.named, out=np.full(self.num_classes, np.nan),
                         where=self.named > 0)  # fmt: skip
        return {
            "images": self.images,
            "image_share": (self.present / images).tolist(),
            "pixel_share": (self.pixels / pixels).tolist(),
            "named_share": (self.named / images).tolist(),
            "kept": kept.tolist(),
            "class_recall": float(self.kept[1:].sum() / named_fg) if named_fg else float("nan"),
            "foreground_share": float(self.pixels[1:].sum() / pixels),
            "unnamed_image_share": self.unnamed / images,
        }


def label_shares(label_dir: str | Path, dataset: SegmentationDataset) -> dict:
    """`ShareMeter.metrics()` of `label_dir/<id>.png` for every image of `dataset` (a pass of
    its own: one more PNG read per image, small beside making the labels)."""
    label_dir = Path(label_dir)
    meter = ShareMeter(dataset.num_classes)
    for image_id in dataset.ids:
        path = label_dir / f"{image_id}.png"
        named = np.flatnonzero(dataset.labels(image_id)) + 1
        meter.update(read_label_png(path), named, path)
    return meter.metrics()
