"""`ssenet demo`: the embedded benchmark, baseline vs SSENet, scored like the paper's Table 1."""

from __future__ import annotations

import json
import time
from importlib import resources
from pathlib import Path

from ssenet.config import Config, load_config
from ssenet.data.benchmark import make_benchmark
from ssenet.fileio import write_text_atomic
from ssenet.pipeline import cam_stage, classifier_stage, scale_sweep, summary

METHODS = ("baseline", "ssenet")

# Benchmark sizes and config overrides of the two demo sizes; the default fits 10 minutes and
# --quick 2 minutes on two CPU cores (measured: see the README).
BENCHMARK = {
    "default": {"size": 128, "num_train": 1000, "num_train_eval": 200, "num_val": 200},
    "quick": {"size": 96, "num_train": 160, "num_train_eval": 48, "num_val": 48},
}
OVERRIDES = {
    "default": [],
    "quick": [
        "cam.epochs=2",
        "cam.resize_long=[80, 144]",
        "cam.crop_size=80",
        "cam.scale_sweep=[0.5, 1.0, 2.0]",
    ],
}


def demo_config(bench_dir: Path, method: str, seed: int, quick: bool) -> Config:
    base = resources.files("ssenet") / "configs" / "demo.yaml"
    with resources.as_file(base) as path:
        return load_config(
            path,
            [
                f"data.root={bench_dir}",
                f"cam.method={method}",
                f"run.seed={seed}",
                *OVERRIDES["quick" if quick else "default"],
            ],
        )


def run_demo(
    out_dir: str | Path = "demo_out", quick: bool = False, seed: int = 0, progress: bool = True
) -> dict:
    """Build the benchmark if needed, run both methods, print the table, write results.json."""
    start = time.perf_counter()
    out_dir = Path(out_dir)
    size = "quick" if quick else "default"
    bench_dir = out_dir / "benchmark"
    make_benchmark(bench_dir, seed=seed, progress=progress, **BENCHMARK[size])
    results: dict = {}
    for method in METHODS:
        cfg = demo_config(bench_dir, method, seed, quick)
        run_dir = out_dir / method
        cam = cam_stage(cfg, run_dir, progress=progress)
        results[method] = {
            "cam": summary(cam),
            "cam_alpha_sweep": cam["alpha_sweep"],
            "classifier": classifier_stage(cfg, run_dir),
            "scale_sweep": scale_sweep(cfg, run_dir, progress=progress),
        }
    results["meta"] = {
        "quick": quick,
        "seed": seed,
        "seconds": round(time.perf_counter() - start, 1),
    }
    write_text_atomic(out_dir / "results.json", json.dumps(results, indent=2))
    print(format_results(results))
    return results


def format_results(results: dict) -> str:
    """Table 1 (CAM mIoU, mFN, mFP) and the Fig. 5 scale check, as plain text."""
    lines = [
        f"{'model':<10} {'CAM mIoU':>9} {'mFN':>7} {'mFP':>7} {'best a':>7} {'@best':>7} {'cls mAP':>8}"
    ]
    for method in METHODS:
        r = results[method]
        cam, sweep = r["cam"], r["cam_alpha_sweep"]
        lines.append(
            f"{method:<10} {cam['miou']:>9.4f} {cam['mfn']:>7.3f} {cam['mfp']:>7.3f} "
            f"{sweep['best_alpha']:>7.2f} {sweep['best_miou']:>7.4f} {r['classifier']['map']:>8.4f}"
        )
    lines.append("")
    lines.append("single-scale CAMs (paper Fig. 5): mFN / mFP per test scale")
    scales = list(results[METHODS[0]]["scale_sweep"])
    lines.append(f"{'model':<10} " + " ".join(f"{s:>13}" for s in scales))
    for method in METHODS:
        sweep = results[method]["scale_sweep"]
        cells = [f"{sweep[s]['mfn']:>6.2f}/{sweep[s]['mfp']:<6.2f}" for s in scales]
        lines.append(f"{method:<10} " + " ".join(cells))
    lines.append(f"\n{results['meta']['seconds']:.0f} s")
    return "\n".join(lines)
