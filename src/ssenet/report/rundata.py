"""Reading a run directory for the report: its config, its `eval/*.json` files, its train.json.

Nothing here runs a model or renders anything; a stage without its file reads as None.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ssenet.config import Config
from ssenet.errors import SsenetError
from ssenet.stages import RunLayout, scored_stages

# The CAM stage's extra figures, beside each stage's own eval/<stage>.json.
EXTRA_EVAL_FILES = ("scale_sweep", "scale_consistency", "classifier")


@dataclass
class RunData:
    """One method's config, run directory and whatever evaluation files it has."""

    name: str
    cfg: Config
    run_dir: Path
    evals: dict[str, dict | None]

    def stage(self, stage: str) -> dict | None:
        """A stage's metrics: its own JSON, else its summary in results.json."""
        full = self.evals.get(stage)
        if full is not None:
            return full
        return (self.evals.get("results") or {}).get(stage)

    def history(self, stage: str) -> list[dict]:
        """The per-epoch losses in `stage/train.json`; empty when the stage was not trained."""
        meta = read_eval_json(self.run_dir / stage / "train.json") or {}
        return meta.get("history") or []


def read_eval_json(path: Path) -> dict | None:
    """A JSON object, or None when the file does not exist."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SsenetError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise SsenetError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def load_run(name: str, cfg: Config, run_dir: str | Path) -> RunData:
    """The run's evaluation files, read once; a missing one is None."""
    run_dir = Path(run_dir)
    layout = RunLayout(run_dir)
    names = ("results", *(s.name for s in scored_stages()), *EXTRA_EVAL_FILES)
    evals = {key: read_eval_json(layout.eval_json(key)) for key in names}
    return RunData(name, cfg, run_dir, evals)
