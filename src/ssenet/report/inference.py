"""The model runs behind the report's example images: single-scale CAM heat maps, the
segmentation network's labels and the pictures of the stages that draw one (their registry
entry's `example_figure`, e.g. IRNet's boundary maps) of a few images common to every run, or
why a run has none."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from ssenet.cam import CamInference, iter_single_scale_cams, normalized_present_cams
from ssenet.config import Config
from ssenet.data.datasets import SegmentationDataset
from ssenet.errors import SsenetError
from ssenet.models.configured import load_cam_model, load_seg_model
from ssenet.progress import progress_bar
from ssenet.report.rundata import RunData
from ssenet.runtime import memory_format, select_device
from ssenet.segmentation import multiscale_probs
from ssenet.stages import STAGES, RunLayout, active_stages

CAM_SCALES = (0.5, 1.0, 1.5, 2.0)

# (stage name, stage title, {image id: (H, W) uint8 grayscale picture}, why there is none)
StageFigure = tuple[str, str, dict[str, np.ndarray], str | None]


def common_ids(id_lists: Sequence[Sequence[str]], count: int) -> list[str]:
    """The first `count` ids of the first list that every other list also holds."""
    if not id_lists or count <= 0:
        return []
    others = [set(ids) for ids in id_lists[1:]]
    shared = [i for i in id_lists[0] if all(i in other for other in others)]
    return shared[:count]


def inference_model(model: torch.nn.Module, cfg: Config) -> torch.nn.Module:
    """The model on the configured device, channels-last when the run asks for it."""
    model = model.to(select_device(cfg.run.device))
    model = memory_format(model, cfg.run.channels_last)
    return model


def cam_max(cams: np.ndarray) -> np.ndarray:
    """The maximum over the present classes' (k, H, W) CAMs; all zero when k = 0."""
    return cams.max(axis=0) if len(cams) else np.zeros(cams.shape[1:], dtype=np.float32)


def run_model(
    run: RunData, stage: str, load: Callable, num_classes: int, what: str
) -> tuple[torch.nn.Module | None, str | None]:
    """The run's trained `stage/model.pth` ready for inference, or None and why not."""
    weights = RunLayout(run.run_dir).weights(stage)
    if not weights.is_file():
        return None, f"no {what} model"
    try:
        model = load(run.cfg, weights, num_classes)
    except SsenetError as err:
        return None, f"{what} model unusable: {err}"
    return inference_model(model, run.cfg), None


def cam_heats(
    run: RunData, dataset: SegmentationDataset, ids: list[str]
) -> tuple[dict[tuple[str, float], np.ndarray], str | None]:
    """Max-over-classes CAMs per (id, scale), each scale tested alone; or a reason why not."""
    model, why = run_model(run, "cam", load_cam_model, dataset.num_foreground, "CAM")
    if model is None:
        return {}, why
    cam, amp = run.cfg.cam, run.cfg.run.amp
    heats = {}
    run = CamInference(CAM_SCALES, cam.infer_flip, cam.infer_batch, amp)
    for image_id, labels, per_scale in iter_single_scale_cams(model, dataset, ids, run):
        for scale, summed in per_scale.items():
            heats[image_id, scale] = cam_max(normalized_present_cams(summed, labels)[0])
    return heats, None


def seg_labels(
    run: RunData, dataset: SegmentationDataset, ids: list[str]
) -> tuple[dict[str, np.ndarray], str | None]:
    """The segmentation network's argmax labels (multi-scale + flip, no CRF), or why not."""
    model, why = run_model(run, "seg", load_seg_model, dataset.num_classes, "segmentation")
    if model is None:
        return {}, why
    seg, amp = run.cfg.seg, run.cfg.run.amp
    labels = {}
    for image_id in ids:
        image = torch.from_numpy(dataset.read_image(image_id))[None]
        probs = multiscale_probs(model, image, seg.infer_scales, seg.infer_flip, amp)
        labels[image_id] = probs[0].argmax(dim=0).cpu().numpy().astype(np.uint8)
    return labels, None


def stage_figures(run: RunData, dataset: SegmentationDataset, ids: list[str]) -> list[StageFigure]:
    """The pictures of the run's stages that draw one, in pipeline order; a stage whose network
    is not trained draws nothing and is left out, one whose network is unusable says why."""
    layout, figures = RunLayout(run.run_dir), []
    for name in active_stages(run.cfg):
        stage = STAGES[name]
        if stage.example_figure is None:
            continue
        try:
            pictures = stage.example_figure(run.cfg, layout, dataset, ids)
        except SsenetError as err:
            figures.append((name, stage.title, {}, f"model unusable: {err}"))
            continue
        if pictures:
            figures.append((name, stage.title, pictures, None))
    return figures


def compute_examples(
    runs: list[RunData], datasets: dict[str, SegmentationDataset], count: int, progress: bool
) -> tuple[list[str], dict[str, tuple]]:
    """The example ids and, per method, its (CAM heat maps, segmentation labels, stage
    figures) results."""
    ids = common_ids([datasets[run.name].ids for run in runs], count)
    computed = {}
    for run in progress_bar(runs, desc="report examples", enabled=progress, leave=True):
        dataset = datasets[run.name]
        computed[run.name] = (
            cam_heats(run, dataset, ids),
            seg_labels(run, dataset, ids),
            stage_figures(run, dataset, ids),
        )
    return ids, computed
