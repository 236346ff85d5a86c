"""`ssenet demo`: the embedded benchmark through the whole pipeline, baseline vs SSENet.

Prints one table like the paper's Table 1 (CAM, CAM+CRF, CAM+rw pseudo labels on the scored
list) with a Table 3 column (the segmentation network on the held-out list), writes
`OUT/results.json` and `OUT/report.html`. `--refiner irn` adds IRNet's refiner (CAM + IRN) on the
same CAMs and trains the segmentation network on its labels instead.
"""

from __future__ import annotations

import json
import time
from importlib import resources
from pathlib import Path

from ssenet.config import Config, load_config
from ssenet.data.synthetic import CLASS_NAMES, make_benchmark
from ssenet.demo_time import estimate_message, time_cam_step
from ssenet.errors import SsenetError
from ssenet.evaluation.metrics import CAPPED_RATIO, RATIO_NOTE, ratio_text
from ssenet.fileio import remove_stale_temporaries, write_text_atomic
from ssenet.pipeline import run_pipeline
from ssenet.report import write_report
from ssenet.stages import STAGES, RunLayout, scored_stages
from ssenet.stages.registry import known_refiners
from ssenet.stages.s1_cam_figures import (
    classifier_stage,
    scale_consistency,
    scale_sweep,
    unlearned_warning,
)

METHODS = ("baseline", "ssenet")

# Benchmark sizes and config overrides of the two demo sizes (timings: docs/results.md).
BENCHMARK = {
    "default": {"size": 160, "num_train": 1000, "num_train_eval": 200, "num_val": 200},
    "quick": {"size": 80, "num_train": 160, "num_train_eval": 48, "num_val": 48},
}
OVERRIDES = {
    "default": [],
    "quick": [
        "cam.epochs=5",
        "cam.resize_long=[64, 104]",
        "cam.crop_size=64",
        "cam.scale_sweep=[0.5, 1.0, 2.0]",
        "aff.epochs=2",
        "aff.crop_size=80",
        "seg.train_list=train",  # the default's train_aug would add CAM inference of 112 images
        "seg.epochs=4",
        "seg.crop_size=80",
    ],
}


DEFAULT_REFINER = Config().refine.method  # psa's random walk, the paper's


def refiner_overrides(refiner: str, size: str) -> list[str]:
    """What `ssenet demo --refiner` adds to the demo's config: DeepLab learns from that
    refiner's labels, the default refiner's are scored beside them, and the refiner's stages
    scale their settings to the demo's images (their registry entries' `demo_settings`)."""
    known = known_refiners()
    if refiner not in known:
        raise SsenetError(f"demo: --refiner {refiner!r} is no registered refiner; known: {known}")
    if refiner == DEFAULT_REFINER:
        return []
    settings = [setting for stage in STAGES.values() if stage.refiner == refiner
                for setting in stage.demo_settings.get(size, ())]  # fmt: skip
    return [f"refine.method={refiner}", f"refine.compare=[{DEFAULT_REFINER}]", *settings]


def refiner_share(refiner: str, size: str) -> float:
    """The measured share of a `--refiner` demo's time its refiner's stages take (their
    registry entries' `demo_share`; 0 for the default refiner, the default demo's own)."""
    return sum(stage.demo_share.get(size, 0.0) for stage in STAGES.values()
               if stage.refiner == refiner and refiner != DEFAULT_REFINER)  # fmt: skip


# What the quick demo is, said before its table in the terminal and in its report: on 8 x 8-cell
# CAMs trained for a few steps its figures can go either way (SSENet may lose to the baseline).
QUICK_NOTICE = (
    "SMOKE TEST: `ssenet demo --quick` checks that every stage runs, on 80-px images with "
    "8 x 8-cell CAMs trained for a few dozen steps; its figures say nothing about the method. "
    "`ssenet demo` is the real comparison; its measured results (3 seeds) are in the manual, "
    "docs/results.md."
)


def demo_config(
    bench_dir: Path, method: str, seed: int, quick: bool, refiner: str = "affinity"
) -> Config:
    size = "quick" if quick else "default"
    extra = refiner_overrides(refiner, size)  # an unknown refiner: before any work
    base = resources.files("ssenet") / "configs" / "demo.yaml"
    with resources.as_file(base) as path:
        return load_config(
            path,
            [
                f"data.root={bench_dir}",
                f"cam.method={method}",
                f"run.seed={seed}",
                *OVERRIDES[size],
                *extra,
            ],
        )


def run_demo(
    out_dir: str | Path = "demo_out",
    quick: bool = False,
    seed: int = 0,
    progress: bool = True,
    refiner: str = "affinity",
) -> dict:
    """Build the benchmark if needed, run both methods, print the table, write the results;
    `refiner` "irn" adds IRNet's refiner and trains DeepLab on its labels."""
    start = time.perf_counter()
    out_dir = Path(out_dir)
    size = "quick" if quick else "default"
    bench_dir = out_dir / "benchmark"
    if out_dir.is_dir():
        remove_stale_temporaries(out_dir)  # left by a killed demo (report figures, benchmark)
    demo_config(bench_dir, METHODS[0], seed, quick, refiner)  # a bad refiner: before any work
    announce(out_dir, bench_dir, seed, quick, refiner)
    make_benchmark(bench_dir, seed=seed, progress=progress, **BENCHMARK[size])
    results: dict = {}
    runs = {}
    stage_seconds: dict = {"benchmark": round(time.perf_counter() - start, 1)}
    for method in METHODS:
        cfg = demo_config(bench_dir, method, seed, quick, refiner)
        run_dir = out_dir / method
        runs[method] = (cfg, run_dir)
        seconds = stage_seconds[method] = {}
        results[method] = run_pipeline(cfg, run_dir, progress=progress, seconds=seconds)
        cam_eval = json.loads(RunLayout(run_dir).eval_json("cam").read_text())
        results[method]["cam_alpha_sweep"] = cam_eval["alpha_sweep"]
        extra = time.perf_counter()
        results[method]["classifier"] = classifier_stage(cfg, run_dir)
        results[method]["scale_sweep"] = scale_sweep(cfg, run_dir, progress=progress)
        results[method]["scale_consistency"] = scale_consistency(cfg, run_dir, progress=progress)
        seconds["classifier and scale sweep"] = round(time.perf_counter() - extra, 1)
    results["meta"] = {
        "quick": quick,
        "seed": seed,
        "refiner": refiner,
        "seconds": round(time.perf_counter() - start, 1),
        "stage_seconds": stage_seconds,  # of this call: work found done counts near 0
    }
    write_text_atomic(out_dir / "results.json", json.dumps(results, indent=2))
    title = "ssenet demo" + (" (quick)" if quick else "")
    notice = QUICK_NOTICE if quick else None
    report = write_report(out_dir, runs, title=title, progress=progress, notice=notice)
    print(format_results(results))
    print(f"report: {report}")
    return results


def announce(out_dir: Path, bench_dir: Path, seed: int, quick: bool, refiner: str) -> None:
    """Say how long this demo will take here, from a few timed training steps of its own CAM
    network and the refiner it runs, unless it resumes a demo whose first network is already
    trained."""
    if RunLayout(out_dir / METHODS[0]).weights("cam").is_file():
        print(f"ssenet demo: resuming in {out_dir}; finished work is skipped", flush=True)
        return
    cfg = demo_config(bench_dir, METHODS[0], seed, quick)
    print("ssenet demo: timing a few training steps to estimate how long it will take here",
          flush=True)  # fmt: skip
    step = time_cam_step(cfg, num_classes=len(CLASS_NAMES))
    share = refiner_share(refiner, "quick" if quick else "default")
    print(estimate_message(step, quick, refiner, share), flush=True)


def format_results(results: dict) -> str:
    """Table 1 (+ the Table 3 column) and the Fig. 5 scale check, as plain text; the quick demo's
    says first that it is a smoke test."""
    columns = [(stage.name, stage.title) for stage in scored_stages()
               if any(stage.name in results[method] for method in METHODS)]  # fmt: skip
    head = f"{'':<10}" + "".join(f"{title:^22}" for _, title in columns) + f"{'classifier':>11}"
    sub = f"{'model':<10}" + f"{'mIoU':>8}{'mFN':>7}{'mFP':>7}" * len(columns) + f"{'mAP':>11}"
    lines = [QUICK_NOTICE, ""] if results.get("meta", {}).get("quick") else []
    lines += [head, sub]
    for method in METHODS:
        r = results[method]
        cells = "".join(
            f"{r[key]['miou']:>8.4f}{ratio_text(r[key]['mfn']):>7}{ratio_text(r[key]['mfp']):>7}"
            if key in r
            else f"{'-':>8}{'-':>7}{'-':>7}"
            for key, _ in columns
        )
        lines.append(f"{method:<10}{cells}{r['classifier']['map']:>11.4f}")
    lines += [w for m in METHODS if (w := unlearned_warning(results[m]["classifier"], m))]
    lines.append("")
    lines.append("CAM background alpha: best alpha -> mIoU (paper Fig. 4)")
    for method in METHODS:
        sweep = results[method]["cam_alpha_sweep"]
        lines.append(f"{method:<10}{sweep['best_alpha']:>6.2f} -> {sweep['best_miou']:.4f}")
    lines.append("")
    lines.append("single-scale CAMs (paper Fig. 5): mFN / mFP per test scale")
    lines += method_rows(
        results, "scale_sweep", 13, lambda m: f"{ratio_text(m['mfn']):>6}/{ratio_text(m['mfp']):<6}"
    )
    lines.append("")
    lines.append("scale consistency (paper Fig. 2): mIoU between CAM labels at two test scales")
    lines += method_rows(results, "scale_consistency", 9, lambda v: f"{v:>9.4f}")
    if any(CAPPED_RATIO in line for line in lines):
        lines.append(RATIO_NOTE)
    lines.append(f"\n{results['meta']['seconds']:.0f} s")
    for method in METHODS:
        per_stage = results["meta"].get("stage_seconds", {}).get(method, {})
        lines.append(f"  {method}: " + ", ".join(f"{k} {v:.0f} s" for k, v in per_stage.items()))
    return "\n".join(lines)


def method_rows(results: dict, key: str, width: int, cell) -> list[str]:
    """A header of the keys of `results[method][key]`, then one row of `cell(value)` per method."""
    columns = list(results[METHODS[0]][key])
    lines = [f"{'model':<10} " + " ".join(f"{c:>{width}}" for c in columns)]
    for method in METHODS:
        values = results[method][key]
        lines.append(f"{method:<10} " + " ".join(cell(values[c]) for c in columns))
    return lines
