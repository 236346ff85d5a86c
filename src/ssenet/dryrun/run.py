"""`ssenet run --dry-run`: check a config, its data and its weights, and plan every stage.

Nothing is trained or written. Every problem found is collected, so a user fixes them all in one
round before spending GPU hours: the dataset root and image directory, every image list a stage
reads (all its images present, a sample readable), the ground truth used for scoring (and the
evaluation guard), the ImageNet weights file (it must load into the model), per-section settings.
Per stage it prints images, batch, steps per epoch and in total per GPU for a world size, and an
estimate of GPU memory per batch computed on torch's meta device (no data, no arithmetic).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ssenet.config import Config, validate
from ssenet.data.datasets import SegmentationDataset
from ssenet.dryrun.checks import (
    check_ground_truth,
    check_root,
    check_sections,
    check_weights,
    open_lists,
    sample_images,
)
from ssenet.dryrun.plan import plan_rows, world_warnings
from ssenet.dryrun.report import DryRunReport
from ssenet.errors import SsenetError
from ssenet.stages import active_stages, stage_lists

SAMPLE_IMAGES = 20


def default_world_size() -> int:
    """WORLD_SIZE from the environment (torchrun sets it), else 1."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def dry_run(
    cfg: Config,
    stages: Sequence[str] | None = None,
    world_size: int | None = None,
    sample: int = SAMPLE_IMAGES,
    config_name: str = "",
) -> DryRunReport:
    """Check everything a run of `stages` needs and plan it; nothing is trained or written."""
    world = world_size or default_world_size()
    report = DryRunReport(config_name, list(stages or []), world)
    try:
        validate(cfg)  # `cfg` may be built in code; the plan below assumes a valid config
        stages = list(stages or active_stages(cfg))  # an unknown refiner is a config error
    except SsenetError as err:
        report.errors.append(str(err))
        return report
    report.stages = stages
    report.checks.append(
        f"config: valid; backbone {cfg.model.backbone} (width {cfg.model.width}, output stride "
        f"{cfg.model.output_stride}), CAM method {cfg.cam.method}"
    )
    check_sections(cfg, stages, report)
    datasets: dict[str, SegmentationDataset] = {}
    sizes: list[tuple[int, int]] = []
    if check_root(cfg, report):
        lists = stage_lists(cfg, stages)
        names = [n for spec in lists.values() for group in spec.values() for n in group]
        datasets = open_lists(cfg, [*names, cfg.data.val_list], report)
        sizes = sample_images(datasets, sample, report)
        scored = [n for spec in lists.values() for n in spec.get("score", [])]
        check_ground_truth(cfg, datasets, list(dict.fromkeys(scored)), report)
    check_weights(cfg, report)
    largest = (max(h for h, _ in sizes), max(w for _, w in sizes)) if sizes else (500, 500)
    plan_rows(cfg, stages, datasets, largest, report)
    world_warnings(cfg, stages, report)
    return report
