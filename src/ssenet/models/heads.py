"""The CAM network and AffinityNet: a backbone plus the reference's heads.

Both expose `parameter_groups()`: backbone weights, backbone biases, head weights, head biases,
trained at 1x, 2x, 10x and 20x the base learning rate as in the reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssenet.models.backbone import Backbone

Groups = tuple[list[nn.Parameter], list[nn.Parameter], list[nn.Parameter], list[nn.Parameter]]


class FlatStateDict(nn.Module):
    """State dict without the `backbone.` prefix: the layout of the psa checkpoints.

    psa's networks subclass the backbone, so its layers sit at the top level (`conv1a.weight`,
    `fc8.weight`); composing instead, these hooks keep the released files loading strictly.
    """

    head_names: tuple[str, ...] = ()

    def __init__(self):
        super().__init__()
        self.register_state_dict_post_hook(_drop_backbone_prefix)
        self.register_load_state_dict_pre_hook(_add_backbone_prefix)


def _drop_backbone_prefix(module, state_dict, prefix, local_metadata) -> None:
    inner = prefix + "backbone."
    items = list(state_dict.items())
    state_dict.clear()
    for key, value in items:
        state_dict[prefix + key[len(inner):] if key.startswith(inner) else key] = value


def _add_backbone_prefix(module, state_dict, prefix, *args) -> None:
    for key in list(state_dict):
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix):]
        if not rest.startswith(("backbone.", *(f"{h}." for h in module.head_names))):
            state_dict[prefix + "backbone." + rest] = state_dict.pop(key)


def _groups(backbone: Backbone, head: list[nn.Module]) -> Groups:
    weights, biases = backbone.split_parameters()
    head_params = [(n, p) for m in head for n, p in m.named_parameters() if p.requires_grad]
    head_weights = [p for n, p in head_params if not n.endswith("bias")]
    head_biases = [p for n, p in head_params if n.endswith("bias")]
    return weights, biases, head_weights, head_biases


class CamNet(FlatStateDict):
    """Backbone -> Dropout2d(0.5) -> 1x1 conv without bias (`fc8`): one map per class.

    Documented deviations that help narrow pretrained backbones: `head_channels > 0` inserts a
    3x3 conv (+ BatchNorm with `head_norm`) + ReLU of that width before `fc8` (`fc7`, `bn_fc7`);
    `dropout` changes the rate; `input_scale` upsamples the input first, so the CAM grid is finer
    without dilating the backbone. The defaults are the reference head.
    """

    head_names = ("fc7", "bn_fc7", "fc8")

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        head_channels: int = 0,
        head_norm: bool = False,
        dropout: float = 0.5,
        input_scale: float = 1.0,
    ):
        super().__init__()
        self.backbone = backbone
        self.input_scale = input_scale
        channels = backbone.out_channels
        self.fc7 = self.bn_fc7 = None
        if head_channels > 0:
            self.fc7 = nn.Conv2d(channels, head_channels, 3, padding=1, bias=not head_norm)
            nn.init.kaiming_normal_(self.fc7.weight, nonlinearity="relu")
            if self.fc7.bias is not None:
                nn.init.zeros_(self.fc7.bias)
            self.bn_fc7 = nn.BatchNorm2d(head_channels) if head_norm else None
            channels = head_channels
        self.dropout7 = nn.Dropout2d(dropout)
        self.fc8 = nn.Conv2d(channels, num_classes, 1, bias=False)
        nn.init.xavier_uniform_(self.fc8.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_scale != 1:
            x = F.interpolate(x, scale_factor=self.input_scale, mode="bilinear",
                              align_corners=False)  # fmt: skip
        x = self.backbone(x)
        if self.fc7 is not None:
            x = self.fc7(x)
            x = F.relu(self.bn_fc7(x) if self.bn_fc7 is not None else x)
        return self.fc8(self.dropout7(x))

    def parameter_groups(self) -> Groups:
        head = [m for m in (self.fc7, self.bn_fc7, self.fc8) if m is not None]
        return _groups(self.backbone, head)


class AffinityNet(FlatStateDict):
    """Three backbone depths -> 1x1 convs to 64/128/256 + ELU -> concat -> 1x1 conv 448 + ELU."""

    head_names = ("f8_3", "f8_4", "f8_5", "f9")

    def __init__(self, backbone: Backbone):
        super().__init__()
        self.backbone = backbone
        c3, c4, c5 = backbone.level_channels
        self.f8_3 = nn.Conv2d(c3, 64, 1, bias=False)
        self.f8_4 = nn.Conv2d(c4, 128, 1, bias=False)
        self.f8_5 = nn.Conv2d(c5, 256, 1, bias=False)
        self.f9 = nn.Conv2d(448, 448, 1, bias=False)
        for conv in (self.f8_3, self.f8_4, self.f8_5):
            nn.init.kaiming_normal_(conv.weight)
        nn.init.xavier_uniform_(self.f9.weight, gain=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        level3, level4, level5 = self.backbone.feature_levels(x)
        stacked = torch.cat(
            [F.elu(self.f8_3(level3)), F.elu(self.f8_4(level4)), F.elu(self.f8_5(level5))], dim=1
        )
        return F.elu(self.f9(stacked))

    def parameter_groups(self) -> Groups:
        return _groups(self.backbone, [self.f8_3, self.f8_4, self.f8_5, self.f9])
