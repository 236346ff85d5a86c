"""Where every output of a run lives: one object that the stages, the CLI verbs, the report,
the demo and the Python API all ask, so a path is written down once.

run_dir/cam/   model.pth, checkpoints/, tb/, cams/<id>.npz, labels/<id>.png (alpha background)
run_dir/crf/   scores/<id>.npz (la and ha CRF marginals), labels/<id>.png (CAM + CRF)
run_dir/aff/   model.pth, checkpoints/, tb/ (AffinityNet)
run_dir/rw/    labels/<id>.png (CAM + random walk: the pseudo labels)
run_dir/seg/   model.pth, checkpoints/, tb/, labels/<id>.png (DeepLab on the held-out list)
run_dir/eval/  one JSON per stage and results.json gathering them
run_dir/config.yaml, classes.txt: the resolved config and the class names (for `ssenet.api`)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run directory; `stage(name)` is a stage's own folder."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    def stage(self, name: str) -> Path:
        return self.root / name

    def weights(self, stage: str) -> Path:
        """A training stage's final network."""
        return self.stage(stage) / "model.pth"

    def labels(self, stage: str) -> Path:
        """A stage's label PNGs, one per image."""
        return self.stage(stage) / "labels"

    @property
    def cams(self) -> Path:
        return self.stage("cam") / "cams"

    @property
    def crf_scores(self) -> Path:
        return self.stage("crf") / "scores"

    @property
    def eval_dir(self) -> Path:
        return self.root / "eval"

    def eval_json(self, name: str) -> Path:
        """A stage's (or an extra figure's) scores: eval/<name>.json."""
        return self.eval_dir / f"{name}.json"

    @property
    def results(self) -> Path:
        return self.eval_json("results")

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def classes(self) -> Path:
        return self.root / "classes.txt"
