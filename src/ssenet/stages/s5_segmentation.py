"""Stage 5: train DeepLab on the pseudo labels of the refiner the config names
(`refine.method`: the random walk's by default), predict the held-out list, score it.

None of the reference repositories ship this step; the recipe is the usual DeepLab one:
cross entropy ignoring 255, poly lr, random scale / crop / flip; at test time multi-scale +
flip softmax averaging and an optional dense CRF."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from ssenet.config import Config
from ssenet.data.datasets import SegmentationDataset
from ssenet.data.palette import write_label_png
from ssenet.data.source import open_split
from ssenet.errors import SsenetError
from ssenet.inference import (
    DEFAULT_JOB,
    ListJob,
    image_work,
    owned_images,
    require_inputs,
    work_batches,
)
from ssenet.models.configured import load_seg_model
from ssenet.models.deeplab import build_seg_model
from ssenet.provenance import config_values, image_stamp, is_current, stamp, weights_stamp
from ssenet.runtime import halving_on_oom, rank_shard, select_device, set_threads, sync_ranks
from ssenet.segmentation import SegObjective, multiscale_probs
from ssenet.stages.common import score_labels, seg_train_list
from ssenet.stages.layout import RunLayout
from ssenet.stages.registry import Stage, pseudo_label_stage, pseudo_labels
from ssenet.stages.training import (
    network_plan_rows,
    pseudo_label_train_set,
    train_section_network,
)
from ssenet.trainer import FitResult

if TYPE_CHECKING:
    from ssenet.dryrun.plan import PlanInputs, PlanRow


def label_dir_digest(label_dir: Path, ids: Sequence[str]) -> str:
    """A hash of the training labels' contents, so new pseudo labels mean a new run."""
    sha = hashlib.sha1()
    for image_id in ids:
        sha.update(image_id.encode() + b"\0")
        sha.update((label_dir / f"{image_id}.png").read_bytes())
    return sha.hexdigest()[:12]


def _check_seg_config(cfg: Config) -> None:
    seg = cfg.seg
    for key in ("epochs", "batch_size", "crop_size"):
        if getattr(seg, key) < 1:
            raise SsenetError(f"config key seg.{key}: must be at least 1")
    errors = check(cfg, int(os.environ.get("WORLD_SIZE", 1)))
    if errors:
        raise SsenetError(errors[0])


def check(cfg: Config, world_size: int) -> list[str]:
    """The settings training stops on that `validate` leaves to this stage (the dry run shows
    them up front)."""
    low, high = cfg.seg.scale_range
    errors = []
    if not 0 < low <= high:
        errors.append(f"config key seg.scale_range: need 0 < low <= high, got {[low, high]}")
    error = pooling_batch_error(cfg.seg, world_size)
    return errors + [error] if error else errors


def pooling_batch_error(seg, world_size: int) -> str | None:
    """deeplabv3's image-pooling branch has a BatchNorm over a 1x1 map: it needs 2 images in
    its batch, which SyncBatchNorm gathers over every process (`seg` is the config's section)."""
    if seg.head != "deeplabv3" or seg.batch_size * world_size >= 2:
        return None
    return ("config key seg.batch_size: the deeplabv3 head needs at least 2 images a step "
            f"over all processes, got {seg.batch_size} x {world_size}")  # fmt: skip


def train_seg(
    cfg: Config, label_dir: str | Path, out_dir: str | Path, progress: bool = True
) -> FitResult:
    """Train the segmentation network on `seg.train_list` (default `data.train_list`) with the
    pseudo labels `label_dir/<id>.png`; every image of the list must have one.

    Writes out_dir/model.pth, train.json, checkpoints/ and tb/; resumable (see
    `ssenet.trainer.fit`). The digest covers the data, model and seg sections and the contents
    of the training labels, so a checkpoint is never continued on other pseudo labels.
    """
    label_dir = Path(label_dir)
    _check_seg_config(cfg)
    list_name = seg_train_list(cfg)
    dataset = open_split(cfg.data, list_name)
    require_inputs(label_dir, dataset.ids, ".png", f"pseudo label (list {list_name!r})",
                   "make pseudo labels for the training list (seg.train_list, else "
                   "data.train_list) first")  # fmt: skip
    seg = cfg.seg
    return train_section_network(
        cfg, "seg", f"seg {seg.head}", out_dir, label_dir_digest(label_dir, dataset.ids),
        build=lambda: build_seg_model(cfg.model, seg.head, dataset.num_classes),
        dataset=pseudo_label_train_set(dataset, label_dir, seg, cfg.run.seed),
        objective=SegObjective,
        progress=progress,
    )  # fmt: skip


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


def infer_seg(
    cfg: Config,
    weights: str | Path,
    out_dir: str | Path,
    job: ListJob = DEFAULT_JOB,
    dataset: SegmentationDataset | None = None,
    model: nn.Module | None = None,
) -> dict:
    """Write the predicted label map `out_dir/labels/<id>.png` (VOC palette) for every image.

    `job`: the list (default data.val_list), the shard and the progress bar. Multi-scale
    (`seg.infer_scales`) + flip softmax average, then the dense CRF when `seg.crf`. Labels with
    the stamp they would get now (`ssenet.provenance`) are skipped, so a rerun finishes an
    interrupted one and new weights or settings remake them. No image-level labels are needed
    (VOC `test` has none); `dataset` (e.g. a folder's `open_images`) replaces the list, `model`
    is the network of `weights` already loaded.
    """
    _check_infer_config(cfg)
    label_dir = Path(out_dir) / "labels"
    list_name, shard, progress = job.named(cfg.data.val_list)
    dataset, ids = owned_images(cfg, list_name, shard, dataset, image_labels=False)
    base = seg_label_stamp(cfg, weights)  # per image, with the image's size: another image counts
    made_from = {i: stamp(base, image_stamp(dataset.image_path(i))) for i in ids}
    work = image_work(cfg, list_name, shard,
                      lambda i: is_current(label_dir / f"{i}.png", made_from[i]), dataset,
                      image_labels=False)  # fmt: skip
    if work.todo:
        set_threads(cfg.run.threads)
        if model is None:
            device = select_device(cfg.run.device)
            model = load_seg_model(cfg, weights, work.dataset.num_classes).to(device)
        refine = _crf_function() if cfg.seg.crf else None
        for batch in work_batches(cfg, work, cfg.seg.infer_batch, "infer seg", progress):
            images = torch.stack([image for _, image, _ in batch])
            probs = halving_on_oom(
                lambda part: multiscale_probs(
                    model, part, cfg.seg.infer_scales, cfg.seg.infer_flip, cfg.run.amp
                ),
                images, "segmentation inference",
            )  # fmt: skip
            for (image_id, image, _), prob in zip(batch, probs.cpu().numpy(), strict=True):
                if refine is not None:
                    # the torch backend runs where the network does (pydensecrf: the CPU)
                    prob = refine(image.numpy(), prob, cfg.crf, backend=cfg.crf.backend,
                                  device=next(model.parameters()).device)  # fmt: skip
                label = np.asarray(prob).argmax(axis=0).astype(np.uint8)
                write_label_png(label_dir / f"{image_id}.png", label, made_from[image_id])
    return work.counts(label_dir=str(label_dir))


def seg_label_stamp(cfg: Config, weights: str | Path) -> str:
    """The `made_from` stamp of predicted labels: the network and the inference settings."""
    keys = "data.kind seg.infer_scales seg.infer_flip seg.crf run.amp"
    crf = dataclasses.asdict(cfg.crf) if cfg.seg.crf else None
    return stamp("seg", weights_stamp(weights), config_values(cfg, keys), crf)


def run(cfg: Config, layout: RunLayout, progress: bool = True) -> dict:
    """Train DeepLab on refine.method's pseudo labels, predict the held-out list, score it."""
    seg_dir = layout.stage("seg")
    labels = layout.labels(pseudo_label_stage(cfg))
    trained = train_seg(cfg, labels, seg_dir, progress=progress)
    infer_seg(cfg, trained.weights, seg_dir, ListJob(cfg.data.val_list, rank_shard(), progress))
    sync_ranks()
    return score_labels(cfg, layout.labels("seg"), cfg.data.val_list, layout.eval_json("seg"))


def plan(s: PlanInputs) -> list[PlanRow]:
    """The dry run's rows: training and multi-scale inference, each with its GPU memory."""
    from ssenet.dryrun.stage_memory import seg_infer_memory, seg_train_memory

    cfg = s.cfg
    return network_plan_rows(s, "seg", cfg.seg, lambda: seg_train_memory(cfg, s.classes),
                             lambda: seg_infer_memory(cfg, s.classes, s.size))  # fmt: skip


STAGE = Stage(
    name="seg",
    title="segmentation",
    run=run,
    produces=("segmentation network", "segmentation labels"),
    consumes=lambda cfg: {pseudo_labels(cfg.refine.method): [seg_train_list(cfg)]},
    trains_on=lambda cfg: [seg_train_list(cfg)],
    scores=lambda cfg: [cfg.data.val_list],
    section="seg",
    plan=plan,
    check=check,
    network="segmentation network",
)
