"""AffinityNet's training data: images with their la / ha CRF score stacks, augmented together,
turned into affinity label maps (`ssenet.affinity.affinity_label`) on the feature grid."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from ssenet.affinity import affinity_label
from ssenet.crffile import load_crf_scores
from ssenet.data.datasets import SeededAugmentation, SegmentationDataset
from ssenet.data.transforms import (
    LongSideRecipe,
    RandomResizeLong,
    Seed,
    seeded,
)
from ssenet.errors import SsenetError


class ScoreStack(tv_tensors.Mask):
    """Per-pixel class scores: cropped, padded and flipped like a mask, resized bilinearly."""


class _ResizeLong(RandomResizeLong):
    """The random long-side resize, with bilinear interpolation for score stacks."""

    def transform(self, inpt: torch.Tensor, params: dict) -> torch.Tensor:
        if isinstance(inpt, ScoreStack):
            size = list(params["size"])
            return TF.resize(
                inpt, size, interpolation=v2.InterpolationMode.BILINEAR, antialias=False
            )
        return super().transform(inpt, params)


class AffinityTrainTransform(LongSideRecipe):
    """One random draw for an (H, W, 3) uint8 image and its (C, H, W) score stack.

    Random long side (image bicubic, scores bilinear), horizontal flip, ColorJitter on the
    image, random crop padded with 0 in both (zero scores mark padding), then normalisation;
    cropping before normalising pads the image with black, as the reference's affinity data.
    The psa and SSENet affinity scripts crop without rescaling; `resize_long=None` does the
    same, a range adds the CAM recipe's random long side. Returns (float32 image (3, c, c),
    float32 scores (C, c, c)).
    """

    resize_long_step = _ResizeLong
    crop_fill: ClassVar[dict] = {tv_tensors.Image: 0, tv_tensors.Mask: 0.0}
    crop_first = True

    def __call__(
        self, image: np.ndarray, scores: np.ndarray, generator: Seed = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment an image and its score stack together; `generator` makes it repeatable."""
        scores = torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32))
        if scores.shape[1:] != image.shape[:2]:
            raise SsenetError(
                f"score stack {tuple(scores.shape[1:])} and image {tuple(image.shape[:2])} differ "
                "in size"
            )
        with seeded(generator):
            out_image, out_scores = self.pipeline(
                tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)),
                ScoreStack(scores),
            )
        return out_image.as_subclass(torch.Tensor), out_scores.as_subclass(torch.Tensor)


class AffinityTrainDataset(SeededAugmentation):
    """Augmented images and their affinity label maps: `(image, label (h, w) uint8, index)`.

    The la and ha stacks of `crf_dir/<id>.npz` go through the image's augmentation as one
    stack, then `affinity_label` pools them to the feature grid. Each item is seeded from
    (seed, epoch, index) like `CamTrainDataset`, so a run is reproducible whatever the workers.
    """

    def __init__(
        self,
        dataset: SegmentationDataset,
        crf_dir: str | Path,
        transform: AffinityTrainTransform,
        stride: int = 8,
        seed: int = 0,
    ):
        super().__init__(dataset, transform, seed)
        self.crf_dir = Path(crf_dir)
        self.stride = stride

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        image_id = self.dataset.ids[index]
        la, ha, keys = load_crf_scores(self.crf_dir / f"{image_id}.npz")
        image, scores = self.transform(
            self.dataset.read_image(image_id),
            np.concatenate([la, ha]),
            generator=self.generator(index),
        )
        la_crop, ha_crop = np.split(scores.numpy(), 2)
        label = affinity_label(la_crop, ha_crop, self.stride, keys=keys)
        return image, torch.from_numpy(label), index
