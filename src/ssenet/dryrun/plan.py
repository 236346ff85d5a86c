"""The dry run's plan: per stage, the images, batch, steps and GPU memory of each step.

A training step gets steps per epoch and in total per GPU for the world size; an inference step
its passes per image. Every step the stage runs on the GPU gets a memory estimate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from ssenet.config import Config
from ssenet.data.datasets import SegmentationDataset
from ssenet.dryrun.memory import MemoryEstimate
from ssenet.dryrun.report import DryRunReport, PlanRow
from ssenet.dryrun.stage_memory import (
    aff_train_memory,
    cam_infer_memory,
    cam_train_memory,
    rw_infer_memory,
    seg_infer_memory,
    seg_train_memory,
)
from ssenet.errors import SsenetError
from ssenet.pipeline import stage_lists


def steps_per_epoch(images: int, batch_size: int, world_size: int = 1) -> int:
    """Optimizer steps per epoch on each GPU, as `ssenet.trainer.make_loader` batches.

    DistributedSampler pads the list to a multiple of the world size (ceil), then each rank
    drops its last incomplete batch (floor).
    """
    return math.ceil(images / world_size) // batch_size


def _count(datasets: dict[str, SegmentationDataset], names: Sequence[str]) -> int | None:
    """Distinct images of the lists; None when one of them could not be opened."""
    if any(n not in datasets for n in names):
        return None
    return len({i for n in names for i in datasets[n].ids})


def _estimate(report: DryRunReport, what: str, compute: Callable[[], MemoryEstimate]):
    """Run one estimate; a config the stage would reject is an error, anything else a warning."""
    try:
        return compute()
    except SsenetError as err:
        report.errors.append(f"{what}: {err}")
    except Exception as err:  # noqa: BLE001 -- the estimate is advice, never a reason to stop
        report.warnings.append(f"{what}: no memory estimate ({type(err).__name__}: {err})")
    return None


def _train_row(stage: str, section, lists, datasets, world_size, memory) -> PlanRow:
    images = _count(datasets, lists)
    steps = None if images is None else steps_per_epoch(images, section.batch_size, world_size)
    return PlanRow(stage, "train", list(lists), images, str(section.batch_size), steps,
                   section.epochs, memory)


def plan_rows(
    cfg: Config, stages: Sequence[str], datasets: dict[str, SegmentationDataset],
    size: tuple[int, int], report: DryRunReport,
) -> None:
    """One or two rows per stage, with memory estimates; zero-step training is an error."""
    lists = stage_lists(cfg, stages)
    first = next(iter(datasets.values()), None)
    classes = first.num_classes if first is not None else 21
    world = report.world_size
    cam_flip = "x2 flip" if cfg.cam.infer_flip else ""
    for stage in stages:
        spec = lists[stage]
        if stage == "cam":
            mem = _estimate(report, "cam training", lambda: cam_train_memory(cfg, classes - 1))
            report.rows.append(_train_row("cam", cfg.cam, spec["train"], datasets, world, mem))
            mem = _estimate(report, "cam inference",
                            lambda: cam_infer_memory(cfg, classes - 1, size))
            report.rows.append(PlanRow(
                "cam", "infer", spec["infer"], _count(datasets, spec["infer"]),
                f"{cfg.cam.infer_batch} {cam_flip}".strip(), memory=mem,
                note=f"{len(cfg.cam.infer_scales)} scales"))
        elif stage == "crf":
            report.rows.append(PlanRow(
                "crf", "infer", spec["infer"], _count(datasets, spec["infer"]), "1",
                note=f"dense CRF on the CPU, {cfg.run.num_workers} worker processes",
                device="CPU"))
        elif stage == "aff":
            mem = _estimate(report, "aff training", lambda: aff_train_memory(cfg))
            report.rows.append(_train_row("aff", cfg.aff, spec["train"], datasets, world, mem))
        elif stage == "rw":
            mem = _estimate(report, "rw inference", lambda: rw_infer_memory(cfg, size))
            report.rows.append(PlanRow("rw", "infer", spec["infer"],
                                       _count(datasets, spec["infer"]), "1", memory=mem,
                                       note=f"{2 ** cfg.rw.logt} walk steps"))
        elif stage == "seg":
            mem = _estimate(report, "seg training", lambda: seg_train_memory(cfg, classes))
            report.rows.append(_train_row("seg", cfg.seg, spec["train"], datasets, world, mem))
            mem = _estimate(report, "seg inference",
                            lambda: seg_infer_memory(cfg, classes, size))
            seg_flip = "x2 flip" if cfg.seg.infer_flip else ""
            report.rows.append(PlanRow(
                "seg", "infer", spec["infer"], _count(datasets, spec["infer"]),
                f"{cfg.seg.infer_batch} {seg_flip}".strip(), memory=mem,
                note=f"{len(cfg.seg.infer_scales)} scales"))
    for row in report.rows:
        if row.step == "train" and row.images and row.steps_per_epoch == 0:
            report.errors.append(
                f"{row.stage} training: {row.images} images over {world} GPU(s) give no full "
                f"batch of {row.batch}; lower {row.stage}.batch_size"
            )


def world_warnings(cfg: Config, stages: Sequence[str], report: DryRunReport) -> None:
    """Over several GPUs, each training stage's batch is per GPU: say what that does."""
    world = report.world_size
    if world <= 1:
        return
    for stage in ("cam", "aff", "seg"):
        if stage in stages:
            batch = getattr(cfg, stage).batch_size
            report.warnings.append(
                f"{stage}: {stage}.batch_size is per GPU: the global batch is {batch} x {world} = "
                f"{batch * world} and the learning rate is not scaled; set {stage}.batch_size to "
                "the paper's batch / world size to keep its schedule"
            )
