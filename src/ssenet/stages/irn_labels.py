"""IRNet refiner, stage 1 of 3: the relation label `irn_labels/labels/<id>.png` of every image
the boundary network learns from (0 sure background, a class, 255 not sure; see `ssenet.irn`).

Each label carries a stamp of the CAM file it came from and of the `irn.conf_*` and `irn.crf_*`
settings; images whose label has the stamp it would get now are skipped. The two CRFs of an
image run in one job, spread over processes like the CRF stage's (`run.crf_workers`).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from ssenet.config import Config
from ssenet.crf import check_params
from ssenet.data.palette import write_label_png
from ssenet.inference import CamJobs, ListJob, run_cam_jobs
from ssenet.irn import crf_params, relation_label
from ssenet.provenance import config_values, stamp
from ssenet.stages.common import crf_plan_row, label_lists
from ssenet.stages.layout import RunLayout
from ssenet.stages.registry import Stage

REFINER = "irn"  # IRNet's refiner: stages irn_labels, irn and irn_rw
RELATION_KEYS = (
    "data.kind irn.conf_fg_thres irn.conf_bg_thres irn.crf_gt_prob irn.crf_iterations "
    "irn.crf_gaussian_sxy irn.crf_gaussian_compat irn.crf_bilateral_sxy irn.crf_bilateral_srgb "
    "irn.crf_bilateral_compat"
)


def irn_train_list(cfg: Config) -> str:
    """The list IRNet's boundary network learns from: irn.train_list, else data.train_list."""
    return cfg.irn.train_list or cfg.data.train_list


def relation_stamp(cfg: Config, cams_stamp: str | None) -> str:
    """The `made_from` stamp of one relation label, from its CAM file's stamp."""
    return stamp("irn relations", cams_stamp, config_values(cfg, RELATION_KEYS))


class _RelationJobs(CamJobs):
    """One item per image: both CRFs, the relation label written, the id returned."""

    desc = "irn relation labels"

    def write(self, image_id: str, image: np.ndarray, cams: np.ndarray, keys: np.ndarray,
              made_from: str) -> None:  # fmt: skip
        label = relation_label(image, cams, keys, self.cfg.irn, self.backend, self.device)
        write_label_png(self.out_dir / "labels" / f"{image_id}.png", label, made_from)


def relation_labels(cfg: Config, cam_dir: str | Path, out_dir: str | Path, job: ListJob) -> dict:
    """Write `out_dir/labels/<id>.png` for every image of `job` from the CAM files
    `cam_dir/<id>.npz`."""
    check_params(crf_params(cfg.irn))
    label_dir = Path(out_dir) / "labels"
    work = run_cam_jobs(cfg, job, Path(cam_dir), Path(out_dir), _RelationJobs, relation_stamp,
                        lambda i: [label_dir / f"{i}.png"])  # fmt: skip
    return work.counts(label_dir=str(label_dir))


def run(cfg: Config, layout: RunLayout, progress: bool = True) -> dict:
    """Relation labels for every list the boundary network reads (not scored: they leave the
    unsure pixels out)."""
    label = partial(relation_labels, cfg, layout.cams, layout.stage("irn_labels"))
    return label_lists(cfg, "irn_labels", progress, label)


STAGE = Stage(
    name="irn_labels",
    title="IRNet relation labels",
    run=run,
    produces=("irn relation labels",),
    consumes=lambda cfg: {"cams": None},
    refiner=REFINER,
    plan=lambda s: [crf_plan_row(s, "irn_labels", "2 dense CRFs an image")],
)
