"""The stage architecture's promise: a refiner registered from outside the package (here a
trivial one, the CAM + CRF labels copied) is planned by the dry run, run by `ssenet run`,
scored, shown in the report and learned from by DeepLab when the config names it, with no
change to the pipeline, the dry run, the report or the CLI."""

from __future__ import annotations

import json

import pytest

from ssenet.cli import main
from ssenet.config import Config, dump_config
from ssenet.data.palette import read_label_png, write_label_png
from ssenet.data.source import open_split
from ssenet.inference import image_work
from ssenet.stages import (
    RunLayout,
    Stage,
    active_stages,
    covered_lists,
    pseudo_labels,
    register,
    stage_lists,
    unregister,
)
from ssenet.stages.common import score_labels
from ssenet.stages.s5_segmentation import label_dir_digest

pytestmark = pytest.mark.usefixtures("one_thread")


def copy_crf_labels(cfg: Config, layout: RunLayout, progress: bool = True) -> dict:
    """The trivial refiner: each image's CAM + CRF label, copied, for every list it covers."""
    out = layout.labels("copy")
    for list_name in covered_lists(cfg, "copy"):
        work = image_work(cfg, list_name, (0, 1), lambda i: (out / f"{i}.png").is_file())
        for image_id in work.todo:
            label = read_label_png(layout.labels("crf") / f"{image_id}.png")
            write_label_png(out / f"{image_id}.png", label)
    return score_labels(cfg, out, cfg.data.infer_list, layout.eval_json("copy"))


COPY = Stage(
    name="copy",
    title="CAM + CRF, copied",
    run=copy_crf_labels,
    produces=(pseudo_labels("copy"),),
    consumes=lambda cfg: {"crf labels": None},
    scores=lambda cfg: [cfg.data.infer_list],
    refiner="copy",
)


@pytest.fixture
def copy_refiner():
    register(COPY, after="rw")
    yield COPY
    unregister("copy")


def test_the_config_decides_which_refiners_run_and_what_each_stage_covers(copy_refiner):
    cfg = Config()
    cfg.data.train_list, cfg.data.infer_list, cfg.seg.train_list = "train_aug", "train", "extra"
    assert active_stages(cfg) == ["cam", "crf", "aff", "rw", "seg"]  # the paper's by default
    cfg.refine.method = "copy"
    assert active_stages(cfg) == ["cam", "crf", "copy", "seg"]
    plan = stage_lists(cfg)
    assert plan["copy"] == {"infer": ["train", "extra"], "score": ["train"]}
    assert plan["crf"] == {"infer": ["train", "extra"], "score": ["train"]}  # copy reads it there
    assert plan["cam"]["infer"] == ["train", "extra"]  # no AffinityNet: not its training list
    cfg.refine.method, cfg.refine.compare = "affinity", ("copy",)  # both, side by side
    assert active_stages(cfg) == ["cam", "crf", "aff", "rw", "copy", "seg"]
    plan = stage_lists(cfg)
    assert plan["copy"]["infer"] == ["train"] and plan["rw"]["infer"] == ["train", "extra"]


def test_an_outside_refiner_is_planned_run_scored_reported_and_learned_from(
    copy_refiner, tiny_run_config, tiny_run_benchmark, tmp_path, capsys
):
    bench = tiny_run_benchmark(tmp_path / "bench")
    cfg = tiny_run_config(bench)
    cfg.refine.method, cfg.seg.train_list = "copy", "train_aug"
    cfg.run.out_dir, cfg.run.threads = str(tmp_path / "run"), 1
    config = tmp_path / "run.yaml"
    config.write_text(dump_config(cfg))

    assert main(["run", "--config", str(config), "--dry-run"]) == 0
    table = capsys.readouterr().out.split("plan (steps per GPU):")[1]
    rows = {tuple(line.split()[:2]) for line in table.splitlines() if line[:1].isalpha()}
    assert ("copy", "infer") in rows and not {("aff", "train"), ("rw", "infer")} & rows

    assert main(["run", "--config", str(config), "--no-progress"]) == 0
    layout = RunLayout(tmp_path / "run")
    results = json.loads(layout.results.read_text())
    assert list(results) == ["cam", "crf", "copy", "seg"]
    assert results["copy"] == results["crf"]  # the same labels, scored the same way
    assert not layout.stage("aff").exists() and not layout.stage("rw").exists()
    train_aug = open_split(cfg.data, "train_aug").ids
    assert len(list(layout.labels("copy").glob("*.png"))) == len(train_aug)  # all it covers
    trained = json.loads((layout.stage("seg") / "train.json").read_text())
    assert trained["digest"].endswith(label_dir_digest(layout.labels("copy"), train_aug))

    report = (layout.root / "report.html").read_text()
    summary = report[report.index("<h2>1. Results</h2>"):report.index("<h2>2.")]
    assert "CAM + CRF, copied mIoU" in summary and "CAM + rw" not in summary
    assert '_copy.png" alt="CAM + CRF, copied">' in report  # its labels among the examples


def test_the_demo_runs_an_outside_refiner_with_its_own_demo_settings(tmp_path):
    from dataclasses import replace

    from ssenet.demo import demo_config

    register(replace(COPY, demo_settings={"quick": ("crf.iterations=3",)}), after="rw")
    try:
        quick = demo_config(tmp_path, "ssenet", 0, True, refiner="copy")
        full = demo_config(tmp_path, "ssenet", 0, False, refiner="copy")
        assert active_stages(quick) == ["cam", "crf", "aff", "rw", "copy", "seg"]
    finally:
        unregister("copy")
    assert (quick.refine.method, quick.refine.compare) == ("copy", ("affinity",))
    assert quick.crf.iterations == 3 and full.crf.iterations == Config().crf.iterations
