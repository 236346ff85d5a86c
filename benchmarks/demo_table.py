"""The README's demo table from several `ssenet demo --seed S --out DIR` runs: mean ± std.

    for s in 0 1 2; do ssenet demo --seed $s --out demo_s$s; done
    python benchmarks/demo_table.py demo_s0 demo_s1 demo_s2

Prints every seed's figures, then the Markdown table (CAM, CAM+CRF, CAM+rw, DeepLab on val,
classifier mAP, scale consistency) and the SSENet - baseline differences the issue's targets
name, each as mean ± standard deviation over the runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

METHODS = ("baseline", "ssenet")
STAGES = (("cam", "CAM"), ("crf", "CAM+CRF"), ("rw", "CAM+rw"), ("seg", "DeepLab (val)"))


def figures(result: dict) -> dict[str, float]:
    """The flat figures of one method in one results.json."""
    out = {}
    for stage, _ in STAGES:
        for key in ("miou", "mfn", "mfp"):
            out[f"{stage}_{key}"] = result[stage][key]
    out["best_alpha_miou"] = result["cam_alpha_sweep"]["best_miou"]
    out["best_alpha"] = result["cam_alpha_sweep"]["best_alpha"]
    out["map"] = result["classifier"]["map"]
    out["prior_map"] = result["classifier"]["prior_map"]
    out["consistency"] = result["scale_consistency"]["0.5-2.0"]
    for scale, metrics in result["scale_sweep"].items():
        out[f"fn@{scale}"], out[f"fp@{scale}"] = metrics["mfn"], metrics["mfp"]
    return out


def mean_std(values: list[float], digits: int = 3) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="demo output directories")
    args = parser.parse_args()
    results = [json.loads((run / "results.json").read_text()) for run in args.runs]
    table = {m: [figures(r[m]) for r in results] for m in METHODS}
    for run, result in zip(args.runs, results, strict=True):
        print(f"{run} (seed {result['meta']['seed']}, {result['meta']['seconds']:.0f} s)")
        for method in METHODS:
            f = figures(result[method])
            cells = [f"{title} {f[stage + '_miou']:.3f}" for stage, title in STAGES]
            cells += [f"mAP {f['map']:.3f}", f"consistency {f['consistency']:.3f}"]
            print(f"  {method:<9}" + ", ".join(cells))
    header = ["model"]
    for _, title in STAGES:
        header += [f"{title} mIoU", "mFN", "mFP"]
    header += ["best-alpha CAM mIoU", "classifier mAP (val)", "scale consistency 0.5-2.0"]
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    keys = [f"{s}_{k}" for s, _ in STAGES for k in ("miou", "mfn", "mfp")]
    keys += ["best_alpha_miou", "map", "consistency"]
    for method in METHODS:
        cells = [mean_std([f[k] for f in table[method]], 2 if k[-2:] in ("fn", "fp") else 3)
                 for k in keys]  # fmt: skip
        print(f"| {method} | " + " | ".join(cells) + " |")
    print()
    base, ser = table["baseline"], table["ssenet"]
    for key in ("cam_miou", "cam_mfp", "best_alpha_miou", "rw_miou", "consistency"):
        diff = [s[key] - b[key] for s, b in zip(ser, base, strict=True)]
        print(f"ssenet - baseline {key}: {mean_std(diff)}")
    for method in METHODS:
        lift = [f["rw_miou"] - f["cam_miou"] for f in table[method]]
        ratio = [f["seg_miou"] / f["rw_miou"] for f in table[method]]
        print(f"{method}: CAM+rw - CAM {mean_std(lift)}; DeepLab / CAM+rw {mean_std(ratio)}")
    scales = sorted({k[3:] for k in base[0] if k.startswith("fn@")}, key=float)
    print("\nbaseline single-scale mFN / mFP: " + ", ".join(
        f"{s}: {mean_std([f['fn@' + s] for f in base], 2)} / "
        f"{mean_std([f['fp@' + s] for f in base], 2)}" for s in scales))  # fmt: skip


if __name__ == "__main__":
    main()
