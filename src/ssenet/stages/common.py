"""What the stages share: the lists each must cover, the ground truth, scoring, rank sync."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from ssenet.config import Config
from ssenet.data.coco import coco_mask_dir
from ssenet.data.source import open_split
from ssenet.evaluation.guard import check_pseudo_label_eval
from ssenet.evaluation.metrics import evaluate_label_dirs
from ssenet.fileio import write_json
from ssenet.runtime import on_main_rank

SUMMARY_KEYS = ("miou", "mfn", "mfp")


def gt_dir(cfg: Config) -> Path:
    """Where ground truth for scoring lives: VOC's SegmentationClass by default; for COCO the
    folder its reader writes the masks of both splits to."""
    if cfg.data.kind == "coco":
        return coco_mask_dir(cfg.data.root, cfg.data.mask_dir)
    return Path(cfg.data.root) / (cfg.data.mask_dir or "SegmentationClass")


def summary(metrics: dict) -> dict:
    return {key: metrics[key] for key in SUMMARY_KEYS}


def sync_ranks() -> None:
    """Under torchrun, wait until every rank has written its shard before anyone scores."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def aff_train_list(cfg: Config) -> str:
    return cfg.aff.train_list or cfg.data.train_list


def seg_train_list(cfg: Config) -> str:
    return cfg.seg.train_list or cfg.data.train_list


def label_lists(cfg: Config) -> dict[str, list[str]]:
    """Which image lists each stage must cover, deduplicated, the scored list first.

    CAMs and CRF scores are needed for the scored list and AffinityNet's training list; random-walk
    labels for the scored list and the segmentation network's training list.
    """
    scored = cfg.data.infer_list
    aff, seg = aff_train_list(cfg), seg_train_list(cfg)
    return {
        "cam": list(dict.fromkeys([scored, aff, seg])),
        "crf": list(dict.fromkeys([scored, aff])),
        "rw": list(dict.fromkeys([scored, seg])),
    }


def check_pseudo_label_scoring(cfg: Config) -> None:
    """Refuse, with the reason, to score pseudo labels on the wrong masks or list (see
    `ssenet.evaluation_guard`); cheap, so `ssenet run` calls it before any training."""
    check_pseudo_label_eval(cfg.data, gt_dir(cfg), cfg.data.infer_list)


def missing_ground_truth(cfg: Config, ids: Sequence[str]) -> list[str]:
    """The ids without a mask in the folder scoring reads (all of them when it does not exist)."""
    gt = gt_dir(cfg)
    present = set(os.listdir(gt)) if gt.is_dir() else set()
    return [i for i in ids if f"{i}.png" not in present]


def score_labels(cfg: Config, label_dir: Path, list_name: str, out: Path) -> dict:
    """mIoU, mFN, mFP of the label PNGs of one list against the ground truth; saved to `out`.

    Under torchrun, rank 0 scores (after `sync_ranks`) and every rank gets its figures."""
    return on_main_rank(lambda: _score_labels(cfg, label_dir, list_name, out))


def _score_labels(cfg: Config, label_dir: Path, list_name: str, out: Path) -> dict:
    if list_name == cfg.data.infer_list:  # pseudo labels (cam, crf, rw); seg scores val_list
        check_pseudo_label_scoring(cfg)
    dataset = open_split(cfg.data, list_name)
    metrics = evaluate_label_dirs(label_dir, gt_dir(cfg), dataset.ids, dataset.num_classes)
    metrics["list"] = list_name
    write_json(out, metrics)
    return metrics
