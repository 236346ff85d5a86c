"""The stage registry: what each pipeline stage is, declared once.

`ssenet run`, the per-stage CLI verbs, the dry run, the report and the demo all read it: the
order, names and titles, the image lists a stage trains on, labels and scores, how to run it and
how to plan it, and the network it trains. Adding a stage is one module
that builds a `Stage` plus a `register` call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ssenet.config import Config
from ssenet.errors import SsenetError

if TYPE_CHECKING:
    from ssenet.stages.layout import RunLayout

# {"train": [...], "infer": [...], "score": [...]}: the lists a stage reads, by use.
Lists = dict[str, list[str]]


@dataclass(frozen=True)
class Stage:
    """One pipeline stage.

    run(cfg, layout, progress) -> metrics: does the stage's work into the run directory (skipping
    what is current) and returns its scores ("miou", "mfn", "mfp" when it is scored) or a
    summary. lists(cfg): the image lists it reads, by use. plan(inputs) -> rows: the dry run's
    rows for it (optional). The config keys its outputs depend on are in its stamps and training
    digest (`ssenet.provenance`), next to the code that uses them.
    """

    name: str
    title: str
    run: Callable[[Config, RunLayout, bool], dict]
    lists: Callable[[Config], Lists]
    scored: bool = True
    plan: Callable[..., list] | None = None
    network: str = ""  # what it trains ("CAM network"), shown with its loss curve


STAGES: dict[str, Stage] = {}


def register(stage: Stage, after: str | None = None) -> Stage:
    """Add a stage at the end of the pipeline (or right after `after`); names are unique."""
    if stage.name in STAGES:
        raise SsenetError(f"stage {stage.name!r} is already registered")
    if after is None:
        STAGES[stage.name] = stage
        return stage
    if after not in STAGES:
        raise SsenetError(f"stage {after!r} is not registered; known: {list(STAGES)}")
    items = list(STAGES.items())
    at = [name for name, _ in items].index(after) + 1
    items.insert(at, (stage.name, stage))
    STAGES.clear()
    STAGES.update(items)
    return stage


def unregister(name: str) -> None:
    """Remove a stage (tests that register one of their own tidy up with this)."""
    STAGES.pop(name, None)


def parse_stages(text: str | None) -> list[str]:
    """`cam,crf` -> ["cam", "crf"], in pipeline order; None -> every stage."""
    if not text:
        return list(STAGES)
    wanted = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in STAGES]
    if unknown:
        raise SsenetError(f"--stages: unknown stage(s) {unknown}; choose from {list(STAGES)}")
    return [s for s in STAGES if s in wanted]


def scored_stages() -> list[Stage]:
    """The stages whose labels are scored, in order (the columns of every results table)."""
    return [stage for stage in STAGES.values() if stage.scored]


def stage_lists(cfg: Config, stages: list[str] | None = None) -> dict[str, Lists]:
    """Per stage: the lists it trains on, makes labels for, and scores (as `run` uses them)."""
    return {name: STAGES[name].lists(cfg) for name in (stages or list(STAGES))}
