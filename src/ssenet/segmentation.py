"""Stage 5: a DeepLab segmentation network trained on the pseudo labels, and its inference.

None of the reference repositories ship this step; the recipe is the usual DeepLab one: the
configured backbone with a DeepLab-v2 ASPP (a sum of dilated 3x3 convs) or torchvision's
DeepLab-v3 head, cross entropy ignoring 255, poly lr, random scale / crop / flip; at test time
multi-scale + flip softmax averaging and an optional dense CRF.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ssenet.cam import resumable_batches
from ssenet.config import Config, ModelConfig
from ssenet.data.datasets import SeededAugmentation, SegmentationDataset, mask_classes
from ssenet.data.palette import IGNORE_INDEX, read_label_png, write_label_png
from ssenet.data.source import open_split
from ssenet.data.transforms import JointTrainTransform
from ssenet.errors import SsenetError
from ssenet.models import build_backbone, load_weights
from ssenet.multiscale import merge_flips, scaled_batches
from ssenet.provenance import config_values, is_current, stamp, weights_stamp
from ssenet.runtime import (
    autocast,
    memory_format,
    select_device,
    set_threads,
)
from ssenet.trainer import FitResult, finished, fit, make_loader, prepare_training

HEADS = ("deeplabv2", "deeplabv3")

Groups = tuple[list[nn.Parameter], list[nn.Parameter], list[nn.Parameter], list[nn.Parameter]]

# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


class DeepLabV2Head(nn.Module):
    """DeepLab-v2 ASPP: parallel dilated 3x3 convs straight to class scores, summed.

    Initialised as DeepLab v2's classifier: weights N(0, 0.01), biases 0.
    """

    def __init__(self, in_ch: int, num_classes: int, rates: Sequence[int] = (6, 12, 18, 24)):
        super().__init__()
        if not rates:
            raise SsenetError("DeepLabV2Head: at least one dilation rate is needed")
        self.branches = nn.ModuleList(
            nn.Conv2d(in_ch, num_classes, 3, padding=rate, dilation=rate) for rate in rates
        )
        for conv in self.branches:
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branches[0](x)
        for conv in self.branches[1:]:
            out = out + conv(x)
        return out


class SegmentationNet(nn.Module):
    """Backbone + head: `forward(x)` gives class logits (B, C, H/stride, W/stride)."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def parameter_groups(self) -> Groups:
        """(backbone weights, backbone biases, head weights, head biases), trainable only.

        Like the other stages, parameters named `*bias` are biases (2x / 20x lr, no decay);
        the DeepLab-v3 head's BatchNorm scales count as weights.
        """
        weights, biases = self.backbone.split_parameters()
        head = [(name, p) for name, p in self.head.named_parameters() if p.requires_grad]
        head_weights = [p for name, p in head if not name.endswith("bias")]
        head_biases = [p for name, p in head if name.endswith("bias")]
        return list(weights), list(biases), head_weights, head_biases


def build_head(head: str, in_ch: int, num_classes: int) -> nn.Module:
    """A head by name: deeplabv2 (ASPP, rates 6/12/18/24) or deeplabv3 (torchvision)."""
    if head == "deeplabv2":
        return DeepLabV2Head(in_ch, num_classes)
    if head == "deeplabv3":
        from torchvision.models.segmentation.deeplabv3 import DeepLabHead

        return DeepLabHead(in_ch, num_classes)
    raise SsenetError(f"config key seg.head: {head!r} is not one of {list(HEADS)}")


def build_seg_model(
    cfg_model: ModelConfig, head: str, num_classes: int, imagenet: bool = True
) -> SegmentationNet:
    """The configured backbone with a DeepLab head for `num_classes` (background included).

    With `imagenet=True` the backbone starts from its ImageNet weights (the packaged ones, or
    `model.weights`); pass False when trained weights are loaded next.
    """
    backbone = build_backbone(
        name=cfg_model.backbone,
        width=cfg_model.width,
        output_stride=cfg_model.output_stride,
        pretrained=imagenet and cfg_model.pretrained and cfg_model.weights is None,
        freeze_bn=cfg_model.freeze_bn,
    )
    if imagenet and cfg_model.weights:
        load_weights(backbone, cfg_model.weights)
    return SegmentationNet(backbone, build_head(head, backbone.out_channels, num_classes))


def load_seg_model(cfg: Config, weights: str | Path, num_classes: int) -> SegmentationNet:
    """The configured segmentation network with trained weights (strict), in eval mode."""
    model = build_seg_model(cfg.model, cfg.seg.head, num_classes, imagenet=False)
    load_weights(model, weights)
    return memory_format(model, cfg.run.channels_last).eval()


# ---------------------------------------------------------------------------------------------
# Training data and loss
# ---------------------------------------------------------------------------------------------


def check_label_files(label_dir: Path, ids: Sequence[str], list_name: str) -> None:
    """Every training image needs a pseudo label: name the count and the first missing file."""
    missing = [i for i in ids if not (label_dir / f"{i}.png").is_file()]
    if missing:
        raise SsenetError(
            f"{label_dir}: {len(missing)} of {len(ids)} images of list {list_name!r} have no "
            f"pseudo label (first: {label_dir / (missing[0] + '.png')}); make pseudo labels for "
            "the training list (seg.train_list, else data.train_list) first"
        )


def label_dir_digest(label_dir: Path, ids: Sequence[str]) -> str:
    """A hash of the training labels' contents, so new pseudo labels mean a new run."""
    sha = hashlib.sha1()
    for image_id in ids:
        sha.update(image_id.encode() + b"\0")
        sha.update((label_dir / f"{image_id}.png").read_bytes())
    return sha.hexdigest()[:12]


class PseudoLabelDataset(SeededAugmentation):
    """Augmented images and their pseudo labels: `(image (3, c, c), label (c, c) int64, index)`.

    Labels are `label_dir/<id>.png` (0 background, 1..K, 255 ignored); each item is seeded from
    (seed, epoch, index) like `CamTrainDataset`, so a run is reproducible whatever the workers.
    """

    def __init__(
        self,
        dataset: SegmentationDataset,
        label_dir: str | Path,
        transform: JointTrainTransform,
        seed: int = 0,
    ):
        super().__init__(dataset, transform, seed)
        self.label_dir = Path(label_dir)

    def read_label(self, image_id: str, image_shape: tuple[int, ...]) -> np.ndarray:
        """The checked pseudo label of `image_id`: its size and its class values."""
        path = self.label_dir / f"{image_id}.png"
        label = read_label_png(path)
        if label.shape != tuple(image_shape[:2]):
            raise SsenetError(
                f"{path}: pseudo label is {label.shape[1]}x{label.shape[0]} but its image "
                f"{self.dataset.image_path(image_id)} is {image_shape[1]}x{image_shape[0]} "
                "(width x height)"
            )
        mask_classes(label, self.dataset.num_foreground, path)
        return label

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        image_id = self.dataset.ids[index]
        image = self.dataset.read_image(image_id)
        label = self.read_label(image_id, image.shape)
        out_image, out_label = self.transform(
            image, label, generator=self.generator(index)
        )
        return out_image, out_label, index


def seg_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross entropy of logits upsampled (bilinear) to the label size, 255 ignored.

    A batch without any labelled pixel gives 0 (with a gradient) instead of NaN.
    """
    logits = F.interpolate(logits.float(), size=labels.shape[-2:], mode="bilinear")
    total = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (labels != IGNORE_INDEX).sum().clamp(min=1)


class SegObjective(nn.Module):
    """One forward per step for `fit`: the model's logits and the ignore-255 cross entropy."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": seg_loss(self.model(images), labels)}


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def _check_seg_config(cfg: Config) -> None:
    seg = cfg.seg
    for key in ("epochs", "batch_size", "crop_size"):
        if getattr(seg, key) < 1:
            raise SsenetError(f"config key seg.{key}: must be at least 1")
    if not 0 < seg.scale_range[0] <= seg.scale_range[1]:
        raise SsenetError(
            f"config key seg.scale_range: need 0 < low <= high, got {list(seg.scale_range)}"
        )
    if seg.head == "deeplabv3" and seg.batch_size < 2:
        # Its image-pooling branch has BatchNorm over a 1x1 map: one image per batch cannot train.
        raise SsenetError("config key seg.batch_size: the deeplabv3 head needs at least 2")


def train_seg(
    cfg: Config, label_dir: str | Path, out_dir: str | Path, progress: bool = True
) -> FitResult:
    """Train the segmentation network on `seg.train_list` (default `data.train_list`) with the
    pseudo labels `label_dir/<id>.png`; every image of the list must have one.

    Writes out_dir/model.pth, train.json, checkpoints/ and tb/; resumable (see
    `ssenet.trainer.fit`). The digest covers the data, model and seg sections and the contents
    of the training labels, so a checkpoint is never continued on other pseudo labels.
    """
    out_dir, label_dir = Path(out_dir), Path(label_dir)
    _check_seg_config(cfg)
    list_name = cfg.seg.train_list or cfg.data.train_list
    dataset = open_split(cfg.data, list_name)
    check_label_files(label_dir, dataset.ids, list_name)
    digest = cfg.digest("data", "model", "seg") + "-" + label_dir_digest(label_dir, dataset.ids)
    done = finished(out_dir, digest)
    if done is not None:
        return done
    device, info = prepare_training(cfg.run)
    model = build_seg_model(cfg.model, cfg.seg.head, dataset.num_classes).to(device)
    model = memory_format(model, cfg.run.channels_last)
    transform = JointTrainTransform(
        scale=cfg.seg.scale_range,
        crop_size=cfg.seg.crop_size,
        hflip=cfg.seg.hflip,
        mean=model.backbone.mean,
        std=model.backbone.std,
    )
    train_set = PseudoLabelDataset(dataset, label_dir, transform, seed=cfg.run.seed)
    loader = make_loader(train_set, cfg.seg.batch_size, cfg.run.num_workers, info, cfg.run.seed)
    return fit(
        name=f"seg {cfg.seg.head}",
        model=model,
        objective=SegObjective(model),
        loader=loader,
        optim_cfg=cfg.seg,
        epochs=cfg.seg.epochs,
        out_dir=out_dir,
        digest=digest,
        device=device,
        info=info,
        amp=cfg.run.amp,
        channels_last=cfg.run.channels_last,
        seed=cfg.run.seed,
        progress=progress,
    )


# ---------------------------------------------------------------------------------------------
# Inference
# ---------------------------------------------------------------------------------------------


def _check_infer_config(cfg: Config) -> None:
    if cfg.seg.infer_batch < 1:
        raise SsenetError("config key seg.infer_batch: must be at least 1")
    if not cfg.seg.infer_scales or min(cfg.seg.infer_scales) <= 0:
        raise SsenetError(
            f"config key seg.infer_scales: need positive scales, got {list(cfg.seg.infer_scales)}"
        )


def _crf_function():
    # Imported only when asked for: the CRF backends are optional and slow to import.
    from ssenet.crf import dense_crf

    return dense_crf


@torch.no_grad()
def multiscale_probs(
    model: nn.Module,
    images: torch.Tensor,
    scales: Sequence[float],
    flip: bool,
    amp: str = "off",
) -> torch.Tensor:
    """Class probabilities (B, C, H, W) of same-size uint8 images (B, H, W, 3).

    Each scale runs the batch and its flip as one pass; logits are upsampled (bilinear) to the
    original size, soft-maxed, un-flipped and averaged over every pass.
    """
    device = next(model.parameters()).device
    height, width = images.shape[1:3]
    total = None
    for scaled in scaled_batches(images, scales, flip, model.backbone.mean, model.backbone.std,
                                 device):
        with autocast(device, amp):
            logits = model(scaled)
        logits = F.interpolate(logits.float(), size=(height, width), mode="bilinear")
        probs = merge_flips(logits.softmax(dim=1), flip)
        total = probs if total is None else total + probs
    return total / (len(scales) * (2 if flip else 1))


def infer_seg(
    cfg: Config,
    weights: str | Path,
    out_dir: str | Path,
    list_name: str | None = None,
    shard: tuple[int, int] = (0, 1),
    progress: bool = True,
    dataset: SegmentationDataset | None = None,
    model: nn.Module | None = None,
) -> dict:
    """Write the predicted label map `out_dir/labels/<id>.png` (VOC palette) for every image.

    The list defaults to `cfg.data.val_list`. Multi-scale (`seg.infer_scales`) + flip softmax
    average, then the dense CRF when `seg.crf`. Labels with the stamp they would get now
    (`ssenet.provenance`) are skipped, so a rerun finishes an interrupted one and new weights or
    settings remake them; `shard=(k, n)` processes every n-th image from the k-th.
    No image-level labels are needed (VOC `test` has none); `dataset` (e.g. a folder's
    `open_images`) replaces the list, `model` is the network of `weights` already loaded.
    """
    _check_infer_config(cfg)
    out_dir = Path(out_dir)
    if dataset is None:
        dataset = open_split(cfg.data, list_name or cfg.data.val_list, image_labels=False)
    ids = list(dataset.ids)[shard[0] :: shard[1]]
    label_dir = out_dir / "labels"
    made_from = seg_label_stamp(cfg, weights)
    todo = [i for i in ids if not is_current(label_dir / f"{i}.png", made_from)]
    if todo:
        set_threads(cfg.run.threads)
        if model is None:
            device = select_device(cfg.run.device)
            model = load_seg_model(cfg, weights, dataset.num_classes).to(device)
        refine = _crf_function() if cfg.seg.crf else None
        batches = resumable_batches(
            dataset, ids, todo, cfg.seg.infer_batch, cfg.run.num_workers, progress, "infer seg"
        )
        for batch in batches:
            images = torch.stack([image for _, image, _ in batch])
            probs = multiscale_probs(
                model, images, cfg.seg.infer_scales, cfg.seg.infer_flip, cfg.run.amp
            )
            for (image_id, image, _), prob in zip(batch, probs.cpu().numpy(), strict=True):
                if refine is not None:
                    prob = refine(image.numpy(), prob, cfg.crf, backend=cfg.crf.backend)
                label = np.asarray(prob).argmax(axis=0).astype(np.uint8)
                write_label_png(label_dir / f"{image_id}.png", label, made_from)
    return {"images": len(ids), "computed": len(todo), "label_dir": str(label_dir)}


def seg_label_stamp(cfg: Config, weights: str | Path) -> str:
    """The `made_from` stamp of predicted labels: the network and the inference settings."""
    keys = "data.kind data.root seg.infer_scales seg.infer_flip seg.crf run.amp"
    crf = dataclasses.asdict(cfg.crf) if cfg.seg.crf else None
    return stamp("seg", weights_stamp(weights), config_values(cfg, keys), crf)
