"""Predicting images without labels: `ssenet infer-seg --images / --list test`, the VOC layout."""

from __future__ import annotations

import errno
import os
import re
import shutil

import numpy as np
import pytest
from PIL import Image
from torchvision.datasets import VOCSegmentation

from ssenet.api import Segmenter
from ssenet.cli import main
from ssenet.config import dump_config
from ssenet.data.folder import open_images
from ssenet.data.palette import read_label_png, voc_palette, write_label_png
from ssenet.data.synthetic import make_benchmark
from ssenet.data.voc import open_voc
from ssenet.errors import SsenetError
from ssenet.models.configured import load_seg_model
from ssenet.predict import write_voc_layout
from ssenet.stages.s5_segmentation import train_seg

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tiny_run_config, single_thread, tmp_path_factory):
    """A tiny benchmark, a segmentation network trained a few steps on its masks, its config."""
    root = tmp_path_factory.mktemp("predict")
    bench = root / "bench"
    make_benchmark(bench, size=48, num_train=8, num_train_eval=6, num_val=4, num_workers=1,
                   progress=False)  # fmt: skip
    cfg = tiny_run_config(bench)
    cfg.seg.infer_batch, cfg.run.out_dir = 1, str(root / "run")  # one image a pass, as the API
    with single_thread():
        weights = train_seg(cfg, bench / "SegmentationClass", root / "run" / "seg", False).weights
    config = root / "run" / "config.yaml"
    config.write_text(dump_config(cfg))
    names = open_voc(bench, "val").class_names
    segmenter = Segmenter(load_seg_model(cfg, weights, len(names)), names, cfg, weights)
    return bench, config, weights, segmenter


def photos(folder, bench):
    """Three benchmark JPEGs under new names and a PNG of another size; no label file."""
    folder.mkdir()
    for name, source in zip(("a.jpg", "b.jpg", "c.jpeg"), sorted((bench / "JPEGImages").iterdir()),
                            strict=False):  # fmt: skip
        shutil.copy(source, folder / name)
    noise = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "d.png")
    return folder


def check_palette_png(path, size) -> np.ndarray:
    with Image.open(path) as png:
        assert png.mode == "P" and png.size == size
        assert png.getpalette()[: 3 * 256] == voc_palette().flatten().tolist()
        return np.array(png)


def test_infer_seg_predicts_a_folder_of_images_without_labels(trained, tmp_path, capsys):
    bench, config, weights, segmenter = trained
    images = photos(tmp_path / "photos", bench)
    out = tmp_path / "out"
    argv = ["infer-seg", "--config", str(config), "--weights", str(weights),
            "--images", str(images), "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    assert "4 of 4 labels computed" in capsys.readouterr().out
    written = sorted(p.name for p in (out / "labels").iterdir())
    assert written == ["a.png", "b.png", "c.png", "d.png"]
    api = segmenter.write_labels(images, tmp_path / "api")
    assert [p.name for p in api] == written
    for name, path in zip(written, sorted(images.iterdir()), strict=True):
        with Image.open(path) as image:
            label = check_palette_png(out / "labels" / name, image.size)
        assert label.max() < len(segmenter.class_names)
        np.testing.assert_array_equal(label, segmenter(str(path)))  # the API's prediction
        np.testing.assert_array_equal(read_label_png(tmp_path / "api" / name), label)
    assert main(argv) == 0
    assert "0 of 4 labels computed" in capsys.readouterr().out  # done images are skipped


def test_a_voc_list_without_labels_or_masks_opens_for_prediction(trained, tmp_path):
    bench = shutil.copytree(trained[0], tmp_path / "bench")
    add_test_list(bench)
    with pytest.raises(SsenetError, match=r"test_000000\.png: mask not found"):
        open_voc(bench, "test")  # labels come from masks, and test has none
    (bench / "ImageSets" / "Segmentation" / "cls_labels.txt").write_text("val_000000 axolite\n")
    with pytest.raises(SsenetError, match=r"cls_labels\.txt: no labels for 3 id"):
        open_voc(bench, "test")
    dataset = open_voc(bench, "test", image_labels=False)
    assert dataset.ids == ("test_000000", "test_000001", "test_000002")
    assert not dataset.labels("test_000001").any() and dataset.num_classes == 9


def add_test_list(bench) -> list[str]:
    """A `test` list of three JPEGs with no masks and no image-level labels (as VOC 2012's)."""
    ids = [f"test_{i:06d}" for i in range(3)]
    for image_id, source in zip(ids, sorted((bench / "JPEGImages").glob("val_*")), strict=False):
        shutil.copy(source, bench / "JPEGImages" / f"{image_id}.jpg")
    (bench / "ImageSets" / "Segmentation" / "test.txt").write_text("\n".join(ids) + "\n")
    return ids


def test_a_shared_network_predicts_voc_test_into_a_layout_torchvision_reads(trained, tmp_path):
    bench, _, _, segmenter = trained
    bench = shutil.copytree(bench, tmp_path / "bench")
    ids = add_test_list(bench)
    shared = segmenter.save_pretrained(tmp_path / "shared")
    out = tmp_path / "voc_test"
    argv = ["infer-seg", "--pretrained", str(shared), "--list", "test", "--out", str(out),
            "--voc-split", "val", f"data.root={bench}", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    voc = VOCSegmentation(str(out), year="2012", image_set="val")
    assert len(voc) == 3
    for index, image_id in enumerate(ids):
        image, target = voc[index]
        assert voc.images[index].endswith(f"{image_id}.jpg") and target.mode == "P"
        assert target.size == image.size == (48, 48)
        predicted = check_palette_png(out / "labels" / f"{image_id}.png", (48, 48))
        np.testing.assert_array_equal(np.array(target), predicted)
        np.testing.assert_array_equal(predicted, segmenter(str(bench / "JPEGImages" /
                                                                f"{image_id}.jpg")))  # fmt: skip
    # mmsegmentation's reading of the same root: <img_path>/<line>.jpg, <seg_map_path>/<line>.png
    base = out / "VOCdevkit" / "VOC2012"
    lines = (base / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    assert lines == ids
    assert all((base / "JPEGImages" / f"{i}.jpg").is_file() for i in lines)
    assert all((base / "SegmentationClass" / f"{i}.png").is_file() for i in lines)


@pytest.mark.parametrize(("extra", "message"), [
    ([], "give --config FILE"),
    (["--pretrained", "p"], "--pretrained DIR takes --out OUT"),
    (["--config", "CONFIG", "--list", "val", "--images", "IMAGES"], "not both"),
    (["--config", "CONFIG", "--images", "IMAGES", "--voc-split", "val"], r"d\.png: .* not a JPEG"),
    (["--config", "CONFIG", "--images", "EMPTY"], r"empty: no images \(\.jpg"),
])  # fmt: skip
def test_bad_infer_seg_requests_are_refused_before_any_inference(extra, message, trained,
                                                                 tmp_path, capsys):  # fmt: skip
    bench, config, weights, _ = trained
    images = photos(tmp_path / "photos", bench)
    (tmp_path / "empty").mkdir()
    where = {"CONFIG": str(config), "IMAGES": str(images), "EMPTY": str(tmp_path / "empty")}
    argv = ["infer-seg", *(where.get(a, a) for a in extra), "--weights", str(weights),
            "--out", str(tmp_path / "out"), "--no-progress"]  # fmt: skip
    if extra[:1] == ["--pretrained"]:
        argv.remove("--out")
        argv.remove(str(tmp_path / "out"))
    assert main(argv) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "out" / "labels").exists()


def test_open_images_refuses_two_images_of_one_name(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "x.jpg")
    Image.new("RGB", (4, 4)).save(tmp_path / "x.png")
    with pytest.raises(SsenetError, match=r"images x\.jpg, x\.png would write one prediction"):
        open_images(tmp_path)
    (tmp_path / "x.png").unlink()
    dataset = open_images(tmp_path, ["background", "thing"])
    assert dataset.ids == ("x",) and dataset.num_classes == 2 and not dataset.has_masks


def test_the_voc_layout_copies_where_symlinks_are_refused(tmp_path, monkeypatch):
    Image.new("RGB", (4, 3), (9, 9, 9)).save(tmp_path / "x.jpg")
    write_label_png(tmp_path / "out" / "labels" / "x.png", np.ones((3, 4), np.uint8))

    def refuse(*args, **kwargs):
        raise OSError(errno.EPERM, "symbolic links are not supported here")

    monkeypatch.setattr(os, "symlink", refuse)
    base = write_voc_layout(tmp_path / "out", "train", {"x": tmp_path / "x.jpg"},
                            tmp_path / "out" / "labels")  # fmt: skip
    copied = base / "SegmentationClass" / "x.png"
    assert not copied.is_symlink() and not (base / "JPEGImages" / "x.jpg").is_symlink()
    assert copied.read_bytes() == (tmp_path / "out" / "labels" / "x.png").read_bytes()
    assert (base / "ImageSets" / "Segmentation" / "train.txt").read_text() == "x\n"
    assert len(VOCSegmentation(str(tmp_path / "out"), year="2012", image_set="train")) == 1


def test_out_at_the_datasets_own_root_is_refused_and_the_dataset_kept(trained, tmp_path, capsys):
    """`infer-seg --voc-split` with OUT/VOCdevkit/VOC2012 the dataset itself: refused before any
    inference, every image, mask and list left as it was (none replaced by a link)."""
    bench, config, weights, _ = trained
    root = shutil.copytree(bench, tmp_path / "VOCdevkit" / "VOC2012")
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    argv = ["infer-seg", "--config", str(config), "--weights", str(weights), "--list", "val",
            "--out", str(tmp_path), "--voc-split", "val", f"data.root={root}", "--no-progress"]
    assert main(argv) == 2
    assert "holds files ssenet did not make" in capsys.readouterr().err
    after = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert after == before and not any(p.is_symlink() for p in root.rglob("*"))
    assert not (tmp_path / "labels").exists()


def test_a_layout_ssenet_made_is_remade_in_place_and_follows_no_link(tmp_path):
    Image.new("RGB", (4, 3), (9, 9, 9)).save(tmp_path / "x.jpg")
    write_label_png(tmp_path / "out" / "labels" / "x.png", np.ones((3, 4), np.uint8))
    labels = tmp_path / "out" / "labels"
    base = write_voc_layout(tmp_path / "out", "train", {"x": tmp_path / "x.jpg"}, labels)
    victim = tmp_path / "victim.txt"
    victim.write_text("kept")
    (base / "SegmentationClass" / "x.png").unlink()
    (base / "SegmentationClass" / "x.png").symlink_to(victim)  # replaced, never followed
    # The layout's own images as the input: each link goes to the image, never to itself.
    images = {"x": base / "JPEGImages" / "x.jpg"}
    assert write_voc_layout(tmp_path / "out", "train", images, labels) == base
    assert os.readlink(base / "JPEGImages" / "x.jpg") == str(tmp_path / "x.jpg")
    assert (base / "SegmentationClass" / "x.png").read_bytes() == (labels / "x.png").read_bytes()
    assert victim.read_text() == "kept"


def test_the_copy_fallback_never_writes_through_a_link(tmp_path, monkeypatch):
    import ssenet.predict as predict

    Image.new("RGB", (4, 3), (9, 9, 9)).save(tmp_path / "x.jpg")
    victim = tmp_path / "victim.txt"
    victim.write_text("kept")
    symlink = os.symlink

    def taken(pointer, tmp):  # another user's link appears where ssenet's link was to be made
        symlink(victim, tmp)
        raise OSError(errno.EEXIST, "File exists")

    monkeypatch.setattr(os, "symlink", taken)
    with pytest.raises(FileExistsError):
        predict._link(tmp_path / "x.jpg", tmp_path / "out" / "x.jpg")
    assert victim.read_text() == "kept" and not (tmp_path / "out" / "x.jpg").exists()

    def unsupported_after_a_planted_link(pointer, tmp):
        symlink(victim, tmp)
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "symlink", unsupported_after_a_planted_link)
    with pytest.raises(FileExistsError):  # the copy is made into a new file only
        predict._link(tmp_path / "x.jpg", tmp_path / "out" / "x.jpg")
    assert victim.read_text() == "kept"
