"""IRNet refiner, stage 3 of 3: the boundary map of every image (with its mirror image, as the
reference), path affinities from it, the random walk of the CAMs -> the pseudo label
`irn_rw/labels/<id>.png` ("CAM + IRN"), scored like the other pseudo labels.

Each label carries a stamp of the boundary network, the CAM file and the walk settings; images
whose label has the stamp it would get now are skipped, so a rerun finishes an interrupted one
and a changed setting remakes exactly what it changes.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ssenet.config import Config
from ssenet.inference import CamNetwork, ListJob, network_labels
from ssenet.irn import walk_label
from ssenet.models.boundary import boundary_maps, load_boundary_model
from ssenet.provenance import config_values, stamp, weights_stamp
from ssenet.stages.common import label_lists, score_pseudo_labels, walk_stage
from ssenet.stages.irn_labels import REFINER
from ssenet.stages.layout import RunLayout

if TYPE_CHECKING:
    from ssenet.dryrun.plan import PlanInputs, PlanRow

WALK_KEYS = (
    "data.kind irn.crop_size irn.walk_radius irn.beta irn.exp_times irn.sem_seg_bg_thres run.amp"
)


def walk_stamp(cfg: Config, boundary_stamp: str, cams_stamp: str | None) -> str:
    """The `made_from` stamp of one IRNet label: the boundary network, the CAM file, the walk."""
    return stamp("irn rw", boundary_stamp, cams_stamp, config_values(cfg, WALK_KEYS))


def irn_walk_labels(
    cfg: Config, weights: str | Path, cam_dir: str | Path, out_dir: str | Path, job: ListJob
) -> dict:
    """Write the IRNet pseudo label `out_dir/labels/<id>.png` of every image of `job` from the
    boundary network `weights` and the CAM files `cam_dir/<id>.npz`. Boundary maps of several
    same-size images share a forward pass; each walk is sparse."""
    network = boundary_walk(cfg, weights)
    return network_labels(cfg, job, Path(cam_dir), Path(out_dir) / "labels", network)


def boundary_walk(cfg: Config, weights: str | Path) -> CamNetwork:
    """The boundary network's part in IRNet's walk: boundary maps of a batch (with the mirror
    images), each image's walk over them."""
    boundary_stamp = weights_stamp(weights)
    return CamNetwork(
        stamp=lambda cams_stamp: walk_stamp(cfg, boundary_stamp, cams_stamp),
        load=lambda: load_boundary_model(cfg, weights),
        forward=lambda model, part: boundary_maps(model, part, cfg.irn.crop_size, cfg.run.amp),
        label=lambda cams, keys, boundary: walk_label(cams, keys, boundary, cfg.irn),
        batch_size=cfg.irn.infer_batch,
        desc="irn walk",
        what="IRNet boundary maps",
    )


def run(cfg: Config, layout: RunLayout, progress: bool = True) -> dict:
    """IRNet pseudo labels (CAM + IRN) for the scored list (and the segmentation list when the
    segmentation network learns from them)."""
    weights = layout.weights("irn")
    label = partial(irn_walk_labels, cfg, weights, layout.cams, layout.stage("irn_rw"))
    label_lists(cfg, "irn_rw", progress, label)
    return score_pseudo_labels(cfg, layout, "irn_rw")


def plan(s: PlanInputs) -> list[PlanRow]:
    """The dry run's row: boundary maps of a batch (with the mirror images), GPU memory."""
    infer = s.estimate("irn_rw inference", lambda: infer_memory(s.cfg, s.size))
    batch = f"{s.cfg.irn.infer_batch} x2 flip"
    return [s.infer_row("irn_rw", batch, infer, f"{2 ** s.cfg.irn.exp_times} walk steps")]


def infer_memory(cfg: Config, size: tuple[int, int]):
    """The dry run's estimate of one batch of boundary maps, on the meta device."""
    from ssenet.dryrun.memory import estimate_inference_memory, on_meta
    from ssenet.models.boundary import configured_boundary_model, padded_side

    model = on_meta(lambda: configured_boundary_model(cfg, pretrained=False))
    sides = [padded_side(side, cfg.irn.crop_size) for side in size]
    images = torch.empty(2 * cfg.irn.infer_batch, 3, *sides, device="meta")
    return estimate_inference_memory(model, images)


STAGE = walk_stage("irn_rw", "CAM + IRN", REFINER, "irn boundary network", run, plan)
