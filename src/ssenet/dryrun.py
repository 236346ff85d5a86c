"""`ssenet run --dry-run`: check a config, its data and its weights, and plan every stage.

Nothing is trained or written. Every problem found is collected, so a user fixes them all in one
round before spending GPU hours: the dataset root and image directory, every image list a stage
reads (all its images present, a sample readable), the ground truth used for scoring (and the
evaluation guard), the ImageNet weights file (it must load into the model), per-section settings.
Per stage it prints images, batch, steps per epoch and in total per GPU for a world size, and an
estimate of GPU memory per batch computed on torch's meta device (no data, no arithmetic).
"""

from __future__ import annotations

import math
import os
import textwrap
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ssenet.config import Config, validate
from ssenet.data.datasets import SegmentationDataset
from ssenet.data.source import open_split
from ssenet.data.voc import IMAGE_DIR, LIST_DIR
from ssenet.data.voc import read_id_list as read_voc_list
from ssenet.errors import SsenetError
from ssenet.stages import STAGES, stage_lists
from ssenet.stages.common import check_pseudo_label_scoring, gt_dir, missing_ground_truth

SAMPLE_IMAGES = 20
GIB = 2**30
MEMORY_METHOD = (
    "GPU memory per batch (estimate, fp32): training = parameters + gradients + optimizer state "
    "(from the parameter counts) + the activations autograd saves for backward, summed over one "
    "forward of the stage's loss on a batch of crops run on torch's meta device (shapes only, no "
    "data); inference = parameters + the largest layer input + output at the largest test scale "
    "of the largest sampled image. Not included: the CUDA context, cuDNN workspaces and allocator "
    "slack (allow about 1 GiB more); with run.amp the activations are about halved."
)


@dataclass
class MemoryEstimate:
    """Bytes of one batch on the GPU, by kind."""

    params: int = 0
    grads: int = 0
    optimizer: int = 0
    activations: int = 0

    @property
    def total(self) -> int:
        return self.params + self.grads + self.optimizer + self.activations

    def breakdown(self) -> str:
        parts = [f"params {_size(self.params)}"]
        if self.grads:
            parts += [f"grads {_size(self.grads)}", f"optimizer {_size(self.optimizer)}"]
        parts.append(f"activations {_size(self.activations)}")
        return " + ".join(parts)


@dataclass
class PlanRow:
    """One step of a stage: training (with steps) or inference (passes per image)."""

    stage: str
    step: str
    lists: list[str]
    images: int | None  # None: a list could not be opened
    batch: str
    steps_per_epoch: int | None = None
    epochs: int | None = None
    memory: MemoryEstimate | None = None
    note: str = ""
    device: str = "GPU"

    @property
    def total_steps(self) -> int | None:
        if self.steps_per_epoch is None or self.epochs is None:
            return None
        return self.steps_per_epoch * self.epochs


@dataclass
class DryRunReport:
    config_name: str
    stages: list[str]
    world_size: int
    checks: list[str] = field(default_factory=list)
    rows: list[PlanRow] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


# ---------------------------------------------------------------------------------------------
# Arithmetic
# ---------------------------------------------------------------------------------------------


def default_world_size() -> int:
    """WORLD_SIZE from the environment (torchrun sets it), else 1."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def steps_per_epoch(images: int, batch_size: int, world_size: int = 1) -> int:
    """Optimizer steps per epoch on each GPU, as `ssenet.trainer.make_loader` batches.

    DistributedSampler pads the list to a multiple of the world size (ceil), then each rank
    drops its last incomplete batch (floor).
    """
    return math.ceil(images / world_size) // batch_size


def optimizer_slots(optimizer: str, momentum: float, weight_decay: float) -> int:
    """Tensors of optimizer state per trainable parameter."""
    if optimizer == "adamw":
        return 2  # exp_avg, exp_avg_sq
    if optimizer == "psa_sgd":  # the reference's SGD gets weight_decay as its momentum
        return int(weight_decay != 0)
    return int(momentum != 0)


def _nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def saved_activation_bytes(
    forward: Callable[[], object], exclude: Iterable[torch.Tensor] = ()
) -> int:
    """Bytes of the tensors autograd keeps for backward while `forward()` runs.

    Views of one storage count once: the storage object identifies them on any device,
    including meta, where nothing is allocated. `exclude` (the parameters and buffers, which
    convolutions save for their input gradient) is memory counted elsewhere.
    """
    storages: dict[int, int] = {t.untyped_storage()._cdata: 0 for t in exclude}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages.setdefault(storage._cdata, storage.nbytes())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        forward()
    return sum(storages.values())


def estimate_training_memory(
    model: nn.Module, objective: nn.Module, inputs: Sequence[torch.Tensor], slots: int
) -> MemoryEstimate:
    """Parameters, gradients, `slots` optimizer tensors per trainable parameter, activations."""
    trainable = _nbytes(p for p in model.parameters() if p.requires_grad)
    params = _nbytes(model.parameters()) + _nbytes(model.buffers())
    model.train()
    state = [*model.parameters(), *model.buffers()]
    activations = saved_activation_bytes(lambda: objective(*inputs), exclude=state)
    return MemoryEstimate(params, trainable, slots * trainable, activations)


def estimate_inference_memory(model: nn.Module, images: torch.Tensor) -> MemoryEstimate:
    """Parameters plus the largest input + output of any leaf layer (no autograd state)."""
    largest = 0

    def hook(module, args, output) -> None:
        nonlocal largest
        tensors = [t for t in (*args, output) if isinstance(t, torch.Tensor)]
        largest = max(largest, _nbytes(tensors))

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    model.eval()
    try:
        with torch.no_grad():
            model(images)
    finally:
        for handle in handles:
            handle.remove()
    return MemoryEstimate(params=_nbytes(model.parameters()) + _nbytes(model.buffers()),
                          activations=largest)


# ---------------------------------------------------------------------------------------------
# Models on the meta device
# ---------------------------------------------------------------------------------------------


def _meta(builder: Callable[[], nn.Module]) -> nn.Module:
    with torch.device("meta"):
        return builder()


def _cam_model(cfg: Config, num_classes: int) -> nn.Module:
    from ssenet.models.configured import configured_cam_model

    return _meta(lambda: configured_cam_model(cfg, num_classes, pretrained=False))


def _affinity_model(cfg: Config) -> nn.Module:
    from ssenet.models import build_affinity_model

    m = cfg.model
    return _meta(lambda: build_affinity_model(
        m.backbone, m.width, m.output_stride, False, m.freeze_bn
    ))


def _seg_model(cfg: Config, num_classes: int) -> nn.Module:
    from ssenet.models.deeplab import build_seg_model

    return _meta(lambda: build_seg_model(cfg.model, cfg.seg.head, num_classes, imagenet=False))


def _images(batch: int, height: int, width: int) -> torch.Tensor:
    return torch.empty(batch, 3, height, width, device="meta")


def cam_train_memory(cfg: Config, num_foreground: int) -> MemoryEstimate:
    from ssenet.cam import CamObjective

    model = _cam_model(cfg, num_foreground)
    batch, crop = cfg.cam.batch_size, cfg.cam.crop_size
    labels = torch.ones(batch, num_foreground, device="meta")
    slots = optimizer_slots(cfg.cam.optimizer, cfg.cam.momentum, cfg.cam.weight_decay)
    objective = CamObjective(model, cfg.cam)
    return estimate_training_memory(model, objective, (_images(batch, crop, crop), labels), slots)


def aff_train_memory(cfg: Config) -> MemoryEstimate:
    from ssenet.affinity import AffinityObjective

    model = _affinity_model(cfg)
    batch, crop = cfg.aff.batch_size, cfg.aff.crop_size
    images = _images(batch, crop, crop)
    with torch.no_grad():
        grid = model(images).shape[-2:]
    # The training labels come at stride output_stride; a mismatch is the objective's error.
    stride = cfg.model.output_stride
    labels = torch.zeros(batch, math.ceil(crop / stride), math.ceil(crop / stride),
                         dtype=torch.long, device="meta")
    if tuple(grid) != tuple(labels.shape[-2:]):
        raise SsenetError(
            f"config key aff.crop_size: {crop} gives a {tuple(grid)} feature grid but "
            f"{tuple(labels.shape[-2:])} label cells at stride {stride}; use a multiple of {stride}"
        )
    slots = optimizer_slots(cfg.aff.optimizer, cfg.aff.momentum, cfg.aff.weight_decay)
    objective = AffinityObjective(model, cfg.aff.radius)
    return estimate_training_memory(model, objective, (images, labels), slots)


def seg_train_memory(cfg: Config, num_classes: int) -> MemoryEstimate:
    from ssenet.segmentation import SegObjective

    model = _seg_model(cfg, num_classes)
    batch, crop = cfg.seg.batch_size, cfg.seg.crop_size
    labels = torch.zeros(batch, crop, crop, dtype=torch.long, device="meta")
    slots = optimizer_slots(cfg.seg.optimizer, cfg.seg.momentum, cfg.seg.weight_decay)
    objective = SegObjective(model)
    return estimate_training_memory(
        model, objective, (_images(batch, crop, crop), labels), slots
    )


def _scaled(size: tuple[int, int], scales: Sequence[float]) -> tuple[int, int]:
    top = max(scales)
    return max(1, round(size[0] * top)), max(1, round(size[1] * top))


def cam_infer_memory(cfg: Config, num_foreground: int, size: tuple[int, int]) -> MemoryEstimate:
    batch = cfg.cam.infer_batch * (2 if cfg.cam.infer_flip else 1)
    model = _cam_model(cfg, num_foreground)
    return estimate_inference_memory(model, _images(batch, *_scaled(size, cfg.cam.infer_scales)))


def rw_infer_memory(cfg: Config, size: tuple[int, int]) -> MemoryEstimate:
    stride = cfg.model.output_stride
    padded = [math.ceil(side / stride) * stride for side in size]
    return estimate_inference_memory(_affinity_model(cfg), _images(1, *padded))


def seg_infer_memory(cfg: Config, num_classes: int, size: tuple[int, int]) -> MemoryEstimate:
    batch = cfg.seg.infer_batch * (2 if cfg.seg.infer_flip else 1)
    model = _seg_model(cfg, num_classes)
    return estimate_inference_memory(model, _images(batch, *_scaled(size, cfg.seg.infer_scales)))


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------


def _examples(items: Sequence[str], limit: int = 5) -> str:
    more = f", ... ({len(items)} in all)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _check_voc_images(cfg: Config, list_name: str) -> str | None:
    """VOC: every id of the list has its JPEG (all of them listed, not only the first)."""
    root = Path(cfg.data.root)
    list_path = root / LIST_DIR / f"{list_name}.txt"
    image_dir = root / IMAGE_DIR
    if not list_path.is_file() or not image_dir.is_dir():
        return None  # open_split names these
    ids = [image_id for image_id, _ in read_voc_list(list_path)]
    present = set(os.listdir(image_dir))
    missing = [i for i in ids if f"{i}.jpg" not in present]
    if missing:
        return (
            f"{list_path}: {len(missing)} of {len(ids)} images missing from {image_dir} "
            f"(e.g. {_examples(missing)})"
        )
    return None


def open_lists(
    cfg: Config, names: Sequence[str], report: DryRunReport
) -> dict[str, SegmentationDataset]:
    """Open every list once; each failure is one error, and the others are still checked."""
    datasets = {}
    for name in dict.fromkeys(names):
        try:
            problem = _check_voc_images(cfg, name) if cfg.data.kind == "voc" else None
            if problem:
                raise SsenetError(problem)
            datasets[name] = open_split(cfg.data, name)
        except SsenetError as err:
            report.errors.append(f"list {name}: {err}")
            continue
        report.checks.append(f"list {name}: {len(datasets[name])} images, all present")
    return datasets


def check_root(cfg: Config, report: DryRunReport) -> bool:
    root = Path(cfg.data.root)
    if not root.is_dir():
        report.errors.append(f"data.root {root}: directory not found")
        return False
    if cfg.data.kind == "voc" and not (root / IMAGE_DIR).is_dir():
        report.errors.append(f"{root / IMAGE_DIR}: image directory not found")
        return False
    report.checks.append(f"data.root {root}: found")
    return True


def sample_images(
    datasets: dict[str, SegmentationDataset], count: int, report: DryRunReport
) -> list[tuple[int, int]]:
    """Decode `count` images spread evenly over all lists (the first always among them); all of
    them when `count` is at least their number (`ssenet run --dry-run --check-images`)."""
    owner = {i: d for d in datasets.values() for i in d.ids}
    ids = list(owner)
    if not ids or count < 1:
        return []
    picks = [ids[int(k)] for k in np.unique(np.linspace(0, len(ids) - 1, min(count, len(ids))))]
    sizes, bad = [], []
    for image_id in picks:
        try:
            sizes.append(owner[image_id].read_image(image_id).shape[:2])
        except SsenetError as err:
            bad.append(str(err))
    for problem in bad:
        report.errors.append(f"image sample: {problem}")
    if sizes:
        heights, widths = zip(*sizes, strict=True)
        report.checks.append(
            f"image sample: {len(sizes)} of {len(picks)} decoded; height {min(heights)}-"
            f"{max(heights)}, width {min(widths)}-{max(widths)} px"
        )
    return sizes


def check_ground_truth(
    cfg: Config, datasets: dict[str, SegmentationDataset], scored: Sequence[str],
    report: DryRunReport,
) -> None:
    """Every image of a scored list has its mask in the directory scoring reads."""
    gt = gt_dir(cfg)
    if not scored:
        return
    if not gt.is_dir():
        report.errors.append(f"ground truth {gt}: directory not found (needed to score "
                             f"{', '.join(scored)}; see data.mask_dir)")
        return
    for name in scored:
        if name not in datasets:
            continue
        ids = datasets[name].ids
        missing = missing_ground_truth(cfg, ids)
        if missing:
            report.errors.append(f"ground truth {gt}: no mask for {len(missing)} of {len(ids)} "
                                 f"images of {name} (e.g. {_examples(missing)})")
        else:
            report.checks.append(f"ground truth {gt}: a mask for each of the {len(ids)} "
                                 f"images of {name}")


def check_weights(cfg: Config, report: DryRunReport) -> None:
    """The ImageNet weights file exists and loads strictly into the configured backbone."""
    from ssenet.models import build_backbone, load_weights

    m = cfg.model
    if m.weights is None:
        if m.backbone == "efficientnet_lite0" and m.pretrained:
            from ssenet.models.efficientnet import packaged_weights_path

            try:
                packaged_weights_path()
                report.checks.append("weights: efficientnet_lite0 ImageNet weights (package)")
            except SsenetError as err:
                report.errors.append(f"model.pretrained: {err}")
            return
        report.warnings.append(
            f"model.weights is unset: the {m.backbone} backbone starts from random weights; "
            "the paper starts from ImageNet weights (see 'Reproducing the paper' in the README)"
        )
        return
    path = Path(m.weights)
    if not path.is_file():
        report.errors.append(f"model.weights {path}: file not found")
        return
    try:
        backbone = _meta(lambda: build_backbone(m.backbone, m.width, m.output_stride, False))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # copying into meta tensors is a no-op, by design
            load_weights(backbone, path)
    except SsenetError as err:
        report.errors.append(f"model.weights: {err}")
        return
    report.checks.append(f"model.weights {path}: loads into the {m.backbone} backbone")


def check_sections(cfg: Config, stages: Sequence[str], report: DryRunReport) -> None:
    """Settings that `validate` leaves to each stage, checked up front."""
    if "seg" in stages:
        low, high = cfg.seg.scale_range
        if not 0 < low <= high:
            report.errors.append(f"config key seg.scale_range: need 0 < low <= high, "
                                 f"got {[low, high]}")
        if cfg.seg.head == "deeplabv3" and cfg.seg.batch_size < 2:
            report.errors.append("config key seg.batch_size: the deeplabv3 head needs at least 2")
    if set(stages) & {"cam", "crf", "rw"}:
        try:
            check_pseudo_label_scoring(cfg)
        except SsenetError as err:
            report.errors.append(f"evaluation: {err}")


# ---------------------------------------------------------------------------------------------
# Plan
# ---------------------------------------------------------------------------------------------


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


def _world_warnings(cfg: Config, stages: Sequence[str], report: DryRunReport) -> None:
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


def dry_run(
    cfg: Config,
    stages: Sequence[str] | None = None,
    world_size: int | None = None,
    sample: int = SAMPLE_IMAGES,
    config_name: str = "",
) -> DryRunReport:
    """Check everything a run of `stages` needs and plan it; nothing is trained or written."""
    stages = list(stages or STAGES)
    world = world_size or default_world_size()
    report = DryRunReport(config_name, stages, world)
    try:
        validate(cfg)  # `cfg` may be built in code; the plan below assumes a valid config
    except SsenetError as err:
        report.errors.append(str(err))
        return report
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
    _world_warnings(cfg, stages, report)
    return report


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------

_COLUMNS = ("stage", "step", "lists", "images", "batch/GPU", "steps/epoch", "epochs",
            "steps", "GPU memory")


def _cells(row: PlanRow) -> list[str]:
    unknown = "?" if row.step == "train" else "-"  # "?": the training list could not be read

    def number(value: int | None) -> str:
        return unknown if value is None else f"{value:,}"

    memory = row.device if row.device != "GPU" else (
        "?" if row.memory is None else _size(row.memory.total))
    images = "?" if row.images is None else f"{row.images:,}"
    return [row.stage, row.step, ",".join(row.lists), images, row.batch,
            number(row.steps_per_epoch), number(row.epochs), number(row.total_steps), memory]


def _size(nbytes: int) -> str:
    return f"{nbytes / GIB:.2f} GiB" if nbytes >= GIB / 10 else f"{nbytes / 2**20:.1f} MiB"


def format_table(rows: Sequence[PlanRow]) -> str:
    table = [list(_COLUMNS)] + [_cells(row) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(_COLUMNS))]
    lines = []
    for line in table:
        left = [c.ljust(w) for c, w in zip(line[:3], widths[:3], strict=True)]
        right = [c.rjust(w) for c, w in zip(line[3:], widths[3:], strict=True)]
        lines.append("  ".join(left + right).rstrip())
    return "\n".join(lines)


def format_report(report: DryRunReport) -> str:
    """The printed dry run: checks, the plan table, the memory method, warnings, errors."""
    name = f" of {report.config_name}" if report.config_name else ""
    out = [f"ssenet dry run{name}: stages {','.join(report.stages)}, world size "
           f"{report.world_size} (nothing is trained or written)", "", "checks:"]
    out += [f"  ok  {line}" for line in report.checks]
    out += ["", "plan (steps per GPU):", format_table(report.rows), ""]
    for row in report.rows:
        if row.memory is not None or row.note:
            detail = row.memory.breakdown() if row.memory is not None else ""
            out.append(f"  {row.stage} {row.step}: " + "; ".join(
                s for s in (detail, row.note) if s))
    out += ["", textwrap.fill(MEMORY_METHOD, 100)]
    if report.warnings:
        out += ["", f"warnings ({len(report.warnings)}):"]
        out += [f"  - {line}" for line in report.warnings]
    if report.errors:
        out += ["", f"errors ({len(report.errors)}):"]
        out += [f"  - {line}" for line in report.errors]
        out.append(f"dry run failed: fix the {len(report.errors)} error(s) above before training")
    else:
        out.append("dry run passed: no errors")
    return "\n".join(out)
