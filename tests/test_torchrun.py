"""`torchrun` on the CPU (gloo): the command-line paths of a multi-process run.

A finished CAM stage is resumed by 2 processes with the later stages: the ranks must join the
process group although nothing is trained first, shard the CRF and the random walk, wait for
each other's shards, and score once; the CRF labels and score equal one process's. A CUDA
device asked for on a machine without one is a one-line error on every rank, not a hang.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ssenet.config import dump_config
from ssenet.data.synthetic import make_benchmark
from ssenet.pipeline import run_pipeline

pytestmark = pytest.mark.usefixtures("one_thread")


def torchrun(*args: str, timeout: float = 300, env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess:  # fmt: skip
    """`torchrun --standalone --nproc_per_node 2 -m ssenet.cli ARGS`, one thread per rank."""
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"} | (env or {})
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", "-m", "ssenet.cli", *args]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("torchrun")
    make_benchmark(root / "data", size=48, num_train=16, num_train_eval=8, num_val=8,
                   num_workers=1, progress=False)  # fmt: skip
    return root


def write_config(root: Path, tiny_run_config, **run) -> Path:
    cfg = tiny_run_config(root / "data")
    cfg.crf.backend = "torch"
    cfg.run.threads = 1
    cfg.aff.batch_size = cfg.seg.batch_size = 4  # 8 training images: 4 a process
    for key, value in run.items():
        setattr(cfg.run, key, value)
    path = root / f"config_{len(list(root.glob('config_*.yaml')))}.yaml"
    path.write_text(dump_config(cfg))
    return path


def test_resumed_run_under_torchrun_joins_shards_waits_and_scores_once(bench, tiny_run_config):
    from ssenet.config import load_config

    config = write_config(bench, tiny_run_config)
    cfg = load_config(str(config))
    single, ranks = bench / "single", bench / "ranks"
    run_pipeline(cfg, single, ["cam", "crf"], progress=False)
    run_pipeline(cfg, ranks, ["cam"], progress=False)  # a finished CAM network and CAMs

    done = torchrun("run", "--config", str(config), "--run-dir", str(ranks), "--no-progress",
                    "--stages", "crf,aff,rw,seg")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("ssenet: torchrun: 2 processes joined (gloo") == 1
    results = json.loads((ranks / "eval" / "results.json").read_text())
    assert set(results) == {"cam", "crf", "rw", "seg"}
    expected = json.loads((single / "eval" / "results.json").read_text())
    assert results["crf"] == expected["crf"]  # scored on both ranks' shards
    labels = sorted(p.name for p in (ranks / "crf" / "labels").glob("*.png"))
    assert labels == sorted(p.name for p in (single / "crf" / "labels").glob("*.png"))
    assert len(labels) == 8
    for name in labels:
        assert (ranks / "crf" / "labels" / name).read_bytes() == (
            single / "crf" / "labels" / name
        ).read_bytes()
    assert done.stdout.count("crf   mIoU") == 1  # rank 0 alone reports
    assert len(list((ranks / "rw" / "labels").glob("*.png"))) == 8
    assert len(list((ranks / "seg" / "labels").glob("*.png"))) == 8
    leftovers = [p for p in ranks.rglob("*") if p.name.endswith(".tmp")]
    assert not leftovers


def test_cuda_under_torchrun_without_cuda_is_a_one_line_error(bench, tiny_run_config):
    config = write_config(bench, tiny_run_config, device="cuda")
    done = torchrun("run", "--config", str(config), "--run-dir", str(bench / "cuda"),
                    "--no-progress", timeout=120,
                    env={"CUDA_VISIBLE_DEVICES": ""})  # a GPU machine hides its GPUs  # fmt: skip
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.startswith("ssenet: error:")]
    assert len(lines) == 2  # one line from each rank
    assert all("run.device: 'cuda' requested but CUDA is not available" in x for x in lines)
    assert "Traceback" not in done.stderr.split("ssenet: error:")[0]


def test_irnets_refiner_under_torchrun_shards_its_labels_and_trains_once(bench, tiny_run_config):
    """The three IRNet stages by 2 processes on a finished CAM stage: the relation labels equal
    one process's (sharded CRFs), the boundary network trains once (DDP), every pseudo label is
    written and scored once, and DeepLab learns from them."""
    from ssenet.config import load_config

    config = write_config(bench, tiny_run_config)
    irn = ["refine.method=irn", "irn.epochs=1", "irn.batch_size=4", "irn.crop_size=48",
           "irn.train_radius=3", "irn.exp_times=3", "irn.train_list=train"]  # fmt: skip
    cfg = load_config(str(config), irn)
    single, ranks = bench / "irn_single", bench / "irn_ranks"
    run_pipeline(cfg, single, ["cam", "irn_labels"], progress=False)
    run_pipeline(cfg, ranks, ["cam"], progress=False)

    done = torchrun("run", "--config", str(config), "--run-dir", str(ranks), "--no-progress",
                    "--stages", "irn_labels,irn,irn_rw,seg", *irn)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    names = sorted(p.name for p in (single / "irn_labels" / "labels").glob("*.png"))
    assert len(names) == 8
    for name in names:
        assert (ranks / "irn_labels" / "labels" / name).read_bytes() == (
            single / "irn_labels" / "labels" / name).read_bytes()  # fmt: skip
    meta = json.loads((ranks / "irn" / "train.json").read_text())
    assert meta["steps"] == 1  # 8 images, 4 a process: one step of the 2-process batch
    results = json.loads((ranks / "eval" / "results.json").read_text())
    assert set(results) == {"cam", "irn_rw", "seg"} and "miou" in results["irn_rw"]
    assert len(list((ranks / "irn_rw" / "labels").glob("*.png"))) == 8
    assert done.stdout.count("irn_rw mIoU") == 1  # rank 0 alone reports


def test_preflight_refuses_a_batch_some_process_cannot_fill(
    bench, tiny_run_config, monkeypatch
):
    from ssenet.errors import SsenetError
    from ssenet.pipeline import preflight

    cfg = tiny_run_config(bench / "data")  # CAM: 16 train_aug images; the others 8 train ones
    cfg.aff.batch_size = cfg.seg.batch_size = 4
    stages = ["cam", "crf", "aff", "rw", "seg"]
    monkeypatch.setenv("WORLD_SIZE", "2")
    preflight(cfg, stages)  # 8 and 4 images a process: a full batch each
    monkeypatch.setenv("WORLD_SIZE", "4")  # found before any stage runs, not at its training
    with pytest.raises(SsenetError, match=r"cam training: list 'train_aug' has 16 images, 4 per "
                       r"process over 4: no full batch of 6; lower cam.batch_size"):  # fmt: skip
        preflight(cfg, stages)
    monkeypatch.setenv("WORLD_SIZE", "3")  # CAM 6 a process; AffinityNet 3, short of 4
    with pytest.raises(SsenetError, match=r"aff training: list 'train' has 8 .* lower aff\."):
        preflight(cfg, stages)
    preflight(cfg, ["cam", "crf"])  # only the stages that run count


def test_preflight_passes_over_a_training_stage_without_a_config_section(
    bench, tiny_run_config, monkeypatch
):
    from ssenet.pipeline import preflight
    from ssenet.stages import Stage, register, unregister

    cfg = tiny_run_config(bench / "data")
    monkeypatch.setenv("WORLD_SIZE", "4")
    cfg.cam.batch_size = 4  # 16 train_aug images: 4 a process
    register(Stage(name="own", title="own", run=lambda cfg, layout, progress: {},
                   trains_on=lambda cfg: ["train"]), after="cam")  # fmt: skip
    try:
        preflight(cfg, ["cam", "own"])  # no section, no batch_size to read: not a traceback
    finally:
        unregister("own")
