"""The stage registry: its order and titles, and a stage of a test's own run by `ssenet run`."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from ssenet.cli import main
from ssenet.config import Config
from ssenet.data.palette import read_label_png, write_label_png
from ssenet.errors import SsenetError
from ssenet.inference import ListJob, image_work
from ssenet.stages import (
    STAGES,
    RunLayout,
    Stage,
    active_stages,
    parse_stages,
    register,
    scored_stages,
    stage_lists,
    unregister,
)
from ssenet.stages.common import gt_dir, score_labels
from ssenet.stages.irn_labels import relation_labels
from ssenet.stages.irn_walk import irn_walk_labels
from ssenet.stages.s1_cam import infer_cams
from ssenet.stages.s2_crf import crf_labels
from ssenet.stages.s4_random_walk import walk_labels
from ssenet.stages.s5_segmentation import infer_seg

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_stages_in_pipeline_order():
    assert list(STAGES) == ["cam", "crf", "aff", "rw", "irn_labels", "irn", "irn_rw", "seg"]
    assert [s.title for s in scored_stages()] == ["CAM", "CAM + CRF", "CAM + rw", "CAM + IRN",
                                                  "segmentation"]  # fmt: skip
    cfg = Config()  # the paper's refiner alone by default
    assert [s.title for s in scored_stages(cfg)] == ["CAM", "CAM + CRF", "CAM + rw",
                                                     "segmentation"]  # fmt: skip
    assert parse_stages(None, cfg) == ["cam", "crf", "aff", "rw", "seg"]
    assert parse_stages("seg,cam") == ["cam", "seg"]
    with pytest.raises(SsenetError, match=r"--stages: unknown stage\(s\) \['cmr'\]"):
        parse_stages("cam,cmr")


def test_stage_lists_follow_the_config():
    cfg = Config()
    cfg.data.train_list, cfg.data.infer_list, cfg.data.val_list = "train_aug", "train", "val"
    cfg.aff.train_list, cfg.seg.train_list = "train", "extra"
    plan = stage_lists(cfg)
    assert plan["cam"] == {"train": ["train_aug"], "infer": ["train", "extra"], "score": ["train"]}
    assert plan["crf"] == {"infer": ["train"], "score": ["train"]}
    assert plan["aff"] == {"train": ["train"]}
    assert plan["rw"] == {"infer": ["train", "extra"], "score": ["train"]}
    assert plan["seg"] == {"train": ["extra"], "infer": ["val"], "score": ["val"]}


def test_register_refuses_a_duplicate_and_an_unknown_anchor():
    with pytest.raises(SsenetError, match="'cam' is already registered"):
        register(STAGES["cam"])
    blank = Stage("blank", "blank", run=lambda *a: {})
    with pytest.raises(SsenetError, match="'nope' is not registered"):
        register(blank, after="nope")
    assert "blank" not in STAGES


def _background_stage(cfg: Config, layout: RunLayout, progress: bool = True) -> dict:
    """A trivial stage: every pixel background, scored like the pseudo labels."""
    label_dir = layout.labels("background")
    work = image_work(cfg, cfg.data.infer_list, (0, 1), lambda i: False)
    for image_id in work.todo:
        height, width = work.dataset.read_image(image_id).shape[:2]
        write_label_png(label_dir / f"{image_id}.png", np.zeros((height, width), np.uint8))
    return score_labels(cfg, label_dir, cfg.data.infer_list, layout.eval_json("background"))


@pytest.fixture
def background_stage():
    stage = Stage(
        name="background",
        title="all background",
        run=_background_stage,
        produces=("background labels",),
        scores=lambda cfg: [cfg.data.infer_list],
    )
    register(stage, after="cam")
    yield stage
    unregister("background")


def test_a_registered_stage_runs_through_ssenet_run(tmp_path, background_stage, capsys):
    from ssenet.data.synthetic import make_benchmark

    bench = tmp_path / "bench"
    make_benchmark(bench, size=32, num_train=4, num_train_eval=3, num_val=2, num_workers=1,
                   progress=False)  # fmt: skip
    config = tmp_path / "run.yaml"
    out = tmp_path / "run"
    config.write_text(yaml.safe_dump({"data": {"root": str(bench)}, "run": {"out_dir": str(out)}}))
    assert list(STAGES)[:2] == ["cam", "background"]
    dry = ["run", "--config", str(config), "--stages", "background", "--dry-run"]
    assert main(dry) == 0
    plan = capsys.readouterr().out
    assert "background" in plan and "infer" in plan and not (out / "eval").exists()

    assert main(["run", "--config", str(config), "--stages", "background", "--no-progress"]) == 0

    results = json.loads(RunLayout(out).results.read_text())
    assert list(results) == ["background"]
    # Hand-computed: background IoU = ground-truth background / labelled pixels; every other
    # class present in the ground truth has IoU 0; mIoU averages over the classes present.
    cfg = Config()
    cfg.data.root = str(bench)
    ids = [p.stem for p in sorted(RunLayout(out).labels("background").glob("*.png"))]
    masks = [read_label_png(gt_dir(cfg) / f"{i}.png") for i in ids]
    labelled = sum(int((m != 255).sum()) for m in masks)
    background = sum(int((m == 0).sum()) for m in masks)
    present = set().union(*(set(np.unique(m[m != 255]).tolist()) for m in masks)) | {0}
    assert len(ids) == 3
    assert results["background"]["miou"] == pytest.approx(background / labelled / len(present))
    assert "background mIoU" in capsys.readouterr().out
    assert Path(RunLayout(out).eval_json("background")).is_file()


def test_an_unknown_refiner_is_a_config_error_naming_the_known_ones(tmp_path, capsys):
    cfg = Config()
    cfg.refine.method = "nope"
    with pytest.raises(SsenetError, match=r"refine.method: 'nope' is no registered refiner "
                                          r"\(known: affinity"):
        active_stages(cfg)
    cfg.refine.method, cfg.refine.compare = "affinity", ("affinity", "bogus")
    with pytest.raises(SsenetError, match=r"refine.compare: 'bogus' is no registered refiner"):
        parse_stages(None, cfg)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"refine": {"method": "nope"}}))
    assert main(["run", "--config", str(config), "--dry-run"]) == 2
    assert "refine.method: 'nope' is no registered refiner" in capsys.readouterr().err


def test_a_stage_reading_what_no_stage_makes_is_refused():
    register(Stage("reader", "reader", run=lambda *a: {},
                   consumes=lambda cfg: {"nothing anyone makes": None}))  # fmt: skip
    try:
        with pytest.raises(SsenetError, match=r"'reader' reads \['nothing anyone makes'\], "
                                              "which no stage of this run produces"):
            stage_lists(Config())
    finally:
        unregister("reader")


PER_LIST = [infer_cams, crf_labels, walk_labels, infer_seg, relation_labels, irn_walk_labels]


@pytest.mark.parametrize("function", PER_LIST, ids=lambda f: f.__name__)
def test_every_per_list_function_takes_its_list_shard_and_progress_as_one_job(function):
    parameters = inspect.signature(function).parameters
    assert parameters["job"].annotation == "ListJob"  # postponed annotations: the name
    assert not {"list_name", "shard", "progress"} & set(parameters)


def test_a_job_without_a_list_takes_the_functions_default():
    assert ListJob(shard=(1, 2)).named("val") == ListJob("val", (1, 2), True)
    assert ListJob("train", progress=False).named("val") == ListJob("train", (0, 1), False)


def test_the_walk_stages_read_the_cams_and_their_network_and_are_scored_like_pseudo_labels():
    cfg = Config()
    for name, network in (("rw", "affinity network"), ("irn_rw", "irn boundary network")):
        stage = STAGES[name]
        assert stage.produces == (f"{stage.refiner} pseudo labels",)
        assert stage.consumes(cfg) == {"cams": None, network: []}
        assert stage.scores(cfg) == [cfg.data.infer_list]
