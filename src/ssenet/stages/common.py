"""What the stages share: the training lists, the ground truth, making labels list by list,
scoring, rank sync (what the stages that train a network share: `ssenet.stages.training`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ssenet.config import Config
from ssenet.data.coco import coco_mask_dir
from ssenet.data.source import open_split
from ssenet.errors import SsenetError
from ssenet.evaluation.guard import check_pseudo_label_eval
from ssenet.evaluation.label_free import label_shares
from ssenet.evaluation.metrics import VOID_ONLY, evaluate_label_dirs, scored_pixels
from ssenet.fileio import write_json
from ssenet.inference import ListJob, crf_worker_count
from ssenet.runtime import on_main_rank, rank_shard, sync_ranks
from ssenet.stages.registry import Stage, covered_lists, pseudo_labels

if TYPE_CHECKING:
    from ssenet.dryrun.plan import PlanInputs, PlanRow
    from ssenet.stages.layout import RunLayout

SUMMARY_KEYS = ("miou", "mfn", "mfp")
# What a stage's scores say when none of its images has a mask (folder data may have none).
NOT_SCORED = "no ground truth: not scored"


def gt_dir(cfg: Config) -> Path:
    """Where ground truth for scoring lives: VOC's SegmentationClass by default; for COCO the
    folder its reader writes the masks of both splits to."""
    if cfg.data.kind == "coco":
        return coco_mask_dir(cfg.data.root, cfg.data.mask_dir)
    return Path(cfg.data.root) / (cfg.data.mask_dir or "SegmentationClass")


def summary(metrics: dict) -> dict:
    """What results.json keeps of a stage's scores: mIoU, mFN, mFP, or why there are none."""
    entry = {key: metrics[key] for key in SUMMARY_KEYS if key in metrics}
    if "note" in metrics:
        entry["note"] = metrics["note"]
    return entry


def stage_result(metrics: dict) -> dict | None:
    """A stage's results.json entry, or None for a stage that scores nothing (AffinityNet)."""
    return summary(metrics) if "miou" in metrics or "note" in metrics else None


def result_line(stage: str, entry: dict) -> str:
    """One terminal line of a results.json entry."""
    if "miou" not in entry:
        return f"{stage:<5} {entry.get('note', NOT_SCORED)}"
    line = f"{stage:<5} mIoU {entry['miou']:.4f}  mFN {entry['mfn']:.3f}  mFP {entry['mfp']:.3f}"
    return f"{line}  ({entry['note']})" if "note" in entry else line


def label_lists(
    cfg: Config, stage: str, progress: bool, label: Callable[[ListJob], dict]
) -> dict[str, dict]:
    """`label(job)` for this process's shard of every list `stage` covers (the scored list
    first), then `sync_ranks`: how a stage that labels images makes them before it scores
    them. Returns each list's counts."""
    counts = {list_name: label(ListJob(list_name, rank_shard(), progress))
              for list_name in covered_lists(cfg, stage)}  # fmt: skip
    sync_ranks()
    return counts


def score_pseudo_labels(cfg: Config, layout: RunLayout, stage: str) -> dict:
    """Score `stage`'s pseudo labels on the list pseudo labels are scored on (data.infer_list)."""
    return score_labels(cfg, layout.labels(stage), cfg.data.infer_list, layout.eval_json(stage))


def walk_stage(
    name: str,
    title: str,
    refiner: str,
    network: str,
    run: Callable[[Config, RunLayout, bool], dict],
    plan: Callable[[PlanInputs], list[PlanRow]],
) -> Stage:
    """The last stage of a refiner that walks the CAMs over the output of a network it trained
    (`network`, that stage's product) into the refiner's pseudo labels, scored like every
    pseudo label on data.infer_list: AffinityNet's random walk, IRNet's."""
    return Stage(
        name=name,
        title=title,
        run=run,
        produces=(pseudo_labels(refiner),),
        consumes=lambda cfg: {"cams": None, network: []},
        scores=lambda cfg: [cfg.data.infer_list],
        refiner=refiner,
        plan=plan,
    )


def aff_train_list(cfg: Config) -> str:
    return cfg.aff.train_list or cfg.data.train_list


def seg_train_list(cfg: Config) -> str:
    return cfg.seg.train_list or cfg.data.train_list


def check_pseudo_label_scoring(cfg: Config) -> None:
    """Refuse, with the reason, to score pseudo labels on the wrong masks or list (see
    `ssenet.evaluation_guard`); cheap, so `ssenet run` calls it before any training."""
    check_pseudo_label_eval(cfg.data, gt_dir(cfg), cfg.data.infer_list)


def masks_optional(cfg: Config) -> bool:
    """Whether images may lack a mask: a folder of one's own images (weak supervision is for
    data without masks); VOC and COCO ship one per image, so there a missing mask is an error."""
    return cfg.data.kind == "folder"


def scorable_ids(cfg: Config, ids: Sequence[str]) -> list[str]:
    """The ids whose labels are scored: every id (VOC, COCO), or those with a mask (folder)."""
    if not masks_optional(cfg):
        return list(ids)
    missing = set(missing_ground_truth(cfg, ids))
    return [i for i in ids if i not in missing]


def missing_ground_truth(cfg: Config, ids: Sequence[str]) -> list[str]:
    """The ids without a mask in the folder scoring reads (all of them when it does not exist,
    and for folder data without a data.mask_dir: their ground truth is only ever asked for)."""
    if masks_optional(cfg) and not cfg.data.mask_dir:
        return list(ids)
    gt = gt_dir(cfg)
    present = set(os.listdir(gt)) if gt.is_dir() else set()
    return [i for i in ids if f"{i}.png" not in present]


def score_labels(cfg: Config, label_dir: Path, list_name: str, out: Path) -> dict:
    """mIoU, mFN, mFP of the label PNGs of one list against the ground truth; saved to `out`.

    Folder data score the images that have a mask, and `note` says on how many ("scored on 50
    of 5,000 images") or, with none, that the stage is not scored. Under torchrun, rank 0
    scores (after `sync_ranks`) and every rank gets its figures."""
    return on_main_rank(lambda: _score_labels(cfg, label_dir, list_name, out))


def _score_labels(cfg: Config, label_dir: Path, list_name: str, out: Path) -> dict:
    if list_name == cfg.data.infer_list:  # pseudo labels (cam, crf, refiners); seg: val_list
        check_pseudo_label_scoring(cfg)
    dataset = open_split(cfg.data, list_name)
    ids = scorable_ids(cfg, dataset.ids)
    metrics = {"note": NOT_SCORED}  # the labels are written all the same; only scores lack
    if ids:
        metrics = evaluate_label_dirs(label_dir, gt_dir(cfg), ids, dataset.num_classes)
    if ids and not scored_pixels(metrics):  # masks void everywhere: nan figures are no score
        metrics = {"note": f"not scored: {VOID_ONLY}"}
    if len(ids) < len(dataset.ids):
        metrics["list_images"] = len(dataset.ids)
        if "miou" in metrics:  # e.g. a user annotated 50 of their 5,000 images to check
            metrics["note"] = f"scored on {len(ids):,} of {len(dataset.ids):,} images"
    metrics["list"] = list_name
    metrics["label_free"] = label_shares(label_dir, dataset)  # with or without masks
    write_json(out, metrics)
    return metrics


def crf_plan_row(s: PlanInputs, stage: str, what: str) -> PlanRow:
    """The dry run's row of a stage of per-image CRFs (the CRF stage, IRNet's relation labels),
    placed as `ssenet.inference.run_crf_jobs` places them: pydensecrf on the CPU in crf_workers
    processes; the torch backend on the GPU in one process when run.device gives a GPU."""
    from ssenet.crf import resolve_backend

    run, workers = s.cfg.run, crf_worker_count(s.cfg)
    try:
        backend = resolve_backend(s.cfg.crf.backend)
    except SsenetError as err:
        s.report.errors.append(str(err))
        backend = s.cfg.crf.backend
    on_cpu = f"on the CPU, {workers} worker process(es)"
    if backend == "torch" and run.device not in ("cpu", "mps"):
        note = f"{what} (torch) on the GPU, one process a rank; without a GPU {on_cpu}"
        return s.infer_row(stage, "1", None, note)
    return s.infer_row(stage, "1", None, f"{what} ({backend}) {on_cpu}", device="CPU")
