"""Stage 3: train AffinityNet on the CRF scores of its training list."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from ssenet.affinity import AffinityObjective
from ssenet.config import Config
from ssenet.data.affinity import AffinityTrainDataset, AffinityTrainTransform
from ssenet.data.source import open_split
from ssenet.models.configured import build_affinity_from_config
from ssenet.stages.common import aff_train_list
from ssenet.stages.layout import RunLayout
from ssenet.stages.registry import Stage
from ssenet.stages.training import (
    input_files_stamp,
    resize_long_augment,
    train_section_network,
    trained_summary,
    training_plan_rows,
)
from ssenet.trainer import FitResult

if TYPE_CHECKING:
    from ssenet.dryrun.plan import PlanInputs, PlanRow

REFINER = "affinity"  # psa's refiner: CRF -> AffinityNet -> random walk (stages aff and rw)


def train_affinity(
    cfg: Config, crf_dir: str | Path, out_dir: str | Path, progress: bool = True
) -> FitResult:
    """Train AffinityNet on `aff.train_list` (default `data.train_list`) with CRF scores.

    Writes out_dir/model.pth, train.json, checkpoints/ and tb/; resumable like every stage
    (see `ssenet.trainer.fit`). The stamps of the CRF score files are part of the digest
    because they decide the labels this network learns from.
    """
    crf_dir = Path(crf_dir)
    dataset = open_split(cfg.data, aff_train_list(cfg))
    # The CRF files' own stamps stand for everything upstream (CAM network, inference, CRF).
    scores = input_files_stamp(crf_dir, dataset.ids, ".npz", "CRF scores",
                               "run the CRF stage on the training list first")  # fmt: skip
    aff = cfg.aff

    def train_set(model: nn.Module) -> AffinityTrainDataset:
        augment = resize_long_augment(AffinityTrainTransform, aff, model)
        stride = cfg.model.output_stride
        return AffinityTrainDataset(dataset, crf_dir, augment, stride=stride, seed=cfg.run.seed)

    return train_section_network(
        cfg, "aff", "affinity", out_dir, scores,
        build=lambda: build_affinity_from_config(cfg),
        dataset=train_set,
        objective=lambda model: AffinityObjective(model, aff.radius),
        progress=progress,
    )  # fmt: skip


def run(cfg: Config, layout: RunLayout, progress: bool = True) -> dict:
    """Train AffinityNet on the CRF scores of its training list."""
    return trained_summary(train_affinity(cfg, layout.crf_scores, layout.stage("aff"), progress))


def plan(s: PlanInputs) -> list[PlanRow]:
    """The dry run's row: training, with its GPU memory."""
    from ssenet.dryrun.stage_memory import aff_train_memory

    return training_plan_rows(s, "aff", s.cfg.aff, lambda: aff_train_memory(s.cfg))


STAGE = Stage(
    name="aff",
    title="AffinityNet",
    run=run,
    produces=("affinity network",),
    consumes=lambda cfg: {"crf scores": [aff_train_list(cfg)]},
    trains_on=lambda cfg: [aff_train_list(cfg)],
    refiner=REFINER,
    section="aff",
    plan=plan,
    network="AffinityNet",
)
