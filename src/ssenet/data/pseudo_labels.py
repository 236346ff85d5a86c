"""Training images with label maps of a run's own making (pseudo labels, relation labels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ssenet.data.datasets import SeededAugmentation, SegmentationDataset, mask_classes
from ssenet.data.palette import read_label_png
from ssenet.data.transforms import JointTrainTransform
from ssenet.errors import SsenetError


class PseudoLabelDataset(SeededAugmentation):
    """Augmented images and their pseudo labels: `(image (3, c, c), label (c, c) int64, index)`.

    Labels are `label_dir/<id>.png` (0 background, 1..K, 255 ignored); each item is seeded from
    (seed, epoch, index) like `CamTrainDataset`, so a run is reproducible whatever the workers.
    """

    def __init__(
        self,
        dataset: SegmentationDataset,
        label_dir: str | Path,
        transform: JointTrainTransform,
        seed: int = 0,
    ):
        super().__init__(dataset, transform, seed)
        self.label_dir = Path(label_dir)

    def read_label(self, image_id: str, image_shape: tuple[int, ...]) -> np.ndarray:
        """The checked pseudo label of `image_id`: its size and its class values."""
        path = self.label_dir / f"{image_id}.png"
        label = read_label_png(path)
        if label.shape != tuple(image_shape[:2]):
            raise SsenetError(
                f"{path}: pseudo label is {label.shape[1]}x{label.shape[0]} but its image "
                f"{self.dataset.image_path(image_id)} is {image_shape[1]}x{image_shape[0]} "
                "(width x height)"
            )
        mask_classes(label, self.dataset.num_foreground, path)
        return label

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        image_id = self.dataset.ids[index]
        image = self.dataset.read_image(image_id)
        label = self.read_label(image_id, image.shape)
        out_image, out_label = self.transform(
            image, label, generator=self.generator(index)
        )
        return out_image, out_label, index
