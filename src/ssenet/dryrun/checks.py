"""The dry run's checks of the data, the ground truth, the weights and the per-section settings.

Each check appends what it found to the report (a passed check, or an error or a warning) and
goes on, so one round names every problem: the dataset root and image directory, every list a
stage reads (all its images present), a sample of decoded images, the masks scoring reads, the
ImageNet weights file (it must load into the backbone), and settings `validate` leaves to a stage.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ssenet.config import Config
from ssenet.data.datasets import SegmentationDataset
from ssenet.data.source import open_split
from ssenet.data.voc import IMAGE_DIR, LIST_DIR
from ssenet.data.voc import read_id_list as read_voc_list
from ssenet.dryrun.memory import on_meta
from ssenet.dryrun.report import DryRunReport
from ssenet.errors import SsenetError
from ssenet.models import build_backbone, load_weights
from ssenet.stages import STAGES, stage_lists
from ssenet.stages.common import (
    NOT_SCORED,
    check_pseudo_label_scoring,
    gt_dir,
    masks_optional,
    missing_ground_truth,
)


def _examples(items: Sequence[str], limit: int = 5) -> str:
    more = f", ... ({len(items)} in all)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _check_voc_images(cfg: Config, list_name: str) -> str | None:
    """VOC: every id of the list has its JPEG (all of them listed, not only the first)."""
    root = Path(cfg.data.root)
    list_path = root / LIST_DIR / f"{list_name}.txt"
    image_dir = root / IMAGE_DIR
    if not list_path.is_file() or not image_dir.is_dir():
        return None  # open_split names these
    ids = [image_id for image_id, _ in read_voc_list(list_path)]
    present = set(os.listdir(image_dir))
    missing = [i for i in ids if f"{i}.jpg" not in present]
    if missing:
        return (
            f"{list_path}: {len(missing)} of {len(ids)} images missing from {image_dir} "
            f"(e.g. {_examples(missing)})"
        )
    return None


def open_lists(
    cfg: Config, names: Sequence[str], report: DryRunReport
) -> dict[str, SegmentationDataset]:
    """Open every list once; each failure is one error, and the others are still checked."""
    datasets = {}
    for name in dict.fromkeys(names):
        try:
            problem = _check_voc_images(cfg, name) if cfg.data.kind == "voc" else None
            if problem:
                raise SsenetError(problem)
            datasets[name] = open_split(cfg.data, name)
        except SsenetError as err:
            report.errors.append(f"list {name}: {err}")
            continue
        report.checks.append(f"list {name}: {len(datasets[name])} images, all present")
    return datasets


def check_root(cfg: Config, report: DryRunReport) -> bool:
    root = Path(cfg.data.root)
    if not root.is_dir():
        report.errors.append(f"data.root {root}: directory not found")
        return False
    if cfg.data.kind == "voc" and not (root / IMAGE_DIR).is_dir():
        report.errors.append(f"{root / IMAGE_DIR}: image directory not found")
        return False
    report.checks.append(f"data.root {root}: found")
    return True


def sample_images(
    datasets: dict[str, SegmentationDataset], count: int, report: DryRunReport
) -> list[tuple[int, int]]:
    """Decode `count` images spread evenly over all lists (the first always among them); all of
    them when `count` is at least their number (`ssenet run --dry-run --check-images`)."""
    owner = {i: d for d in datasets.values() for i in d.ids}
    ids = list(owner)
    if not ids or count < 1:
        return []
    picks = [ids[int(k)] for k in np.unique(np.linspace(0, len(ids) - 1, min(count, len(ids))))]
    sizes, bad = [], []
    for image_id in picks:
        try:
            sizes.append(owner[image_id].read_image(image_id).shape[:2])
        except SsenetError as err:
            bad.append(str(err))
    for problem in bad:
        report.errors.append(f"image sample: {problem}")
    if sizes:
        heights, widths = zip(*sizes, strict=True)
        report.checks.append(
            f"image sample: {len(sizes)} of {len(picks)} decoded; height {min(heights)}-"
            f"{max(heights)}, width {min(widths)}-{max(widths)} px"
        )
    return sizes


def check_ground_truth(
    cfg: Config, datasets: dict[str, SegmentationDataset], scored: Sequence[str],
    report: DryRunReport,
) -> None:
    """Every image of a scored list has its mask in the directory scoring reads (folder data:
    those with one are scored, and the check says how many)."""
    gt = gt_dir(cfg)
    if not scored:
        return
    if masks_optional(cfg):
        _count_folder_masks(cfg, datasets, scored, report)
        return
    if not gt.is_dir():
        report.errors.append(f"ground truth {gt}: directory not found (needed to score "
                             f"{', '.join(scored)}; see data.mask_dir)")
        return
    for name in scored:
        if name not in datasets:
            continue
        ids = datasets[name].ids
        missing = missing_ground_truth(cfg, ids)
        if missing:
            report.errors.append(f"ground truth {gt}: no mask for {len(missing)} of {len(ids)} "
                                 f"images of {name} (e.g. {_examples(missing)})")
        else:
            report.checks.append(f"ground truth {gt}: a mask for each of the {len(ids)} "
                                 f"images of {name}")


def _count_folder_masks(
    cfg: Config, datasets: dict[str, SegmentationDataset], scored: Sequence[str],
    report: DryRunReport,
) -> None:
    where = f"ground truth {gt_dir(cfg)}" if cfg.data.mask_dir else "no data.mask_dir"
    for name in (n for n in scored if n in datasets):
        ids = datasets[name].ids
        found = len(ids) - len(missing_ground_truth(cfg, ids))
        what = f"a mask for {found} of the {len(ids)} images of {name}: scored on those"
        if not found:
            what = f"no mask for the {len(ids)} images of {name}: {NOT_SCORED}"
        report.checks.append(f"{where}: {what}")


def check_weights(cfg: Config, report: DryRunReport) -> None:
    """The ImageNet weights file exists and loads strictly into the configured backbone."""
    m = cfg.model
    if m.weights is None:
        if m.backbone == "efficientnet_lite0" and m.pretrained:
            from ssenet.models.efficientnet import packaged_weights_path  # imports timm

            try:
                packaged_weights_path()
                report.checks.append("weights: efficientnet_lite0 ImageNet weights (package)")
            except SsenetError as err:
                report.errors.append(f"model.pretrained: {err}")
            return
        report.warnings.append(
            f"model.weights is unset: the {m.backbone} backbone starts from random weights; "
            "the paper starts from ImageNet weights (see docs/reproducing.md)"
        )
        return
    path = Path(m.weights)
    if not path.is_file():
        report.errors.append(f"model.weights {path}: file not found")
        return
    try:
        backbone = on_meta(lambda: build_backbone(m.backbone, m.width, m.output_stride, False))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # copying into meta tensors is a no-op, by design
            load_weights(backbone, path)
    except SsenetError as err:
        report.errors.append(f"model.weights: {err}")
        return
    report.checks.append(f"model.weights {path}: loads into the {m.backbone} backbone")


def check_sections(cfg: Config, stages: Sequence[str], report: DryRunReport) -> None:
    """Settings that `validate` leaves to each stage (its `Stage.check`), checked up front, and
    the evaluation guard when a stage scores pseudo labels."""
    for stage in stages:
        if STAGES[stage].check is not None:
            report.errors += STAGES[stage].check(cfg, report.world_size)
    plan = stage_lists(cfg, stages)
    if any(cfg.data.infer_list in spec.get("score", []) for spec in plan.values()):
        try:
            check_pseudo_label_scoring(cfg)
        except SsenetError as err:
            report.errors.append(f"evaluation: {err}")
