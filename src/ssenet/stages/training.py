"""What the stages that train a network share (CAM network, AffinityNet, IRNet's boundary
network, DeepLab): the training run from their config section, the stamp of the files they
learn from, their augmentations and the dry run's rows of their training."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from torch import nn

from ssenet.config import Config, IrnConfig, SegConfig
from ssenet.data.datasets import SegmentationDataset
from ssenet.data.pseudo_labels import PseudoLabelDataset
from ssenet.data.transforms import JointTrainTransform
from ssenet.inference import require_inputs
from ssenet.provenance import read_stamp, stamp
from ssenet.trainer import FitResult, train_network

if TYPE_CHECKING:
    from ssenet.dryrun.memory import MemoryEstimate
    from ssenet.dryrun.plan import PlanInputs, PlanRow

Augment = TypeVar("Augment")


def train_section_network(
    cfg: Config,
    section: str,
    name: str,
    out_dir: str | Path,
    inputs_stamp: str,
    build: Callable[[], nn.Module],
    dataset: Callable[[nn.Module], Any],
    objective: Callable[[nn.Module], nn.Module],
    progress: bool,
) -> FitResult:
    """`train_network` with the settings of config section `section` ("cam", "aff", "irn",
    "seg"): its optimiser, epochs and batch size; `name` names the network in the progress bar
    and errors. The digest covers the data, model and that section's settings plus the first
    12 characters of `inputs_stamp`, which stands for what the network learns from, so a
    checkpoint is never continued on other inputs."""
    settings = getattr(cfg, section)
    return train_network(
        name=name,
        out_dir=Path(out_dir),
        digest=cfg.digest("data", "model", section) + "-" + inputs_stamp[:12],
        run=cfg.run,
        build=build,
        dataset=dataset,
        objective=objective,
        optim_cfg=settings,
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        progress=progress,
    )


def input_files_stamp(folder: Path, ids: Sequence[str], suffix: str, what: str, hint: str) -> str:
    """One stamp of the stamps of the files `folder/<id><suffix>` a network learns from (each
    stands for everything upstream of it); refuses, naming `what` and `hint`, when any is
    missing."""
    require_inputs(folder, ids, suffix, what, hint)
    return stamp(*(read_stamp(folder / f"{i}{suffix}") for i in ids))


def trained_summary(trained: FitResult) -> dict:
    """What a stage that only trains a network returns: its weights and how many steps."""
    return {"weights": str(trained.weights), "steps": trained.meta["steps"]}


def resize_long_augment(
    transform: Callable[..., Augment], section: Any, model: nn.Module
) -> Augment:
    """The augmentation `transform` (`CamTrainTransform`, `AffinityTrainTransform`) of a
    network that learns from images rescaled by their long side: the resize_long, crop_size,
    hflip and color_jitter of its config section, normalised as `model`'s backbone expects."""
    return transform(
        resize_long=section.resize_long,
        crop_size=section.crop_size,
        hflip=section.hflip,
        color_jitter=section.color_jitter,
        mean=model.backbone.mean,
        std=model.backbone.std,
    )


def pseudo_label_train_set(
    dataset: SegmentationDataset, label_dir: Path, section: IrnConfig | SegConfig, seed: int
) -> Callable[[nn.Module], PseudoLabelDataset]:
    """The `dataset` argument of `train_network` for a network that learns from label PNGs
    `label_dir/<id>.png` (the boundary network, DeepLab): the images with their labels under one
    random scale, crop and flip from `section` (scale_range, crop_size, hflip), normalised as
    the model's backbone expects."""

    def train_set(model: nn.Module) -> PseudoLabelDataset:
        augment = JointTrainTransform(
            scale=section.scale_range,
            crop_size=section.crop_size,
            hflip=section.hflip,
            mean=model.backbone.mean,
            std=model.backbone.std,
        )
        return PseudoLabelDataset(dataset, label_dir, augment, seed=seed)

    return train_set


def training_plan_rows(
    s: PlanInputs, stage: str, section: Any, train_memory: Callable[[], MemoryEstimate]
) -> list[PlanRow]:
    """The dry run's row of a stage's training (`section`: its config section, with batch_size
    and epochs), with its GPU memory."""
    train = s.estimate(f"{stage} training", train_memory)
    return [s.train_row(stage, section, train)]


def network_plan_rows(
    s: PlanInputs,
    stage: str,
    section: Any,
    train_memory: Callable[[], MemoryEstimate],
    infer_memory: Callable[[], MemoryEstimate],
) -> list[PlanRow]:
    """The dry run's rows of a stage that trains a network and then infers with it at several
    scales (`section`: its config section, with infer_scales, infer_batch and infer_flip):
    training and inference, each with its GPU memory."""
    rows = training_plan_rows(s, stage, section, train_memory)  # the training's estimate first
    infer = s.estimate(f"{stage} inference", infer_memory)
    return [*rows, s.infer_row(stage, s.flip_batch(section), infer,
                               f"{len(section.infer_scales)} scales")]  # fmt: skip
