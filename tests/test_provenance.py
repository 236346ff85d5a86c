"""A changed setting never leaves old outputs in place: stamps remake what it changes, training
refuses, and an unchanged rerun computes nothing, on a tiny five-stage run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ssenet.config import Config
from ssenet.data.benchmark import make_benchmark
from ssenet.errors import SsenetError
from ssenet.pipeline import run_pipeline
from ssenet.provenance import read_stamp, stamp

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    make_benchmark(root, size=48, num_train=12, num_train_eval=6, num_val=6, num_workers=1,
                   progress=False)  # fmt: skip
    return root


def tiny_config(root) -> Config:
    cfg = Config()
    cfg.data.root = str(root)
    cfg.model.width, cfg.model.pretrained = 0.125, False
    cfg.cam.epochs, cfg.cam.batch_size, cfg.cam.optimizer, cfg.cam.lr = 1, 6, "adamw", 1e-3
    cfg.cam.resize_long, cfg.cam.crop_size, cfg.cam.infer_scales = (40, 56), 40, (1.0, 0.5)
    cfg.cam.scale_sweep = (0.5, 1.0)
    cfg.aff.epochs, cfg.aff.batch_size, cfg.aff.crop_size, cfg.aff.radius = 1, 6, 48, 2
    cfg.aff.train_list = cfg.seg.train_list = "train"
    cfg.rw.radius, cfg.rw.logt = 2, 3
    cfg.seg.epochs, cfg.seg.batch_size, cfg.seg.crop_size, cfg.seg.infer_scales = 1, 6, 40, (1.0,)
    cfg.seg.optimizer = "adamw"
    cfg.run.device, cfg.run.num_workers = "cpu", 0
    return cfg


def label_files(run_dir, stage):
    return {p.name: p.read_bytes() for p in sorted((run_dir / stage / "labels").glob("*.png"))}


def mtimes(run_dir, pattern):
    return {p.relative_to(run_dir): p.stat().st_mtime_ns for p in sorted(run_dir.glob(pattern))}


def test_stamps_remake_what_a_setting_changes_and_nothing_else(bench, tmp_path):
    run_dir = tmp_path / "run"
    cfg = tiny_config(bench)
    first = run_pipeline(cfg, run_dir, progress=False)
    assert set(first) == {"cam", "crf", "rw", "seg"}
    # Every per-image output carries its stamp; the CRF's is made from its CAM file's.
    first_id = (bench / "ImageSets" / "Segmentation" / "train.txt").read_text().split()[0]
    cam_file = run_dir / "cam" / "cams" / f"{first_id}.npz"
    crf_file = run_dir / "crf" / "scores" / f"{first_id}.npz"
    assert read_stamp(cam_file) and read_stamp(crf_file)
    assert read_stamp(run_dir / "rw" / "labels" / f"{first_id}.png")
    assert read_stamp(run_dir / "cam" / "cams" / "nowhere.npz") is None

    # An unchanged rerun touches no output.
    before = mtimes(run_dir, "*/*/*.*")
    assert run_pipeline(cfg, run_dir, progress=False) == first
    assert mtimes(run_dir, "*/*/*.*") == before

    # A new random-walk setting remakes every random-walk label (they differ) and nothing
    # upstream; DeepLab, trained on the old labels, is refused rather than reused.
    rw_before = label_files(run_dir, "rw")
    cfg.rw.beta = 1.0
    run_pipeline(cfg, run_dir, stages=["rw"], progress=False)
    rw_after = label_files(run_dir, "rw")
    assert rw_after.keys() == rw_before.keys()
    assert all(rw_after[k] != rw_before[k] for k in rw_after)  # new stamps at least
    assert mtimes(run_dir, "c*/*/*.*") == {k: v for k, v in before.items() if str(k)[0] == "c"}
    with pytest.raises(SsenetError, match="different config"):
        run_pipeline(cfg, run_dir, stages=["seg"], progress=False)

    # A new background score keeps the CAM network and CAMs, remakes the CAM labels only.
    cams_before = mtimes(run_dir, "cam/cams/*.npz")
    cfg.cam.alpha = 0.35
    run_pipeline(cfg, run_dir, stages=["cam", "crf"], progress=False)
    assert mtimes(run_dir, "cam/cams/*.npz") == cams_before
    assert mtimes(run_dir, "crf/*/*.*") == {k: v for k, v in before.items() if str(k)[:3] == "crf"}
    cam_eval = json.loads((run_dir / "eval" / "cam.json").read_text())
    assert cam_eval["alpha"] == 0.35

    # Another seed is another network: refused, never answered with the seed-0 results.
    cfg.run.seed = 1
    with pytest.raises(SsenetError, match="different config"):
        run_pipeline(cfg, run_dir, stages=["cam"], progress=False)


def test_affinity_digest_follows_its_crf_scores(bench, tmp_path):
    from ssenet.affinity import train_affinity
    from ssenet.crf_stage import save_scores

    cfg = tiny_config(bench)
    crf_dir = tmp_path / "crf"
    rng = np.random.default_rng(0)
    ids = (bench / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    for image_id in ids:
        la = rng.random((2, 48, 48)).astype(np.float32)
        save_scores(crf_dir / f"{image_id}.npz", la, la, np.array([1]), made_from=stamp("a"))
    first = train_affinity(cfg, crf_dir, tmp_path / "aff", progress=False)
    assert train_affinity(cfg, crf_dir, tmp_path / "aff", progress=False).meta == first.meta
    la = rng.random((2, 48, 48)).astype(np.float32)
    save_scores(crf_dir / f"{ids[0]}.npz", la, la, np.array([1]), made_from=stamp("b"))
    with pytest.raises(SsenetError, match="different config"):
        train_affinity(cfg, crf_dir, tmp_path / "aff", progress=False)
