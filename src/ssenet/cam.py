"""The CAM network's objective (baseline, or SSENet's two branches with the SER term) and
multi-scale + flip CAM inference; the stage that trains and runs it: `ssenet.stages.s1_cam`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ssenet.config import CamConfig
from ssenet.data.datasets import (
    SegmentationDataset,
)
from ssenet.equivariance import EquivarianceTransform, consistency_loss
from ssenet.inference import resumable_batches, same_size_batches
from ssenet.multiscale import normalized_pixels, summed_over_passes
from ssenet.runtime import (
    halving_on_oom,
    inference_batch_size,
)


def upsampled_cam(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The CAM bilinearly upsampled to the input size, as the reference trains it."""
    cam = model(images)
    return F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)


@contextmanager
def frozen_running_stats(model: nn.Module) -> Iterator[None]:
    """BatchNorm layers still normalise with batch statistics but keep their running averages.

    With trainable BatchNorm (`model.freeze_bn: false`) the second branch sees images r times
    smaller, whose statistics differ; letting them into the running averages would make inference
    on full-size images use a mixture. The reference freezes BatchNorm, so it never meets this.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for norm in norms:
        norm.momentum = 0.0  # running = (1 - 0) * running + 0 * batch
    try:
        yield
    finally:
        for norm, momentum in zip(norms, saved, strict=True):
            norm.momentum = momentum


class CamObjective(nn.Module):
    """One forward computes every loss term of a step, so DDP sees a single forward per step.

    Baseline: `cls`. SSENet: `(cls + cls_t) / 2 + eta * R`, where the second branch sees the
    transformed image and R compares its CAM with the transformed CAM of the first branch.
    """

    def __init__(self, model: nn.Module, cfg: CamConfig):
        super().__init__()
        self.model = model
        self.method = cfg.method
        self.eta = cfg.eta
        self.transform = EquivarianceTransform(cfg.transform, cfg.branch_rate)
        self.branch_bn_stats = cfg.branch_bn_stats

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        cam = upsampled_cam(self.model, images)
        cls = F.multilabel_soft_margin_loss(cam.mean(dim=(2, 3)), labels)
        if self.method == "baseline":
            return {"loss": cls, "cls": cls}
        with contextlib.nullcontext() if self.branch_bn_stats else frozen_running_stats(self.model):
            cam_t = upsampled_cam(self.model, self.transform(images))
        cls_t = F.multilabel_soft_margin_loss(cam_t.mean(dim=(2, 3)), labels)
        reg = consistency_loss(cam_t, self.transform(cam), labels)
        loss = (cls + cls_t) / 2 + self.eta * reg
        return {"loss": loss, "cls": cls, "cls_t": cls_t, "ser": reg}


@torch.no_grad()
def multiscale_cams(
    model: nn.Module,
    images: torch.Tensor,
    scales: Sequence[float],
    flip: bool,
    amp: str = "off",
) -> torch.Tensor:
    """Summed CAMs (B, K, H, W) of a batch of same-size uint8 images (B, H, W, 3).

    Each scale runs the batch and its horizontal flip as one forward pass: relu, bilinear
    upsampling to the original size, un-flip, sum -- the reference's inference recipe.
    """

    def relu_upsampled(cam: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return F.interpolate(F.relu(cam), size=size, mode="bilinear")

    return summed_over_passes(model, images, scales, flip, amp, relu_upsampled)


def normalized_present_cams(
    summed: torch.Tensor, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Keep the image's classes and divide each map by its max + 1e-5: ((k, H, W), keys 1..K)."""
    present = np.flatnonzero(labels > 0.5)
    cams = summed[torch.as_tensor(present, dtype=torch.long)].cpu().numpy().astype(np.float32)
    if len(present):
        cams /= cams.reshape(len(present), -1).max(axis=1).reshape(-1, 1, 1) + 1e-5
    return cams, (present + 1).astype(np.int64)


def memory_safe_cams(
    model: nn.Module, images: torch.Tensor, scales: Sequence[float], flip: bool, amp: str
) -> torch.Tensor:
    """`multiscale_cams` of a batch, in fewer images per pass on a GPU when the largest scale
    would not fit in free memory; results do not depend on how a batch is split."""
    return torch.cat([
        halving_on_oom(lambda part: multiscale_cams(model, part, scales, flip, amp), chunk,
                       "CAM inference")  # fmt: skip
        for chunk in memory_safe_chunks(model, images, scales, flip)
    ])


def memory_safe_chunks(
    model: nn.Module, images: torch.Tensor, scales: Sequence[float], flip: bool
) -> list[torch.Tensor]:
    """The batch split into as many images per pass as the largest scale fits in memory."""
    device = next(model.parameters()).device
    step = inference_batch_size(len(images), tuple(images.shape[1:3]), scales, device, flip=flip)
    return [images[i : i + step] for i in range(0, len(images), step)]


def per_scale_cams(
    model: nn.Module, images: torch.Tensor, scales: Sequence[float], flip: bool, amp: str
) -> dict[float, torch.Tensor]:
    """{scale: (B, K, H, W) CAMs of that scale alone}; summing them in `infer_scales` order gives
    `memory_safe_cams` bit for bit, so one pass can serve multi- and single-scale tests."""
    chunks = memory_safe_chunks(model, images, scales, flip)
    return {
        s: torch.cat([
            halving_on_oom(lambda part, s=s: multiscale_cams(model, part, (s,), flip, amp),
                           chunk, "CAM inference")  # fmt: skip
            for chunk in chunks
        ])
        for s in dict.fromkeys(scales)
    }


def sum_scales(per_scale: dict[float, torch.Tensor], scales: Sequence[float]) -> torch.Tensor:
    """The multi-scale CAM: the per-scale CAMs added in the order `multiscale_cams` adds them."""
    total = None
    for s in scales:
        total = per_scale[s] if total is None else total + per_scale[s]
    return total


@dataclass(frozen=True)
class CamInference:
    """How a list of images is tested: at `scales` (with their mirrors when `flip`),
    `batch_size` same-size images a forward pass, under `amp`, read by `num_workers` loader
    processes, with a progress bar labelled `desc` when `progress` ("" takes the label of the
    iterator it is given to)."""

    scales: Sequence[float]
    flip: bool
    batch_size: int = 4
    amp: str = "off"
    num_workers: int = 0
    progress: bool = False
    desc: str = ""

    def batches(
        self, dataset: SegmentationDataset, ids: Sequence[str], todo: Sequence[str] | None
    ) -> Iterator[tuple[list, torch.Tensor]]:
        """Each batch of `ids` (see `resumable_batches`; with `todo`, only those holding one of
        its images) with its images stacked into one (B, H, W, 3) tensor."""
        batches = resumable_batches(dataset, ids, todo or ids, self.batch_size, self.num_workers,
                                    self.progress, self.desc)  # fmt: skip
        for batch in batches:
            yield batch, torch.stack([image for _, image, _ in batch])


def iter_cams(
    model: nn.Module,
    dataset: SegmentationDataset,
    ids: Sequence[str],
    run: CamInference,
    todo: Sequence[str] | None = None,
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Yield (id, cams (k, H, W), keys) per image, several same-size images per forward pass,
    as `run` says; with `todo`, only the batches holding one of those (see
    `resumable_batches`)."""
    run = run if run.desc else replace(run, desc="cam")
    for batch, images in run.batches(dataset, ids, todo):
        summed = memory_safe_cams(model, images, run.scales, run.flip, run.amp)
        for (image_id, _, labels), maps in zip(batch, summed, strict=True):
            cams, keys = normalized_present_cams(maps, labels)
            yield image_id, cams, keys


def iter_single_scale_cams(
    model: nn.Module,
    dataset: SegmentationDataset,
    ids: Sequence[str],
    run: CamInference,
    todo: Sequence[str] | None = None,
) -> Iterator[tuple[str, np.ndarray, dict[float, torch.Tensor]]]:
    """Yield (id, labels, {scale: summed CAMs (K, H, W)}), each scale of `run` tested on its own
    (with flip), so single-scale figures and their agreement need one pass over the list.
    Arguments as in `iter_cams`."""
    run = run if run.desc else replace(run, desc="scales")
    for batch, images in run.batches(dataset, ids, todo):
        per_scale = per_scale_cams(model, images, run.scales, run.flip, run.amp)
        for index, (image_id, _, labels) in enumerate(batch):
            yield image_id, labels, {s: maps[index] for s, maps in per_scale.items()}


@torch.no_grad()
def classifier_scores(
    model: nn.Module, dataset: SegmentationDataset, ids: Sequence[str], batch_size: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """Image-level logits (GAP of the CAM at scale 1, as in training) and targets, (N, K) each."""
    device = next(model.parameters()).device
    scores, targets = [], []
    for batch in same_size_batches(dataset, ids, batch_size):
        images = torch.stack([image for _, image, _ in batch])
        pixels = normalized_pixels(images, model.backbone.mean, model.backbone.std, device)
        scores.append(upsampled_cam(model, pixels).mean(dim=(2, 3)).cpu().numpy())
        targets.extend(labels for _, _, labels in batch)
    return np.concatenate(scores), np.stack(targets)


