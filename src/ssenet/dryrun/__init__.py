"""`ssenet run --dry-run`: check a config, its data and its weights, and plan every stage.

`run` (the entry point), `checks`, `plan`, `memory` and `stage_memory` (GPU memory on the meta
device), `report` (what is found) and `format` (how it is printed).
"""

from ssenet.dryrun.format import format_report, format_table
from ssenet.dryrun.memory import (
    MemoryEstimate,
    estimate_inference_memory,
    estimate_training_memory,
    optimizer_slots,
    saved_activation_bytes,
)
from ssenet.dryrun.plan import steps_per_epoch
from ssenet.dryrun.report import DryRunReport, PlanRow
from ssenet.dryrun.run import SAMPLE_IMAGES, default_world_size, dry_run

__all__ = [
    "SAMPLE_IMAGES",
    "DryRunReport",
    "MemoryEstimate",
    "PlanRow",
    "default_world_size",
    "dry_run",
    "estimate_inference_memory",
    "estimate_training_memory",
    "format_report",
    "format_table",
    "optimizer_slots",
    "saved_activation_bytes",
    "steps_per_epoch",
]
