"""The stage registry: what each pipeline stage is, declared once.

`ssenet run`, the per-stage CLI verbs, the dry run, the report and the demo all read it: the
order, names and titles, what a stage reads and writes, the image lists it covers, trains on and
scores, how to run it, check it and plan it, and the network it trains. Adding a stage is one
module that builds a `Stage` plus a `register` call.

Stages pass each other named products ("cams", "crf scores", "affinity network"). A stage says
what it `produces` and, per config, what it `consumes` on which lists; the lists a stage must
cover follow from that: its own scored lists plus whatever later stages read of its products.
A refiner (CAMs -> pseudo labels) is a group of stages sharing a `refiner` name, one of which
produces "<refiner> pseudo labels"; the config's `refine.method` names the refiner the
segmentation network learns from and `refine.compare` those run and scored beside it. Stages of
no refiner run in every run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ssenet.config import Config
from ssenet.errors import SsenetError

if TYPE_CHECKING:
    from ssenet.stages.layout import RunLayout

# {"train": [...], "infer": [...], "score": [...]}: the lists a stage reads, by use.
Lists = dict[str, list[str]]
# product -> the lists a stage reads it on; None: every list the stage itself covers, [] for a
# product that is one file per run (a trained network).
Reads = dict[str, "list[str] | None"]


def _reads_nothing(cfg: Config) -> Reads:
    return {}


@dataclass(frozen=True)
class Stage:
    """One pipeline stage.

    run(cfg, layout, progress) -> metrics: does the stage's work into the run directory
    (skipping what is current) and returns its scores ("miou", "mfn", "mfp" when it is scored)
    or a summary; it makes its products for `covered_lists(cfg, name)`.
    produces: the products it writes. consumes(cfg): the products it reads, by list.
    trains_on(cfg): the lists it trains a network on. scores(cfg): the lists its labels are
    scored on (None: it is not scored). refiner: the refiner it belongs to ("": every run).
    section: the config section holding its training settings (`batch_size` is per GPU).
    plan(inputs) -> rows: the dry run's rows (`ssenet.dryrun.plan.PlanInputs`); without one the
    dry run shows its lists. check(cfg, world_size) -> errors: settings it would stop on, found
    up front by the dry run. network: what it trains ("CAM network"), shown with its loss
    curve. example_figure(cfg, layout, dataset, ids) -> {id: (H, W) uint8 grayscale picture}:
    what its trained network sees in the report's example images, shown beside their labels
    with the stage's title; {} when the network is not trained (then no cell).
    demo_settings: {"default" | "quick": config overrides} that `ssenet demo --refiner <its
    refiner>` adds to the demo's config, its settings scaled to the demo's images.
    demo_share: {"default" | "quick": the measured share of that demo's time (with `--refiner
    <its refiner>`) the stage takes}, which the demo's opening time estimate adds. The config
    keys its outputs depend on are in its stamps and training digest (`ssenet.provenance`),
    next to the code that uses them.
    """

    name: str
    title: str
    run: Callable[[Config, RunLayout, bool], dict]
    produces: tuple[str, ...] = ()
    consumes: Callable[[Config], Reads] = _reads_nothing
    trains_on: Callable[[Config], list[str]] | None = None
    scores: Callable[[Config], list[str]] | None = None
    refiner: str = ""
    section: str = ""
    plan: Callable[[Any], list] | None = field(default=None, compare=False)
    check: Callable[[Config, int], list[str]] | None = field(default=None, compare=False)
    network: str = ""
    example_figure: Callable[[Config, RunLayout, Any, list[str]], dict] | None = field(
        default=None, compare=False
    )
    demo_settings: dict[str, tuple[str, ...]] = field(default_factory=dict, compare=False)
    demo_share: dict[str, float] = field(default_factory=dict, compare=False)

    @property
    def scored(self) -> bool:
        return self.scores is not None


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


def known_refiners() -> list[str]:
    """The refiners of the registered stages, in pipeline order."""
    return list(dict.fromkeys(s.refiner for s in STAGES.values() if s.refiner))


def refiners(cfg: Config) -> list[str]:
    """The refiners a config runs: `refine.method` (DeepLab's labels), then `refine.compare`."""
    known = known_refiners()
    for key, names in (("refine.method", [cfg.refine.method]),
                       ("refine.compare", list(cfg.refine.compare))):  # fmt: skip
        unknown = [n for n in names if n not in known]
        if unknown:
            raise SsenetError(
                f"config key {key}: {', '.join(map(repr, unknown))} is no registered refiner "
                f"(known: {', '.join(known)})"
            )
    return list(dict.fromkeys([cfg.refine.method, *cfg.refine.compare]))


def active_stages(cfg: Config) -> list[str]:
    """The stages a run of this config has, in order: those of no refiner and those of the
    refiners it names."""
    chosen = set(refiners(cfg))
    return [name for name, s in STAGES.items() if not s.refiner or s.refiner in chosen]


def producer(product: str) -> str:
    """The stage that produces `product`."""
    for name, stage in STAGES.items():
        if product in stage.produces:
            return name
    raise SsenetError(f"no registered stage produces {product!r}")


def pseudo_labels(refiner: str) -> str:
    """The product name of a refiner's pseudo labels (what the segmentation network reads)."""
    return f"{refiner} pseudo labels"


def pseudo_label_stage(cfg: Config) -> str:
    """The stage whose `labels/` the segmentation network learns from (`refine.method`'s)."""
    refiners(cfg)  # a clear error for an unknown refiner
    return producer(pseudo_labels(cfg.refine.method))


def parse_stages(text: str | None, cfg: Config | None = None) -> list[str]:
    """`cam,crf` -> ["cam", "crf"], in pipeline order; None -> every stage of the config's run
    (every registered stage without a config). A stage of a refiner the config does not run is
    refused: its image lists would not be the run's."""
    every = active_stages(cfg) if cfg is not None else list(STAGES)
    if not text:
        return every
    wanted = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in STAGES]
    if unknown:
        raise SsenetError(f"--stages: unknown stage(s) {unknown}; choose from {every}")
    idle = [s for s in wanted if s not in every]
    if idle:
        names = sorted({STAGES[s].refiner for s in idle})
        raise SsenetError(
            f"--stages: {idle} belong to refiner(s) {names}, which this config does not run; "
            "name them in refine.method or refine.compare"
        )
    return [s for s in STAGES if s in wanted]


def scored_stages(*cfgs: Config) -> list[Stage]:
    """The stages whose labels are scored, in order (the columns of every results table): of
    the runs of `cfgs` when given (a stage any of them has), else every registered one."""
    names = set(STAGES) if not cfgs else {n for cfg in cfgs for n in active_stages(cfg)}
    return [stage for stage in STAGES.values() if stage.scored and stage.name in names]


def stage_lists(cfg: Config, stages: Sequence[str] | None = None) -> dict[str, Lists]:
    """Per stage (default: the config's run): the lists it trains on, makes products for, and
    scores, as `run` uses them. A stage covers its scored lists and every list a later stage
    of the run reads one of its products on."""
    wanted = list(stages) if stages is not None else active_stages(cfg)
    run = set(active_stages(cfg)) | set(wanted)
    names = [name for name in STAGES if name in run]
    covers = _covered(cfg, names)
    plan = {}
    for name in wanted:
        stage, spec = STAGES[name], {}
        if stage.trains_on is not None:
            spec["train"] = list(stage.trains_on(cfg))
        if covers[name]:
            spec["infer"] = covers[name]
        if stage.scores is not None:
            spec["score"] = list(stage.scores(cfg))
        plan[name] = spec
    return plan


def covered_lists(cfg: Config, name: str) -> list[str]:
    """The lists stage `name` makes its products for (the scored list first)."""
    return stage_lists(cfg, [name])[name].get("infer", [])


def _covered(cfg: Config, names: list[str]) -> dict[str, list[str]]:
    """The lists each stage of `names` (pipeline order) covers, computed from the last back."""
    reads = {name: STAGES[name].consumes(cfg) for name in names}
    made = {product for name in names for product in STAGES[name].produces}
    for name, wanted in reads.items():
        missing = [product for product in wanted if product not in made]
        if missing:
            raise SsenetError(
                f"stage {name!r} reads {missing}, which no stage of this run produces "
                f"(stages: {names})"
            )
    covers: dict[str, list[str]] = {}
    for at in range(len(names) - 1, -1, -1):
        stage = STAGES[names[at]]
        lists = list(stage.scores(cfg)) if stage.scores is not None else []
        for later in names[at + 1:]:
            for product, on in reads[later].items():
                if product in stage.produces:
                    lists += covers[later] if on is None else on
        covers[stage.name] = list(dict.fromkeys(lists))
    return covers
