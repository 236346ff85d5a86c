"""`ssenet eval`: score label maps, or CAM files over a sweep of background scores.

Masks that are void (255) everywhere are an error (exit code 2, "no pixel could be scored"),
not a table of dashes: nothing was scored, and a table would look like a result."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ssenet.data.palette import VOC_CLASSES
from ssenet.data.voc import read_ids
from ssenet.errors import SsenetError
from ssenet.evaluation.guard import check_eval_gt_dir
from ssenet.evaluation.metrics import (
    VOID_ONLY,
    evaluate_label_dirs,
    format_table,
    scored_pixels,
    sweep_cam_thresholds,
)
from ssenet.fileio import write_json


def _class_names(path: str | None) -> list[str]:
    if path is None:
        return list(VOC_CLASSES)
    file = Path(path)
    if not file.is_file():
        raise SsenetError(f"{file}: class names file not found")
    try:
        text = file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise SsenetError(f"{file}: cannot read class names file ({err})") from err
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) < 2:
        raise SsenetError(f"{file}: needs background and at least one class, one per line")
    return names


def _ids(args: argparse.Namespace, directory: Path, suffix: str) -> list[str]:
    if args.list:
        return read_ids(args.list)
    # Hidden names are never images: the temporary files of an interrupted write start with ".".
    ids = sorted(p.stem for p in directory.glob(f"*{suffix}") if not p.name.startswith("."))
    if not ids:
        raise SsenetError(f"{directory}: no {suffix} files to evaluate")
    return ids


def _alphas(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise SsenetError(f"--alphas {text!r}: expected comma-separated numbers") from err
    if not values:
        raise SsenetError("--alphas: give at least one value")
    return values


def run_eval(args: argparse.Namespace) -> int:
    if bool(args.pred) == bool(args.cams):
        raise SsenetError("give exactly one of --pred (label PNGs) or --cams (CAM .npz files)")
    gt = Path(args.gt)
    if not gt.is_dir():
        raise SsenetError(f"{gt}: ground-truth directory not found")
    check_eval_gt_dir(gt, getattr(args, "allow_sbd", False))
    names = _class_names(args.class_names)
    if args.pred:
        pred = Path(args.pred)
        if not pred.is_dir():
            raise SsenetError(f"{pred}: prediction directory not found")
        ids = _ids(args, pred, ".png")
        result = evaluate_label_dirs(pred, gt, ids, len(names))
        if not scored_pixels(result):  # a table of dashes would look like a result
            raise SsenetError(f"{gt}: {VOID_ONLY} in the {len(ids)} mask(s) scored")
        print(format_table(result, names))
    else:
        cams = Path(args.cams)
        if not cams.is_dir():
            raise SsenetError(f"{cams}: CAM directory not found")
        ids = _ids(args, cams, ".npz")
        result = sweep_cam_thresholds(cams, gt, ids, len(names), _alphas(args.alphas))
        if all(math.isnan(row["miou"]) for row in result["sweep"]):  # no pixel in any mask
            raise SsenetError(f"{gt}: {VOID_ONLY} in the {len(ids)} mask(s) scored")
        _print_sweep(result)
    if args.json:
        write_json(args.json, result)
    return 0


def _print_sweep(result: dict) -> None:
    print(f"{'alpha':>6} {'mIoU':>7} {'mFN':>7} {'mFP':>7}")
    for row in result["sweep"]:
        print(f"{row['alpha']:>6.2f} {row['miou']:>7.4f} {row['mfn']:>7.3f} {row['mfp']:>7.3f}")
    print(f"best alpha {result['best_alpha']:.2f}: mIoU {result['best_miou']:.4f}")
