"""Refuse the most common evaluation mistake: scoring pseudo labels on the wrong masks or list.

The paper (and every number it is compared with) scores pseudo labels -- CAM, CAM + CRF and
CAM + random walk -- on VOC 2012 *train* (1,464 images) against VOC's own `SegmentationClass`.
SBD's `SegmentationClassAug` masks are another annotation (coarser, no void borders), `train_aug`
is the 10,582-image training list, and `val` is held out for the segmentation network: scores on
any of them cannot be compared with the paper's tables. `data.eval_guard=false` (or
`ssenet eval --allow-sbd`) scores anyway.

COCO 2014 has the same split of roles: the WSSS literature scores pseudo labels on train2014 (the
images the CAM network learns from) and the segmentation network on val2014, so pseudo labels of
val2014 are refused in the same way.
"""

from __future__ import annotations

from pathlib import Path

from ssenet.config import DataConfig
from ssenet.data.coco import list_splits
from ssenet.errors import SsenetError

SBD_MASK_DIR = "SegmentationClassAug"
PSEUDO_LABEL_LIST = "train"
COCO_PSEUDO_LABEL_SPLIT = "train2014"
COCO_HELD_OUT = "val2014"
_OVERRIDE = "; set data.eval_guard=false to score anyway"

_PAPER = (
    "the paper scores pseudo labels on VOC 2012 train (1,464 images) against VOC's own "
    "SegmentationClass masks"
)
_WRONG_LISTS = {
    "train_aug": (
        "train_aug is the 10,582-image training list and most of its images have only SBD masks"
    ),
    "val": "val is held out for the segmentation network (the paper's 63.3 val mIoU)",
}


def is_sbd_dir(path: str | Path) -> bool:
    """Whether a ground-truth directory is SBD's converted masks, judged by its name."""
    return Path(path).name == SBD_MASK_DIR


def pseudo_label_eval_problem(data: DataConfig, gt: str | Path, list_name: str) -> str | None:
    """Why scoring pseudo labels of `list_name` against `gt` is refused, or None when it is fine.

    Only VOC and COCO data are judged (folder data have no such convention), and only with the
    guard on.
    """
    if not data.eval_guard:
        return None
    if data.kind == "coco":
        return _coco_problem(list_name)
    if data.kind != "voc":
        return None
    if is_sbd_dir(gt):
        return (
            f"{gt}: refusing to score pseudo labels against SBD's {SBD_MASK_DIR} masks: {_PAPER}. "
            "Leave data.mask_dir unset (or set it to SegmentationClass)" + _OVERRIDE
        )
    if list_name in _WRONG_LISTS:
        return (
            f"data.infer_list={list_name}: refusing to score pseudo labels on {list_name}: "
            f"{_PAPER}; {_WRONG_LISTS[list_name]}. Set data.infer_list: {PSEUDO_LABEL_LIST} "
            "(AffinityNet and DeepLab still get labels for their own training lists)" + _OVERRIDE
        )
    return None


def _coco_problem(list_name: str) -> str | None:
    if COCO_HELD_OUT not in list_splits(list_name):
        return None
    return (
        f"data.infer_list={list_name}: refusing to score pseudo labels on COCO {COCO_HELD_OUT}: "
        f"the COCO WSSS literature scores them on {COCO_PSEUDO_LABEL_SPLIT}, the images the CAM "
        f"network learns from, and holds {COCO_HELD_OUT} out for the segmentation network. Set "
        f"data.infer_list: {COCO_PSEUDO_LABEL_SPLIT}" + _OVERRIDE
    )


def check_pseudo_label_eval(data: DataConfig, gt: str | Path, list_name: str) -> None:
    """Raise `SsenetError` with the explanation when `pseudo_label_eval_problem` finds one."""
    problem = pseudo_label_eval_problem(data, gt, list_name)
    if problem:
        raise SsenetError(problem)


def check_eval_gt_dir(gt: str | Path, allow_sbd: bool = False) -> None:
    """`ssenet eval`: refuse an SBD ground-truth directory unless `--allow-sbd` is given."""
    if is_sbd_dir(gt) and not allow_sbd:
        raise SsenetError(
            f"--gt {gt}: these are SBD's {SBD_MASK_DIR} masks; {_PAPER}, so scores against SBD "
            "cannot be compared with the paper. Use VOC's SegmentationClass, or pass --allow-sbd "
            "to score anyway"
        )
