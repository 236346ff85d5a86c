"""IRNet refiner, stage 2 of 3: train the class-boundary network (`ssenet.models.boundary`) on
the relation labels of its training list, into `irn/` (model.pth, train.json, checkpoints/, tb/).

The reference's recipe (step/train_irn.py): random rescale 0.5-1.5, flip, a 512 crop, batches
of 32, 3 epochs of poly-scheduled SGD at lr 0.1 with weight decay 1e-4, pairs within radius 10
on the stride-4 grid; the backbone stays frozen.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ssenet.config import Config
from ssenet.data.datasets import SegmentationDataset
from ssenet.data.source import open_split
from ssenet.irn import BoundaryObjective
from ssenet.models.boundary import (
    BOUNDARY_STRIDE,
    boundary_maps,
    build_boundary_from_config,
    configured_boundary_model,
    load_boundary_model,
)
from ssenet.runtime import select_device
from ssenet.stages.irn_labels import REFINER, irn_train_list
from ssenet.stages.layout import RunLayout
from ssenet.stages.registry import Stage
from ssenet.stages.training import (
    input_files_stamp,
    pseudo_label_train_set,
    train_section_network,
    trained_summary,
    training_plan_rows,
)
from ssenet.trainer import FitResult

if TYPE_CHECKING:
    from ssenet.dryrun.plan import PlanInputs, PlanRow


def train_boundary(
    cfg: Config, label_dir: str | Path, out_dir: str | Path, progress: bool = True
) -> FitResult:
    """Train the boundary network on irn.train_list (default data.train_list) with the relation
    labels `label_dir/<id>.png`; resumable like every stage (see `ssenet.trainer.fit`). The
    labels' stamps are part of the digest: they stand for everything upstream."""
    label_dir = Path(label_dir)
    dataset = open_split(cfg.data, irn_train_list(cfg))
    labels = input_files_stamp(label_dir, dataset.ids, ".png", "relation labels",
                               "run the irn_labels stage on the training list first")  # fmt: skip
    irn = cfg.irn
    return train_section_network(
        cfg, "irn", "irn boundary", out_dir, labels,
        build=lambda: build_boundary_from_config(cfg),
        dataset=pseudo_label_train_set(dataset, label_dir, irn, cfg.run.seed),
        objective=lambda model: BoundaryObjective(model, irn.train_radius),
        progress=progress,
    )  # fmt: skip


def run(cfg: Config, layout: RunLayout, progress: bool = True) -> dict:
    """Train the boundary network on the relation labels of its training list."""
    label_dir = layout.labels("irn_labels")
    return trained_summary(train_boundary(cfg, label_dir, layout.stage("irn"), progress))


def boundary_pictures(
    cfg: Config, layout: RunLayout, dataset: SegmentationDataset, ids: list[str]
) -> dict[str, np.ndarray]:
    """The report's picture of each example image: the trained network's boundary map, as the
    walk computes it (with the mirror image), 0 (black) no boundary to 255 (white) boundary, at
    the image's size; {} before the network is trained."""
    weights = layout.weights("irn")
    if not weights.is_file():
        return {}
    model = load_boundary_model(cfg, weights).to(select_device(cfg.run.device))
    pictures = {}
    for image_id in ids:
        image = dataset.read_image(image_id)
        batch = torch.from_numpy(image)[None]
        boundary = boundary_maps(model, batch, cfg.irn.crop_size, cfg.run.amp)[0]
        pictures[image_id] = boundary_picture(boundary.cpu().numpy(), image.shape[:2])
    return pictures


def boundary_picture(boundary: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) uint8 grayscale of a stride-4 boundary map. Each cell becomes a 4 x 4 block
    (cropped at the image's edge) rather than an interpolation: the picture shows the
    network's own grid, nothing smoothed in."""
    cells = np.rint(np.clip(boundary, 0.0, 1.0) * 255.0).astype(np.uint8)
    full = cells.repeat(BOUNDARY_STRIDE, axis=0).repeat(BOUNDARY_STRIDE, axis=1)
    return full[: size[0], : size[1]]


def plan(s: PlanInputs) -> list[PlanRow]:
    """The dry run's row: training, with its GPU memory (the frozen backbone keeps no
    activations for the backward pass)."""
    return training_plan_rows(s, "irn", s.cfg.irn, lambda: train_memory(s.cfg))


def train_memory(cfg: Config):
    """The dry run's estimate of one training batch, on the meta device."""
    from ssenet.dryrun.memory import estimate_training_memory, on_meta, optimizer_slots

    model = on_meta(lambda: configured_boundary_model(cfg, pretrained=False))
    batch, crop = cfg.irn.batch_size, cfg.irn.crop_size
    images = torch.empty(batch, 3, crop, crop, device="meta")
    labels = torch.zeros(batch, crop, crop, dtype=torch.long, device="meta")
    slots = optimizer_slots(cfg.irn.optimizer, cfg.irn.momentum, cfg.irn.weight_decay)
    objective = BoundaryObjective(model, cfg.irn.train_radius)
    return estimate_training_memory(model, objective, (images, labels), slots)


# `ssenet demo --refiner irn`: every irn value not set here is the reference's
# (docs/refiners.md). Scaled to the demo's images as the random walk's radius is (demo.yaml):
# - irn.crop_size the whole image (IRNet's 512 crop holds most of a ~500-px VOC image);
# - pair radii at about IRNet's share of the stride-4 grid: its training radius 10 of the
#   128-cell crop (8%) -> 4 of 40 cells; its walk radius 5 of about 125 cells (4%) -> 2;
# - the boundary maps in batches of 8 images, as the demo's other inference.
# The quick demo's boundary network learns from its 48 `train` images, 8 a batch.
DEMO_SETTINGS = {
    "default": ("irn.crop_size=160", "irn.train_radius=4", "irn.walk_radius=2",
                "irn.infer_batch=8"),
    "quick": ("irn.crop_size=80", "irn.train_radius=4", "irn.walk_radius=2", "irn.infer_batch=8",
              "irn.train_list=train", "irn.batch_size=8"),
}  # fmt: skip
# The share of `ssenet demo --refiner irn`'s time IRNet's three stages take (irn_labels, irn,
# irn_rw, both methods), from the stage times of one run (results.json meta.stage_seconds):
# default, seed 2: 140.9 of 748.7 s; quick, seed 0: 4.7 of 50.5 s.
DEMO_SHARE = {"default": 140.9 / 748.7, "quick": 4.7 / 50.5}

STAGE = Stage(
    name="irn",
    title="IRNet boundaries",
    run=run,
    produces=("irn boundary network",),
    consumes=lambda cfg: {"irn relation labels": [irn_train_list(cfg)]},
    trains_on=lambda cfg: [irn_train_list(cfg)],
    refiner=REFINER,
    section="irn",
    plan=plan,
    network="IRNet boundary network",
    example_figure=boundary_pictures,
    demo_settings=DEMO_SETTINGS,
    demo_share=DEMO_SHARE,  # the refiner's three stages together
)
