"""ResNet-38 ("model A1", Wu et al. 2019) with the psa module names, output stride 8.

Names and layout follow the public psa code so released psa / SSENet / SEAM state dicts load with
`strict=True`. `width` scales every channel count; 1.0 is the reference network, small values
give a network that trains on a CPU. Written here because torchvision and timm have no ResNet-38.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssenet.models.backbone import Backbone


class ResBlock(nn.Module):
    """Pre-activation block of two 3x3 convs; `conv_branch1` projects when the shape changes."""

    def __init__(self, cin, mid, cout, stride=1, dilation=1, first_dilation=None):
        super().__init__()
        first_dilation = dilation if first_dilation is None else first_dilation
        self.same_shape = cin == cout and stride == 1
        self.bn_branch2a = nn.BatchNorm2d(cin)
        self.conv_branch2a = nn.Conv2d(
            cin, mid, 3, stride, padding=first_dilation, dilation=first_dilation, bias=False
        )
        self.bn_branch2b1 = nn.BatchNorm2d(mid)
        self.conv_branch2b1 = nn.Conv2d(
            mid, cout, 3, padding=dilation, dilation=dilation, bias=False
        )
        if not self.same_shape:
            self.conv_branch1 = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(output, the block's normalised input), the second feeding AffinityNet."""
        pre = F.relu(self.bn_branch2a(x))
        shortcut = x if self.same_shape else self.conv_branch1(pre)
        branch = self.conv_branch2a(pre)
        branch = self.conv_branch2b1(F.relu(self.bn_branch2b1(branch)))
        return shortcut + branch, pre


class BottleneckBlock(nn.Module):
    """Pre-activation bottleneck (1x1, dilated 3x3, 1x1) with dropout, as blocks b6 and b7."""

    def __init__(self, cin, cout, dilation, dropout):
        super().__init__()
        self.bn_branch2a = nn.BatchNorm2d(cin)
        self.conv_branch2a = nn.Conv2d(cin, cout // 4, 1, bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(cout // 4)
        self.dropout_2b1 = nn.Dropout2d(dropout)
        self.conv_branch2b1 = nn.Conv2d(
            cout // 4, cout // 2, 3, padding=dilation, dilation=dilation, bias=False
        )
        self.bn_branch2b2 = nn.BatchNorm2d(cout // 2)
        self.dropout_2b2 = nn.Dropout2d(dropout)
        self.conv_branch2b2 = nn.Conv2d(cout // 2, cout, 1, bias=False)
        self.conv_branch1 = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pre = F.relu(self.bn_branch2a(x))
        branch = self.conv_branch2a(pre)
        branch = self.dropout_2b1(F.relu(self.bn_branch2b1(branch)))
        branch = self.conv_branch2b1(branch)
        branch = self.dropout_2b2(F.relu(self.bn_branch2b2(branch)))
        return self.conv_branch1(pre) + self.conv_branch2b2(branch), pre


class ResNet38(Backbone):
    """Features at stride 8: `feature_levels` gives the inputs of b5 and b6 and the final map."""

    def __init__(self, width: float = 1.0, freeze_bn: bool = True):
        super().__init__(freeze_bn)
        c = {n: max(4, round(n * width)) for n in (64, 128, 256, 512, 1024, 2048, 4096)}
        self.conv1a = nn.Conv2d(3, c[64], 3, padding=1, bias=False)
        self._stage("b2", 3, c[64], c[128], c[128], stride=2)
        self._stage("b3", 3, c[128], c[256], c[256], stride=2)
        self._stage("b4", 6, c[256], c[512], c[512], stride=2)
        self._stage("b5", 3, c[512], c[512], c[1024], stride=1, dilation=2, first_dilation=1)
        self.b6 = BottleneckBlock(c[1024], c[2048], dilation=4, dropout=0.3)
        self.b7 = BottleneckBlock(c[2048], c[4096], dilation=4, dropout=0.5)
        self.bn7 = nn.BatchNorm2d(c[4096])
        self.out_channels = c[4096]
        self.level_channels = (c[512], c[1024], c[4096])
        self.stride = 8
        self.pyramid_channels = (c[256], *self.level_channels)
        self.pyramid_strides = (4, 8, 8, 8)
        self.apply_freezing()

    def _stage(self, name, blocks, cin, mid, cout, stride, dilation=1, first_dilation=None):
        """Blocks `name`, `name_1`, ...: the first changes the shape, the rest keep it."""
        setattr(self, name, ResBlock(cin, mid, cout, stride, dilation, first_dilation))
        for i in range(1, blocks):
            setattr(self, f"{name}_{i}", ResBlock(cout, mid, cout, 1, dilation))

    def early_modules(self) -> list[nn.Module]:
        return [self.conv1a, self.b2, self.b2_1, self.b2_2]

    def feature_levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self._depths(x)[1:]

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self._depths(x)

    def _depths(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The normalised inputs of b4 (stride 4), b5 and b6 and the final map (stride 8)."""
        x = self.conv1a(x)
        for name in ("b2", "b2_1", "b2_2", "b3", "b3_1", "b3_2"):
            x, _ = getattr(self, name)(x)
        x, stride4 = self.b4(x)
        for name in ("b4_1", "b4_2", "b4_3", "b4_4", "b4_5"):
            x, _ = getattr(self, name)(x)
        x, level1 = self.b5(x)
        x, _ = self.b5_1(x)
        x, _ = self.b5_2(x)
        x, level2 = self.b6(x)
        x, _ = self.b7(x)
        return [stride4, level1, level2, F.relu(self.bn7(x))]
