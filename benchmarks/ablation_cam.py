"""CAM-stage ablation: baseline against SSENet for named settings over several seeds.

Each (setting, seed, method) trains the CAM network on the benchmark's `train_aug`, infers
multi-scale CAMs for `train` and scores them (alpha 0.2 and the alpha sweep), and measures the
classifier on `val`, all through `ssenet.pipeline`; runs are resumable and kept under `--out`.
Settings are the demo config plus the overrides listed in SETTINGS. Prints, per setting, the
3-seed mean and standard deviation of each figure and of the SSENet - baseline difference.

    python benchmarks/ablation_cam.py --bench BENCH --out OUT --settings demo flat_lr --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from importlib import resources
from pathlib import Path

from ssenet.config import load_config
from ssenet.pipeline import run_pipeline
from ssenet.stages.s1_cam_figures import classifier_stage, scale_consistency

# Every setting starts from the packaged demo config with the CAM settings of the demo before
# this ablation written out (so the table does not move when demo.yaml does): the regime (image
# 160 px, crop 128 at stride 8, r = 0.5), then AdamW 0.002 with the reference's 1/2/10/20
# multipliers, the reference head, colour jitter, and the second branch kept out of the
# BatchNorm statistics. Each setting then adds its own overrides: one row of the ablation table
# in docs/results.md.
PACKAGE = [
    "model.output_stride=8", "model.input_scale=1", "model.head_channels=0",
    "model.head_norm=false", "model.dropout=0.5", "model.freeze_bn=false",
    "cam.branch_rate=0.5", "cam.crop_size=128", "cam.resize_long=[128, 208]", "cam.epochs=6",
    "cam.batch_size=16", "cam.optimizer=adamw", "cam.lr=0.002", "cam.weight_decay=0.0001",
    "cam.lr_multipliers=[1, 2, 10, 20]", "cam.branch_bn_stats=false",
    "cam.color_jitter=[0.3, 0.3, 0.3, 0.1]",
]  # fmt: skip
FLAT_LR = ["cam.lr=0.001", "cam.lr_multipliers=[1, 1, 1, 1]"]
HEAD = ["model.head_channels=256", "model.head_norm=true", "model.dropout=0.3"]
BN2 = ["cam.branch_bn_stats=true"]
NO_JITTER = ["cam.color_jitter=[0, 0, 0, 0]"]
SETTINGS: dict[str, list[str]] = {
    "package": [],
    "flat_lr": FLAT_LR,
    "flat_lr_head": FLAT_LR + HEAD,
    "flat_lr_head_bn2": FLAT_LR + HEAD + BN2,
    "independent": FLAT_LR + HEAD + BN2 + NO_JITTER,
    "independent_x2": FLAT_LR + HEAD + BN2 + NO_JITTER
    + ["model.output_stride=16", "model.input_scale=2"],
    "independent_r03": FLAT_LR + HEAD + BN2 + NO_JITTER + ["cam.branch_rate=0.3"],
    "independent_scale_flip": FLAT_LR + HEAD + BN2 + NO_JITTER + ["cam.transform=scale+flip"],
    "independent_scale_rot90": FLAT_LR + HEAD + BN2 + NO_JITTER + ["cam.transform=scale+rot90"],
}  # fmt: skip
METHODS = ("baseline", "ssenet")
FIGURES = ("miou", "mfn", "mfp", "best_miou", "best_alpha", "map", "consistency")


def run_one(bench: Path, run_dir: Path, setting: str, method: str, seed: int, sweep: bool) -> dict:
    demo = resources.files("ssenet") / "configs" / "demo.yaml"
    overrides = [f"data.root={bench}", f"cam.method={method}", f"run.seed={seed}", *PACKAGE]
    with resources.as_file(demo) as path:
        cfg = load_config(path, overrides + SETTINGS[setting])
    cam = run_pipeline(cfg, run_dir, stages=["cam"], progress=False)["cam"]
    best = json.loads((run_dir / "eval" / "cam.json").read_text())["alpha_sweep"]
    figures = {**cam, "best_miou": best["best_miou"], "best_alpha": best["best_alpha"]}
    figures["map"] = classifier_stage(cfg, run_dir)["map"]
    if sweep:
        figures["consistency"] = scale_consistency(cfg, run_dir, progress=False)["0.5-2.0"]
    return figures


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", required=True, type=Path, help="a benchmark directory")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--sweep", action="store_true", help="also the scale-consistency figure")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS),
                        help="e.g. ssenet alone for a setting the baseline never reads "
                        "(cam.branch_rate, cam.transform)")  # fmt: skip
    args = parser.parse_args()
    for setting in args.settings:
        rows = {m: {f: [] for f in FIGURES} for m in METHODS}
        for seed in args.seeds:
            for method in args.methods:
                start = time.perf_counter()
                run_dir = args.out / setting / f"seed{seed}" / method
                figures = run_one(args.bench, run_dir, setting, method, seed, args.sweep)
                for key in FIGURES:
                    if key in figures:
                        rows[method][key].append(figures[key])
                shown = " ".join(f"{k}={figures[k]:.3f}" for k in FIGURES if k in figures)
                took = time.perf_counter() - start
                print(f"{setting} seed {seed} {method}: {shown} ({took:.0f} s)", flush=True)
        print(f"\n{setting} ({len(args.seeds)} seeds: {args.seeds})")
        for method in args.methods:
            cells = [f"{k} {mean_std(v)}" for k, v in rows[method].items() if v]
            print(f"  {method:<9}" + " | ".join(cells))
        for key in ("miou", "mfp", "best_miou") if len(args.methods) == 2 else ():
            diff = [s - b for s, b in zip(rows["ssenet"][key], rows["baseline"][key], strict=True)]
            print(f"  ssenet - baseline {key}: {mean_std(diff)}")
        print(flush=True)


if __name__ == "__main__":
    main()
