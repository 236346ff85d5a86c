"""Segmentation metrics from a confusion matrix: mIoU, mFN, mFP (paper eq. 4-6) and friends.

Counting: rows of the confusion matrix are ground truth, columns predictions, over the pixels
whose ground truth is not 255. Per class c: TP = diagonal, T = row sum, P = column sum,
FN = T - TP, FP = P - TP.

Conventions for classes without evidence (stated because small runs hit them):
- mIoU averages TP / (TP + FP + FN) over the classes with a non-empty union, i.e. present in the
  ground truth or the predictions; a class absent from both says nothing and is left out (its
  entry in `iou` is nan, written as null in JSON). Background is included, as in eq. 4.
- `fp_union` and `fn_union` average FP / union and FN / union over the same classes, so
  `miou + fp_union + fn_union == 1`: they split the IoU loss into its two sources.
- mFN and mFP (eq. 5-6) average FN / TP and FP / TP over the foreground classes with TP > 0.
  With TP = 0 the ratio is infinite (or 0/0); such a class is left out of the means rather than
  dragging them to infinity, and every class with pixels but no TP is listed in `tp_zero` so the
  omission is visible.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ssenet.camfile import load_cams
from ssenet.data.palette import IGNORE_INDEX, read_label_png
from ssenet.errors import SsenetError
from ssenet.progress import progress_bar

# Masks that are void (255) everywhere leave nothing to score: every figure would be nan.
VOID_ONLY = "no pixel could be scored: every ground-truth pixel is void (255)"


def scored_pixels(metrics: dict) -> int:
    """The pixels a `ConfusionMeter.metrics()` result counted (ground truth not 255)."""
    return int(np.asarray(metrics["confusion"]).sum())


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with nan where den == 0."""
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


class ConfusionMeter:
    """Accumulates a (C, C) confusion matrix (rows ground truth, columns prediction)."""

    def __init__(self, num_classes: int) -> None:
        if not 1 <= num_classes <= IGNORE_INDEX:
            raise SsenetError(f"num_classes must be in 1..{IGNORE_INDEX}, got {num_classes}")
        self.num_classes = num_classes
        self.confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.images = 0

    def update(self, pred: np.ndarray, gt: np.ndarray, name: str = "prediction") -> None:
        """Count one image; pixels with gt 255 are ignored. `name` labels error messages."""
        pred, gt = np.asarray(pred), np.asarray(gt)
        if pred.shape != gt.shape:
            raise SsenetError(f"{name}: size {pred.shape} does not match ground truth {gt.shape}")
        valid = gt != IGNORE_INDEX
        gt_v, pred_v = gt[valid].astype(np.int64), pred[valid].astype(np.int64)
        _check_range(gt_v, self.num_classes, f"{name}: ground truth")
        _check_range(pred_v, self.num_classes, f"{name}: prediction")
        counts = np.bincount(gt_v * self.num_classes + pred_v, minlength=self.num_classes**2)
        self.add_matrix(counts.reshape(self.num_classes, self.num_classes))

    def add_matrix(self, confusion: np.ndarray, images: int = 1) -> None:
        """Add an already counted (C, C) matrix covering `images` images."""
        self.confusion += confusion
        self.images += images

    def merge(self, other: ConfusionMeter) -> ConfusionMeter:
        """Add another meter's counts (e.g. from another shard) into this one; returns self."""
        if other.num_classes != self.num_classes:
            raise SsenetError(
                f"cannot merge meters of {self.num_classes} and {other.num_classes} classes"
            )
        self.add_matrix(other.confusion, other.images)
        return self

    def metrics(self) -> dict:
        """mIoU, per-class IoU, mFN, mFP, FP/FN over the union, pixel accuracy, the matrix."""
        conf = self.confusion.astype(np.float64)
        tp, t, p = np.diag(conf), conf.sum(axis=1), conf.sum(axis=0)
        fn, fp = t - tp, p - tp
        union = tp + fp + fn
        iou = _ratio(tp, union)
        fn_tp, fp_tp = _ratio(fn, tp), _ratio(fp, tp)
        total = conf.sum()
        return {
            "miou": _nanmean(iou),
            "iou": iou.tolist(),
            "mfn": _nanmean(fn_tp[1:]),
            "mfp": _nanmean(fp_tp[1:]),
            "fn_tp": fn_tp.tolist(),
            "fp_tp": fp_tp.tolist(),
            "tp_zero": [c for c in range(self.num_classes) if union[c] > 0 and tp[c] == 0],
            "fp_union": _nanmean(_ratio(fp, union)),
            "fn_union": _nanmean(_ratio(fn, union)),
            "pixel_acc": float(tp.sum() / total) if total else math.nan,
            "confusion": self.confusion.tolist(),
            "images": self.images,
        }


def _check_range(values: np.ndarray, num_classes: int, what: str) -> None:
    bad = (values < 0) | (values >= num_classes)
    if bad.any():
        shown = np.unique(values[bad])[:10].tolist()
        raise SsenetError(f"{what} has values {shown} outside 0..{num_classes - 1} (255 = ignore)")


def _require_files(directory: Path, ids: Sequence[str], suffix: str, what: str) -> None:
    if not ids:
        raise SsenetError(f"{directory}: no image ids to evaluate")
    missing = [i for i in ids if not (directory / f"{i}{suffix}").is_file()]
    if missing:
        raise SsenetError(
            f"{directory}: {len(missing)} {what} file(s) missing, e.g. "
            + ", ".join(f"{i}{suffix}" for i in missing[:5])
        )


def evaluate_label_dirs(
    pred_dir: str | os.PathLike,
    gt_dir: str | os.PathLike,
    ids: Sequence[str],
    num_classes: int,
    progress: bool = False,
) -> dict:
    """Score `pred_dir/<id>.png` against `gt_dir/<id>.png` for every id; returns `metrics()`."""
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    _require_files(pred_dir, ids, ".png", "prediction")
    _require_files(gt_dir, ids, ".png", "ground-truth")
    meter = ConfusionMeter(num_classes)
    for image_id in progress_bar(ids, desc="eval", enabled=progress, leave=True):
        pred_path = pred_dir / f"{image_id}.png"
        meter.update(
            read_label_png(pred_path),
            read_label_png(gt_dir / f"{image_id}.png"),
            name=str(pred_path),
        )
    return meter.metrics()


def _sweep_confusions(
    cams: np.ndarray, keys: np.ndarray, gt: np.ndarray, alphas: np.ndarray, num_classes: int
) -> np.ndarray:
    """(A, C, C) confusion matrices of one image, one per alpha, in one pass over the pixels.

    A pixel is foreground (its best class) at every alpha strictly below its peak CAM, the rule
    of cams_to_label. So it suffices to count pixels by (gt, best class, number of sorted alphas
    below the peak) and take tail sums, instead of labelling the image once per alpha.
    """
    c, a = num_classes, len(alphas)
    valid = gt != IGNORE_INDEX
    gt_v = gt[valid].astype(np.int64)
    per_gt = np.bincount(gt_v, minlength=c)
    conf = np.zeros((a, c, c), dtype=np.int64)
    conf[:, np.arange(c), 0] = per_gt  # all background until foreground is added below
    if len(keys) == 0:
        return conf
    best = cams.argmax(axis=0)[valid]
    peak = np.take_along_axis(cams[:, valid], best[None], axis=0)[0]
    # Compare at the CAMs' precision, as cams_to_label does: float32(0.1) is not above 0.1.
    alphas = alphas.astype(cams.dtype)
    order = np.argsort(alphas, kind="stable")
    below = np.searchsorted(alphas[order], peak, side="left")  # alphas < peak, 0..A
    index = (gt_v * c + keys[best]) * (a + 1) + below
    counts = np.bincount(index, minlength=c * c * (a + 1)).reshape(c, c, a + 1)
    tails = np.cumsum(counts[..., ::-1], axis=-1)[..., ::-1]  # tails[..., j] = sum over n >= j
    fg = np.moveaxis(tails[..., 1:], -1, 0)  # (A, C, C) at sorted alphas; column 0 empty
    fg[:, :, 0] = per_gt[None] - fg.sum(axis=2)  # the rest of each gt row is background
    conf[order] = fg
    return conf


def sweep_cam_thresholds(
    cam_dir: str | os.PathLike,
    gt_dir: str | os.PathLike,
    ids: Sequence[str],
    num_classes: int,
    alphas: Sequence[float],
    progress: bool = False,
) -> dict:
    """mIoU, mFN, mFP of CAM labels at each background score alpha (the paper's Fig. 4).

    Returns {"sweep": [{alpha, miou, mfn, mfp}, ...], "best_alpha", "best_miou", "images"};
    the best is the first alpha with the highest mIoU.
    """
    cam_dir, gt_dir = Path(cam_dir), Path(gt_dir)
    if not alphas:
        raise SsenetError("alpha sweep: give at least one alpha")
    _require_files(cam_dir, ids, ".npz", "CAM")
    _require_files(gt_dir, ids, ".png", "ground-truth")
    alpha_arr = np.asarray(alphas, dtype=np.float64)
    meters = [ConfusionMeter(num_classes) for _ in alphas]
    for image_id in progress_bar(ids, desc="alpha sweep", enabled=progress, leave=True):
        cam_path = cam_dir / f"{image_id}.npz"
        cams, keys = load_cams(cam_path)
        gt = read_label_png(gt_dir / f"{image_id}.png")
        if cams.shape[1:] != gt.shape:
            raise SsenetError(
                f"{cam_path}: CAM size {cams.shape[1:]} does not match ground truth {gt.shape}"
            )
        if len(keys) and keys.max() >= num_classes:
            raise SsenetError(f"{cam_path}: class id {keys.max()} >= {num_classes} classes")
        _check_range(gt[gt != IGNORE_INDEX], num_classes, f"{gt_dir / image_id}.png")
        for meter, conf in zip(
            meters, _sweep_confusions(cams, keys, gt, alpha_arr, num_classes), strict=True
        ):
            meter.add_matrix(conf)
    rows = []
    for alpha, meter in zip(alphas, meters, strict=True):
        m = meter.metrics()
        rows.append({"alpha": float(alpha), "miou": m["miou"], "mfn": m["mfn"], "mfp": m["mfp"]})
    scores = [-math.inf if math.isnan(r["miou"]) else r["miou"] for r in rows]
    best = rows[int(np.argmax(scores))]
    return {
        "sweep": rows,
        "best_alpha": best["alpha"],
        "best_miou": best["miou"],
        "images": len(ids),
    }


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


# FN/TP (or FP/TP) above this says only that a class was almost never found: FN/TP > 10 means
# its true positives are under 1/11 of its ground truth, and the ratio then grows without bound
# as TP goes to 0 (the quick demo's mFN of 432). Shown as ">10" so that it does not read as a
# measurement; results.json keeps the value.
RATIO_SHOWN_UP_TO = 10.0
CAPPED_RATIO = f">{RATIO_SHOWN_UP_TO:g}"
RATIO_NOTE = (
    ">10: FN/TP or FP/TP above 10, a class almost never found (its true positives near 0); "
    "the ratio then says only that"
)


def ratio_text(value: float | None, digits: int = 2) -> str:
    """An FN/TP or FP/TP ratio for a table: ">10" past `RATIO_SHOWN_UP_TO`, "-" when missing."""
    if value is not None and not math.isnan(value) and value > RATIO_SHOWN_UP_TO:
        return CAPPED_RATIO
    return _fmt(value, digits)


def format_table(metrics: dict, class_names: Sequence[str]) -> str:
    """Per-class IoU, FN/TP, FP/TP table followed by mIoU, mFN, mFP and FP/FN over the union."""
    iou = metrics["iou"]
    if len(class_names) != len(iou):
        raise SsenetError(f"{len(class_names)} class names for metrics of {len(iou)} classes")
    fn_tp = metrics.get("fn_tp", [None] * len(iou))
    fp_tp = metrics.get("fp_tp", [None] * len(iou))
    width = max(12, *(len(n) for n in class_names))
    lines = [f"{'class':<{width}} {'IoU':>7} {'FN/TP':>7} {'FP/TP':>7}"]
    for name, i, fn, fp in zip(class_names, iou, fn_tp, fp_tp, strict=True):
        lines.append(f"{name:<{width}} {_fmt(i, 4):>7} {ratio_text(fn, 3):>7} "
                     f"{ratio_text(fp, 3):>7}")
    lines.append("-" * len(lines[0]))
    summary = [
        ("mIoU", metrics["miou"], 4),
        ("mFN", metrics["mfn"], 3),
        ("mFP", metrics["mfp"], 3),
        ("FP/union", metrics["fp_union"], 3),
        ("FN/union", metrics["fn_union"], 3),
        ("pixel acc", metrics.get("pixel_acc"), 4),
    ]
    shown = {"mFN": ratio_text, "mFP": ratio_text}
    lines += [f"{label:<{width}} {shown.get(label, _fmt)(value, digits):>7}"
              for label, value, digits in summary]  # fmt: skip
    lines.append(f"{'images':<{width}} {metrics.get('images', '-'):>7}")
    if metrics.get("tp_zero"):
        names = ", ".join(class_names[c] for c in metrics["tp_zero"])
        lines.append(f"no true positives (left out of mFN/mFP): {names}")
    ratios = [*fn_tp, *fp_tp, metrics["mfn"], metrics["mfp"]]
    if any(ratio_text(r) == CAPPED_RATIO for r in ratios):
        lines.append(RATIO_NOTE)
    return "\n".join(lines)
