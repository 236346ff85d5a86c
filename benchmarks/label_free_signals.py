"""How far the label-free signals of the report track the real mIoU, on demo runs with masks.

    ssenet demo --out demo_s0            # or --quick, a smoke test
    python benchmarks/label_free_signals.py demo_s0 [demo_s1 ...]

Reads each demo folder's baseline/ and ssenet/ runs (eval/*.json; a demo run before these
signals existed is brought up to date by running the same `ssenet demo` command again, which
redoes only the scoring) and writes docs/label_free_signals.md (or --out): per method and stage
the mIoU beside the signals a user without masks gets (classes kept, foreground share, classifier
mAP and F1, scale consistency) and the Spearman rank correlation of each signal with the mIoU.
Signals of a whole run (mAP, consistency) need several folders (seeds) to be correlated.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from ssenet.fileio import write_text_atomic

METHODS = ("baseline", "ssenet")
STAGES = (("cam", "CAM"), ("crf", "CAM+CRF"), ("rw", "CAM+rw"), ("seg", "DeepLab (val)"))
QUICK_NOTE = (
    "Made from `ssenet demo --quick` output. The quick demo is a smoke test (5 CAM epochs on "
    "80-pixel images, 48 scored images): these figures show that the table is made, not how far "
    "to trust the signals; the full demo's table replaces them."
)


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise SystemExit(f"{path}: not found; is this an `ssenet demo --out` folder?")
    return json.loads(path.read_text())


def stage_row(evals: dict) -> dict:
    """mIoU and the per-stage signals of one stage's eval JSON."""
    shares = evals.get("label_free")
    if shares is None:
        raise SystemExit("an eval JSON has no label_free counts: run the same `ssenet demo` "
                         "command again to bring the folder up to date")  # fmt: skip
    confusion = np.asarray(evals["confusion"], dtype=np.float64)
    return {
        "miou": evals["miou"],
        "kept": shares["class_recall"],
        "foreground": shares["foreground_share"],
        "mask_foreground": float(confusion[1:].sum() / confusion.sum()),  # from the masks
        "unnamed": shares["unnamed_image_share"],
        "class_kept": shares["kept"][1:],
        "class_iou": evals["iou"][1:],
    }


def load_demo(folder: Path) -> dict:
    """{"meta": ..., method: {"stages": {stage: row}, "map", "mean_f1", "consistency"}}."""
    demo = {"name": folder.name, "meta": read_json(folder / "results.json").get("meta", {})}
    for method in METHODS:
        eval_dir = folder / method / "eval"
        classifier = read_json(eval_dir / "classifier.json")
        agreement = read_json(eval_dir / "scale_consistency.json")
        demo[method] = {
            "stages": {s: stage_row(read_json(eval_dir / f"{s}.json")) for s, _ in STAGES},
            "map": classifier["map"],
            "mean_f1": classifier["mean_f1"],
            "class_ap": classifier["ap"],
            "class_f1": classifier["f1"],
            "consistency": float(np.mean(list(agreement.values()))),
        }
    return demo


def rank_correlation(signal: list[float], miou: list[float]) -> str:
    """Spearman's rho with its point count; a dash below 3 points or for constant input."""
    pairs = [(s, m) for s, m in zip(signal, miou, strict=True)
             if not (math.isnan(s) or math.isnan(m))]  # fmt: skip
    if len(pairs) < 3 or len({s for s, _ in pairs}) < 2 or len({m for _, m in pairs}) < 2:
        return f"– (n = {len(pairs)})"
    rho = spearmanr([s for s, _ in pairs], [m for _, m in pairs]).statistic
    return f"{rho:+.2f} (n = {len(pairs)})"


def nan_to_float(value: object) -> float:
    return float("nan") if value is None else float(value)


def stage_table(demos: list[dict]) -> list[str]:
    lines = ["| demo | method | stage | mIoU | kept | foreground (labels) | foreground (masks) "
             "| unnamed |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for demo in demos:
        for method in METHODS:
            for stage, title in STAGES:
                r = demo[method]["stages"][stage]
                lines.append(
                    f"| {demo['name']} | {method} | {title} | {r['miou']:.3f} | {r['kept']:.3f} "
                    f"| {r['foreground']:.3f} | {r['mask_foreground']:.3f} | {r['unnamed']:.3f} |"
                )
    return lines


def method_table(demos: list[dict]) -> list[str]:
    lines = ["| demo | method | CAM mIoU | CAM+rw mIoU | classifier mAP (val) | mean F1 (val) "
             "| scale consistency |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for demo in demos:
        for method in METHODS:
            m, stages = demo[method], demo[method]["stages"]
            lines.append(
                f"| {demo['name']} | {method} | {stages['cam']['miou']:.3f} | "
                f"{stages['rw']['miou']:.3f} | {m['map']:.3f} | {m['mean_f1']:.3f} | "
                f"{m['consistency']:.3f} |"
            )
    return lines


def correlation_table(demos: list[dict]) -> list[str]:
    """Each signal against the mIoU it should track, over the points named in the first column."""
    rows = [r for d in demos for m in METHODS for r in d[m]["stages"].values()]
    runs = [d[m] for d in demos for m in METHODS]
    per_class = [(k, i) for r in rows for k, i in zip(r["class_kept"], r["class_iou"], strict=True)]
    lines = ["| signal | against | over | Spearman rho |", "|---|---|---|---|"]
    for key, name in (("kept", "kept"), ("foreground", "foreground share (labels)"),
                      ("unnamed", "unnamed")):  # fmt: skip
        rho = rank_correlation([r[key] for r in rows], [r["miou"] for r in rows])
        lines.append(f"| {name} | stage mIoU | every method and stage | {rho} |")
    rho = rank_correlation([nan_to_float(k) for k, _ in per_class],
                           [nan_to_float(i) for _, i in per_class])  # fmt: skip
    lines.append(f"| per-class kept | class IoU | every class, method and stage | {rho} |")
    for key, name in (("class_ap", "per-class held-out AP"), ("class_f1", "per-class F1")):
        pairs = [(nan_to_float(v), nan_to_float(i)) for r in runs
                 for v, i in zip(r[key], r["stages"]["cam"]["class_iou"], strict=True)]  # fmt: skip
        rho = rank_correlation([v for v, _ in pairs], [i for _, i in pairs])
        lines.append(f"| {name} | CAM class IoU | every class and method | {rho} |")
    for key, name in (("map", "classifier mAP"), ("mean_f1", "classifier mean F1"),
                      ("consistency", "scale consistency")):  # fmt: skip
        for stage in ("cam", "rw"):
            rho = rank_correlation([r[key] for r in runs],
                                   [r["stages"][stage]["miou"] for r in runs])  # fmt: skip
            lines.append(f"| {name} | {stage} mIoU | every demo and method | {rho} |")
    return lines


def markdown(demos: list[dict]) -> str:
    sources = ", ".join(
        f"`{d['name']}` ({'quick, ' if d['meta'].get('quick') else ''}seed {d['meta'].get('seed')})"
        for d in demos
    )
    lines = [
        "# Label-free signals against the real mIoU (embedded benchmark)",
        "",
        "Written by `python benchmarks/label_free_signals.py` from the demo folders "
        f"{sources}; not edited by hand. The signals are those of the report's section 9 "
        "(docs/own-data.md): what a user without masks sees. The benchmark has masks, so each "
        "stage's mIoU stands beside them.",
        "",
    ]
    if any(d["meta"].get("quick") for d in demos):
        lines += [QUICK_NOTE, ""]
    lines += [
        "kept: of the (image, class) pairs the image-level labels name, the share the labels "
        "give any pixel. foreground: the share of labelled pixels that are not background (the "
        "masks' share for comparison, which a user without masks does not have). unnamed: the "
        "share of images whose labels hold a class the image-level labels do not name. Pseudo "
        "labels (CAM, CRF, rw) are on the scored list, DeepLab's predictions on val.",
        "",
        *stage_table(demos),
        "",
        *method_table(demos),
        "",
        "Spearman rank correlation of each signal with the mIoU (+1: ranks the runs as the "
        "mIoU does; a dash: too few points or a constant signal; a run's own signals need "
        "several demo folders):",
        "",
        *correlation_table(demos),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demos", nargs="+", type=Path, help="`ssenet demo --out` folders")
    parser.add_argument("--out", type=Path, default=Path("docs/label_free_signals.md"))
    args = parser.parse_args()
    text = markdown([load_demo(folder) for folder in args.demos])
    write_text_atomic(args.out, text)
    print(text)
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
