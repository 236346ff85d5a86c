"""The printed dry run: the checks passed, the plan table, the memory method, warnings, errors."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

from ssenet.dryrun.memory import MEMORY_METHOD, format_size
from ssenet.dryrun.report import DryRunReport, PlanRow

_COLUMNS = ("stage", "step", "lists", "images", "batch/GPU", "steps/epoch", "epochs",
            "steps", "GPU memory")


def _cells(row: PlanRow) -> list[str]:
    unknown = "?" if row.step == "train" else "-"  # "?": the training list could not be read

    def number(value: int | None) -> str:
        return unknown if value is None else f"{value:,}"

    memory = row.device if row.device != "GPU" else (
        "?" if row.memory is None else format_size(row.memory.total))
    images = "?" if row.images is None else f"{row.images:,}"
    return [row.stage, row.step, ",".join(row.lists), images, row.batch,
            number(row.steps_per_epoch), number(row.epochs), number(row.total_steps), memory]


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
