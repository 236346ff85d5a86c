"""DeepLab for the segmentation stage: the configured backbone with a DeepLab-v2 ASPP (a sum of
dilated 3x3 convs) or torchvision's DeepLab-v3 head."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ssenet.choices import SEG_HEADS
from ssenet.config import ModelConfig
from ssenet.errors import SsenetError
from ssenet.models import build_backbone, load_weights

HEADS = SEG_HEADS


Groups = tuple[list[nn.Parameter], list[nn.Parameter], list[nn.Parameter], list[nn.Parameter]]


class DeepLabV2Head(nn.Module):
    """DeepLab-v2 ASPP: parallel dilated 3x3 convs straight to class scores, summed.

    Initialised as DeepLab v2's classifier: weights N(0, 0.01), biases 0.
    """

    def __init__(self, in_ch: int, num_classes: int, rates: Sequence[int] = (6, 12, 18, 24)):
        super().__init__()
        if not rates:
            raise SsenetError("DeepLabV2Head: at least one dilation rate is needed")
        self.branches = nn.ModuleList(
            nn.Conv2d(in_ch, num_classes, 3, padding=rate, dilation=rate) for rate in rates
        )
        for conv in self.branches:
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branches[0](x)
        for conv in self.branches[1:]:
            out = out + conv(x)
        return out


class SegmentationNet(nn.Module):
    """Backbone + head: `forward(x)` gives class logits (B, C, H/stride, W/stride)."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def parameter_groups(self) -> Groups:
        """(backbone weights, backbone biases, head weights, head biases), trainable only.

        Like the other stages, parameters named `*bias` are biases (2x / 20x lr, no decay);
        the DeepLab-v3 head's BatchNorm scales count as weights.
        """
        weights, biases = self.backbone.split_parameters()
        head = [(name, p) for name, p in self.head.named_parameters() if p.requires_grad]
        head_weights = [p for name, p in head if not name.endswith("bias")]
        head_biases = [p for name, p in head if name.endswith("bias")]
        return list(weights), list(biases), head_weights, head_biases


def build_head(head: str, in_ch: int, num_classes: int) -> nn.Module:
    """A head by name: deeplabv2 (ASPP, rates 6/12/18/24) or deeplabv3 (torchvision)."""
    if head == "deeplabv2":
        return DeepLabV2Head(in_ch, num_classes)
    if head == "deeplabv3":
        from torchvision.models.segmentation.deeplabv3 import DeepLabHead

        return DeepLabHead(in_ch, num_classes)
    raise SsenetError(f"config key seg.head: {head!r} is not one of {list(HEADS)}")


def build_seg_model(
    cfg_model: ModelConfig, head: str, num_classes: int, imagenet: bool = True
) -> SegmentationNet:
    """The configured backbone with a DeepLab head for `num_classes` (background included).

    With `imagenet=True` the backbone starts from its ImageNet weights (the packaged ones, or
    `model.weights`); pass False when trained weights are loaded next.
    """
    backbone = build_backbone(
        name=cfg_model.backbone,
        width=cfg_model.width,
        output_stride=cfg_model.output_stride,
        pretrained=imagenet and cfg_model.pretrained and cfg_model.weights is None,
        freeze_bn=cfg_model.freeze_bn,
    )
    if imagenet and cfg_model.weights:
        load_weights(backbone, cfg_model.weights)
    return SegmentationNet(backbone, build_head(head, backbone.out_channels, num_classes))
