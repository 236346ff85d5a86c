"""The CAM stage's extra figures: single-scale tests (the paper's Fig. 5), the agreement between
test scales (what SER optimises), and the CAM network as an image classifier."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from ssenet.cam import (
    CamInference,
    classifier_scores,
    iter_single_scale_cams,
    normalized_present_cams,
)
from ssenet.cam_labels import cams_to_label
from ssenet.config import Config
from ssenet.data.palette import read_label_png
from ssenet.data.source import open_split
from ssenet.evaluation.metrics import ConfusionMeter
from ssenet.fileio import write_json
from ssenet.models.configured import load_cam_model
from ssenet.multilabel import classification_report
from ssenet.provenance import (
    cached_json,
    config_values,
    data_stamp,
    record_json_stamp,
    stamp,
    weights_stamp,
)
from ssenet.runtime import select_device
from ssenet.stages.common import gt_dir, scorable_ids, summary
from ssenet.stages.layout import RunLayout

# Pairs of test scales whose CAM labels are compared for the scale-consistency figure.
CONSISTENCY_PAIRS = ((0.5, 2.0), (1.0, 0.5), (1.0, 2.0))


class ScaleSweep:
    """Single-scale CAM tests (the paper's Fig. 5) and the agreement between scales, image by
    image: `update` with each image's {scale: (cams, keys)}, then `write` the two JSON files.

    The agreement needs no masks; the tests score the images of `scored` only (folder data may
    have masks for some images or none: then scale_sweep.json is empty)."""

    def __init__(self, cfg: Config, num_classes: int, scored: Iterable[str]) -> None:
        self.cfg = cfg
        self.scored = set(scored)
        self.scales = tuple(cfg.cam.scale_sweep)
        self.pairs = [(a, b) for a, b in CONSISTENCY_PAIRS if a in self.scales and b in self.scales]
        self.meters = {s: ConfusionMeter(num_classes) for s in self.scales}
        self.agreement = {pair: ConfusionMeter(num_classes) for pair in self.pairs}
        self.seen: set[str] = set()

    def update(self, image_id: str, per_scale: dict[float, tuple[np.ndarray, np.ndarray]]) -> None:
        labels = {s: cams_to_label(*per_scale[s], self.cfg.cam.alpha) for s in self.scales}
        if image_id in self.scored:
            gt = read_label_png(gt_dir(self.cfg) / f"{image_id}.png")
            for s in self.scales:
                self.meters[s].update(labels[s], gt)
        for a, b in self.pairs:  # the second scale's labels stand in for the ground truth
            self.agreement[a, b].update(labels[a], labels[b])
        self.seen.add(image_id)

    def write(self, run_dir: Path) -> dict:
        made_from = sweep_stamp(self.cfg, run_dir)
        consistency = {f"{a}-{b}": self.agreement[a, b].metrics()["miou"] for a, b in self.pairs}
        result = {str(s): summary(self.meters[s].metrics()) for s in self.scales if self.scored}
        layout = RunLayout(run_dir)
        for name, data in (("scale_consistency", consistency), ("scale_sweep", result)):
            write_json(layout.eval_json(name), data)
            record_json_stamp(layout.eval_json(name), made_from)
        return result


SWEEP_KEYS = (
    "data.kind data.infer_list data.held_out data.split_seed data.mask_dir "
    "cam.scale_sweep cam.infer_flip cam.alpha run.amp"
)


def sweep_stamp(cfg: Config, run_dir: Path) -> str:
    """What the scale sweep's figures depend on: the CAM network, the sweep settings and the
    scored images (by content, not location)."""
    weights = weights_stamp(RunLayout(run_dir).weights("cam"))
    images = data_stamp(open_split(cfg.data, cfg.data.infer_list))
    return stamp("scale sweep", weights, config_values(cfg, SWEEP_KEYS), images)


def scale_sweep_done(cfg: Config, run_dir: Path) -> bool:
    expected = sweep_stamp(cfg, run_dir)
    layout = RunLayout(run_dir)
    return all(cached_json(layout.eval_json(name), expected) is not None
               for name in ("scale_sweep", "scale_consistency"))  # fmt: skip


def scale_sweep(cfg: Config, run_dir: str | Path, progress: bool = True) -> dict:
    """Single-scale CAM tests (the paper's Fig. 5): mIoU, mFN and mFP per test scale at alpha.

    The same pass writes `scale_consistency.json` (see `scale_consistency`). The CAM stage
    writes both for free when the sweep's scales are among its inference scales and it computes
    the whole scored list, and calls this when a resumed run found some CAMs made; otherwise
    this makes a pass of its own when asked.
    """
    run_dir, layout = Path(run_dir), RunLayout(run_dir)
    if scale_sweep_done(cfg, run_dir):
        return json.loads(layout.eval_json("scale_sweep").read_text())
    dataset = open_split(cfg.data, cfg.data.infer_list)
    model = load_cam_model(cfg, layout.weights("cam"), dataset.num_foreground)
    model = model.to(select_device(cfg.run.device))
    sweep = ScaleSweep(cfg, dataset.num_classes, scorable_ids(cfg, dataset.ids))
    run = CamInference(sweep.scales, cfg.cam.infer_flip, cfg.cam.infer_batch, cfg.run.amp,
                       progress=progress)  # fmt: skip
    for image_id, labels, per_scale in iter_single_scale_cams(model, dataset, dataset.ids, run):
        singles = {s: normalized_present_cams(maps, labels) for s, maps in per_scale.items()}
        sweep.update(image_id, singles)
    return sweep.write(run_dir)


def scale_consistency(cfg: Config, run_dir: str | Path, progress: bool = True) -> dict:
    """What SER optimises: the mIoU between the CAM labels of the same images tested at two
    scales (keys "0.5-2.0", "1.0-0.5", "1.0-2.0"; 1 = the labels agree at both scales)."""
    scale_sweep(cfg, run_dir, progress)
    return json.loads(RunLayout(run_dir).eval_json("scale_consistency").read_text())


def unlearned_warning(report: dict, method: str = "") -> str | None:
    """A warning when the classifier has not learned (val mAP under 1.5x a constant scorer's):
    its CAMs, and every pseudo label made from them, then mean nothing."""
    if report["map"] >= 1.5 * report["prior_map"]:
        return None
    who = f"{method}: " if method else ""
    return (
        f"WARNING {who}the classifier has not learned (val mAP {report['map']:.3f}, a constant "
        f"scorer gets {report['prior_map']:.3f}): its pseudo-label figures mean nothing"
    )


CLASSIFIER_KEYS = "data.kind data.val_list data.held_out data.split_seed cam.infer_batch"


def classifier_stage(cfg: Config, run_dir: str | Path) -> dict:
    """mAP and F1 of the CAM network as an image classifier on the held-out list."""
    layout = RunLayout(run_dir)
    out, weights = layout.eval_json("classifier"), layout.weights("cam")
    dataset = open_split(cfg.data, cfg.data.val_list)
    made_from = stamp("classifier", weights_stamp(weights), config_values(cfg, CLASSIFIER_KEYS),
                      data_stamp(dataset))  # fmt: skip
    cached = cached_json(out, made_from)
    if cached is not None:
        return cached
    model = load_cam_model(cfg, weights, dataset.num_foreground)
    model = model.to(select_device(cfg.run.device))
    with torch.no_grad():
        scores, targets = classifier_scores(model, dataset, dataset.ids, cfg.cam.infer_batch)
    report = classification_report(scores, targets)
    report["images"] = int(len(targets))
    report["prior_map"] = float(np.mean(targets.mean(0)))  # AP of a constant scorer, for scale
    write_json(out, report)
    record_json_stamp(out, made_from)
    return report
