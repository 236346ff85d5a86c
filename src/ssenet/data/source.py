"""Open the dataset a config describes, one image list at a time."""

from __future__ import annotations

from pathlib import Path

from ssenet.config import DataConfig
from ssenet.data.coco import open_coco
from ssenet.data.datasets import SegmentationDataset
from ssenet.data.folder import held_out_split, open_folder
from ssenet.data.voc import open_voc, read_id_list, voc_class_names
from ssenet.errors import SsenetError

# Folder data with data.held_out > 0: the two parts of the label file's images.
SPLIT_LISTS = ("train", "held_out")


def open_split(
    cfg: DataConfig, list_name: str, image_labels: bool = True
) -> SegmentationDataset:
    """VOC: `list_name` is a split of ImageSets/Segmentation. COCO: train2014, val2014 (or an
    alias, see `ssenet.data.coco`) or an id file. Folder data: `all`, an id file, or with
    `data.held_out` > 0 `train` and `held_out`, a deterministic split (`held_out_split`).

    `image_labels=False` (VOC): a list without masks or image-level labels (VOC 2012 `test`)
    opens too, every image without labels; folder data always read their label file.
    """
    if cfg.kind == "coco":
        return open_coco(cfg.root, list_name, class_names=cfg.class_names, mask_dir=cfg.mask_dir)
    if cfg.kind == "voc":
        return open_voc(
            cfg.root, split=list_name, class_names=cfg.class_names, mask_dir=cfg.mask_dir,
            image_labels=image_labels,
        )  # fmt: skip
    dataset = open_folder(
        cfg.root, cfg.label_file, class_names=cfg.class_names, mask_dir=cfg.mask_dir
    )
    if list_name == "all":
        return dataset
    if list_name in SPLIT_LISTS and cfg.held_out > 0:
        train, held_out = held_out_split(dataset.ids, cfg.held_out, cfg.split_seed)
        return dataset.subset(train if list_name == "train" else held_out)
    path = Path(list_name)
    if not path.is_file():
        raise SsenetError(
            f"{path}: image list not found (for folder data use 'all', a file, or 'train' and "
            "'held_out' with data.held_out set)"
        )
    ids = [image_id for image_id, _ in read_id_list(path)]  # refuses repeats, like VOC lists
    unknown = sorted(set(ids) - set(dataset.ids))
    if unknown:
        raise SsenetError(f"{path}: ids not in {cfg.label_file}: {', '.join(unknown[:5])}")
    return dataset.subset(ids)


def data_class_names(cfg: DataConfig) -> tuple[str, ...]:
    """The class names (background first) of the data a config describes; VOC reads no list."""
    if cfg.kind == "voc":
        return voc_class_names(cfg.root, cfg.class_names)
    if cfg.kind == "coco":  # the annotation file's categories
        return open_split(cfg, cfg.val_list).class_names
    return open_folder(cfg.root, cfg.label_file, class_names=cfg.class_names).class_names
