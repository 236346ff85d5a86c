"""Stage 1: train the CAM network (baseline or SSENet) and infer multi-scale CAMs."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ssenet.camfile import cams_to_label, load_cams, save_cams
from ssenet.config import CamConfig, Config
from ssenet.data.datasets import (
    CamTrainDataset,
    ImageListDataset,
    SegmentationDataset,
    image_size,
)
from ssenet.data.palette import write_label_png
from ssenet.data.source import open_split
from ssenet.data.transforms import CamTrainTransform
from ssenet.equivariance import EquivarianceTransform, consistency_loss
from ssenet.models import build_cam_model, load_weights
from ssenet.multiscale import merge_flips, scaled_batches
from ssenet.provenance import config_values, is_current, stamp, weights_stamp
from ssenet.runtime import (
    autocast,
    inference_batch_size,
    memory_format,
    select_device,
    set_threads,
)
from ssenet.trainer import FitResult, finished, fit, make_loader, prepare_training


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


def train_cam(cfg: Config, out_dir: str | Path, progress: bool = True) -> FitResult:
    """Train the CAM network into `out_dir` (model.pth, train.json, checkpoints/, tb/).

    Resumable: see `ssenet.trainer.fit`.
    """
    out_dir = Path(out_dir)
    dataset = open_split(cfg.data, cfg.data.train_list)
    # The image-level labels are part of the digest: an edited mask is other training data.
    labels = stamp(*((i, dataset.labels(i).tolist()) for i in dataset.ids))
    digest = cfg.digest("data", "model", "cam") + "-" + labels[:12]
    done = finished(out_dir, digest)
    if done is not None:
        return done
    device, info = prepare_training(cfg.run)
    model = build_cam_from_config(cfg, dataset.num_foreground).to(device)
    model = memory_format(model, cfg.run.channels_last)
    transform = CamTrainTransform(
        resize_long=cfg.cam.resize_long,
        crop_size=cfg.cam.crop_size,
        hflip=cfg.cam.hflip,
        color_jitter=cfg.cam.color_jitter,
        mean=model.backbone.mean,
        std=model.backbone.std,
    )
    train_set = CamTrainDataset(dataset, transform, seed=cfg.run.seed)
    loader = make_loader(train_set, cfg.cam.batch_size, cfg.run.num_workers, info, cfg.run.seed)
    return fit(
        name=f"cam {cfg.cam.method}",
        model=model,
        objective=CamObjective(model, cfg.cam),
        loader=loader,
        optim_cfg=cfg.cam,
        epochs=cfg.cam.epochs,
        out_dir=out_dir,
        digest=digest,
        device=device,
        info=info,
        amp=cfg.run.amp,
        channels_last=cfg.run.channels_last,
        seed=cfg.run.seed,
        progress=progress,
    )


def load_cam_model(cfg: Config, weights: str | Path, num_classes: int) -> nn.Module:
    """Build the configured CAM network and load trained weights (strict) for inference."""
    model = configured_cam_model(cfg, num_classes, pretrained=False)
    load_weights(model, weights)
    return memory_format(model, cfg.run.channels_last).eval()


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
    device = next(model.parameters()).device
    height, width = images.shape[1:3]
    total = None
    for scaled in scaled_batches(images, scales, flip, model.backbone.mean, model.backbone.std,
                                 device):
        with autocast(device, amp):
            cam = model(scaled)
        cam = F.interpolate(F.relu(cam.float()), size=(height, width), mode="bilinear")
        cam = merge_flips(cam, flip)
        total = cam if total is None else total + cam
    return total


def normalized_present_cams(
    summed: torch.Tensor, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Keep the image's classes and divide each map by its max + 1e-5: ((k, H, W), keys 1..K)."""
    present = np.flatnonzero(labels > 0.5)
    cams = summed[torch.as_tensor(present, dtype=torch.long)].cpu().numpy().astype(np.float32)
    if len(present):
        cams /= cams.reshape(len(present), -1).max(axis=1).reshape(-1, 1, 1) + 1e-5
    return cams, (present + 1).astype(np.int64)


def first_item(items: list) -> object:
    """The collate function of a batch of one; a module-level function (not a lambda) so that
    data-loader workers started with spawn (macOS, Windows) can pickle it."""
    return items[0]


def same_size_batches(
    dataset: SegmentationDataset,
    ids: Sequence[str],
    batch_size: int,
    num_workers: int = 0,
    progress: bool = False,
    desc: str = "images",
    groups: Sequence[int] | None = None,
) -> Iterator[list[tuple[str, torch.Tensor, np.ndarray]]]:
    """Group consecutive images of equal size into batches of (id, uint8 image, labels); with
    `groups` (one number per id), never across a change of group either."""
    subset = dataset.subset(list(ids))
    loader = DataLoader(
        ImageListDataset(subset),
        batch_size=1,
        num_workers=num_workers,
        collate_fn=first_item,
    )
    pending: list[tuple[str, torch.Tensor, np.ndarray]] = []
    group = None
    for image, labels, index in tqdm(loader, desc=desc, disable=not progress, leave=False):
        new_group = groups[index] if groups is not None else None
        if pending and (len(pending) == batch_size or pending[0][1].shape != image.shape
                        or new_group != group):  # fmt: skip
            yield pending
            pending = []
        group = new_group
        pending.append((subset.ids[index], image, np.asarray(labels)))
    if pending:
        yield pending


def resumable_batches(
    dataset: SegmentationDataset,
    ids: Sequence[str],
    todo: Sequence[str],
    batch_size: int,
    num_workers: int = 0,
    progress: bool = False,
    desc: str = "images",
) -> Iterator[list[tuple[str, torch.Tensor, np.ndarray]]]:
    """The batches `same_size_batches` makes of all of `ids` that hold an image of `todo`.

    A resumed run then gives every image the same forward-pass companions as an uninterrupted
    one (results depend on them by about 1e-6), so its outputs are bit-identical; the done
    images of such a batch are computed again and rewritten with the same bytes. Image sizes
    come from the file headers.
    """
    wanted = set(todo)
    if len(wanted) == len(ids):
        yield from same_size_batches(dataset, ids, batch_size, num_workers, progress, desc)
        return
    batches: list[list[str]] = []
    last_size = None
    for image_id in ids:
        size = image_size(dataset.image_path(image_id))
        if not batches or len(batches[-1]) == batch_size or size != last_size:
            batches.append([])
        batches[-1].append(image_id)
        last_size = size
    chosen = [b for b in batches if wanted.intersection(b)]
    flat = [image_id for b in chosen for image_id in b]
    groups = [n for n, b in enumerate(chosen) for _ in b]
    yield from same_size_batches(dataset, flat, batch_size, num_workers, progress, desc, groups)


def memory_safe_cams(
    model: nn.Module, images: torch.Tensor, scales: Sequence[float], flip: bool, amp: str
) -> torch.Tensor:
    """`multiscale_cams` of a batch, in fewer images per pass on a GPU when the largest scale
    would not fit in free memory; results do not depend on how a batch is split."""
    return torch.cat([
        multiscale_cams(model, chunk, scales, flip, amp)
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
        s: torch.cat([multiscale_cams(model, chunk, (s,), flip, amp) for chunk in chunks])
        for s in dict.fromkeys(scales)
    }


def sum_scales(per_scale: dict[float, torch.Tensor], scales: Sequence[float]) -> torch.Tensor:
    """The multi-scale CAM: the per-scale CAMs added in the order `multiscale_cams` adds them."""
    total = None
    for s in scales:
        total = per_scale[s] if total is None else total + per_scale[s]
    return total


def iter_cams(
    model: nn.Module,
    dataset: SegmentationDataset,
    ids: Sequence[str],
    scales: Sequence[float],
    flip: bool,
    batch_size: int = 4,
    amp: str = "off",
    num_workers: int = 0,
    progress: bool = False,
    desc: str = "cam",
    todo: Sequence[str] | None = None,
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Yield (id, cams (k, H, W), keys) per image, several same-size images per forward pass;
    with `todo`, only the batches holding one of those (see `resumable_batches`)."""
    batches = resumable_batches(dataset, ids, todo or ids, batch_size, num_workers, progress, desc)
    for batch in batches:
        images = torch.stack([image for _, image, _ in batch])
        summed = memory_safe_cams(model, images, scales, flip, amp)
        for (image_id, _, labels), maps in zip(batch, summed, strict=True):
            cams, keys = normalized_present_cams(maps, labels)
            yield image_id, cams, keys


def iter_single_scale_cams(
    model: nn.Module,
    dataset: SegmentationDataset,
    ids: Sequence[str],
    scales: Sequence[float],
    flip: bool,
    batch_size: int = 4,
    amp: str = "off",
    num_workers: int = 0,
    progress: bool = False,
    desc: str = "scales",
    todo: Sequence[str] | None = None,
) -> Iterator[tuple[str, np.ndarray, dict[float, torch.Tensor]]]:
    """Yield (id, labels, {scale: summed CAMs (K, H, W)}), each scale tested on its own (with
    flip), so single-scale figures and their agreement need one pass over the list."""
    batches = resumable_batches(dataset, ids, todo or ids, batch_size, num_workers, progress, desc)
    for batch in batches:
        images = torch.stack([image for _, image, _ in batch])
        per_scale = per_scale_cams(model, images, scales, flip, amp)
        for index, (image_id, _, labels) in enumerate(batch):
            yield image_id, labels, {s: maps[index] for s, maps in per_scale.items()}


@torch.no_grad()
def classifier_scores(
    model: nn.Module, dataset: SegmentationDataset, ids: Sequence[str], batch_size: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """Image-level logits (GAP of the CAM at scale 1, as in training) and targets, (N, K) each."""
    device = next(model.parameters()).device
    mean = torch.tensor(model.backbone.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(model.backbone.std, device=device).view(1, 3, 1, 1)
    scores, targets = [], []
    for batch in same_size_batches(dataset, ids, batch_size):
        images = torch.stack([image for _, image, _ in batch]).to(device)
        pixels = (images.permute(0, 3, 1, 2).float() / 255.0 - mean) / std
        scores.append(upsampled_cam(model, pixels).mean(dim=(2, 3)).cpu().numpy())
        targets.extend(labels for _, _, labels in batch)
    return np.concatenate(scores), np.stack(targets)


SingleScaleSink = Callable[[str, dict[float, tuple[np.ndarray, np.ndarray]]], None]


def infer_cams(
    cfg: Config,
    weights: str | Path,
    out_dir: str | Path,
    list_name: str | None = None,
    shard: tuple[int, int] = (0, 1),
    progress: bool = True,
    single_scales: Sequence[float] = (),
    on_single_scales: SingleScaleSink | None = None,
) -> dict:
    """Write `cams/<id>.npz` and the alpha pseudo label `labels/<id>.png` for every image.

    Images whose two files exist with the stamp they would get now (`ssenet.provenance`) are
    skipped, so a rerun finishes an interrupted one and a changed setting remakes what it
    changes (a new `cam.alpha` only the labels, from the saved CAMs). With
    `shard=(k, n)` only every n-th image from the k-th is processed: shards are disjoint.
    With `on_single_scales`, each computed image's normalised CAMs at every one of
    `single_scales` alone, {scale: (cams, keys)}, are handed to it too, from the same forward
    passes when those scales are among `cam.infer_scales` (the multi-scale CAMs are unchanged).
    """
    out_dir = Path(out_dir)
    dataset = open_split(cfg.data, list_name or cfg.data.infer_list)
    ids = list(dataset.ids)[shard[0] :: shard[1]]
    cam_dir, label_dir = out_dir / "cams", out_dir / "labels"
    base = cam_file_stamp(cfg, weights)  # per image, with its classes: an edited mask counts
    cams_stamp = {i: stamp(base, dataset.labels(i).tolist()) for i in ids}
    label_stamp = {i: stamp("cam labels", cams_stamp[i], cfg.cam.alpha) for i in ids}
    current = {i for i in ids if is_current(cam_dir / f"{i}.npz", cams_stamp[i])}
    todo = [i for i in ids if i not in current]
    relabel = [  # CAMs still current, labels not (cam.alpha changed): no forward pass needed
        i for i in ids if i in current and not is_current(label_dir / f"{i}.png", label_stamp[i])
    ]
    for image_id in relabel:
        cams, keys = load_cams(cam_dir / f"{image_id}.npz")
        write_label_png(label_dir / f"{image_id}.png", cams_to_label(cams, keys, cfg.cam.alpha),
                        label_stamp[image_id])  # fmt: skip
    device = select_device(cfg.run.device)
    set_threads(cfg.run.threads)
    if todo:
        model = load_cam_model(cfg, weights, dataset.num_foreground).to(device)
        for image_id, cams, keys, singles in computed_cams(
            cfg, model, dataset, ids, todo, single_scales if on_single_scales else (), progress
        ):
            save_cams(cam_dir / f"{image_id}.npz", cams, keys, cams_stamp[image_id])
            label = cams_to_label(cams, keys, cfg.cam.alpha)
            write_label_png(label_dir / f"{image_id}.png", label, label_stamp[image_id])
            if on_single_scales is not None:
                on_single_scales(image_id, singles)
    return {
        "images": len(ids),
        "computed": len(todo),
        "relabelled": len(relabel),
        "cam_dir": str(cam_dir),
    }


def cam_file_stamp(cfg: Config, weights: str | Path) -> str:
    """The `made_from` stamp of CAM files: the network and every setting that decides them."""
    keys = "data.kind data.root cam.infer_scales cam.infer_flip run.amp"
    return stamp("cams", weights_stamp(weights), config_values(cfg, keys))


def computed_cams(
    cfg: Config,
    model: nn.Module,
    dataset: SegmentationDataset,
    ids: Sequence[str],
    todo: Sequence[str],
    single_scales: Sequence[float],
    progress: bool,
) -> Iterator[tuple[str, np.ndarray, np.ndarray, dict[float, tuple[np.ndarray, np.ndarray]]]]:
    """(id, cams, keys, {scale: (cams, keys)}) per image of the batches of `ids` holding one of
    `todo`; the last is empty without scales."""
    cam = cfg.cam
    if not single_scales:
        for image_id, cams, keys in iter_cams(
            model, dataset, ids, cam.infer_scales, cam.infer_flip, cam.infer_batch, cfg.run.amp,
            cfg.run.num_workers, progress, desc="infer cam", todo=todo,
        ):  # fmt: skip
            yield image_id, cams, keys, {}
        return
    scales = (*cam.infer_scales, *single_scales)
    for image_id, labels, per_scale in iter_single_scale_cams(
        model, dataset, ids, scales, cam.infer_flip, cam.infer_batch, cfg.run.amp,
        cfg.run.num_workers, progress, desc="infer cam", todo=todo,
    ):  # fmt: skip
        cams, keys = normalized_present_cams(sum_scales(per_scale, cam.infer_scales), labels)
        singles = {s: normalized_present_cams(per_scale[s], labels) for s in single_scales}
        yield image_id, cams, keys, singles
