"""Stage 1: train the CAM network (baseline or SSENet), infer multi-scale CAMs and their alpha
labels, score them and the alpha sweep (the paper's Fig. 4), and the network as a classifier."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from torch import nn

from ssenet.cam import (
    CamInference,
    CamObjective,
    iter_cams,
    iter_single_scale_cams,
    normalized_present_cams,
    sum_scales,
)
from ssenet.cam_labels import cams_to_label
from ssenet.camfile import load_cams, save_cams
from ssenet.config import Config
from ssenet.data.datasets import CamTrainDataset, SegmentationDataset
from ssenet.data.palette import write_label_png
from ssenet.data.source import open_split
from ssenet.data.transforms import CamTrainTransform
from ssenet.evaluation.metrics import sweep_cam_thresholds
from ssenet.fileio import write_json
from ssenet.inference import DEFAULT_JOB, ListJob, owned_images
from ssenet.models.configured import build_cam_from_config, load_cam_model
from ssenet.provenance import (
    config_values,
    data_stamp,
    image_stamp,
    is_current,
    stamp,
    weights_stamp,
)
from ssenet.runtime import on_main_rank, rank_shard, select_device, set_threads, sync_ranks
from ssenet.stages.common import gt_dir, scorable_ids, score_labels
from ssenet.stages.layout import RunLayout
from ssenet.stages.registry import Stage, covered_lists
from ssenet.stages.s1_cam_figures import (
    ScaleSweep,
    classifier_stage,
    scale_sweep,
    scale_sweep_done,
)
from ssenet.stages.training import network_plan_rows, resize_long_augment, train_section_network
from ssenet.trainer import FitResult

if TYPE_CHECKING:
    from ssenet.dryrun.plan import PlanInputs, PlanRow


def run(cfg: Config, layout: RunLayout, progress: bool = True) -> dict:
    """Train the CAM network, infer CAMs, score their alpha labels and the alpha sweep (Fig. 4)."""
    cam_dir = layout.stage("cam")
    trained = train_cam(cfg, cam_dir, progress=progress)
    sweep = folded_scale_sweep(cfg, layout)
    for list_name in covered_lists(cfg, "cam"):
        folded = sweep is not None and list_name == cfg.data.infer_list
        infer_cams(
            cfg, trained.weights, cam_dir, ListJob(list_name, rank_shard(), progress),
            single_scales=sweep.scales if folded else (),
            on_single_scales=sweep.update if folded else None,
        )  # fmt: skip
    sync_ranks()
    return on_main_rank(lambda: _score(cfg, layout, sweep, progress))


def _score(cfg: Config, layout: RunLayout, sweep: ScaleSweep | None, progress: bool) -> dict:
    """The CAM labels' scores and the alpha sweep (Fig. 4), and the scale sweep when it was
    filled during inference: once, after every rank's CAMs are written."""
    dataset = open_split(cfg.data, cfg.data.infer_list)
    if sweep is not None and sweep.seen == set(dataset.ids):
        sweep.write(layout.root)
    elif sweep is not None:  # a resumed pass computed part of the CAMs, or none: a pass of its own
        scale_sweep(cfg, layout.root, progress)
    out = layout.eval_json("cam")
    metrics = score_labels(cfg, layout.labels("cam"), cfg.data.infer_list, out)
    metrics["alpha"] = cfg.cam.alpha
    scored = scorable_ids(cfg, dataset.ids)
    if scored and "miou" in metrics:  # the sweep scores too: only where there are masks
        metrics["alpha_sweep"] = sweep_cam_thresholds(
            layout.cams, gt_dir(cfg), scored, dataset.num_classes, list(cfg.cam.alpha_sweep)
        )
    write_json(out, metrics)
    if rank_shard()[0] == 0:  # one process: the figure's stamp file is shared
        classifier_stage(cfg, layout.root)  # needs no masks: the report shows it in every run
    return metrics


def folded_scale_sweep(cfg: Config, layout: RunLayout) -> ScaleSweep | None:
    """A sweep to fill during CAM inference, when it costs no extra forward pass: one process,
    sweep scales among the inference scales, and no sweep written yet."""
    scales = set(cfg.cam.scale_sweep)
    if rank_shard()[1] > 1 or not scales or not scales <= set(cfg.cam.infer_scales):
        return None
    if scale_sweep_done(cfg, layout.root):
        return None
    dataset = open_split(cfg.data, cfg.data.infer_list)
    return ScaleSweep(cfg, dataset.num_classes, scorable_ids(cfg, dataset.ids))


def train_cam(cfg: Config, out_dir: str | Path, progress: bool = True) -> FitResult:
    """Train the CAM network into `out_dir` (model.pth, train.json, checkpoints/, tb/).

    Resumable: see `ssenet.trainer.fit`.
    """
    dataset = open_split(cfg.data, cfg.data.train_list)
    cam = cfg.cam

    def transform(model: nn.Module) -> CamTrainDataset:
        augment = resize_long_augment(CamTrainTransform, cam, model)
        return CamTrainDataset(dataset, augment, seed=cfg.run.seed)

    # The data are part of the digest by content (ids, image labels, image sizes), not by
    # location: an edited mask is other training data, a moved dataset the same.
    return train_section_network(
        cfg, "cam", f"cam {cam.method}", out_dir, data_stamp(dataset),
        build=lambda: build_cam_from_config(cfg, dataset.num_foreground),
        dataset=transform,
        objective=lambda model: CamObjective(model, cam),
        progress=progress,
    )  # fmt: skip


SingleScaleSink = Callable[[str, dict[float, tuple[np.ndarray, np.ndarray]]], None]


def infer_cams(
    cfg: Config,
    weights: str | Path,
    out_dir: str | Path,
    job: ListJob = DEFAULT_JOB,
    single_scales: Sequence[float] = (),
    on_single_scales: SingleScaleSink | None = None,
) -> dict:
    """Write `cams/<id>.npz` and the alpha pseudo label `labels/<id>.png` for every image.

    Images whose two files exist with the stamp they would get now (`ssenet.provenance`) are
    skipped, so a rerun finishes an interrupted one and a changed setting remakes what it
    changes (a new `cam.alpha` only the labels, from the saved CAMs). `job`: the list
    (default data.infer_list), the shard and the progress bar.
    With `on_single_scales`, each computed image's normalised CAMs at every one of
    `single_scales` alone, {scale: (cams, keys)}, are handed to it too, from the same forward
    passes when those scales are among `cam.infer_scales` (the multi-scale CAMs are unchanged).
    """
    out_dir, job = Path(out_dir), job.named(cfg.data.infer_list)
    dataset, ids = owned_images(cfg, job.list_name, job.shard)
    cam_dir, label_dir = out_dir / "cams", out_dir / "labels"
    base = cam_file_stamp(cfg, weights)  # per image, with its classes: an edited mask counts
    cams_stamp = {i: stamp(base, dataset.labels(i).tolist(), image_stamp(dataset.image_path(i)))
                  for i in ids}  # fmt: skip
    label_stamp = {i: stamp("cam labels", cams_stamp[i], cfg.cam.alpha) for i in ids}
    current = {i for i in ids if is_current(cam_dir / f"{i}.npz", cams_stamp[i])}
    todo = [i for i in ids if i not in current]
    relabel = [  # CAMs still current, labels not (cam.alpha changed): no forward pass needed
        i for i in ids if i in current and not is_current(label_dir / f"{i}.png", label_stamp[i])
    ]
    for image_id in relabel:
        cams, keys = load_cams(cam_dir / f"{image_id}.npz")
        write_label_png(label_dir / f"{image_id}.png", cams_to_label(cams, keys, cfg.cam.alpha),
                        label_stamp[image_id])  # fmt: skip
    device = select_device(cfg.run.device)
    set_threads(cfg.run.threads)
    if todo:
        model = load_cam_model(cfg, weights, dataset.num_foreground).to(device)
        for image_id, cams, keys, singles in computed_cams(
            cfg, model, dataset, ids, todo, single_scales if on_single_scales else (), job.progress
        ):
            save_cams(cam_dir / f"{image_id}.npz", cams, keys, cams_stamp[image_id])
            label = cams_to_label(cams, keys, cfg.cam.alpha)
            write_label_png(label_dir / f"{image_id}.png", label, label_stamp[image_id])
            if on_single_scales is not None:
                on_single_scales(image_id, singles)
    return {
        "images": len(ids),
        "computed": len(todo),
        "relabelled": len(relabel),
        "cam_dir": str(cam_dir),
    }


def cam_file_stamp(cfg: Config, weights: str | Path) -> str:
    """The `made_from` stamp of CAM files: the network and every setting that decides them."""
    keys = "data.kind cam.infer_scales cam.infer_flip run.amp"
    return stamp("cams", weights_stamp(weights), config_values(cfg, keys))


def cam_inference(
    cfg: Config, scales: Sequence[float], progress: bool = False, desc: str = ""
) -> CamInference:
    """How the config tests the CAM network at `scales`: cam.infer_flip and cam.infer_batch,
    run.amp and run.num_workers."""
    return CamInference(scales, cfg.cam.infer_flip, cfg.cam.infer_batch, cfg.run.amp,
                        cfg.run.num_workers, progress, desc)  # fmt: skip


def computed_cams(
    cfg: Config,
    model: nn.Module,
    dataset: SegmentationDataset,
    ids: Sequence[str],
    todo: Sequence[str],
    single_scales: Sequence[float],
    progress: bool,
) -> Iterator[tuple[str, np.ndarray, np.ndarray, dict[float, tuple[np.ndarray, np.ndarray]]]]:
    """(id, cams, keys, {scale: (cams, keys)}) per image of the batches of `ids` holding one of
    `todo`; the last is empty without scales."""
    cam = cfg.cam
    if not single_scales:
        run = cam_inference(cfg, cam.infer_scales, progress, "infer cam")
        for image_id, cams, keys in iter_cams(model, dataset, ids, run, todo):
            yield image_id, cams, keys, {}
        return
    run = cam_inference(cfg, (*cam.infer_scales, *single_scales), progress, "infer cam")
    for image_id, labels, per_scale in iter_single_scale_cams(model, dataset, ids, run, todo):
        cams, keys = normalized_present_cams(sum_scales(per_scale, cam.infer_scales), labels)
        singles = {s: normalized_present_cams(per_scale[s], labels) for s in single_scales}
        yield image_id, cams, keys, singles


def plan(s: PlanInputs) -> list[PlanRow]:
    """The dry run's rows: training and multi-scale inference, each with its GPU memory."""
    from ssenet.dryrun.stage_memory import cam_infer_memory, cam_train_memory

    cfg, foreground = s.cfg, s.classes - 1
    return network_plan_rows(s, "cam", cfg.cam, lambda: cam_train_memory(cfg, foreground),
                             lambda: cam_infer_memory(cfg, foreground, s.size))  # fmt: skip


STAGE = Stage(
    name="cam",
    title="CAM",
    run=run,
    produces=("cams", "cam labels", "cam network"),
    trains_on=lambda cfg: [cfg.data.train_list],
    scores=lambda cfg: [cfg.data.infer_list],
    section="cam",
    plan=plan,
    network="CAM network",
)
