"""The dry run's plan: per stage, the images, batch, steps and GPU memory of each step.

A training step gets steps per epoch and in total per GPU for the world size; an inference step
its passes per image. Every step the stage runs on the GPU gets a memory estimate. Each stage has
one planner (`STAGE_PLANS`), which reads one `PlanInputs` and returns the stage's rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ssenet.config import AffinityConfig, CamConfig, Config, SegConfig
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

    def train_row(
        self, stage: str, section: CamConfig | AffinityConfig | SegConfig,
        memory: MemoryEstimate | None,
    ) -> PlanRow:
        """The training step: its steps per epoch on each GPU of the world size."""
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


def _infer_batch(section: CamConfig | SegConfig) -> str:
    """Images per forward pass; the flipped copies double them."""
    return f"{section.infer_batch} x2 flip" if section.infer_flip else str(section.infer_batch)


def _cam_rows(s: PlanInputs) -> list[PlanRow]:
    cfg, foreground = s.cfg, s.classes - 1
    train = s.estimate("cam training", lambda: cam_train_memory(cfg, foreground))
    infer = s.estimate("cam inference", lambda: cam_infer_memory(cfg, foreground, s.size))
    return [s.train_row("cam", cfg.cam, train),
            s.infer_row("cam", _infer_batch(cfg.cam), infer,
                        f"{len(cfg.cam.infer_scales)} scales")]


def _crf_rows(s: PlanInputs) -> list[PlanRow]:
    """Where the CRF runs, as `s2_crf` decides: pydensecrf on the CPU in crf_workers processes;
    the torch backend on the GPU in one process when run.device gives a GPU."""
    from ssenet.crf import resolve_backend

    run = s.cfg.run
    workers = run.num_workers if run.crf_workers is None else run.crf_workers
    try:
        backend = resolve_backend(s.cfg.crf.backend)
    except SsenetError as err:
        s.report.errors.append(str(err))
        backend = s.cfg.crf.backend
    on_cpu = f"on the CPU, {workers} worker process(es)"
    if backend == "torch" and run.device not in ("cpu", "mps"):
        note = f"dense CRF (torch) on the GPU, one process a rank; without a GPU {on_cpu}"
        return [s.infer_row("crf", "1", None, note)]
    return [s.infer_row("crf", "1", None, f"dense CRF ({backend}) {on_cpu}", device="CPU")]


def _aff_rows(s: PlanInputs) -> list[PlanRow]:
    train = s.estimate("aff training", lambda: aff_train_memory(s.cfg))
    return [s.train_row("aff", s.cfg.aff, train)]


def _rw_rows(s: PlanInputs) -> list[PlanRow]:
    infer = s.estimate("rw inference", lambda: rw_infer_memory(s.cfg, s.size))
    return [s.infer_row("rw", str(s.cfg.cam.infer_batch), infer,
                        f"{2 ** s.cfg.rw.logt} walk steps")]  # fmt: skip


def _seg_rows(s: PlanInputs) -> list[PlanRow]:
    cfg = s.cfg
    train = s.estimate("seg training", lambda: seg_train_memory(cfg, s.classes))
    infer = s.estimate("seg inference", lambda: seg_infer_memory(cfg, s.classes, s.size))
    return [s.train_row("seg", cfg.seg, train),
            s.infer_row("seg", _infer_batch(cfg.seg), infer,
                        f"{len(cfg.seg.infer_scales)} scales")]


def generic_rows(s: PlanInputs) -> list[PlanRow]:
    """A registered stage without a planner of its own: its lists and image counts."""
    name = s.stage
    return [PlanRow(name, use, names, s.images(names), "-") for use, names in s.lists.items()
            if use != "score"]  # fmt: skip


# The built-in stages' planners; a registered stage may bring its own (`Stage.plan`).
STAGE_PLANS: dict[str, Callable[[PlanInputs], list[PlanRow]]] = {
    "cam": _cam_rows,
    "crf": _crf_rows,
    "aff": _aff_rows,
    "rw": _rw_rows,
    "seg": _seg_rows,
}


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
        planner = STAGES[stage].plan or STAGE_PLANS.get(stage, generic_rows)
        report.rows += planner(inputs)
    for row in report.rows:
        if row.step == "train" and row.images and row.steps_per_epoch == 0:
            report.errors.append(
                f"{row.stage} training: {row.images} images over {report.world_size} GPU(s) "
                f"give no full batch of {row.batch}; lower {row.stage}.batch_size"
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
