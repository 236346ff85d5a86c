"""Stage 4: propagate the CAMs with AffinityNet's random walk into pseudo labels.

Per image: AffinityNet features of the image zero-padded to a multiple of the stride, the score
stack (background first) padded with zeros and average-pooled to the feature grid, the sparse
random walk, bilinear upsampling, crop back, argmax -> `out_dir/labels/<id>.png`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ssenet.config import Config
from ssenet.inference import DEFAULT_JOB, CamNetwork, ListJob, network_labels
from ssenet.models.configured import load_affinity_model
from ssenet.provenance import config_values, stamp, weights_stamp
from ssenet.randomwalk import affinity_features, score_stack, walk_scores
from ssenet.stages.common import label_lists, score_pseudo_labels, walk_stage
from ssenet.stages.layout import RunLayout
from ssenet.stages.s3_affinity import REFINER

if TYPE_CHECKING:
    from ssenet.dryrun.plan import PlanInputs, PlanRow


def walk_label(
    cams: np.ndarray, keys: np.ndarray, features: torch.Tensor, cfg: Config, stride: int = 8
) -> np.ndarray:
    """The random-walk pseudo label (H, W) uint8 of one image: 0 or one of `keys`."""
    scores = score_stack(cams, cfg.rw.background, cfg.cam.alpha, cfg.rw.bg_power)
    rw = cfg.rw
    walked = walk_scores(
        scores, features, stride, rw.beta, rw.logt, rw.radius, rw.reference_border
    )
    ids = np.concatenate([[0], np.asarray(keys, dtype=np.int64)]).astype(np.uint8)
    return ids[walked.argmax(dim=0).cpu().numpy()]


RW_KEYS = (
    "data.kind rw.beta rw.logt rw.radius rw.background rw.bg_power "
    "rw.reference_border cam.alpha model.output_stride run.amp"
)


def rw_file_stamp(cfg: Config, aff_stamp: str, cams_stamp: str | None) -> str:
    """The `made_from` stamp of one random-walk label: AffinityNet, the CAM file, the walk."""
    return stamp("rw", aff_stamp, cams_stamp, config_values(cfg, RW_KEYS))


def walk_labels(
    cfg: Config,
    aff_weights: str | Path,
    cam_dir: str | Path,
    out_dir: str | Path,
    job: ListJob = DEFAULT_JOB,
) -> dict:
    """Write the random-walk pseudo label `out_dir/labels/<id>.png` of every image of the list.

    `cam_dir` holds the CAM stage's `<id>.npz` files. Images whose PNG has the stamp it would
    get now (`ssenet.provenance`) are skipped, so a rerun finishes an interrupted one and new
    CAMs, weights or walk settings remake it; `job`: the list (default data.infer_list), the
    shard and the progress bar. Features of several same-size images share one forward pass;
    the walk is sparse.
    """
    network = affinity_walk(cfg, aff_weights)
    job = job.named(cfg.data.infer_list)
    return network_labels(cfg, job, Path(cam_dir), Path(out_dir) / "labels", network)


def affinity_walk(cfg: Config, aff_weights: str | Path) -> CamNetwork:
    """AffinityNet's part in the random walk: its features of a batch, each image's walk."""
    aff_stamp = weights_stamp(aff_weights)
    stride = cfg.model.output_stride
    return CamNetwork(
        stamp=lambda cams_stamp: rw_file_stamp(cfg, aff_stamp, cams_stamp),
        load=lambda: load_affinity_model(cfg, aff_weights),
        forward=lambda model, part: affinity_features(model, part, stride, cfg.run.amp),
        label=lambda cams, keys, feats: walk_label(cams, keys, feats, cfg, stride),
        batch_size=cfg.cam.infer_batch,
        desc="random walk",
        what="random-walk features",
    )


def run(cfg: Config, layout: RunLayout, progress: bool = True) -> dict:
    """Random-walk pseudo labels (CAM + rw) for the scored list (and the segmentation list when
    the segmentation network learns from them)."""
    weights, cams, out = layout.weights("aff"), layout.cams, layout.stage("rw")
    label_lists(cfg, "rw", progress, lambda job: walk_labels(cfg, weights, cams, out, job))
    return score_pseudo_labels(cfg, layout, "rw")


def plan(s: PlanInputs) -> list[PlanRow]:
    """The dry run's row: AffinityNet's features of a batch, with its GPU memory."""
    from ssenet.dryrun.stage_memory import rw_infer_memory

    infer = s.estimate("rw inference", lambda: rw_infer_memory(s.cfg, s.size))
    return [s.infer_row("rw", str(s.cfg.cam.infer_batch), infer,
                        f"{2 ** s.cfg.rw.logt} walk steps")]  # fmt: skip


STAGE = walk_stage("rw", "CAM + rw", REFINER, "affinity network", run, plan)
