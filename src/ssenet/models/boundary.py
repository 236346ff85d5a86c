"""IRNet's class-boundary network: a frozen ImageNet backbone's feature pyramid -> one boundary
logit per cell of the stride-4 grid (Ahn, Cho and Kwak, CVPR 2019; public code
github.com/jiwoon-ahn/irn, net/resnet50_irn.py).

Each pyramid level goes through a 1x1 convolution to 32 channels and GroupNorm(4, 32), is
upsampled bilinearly to the stride-4 grid, passes a ReLU; the levels are concatenated and a 1x1
convolution with a bias gives the logit (net/resnet50_irn.py:23-51, 117-122). The backbone is
frozen: its features are computed without gradients and its BatchNorms keep their ImageNet
statistics (net/resnet50_irn.py:111-115, 139-141). IRNet's displacement-field branch (instance
segmentation) is not built.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ssenet.config import Config
from ssenet.models import build_backbone, load_weights
from ssenet.models.backbone import Backbone
from ssenet.models.configured import for_inference
from ssenet.multiscale import normalized_pixels
from ssenet.runtime import autocast, forward_in_passes

LEVEL_CHANNELS = 32  # net/resnet50_irn.py:23-50, every fc_edge level
BOUNDARY_STRIDE = 4  # the boundary map's grid: the first pyramid level's
PAD_MULTIPLE = 16  # the deepest level's stride: inference inputs are whole cells of it


class BoundaryNet(nn.Module):
    """Frozen backbone pyramid -> (B, 1, ceil(H/4), ceil(W/4)) boundary logits."""

    def __init__(self, backbone: Backbone):
        super().__init__()
        self.backbone = backbone.requires_grad_(False)
        self.levels = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, LEVEL_CHANNELS, 1, bias=False),
                          nn.GroupNorm(4, LEVEL_CHANNELS))  # fmt: skip
            for c in backbone.pyramid_channels
        )
        self.out = nn.Conv2d(LEVEL_CHANNELS * len(self.levels), 1, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            pyramid = self.backbone.pyramid(x)
        height, width = pyramid[0].shape[-2:]
        first = self.backbone.pyramid_strides[0]
        maps = []
        for features, stride, level in zip(pyramid, self.backbone.pyramid_strides, self.levels,
                                           strict=True):  # fmt: skip
            y = level(features)
            if stride > first:  # the reference upsamples by the stride ratio, then crops
                y = F.interpolate(y, scale_factor=stride // first, mode="bilinear",
                                  align_corners=False)[..., :height, :width]  # fmt: skip
            maps.append(F.relu(y))
        return self.out(torch.cat(maps, dim=1))

    def train(self, mode: bool = True) -> BoundaryNet:
        super().train(mode)
        self.backbone.eval()  # frozen: ImageNet statistics, no dropout
        return self

    def parameter_groups(self) -> tuple[list, list, list, list]:
        """The trainer's four groups: the backbone's are empty (frozen); every boundary-branch
        parameter is in the third (lr x irn.lr_multipliers[2], weight decay), as the reference
        puts them in one group (train_irn.py:34)."""
        head = [p for module in (*self.levels, self.out) for p in module.parameters()]
        return [], [], head, []


def boundary_backbone(cfg: Config, pretrained: bool) -> Backbone:
    """IRNet's backbone for `model.backbone`: ResNets at output stride 16 with layer4 neither
    strided nor dilated (net/resnet50_irn.py:13, strides 2, 2, 2, 1, net/resnet50.py dilations
    1), EfficientNet-Lite0 at stride 16, ResNet-38 at its stride 8."""
    m = cfg.model
    if m.backbone in ("resnet50", "resnet101"):
        backbone = build_backbone(m.backbone, m.width, 32, pretrained, freeze_bn=True)
        backbone.undilated_last_stride()
        return backbone
    stride = 8 if m.backbone == "resnet38" else 16
    return build_backbone(m.backbone, m.width, stride, pretrained, freeze_bn=True)


def configured_boundary_model(cfg: Config, pretrained: bool) -> BoundaryNet:
    """The boundary network `cfg.model` describes, with the packaged ImageNet backbone weights
    if `pretrained`."""
    return BoundaryNet(boundary_backbone(cfg, pretrained))


def build_boundary_from_config(cfg: Config) -> BoundaryNet:
    """The boundary network with ImageNet (or the given) backbone weights, as IRNet starts."""
    model = configured_boundary_model(cfg, cfg.model.pretrained and cfg.model.weights is None)
    if cfg.model.weights:
        load_weights(model.backbone, cfg.model.weights)
    return model


def load_boundary_model(cfg: Config, weights: str | Path, fold: bool = True) -> BoundaryNet:
    """The boundary network with trained weights (strict), in eval mode."""
    model = configured_boundary_model(cfg, pretrained=False)
    load_weights(model, weights)
    return for_inference(model, cfg, fold)


def padded_side(side: int, crop_size: int) -> int:
    """The input side of the boundary network at inference: the reference pads every image to
    its crop (net/resnet50_irn.py:226); larger ones to whole cells of the deepest stride."""
    return max(crop_size, -(-side // PAD_MULTIPLE) * PAD_MULTIPLE)


@torch.no_grad()
def boundary_maps(
    model: nn.Module, images: torch.Tensor, crop_size: int, amp: str = "off"
) -> torch.Tensor:
    """Boundary probabilities (B, ceil(H/4), ceil(W/4)) of same-size uint8 images (B, H, W, 3).

    As the reference (net/resnet50_irn.py:223-232): each image and its mirror image are padded
    at the bottom and right, the logits cropped to the image's cells, the mirror's flipped
    back, the two averaged, then the sigmoid.
    """
    device = next(model.parameters()).device
    pixels = normalized_pixels(images, model.backbone.mean, model.backbone.std, device)
    height, width = pixels.shape[-2:]
    both = torch.cat([pixels, pixels.flip(-1)])
    both = F.pad(both, (0, padded_side(width, crop_size) - width,
                        0, padded_side(height, crop_size) - height))  # fmt: skip
    with autocast(device, amp):
        logits = forward_in_passes(model, both).float()
    cells = (-(-height // BOUNDARY_STRIDE), -(-width // BOUNDARY_STRIDE))
    logits = logits[:, 0, : cells[0], : cells[1]]
    count = len(images)
    return torch.sigmoid(logits[:count] / 2 + logits[count:].flip(-1) / 2)

