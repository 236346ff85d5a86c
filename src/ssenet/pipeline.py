"""The stages of a run directory, each reading and writing plain files, each resumable.

run_dir/cam/   model.pth, checkpoints/, tb/, cams/<id>.npz, labels/<id>.png
run_dir/eval/  one JSON per stage and results.json gathering them
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ssenet.cam import classifier_scores, infer_cams, iter_cams, load_cam_model, train_cam
from ssenet.camfile import cams_to_label
from ssenet.config import Config
from ssenet.data.palette import read_label_png
from ssenet.data.source import open_split
from ssenet.evaluation import ConfusionMeter, evaluate_label_dirs, sweep_cam_thresholds, write_json
from ssenet.multilabel import classification_report
from ssenet.runtime import select_device

SUMMARY_KEYS = ("miou", "mfn", "mfp")


def gt_dir(cfg: Config) -> Path:
    """Where ground truth for scoring pseudo labels lives: VOC's SegmentationClass by default."""
    return Path(cfg.data.root) / (cfg.data.mask_dir or "SegmentationClass")


def summary(metrics: dict) -> dict:
    return {key: metrics[key] for key in SUMMARY_KEYS}


def cam_stage(cfg: Config, run_dir: str | Path, progress: bool = True) -> dict:
    """Train, infer and score the CAMs; returns {"miou", "mfn", "mfp", ...} and writes eval/."""
    run_dir = Path(run_dir)
    cam_dir = run_dir / "cam"
    trained = train_cam(cfg, cam_dir, progress=progress)
    infer_cams(cfg, trained.weights, cam_dir, progress=progress)
    dataset = open_split(cfg.data, cfg.data.infer_list)
    ids = list(dataset.ids)
    metrics = evaluate_label_dirs(cam_dir / "labels", gt_dir(cfg), ids, dataset.num_classes)
    metrics["alpha"] = cfg.cam.alpha
    metrics["alpha_sweep"] = sweep_cam_thresholds(
        cam_dir / "cams", gt_dir(cfg), ids, dataset.num_classes, list(cfg.cam.alpha_sweep)
    )
    write_json(run_dir / "eval" / "cam.json", metrics)
    return metrics


def scale_sweep(cfg: Config, run_dir: str | Path, progress: bool = True) -> dict:
    """Single-scale CAM tests (the paper's Fig. 5): mIoU, mFN and mFP per test scale at alpha."""
    run_dir = Path(run_dir)
    out = run_dir / "eval" / "scale_sweep.json"
    if out.is_file():
        return json.loads(out.read_text())
    dataset = open_split(cfg.data, cfg.data.infer_list)
    model = load_cam_model(cfg, run_dir / "cam" / "model.pth", dataset.num_foreground)
    model = model.to(select_device(cfg.run.device))
    result = {}
    for scale in cfg.cam.scale_sweep:
        meter = ConfusionMeter(dataset.num_classes)
        for image_id, cams, keys in iter_cams(
            model,
            dataset,
            dataset.ids,
            (scale,),
            cfg.cam.infer_flip,
            cfg.cam.infer_batch,
            cfg.run.amp,
            progress=progress,
            desc=f"scale {scale}",
        ):
            gt = read_label_png(gt_dir(cfg) / f"{image_id}.png")
            meter.update(cams_to_label(cams, keys, cfg.cam.alpha), gt)
        result[str(scale)] = summary(meter.metrics())
    write_json(out, result)
    return result


def classifier_stage(cfg: Config, run_dir: str | Path) -> dict:
    """mAP and F1 of the CAM network as an image classifier on the held-out list."""
    run_dir = Path(run_dir)
    out = run_dir / "eval" / "classifier.json"
    if out.is_file():
        return json.loads(out.read_text())
    dataset = open_split(cfg.data, cfg.data.val_list)
    model = load_cam_model(cfg, run_dir / "cam" / "model.pth", dataset.num_foreground)
    model = model.to(select_device(cfg.run.device))
    with torch.no_grad():
        scores, targets = classifier_scores(model, dataset, dataset.ids, cfg.cam.infer_batch)
    report = classification_report(scores, targets)
    report["images"] = int(len(targets))
    report["prior_map"] = float(np.mean(targets.mean(0)))  # AP of a constant scorer, for scale
    write_json(out, report)
    return report
