"""DeepLab's loss (cross entropy ignoring 255) and its multi-scale + flip class probabilities;
the network is `ssenet.models.deeplab`, the stage `ssenet.stages.s5_segmentation`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ssenet.data.palette import IGNORE_INDEX
from ssenet.multiscale import summed_over_passes


def seg_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross entropy of logits upsampled (bilinear) to the label size, 255 ignored.

    A batch without any labelled pixel gives 0 (with a gradient) instead of NaN.
    """
    logits = F.interpolate(logits.float(), size=labels.shape[-2:], mode="bilinear")
    total = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (labels != IGNORE_INDEX).sum().clamp(min=1)


class SegObjective(nn.Module):
    """One forward per step for `fit`: the model's logits and the ignore-255 cross entropy."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": seg_loss(self.model(images), labels)}


@torch.no_grad()
def multiscale_probs(
    model: nn.Module,
    images: torch.Tensor,
    scales: Sequence[float],
    flip: bool,
    amp: str = "off",
) -> torch.Tensor:
    """Class probabilities (B, C, H, W) of same-size uint8 images (B, H, W, 3).

    Each scale runs the batch and its flip as one pass; logits are upsampled (bilinear) to the
    original size, soft-maxed, un-flipped and averaged over every pass.
    """

    def upsampled_probs(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return F.interpolate(logits, size=size, mode="bilinear").softmax(dim=1)

    total = summed_over_passes(model, images, scales, flip, amp, upsampled_probs)
    return total / (len(scales) * (2 if flip else 1))
