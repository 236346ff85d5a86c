"""The COCO 2014 reader: masks from polygons and RLE, labels, lists, the mask cache, bad input,
the evaluation guard and the COCO configs, on tiny annotation files written here."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from ssenet.cli import main
from ssenet.config import DataConfig, load_config
from ssenet.data import coco
from ssenet.data.coco import COCO_CATEGORIES, COCO_CLASSES, open_coco
from ssenet.data.datasets import ImageListDataset
from ssenet.data.palette import read_label_png, voc_palette
from ssenet.data.source import open_split
from ssenet.errors import SsenetError
from ssenet.evaluation.guard import check_pseudo_label_eval, pseudo_label_eval_problem
from ssenet.evaluation.metrics import evaluate_label_dirs
from ssenet.pipeline import preflight
from ssenet.stages.common import gt_dir, missing_ground_truth

H, W = 6, 8
PERSON, CAR, DOG = 1, 3, 18  # COCO category ids; classes 1, 2, 3 in ascending id order
CATEGORIES = [{"id": DOG, "name": "dog"}, {"id": PERSON, "name": "person"},
              {"id": CAR, "name": "car"}]  # fmt: skip


def image_id(split: str, number: int) -> str:
    return f"COCO_{split}_{number:012d}"


def rectangle(x0: int, y0: int, x1: int, y1: int) -> list[list[float]]:
    """A polygon with corners (x0, y0) and (x1, y1): pycocotools fills columns x0..x1-1 and rows
    y0..y1-1 (checked by hand on small cases)."""
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def compressed_rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def ann(n: int, number: int, category: int, segmentation, area: float, crowd: int = 0) -> dict:
    return {"id": n, "image_id": number, "category_id": category, "segmentation": segmentation,
            "area": area, "iscrowd": crowd, "bbox": [0, 0, 1, 1]}  # fmt: skip


def write_images(root: Path, split: str, numbers: list[int]) -> list[dict]:
    (root / split).mkdir(parents=True, exist_ok=True)
    images = []
    for number in numbers:
        name = f"{image_id(split, number)}.jpg"
        pixels = np.full((H, W, 3), 40 * number % 256, np.uint8)
        Image.fromarray(pixels).save(root / split / name, quality=95)
        images.append({"id": number, "file_name": name, "height": H, "width": W})
    return images


def write_annotations(root: Path, split: str, data: dict) -> Path:
    path = root / "annotations" / f"instances_{split}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def train_annotations(images: list[dict]) -> dict:
    block = np.zeros((H, W), bool)
    block[0:2, 5:8] = True  # rows 0-1, columns 5-7: 6 pixels
    return {
        "images": images,
        "categories": CATEGORIES,
        "annotations": [
            # image 1: a person (12 px) over a larger car (16 px) where they overlap
            ann(10, 1, CAR, rectangle(3, 2, 7, 6), 16),
            ann(11, 1, PERSON, rectangle(1, 1, 5, 4), 12),
            # image 2: an uncompressed-RLE dog crowd (column 2, rows 1-3) and a compressed car
            ann(20, 2, DOG, {"size": [H, W], "counts": [2 * H + 1, 3, H * W - 2 * H - 4]}, 3, 1),
            ann(21, 2, CAR, compressed_rle(block), 6),
            # image 4: two objects of equal area: the first in the file stays on top
            ann(40, 4, DOG, rectangle(0, 0, 4, 3), 12),
            ann(41, 4, PERSON, rectangle(2, 0, 6, 3), 12),
        ],  # image 3 has no annotation
    }


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """train2014: images 1, 2, 4 annotated, 3 not; val2014: image 7 with a car."""
    root = tmp_path / "coco"
    write_annotations(
        root, "train2014", train_annotations(write_images(root, "train2014", [1, 2, 3, 4]))
    )
    val = {"images": write_images(root, "val2014", [7]), "categories": CATEGORIES,
           "annotations": [ann(70, 7, CAR, rectangle(0, 0, 8, 6), 48)]}  # fmt: skip
    write_annotations(root, "val2014", val)
    return root


def expected_train_masks() -> dict[int, np.ndarray]:
    one = np.zeros((H, W), np.uint8)
    one[2:6, 3:7] = 2  # car: rows 2-5, columns 3-6
    one[1:4, 1:5] = 1  # person on top: rows 1-3, columns 1-4
    two = np.zeros((H, W), np.uint8)
    two[1:4, 2] = 3  # the crowd is drawn as its class
    two[0:2, 5:8] = 2
    four = np.zeros((H, W), np.uint8)
    four[0:3, 2:6] = 1
    four[0:3, 0:4] = 3  # the dog comes first in the file: it keeps columns 2-3
    return {1: one, 2: two, 4: four}


def test_masks_pixel_by_pixel(root: Path) -> None:
    dataset = open_coco(root, "train2014")
    for number, expected in expected_train_masks().items():
        np.testing.assert_array_equal(dataset.read_mask(image_id("train2014", number)), expected)


def test_masks_are_palette_pngs_under_the_root(root: Path) -> None:
    dataset = open_coco(root, "train2014")
    path = dataset.mask_path(image_id("train2014", 1))
    assert path == root / "ssenet_masks" / f"{image_id('train2014', 1)}.png"
    with Image.open(path) as image:
        assert image.mode == "P"
        palette = np.array(image.getpalette(), np.uint8).reshape(-1, 3)
    np.testing.assert_array_equal(palette, voc_palette(256))
    names = (root / "ssenet_masks" / "class_names.txt").read_text().split()
    assert names == ["background", "person", "car", "dog"]


def test_labels_classes_and_lists(root: Path) -> None:
    dataset = open_coco(root, "train")
    assert dataset.class_names == ("background", "person", "car", "dog")
    assert dataset.ids == tuple(image_id("train2014", n) for n in (1, 2, 4))  # 3: no annotation
    # every annotation's category counts, the crowd's too
    np.testing.assert_array_equal(dataset.labels(image_id("train2014", 1)), [1, 1, 0])
    np.testing.assert_array_equal(dataset.labels(image_id("train2014", 2)), [0, 1, 1])
    np.testing.assert_array_equal(dataset.labels(image_id("train2014", 4)), [1, 0, 1])
    assert open_coco(root, "train_aug").ids == open_coco(root, "train2014").ids == dataset.ids
    val = open_coco(root, "val")
    assert val.ids == (image_id("val2014", 7),)
    assert val.image_path(val.ids[0]) == root / "val2014" / f"{val.ids[0]}.jpg"
    np.testing.assert_array_equal(val.read_mask(val.ids[0]), np.full((H, W), 2))


def test_id_file_may_mix_splits_and_name_unannotated_images(root: Path, tmp_path: Path) -> None:
    ids = [image_id("val2014", 7), image_id("train2014", 3), image_id("train2014", 1)]
    listing = tmp_path / "mine.txt"
    listing.write_text("\n".join(ids) + "\n")
    dataset = open_coco(root, str(listing))
    assert dataset.ids == tuple(ids)
    np.testing.assert_array_equal(dataset.labels(ids[1]), [0, 0, 0])
    np.testing.assert_array_equal(dataset.read_mask(ids[1]), np.zeros((H, W)))
    np.testing.assert_array_equal(dataset.labels(ids[0]), [0, 1, 0])
    listing.write_text("COCO_test2015_000000000001\n")
    with pytest.raises(SsenetError, match=r"mine.txt, line 1: .* is not a COCO 2014 id"):
        open_coco(root, str(listing))
    listing.write_text(f"{image_id('train2014', 99)}\n")
    with pytest.raises(SsenetError, match="not an image of .*instances_train2014.json"):
        open_coco(root, str(listing))
    with pytest.raises(SsenetError, match="image list not found .*train2014"):
        open_coco(root, "test2015")


def test_the_80_coco_categories_map_to_1_to_80_in_id_order(tmp_path: Path) -> None:
    root = tmp_path / "coco"
    categories = [{"id": i, "name": name} for i, name in reversed(COCO_CATEGORIES)]
    toothbrush, bicycle = 90, 2  # the last and the second category
    data = {"images": write_images(root, "train2014", [5]), "categories": categories,
            "annotations": [ann(1, 5, toothbrush, rectangle(0, 0, 2, 6), 12),
                            ann(2, 5, bicycle, rectangle(6, 0, 8, 6), 12)]}  # fmt: skip
    write_annotations(root, "train2014", data)
    dataset = open_coco(root, "train2014")
    assert dataset.class_names == COCO_CLASSES and len(COCO_CLASSES) == 81
    assert COCO_CLASSES[10] == "traffic_light" and COCO_CLASSES[80] == "toothbrush"
    mask = dataset.read_mask(image_id("train2014", 5))
    assert mask[0, 0] == 80 and mask[0, 7] == 2 and mask[0, 4] == 0
    assert np.flatnonzero(dataset.labels(image_id("train2014", 5))).tolist() == [1, 79]


def test_class_names_rename_the_categories(root: Path) -> None:
    dataset = open_coco(root, "train2014", class_names=["background", "human", "auto", "hound"])
    assert dataset.class_names == ("background", "human", "auto", "hound")
    with pytest.raises(SsenetError, match="2 foreground names for the 3 categories"):
        open_coco(root, "train2014", class_names=["background", "a", "b"])


def test_second_open_reads_the_index_only(root: Path, monkeypatch) -> None:
    first = open_coco(root, "train2014")
    mask = first.mask_path(first.ids[0])
    before = mask.stat().st_mtime_ns

    def refuse(path):
        raise AssertionError(f"the annotation file {path} was read again")

    monkeypatch.setattr(coco, "load_annotations", refuse)
    again = open_coco(root, "train2014")
    assert again.ids == first.ids and mask.stat().st_mtime_ns == before
    assert [again.labels(i).tolist() for i in again.ids] == [
        first.labels(i).tolist() for i in first.ids
    ]


def test_a_changed_annotation_file_rebuilds_the_masks(root: Path) -> None:
    number = image_id("train2014", 1)
    assert open_coco(root, "train2014").read_mask(number)[1, 1] == 1
    path = root / "annotations" / "instances_train2014.json"
    data = json.loads(path.read_text())
    data["annotations"][1]["category_id"] = DOG  # the person of image 1 becomes a dog
    path.write_text(json.dumps(data))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    dataset = open_coco(root, "train2014")
    assert dataset.read_mask(number)[1, 1] == 3
    np.testing.assert_array_equal(dataset.labels(number), [0, 1, 1])


def test_an_interrupted_build_keeps_the_masks_already_written(root: Path, monkeypatch) -> None:
    open_coco(root, "train2014")
    masks = root / "ssenet_masks"
    (masks / "coco-train2014-index.json").unlink()  # as if killed before the index was written
    (masks / f"{image_id('train2014', 2)}.png").unlink()
    written = []
    real = coco.write_label_png
    monkeypatch.setattr(
        coco, "write_label_png", lambda p, *a: (written.append(p.name), real(p, *a))
    )
    dataset = open_coco(root, "train2014")
    assert written == [f"{image_id('train2014', 2)}.png"]
    np.testing.assert_array_equal(dataset.read_mask(dataset.ids[1]), expected_train_masks()[2])


def test_a_deleted_mask_is_rebuilt(root: Path) -> None:
    dataset = open_coco(root, "train2014")
    dataset.mask_path(dataset.ids[0]).unlink()
    again = open_coco(root, "train2014")
    np.testing.assert_array_equal(again.read_mask(again.ids[0]), expected_train_masks()[1])


def test_mask_dir_moves_the_cache(root: Path, tmp_path: Path) -> None:
    dataset = open_coco(root, "train2014", mask_dir=tmp_path / "elsewhere")
    assert dataset.mask_path(dataset.ids[0]).parent == tmp_path / "elsewhere"
    assert not (root / "ssenet_masks").exists()
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(SsenetError, match="cannot write the COCO mask cache.*data.mask_dir"):
        open_coco(root, "train2014", mask_dir=blocker / "masks")


def edit(root: Path, change) -> Path:
    """Apply `change` to the train annotations (a dict) and rewrite the file."""
    path = root / "annotations" / "instances_train2014.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    return path


BAD_FILES = [
    (lambda d: d["annotations"].append(ann(99, 12, CAR, rectangle(0, 0, 1, 1), 1)),
     r"annotation 99 refers to image id 12, which is not in 'images'"),
    (lambda d: d["annotations"].append(ann(98, 1, 5, rectangle(0, 0, 1, 1), 1)),
     r"annotation 98 has category id 5, not one of the file's categories \(1, 3, 18\)"),
    (lambda d: d.pop("annotations"), r"not a COCO instances file: no 'annotations' list"),
    (lambda d: d.pop("images"), r"not a COCO instances file: no 'images' list"),
    (lambda d: d.pop("categories"), r"not a COCO instances file: no 'categories' list"),
    (lambda d: d["annotations"][2]["segmentation"].update(size=[W, H]),
     r"annotation 20 \(image id 2\): RLE size \[8, 6\] differs from the image's \[6, 8\]"),
    (lambda d: d["annotations"][2]["segmentation"].update(counts=[1, 2]),
     r"annotation 20 .*counts are not non-negative integers summing to height x width"),
    (lambda d: d["annotations"][0].update(segmentation=[[1, 2, 3]]),
     r"annotation 10 .*a polygon is not an even, non-empty list of coordinates"),
    (lambda d: d["images"].append(dict(d["images"][0])), r"image id 1 \(.*\) appears twice"),
    (lambda d: d["images"][0].update(file_name="../x.jpg"), r"'../x.jpg' is not a file name"),
    (lambda d: d["categories"].append({"id": 1, "name": "again"}),
     r"category id 1 appears twice"),
    # sizes the mask would be allocated at: 200000 x 200000 is 40 GB, -5 no size at all
    (lambda d: d["images"][0].update(height=200000, width=200000),
     r"image id 1 \(.*\): height x width 200000 x 200000 is not a size ssenet reads"),
    (lambda d: d["images"][0].update(height=-5), r"height x width -5 x 8 is not a size"),
    (lambda d: d["images"][0].update(width=0), r"height x width 6 x 0 is not a size"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "message"), BAD_FILES)
def test_bad_annotation_files_name_the_file_and_the_entry(root: Path, change, message) -> None:
    path = edit(root, change)
    with pytest.raises(SsenetError, match=message) as err:
        open_coco(root, "train2014")
    assert str(err.value).startswith(str(path))


def test_unreadable_annotation_files(root: Path) -> None:
    path = root / "annotations" / "instances_train2014.json"
    path.write_text('{"images": [')
    with pytest.raises(SsenetError, match=r"train2014.json: invalid JSON \(line 1, column 13"):
        open_coco(root, "train2014")
    path.write_text("[]")
    with pytest.raises(SsenetError, match="the top level is not an object"):
        open_coco(root, "train2014")
    path.unlink()
    with pytest.raises(SsenetError, match=r"instances_train2014.json: annotation file not found"):
        open_coco(root, "train2014")


def test_missing_images_and_folders(root: Path, tmp_path: Path) -> None:
    missing = root / "train2014" / f"{image_id('train2014', 2)}.jpg"
    missing.unlink()
    with pytest.raises(SsenetError, match=rf"{missing}: image not found"):
        open_coco(root, "train2014")
    for path in (root / "val2014").iterdir():
        path.unlink()
    (root / "val2014").rmdir()
    with pytest.raises(SsenetError, match=r"val2014: image folder not found"):
        open_coco(root, "val2014")
    with pytest.raises(SsenetError, match="COCO root not found"):
        open_coco(tmp_path / "nowhere", "train2014")


def coco_config(root: Path, **data) -> DataConfig:
    return DataConfig(kind="coco", root=str(root), train_list="train2014",
                      infer_list="train2014", val_list="val2014", **data)  # fmt: skip


def test_guard_refuses_pseudo_labels_on_val2014(root: Path, tmp_path: Path) -> None:
    data = coco_config(root)
    assert pseudo_label_eval_problem(data, gt_dir_of(data), "train2014") is None
    for name in ("val2014", "val"):
        problem = pseudo_label_eval_problem(data, gt_dir_of(data), name)
        assert problem.startswith(f"data.infer_list={name}: refusing to score pseudo labels on")
        assert "train2014" in problem and problem.endswith(
            "set data.eval_guard=false to score anyway"
        )
    listing = tmp_path / "some_val.txt"
    listing.write_text(f"{image_id('val2014', 7)}\n")
    with pytest.raises(SsenetError, match="refusing to score pseudo labels on COCO val2014"):
        check_pseudo_label_eval(data, gt_dir_of(data), str(listing))
    data.eval_guard = False
    assert pseudo_label_eval_problem(data, gt_dir_of(data), "val2014") is None


def gt_dir_of(data: DataConfig) -> Path:
    return Path(data.root) / "ssenet_masks"


@pytest.mark.parametrize("name", ["coco14_resnet38.yaml", "coco14_resnet50.yaml"])
def test_the_coco_configs_load_and_show(name: str, capsys) -> None:
    path = Path(__file__).resolve().parents[1] / "configs" / name  # beside the VOC configs
    cfg = load_config(path)
    assert main(["config", "show", str(path)]) == 0
    assert "kind: coco" in capsys.readouterr().out
    assert (cfg.data.kind, cfg.data.infer_list, cfg.data.val_list) == (
        "coco",
        "train2014",
        "val2014",
    )
    assert cfg.model.backbone == name.split("_")[1].removesuffix(".yaml")
    expected = {
        "coco14_resnet38.yaml": (8, 8, 0.01, 448),
        "coco14_resnet50.yaml": (5, 16, 0.1, 512),
    }
    assert (cfg.cam.epochs, cfg.cam.batch_size, cfg.cam.lr, cfg.cam.crop_size) == expected[name]
    assert (cfg.seg.batch_size, cfg.seg.lr, cfg.seg.crop_size) == (10, 0.00025, 321)


def test_config_accepts_kind_coco_only_among_known_kinds() -> None:
    assert load_config(overrides=["data.kind=coco"]).data.kind == "coco"
    with pytest.raises(
        SsenetError, match=r"data.kind: 'cocoa' is not one of \['voc', 'folder', 'coco'\]"
    ):
        load_config(overrides=["data.kind=cocoa"])


def test_a_run_config_opens_coco_lists_and_scores_against_the_masks(
    root: Path, tiny_run_config, one_thread
) -> None:
    cfg = tiny_run_config(root)
    cfg.data = coco_config(root)
    cfg.aff.train_list = cfg.seg.train_list = None
    cfg.cam.batch_size = cfg.aff.batch_size = cfg.seg.batch_size = 3  # 3 train2014 images
    preflight(cfg, ["cam", "crf", "aff", "rw", "seg"])  # every list opens, ground truth found
    assert gt_dir(cfg) == root / "ssenet_masks"
    train = open_split(cfg.data, cfg.data.train_list)
    assert missing_ground_truth(cfg, train.ids) == []
    image, labels, index = ImageListDataset(train)[0]
    assert tuple(image.shape) == (H, W, 3) and labels.tolist() == [1, 1, 0] and index == 0
    metrics = evaluate_label_dirs(gt_dir(cfg), gt_dir(cfg), train.ids, train.num_classes)
    assert metrics["miou"] == pytest.approx(1.0)
    mask = read_label_png(gt_dir(cfg) / f"{train.ids[0]}.png")
    np.testing.assert_array_equal(mask, expected_train_masks()[1])
