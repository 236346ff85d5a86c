"""The networks a config describes: built for training (with ImageNet or given backbone weights)
or loaded with trained weights for inference, in eval mode."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ssenet.config import Config
from ssenet.models import AffinityNet, build_backbone, build_cam_model, load_weights
from ssenet.models.deeplab import SegmentationNet, build_seg_model
from ssenet.models.folding import fold_batchnorm
from ssenet.runtime import memory_format


def configured_cam_model(cfg: Config, num_classes: int, pretrained: bool) -> nn.Module:
    """The CAM network `cfg.model` describes, with the packaged ImageNet weights if `pretrained`."""
    m = cfg.model
    return build_cam_model(
        backbone=m.backbone,
        num_classes=num_classes,
        width=m.width,
        output_stride=m.output_stride,
        pretrained=pretrained,
        freeze_bn=m.freeze_bn,
        head_channels=m.head_channels,
        head_norm=m.head_norm,
        dropout=m.dropout,
        input_scale=m.input_scale,
    )


def build_cam_from_config(cfg: Config, num_classes: int) -> nn.Module:
    """The configured CAM network with its ImageNet (or given) backbone weights."""
    model = configured_cam_model(cfg, num_classes, cfg.model.pretrained and not cfg.model.weights)
    if cfg.model.weights:
        load_weights(model.backbone, cfg.model.weights)
    return model


def load_cam_model(
    cfg: Config, weights: str | Path, num_classes: int, fold: bool = True
) -> nn.Module:
    """Build the configured CAM network and load trained weights (strict) for inference."""
    model = configured_cam_model(cfg, num_classes, pretrained=False)
    load_weights(model, weights)
    return for_inference(model, cfg, fold)


def configured_affinity_model(cfg: Config, pretrained: bool) -> AffinityNet:
    """The AffinityNet `cfg.model` describes, with the packaged ImageNet weights if
    `pretrained`."""
    m = cfg.model
    return AffinityNet(build_backbone(m.backbone, m.width, m.output_stride, pretrained,
                                      m.freeze_bn))  # fmt: skip


def build_affinity_from_config(cfg: Config) -> nn.Module:
    """The configured AffinityNet with ImageNet (or the given) backbone weights, as psa starts."""
    model = configured_affinity_model(cfg, cfg.model.pretrained and cfg.model.weights is None)
    if cfg.model.weights:
        load_weights(model.backbone, cfg.model.weights)
    return model


def load_affinity_model(cfg: Config, weights: str | Path, fold: bool = True) -> nn.Module:
    """The configured AffinityNet with trained weights (strict), in eval mode."""
    model = configured_affinity_model(cfg, pretrained=False)
    load_weights(model, weights)
    return for_inference(model, cfg, fold)


def load_seg_model(
    cfg: Config, weights: str | Path, num_classes: int, fold: bool = True
) -> SegmentationNet:
    """The configured segmentation network with trained weights (strict), in eval mode."""
    model = build_seg_model(cfg.model, cfg.seg.head, num_classes, imagenet=False)
    load_weights(model, weights)
    return for_inference(model, cfg, fold)


def for_inference(model: nn.Module, cfg: Config, fold: bool = True) -> nn.Module:
    """Eval mode, the configured memory format and, with `fold` and `run.fold_batchnorm`, each
    BatchNorm folded into its convolution (the network can then no longer be trained or saved
    under its training state-dict keys)."""
    model.eval()
    if fold and cfg.run.fold_batchnorm:
        fold_batchnorm(model)
    return memory_format(model, cfg.run.channels_last)
