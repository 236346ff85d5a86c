"""Inference networks with each eval-mode BatchNorm folded into the convolution before it.

In eval mode a BatchNorm is a fixed per-channel scale and shift, so it merges into the weight and
bias of the convolution that feeds it (`torch.nn.utils.fusion.fuse_conv_bn_eval`) and one pass
over the activations disappears. On two CPU cores the BatchNorms were about 30% of
EfficientNet-Lite0's multi-scale CAM inference (`benchmarks/fold_batchnorm.py`). The folded
network computes the same function up to float rounding; it is for inference only (the merged
statistics can no longer be trained, and its state dict no longer holds BatchNorm keys).

Only pairs whose order is certain are folded: the named conv -> norm pairs of the blocks below and
consecutive Conv2d -> BatchNorm2d children of an `nn.Sequential`. Pre-activation blocks (ResNet-38
normalises before its convolutions) are left as they are.
"""

from __future__ import annotations

from timm.layers import BatchNormAct2d
from timm.models._efficientnet_blocks import DepthwiseSeparableConv, InvertedResidual
from timm.models.efficientnet import EfficientNetFeatures
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.models.resnet import BasicBlock, Bottleneck

from ssenet.models.heads import CamNet
from ssenet.models.torchvision_resnet import TorchvisionResNet

# (convolution, the norm applied to its output) attribute names, per module type.
CONV_NORM_PAIRS: dict[type, tuple[tuple[str, str], ...]] = {
    EfficientNetFeatures: (("conv_stem", "bn1"),),
    DepthwiseSeparableConv: (("conv_dw", "bn1"), ("conv_pw", "bn2")),
    InvertedResidual: (("conv_pw", "bn1"), ("conv_dw", "bn2"), ("conv_pwl", "bn3")),
    BasicBlock: (("conv1", "bn1"), ("conv2", "bn2")),
    Bottleneck: (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")),
    TorchvisionResNet: (("conv1", "bn1"),),
    CamNet: (("fc7", "bn_fc7"),),
}


def fold_batchnorm(model: nn.Module) -> int:
    """Fold each known conv -> BatchNorm pair of an eval-mode `model` in place; the count folded."""
    if model.training:
        raise ValueError("fold_batchnorm: put the model in eval mode first (model.eval())")
    folded = 0
    for module in list(model.modules()):
        for conv_name, norm_name in _pairs(module):
            conv, norm = getattr(module, conv_name), getattr(module, norm_name)
            if not _foldable(conv, norm):
                continue
            setattr(module, conv_name, fuse_conv_bn_eval(conv, norm))
            setattr(module, norm_name, _what_remains(norm))
            folded += 1
    return folded


def _pairs(module: nn.Module) -> list[tuple[str, str]]:
    if isinstance(module, nn.Sequential):
        names = [name for name, _ in module.named_children()]
        return list(zip(names[:-1], names[1:], strict=True))
    return list(CONV_NORM_PAIRS.get(type(module), ()))


def _foldable(conv: object, norm: object) -> bool:
    return (
        isinstance(conv, nn.Conv2d)
        and type(norm) in (nn.BatchNorm2d, BatchNormAct2d)
        and norm.track_running_stats
        and norm.running_mean is not None
    )


def _what_remains(norm: nn.Module) -> nn.Module:
    """timm's BatchNormAct2d also applies dropout and an activation after the norm: keep those."""
    if isinstance(norm, BatchNormAct2d):
        return nn.Sequential(norm.drop, norm.act)
    return nn.Identity()
