"""Per stage, the model and the batch whose GPU memory the dry run estimates.

Each model is the stage's own builder (`configured_cam_model`, `configured_affinity_model`,
`build_seg_model`) run on the meta device without ImageNet weights: the same layers the stage
trains, none of their values. Training measures one batch of crops through the stage's loss;
inference the largest test scale of the largest sampled image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ssenet.affinity import AffinityObjective
from ssenet.cam import CamObjective
from ssenet.config import Config
from ssenet.dryrun.memory import (
    MemoryEstimate,
    estimate_inference_memory,
    estimate_training_memory,
    on_meta,
    optimizer_slots,
)
from ssenet.errors import SsenetError
from ssenet.models.configured import configured_affinity_model, configured_cam_model
from ssenet.models.deeplab import build_seg_model
from ssenet.segmentation import SegObjective


def _cam_model(cfg: Config, num_classes: int) -> nn.Module:
    return on_meta(lambda: configured_cam_model(cfg, num_classes, pretrained=False))


def _affinity_model(cfg: Config) -> nn.Module:
    return on_meta(lambda: configured_affinity_model(cfg, pretrained=False))


def _seg_model(cfg: Config, num_classes: int) -> nn.Module:
    return on_meta(lambda: build_seg_model(cfg.model, cfg.seg.head, num_classes, imagenet=False))


def _images(batch: int, height: int, width: int) -> torch.Tensor:
    return torch.empty(batch, 3, height, width, device="meta")


def cam_train_memory(cfg: Config, num_foreground: int) -> MemoryEstimate:
    model = _cam_model(cfg, num_foreground)
    batch, crop = cfg.cam.batch_size, cfg.cam.crop_size
    labels = torch.ones(batch, num_foreground, device="meta")
    slots = optimizer_slots(cfg.cam.optimizer, cfg.cam.momentum, cfg.cam.weight_decay)
    objective = CamObjective(model, cfg.cam)
    return estimate_training_memory(model, objective, (_images(batch, crop, crop), labels), slots)


def aff_train_memory(cfg: Config) -> MemoryEstimate:
    model = _affinity_model(cfg)
    batch, crop = cfg.aff.batch_size, cfg.aff.crop_size
    images = _images(batch, crop, crop)
    with torch.no_grad():
        grid = model(images).shape[-2:]
    # The training labels come at stride output_stride; a mismatch is the objective's error.
    stride = cfg.model.output_stride
    labels = torch.zeros(batch, math.ceil(crop / stride), math.ceil(crop / stride),
                         dtype=torch.long, device="meta")
    if tuple(grid) != tuple(labels.shape[-2:]):
        raise SsenetError(
            f"config key aff.crop_size: {crop} gives a {tuple(grid)} feature grid but "
            f"{tuple(labels.shape[-2:])} label cells at stride {stride}; use a multiple of {stride}"
        )
    slots = optimizer_slots(cfg.aff.optimizer, cfg.aff.momentum, cfg.aff.weight_decay)
    objective = AffinityObjective(model, cfg.aff.radius)
    return estimate_training_memory(model, objective, (images, labels), slots)


def seg_train_memory(cfg: Config, num_classes: int) -> MemoryEstimate:
    model = _seg_model(cfg, num_classes)
    batch, crop = cfg.seg.batch_size, cfg.seg.crop_size
    labels = torch.zeros(batch, crop, crop, dtype=torch.long, device="meta")
    slots = optimizer_slots(cfg.seg.optimizer, cfg.seg.momentum, cfg.seg.weight_decay)
    objective = SegObjective(model)
    return estimate_training_memory(
        model, objective, (_images(batch, crop, crop), labels), slots
    )


def _scaled(size: tuple[int, int], scales: Sequence[float]) -> tuple[int, int]:
    top = max(scales)
    return max(1, round(size[0] * top)), max(1, round(size[1] * top))


def cam_infer_memory(cfg: Config, num_foreground: int, size: tuple[int, int]) -> MemoryEstimate:
    batch = cfg.cam.infer_batch * (2 if cfg.cam.infer_flip else 1)
    model = _cam_model(cfg, num_foreground)
    return estimate_inference_memory(model, _images(batch, *_scaled(size, cfg.cam.infer_scales)))


def rw_infer_memory(cfg: Config, size: tuple[int, int]) -> MemoryEstimate:
    """AffinityNet's features of a batch of cam.infer_batch images, as the stage batches them."""
    stride = cfg.model.output_stride
    padded = [math.ceil(side / stride) * stride for side in size]
    images = _images(cfg.cam.infer_batch, *padded)
    return estimate_inference_memory(_affinity_model(cfg), images)


def seg_infer_memory(cfg: Config, num_classes: int, size: tuple[int, int]) -> MemoryEstimate:
    batch = cfg.seg.infer_batch * (2 if cfg.seg.infer_flip else 1)
    model = _seg_model(cfg, num_classes)
    return estimate_inference_memory(model, _images(batch, *_scaled(size, cfg.seg.infer_scales)))
