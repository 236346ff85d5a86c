"""The stages of a run directory, each reading and writing plain files, each resumable.

run_dir/cam/   model.pth, checkpoints/, tb/, cams/<id>.npz, labels/<id>.png (alpha background)
run_dir/crf/   scores/<id>.npz (la and ha CRF marginals), labels/<id>.png (CAM + CRF)
run_dir/aff/   model.pth, checkpoints/, tb/ (AffinityNet)
run_dir/rw/    labels/<id>.png (CAM + random walk: the pseudo labels)
run_dir/seg/   model.pth, checkpoints/, tb/, labels/<id>.png (DeepLab on the held-out list)
run_dir/eval/  one JSON per stage and results.json gathering them
run_dir/config.yaml, classes.txt: the resolved config and the class names (for `ssenet.api`)
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ssenet.affinity import train_affinity
from ssenet.cam import (
    classifier_scores,
    infer_cams,
    iter_single_scale_cams,
    load_cam_model,
    normalized_present_cams,
    train_cam,
)
from ssenet.camfile import cams_to_label
from ssenet.config import Config, dump_config
from ssenet.data.coco import coco_mask_dir
from ssenet.data.palette import read_label_png
from ssenet.data.source import open_split
from ssenet.errors import SsenetError
from ssenet.evaluation import ConfusionMeter, evaluate_label_dirs, sweep_cam_thresholds, write_json
from ssenet.evaluation_guard import check_pseudo_label_eval
from ssenet.fileio import remove_stale_temporaries, run_lock, write_text_atomic
from ssenet.multilabel import classification_report
from ssenet.provenance import cached_json, config_values, record_json_stamp, stamp, weights_stamp
from ssenet.runtime import rank_shard, select_device
from ssenet.rw_stage import random_walk_stage
from ssenet.segmentation import infer_seg, train_seg

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


def label_lists(cfg: Config) -> dict[str, list[str]]:
    """Which image lists each stage must cover, deduplicated, the scored list first.

    CAMs and CRF scores are needed for the scored list and AffinityNet's training list; random-walk
    labels for the scored list and the segmentation network's training list.
    """
    scored = cfg.data.infer_list
    aff = cfg.aff.train_list or cfg.data.train_list
    seg = cfg.seg.train_list or cfg.data.train_list
    return {
        "cam": list(dict.fromkeys([scored, aff, seg])),
        "crf": list(dict.fromkeys([scored, aff])),
        "rw": list(dict.fromkeys([scored, seg])),
    }


def check_pseudo_label_scoring(cfg: Config) -> None:
    """Refuse, with the reason, to score pseudo labels on the wrong masks or list (see
    `ssenet.evaluation_guard`); cheap, so `ssenet run` calls it before any training."""
    check_pseudo_label_eval(cfg.data, gt_dir(cfg), cfg.data.infer_list)


def stage_lists(cfg: Config, stages: Sequence[str]) -> dict[str, dict[str, list[str]]]:
    """Per stage: the lists it trains on, makes labels for, and scores (as `run` uses them)."""
    made = label_lists(cfg)
    scored = [cfg.data.infer_list]
    plan = {
        "cam": {"train": [cfg.data.train_list], "infer": made["cam"], "score": scored},
        "crf": {"infer": made["crf"], "score": scored},
        "aff": {"train": [cfg.aff.train_list or cfg.data.train_list]},
        "rw": {"infer": made["rw"], "score": scored},
        "seg": {
            "train": [cfg.seg.train_list or cfg.data.train_list],
            "infer": [cfg.data.val_list],
            "score": [cfg.data.val_list],
        },
    }
    return {name: plan[name] for name in stages}


def missing_ground_truth(cfg: Config, ids: Sequence[str]) -> list[str]:
    """The ids without a mask in the folder scoring reads (all of them when it does not exist)."""
    gt = gt_dir(cfg)
    present = set(os.listdir(gt)) if gt.is_dir() else set()
    return [i for i in ids if f"{i}.png" not in present]


def preflight(cfg: Config, stages: list[str]) -> None:
    """Open every list the stages will read and find the ground truth of the scored ones, so a
    bad list, image or mask stops the run before training, not hours into it."""
    if set(stages) & {"cam", "crf", "rw"}:
        check_pseudo_label_scoring(cfg)
    readers: dict[str, list[str]] = {}  # list name -> the stages that read it
    scored: set[str] = set()
    for stage, spec in stage_lists(cfg, stages).items():
        for name in dict.fromkeys(n for group in spec.values() for n in group):
            readers.setdefault(name, []).append(stage)
        scored.update(spec.get("score", []))
    for list_name, stages_reading in readers.items():
        by = ", ".join(stages_reading)
        try:
            dataset = open_split(cfg.data, list_name)
        except SsenetError as err:
            raise SsenetError(f"{err} (list {list_name!r}, read by {by})") from err
        if not dataset.ids:
            raise SsenetError(f"list {list_name!r} (read by {by}) has no images")
        missing = missing_ground_truth(cfg, dataset.ids) if list_name in scored else []
        if missing:
            raise SsenetError(
                f"{gt_dir(cfg)}: no ground truth for {len(missing)} image(s) of the scored "
                f"list {list_name!r} (e.g. {', '.join(missing[:3])})"
            )


def score_labels(cfg: Config, label_dir: Path, list_name: str, out: Path) -> dict:
    """mIoU, mFN, mFP of the label PNGs of one list against the ground truth; saved to `out`."""
    if list_name == cfg.data.infer_list:  # pseudo labels (cam, crf, rw); seg scores val_list
        check_pseudo_label_scoring(cfg)
    dataset = open_split(cfg.data, list_name)
    metrics = evaluate_label_dirs(label_dir, gt_dir(cfg), dataset.ids, dataset.num_classes)
    metrics["list"] = list_name
    write_json(out, metrics)
    return metrics


def cam_stage(cfg: Config, run_dir: str | Path, progress: bool = True) -> dict:
    """Train the CAM network, infer CAMs, score their alpha labels and the alpha sweep (Fig. 4)."""
    run_dir = Path(run_dir)
    cam_dir = run_dir / "cam"
    trained = train_cam(cfg, cam_dir, progress=progress)
    sweep = folded_scale_sweep(cfg, run_dir)
    for list_name in label_lists(cfg)["cam"]:
        folded = sweep is not None and list_name == cfg.data.infer_list
        infer_cams(
            cfg, trained.weights, cam_dir, list_name, rank_shard(), progress=progress,
            single_scales=sweep.scales if folded else (),
            on_single_scales=sweep.update if folded else None,
        )  # fmt: skip
    sync_ranks()
    dataset = open_split(cfg.data, cfg.data.infer_list)
    if sweep is not None and sweep.seen == set(dataset.ids):  # a resumed pass saw only part
        sweep.write(run_dir)
    out = run_dir / "eval" / "cam.json"
    metrics = score_labels(cfg, cam_dir / "labels", cfg.data.infer_list, out)
    metrics["alpha"] = cfg.cam.alpha
    metrics["alpha_sweep"] = sweep_cam_thresholds(
        cam_dir / "cams", gt_dir(cfg), dataset.ids, dataset.num_classes, list(cfg.cam.alpha_sweep)
    )
    write_json(out, metrics)
    return metrics


def folded_scale_sweep(cfg: Config, run_dir: Path) -> ScaleSweep | None:
    """A sweep to fill during CAM inference, when it costs no extra forward pass: one process,
    sweep scales among the inference scales, and no sweep written yet."""
    scales = set(cfg.cam.scale_sweep)
    if rank_shard()[1] > 1 or not scales or not scales <= set(cfg.cam.infer_scales):
        return None
    if scale_sweep_done(cfg, run_dir):
        return None
    return ScaleSweep(cfg, open_split(cfg.data, cfg.data.infer_list).num_classes)


def crf_stage(cfg: Config, run_dir: str | Path, progress: bool = True) -> dict:
    """la / ha CRF scores for AffinityNet; the la argmax is the CAM+CRF label that is scored."""
    from ssenet.crf_stage import crf_stage as run_crf

    run_dir = Path(run_dir)
    for list_name in label_lists(cfg)["crf"]:
        run_crf(cfg, run_dir / "cam" / "cams", run_dir / "crf", list_name, rank_shard(), progress)
    sync_ranks()
    out = run_dir / "eval" / "crf.json"
    return score_labels(cfg, run_dir / "crf" / "labels", cfg.data.infer_list, out)


def aff_stage(cfg: Config, run_dir: str | Path, progress: bool = True) -> dict:
    """Train AffinityNet on the CRF scores of its training list."""
    run_dir = Path(run_dir)
    trained = train_affinity(cfg, run_dir / "crf" / "scores", run_dir / "aff", progress=progress)
    return {"weights": str(trained.weights), "steps": trained.meta["steps"]}


def rw_stage(cfg: Config, run_dir: str | Path, progress: bool = True) -> dict:
    """Random-walk pseudo labels (CAM + rw) for the scored list and the segmentation list."""
    run_dir = Path(run_dir)
    weights = run_dir / "aff" / "model.pth"
    cam_dir = run_dir / "cam" / "cams"
    for list_name in label_lists(cfg)["rw"]:
        random_walk_stage(cfg, weights, cam_dir, run_dir / "rw", list_name, rank_shard(), progress)
    sync_ranks()
    out = run_dir / "eval" / "rw.json"
    return score_labels(cfg, run_dir / "rw" / "labels", cfg.data.infer_list, out)


def seg_stage(cfg: Config, run_dir: str | Path, progress: bool = True) -> dict:
    """Train DeepLab on the random-walk labels, predict the held-out list and score it."""
    run_dir = Path(run_dir)
    trained = train_seg(cfg, run_dir / "rw" / "labels", run_dir / "seg", progress=progress)
    infer_seg(cfg, trained.weights, run_dir / "seg", cfg.data.val_list, rank_shard(), progress)
    sync_ranks()
    out = run_dir / "eval" / "seg.json"
    return score_labels(cfg, run_dir / "seg" / "labels", cfg.data.val_list, out)


STAGES = {"cam": cam_stage, "crf": crf_stage, "aff": aff_stage, "rw": rw_stage, "seg": seg_stage}


def parse_stages(text: str | None) -> list[str]:
    """`cam,crf` -> ["cam", "crf"], in pipeline order; None -> every stage."""
    if not text:
        return list(STAGES)
    wanted = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in STAGES]
    if unknown:
        raise SsenetError(f"--stages: unknown stage(s) {unknown}; choose from {list(STAGES)}")
    return [s for s in STAGES if s in wanted]


def record_run(cfg: Config, run_dir: Path) -> None:
    """Keep the resolved config and the class names in the run folder, so its networks can be
    loaded from the folder alone (`ssenet.api`)."""
    write_text_atomic(run_dir / "config.yaml", dump_config(cfg))
    names = open_split(cfg.data, cfg.data.train_list).class_names
    write_text_atomic(run_dir / "classes.txt", "\n".join(names) + "\n")


def run_pipeline(
    cfg: Config,
    run_dir: str | Path,
    stages: list[str] | None = None,
    progress: bool = True,
    seconds: dict[str, float] | None = None,
) -> dict:
    """Run the stages in order into `run_dir`; finished work is skipped, so a rerun resumes.

    Every scored stage's mIoU / mFN / mFP lands in `run_dir/eval/results.json`. When given,
    `seconds` receives each stage's wall time in this call (near 0 for work found done).
    """
    run_dir = Path(run_dir)
    # Ranks of one torchrun job share the folder; only separate jobs must not.
    lock = run_lock(run_dir) if rank_shard()[1] == 1 else contextlib.nullcontext()
    with lock:
        return _run_stages(cfg, run_dir, stages, progress, seconds)


def _run_stages(
    cfg: Config,
    run_dir: Path,
    stages: list[str] | None,
    progress: bool,
    seconds: dict[str, float] | None,
) -> dict:
    remove_stale_temporaries(run_dir)  # left by a killed run; never taken for outputs
    record_run(cfg, run_dir)
    results_path = run_dir / "eval" / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    for name in stages or list(STAGES):
        start = time.perf_counter()
        metrics = STAGES[name](cfg, run_dir, progress=progress)
        if seconds is not None:
            seconds[name] = round(time.perf_counter() - start, 1)
        if "miou" in metrics:
            results[name] = summary(metrics)
            write_json(results_path, results)
    return results


# Pairs of test scales whose CAM labels are compared for the scale-consistency figure.
CONSISTENCY_PAIRS = ((0.5, 2.0), (1.0, 0.5), (1.0, 2.0))


class ScaleSweep:
    """Single-scale CAM tests (the paper's Fig. 5) and the agreement between scales, image by
    image: `update` with each image's {scale: (cams, keys)}, then `write` the two JSON files."""

    def __init__(self, cfg: Config, num_classes: int) -> None:
        self.cfg = cfg
        self.scales = tuple(cfg.cam.scale_sweep)
        self.pairs = [(a, b) for a, b in CONSISTENCY_PAIRS if a in self.scales and b in self.scales]
        self.meters = {s: ConfusionMeter(num_classes) for s in self.scales}
        self.agreement = {pair: ConfusionMeter(num_classes) for pair in self.pairs}
        self.seen: set[str] = set()

    def update(self, image_id: str, per_scale: dict[float, tuple[np.ndarray, np.ndarray]]) -> None:
        gt = read_label_png(gt_dir(self.cfg) / f"{image_id}.png")
        labels = {s: cams_to_label(*per_scale[s], self.cfg.cam.alpha) for s in self.scales}
        for s in self.scales:
            self.meters[s].update(labels[s], gt)
        for a, b in self.pairs:  # the second scale's labels stand in for the ground truth
            self.agreement[a, b].update(labels[a], labels[b])
        self.seen.add(image_id)

    def write(self, run_dir: Path) -> dict:
        made_from = sweep_stamp(self.cfg, run_dir)
        consistency = {f"{a}-{b}": self.agreement[a, b].metrics()["miou"] for a, b in self.pairs}
        result = {str(s): summary(self.meters[s].metrics()) for s in self.scales}
        for name, data in (("scale_consistency.json", consistency), ("scale_sweep.json", result)):
            write_json(run_dir / "eval" / name, data)
            record_json_stamp(run_dir / "eval" / name, made_from)
        return result


SWEEP_KEYS = (
    "data.kind data.root data.infer_list data.mask_dir cam.scale_sweep cam.infer_flip "
    "cam.alpha run.amp"
)


def sweep_stamp(cfg: Config, run_dir: Path) -> str:
    """What the scale sweep's figures depend on: the CAM network and the sweep settings."""
    weights = weights_stamp(run_dir / "cam" / "model.pth")
    return stamp("scale sweep", weights, config_values(cfg, SWEEP_KEYS))


def scale_sweep_done(cfg: Config, run_dir: Path) -> bool:
    expected = sweep_stamp(cfg, run_dir)
    return all(cached_json(run_dir / "eval" / name, expected) is not None
               for name in ("scale_sweep.json", "scale_consistency.json"))  # fmt: skip


def scale_sweep(cfg: Config, run_dir: str | Path, progress: bool = True) -> dict:
    """Single-scale CAM tests (the paper's Fig. 5): mIoU, mFN and mFP per test scale at alpha.

    The same pass writes `scale_consistency.json` (see `scale_consistency`). The CAM stage
    writes both for free when the sweep's scales are among its inference scales and it computes
    the whole scored list; otherwise this makes a pass of its own.
    """
    run_dir = Path(run_dir)
    if scale_sweep_done(cfg, run_dir):
        return json.loads((run_dir / "eval" / "scale_sweep.json").read_text())
    dataset = open_split(cfg.data, cfg.data.infer_list)
    model = load_cam_model(cfg, run_dir / "cam" / "model.pth", dataset.num_foreground)
    model = model.to(select_device(cfg.run.device))
    sweep = ScaleSweep(cfg, dataset.num_classes)
    for image_id, labels, per_scale in iter_single_scale_cams(
        model, dataset, dataset.ids, sweep.scales, cfg.cam.infer_flip, cfg.cam.infer_batch,
        cfg.run.amp, progress=progress,
    ):  # fmt: skip
        singles = {s: normalized_present_cams(maps, labels) for s, maps in per_scale.items()}
        sweep.update(image_id, singles)
    return sweep.write(run_dir)


def scale_consistency(cfg: Config, run_dir: str | Path, progress: bool = True) -> dict:
    """What SER optimises: the mIoU between the CAM labels of the same images tested at two
    scales (keys "0.5-2.0", "1.0-0.5", "1.0-2.0"; 1 = the labels agree at both scales)."""
    scale_sweep(cfg, run_dir, progress)
    return json.loads((Path(run_dir) / "eval" / "scale_consistency.json").read_text())


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


CLASSIFIER_KEYS = "data.kind data.root data.val_list cam.infer_batch"


def classifier_stage(cfg: Config, run_dir: str | Path) -> dict:
    """mAP and F1 of the CAM network as an image classifier on the held-out list."""
    run_dir = Path(run_dir)
    out = run_dir / "eval" / "classifier.json"
    weights = run_dir / "cam" / "model.pth"
    made_from = stamp("classifier", weights_stamp(weights), config_values(cfg, CLASSIFIER_KEYS))
    cached = cached_json(out, made_from)
    if cached is not None:
        return cached
    dataset = open_split(cfg.data, cfg.data.val_list)
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
