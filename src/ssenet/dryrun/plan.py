"""The dry run's plan: per stage, the images, batch, steps and GPU memory of each step.

A training step gets steps per epoch and in total per GPU for the world size; an inference step
its passes per image. Every step the stage runs on the GPU gets a memory estimate. Each stage
brings its planner (`Stage.plan` in its module), which reads one `PlanInputs` and returns the
stage's rows; a stage without one gets its lists and image counts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ssenet.config import Config
from ssenet.data.datasets import SegmentationDataset
from ssenet.dryrun.memory import MemoryEstimate
from ssenet.dryrun.report import DryRunReport, PlanRow
from ssenet.errors import SsenetError
from ssenet.stages import STAGES, stage_lists


def steps_per_epoch(images: int, batch_size: int, world_size: int = 1) -> int:
    """Optimizer steps per epoch on each GPU, as `ssenet.trainer.make_loader` batches.

    DistributedSampler pads the list to a multiple of the world size (ceil), then each rank
    drops its last incomplete batch (floor).
    """
    return math.ceil(images / world_size) // batch_size


@dataclass
class PlanInputs:
    """What a stage's planner reads; its estimate errors and warnings go to `report`."""

    cfg: Config
    stage: str
    lists: dict[str, list[str]]  # this stage's lists by use: train, infer, score
    datasets: dict[str, SegmentationDataset]  # every list that could be opened
    size: tuple[int, int]  # the largest sampled image
    classes: int  # background included
    report: DryRunReport

    def images(self, names: Sequence[str]) -> int | None:
        """Distinct images of the lists; None when one of them could not be opened."""
        if any(n not in self.datasets for n in names):
            return None
        return len({i for n in names for i in self.datasets[n].ids})

    def estimate(self, what: str, compute: Callable[[], MemoryEstimate]) -> MemoryEstimate | None:
        """One estimate; a config the stage would reject is an error, anything else a warning."""
        try:
            return compute()
        except SsenetError as err:
            self.report.errors.append(f"{what}: {err}")
        except Exception as err:  # noqa: BLE001 -- the estimate is advice, never a reason to stop
            self.report.warnings.append(
                f"{what}: no memory estimate ({type(err).__name__}: {err})")
        return None

    def train_row(self, stage: str, section: Any, memory: MemoryEstimate | None) -> PlanRow:
        """The training step: its steps per epoch on each GPU of the world size (`section`: the
        stage's config section, with batch_size and epochs)."""
        lists = self.lists["train"]
        images = self.images(lists)
        steps = None if images is None else steps_per_epoch(
            images, section.batch_size, self.report.world_size)
        return PlanRow(stage, "train", list(lists), images, str(section.batch_size), steps,
                       section.epochs, memory)

    def infer_row(
        self, stage: str, batch: str, memory: MemoryEstimate | None, note: str,
        device: str = "GPU",
    ) -> PlanRow:
        """The inference step over the lists the stage makes labels for."""
        lists = self.lists["infer"]
        return PlanRow(stage, "infer", lists, self.images(lists), batch, memory=memory,
                       note=note, device=device)

    @staticmethod
    def flip_batch(section: Any) -> str:
        """Images per forward pass of an inference section; the flipped copies double them."""
        batch = section.infer_batch
        return f"{batch} x2 flip" if section.infer_flip else str(batch)


def generic_rows(s: PlanInputs) -> list[PlanRow]:
    """A registered stage without a planner of its own: its lists and image counts."""
    name = s.stage
    return [PlanRow(name, use, names, s.images(names), "-") for use, names in s.lists.items()
            if use != "score"]  # fmt: skip


def plan_rows(
    cfg: Config, stages: Sequence[str], datasets: dict[str, SegmentationDataset],
    size: tuple[int, int], report: DryRunReport,
) -> None:
    """One or two rows per stage, with memory estimates; zero-step training is an error."""
    lists = stage_lists(cfg, stages)
    first = next(iter(datasets.values()), None)
    classes = first.num_classes if first is not None else 21
    for stage in stages:
        inputs = PlanInputs(cfg, stage, lists[stage], datasets, size, classes, report)
        report.rows += (STAGES[stage].plan or generic_rows)(inputs)
    for row in report.rows:
        if row.step == "train" and row.images and row.steps_per_epoch == 0:
            key = f"{STAGES[row.stage].section or row.stage}.batch_size"
            report.errors.append(
                f"{row.stage} training: {row.images} images over {report.world_size} GPU(s) "
                f"give no full batch of {row.batch}; lower {key}"
            )


def world_warnings(cfg: Config, stages: Sequence[str], report: DryRunReport) -> None:
    """Over several GPUs, each training stage's batch is per GPU: say what that does."""
    world = report.world_size
    if world <= 1:
        return
    for stage in stages:
        section = STAGES[stage].section
        if not section or STAGES[stage].trains_on is None:
            continue
        batch = getattr(cfg, section).batch_size
        report.warnings.append(
            f"{stage}: {section}.batch_size is per GPU: the global batch is {batch} x {world} = "
            f"{batch * world} and the learning rate is not scaled; set {section}.batch_size to "
            "the paper's batch / world size to keep its schedule"
        )
