"""Stage 3: train AffinityNet on the CRF scores of its training list."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from ssenet.affinity import AffinityObjective
from ssenet.config import Config
from ssenet.data.affinity import AffinityTrainDataset, AffinityTrainTransform
from ssenet.data.source import open_split
from ssenet.inference import require_inputs
from ssenet.models.configured import build_affinity_from_config
from ssenet.provenance import read_stamp, stamp
from ssenet.stages.common import aff_train_list
from ssenet.stages.layout import RunLayout
from ssenet.stages.registry import Stage
from ssenet.trainer import FitResult, train_network

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
    out_dir, crf_dir = Path(out_dir), Path(crf_dir)
    dataset = open_split(cfg.data, aff_train_list(cfg))
    require_inputs(crf_dir, dataset.ids, ".npz", "CRF scores",
                   "run the CRF stage on the training list first")  # fmt: skip
    # The CRF files' own stamps stand for everything upstream (CAM network, inference, CRF).
    scores = stamp(*(read_stamp(crf_dir / f"{i}.npz") for i in dataset.ids))
    digest = cfg.digest("data", "model", "aff") + "-" + scores[:12]
    aff = cfg.aff

    def train_set(model: nn.Module) -> AffinityTrainDataset:
        augment = AffinityTrainTransform(
            resize_long=aff.resize_long,
            crop_size=aff.crop_size,
            hflip=aff.hflip,
            color_jitter=aff.color_jitter,
            mean=model.backbone.mean,
            std=model.backbone.std,
        )
        stride = cfg.model.output_stride
        return AffinityTrainDataset(dataset, crf_dir, augment, stride=stride, seed=cfg.run.seed)

    return train_network(
        name="affinity",
        out_dir=out_dir,
        digest=digest,
        run=cfg.run,
        build=lambda: build_affinity_from_config(cfg),
        dataset=train_set,
        objective=lambda model: AffinityObjective(model, aff.radius),
        optim_cfg=aff,
        epochs=aff.epochs,
        batch_size=aff.batch_size,
        progress=progress,
    )


def run(cfg: Config, layout: RunLayout, progress: bool = True) -> dict:
    """Train AffinityNet on the CRF scores of its training list."""
    trained = train_affinity(cfg, layout.crf_scores, layout.stage("aff"), progress=progress)
    return {"weights": str(trained.weights), "steps": trained.meta["steps"]}


def plan(s: PlanInputs) -> list[PlanRow]:
    """The dry run's row: training, with its GPU memory."""
    from ssenet.dryrun.stage_memory import aff_train_memory

    train = s.estimate("aff training", lambda: aff_train_memory(s.cfg))
    return [s.train_row("aff", s.cfg.aff, train)]


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
