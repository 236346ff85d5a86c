"""`ssenet run`: the registered stages in order into one run directory, each reading and writing
plain files, each resumable (the layout: `ssenet.stages.layout`; the stages: `ssenet.stages`)."""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path

from ssenet.config import Config, dump_config
from ssenet.data.source import open_split
from ssenet.dryrun.plan import steps_per_epoch
from ssenet.errors import SsenetError
from ssenet.fileio import remove_stale_temporaries, run_lock, write_json, write_text_atomic
from ssenet.runtime import is_main_rank, join_ranks, rank_shard, sync_ranks
from ssenet.stages import STAGES, RunLayout, active_stages, stage_lists
from ssenet.stages.common import (
    check_pseudo_label_scoring,
    gt_dir,
    masks_optional,
    missing_ground_truth,
    stage_result,
)


def preflight(cfg: Config, stages: list[str]) -> None:
    """Open every list the stages will read and find the ground truth of the scored ones, so a
    bad list, image or mask stops the run before training, not hours into it."""
    plan = stage_lists(cfg, stages)
    if any(cfg.data.infer_list in spec.get("score", []) for spec in plan.values()):
        check_pseudo_label_scoring(cfg)  # a stage scores pseudo labels
    readers: dict[str, list[str]] = {}  # list name -> the stages that read it
    sizes: dict[str, int] = {}  # list name -> its images
    scored: set[str] = set()
    masked: dict[str, bool] = {}  # scored list -> whether any of its images has a mask
    for stage, spec in plan.items():
        for name in dict.fromkeys(n for group in spec.values() for n in group):
            readers.setdefault(name, []).append(stage)
        scored.update(spec.get("score", []))
    for list_name, stages_reading in readers.items():
        by = ", ".join(stages_reading)
        try:
            dataset = open_split(cfg.data, list_name)
        except SsenetError as err:
            raise SsenetError(f"{err} (list {list_name!r}, read by {by})") from err
        if not dataset.ids:
            raise SsenetError(f"list {list_name!r} (read by {by}) has no images")
        sizes[list_name] = len(dataset.ids)
        missing = missing_ground_truth(cfg, dataset.ids) if list_name in scored else []
        if list_name in scored:
            masked[list_name] = len(missing) < len(dataset.ids)
        if missing and not masks_optional(cfg):  # folder data: scored where there is a mask
            raise SsenetError(
                f"{gt_dir(cfg)}: no ground truth for {len(missing)} image(s) of the scored "
                f"list {list_name!r} (e.g. {', '.join(missing[:3])})"
            )
    if masks_optional(cfg) and cfg.data.mask_dir and masked and not any(masked.values()):
        raise SsenetError(  # masks asked for and none found: misnamed, not absent
            f"{gt_dir(cfg)} (data.mask_dir): no mask <id>.png for any image of the scored "
            f"list(s) {', '.join(masked)}; name each mask after its image, or unset "
            "data.mask_dir to run without scoring"
        )
    check_full_batches(cfg, plan, sizes)


def check_full_batches(cfg: Config, plan: dict, sizes: dict[str, int]) -> None:
    """Refuse a training stage whose list leaves some process without one full batch (each
    of torchrun's WORLD_SIZE processes trains on its share of the list, in whole batches),
    before any stage runs rather than when that stage's training starts."""
    world = rank_shard()[1]
    for stage, spec in plan.items():
        section = STAGES[stage].section
        if not section:  # a registered stage with no config section: its trainer checks it
            continue
        batch = getattr(cfg, section).batch_size
        for list_name in spec.get("train", []):
            if steps_per_epoch(sizes[list_name], batch, world) == 0:
                raise SsenetError(
                    f"{stage} training: list {list_name!r} has {sizes[list_name]} images, "
                    f"{math.ceil(sizes[list_name] / world)} per process over {world}: no full "
                    f"batch of {batch}; lower {section}.batch_size"
                )


def record_run(cfg: Config, layout: RunLayout) -> None:
    """Keep the resolved config and the class names in the run folder, so its networks can be
    loaded from the folder alone (`ssenet.api`)."""
    write_text_atomic(layout.config, dump_config(cfg))
    names = open_split(cfg.data, cfg.data.train_list).class_names
    write_text_atomic(layout.classes, "\n".join(names) + "\n")


def run_pipeline(
    cfg: Config,
    run_dir: str | Path,
    stages: list[str] | None = None,
    progress: bool = True,
    seconds: dict[str, float] | None = None,
) -> dict:
    """Run the stages in order into `run_dir` (default: every stage of the config's run, see
    `ssenet.stages.active_stages`); finished work is skipped, so a rerun resumes.

    Every scored stage's mIoU / mFN / mFP, or why it has none ("no ground truth: not scored"),
    lands in `run_dir/eval/results.json`. When given, `seconds` receives each stage's wall time
    in this call (near 0 for work found done).
    """
    run_dir = Path(run_dir)
    join_ranks(cfg.run)  # before any stage, trained or found finished, waits for the others
    # Ranks of one torchrun job share the folder; only separate jobs must not.
    lock = run_lock(run_dir) if rank_shard()[1] == 1 else contextlib.nullcontext()
    with lock:
        return _run_stages(cfg, run_dir, stages, progress, seconds)


def _run_stages(
    cfg: Config,
    run_dir: Path,
    stages: list[str] | None,
    progress: bool,
    seconds: dict[str, float] | None,
) -> dict:
    layout = RunLayout(run_dir)
    if is_main_rank():  # once: another rank's temporaries are not stale
        remove_stale_temporaries(run_dir)  # left by a killed run; never taken for outputs
        record_run(cfg, layout)
    sync_ranks()
    results_path = layout.results
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    for name in stages or active_stages(cfg):
        start = time.perf_counter()
        metrics = STAGES[name].run(cfg, layout, progress)
        if seconds is not None:
            seconds[name] = round(time.perf_counter() - start, 1)
        result = stage_result(metrics)
        if result is not None:
            results[name] = result
            if is_main_rank():
                write_json(results_path, results)
    return results


