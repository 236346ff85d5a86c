"""Backbones, the CAM and affinity heads, and weight loading."""

from __future__ import annotations

from ssenet.choices import BACKBONES, OUTPUT_STRIDES
from ssenet.errors import SsenetError
from ssenet.models.backbone import Backbone
from ssenet.models.heads import AffinityNet, CamNet
from ssenet.models.weights import load_mxnet_params, load_weights, read_state_dict

__all__ = [
    "BACKBONES", "OUTPUT_STRIDES", "AffinityNet", "Backbone", "CamNet",
    "build_backbone", "build_cam_model", "load_mxnet_params", "load_weights", "read_state_dict",
]


def build_backbone(
    name: str = "resnet38",
    width: float = 1.0,
    output_stride: int = 8,
    pretrained: bool = True,
    freeze_bn: bool = True,
) -> Backbone:
    """A backbone by name. Only efficientnet_lite0 has weights in a package; the others take
    ImageNet weights from a local file (`model.weights`), nothing is downloaded."""
    if name == "resnet38":
        if output_stride != 8:
            raise SsenetError(f"model.output_stride={output_stride}: resnet38 is stride 8 only")
        from ssenet.models.resnet38 import ResNet38

        return ResNet38(width=width, freeze_bn=freeze_bn)
    if name in ("resnet50", "resnet101"):
        from ssenet.models.torchvision_resnet import TorchvisionResNet

        return TorchvisionResNet(int(name[6:]), output_stride, freeze_bn)
    if name == "efficientnet_lite0":
        from ssenet.models.efficientnet import EfficientNetLite0

        return EfficientNetLite0(output_stride, pretrained, freeze_bn)
    raise SsenetError(f"model.backbone={name!r}: choose one of {', '.join(BACKBONES)}")


def build_cam_model(
    backbone: str = "resnet38",
    num_classes: int = 20,
    width: float = 1.0,
    output_stride: int = 8,
    pretrained: bool = True,
    freeze_bn: bool = True,
    head_channels: int = 0,
    head_norm: bool = False,
    dropout: float = 0.5,
    input_scale: float = 1.0,
) -> CamNet:
    """The CAM network; for ResNet-38 its state dict uses the psa names (`fc8` head)."""
    net = build_backbone(backbone, width, output_stride, pretrained, freeze_bn)
    return CamNet(net, num_classes, head_channels, head_norm, dropout, input_scale)
