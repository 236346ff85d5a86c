"""SIGKILL a tiny five-stage run at several points inside every stage, rerun the same command
after each kill, and check the finished run equals an uninterrupted one with the same seed.

Each kill runs the pipeline in a child process that patches one function of the package to kill
its own process (no clean-up runs, as with a pre-empted job) at the n-th call: during a training
step, half-way through writing a checkpoint or a PNG (a temporary file is left behind), at the
n-th image of an inference stage. The kills are chained: every rerun resumes and goes on to the
next kill point, so one uninterrupted run and one killed run cover every point.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from ssenet.camfile import load_cams
from ssenet.checkpoint import load_checkpoint
from ssenet.config import dump_config
from ssenet.pipeline import run_pipeline

pytestmark = pytest.mark.usefixtures("one_thread")

# (module, attribute, n, how): kill at the n-th call in that child, "before" it runs or "half"
# way through a file write. In pipeline order; each child first resumes what the last one left.
# Two epochs per network: the CAM network has 2 steps an epoch, AffinityNet and DeepLab 1.
KILL_POINTS = [
    ("ssenet.cam", "CamObjective.forward", 3, "before"),  # CAM training, epoch 2, step 1
    ("ssenet.stages.s1_cam", "save_cams", 4, "before"),  # CAM inference, the 4th image
    ("ssenet.stages.s1_cam", "save_cams", 2, "half"),  # a CAM .npz half written
    # every CAM made, the scale sweep filled during inference not yet written: the next run
    # finds the CAMs complete and must make the sweep in a pass of its own
    ("ssenet.stages.s1_cam_figures", "ScaleSweep.write", 1, "before"),
    ("ssenet.stages.s2_crf", "write_label_png", 2, "half"),  # a CRF label PNG half written
    ("ssenet.stages.s2_crf", "save_scores", 4, "half"),  # a CRF score .npz half written
    ("ssenet.affinity", "AffinityObjective.forward", 2, "before"),  # AffinityNet, epoch 2
    ("ssenet.trainer", "save_checkpoint", 1, "half"),  # AffinityNet's epoch-2 checkpoint
    # the random walk's labels are written by ssenet.inference.network_labels (as IRNet's are,
    # a stage this run does not have)
    ("ssenet.inference", "write_label_png", 3, "before"),  # random walk, 3rd image
    ("ssenet.inference", "write_label_png", 2, "half"),  # an rw PNG half written
    ("ssenet.segmentation", "SegObjective.forward", 2, "before"),  # DeepLab training, epoch 2
    ("ssenet.stages.s5_segmentation", "write_label_png", 2, "before"),  # DeepLab inference
]

CHILD = r"""
import importlib, json, os, signal, sys
import torch
from ssenet.config import load_config
from ssenet.fileio import atomic_path
from ssenet.pipeline import run_pipeline

torch.set_num_threads(1)
config, run_dir, module_name, attribute, n, how = sys.argv[1:]
module = importlib.import_module(module_name)
owner, _, name = attribute.rpartition(".")
target = getattr(module, owner) if owner else module
real = getattr(target, name)
calls = [0]

def die(*args, **kwargs):
    calls[0] += 1
    if calls[0] == int(n):
        if how == "half":  # the path is the first argument after self, if any
            path = next(a for a in args if isinstance(a, (str, os.PathLike)))
            with atomic_path(path) as tmp:
                tmp.write_bytes(b"half a file")
                os.kill(os.getpid(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)

setattr(target, name, die)
run_pipeline(load_config(config), run_dir, progress=False)
"""


def kill_chain(cfg, run_dir, points, tmp_path) -> None:
    """Run the pipeline into `run_dir` once per kill point, each child killed at its point and
    resuming what the last one left; a "half" point leaves its temporary file behind."""
    config = tmp_path / "kill.yaml"
    config.write_text(dump_config(cfg))
    for module, attribute, n, how in points:
        argv = [str(config), str(run_dir), module, attribute, str(n), how]
        child = subprocess.run([sys.executable, "-c", CHILD, *argv], capture_output=True, text=True)
        assert child.returncode == -signal.SIGKILL, (attribute, child.stderr[-2000:])
        if how == "half":  # the dead writer's temporary file is there, until the next run
            assert list(run_dir.rglob(".*.tmp*")), attribute


def assert_same_networks(killed, whole, stages) -> None:
    for stage in stages:
        ours = torch.load(killed / stage / "model.pth", weights_only=True)
        theirs = torch.load(whole / stage / "model.pth", weights_only=True)
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs), stage


def kill_config(bench, tiny_run_config):
    cfg = tiny_run_config(bench)
    cfg.cam.epochs = cfg.aff.epochs = cfg.seg.epochs = 2
    return cfg


def test_killed_at_every_stage_and_resumed_equals_an_uninterrupted_run(
    tiny_run_config, tiny_run_benchmark, tmp_path
):
    cfg = kill_config(tiny_run_benchmark(tmp_path / "bench"), tiny_run_config)
    whole = tmp_path / "whole"
    run_pipeline(cfg, whole, progress=False)

    killed = tmp_path / "killed"
    kill_chain(cfg, killed, KILL_POINTS, tmp_path)
    run_pipeline(cfg, killed, progress=False)  # the same command, once more: it completes

    assert not list(killed.rglob(".*.tmp*"))  # a dead writer's temporaries are gone
    for path in killed.rglob("*.*"):  # every file of the run folder loads
        if path.suffix == ".pth":
            load_checkpoint(path)
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".png":
            Image.open(path).load()
        elif path.suffix == ".npz":
            with np.load(path) as data:
                [data[k] for k in data.files]
    results = json.loads((killed / "eval" / "results.json").read_text())
    assert results == json.loads((whole / "eval" / "results.json").read_text())
    # Every figure too: the scale sweep (Fig. 5) and the scale consistency, which an
    # uninterrupted run fills during CAM inference and a resumed one in a pass of its own,
    # the classifier, and each stage's scores and label-free counts.
    figures = sorted(p.name for p in (whole / "eval").glob("*.json"))
    assert {"scale_sweep.json", "scale_consistency.json", "classifier.json"} <= set(figures)
    assert sorted(p.name for p in (killed / "eval").glob("*.json")) == figures
    for name in figures:
        ours = json.loads((killed / "eval" / name).read_text())
        assert ours == json.loads((whole / "eval" / name).read_text()), name
    assert_same_networks(killed, whole, ("cam", "aff", "seg"))
    labels = sorted(whole.glob("*/labels/*.png"))
    assert len(labels) == 4 * 6  # cam, crf and rw labels of train, DeepLab's of val
    for path in labels:
        assert (killed / path.relative_to(whole)).read_bytes() == path.read_bytes(), path
    for path in sorted(whole.glob("*/*/*.npz")):  # CAMs and CRF scores: arrays (zip has clocks)
        if path.parent.name == "cams":
            pairs = zip(load_cams(killed / path.relative_to(whole)), load_cams(path), strict=True)
        else:
            with np.load(killed / path.relative_to(whole)) as a, np.load(path) as b:
                pairs = [(a[k], b[k]) for k in b.files]
        for ours, theirs in pairs:
            np.testing.assert_array_equal(ours, theirs)


# IRNet's refiner, killed inside each of its stages (the CAMs and CRF before it are finished):
# relation labels, the boundary network's training and checkpoint, the IRNet random walk, in
# the same chained way as above.
IRN_KILL_POINTS = [
    ("ssenet.stages.irn_labels", "write_label_png", 2, "half"),  # a relation label half written
    ("ssenet.stages.irn_labels", "write_label_png", 3, "before"),  # relation labels, 3rd image
    ("ssenet.irn", "BoundaryObjective.forward", 2, "before"),  # boundary network, epoch 2
    ("ssenet.trainer", "save_checkpoint", 1, "half"),  # its epoch-2 checkpoint
    ("ssenet.inference", "write_label_png", 3, "before"),  # IRNet's walk, 3rd image
    ("ssenet.inference", "write_label_png", 2, "half"),  # an IRNet label half written
]
IRN_STAGES = ("irn_labels", "irn", "irn_rw", "seg")  # IRNet's and DeepLab, which learns from it


def irn_kill_config(bench, tiny_run_config):
    cfg = tiny_run_config(bench)
    cfg.refine.method = "irn"  # DeepLab learns from IRNet's labels; no AffinityNet
    cfg.irn.epochs, cfg.irn.batch_size, cfg.irn.crop_size, cfg.irn.train_radius = 2, 6, 48, 3
    cfg.irn.exp_times, cfg.irn.train_list = 3, "train"
    return cfg


def test_irnets_stages_killed_and_resumed_equal_an_uninterrupted_run(
    tiny_run_config, tiny_run_benchmark, tmp_path
):
    cfg = irn_kill_config(tiny_run_benchmark(tmp_path / "bench"), tiny_run_config)
    whole = tmp_path / "whole"
    run_pipeline(cfg, whole, progress=False)
    killed = tmp_path / "killed"
    shutil.copytree(whole, killed)
    for stage in IRN_STAGES:  # as if the run had stopped after the CRF
        shutil.rmtree(killed / stage)
    (killed / "eval" / "results.json").unlink()

    kill_chain(cfg, killed, IRN_KILL_POINTS, tmp_path)
    run_pipeline(cfg, killed, progress=False)

    assert not list(killed.rglob(".*.tmp*"))
    results = json.loads((killed / "eval" / "results.json").read_text())
    assert list(results) == ["cam", "crf", "irn_rw", "seg"]
    assert results == json.loads((whole / "eval" / "results.json").read_text())
    assert_same_networks(killed, whole, ("irn", "seg"))
    labels = sorted(p for s in IRN_STAGES for p in whole.glob(f"{s}/labels/*.png"))
    assert len(labels) == 6 + 6 + 6  # relation and IRNet labels of train, DeepLab's of val
    for path in labels:
        assert (killed / path.relative_to(whole)).read_bytes() == path.read_bytes(), path
