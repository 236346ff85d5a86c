"""What a dry run finds: the checks passed, the plan rows, the warnings and the errors.

The checks and the plan append to one `DryRunReport`; `ssenet.dryrun.format` prints it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ssenet.dryrun.memory import MemoryEstimate


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
