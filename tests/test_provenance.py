"""A changed setting never leaves old outputs in place: a rerun remakes the stage it changes and
everything downstream, nothing else, and an unchanged rerun computes nothing (a tiny run)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ssenet.config import _apply, parse_overrides
from ssenet.pipeline import run_pipeline
from ssenet.provenance import read_stamp, stamp

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bench(tmp_path_factory, tiny_run_benchmark):
    return tiny_run_benchmark(tmp_path_factory.mktemp("bench"))


# The outputs of each stage, as groups of files whose modification times tell what was remade.
GROUPS = {
    "cam model": "cam/model.pth", "cams": "cam/cams/*.npz", "cam labels": "cam/labels/*.png",
    "crf": "crf/*/*.*", "aff model": "aff/model.pth", "rw": "rw/labels/*.png",
    "seg model": "seg/model.pth", "seg labels": "seg/labels/*.png",
}  # fmt: skip
DOWNSTREAM_OF_CAM = {"cams", "cam labels", "crf", "aff model", "rw", "seg model", "seg labels"}


def snapshot(run_dir):
    return {g: {p: p.stat().st_mtime_ns for p in run_dir.glob(pat)} for g, pat in GROUPS.items()}


def remade(before, after):
    return {g for g in GROUPS if before[g] != after[g]}


@pytest.mark.parametrize(
    "override, expected",
    [
        ("cam.alpha=0.35", {"cam labels", "rw", "seg model", "seg labels"}),  # rw's background
        ("crf.la=3", {"crf", "aff model", "rw", "seg model", "seg labels"}),
        ("rw.beta=1", {"rw", "seg model", "seg labels"}),
        ("rw.background=power", {"rw", "seg model", "seg labels"}),
        ("seg.epochs=2", {"seg model", "seg labels"}),
        ("cam.lr=0.002", {"cam model"} | DOWNSTREAM_OF_CAM),  # a changed upstream network
        ("run.seed=1", {"cam model"} | DOWNSTREAM_OF_CAM),
        ("cam.alpha_sweep=[0.1, 0.3]", set()),  # scoring only
    ],
)
def test_a_changed_setting_remakes_its_stage_and_everything_downstream_only(
    bench, finished_run, tiny_run_config, tmp_path, override, expected
):
    import shutil

    cfg, source = tiny_run_config(bench), finished_run
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    _apply(cfg, parse_overrides([override]), "test")
    before = snapshot(run_dir)
    run_pipeline(cfg, run_dir, progress=False)
    assert remade(before, snapshot(run_dir)) == expected
    after = snapshot(run_dir)
    run_pipeline(cfg, run_dir, progress=False)  # and then it is current: nothing more to do
    assert remade(after, snapshot(run_dir)) == set()


@pytest.fixture(scope="module")
def finished_run(bench, tiny_run_config, single_thread, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    with single_thread():
        first = run_pipeline(tiny_run_config(bench), run_dir, progress=False)
    assert set(first) == {"cam", "crf", "rw", "seg"}
    return run_dir


def test_every_output_is_stamped_and_an_unchanged_rerun_touches_nothing(
    bench, finished_run, tiny_run_config
):
    cfg, run_dir = tiny_run_config(bench), finished_run
    first_id = (bench / "ImageSets" / "Segmentation" / "train.txt").read_text().split()[0]
    for path in ("cam/cams/{}.npz", "cam/labels/{}.png", "crf/scores/{}.npz", "rw/labels/{}.png"):
        assert read_stamp(run_dir / path.format(first_id)), path
    assert read_stamp(run_dir / "cam" / "cams" / "nowhere.npz") is None
    before = snapshot(run_dir)
    results = json.loads((run_dir / "eval" / "results.json").read_text())
    assert run_pipeline(cfg, run_dir, progress=False) == results
    assert snapshot(run_dir) == before


def test_a_moved_and_respelled_dataset_root_keeps_every_network_and_output(
    bench, finished_run, tiny_run_config, tmp_path, monkeypatch
):
    """A location is not a setting: the dataset copied elsewhere and named by a relative path
    spelled with `./` and a doubled slash remakes nothing, trained networks included."""
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    shutil.copytree(bench, tmp_path / "moved" / "VOC2012")
    monkeypatch.chdir(tmp_path)
    cfg = tiny_run_config("./moved//VOC2012/")
    before = snapshot(run_dir)
    assert all(before[group] for group in GROUPS)  # every group has files to keep
    data_before = dataset_files(tmp_path / "moved")
    run_pipeline(cfg, run_dir, progress=False)
    assert remade(before, snapshot(run_dir)) == set()
    # Outside the run folder only the image-label cache is written (in the data root here).
    assert dataset_files(tmp_path / "moved") == data_before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["moved", "run"]
    assert json.loads((run_dir / "eval" / "results.json").read_text()) == json.loads(
        (finished_run / "eval" / "results.json").read_text()
    )


def dataset_files(root):
    """{path: bytes} of every file under `root` but ssenet's label cache."""
    from ssenet.data.voc import CACHE_DIR

    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and CACHE_DIR not in p.parts}


def test_a_file_setting_counts_by_content_not_by_path(tmp_path):
    from ssenet.config import Config

    names = "background\ncircle\nsquare\n"
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "names.txt").write_text(names)
    (tmp_path / "b.txt").write_text(names)
    for path in (tmp_path / "a" / "w.pth", tmp_path / "w.pth"):
        path.write_bytes(b"the same ImageNet weights")
    first, moved = Config(), Config()
    first.data.class_names = str(tmp_path / "a" / "names.txt")
    moved.data.class_names = str(tmp_path / "a" / ".." / "b.txt")
    first.model.weights = str(tmp_path / "a" / "w.pth")
    moved.model.weights = str(tmp_path / "w.pth")
    moved.data.root, moved.data.label_file = "elsewhere/VOC2012", "labels.txt"
    assert first.digest("data", "model") == moved.digest("data", "model")
    (tmp_path / "w.pth").write_bytes(b"other ImageNet weights")  # another starting point
    assert first.digest("data", "model") != moved.digest("data", "model")
    (tmp_path / "w.pth").write_bytes(b"the same ImageNet weights")
    (tmp_path / "b.txt").write_text(names + "triangle\n")  # other classes: another network
    assert first.digest("data", "model") != moved.digest("data", "model")


def test_affinity_digest_follows_its_crf_scores(bench, tiny_run_config, tmp_path):
    from ssenet.crffile import save_scores
    from ssenet.stages.s3_affinity import train_affinity

    cfg = tiny_run_config(bench)
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
    again = train_affinity(cfg, crf_dir, tmp_path / "aff", progress=False)
    assert again.meta["digest"] != first.meta["digest"]  # trained again on the new scores


def test_an_edited_mask_is_other_training_data(bench, finished_run, tiny_run_config, tmp_path):
    import shutil

    from ssenet.data.palette import read_label_png, write_label_png

    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    image_id = (bench / "ImageSets" / "Segmentation" / "train_aug.txt").read_text().split()[-1]
    mask_path = bench / "SegmentationClass" / f"{image_id}.png"
    original = read_label_png(mask_path)
    present = set(np.unique(original)) - {0, 255}
    edited = np.where(np.isin(original, list(present)), 1 + max(present) % 8, original)
    before = snapshot(run_dir)
    try:
        write_label_png(mask_path, edited.astype(np.uint8))
        run_pipeline(tiny_run_config(bench), run_dir, progress=False)
    finally:
        write_label_png(mask_path, original)
    assert remade(before, snapshot(run_dir)) == {"cam model"} | DOWNSTREAM_OF_CAM


def test_a_second_run_with_workers_gives_the_same_outputs(
    bench, finished_run, tiny_run_config, tmp_path
):

    from ssenet.camfile import load_cams

    cfg = tiny_run_config(bench)
    cfg.run.num_workers = 2  # data-loader workers: augmentation seeds follow (seed, epoch, index)
    run_dir = tmp_path / "again"
    run_pipeline(cfg, run_dir, progress=False)
    assert (run_dir / "eval" / "results.json").read_text() == (
        finished_run / "eval" / "results.json"
    ).read_text()
    for stage in ("cam", "aff", "seg"):
        ours = torch.load(run_dir / stage / "model.pth", weights_only=True)
        theirs = torch.load(finished_run / stage / "model.pth", weights_only=True)
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs), stage
    for path in sorted(finished_run.glob("*/labels/*.png")):  # labels, stamps included
        assert (run_dir / path.relative_to(finished_run)).read_bytes() == path.read_bytes()
    for path in sorted(finished_run.glob("cam/cams/*.npz")):  # zip entries carry a clock time
        for ours, theirs in zip(load_cams(run_dir / path.relative_to(finished_run)),
                                load_cams(path), strict=True):  # fmt: skip
            np.testing.assert_array_equal(ours, theirs)


def test_ssenet_run_prints_the_classifier_and_warns_when_it_has_not_learned(
    bench, finished_run, tiny_run_config, tmp_path, capsys
):
    import shutil

    from ssenet.cli import main
    from ssenet.config import dump_config

    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    config = tmp_path / "tiny.yaml"
    config.write_text(dump_config(tiny_run_config(bench)))
    assert main(["run", "--config", str(config), f"run.out_dir={run_dir}", "--no-progress"]) == 0
    out = capsys.readouterr().out
    classifier = json.loads((run_dir / "eval" / "classifier.json").read_text())
    assert f"classifier mAP {classifier['map']:.4f} on val" in out
    # One epoch on 12 images: this tiny classifier is near the prior, and the run says so.
    learned = classifier["map"] >= 1.5 * classifier["prior_map"]
    assert ("WARNING the classifier has not learned" in out) == (not learned)
