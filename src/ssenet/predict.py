"""Segmenting images that have no labels: a folder of images, or a list such as VOC 2012 `test`.

Predictions are `OUT/labels/<id>.png`, mode P with the VOC palette, so a pixel's value is its
class index (255 would be ignored): mmsegmentation's `PascalVOCDataset` reads them as they are,
with `seg_map_path` set to that folder. torchvision's `VOCSegmentation` reads fixed folder
names only (`VOCdevkit/VOC2012/{JPEGImages, SegmentationClass}` and
`ImageSets/Segmentation/<image_set>.txt`, image_set train, trainval or val for 2012), so
`voc_split` also lays OUT out as such a root, with links to the images and predictions.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from torch import nn

from ssenet.config import Config
from ssenet.data.datasets import SegmentationDataset
from ssenet.data.folder import open_images
from ssenet.data.source import data_class_names, open_split
from ssenet.errors import SsenetError
from ssenet.fileio import atomic_path, write_text_atomic
from ssenet.stages.s5_segmentation import infer_seg

# The VOC 2012 image sets torchvision's VOCSegmentation accepts (it refuses any other name).
VOC_SPLITS = ("train", "trainval", "val")
VOC_BASE = Path("VOCdevkit", "VOC2012")
JPEG_SUFFIXES = (".jpg", ".jpeg")


def images_to_predict(
    cfg: Config,
    list_name: str | None = None,
    images: str | os.PathLike | None = None,
    class_names: Sequence[str] | None = None,
) -> SegmentationDataset:
    """A folder's images, or the config's list (default `data.val_list`), without labels.

    `class_names`, the network's (background first), replace the data's; by default a folder
    takes those of the config's data.
    """
    if images is not None:
        if list_name:
            raise SsenetError("give a list or a folder of images to predict, not both")
        return open_images(images, class_names or data_class_names(cfg.data))
    dataset = open_split(cfg.data, list_name or cfg.data.val_list, image_labels=False)
    if class_names is None:
        return dataset
    paths = {image_id: dataset.image_path(image_id) for image_id in dataset.ids}
    return SegmentationDataset(dataset.root, dataset.ids, class_names, paths,
                               dict.fromkeys(dataset.ids, ()))  # fmt: skip


def predict_seg(
    cfg: Config,
    weights: str | os.PathLike,
    out_dir: str | os.PathLike,
    list_name: str | None = None,
    images: str | os.PathLike | None = None,
    voc_split: str | None = None,
    shard: tuple[int, int] = (0, 1),
    progress: bool = True,
    model: nn.Module | None = None,
    class_names: Sequence[str] | None = None,
) -> dict:
    """`infer_seg` on a folder of images or on a list with no labels; with `voc_split`, OUT is
    also a VOC 2012 root for torchvision (see `write_voc_layout`). `model`: the network of
    `weights`, already loaded, with its `class_names`."""
    dataset = images_to_predict(cfg, list_name, images, class_names)
    if voc_split is not None:
        check_voc_layout(voc_split, dataset)  # before any inference
    if images is not None:  # the labels' stamps name the folder they were made from
        folder = str(Path(images).resolve())
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=folder))
    result = infer_seg(cfg, weights, out_dir, shard=shard, progress=progress, dataset=dataset,
                       model=model)  # fmt: skip
    if voc_split is not None:
        paths = {image_id: dataset.image_path(image_id) for image_id in dataset.ids}
        mine = list(dataset.ids)[shard[0] :: shard[1]]
        root = write_voc_layout(out_dir, voc_split, paths, result["label_dir"], mine)
        result["voc_root"] = str(root)
    return result


def check_voc_layout(split: str, dataset: SegmentationDataset) -> None:
    """What torchvision's reader needs: a 2012 image set name and JPEG images."""
    if split not in VOC_SPLITS:
        raise SsenetError(
            f"VOC split {split!r}: torchvision's VOCSegmentation reads only {list(VOC_SPLITS)}"
        )
    for image_id in dataset.ids:
        path = dataset.image_path(image_id)
        if path.suffix.lower() not in JPEG_SUFFIXES:
            raise SsenetError(
                f"{path}: a VOC layout holds JPEGImages/<id>.jpg, and this image is not a JPEG; "
                "convert the images or predict without the VOC layout"
            )


def write_voc_layout(
    root: str | os.PathLike,
    split: str,
    image_paths: Mapping[str, Path],
    label_dir: str | os.PathLike,
    ids: Sequence[str] | None = None,
) -> Path:
    """Make `root` a VOC 2012 root that `VOCSegmentation(root, year="2012", image_set=split)`
    reads: `VOCdevkit/VOC2012/JPEGImages/<id>.jpg` and `SegmentationClass/<id>.png` link to the
    images and to `label_dir/<id>.png`, `ImageSets/Segmentation/<split>.txt` lists every id of
    `image_paths` (one a line, as mmsegmentation's ann_file too). Only `ids` (default all) are
    linked, so shards of one list each link their own. Returns the VOC2012 folder."""
    base = Path(root) / VOC_BASE
    label_dir = Path(label_dir)
    for image_id in image_paths if ids is None else ids:
        _link(Path(image_paths[image_id]), base / "JPEGImages" / f"{image_id}.jpg")
        _link(label_dir / f"{image_id}.png", base / "SegmentationClass" / f"{image_id}.png",
              relative=True)  # fmt: skip
    listing = "".join(f"{image_id}\n" for image_id in image_paths)
    write_text_atomic(base / "ImageSets" / "Segmentation" / f"{split}.txt", listing)
    return base


def _link(target: Path, link: Path, relative: bool = False) -> None:
    """`link` pointing at `target` (absolute, or `relative` to the link's folder, so that the
    layout and the predictions can move together), replaced atomically; a copy where the file
    system refuses symlinks."""
    with atomic_path(link) as tmp:
        tmp.unlink()
        target = target.absolute()
        pointer = Path(os.path.relpath(target, link.parent.absolute())) if relative else target
        try:
            os.symlink(pointer, tmp)
        except OSError:  # e.g. Windows without the symlink privilege
            shutil.copyfile(target, tmp)
