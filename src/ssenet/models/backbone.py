"""What every backbone shares: normalisation constants, the reference's freezing, parameter split.

The psa reference trains with every BatchNorm in eval mode (statistics and affine frozen) and the
first layers frozen; `freeze_bn=True` reproduces that, `freeze_bn=False` trains everything.
"""

from __future__ import annotations

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Backbone(nn.Module):
    """Features at `stride` with `out_channels`; `feature_levels` gives three depths (AffinityNet),
    `pyramid` every depth from stride 4 at its own resolution (IRNet's boundary network).

    Subclasses build their layers, then call `apply_freezing()`, and implement `feature_levels`
    (the last level is the output of `forward`) and `pyramid`.
    """

    out_channels: int
    level_channels: tuple[int, int, int]
    stride: int
    pyramid_channels: tuple[int, ...] = ()
    pyramid_strides: tuple[int, ...] = ()  # the first is 4
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __init__(self, freeze_bn: bool = True):
        super().__init__()
        self.freeze_bn = freeze_bn

    def early_modules(self) -> list[nn.Module]:
        """Layers the reference keeps frozen (ResNet-38: conv1a and stage b2)."""
        return []

    def apply_freezing(self) -> None:
        if not self.freeze_bn:
            return
        for module in self.early_modules():
            module.requires_grad_(False)
        for module in self.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.requires_grad_(False)

    def train(self, mode: bool = True) -> Backbone:
        super().train(mode)
        if self.freeze_bn:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def feature_levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps of increasing depth, at `pyramid_strides` with `pyramid_channels`."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_levels(x)[-1]

    def split_parameters(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """Trainable (weights, biases): the reference gives biases twice the lr and no decay."""
        weights, biases = [], []
        for name, param in self.named_parameters():
            if param.requires_grad:
                (biases if name.endswith("bias") else weights).append(param)
        return weights, biases
