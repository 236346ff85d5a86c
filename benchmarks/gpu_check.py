"""Check ssenet's whole GPU path on one NVIDIA GPU in a few minutes, and print what it measured.

Run by `bash benchmarks/gpu_check.sh` (which installs the package first); alone:

    python benchmarks/gpu_check.py --out gpu_check_out            # on a machine with a GPU
    python benchmarks/gpu_check.py --device cpu --size tiny       # the same checks on the CPU

On the quick demo's benchmark (80-px images) with the demo's recipe (EfficientNet-Lite0 with
trained BatchNorm, channels_last, SSENet), it:

1. runs every stage on the device in fp32 (pydensecrf CRF), bf16 and fp16 (GradScaler; both
   with the torch CRF on the GPU), each stage timed, with its peak `max_memory_allocated`
   beside the dry run's estimate for the same config;
2. reruns the fp32 run and checks that nothing is recomputed (every output file untouched);
3. compares the torch CRF and the sparse random walk on the GPU with the CPU (max difference);
4. runs 2 torchrun ranks on the one GPU through every stage (gloo over CUDA tensors: NCCL
   refuses two ranks on one device), and checks they score every stage;
5. times the demo's CAM training step on the GPU against the CPU.

It ends with one PASS / FAIL line per check (SKIP where the device has no GPU to compare with)
and exits non-zero on any failure. With `--docs FILE` it also writes its tables as Markdown.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from ssenet.config import dump_config
from ssenet.data.synthetic import make_benchmark
from ssenet.demo import BENCHMARK, demo_config
from ssenet.fileio import write_text_atomic
from ssenet.pipeline import run_pipeline
from ssenet.stages import STAGES, active_stages

SIZES = {
    "gpu": BENCHMARK["quick"],  # 80 px, 160 training images: the quick demo's benchmark
    "tiny": {"size": 48, "num_train": 24, "num_train_eval": 16, "num_val": 8},
}
# Per size: config overrides on top of the quick demo's (fewer epochs where nothing is learned
# that a check reads; one training step an epoch is enough to exercise every path).
OVERRIDES = {
    "gpu": ["run.num_workers=4", "run.crf_workers=8"],
    "tiny": ["cam.epochs=1", "aff.epochs=1", "seg.epochs=1", "cam.batch_size=8",
             "aff.batch_size=4", "seg.batch_size=4", "cam.resize_long=[40, 56]",
             "cam.crop_size=40", "aff.crop_size=48", "seg.crop_size=48", "cam.infer_batch=4",
             "seg.infer_batch=4", "cam.scale_sweep=[0.5, 1.0]", "rw.logt=3", "run.threads=1",
             "run.num_workers=0", "run.crf_workers=0"],
}
PRECISIONS = {"fp32": ("off", "pydensecrf"), "bf16": ("bf16", "torch"), "fp16": ("fp16", "torch")}
MIB = 2**20


class Checks:
    """PASS / FAIL / SKIP per check, with one line of detail; failures keep their traceback."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str]] = []

    @contextlib.contextmanager
    def check(self, name: str):
        note: list[str] = []
        try:
            yield note
        except Skip as skip:
            self.rows.append((name, "SKIP", str(skip)))
        except Exception as err:
            traceback.print_exc()
            self.rows.append((name, "FAIL", f"{type(err).__name__}: {err}"[:300]))
        else:
            self.rows.append((name, "PASS", "; ".join(note)))
        print(f"[{self.rows[-1][1]}] {name}: {self.rows[-1][2]}", flush=True)

    @property
    def failed(self) -> bool:
        return any(status == "FAIL" for _, status, _ in self.rows)


class Skip(Exception):
    """A check that cannot run on this device (no GPU to compare with)."""


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_config(bench: Path, size: str, device: torch.device, precision: str):
    """The quick demo's config (SSENet) with this size's overrides, precision and CRF backend."""
    from ssenet.config import config_from_mapping

    amp, crf_backend = PRECISIONS[precision]
    base = demo_config(bench, "ssenet", 0, quick=True).to_dict()
    overrides = [*OVERRIDES[size], f"run.amp='{amp}'", f"crf.backend={crf_backend}",
                 f"run.device={device}"]  # fmt: skip
    return config_from_mapping(json.loads(json.dumps(base)), "gpu_check", overrides)


def run_stages(cfg, run_dir: Path, device: torch.device) -> dict[str, dict]:
    """Every stage in order, one at a time: seconds and peak GPU memory of each."""
    measured = {}
    for stage in active_stages(cfg):
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        synchronize(device)
        start = time.perf_counter()
        results = run_pipeline(cfg, run_dir, [stage], progress=False)
        synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
        measured[stage] = {"seconds": round(time.perf_counter() - start, 2), "peak": peak,
                           "miou": results.get(stage, {}).get("miou")}  # fmt: skip
    return measured


def dry_run_estimates(cfg, world_size: int = 1) -> dict[str, int]:
    """Per stage, the dry run's largest GPU memory estimate (bytes) for this config."""
    from ssenet.dryrun import dry_run

    report = dry_run(cfg, active_stages(cfg), world_size=world_size)
    estimates: dict[str, int] = {}
    for row in report.rows:
        if row.memory is not None:
            estimates[row.stage] = max(estimates.get(row.stage, 0), row.memory.total)
    return estimates


def output_snapshot(run_dir: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every stage output: a recomputed file changes its mtime."""
    return {str(p.relative_to(run_dir)): (p.stat().st_size, p.stat().st_mtime_ns)
            for stage in STAGES for p in sorted((run_dir / stage).rglob("*"))
            if p.is_file()}  # fmt: skip


def crf_agreement(cfg, device: torch.device) -> float:
    """Max difference of the torch CRF's marginals on the GPU and on the CPU, on a benchmark
    image with random class scores."""
    from ssenet.crf import dense_crf
    from ssenet.data.source import open_split

    dataset = open_split(cfg.data, cfg.data.infer_list)
    image = dataset.read_image(dataset.ids[0])
    logits = np.random.default_rng(0).normal(size=(4, *image.shape[:2])).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(0, keepdims=True)
    on_gpu = dense_crf(image, probs, cfg.crf, backend="torch", device=device)
    on_cpu = dense_crf(image, probs, cfg.crf, backend="torch", device="cpu")
    return float(np.abs(on_gpu - on_cpu).max())


def walk_agreement(cfg, run_dir: Path, device: torch.device) -> float:
    """Max difference, relative to the largest score, of the sparse random walk on the GPU and
    on the CPU, over the trained AffinityNet's features of a benchmark image."""
    from ssenet.data.source import open_split
    from ssenet.models.configured import load_affinity_model
    from ssenet.randomwalk import affinity_features, random_walk

    dataset = open_split(cfg.data, cfg.data.infer_list)
    image = torch.from_numpy(dataset.read_image(dataset.ids[0]))[None]
    model = load_affinity_model(cfg, run_dir / "aff" / "model.pth")
    with torch.no_grad():
        features = affinity_features(model, image, cfg.model.output_stride)[0]
    gen = torch.Generator().manual_seed(0)
    scores = torch.rand(4, *features.shape[1:], generator=gen)
    args = (cfg.rw.radius, cfg.rw.beta, cfg.rw.logt)
    on_cpu = random_walk(scores, features, *args)
    on_gpu = random_walk(scores.to(device), features.to(device), *args).cpu()
    return float((on_gpu - on_cpu).abs().max() / on_cpu.abs().max())


def torchrun_all_stages(config_path: Path, run_dir: Path, device: torch.device) -> dict:
    """2 ranks on the one device (gloo), every stage; returns results.json."""
    target = "cuda:0" if device.type == "cuda" else "cpu"
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
               "2", "-m", "ssenet.cli", "run", "--config", str(config_path), "--run-dir",
               str(run_dir), "--no-progress", f"run.device={target}", "run.dist_backend=gloo"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=400)
    if done.returncode != 0:
        tail = [line for line in done.stderr.splitlines() if "error" in line.lower()][-3:]
        raise RuntimeError(f"torchrun exited {done.returncode}: {' | '.join(tail)}")
    return json.loads((run_dir / "eval" / "results.json").read_text())


def cam_step_ms(device: torch.device, steps: int, bench: Path) -> float:
    """Median milliseconds of the demo's CAM training step (its full-size recipe: crop 128,
    batch 16, SSENet, trained BatchNorm, channels_last) on `device`."""
    from ssenet.cam import CamObjective
    from ssenet.models.configured import configured_cam_model
    from ssenet.trainer import build_optimizer

    cfg = demo_config(bench, "ssenet", 0, quick=False)
    torch.manual_seed(0)
    model = configured_cam_model(cfg, 8, pretrained=False).to(device)
    model = model.to(memory_format=torch.channels_last)
    objective = CamObjective(model, cfg.cam).train()
    optimizer, _ = build_optimizer(model.parameter_groups(), cfg.cam, max_steps=10**6)
    batch, crop = cfg.cam.batch_size, cfg.cam.crop_size
    images = torch.randn(batch, 3, crop, crop, device=device)
    images = images.contiguous(memory_format=torch.channels_last)
    labels = (torch.rand(batch, 8, device=device) < 0.3).float()
    times = []
    for step in range(steps + 2):  # two warm-up steps (cuDNN's algorithm search)
        synchronize(device)
        start = time.perf_counter()
        loss = objective(images, labels)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        synchronize(device)
        if step >= 2:
            times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="gpu_check_out", help="work folder (benchmark, runs)")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (self-test)")
    parser.add_argument("--size", choices=list(SIZES), default="gpu")
    parser.add_argument("--precisions", default="fp32,bf16,fp16")
    parser.add_argument("--docs", help="also write the tables as Markdown to this file")
    args = parser.parse_args(argv)
    out, checks = Path(args.out), Checks()
    device = torch.device(args.device)
    header = describe_machine(device)
    print(header, flush=True)

    with checks.check("device"):
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("run.device cuda asked for, but torch sees no CUDA device")
    if checks.failed:
        return report(checks, header, {}, {}, args.docs)

    bench = out / "benchmark"
    with checks.check("benchmark"):
        if not (bench / "benchmark.json").is_file():
            make_benchmark(bench, seed=0, num_workers=1, progress=False, **SIZES[args.size])

    runs, estimates, extra = {}, {}, {}
    for precision in args.precisions.split(","):
        cfg = check_config(bench, args.size, device, precision)
        with checks.check(f"pipeline {precision} (crf {cfg.crf.backend})") as note:
            runs[precision] = run_stages(cfg, out / f"run_{precision}", device)
            scored = {s: m["miou"] for s, m in runs[precision].items() if m["miou"] is not None}
            if set(scored) != {"cam", "crf", "rw", "seg"} or not all(
                math.isfinite(v) for v in scored.values()
            ):
                raise RuntimeError(f"scored stages {scored}")
            note.append(" ".join(f"{s} {v:.3f}" for s, v in scored.items()))
        try:  # the table then shows "-" for this precision; the checks do not depend on it
            estimates[precision] = dry_run_estimates(cfg)
        except Exception as err:
            print(f"note: no dry-run estimate for {precision}: {type(err).__name__}: {err}")

    fp32 = check_config(bench, args.size, device, "fp32")
    with checks.check("rerun recomputes nothing") as note:
        before = output_snapshot(out / "run_fp32")
        again = run_stages(fp32, out / "run_fp32", device)
        changed = [k for k, v in output_snapshot(out / "run_fp32").items() if before.get(k) != v]
        if changed or not before:
            raise RuntimeError(f"{len(changed)} files rewritten, e.g. {changed[:3]}")
        seconds = sum(m["seconds"] for m in again.values())
        note.append(f"{len(before)} files untouched, {seconds:.1f} s")

    with checks.check("torch CRF: GPU against CPU") as note:
        if device.type != "cuda":
            raise Skip("no GPU to compare with")
        extra["crf_max_diff"] = crf_agreement(fp32, device)
        note.append(f"max |difference| of marginals {extra['crf_max_diff']:.2e}")
        if extra["crf_max_diff"] > 1e-4:
            raise RuntimeError(note[-1])

    with checks.check("sparse random walk: GPU against CPU") as note:
        if device.type != "cuda":
            raise Skip("no GPU to compare with")
        extra["rw_max_rel_diff"] = walk_agreement(fp32, out / "run_fp32", device)
        note.append(f"max |difference| / max score {extra['rw_max_rel_diff']:.2e}")
        if extra["rw_max_rel_diff"] > 1e-4:
            raise RuntimeError(note[-1])

    with checks.check("torchrun: 2 ranks on one device (gloo), every stage") as note:
        config_path = out / "torchrun.yaml"
        write_text_atomic(config_path, dump_config(fp32))
        start = time.perf_counter()
        results = torchrun_all_stages(config_path, out / "run_torchrun", device)
        if set(results) != {"cam", "crf", "rw", "seg"}:
            raise RuntimeError(f"scored stages {sorted(results)}")
        extra["torchrun_seconds"] = round(time.perf_counter() - start, 1)
        note.append(" ".join(f"{s} {m['miou']:.3f}" for s, m in results.items())
                    + f"; {extra['torchrun_seconds']} s")  # fmt: skip

    with checks.check("demo CAM training step: device against CPU") as note:
        if device.type != "cuda":
            raise Skip("no GPU to compare with")
        extra["step_ms_gpu"] = cam_step_ms(device, 20, bench)
        extra["step_ms_cpu"] = cam_step_ms(torch.device("cpu"), 3, bench)
        note.append(f"{extra['step_ms_gpu']:.1f} ms on the GPU, {extra['step_ms_cpu']:.0f} ms on "
                    f"the CPU ({extra['step_ms_cpu'] / extra['step_ms_gpu']:.0f}x)")  # fmt: skip

    return report(checks, header, runs, estimates, args.docs)


def describe_machine(device: torch.device) -> str:
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" and \
        torch.cuda.is_available() else "none"  # fmt: skip
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        cpu = next(line.split(":", 1)[1].strip() for line in
                   Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    return (f"ssenet GPU check: torch {torch.__version__}, CUDA {torch.version.cuda}, GPU {gpu}, "
            f"CPU {cpu} ({os.cpu_count()} cores), Python {platform.python_version()}")


def stage_table(runs: dict, estimates: dict) -> list[str]:
    lines = ["| precision | stage | seconds | peak GPU memory (MiB) | dry-run estimate (MiB) |",
             "|---|---|---|---|---|"]
    for precision, stages in runs.items():
        for stage, m in stages.items():
            peak = "-" if m["peak"] is None else f"{m['peak'] / MIB:.0f}"
            est = estimates.get(precision, {}).get(stage)
            est_text = "-" if est is None else f"{est / MIB:.0f}"
            lines.append(f"| {precision} | {stage} | {m['seconds']:.1f} | {peak} | {est_text} |")
    return lines


def report(checks: Checks, header: str, runs: dict, estimates: dict, docs: str | None) -> int:
    table = stage_table(runs, estimates)
    verdicts = [f"{status} {name}: {detail}" for name, status, detail in checks.rows]
    counts = {v: sum(status == v for _, status, _ in checks.rows) for v in ("PASS", "FAIL", "SKIP")}
    verdicts += ["", f"{'FAIL' if checks.failed else 'PASS'}: {counts['PASS']} passed, "
                     f"{counts['FAIL']} failed, {counts['SKIP']} skipped"]  # fmt: skip
    print("\n".join([header, "", *table, "", *verdicts]), flush=True)
    if docs:
        page = ["# GPU check results", "", "Written by `benchmarks/gpu_check.py --docs`.", "",
                "```text", header, "```", "", *table, "", "```text", *verdicts, "```", ""]
        write_text_atomic(docs, "\n".join(page))
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
