"""Segmenting images that have no labels: a folder of images, or a list such as VOC 2012 `test`.

Predictions are `OUT/labels/<id>.png`, mode P with the VOC palette, so a pixel's value is its
class index (255 would be ignored): mmsegmentation's `PascalVOCDataset` reads them as they are,
with `seg_map_path` set to that folder. torchvision's `VOCSegmentation` reads fixed folder
names only (`VOCdevkit/VOC2012/{JPEGImages, SegmentationClass}` and
`ImageSets/Segmentation/<image_set>.txt`, image_set train, trainval or val for 2012), so
`voc_split` also lays OUT out as such a root, with links to the images and predictions.

That layout is made only in a folder of its own: `OUT/VOCdevkit/VOC2012` must not exist, be
empty, or be a layout ssenet made (it holds `LAYOUT_MARK`), so OUT at a dataset's own root is
refused before any image is replaced.
"""

from __future__ import annotations

import errno
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
from ssenet.inference import ListJob
from ssenet.stages.s5_segmentation import infer_seg

# The VOC 2012 image sets torchvision's VOCSegmentation accepts (it refuses any other name).
VOC_SPLITS = ("train", "trainval", "val")
VOC_BASE = Path("VOCdevkit", "VOC2012")
JPEG_SUFFIXES = (".jpg", ".jpeg")
# Written first into every VOC layout ssenet makes: the files beside it are ssenet's to replace.
LAYOUT_MARK = ".ssenet_layout"
LAYOUT_FOLDERS = ("JPEGImages", "SegmentationClass", "ImageSets", "ImageSets/Segmentation")
# How os.symlink says that links cannot be made here (any other error is not a reason to copy).
NO_SYMLINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS}
WINDOWS_PRIVILEGE_NOT_HELD = 1314


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
        claim_voc_layout(out_dir)
    job = ListJob(None, shard, progress)  # the images of `dataset`
    result = infer_seg(cfg, weights, out_dir, job, dataset=dataset, model=model)
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
    base = claim_voc_layout(root)
    label_dir = Path(label_dir)
    for image_id in image_paths if ids is None else ids:
        # The image itself, not a link to it: the layout may have been the images' own folder.
        image = Path(image_paths[image_id]).resolve(strict=True)
        _link(image, base / "JPEGImages" / f"{image_id}.jpg")
        _link(label_dir / f"{image_id}.png", base / "SegmentationClass" / f"{image_id}.png",
              relative=True)  # fmt: skip
    listing = "".join(f"{image_id}\n" for image_id in image_paths)
    write_text_atomic(base / "ImageSets" / "Segmentation" / f"{split}.txt", listing)
    return base


def claim_voc_layout(root: str | os.PathLike) -> Path:
    """`root/VOCdevkit/VOC2012`, marked as a layout of ssenet's: refused unless it is missing,
    empty or already marked, and unless its folders are folders of its own (not links out), so
    no file ssenet did not make (a dataset's images, masks or lists) is ever replaced."""
    base = Path(root) / VOC_BASE
    linked = [base / name for name in ("", *LAYOUT_FOLDERS) if (base / name).is_symlink()]
    if linked:
        raise SsenetError(
            f"{linked[0]}: a link; ssenet writes its VOC layout only into folders of its own. "
            "Choose another OUT"
        )
    mark = base / LAYOUT_MARK
    if mark.is_file() and not mark.is_symlink():
        return base
    if base.is_dir() and any(base.iterdir()):
        raise SsenetError(
            f"{base}: holds files ssenet did not make (a dataset?); it never replaces them. "
            "Choose an OUT whose VOCdevkit/VOC2012 does not exist yet"
        )
    write_text_atomic(mark, "A VOC 2012 layout made by ssenet infer-seg --voc-split: its files "
                            "are links or copies ssenet may replace.\n")  # fmt: skip
    return base


def _link(target: Path, link: Path, relative: bool = False) -> None:
    """`link` pointing at `target` (absolute, or `relative` to the link's folder, so that the
    layout and the predictions can move together), replaced atomically (a rename: whatever was
    at `link` is never followed); a copy where the file system cannot make symlinks."""
    with atomic_path(link) as tmp:
        tmp.unlink()
        target = target.absolute()
        pointer = Path(os.path.relpath(target, link.parent.absolute())) if relative else target
        try:
            os.symlink(pointer, tmp)
        except (OSError, NotImplementedError) as err:
            if not _symlinks_unsupported(err):
                raise
            _copy_new(target, tmp)


def _symlinks_unsupported(err: BaseException) -> bool:
    if isinstance(err, NotImplementedError):
        return True
    return err.errno in NO_SYMLINKS or getattr(err, "winerror", None) == WINDOWS_PRIVILEGE_NOT_HELD


def _copy_new(source: Path, copy: Path) -> None:
    """Copy into a file created here and now ("x": a link put at `copy` fails, never followed)."""
    with open(source, "rb") as reader, open(copy, "xb") as writer:
        shutil.copyfileobj(reader, writer)
