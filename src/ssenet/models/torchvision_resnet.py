"""torchvision ResNet-50/101 with dilated last stages (output stride 8 or 16)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from ssenet.errors import SsenetError
from ssenet.models.backbone import Backbone

# Which of layer2..layer4 trade their stride for dilation, per output stride.
DILATION = {8: [False, True, True], 16: [False, False, True], 32: [False, False, False]}


class TorchvisionResNet(Backbone):
    """The torchvision network's layers under their own names, so its ImageNet .pth loads as is."""

    def __init__(self, depth: int = 50, output_stride: int = 8, freeze_bn: bool = True):
        super().__init__(freeze_bn)
        if output_stride not in DILATION:
            raise SsenetError(f"model.output_stride={output_stride}: resnet supports 8, 16 or 32")
        builder = {50: torchvision.models.resnet50, 101: torchvision.models.resnet101}[depth]
        net = builder(weights=None, replace_stride_with_dilation=DILATION[output_stride])
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            setattr(self, name, getattr(net, name))
        self.out_channels = 2048
        self.level_channels = (512, 1024, 2048)
        self.stride = output_stride
        self.pyramid_channels = (64, 256, 512, 1024, 2048)
        strides = [4, 4]  # the stem (after max pooling) and layer1
        for dilated in DILATION[output_stride]:  # layer2..layer4
            strides.append(strides[-1] * (1 if dilated else 2))
        self.pyramid_strides = tuple(strides)
        self.apply_freezing()

    def undilated_last_stride(self) -> None:
        """layer4 at its input's stride with no dilation: IRNet's ResNet-50 (strides 2, 2, 2, 1,
        dilations 1) on a network built at output stride 32."""
        if self.stride != 32:
            raise SsenetError("undilated_last_stride: build the network at output stride 32")
        first = self.layer4[0]
        first.conv2.stride = (1, 1)
        first.downsample[0].stride = (1, 1)
        self.stride = 16
        self.pyramid_strides = (*self.pyramid_strides[:-1], 16)

    def early_modules(self) -> list[nn.Module]:
        return [self.conv1, self.bn1, self.layer1]

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        stem = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        levels = [stem]
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            levels.append(layer(levels[-1]))
        return levels

    def feature_levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))
        level1 = self.layer2(x)
        level2 = self.layer3(level1)
        level3 = self.layer4(level2)
        size = level3.shape[-2:]
        # layer2 (and layer3 at stride 16) run at a finer stride: pool them onto the output grid.
        return [F.adaptive_avg_pool2d(t, size) if t.shape[-2:] != size else t
                for t in (level1, level2)] + [level3]
